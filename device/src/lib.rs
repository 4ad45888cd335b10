//! The device party of mpcvit-rs, for microcontrollers and desktops alike:
//! `no_std`, no allocation, every buffer provided by the caller.
//!
//! [`DeviceParty`] implements [`Party`] for the device over a
//! [`Link`] on any `embedded-io` byte stream (a UART, a TCP socket), so
//! [`mpcvit_core::ops::vit::forward`] runs the whole private inference on it.
//! It sends and receives exactly what the std drivers of the conformance
//! suite send as the device (the same ops in the same order, the same
//! lookup chunking), so a desktop device and a firmware device produce the
//! same bits. [`session`] runs the set-up of `spec/session.md`.
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
use mpcvit_core::ops::vit::Tile;
use mpcvit_core::ops::{LutJob, Party, PartyKind, wide};
use mpcvit_core::protocol::linear::{LinearDevice, LinearShape};
use mpcvit_core::protocol::lut::{self, Lut};
use mpcvit_core::protocol::matmul::{Matmul, MatmulShape};
use mpcvit_core::protocol::mul::Mul;
use mpcvit_core::protocol::{scale, square, trunc};
use mpcvit_core::{Correlations, FixedPoint, ProtocolError, Role, Seed, SessionId};
use mpcvit_transport::{FrameKind, Link};

/// Most lookup jobs (after chunking at 32 MiB of dealer corrections each)
/// or matrix products in one flight. The open states live on the stack: a
/// microcontroller's models are small (one chunk per job), while a desktop
/// device may run vit_9_12_64, whose 792,588 attention scores per layer
/// need hundreds of chunks.
#[cfg(target_os = "none")]
pub const MAX_JOBS: usize = 64;
/// Most lookup jobs (after chunking) or matrix products in one flight.
#[cfg(not(target_os = "none"))]
pub const MAX_JOBS: usize = 2048;

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
    /// More jobs in one flight than [`MAX_JOBS`].
    TooManyJobs,
    /// The host refused the session; its reason (UTF-8) is the first
    /// `reason_len` bytes of the set-up buffer.
    Refused {
        /// Length of the reason.
        reason_len: usize,
    },
}

impl<E: fmt::Debug> fmt::Display for DeviceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Link(e) => write!(f, "link error: {e}"),
            Self::Buffer { which, need, have } => {
                write!(f, "device buffer {which} too small: need {need}, have {have}")
            }
            Self::TooManyJobs => write!(f, "more than {MAX_JOBS} jobs in one flight"),
            Self::Refused { .. } => f.write_str("the host refused the session"),
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
    // attention on g heads x q query rows
    let attn = [
        g * (2 * hd * n + q * hd),
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
        2 * hd * n,
        q * hd + hd * n,
        q * n + n * hd,
        q * hd + hd * hd,
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

fn need<E>(which: &'static str, need: usize, have: usize) -> Result<(), DeviceError<E>> {
    if need > have {
        Err(DeviceError::Buffer { which, need, have })
    } else {
        Ok(())
    }
}

fn bad_len<E>(expected: usize, got: usize) -> DeviceError<E> {
    DeviceError::Protocol(ProtocolError::BadLength { expected, got })
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

    fn use_tx(&mut self, n: usize) -> Res<(), T::Error> {
        need("tx", n, self.tx.len())?;
        self.hw.tx = self.hw.tx.max(n);
        Ok(())
    }

    fn use_tmp(&mut self, n: usize) -> Res<(), T::Error> {
        need("tmp", n, self.tmp.len())?;
        self.hw.tmp = self.hw.tmp.max(n);
        Ok(())
    }

    /// Sends `tx[..n]` as one data frame.
    fn send(&mut self, n: usize) -> Res<(), T::Error> {
        let msg = self.tx.get(..n).ok_or(DeviceError::Buffer {
            which: "tx",
            need: n,
            have: self.tx.len(),
        })?;
        self.link.send(FrameKind::Data, msg)?;
        Ok(())
    }

    /// Receives one data frame into `rx`; returns its length.
    fn recv(&mut self) -> Res<usize, T::Error> {
        let n = self.link.recv_kind(FrameKind::Data, self.rx)?.len();
        self.hw.rx = self.hw.rx.max(n);
        Ok(n)
    }

    /// Receives a frame of exactly `len` bytes.
    fn recv_exact(&mut self, len: usize) -> Res<&[u8], T::Error> {
        let n = self.recv()?;
        if n != len {
            return Err(bad_len(len, n));
        }
        Ok(self.rx.get(..n).unwrap_or(&[]))
    }

    /// Truncation whose device message rides after `head` bytes already in
    /// `tx`: appends `y1 + r1`, sends, finishes into `z`. `y1` lives in
    /// `tmp[..n]` when `y_in_tmp`, else it is `x`.
    fn trunc_send(&mut self, head: usize, y1: Option<&[u64]>, n: usize, bits: u32, z: &mut [u64]) -> Res<(), T::Error> {
        let len = trunc::device_msg_len(n);
        self.use_tx(head + len)?;
        let t = trunc::TruncDevice::new(self.corr.next_op()?, n, bits)?;
        let y = match y1 {
            Some(y) => y,
            None => self.tmp.get(..n).unwrap_or(&[]),
        };
        let (st, _) = t.send(y, self.tx.get_mut(head..head + len).unwrap_or(&mut []))?;
        self.send(head + len)?;
        let m = self.recv()?;
        st.finish(self.rx.get(..m).unwrap_or(&[]), z)?;
        Ok(())
    }
}

impl<T: Read + Write> Party for DeviceParty<'_, T> {
    type Error = DeviceError<T::Error>;

    fn kind(&self) -> PartyKind {
        PartyKind::Device
    }

    fn fp(&self) -> FixedPoint {
        self.fp
    }

    fn mul(&mut self, x: &[u64], y: &[u64], cols: usize, z: &mut [u64]) -> Result<(), Self::Error> {
        let op = Mul::with_rows(self.corr.next_op()?, x.len(), cols)?;
        let len = op.msg_len();
        self.use_tx(len)?;
        let (st, n) = op.open(x, y, self.tx)?;
        self.send(n)?;
        let m = self.recv()?;
        st.finish(x, y, self.rx.get(..m).unwrap_or(&[]), z)?;
        Ok(())
    }

    fn square(&mut self, x: &[u64], z: &mut [u64]) -> Result<(), Self::Error> {
        let op = square::Square::new(self.corr.next_op()?, x.len())?;
        self.use_tx(square::msg_len(x.len()))?;
        let (st, n) = op.open(x, self.tx)?;
        self.send(n)?;
        let m = self.recv()?;
        st.finish(x, self.rx.get(..m).unwrap_or(&[]), z)?;
        Ok(())
    }

    fn matmuls(&mut self, shapes: &[MatmulShape], x: &[u64], y: &[u64], z: &mut [u64]) -> Result<(), Self::Error> {
        let mut opened: heapless::Vec<_, MAX_JOBS> = heapless::Vec::new();
        let (mut xo, mut yo, mut to) = (0, 0, 0);
        for &s in shapes {
            let op = Matmul::new(self.corr.next_op()?, s)?;
            self.use_tx(to + s.msg_len())?;
            let xs = x.get(xo..xo + s.n * s.k).ok_or(ProtocolError::BadBuffer)?;
            let ys = y.get(yo..yo + s.k * s.m).ok_or(ProtocolError::BadBuffer)?;
            let (st, _) = op.open(xs, ys, self.tx.get_mut(to..to + s.msg_len()).unwrap_or(&mut []))?;
            opened.push(st).map_err(|_| DeviceError::TooManyJobs)?;
            xo += s.n * s.k;
            yo += s.k * s.m;
            to += s.msg_len();
        }
        self.send(to)?;
        self.recv_exact(to)?;
        let (mut xo, mut yo, mut zo, mut po) = (0, 0, 0, 0);
        for (&s, st) in shapes.iter().zip(opened) {
            self.use_tmp(s.scratch_len())?;
            let xs = x.get(xo..xo + s.n * s.k).ok_or(ProtocolError::BadBuffer)?;
            let ys = y.get(yo..yo + s.k * s.m).ok_or(ProtocolError::BadBuffer)?;
            let zs = z.get_mut(zo..zo + s.n * s.m).ok_or(ProtocolError::BadBuffer)?;
            st.finish(
                xs,
                ys,
                self.rx.get(po..po + s.msg_len()).unwrap_or(&[]),
                self.tmp.get_mut(..s.scratch_len()).unwrap_or(&mut []),
                zs,
            )?;
            xo += s.n * s.k;
            yo += s.k * s.m;
            zo += s.n * s.m;
            po += s.msg_len();
        }
        Ok(())
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
        let nz = s.n * s.dout;
        let op = LinearDevice::new(self.corr.next_op()?, s)?;
        self.use_tx(s.msg_len())?;
        self.use_tmp(nz)?;
        let (sent, head) = op.send(x, self.tx)?;
        sent.output(w, self.tmp.get_mut(..nz).unwrap_or(&mut []))?;
        self.trunc_send(head, None, nz, bits, z)
    }

    fn reveal_to_device(&mut self, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        let peer = self.recv_exact(8 * x.len())?;
        for ((o, &v), w) in out.iter_mut().zip(x).zip(mpcvit_core::wire::words(peer)) {
            *o = v.wrapping_add(w);
        }
        Ok(())
    }

    fn reveal_to_host(&mut self, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        let n = 8 * x.len();
        self.use_tx(n)?;
        mpcvit_core::wire::put_words(self.tx.get_mut(..n).unwrap_or(&mut []), x.iter().copied());
        self.send(n)?;
        out.fill(0);
        Ok(())
    }

    fn luts(&mut self, jobs: &[LutJob<'_>], x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        // The same chunks as every party (core::ops::lut_chunk).
        let mut split: heapless::Vec<LutJob<'_>, MAX_JOBS> = heapless::Vec::new();
        for j in jobs {
            let step = mpcvit_core::ops::lut_chunk(j.shape, j.table);
            let mut left = j.shape.n;
            while left > 0 {
                let n = left.min(step);
                split
                    .push(LutJob {
                        shape: lut::LutShape { n, ..j.shape },
                        table: j.table,
                    })
                    .map_err(|_| DeviceError::TooManyJobs)?;
                left -= n;
            }
        }
        let mut opened: heapless::Vec<_, MAX_JOBS> = heapless::Vec::new();
        let (mut xo, mut to) = (0, 0);
        for j in &split {
            let op = Lut::new(self.corr.next_op()?, j.shape, j.table)?;
            let len = j.shape.msg_len();
            self.use_tx(to + len)?;
            let xs = x.get(xo..xo + j.shape.n).ok_or(ProtocolError::BadBuffer)?;
            let (st, _) = op.open(xs, self.tx.get_mut(to..to + len).unwrap_or(&mut []))?;
            opened.push(st).map_err(|_| DeviceError::TooManyJobs)?;
            xo += j.shape.n;
            to += len;
        }
        self.send(to)?;
        self.recv_exact(to)?;
        let (mut po, mut oo) = (0, 0);
        for (j, st) in split.iter().zip(opened) {
            let len = j.shape.msg_len();
            let os = out.get_mut(oo..oo + j.out_len()).ok_or(ProtocolError::BadBuffer)?;
            st.finish(
                j.shape,
                j.table,
                self.tx.get(po..po + len).unwrap_or(&[]),
                self.rx.get(po..po + len).unwrap_or(&[]),
                os,
            )?;
            po += len;
            oo += j.out_len();
        }
        Ok(())
    }

    fn lut_grids(&mut self, grids: &[lut::Grid<'_>], x: &[u64], out: &mut [u64]) -> Result<(), Self::Error> {
        const MAX_GRIDS: usize = 8;
        let n = x.len();
        let outs: usize = grids.iter().map(|g| g.table.outputs()).sum();
        let step = mpcvit_core::ops::grids_chunk(grids, n);
        let chunk = |m: usize| -> Result<heapless::Vec<lut::Grid<'_>, MAX_GRIDS>, DeviceError<T::Error>> {
            let mut v = heapless::Vec::new();
            for g in grids {
                v.push(lut::Grid {
                    shape: lut::LutShape { n: m, ..g.shape },
                    table: g.table,
                })
                .map_err(|_| DeviceError::TooManyJobs)?;
            }
            Ok(v)
        };
        // each element's opening is `w` bytes (core::protocol::lut)
        let w = lut::grids_width(grids);
        self.use_tx(w * n)?;
        let mut opened: heapless::Vec<_, MAX_JOBS> = heapless::Vec::new();
        let mut a = 0;
        while a < n {
            let b = (a + step).min(n);
            let g = chunk(b - a)?;
            let op = Lut::with_grids(self.corr.next_op()?, &g)?;
            let xs = x.get(a..b).ok_or(ProtocolError::BadBuffer)?;
            let (st, _) = op.open(xs, self.tx.get_mut(w * a..w * b).unwrap_or(&mut []))?;
            opened.push(st).map_err(|_| DeviceError::TooManyJobs)?;
            a = b;
        }
        self.send(w * n)?;
        self.recv_exact(w * n)?;
        let mut a = 0;
        for st in opened {
            let b = (a + step).min(n);
            let g = chunk(b - a)?;
            let os = out.get_mut(outs * a..outs * b).ok_or(ProtocolError::BadBuffer)?;
            st.finish_grids(
                &g,
                self.tx.get(w * a..w * b).unwrap_or(&[]),
                self.rx.get(w * a..w * b).unwrap_or(&[]),
                os,
            )?;
            a = b;
        }
        Ok(())
    }

    fn trunc(&mut self, bits: u32, x: &[u64], z: &mut [u64]) -> Result<(), Self::Error> {
        self.trunc_send(0, Some(x), x.len(), bits, z)
    }

    fn scale_trunc(&mut self, x: &[u64], g: &[u64], bits: u32, z: &mut [u64]) -> Result<(), Self::Error> {
        let n = x.len();
        let c1 = self.corr.next_op()?;
        self.use_tx(8 * n)?;
        self.use_tmp(n)?;
        scale::device(
            c1,
            x,
            g,
            self.tx.get_mut(..8 * n).unwrap_or(&mut []),
            self.tmp.get_mut(..n).unwrap_or(&mut []),
        )?;
        self.trunc_send(8 * n, None, n, bits, z)
    }
}

/// The device's side of the session set-up (`spec/session.md`).
pub mod session {
    use super::{DeviceError, Read, Write};
    use mpcvit_core::ops::vit::Tile;
    use mpcvit_core::prg::Seed;
    use mpcvit_core::session::{self as s, Accept, DeviceHello};
    use mpcvit_core::{ProtocolError, SessionId};
    use mpcvit_transport::{FrameKind, Link};

    /// What the device offers at set-up besides its nonce.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Offer {
        /// CRC of the model its blob was made from.
        pub model_crc: u32,
        /// Fractional bits of its blob.
        pub frac_bits: u8,
        /// The cut of each layer it runs.
        pub tile: Tile,
        /// Whether the host sees the logits too.
        pub logits_to_host: bool,
    }

    /// Runs the set-up on `link` (session 0): sends the hello for `nonce`
    /// with `offer`, checks the dealer's tag, binds the link to the session.
    /// Returns the session id and the device's session key. `buf` receives
    /// the answer (64 bytes are enough; an abort reason longer than `buf` is
    /// a frame error).
    pub fn open<T: Read + Write>(
        link: &mut Link<T>,
        device_key: &Seed,
        nonce: u64,
        offer: &Offer,
        buf: &mut [u8],
    ) -> Result<(SessionId, Seed), DeviceError<T::Error>> {
        let kd = s::device_session_key(device_key, nonce);
        let mut hello = [0u8; s::DEVICE_HELLO_LEN];
        DeviceHello {
            model_crc: offer.model_crc,
            frac_bits: offer.frac_bits,
            logits_to_host: offer.logits_to_host,
            tile: offer.tile,
            nonce,
            tag: s::device_tag(&kd, offer.tile),
        }
        .encode(&mut hello);
        link.send(FrameKind::Hello, &hello)?;
        let (kind, p) = link.recv(buf)?;
        if kind == FrameKind::Abort {
            return Err(DeviceError::Refused { reason_len: p.len() });
        }
        if kind != FrameKind::Hello {
            return Err(DeviceError::Protocol(ProtocolError::WrongOp));
        }
        let acc = Accept::decode(p)?;
        let sid = SessionId(acc.session);
        if !s::tags_equal(&acc.tag, &s::dealer_tag(&kd, sid)) {
            return Err(DeviceError::Protocol(ProtocolError::Unauthenticated));
        }
        link.set_session(sid.0);
        Ok((sid, kd))
    }
}
