//! Elementwise activations on the lookup protocol.
//!
//! | op | rounds | device -> host | error (stated for `f` = 16) |
//! |---|---|---|---|
//! | ReLU, DReLU | 1 | 8 B | exact, except `x` in `[-2^s, 0)` (may pass `x` / say 1) |
//! | precise ReLU | 2 | 24 B | exact, except `x` in `[-2^(s+3-k), 0)` |
//! | GeLU, exp | 1 | 8 B | chord fit on `2^k` cells, plus the lookup's `kappa` and slope rounding (a few `2^-(f+8)`), plus 1 ulp |
//!
//! Fitted functions come out of the lookup with [`EXTRA_BITS`] more
//! fractional bits than the input and are brought back by *local*
//! truncation: the lookup's output shares are uniform, so it fails only with
//! probability `|value| 2^(f+8) / 2^64` per element (`2^-35` for values below
//! 32 at `f` = 16).

use super::{Party, lut};
use crate::ProtocolError;
use crate::protocol::lut::LutShape;
use crate::protocol::pwl::{Func, Pwl, ReluOut, ReluTable};

/// Extra fractional bits of a fitted lookup's output.
pub const EXTRA_BITS: u32 = 8;

/// The grid for inputs in `[-2^range_log2, 2^range_log2)` (real) with `k`
/// index bits at `f` fractional bits.
pub fn grid(n: usize, f: u32, range_log2: i32, k: u32) -> Result<LutShape, ProtocolError> {
    let top = f as i32 + range_log2; // bits of 2^(s+k-1)
    let s = top + 1 - k as i32;
    if s < 0 || top + 1 > 62 {
        return Err(ProtocolError::BadParameter);
    }
    Ok(LutShape {
        n,
        s: s as u32,
        k,
        t: 0,
    })
}

/// ReLU or DReLU (one round).
pub fn relu<P: Party + ?Sized>(
    p: &mut P,
    shape: LutShape,
    which: ReluOut,
    x: &[u64],
    out: &mut [u64],
) -> Result<(), P::Error> {
    lut(p, shape, &ReluTable { shape, out: which }, x, out)
}

/// The fitted table of `func` on `shape` (input at `f` bits) with output at
/// `f + EXTRA_BITS` bits and the linear coordinate's shift balancing the
/// lookup's `kappa` error against the slope's rounding.
pub fn fitted_table(func: Func, shape: LutShape, fp: crate::FixedPoint) -> (LutShape, Pwl) {
    let f = fp.frac_bits();
    let t = (shape.s + f).saturating_sub(f + EXTRA_BITS) / 2;
    let shape = LutShape {
        t: t.min(shape.s),
        ..shape
    };
    (
        shape,
        Pwl {
            func,
            shape,
            fp,
            out_frac: f + EXTRA_BITS,
        },
    )
}

/// A fitted function (GeLU or exp) at the input's scale, in one round:
/// lookup, then local truncation of the extra bits.
pub fn fitted<P: Party + ?Sized>(
    p: &mut P,
    func: Func,
    shape: LutShape,
    x: &[u64],
    out: &mut [u64],
) -> Result<(), P::Error> {
    let fp = p.fp();
    let (shape, t) = fitted_table(func, shape, fp);
    lut(p, shape, &t, x, out)?;
    for v in out.iter_mut() {
        *v = crate::protocol::trunc::local(*v, EXTRA_BITS);
    }
    Ok(())
}

/// Plaintext fixed-point reference of [`fitted`] at the exact grid index
/// and coordinate (the secure op may use the next index or coordinate, and
/// its local truncation may be one ulp lower).
pub fn fitted_reference(func: Func, shape: LutShape, fp: crate::FixedPoint, x: u64) -> u64 {
    let (shape, t) = fitted_table(func, shape, fp);
    let v = crate::protocol::lut::reference(&t, shape.coord(x), shape.index(x), 0);
    crate::protocol::trunc::local(v, EXTRA_BITS)
}

/// Plaintext reference of ReLU.
pub fn relu_reference(x: u64) -> u64 {
    if (x as i64) < 0 { 0 } else { x }
}

/// The smooth tail of GeLU: `G(t) = t Phi(-t)`, with `GeLU(x) = ReLU(x) -
/// G(|x|)`. `G` is entire (its analytic continuation below 0 is used where
/// the comparison takes the positive branch), at most 0.17, and below
/// `6e-9` beyond 6 (0.0004 of the output's unit at `f = 16`): the dealer
/// deals zero for a cell that starts there.
#[derive(Clone, Copy, Debug)]
pub struct GeluTail;

impl crate::protocol::cell::CellFn for GeluTail {
    fn eval(&self, _cell: u64, x: f64) -> f64 {
        x * 0.5 * libm::erfc(x / core::f64::consts::SQRT_2)
    }
    fn zero_on(&self, _cell: u64, lo: f64, _hi: f64) -> bool {
        lo > 6.0
    }
    fn smooth_on(&self) -> Option<(f64, f64)> {
        // the nodes of every cell not dealt zero: `|x|`'s cells reach 4
        // below 0 (the top cell's wrap) and 4 above 6
        Some((-6.0, 12.0))
    }
}

/// Fractional bits of the GeLU tail's output over the input's.
pub const GELU_TAIL_EXTRA: u32 = 17;

/// The two steps of [`gelu`] for `n` inputs at `f` bits: the one-digit
/// comparison's ReLU and the cell lookup of the tail on `|x|` (8 cells of
/// `2^(range_log2 - 3)`, degree 9).
pub fn gelu_shapes(
    n: usize,
    f: u32,
    range_log2: i32,
) -> Result<(crate::protocol::cmp::CmpShape, crate::protocol::cell::CellShape), ProtocolError> {
    use crate::protocol::cell::{Basis, CellShape};
    use crate::protocol::cmp::{CmpOut, CmpShape};
    let relu = CmpShape::branch(n, f, range_log2, CmpOut::Relu)?;
    let l = f as i32 + range_log2;
    if !(4..=40).contains(&l) {
        return Err(ProtocolError::BadParameter);
    }
    let tail = CellShape {
        n,
        l: l as u32,
        kh: 3,
        // the comparison's branch region `[-2^s, 0)` reads the tail at `x`
        offset: 1u64 << relu.s,
        f,
        p: 16,
        out: f + GELU_TAIL_EXTRA,
        basis: Basis::Cheb(9),
    };
    tail.check()?;
    Ok((relu, tail))
}

/// GeLU in three rounds: `ReLU(x)` by the comparison
/// ([`crate::protocol::cmp`], two rounds), then `|x| = 2 ReLU(x) - x`
/// (local) and the tail `G(|x|)` by a cell lookup (one round), `GeLU =
/// ReLU(x) - G(|x|)`, the tail brought to `f` bits by local truncation.
///
/// Either branch of the comparison gives the same GeLU (`x - G(x) = 0 -
/// G(-x)`, as `G(t) - G(-t) = t`), so the comparison is the one-digit
/// [`CmpShape::branch`](crate::protocol::cmp::CmpShape::branch), which may
/// take the positive branch on `[-2^(range_log2 - 8), 0)`; the tail's
/// lookup is offset by that much so that `|x|` computed as `x` there stays
/// in its range. Inputs lie in `(-(2^range_log2 - 2^(range_log2 - 3) -
/// 2^(range_log2 - 8)), ...)` (`(-27.875, 27.875)` for the MLP's range
/// `2^5`: the tail lookup's top cell is left out).
///
/// Error: the tail's fit (`1e-4` on cells of `2^(range_log2 - 3)`) plus its
/// rounding, plus 1 ulp. The local truncation fails with probability below
/// `|G| 2^(f + 17) / 2^64 <= 2^-32` per element.
///
/// Bytes per element: 3 each way and 1 bit (comparison), 3 each way
/// (tail); dealer 11 + 80 words. `scratch`: `2 x.len()` words.
pub fn gelu<P: Party + ?Sized>(
    p: &mut P,
    range_log2: i32,
    x: &[u64],
    out: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let n = x.len();
    let f = p.fp().frac_bits();
    let (relu, tail) = gelu_shapes(n, f, range_log2)?;
    let (t, g) = scratch
        .get_mut(..2 * n)
        .ok_or(ProtocolError::BadBuffer)?
        .split_at_mut(n);
    if out.len() != n {
        return Err(ProtocolError::BadBuffer.into());
    }
    p.cmp(relu, x, out)?;
    for ((t, &r), &v) in t.iter_mut().zip(out.iter()).zip(x) {
        *t = r.wrapping_mul(2).wrapping_sub(v);
    }
    super::cell(p, tail, &GeluTail, t, g)?;
    for (o, &g) in out.iter_mut().zip(g.iter()) {
        *o = o.wrapping_sub(crate::protocol::trunc::local(g, GELU_TAIL_EXTRA));
    }
    Ok(())
}
