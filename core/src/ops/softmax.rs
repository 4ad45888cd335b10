//! Row normalizations of attention scores: Softmax, RSAttn (ReLU-softmax),
//! 2Quad and ScaleAttn, over `rows x cols` shared scores at `f` bits.
//!
//! Softmax (no max): `softmax` is shift-invariant, so each row is shifted
//! by its first score (free, local) instead of by its maximum (a log-depth
//! tree of comparisons in CrypTen). The shifted row has a 1 at column 0,
//! so the sum is at least 1 and the largest terms keep full relative
//! precision. The shifted scores must lie within the exp grid
//! (`[-2^range_log2, 2^range_log2)`).
//!
//! | kind | rounds | device -> host per score |
//! |---|---|---|
//! | Softmax | exp lookup 1 + reciprocal 4 + product 1 + truncation 1 = 7 | 8 + 8 + 8 = 24 B (16 when fused with attention x V) |
//! | RSAttn | ReLU lookup 1 + reciprocal 4 + product 1 + truncation 1 = 7 | 24 B |
//! | 2Quad | square 1 + reciprocal 4 + product 1 + truncation 1 = 7 | 24 B |
//! | ScaleAttn | truncation 1 | 8 B |
//!
//! The reciprocal of the row sums is computed with many fractional bits
//! (`q` = 61 - (fractional bits of `e`) - 2), so that a large sum keeps its
//! relative precision; the final truncation by `q` brings `e / S` to `f`.

use super::wide::{self, WideSpec};
use super::{Party, lut};
use crate::ProtocolError;
use crate::model::AttnKind;
use crate::protocol::lut::LutShape;
use crate::protocol::pwl::{Func, ReluOut, ReluTable};

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
    /// Scores (shifted, for Softmax) lie in `[-2^range_log2, 2^range_log2)`.
    pub range_log2: i32,
    /// Index bits of the exp / ReLU lookup.
    pub k: u32,
    /// Index bits per window of the reciprocal.
    pub recip_k: u32,
    /// Guard bits of the reciprocal.
    pub recip_g: u32,
}

impl NormSpec {
    /// Defaults for `rows x cols` scores of this kind: range 16, 10-bit grid.
    pub fn new(kind: AttnKind, rows: usize, cols: usize) -> Self {
        Self {
            kind,
            rows,
            cols,
            range_log2: 4,
            k: 10,
            recip_k: 10,
            recip_g: 6,
        }
    }

    /// The lookup grid of the elementwise step.
    pub fn grid(&self, f: u32) -> Result<LutShape, ProtocolError> {
        super::activation::grid(self.rows * self.cols, f, self.range_log2, self.k)
    }

    /// Fractional bits of the elementwise step's output (`e`).
    fn e_frac(&self, f: u32) -> u32 {
        match self.kind {
            AttnKind::Quad => 2 * f,
            _ => f,
        }
    }

    /// Fractional bits of the reciprocal.
    fn q(&self, f: u32) -> u32 {
        61 - self.e_frac(f) - 2
    }

    /// The reciprocal applied to the row sums.
    pub fn recip(&self, f: u32) -> WideSpec {
        let n = self.cols as f64;
        let r = libm::exp2(self.range_log2 as f64);
        let (lo, hi, eps) = match self.kind {
            AttnKind::Softmax => (0.5, n * libm::exp(r) * 1.01, 0.0),
            // down to one unit, as `vit::row_recip`
            AttnKind::ReluSoftmax => (libm::exp2(-(f as f64)), n * r * 1.01, RS_EPS),
            _ => (libm::exp2(-8.0), n * (r + QUAD_C) * (r + QUAD_C) * 1.01, 0.0),
        };
        WideSpec {
            eps,
            k: self.recip_k,
            g: self.recip_g,
            ..WideSpec::new(Func::Recip, lo, hi, self.e_frac(f), self.q(f))
        }
    }

    /// Scratch words [`normalize`] needs.
    pub fn scratch_len(&self) -> usize {
        let n = self.rows * self.cols;
        3 * n + 2 * self.rows + wide::scratch_len(self.rows)
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
    let host = p.role().plays_host();
    let (d, rest) = scratch.split_at_mut(n);
    let (e, rest) = rest.split_at_mut(n);
    let (prod, rest) = rest.split_at_mut(n);
    let (sums, rest) = rest.split_at_mut(rows);
    let (inv, rest) = rest.split_at_mut(rows);
    match spec.kind {
        AttnKind::Scale => {
            // x / N: multiply by the public 2^f / N, truncate.
            let c = p.fp().encode(1.0 / cols as f64);
            for (o, &v) in prod.iter_mut().zip(x) {
                *o = v.wrapping_mul(c);
            }
            return p.trunc(f, prod, out);
        }
        AttnKind::Softmax => {
            for (d_row, x_row) in d.chunks_exact_mut(cols).zip(x.chunks_exact(cols)) {
                let first = x_row[0];
                for (o, &v) in d_row.iter_mut().zip(x_row) {
                    *o = v.wrapping_sub(first);
                }
            }
            super::activation::fitted(p, Func::Exp, spec.grid(f)?, d, e)?;
        }
        AttnKind::ReluSoftmax => {
            let shape = spec.grid(f)?;
            lut(
                p,
                shape,
                &ReluTable {
                    shape,
                    out: ReluOut::Relu,
                },
                x,
                e,
            )?;
        }
        AttnKind::Quad => {
            let c = p.fp().encode(QUAD_C);
            d.copy_from_slice(x);
            if host {
                for v in d.iter_mut() {
                    *v = v.wrapping_add(c);
                }
            }
            p.square(d, e)?;
        }
    }
    for (s, e_row) in sums.iter_mut().zip(e.chunks_exact(cols)) {
        *s = e_row.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    }
    wide::wide(p, &spec.recip(f), sums, inv, rest)?;
    p.mul(e, inv, cols, prod)?;
    p.trunc(spec.e_frac(f) + spec.q(f) - f, prod, out)
}

/// Plaintext fixed-point reference of [`normalize`] for one row (`x` and
/// `out` of `spec.cols`), with the same approximations at the exact grid
/// points (the secure op may use neighbouring cells: see the law's bound).
pub fn reference(spec: &NormSpec, fp: crate::FixedPoint, x: &[u64], out: &mut [u64]) {
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
    let Ok(shape) = spec.grid(f) else { return };
    let first = x[0];
    for (o, &v) in out.iter_mut().zip(x) {
        *o = match spec.kind {
            AttnKind::Softmax => super::activation::fitted_reference(Func::Exp, shape, fp, v.wrapping_sub(first)),
            AttnKind::ReluSoftmax => super::activation::relu_reference(v),
            _ => {
                let d = v.wrapping_add(fp.encode(QUAD_C));
                d.wrapping_mul(d)
            }
        };
    }
    let s = out.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    let inv = spec.recip(f).reference(s);
    for o in out.iter_mut() {
        *o = crate::reference::trunc(o.wrapping_mul(inv), spec.e_frac(f) + spec.q(f) - f);
    }
}
