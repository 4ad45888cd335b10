//! Truncation of a shared value by `f` bits (after a fixed-point product).
//!
//! # Exact truncation (one round trip, no failure)
//! In a width of `W = 8 w` bits (`w` in 2..=8 bytes), for `z` in
//! `[-2^(W-2), 2^(W-2))` of which only `z mod 2^W` is read: the shares may
//! be wrong above bit `W` (a product whose openings were sent in `w` bytes,
//! [`super::linear`]). Correlation: random `r` (both shares seeded),
//! derived `lo = (r mod 2^(W-1)) >> f` and `hi = bit W-1 of r` (as ring
//! elements).
//! 1. The device sends `z1 + r1 mod 2^W` (`w` bytes). The host adds
//!    `z0 + 2^(W-2) + r0`: it now knows `c = z' + r mod 2^W` with
//!    `z' = z + 2^(W-2)` in `[0, 2^(W-1))`; `c` is uniform.
//! 2. The host replies with the bit `m = bit W-1 of c` (uniform: `r` is).
//! 3. With `c' = c mod 2^(W-1)` and the carry `b = [z' + (r mod 2^(W-1))
//!    >= 2^(W-1)] = m xor hi = m + hi - 2 m hi` (linear in the shares of
//!    `hi`, since both know `m`): `z' = c' - (r mod 2^(W-1)) + 2^(W-1) b`,
//!    hence `z >> f = (c' >> f) - lo + 2^(W-1-f) b - 2^(W-2-f) - borrow`,
//!    `borrow` in `{0, 1}` (the low bits of `c'` and `r`). Dropping the
//!    borrow gives a result in `{floor(z/2^f), floor(z/2^f) + 1}`, exact in
//!    the whole ring `Z_2^64` whatever `W`: the truncation lifts a value
//!    known modulo `2^W` to 64 bits. The low `f` bits of `c` and `r` are
//!    those of `z + r` and `r` in every width, so the result does not
//!    depend on `W`.
//!
//! Cost per element: `w` bytes device -> host, 1 bit host -> device (2
//! flights: one round trip), 16 bytes dealer -> host. The device's message
//! is `z1 + r1`: when `z1` is input-independent (after [`super::linear`])
//! it can be sent together with that op's message.
//!
//! # Local truncation (SecureML; no communication)
//! Each party shifts its share arithmetically. For `|z| < 2^l` the result is
//! in `{floor(z/2^f) - 1, floor(z/2^f)}` except with probability `< 2^(l-64)`
//! per element (when the uniform share wraps), where it is wrong by about
//! `2^(64-f)`.

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::wire;

/// Largest truncation supported (`z` in `[-2^62, 2^62)`, the full width).
pub const MAX_BITS: u32 = 62;
/// The full width: 8 bytes, the whole ring.
pub const FULL: usize = 8;

/// Random lane `r`.
pub const LANE_R: u32 = 0;
/// Derived lane `(r mod 2^(W-1)) >> f`.
pub const LANE_LO: u32 = 1;
/// Derived lane `bit W-1 of r`.
pub const LANE_HI: u32 = 2;

/// Whether a truncation by `bits` in `width` bytes is supported: `width`
/// in 2..=8 and `bits` in `1..=8 width - 2`.
pub fn supported(bits: u32, width: usize) -> bool {
    (2..=FULL).contains(&width) && bits >= 1 && bits <= 8 * width as u32 - 2
}

/// The constants of a width of `width` bytes (checked by [`supported`]):
/// `(mask 2^W - 1, low W-1 bits, offset 2^(W-2), W)`.
#[inline]
fn consts(width: usize) -> (u64, u64, u64, u32) {
    let w = 8 * width.clamp(2, FULL) as u32;
    (u64::MAX >> (64 - w), u64::MAX >> (65 - w), 1 << (w - 2), w)
}

/// Bytes the device sends for `n` elements in `width` bytes each.
pub fn device_msg_len(n: usize, width: usize) -> usize {
    wire::narrow_len(n, width)
}

/// Bytes the host sends back for `n` elements.
pub fn host_msg_len(n: usize) -> usize {
    wire::bits_len(n)
}

/// The values a comparison or cell lookup may read for an input `x` whose
/// opening drops `pre` low bits (each party opens its masked share shifted
/// down by `pre`): `floor(x / 2^pre) + e`, `e` in `{-1, 0, 1}` (the carries
/// of the shares' low bits); `x` alone for `pre = 0`.
pub fn opened_reads(x: u64, pre: u32) -> impl Iterator<Item = u64> {
    let errs: &'static [i64] = if pre == 0 { &[0] } else { &[-1, 0, 1] };
    let base = (x as i64) >> pre.min(63);
    errs.iter().map(move |&e| base.wrapping_add(e) as u64)
}

/// Local (SecureML) truncation of one share: no communication.
#[inline]
pub fn local(share: u64, bits: u32) -> u64 {
    ((share as i64) >> bits.min(63)) as u64
}

/// Dealer: the host's message for an exact truncation of `n` elements by
/// `bits` in `width` bytes.
pub fn deal(op: &DealerOp, n: usize, bits: u32, width: usize, out: &mut [u8]) -> Result<usize, ProtocolError> {
    if n == 0 || !supported(bits, width) {
        return Err(ProtocolError::BadShape);
    }
    let f = bits;
    let (_, low, _, w_bits) = consts(width);
    let mut r = op.random(LANE_R);
    let mut lo1 = op.device_derived(LANE_LO);
    let mut hi1 = op.device_derived(LANE_HI);
    let mut w = op.writer(out, 2 * n)?;
    // Layout: all `lo` words, then all `hi` words (r's lane is read twice
    // rather than buffering n words).
    for _ in 0..n {
        w.put((r.next_u64() & low) >> f, lo1.next_u64());
    }
    let mut r = op.random(LANE_R);
    for _ in 0..n {
        w.put((r.next_u64() >> (w_bits - 1)) & 1, hi1.next_u64());
    }
    w.finish()
}

/// Host side of an exact truncation.
#[derive(Debug)]
pub struct TruncHost<'d> {
    corr: OpCorr<'d>,
    n: usize,
    bits: u32,
    width: usize,
}

impl<'d> TruncHost<'d> {
    /// Truncation of `n` elements by `bits` in `width` bytes.
    pub fn new(corr: OpCorr<'d>, n: usize, bits: u32, width: usize) -> Result<Self, ProtocolError> {
        if n == 0 || n > usize::MAX / 16 || corr.role() != Role::Host || !supported(bits, width) {
            return Err(ProtocolError::BadShape);
        }
        corr.expect_corrections(2 * n)?;
        Ok(Self { corr, n, bits, width })
    }

    /// Takes the device's message, writes the reply bits into `reply` and
    /// this party's output share into `t0`. Returns the reply length.
    pub fn respond(
        mut self,
        z0: &[u64],
        device_msg: &[u8],
        reply: &mut [u8],
        t0: &mut [u64],
    ) -> Result<usize, ProtocolError> {
        let n = self.n;
        if z0.len() != n || t0.len() != n {
            return Err(ProtocolError::BadBuffer);
        }
        wire::expect_len(device_msg, device_msg_len(n, self.width))?;
        let reply = wire::out_prefix(reply, host_msg_len(n))?;
        let f = self.bits;
        let (mask, low, offset, w_bits) = consts(self.width);
        let mut r0 = self.corr.random(LANE_R);
        let mut lo = self.corr.derived(LANE_LO, n)?;
        let mut hi = self.corr.derived(LANE_HI, n)?;
        reply.fill(0);
        let msg = wire::narrow(device_msg, self.width);
        for (i, ((&z, d), t)) in z0.iter().zip(msg).zip(t0.iter_mut()).enumerate() {
            let c = z.wrapping_add(offset).wrapping_add(r0.next_u64()).wrapping_add(d) & mask;
            let m = c >> (w_bits - 1);
            if let Some(byte) = reply.get_mut(i / 8) {
                *byte |= (m as u8) << (i % 8);
            }
            // b0 = m + (1 - 2m) hi0
            let h = hi.next_u64();
            let b0 = m.wrapping_add(if m == 1 { h.wrapping_neg() } else { h });
            *t = ((c & low) >> f)
                .wrapping_sub(lo.next_u64())
                .wrapping_add(b0 << (w_bits - 1 - f))
                .wrapping_sub(offset >> f);
        }
        Ok(host_msg_len(n))
    }
}

/// Device side of an exact truncation, before sending.
#[derive(Debug)]
pub struct TruncDevice {
    corr: OpCorr<'static>,
    n: usize,
    bits: u32,
    width: usize,
}

/// Device side after sending.
#[derive(Debug)]
pub struct TruncDeviceSent {
    corr: OpCorr<'static>,
    n: usize,
    bits: u32,
    width: usize,
}

impl TruncDevice {
    /// Truncation of `n` elements by `bits` in `width` bytes.
    pub fn new(corr: OpCorr<'static>, n: usize, bits: u32, width: usize) -> Result<Self, ProtocolError> {
        if n == 0 || n > usize::MAX / 16 || corr.role() != Role::Device || !supported(bits, width) {
            return Err(ProtocolError::BadShape);
        }
        Ok(Self { corr, n, bits, width })
    }

    /// Writes `z1 + r1 mod 2^W` into `out`.
    pub fn send(self, z1: &[u64], out: &mut [u8]) -> Result<(TruncDeviceSent, usize), ProtocolError> {
        if z1.len() != self.n {
            return Err(ProtocolError::BadBuffer);
        }
        let len = device_msg_len(self.n, self.width);
        let out = wire::out_prefix(out, len)?;
        let mut r1 = self.corr.random(LANE_R);
        wire::put_narrow(out, self.width, z1.iter().map(|&z| z.wrapping_add(r1.next_u64())));
        Ok((
            TruncDeviceSent {
                corr: self.corr,
                n: self.n,
                bits: self.bits,
                width: self.width,
            },
            len,
        ))
    }
}

impl TruncDeviceSent {
    /// Takes the host's reply bits and writes the device's output share.
    pub fn finish(mut self, reply: &[u8], t1: &mut [u64]) -> Result<(), ProtocolError> {
        let n = self.n;
        if t1.len() != n {
            return Err(ProtocolError::BadBuffer);
        }
        wire::expect_len(reply, host_msg_len(n))?;
        // Unused high bits of the last byte must be zero (canonical encoding).
        if !n.is_multiple_of(8) && reply.last().is_some_and(|b| b >> (n % 8) != 0) {
            return Err(ProtocolError::OutOfRange);
        }
        let f = self.bits;
        let mut lo = self.corr.derived(LANE_LO, n)?;
        let mut hi = self.corr.derived(LANE_HI, n)?;
        for (i, t) in t1.iter_mut().enumerate() {
            *t = device_share(lo.next_u64(), hi.next_u64(), wire::get_bit(reply, i), f, self.width);
        }
        Ok(())
    }
}

/// The device's output share of one element: `-lo1 + b1 2^(W-1-f)` with
/// `b1 = (1 - 2m) hi1`.
#[inline]
pub(crate) fn device_share(lo1: u64, hi1: u64, m: u64, f: u32, width: usize) -> u64 {
    let b1 = if m == 1 { hi1.wrapping_neg() } else { hi1 };
    lo1.wrapping_neg().wrapping_add(b1 << (consts(width).3 - 1 - f))
}

/// Device: its output shares of elements `index..index + out.len()` of an
/// earlier exact truncation by `bits` in `width` bytes (`corr`, from
/// [`crate::corr::Correlations::earlier`]), given the host's reply bit of
/// each (`m(i)` for element `index + i`): the words
/// [`TruncDeviceSent::finish`] wrote. The share is its seed's `lo` and `hi`
/// lanes and one bit, so a device may keep the bit and regenerate the word
/// ([`device_reply_bits`] recovers the bits from the words).
pub fn device_shares_at(
    corr: &OpCorr<'_>,
    bits: u32,
    width: usize,
    index: u64,
    mut m: impl FnMut(usize) -> u64,
    out: &mut [u64],
) -> Result<(), ProtocolError> {
    if corr.role() != Role::Device || !supported(bits, width) {
        return Err(ProtocolError::BadParameter);
    }
    let mut lo = corr.random_at(LANE_LO, index);
    let mut hi = corr.random_at(LANE_HI, index);
    for (i, t) in out.iter_mut().enumerate() {
        *t = device_share(lo.next_u64(), hi.next_u64(), m(i), bits, width);
    }
    Ok(())
}

/// Device: the host's reply bits behind its output shares `t1` of elements
/// `index..` of an earlier truncation (the inverse of
/// [`device_shares_at`]): `put(i, m)` for each. A word that neither bit
/// gives is [`ProtocolError::OutOfRange`] (it is not that op's output).
pub fn device_reply_bits(
    corr: &OpCorr<'_>,
    bits: u32,
    width: usize,
    index: u64,
    t1: &[u64],
    mut put: impl FnMut(usize, bool),
) -> Result<(), ProtocolError> {
    if corr.role() != Role::Device || !supported(bits, width) {
        return Err(ProtocolError::BadParameter);
    }
    let mut lo = corr.random_at(LANE_LO, index);
    let mut hi = corr.random_at(LANE_HI, index);
    for (i, &t) in t1.iter().enumerate() {
        let (l, h) = (lo.next_u64(), hi.next_u64());
        if t == device_share(l, h, 0, bits, width) {
            put(i, false);
        } else if t == device_share(l, h, 1, bits, width) {
            put(i, true);
        } else {
            return Err(ProtocolError::OutOfRange);
        }
    }
    Ok(())
}
