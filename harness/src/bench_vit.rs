//! `mpcvit bench`: secure MPCViT inferences on paper-shaped configurations
//! (random weights: timing and traffic do not depend on them), one row per
//! attention mix, with latency modelled for LAN and the paper's WAN.

use crate::float::FloatModel;
use mpcvit_core::FixedPoint;
use mpcvit_core::model::{Arch, AttnKind, ModelView};
use mpcvit_core::prg::{Prg, Seed};
use mpcvit_host::local::{self, LocalKeys};
use mpcvit_host::weight_maps;
use mpcvit_transport::shape::Profile;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Options of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration: fmnist (28x28, patch 4, dim 64, 4 layers, 4 heads,
    /// MLP 128), vit_7_4_32 (CIFAR-10, 65 tokens, dim 256, 7 layers) or
    /// vit_9_12_64 (Tiny-ImageNet, 257 tokens, dim 192, 9 layers, 12 heads).
    #[arg(long, default_value = "fmnist")]
    arch: String,
    /// Attention mixes to run (comma separated): softmax, rsattn, scale,
    /// mu0.1, mu0.3, mu0.5, mu0.7 (RSAttn fraction, the rest ScaleAttn).
    #[arg(long, default_value = "softmax,rsattn,scale,mu0.1,mu0.3,mu0.5,mu0.7")]
    mixes: String,
    /// Where to write the JSON results (rows of other archs or mixes already
    /// in the file are kept); a Markdown table goes beside it (`.md`).
    #[arg(long, default_value = "bench/results.json")]
    out: PathBuf,
    /// Also draw the attention mix against modelled latency per link (LAN,
    /// WAN), for every row in the results file, as an SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Accuracy per mix for the plot's y axis instead of the RSAttn
    /// fraction, e.g. `softmax=0.91,mu0.5=0.905` (from `mpcvit eval` of
    /// trained models).
    #[arg(long)]
    accuracy: Option<String>,
    /// Run nothing: rewrite the Markdown table and the plot from the results
    /// file.
    #[arg(long)]
    replot: bool,
    /// Cut each layer into flights (`whole`, or `ROWS,HEADS,QUERIES` as
    /// `mpcvit device --tile`): fewer bytes held at once by every party (the
    /// host holds a flight's dealer corrections: ~180 MB for a whole
    /// vit_9_12_64 layer with RSAttn heads), more rounds. Rows of a tiled run are
    /// labelled `MIX@TILE`.
    #[arg(long, value_parser = crate::device::parse_tile, default_value = "whole")]
    tile: mpcvit_core::ops::vit::Tile,
    /// Secure inferences per row, back to back (sessions 1..=N): the row's
    /// wall time is their median (one inference varies by about 10 %).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Also print, per row, what each op family cost one inference on the
    /// host's links: calls, dealer -> host, device -> host and host ->
    /// device bytes, and the host's waits on the device.
    #[arg(long)]
    by_op: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Row {
    arch: String,
    mix: String,
    rounds: u64,
    device_to_host_bytes: u64,
    host_to_device_bytes: u64,
    dealer_to_host_bytes: u64,
    wall_s: f64,
    lan_s: f64,
    wan_s: f64,
    #[serde(default)]
    scratch_bytes_per_party: u64,
    /// Plaintext fixed-point (u64) forward of the same model and image, one
    /// thread, best of three, measured in the same run (0: not recorded).
    #[serde(default)]
    plain_s: f64,
    /// The computation version (`session::COMPUTATION`) the row ran (0:
    /// recorded before rows kept it, i.e. version 2 or older).
    #[serde(default)]
    protocol: u8,
    /// Inferences whose median wall time the row gives.
    #[serde(default = "one")]
    runs: u32,
}

fn one() -> u32 {
    1
}

/// The named configurations: `fmnist` (the bundled model's shape) and the
/// paper's `vit_7_4_32` (CIFAR) and `vit_9_12_64` (Tiny-ImageNet).
pub fn named_arch(name: &str) -> Option<Arch> {
    Some(match name {
        "fmnist" => Arch {
            image: 28,
            channels: 1,
            patch: 4,
            dim: 64,
            layers: 4,
            heads: 4,
            mlp: 128,
            classes: 10,
        },
        "vit_7_4_32" => Arch {
            image: 32,
            channels: 3,
            patch: 4,
            dim: 256,
            layers: 7,
            heads: 4,
            mlp: 512,
            classes: 10,
        },
        "vit_9_12_64" => Arch {
            image: 64,
            channels: 3,
            patch: 4,
            dim: 192,
            layers: 9,
            heads: 12,
            mlp: 384,
            classes: 200,
        },
        _ => return None,
    })
}

fn arch(name: &str) -> Result<Arch, String> {
    named_arch(name).ok_or_else(|| format!("unknown --arch {name:?} (fmnist, vit_7_4_32, vit_9_12_64)"))
}

fn kinds(a: &Arch, mix: &str) -> Result<Vec<AttnKind>, String> {
    let all = a.layers * a.heads;
    Ok(match mix {
        "softmax" => vec![AttnKind::Softmax; all],
        "rsattn" => vec![AttnKind::ReluSoftmax; all],
        "scale" => vec![AttnKind::Scale; all],
        m if m.starts_with("mu") => {
            let mu: f64 = m[2..].parse().map_err(|_| format!("bad mix {m:?}"))?;
            let keep = (mu * all as f64).round() as usize;
            // spread the RSAttn heads over the layers, as a search would
            (0..all)
                .map(|i| {
                    if (i * keep) / all != ((i + 1) * keep) / all {
                        AttnKind::ReluSoftmax
                    } else {
                        AttnKind::Scale
                    }
                })
                .collect()
        }
        o => return Err(format!("unknown mix {o:?}")),
    })
}

fn random_weights(a: &Arch) -> Vec<f32> {
    let mut r = Prg::new(&Seed::from_bytes([31; 32]), 0, 0);
    let mut out = Vec::with_capacity(a.weights());
    for i in 0..a.tensor_count() {
        let t = a.tensor_at(i).expect("tensor");
        let (rows, _) = a.shape(t);
        let ln_gain = matches!(
            t,
            mpcvit_core::model::Tensor::Ln0G(_)
                | mpcvit_core::model::Tensor::Ln1G(_)
                | mpcvit_core::model::Tensor::NormG
        );
        for _ in 0..a.len(t) {
            let u = (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            let v = if ln_gain {
                1.0 + 0.1 * u
            } else if rows > 1 {
                u / (rows as f64).sqrt()
            } else {
                0.1 * u
            };
            out.push(v as f32);
        }
    }
    out
}

/// Runs the benchmark.
pub fn run(a: &Args) -> Result<(), String> {
    let ar = arch(&a.arch)?;
    // The rows already recorded, read first: a file that is not a results
    // file stops the run before it starts, not after it (nothing is lost).
    let mut all: Vec<Row> = match std::fs::read(&a.out) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            format!(
                "{} is not a bench results file ({e}); move it away or pass another --out",
                a.out.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("reading {}: {e}", a.out.display())),
    };
    let fp = FixedPoint::default();
    let keys = LocalKeys::fixed(1);
    let mut rows = Vec::new();
    let t = a.tile;
    let tile_label = if t == mpcvit_core::ops::vit::Tile::WHOLE {
        String::new()
    } else {
        format!("@{},{},{}", t.rows, t.heads, t.queries)
    };
    eprintln!(
        "bench: {}: forward-pass scratch {:.0} KiB at the host, {:.0} KiB at the device (tile {:?})",
        a.arch,
        mpcvit_core::ops::vit::scratch_len(&ar, t, mpcvit_core::Role::Host, &mpcvit_core::model::AllGelu) as f64 * 8.0
            / 1024.0,
        mpcvit_core::ops::vit::scratch_len(&ar, t, mpcvit_core::Role::Device, &mpcvit_core::model::AllGelu) as f64
            * 8.0
            / 1024.0,
        t
    );
    if !a.replot {
        print!("{TABLE_HEAD}");
    }
    for mix in a.mixes.split(',').filter(|_| !a.replot) {
        let fm = FloatModel {
            arch: ar,
            frac_bits: 16,
            kinds: kinds(&ar, mix)?,
            gelu: vec![true; ar.layers * ar.tokens()],
            weights: random_weights(&ar),
        };
        let bytes = fm.to_bytes()?;
        let view = ModelView::parse(&bytes).map_err(|e| e.to_string())?;
        let maps = weight_maps(&view, fp, &keys.model).map_err(|e| e.to_string())?;
        let img = synthetic_image(&ar);
        eprintln!("bench: {} {mix} ...", a.arch);
        // the plaintext u64 forward of the same model: best of three
        let host_w = mpcvit_host::WeightMap::host(&view, fp).map_err(|e| e.to_string())?;
        let mut plain = f64::MAX;
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            mpcvit_host::reference::forward(&view, fp, &host_w, &img).map_err(|e| e.to_string())?;
            plain = plain.min(t0.elapsed().as_secs_f64());
        }
        let (wall, inf) =
            median_secure(&view, fp, &maps, &keys, &img, t, a.repeat).map_err(|e| format!("{mix}: {e}"))?;
        let online = inf.device.bytes_sent + inf.device.bytes_recv;
        let lan = wall + Profile::LAN.added_s(inf.device.rounds, online);
        let wan = wall + Profile::WAN.added_s(inf.device.rounds, online);
        let row = Row {
            arch: a.arch.clone(),
            mix: format!("{mix}{tile_label}"),
            rounds: inf.device.rounds,
            device_to_host_bytes: inf.device.bytes_sent,
            host_to_device_bytes: inf.device.bytes_recv,
            dealer_to_host_bytes: inf.dealer.bytes_recv,
            wall_s: wall,
            lan_s: lan,
            wan_s: wan,
            scratch_bytes_per_party: 8 * mpcvit_core::ops::vit::scratch_len(&ar, t, mpcvit_core::Role::Host, &view)
                as u64,
            plain_s: plain,
            protocol: mpcvit_core::session::COMPUTATION,
            runs: a.repeat,
        };
        print!("{}", table_row(&row));
        if a.by_op {
            print!("{}", by_op_table(&row.arch, &row.mix, &inf.ops));
        }
        rows.push(row);
    }
    // Merge with the rows already recorded for other configurations.
    all.retain(|old| !rows.iter().any(|r| r.arch == old.arch && r.mix == old.mix));
    all.extend(rows);
    let json = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
    crate::float::write_atomic(&a.out, json.as_bytes())?;
    let md = a.out.with_extension("md");
    crate::float::write_atomic(&md, markdown(&all).as_bytes())?;
    eprintln!("bench: wrote {} and {}", a.out.display(), md.display());
    if let Some(p) = &a.plot {
        let acc = parse_accuracy(a.accuracy.as_deref())?;
        crate::float::write_atomic(p, plot(&all, &acc)?.as_bytes())?;
        eprintln!("bench: wrote {}", p.display());
    }
    Ok(())
}

/// The image every timing runs (the cost does not depend on it).
pub fn synthetic_image(a: &Arch) -> Vec<f32> {
    (0..a.channels * a.image * a.image)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect()
}

/// `n` (at least 1) secure inferences of `image` back to back (sessions
/// `1..=n`, three threads): the median wall time in seconds and the last
/// inference (rounds and bytes are the same for every one).
pub fn median_secure(
    view: &ModelView<'_>,
    fp: FixedPoint,
    maps: &[mpcvit_host::WeightMap; 3],
    keys: &LocalKeys,
    image: &[f32],
    tile: mpcvit_core::ops::vit::Tile,
    n: u32,
) -> Result<(f64, local::Inference), String> {
    let mut walls = Vec::new();
    let mut last = None;
    for session in 1..=u64::from(n) {
        let inf = local::secure(view, fp, maps, keys, session, image, (tile, false)).map_err(|e| e.to_string())?;
        walls.push(inf.wall_ns as f64 / 1e9);
        last = Some(inf);
    }
    let inf = last.ok_or("no inference to time (0 runs)")?;
    walls.sort_by(f64::total_cmp);
    Ok((walls.get(walls.len() / 2).copied().unwrap_or(0.0), inf))
}

/// What each op family cost one inference (`--by-op`), as a Markdown
/// table: the families in the order first called, then their total.
fn by_op_table(arch: &str, mix: &str, ops: &[(&'static str, local::OpCost)]) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mut out = format!(
        "\n{arch} {mix}, per op family (host's links):\n\n| op family | calls | dealer->H MB | D->H MB | H->D MB | \
         host waits |\n|---|---|---|---|---|---|\n"
    );
    let mut total = local::OpCost::default();
    for (family, c) in ops {
        out += &format!(
            "| {family} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
            c.calls,
            mb(c.dealer_bytes),
            mb(c.device_to_host),
            mb(c.host_to_device),
            c.waits
        );
        total += *c;
    }
    out += &format!(
        "| all | {} | {:.2} | {:.2} | {:.2} | {} |\n\n",
        total.calls,
        mb(total.dealer_bytes),
        mb(total.device_to_host),
        mb(total.host_to_device),
        total.waits
    );
    out
}

/// The header of the results table (stdout and the Markdown file).
const TABLE_HEAD: &str = "| arch | mix | rounds | D->H MB | H->D MB | dealer->H MB | wall s | runs | plaintext s | wall / \
     plaintext | LAN s (1 Gbit/s, 0.5 ms) | WAN s (400 Mbit/s, 40 ms) | scratch MiB/party | protocol \
     |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// One row of the results table.
fn table_row(r: &Row) -> String {
    let (plain, ratio) = if r.plain_s > 0.0 {
        (format!("{:.3}", r.plain_s), format!("{:.1}x", r.wall_s / r.plain_s))
    } else {
        ("-".to_string(), "-".to_string())
    };
    format!(
        "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.2} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {} |\n",
        r.arch,
        r.mix,
        r.rounds,
        r.device_to_host_bytes as f64 / 1e6,
        r.host_to_device_bytes as f64 / 1e6,
        r.dealer_to_host_bytes as f64 / 1e6,
        r.wall_s,
        r.runs,
        plain,
        ratio,
        r.lan_s,
        r.wan_s,
        r.scratch_bytes_per_party as f64 / (1 << 20) as f64,
        if r.protocol == 0 {
            "<=2".to_string()
        } else {
            r.protocol.to_string()
        }
    )
}

fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "# Secure MPCViT inference benchmark\n\nWritten by `mpcvit bench` (random weights; rounds and bytes are exact \
         counts, wall times depend on the machine's load; wall: loopback, three threads, the median of the row's `runs` \
         inferences, `--repeat`). LAN / WAN add `rounds x \
         RTT + device bytes / bandwidth` to the wall time; dealer traffic is offline. `plaintext s`: the \
         fixed-point (u64) forward of the same model and image on one thread, measured in the same run. `protocol`: the \
         computation version (`session::COMPUTATION`) the row ran (`<=2`: recorded before rows kept it).\n\n",
    );
    s.push_str(TABLE_HEAD);
    for r in rows {
        s.push_str(&table_row(r));
    }
    s
}

fn parse_accuracy(s: Option<&str>) -> Result<Vec<(String, f64)>, String> {
    let Some(s) = s else { return Ok(Vec::new()) };
    s.split(',')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--accuracy: {kv:?} is not MIX=ACCURACY"))?;
            let v: f64 = v.parse().map_err(|_| format!("--accuracy: {v:?} is not a number"))?;
            Ok((k.to_string(), v))
        })
        .collect()
}

/// Mixes in the order of the plot's rows (bottom to top).
const MIX_ORDER: [&str; 7] = ["scale", "mu0.1", "mu0.3", "mu0.5", "mu0.7", "rsattn", "softmax"];

/// The figure: one panel per link, x = modelled latency (log scale), y =
/// the attention mix (or the accuracy given per mix), one colour per
/// architecture; a tiled run is a ring.
fn plot(rows: &[Row], acc: &[(String, f64)]) -> Result<String, String> {
    use crate::plot::{LABEL_SIZE, Marker, extent, legend_row, place_labels};
    use plotters::prelude::*;
    let base = |m: &str| m.split('@').next().unwrap_or(m).to_string();
    let y_of = |r: &Row| -> Option<f64> {
        if acc.is_empty() {
            MIX_ORDER.iter().position(|m| *m == base(&r.mix)).map(|i| i as f64)
        } else {
            acc.iter().find(|(m, _)| *m == r.mix).map(|&(_, v)| v)
        }
    };
    let pts: Vec<(&Row, f64)> = rows.iter().filter_map(|r| y_of(r).map(|y| (r, y))).collect();
    if pts.is_empty() {
        return Err("--accuracy names none of the benchmarked mixes".into());
    }
    let archs: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for (r, _) in &pts {
            if !v.contains(&r.arch) {
                v.push(r.arch.clone());
            }
        }
        v
    };
    // tab10's first colours, one per architecture
    const COLORS: [RGBColor; 5] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
    ];
    let color = |arch: &str| COLORS[archs.iter().position(|a| a == arch).unwrap_or(0) % COLORS.len()];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 530)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (title, rest) = root.split_vertically(34);
        title
            .draw(&Text::new(
                "Secure MPCViT inference per attention mix (mpcvit bench: random weights; wall time + modelled link)",
                (40, 10),
                ("sans-serif", 17).into_font(),
            ))
            .map_err(|e| e.to_string())?;
        let (body, foot) = rest.split_vertically(460);
        let panels = body.split_evenly((1, 2));
        let (ylo, yhi) = if acc.is_empty() {
            (-0.5, MIX_ORDER.len() as f64 - 0.5)
        } else {
            let (a, b) = extent(pts.iter().map(|&(_, y)| y));
            let pad = ((b - a) * 0.15).max(0.005);
            (a - pad, b + pad)
        };
        for (panel, (name, lat)) in panels.iter().zip([
            ("LAN (1 Gbit/s, 0.5 ms RTT)", (|r: &Row| r.lan_s) as fn(&Row) -> f64),
            ("WAN (400 Mbit/s, 40 ms RTT)", |r: &Row| r.wan_s),
        ]) {
            let (xlo, xhi) = extent(pts.iter().map(|(r, _)| lat(r)));
            let (xlo, xhi) = (xlo.max(1e-4) / 1.5, xhi.max(1e-3) * 1.5);
            let mut c = ChartBuilder::on(panel)
                .caption(format!("modelled latency, {name}"), ("sans-serif", 16))
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(if acc.is_empty() { 70 } else { 56 })
                .build_cartesian_2d(
                    (xlo..xhi).log_scale().with_key_points(
                        [
                            0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0,
                        ]
                        .into_iter()
                        .filter(|k| (xlo..=xhi).contains(k))
                        .collect(),
                    ),
                    ylo..yhi,
                )
                .map_err(|e| e.to_string())?;
            let mix_label = |y: &f64| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 {
                    MIX_ORDER.get(i as usize).map_or(String::new(), |m| m.to_string())
                } else {
                    String::new()
                }
            };
            let acc_label = |y: &f64| format!("{y:.3}");
            let mut mesh = c.configure_mesh();
            mesh.x_desc("seconds per inference (log scale)")
                .x_label_formatter(&|x| {
                    if *x >= 1.0 {
                        format!("{x:.0}")
                    } else {
                        format!("{x:.2}").trim_end_matches('0').to_string()
                    }
                })
                .light_line_style(WHITE);
            if acc.is_empty() {
                mesh.y_desc("attention mix")
                    .y_labels(MIX_ORDER.len())
                    .y_label_formatter(&mix_label);
            } else {
                mesh.y_desc("top-1 accuracy").y_label_formatter(&acc_label);
            }
            mesh.draw().map_err(|e| e.to_string())?;
            for (r, y) in &pts {
                let col = color(&r.arch);
                let tiled = r.mix.contains('@');
                let style = if tiled { col.stroke_width(2) } else { col.filled() };
                c.draw_series(std::iter::once(Circle::new((lat(r), *y), 5, style)))
                    .map_err(|e| e.to_string())?;
            }
            if !acc.is_empty() {
                let xy: Vec<(f64, f64)> = pts.iter().map(|(r, y)| (lat(r), *y)).collect();
                let px: Vec<(i32, i32)> = xy.iter().map(|p| c.backend_coord(p)).collect();
                let (rx, ry) = c.plotting_area().get_pixel_range();
                let labels: Vec<String> = pts.iter().map(|(r, _)| r.mix.clone()).collect();
                let offsets = place_labels(&px, &labels, 6, (rx.start, ry.start, rx.end, ry.end));
                for ((p, text), off) in xy.iter().zip(labels).zip(offsets) {
                    c.draw_series(std::iter::once(
                        EmptyElement::at(*p) + Text::new(text, off, ("sans-serif", LABEL_SIZE).into_font()),
                    ))
                    .map_err(|e| e.to_string())?;
                }
            }
        }
        let mut entries: Vec<(Marker, String)> = archs
            .iter()
            .map(|a| {
                let col = color(a);
                let m: Marker = Box::new(move |area: &DrawingArea<SVGBackend<'_>, _>, at| {
                    area.draw(&Circle::new(at, 5, col.filled())).map_err(|e| e.to_string())
                });
                (m, a.clone())
            })
            .collect();
        if pts.iter().any(|(r, _)| r.mix.contains('@')) {
            let m: Marker = Box::new(|area: &DrawingArea<SVGBackend<'_>, _>, at| {
                area.draw(&Circle::new(at, 5, BLACK.stroke_width(2)))
                    .map_err(|e| e.to_string())
            });
            entries.push((m, "ring: layers cut into flights (--tile)".into()));
        }
        legend_row(&foot, &entries)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
