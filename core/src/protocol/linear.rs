//! Linear layer with host-held weights: `Z = X W` for a shared `X` (n x din)
//! and the host's plaintext `W` (din x dout).
//!
//! Protocol (DESIGN.md "the device is thin"):
//! * once per model, the host draws a mask `B` (din x dout) from its model
//!   seed, which the dealer also holds, and gives the device `F = W - B`
//!   (the provisioning blob). `F` is uniform: it says nothing about `W`.
//! * per op the device has a fresh mask `A1` (n x din, device seed) and the
//!   derived `C = A1 B` is shared: `C1` from the device seed, `C0` from the
//!   dealer.
//! * online the device sends `X1 - A1`; the host forms `E = X0 + X1 - A1`
//!   and outputs `Z0 = E W + C0`. The device outputs `Z1 = A1 F + C1`, which
//!   does not depend on the input and can be computed ahead of time.
//!
//! `Z0 + Z1 = (X - A1) W + A1 B + A1 (W - B) = X W`.
//!
//! An input made in blocks (the attention output, a head group and a few
//! query rows at a time) can be sent as each block is made, so that the
//! device never holds the whole input: a mask op drawn before the blocks
//! ([`mask_block`], [`unmask_block`]) gives `A1` (its lane [`LANE_A`],
//! word `r din + c` for element `(r, c)`), and the layer's ops, one per row
//! tile, take their rows of it ([`LinearHost::finish_masked`],
//! [`LinearDeviceSent::masked`], [`deal_masked`]); their lane 0 is unused.
//!
//! Security: the host sees `X1 - A1` with `A1` uniform and unknown to it; the
//! device receives nothing. Cost: one flight device -> host of `w n din`
//! bytes (`w` the shape's width, 8 for the whole ring: a layer whose output
//! fits a narrower ring sends the low `8 w` bits of each masked word, still
//! uniform, and its output is right modulo `2^(8 w)`, which is all the
//! exact truncation after it reads), `8 n dout` dealer -> host, no host ->
//! device traffic. The output has the product scale (2f fractional bits):
//! truncate next.

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::prg::{Domain, Prg, Seed};
use crate::ring::check_len;
use crate::wire;

/// Lane of the device mask `A1` (device-only).
pub const LANE_A: u32 = 0;
/// Derived lane of `C = A1 B`.
pub const LANE_C: u32 = 1;

/// Shape of a linear op: `n` rows, `din` inputs, `dout` outputs, and the
/// width its device message and the truncation after it go in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Rows (tokens) of the input.
    pub n: usize,
    /// Input features.
    pub din: usize,
    /// Output features.
    pub dout: usize,
    /// Bytes per word of the device's message (2..=8): the op runs modulo
    /// `2^(8 width)` (its output is right modulo that only), and so does
    /// the exact truncation that follows it ([`super::trunc`]), which lifts
    /// the result to the whole ring. 8: the whole ring.
    pub width: usize,
}

impl LinearShape {
    /// `n x din` times `din x dout` in the whole ring.
    pub const fn new(n: usize, din: usize, dout: usize) -> Self {
        Self {
            n,
            din,
            dout,
            width: super::trunc::FULL,
        }
    }

    /// The same op in `width` bytes.
    pub const fn with_width(self, width: usize) -> Self {
        Self { width, ..self }
    }

    /// Bytes of the device's message.
    pub fn msg_len(self) -> usize {
        wire::narrow_len(self.n * self.din, self.width)
    }
    /// Correction words the dealer sends the host.
    pub fn corrections(self) -> usize {
        self.n * self.dout
    }
    fn check(self) -> Result<(), ProtocolError> {
        if self.n == 0 || self.din == 0 || self.dout == 0 || !(2..=super::trunc::FULL).contains(&self.width) {
            return Err(ProtocolError::BadShape);
        }
        self.n
            .checked_mul(self.din.max(self.dout))
            .and_then(|v| v.checked_mul(8))
            .map(|_| ())
            .ok_or(ProtocolError::BadShape)
    }
}

/// The per-model weight mask `B` of layer `layer` (din x dout, row-major),
/// read sequentially from the model seed.
pub fn model_mask(model_seed: &Seed, layer: u64) -> Prg {
    let s = model_seed.derive(Domain::ModelMask, 0);
    Prg::new(&s, layer, 0)
}

/// The device's public masked weights `F = W - B` of one layer.
pub fn masked_weights(model_seed: &Seed, layer: u64, w: &[u64], f_out: &mut [u64]) -> Result<(), ProtocolError> {
    if w.len() != f_out.len() {
        return Err(ProtocolError::BadBuffer);
    }
    let mut b = model_mask(model_seed, layer);
    for (o, &x) in f_out.iter_mut().zip(w) {
        *o = x.wrapping_sub(b.next_u64());
    }
    Ok(())
}

/// Where the device's input mask `A1` of a linear op comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// The op's own lane [`LANE_A`]: the device sends `X1 - A1`.
    Own,
    /// Rows `row0..` of lane [`LANE_A`] of the earlier mask op `op`: the
    /// input went in blocks ([`mask_block`]).
    Blocks {
        /// The mask op.
        op: u64,
        /// The op's first row among the input's.
        row0: usize,
    },
    /// The device's share of the input itself: the input is the output of
    /// the earlier exact truncation `op` by `bits` in the whole ring, whose
    /// device share is `-lo1 + (1 - 2m) hi1 2^(63 - bits)`, modulo
    /// `2^(64 - bits)` the seed's `-lo1 + hi1 2^(63 - bits)` whatever the
    /// reply bit `m` ([`super::trunc`]). An op in at most `64 - bits` bits
    /// takes `A1 = X1`: nothing is sent, the host's `X - A1` is its own
    /// share.
    Held {
        /// The truncation op.
        op: u64,
        /// Bits it truncated by.
        bits: u32,
    },
}

impl Mask {
    /// Checks this mask for an op `op` of `shape`.
    fn check(self, op: u64, shape: LinearShape) -> Result<(), ProtocolError> {
        match self {
            Mask::Own => Ok(()),
            Mask::Blocks { op: m, .. } if m < op => Ok(()),
            Mask::Held { op: t, bits }
                if t < op
                    && super::trunc::supported(bits, super::trunc::FULL)
                    && 8 * shape.width as u32 + bits <= 64 =>
            {
                Ok(())
            }
            _ => Err(ProtocolError::BadParameter),
        }
    }
}

/// The device's `A1` words of a linear op, a row at a time: a lane's words
/// `a`, or for [`Mask::Held`] the truncation's device share with reply bit
/// 0 ([`super::trunc::device_share`]) from its `lo` lane `a` and its `hi`
/// lane, for the bits it truncated by.
struct MaskWords {
    a: Prg,
    hi: Option<(Prg, u32)>,
}

impl MaskWords {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        let a = self.a.next_u64();
        match &mut self.hi {
            None => a,
            Some((hi, bits)) => super::trunc::device_share(a, hi.next_u64(), 0, *bits, super::trunc::FULL),
        }
    }
}

/// Dealer: writes the host's message for one linear op. `b` is the layer's
/// mask (din x dout) and `acc` a scratch row of `dout` words.
pub fn deal(
    op: &DealerOp,
    shape: LinearShape,
    b: &[u64],
    acc: &mut [u64],
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    deal_masked(op, shape, Mask::Own, b, acc, out)
}

/// Dealer: as [`deal`], with the device's `A1` from `mask`: rows
/// `row0..row0 + shape.n` of an input whose blocks went masked by lane
/// [`LANE_A`] of an earlier op, or the device's share of an earlier
/// truncation's output ([`Mask`]).
pub fn deal_masked(
    op: &DealerOp,
    shape: LinearShape,
    mask: Mask,
    b: &[u64],
    acc: &mut [u64],
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    shape.check()?;
    mask.check(op.device.op(), shape)?;
    check_len(b, shape.din, shape.dout)?;
    let acc = acc.get_mut(..shape.dout).ok_or(ProtocolError::BadBuffer)?;
    let mut a1 = device_mask(&op.device, shape, mask, 0)?;
    let mut c1 = op.device_derived(LANE_C);
    let mut w = op.writer(out, shape.corrections())?;
    for _ in 0..shape.n {
        acc.fill(0);
        for b_row in b.chunks_exact(shape.dout) {
            let a = a1.next_u64();
            for (o, &y) in acc.iter_mut().zip(b_row) {
                *o = o.wrapping_add(a.wrapping_mul(y));
            }
        }
        for &c in acc.iter() {
            w.put(c, c1.next_u64());
        }
    }
    w.finish()
}

/// The device's `A1` of the op `corr` from its row `row` ([`Mask`]).
fn device_mask(corr: &OpCorr<'_>, shape: LinearShape, mask: Mask, row: usize) -> Result<MaskWords, ProtocolError> {
    match mask {
        Mask::Own => Ok(MaskWords {
            a: corr.random_at(LANE_A, (row * shape.din) as u64),
            hi: None,
        }),
        Mask::Blocks { op, row0 } => {
            let mut a = corr.random_of_earlier(op, LANE_A)?;
            a.seek(((row0 + row) * shape.din) as u64);
            Ok(MaskWords { a, hi: None })
        }
        Mask::Held { op, bits } => {
            // the device's share of a derived lane is its seed's lane
            let (mut lo, mut hi) = (
                corr.random_of_earlier(op, super::trunc::LANE_LO)?,
                corr.random_of_earlier(op, super::trunc::LANE_HI)?,
            );
            lo.seek((row * shape.din) as u64);
            hi.seek((row * shape.din) as u64);
            Ok(MaskWords {
                a: lo,
                hi: Some((hi, bits)),
            })
        }
    }
}

/// Device: writes `x1 - A1` for one block of an input of `din` columns
/// masked by the op `mask` (its correlations, drawn before the block was
/// made): rows `r0..`, columns `c0..c0 + cols`, `x1` the block row-major.
/// Returns the length. Each element's mask word is used once as long as
/// the blocks of one mask op do not overlap.
pub fn mask_block(
    mask: &OpCorr<'_>,
    din: usize,
    (r0, c0, cols): (usize, usize, usize),
    x1: &[u64],
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    check_block(din, c0, cols, x1.len())?;
    let out = wire::out_prefix(out, wire::words_len(x1.len()))?;
    for (i, (row, o)) in x1.chunks_exact(cols).zip(out.chunks_exact_mut(8 * cols)).enumerate() {
        let mut a1 = mask.random_at(LANE_A, ((r0 + i) * din + c0) as u64);
        wire::put_words(o, row.iter().map(|&x| x.wrapping_sub(a1.next_u64())));
    }
    Ok(wire::words_len(x1.len()))
}

/// Host: the device's block message `msg` (as [`mask_block`]) added to the
/// host's share `x0` of the block, written into `e` (the input's `n x din`
/// masked value `X - A1`) at rows `r0..`, columns `c0..c0 + cols`.
pub fn unmask_block(
    din: usize,
    (r0, c0, cols): (usize, usize, usize),
    x0: &[u64],
    msg: &[u8],
    e: &mut [u64],
) -> Result<(), ProtocolError> {
    check_block(din, c0, cols, x0.len())?;
    wire::expect_len(msg, wire::words_len(x0.len()))?;
    let rows = x0.len() / cols;
    let end = (r0 + rows).checked_mul(din).ok_or(ProtocolError::BadBuffer)?;
    let e = e.get_mut(r0 * din..end).ok_or(ProtocolError::BadBuffer)?;
    for ((e_row, x_row), m_row) in e
        .chunks_exact_mut(din)
        .zip(x0.chunks_exact(cols))
        .zip(msg.chunks_exact(8 * cols))
    {
        for ((o, &x), m) in e_row.iter_mut().skip(c0).zip(x_row).zip(wire::words(m_row)) {
            *o = x.wrapping_add(m);
        }
    }
    Ok(())
}

fn check_block(din: usize, c0: usize, cols: usize, len: usize) -> Result<(), ProtocolError> {
    if cols == 0 || c0.checked_add(cols).is_none_or(|c1| c1 > din) || !len.is_multiple_of(cols) {
        return Err(ProtocolError::BadShape);
    }
    Ok(())
}

/// Host side of one linear op.
#[derive(Debug)]
pub struct LinearHost<'d> {
    corr: OpCorr<'d>,
    shape: LinearShape,
}

impl<'d> LinearHost<'d> {
    /// Checks the shape and the dealer's corrections.
    pub fn new(corr: OpCorr<'d>, shape: LinearShape) -> Result<Self, ProtocolError> {
        shape.check()?;
        if corr.role() != Role::Host {
            return Err(ProtocolError::BadParameter);
        }
        corr.expect_corrections(shape.corrections())?;
        Ok(Self { corr, shape })
    }

    /// Consumes the device's message: `z0 = (x0 + msg) W + C0`.
    pub fn finish(self, x0: &[u64], w: &[u64], device_msg: &[u8], z0: &mut [u64]) -> Result<(), ProtocolError> {
        let s = self.shape;
        check_len(x0, s.n, s.din)?;
        wire::expect_len(device_msg, s.msg_len())?;
        let rows = x0
            .chunks_exact(s.din)
            .zip(device_msg.chunks_exact(s.width * s.din))
            .map(|(x, m)| x.iter().zip(wire::narrow(m, s.width)).map(|(&x, m)| x.wrapping_add(m)));
        self.finish_with(w, z0, rows)
    }

    /// `z0 = E W + C0` for an input whose masked value `E = X - A1` the
    /// host already holds (its blocks came with [`unmask_block`]).
    pub fn finish_masked(self, e: &[u64], w: &[u64], z0: &mut [u64]) -> Result<(), ProtocolError> {
        let din = self.shape.din;
        check_len(e, self.shape.n, din)?;
        self.finish_with(w, z0, e.chunks_exact(din).map(|r| r.iter().copied()))
    }

    /// `z0 = E W + C0`, the rows of `E` from `rows`.
    fn finish_with<R: Iterator<Item = u64>>(
        mut self,
        w: &[u64],
        z0: &mut [u64],
        rows: impl Iterator<Item = R>,
    ) -> Result<(), ProtocolError> {
        let s = self.shape;
        check_len(w, s.din, s.dout)?;
        check_len(z0, s.n, s.dout)?;
        let mut c0 = self.corr.derived(LANE_C, s.corrections())?;
        for (z_row, e_row) in z0.chunks_exact_mut(s.dout).zip(rows) {
            for z in z_row.iter_mut() {
                *z = c0.next_u64();
            }
            for (ev, w_row) in e_row.zip(w.chunks_exact(s.dout)) {
                for (z, &wv) in z_row.iter_mut().zip(w_row) {
                    *z = z.wrapping_add(ev.wrapping_mul(wv));
                }
            }
        }
        Ok(())
    }
}

/// Device side of one linear op, before it has sent.
#[derive(Debug)]
pub struct LinearDevice {
    corr: OpCorr<'static>,
    shape: LinearShape,
}

/// Device side after sending: only the (input-independent) output is left.
#[derive(Debug)]
pub struct LinearDeviceSent {
    corr: OpCorr<'static>,
    shape: LinearShape,
    /// Where `A1` comes from.
    mask: Mask,
}

impl LinearDevice {
    /// A new op of this shape.
    pub fn new(corr: OpCorr<'static>, shape: LinearShape) -> Result<Self, ProtocolError> {
        shape.check()?;
        if corr.role() != Role::Device {
            return Err(ProtocolError::BadParameter);
        }
        Ok(Self { corr, shape })
    }

    /// Writes `x1 - A1` into `out`; returns the next state and the length.
    pub fn send(self, x1: &[u64], out: &mut [u8]) -> Result<(LinearDeviceSent, usize), ProtocolError> {
        let s = self.shape;
        check_len(x1, s.n, s.din)?;
        let out = wire::out_prefix(out, s.msg_len())?;
        let mut a1 = self.corr.random(LANE_A);
        wire::put_narrow(out, s.width, x1.iter().map(|&x| x.wrapping_sub(a1.next_u64())));
        Ok((
            LinearDeviceSent {
                corr: self.corr,
                shape: s,
                mask: Mask::Own,
            },
            s.msg_len(),
        ))
    }
}

impl LinearDeviceSent {
    /// The op `corr` on rows `row0..row0 + shape.n` of an input whose
    /// blocks already went masked by the earlier op `mask` ([`mask_block`]):
    /// nothing is left to send.
    pub fn masked(corr: OpCorr<'static>, shape: LinearShape, mask: u64, row0: usize) -> Result<Self, ProtocolError> {
        Self::with_mask(corr, shape, Mask::Blocks { op: mask, row0 })
    }

    /// The op `corr` whose input is the device's share of the earlier
    /// truncation `op` by `bits` ([`Mask::Held`]): nothing is sent.
    pub fn held(corr: OpCorr<'static>, shape: LinearShape, op: u64, bits: u32) -> Result<Self, ProtocolError> {
        Self::with_mask(corr, shape, Mask::Held { op, bits })
    }

    fn with_mask(corr: OpCorr<'static>, shape: LinearShape, mask: Mask) -> Result<Self, ProtocolError> {
        shape.check()?;
        if corr.role() != Role::Device {
            return Err(ProtocolError::BadParameter);
        }
        mask.check(corr.op(), shape)?;
        Ok(Self { corr, shape, mask })
    }

    /// The device's output share `z1 = A1 F + C1`, for the rows
    /// `row0..row0 + z1.len() / dout` (so a caller can produce it in tiles).
    pub fn output_rows(&self, f: &[u64], row0: usize, z1: &mut [u64]) -> Result<(), ProtocolError> {
        let s = self.shape;
        check_len(f, s.din, s.dout)?;
        if !z1.len().is_multiple_of(s.dout) || row0 + z1.len() / s.dout > s.n {
            return Err(ProtocolError::BadBuffer);
        }
        let mut a1 = device_mask(&self.corr, s, self.mask, row0)?;
        // The device's share of a derived lane is its own seeded stream.
        let mut c1 = self.corr.random_at(LANE_C, (row0 * s.dout) as u64);
        for z_row in z1.chunks_exact_mut(s.dout) {
            for z in z_row.iter_mut() {
                *z = c1.next_u64();
            }
            for f_row in f.chunks_exact(s.dout) {
                let a = a1.next_u64();
                for (z, &fv) in z_row.iter_mut().zip(f_row) {
                    *z = z.wrapping_add(a.wrapping_mul(fv));
                }
            }
        }
        Ok(())
    }

    /// The whole output share; consumes the op.
    pub fn output(self, f: &[u64], z1: &mut [u64]) -> Result<(), ProtocolError> {
        check_len(z1, self.shape.n, self.shape.dout)?;
        self.output_rows(f, 0, z1)
    }
}
