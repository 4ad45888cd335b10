//! The host's and the dealer's servers: an accept loop that serves each
//! connection in its own thread, and one session of each
//! (`spec/session.md`).
//!
//! Topology: the dealer and the host listen; a device connects to the host;
//! for each device the host opens a connection to the dealer and relays the
//! device's set-up (its answer to the host's challenge: a nonce and a
//! key-confirmation tag bound to the session, `core::session`).
//! The device's correlations come from its provisioned key and its nonce,
//! which the host never sees in a usable form; all the dealer sends goes to
//! the host. Each device connection is one session with its own id.

use crate::error::{DealerError, HostError};
use crate::net::{LinkError, Net, NetError, OpenError, Seal, link};
use crate::{DealerParty, HostParty, WeightMap};
use log::warn;
use mpcvit_core::model::{ModelError, ModelView};
use mpcvit_core::ops::vit::{self, VitSpec};
use mpcvit_core::prg::Seed;
use mpcvit_core::provision::{self, BlobView};
use mpcvit_core::session::{self, Accept, Challenge, DealerConfirm, DealerSetup, DeviceHello, Message, Offer};
use mpcvit_core::{FixedPoint, ProtocolError, Role, SessionId};
use mpcvit_transport::tcp::Deadline;
use mpcvit_transport::{FrameKind, Link};
use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest set-up frame (a plan is a few kB; an abort reason a line).
const SETUP_MAX: usize = 1 << 20;
/// Largest set-up frame from a device (its hello, or an abort reason).
const DEVICE_SETUP_MAX: usize = 1024;

/// Who is at the other end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The device (on the host's device link).
    Device,
    /// The host (on the dealer's link).
    Host,
    /// The dealer (on the host's dealer link).
    Dealer,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Device => "device",
            Self::Host => "host",
            Self::Dealer => "dealer",
        })
    }
}

/// Why a served session ended without an inference.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The link could not be opened (socket options, sealing).
    Open(OpenError),
    /// A link failed during set-up.
    Link(Peer, LinkError),
    /// The peer refused the session; its reason.
    Refused(Peer, String),
    /// The peer sent a frame of another kind during set-up.
    Unexpected(Peer, FrameKind),
    /// A set-up message did not decode.
    BadSetup(Peer, ProtocolError),
    /// The plan in the host's set-up is not usable.
    BadPlan(ModelError),
    /// The device's blob is for another model or other fractional bits.
    WrongModel {
        /// The device's model checksum.
        device_crc: u32,
        /// The device's fractional bits.
        device_f: u8,
        /// The host's model checksum.
        host_crc: u32,
        /// The host's fractional bits.
        host_f: u32,
    },
    /// The device's blob was made under another host key.
    OtherHostKey,
    /// The device's key confirmation failed at the dealer.
    Unauthenticated,
    /// The host relayed a device's offer for another model than its plan's
    /// (at the dealer).
    PlanMismatch,
    /// The session id was used before (a replayed set-up).
    Replayed(u64),
    /// The host cannot reach its dealer.
    DealerUnreachable(std::io::Error),
    /// The peer of the host-dealer link does not hold this deployment's
    /// host key (the sealed link did not open): at the dealer, a client
    /// that is not the host; at the host, a dealer of another deployment.
    NotOurs(Peer),
    /// The dealer's answer to the set-up was malformed.
    BadAnswer,
    /// No randomness from the OS.
    Randomness,
    /// Another session panicked while holding the session table.
    Poisoned,
    /// The host's inference failed.
    Host(HostError<NetError>),
    /// The dealer's inference failed.
    Dealer(DealerError<NetError>),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open(e) => write!(f, "{e}"),
            Self::Link(p, e) => write!(f, "set-up with the {p} failed: {e}"),
            Self::Refused(p, why) => write!(f, "the {p} refused the session: {why}"),
            Self::Unexpected(p, k) => write!(f, "the {p} sent a {k:?} frame during set-up"),
            Self::BadSetup(p, ProtocolError::BadVersion(v)) => write!(
                f,
                "the {p} speaks set-up version {v}, this build {}: run the same mpcvit version on every party",
                session::VERSION
            ),
            Self::BadSetup(p, e) => write!(f, "bad set-up message from the {p}: {e}"),
            Self::BadPlan(e) => write!(f, "bad plan: {}", e.in_file("plan")),
            Self::WrongModel {
                device_crc,
                device_f,
                host_crc,
                host_f,
            } => write!(
                f,
                "the device's provisioning blob is for model {device_crc:08x} (f={device_f}), this host serves model \
                 {host_crc:08x} (f={host_f}): provision the device for this model (`mpcvit provision`)"
            ),
            Self::OtherHostKey => f.write_str(
                "the device's provisioning blob was made with another host key than this host's: provision the \
                 device again with this host's key (`mpcvit provision`)",
            ),
            Self::Unauthenticated => f.write_str(
                "the device's key confirmation failed (device and dealer keys differ, the relay changed the set-up, \
                 or it was replayed from another session)",
            ),
            Self::PlanMismatch => f.write_str("the host's plan is for another model than the device's offer"),
            Self::Replayed(sid) => write!(f, "session id {sid:016x} was used before"),
            Self::DealerUnreachable(e) => write!(f, "the host cannot reach its dealer: {e}"),
            Self::NotOurs(Peer::Dealer) => {
                f.write_str("the dealer closed the sealed host-dealer link: do host and dealer hold the same host.key?")
            }
            Self::NotOurs(p) => write!(
                f,
                "refused a {p} that does not hold this deployment's host key (the sealed host-dealer link did not open)"
            ),
            Self::BadAnswer => f.write_str("the dealer's answer was malformed"),
            Self::Randomness => f.write_str("no OS randomness"),
            Self::Poisoned => f.write_str("session table poisoned"),
            Self::Host(e) => write!(f, "{e}"),
            Self::Dealer(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SessionError {}

/// Server memory policy (glibc): at most two malloc arenas, so that memory
/// a finished session freed is reused by the next one instead of staying in
/// the arena of a thread that has gone (glibc creates up to 8 per core; a
/// server whose sessions allocate megabytes in short-lived threads would
/// grow with the number of threads it ever ran: harness/tests/load.rs).
#[allow(unsafe_code)]
fn server_memory_policy() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, before any thread
    // of ours is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives memory freed by a finished session back to the OS.
#[allow(unsafe_code)]
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A connection's standing in [`serve`]: until its session calls
/// [`Admission::admit`] (its peer has shown it belongs to the deployment),
/// the connection is still in set-up, and [`serve`] may close it to make
/// room for a new one when every slot is taken.
#[derive(Clone, Debug, Default)]
pub struct Admission(Arc<AtomicBool>);

impl Admission {
    /// The peer is authenticated: the connection keeps its slot.
    pub fn admit(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn admitted(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A connection being served.
struct Live {
    thread: std::thread::JoinHandle<()>,
    admission: Admission,
    /// A handle on its socket, to close it from the accept loop (weak: the
    /// session's thread holds the socket, which closes when it ends).
    socket: Option<std::sync::Weak<TcpStream>>,
    since: Instant,
}

/// Accepts connections and runs `f` for each in its own thread, at most
/// `max_live` at a time. When all are taken, a new connection takes the
/// slot of the oldest one still in set-up (not yet [`Admission::admit`]ted:
/// its socket is shut down, which ends its thread at its next read), so
/// idle or slow connections cannot keep a real peer out; when every slot
/// holds an admitted session, the new connection gets `busy` (if given:
/// the bytes of a refusal its client reads) and is closed at once. A flood
/// costs the server a descriptor per connection for an instant and at
/// most `2 max_live` session threads (those closed to make room end at
/// their next read; while `max_live` of them have not, the loop waits up to
/// 100 ms for one before it refuses). With a `limit`, waits for that many
/// sessions and returns.
///
/// When `accept` fails (out of file descriptors or memory, which the
/// pending connection does not change), the loop waits before it tries
/// again, twice as long each time up to a second, so a server at its limits
/// does not spin; a thread that cannot be started drops its connection and
/// the server goes on (it does not count towards `limit`).
pub fn serve<F, G>(l: &TcpListener, limits: (Option<u64>, usize), busy: Option<&[u8]>, f: F)
where
    F: FnMut(TcpStream, Admission) -> G,
    G: FnOnce() + Send + 'static,
{
    serve_with(l, limits, busy, f, |job| std::thread::Builder::new().spawn(job));
}

/// A job of [`serve`]: one connection's session.
type Job = Box<dyn FnOnce() + Send>;

/// [`serve`] with the thread start given (`spawn`), so that a start that
/// fails can be tested.
fn serve_with<F, G, S>(
    l: &TcpListener,
    (limit, max_live): (Option<u64>, usize),
    busy: Option<&[u8]>,
    mut f: F,
    spawn: S,
) where
    F: FnMut(TcpStream, Admission) -> G,
    G: FnOnce() + Send + 'static,
    S: Fn(Job) -> std::io::Result<std::thread::JoinHandle<()>>,
{
    server_memory_policy();
    let mut live: Vec<Live> = Vec::new();
    // threads of connections closed to make room, until they have ended
    let mut closing: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let (mut closed, mut told) = (0u64, Instant::now());
    let mut n = 0u64;
    let mut backoff = Duration::ZERO;
    // refused connections, kept open for a moment after their refusal: one
    // closed with the client's first bytes unread would answer them with a
    // reset, which can reach the client before it has read the refusal
    let mut refused: std::collections::VecDeque<(Instant, TcpStream)> = std::collections::VecDeque::new();
    while limit.is_none_or(|m| n < m) {
        while refused
            .front()
            .is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(1))
            || refused.len() > 64
        {
            refused.pop_front();
        }
        let s = match l.accept() {
            Ok((s, _)) => {
                backoff = Duration::ZERO;
                s
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                warn!("accept failed: {e}; trying again in {} ms", backoff.as_millis());
                std::thread::sleep(backoff);
                continue;
            }
        };
        live.retain(|c| !c.thread.is_finished());
        closing.retain(|t| !t.is_finished());
        if live.len() >= max_live {
            // threads of connections closed before end at their next read:
            // give them a moment (at most `max_live` are kept closing)
            let wait = Instant::now() + Duration::from_millis(100);
            while closing.len() >= max_live && Instant::now() < wait {
                std::thread::sleep(Duration::from_millis(1));
                closing.retain(|t| !t.is_finished());
            }
            // the oldest connection still in set-up
            let oldest = live
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.admission.admitted() && c.socket.is_some())
                .min_by_key(|(_, c)| c.since)
                .map(|(i, _)| i);
            match oldest {
                Some(i) if closing.len() < max_live => {
                    let c = live.swap_remove(i);
                    if let Some(sock) = c.socket.as_ref().and_then(std::sync::Weak::upgrade) {
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                    }
                    closing.push(c.thread);
                    closed += 1;
                    if told.elapsed() > Duration::from_secs(1) {
                        warn!(
                            "{max_live} connections in flight (--max-sessions): closed {closed} still in set-up to make \
                             room for new ones"
                        );
                        (closed, told) = (0, Instant::now());
                    }
                }
                _ => {
                    warn!(
                        "{} sessions in flight, the most allowed (--max-sessions): connection refused",
                        live.len()
                    );
                    if let Some(b) = busy {
                        // best effort, and never a wait: the client may be gone
                        let mut s = s;
                        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                        let _ = std::io::Write::write_all(&mut s, b);
                        let _ = s.shutdown(std::net::Shutdown::Write);
                        refused.push_back((Instant::now(), s));
                    }
                    continue;
                }
            }
        }
        let admission = Admission::default();
        // a second handle on the socket, for the accept loop to shut it
        // down: the session's thread holds it and shuts it down when it
        // ends (its peer sees the close at once, and the descriptor goes)
        let end = s.try_clone().ok().map(Arc::new);
        let socket = end.as_ref().map(Arc::downgrade);
        let job = f(s, admission.clone());
        let spawned = spawn(Box::new(move || {
            job();
            if let Some(s) = end {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            release_memory();
        }));
        match spawned {
            Ok(thread) => {
                n += 1;
                live.push(Live {
                    thread,
                    admission,
                    socket,
                    since: Instant::now(),
                });
            }
            // the job, and with it the connection, is dropped
            Err(e) => warn!("cannot start a session thread ({e}): connection closed"),
        }
    }
    for c in live {
        let _ = c.thread.join();
    }
    for t in closing {
        let _ = t.join();
    }
}

fn abort(l: &mut Link<Net>, why: &str) {
    // Best effort: the peer may already be gone.
    let _ = l.send(FrameKind::Abort, why.as_bytes());
}

/// Receives a set-up frame; an abort from the peer becomes its reason.
fn recv_setup<'b>(l: &mut Link<Net>, buf: &'b mut [u8], peer: Peer) -> Result<&'b [u8], SessionError> {
    match l.recv(buf) {
        Ok((FrameKind::Hello, p)) => Ok(p),
        Ok((FrameKind::Abort, p)) => Err(SessionError::Refused(peer, String::from_utf8_lossy(p).into_owned())),
        Ok((k, _)) => Err(SessionError::Unexpected(peer, k)),
        Err(e) => Err(SessionError::Link(peer, e)),
    }
}

/// Sends a set-up message (`Message`: the version byte and its postcard
/// encoding) to `peer` on `l`.
fn send_setup<M: Message>(l: &mut Link<Net>, m: &M, peer: Peer) -> Result<(), SessionError> {
    let mut buf = vec![0u8; M::MAX_LEN];
    let bytes = m.encode(&mut buf).map_err(|e| SessionError::BadSetup(peer, e))?;
    l.send(FrameKind::Hello, bytes).map_err(|e| SessionError::Link(peer, e))
}

/// Sends `why` to the peer as an abort and returns it.
fn refuse(l: &mut Link<Net>, why: SessionError) -> SessionError {
    // the device is not authenticated yet: it hears what is wrong with
    // its own blob, not which model or key this host serves (the host's
    // log has the details)
    let told = match &why {
        SessionError::WrongModel {
            device_crc, device_f, ..
        } => format!(
            "the device's provisioning blob (model {device_crc:08x}, f={device_f}) is not for the model this host \
             serves: provision the device for this model (`mpcvit provision`)"
        ),
        e => e.to_string(),
    };
    abort(l, &told);
    why
}

/// Whether a link error says the peer's records did not open under our
/// key.
fn not_ours(e: &LinkError) -> bool {
    matches!(
        e,
        mpcvit_transport::Error::Transport(NetError::Auth | NetError::Malformed)
    )
}

fn random_u64() -> Result<u64, SessionError> {
    use rand_core::TryRng;
    getrandom::SysRng.try_next_u64().map_err(|_| SessionError::Randomness)
}

/// What the dealer holds: both keys, the session ids it has served.
pub struct Dealer {
    host_key: Seed,
    link_key: Seed,
    device_key: Seed,
    seen: Mutex<HashSet<u64>>,
    limits: Limits,
}

/// How long a connection may take: each read and write (`timeout`), the
/// set-up as a whole (also `timeout`), the session after it
/// (`session`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Each read, each write, and the whole set-up.
    pub timeout: Duration,
    /// The whole session after set-up.
    pub session: Duration,
}

impl Limits {
    /// The deadline of a new connection's set-up.
    fn setup(&self) -> Deadline {
        let d = Deadline::default();
        d.set(Some(Instant::now() + self.timeout));
        d
    }
}

impl Dealer {
    /// The dealer of the deployment of `host_key` and `device_key`, with
    /// `limits` on each connection.
    pub fn new(host_key: Seed, device_key: Seed, limits: Limits) -> Self {
        Self {
            link_key: session::host_dealer_link_key(&host_key),
            host_key,
            device_key,
            seen: Mutex::new(HashSet::new()),
            limits,
        }
    }

    /// Serves one host connection: the set-up, then every op's
    /// correlations. Returns the session id. The link is sealed under the
    /// host-dealer key: a client that does not hold the host key is
    /// refused at its first record, before anything is dealt.
    /// The connection is admitted (`admission`) once the set-up verifies.
    pub fn session(&self, s: TcpStream, admission: &Admission) -> Result<SessionId, SessionError> {
        let seal = Seal::MutualResponder(self.link_key.expose());
        let phase = self.limits.setup();
        let mut l = link(s, (self.limits.timeout, phase.clone()), None, seal).map_err(|e| match e {
            // not a sealed opening at all (a plain client)
            OpenError::Seal(NetError::Malformed) => SessionError::NotOurs(Peer::Host),
            e => SessionError::Open(e),
        })?;
        let mut buf = vec![0u8; SETUP_MAX];
        let p = match recv_setup(&mut l, &mut buf, Peer::Host) {
            Err(SessionError::Link(_, e)) if not_ours(&e) => return Err(SessionError::NotOurs(Peer::Host)),
            r => r?,
        };
        let (setup, plan) = match DealerSetup::decode_prefix(p) {
            Ok(v) => v,
            Err(e) => return Err(refuse(&mut l, SessionError::BadSetup(Peer::Host, e))),
        };
        let plan = plan.to_vec();
        let plan = match BlobView::parse_plan(&plan) {
            Ok(p) => p,
            Err(e) => return Err(refuse(&mut l, SessionError::BadPlan(e))),
        };
        // the deployment checks itself before anything is dealt: the plan
        // is the model the device holds, under this dealer's host key
        let o = setup.offer;
        if o.model_crc != plan.model_crc() || u32::from(o.frac_bits) != plan.frac_bits() {
            return Err(refuse(&mut l, SessionError::PlanMismatch));
        }
        if o.key_check != session::blob_key_check(&self.host_key, o.model_crc) {
            return Err(refuse(&mut l, SessionError::OtherHostKey));
        }
        let kd = session::device_session_key(&self.device_key, setup.nonce);
        let sid = SessionId(setup.session);
        let device_tag = session::device_tag(&kd, sid, &o);
        if !session::tags_equal(&device_tag, &setup.tag) {
            return Err(refuse(&mut l, SessionError::Unauthenticated));
        }
        let fresh = self
            .seen
            .lock()
            .map_err(|_| SessionError::Poisoned)?
            .insert(setup.session);
        if !fresh || setup.session == 0 {
            return Err(refuse(&mut l, SessionError::Replayed(setup.session)));
        }
        admission.admit();
        let answer = DealerConfirm {
            tag: session::dealer_tag(&kd, sid, &device_tag),
        };
        send_setup(&mut l, &answer, Peer::Host)?;
        l.set_session(sid.0);
        phase.set(Some(Instant::now() + self.limits.session));
        let a = plan.arch();
        let fp = FixedPoint::new(plan.frac_bits()).map_err(|e| SessionError::BadSetup(Peer::Host, e))?;
        let map = WeightMap::dealer(&a, &session::model_seed(&self.host_key, plan.model_crc()));
        let mut d = DealerParty::new(fp, l, &self.host_key, &kd, sid);
        let spec = VitSpec {
            arch: a,
            fp,
            model: &plan,
            tile: o.tile,
            // revealing to the host is between host and device: no correlations
            logits_to_host: false,
        };
        let zeros = vec![0u64; (a.tokens() - 1) * a.patch_len()];
        let mut out = vec![0; a.classes];
        let mut scratch = vec![0; vit::scratch_len(&a, o.tile, Role::Dealer, &plan)];
        vit::forward(&mut d, &spec, &map, zeros.as_slice(), &mut out, &mut scratch).map_err(SessionError::Dealer)?;
        Ok(sid)
    }
}

/// What one host session measured.
#[derive(Debug, Clone)]
pub struct HostReport {
    /// Session id.
    pub session: SessionId,
    /// Device -> host bytes (after set-up).
    pub device_bytes_in: u64,
    /// Host -> device bytes.
    pub device_bytes_out: u64,
    /// Dealer -> host bytes.
    pub dealer_bytes_in: u64,
    /// Times the host waited on the device after sending to it. Not the
    /// device's round count (`bench`, `demo`): the device counts its waits
    /// on the host, and the two differ by where each side's flights start.
    pub rounds: u64,
    /// Wall time of the session, s.
    pub wall_s: f64,
    /// The logits (fixed point), when the device revealed them to the host.
    pub revealed: Option<Vec<u64>>,
}

/// What the host holds: the model, its weights, its key, its dealer.
pub struct Host {
    model: Vec<u8>,
    key: Seed,
    link_key: Seed,
    map: WeightMap,
    plan: Vec<u8>,
    crc: u32,
    key_check: u32,
    fp: FixedPoint,
    dealer: String,
    limits: Limits,
    used: Mutex<HashSet<u64>>,
    psk: Option<Seed>,
}

/// The bytes of an `Abort` frame (session 0, sequence 0) with `why`: what
/// a server that refuses a connection before its set-up writes, so the
/// client can say why.
pub fn refusal(why: &str) -> Vec<u8> {
    let payload = why.as_bytes();
    let header = mpcvit_transport::frame::Header {
        kind: FrameKind::Abort,
        session: 0,
        seq: 0,
        len: u32::try_from(payload.len()).unwrap_or(0),
    };
    let mut out = vec![0; mpcvit_transport::frame::OVERHEAD + payload.len()];
    let n = mpcvit_transport::frame::encode(&header, payload, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

impl Host {
    /// The host of `model` (a model file's bytes) with `key`, its dealer at
    /// `dealer`, `limits` on each connection; device links are sealed under
    /// `psk` if given.
    pub fn new(
        model: Vec<u8>,
        key: Seed,
        dealer: String,
        limits: Limits,
        psk: Option<Seed>,
    ) -> Result<Self, crate::LoadError> {
        let view = ModelView::parse(&model)?;
        let fp = FixedPoint::new(view.frac_bits())?;
        let crc = provision::model_crc(&model);
        let map = WeightMap::host(&view, fp)?;
        let arch = view.arch();
        let mut plan = vec![0; provision::plan_len(&arch)];
        provision::encode_plan(&arch, fp.frac_bits(), crc, &view, &mut plan)?;
        Ok(Self {
            model,
            key_check: session::blob_key_check(&key, crc),
            link_key: session::host_dealer_link_key(&key),
            key,
            map,
            plan,
            crc,
            fp,
            dealer,
            limits,
            used: Mutex::new(HashSet::new()),
            psk,
        })
    }

    /// The model's fixed-point parameters.
    pub fn fp(&self) -> FixedPoint {
        self.fp
    }

    /// What a device refused for want of a session slot reads: an `Abort`
    /// frame saying so, or nothing on sealed device links (the device
    /// expects a sealed opening first).
    pub fn busy_reply(&self, max_sessions: usize) -> Option<Vec<u8>> {
        self.psk.is_none().then(|| {
            refusal(&format!(
                "the host is busy ({max_sessions} sessions in flight, its --max-sessions): try again later"
            ))
        })
    }

    /// A challenge's session id: random, never 0, not one this host has
    /// used (recorded once the device's set-up is relayed: [`Host::claim`]).
    fn fresh_session(&self) -> Result<u64, SessionError> {
        loop {
            let s = random_u64()?;
            if s != 0 && !self.used.lock().map_err(|_| SessionError::Poisoned)?.contains(&s) {
                return Ok(s);
            }
        }
    }

    /// Records `sid` as used before it is relayed to the dealer; refuses an
    /// id that another session claimed since its challenge (two challenges
    /// drew the same 64 random bits). Recording only relayed set-ups keeps
    /// connections that never answer their challenge from growing the
    /// record.
    fn claim(&self, sid: u64) -> Result<(), SessionError> {
        if self.used.lock().map_err(|_| SessionError::Poisoned)?.insert(sid) {
            Ok(())
        } else {
            Err(SessionError::Replayed(sid))
        }
    }

    /// Relays the device's set-up to the dealer; the dealer link bound to
    /// the session and the dealer's tag.
    fn dealer_setup(
        &self,
        hello: &DeviceHello,
        sid: u64,
        phase: &Deadline,
    ) -> Result<(Link<Net>, session::Tag), SessionError> {
        let s = TcpStream::connect(&self.dealer).map_err(SessionError::DealerUnreachable)?;
        let seal = Seal::MutualInitiator(self.link_key.expose());
        let mut dl = link(s, (self.limits.timeout, phase.clone()), None, seal).map_err(|e| match e {
            // the dealer hung up on the opening: not a mutual sealed link's dealer
            OpenError::Seal(NetError::Closed) => SessionError::NotOurs(Peer::Dealer),
            e => SessionError::Open(e),
        })?;
        let mut msg = vec![0u8; DealerSetup::MAX_LEN + self.plan.len()];
        let n = DealerSetup {
            session: sid,
            nonce: hello.nonce,
            offer: hello.offer,
            tag: hello.tag,
        }
        .encode(&mut msg)
        .map_err(|e| SessionError::BadSetup(Peer::Dealer, e))?
        .len();
        msg.truncate(n);
        msg.extend_from_slice(&self.plan);
        dl.send(FrameKind::Hello, &msg)
            .map_err(|e| SessionError::Link(Peer::Dealer, e))?;
        let mut buf = vec![0u8; SETUP_MAX];
        let p = match recv_setup(&mut dl, &mut buf, Peer::Dealer) {
            // a dealer without this host key refuses the first record and
            // closes; one with another key sends records that do not open
            Err(SessionError::Link(_, e)) if not_ours(&e) || crate::net::peer_gone(&e) => {
                return Err(SessionError::NotOurs(Peer::Dealer));
            }
            r => r?,
        };
        let tag = DealerConfirm::decode(p).map_err(|_| SessionError::BadAnswer)?.tag;
        dl.set_session(sid);
        Ok((dl, tag))
    }

    /// Serves one device connection: the set-up (relayed to the dealer),
    /// then the inference. The connection is admitted (`admission`) once
    /// the dealer has confirmed the device.
    pub fn session(&self, s: TcpStream, admission: &Admission) -> Result<HostReport, SessionError> {
        let t0 = Instant::now();
        let seal = self.psk.as_ref().map_or(Seal::None, |k| Seal::Responder(k.expose()));
        // set-up, on both links, within the timeout; the session after it
        // within the session limit
        let phase = self.limits.setup();
        let mut dev = link(s, (self.limits.timeout, phase.clone()), None, seal).map_err(SessionError::Open)?;
        // the challenge: a session id the device's tag must cover, so a
        // hello recorded in another session is refused
        let sid = self.fresh_session()?;
        send_setup(&mut dev, &Challenge { session: sid }, Peer::Device)?;
        // a hello is a few dozen bytes: a connection still in set-up costs
        // the host a small buffer, not a plan's
        let mut buf = [0u8; DEVICE_SETUP_MAX];
        let hello = match DeviceHello::decode(recv_setup(&mut dev, &mut buf, Peer::Device)?) {
            Ok(h) => h,
            // a device of another version (or a broken one) hears why
            Err(e) => return Err(refuse(&mut dev, SessionError::BadSetup(Peer::Device, e))),
        };
        let Offer {
            model_crc,
            frac_bits,
            key_check,
            ..
        } = hello.offer;
        if model_crc != self.crc || u32::from(frac_bits) != self.fp.frac_bits() {
            let why = SessionError::WrongModel {
                device_crc: model_crc,
                device_f: frac_bits,
                host_crc: self.crc,
                host_f: self.fp.frac_bits(),
            };
            return Err(refuse(&mut dev, why));
        }
        if key_check != self.key_check {
            return Err(refuse(&mut dev, SessionError::OtherHostKey));
        }
        if let Err(e) = self.claim(sid) {
            return Err(refuse(&mut dev, e));
        }
        let (dl, tag) = match self.dealer_setup(&hello, sid, &phase) {
            Ok(v) => v,
            Err(e) => {
                let why = match &e {
                    SessionError::DealerUnreachable(_) => "the host cannot reach its dealer".to_string(),
                    SessionError::NotOurs(_) => {
                        "the host's dealer does not hold the host's key (a misconfigured deployment)".to_string()
                    }
                    SessionError::Refused(_, why) => format!("the dealer refused the session: {why}"),
                    e => e.to_string(),
                };
                abort(&mut dev, &why);
                return Err(e);
            }
        };
        admission.admit();
        send_setup(&mut dev, &Accept { session: sid, tag }, Peer::Device)?;
        dev.set_session(sid);
        phase.set(Some(Instant::now() + self.limits.session));
        let (m0, d0) = (dev.meter(), dl.meter());
        let view = ModelView::parse(&self.model).map_err(SessionError::BadPlan)?;
        let a = view.arch();
        let spec = VitSpec {
            arch: a,
            fp: self.fp,
            model: &view,
            tile: hello.offer.tile,
            logits_to_host: hello.offer.logits_to_host,
        };
        let mut h = HostParty::new(self.fp, dev, dl, &self.key, SessionId(sid));
        let zeros = vec![0u64; (a.tokens() - 1) * a.patch_len()];
        let mut out = vec![0; a.classes];
        let mut scratch = vec![0; vit::scratch_len(&a, hello.offer.tile, Role::Host, &view)];
        vit::forward(&mut h, &spec, &self.map, zeros.as_slice(), &mut out, &mut scratch).map_err(SessionError::Host)?;
        let m = h.device_link().meter().since(&m0);
        let d = h.dealer_link().meter().since(&d0);
        Ok(HostReport {
            session: SessionId(sid),
            device_bytes_in: m.bytes_recv,
            device_bytes_out: m.bytes_sent,
            dealer_bytes_in: d.bytes_recv,
            rounds: m.rounds,
            wall_s: t0.elapsed().as_secs_f64(),
            revealed: hello.offer.logits_to_host.then_some(out),
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A thread that cannot be started drops its own connection only: the
    /// server goes on, every other session is served, and the limit counts
    /// only the sessions that ran.
    #[test]
    fn a_failed_thread_start_loses_no_other_session() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let clients = std::thread::spawn(move || {
            (0..6u8)
                .map(|i| {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                    s.write_all(&[i]).expect("send");
                    let mut b = Vec::new();
                    let _ = s.read_to_end(&mut b);
                    b
                })
                .collect::<Vec<_>>()
        });
        let starts = std::sync::atomic::AtomicUsize::new(0);
        serve_with(
            &l,
            (Some(3), 8),
            None,
            |mut s, _| {
                move || {
                    let mut b = [0u8];
                    if s.read_exact(&mut b).is_ok() {
                        let _ = s.write_all(&[b[0] + 100]);
                    }
                }
            },
            |job| {
                // every other start fails, as under an address-space limit
                if starts.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                    Err(std::io::Error::other("no thread"))
                } else {
                    std::thread::Builder::new().spawn(job)
                }
            },
        );
        let got = clients.join().expect("clients");
        // the connections whose thread failed were closed, unanswered; the
        // others were answered; three sessions ran, as the limit asked
        assert_eq!(got, [vec![], vec![101], vec![], vec![103], vec![], vec![105]]);
    }
}
