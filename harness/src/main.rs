//! The `mpcvit` command-line program.

use mpcvit::bench_ops;
#[cfg(feature = "train")]
use mpcvit::train;

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
    /// Train an MPCViT (teacher, search, binarize, retrain with KD, export).
    #[cfg(feature = "train")]
    Train(train::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::BenchOps(a) => bench_ops::run(&a),
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
