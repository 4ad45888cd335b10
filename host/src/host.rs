//! The host party: holds the model weights, receives the dealer's
//! corrections on one link and talks to the device on another.

use crate::error::HostError;
use embedded_io::{Read, Write};
use mpcvit_core::ops::{LutJob, Party, flight};
use mpcvit_core::protocol::affine;
use mpcvit_core::protocol::cell::CellGrid;
use mpcvit_core::protocol::cmp::CmpShape;
use mpcvit_core::protocol::linear::{self, LinearHost, LinearShape};
use mpcvit_core::protocol::lut::Grid;
use mpcvit_core::protocol::matmul::MatmulShape;
use mpcvit_core::protocol::mul::Mul;
use mpcvit_core::protocol::{scale, square, trunc};
use mpcvit_core::{Correlations, FixedPoint, OpCorr, ProtocolError, Role, Seed, SessionId};
use mpcvit_transport::{FrameKind, Link};
use std::sync::{Arc, Mutex};

/// Largest frame payload the host accepts from the device or the dealer
/// (a dealer message is at most [`flight::DEALER_CHUNK_BYTES`] plus its
/// header; device messages of vit_9_12_64's whole layers stay below it).
pub const MAX_MSG: usize = 64 << 20;

/// Spent dealer-message buffers. A secure inference moves a gigabyte or
/// more of dealer messages of up to [`flight::DEALER_CHUNK_BYTES`];
/// allocating each afresh cost a third of the run in page faults and
/// zeroing.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// A dealer message in a buffer that goes back to its pool when dropped.
struct Pooled {
    /// [`MAX_MSG`] bytes (the host receives straight into it).
    buf: Vec<u8>,
    /// Length of the message at the start of `buf`.
    len: usize,
    pool: Pool,
}

impl std::ops::Deref for Pooled {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pool.lock() {
            p.push(std::mem::take(&mut self.buf));
        }
    }
}

/// The host party of one session.
pub struct HostParty<T> {
    fp: FixedPoint,
    dev: Link<T>,
    dealer: Link<T>,
    corr: Correlations,
    tx: Vec<u8>,
    rx: Vec<u8>,
    scratch: Vec<u64>,
    pool: Pool,
}

type Res<T, E> = Result<T, HostError<E>>;

impl<T: Read + Write> HostParty<T> {
    /// The host of session `sid`: `dev` to the device, `dealer` from the
    /// dealer (both already bound to the session); `key` is the host key.
    pub fn new(fp: FixedPoint, dev: Link<T>, dealer: Link<T>, key: &Seed, sid: SessionId) -> Self {
        Self {
            fp,
            dev,
            dealer,
            corr: Correlations::new(Role::Host, key, sid),
            tx: Vec::new(),
            // allocated lazily by the OS: only the pages messages touch
            rx: vec![0; MAX_MSG],
            scratch: Vec::new(),
            pool: Pool::default(),
        }
    }

    /// The link to the device (for its meter).
    pub fn device_link(&self) -> &Link<T> {
        &self.dev
    }

    /// The link from the dealer (for its meter).
    pub fn dealer_link(&self) -> &Link<T> {
        &self.dealer
    }

    /// The dealer's message for the next op, received in place.
    fn recv_dealer(&mut self) -> Res<Pooled, T::Error> {
        let mut buf = self.pool.lock().ok().and_then(|mut p| p.pop()).unwrap_or_default();
        if buf.len() < MAX_MSG {
            buf = vec![0; MAX_MSG];
        }
        let len = self
            .dealer
            .recv_kind(FrameKind::Dealer, &mut buf)
            .map_err(HostError::Dealer)?
            .len();
        Ok(Pooled {
            buf,
            len,
            pool: self.pool.clone(),
        })
    }

    /// The dealer's messages for the next `k` ops.
    fn recv_dealers(&mut self, k: usize) -> Res<Vec<Pooled>, T::Error> {
        (0..k).map(|_| self.recv_dealer()).collect()
    }

    /// `tx` resized to `n` bytes.
    fn tx(&mut self, n: usize) -> &mut [u8] {
        self.tx.resize(n, 0);
        &mut self.tx
    }

    /// Sends `tx[..n]` to the device.
    fn send_tx(&mut self, n: usize) -> Res<(), T::Error> {
        let msg = self.tx.get(..n).ok_or(ProtocolError::BadBuffer)?;
        self.dev.send(FrameKind::Data, msg).map_err(HostError::Device)
    }

    /// Receives the device's next message into `rx`.
    fn recv(&mut self) -> Res<&[u8], T::Error> {
        self.dev
            .recv_kind(FrameKind::Data, &mut self.rx)
            .map_err(HostError::Device)
    }

    /// Receives the device's message, which must be `len` bytes.
    fn recv_exact(&mut self, len: usize) -> Res<&[u8], T::Error> {
        let peer = self.recv()?;
        mpcvit_core::wire::expect_len(peer, len)?;
        Ok(peer)
    }

    /// A row product, its left operand opened by the square op `left` if
    /// any ([`Party::mul_opened`]).
    fn mul_left(&mut self, left: Option<u64>, x: &[u64], y: &[u64], cols: usize, z: &mut [u64]) -> Res<(), T::Error> {
        let msg = self.recv_dealer()?;
        let op = Mul::with_left(self.corr.next_op_with(&msg)?, x.len(), cols, left)?;
        let len = op.msg_len();
        let (st, n) = op.open(x, y, self.tx(len))?;
        self.send_tx(n)?;
        st.finish(x, y, self.recv()?, z)?;
        Ok(())
    }

    /// A square, its opening written into `keep` if given
    /// ([`Party::square_keep`]).
    fn square_into(&mut self, x: &[u64], keep: Option<&mut [u64]>, z: &mut [u64]) -> Res<(), T::Error> {
        let msg = self.recv_dealer()?;
        let op = square::Square::new(self.corr.next_op_with(&msg)?, x.len())?;
        let (st, n) = op.open(x, self.tx(square::msg_len(x.len())))?;
        self.send_tx(n)?;
        st.finish(x, self.recv()?, z, keep)?;
        Ok(())
    }

    /// A linear op and the truncation of its output by `bits` (none with
    /// 0): the device's message holds the op's `head` bytes (none: its
    /// input came ahead, [`Party::linear_block`]) and the truncation's;
    /// `finish` forms the host's share from the op's bytes.
    fn linear_host(
        &mut self,
        s: LinearShape,
        head: usize,
        (bias, bits): (&[u64], u32),
        z: &mut [u64],
        finish: impl FnOnce(LinearHost<'_>, &[u8], &mut [u64]) -> Result<(), ProtocolError>,
    ) -> Res<(), T::Error> {
        let nz = s.n * s.dout;
        let m1 = self.recv_dealer()?;
        let op = LinearHost::new(self.corr.next_op_with(&m1)?, s)?;
        if bits == 0 {
            // no truncation: the device's message is the op's alone
            let peer = if head > 0 { self.recv_exact(head)? } else { &[] };
            finish(op, peer, z)?;
            if !bias.is_empty() {
                affine::add_bias(Role::Host, z, bias)?;
            }
            return Ok(());
        }
        let m2 = self.recv_dealer()?;
        let part = trunc::device_msg_len(nz, s.width);
        let peer = self.recv_exact(head + part)?;
        let mut y0 = vec![0; nz];
        finish(op, peer.get(..head).ok_or(ProtocolError::BadBuffer)?, &mut y0)?;
        if !bias.is_empty() {
            affine::add_bias(Role::Host, &mut y0, bias)?;
        }
        let corr = self.corr.next_op_with(&m2)?;
        self.trunc_reply(corr, &y0, head..head + part, (bits, s.width), z)
    }

    /// The reply of a truncation of `y0` whose device part is `device_part`
    /// (alone, or riding in the same frame as an earlier op's message).
    fn trunc_reply(
        &mut self,
        corr: OpCorr<'_>,
        y0: &[u64],
        device_part: std::ops::Range<usize>,
        (bits, width): (u32, usize),
        z: &mut [u64],
    ) -> Res<(), T::Error> {
        let t = trunc::TruncHost::new(corr, y0.len(), bits, width)?;
        self.tx.resize(trunc::host_msg_len(y0.len()), 0);
        let part = self.rx.get(device_part).ok_or(ProtocolError::BadBuffer)?;
        let n = t.respond(y0, part, &mut self.tx, z)?;
        self.send_tx(n)
    }
}

/// Gives each op of a flight its correlation from the dealer message
/// received for it, in order.
fn from_dealer<'m, E>(msgs: &'m [Pooled], corr: &mut Correlations) -> impl FnMut() -> Result<OpCorr<'m>, HostError<E>> {
    let mut it = msgs.iter();
    move || {
        let m = it.next().ok_or(ProtocolError::WrongOp)?;
        Ok(corr.next_op_with(m)?)
    }
}

impl<T: Read + Write> Party for HostParty<T> {
    type Error = HostError<T::Error>;

    fn role(&self) -> Role {
        Role::Host
    }

    fn fp(&self) -> FixedPoint {
        self.fp
    }

    fn next_op_id(&self) -> u64 {
        self.corr.ops_used()
    }

    fn mul(&mut self, x: &[u64], y: &[u64], cols: usize, z: &mut [u64]) -> Res<(), T::Error> {
        self.mul_left(None, x, y, cols, z)
    }

    fn square(&mut self, x: &[u64], z: &mut [u64]) -> Res<(), T::Error> {
        self.square_into(x, None, z)
    }

    fn square_keep(&mut self, x: &[u64], e: &mut [u64], z: &mut [u64]) -> Res<(), T::Error> {
        self.square_into(x, Some(e), z)
    }

    fn mul_opened(&mut self, e: &[u64], first: u64, y: &[u64], cols: usize, z: &mut [u64]) -> Res<(), T::Error> {
        self.mul_left(Some(first), e, y, cols, z)
    }

    fn matmuls(&mut self, shapes: &[MatmulShape], x: &[u64], y: &mut [u64], z: &mut [u64]) -> Res<(), T::Error> {
        let msgs = self.recv_dealers(shapes.len())?;
        self.tx.resize(flight::matmuls_msg_len(shapes), 0);
        self.scratch.resize(flight::matmuls_scratch_len(shapes), 0);
        let Self {
            dev,
            corr,
            tx,
            rx,
            scratch,
            ..
        } = self;
        flight::matmuls(&mut from_dealer(&msgs, corr), shapes, (x, y, z), tx, scratch, |msg| {
            exchange(dev, rx, msg)
        })
    }

    fn linear_trunc(
        &mut self,
        s: LinearShape,
        x: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Res<(), T::Error> {
        self.linear_host(s, s.msg_len(), (bias, bits), z, |op, peer, z| op.finish(x, w, peer, z))
    }

    fn linear_mask(&mut self) -> Res<u64, T::Error> {
        let m = self.recv_dealer()?;
        let c = self.corr.next_op_with(&m)?;
        c.expect_corrections(0)?;
        Ok(c.op())
    }

    fn linear_block(
        &mut self,
        _mask: u64,
        din: usize,
        block: (usize, usize, usize),
        x: &[u64],
        e: &mut [u64],
    ) -> Res<(), T::Error> {
        let peer = self.recv_exact(8 * x.len())?;
        Ok(linear::unmask_block(din, block, x, peer, e)?)
    }

    fn linear_trunc_sent(
        &mut self,
        _mask: u64,
        _r0: usize,
        s: LinearShape,
        e: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Res<(), T::Error> {
        self.linear_host(s, 0, (bias, bits), z, |op, _, z| op.finish_masked(e, w, z))
    }

    fn linear_trunc_held(
        &mut self,
        _trunc: (u64, u32),
        s: LinearShape,
        x: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Res<(), T::Error> {
        // X - A1 = X0 modulo the layer's width: the host's own share
        self.linear_host(s, 0, (bias, bits), z, |op, _, z| op.finish_masked(x, w, z))
    }

    fn reveal_to_device(&mut self, x: &[u64], out: &mut [u64]) -> Res<(), T::Error> {
        mpcvit_core::wire::put_words(self.tx(8 * x.len()), x.iter().copied());
        self.send_tx(8 * x.len())?;
        out.fill(0);
        Ok(())
    }

    fn reveal_to_host(&mut self, x: &[u64], out: &mut [u64]) -> Res<(), T::Error> {
        let peer = self.recv_exact(8 * x.len())?;
        for ((o, &v), w) in out.iter_mut().zip(x).zip(mpcvit_core::wire::words(peer)) {
            *o = v.wrapping_add(w);
        }
        Ok(())
    }

    fn luts(&mut self, jobs: &[LutJob<'_>], x: &[u64], out: &mut [u64]) -> Res<(), T::Error> {
        let msgs = self.recv_dealers(flight::lut_chunks(jobs).count())?;
        self.tx.resize(flight::luts_msg_len(jobs), 0);
        let Self { dev, corr, tx, rx, .. } = self;
        flight::luts(&mut from_dealer(&msgs, corr), jobs, x, out, tx, |msg| {
            exchange(dev, rx, msg)
        })
    }

    fn lut_grids(&mut self, grids: &[Grid<'_>], x: &[u64], out: &mut [u64]) -> Res<(), T::Error> {
        let msgs = self.recv_dealers(flight::grid_chunks(grids, x.len()).count())?;
        self.tx.resize(flight::grids_msg_len(grids, x.len()), 0);
        let Self { dev, corr, tx, rx, .. } = self;
        flight::grids(&mut from_dealer(&msgs, corr), grids, x, out, tx, |msg| {
            exchange(dev, rx, msg)
        })
    }

    fn cmp(&mut self, shape: CmpShape, x: &[u64], out: &mut [u64]) -> Res<(), T::Error> {
        let msgs = self.recv_dealers(flight::cmp_chunks(shape).count())?;
        self.tx.resize(flight::cmp_tx_len(shape), 0);
        let Self { dev, corr, tx, rx, .. } = self;
        flight::cmps(&mut from_dealer(&msgs, corr), shape, x, out, tx, &mut |msg, on_peer| {
            on_peer(exchange(dev, rx, msg)?)
        })
    }

    fn cells(&mut self, grids: &[CellGrid<'_>], x: &[u64], out: &mut [u64]) -> Res<(), T::Error> {
        let msgs = self.recv_dealers(flight::cell_chunks(grids, x.len()).count())?;
        self.tx.resize(flight::cell_msg_len(grids, x.len()), 0);
        let Self { dev, corr, tx, rx, .. } = self;
        flight::cells(&mut from_dealer(&msgs, corr), grids, x, out, tx, |msg| {
            exchange(dev, rx, msg)
        })
    }

    fn trunc(&mut self, bits: u32, x: &[u64], z: &mut [u64]) -> Res<(), T::Error> {
        let msg = self.recv_dealer()?;
        let corr = self.corr.next_op_with(&msg)?;
        let n = self.recv()?.len();
        self.trunc_reply(corr, x, 0..n, (bits, trunc::FULL), z)
    }

    fn scale_trunc(&mut self, x: &[u64], g: &[u64], bits: u32, z: &mut [u64]) -> Res<(), T::Error> {
        let n = x.len();
        let m1 = self.recv_dealer()?;
        let m2 = self.recv_dealer()?;
        let c1 = self.corr.next_op_with(&m1)?;
        let peer = self.recv_exact(16 * n)?;
        let mut y0 = vec![0; n];
        scale::host(c1, x, g, peer.get(..8 * n).ok_or(ProtocolError::BadBuffer)?, &mut y0)?;
        let corr = self.corr.next_op_with(&m2)?;
        self.trunc_reply(corr, &y0, 8 * n..16 * n, (bits, trunc::FULL), z)
    }
}

/// Sends `msg` to the device, receives its message into `rx`.
fn exchange<'r, T: Read + Write>(dev: &mut Link<T>, rx: &'r mut [u8], msg: &[u8]) -> Res<&'r [u8], T::Error> {
    dev.send(FrameKind::Data, msg).map_err(HostError::Device)?;
    dev.recv_kind(FrameKind::Data, rx).map_err(HostError::Device)
}
