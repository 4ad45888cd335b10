//! The device party of mpcvit-rs, for microcontrollers and desktops alike:
//! `no_std`, no allocation, every buffer provided by the caller.
//!
//! [`DeviceParty`] implements [`Party`] for the device over a
//! [`Link`] on any `embedded-io` byte stream (a UART, a TCP socket), so
//! [`mpcvit_core::ops::vit::forward`] runs the whole private inference on it.
//! It is the only device there is: the firmware, `mpcvit device`, `eval`,
//! `bench` and the conformance tests all run it, and its flights (several
//! ops opened together, one message each way) are
//! `mpcvit_core::ops::flight`'s, which the host runs too.
//! [`session`] runs the set-up of `spec/session.md` and the whole session
//! flow ([`session::infer`]: set-up, forward pass, argmax).
//!
//! Buffers: `tx` and `rx` hold one protocol message each way, `tmp` the
//! per-op words (a linear layer's output share, a matrix product's scratch).
//! [`DeviceParty::high_water`] reports how much of each an inference used,
//! so a firmware can size its static buffers from a desktop run.

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::fmt;
use embedded_io::{Read, Write};
use mpcvit_core::model::Arch;
use mpcvit_core::ops::vit::{self, Tile};
use mpcvit_core::ops::{LutJob, Party, flight, wide};
use mpcvit_core::protocol::cell::CellGrid;
use mpcvit_core::protocol::cmp::CmpShape;
use mpcvit_core::protocol::linear::{self, LinearDevice, LinearDeviceSent, LinearShape};
use mpcvit_core::protocol::lut;
use mpcvit_core::protocol::matmul::MatmulShape;
use mpcvit_core::protocol::mul::Mul;
use mpcvit_core::protocol::{scale, square, trunc};
use mpcvit_core::{Correlations, FixedPoint, ProtocolError, Role, Seed, SessionId};
use mpcvit_transport::{FrameKind, Link};

/// Why a device step failed.
#[derive(Debug)]
pub enum DeviceError<E> {
    /// A protocol step refused its input.
    Protocol(ProtocolError),
    /// The link failed (closed, timed out, a bad frame).
    Link(mpcvit_transport::Error<E>),
    /// A caller-provided buffer is too small.
    Buffer {
        /// Which buffer: `tx`, `rx` or `tmp`.
        which: &'static str,
        /// Units needed (bytes for `tx`/`rx`, words for `tmp`).
        need: usize,
        /// Units available.
        have: usize,
    },
    /// The host refused the session; its reason (UTF-8) is the first
    /// `reason_len` bytes of the set-up buffer.
    Refused {
        /// Length of the reason.
        reason_len: usize,
    },
    /// The random source failed (no nonce could be drawn).
    Randomness,
}

impl<E: fmt::Debug> fmt::Display for DeviceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Link(e) => write!(f, "link error: {e}"),
            Self::Buffer { which, need, have } => {
                write!(f, "device buffer {which} too small: need {need}, have {have}")
            }
            Self::Refused { .. } => f.write_str("the host refused the session"),
            Self::Randomness => f.write_str("the random source failed"),
        }
    }
}

impl<E> From<ProtocolError> for DeviceError<E> {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl<E> From<mpcvit_transport::Error<E>> for DeviceError<E> {
    fn from(e: mpcvit_transport::Error<E>) -> Self {
        Self::Link(e)
    }
}

/// Peak use of the caller's buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HighWater {
    /// Bytes of `tx`.
    pub tx: usize,
    /// Bytes of `rx`.
    pub rx: usize,
    /// Words of `tmp`.
    pub tmp: usize,
}

/// Buffers a device needs to run `arch` cut by `tile`: an upper bound on
/// [`DeviceParty::high_water`] (bytes of `tx` and `rx`, words of `tmp`), so
/// a firmware can size its static buffers at build time. The largest
/// message of each step of `vit::forward`, in words: a linear layer sends
/// its masked input and the truncation of its output; a flight of matrix
/// products both operands; a lookup, product or truncation one or two words
/// per element (the reciprocal's windows at most [`wide::MAX_WINDOWS`] per
/// row). The host's answers are never longer than the device's message,
/// except the logits.
pub fn buffers(arch: &Arch, tile: Tile) -> HighWater {
    let (n, d, m, hd, pl) = (arch.tokens(), arch.dim, arch.mlp, arch.head_dim(), arch.patch_len());
    let (r, g, q) = (tile.rows_of(arch), tile.heads_of(arch), tile.queries_of(arch));
    let w = wide::MAX_WINDOWS;
    // per-token stages on r rows: linear layers, LayerNorm (squares, the
    // rsqrt windows, the row product, the scale), GeLU and ReLU lookups
    let rows = [
        r * (pl + d),
        r * (d + 3 * d),
        r * (d + d),
        r * (d + m),
        r * (m + d),
        2 * r * d + r,
        2 * r * w,
    ];
    // attention on g heads x q query rows: a head's step-3 operands are
    // ScaleAttn's K^T and V of a key chunk or a normalized head's Q rows
    // and K^T
    let kc = vit::ktv_chunk(n, q);
    let attn = [
        g * (2 * hd * kc).max(q * hd + hd * n),
        g * (q * n + n * hd),
        g * (q * hd + hd * hd),
        2 * g * q * n + g * q,
        2 * g * q * w,
    ];
    let last = [d + arch.classes, 2 * d + 1, 2 * w];
    let words = rows.iter().chain(&attn).chain(&last).copied().max().unwrap_or(0);
    let tmp = [
        3 * r * d,
        r * m,
        r * d,
        // a product's E and one row of B at a time
        hd * kc + hd,
        q * hd + n,
        q * n + hd,
        q * hd + hd,
        arch.classes,
    ];
    HighWater {
        tx: 8 * words,
        rx: 8 * words.max(arch.classes),
        tmp: tmp.iter().copied().max().unwrap_or(0),
    }
}

/// The device party.
pub struct DeviceParty<'b, T: Read + Write> {
    link: Link<T>,
    corr: Correlations,
    fp: FixedPoint,
    tx: &'b mut [u8],
    rx: &'b mut [u8],
    tmp: &'b mut [u64],
    hw: HighWater,
}

type Res<T, E> = Result<T, DeviceError<E>>;

/// The first `n` units of a caller buffer, or which buffer is too small.
fn take<'s, U, E>(buf: &'s mut [U], which: &'static str, n: usize) -> Res<&'s mut [U], E> {
    let have = buf.len();
    buf.get_mut(..n).ok_or(DeviceError::Buffer { which, need: n, have })
}

impl<'b, T: Read + Write> DeviceParty<'b, T> {
    /// The device of session `sid` on `link` (already bound to the session),
    /// with correlations from `session_key` (the device's key for this
    /// session, `core::session::device_session_key`).
    pub fn new(
        fp: FixedPoint,
        link: Link<T>,
        session_key: &Seed,
        sid: SessionId,
        tx: &'b mut [u8],
        rx: &'b mut [u8],
        tmp: &'b mut [u64],
    ) -> Self {
        Self {
            link,
            corr: Correlations::new(Role::Device, session_key, sid),
            fp,
            tx,
            rx,
            tmp,
            hw: HighWater::default(),
        }
    }

    /// The link (for its meter).
    pub fn link(&self) -> &Link<T> {
        &self.link
    }

    /// Gives the link back.
    pub fn into_link(self) -> Link<T> {
        self.link
    }

    /// Peak use of the buffers so far.
    pub fn high_water(&self) -> HighWater {
        self.hw
    }

    /// Reserves `n` bytes of `tx` (checked, counted in the high-water mark).
    fn use_tx(&mut self, n: usize) -> Res<(), T::Error> {
        take::<_, T::Error>(self.tx, "tx", n)?;
        self.hw.tx = self.hw.tx.max(n);
        Ok(())
    }

    /// Reserves `n` words of `tmp`.
    fn use_tmp(&mut self, n: usize) -> Res<(), T::Error> {
        take::<_, T::Error>(self.tmp, "tmp", n)?;
        self.hw.tmp = self.hw.tmp.max(n);
        Ok(())
    }

    /// Sends `tx[..n]` as one data frame and receives the host's answer
    /// into `rx`; returns its length.
    fn round(&mut self, n: usize) -> Res<usize, T::Error> {
        let Self { link, tx, rx, hw, .. } = self;
        exchange(link, rx, hw, take(tx, "tx", n)?).map(<[u8]>::len)
    }

    /// A row product, its left operand opened by the square op `left` if
    /// any ([`Party::mul_opened`]).
    fn mul_left(&mut self, left: Option<u64>, x: &[u64], y: &[u64], cols: usize, z: &mut [u64]) -> Res<(), T::Error> {
        let op = Mul::with_left(self.corr.next_op()?, x.len(), cols, left)?;
        self.use_tx(op.msg_len())?;
        let (st, n) = op.open(x, y, self.tx)?;
        let m = self.round(n)?;
        st.finish(x, y, self.rx.get(..m).ok_or(ProtocolError::BadBuffer)?, z)?;
        Ok(())
    }

    /// A square, its opening written into `keep` if given
    /// ([`Party::square_keep`]).
    fn square_into(&mut self, x: &[u64], keep: Option<&mut [u64]>, z: &mut [u64]) -> Res<(), T::Error> {
        let op = square::Square::new(self.corr.next_op()?, x.len())?;
        self.use_tx(square::msg_len(x.len()))?;
        let (st, n) = op.open(x, self.tx)?;
        let m = self.round(n)?;
        st.finish(x, self.rx.get(..m).ok_or(ProtocolError::BadBuffer)?, z, keep)?;
        Ok(())
    }

    /// A linear op's output share truncated by `bits` (`bits = 0` with no
    /// message: the share itself); the op's message (the first `head`
    /// bytes of `tx`, or none) rides with the truncation's.
    fn linear_out(
        &mut self,
        sent: LinearDeviceSent,
        s: LinearShape,
        w: &[u64],
        head: usize,
        bits: u32,
        z: &mut [u64],
    ) -> Res<(), T::Error> {
        if bits == 0 && head == 0 {
            // no truncation and nothing sent: the output is the device's share
            return Ok(sent.output(w, z)?);
        }
        let nz = s.n * s.dout;
        self.use_tmp(nz)?;
        sent.output(w, take(self.tmp, "tmp", nz)?)?;
        self.trunc_send(head, None, (nz, s.width), bits, z)
    }

    /// Truncation whose device message rides after `head` bytes already in
    /// `tx`: appends `y1 + r1` of `n` elements in `width` bytes each for
    /// `y1` (`tmp[..n]` when `y1` is `None`), sends, finishes into `z`.
    fn trunc_send(
        &mut self,
        head: usize,
        y1: Option<&[u64]>,
        (n, width): (usize, usize),
        bits: u32,
        z: &mut [u64],
    ) -> Res<(), T::Error> {
        let len = trunc::device_msg_len(n, width);
        self.use_tx(head + len)?;
        let t = trunc::TruncDevice::new(self.corr.next_op()?, n, bits, width)?;
        let y = match y1 {
            Some(y) => y,
            None => take(self.tmp, "tmp", n)?,
        };
        let out = self.tx.get_mut(head..head + len).ok_or(ProtocolError::BadBuffer)?;
        let (st, _) = t.send(y, out)?;
        let m = self.round(head + len)?;
        st.finish(self.rx.get(..m).ok_or(ProtocolError::BadBuffer)?, z)?;
        Ok(())
    }
}

/// Sends `msg` as one data frame, receives the answer into `rx`.
fn exchange<'r, T: Read + Write>(
    link: &mut Link<T>,
    rx: &'r mut [u8],
    hw: &mut HighWater,
    msg: &[u8],
) -> Res<&'r [u8], T::Error> {
    link.send(FrameKind::Data, msg)?;
    let peer = link.recv_kind(FrameKind::Data, rx)?;
    hw.rx = hw.rx.max(peer.len());
    Ok(peer)
}

impl<T: Read + Write> Party for DeviceParty<'_, T> {
    type Error = DeviceError<T::Error>;

    fn role(&self) -> Role {
        Role::Device
    }

    fn fp(&self) -> FixedPoint {
        self.fp
    }

    fn next_op_id(&self) -> u64 {
        self.corr.ops_used()
    }

    fn earlier_op(&self, op: u64) -> Result<mpcvit_core::OpCorr<'static>, ProtocolError> {
        self.corr.earlier(op)
    }

    fn mul(&mut self, x: &[u64], y: &[u64], cols: usize, z: &mut [u64]) -> Result<(), Self::Error> {
        self.mul_left(None, x, y, cols, z)
    }

    fn square(&mut self, x: &[u64], z: &mut [u64]) -> Result<(), Self::Error> {
        self.square_into(x, None, z)
    }

    fn square_keep(&mut self, x: &[u64], e: &mut [u64], z: &mut [u64]) -> Result<(), Self::Error> {
        self.square_into(x, Some(e), z)
    }

    fn mul_opened(&mut self, e: &[u64], first: u64, y: &[u64], cols: usize, z: &mut [u64]) -> Result<(), Self::Error> {
        self.mul_left(Some(first), e, y, cols, z)
    }

    fn matmuls(&mut self, shapes: &[MatmulShape], x: &[u64], y: &mut [u64], z: &mut [u64]) -> Result<(), Self::Error> {
        self.use_tx(flight::matmuls_msg_len(shapes))?;
        self.use_tmp(flight::matmuls_min_scratch_len(shapes))?;
        let Self {
            link,
            corr,
            tx,
            rx,
            tmp,
            hw,
            ..
        } = self;
        flight::matmuls(&mut || Ok(corr.next_op()?), shapes, (x, y, z), tx, tmp, |msg| {
            exchange(link, rx, hw, msg)
        })
    }

    fn linear_trunc(
        &mut self,
        s: LinearShape,
        x: &[u64],
        w: &[u64],
        _bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Result<(), Self::Error> {
        let op = LinearDevice::new(self.corr.next_op()?, s)?;
        self.use_tx(s.msg_len())?;
        let (sent, head) = op.send(x, self.tx)?;
        if bits == 0 {
            // no truncation: one flight, the output is the device's share
            self.link.send(FrameKind::Data, take(self.tx, "tx", head)?)?;
            return Ok(sent.output(w, z)?);
        }
        self.linear_out(sent, s, w, head, bits, z)
    }

    fn linear_mask(&mut self) -> Result<u64, Self::Error> {
        Ok(self.corr.next_op()?.op())
    }

    fn linear_block(
        &mut self,
        mask: u64,
        din: usize,
        block: (usize, usize, usize),
        x: &[u64],
        _e: &mut [u64],
    ) -> Result<(), Self::Error> {
        let m = self.corr.earlier(mask)?;
        let n = 8 * x.len();
        self.use_tx(n)?;
        let tx = take(self.tx, "tx", n)?;
        linear::mask_block(&m, din, block, x, tx)?;
        self.link.send(FrameKind::Data, tx)?;
        Ok(())
    }

    fn linear_trunc_sent(
        &mut self,
        mask: u64,
        r0: usize,
        s: LinearShape,
        _e: &[u64],
        w: &[u64],
        _bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Result<(), Self::Error> {
        let sent = LinearDeviceSent::masked(self.corr.next_op()?, s, mask, r0)?;
        self.linear_out(sent, s, w, 0, bits, z)
    }

    fn linear_trunc_held(
        &mut self,
        (op, tbits): (u64, u32),
        s: LinearShape,
        _x: &[u64],
        w: &[u64],
        _bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Result<(), Self::Error> {
        let sent = LinearDeviceSent::held(self.corr.next_op()?, s, op, tbits)?;
        self.linear_out(sent, s, w, 0, bits, z)
    }

    fn reveal_to_device(&mut self, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        let peer = self.link.recv_kind(FrameKind::Data, self.rx)?;
        self.hw.rx = self.hw.rx.max(peer.len());
        mpcvit_core::wire::expect_len(peer, 8 * x.len())?;
        for ((o, &v), w) in out.iter_mut().zip(x).zip(mpcvit_core::wire::words(peer)) {
            *o = v.wrapping_add(w);
        }
        Ok(())
    }

    fn reveal_to_host(&mut self, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        let n = 8 * x.len();
        self.use_tx(n)?;
        mpcvit_core::wire::put_words(take(self.tx, "tx", n)?, x.iter().copied());
        self.link.send(FrameKind::Data, take(self.tx, "tx", n)?)?;
        out.fill(0);
        Ok(())
    }

    fn luts(&mut self, jobs: &[LutJob<'_>], x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        self.use_tx(flight::luts_msg_len(jobs))?;
        let Self {
            link, corr, tx, rx, hw, ..
        } = self;
        flight::luts(&mut || Ok(corr.next_op()?), jobs, x, out, tx, |msg| {
            exchange(link, rx, hw, msg)
        })
    }

    fn lut_grids(&mut self, grids: &[lut::Grid<'_>], x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        self.use_tx(flight::grids_msg_len(grids, x.len()))?;
        let Self {
            link, corr, tx, rx, hw, ..
        } = self;
        flight::grids(&mut || Ok(corr.next_op()?), grids, x, out, tx, |msg| {
            exchange(link, rx, hw, msg)
        })
    }

    fn cells(&mut self, grids: &[CellGrid<'_>], x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        self.use_tx(flight::cell_msg_len(grids, x.len()))?;
        let Self {
            link, corr, tx, rx, hw, ..
        } = self;
        flight::cells(&mut || Ok(corr.next_op()?), grids, x, out, tx, |msg| {
            exchange(link, rx, hw, msg)
        })
    }

    fn cmp(&mut self, shape: CmpShape, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        self.use_tx(flight::cmp_tx_len(shape))?;
        let Self {
            link, corr, tx, rx, hw, ..
        } = self;
        flight::cmps(&mut || Ok(corr.next_op()?), shape, x, out, tx, &mut |msg, on_peer| {
            on_peer(exchange(link, rx, hw, msg)?)
        })
    }

    fn trunc(&mut self, bits: u32, x: &[u64], z: &mut [u64]) -> Result<(), Self::Error> {
        self.trunc_send(0, Some(x), (x.len(), trunc::FULL), bits, z)
    }

    /// The truncation's message goes out first, the comparison's first
    /// message right after it; the truncation's answer is read before the
    /// comparison's: one round for both.
    fn trunc_cmp(
        &mut self,
        bits: u32,
        t: &[u64],
        tz: &mut [u64],
        shape: CmpShape,
        x: &[u64],
        out: &mut [u64],
    ) -> Result<(), Self::Error> {
        let len = trunc::device_msg_len(t.len(), trunc::FULL);
        self.use_tx(len)?;
        let op = trunc::TruncDevice::new(self.corr.next_op()?, t.len(), bits, trunc::FULL)?;
        let (sent, _) = op.send(t, take(self.tx, "tx", len)?)?;
        self.link.send(FrameKind::Data, take(self.tx, "tx", len)?)?;
        self.use_tx(flight::cmp_tx_len(shape))?;
        let Self {
            link, corr, tx, rx, hw, ..
        } = self;
        let mut pending = Some((sent, tz));
        flight::cmps(&mut || Ok(corr.next_op()?), shape, x, out, tx, &mut |msg, on_peer| {
            link.send(FrameKind::Data, msg)?;
            if let Some((sent, tz)) = pending.take() {
                let answer = link.recv_kind(FrameKind::Data, rx)?;
                hw.rx = hw.rx.max(answer.len());
                sent.finish(answer, tz)?;
            }
            let peer = link.recv_kind(FrameKind::Data, rx)?;
            hw.rx = hw.rx.max(peer.len());
            on_peer(peer)
        })
    }

    fn scale_trunc(&mut self, x: &[u64], g: &[u64], bits: u32, z: &mut [u64]) -> Result<(), Self::Error> {
        let n = x.len();
        let c1 = self.corr.next_op()?;
        self.use_tx(8 * n)?;
        self.use_tmp(n)?;
        scale::device(c1, x, g, take(self.tx, "tx", 8 * n)?, take(self.tmp, "tmp", n)?)?;
        self.trunc_send(8 * n, None, (n, trunc::FULL), bits, z)
    }
}

pub mod session;
/// The RNG traits the set-up draws its nonce through (`rand_core`), for
/// boards that wrap their TRNG.
pub use rand_core;
