//! The `mpcvit` binary: `eval` on a generated model and dataset, and clear
//! errors with exit code 1 (runtime) or 2 (usage).

use mpcvit::float::FloatModel;
use mpcvit_core::model::{Arch, AttnKind};
use std::io::Write;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mpcvit"))
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mpcvit-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp");
    d
}

fn write_gz(path: &std::path::Path, data: &[u8]) {
    let f = std::fs::File::create(path).expect("create");
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    e.write_all(data).expect("write");
    e.finish().expect("finish");
}

/// A Fashion-MNIST-shaped test split of `n` images, as gzipped IDX files.
fn fake_fmnist(dir: &std::path::Path, n: u32) {
    let mut im = vec![];
    for v in [2051, n, 28, 28] {
        im.extend_from_slice(&u32::to_be_bytes(v));
    }
    im.extend((0..n * 784).map(|i| (i * 7 % 251) as u8));
    let mut lb = vec![];
    for v in [2049, n] {
        lb.extend_from_slice(&u32::to_be_bytes(v));
    }
    lb.extend((0..n).map(|i| (i % 10) as u8));
    write_gz(&dir.join("t10k-images-idx3-ubyte.gz"), &im);
    write_gz(&dir.join("t10k-labels-idx1-ubyte.gz"), &lb);
}

fn tiny_model(path: &std::path::Path) {
    let arch = Arch {
        image: 28,
        channels: 1,
        patch: 7,
        dim: 8,
        layers: 1,
        heads: 2,
        mlp: 8,
        classes: 10,
    };
    let weights = (0..arch.weights())
        .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.5)
        .collect();
    let fm = FloatModel {
        arch,
        frac_bits: 16,
        kinds: vec![AttnKind::ReluSoftmax, AttnKind::Scale],
        gelu: vec![true; arch.tokens()],
        weights,
    };
    fm.save(path).expect("save");
}

#[test]
fn eval_runs_and_reports_all_three_accuracies() {
    let d = tmpdir("eval");
    fake_fmnist(&d, 6);
    let m = d.join("m.mpcvit");
    tiny_model(&m);
    let j = d.join("r.json");
    let out = bin()
        .args([
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data-dir",
            d.to_str().unwrap(),
            "--secure",
            "2",
            "--json",
            j.to_str().unwrap(),
        ])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("fixed-point accuracy") && text.contains("agreement with fixed point 2/2"),
        "{text}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).expect("json")).expect("parse");
    assert_eq!(r["images"], 6);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn errors_say_what_failed_with_exit_codes() {
    let d = tmpdir("err");
    let out = bin()
        .args(["eval", "--model", d.join("missing.mpcvit").to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read model") && err.lines().count() == 1, "{err}");

    let bad = d.join("bad.mpcvit");
    std::fs::write(&bad, b"not a model").expect("write");
    let out = bin()
        .args(["eval", "--model", bad.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));

    let m = d.join("m.mpcvit");
    tiny_model(&m);
    let out = bin()
        .args([
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data-dir",
            d.join("nowhere").to_str().unwrap(),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dataset-fashion-mnist"));

    let out = bin().args(["eval", "--no-such-flag"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&d).ok();
}
