//! LayerNorm over rows of `d` with a host-private scale and shift.
//!
//! 1. One round of squares gives `sum_j x_j^2` and `(sum_j x_j)^2` per row,
//!    so `V = d sum x^2 - (sum x)^2 = d^2 var` (scale 2f), without the mean
//!    first.
//! 2. `r = rsqrt(V / d^2 + eps) / d` by [`super::wide`].
//! 3. `u = d x - sum x` times `r` per row (1 round): the normalized row at
//!    scale 2f, as `d (x r) - (sum x) r` from the squares' opening of `x`
//!    and of the row sums, which the product takes
//!    ([`Party::mul_opened`]): it opens only `r`.
//! 4. Times the host's `gamma` ([`crate::protocol::scale`]) with the exact
//!    truncation in the same round trip; the host adds `beta`.
//!
//! `r` carries [`R_FRAC`] fractional bits (its smallest values, about
//! `2^-11`, keep their relative precision); `u r gamma` then has
//! `2f + R_FRAC` bits and stays below `2^61` for outputs below 16.
//!
//! The inverse square root finishes with an exact truncation (its windows
//! output at as many bits as its range allows, for the precision of their
//! series), so it takes 7 rounds.
//!
//! Rounds: 1 + 7 + 1 + 1 = 10. Inputs: `|x| < 2^6` (real) and `d <= 256`, so
//! `V < 2^60` at scale 2f.

use super::Party;
use super::wide::{self, WideSpec};
use crate::ProtocolError;
use crate::protocol::pwl::Func;

/// Fractional bits of the inverse square root.
pub const R_FRAC: u32 = 24;

/// LayerNorm's epsilon (PyTorch's default).
pub const LN_EPS: f64 = 1e-5;

/// Parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LnSpec {
    /// Rows (tokens).
    pub rows: usize,
    /// Row length.
    pub d: usize,
    /// Smallest variance for the stated precision.
    pub var_lo: f64,
    /// Largest variance.
    pub var_hi: f64,
}

impl LnSpec {
    /// Defaults: variance in `[2^-16, 2^10]`. Trained models keep token
    /// variances near 1, but a token of small random weights can fall to
    /// 5e-4 (seen in the secure-model proptest), and below the range the
    /// last window's chords are coarse.
    pub fn new(rows: usize, d: usize) -> Self {
        Self {
            rows,
            d,
            var_lo: libm::exp2(-16.0),
            var_hi: libm::exp2(10.0),
        }
    }

    /// The inverse square root step.
    pub fn rsqrt(&self, f: u32) -> WideSpec {
        let d = self.d as f64;
        WideSpec {
            pre: 1.0 / (d * d),
            eps: LN_EPS,
            post: 1.0 / d,
            ..WideSpec::new(Func::Rsqrt, d * d * self.var_lo, d * d * self.var_hi, 2 * f, R_FRAC)
        }
    }

    /// Scratch words.
    pub fn scratch_len(&self) -> usize {
        let n = self.rows * self.d;
        4 * n + 6 * self.rows + wide::scratch_len(self.rows)
    }
}

/// `out = LN(x) * gamma + beta`; `gamma` is the party's view of the scale
/// (host: gamma, device: its provisioned `gamma - B`, dealer: `B`), `beta`
/// is used by the host only. All at `f` bits. Without `gamma` (`None`), the
/// plain normalization (for a LayerNorm whose affine part is folded into
/// the next linear layer): the last round is a truncation instead.
pub fn layernorm<P: Party + ?Sized>(
    p: &mut P,
    spec: &LnSpec,
    x: &[u64],
    gamma: Option<&[u64]>,
    beta: &[u64],
    out: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let (rows, d) = (spec.rows, spec.d);
    let n = rows * d;
    let f = p.fp().frac_bits();
    if n == 0
        || x.len() != n
        || out.len() != n
        || gamma.is_some_and(|g| g.len() != d)
        || scratch.len() < spec.scratch_len()
    {
        return Err(ProtocolError::BadBuffer.into());
    }
    let host = p.role() == crate::Role::Host;
    // each row as its d values and their sum
    let c = d + 1;
    let (sq_in, rest) = scratch.split_at_mut(n + rows);
    let (e, rest) = rest.split_at_mut(n + rows);
    // the squares, then the row products
    let (sq_out, rest) = rest.split_at_mut(n + rows);
    let (y, rest) = rest.split_at_mut(n);
    let (v, rest) = rest.split_at_mut(rows);
    let (r, rest) = rest.split_at_mut(rows);
    // 1. squares of x and of the row sums, one round; the opening is kept
    //    for step 3
    for (blk, row) in sq_in.chunks_exact_mut(c).zip(x.chunks_exact(d)) {
        blk[..d].copy_from_slice(row);
        blk[d] = row.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    }
    let first = p.next_op_id();
    p.square_keep(sq_in, e, sq_out)?;
    for (vi, blk) in v.iter_mut().zip(sq_out.chunks_exact(c)) {
        let s2 = blk[..d].iter().fold(0u64, |a, &b| a.wrapping_add(b));
        *vi = s2.wrapping_mul(d as u64).wrapping_sub(blk[d]);
    }
    // 2. r = rsqrt(V / d^2 + eps) / d
    wide::wide(p, &spec.rsqrt(f), v, r, rest)?;
    // 3. (d x - sum x) r = d (x r) - (sum x) r: the squares' opened x and
    //    row sums times r per row, only r opened
    p.mul_opened(e, first, r, c, sq_out)?;
    for (y_row, blk) in y.chunks_exact_mut(d).zip(sq_out.chunks_exact(c)) {
        for (o, &xr) in y_row.iter_mut().zip(&blk[..d]) {
            *o = xr.wrapping_mul(d as u64).wrapping_sub(blk[d]);
        }
    }
    // 4. times gamma with truncation by 2f, plus beta
    let Some(gamma) = gamma else {
        return p.trunc(R_FRAC, y, out);
    };
    p.scale_trunc(y, gamma, f + R_FRAC, out)?;
    if host {
        if beta.len() != d {
            return Err(ProtocolError::BadBuffer.into());
        }
        for row in out.chunks_exact_mut(d) {
            for (o, &bv) in row.iter_mut().zip(beta) {
                *o = o.wrapping_add(bv);
            }
        }
    }
    Ok(())
}

/// Plaintext fixed-point reference of [`layernorm`] for one row, with the
/// same approximations at the exact grid points. `gamma` and `beta` are the
/// host's values (`gamma = None`: the plain normalization).
pub fn reference(
    spec: &LnSpec,
    fp: crate::FixedPoint,
    x: &[u64],
    gamma: Option<&[u64]>,
    beta: &[u64],
    out: &mut [u64],
) {
    let (d, f) = (spec.d, fp.frac_bits());
    if x.len() != d || out.len() != d {
        return;
    }
    let Some(gamma) = gamma else {
        let s1 = x.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        let s2 = x.iter().fold(0u64, |a, &b| a.wrapping_add(b.wrapping_mul(b)));
        let r = spec
            .rsqrt(f)
            .reference(s2.wrapping_mul(d as u64).wrapping_sub(s1.wrapping_mul(s1)));
        for (o, &xv) in out.iter_mut().zip(x) {
            *o = crate::reference::trunc(xv.wrapping_mul(d as u64).wrapping_sub(s1).wrapping_mul(r), R_FRAC);
        }
        return;
    };
    if gamma.len() != d || beta.len() != d {
        return;
    }
    let s1 = x.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    let s2 = x.iter().fold(0u64, |a, &b| a.wrapping_add(b.wrapping_mul(b)));
    let v = s2.wrapping_mul(d as u64).wrapping_sub(s1.wrapping_mul(s1));
    let r = spec.rsqrt(f).reference(v);
    for (((o, &xv), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
        let u = xv.wrapping_mul(d as u64).wrapping_sub(s1);
        let y = u.wrapping_mul(r).wrapping_mul(g);
        *o = crate::reference::trunc(y, f + R_FRAC).wrapping_add(b);
    }
}
