//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

use mpcvit::float::FloatModel;
use mpcvit_core::model::{Arch, AttnKind};
use std::io::Write;
use std::process::Command;

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
