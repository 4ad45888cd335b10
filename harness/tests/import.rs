//! `mpcvit import` on checkpoints in the official MPCViT layout, made by
//! PyTorch (`tests/data/make_checkpoints.py`, logits stored beside them):
//! our float model reproduces PyTorch's logits, the fixed-point and secure
//! ones stay within the stated bounds and agree on the argmax; damaged
//! checkpoints are clear errors.

mod common;
use common::bin;
use mpcvit::import::{convert, read_checkpoint, unpickle};
use mpcvit::logits::argmax;
use mpcvit_core::FixedPoint;
use mpcvit_core::model::{AttnKind, ModelView};
use mpcvit_core::ops::vit::Tile;
use mpcvit_host::local::{self, LocalKeys};
use mpcvit_host::{reference, weight_maps};
use proptest::prelude::*;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn check(name: &str, plus: bool) {
    let ck = read_checkpoint(&data(&format!("{name}.pth.tar"))).expect("read");
    let fm = convert(&ck, "custom", None, 16).expect("convert");
    assert_eq!(fm.arch.layers, 2);
    assert_eq!(fm.arch.heads, 2);
    assert_eq!(fm.arch.tokens(), 5);
    assert_eq!(
        fm.kinds,
        vec![
            AttnKind::ReluSoftmax,
            AttnKind::Scale,
            AttnKind::Scale,
            AttnKind::ReluSoftmax
        ]
    );
    assert_eq!(fm.gelu.iter().any(|g| !g), plus);
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data(&format!("{name}.logits.json"))).expect("json")).expect("json");
    let bytes = fm.to_bytes().expect("encode");
    let view = ModelView::parse(&bytes).expect("parse");
    let fp = FixedPoint::new(16).expect("fp");
    let keys = LocalKeys::fixed(3);
    let maps = weight_maps(&view, fp, &keys.model).expect("maps");
    let images = j["images"].as_array().expect("images");
    let logits = j["logits"].as_array().expect("logits");
    for (i, (img, want)) in images.iter().zip(logits).enumerate() {
        let img: Vec<f32> = img
            .as_array()
            .expect("img")
            .iter()
            .map(|v| v.as_f64().expect("f") as f32)
            .collect();
        let want: Vec<f64> = want
            .as_array()
            .expect("l")
            .iter()
            .map(|v| v.as_f64().expect("f"))
            .collect();
        let ours: Vec<f64> = fm.forward(&img).iter().map(|&v| v as f64).collect();
        let d = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(d < 1e-4, "{name} image {i}: float vs PyTorch {d}");
        let fixed: Vec<f64> = reference::forward(&view, fp, &maps[0], &img)
            .expect("reference")
            .iter()
            .map(|&v| fp.decode(v))
            .collect();
        let df = fixed.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let inf = local::secure(&view, fp, &maps, &keys, 1 + i as u64, &img, (Tile::WHOLE, false)).expect("secure");
        let sec: Vec<f64> = inf.logits.iter().map(|&v| fp.decode(v)).collect();
        let ds = sec.iter().zip(&fixed).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!("{name} image {i}: |float - torch| {d:.1e}, |fixed - torch| {df:.1e}, |secure - fixed| {ds:.1e}");
        assert!(df < 0.05, "{name} image {i}: fixed point vs PyTorch {df}");
        assert!(ds < 1.0 / 128.0, "{name} image {i}: secure vs fixed point {ds}");
        assert_eq!(argmax(&sec), argmax(&want), "{name} image {i}: secure argmax");
    }
}

#[test]
fn official_layout_matches_pytorch_logits() {
    check("tiny-mpcvit", false);
}

#[test]
fn official_layout_with_mpcvit_plus_matches_pytorch_logits() {
    check("tiny-mpcvit-plus", true);
}

#[test]
fn import_cli_and_its_errors() {
    let d = std::env::temp_dir().join(format!("mpcvit-import-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("dir");
    let out = d.join("m.mpcvit");
    let o = bin()
        .args([
            "import",
            data("tiny-mpcvit.pth.tar").to_str().expect("p"),
            "--out",
            out.to_str().expect("p"),
        ])
        .output()
        .expect("import");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ModelView::parse(&std::fs::read(&out).expect("model")).is_ok());
    let one_line = |o: &std::process::Output, needle: &str| {
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(e.contains(needle) && e.trim().lines().count() == 1, "{e}");
    };
    let o = bin()
        .args([
            "import",
            data("tiny-mpcvit.pth.tar").to_str().expect("p"),
            "--arch",
            "vit_7_4_32",
        ])
        .args(["--out", out.to_str().expect("p")])
        .output()
        .expect("import");
    one_line(&o, "is not vit_7_4_32");
    let junk = d.join("junk.pth");
    std::fs::write(&junk, b"not a zip at all").expect("write");
    let o = bin()
        .args(["import", junk.to_str().expect("p"), "--out", out.to_str().expect("p")])
        .output()
        .expect("import");
    one_line(&o, "not a PyTorch zip checkpoint");
    let full = std::fs::read(data("tiny-mpcvit.pth.tar")).expect("read");
    let cut = d.join("cut.pth");
    std::fs::write(&cut, &full[..full.len() / 2]).expect("write");
    let o = bin()
        .args(["import", cut.to_str().expect("p"), "--out", out.to_str().expect("p")])
        .output()
        .expect("import");
    assert_eq!(o.status.code(), Some(1));
}

/// The data.pkl of the real checkpoint, for mutation.
fn real_pickle() -> Vec<u8> {
    use std::io::Read;
    let f = std::fs::File::open(data("tiny-mpcvit.pth.tar")).expect("open");
    let mut z = zip::ZipArchive::new(f).expect("zip");
    let name = z
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("data.pkl"))
        .expect("pkl")
        .into_owned();
    let mut v = Vec::new();
    z.by_name(&name).expect("pkl").read_to_end(&mut v).expect("read");
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn unpickle_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), pos in 0usize..100_000, val in any::<u8>(), cut in 0usize..100_000) {
        let _ = unpickle(&bytes);
        let mut p = real_pickle();
        let at = pos % p.len();
        p[at] = val;
        p.truncate(cut % (p.len() + 1));
        let _ = unpickle(&p);
    }
}

/// The input on which libFuzzer found the first pickle machine using more
/// than 2 GB (memo entries were copies, and copies of copies): the machine
/// now shares nodes, so what it builds is bounded by the input's length.
#[test]
fn pickle_memory_is_linear_in_the_input() {
    let bytes = std::fs::read(data("pickle-fuzz-oom.bin")).expect("read");
    if let Ok(p) = unpickle(&bytes) {
        assert!(
            p.nodes.len() <= bytes.len(),
            "{} nodes from {} bytes",
            p.nodes.len(),
            bytes.len()
        );
    }
    // A list that holds itself many times over (BINGET of the same list).
    let mut evil = vec![0x80, 2, b']', b'q', 0, b'('];
    evil.extend(std::iter::repeat_n([b'h', 0], 2000).flatten());
    evil.extend([b'e', b'.']);
    let p = unpickle(&evil).expect("parses");
    assert!(p.nodes.len() <= evil.len());
}
