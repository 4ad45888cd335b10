//! Elementwise activations on the lookup protocol.
//!
//! | op | rounds | device -> host | error (stated for `f` = 16) |
//! |---|---|---|---|
//! | ReLU, DReLU | 1 | 8 B | exact, except `x` in `[-2^s, 0)` (may pass `x` / say 1) |
//! | precise ReLU | 2 | 24 B | exact, except `x` in `[-2^(s+3-k), 0)` |
//! | fitted lookup (exp, GeLU's chords in the lookup benchmarks) | 1 | 8 B | chord fit on `2^k` cells, plus the lookup's `kappa` and slope rounding (a few `2^-(f+8)`), plus 1 ulp |
//! | [`gelu`] (the model's) | 3 | 6 B + 3 bits | `4.2e-5` fit plus rounding, plus 1 ulp |
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
/// the comparison takes the positive branch), at most 0.17, below `1.6e-5`
/// from [`GELU_CLIP`]` - 1/2` on and below `6e-9` beyond 6: the dealer
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
        // the nodes of every cell: 4 cells of 2 from -1/2 - 2 (a read of
        // the next cell) up to 8
        Some((-3.0, 9.0))
    }
}

/// Fractional bits of the GeLU tail's output over the input's.
pub const GELU_TAIL_EXTRA: u32 = 17;

/// Where GeLU's tail is read: `G(min(|x|, c))` with the clip `c` one unit
/// (`2^-f`) below `GELU_CLIP` (real).
pub const GELU_CLIP: u64 = 5;

/// The two steps of [`gelu`] for `n` inputs at `f + pre` bits whose MLP
/// range is `2^range_log2`: the comparison (one digit of 7 bits, `s = f -
/// 1`, on an opening of `f + range_log2 + 2` bits, dropping the input's
/// `pre` extra bits) of `x` with 0 and `+-c`, `c` one unit below
/// [`GELU_CLIP`], and the cell lookup of the tail on the clipped `|x|` (4
/// cells of 2, degree 6).
pub fn gelu_shapes(
    n: usize,
    f: u32,
    range_log2: i32,
    pre: u32,
) -> Result<(crate::protocol::cmp::CmpShape, crate::protocol::cell::CellShape), ProtocolError> {
    use crate::protocol::cell::{Basis, CellShape};
    use crate::protocol::cmp::{CmpOut, CmpShape};
    if !(3..=40).contains(&(f as i32)) || !(3..=20).contains(&range_log2) {
        return Err(ProtocolError::BadParameter);
    }
    let clip = (GELU_CLIP << f) - 1;
    // one digit of 7 bits: the branch regions are the 2^s = 1/2 below
    // each threshold
    let relu = CmpShape::branch(n, f, range_log2 + 1, CmpOut::ReluClip(clip), 7)?.with_pre(pre)?;
    let tail = CellShape {
        n,
        l: f + 3,
        kh: 2,
        // the comparison's branch regions read the clipped `|x|` down to
        // `-2^s` and up to the clip plus `2^s`
        offset: 1u64 << relu.s,
        f,
        p: 16,
        out: f + GELU_TAIL_EXTRA,
        basis: Basis::Cheb(6),
        pre: 0,
    };
    tail.check()?;
    Ok((relu, tail))
}

/// GeLU in three rounds: the comparison ([`crate::protocol::cmp`], two
/// rounds) of `x` with 0 and `+-c` ([`GELU_CLIP`]) on one opening gives
/// `ReLU(x)` and `m = min(|x|, c)`, then the tail `G(m)` by a cell lookup
/// (one round), `GeLU = ReLU(x) - G(m)` (`G(|x|) < G(c - 1/2) < 1.6e-5` where
/// `|x| > c - 1/2`), the tail brought to `f` bits by local truncation.
///
/// Each threshold's comparison has one digit (of 7 bits, `s = f - 1`), so
/// it may take the positive branch on the `2^s = 1/2` below it. Either
/// branch at 0 gives the same GeLU (then `ReLU(x) = x` and `m = x`: `x -
/// G(x) = 0 - G(-x)`, as `G(t) - G(-t) = t`); at `+-c` the positive branch
/// gives `m = c` for `|x|` in `(c - 1/2, c]` (or `m = |x|` up to `c +
/// 1/2`), where `G` is below `1.6e-5`. So `m` lies in `[-1/2, c + 1/2]` and
/// the tail's lookup, offset by `1/2`, reads 4 cells of 2 with its top
/// cell left out (`c + 1 < 6`: hence `c = 5 - 2^-f`). Inputs lie in
/// `[-2^(range_log2 + 1) + c, 2^(range_log2 + 1) - c - 1/2)` (`[-59,
/// 58.5)` for the MLP's range `2^5`).
///
/// With `pre > 0` the input is `x` at `f + pre` bits (`fc1`'s product
/// before its truncation): the comparison's opening drops the `pre` bits
/// ([`CmpShape::with_pre`](crate::protocol::cmp::CmpShape::with_pre)), so
/// the output is GeLU of `floor(x / 2^pre) + e`, `e` in `{-1, 0, 1}`, at
/// `f` bits; the truncation op before it, its messages and its dealer
/// words are gone.
///
/// Error: the tail's fit (`4.2e-5` on cells of 2, degree 6) plus its
/// rounding and the clip's `1.6e-5`, plus 1 ulp. The local truncation fails
/// with probability below `|G| 2^(f + 17) / 2^64 <= 2^-32` per element.
///
/// Bytes per element: 3 each way and 3 bits (comparison), 3 each way
/// (tail); dealer 18 + 28 words. `scratch`: `2 x.len()` words.
pub fn gelu<P: Party + ?Sized>(
    p: &mut P,
    range_log2: i32,
    pre: u32,
    x: &[u64],
    out: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let n = x.len();
    let f = p.fp().frac_bits();
    let (relu, tail) = gelu_shapes(n, f, range_log2, pre)?;
    let s = scratch.get_mut(..2 * n).ok_or(ProtocolError::BadBuffer)?;
    if out.len() != n {
        return Err(ProtocolError::BadBuffer.into());
    }
    // (ReLU(x), m) per element, then ReLU into `out` and `m` to the front
    p.cmp(relu, x, s)?;
    for (i, o) in out.iter_mut().enumerate() {
        *o = s.get(2 * i).copied().unwrap_or(0);
        let m = s.get(2 * i + 1).copied().unwrap_or(0);
        if let Some(dst) = s.get_mut(i) {
            *dst = m;
        }
    }
    let (t, g) = s.split_at_mut(n);
    super::cell(p, tail, &GeluTail, t, g)?;
    for (o, &g) in out.iter_mut().zip(g.iter()) {
        *o = o.wrapping_sub(crate::protocol::trunc::local(g, GELU_TAIL_EXTRA));
    }
    Ok(())
}
