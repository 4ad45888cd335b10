//! `mpcvit memory`: the device party's working set for an architecture
//! under each tile (`vit::Tile`): the forward pass's scratch
//! (`vit::scratch_parts`: `x` and `qkv` held as bits and the largest
//! stage; the device keeps no attention output, it sends each tile's rows
//! as they are made) plus the message and temporary buffers
//! (`mpcvit_device::buffers`, the bound a firmware sizes its static buffers
//! by; a desktop device reports what it used in `--json`'s `working_set`).

use crate::bench_vit::named_arch;
use crate::device::parse_tile;
use mpcvit_core::model::{AllGelu, Arch, Layout, ModelView};
use mpcvit_core::ops::vit::{self, Tile};

/// Options of `mpcvit memory`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Architectures by name (fmnist, vit_7_4_32, vit_9_12_64).
    #[arg(long, value_delimiter = ',', default_value = "fmnist,vit_7_4_32,vit_9_12_64")]
    pub arch: Vec<String>,
    /// Or a model file (its architecture).
    #[arg(long, conflicts_with = "arch")]
    pub model: Option<std::path::PathBuf>,
    /// Tiles (`whole` or `ROWS,HEADS,QUERIES`), separated by `;`.
    #[arg(long, default_value = "whole;10,1,10;2,1,10;2,1,5;1,1,2")]
    pub tiles: String,
}

/// The device's working set for a model of `arch` and `layout` under
/// `tile`, bytes: scratch, tx, rx, tmp.
pub fn working_set(arch: &Arch, layout: &dyn Layout, tile: Tile) -> [usize; 4] {
    let b = mpcvit_device::buffers(arch, tile);
    [
        8 * vit::scratch_len(arch, tile, mpcvit_core::Role::Device, layout),
        b.tx,
        b.rx,
        8 * b.tmp,
    ]
}

/// Runs `mpcvit memory`.
pub fn run(a: &Args) -> Result<(), String> {
    let tiles: Vec<(String, Tile)> = a
        .tiles
        .split(';')
        .map(|t| parse_tile(t.trim()).map(|v| (t.trim().to_string(), v)))
        .collect::<Result<_, _>>()?;
    let bytes = match &a.model {
        Some(p) => Some(crate::files::read_bounded(p, "model", crate::files::MAX_MODEL)?),
        None => None,
    };
    let view = match (&a.model, &bytes) {
        (Some(p), Some(b)) => Some(ModelView::parse(b).map_err(|e| format!("{}: {e}", p.display()))?),
        _ => None,
    };
    // a named architecture is sized as the paper's models are: every token
    // through GeLU
    let archs: Vec<(String, Arch, &dyn Layout)> = match (&a.model, &view) {
        (Some(p), Some(m)) => vec![(p.display().to_string(), m.arch(), m as &dyn Layout)],
        _ => a
            .arch
            .iter()
            .map(|n| {
                named_arch(n)
                    .map(|v| (n.clone(), v, &AllGelu as &dyn Layout))
                    .ok_or_else(|| format!("unknown architecture {n:?}"))
            })
            .collect::<Result<_, _>>()?,
    };
    println!("| model | tile | x + qkv (bits) | stage | scratch | tx | rx | tmp | total |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let kib = |b: usize| format!("{:.1} KiB", b as f64 / 1024.0);
    for (name, arch, layout) in &archs {
        for (t, tile) in &tiles {
            let w = working_set(arch, *layout, *tile);
            let p = vit::scratch_parts(arch, *tile, mpcvit_core::Role::Device, *layout);
            println!(
                "| {name} | {t} | {} | {} | {} | {} | {} | {} | {} |",
                kib(8 * (p.resid + p.qkv)),
                kib(8 * p.stage),
                kib(w[0]),
                kib(w[1]),
                kib(w[2]),
                kib(w[3]),
                kib(w.iter().sum())
            );
        }
    }
    Ok(())
}
