//! The `mpcvit` harness as a library: datasets, the float model, the
//! benchmarks and (feature `train`) the training pipeline. The binary in
//! `main.rs` is the command-line front end.

#![forbid(unsafe_code)]

pub mod bench_nonlinear;
pub mod bench_ops;
pub mod bench_vit;
pub mod data;
pub mod dealer;
pub mod demo;
pub mod device;
pub mod eval;
pub mod files;
pub mod float;
pub mod host;
pub mod image;
pub mod import;
pub mod keys;
pub mod logits;
pub mod memory;
pub mod net;
pub mod plot;
pub mod progress;
pub mod provision;
pub mod qemu;
pub mod table;
#[cfg(feature = "train")]
pub mod train;
