//! `mpcvit table`: the Fashion-MNIST results table (docs/results.md) from the
//! evaluation reports `scripts/results-table.sh` leaves in its run
//! directory, one sub-directory per row. A row whose report is missing is
//! listed as not run, or with how far its training or secure evaluation
//! has got: the table only carries measured figures.
//!
//! `--time N` times `N` secure inferences of each row's model back to back
//! (three threads, dealer included, as `bench`) and keeps the median in the
//! row's `timing.json`: the evaluation's own seconds were taken over hours,
//! under whatever else ran, so the latency column and `--plot` use the
//! timing when it exists for this protocol version.

use crate::eval::Report as Eval;
use mpcvit_core::session::COMPUTATION;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Options of `table`.
#[derive(clap::Args)]
pub struct Args {
    /// The run directory (one sub-directory per row, each with `eval.json`).
    #[arg(long, default_value = "bench/table")]
    runs: PathBuf,
    /// Write the table here (Markdown) as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// First time this many secure inferences of every evaluated row's
    /// model on this machine (run it with nothing else on the cores), and
    /// keep the median in the row's `timing.json`.
    #[arg(long, default_value_t = 0)]
    time: u32,
    /// Also draw accuracy against latency per inference (measured on
    /// loopback, and modelled WAN) as an SVG: one point per row, the
    /// teacher and the students with and without KD told apart, the Pareto
    /// front marked.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// A row's timing (`timing.json`).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct Timing {
    /// Median wall seconds of one secure inference (three threads,
    /// loopback, dealer included).
    pub wall_s: f64,
    /// Inferences timed.
    pub inferences: u32,
    /// Rounds of one inference.
    pub rounds: u64,
    /// Device -> host bytes of one inference.
    pub device_to_host_bytes: u64,
    /// Host -> device bytes of one inference.
    pub host_to_device_bytes: u64,
    /// Computation version timed (`session::COMPUTATION`).
    pub version: u8,
}

impl Timing {
    /// Modelled WAN latency (400 Mbit/s, 40 ms RTT), as `bench`'s.
    pub fn wan_s(&self) -> f64 {
        let bytes = self.device_to_host_bytes + self.host_to_device_bytes;
        self.wall_s + mpcvit_transport::shape::Profile::WAN.added_s(self.rounds, bytes)
    }
}

/// A row's timing of this computation version (another version's is ignored).
fn read_timing(dir: &Path) -> Result<Option<Timing>, String> {
    Ok(read_json::<Timing>(&dir.join("timing.json"))?.filter(|t| t.version == COMPUTATION))
}

/// Times `n` secure inferences of the model in `dir` (a fixed synthetic
/// image: the cost does not depend on it) and writes `timing.json`.
fn time_row(dir: &Path, n: u32) -> Result<Timing, String> {
    use mpcvit_core::model::ModelView;
    use mpcvit_core::ops::vit::Tile;
    use mpcvit_core::ring::FixedPoint;
    use mpcvit_host::local::LocalKeys;
    let path = dir.join("model.mpcvit");
    let bytes = crate::files::read_bounded(&path, "model", crate::files::MAX_MODEL)?;
    let view = ModelView::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let fp = FixedPoint::new(view.frac_bits()).map_err(|e| e.to_string())?;
    let keys = LocalKeys::fixed(1);
    let maps = mpcvit_host::weight_maps(&view, fp, &keys.model).map_err(|e| e.to_string())?;
    let img = crate::bench_vit::synthetic_image(&view.arch());
    let (wall_s, inf) = crate::bench_vit::median_secure(&view, fp, &maps, &keys, &img, Tile::WHOLE, n)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let m = inf.device;
    let t = Timing {
        wall_s,
        inferences: n,
        rounds: m.rounds,
        device_to_host_bytes: m.bytes_sent,
        host_to_device_bytes: m.bytes_recv,
        version: COMPUTATION,
    };
    let json = serde_json::to_string_pretty(&t).map_err(|e| e.to_string())?;
    crate::float::write_atomic(&dir.join("timing.json"), json.as_bytes())?;
    Ok(t)
}

/// The rows, in table order: sub-directory and label.
pub const ROWS: [(&str, &str); 11] = [
    ("teacher", "Softmax (teacher)"),
    ("scale-kd", "all ScaleAttn, KD"),
    ("rsattn-kd", "all RSAttn, KD"),
    ("mu0.1", "mu = 0.1"),
    ("mu0.3", "mu = 0.3"),
    ("mu0.5", "mu = 0.5"),
    ("mu0.7", "mu = 0.7"),
    ("mu0.1-kd", "mu = 0.1, KD"),
    ("mu0.3-kd", "mu = 0.3, KD"),
    ("mu0.5-kd", "mu = 0.5, KD"),
    ("mu0.7-kd", "mu = 0.7, KD"),
];

/// A JSON file of a row, `None` if it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<Option<T>, String> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

fn read(dir: &Path) -> Result<Option<Eval>, String> {
    read_json(&dir.join("eval.json"))
}

/// How far an unfinished row has got, from what the script leaves behind:
/// the secure evaluation's journal once the model is exported (its runs of
/// that model and this protocol version), else the last epoch line of the
/// training log.
fn progress(dir: &Path) -> String {
    if let Ok(model) = std::fs::read(dir.join("model.mpcvit")) {
        let crc = mpcvit_core::checksum::crc32(&model);
        let done = crate::eval::journal_progress(&dir.join("secure.jsonl"), crc);
        return format!("trained; secure evaluation: {done} images so far");
    }
    let Ok(log) = std::fs::read_to_string(dir.join("train.log")) else {
        return "not run yet".into();
    };
    // "[stage] epoch k/N loss ..."
    let last = log.lines().rev().find_map(|l| {
        let (stage, rest) = l.strip_prefix('[')?.split_once("] epoch ")?;
        let epochs = rest.split_whitespace().next()?;
        Some(format!("training: {stage} epoch {epochs} done"))
    });
    last.unwrap_or_else(|| "training: started".into())
}

fn pct(v: f64) -> String {
    format!("{:.2} %", 100.0 * v)
}

/// Renders the table (Markdown).
pub fn render(runs: &Path) -> Result<String, String> {
    let mut t = String::from(
        "| model | attention heads | test images | float | fixed point | secure (images) | secure = fixed point | s / inference | WAN s | rounds | MB device->host | MB host->device |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (dir, label) in ROWS {
        let report = read(&runs.join(dir))?;
        let timing = read_timing(&runs.join(dir))?;
        let heads = report
            .as_ref()
            .map_or("", |e| if e.attention.is_empty() { "?" } else { &e.attention });
        match &report {
            Some(e) if e.secure_images == 0 => {
                let _ = writeln!(
                    t,
                    "| {label} | {heads} | {} | {} | {} | not run | | | | | | |",
                    e.images,
                    pct(e.float_accuracy),
                    pct(e.fixed_point_accuracy),
                );
            }
            Some(e) => {
                // secure runs of an older protocol (another computation) say so
                let version = match e.version {
                    COMPUTATION => String::new(),
                    0 => format!(", protocol < {COMPUTATION}"),
                    v => format!(", protocol {v}"),
                };
                let _ = writeln!(
                    t,
                    "| {label} | {heads} | {} | {} | {} | {} ({}{}{version}) | {} | {} | {} | {} | {:.2} | {:.2} |",
                    e.images,
                    pct(e.float_accuracy),
                    pct(e.fixed_point_accuracy),
                    pct(e.secure_accuracy),
                    if e.secure_spread { "" } else { "first " },
                    e.secure_images,
                    pct(e.secure_fixed_point_agreement),
                    timing
                        .as_ref()
                        .map_or(format!("{:.2}", e.mean_secure_seconds), |t| format!("{:.3}", t.wall_s)),
                    timing.as_ref().map_or(String::new(), |t| format!("{:.2}", t.wan_s())),
                    // the link figures of the timing (this build's set-up) where there is one
                    timing.as_ref().map_or(e.rounds, |t| t.rounds),
                    timing
                        .as_ref()
                        .map_or(e.mean_device_to_host_bytes, |t| t.device_to_host_bytes as f64)
                        / 1e6,
                    timing
                        .as_ref()
                        .map_or(e.mean_host_to_device_bytes, |t| t.host_to_device_bytes as f64)
                        / 1e6,
                );
            }
            None => {
                let _ = writeln!(t, "| {label} | {} | | | | | | | | | | |", progress(&runs.join(dir)));
            }
        }
    }
    Ok(t)
}

/// Runs `table`.
pub fn run(a: &Args) -> Result<(), String> {
    if !a.runs.is_dir() {
        return Err(format!(
            "{} is not a directory (run scripts/results-table.sh first)",
            a.runs.display()
        ));
    }
    if a.time > 0 {
        let rows: Vec<&str> = ROWS
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| a.runs.join(d).join("model.mpcvit").is_file() && a.runs.join(d).join("eval.json").is_file())
            .collect();
        let mut pb = crate::progress::Progress::new(rows.len(), "timing");
        for d in rows {
            let t = time_row(&a.runs.join(d), a.time)?;
            pb.println(&format!(
                "{d}: {:.3} s per inference (median of {})",
                t.wall_s, t.inferences
            ));
            pb.inc();
        }
        pb.finish();
    }
    let t = render(&a.runs)?;
    print!("{t}");
    if let Some(p) = &a.out {
        crate::float::write_atomic(p, t.as_bytes())?;
    }
    if let Some(p) = &a.plot {
        crate::float::write_atomic(p, plot(&points(&a.runs)?)?.as_bytes())?;
        eprintln!("table: wrote {}", p.display());
    }
    Ok(())
}

/// One plotted row.
#[derive(Clone, Debug)]
struct Point {
    label: &'static str,
    /// 0: the teacher, 1: distilled, 2: trained on labels only.
    kind: u8,
    accuracy: f64,
    wall_s: f64,
    wan_s: f64,
}

/// The rows with a secure evaluation and a timing of this protocol.
fn points(runs: &Path) -> Result<Vec<Point>, String> {
    let mut v = Vec::new();
    for (dir, label) in ROWS {
        let (Some(e), Some(t)) = (read(&runs.join(dir))?, read_timing(&runs.join(dir))?) else {
            continue;
        };
        if e.secure_images == 0 {
            continue;
        }
        v.push(Point {
            label,
            kind: if dir == "teacher" {
                0
            } else if dir.ends_with("-kd") {
                1
            } else {
                2
            },
            accuracy: 100.0 * e.fixed_point_accuracy,
            wall_s: t.wall_s,
            wan_s: t.wan_s(),
        });
    }
    if v.is_empty() {
        return Err(format!(
            "no row of {} has both eval.json and a timing.json of protocol {COMPUTATION}: run `mpcvit table --time 5` first",
            runs.display()
        ));
    }
    Ok(v)
}

/// Indices of the Pareto front (no other point is at least as fast and at
/// least as accurate, and better in one), by latency.
fn pareto(pts: &[(f64, f64)]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..pts.len())
        .filter(|&i| {
            let (xi, yi) = pts[i];
            !pts.iter().any(|&(x, y)| x <= xi && y >= yi && (x < xi || y > yi))
        })
        .collect();
    front.sort_by(|&a, &b| pts[a].0.total_cmp(&pts[b].0));
    front
}

use plotters::style::RGBColor;

/// Colours of the three kinds of row (teacher, KD, no KD), and the front's.
const KIND_COLOR: [RGBColor; 3] = [RGBColor(60, 60, 60), RGBColor(31, 119, 180), RGBColor(214, 39, 40)];
const FRONT_COLOR: RGBColor = RGBColor(150, 150, 150);

/// A row's marker at `at`: a triangle (teacher), a disc (KD) or a square
/// (no KD).
fn marker<DB: plotters::prelude::DrawingBackend>(
    kind: u8,
    at: (i32, i32),
) -> plotters::element::DynElement<'static, DB, (i32, i32)> {
    use plotters::prelude::*;
    let c = KIND_COLOR[usize::from(kind.min(2))];
    match kind {
        0 => TriangleMarker::new(at, 7, c.filled()).into_dyn(),
        1 => Circle::new(at, 5, c.filled()).into_dyn(),
        _ => Rectangle::new([(at.0 - 5, at.1 - 5), (at.0 + 5, at.1 + 5)], c.filled()).into_dyn(),
    }
}

/// Accuracy against latency, one panel per link.
fn plot(rows: &[Point]) -> Result<String, String> {
    use crate::plot::{LABEL_SIZE, Marker, extent, legend_row, place_labels};
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (title, rest) = root.split_vertically(56);
        let (body, foot) = rest.split_vertically(460);
        title
            .draw(&Text::new(
                "Fashion-MNIST MPCViT: accuracy against latency per inference, one point per trained model",
                (40, 8),
                ("sans-serif", 18).into_font(),
            ))
            .and_then(|_| {
                title.draw(&Text::new(
                    "accuracy of the fixed-point model over the 10,000 test images; the secure protocol \
                     predicted as it on 1,000 / 1,000 images of every model",
                    (40, 32),
                    ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
                ))
            })
            .map_err(|e| e.to_string())?;
        let (ylo, yhi) = extent(rows.iter().map(|p| p.accuracy));
        let pad = ((yhi - ylo) * 0.15).max(0.1);
        let panels = body.split_evenly((1, 2));
        for (panel, (name, lat)) in panels.iter().zip([
            (
                "measured: loopback, three threads, dealer included",
                (|p: &Point| p.wall_s) as fn(&Point) -> f64,
            ),
            ("modelled WAN: + rounds x 40 ms + bytes / 400 Mbit/s", |p: &Point| {
                p.wan_s
            }),
        ]) {
            let (xlo, xhi) = extent(rows.iter().map(lat));
            let xpad = ((xhi - xlo) * 0.12).max(1e-3);
            // enough decimals to tell the ticks (about ten over the axis) apart
            let dec = (-((xhi - xlo + 2.0 * xpad) / 10.0).log10()).ceil().clamp(0.0, 6.0) as usize;
            let mut c = ChartBuilder::on(panel)
                .caption(name, ("sans-serif", 15))
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d((xlo - xpad).max(0.0)..(xhi + xpad), (ylo - pad)..(yhi + pad))
                .map_err(|e| e.to_string())?;
            c.configure_mesh()
                .x_desc("seconds per inference")
                .y_desc("top-1 accuracy, %")
                .x_label_formatter(&|x| format!("{x:.dec$}"))
                .y_label_formatter(&|y| format!("{y:.1}"))
                .light_line_style(WHITE)
                .draw()
                .map_err(|e| e.to_string())?;
            let xy: Vec<(f64, f64)> = rows.iter().map(|p| (lat(p), p.accuracy)).collect();
            let front: Vec<(f64, f64)> = pareto(&xy).into_iter().filter_map(|i| xy.get(i).copied()).collect();
            // the front as a staircase: each point holds until a faster one
            let mut steps = Vec::new();
            for (k, &(x, y)) in front.iter().enumerate() {
                steps.push((x, y));
                if let Some(&(nx, _)) = front.get(k + 1) {
                    steps.push((nx, y));
                }
            }
            c.draw_series(LineSeries::new(steps, FRONT_COLOR.stroke_width(2)))
                .map_err(|e| e.to_string())?;
            c.draw_series(
                front
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 10, FRONT_COLOR.stroke_width(2))),
            )
            .map_err(|e| e.to_string())?;
            let px: Vec<(i32, i32)> = xy.iter().map(|p| c.backend_coord(p)).collect();
            let (rx, ry) = c.plotting_area().get_pixel_range();
            let labels: Vec<String> = rows
                .iter()
                .map(|p| {
                    p.label
                        .trim_end_matches(", KD")
                        .replace("mu = ", "mu ")
                        .replace("all ", "")
                        .replace("Softmax (teacher)", "teacher (Softmax)")
                })
                .collect();
            let offsets = place_labels(&px, &labels, 7, (rx.start, ry.start, rx.end, ry.end));
            for (((p, xy), text), off) in rows.iter().zip(&xy).zip(labels).zip(offsets) {
                let color = KIND_COLOR[usize::from(p.kind.min(2))];
                c.draw_series(std::iter::once(
                    EmptyElement::at(*xy)
                        + marker(p.kind, (0, 0))
                        + Text::new(text, off, ("sans-serif", LABEL_SIZE).into_font().color(&color)),
                ))
                .map_err(|e| e.to_string())?;
            }
        }
        let kind_entry = |kind: u8, text: &str| -> (Marker, String) {
            (
                Box::new(move |a: &DrawingArea<SVGBackend<'_>, _>, at| {
                    a.draw(&marker(kind, at)).map_err(|e| e.to_string())
                }),
                text.to_string(),
            )
        };
        let front_entry: (Marker, String) = (
            Box::new(|a: &DrawingArea<SVGBackend<'_>, _>, at: (i32, i32)| {
                a.draw(&Circle::new(at, 9, FRONT_COLOR.stroke_width(2)))
                    .and_then(|_| {
                        a.draw(&PathElement::new(
                            vec![(at.0 - 12, at.1), (at.0 + 8, at.1)],
                            FRONT_COLOR.stroke_width(2),
                        ))
                    })
                    .map_err(|e| e.to_string())
            }),
            "Pareto front (faster or more accurate than every other)".to_string(),
        );
        legend_row(
            &foot,
            &[
                kind_entry(0, "Softmax teacher"),
                kind_entry(1, "student with KD"),
                kind_entry(2, "student without KD"),
                front_entry,
            ],
        )?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_only_undominated_points_by_latency() {
        let pts = [(1.0, 1.0), (2.0, 2.0), (2.0, 1.0), (3.0, 2.0), (0.5, 0.5), (1.0, 1.0)];
        // (1, 1) twice: neither dominates the other
        assert_eq!(pareto(&pts), vec![4, 0, 5, 1]);
    }

    #[test]
    fn rows_with_reports_are_filled_the_others_marked_not_run() {
        let d = std::env::temp_dir().join(format!("mpcvit-table-{}", std::process::id()));
        let report = |dir: &str, acc: f64, spread: bool| {
            std::fs::create_dir_all(d.join(dir)).unwrap();
            let mut j = serde_json::json!({
                "model": "m", "attention": "8 RSAttn + 8 Scale", "images": 10000,
                "float_accuracy": acc, "fixed_point_accuracy": acc, "secure_images": 1000,
                "secure_accuracy": acc, "secure_fixed_point_agreement": 1.0,
                "mean_secure_seconds": 1.5, "mean_device_to_host_bytes": 3.85e6,
                "mean_host_to_device_bytes": 1.97e6, "rounds": 116
            });
            if spread {
                // reports written before these fields were added ran the first
                // images, with an older protocol
                j["secure_spread"] = true.into();
                j["version"] = COMPUTATION.into();
            }
            std::fs::write(d.join(dir).join("eval.json"), j.to_string()).unwrap();
        };
        report("teacher", 0.9, false);
        report("scale-kd", 0.85, true);
        let plain_only = std::fs::read_to_string(d.join("scale-kd").join("eval.json"))
            .unwrap()
            .replace("\"secure_images\":1000", "\"secure_images\":0");
        std::fs::write(d.join("scale-kd").join("eval.json"), plain_only).unwrap();
        report("mu0.5-kd", 0.8912, true);
        let t = render(&d).unwrap();
        assert_eq!(t.lines().count(), 2 + ROWS.len(), "{t}");
        assert_eq!(t.matches("not run yet").count(), ROWS.len() - 3, "{t}");
        let scale = t.lines().find(|l| l.starts_with("| all ScaleAttn, KD |")).unwrap();
        assert!(scale.contains("| 85.00 % | 85.00 % | not run |"), "{scale}");
        let row = t.lines().find(|l| l.starts_with("| mu = 0.5, KD |")).unwrap();
        assert!(
            row.contains("| 8 RSAttn + 8 Scale | 10000 | 89.12 % |") && row.contains("89.12 % (1000)"),
            "{row}"
        );
        // a timing of this protocol replaces the evaluation's seconds, rounds
        // and bytes and adds the modelled WAN; one of another protocol is
        // ignored
        let timing = |dir: &str, v: u8| {
            let j = serde_json::json!({"wall_s": 0.123, "inferences": 5, "rounds": 100,
                "device_to_host_bytes": 3_000_000u64, "host_to_device_bytes": 2_000_000u64, "version": v});
            std::fs::write(d.join(dir).join("timing.json"), j.to_string()).unwrap();
        };
        let mu05_row = || {
            render(&d)
                .unwrap()
                .lines()
                .find(|l| l.starts_with("| mu = 0.5, KD |"))
                .unwrap()
                .to_string()
        };
        timing("mu0.5-kd", COMPUTATION);
        let row = mu05_row();
        // 0.123 + 100 x 0.04 + 4e7 / 4e8; the link figures are the
        // timing's (this build's set-up), not the evaluation's
        assert!(row.contains("| 100.00 % | 0.123 | 4.22 | 100 | 3.00 | 2.00 |"), "{row}");
        let pts = points(&d).unwrap();
        assert_eq!(pts.len(), 1);
        assert!((pts[0].wan_s - 4.223).abs() < 1e-9 && pts[0].kind == 1);
        assert!(plot(&pts).unwrap().contains("<svg"));
        timing("mu0.5-kd", COMPUTATION.wrapping_add(1));
        let row = mu05_row();
        assert!(row.contains("| 100.00 % | 1.50 |  | 116 | 3.85 | 1.97 |"), "{row}");
        assert!(points(&d).unwrap_err().contains("--time"));
        let teacher = t.lines().find(|l| l.starts_with("| Softmax (teacher) |")).unwrap();
        assert!(
            teacher.contains(&format!("90.00 % (first 1000, protocol < {COMPUTATION})")),
            "{teacher}"
        );
        // unfinished rows say how far they have got
        std::fs::create_dir_all(d.join("mu0.1")).unwrap();
        std::fs::write(
            d.join("mu0.1").join("train.log"),
            "[teacher] already done\n[retrain-mu0.1] epoch 1/24 loss 0.9 train-acc 0.8\n\
             [retrain-mu0.1] epoch 2/24 loss 0.8 train-acc 0.85\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.join("mu0.7")).unwrap();
        std::fs::write(d.join("mu0.7").join("model.mpcvit"), b"m").unwrap();
        let crc = mpcvit_core::checksum::crc32(b"m");
        // two images of this model and version; a repeat, another version,
        // another model and a torn line do not count
        let line = |crc: u32, v: u8, image: usize| {
            format!(
                "{{\"model_crc\":{crc},\"version\":{v},\"image\":{image},\"label\":1,\"secure\":1,\"fixed\":1,\
                 \"seconds\":1.0,\"device_to_host\":1,\"host_to_device\":1,\"rounds\":1}}\n"
            )
        };
        let journal = line(crc, COMPUTATION, 0)
            + &line(crc, COMPUTATION, 0)
            + &line(crc, 0, 10)
            + &line(crc + 1, COMPUTATION, 20)
            + &line(crc, COMPUTATION, 30)
            + "{";
        std::fs::write(d.join("mu0.7").join("secure.jsonl"), journal).unwrap();
        std::fs::create_dir_all(d.join("mu0.3-kd")).unwrap();
        std::fs::write(d.join("mu0.3-kd").join("train.log"), "[teacher] already done\n").unwrap();
        let t = render(&d).unwrap();
        assert!(t.contains("| mu = 0.3, KD | training: started |"), "{t}");
        assert!(
            t.contains("| mu = 0.1 | training: retrain-mu0.1 epoch 2/24 done |"),
            "{t}"
        );
        assert!(
            t.contains("| mu = 0.7 | trained; secure evaluation: 2 images so far |"),
            "{t}"
        );
        assert_eq!(t.matches("not run yet").count(), ROWS.len() - 6, "{t}");
        std::fs::create_dir_all(d.join("mu0.3")).unwrap();
        std::fs::write(d.join("mu0.3").join("eval.json"), "{").unwrap();
        assert!(render(&d).unwrap_err().contains("mu0.3"));
        std::fs::remove_dir_all(&d).ok();
    }
}
