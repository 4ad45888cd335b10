//! The three parties as processes over TCP: `mpcvit dealer`, `mpcvit host`,
//! `mpcvit device`, plus `keygen` and `provision`.
//!
//! Topology: the dealer and the host listen; a device connects to the host;
//! for each device the host opens a connection to the dealer and relays the
//! device's set-up (a nonce and a key-confirmation tag, `core::session`). The
//! device's correlations come from its provisioned key and its nonce, which
//! the host never sees in a usable form; all the dealer sends goes to the
//! host. Each device connection is one session with its own id, served in
//! its own thread.

use crate::data;
use crate::float::write_atomic;
use log::{info, warn};
use mpcvit_core::model::ModelView;
use mpcvit_core::ops::vit::{self, Tile, VitSpec};
use mpcvit_core::prg::Seed;
use mpcvit_core::provision::{self, BlobView};
use mpcvit_core::session::{self, Accept, DealerSetup, DeviceHello};
use mpcvit_core::{FixedPoint, ProtocolError, SessionId};
use mpcvit_device::DeviceError;
use mpcvit_host::{DealerParty, HostParty, WeightMap};
use mpcvit_transport::seal::{SealError, Sealed};
use mpcvit_transport::shape::{Profile, Shaped};
use mpcvit_transport::tcp::Tcp;
use mpcvit_transport::{FrameKind, Link};
use serde::Serialize;
use std::collections::HashSet;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The byte stream of every party link: TCP (shaped or not), optionally
/// sealed with a pre-shared key (`--psk`).
pub enum Net {
    /// In the clear (frames still carry a CRC).
    Plain(Shaped<Tcp>),
    /// ChaCha20-Poly1305 records (`transport::seal`).
    Sealed(Box<Sealed<Shaped<Tcp>, Vec<u8>>>),
}

/// Record buffers of sealed links (plaintext bytes per record).
const RECORD: usize = mpcvit_transport::seal::RECORD_MAX;

impl embedded_io::ErrorType for Net {
    type Error = SealError<std::io::Error>;
}

impl embedded_io::Read for Net {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self {
            Net::Plain(t) => t.read(buf).map_err(SealError::Io),
            Net::Sealed(t) => t.read(buf),
        }
    }
}

impl embedded_io::Write for Net {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        match self {
            Net::Plain(t) => t.write(buf).map_err(SealError::Io),
            Net::Sealed(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        match self {
            Net::Plain(t) => t.flush().map_err(SealError::Io),
            Net::Sealed(t) => t.flush(),
        }
    }
}

/// Which end of a sealed link this party is.
#[derive(Clone, Copy)]
enum Seal<'k> {
    None,
    Initiator(&'k [u8; 32]),
    Responder(&'k [u8; 32]),
}

/// Largest set-up frame (a plan is a few kB; an abort reason a line).
const SETUP_MAX: usize = 1 << 20;

/// Key file of the host (shared with the dealer).
pub const HOST_KEY: &str = "host.key";
/// Key file of the device (shared with the dealer).
pub const DEVICE_KEY: &str = "device.key";

/// Reads a key file: 64 hex digits (whitespace around them is ignored).
pub fn read_key(path: &Path) -> Result<Seed, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read key {}: {e} (make keys with `mpcvit keygen --out DIR`)",
            path.display()
        )
    })?;
    let hex = text.trim();
    let bad = || format!("{}: a key file holds 64 hex digits", path.display());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(Seed::from_bytes(k))
}

fn write_key(path: &Path, key: &Seed) -> Result<(), String> {
    use std::fs::OpenOptions;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(path).map_err(|e| {
        format!(
            "cannot create {}: {e} (keygen never overwrites a key; choose another --out)",
            path.display()
        )
    })?;
    let hex: String = key.expose().iter().map(|b| format!("{b:02x}")).collect();
    f.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn random_seed() -> Result<Seed, String> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(Seed::from_bytes(k))
}

fn random_u64() -> Result<u64, String> {
    getrandom::u64().map_err(|e| format!("no OS randomness: {e}"))
}

/// Options of `mpcvit keygen`.
#[derive(clap::Args, Debug, Clone)]
pub struct KeygenArgs {
    /// Directory to create the key files in (`host.key`: host and dealer;
    /// `device.key`: device and dealer). Existing keys are never overwritten.
    #[arg(long)]
    pub out: PathBuf,
}

/// Creates `host.key` and `device.key` with fresh random keys in `dir`.
pub fn make_keys(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_key(&dir.join(HOST_KEY), &random_seed()?)?;
    write_key(&dir.join(DEVICE_KEY), &random_seed()?)
}

/// `mpcvit keygen`.
pub fn keygen(a: &KeygenArgs) -> Result<(), String> {
    make_keys(&a.out)?;
    println!(
        "wrote {} and {}",
        a.out.join(HOST_KEY).display(),
        a.out.join(DEVICE_KEY).display()
    );
    Ok(())
}

/// Options of `mpcvit provision`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProvisionArgs {
    /// The model file (core format).
    #[arg(long)]
    pub model: PathBuf,
    /// Directory with `host.key` (the masks come from it and the model).
    #[arg(long)]
    pub keys: PathBuf,
    /// Where to write the device's provisioning blob.
    #[arg(long)]
    pub out: PathBuf,
}

/// Reads and checks a model file.
pub fn read_model(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read model {}: {e}", path.display()))?;
    ModelView::parse(&bytes).map_err(|e| format!("{}: not a usable model file: {e}", path.display()))?;
    Ok(bytes)
}

/// The provisioning blob of a model for the deployment of `host_key`.
pub fn blob_for(model: &[u8], host_key: &Seed) -> Result<Vec<u8>, String> {
    let view = ModelView::parse(model).map_err(|e| e.to_string())?;
    let fp = FixedPoint::new(view.frac_bits()).map_err(|e| e.to_string())?;
    let seed = session::model_seed(host_key, provision::model_crc(model));
    mpcvit_host::device_blob(model, fp, &seed).map_err(|e| e.to_string())
}

/// `mpcvit provision`.
pub fn provision(a: &ProvisionArgs) -> Result<(), String> {
    let model = read_model(&a.model)?;
    let key = read_key(&a.keys.join(HOST_KEY))?;
    let blob = blob_for(&model, &key)?;
    write_atomic(&a.out, &blob)?;
    println!("wrote {} ({} bytes)", a.out.display(), blob.len());
    Ok(())
}

/// Binds a listener with an error that says what to do.
pub fn listen(addr: &str, who: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another program uses this port: pick another --listen address, or port 0 for any free one)"
        } else {
            ""
        };
        format!("{who}: cannot listen on {addr}: {e}{hint}")
    })
}

fn announce(who: &str, l: &TcpListener) -> Result<SocketAddr, String> {
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    // The first stdout line is the bound address (the demo reads it).
    println!("mpcvit {who} listening on {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    Ok(addr)
}

fn connect(addr: &str, what: &str) -> Result<TcpStream, String> {
    TcpStream::connect(addr).map_err(|e| format!("cannot connect to the {what} at {addr}: {e} (is it running?)"))
}

fn link(s: TcpStream, timeout: Duration, profile: Option<Profile>, seal: Seal<'_>) -> Result<Link<Net>, String> {
    let t = Shaped::new(
        Tcp::new(s, Some(timeout)).map_err(|e| format!("socket set-up failed: {e}"))?,
        profile,
    );
    let bufs = || (vec![0u8; RECORD], vec![0u8; RECORD]);
    let net = match seal {
        Seal::None => Net::Plain(t),
        Seal::Initiator(psk) => {
            let mut salt = [0u8; mpcvit_transport::seal::SALT_LEN];
            getrandom::fill(&mut salt).map_err(|e| format!("no OS randomness: {e}"))?;
            let (tx, rx) = bufs();
            Net::Sealed(Box::new(
                Sealed::initiator(t, psk, salt, tx, rx).map_err(|e| format!("opening the sealed link failed: {e}"))?,
            ))
        }
        Seal::Responder(psk) => {
            let (tx, rx) = bufs();
            Net::Sealed(Box::new(Sealed::responder(t, psk, tx, rx).map_err(|e| {
                format!("the peer did not open a sealed link ({e}): is it running with the same --psk?")
            })?))
        }
    };
    Ok(Link::new(net, 0))
}

fn abort(l: &mut Link<Net>, why: &str) {
    // Best effort: the peer may already be gone.
    let _ = l.send(FrameKind::Abort, why.as_bytes());
}

/// Receives a set-up frame; an abort from the peer becomes its reason.
fn recv_setup<'b>(l: &mut Link<Net>, buf: &'b mut [u8], peer: &str) -> Result<&'b [u8], String> {
    match l.recv(buf) {
        Ok((FrameKind::Hello, p)) => Ok(p),
        Ok((FrameKind::Abort, p)) => Err(format!(
            "the {peer} refused the session: {}",
            String::from_utf8_lossy(p)
        )),
        Ok((k, _)) => Err(format!("the {peer} sent a {k:?} frame during set-up")),
        Err(e) => Err(format!("set-up with the {peer} failed: {e}")),
    }
}

fn seconds(s: u64) -> Duration {
    Duration::from_secs(s.max(1))
}

// ---------------------------------------------------------------- dealer

/// Options of `mpcvit dealer`.
#[derive(clap::Args, Debug, Clone)]
pub struct DealerArgs {
    /// Address to listen on for hosts (port 0: any free port; the bound
    /// address is printed on the first line of stdout).
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub listen: String,
    /// Directory with `host.key` and `device.key`.
    #[arg(long)]
    pub keys: PathBuf,
    /// Seconds to wait for a silent peer before ending its session.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Exit after this many sessions (default: serve forever).
    #[arg(long)]
    pub sessions: Option<u64>,
}

struct DealerCtx {
    host_key: Seed,
    device_key: Seed,
    seen: Mutex<HashSet<u64>>,
    timeout: Duration,
}

/// `mpcvit dealer`.
pub fn dealer(a: &DealerArgs) -> Result<(), String> {
    let ctx = Arc::new(DealerCtx {
        host_key: read_key(&a.keys.join(HOST_KEY))?,
        device_key: read_key(&a.keys.join(DEVICE_KEY))?,
        seen: Mutex::new(HashSet::new()),
        timeout: seconds(a.timeout),
    });
    let l = listen(&a.listen, "dealer")?;
    announce("dealer", &l)?;
    serve(&l, a.sessions, move |s| {
        let ctx = ctx.clone();
        move || match dealer_session(&ctx, s) {
            Ok(sid) => info!("dealer: session {sid} done"),
            Err(e) => warn!("dealer: session failed: {e}"),
        }
    })
}

/// Server memory policy (glibc): at most two malloc arenas, so that memory
/// a finished session freed is reused by the next one instead of staying in
/// the arena of a thread that has gone (glibc creates up to 8 per core; a
/// server whose sessions allocate megabytes in short-lived threads would
/// grow with the number of threads it ever ran: harness/tests/load.rs).
fn server_memory_policy() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, before any thread
    // of ours is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives memory freed by a finished session back to the OS.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Accepts connections and runs `f` for each in its own thread; with a
/// limit, waits for those sessions and returns.
fn serve<F, G>(l: &TcpListener, limit: Option<u64>, mut f: F) -> Result<(), String>
where
    F: FnMut(TcpStream) -> G,
    G: FnOnce() + Send + 'static,
{
    server_memory_policy();
    let mut threads = Vec::new();
    let mut n = 0u64;
    while limit.is_none_or(|m| n < m) {
        let s = match l.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("accept failed: {e}");
                continue;
            }
        };
        n += 1;
        let job = f(s);
        threads.push(std::thread::spawn(move || {
            job();
            release_memory();
        }));
        threads.retain(|t| !t.is_finished());
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn dealer_session(ctx: &DealerCtx, s: TcpStream) -> Result<String, String> {
    let mut l = link(s, ctx.timeout, None, Seal::None)?;
    let mut buf = vec![0u8; SETUP_MAX];
    let p = recv_setup(&mut l, &mut buf, "host")?;
    let (setup, plan) = DealerSetup::decode(p).map_err(|e| format!("bad set-up message: {e}"))?;
    let plan = plan.to_vec();
    let plan = match BlobView::parse_plan(&plan) {
        Ok(p) => p,
        Err(e) => {
            abort(&mut l, &format!("bad plan: {e}"));
            return Err(format!("bad plan: {e}"));
        }
    };
    let kd = session::device_session_key(&ctx.device_key, setup.nonce);
    if !session::tags_equal(&session::device_tag(&kd, setup.tile), &setup.tag) {
        let why = "the device's key confirmation failed (device and dealer keys differ, or the relay changed it)";
        abort(&mut l, why);
        return Err(why.into());
    }
    let fresh = ctx
        .seen
        .lock()
        .map_err(|_| "session table poisoned")?
        .insert(setup.session);
    if !fresh || setup.session == 0 {
        let why = format!("session id {:016x} was used before", setup.session);
        abort(&mut l, &why);
        return Err(why);
    }
    let sid = SessionId(setup.session);
    l.send(FrameKind::Hello, &session::dealer_tag(&kd, sid))
        .map_err(|e| e.to_string())?;
    l.set_session(sid.0);
    let a = plan.arch();
    let fp = FixedPoint::new(plan.frac_bits()).map_err(|e| e.to_string())?;
    let map = WeightMap::dealer(&a, &session::model_seed(&ctx.host_key, plan.model_crc()));
    let mut d = DealerParty::new(fp, l, &ctx.host_key, &kd, sid);
    let spec = VitSpec {
        arch: a,
        fp,
        model: &plan,
        tile: setup.tile,
        // revealing to the host is between host and device: no correlations
        logits_to_host: false,
    };
    let zeros = vec![0u64; (a.tokens() - 1) * a.patch_len()];
    let mut out = vec![0; a.classes];
    let mut scratch = vec![0; vit::scratch_len(&a, setup.tile)];
    vit::forward(&mut d, &spec, &map, &zeros, &mut out, &mut scratch).map_err(|e| e.to_string())?;
    Ok(format!("{:016x}", sid.0))
}

// ---------------------------------------------------------------- host

/// Options of `mpcvit host`.
#[derive(clap::Args, Debug, Clone)]
pub struct HostArgs {
    /// The model file (core format).
    #[arg(long)]
    pub model: PathBuf,
    /// Directory with `host.key`.
    #[arg(long)]
    pub keys: PathBuf,
    /// Address to listen on for devices (port 0: any free port; the bound
    /// address is printed on the first line of stdout).
    #[arg(long, default_value = "127.0.0.1:7101")]
    pub listen: String,
    /// The dealer's address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub dealer: String,
    /// Seconds to wait for a silent peer before ending its session.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Exit after this many sessions (default: serve forever).
    #[arg(long)]
    pub sessions: Option<u64>,
    /// Seal the device links with ChaCha20-Poly1305 under this pre-shared
    /// key file (64 hex digits, e.g. one written by `mpcvit keygen`); devices
    /// must use the same `--psk`.
    #[arg(long)]
    pub psk: Option<PathBuf>,
}

struct HostCtx {
    model: Vec<u8>,
    key: Seed,
    map: WeightMap,
    plan: Vec<u8>,
    crc: u32,
    fp: FixedPoint,
    dealer: String,
    timeout: Duration,
    used: Mutex<HashSet<u64>>,
    psk: Option<Seed>,
}

/// What one host session measured.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// Session id.
    pub session: String,
    /// Device link traffic (after set-up).
    pub device_bytes_in: u64,
    /// Host -> device bytes.
    pub device_bytes_out: u64,
    /// Dealer -> host bytes.
    pub dealer_bytes_in: u64,
    /// Rounds with the device.
    pub rounds: u64,
    /// Wall time of the session, s.
    pub wall_s: f64,
    /// The prediction and logits, when the device revealed them to the host.
    pub revealed: Option<(usize, Vec<f64>)>,
}

/// `mpcvit host`.
pub fn host(a: &HostArgs) -> Result<(), String> {
    let model = read_model(&a.model)?;
    let key = read_key(&a.keys.join(HOST_KEY))?;
    let view = ModelView::parse(&model).map_err(|e| e.to_string())?;
    let fp = FixedPoint::new(view.frac_bits()).map_err(|e| e.to_string())?;
    let crc = provision::model_crc(&model);
    let map = WeightMap::host(&view, fp).map_err(|e| e.to_string())?;
    let arch = view.arch();
    let mut plan = vec![0; provision::plan_len(&arch)];
    provision::encode_plan(&arch, fp.frac_bits(), crc, &view, &mut plan).map_err(|e| e.to_string())?;
    let ctx = Arc::new(HostCtx {
        model,
        key,
        map,
        plan,
        crc,
        fp,
        dealer: a.dealer.clone(),
        timeout: seconds(a.timeout),
        used: Mutex::new(HashSet::new()),
        psk: a.psk.as_deref().map(read_key).transpose()?,
    });
    let l = listen(&a.listen, "host")?;
    announce("host", &l)?;
    serve(&l, a.sessions, move |s| {
        let ctx = ctx.clone();
        move || match host_session(&ctx, s) {
            Ok(r) => {
                info!(
                    "host: session {} done: {} rounds, device->host {} B, host->device {} B, dealer->host {} B, {:.2} s",
                    r.session, r.rounds, r.device_bytes_in, r.device_bytes_out, r.dealer_bytes_in, r.wall_s
                );
                // the device chose to show its result: one JSON line on stdout
                // (a closed stdout must not end the host: write errors are ignored)
                if let Some((prediction, logits)) = &r.revealed {
                    let line = serde_json::json!({"session": r.session, "prediction": prediction, "logits": logits});
                    let mut o = std::io::stdout().lock();
                    let _ = writeln!(o, "{line}").and_then(|()| o.flush());
                }
            }
            Err(e) => warn!("host: session failed: {e}"),
        }
    })
}

fn host_session(ctx: &HostCtx, s: TcpStream) -> Result<HostReport, String> {
    let t0 = Instant::now();
    let seal = ctx.psk.as_ref().map_or(Seal::None, |k| Seal::Responder(k.expose()));
    let mut dev = link(s, ctx.timeout, None, seal)?;
    let mut buf = vec![0u8; SETUP_MAX];
    let hello =
        DeviceHello::decode(recv_setup(&mut dev, &mut buf, "device")?).map_err(|e| format!("bad device hello: {e}"))?;
    if hello.model_crc != ctx.crc || u32::from(hello.frac_bits) != ctx.fp.frac_bits() {
        let why = format!(
            "the device's provisioning blob is for model {:08x} (f={}), this host serves model {:08x} (f={}): \
             provision the device for this model (`mpcvit provision`)",
            hello.model_crc,
            hello.frac_bits,
            ctx.crc,
            ctx.fp.frac_bits()
        );
        abort(&mut dev, &why);
        return Err(why);
    }
    let sid = loop {
        let s = random_u64()?;
        if s != 0 && ctx.used.lock().map_err(|_| "session table poisoned")?.insert(s) {
            break s;
        }
    };
    let mut dl = match connect(&ctx.dealer, "dealer").and_then(|s| link(s, ctx.timeout, None, Seal::None)) {
        Ok(l) => l,
        Err(e) => {
            abort(&mut dev, "the host cannot reach its dealer");
            return Err(e);
        }
    };
    let mut setup = [0u8; session::DEALER_SETUP_LEN];
    DealerSetup {
        session: sid,
        nonce: hello.nonce,
        tile: hello.tile,
        tag: hello.tag,
    }
    .encode(&mut setup);
    let msg: Vec<u8> = setup.iter().chain(&ctx.plan).copied().collect();
    dl.send(FrameKind::Hello, &msg).map_err(|e| e.to_string())?;
    let tag = match recv_setup(&mut dl, &mut buf, "dealer") {
        Ok(p) if p.len() == session::TAG_LEN => {
            let mut t = [0u8; session::TAG_LEN];
            t.copy_from_slice(p);
            t
        }
        Ok(_) => {
            abort(&mut dev, "the dealer's answer was malformed");
            return Err("the dealer's answer was malformed".into());
        }
        Err(e) => {
            abort(&mut dev, &e);
            return Err(e);
        }
    };
    let mut acc = [0u8; session::ACCEPT_LEN];
    Accept { session: sid, tag }.encode(&mut acc);
    dev.send(FrameKind::Hello, &acc).map_err(|e| e.to_string())?;
    dev.set_session(sid);
    dl.set_session(sid);
    let (m0, d0) = (dev.meter(), dl.meter());
    let view = ModelView::parse(&ctx.model).map_err(|e| e.to_string())?;
    let a = view.arch();
    let spec = VitSpec {
        arch: a,
        fp: ctx.fp,
        model: &view,
        tile: hello.tile,
        logits_to_host: hello.logits_to_host,
    };
    let mut h = HostParty::new(ctx.fp, dev, dl, &ctx.key, SessionId(sid));
    let zeros = vec![0u64; (a.tokens() - 1) * a.patch_len()];
    let mut out = vec![0; a.classes];
    let mut scratch = vec![0; vit::scratch_len(&a, hello.tile)];
    vit::forward(&mut h, &spec, &ctx.map, &zeros, &mut out, &mut scratch)
        .map_err(|e| format!("session {sid:016x}: {e}"))?;
    let m = h.device_link().meter().since(&m0);
    let d = h.dealer_link().meter().since(&d0);
    Ok(HostReport {
        session: format!("{sid:016x}"),
        device_bytes_in: m.bytes_recv,
        device_bytes_out: m.bytes_sent,
        dealer_bytes_in: d.bytes_recv,
        rounds: m.rounds,
        wall_s: t0.elapsed().as_secs_f64(),
        revealed: hello.logits_to_host.then(|| {
            let l: Vec<f64> = out.iter().map(|&v| ctx.fp.decode(v)).collect();
            (argmax(&l), l)
        }),
    })
}

// ---------------------------------------------------------------- device

/// Options of `mpcvit device`.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// The host's address.
    #[arg(long, default_value = "127.0.0.1:7101")]
    pub connect: String,
    /// The provisioning blob (`mpcvit provision`).
    #[arg(long)]
    pub blob: PathBuf,
    /// Directory with `device.key`.
    #[arg(long)]
    pub keys: PathBuf,
    /// The image: a binary PGM (P5, grey) or PPM (P6, colour) of the model's
    /// size.
    #[arg(long, conflicts_with = "index")]
    pub image: Option<PathBuf>,
    /// Or the image at this index of an IDX image file (`--images`).
    #[arg(long)]
    pub index: Option<usize>,
    /// IDX image file for `--index` (gzip or raw).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")]
    pub images: PathBuf,
    /// Shape this party's socket traffic like a link: lan, wan, ble, uart.
    #[arg(long, value_parser = parse_profile)]
    pub link: Option<Profile>,
    /// Seconds to wait for a silent host before giving up.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Seal the link to the host with ChaCha20-Poly1305 under this
    /// pre-shared key file (the host's `--psk`).
    #[arg(long)]
    pub psk: Option<PathBuf>,
    /// How each layer is cut into flights: `whole` (fewest rounds) or
    /// `ROWS,HEADS,QUERIES` (token rows per flight in the per-token stages,
    /// heads and query rows per flight in attention; smaller is a smaller
    /// working set and more rounds). The host and dealer follow the device.
    #[arg(long, value_parser = parse_tile, default_value = "whole")]
    pub tile: Tile,
    /// Also reveal the logits to the host (which prints them as one JSON
    /// line per session); by default only the device learns them.
    #[arg(long)]
    pub logits_to_host: bool,
}

/// Parses a tile: `whole` or `ROWS,HEADS,QUERIES` (0 = all).
pub fn parse_tile(s: &str) -> Result<Tile, String> {
    if s == "whole" {
        return Ok(Tile::WHOLE);
    }
    let v: Vec<&str> = s.split(',').collect();
    let bad = || format!("bad tile {s:?}: use whole or ROWS,HEADS,QUERIES such as 10,1,10 (0 = all)");
    if v.len() != 3 {
        return Err(bad());
    }
    let rows = v[0].trim().parse::<u16>().map_err(|_| bad())?;
    let heads = v[1].trim().parse::<u8>().map_err(|_| bad())?;
    let queries = v[2].trim().parse::<u16>().map_err(|_| bad())?;
    Ok(Tile { rows, heads, queries })
}

/// Parses a link profile name.
pub fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::by_name(s).ok_or_else(|| format!("unknown link {s:?}: use lan, wan, ble or uart"))
}

/// What the device learned and measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeviceReport {
    /// Session id.
    pub session: String,
    /// Predicted class.
    pub prediction: usize,
    /// Logits.
    pub logits: Vec<f64>,
    /// Device -> host bytes (after set-up).
    pub bytes_sent: u64,
    /// Host -> device bytes.
    pub bytes_recv: u64,
    /// Rounds.
    pub rounds: u64,
    /// Wall time of the inference after set-up, s (shaped if `--link`).
    pub wall_s: f64,
    /// Wall time including connection and set-up, s.
    pub total_s: f64,
    /// Link profile applied, if any.
    pub link: Option<String>,
    /// The device party's buffers (peak use).
    pub working_set: WorkingSet,
}

/// Peak use of the device party's buffers in one inference (besides the
/// blob, which stays in flash, and the image).
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct WorkingSet {
    /// The forward pass's activation scratch (`vit::scratch_len`).
    pub scratch_bytes: usize,
    /// Largest message sent.
    pub tx_bytes: usize,
    /// Largest message received.
    pub rx_bytes: usize,
    /// Largest per-op temporary.
    pub tmp_bytes: usize,
}

/// Normalisation by channel count (the datasets' statistics the models are
/// trained with: Fashion-MNIST for grey, CIFAR-10 for colour).
pub fn normalise(pixels: &[u8], channels: usize) -> Vec<f32> {
    let plane = pixels.len() / channels.max(1);
    pixels
        .iter()
        .enumerate()
        .map(|(j, &p)| {
            let c = j / plane.max(1);
            let (m, s) = if channels == 1 {
                (data::FMNIST_MEAN, data::FMNIST_STD)
            } else {
                (data::CIFAR_MEAN[c.min(2)], data::CIFAR_STD[c.min(2)])
            };
            (p as f32 / 255.0 - m) / s
        })
        .collect()
}

/// Reads a binary PGM/PPM into planar `[c, h, w]` bytes.
pub fn read_pnm(path: &Path) -> Result<(usize, usize, Vec<u8>), String> {
    let b = std::fs::read(path).map_err(|e| format!("cannot read image {}: {e}", path.display()))?;
    let bad = |why: &str| {
        format!(
            "{}: {why} (expected a binary PGM P5 or PPM P6, maxval 255)",
            path.display()
        )
    };
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'#') {
            if b[i] == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        let s = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        if s == i {
            return Err(bad("truncated header"));
        }
        fields.push(String::from_utf8_lossy(&b[s..i]).into_owned());
    }
    let c = match fields[0].as_str() {
        "P5" => 1,
        "P6" => 3,
        _ => return Err(bad("unsupported format")),
    };
    let num = |s: &str| s.parse::<usize>().map_err(|_| bad("bad number in header"));
    let (w, h, max) = (num(&fields[1])?, num(&fields[2])?, num(&fields[3])?);
    if max != 255 || w == 0 || w != h || w > 1024 {
        return Err(bad("unsupported size or depth"));
    }
    let body = b.get(i + 1..).unwrap_or(&[]);
    if body.len() != w * h * c {
        return Err(bad("pixel data has the wrong length"));
    }
    // Interleaved RGB to planar.
    let mut out = vec![0u8; body.len()];
    for (k, &v) in body.iter().enumerate() {
        out[(k % c) * w * h + k / c] = v;
    }
    Ok((c, w, out))
}

/// Per-channel normalisation statistics for `channels` (grey: Fashion-MNIST,
/// colour: CIFAR-10), as [`normalise`] uses them.
pub fn norm_stats(channels: usize) -> (Vec<f32>, Vec<f32>) {
    if channels == 1 {
        (vec![data::FMNIST_MEAN], vec![data::FMNIST_STD])
    } else {
        (data::CIFAR_MEAN.to_vec(), data::CIFAR_STD.to_vec())
    }
}

/// The device's image as 8-bit pixels `[c, h, w]`, checked against the
/// blob's architecture.
fn device_image(a: &DeviceArgs, arch: &mpcvit_core::model::Arch) -> Result<Vec<u8>, String> {
    let (c, side, px) = match (&a.image, a.index) {
        (Some(p), _) => read_pnm(p)?,
        (None, Some(i)) => {
            let raw = data::read_file(&a.images)?;
            let (n, side, px) = data::idx_images(&raw, &a.images.display().to_string())?;
            if i >= n {
                return Err(format!(
                    "--index {i} is out of range: {} has {n} images",
                    a.images.display()
                ));
            }
            (1, side, px[i * side * side..(i + 1) * side * side].to_vec())
        }
        (None, None) => return Err("give the image: --image FILE or --index N".into()),
    };
    if c != arch.channels || side != arch.image {
        return Err(format!(
            "the model takes {}x{}x{} images, this one is {c}x{side}x{side}",
            arch.channels, arch.image, arch.image
        ));
    }
    Ok(px)
}

/// `mpcvit device`.
pub fn device(a: &DeviceArgs) -> Result<(), String> {
    let r = device_run(a)?;
    if a.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    } else {
        println!(
            "prediction {} (session {}, {} rounds, device->host {} B, host->device {} B, {:.2} s{})",
            r.prediction,
            r.session,
            r.rounds,
            r.bytes_sent,
            r.bytes_recv,
            r.wall_s,
            r.link
                .as_deref()
                .map(|l| format!(", shaped as {l}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Whether a link error means the peer closed or reset the connection.
fn peer_gone(e: &mpcvit_transport::Error<SealError<std::io::Error>>) -> bool {
    use std::io::ErrorKind as K;
    match e {
        mpcvit_transport::Error::Closed | mpcvit_transport::Error::Transport(SealError::Closed) => true,
        mpcvit_transport::Error::Transport(SealError::Io(io)) => matches!(
            io.kind(),
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
        ),
        _ => false,
    }
}

/// Runs one private inference as the device ([`mpcvit_device::session::infer`],
/// as every firmware runs it).
pub fn device_run(a: &DeviceArgs) -> Result<DeviceReport, String> {
    use mpcvit_device::session::{self as ds, Failure};
    let t_start = Instant::now();
    let blob_bytes = std::fs::read(&a.blob).map_err(|e| format!("cannot read blob {}: {e}", a.blob.display()))?;
    let blob = BlobView::parse(&blob_bytes)
        .map_err(|e| format!("{}: not a usable provisioning blob: {e}", a.blob.display()))?;
    let key = read_key(&a.keys.join(DEVICE_KEY))?;
    let arch = blob.arch();
    let fp = FixedPoint::new(blob.frac_bits()).map_err(|e| e.to_string())?;
    let (mean, std) = norm_stats(arch.channels);
    let pixels = device_image(a, &arch)?;
    let map = WeightMap::from_blob(&blob);
    let dep = ds::Deployment {
        blob: &blob,
        weights: &map,
        key: &key,
        nonce: random_u64()?,
    };
    // The key stays in its zeroizing Seed; the link borrows it.
    let psk = a.psk.as_deref().map(read_key).transpose()?;
    let seal = psk.as_ref().map_or(Seal::None, |k| Seal::Initiator(k.expose()));
    let io = link(connect(&a.connect, "host")?, seconds(a.timeout), a.link, seal)?.into_inner();
    let mut scratch = vec![0; vit::scratch_len(&arch, a.tile)];
    let mut patches = vec![0; (arch.tokens() - 1) * arch.patch_len()];
    let mut logits = vec![0; arch.classes];
    let mut bufs = mpcvit_host::local::DeviceBuffers::default();
    let (tx, rx, tmp) = bufs.split();
    let b = ds::Buffers {
        scratch: &mut scratch,
        tx,
        rx,
        tmp,
        patches: &mut patches,
        logits: &mut logits,
    };
    let mut clock = || u64::try_from(t_start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let r = ds::infer(
        &mut clock,
        io,
        &dep,
        (a.tile, a.logits_to_host),
        &pixels,
        (&mean, &std),
        b,
    );
    let o = match r {
        Ok(o) => o,
        Err(f @ Failure::Refused { .. }) => {
            return Err(format!("the host refused the session: {}", f.reason().unwrap_or("?")));
        }
        Err(Failure::Setup(e)) => return Err(e.into()),
        Err(Failure::Handshake(DeviceError::Protocol(ProtocolError::Unauthenticated))) => {
            return Err(
                "the dealer's key confirmation failed: the host's dealer does not hold this device's key".into(),
            );
        }
        Err(Failure::Handshake(DeviceError::Link(e))) if peer_gone(&e) => {
            return Err(if a.psk.is_some() {
                "the host closed the connection during set-up: check that host and device use the same --psk \
                     (sealed records that do not authenticate are refused; the host's log says why)"
                    .into()
            } else {
                "the host closed the connection during set-up (does it require --psk? the host's log says why)".into()
            });
        }
        Err(Failure::Handshake(e)) => return Err(format!("set-up with the host failed: {e}")),
        Err(Failure::Device(DeviceError::Link(e))) if peer_gone(&e) => {
            return Err("the host closed the connection during the inference (see the host's log)".into());
        }
        Err(Failure::Device(e)) => return Err(format!("inference failed: {e}")),
    };
    let logits: Vec<f64> = logits.iter().map(|&v| fp.decode(v)).collect();
    let [_, t_setup, t_end] = o.ticks;
    Ok(DeviceReport {
        session: format!("{:016x}", o.session),
        prediction: o.prediction,
        logits,
        bytes_sent: o.meter.bytes_sent,
        bytes_recv: o.meter.bytes_recv,
        rounds: o.meter.rounds,
        wall_s: t_end.saturating_sub(t_setup) as f64 / 1e9,
        total_s: t_start.elapsed().as_secs_f64(),
        link: a.link.map(|p| p.name.to_string()),
        working_set: WorkingSet {
            scratch_bytes: 8 * vit::scratch_len(&arch, a.tile),
            tx_bytes: o.high_water.tx,
            rx_bytes: o.high_water.rx,
            tmp_bytes: 8 * o.high_water.tmp,
        },
    })
}

/// Largest `|a_i - b_i|` (0 for empty vectors).
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Index of the largest value, the first on ties (as `torch.argmax`); 0 for
/// an empty slice. The one tie rule of eval, demo, training and the tests.
pub fn argmax<T: PartialOrd>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if v.get(best).is_some_and(|b| x > b) {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -2.0]), 1);
        assert_eq!(argmax(&[0.5f32, -1.0, 0.5]), 0);
        assert_eq!(argmax(&[-3.0, -1.0, -2.0]), 1);
        assert_eq!(argmax::<f64>(&[]), 0);
    }
}
