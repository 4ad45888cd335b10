//! The three parties in one process: host ([`HostParty`]), device
//! ([`DeviceParty`], the one the firmware runs) and dealer
//! ([`DealerParty`]) in three threads over in-memory pipes or any pair of
//! byte streams. `eval`, `bench` and the tests run secure inference here;
//! `mpcvit host`/`dealer`/`device` run the same parties over TCP.
//!
//! The keys are a [`LocalKeys`] of the caller's choosing (fixed keys make
//! runs reproducible); the device uses its key as its session key, as it
//! would after a set-up (`core::session`).

use crate::dealer::DealerParty;
use crate::error::{DealerError, HostError};
use crate::host::{HostParty, MAX_MSG};
use crate::reference;
use crate::weights::WeightMap;
use embedded_io::{Read, Write};
use mpcvit_core::model::ModelView;
use mpcvit_core::ops::vit::{self, Tile, VitSpec};
use mpcvit_core::ops::{LutJob, Party};
use mpcvit_core::prg::{Prg, Seed};
use mpcvit_core::protocol::cell::{Basis, CellGrid};
use mpcvit_core::protocol::cmp::{CmpOut, CmpShape};
use mpcvit_core::protocol::linear::{LinearShape, model_mask};
use mpcvit_core::protocol::lut::Grid;
use mpcvit_core::protocol::matmul::MatmulShape;
use mpcvit_core::{FixedPoint, ProtocolError, Role, SessionId};
use mpcvit_device::{DeviceError, DeviceParty, HighWater};
use mpcvit_transport::mem;
use mpcvit_transport::{Link, Meter};
use std::fmt;

/// The keys of a local deployment.
#[derive(Clone)]
pub struct LocalKeys {
    /// Host <-> dealer key.
    pub host: Seed,
    /// The device's session key (shared with the dealer).
    pub device: Seed,
    /// The host's per-model mask seed (shared with the dealer).
    pub model: Seed,
}

impl fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalKeys(<redacted>)")
    }
}

impl LocalKeys {
    /// Fixed keys derived from a number (reproducible runs and tests).
    pub fn fixed(n: u8) -> Self {
        Self {
            host: Seed::from_bytes([n; 32]),
            device: Seed::from_bytes([n ^ 0x5a; 32]),
            model: Seed::from_bytes([n ^ 0xa5; 32]),
        }
    }
}

/// Why a local run failed: which party, and its error (which keeps its
/// source), or a party's thread panicked.
#[derive(Debug)]
#[non_exhaustive]
pub enum LocalError<E> {
    /// The host failed.
    Host(HostError<E>),
    /// The device failed.
    Device(DeviceError<E>),
    /// The dealer failed.
    Dealer(DealerError<E>),
    /// A step refused its input outside any party (a party's own refusals
    /// are its variant's `Protocol`).
    Protocol(ProtocolError),
    /// A party's thread panicked (a bug).
    Panicked(&'static str),
}

impl<E: fmt::Debug> fmt::Display for LocalError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(e) => write!(f, "host: {e}"),
            Self::Device(e) => write!(f, "device: {e}"),
            Self::Dealer(e) => write!(f, "dealer: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Panicked(who) => write!(f, "the {who} thread panicked"),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for LocalError<E> {}

impl<E> From<ProtocolError> for LocalError<E> {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl<E> From<HostError<E>> for LocalError<E> {
    fn from(e: HostError<E>) -> Self {
        Self::Host(e)
    }
}

impl<E> From<DeviceError<E>> for LocalError<E> {
    fn from(e: DeviceError<E>) -> Self {
        Self::Device(e)
    }
}

impl<E> From<DealerError<E>> for LocalError<E> {
    fn from(e: DealerError<E>) -> Self {
        Self::Dealer(e)
    }
}

/// Any of the three parties behind one error type, so that one closure
/// (which cannot be generic) drives each of them: the closure of [`run3`]
/// takes `&mut dyn Party<Error = LocalError<E>>`. The host's calls are
/// booked per op family ([`OpCost`]).
struct AnyParty<P>(P, Vec<(&'static str, OpCost)>);

/// What the ops of one family cost in one inference, as the host's links
/// count it (the host receives every dealer byte and is the device's only
/// peer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCost {
    /// Calls (flights) of the family.
    pub calls: u64,
    /// Dealer -> host bytes.
    pub dealer_bytes: u64,
    /// Device -> host bytes.
    pub device_to_host: u64,
    /// Host -> device bytes.
    pub host_to_device: u64,
    /// Times the host waited on the device.
    pub waits: u64,
}

impl std::ops::AddAssign for OpCost {
    fn add_assign(&mut self, o: Self) {
        self.calls += o.calls;
        self.dealer_bytes += o.dealer_bytes;
        self.device_to_host += o.device_to_host;
        self.host_to_device += o.host_to_device;
        self.waits += o.waits;
    }
}

/// A party whose links can be read between its calls.
trait Meters {
    /// The device link's and the dealer link's meters (the host's).
    fn meters(&self) -> Option<(Meter, Meter)> {
        None
    }
}

impl<T: Read + Write> Meters for HostParty<T> {
    fn meters(&self) -> Option<(Meter, Meter)> {
        Some((self.device_link().meter(), self.dealer_link().meter()))
    }
}
impl<T: Read + Write> Meters for DeviceParty<'_, T> {}
impl<T: Read + Write> Meters for DealerParty<T> {}

/// The op family of a cell lookup, by its grids.
fn cell_family(grids: &[CellGrid<'_>]) -> &'static str {
    match grids {
        [one] => match one.shape.basis {
            Basis::Exp => "exp (Softmax)",
            // the wide ops read one series of degree `wide::DEGREE`, GeLU its tail at 6
            Basis::Cheb(k) if k == mpcvit_core::ops::wide::DEGREE => "series (reciprocal, rsqrt)",
            Basis::Cheb(_) => "series lookup (GeLU's tail)",
            Basis::Step => "cell table",
        },
        _ => "windows' flags (reciprocal, rsqrt)",
    }
}

/// The op family of a comparison, by what it outputs.
fn cmp_family(s: &CmpShape) -> &'static str {
    if matches!(s.out, CmpOut::ReluClip(_)) {
        "comparison at 0 and the clip (GeLU)"
    } else {
        "comparison (ReLU: RSAttn, linearized tokens)"
    }
}

impl<P: Party + Meters> AnyParty<P> {
    fn new(p: P) -> Self {
        Self(p, Vec::new())
    }

    /// Runs `f` on the party and books what its links carried under
    /// `family`.
    fn book<R>(&mut self, family: &'static str, f: impl FnOnce(&mut P) -> R) -> R {
        let before = self.0.meters();
        let r = f(&mut self.0);
        if let (Some((d0, l0)), Some((d1, l1))) = (before, self.0.meters()) {
            let (d, l) = (d1.since(&d0), l1.since(&l0));
            let cost = OpCost {
                calls: 1,
                dealer_bytes: l.bytes_recv,
                device_to_host: d.bytes_recv,
                host_to_device: d.bytes_sent,
                waits: d.rounds,
            };
            match self.1.iter_mut().find(|(k, _)| *k == family) {
                Some((_, c)) => *c += cost,
                None => self.1.push((family, cost)),
            }
        }
        r
    }
}

impl<P: Party + Meters> Party for AnyParty<P>
where
    LocalError<<P::Error as Source>::E>: From<P::Error>,
    P::Error: Source,
{
    type Error = LocalError<<P::Error as Source>::E>;

    fn role(&self) -> Role {
        self.0.role()
    }
    fn fp(&self) -> FixedPoint {
        self.0.fp()
    }
    fn next_op_id(&self) -> u64 {
        self.0.next_op_id()
    }
    fn earlier_op(&self, op: u64) -> Result<mpcvit_core::OpCorr<'static>, mpcvit_core::ProtocolError> {
        self.0.earlier_op(op)
    }
    fn mul(&mut self, x: &[u64], y: &[u64], cols: usize, z: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("products", |p| p.mul(x, y, cols, z))?)
    }
    fn scale_trunc(&mut self, x: &[u64], g: &[u64], bits: u32, z: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("scale and truncate (LayerNorm)", |p| p.scale_trunc(x, g, bits, z))?)
    }
    fn square(&mut self, x: &[u64], z: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("squares", |p| p.square(x, z))?)
    }
    fn square_keep(&mut self, x: &[u64], e: &mut [u64], z: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("squares", |p| p.square_keep(x, e, z))?)
    }
    fn mul_opened(&mut self, e: &[u64], first: u64, y: &[u64], cols: usize, z: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("products", |p| p.mul_opened(e, first, y, cols, z))?)
    }
    fn matmuls(&mut self, s: &[MatmulShape], x: &[u64], y: &mut [u64], z: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("matmuls (attention)", |p| p.matmuls(s, x, y, z))?)
    }
    fn linear_trunc(
        &mut self,
        s: LinearShape,
        x: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Result<(), Self::Error> {
        Ok(self.book("linear layers", |p| p.linear_trunc(s, x, w, bias, bits, z))?)
    }
    fn linear_mask(&mut self) -> Result<u64, Self::Error> {
        Ok(self.book("linear layers", |p| p.linear_mask())?)
    }
    fn linear_block(
        &mut self,
        mask: u64,
        din: usize,
        block: (usize, usize, usize),
        x: &[u64],
        e: &mut [u64],
    ) -> Result<(), Self::Error> {
        Ok(self.book("linear layers", |p| p.linear_block(mask, din, block, x, e))?)
    }
    fn linear_trunc_sent(
        &mut self,
        mask: u64,
        r0: usize,
        s: LinearShape,
        e: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Result<(), Self::Error> {
        Ok(self.book("linear layers", |p| {
            p.linear_trunc_sent(mask, r0, s, e, w, bias, bits, z)
        })?)
    }
    fn linear_trunc_held(
        &mut self,
        trunc: (u64, u32),
        s: LinearShape,
        x: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Result<(), Self::Error> {
        Ok(self.book("linear layers", |p| p.linear_trunc_held(trunc, s, x, w, bias, bits, z))?)
    }
    fn reveal_to_device(&mut self, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("reveal", |p| p.reveal_to_device(x, out))?)
    }
    fn reveal_to_host(&mut self, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("reveal", |p| p.reveal_to_host(x, out))?)
    }
    fn luts(&mut self, jobs: &[LutJob<'_>], x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("table lookups", |p| p.luts(jobs, x, out))?)
    }
    fn lut_grids(&mut self, grids: &[Grid<'_>], x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("table lookups", |p| p.lut_grids(grids, x, out))?)
    }
    fn cells(&mut self, grids: &[CellGrid<'_>], x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book(cell_family(grids), |p| p.cells(grids, x, out))?)
    }
    fn cmp(&mut self, shape: CmpShape, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book(cmp_family(&shape), |p| p.cmp(shape, x, out))?)
    }
    fn trunc(&mut self, bits: u32, x: &[u64], z: &mut [u64]) -> Result<(), Self::Error> {
        Ok(self.book("truncations", |p| p.trunc(bits, x, z))?)
    }
    /// The host (the party whose links are booked) runs the two ops one
    /// after the other, each booked under its family; the others run theirs.
    fn trunc_cmp(
        &mut self,
        bits: u32,
        t: &[u64],
        tz: &mut [u64],
        shape: CmpShape,
        x: &[u64],
        out: &mut [u64],
    ) -> Result<(), Self::Error> {
        if self.0.meters().is_some() {
            self.trunc(bits, t, tz)?;
            self.cmp(shape, x, out)
        } else {
            Ok(self.0.trunc_cmp(bits, t, tz, shape, x, out)?)
        }
    }
}

/// The byte stream error under a party's error.
trait Source {
    type E;
}
impl<E> Source for HostError<E> {
    type E = E;
}
impl<E> Source for DeviceError<E> {
    type E = E;
}
impl<E> Source for DealerError<E> {
    type E = E;
}

/// The device's buffers on a desktop: as large as the host's messages
/// (allocated lazily by the OS, so only what an inference uses is mapped).
pub struct DeviceBuffers {
    tx: Vec<u8>,
    rx: Vec<u8>,
    tmp: Vec<u64>,
}

impl Default for DeviceBuffers {
    fn default() -> Self {
        Self {
            tx: vec![0; MAX_MSG],
            rx: vec![0; MAX_MSG],
            tmp: vec![0; MAX_MSG / 8],
        }
    }
}

impl DeviceBuffers {
    /// The three buffers, for [`mpcvit_device::session::Buffers`].
    pub fn split(&mut self) -> (&mut [u8], &mut [u8], &mut [u64]) {
        (&mut self.tx, &mut self.rx, &mut self.tmp)
    }

    /// The device party of session `sid` on `link`, over these buffers.
    pub fn party<T: Read + Write>(
        &mut self,
        fp: FixedPoint,
        link: Link<T>,
        key: &Seed,
        sid: SessionId,
    ) -> DeviceParty<'_, T> {
        DeviceParty::new(fp, link, key, sid, &mut self.tx, &mut self.rx, &mut self.tmp)
    }
}

/// The three parties of `session` over two stream pairs: `dev` = (host end,
/// device end), `dealer` = (host end, dealer end). The device borrows `bufs`.
pub fn parties<'b, T: Read + Write>(
    fp: FixedPoint,
    keys: &LocalKeys,
    session: u64,
    (dev, dealer): ((T, T), (T, T)),
    bufs: &'b mut DeviceBuffers,
) -> (HostParty<T>, DeviceParty<'b, T>, DealerParty<T>) {
    let sid = SessionId(session);
    let host = HostParty::new(
        fp,
        Link::new(dev.0, session),
        Link::new(dealer.0, session),
        &keys.host,
        sid,
    );
    let device = bufs.party(fp, Link::new(dev.1, session), &keys.device, sid);
    let dl = DealerParty::new(fp, Link::new(dealer.1, session), &keys.host, &keys.device, sid);
    (host, device, dl)
}

/// What [`run3`] measured.
#[derive(Debug)]
pub struct Run3 {
    /// The host's output share plus the device's.
    pub output: Vec<u64>,
    /// The host's output share alone.
    pub host: Vec<u64>,
    /// The device's output share alone.
    pub device_share: Vec<u64>,
    /// The device's link meter (sent = device -> host).
    pub device: Meter,
    /// The host's dealer-link meter (received = dealer -> host).
    pub dealer: Meter,
    /// Peak use of the device's buffers.
    pub high_water: HighWater,
    /// Wall time of the three parties, nanoseconds.
    pub wall_ns: u64,
    /// With [`Schedule::DealerFirst`]: the dealer's time alone.
    pub dealer_ns: u64,
    /// With [`Schedule::DealerFirst`]: host and device after the dealer.
    pub online_ns: u64,
    /// The host's links per op family, in the order first called.
    pub ops: Vec<(&'static str, OpCost)>,
}

/// The closure [`run3`] runs on each party: `(party, its input share, its
/// weights view)` to its output share.
pub type PartyFn<'f, E> =
    dyn Fn(&mut dyn Party<Error = LocalError<E>>, &[u64], &[u64]) -> Result<Vec<u64>, LocalError<E>> + Sync + 'f;

/// When the dealer runs in [`run3`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// With host and device, as in a deployment.
    Concurrent,
    /// To its end first (its messages wait in the links), then host and
    /// device: [`Run3::dealer_ns`] and [`Run3::online_ns`] time the two
    /// apart. For op benchmarks only: a whole inference's dealer messages
    /// are gigabytes.
    DealerFirst,
}

/// A composite op's own refusal (raised by the op's code, not by a party's
/// primitive) as the error of the party that ran it.
fn of<E>(who: Role, e: LocalError<E>) -> LocalError<E> {
    match (who, e) {
        (Role::Host, LocalError::Protocol(p)) => LocalError::Host(HostError::Protocol(p)),
        (Role::Device, LocalError::Protocol(p)) => LocalError::Device(DeviceError::Protocol(p)),
        (Role::Dealer, LocalError::Protocol(p)) => LocalError::Dealer(DealerError::Protocol(p)),
        (_, e) => e,
    }
}

/// Whether a link error says only that the peer went away.
fn gone<E>(e: &mpcvit_transport::Error<E>) -> bool {
    matches!(
        e,
        mpcvit_transport::Error::Closed | mpcvit_transport::Error::Transport(_)
    )
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs `f` on host, device and dealer in three threads over `links`
/// (see [`parties`]): the host gets `inputs[0]`, the device `inputs[1]`,
/// the dealer zeros; party `i` gets the weights view `views[i]`.
#[allow(clippy::too_many_arguments)]
pub fn run3<T: Read + Write + Send>(
    fp: FixedPoint,
    keys: &LocalKeys,
    session: u64,
    links: ((T, T), (T, T)),
    inputs: [&[u64]; 2],
    views: [&[u64]; 3],
    f: &PartyFn<'_, T::Error>,
    schedule: Schedule,
) -> Result<Run3, LocalError<T::Error>>
where
    T::Error: Send,
{
    let mut bufs = DeviceBuffers::default();
    let (host, dev, dl) = parties(fp, keys, session, links, &mut bufs);
    let (mut host, mut dev, mut dl) = (AnyParty::new(host), AnyParty::new(dev), AnyParty::new(dl));
    let zeros = vec![0u64; inputs[1].len()];
    let t0 = std::time::Instant::now();
    // Each party's links close when it is done (its value is dropped), so
    // that a party that failed ends its peers' waits instead of leaving
    // them to time out.
    std::thread::scope(|s| {
        let dealer = s.spawn(move || {
            f(&mut dl, &zeros, views[2])
                .map(|_| ())
                .map_err(|e| of(Role::Dealer, e))
        });
        let dealer = if schedule == Schedule::DealerFirst {
            dealer.join().map_err(|_| LocalError::Panicked("dealer"))??;
            None
        } else {
            Some(dealer)
        };
        let t_online = std::time::Instant::now();
        let device = s.spawn(move || {
            f(&mut dev, inputs[1], views[1])
                .map(|z| (z, dev.0.link().meter(), dev.0.high_water()))
                .map_err(|e| of(Role::Device, e))
        });
        let z0 = f(&mut host, inputs[0], views[0]).map_err(|e| of(Role::Host, e));
        let dealer_meter = host.0.dealer_link().meter();
        let ops = std::mem::take(&mut host.1);
        drop(host);
        let d = device.join().map_err(|_| LocalError::Panicked("device"))?;
        let online_ns = ns(t_online.elapsed());
        let dealer = match dealer {
            Some(t) => t.join().map_err(|_| LocalError::Panicked("dealer"))?,
            None => Ok(()),
        };
        // The cause comes first. A party that fails closes its links, so
        // its peers fail after it with the peer gone: the host's error is
        // the cause unless it is such an echo of the dealer's or the
        // device's failure.
        let z0 = match (z0, dealer) {
            (Err(LocalError::Host(HostError::Dealer(l))), Err(e)) if gone(&l) => return Err(e),
            (Err(LocalError::Host(HostError::Device(l))), _) if gone(&l) => {
                return Err(match d {
                    Err(e) => e,
                    Ok(_) => LocalError::Host(HostError::Device(l)),
                });
            }
            (Err(e), _) => return Err(e),
            (Ok(_), Err(e)) => return Err(e),
            (Ok(z0), Ok(())) => z0,
        };
        let (z1, meter, high_water) = d?;
        Ok(Run3 {
            output: z0.iter().zip(&z1).map(|(a, b)| a.wrapping_add(*b)).collect(),
            host: z0,
            device_share: z1,
            device: meter,
            dealer: dealer_meter,
            high_water,
            wall_ns: ns(t0.elapsed()),
            dealer_ns: ns(t_online - t0),
            online_ns,
            ops,
        })
    })
}

/// [`run3`] over in-memory pipes, with `x` split into random shares (a
/// seeded mask, so runs are reproducible).
pub fn run3_mem(
    fp: FixedPoint,
    keys: &LocalKeys,
    session: u64,
    x: &[u64],
    views: [&[u64]; 3],
    f: &PartyFn<'_, std::io::Error>,
) -> Result<Run3, LocalError<std::io::Error>> {
    let (x0, x1) = share(keys, session, x);
    run3(
        fp,
        keys,
        session,
        (mem::pair(), mem::pair()),
        [&x0, &x1],
        views,
        f,
        Schedule::Concurrent,
    )
}

/// Splits `x` into two additive shares with a mask seeded by the keys and
/// the session.
pub fn share(keys: &LocalKeys, session: u64, x: &[u64]) -> (Vec<u64>, Vec<u64>) {
    let mut rng = Prg::new(&keys.host, session, 77);
    let x1: Vec<u64> = x.iter().map(|_| rng.next_u64()).collect();
    let x0 = x.iter().zip(&x1).map(|(a, b)| a.wrapping_sub(*b)).collect();
    (x0, x1)
}

/// The three parties' views of a host-private column vector `g`: the
/// host's `g`, the device's `g - B`, the dealer's `B`, with `B` the model
/// mask of tensor `id`.
pub fn weight_views(keys: &LocalKeys, id: u64, g: &[u64]) -> [Vec<u64>; 3] {
    let mut b = vec![0; g.len()];
    model_mask(&keys.model, id).fill(&mut b);
    let f = g.iter().zip(&b).map(|(x, y)| x.wrapping_sub(*y)).collect();
    [g.to_vec(), f, b]
}

/// What a secure inference measured.
#[derive(Debug, Clone)]
pub struct Inference {
    /// The logits the device received (fixed point).
    pub logits: Vec<u64>,
    /// The host's logits: zeros unless the run revealed them to the host.
    pub host_logits: Vec<u64>,
    /// The device's link meter.
    pub device: Meter,
    /// The host's dealer-link meter.
    pub dealer: Meter,
    /// Peak use of the device's buffers.
    pub high_water: HighWater,
    /// Wall time, ns.
    pub wall_ns: u64,
    /// The host's links per op family ([`Run3::ops`]).
    pub ops: Vec<(&'static str, OpCost)>,
}

/// One secure inference of a float image (`[c, h, w]`, normalised): the
/// device holds its patch matrix; every party cuts layers by `tile`, and
/// the host sees the logits too if `logits_to_host`.
#[allow(clippy::too_many_arguments)]
pub fn secure_over<T: Read + Write + Send>(
    m: &ModelView<'_>,
    fp: FixedPoint,
    maps: &[WeightMap; 3],
    keys: &LocalKeys,
    session: u64,
    links: ((T, T), (T, T)),
    image: &[f32],
    (tile, logits_to_host): (Tile, bool),
) -> Result<Inference, LocalError<T::Error>>
where
    T::Error: Send,
{
    let a = m.arch();
    let spec = VitSpec {
        arch: a,
        fp,
        model: m,
        tile,
        logits_to_host,
    };
    let x1 = reference::patches(m, fp, image)?;
    let x0 = vec![0u64; x1.len()];
    let views: [&[u64]; 3] = [&[], &[], &[]];
    let f = |p: &mut dyn Party<Error = LocalError<T::Error>>, x: &[u64], _: &[u64]| {
        let w = match p.role() {
            Role::Host => &maps[0],
            Role::Device => &maps[1],
            Role::Dealer => &maps[2],
        };
        let mut out = vec![0; a.classes];
        let mut scratch = vec![0; vit::scratch_len(&a, tile, p.role(), m)];
        vit::forward(p, &spec, w, x, &mut out, &mut scratch)?;
        Ok(out)
    };
    let r = run3(fp, keys, session, links, [&x0, &x1], views, &f, Schedule::Concurrent)?;
    Ok(Inference {
        logits: r.device_share,
        host_logits: r.host,
        device: r.device,
        dealer: r.dealer,
        high_water: r.high_water,
        wall_ns: r.wall_ns,
        ops: r.ops,
    })
}

/// [`secure_over`] in-memory pipes.
pub fn secure(
    m: &ModelView<'_>,
    fp: FixedPoint,
    maps: &[WeightMap; 3],
    keys: &LocalKeys,
    session: u64,
    image: &[f32],
    (tile, logits_to_host): (Tile, bool),
) -> Result<Inference, LocalError<std::io::Error>> {
    secure_over(
        m,
        fp,
        maps,
        keys,
        session,
        (mem::pair(), mem::pair()),
        image,
        (tile, logits_to_host),
    )
}
