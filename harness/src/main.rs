//! The `mpcvit` command-line program.

#[cfg(feature = "train")]
use mpcvit::train;
use mpcvit::{bench_ops, bench_vit, dealer, demo, device, eval, host, import, keys, memory, provision, table};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mpcvit",
    version,
    about = "Private MPCViT inference by two-party secure computation"
)]
struct Cli {
    /// More log output on stderr (-v: info, -vv: debug). Quiet by default;
    /// RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Private inference of the bundled model on bundled test images:
    /// dealer, host and device as child processes on localhost.
    Demo(demo::Args),
    /// The dealer: correlations for host sessions (holds both keys).
    Dealer(dealer::DealerArgs),
    /// The host: holds the model, serves device sessions over TCP.
    Host(host::HostArgs),
    /// The device: holds the image, runs one private inference with a host.
    Device(device::DeviceArgs),
    /// Writes the device's provisioning blob for a model.
    Provision(provision::ProvisionArgs),
    /// Creates a deployment's keys (host.key, device.key).
    Keygen(keys::KeygenArgs),
    /// Converts an official MPCViT PyTorch checkpoint to a model file.
    Import(import::Args),
    /// Benchmark every secure op: rounds, bytes each way, ns per element,
    /// and the ratio to plaintext int64.
    BenchOps(bench_ops::Args),
    /// Secure MPCViT inferences on paper-shaped configurations (random
    /// weights): rounds, bytes, wall time, modelled LAN/WAN latency.
    Bench(bench_vit::Args),
    /// The device's working set per architecture and tile (how a layer is
    /// cut into flights).
    Memory(memory::Args),
    /// Accuracy of a model: float, fixed point, and secure on a subset.
    Eval(eval::Args),
    /// The Fashion-MNIST results table from scripts/results-table.sh's runs.
    Table(table::Args),
    /// Train an MPCViT (teacher, search, binarize, retrain with KD, export).
    #[cfg(feature = "train")]
    Train(train::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_default_env()
        .init();
    let res = match cli.cmd {
        Cmd::Demo(a) => demo::run(&a, cli.verbose),
        Cmd::Dealer(a) => dealer::dealer(&a),
        Cmd::Host(a) => host::host(&a),
        Cmd::Device(a) => device::device(&a),
        Cmd::Provision(a) => provision::provision(&a),
        Cmd::Keygen(a) => keys::keygen(&a),
        Cmd::Import(a) => import::run(&a),
        Cmd::BenchOps(a) => bench_ops::run(&a),
        Cmd::Bench(a) => bench_vit::run(&a),
        Cmd::Memory(a) => memory::run(&a),
        Cmd::Eval(a) => eval::run(&a),
        Cmd::Table(a) => table::run(&a),
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
