//! `mpcvit eval`: accuracy of a model over a dataset split: plaintext float,
//! plaintext fixed point (the same approximations as the secure protocol),
//! and secure inference on `--secure` images spread evenly over the split
//! (image `j * images / secure`, so that their accuracy estimates the
//! split's: the first images of Fashion-MNIST's test split are easier than
//! the rest), with the secure / fixed-point top-1 agreement.

use crate::data::{self, Dataset};
use crate::float::FloatModel;
use crate::logits::argmax;
use crate::progress::Progress;
use mpcvit_core::FixedPoint;
use mpcvit_core::model::ModelView;
use mpcvit_core::ops::vit::Tile;
use mpcvit_core::session::COMPUTATION;
use mpcvit_host::local::{self, LocalKeys};
use mpcvit_host::{reference, weight_maps};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

/// Options of `eval`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (core format).
    #[arg(long)]
    model: PathBuf,
    /// Dataset: fashion-mnist or cifar10.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// Fashion-MNIST directory.
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
    /// CIFAR-10 test batch file.
    #[arg(long)]
    cifar_test: Option<PathBuf>,
    /// Images for the plaintext accuracies (from the start of the test split).
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// Images (of those) to run securely, spread evenly over them.
    #[arg(long, default_value_t = 100)]
    secure: usize,
    /// Write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Journal of the secure runs, one JSON line per image: an interrupted
    /// evaluation started again with the same journal skips the images it
    /// already ran (lines of another model or protocol version are ignored and dropped).
    #[arg(long)]
    journal: Option<PathBuf>,
}

/// One secure inference, as the journal records it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct Run {
    model_crc: u32,
    /// The computation version that ran it
    /// (`mpcvit_core::session::COMPUTATION`; 0 in journals from before).
    #[serde(default)]
    version: u8,
    image: usize,
    label: usize,
    secure: usize,
    fixed: usize,
    seconds: f64,
    device_to_host: u64,
    host_to_device: u64,
    rounds: u64,
    /// Largest |secure - fixed-point| logit (absent in journals written
    /// before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_logit_error: Option<f64>,
}

/// Sums over the secure runs so far (resumed and new alike).
#[derive(Default)]
struct Tally {
    seen: usize,
    correct: usize,
    agree: usize,
    seconds: f64,
    device_to_host: u64,
    host_to_device: u64,
    rounds: u64,
    /// Runs that recorded their logit error, and the largest of those.
    logit_runs: usize,
    max_logit_error: f64,
}

impl Tally {
    fn add(&mut self, r: &Run) {
        self.seen += 1;
        self.correct += (r.secure == r.label) as usize;
        self.agree += (r.secure == r.fixed) as usize;
        self.seconds += r.seconds;
        self.device_to_host += r.device_to_host;
        self.host_to_device += r.host_to_device;
        self.rounds = r.rounds;
        if let Some(e) = r.max_logit_error {
            self.logit_runs += 1;
            self.max_logit_error = self.max_logit_error.max(e);
        }
    }
}

/// The `j`-th of `k` images spread evenly over `n`.
fn spread(j: usize, k: usize, n: usize) -> usize {
    (j as u128 * n as u128 / k.max(1) as u128) as usize
}

/// The runs of a journal's text that belong to this model (by CRC) and
/// protocol version, the first for each image, with their lines; torn or
/// foreign lines (another model or version) and repeats are left out.
fn journal_runs(text: &str, model_crc: u32) -> impl Iterator<Item = (Run, &str)> {
    let mut images = std::collections::HashSet::new();
    text.lines().filter_map(move |line| {
        let r = serde_json::from_str::<Run>(line).ok()?;
        (r.model_crc == model_crc && r.version == COMPUTATION && images.insert(r.image)).then_some((r, line))
    })
}

/// How many images a journal holds runs of, for this model and protocol
/// version (`mpcvit table`'s progress of an unfinished evaluation); 0 when
/// there is no journal.
pub fn journal_progress(path: &std::path::Path, model_crc: u32) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| journal_runs(&t, model_crc).count())
}

/// Reads a journal: the runs of this model (by CRC) and protocol version on
/// images below `n`, at most one per image. Torn or foreign lines (another
/// model or version) and repeats are dropped,
/// and the file is rewritten without them so that appending starts on a
/// clean line; runs of this model on images beyond `n` are kept.
fn read_journal(path: &std::path::Path, model_crc: u32, n: usize) -> Result<Vec<Option<Run>>, String> {
    let mut done: Vec<Option<Run>> = vec![None; n];
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(format!("cannot read journal {}: {e}", path.display())),
    };
    let mut kept = String::new();
    for (r, line) in journal_runs(&text, model_crc) {
        // an image beyond this evaluation's is kept for a larger one
        if let Some(slot) = done.get_mut(r.image) {
            *slot = Some(r);
        }
        kept.push_str(line);
        kept.push('\n');
    }
    if kept != text {
        crate::float::write_atomic(path, kept.as_bytes())?;
    }
    Ok(done)
}

/// What `eval --json` writes (and `mpcvit table` reads).
#[derive(Serialize, Deserialize, Debug)]
pub struct Report {
    /// The model file.
    pub model: String,
    /// Attention heads by kind, e.g. "8 RSAttn + 8 Scale", and the MLPs
    /// MPCViT+ linearized (empty in reports written before it was added).
    #[serde(default)]
    pub attention: String,
    /// Test images of the plaintext accuracies.
    pub images: usize,
    /// Float accuracy on them.
    pub float_accuracy: f64,
    /// Fixed-point accuracy on them.
    pub fixed_point_accuracy: f64,
    /// Images run securely.
    pub secure_images: usize,
    /// Whether they were spread evenly over the test images (false: the
    /// first ones, as reports before this field was added ran).
    #[serde(default)]
    pub secure_spread: bool,
    /// Secure accuracy on them.
    pub secure_accuracy: f64,
    /// Fraction of them where the secure top-1 = the fixed-point top-1.
    pub secure_fixed_point_agreement: f64,
    /// Mean wall time of a secure inference (three threads, in-memory pipes).
    pub mean_secure_seconds: f64,
    /// Mean device -> host bytes per inference.
    pub mean_device_to_host_bytes: f64,
    /// Mean host -> device bytes per inference.
    pub mean_host_to_device_bytes: f64,
    /// Rounds per inference.
    pub rounds: u64,
    /// Computation version of the secure runs
    /// (`mpcvit_core::session::COMPUTATION`; 0 in reports from before it
    /// was recorded).
    #[serde(default)]
    pub version: u8,
    /// Largest |secure - fixed-point| logit over the secure images that
    /// recorded it (journal runs from before it was recorded did not).
    #[serde(default)]
    pub max_logit_error: Option<f64>,
    /// How many of the secure images recorded it.
    #[serde(default)]
    pub logit_error_images: usize,
}

/// The model's attention heads by kind, and its linearized MLPs if any.
fn attention(v: &ModelView<'_>) -> String {
    use mpcvit_core::model::AttnKind;
    let ar = v.arch();
    let kinds = [
        (AttnKind::ReluSoftmax, "RSAttn"),
        (AttnKind::Scale, "Scale"),
        (AttnKind::Softmax, "Softmax"),
        (AttnKind::Quad, "2Quad"),
    ];
    let heads = || (0..ar.layers).flat_map(|l| (0..ar.heads).map(move |h| v.attn(l, h)));
    let mut parts: Vec<String> = kinds
        .iter()
        .filter_map(|&(k, name)| {
            let c = heads().filter(|&x| x == k).count();
            (c > 0).then(|| format!("{c} {name}"))
        })
        .collect();
    let linear = (0..ar.layers)
        .flat_map(|l| (0..ar.tokens()).map(move |t| (l, t)))
        .filter(|&(l, t)| !v.gelu(l, t))
        .count();
    if linear > 0 {
        parts.push(format!("{linear} linear MLP tokens"));
    }
    parts.join(" + ")
}

/// Runs the evaluation.
pub fn run(a: &Args) -> Result<(), String> {
    let bytes = crate::files::read_bounded(&a.model, "model", crate::files::MAX_MODEL)?;
    let fm = FloatModel::from_bytes(&bytes).map_err(|e| format!("{}: {e}", a.model.display()))?;
    let view = ModelView::parse(&bytes).map_err(|e| e.to_string())?;
    let ds = dataset(a, &fm)?;
    let fp = FixedPoint::new(fm.frac_bits).map_err(|e| e.to_string())?;
    let keys = LocalKeys::fixed(1);
    let maps = weight_maps(&view, fp, &keys.model).map_err(|e| e.to_string())?;
    let n = ds.len();
    let plain = plaintext(&fm, &view, fp, &maps[0], &ds)?;
    let ns = a.secure.min(n);
    let run = Secure {
        view: &view,
        fp,
        maps: &maps,
        keys: &keys,
        model_crc: mpcvit_core::checksum::crc32(&bytes),
    };
    let tally = run.images(a, &ds, &plain.logits, ns)?;
    let r = Report {
        model: a.model.display().to_string(),
        attention: attention(&view),
        images: n,
        float_accuracy: plain.float_ok as f64 / n.max(1) as f64,
        fixed_point_accuracy: plain.fixed_ok as f64 / n.max(1) as f64,
        secure_images: ns,
        secure_spread: true,
        secure_accuracy: tally.correct as f64 / ns.max(1) as f64,
        secure_fixed_point_agreement: tally.agree as f64 / ns.max(1) as f64,
        mean_secure_seconds: tally.seconds / ns.max(1) as f64,
        mean_device_to_host_bytes: tally.device_to_host as f64 / ns.max(1) as f64,
        mean_host_to_device_bytes: tally.host_to_device as f64 / ns.max(1) as f64,
        rounds: tally.rounds,
        version: COMPUTATION,
        max_logit_error: (tally.logit_runs > 0).then_some(tally.max_logit_error),
        logit_error_images: tally.logit_runs,
    };
    print_report(&r, tally.agree);
    if let Some(p) = &a.json {
        crate::float::write_atomic(
            p,
            serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?.as_bytes(),
        )?;
    }
    Ok(())
}

/// The test split `--dataset` names, cut at `--limit`, checked against the
/// model's input and classes.
fn dataset(a: &Args, fm: &FloatModel) -> Result<Dataset, String> {
    let mut ds: Dataset = match a.dataset.as_str() {
        "fashion-mnist" => data::fashion_mnist(&a.data_dir, "t10k")?,
        "cifar10" => data::cifar10(&[a.cifar_test.clone().ok_or("--cifar-test is required for cifar10")?])?,
        o => return Err(format!("unknown dataset {o:?} (fashion-mnist or cifar10)")),
    };
    ds.truncate(a.limit);
    let ar = fm.arch;
    if ds.channels != ar.channels || ds.side != ar.image || ds.classes != ar.classes {
        return Err(format!(
            "model expects {}x{}x{} images and {} classes, the dataset has {}x{}x{} and {}",
            ar.channels, ar.image, ar.image, ar.classes, ds.channels, ds.side, ds.side, ds.classes
        ));
    }
    Ok(ds)
}

/// What the plaintext pass gave: correct counts, and the fixed-point
/// logits of every image (for the secure runs' agreement and distance).
struct PlainPass {
    float_ok: usize,
    fixed_ok: usize,
    logits: Vec<Vec<f64>>,
}

fn plaintext(
    fm: &FloatModel,
    view: &ModelView<'_>,
    fp: FixedPoint,
    host: &mpcvit_host::WeightMap,
    ds: &Dataset,
) -> Result<PlainPass, String> {
    let n = ds.len();
    let mut p = PlainPass {
        float_ok: 0,
        fixed_ok: 0,
        logits: Vec::with_capacity(n),
    };
    let mut pb = Progress::new(n, "plaintext");
    for (i, &label) in ds.labels.iter().enumerate().take(n) {
        let img = ds.image(i);
        let f: Vec<f64> = fm.forward(&img).iter().map(|&v| v as f64).collect();
        let q: Vec<f64> = reference::forward(view, fp, host, &img)
            .map_err(|e| format!("image {i}: {e}"))?
            .iter()
            .map(|&v| fp.decode(v))
            .collect();
        p.float_ok += usize::from(argmax(&f) == usize::from(label));
        p.fixed_ok += usize::from(argmax(&q) == usize::from(label));
        p.logits.push(q);
        pb.inc();
    }
    pb.finish();
    Ok(p)
}

/// The secure runs of one model.
struct Secure<'a> {
    view: &'a ModelView<'a>,
    fp: FixedPoint,
    maps: &'a [mpcvit_host::WeightMap; 3],
    keys: &'a LocalKeys,
    model_crc: u32,
}

impl Secure<'_> {
    /// Runs `ns` images spread over the split securely, skipping those the
    /// journal has and appending the others to it.
    fn images(&self, a: &Args, ds: &Dataset, fixed: &[Vec<f64>], ns: usize) -> Result<Tally, String> {
        let n = ds.len();
        let runs = match &a.journal {
            Some(p) => read_journal(p, self.model_crc, n)?,
            None => vec![None; n],
        };
        let picked: Vec<usize> = (0..ns).map(|j| spread(j, ns, n)).collect();
        let mut journal = match &a.journal {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open journal {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let mut tally = Tally::default();
        picked
            .iter()
            .filter_map(|&i| runs.get(i).copied().flatten())
            .for_each(|r| tally.add(&r));
        let resumed = tally.seen;
        let mut pb = Progress::new(ns, "secure");
        pb.set_position(resumed as u64);
        if resumed > 0 {
            pb.println(&format!("journal: {resumed} of {ns} images already run"));
        }
        for &i in &picked {
            if runs.get(i).is_some_and(Option::is_some) {
                continue;
            }
            let label = usize::from(ds.labels.get(i).copied().ok_or("label missing")?);
            let run = self.one(i, &ds.image(i), label, fixed.get(i).map_or(&[][..], Vec::as_slice))?;
            if let (Some(f), Some(p)) = (journal.as_mut(), &a.journal) {
                let line = serde_json::to_string(&run).map_err(|e| e.to_string())?;
                writeln!(f, "{line}")
                    .and_then(|()| f.flush())
                    .map_err(|e| format!("cannot append to journal {}: {e}", p.display()))?;
            }
            tally.add(&run);
            pb.set_message(format!(
                "acc {:.3} agree {}/{}",
                tally.correct as f64 / tally.seen as f64,
                tally.agree,
                tally.seen
            ));
            pb.inc();
        }
        pb.finish();
        Ok(tally)
    }

    /// One secure inference of image `i` (session `i + 1`).
    fn one(&self, i: usize, img: &[f32], label: usize, fixed: &[f64]) -> Result<Run, String> {
        let inf = local::secure(
            self.view,
            self.fp,
            self.maps,
            self.keys,
            i as u64 + 1,
            img,
            (Tile::WHOLE, false),
        )
        .map_err(|e| format!("image {i}: {e}"))?;
        let g: Vec<f64> = inf.logits.iter().map(|&v| self.fp.decode(v)).collect();
        Ok(Run {
            model_crc: self.model_crc,
            version: COMPUTATION,
            image: i,
            label,
            secure: argmax(&g),
            fixed: argmax(fixed),
            seconds: inf.wall_ns as f64 / 1e9,
            device_to_host: inf.device.bytes_sent,
            host_to_device: inf.device.bytes_recv,
            rounds: inf.device.rounds,
            max_logit_error: Some(crate::logits::max_abs_diff(&g, fixed)),
        })
    }
}

fn print_report(r: &Report, agree: usize) {
    let (n, ns) = (r.images, r.secure_images);
    println!(
        "images {n}: float accuracy {:.4}, fixed-point accuracy {:.4}",
        r.float_accuracy, r.fixed_point_accuracy
    );
    if ns > 0 {
        println!(
            "secure on {ns} spread over the {n}: accuracy {:.4}, agreement with fixed point {}/{ns}, {:.2} s per image, {} rounds, {:.2} MB device->host, {:.2} MB host->device",
            r.secure_accuracy,
            agree,
            r.mean_secure_seconds,
            r.rounds,
            r.mean_device_to_host_bytes / 1e6,
            r.mean_host_to_device_bytes / 1e6
        );
        if let Some(e) = r.max_logit_error {
            println!(
                "largest |secure - fixed-point| logit: {e:.2e} (over {} of the {ns} images)",
                r.logit_error_images
            );
        }
    }
}
