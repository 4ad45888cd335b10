//! The `mpcvit` harness as a library: datasets, the float model, the
//! benchmarks and (feature `train`) the training pipeline. The binary in
//! `main.rs` is the command-line front end.

pub mod bench_nonlinear;
pub mod bench_ops;
pub mod bench_vit;
pub mod data;
pub mod demo;
pub mod eval;
pub mod float;
pub mod import;
pub mod memory;
pub mod progress;
pub mod qemu;
pub mod roles;
pub mod table;
#[cfg(feature = "train")]
pub mod train;
