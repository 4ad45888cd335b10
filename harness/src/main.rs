//! The `mpcvit` command-line program.

#[cfg(feature = "train")]
use mpcvit::train;
use mpcvit::{bench_ops, bench_vit, eval};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mpcvit",
    version,
    about = "Private MPCViT inference by two-party secure computation"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmark every secure op: rounds, bytes each way, ns per element,
    /// and the ratio to plaintext int64.
    BenchOps(bench_ops::Args),
    /// Secure MPCViT inferences on paper-shaped configurations (random
    /// weights): rounds, bytes, wall time, modelled LAN/WAN latency.
    Bench(bench_vit::Args),
    /// Accuracy of a model: float, fixed point, and secure on a subset.
    Eval(eval::Args),
    /// Train an MPCViT (teacher, search, binarize, retrain with KD, export).
    #[cfg(feature = "train")]
    Train(train::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::BenchOps(a) => bench_ops::run(&a),
        Cmd::Bench(a) => bench_vit::run(&a),
        Cmd::Eval(a) => eval::run(&a),
        #[cfg(feature = "train")]
        Cmd::Train(a) => train::run(&a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpcvit: error: {e}");
            ExitCode::from(1)
        }
    }
}
