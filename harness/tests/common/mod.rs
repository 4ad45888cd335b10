//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

use mpcvit::float::FloatModel;
use mpcvit_core::FixedPoint;
use mpcvit_core::model::{Arch, AttnKind, ModelView};
use mpcvit_core::prg::Seed;
use mpcvit_device::session::open;
use mpcvit_host::{reference, weight_maps};
use mpcvit_transport::Link;
use mpcvit_transport::tcp::Tcp;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mpcvit"))
}

pub fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mpcvit-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp");
    d
}

pub fn write_gz(path: &std::path::Path, data: &[u8]) {
    let f = std::fs::File::create(path).expect("create");
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    e.write_all(data).expect("write");
    e.finish().expect("finish");
}

/// A Fashion-MNIST-shaped test split of `n` images, as gzipped IDX files.
pub fn fake_fmnist(dir: &std::path::Path, n: u32) {
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

pub fn tiny_model(path: &std::path::Path) {
    tiny_model_seeded(path, 37);
}

/// A tiny 28x28 model whose weights depend on `k`.
pub fn tiny_model_seeded(path: &std::path::Path, k: usize) {
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
        .map(|i| ((i * k % 101) as f32 / 101.0 - 0.5) * 0.5)
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

/// A listening child, killed when dropped.
/// A server process, its address, and its stdout after the first line.
pub struct Server(pub Child, pub String, pub Option<BufReader<std::process::ChildStdout>>);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn server(args: &[&str]) -> Server {
    server_logged(args, None)
}

/// [`server`] with its stderr (its log, and any panic message) in `log`.
pub fn server_logged(args: &[&str], log: Option<&Path>) -> Server {
    let err = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("log")),
        None => Stdio::null(),
    };
    let mut c = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let mut out = BufReader::new(c.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("first line");
    assert!(line.contains("listening on"), "{line:?}");
    let addr = line.trim().rsplit(' ').next().expect("addr").to_string();
    Server(c, addr, Some(out))
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// A deployment: keys, a tiny model, its blob, 4 test images.
pub struct Setup {
    pub dir: PathBuf,
    pub keys: PathBuf,
    pub model: PathBuf,
    pub blob: PathBuf,
    pub images: PathBuf,
}

pub fn setup(tag: &str) -> Setup {
    let dir = tmpdir(tag);
    let keys = dir.join("keys");
    let _ = std::fs::remove_dir_all(&keys);
    let out = bin().args(["keygen", "--out", s(&keys)]).output().expect("keygen");
    assert!(out.status.success(), "{out:?}");
    let model = dir.join("m.mpcvit");
    tiny_model(&model);
    let blob = dir.join("m.blob");
    let out = bin()
        .args(["provision", "--model", s(&model), "--keys", s(&keys), "--out", s(&blob)])
        .output()
        .expect("provision");
    assert!(out.status.success(), "{out:?}");
    let images = dir.join("images-idx3-ubyte");
    let mut im = vec![];
    for v in [2051u32, 4, 28, 28] {
        im.extend_from_slice(&v.to_be_bytes());
    }
    im.extend((0..4 * 784u32).map(|i| (i * 13 % 253) as u8));
    std::fs::write(&images, im).expect("images");
    Setup {
        dir,
        keys,
        model,
        blob,
        images,
    }
}

pub fn device(st: &Setup, host: &str, index: usize, extra: &[&str]) -> Output {
    bin()
        .args([
            "device",
            "--connect",
            host,
            "--blob",
            s(&st.blob),
            "--keys",
            s(&st.keys),
        ])
        .args(["--images", s(&st.images), "--index", &index.to_string(), "--json"])
        .args(extra)
        .output()
        .expect("device")
}

pub fn prediction(o: &Output) -> (usize, String) {
    assert!(
        o.status.success(),
        "device failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    (
        v["prediction"].as_u64().expect("prediction") as usize,
        v["session"].as_str().expect("session").to_string(),
    )
}

/// The fixed-point reference's prediction for image `i` of the setup.
pub fn expected(st: &Setup, i: usize) -> usize {
    let bytes = std::fs::read(&st.model).expect("model");
    let view = ModelView::parse(&bytes).expect("parse");
    let fp = FixedPoint::new(16).expect("fp");
    let [h, _, _] = weight_maps(&view, fp, &Seed::from_bytes([3; 32])).expect("maps");
    let raw = std::fs::read(&st.images).expect("images");
    let img = mpcvit::image::normalise(&raw[16 + i * 784..16 + (i + 1) * 784], 1);
    let q: Vec<f64> = reference::forward(&view, fp, &h, &img)
        .expect("reference")
        .iter()
        .map(|&v| fp.decode(v))
        .collect();
    mpcvit::logits::argmax(&q)
}

/// A dealer for the setup's keys on a free port, with `extra` options.
pub fn start_dealer(st: &Setup, extra: &[&str]) -> Server {
    let mut args = vec!["dealer", "--listen", "127.0.0.1:0", "--keys", s(&st.keys)];
    args.extend(extra);
    server(&args)
}

/// A host for the setup's model on a free port, using the dealer at
/// `dealer`, with `extra` options.
pub fn start_host(st: &Setup, dealer: &str, extra: &[&str]) -> Server {
    let mut args = vec!["host", "--listen", "127.0.0.1:0", "--dealer", dealer];
    args.extend(["--model", s(&st.model), "--keys", s(&st.keys)]);
    args.extend(extra);
    server(&args)
}

pub fn device_key(st: &Setup) -> Seed {
    let hex = std::fs::read_to_string(st.keys.join("device.key")).expect("key");
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex.trim()[2 * i..2 * i + 2], 16).expect("hex");
    }
    Seed::from_bytes(k)
}

/// What the device of `st` offers (its blob's model, the whole-layer tile).
pub fn device_offer(st: &Setup) -> mpcvit_core::session::Offer {
    let blob = std::fs::read(&st.blob).expect("blob");
    let b = mpcvit_core::provision::BlobView::parse(&blob).expect("blob");
    mpcvit_core::session::Offer {
        model_crc: b.model_crc(),
        frac_bits: 16,
        tile: mpcvit_core::ops::vit::Tile::WHOLE,
        logits_to_host: false,
        key_check: b.key_check(),
    }
}

pub fn connect(host: &str) -> mpcvit_transport::Link<mpcvit_transport::tcp::Tcp> {
    Link::new(
        Tcp::new(TcpStream::connect(host).expect("connect"), None).expect("tcp"),
        0,
    )
}

/// Opens a session as a well-behaved device would, then returns the link
/// (the caller misbehaves on it).
pub fn half_device(st: &Setup, host: &str) -> mpcvit_transport::Link<mpcvit_transport::tcp::Tcp> {
    let mut l = connect(host);
    let mut buf = [0u8; mpcvit_core::session::DEVICE_RX_MAX];
    open(
        &mut l,
        &device_key(st),
        &mut getrandom::SysRng,
        &device_offer(st),
        &mut buf,
    )
    .expect("set-up");
    l
}
