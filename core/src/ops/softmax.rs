//! Row normalizations of attention scores: Softmax, RSAttn (ReLU-softmax),
//! 2Quad and ScaleAttn, over `rows x cols` shared scores at `f` bits, as
//! the model computes them ([`super::vit::normalize_heads`] with one head).
//!
//! Softmax (no max): `softmax` is shift-invariant, so each row is shifted
//! by its first score (free, local) instead of by its maximum (a log-depth
//! tree of comparisons in CrypTen). The shifted row has a 1 at column 0,
//! so the sum is at least 1 and the largest terms keep full relative
//! precision. The shifted scores lie in `[-32, 28)`; exp is exact up to
//! [`super::vit::EXP_CAP`] and saturates above.
//!
//! | kind | rounds | device -> host per score |
//! |---|---|---|
//! | Softmax | exp cell lookup 1 + reciprocal 7 + product 1 + truncation 1 = 10 | 3 + 8 + 8 B |
//! | RSAttn | comparison 2 + reciprocal 7 + product 1 + truncation 1 = 11 | 3 B + 1 bit + 8 + 8 B |
//! | 2Quad | square 1 + truncation 1 + reciprocal 7 + product 1 + truncation 1 = 11 | 8 + 8 + 8 + 8 B |
//! | ScaleAttn | truncation 1 | 8 B |
//!
//! In the model, RSAttn heads at `f <= 16` take their product with `V`
//! before the reciprocal ([`super::vit::rs_after_v`]); this op, and the
//! other kinds there, make the probabilities first.
//!
//! Every row value is brought to [`super::vit::ROW_FRAC`] bits before the
//! row sums; the reciprocal ([`super::vit::row_recip`], one range per
//! kind) has `61 - ROW_FRAC` bits, so that `e / S` is a 61-bit product that
//! the final exact truncation brings to `f`.

use super::Party;
use crate::ProtocolError;
use crate::model::AttnKind;

/// RSAttn's epsilon.
pub const RS_EPS: f64 = 1e-5;
/// 2Quad's shift `c` in `(x + c)^2`.
pub const QUAD_C: f64 = 5.0;

/// Parameters of a row normalization.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormSpec {
    /// Attention kind.
    pub kind: AttnKind,
    /// Rows.
    pub rows: usize,
    /// Columns (tokens).
    pub cols: usize,
}

impl NormSpec {
    /// `rows x cols` scores of this kind.
    pub fn new(kind: AttnKind, rows: usize, cols: usize) -> Self {
        Self { kind, rows, cols }
    }

    /// Scratch words [`normalize`] needs.
    pub fn scratch_len(&self) -> usize {
        super::vit::norm_scratch_len(1, self.rows, self.cols, self.kind == AttnKind::Quad).max(self.rows * self.cols)
    }
}

/// Normalizes each row of `x` (scores at `f` bits) into `out` (at `f` bits).
pub fn normalize<P: Party + ?Sized>(
    p: &mut P,
    spec: &NormSpec,
    x: &[u64],
    out: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let (rows, cols) = (spec.rows, spec.cols);
    let n = rows * cols;
    let f = p.fp().frac_bits();
    if n == 0 || x.len() != n || out.len() != n || scratch.len() < spec.scratch_len() {
        return Err(ProtocolError::BadBuffer.into());
    }
    if spec.kind == AttnKind::Scale {
        // x / N: multiply by the public 2^f / N, truncate.
        let c = p.fp().encode(1.0 / cols as f64);
        let prod = scratch.get_mut(..n).ok_or(ProtocolError::BadBuffer)?;
        for (o, &v) in prod.iter_mut().zip(x) {
            *o = v.wrapping_mul(c);
        }
        return p.trunc(f, prod, out);
    }
    super::vit::normalize_heads(p, rows, cols, &[spec.kind], 0, None, x, (out, None), scratch)
}

/// Plaintext fixed-point reference of [`normalize`] for one row (`x` and
/// `out` of `spec.cols`): exp, ReLU and the squares at
/// [`super::vit::ROW_FRAC`] bits (exp from the float function: the secure
/// lookup is within its stated error of it), the reciprocal's reference,
/// the product truncated to `f`.
pub fn reference(spec: &NormSpec, fp: crate::FixedPoint, x: &[u64], out: &mut [u64]) {
    use super::vit::{EXP_CAP, ROW_FRAC, row_recip, row_trunc};
    let f = fp.frac_bits();
    let cols = spec.cols;
    if x.len() != cols || out.len() != cols || cols == 0 {
        return;
    }
    if spec.kind == AttnKind::Scale {
        let c = fp.encode(1.0 / cols as f64);
        for (o, &v) in out.iter_mut().zip(x) {
            *o = crate::reference::trunc(v.wrapping_mul(c), f);
        }
        return;
    }
    let rf = ROW_FRAC;
    let first = x[0];
    for (o, &v) in out.iter_mut().zip(x) {
        *o = match spec.kind {
            AttnKind::Softmax => {
                let d = fp.decode(v.wrapping_sub(first));
                libm::round(libm::exp(d.min(EXP_CAP)) * libm::exp2(rf as f64)) as i64 as u64
            }
            AttnKind::ReluSoftmax => super::activation::relu_reference(v) << (rf - f),
            _ => {
                let d = v.wrapping_add(fp.encode(QUAD_C));
                let sq = d.wrapping_mul(d);
                if 2 * f > rf {
                    crate::reference::trunc(sq, 2 * f - rf)
                } else {
                    sq << (rf - 2 * f)
                }
            }
        };
    }
    let s = out.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    let inv = row_recip(cols, f, spec.kind).reference(s);
    for o in out.iter_mut() {
        *o = crate::reference::trunc(o.wrapping_mul(inv), row_trunc(f));
    }
}
