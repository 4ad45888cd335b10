//! Conformance harness: host, device and dealer of `mpcvit-core` wired over
//! `mpcvit-transport` links, for the proptest laws in `tests/`.
//!
//! Each party type wraps one role's correlation source and links. Every op
//! is split into the steps a party takes between messages (`*_open` sends,
//! `*_finish` receives), so the same code drives the three parties in one
//! thread over in-memory pipes ([`World`]) and in three threads over TCP.

use embedded_io::{Read, Write};
use mpcvit_core::corr::dealer_message_len;
use mpcvit_core::prg::{Prg, Seed};
use mpcvit_core::protocol::linear::{self, LinearDevice, LinearHost, LinearShape};
use mpcvit_core::protocol::lut::{self, Lut, LutOpened, LutShape, Table};
use mpcvit_core::protocol::matmul::{self, Matmul, MatmulOpened, MatmulShape};
use mpcvit_core::protocol::mul::{self, Mul, MulOpened};
use mpcvit_core::protocol::trunc::{self, TruncDevice, TruncHost};
use mpcvit_core::{Correlations, DealerSession, FixedPoint, ProtocolError, Role, SessionId};
use mpcvit_transport::FrameKind;
use mpcvit_transport::link::{Error as LinkError, Link};
use mpcvit_transport::mem::{self, MemEnd};

pub use embedded_io;

pub mod party;
pub mod vit;

/// Largest frame payload the test parties accept.
pub const MAX_MSG: usize = 64 << 20;

/// Any failure of a party in a test run.
#[derive(Debug)]
pub enum RunError {
    /// A protocol step failed.
    Protocol(ProtocolError),
    /// The link failed.
    Link(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Link(e) => write!(f, "link error: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<ProtocolError> for RunError {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl<E: std::fmt::Debug> From<LinkError<E>> for RunError {
    fn from(e: LinkError<E>) -> Self {
        Self::Link(e.to_string())
    }
}

/// Result of a party step.
pub type Res<T> = Result<T, RunError>;

/// Test keys of a deployment (fixed, so runs are reproducible).
#[derive(Clone, Debug)]
pub struct Keys {
    /// Host <-> dealer key.
    pub host: Seed,
    /// Device <-> dealer key.
    pub device: Seed,
    /// The host's per-model mask seed (shared with the dealer).
    pub model: Seed,
}

impl Keys {
    /// Keys derived from a test number.
    pub fn test(n: u8) -> Self {
        Self {
            host: Seed::from_bytes([n; 32]),
            device: Seed::from_bytes([n ^ 0x5a; 32]),
            model: Seed::from_bytes([n ^ 0xa5; 32]),
        }
    }
}

/// The host party: links to the device and from the dealer.
pub struct HostSide<T> {
    /// Link to the device.
    pub dev: Link<T>,
    /// Link from the dealer.
    pub dealer: Link<T>,
    /// Correlation source.
    pub corr: Correlations,
    buf: Vec<u8>,
    out: Vec<u8>,
}

/// The device party.
pub struct DeviceSide<T> {
    /// Link to the host.
    pub host: Link<T>,
    /// Correlation source.
    pub corr: Correlations,
    buf: Vec<u8>,
    out: Vec<u8>,
}

/// The dealer.
pub struct DealerSide<T> {
    /// Link to the host.
    pub host: Link<T>,
    /// Both parties' streams.
    pub session: DealerSession,
    out: Vec<u8>,
    scratch: Vec<u64>,
    keys: Keys,
}

impl<T: Read + Write> HostSide<T> {
    /// The host of `session`.
    pub fn new(dev: Link<T>, dealer: Link<T>, keys: &Keys, session: SessionId) -> Self {
        Self {
            dev,
            dealer,
            corr: Correlations::new(Role::Host, &keys.host, session),
            buf: vec![0; MAX_MSG],
            out: Vec::new(),
        }
    }

    /// Receives the dealer's message for the next op.
    pub fn recv_dealer(&mut self) -> Res<Vec<u8>> {
        Ok(self.dealer.recv_kind(FrameKind::Dealer, &mut self.buf)?.to_vec())
    }

    fn recv_peer(&mut self) -> Res<&[u8]> {
        Ok(self.dev.recv_kind(FrameKind::Data, &mut self.buf)?)
    }

    /// Elementwise product, step 1 (sends the opening).
    pub fn mul_open<'m>(&mut self, msg: &'m [u8], x: &[u64], y: &[u64]) -> Res<MulOpened<'m>> {
        let op = Mul::new(self.corr.next_op_with(msg)?, x.len())?;
        self.out.resize(mul::msg_len(x.len()), 0);
        let (st, n) = op.open(x, y, &mut self.out)?;
        self.dev.send(FrameKind::Data, self.out.get(..n).unwrap_or(&[]))?;
        Ok(st)
    }

    /// Elementwise product, step 2.
    pub fn mul_finish(&mut self, st: MulOpened<'_>, x: &[u64], y: &[u64]) -> Res<Vec<u64>> {
        let mut z = vec![0; x.len()];
        let peer = self.recv_peer()?;
        st.finish(x, y, peer, &mut z)?;
        Ok(z)
    }

    /// Matrix product, step 1.
    pub fn matmul_open<'m>(&mut self, msg: &'m [u8], s: MatmulShape, x: &[u64], y: &[u64]) -> Res<MatmulOpened<'m>> {
        let op = Matmul::new(self.corr.next_op_with(msg)?, s)?;
        self.out.resize(s.msg_len(), 0);
        let (st, n) = op.open(x, y, &mut self.out)?;
        self.dev.send(FrameKind::Data, self.out.get(..n).unwrap_or(&[]))?;
        Ok(st)
    }

    /// Matrix product, step 2.
    pub fn matmul_finish(&mut self, st: MatmulOpened<'_>, s: MatmulShape, x: &[u64], y: &[u64]) -> Res<Vec<u64>> {
        let mut z = vec![0; s.n * s.m];
        let mut scratch = vec![0; s.scratch_len()];
        let peer = self.recv_peer()?;
        st.finish(x, y, peer, &mut scratch, &mut z)?;
        Ok(z)
    }

    /// Linear layer (single step: receive the device's message).
    pub fn linear(&mut self, msg: &[u8], s: LinearShape, x0: &[u64], w: &[u64]) -> Res<Vec<u64>> {
        let op = LinearHost::new(self.corr.next_op_with(msg)?, s)?;
        let mut z = vec![0; s.n * s.dout];
        let peer = self.dev.recv_kind(FrameKind::Data, &mut self.buf)?;
        op.finish(x0, w, peer, &mut z)?;
        Ok(z)
    }

    /// Lookup, step 1 (sends the masked input); returns the state and the
    /// message sent (needed to finish).
    pub fn lut_open<'m>(
        &mut self,
        msg: &'m [u8],
        sh: LutShape,
        t: &dyn Table,
        x: &[u64],
    ) -> Res<(LutOpened<'m>, Vec<u8>)> {
        let op = Lut::new(self.corr.next_op_with(msg)?, sh, t)?;
        let mut out = vec![0; sh.msg_len()];
        let (st, n) = op.open(x, &mut out)?;
        self.dev.send(FrameKind::Data, out.get(..n).unwrap_or(&[]))?;
        Ok((st, out))
    }

    /// Lookup, step 2.
    pub fn lut_finish(&mut self, st: LutOpened<'_>, sh: LutShape, t: &dyn Table, own: &[u8]) -> Res<Vec<u64>> {
        let mut z = vec![0; sh.n * t.outputs()];
        let peer = self.recv_peer()?;
        st.finish(sh, t, own, peer, &mut z)?;
        Ok(z)
    }

    /// Exact truncation (single step: receive, reply).
    pub fn trunc(&mut self, msg: &[u8], fp: FixedPoint, z0: &[u64]) -> Res<Vec<u64>> {
        let op = TruncHost::new(self.corr.next_op_with(msg)?, z0.len(), fp.frac_bits())?;
        let mut t = vec![0; z0.len()];
        let mut reply = vec![0; trunc::host_msg_len(z0.len())];
        let peer = self.dev.recv_kind(FrameKind::Data, &mut self.buf)?;
        let n = op.respond(z0, peer, &mut reply, &mut t)?;
        self.dev.send(FrameKind::Data, reply.get(..n).unwrap_or(&[]))?;
        Ok(t)
    }
}

impl<T: Read + Write> DeviceSide<T> {
    /// The device of `session`.
    pub fn new(host: Link<T>, keys: &Keys, session: SessionId) -> Self {
        Self {
            host,
            corr: Correlations::new(Role::Device, &keys.device, session),
            buf: vec![0; MAX_MSG],
            out: Vec::new(),
        }
    }

    /// Elementwise product, step 1.
    pub fn mul_open(&mut self, x: &[u64], y: &[u64]) -> Res<MulOpened<'static>> {
        let op = Mul::new(self.corr.next_op()?, x.len())?;
        self.out.resize(mul::msg_len(x.len()), 0);
        let (st, n) = op.open(x, y, &mut self.out)?;
        self.host.send(FrameKind::Data, self.out.get(..n).unwrap_or(&[]))?;
        Ok(st)
    }

    /// Elementwise product, step 2.
    pub fn mul_finish(&mut self, st: MulOpened<'static>, x: &[u64], y: &[u64]) -> Res<Vec<u64>> {
        let mut z = vec![0; x.len()];
        let peer = self.host.recv_kind(FrameKind::Data, &mut self.buf)?;
        st.finish(x, y, peer, &mut z)?;
        Ok(z)
    }

    /// Matrix product, step 1.
    pub fn matmul_open(&mut self, s: MatmulShape, x: &[u64], y: &[u64]) -> Res<MatmulOpened<'static>> {
        let op = Matmul::new(self.corr.next_op()?, s)?;
        self.out.resize(s.msg_len(), 0);
        let (st, n) = op.open(x, y, &mut self.out)?;
        self.host.send(FrameKind::Data, self.out.get(..n).unwrap_or(&[]))?;
        Ok(st)
    }

    /// Matrix product, step 2.
    pub fn matmul_finish(&mut self, st: MatmulOpened<'static>, s: MatmulShape, x: &[u64], y: &[u64]) -> Res<Vec<u64>> {
        let mut z = vec![0; s.n * s.m];
        let mut scratch = vec![0; s.scratch_len()];
        let peer = self.host.recv_kind(FrameKind::Data, &mut self.buf)?;
        st.finish(x, y, peer, &mut scratch, &mut z)?;
        Ok(z)
    }

    /// Linear layer: sends `x1 - A1`, returns the (input-independent) share.
    pub fn linear(&mut self, s: LinearShape, x1: &[u64], f: &[u64]) -> Res<Vec<u64>> {
        let op = LinearDevice::new(self.corr.next_op()?, s)?;
        self.out.resize(s.msg_len(), 0);
        let (sent, n) = op.send(x1, &mut self.out)?;
        self.host.send(FrameKind::Data, self.out.get(..n).unwrap_or(&[]))?;
        let mut z = vec![0; s.n * s.dout];
        sent.output(f, &mut z)?;
        Ok(z)
    }

    /// Lookup, step 1.
    pub fn lut_open(&mut self, sh: LutShape, t: &dyn Table, x: &[u64]) -> Res<(LutOpened<'static>, Vec<u8>)> {
        let op = Lut::new(self.corr.next_op()?, sh, t)?;
        let mut out = vec![0; sh.msg_len()];
        let (st, n) = op.open(x, &mut out)?;
        self.host.send(FrameKind::Data, out.get(..n).unwrap_or(&[]))?;
        Ok((st, out))
    }

    /// Lookup, step 2.
    pub fn lut_finish(&mut self, st: LutOpened<'static>, sh: LutShape, t: &dyn Table, own: &[u8]) -> Res<Vec<u64>> {
        let mut z = vec![0; sh.n * t.outputs()];
        let peer = self.host.recv_kind(FrameKind::Data, &mut self.buf)?;
        st.finish(sh, t, own, peer, &mut z)?;
        Ok(z)
    }

    /// Exact truncation, step 1 (sends `z1 + r1`).
    pub fn trunc_open(&mut self, fp: FixedPoint, z1: &[u64]) -> Res<trunc::TruncDeviceSent> {
        let op = TruncDevice::new(self.corr.next_op()?, z1.len(), fp.frac_bits())?;
        self.out.resize(trunc::device_msg_len(z1.len()), 0);
        let (st, n) = op.send(z1, &mut self.out)?;
        self.host.send(FrameKind::Data, self.out.get(..n).unwrap_or(&[]))?;
        Ok(st)
    }

    /// Exact truncation, step 2.
    pub fn trunc_finish(&mut self, st: trunc::TruncDeviceSent, n: usize) -> Res<Vec<u64>> {
        let mut t = vec![0; n];
        let reply = self.host.recv_kind(FrameKind::Data, &mut self.buf)?;
        st.finish(reply, &mut t)?;
        Ok(t)
    }
}

impl<T: Read + Write> DealerSide<T> {
    /// The dealer of `session`.
    pub fn new(host: Link<T>, keys: &Keys, session: SessionId) -> Self {
        Self {
            host,
            session: DealerSession::new(&keys.host, &keys.device, session),
            out: Vec::new(),
            scratch: Vec::new(),
            keys: keys.clone(),
        }
    }

    fn send(&mut self, n: usize) -> Res<()> {
        self.host.send(FrameKind::Dealer, self.out.get(..n).unwrap_or(&[]))?;
        Ok(())
    }

    /// Deals an elementwise product of `n`.
    pub fn mul(&mut self, n: usize) -> Res<()> {
        let op = self.session.next_op()?;
        self.out.resize(dealer_message_len(n), 0);
        let len = mul::deal(&op, n, &mut self.out)?;
        self.send(len)
    }

    /// Deals a matrix product.
    pub fn matmul(&mut self, s: MatmulShape) -> Res<()> {
        let op = self.session.next_op()?;
        self.out.resize(dealer_message_len(s.n * s.m), 0);
        self.scratch.resize(s.dealer_scratch_len(), 0);
        let len = matmul::deal(&op, s, &mut self.scratch, &mut self.out)?;
        self.send(len)
    }

    /// Deals a linear op of model layer `layer`.
    pub fn linear(&mut self, s: LinearShape, layer: u64) -> Res<()> {
        let op = self.session.next_op()?;
        let mut b = vec![0; s.din * s.dout];
        linear::model_mask(&self.keys.model, layer).fill(&mut b);
        self.out.resize(dealer_message_len(s.corrections()), 0);
        self.scratch.resize(s.dout, 0);
        let len = linear::deal(&op, s, &b, &mut self.scratch, &mut self.out)?;
        self.send(len)
    }

    /// Deals a lookup.
    pub fn lut(&mut self, sh: LutShape, t: &dyn Table) -> Res<()> {
        let op = self.session.next_op()?;
        self.out.resize(dealer_message_len(sh.corrections(t)), 0);
        let mut scratch = vec![0; lut::dealer_scratch_len(sh, t)];
        let len = lut::deal(&op, sh, t, &mut scratch, &mut self.out)?;
        self.send(len)
    }

    /// Deals an exact truncation of `n`.
    pub fn trunc(&mut self, n: usize, fp: FixedPoint) -> Res<()> {
        let op = self.session.next_op()?;
        self.out.resize(dealer_message_len(2 * n), 0);
        let len = trunc::deal(&op, n, fp.frac_bits(), &mut self.out)?;
        self.send(len)
    }
}

/// Host, device and dealer in one thread over in-memory pipes.
pub struct World {
    /// The host.
    pub host: HostSide<MemEnd>,
    /// The device.
    pub device: DeviceSide<MemEnd>,
    /// The dealer.
    pub dealer: DealerSide<MemEnd>,
    /// Keys in use.
    pub keys: Keys,
    rng: Prg,
    /// Wall time of the last op: (dealer, online) in nanoseconds.
    pub last_ns: (u64, u64),
}

impl World {
    /// A fresh deployment and session.
    pub fn new(test: u8, session: u64) -> Self {
        let keys = Keys::test(test);
        let sid = SessionId(session);
        let (hd, dh) = mem::pair();
        let (hdl, dlh) = mem::pair();
        Self {
            host: HostSide::new(Link::new(hd, session), Link::new(hdl, session), &keys, sid),
            device: DeviceSide::new(Link::new(dh, session), &keys, sid),
            dealer: DealerSide::new(Link::new(dlh, session), &keys, sid),
            rng: Prg::new(&Seed::from_bytes([test; 32]), session, 0xface),
            keys,
            last_ns: (0, 0),
        }
    }

    /// Splits plaintext ring elements into random additive shares.
    pub fn share(&mut self, x: &[u64]) -> (Vec<u64>, Vec<u64>) {
        let x1: Vec<u64> = x.iter().map(|_| self.rng.next_u64()).collect();
        let x0 = x.iter().zip(&x1).map(|(a, b)| a.wrapping_sub(*b)).collect();
        (x0, x1)
    }

    /// Elementwise product of plaintext vectors, computed securely; returns
    /// the reconstructed ring result (product scale).
    pub fn mul(&mut self, x: &[u64], y: &[u64]) -> Res<Vec<u64>> {
        let ((x0, x1), (y0, y1)) = (self.share(x), self.share(y));
        let clock = std::time::Instant::now();
        self.dealer.mul(x.len())?;
        let msg = self.host.recv_dealer()?;
        let online = std::time::Instant::now();
        let h = self.host.mul_open(&msg, &x0, &y0)?;
        let d = self.device.mul_open(&x1, &y1)?;
        let z0 = self.host.mul_finish(h, &x0, &y0)?;
        let z1 = self.device.mul_finish(d, &x1, &y1)?;
        self.last_ns = (ns(online - clock), ns(online.elapsed()));
        Ok(reconstruct(&z0, &z1))
    }

    /// Shared x shared matrix product.
    pub fn matmul(&mut self, s: MatmulShape, x: &[u64], y: &[u64]) -> Res<Vec<u64>> {
        let ((x0, x1), (y0, y1)) = (self.share(x), self.share(y));
        let clock = std::time::Instant::now();
        self.dealer.matmul(s)?;
        let msg = self.host.recv_dealer()?;
        let online = std::time::Instant::now();
        let h = self.host.matmul_open(&msg, s, &x0, &y0)?;
        let d = self.device.matmul_open(s, &x1, &y1)?;
        let z0 = self.host.matmul_finish(h, s, &x0, &y0)?;
        let z1 = self.device.matmul_finish(d, s, &x1, &y1)?;
        self.last_ns = (ns(online - clock), ns(online.elapsed()));
        Ok(reconstruct(&z0, &z1))
    }

    /// Host-weights linear layer `x W` (product scale).
    pub fn linear(&mut self, s: LinearShape, layer: u64, x: &[u64], w: &[u64]) -> Res<Vec<u64>> {
        let (x0, x1) = self.share(x);
        let mut f = vec![0; w.len()];
        linear::masked_weights(&self.keys.model, layer, w, &mut f)?;
        let clock = std::time::Instant::now();
        self.dealer.linear(s, layer)?;
        let msg = self.host.recv_dealer()?;
        let online = std::time::Instant::now();
        let z1 = self.device.linear(s, &x1, &f)?;
        let z0 = self.host.linear(&msg, s, &x0, w)?;
        self.last_ns = (ns(online - clock), ns(online.elapsed()));
        Ok(reconstruct(&z0, &z1))
    }

    /// Exact truncation of a plaintext vector (shared at random first).
    pub fn trunc(&mut self, fp: FixedPoint, z: &[u64]) -> Res<Vec<u64>> {
        let (z0, z1) = self.share(z);
        let clock = std::time::Instant::now();
        self.dealer.trunc(z.len(), fp)?;
        let msg = self.host.recv_dealer()?;
        let online = std::time::Instant::now();
        let d = self.device.trunc_open(fp, &z1)?;
        let t0 = self.host.trunc(&msg, fp, &z0)?;
        let t1 = self.device.trunc_finish(d, z.len())?;
        self.last_ns = (ns(online - clock), ns(online.elapsed()));
        Ok(reconstruct(&t0, &t1))
    }

    /// Lookup of a plaintext vector (shared at random first): the
    /// reconstructed outputs, `out[i * outputs + o]`.
    pub fn lut(&mut self, sh: LutShape, t: &dyn Table, x: &[u64]) -> Res<Vec<u64>> {
        let (x0, x1) = self.share(x);
        let clock = std::time::Instant::now();
        self.dealer.lut(sh, t)?;
        let msg = self.host.recv_dealer()?;
        let online = std::time::Instant::now();
        let (h, hm) = self.host.lut_open(&msg, sh, t, &x0)?;
        let (d, dm) = self.device.lut_open(sh, t, &x1)?;
        let z0 = self.host.lut_finish(h, sh, t, &hm)?;
        let z1 = self.device.lut_finish(d, sh, t, &dm)?;
        self.last_ns = (ns(online - clock), ns(online.elapsed()));
        Ok(reconstruct(&z0, &z1))
    }

    /// Local truncation of a plaintext vector (shared at random first).
    pub fn trunc_local(&mut self, fp: FixedPoint, z: &[u64]) -> Vec<u64> {
        let (z0, z1) = self.share(z);
        let online = std::time::Instant::now();
        let out = z0
            .iter()
            .zip(&z1)
            .map(|(&a, &b)| trunc::local(a, fp.frac_bits()).wrapping_add(trunc::local(b, fp.frac_bits())))
            .collect();
        self.last_ns = (0, ns(online.elapsed()));
        out
    }
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Elementwise sum of two share vectors.
pub fn reconstruct(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
}

/// Host, device and dealer connected over TCP on 127.0.0.1 (to be moved
/// into one thread each).
pub fn tcp_parties(
    test: u8,
    session: u64,
) -> std::io::Result<(
    HostSide<mpcvit_transport::tcp::Tcp>,
    DeviceSide<mpcvit_transport::tcp::Tcp>,
    DealerSide<mpcvit_transport::tcp::Tcp>,
)> {
    use mpcvit_transport::tcp::Tcp;
    use std::net::{TcpListener, TcpStream};
    let timeout = Some(std::time::Duration::from_secs(30));
    let keys = Keys::test(test);
    let sid = SessionId(session);
    let connect = |l: &TcpListener| -> std::io::Result<(Tcp, Tcp)> {
        let a = TcpStream::connect(l.local_addr()?)?;
        let (b, _) = l.accept()?;
        Ok((Tcp::new(a, timeout)?, Tcp::new(b, timeout)?))
    };
    let l = TcpListener::bind("127.0.0.1:0")?;
    let (dev_end, host_dev_end) = connect(&l)?;
    let (dealer_end, host_dealer_end) = connect(&l)?;
    Ok((
        HostSide::new(
            Link::new(host_dev_end, session),
            Link::new(host_dealer_end, session),
            &keys,
            sid,
        ),
        DeviceSide::new(Link::new(dev_end, session), &keys, sid),
        DealerSide::new(Link::new(dealer_end, session), &keys, sid),
    ))
}
