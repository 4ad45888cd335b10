//! `mpcvit table`: the Fashion-MNIST results table (docs/results.md) from the
//! evaluation reports `scripts/results-table.sh` leaves in its run
//! directory, one sub-directory per row. A row whose report is missing is
//! listed as not run, or with how far its training or secure evaluation
//! has got: the table only carries measured figures.

use crate::eval::Report as Eval;
use mpcvit_core::session::VERSION;
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

fn read(dir: &Path) -> Result<Option<Eval>, String> {
    let p = dir.join("eval.json");
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
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
        "| model | attention heads | test images | float | fixed point | secure (images) | secure = fixed point | s / inference | rounds | MB device->host | MB host->device |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (dir, label) in ROWS {
        let report = read(&runs.join(dir))?;
        let heads = report
            .as_ref()
            .map_or("", |e| if e.attention.is_empty() { "?" } else { &e.attention });
        match &report {
            Some(e) if e.secure_images == 0 => {
                let _ = writeln!(
                    t,
                    "| {label} | {heads} | {} | {} | {} | not run | | | | | |",
                    e.images,
                    pct(e.float_accuracy),
                    pct(e.fixed_point_accuracy),
                );
            }
            Some(e) => {
                // secure runs of an older protocol (another computation) say so
                let version = match e.version {
                    VERSION => String::new(),
                    0 => format!(", protocol < {VERSION}"),
                    v => format!(", protocol {v}"),
                };
                let _ = writeln!(
                    t,
                    "| {label} | {heads} | {} | {} | {} | {} ({}{}{version}) | {} | {:.2} | {} | {:.2} | {:.2} |",
                    e.images,
                    pct(e.float_accuracy),
                    pct(e.fixed_point_accuracy),
                    pct(e.secure_accuracy),
                    if e.secure_spread { "" } else { "first " },
                    e.secure_images,
                    pct(e.secure_fixed_point_agreement),
                    e.mean_secure_seconds,
                    e.rounds,
                    e.mean_device_to_host_bytes / 1e6,
                    e.mean_host_to_device_bytes / 1e6,
                );
            }
            None => {
                let _ = writeln!(t, "| {label} | {} | | | | | | | | | |", progress(&runs.join(dir)));
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
    let t = render(&a.runs)?;
    print!("{t}");
    if let Some(p) = &a.out {
        crate::float::write_atomic(p, t.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
                j["version"] = VERSION.into();
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
        let teacher = t.lines().find(|l| l.starts_with("| Softmax (teacher) |")).unwrap();
        assert!(
            teacher.contains(&format!("90.00 % (first 1000, protocol < {VERSION})")),
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
        let journal = line(crc, VERSION, 0)
            + &line(crc, VERSION, 0)
            + &line(crc, 0, 10)
            + &line(crc + 1, VERSION, 20)
            + &line(crc, VERSION, 30)
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
