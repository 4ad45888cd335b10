//! `mpcvit demo`: the bundled Fashion-MNIST MPCViT and a few bundled test
//! images, run privately by three child processes (dealer, host, and one
//! device process per image) on free localhost ports; prints each prediction
//! beside the plaintext ones, then the cost per inference.

use crate::device::{DeviceReport, parse_profile};
use crate::float::{FloatModel, write_atomic};
use crate::keys::{self, HOST_KEY};
use crate::{image, logits, provision};
use mpcvit_core::FixedPoint;
use mpcvit_core::model::{AttnKind, ModelView};
use mpcvit_host::{WeightMap, reference};
use mpcvit_transport::shape::Profile;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The bundled model (`models/README.md` says how it was made).
pub const MODEL: &[u8] = include_bytes!("../../models/fmnist-mu0.5-kd.mpcvit");
/// The first 16 images of the Fashion-MNIST test split (IDX).
pub const IMAGES: &[u8] = include_bytes!("../../models/fmnist-t10k-16-images-idx3-ubyte");
/// Their labels (IDX).
pub const LABELS: &[u8] = include_bytes!("../../models/fmnist-t10k-16-labels-idx1-ubyte");
/// Fashion-MNIST class names.
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Options of `mpcvit demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Number of bundled test images to classify (1..=16).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub images: u16,
    /// A model file to use instead of the bundled one (28x28 grey input).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Shape the device's socket traffic like this link (lan, wan, ble,
    /// uart); the printed time is then the shaped one.
    #[arg(long, value_parser = parse_profile)]
    pub link: Option<Profile>,
    /// Seconds each party waits for a silent peer.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The device: a desktop process, or the firmware on QEMU's mps2-an386
    /// (Cortex-M4F; builds the firmware, needs qemu-system-arm). With qemu
    /// each image also runs on a desktop device for comparison.
    #[arg(long, default_value = "desktop", value_parser = ["desktop", "qemu"])]
    pub device: String,
    /// Seal the host-device link with ChaCha20-Poly1305 under a pre-shared
    /// key made for the run.
    #[arg(long)]
    pub psk: bool,
    /// How the device cuts each layer: `whole` or `ROWS,HEADS,QUERIES`
    /// (`mpcvit device --tile`). Default: whole for a desktop device, the
    /// firmware's `2,1,5` with `--device qemu`.
    #[arg(long, value_parser = crate::device::parse_tile)]
    pub tile: Option<mpcvit_core::ops::vit::Tile>,
}

/// Children and the scratch directory, cleaned up on every exit path (also
/// from the Ctrl-C handler, which is why they live in a static).
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);
/// Processes owned elsewhere (QEMU) that Ctrl-C must also end.
static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Removes a process that has ended from the Ctrl-C cleanup.
pub fn untrack(pid: u32) {
    if let Ok(mut v) = PIDS.lock() {
        v.retain(|&p| p != pid);
    }
}

/// Registers a process for the Ctrl-C cleanup.
pub fn track(pid: Option<u32>) {
    if let (Some(p), Ok(mut v)) = (pid, PIDS.lock()) {
        v.push(p);
    }
}

fn cleanup() {
    if let Ok(mut v) = PIDS.lock() {
        for p in v.drain(..) {
            let _ = Command::new("kill").arg(p.to_string()).stderr(Stdio::null()).status();
        }
    }
    if let Ok(mut c) = CHILDREN.lock() {
        for ch in c.iter_mut() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
        c.clear();
    }
    if let Ok(mut s) = SCRATCH.lock()
        && let Some(p) = s.take()
    {
        let _ = std::fs::remove_dir_all(p);
    }
}

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        cleanup();
    }
}

/// Starts a listening child and returns the address it printed.
fn start(exe: &Path, args: &[String], who: &str) -> Result<String, String> {
    let mut ch = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the {who}: {e}"))?;
    let out = ch.stdout.take().ok_or("no child stdout")?;
    CHILDREN.lock().map_err(|_| "child table poisoned")?.push(ch);
    let mut r = BufReader::new(out);
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("the {who} did not start: {e}"))?;
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|a| line.contains("listening on") && !a.is_empty())
        .ok_or_else(|| format!("the {who} did not start (see its error above)"))?
        .to_string();
    // Drain whatever else it prints so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
    Ok(addr)
}

/// The firmware's figures (issue 8's list), from its reports and its ELF.
fn print_firmware(elf: &Path, fw: &[crate::qemu::FwReport], n: usize) -> Result<(), String> {
    let Some(last) = fw.last() else { return Ok(()) };
    let (flash, data, bss) = crate::qemu::elf_sizes(elf)?;
    let per = crate::qemu::INSTR_PER_TICK;
    let m = fw.len().max(1) as u64;
    let avg = |f: &dyn Fn(&crate::qemu::FwReport) -> u64| fw.iter().map(f).sum::<u64>() / m;
    let compute = avg(&|r| (r.ticks_total - r.ticks_wait) * per);
    let (out_b, in_b) = (avg(&|r| r.uart_bytes_out), avg(&|r| r.uart_bytes_in));
    let stack = fw.iter().map(|r| r.stack_bytes).max().unwrap_or(0);
    println!();
    println!(
        "qemu mps2-an386 firmware (Cortex-M4F, static buffers, no heap), mean of {n}{}:",
        if last.sealed {
            ", host link sealed with ChaCha20-Poly1305"
        } else {
            ""
        }
    );
    println!(
        "  RAM: static {} B (.data {data} + .bss {bss}) + stack high-water {stack} B = {} B; used of it: activation scratch {} B, tx {} B, rx {} B, tmp {} B",
        last.static_bytes,
        last.static_bytes + stack,
        last.scratch_bytes,
        last.tx_bytes,
        last.rx_bytes,
        last.tmp_bytes
    );
    println!(
        "  flash: {flash} B with the provisioning blob ({} B), {} B without",
        last.blob_bytes,
        flash.saturating_sub(last.blob_bytes)
    );
    println!(
        "  instructions per inference (QEMU -icount, UART waits excluded): {:.1} M; at 1 instruction/cycle: {:.2} s at 168 MHz (STM32F4), {:.2} s at 64 MHz (nRF52840)",
        compute as f64 / 1e6,
        compute as f64 / 168e6,
        compute as f64 / 64e6
    );
    println!(
        "  UART bytes per inference: device->host {out_b}, host->device {in_b}; at 115200 baud {:.0} s, at 921600 baud {:.1} s (8N1, both directions in sequence); QEMU wall {:.1} s",
        (out_b + in_b) as f64 * 10.0 / 115_200.0,
        (out_b + in_b) as f64 * 10.0 / 921_600.0,
        fw.iter().map(|r| r.wall_s).sum::<f64>() / m as f64
    );
    Ok(())
}

/// Runs a child to completion while it is in the cleanup table (so Ctrl-C
/// also ends it), collecting its output.
fn run_tracked(exe: &Path, args: &[String]) -> Result<std::process::Output, String> {
    use std::io::Read as _;
    let mut ch = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the device: {e}"))?;
    let (mut so, mut se) = (ch.stdout.take(), ch.stderr.take());
    let id = ch.id();
    CHILDREN.lock().map_err(|_| "child table poisoned")?.push(ch);
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        se.as_mut().map(|s| s.read_to_end(&mut v));
        v
    });
    let mut stdout = Vec::new();
    so.as_mut().map(|s| s.read_to_end(&mut stdout));
    let stderr = err.join().unwrap_or_default();
    let mut ch = {
        let mut t = CHILDREN.lock().map_err(|_| "child table poisoned")?;
        let i = t.iter().position(|c| c.id() == id).ok_or("device process lost")?;
        t.swap_remove(i)
    };
    let status = ch.wait().map_err(|e| format!("device process: {e}"))?;
    Ok(std::process::Output { status, stdout, stderr })
}

/// Set by the Ctrl-C handler before it ends the children.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// `mpcvit demo`.
pub fn run(a: &Args, verbose: u8) -> Result<(), String> {
    let r = run_inner(a, verbose);
    if r.is_err() && INTERRUPTED.load(Ordering::SeqCst) {
        // The failure is the interruption's doing: let the handler exit 130.
        loop {
            std::thread::park();
        }
    }
    r
}

fn run_inner(a: &Args, verbose: u8) -> Result<(), String> {
    let _guard = Guard;
    ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        cleanup();
        eprintln!("mpcvit: interrupted");
        std::process::exit(130);
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let dir = scratch_dir()?;
    *SCRATCH.lock().map_err(|_| "poisoned")? = Some(dir.clone());
    let d = deploy(a, &dir)?;
    let view = ModelView::parse(&d.model).map_err(|e| e.to_string())?;
    print_model(&d.name, &view);
    let cmd = Cmd {
        exe: std::env::current_exe().map_err(|e| format!("cannot find the mpcvit binary: {e}"))?,
        verbose,
        timeout: a.timeout.to_string(),
    };
    let host = start_parties(a, &cmd, &d)?;
    // plaintext references in this process
    let fp = FixedPoint::new(view.frac_bits()).map_err(|e| e.to_string())?;
    let refs = Plain {
        fp,
        view: &view,
        host: WeightMap::host(&view, fp).map_err(|e| e.to_string())?,
        float: FloatModel::from_view(&view),
    };
    let (_, _, pixels, labels) = crate::data::parse_idx(IMAGES, LABELS, "bundled images")?;
    println!();
    println!(
        "{:>5}  {:<12} {:<12} {:<12} {:<12} {:>5} {:>8}",
        "image", "label", "secure", "fixed-point", "float", "agree", "time s"
    );
    let n = usize::from(a.images);
    let mut tally = Tally::default();
    for i in 0..n {
        let img = image::normalise(pixels.get(i * 784..(i + 1) * 784).ok_or("bundled image missing")?, 1);
        let label = usize::from(labels.get(i).copied().ok_or("bundled label missing")?);
        one_image(a, &cmd, &d, &host, &refs, (i, &img, label), &mut tally)?;
    }
    print_summary(a, &d, &tally, n)
}

/// The files of a demo run: the model, its keys and blob, the images, and
/// (with `--device qemu`) the firmware built for them.
struct Deployment {
    model: Vec<u8>,
    name: String,
    model_path: PathBuf,
    keys: PathBuf,
    blob_path: PathBuf,
    psk: Option<PathBuf>,
    elf: Option<PathBuf>,
    images_path: PathBuf,
}

/// A new scratch directory of this run's own: a random name, created (not
/// found: a directory someone else made under that name is not used), and
/// readable by this user only (it holds the run's keys).
fn scratch_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for _ in 0..8 {
        let dir = base.join(format!("mpcvit-demo-{:016x}", crate::keys::random_u64()?));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        match b.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!("cannot create a fresh scratch directory in {}", base.display()))
}

/// Writes the model, keys, blob and images into `dir` (the QEMU firmware's
/// keys and blob into a folder kept per model) and builds the firmware.
fn deploy(a: &Args, dir: &Path) -> Result<Deployment, String> {
    let (model, name) = match &a.model {
        Some(p) => (provision::read_model(p)?, p.display().to_string()),
        None => (MODEL.to_vec(), "fmnist-mu0.5-kd (bundled)".to_string()),
    };
    let arch = ModelView::parse(&model).map_err(|e| e.to_string())?.arch();
    if arch.channels != 1 || arch.image != 28 || arch.classes != 10 {
        return Err(format!(
            "the demo's images are 28x28 grey with 10 classes; {name} takes {}x{}x{} and has {} classes",
            arch.channels, arch.image, arch.image, arch.classes
        ));
    }
    let model_path = dir.join("model.mpcvit");
    write_atomic(&model_path, &model)?;
    let qemu = a.device == "qemu";
    // The QEMU firmware carries its key and blob in flash, so its deployment
    // is kept (per model) to avoid rebuilding the firmware on every run.
    let deploy = if qemu {
        crate::qemu::board_dir().join(format!(
            "target/deploy-{:08x}",
            mpcvit_core::provision::model_crc(&model)
        ))
    } else {
        dir.to_path_buf()
    };
    let keys = deploy.join("keys");
    let blob_path = deploy.join("device.blob");
    // A kept blob that this build cannot use (another blob version, or not
    // under the kept host key) is made again, with fresh keys.
    let stale = std::fs::read(&blob_path).ok().is_some_and(|b| {
        let usable = mpcvit_core::provision::BlobView::parse(&b)
            .ok()
            .zip(keys::read_key(&keys.join(HOST_KEY)).ok());
        usable.is_none_or(|(v, k)| {
            v.key_check() != mpcvit_core::session::blob_key_check(&k, mpcvit_core::provision::model_crc(&model))
        })
    });
    if stale {
        eprintln!(
            "demo: {} is not a blob of this build: provisioning again",
            blob_path.display()
        );
        for p in [blob_path.clone(), keys.join(HOST_KEY), keys.join(keys::DEVICE_KEY)] {
            std::fs::remove_file(&p)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
        }
    }
    if !blob_path.exists() {
        keys::make_keys(&keys)?;
        write_atomic(
            &blob_path,
            &provision::blob_for(&model, &keys::read_key(&keys.join(HOST_KEY))?)?,
        )?;
    }
    let psk = if a.psk {
        let d = deploy.join("psk");
        if !d.join(HOST_KEY).exists() {
            keys::make_keys(&d)?;
        }
        Some(d.join(HOST_KEY))
    } else {
        None
    };
    let elf = if qemu {
        let t = a.tile.map(|t| format!("{},{},{}", t.rows, t.heads, t.queries));
        Some(crate::qemu::build_firmware(
            &blob_path,
            &keys.join(keys::DEVICE_KEY),
            psk.as_deref(),
            t.as_deref(),
        )?)
    } else {
        None
    };
    let images_path = dir.join("images-idx3-ubyte");
    write_atomic(&images_path, IMAGES)?;
    Ok(Deployment {
        model,
        name,
        model_path,
        keys,
        blob_path,
        psk,
        elf,
        images_path,
    })
}

fn print_model(name: &str, view: &ModelView<'_>) {
    let arch = view.arch();
    let kinds: Vec<AttnKind> = (0..arch.layers)
        .flat_map(|l| (0..arch.heads).map(move |h| (l, h)))
        .map(|(l, h)| view.attn(l, h))
        .collect();
    let count = |k: AttnKind| kinds.iter().filter(|&&x| x == k).count();
    println!(
        "model: {name}: {} layers x {} heads ({} RSAttn, {} ScaleAttn, {} Softmax), dim {}, {} tokens, f = {}",
        arch.layers,
        arch.heads,
        count(AttnKind::ReluSoftmax),
        count(AttnKind::Scale),
        count(AttnKind::Softmax),
        arch.dim,
        arch.tokens(),
        view.frac_bits()
    );
}

/// How the demo starts its child processes.
struct Cmd {
    exe: PathBuf,
    verbose: u8,
    timeout: String,
}

impl Cmd {
    /// `-v` as often as asked, then `args`.
    fn args(&self, args: &[&str]) -> Vec<String> {
        (0..self.verbose)
            .map(|_| "-v")
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect()
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Starts the dealer and the host; returns the host's address.
fn start_parties(a: &Args, cmd: &Cmd, d: &Deployment) -> Result<String, String> {
    let keys = path(&d.keys);
    let t = cmd.timeout.as_str();
    let dealer = start(
        &cmd.exe,
        &cmd.args(&["dealer", "--listen", "127.0.0.1:0", "--keys", &keys, "--timeout", t]),
        "dealer",
    )?;
    let n = usize::from(a.images);
    // with qemu each image runs on the firmware and on a desktop device
    let sessions = (if d.elf.is_some() { 2 * n } else { n }).to_string();
    let model = path(&d.model_path);
    let mut args = cmd.args(&[
        "host",
        "--listen",
        "127.0.0.1:0",
        "--dealer",
        &dealer,
        "--model",
        &model,
        "--keys",
        &keys,
        "--timeout",
        t,
        "--sessions",
        &sessions,
    ]);
    if let Some(k) = &d.psk {
        args.extend([String::from("--psk"), path(k)]);
    }
    let host = start(&cmd.exe, &args, "host")?;
    println!(
        "parties: dealer {dealer}, host {host}, one device process per image; link: {}",
        a.link
            .map(|l| format!(
                "shaped as {} ({} Mbit/s, {} ms RTT)",
                l.name,
                l.bits_per_s / 1e6,
                l.rtt_s * 1e3
            ))
            .unwrap_or_else(|| "loopback, unshaped".into())
    );
    Ok(host)
}

/// The plaintext references of the demo's model.
struct Plain<'v> {
    fp: FixedPoint,
    view: &'v ModelView<'v>,
    host: WeightMap,
    float: FloatModel,
}

/// What the images gave.
#[derive(Default)]
struct Tally {
    reports: Vec<DeviceReport>,
    fw: Vec<crate::qemu::FwReport>,
    agree: usize,
    agree_float: usize,
    correct: usize,
}

/// Classifies image `i` with a device process (and the firmware with
/// `--device qemu`) and prints its row.
fn one_image(
    a: &Args,
    cmd: &Cmd,
    d: &Deployment,
    host: &str,
    refs: &Plain<'_>,
    (i, img, label): (usize, &[f32], usize),
    tally: &mut Tally,
) -> Result<(), String> {
    let fp = refs.fp;
    let fixed: Vec<f64> = reference::forward(refs.view, fp, &refs.host, img)
        .map_err(|e| format!("image {i}: {e}"))?
        .iter()
        .map(|&x| fp.decode(x))
        .collect();
    let fl: Vec<f64> = refs.float.forward(img).iter().map(|&x| x as f64).collect();
    let (blob, keys, images, index) = (path(&d.blob_path), path(&d.keys), path(&d.images_path), i.to_string());
    let mut args = cmd.args(&["device", "--connect", host, "--blob", &blob, "--keys", &keys]);
    args.extend(
        [
            "--images",
            &images,
            "--index",
            &index,
            "--json",
            "--timeout",
            &cmd.timeout,
        ]
        .iter()
        .map(|x| x.to_string()),
    );
    if let Some(l) = a.link {
        args.extend([String::from("--link"), l.name.to_string()]);
    }
    if let Some(k) = &d.psk {
        args.extend([String::from("--psk"), path(k)]);
    }
    if let Some(t) = a.tile {
        args.extend([String::from("--tile"), format!("{},{},{}", t.rows, t.heads, t.queries)]);
    }
    let out = run_tracked(&cmd.exe, &args)?;
    if !out.status.success() {
        return Err(format!(
            "the device failed on image {i}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let r: DeviceReport = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the device's report for image {i} is unreadable: {e}"))?;
    let (pf, pfl) = (logits::argmax(&fixed), logits::argmax(&fl));
    if let Some(elf) = &d.elf {
        let q = crate::qemu::run_device(elf, host, i as u8, std::time::Duration::from_secs(a.timeout.max(600)))?;
        let dq: Vec<f64> = q.logits.iter().map(|&v| fp.decode(v as u64)).collect();
        println!(
            "       qemu mps2-an386 device: {:<12} (desktop device: {}; max |logit diff| {:.1e}; \
             to fixed point: firmware {:.1e}, desktop {:.1e}); {:.1} s",
            CLASSES.get(q.prediction).copied().unwrap_or("?"),
            if q.prediction == r.prediction {
                "same prediction"
            } else {
                "DIFFERENT prediction"
            },
            logits::max_abs_diff(&r.logits, &dq),
            logits::max_abs_diff(&dq, &fixed),
            logits::max_abs_diff(&r.logits, &fixed),
            q.wall_s
        );
        tally.fw.push(q);
    }
    tally.agree += usize::from(r.prediction == pf);
    tally.agree_float += usize::from(r.prediction == pfl);
    tally.correct += usize::from(r.prediction == label);
    let name = |c: usize| CLASSES.get(c).copied().unwrap_or("?");
    println!(
        "{:>5}  {:<12} {:<12} {:<12} {:<12} {:>5} {:>8.2}",
        i,
        name(label),
        name(r.prediction),
        name(pf),
        name(pfl),
        if r.prediction == pf { "yes" } else { "NO" },
        r.wall_s
    );
    tally.reports.push(r);
    Ok(())
}

/// The agreement line, the cost per inference, the firmware's figures and
/// the modelled links.
fn print_summary(a: &Args, d: &Deployment, t: &Tally, n: usize) -> Result<(), String> {
    let m = t.reports.len().max(1) as f64;
    let mean = |f: &dyn Fn(&DeviceReport) -> f64| t.reports.iter().map(f).sum::<f64>() / m;
    let (wall, sent, recv, rounds) = (
        mean(&|r| r.wall_s),
        mean(&|r| r.bytes_sent as f64),
        mean(&|r| r.bytes_recv as f64),
        mean(&|r| r.rounds as f64),
    );
    println!();
    println!(
        "secure = fixed-point plaintext on {}/{n} images, = float on {}/{n}; correct {}/{n}",
        t.agree, t.agree_float, t.correct
    );
    println!(
        "per inference (mean of {n}): {wall:.2} s wall{}, {rounds:.0} rounds, device->host {:.2} MB, host->device {:.2} MB",
        a.link
            .map(|l| format!(" shaped as {}", l.name))
            .unwrap_or_else(|| " on loopback (dealer, host and device share this machine's cores)".into()),
        sent / 1e6,
        recv / 1e6
    );
    if let Some(elf) = &d.elf {
        print_firmware(elf, &t.fw, n)?;
    }
    if a.link.is_none() {
        let bytes = (sent + recv) as u64;
        let r = rounds as u64;
        println!(
            "modelled (wall + rounds x RTT + bytes / bandwidth): LAN {:.2} s (1 Gbit/s, 0.5 ms), WAN {:.2} s (400 Mbit/s, 40 ms), BLE {:.2} s, UART 921600 {:.2} s",
            wall + Profile::LAN.added_s(r, bytes),
            wall + Profile::WAN.added_s(r, bytes),
            wall + Profile::BLE.added_s(r, bytes),
            wall + Profile::UART.added_s(r, bytes)
        );
    }
    Ok(())
}
