//! Functions of a positive input over a wide dynamic range (reciprocal for
//! the attention rows, inverse square root for LayerNorm) in four rounds,
//! on one cell lookup ([`crate::protocol::cell`]) read through windows.
//!
//! One cell structure cannot cover `[2^-16, 2^29]` with relative precision,
//! so one opening of `x` is read through `W` windows (grids of one cell
//! lookup, one flight). Window `w` reads `x mod 2^t_w` with [`CELL_BITS`]
//! bits of cells of width `L_w = 2^(t_w - 5)`; the windows are [`STEP`]
//! bits apart, top first. Each window outputs
//! * the series of `G` (degree [`DEGREE`]), fitted by the dealer on the
//!   interval its mask gives each element: accurate wherever that interval
//!   lies above `L_w` (where `G` varies by at most a factor 2);
//! * except the last, the flag `f_w = [cell < 3]` ("the input is too small
//!   for this window"), a second grid of one word per cell.
//!
//! The lookup reads an input's cell or the next one, so `f_w = 0` implies
//! `x >= 2 L_w`, where the series is accurate, and `f_w = 1` implies
//! `x < 3 L_w = 3/4 2^(t_w - 3)`: inside the next window, below its top cell
//! (which the lookup leaves out). The right window is the first from the top
//! whose flag is 0; the flags are combined into prefix products `P_w = f_0
//! ... f_w` by one more lookup (`P_w = [t_w = 0]` with `t_w = sum_(u <= w)
//! (1 - f_u)`, a small integer, on a 5-bit grid with step 1: exact). Then
//! `G = v_0 + sum_w P_w (v_(w+1) - v_w)`: one round of products. A final
//! truncation brings the result to `out_frac`.
//!
//! Every window outputs at the same scale (`mid`); a window's public basis
//! has as many fractional bits as balance the rounding of its words (at
//! `mid - p`) against the rounding of the basis (`2^-p` of the values it
//! reads), so the largest values keep their relative precision and the
//! smallest their absolute one.
//!
//! The series windows go down until the last one's flag region lies below
//! `lo`, so every input from `lo` up is read by a series. The inputs below
//! it (a row sum of zero, a LayerNorm row of almost zero variance, where `G`
//! stays finite by its epsilon) fall to a last window of 32 cells of
//! `lo / 16` read as a table (the function at each cell's start): exact
//! for inputs on its grid (a sum of ReLUs below one unit is 0), within one
//! cell for the others.
//!
//! Rounds: cell lookup (1) + prefix lookup (1) + products (1) + truncation
//! (1, or 0 with [`Finish::Local`]). Bytes per input: one opening (up to 8
//! each way), the prefix lookup (1 each way per window), the products (16
//! each way per window); dealer `32 (DEGREE + 2) + 32` words per window.

use super::{LutJob, Party};

use crate::ProtocolError;
use crate::protocol::cell::{Basis, CellFn, CellGrid, CellShape};
use crate::protocol::lut::{LutShape, Table};
use crate::protocol::pwl::Func;

/// Largest number of windows.
pub const MAX_WINDOWS: usize = 24;
/// Cell bits of a window.
pub const CELL_BITS: u32 = 5;
/// A window's flag is 0 from this cell on.
pub const FLAG_CELLS: u64 = 3;
/// Bits between windows.
pub const STEP: u32 = 3;
/// Degree of a window's series.
pub const DEGREE: u32 = 5;
/// Cell bits of the last window (cells of `lo / 16`).
const UNIT_BITS: u32 = 5;
/// Extra bits of the windows' output over `out_frac` with a local finish.
pub const LOCAL_EXTRA: u32 = 8;

/// How the result is brought from the windows' scale to `out_frac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Exact truncation: one more round, no failure.
    Exact,
    /// Local truncation of [`LOCAL_EXTRA`] bits: no round; fails with
    /// probability `|G| 2^(out_frac + LOCAL_EXTRA) / 2^64` per element.
    Local,
}

/// `G(x) = post * func(pre * x + eps)` for real `x` in `[lo, hi]`, input at
/// `in_frac` fractional bits, output at `out_frac`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WideSpec {
    /// Reciprocal or inverse square root.
    pub func: Func,
    /// Factor on the input.
    pub pre: f64,
    /// Added to the input (after `pre`).
    pub eps: f64,
    /// Factor on the output.
    pub post: f64,
    /// Smallest input (real) for the stated precision.
    pub lo: f64,
    /// Largest input (real).
    pub hi: f64,
    /// Fractional bits of the input.
    pub in_frac: u32,
    /// Fractional bits of the output.
    pub out_frac: u32,
    /// Last step.
    pub finish: Finish,
}

impl WideSpec {
    /// `func` on `[lo, hi]` with no pre/post factors or epsilon, exact
    /// finish.
    pub fn new(func: Func, lo: f64, hi: f64, in_frac: u32, out_frac: u32) -> Self {
        Self {
            func,
            pre: 1.0,
            eps: 0.0,
            post: 1.0,
            lo,
            hi,
            in_frac,
            out_frac,
            finish: Finish::Exact,
        }
    }

    /// The function on a real input (inputs below the smallest positive one
    /// are read at it when there is no epsilon).
    pub fn eval(&self, x: f64) -> f64 {
        let floor = if self.eps > 0.0 { 0.0 } else { self.lo };
        self.post * self.func.eval(self.pre * x.max(floor) + self.eps)
    }

    fn ring_lo(&self) -> u32 {
        (libm::floor(libm::log2(self.lo)) as i32 + self.in_frac as i32).max(0) as u32
    }

    /// Bits of the largest ring input (exclusive bound `2^H`).
    fn ring_hi(&self) -> u32 {
        (libm::floor(libm::log2(self.hi)) as i32 + self.in_frac as i32 + 2).max(1) as u32
    }

    /// The windows' top bits, top first (the last is the table window).
    pub fn shifts(&self, out: &mut [u32; MAX_WINDOWS]) -> Result<usize, ProtocolError> {
        let (l, h) = (self.ring_lo(), self.ring_hi());
        if h > 61 || !(self.lo > 0.0 && self.hi > self.lo) || l < UNIT_BITS || h < l + 4 {
            return Err(ProtocolError::BadParameter);
        }
        let mut w = 0;
        let mut t = h;
        // series windows down to one whose flag region (3 cells of
        // 2^(t - 5)) lies below `lo`: every input from `lo` up is read by a
        // series
        loop {
            *out.get_mut(w).ok_or(ProtocolError::BadParameter)? = t;
            w += 1;
            if t <= l + 3 {
                break;
            }
            t = t.saturating_sub(STEP).max(l + 3);
        }
        // the table window below `lo`: 32 cells of 2^(l - 4)
        *out.get_mut(w).ok_or(ProtocolError::BadParameter)? = l + 1;
        Ok(w + 1)
    }

    /// Checks that the op exists: its windows fit the ring and every grid
    /// is a valid cell lookup.
    pub fn check(&self) -> Result<(), ProtocolError> {
        let mut tops = [0u32; MAX_WINDOWS];
        let w = self.shifts(&mut tops)?;
        let fns: [WindowFn; MAX_WINDOWS] = core::array::from_fn(|_| WindowFn {
            spec: *self,
            floor: 0.0,
        });
        for g in self.grids(1, tops.get(..w).unwrap_or_default(), &fns)? {
            g.shape.check()?;
        }
        Ok(())
    }

    /// Output scale of the windows before the final truncation: as large as
    /// the output range allows.
    pub fn mid_frac(&self) -> u32 {
        if self.finish == Finish::Local {
            return self.out_frac + LOCAL_EXTRA;
        }
        let top = libm::fabs(self.eval(0.0))
            .max(libm::fabs(self.eval(self.lo)))
            .max(libm::fabs(self.eval(self.hi)))
            .max(1e-300);
        let bits = libm::ceil(libm::log2(top)).max(0.0) as u32;
        58u32.saturating_sub(bits).max(self.out_frac)
    }

    /// The plaintext reference: `G(x)` rounded at `out_frac` bits (the
    /// secure op is within the windows' fit of it, or one unit cell below
    /// `lo` for inputs off the unit grid).
    pub fn reference(&self, x: u64) -> u64 {
        let real = x as i64 as f64 / libm::exp2(self.in_frac as f64);
        let v = self.eval(real.max(0.0)) * libm::exp2(self.out_frac as f64);
        if v.is_finite() { libm::round(v) as i64 as u64 } else { 0 }
    }

    /// The grids of the windows with tops `tops`: the values (series, and
    /// the unit table last), then the flags of all but the last.
    fn grids<'a>(
        &self,
        n: usize,
        tops: &[u32],
        fns: &'a [WindowFn; MAX_WINDOWS],
    ) -> Result<heapless::Vec<CellGrid<'a>, { 2 * MAX_WINDOWS }>, ProtocolError> {
        let w = tops.len();
        let mid = self.mid_frac();
        let unit = libm::exp2(-(self.in_frac as f64));
        let mut grids = heapless::Vec::new();
        for (i, (&t, g)) in tops.iter().zip(fns.iter()).enumerate() {
            let last = i + 1 == w;
            // the window's largest value: at twice its cell width (its
            // selected range), or at 0 for the unit window
            let top_g = if last {
                libm::fabs(self.eval(0.0))
            } else {
                libm::fabs(self.eval(libm::exp2(t as f64 - CELL_BITS as f64 + 1.0) * unit))
            };
            // balance the words' rounding (2^(p - 1 - mid)) against the
            // basis' (top_g 2^-p)
            let p = if last {
                0
            } else {
                let best = (mid as f64 + libm::log2(top_g.max(1e-300))) / 2.0;
                (libm::round(best).clamp(0.0, 30.0) as u32).min(mid)
            };
            let shape = CellShape {
                n,
                l: t,
                kh: if last { UNIT_BITS } else { CELL_BITS },
                offset: 0,
                f: self.in_frac,
                p,
                out: mid,
                basis: if last { Basis::Step } else { Basis::Cheb(DEGREE) },
            };
            grids.push(CellGrid { shape, g }).map_err(|_| ProtocolError::BadShape)?;
        }
        for &t in tops.iter().take(w.saturating_sub(1)) {
            let shape = CellShape {
                n,
                l: t,
                kh: CELL_BITS,
                offset: 0,
                f: self.in_frac,
                p: 0,
                out: 0,
                basis: Basis::Step,
            };
            grids
                .push(CellGrid { shape, g: &FLAG })
                .map_err(|_| ProtocolError::BadShape)?;
        }
        Ok(grids)
    }
}

/// The dealer's function of a window's values: `G`, continued below half a
/// cell (where the window is never the selected one and `G` may not exist)
/// by its tangent there.
#[derive(Clone, Copy, Debug)]
struct WindowFn {
    spec: WideSpec,
    floor: f64,
}

impl CellFn for WindowFn {
    fn eval(&self, _cell: u64, x: f64) -> f64 {
        let sp = &self.spec;
        // the table window reads the function itself (clamped at `lo` when
        // it has no epsilon); a series window the unclamped function, which
        // is smooth above its floor
        if self.floor <= 0.0 {
            return sp.eval(x);
        }
        let raw = |x: f64| sp.post * sp.func.eval(sp.pre * x + sp.eps);
        if x >= self.floor {
            return raw(x);
        }
        let d = self.floor * 1e-6;
        let (g0, g1) = (raw(self.floor), raw(self.floor + d));
        g0 + (g1 - g0) / d * (x - self.floor)
    }
}

/// A window's flag: 1 on its cells below [`FLAG_CELLS`].
#[derive(Clone, Copy, Debug)]
struct Flag;

const FLAG: Flag = Flag;

impl CellFn for Flag {
    fn eval(&self, cell: u64, _x: f64) -> f64 {
        (cell < FLAG_CELLS) as u64 as f64
    }
}

/// `[t == 0]` for a small integer `t` (the prefix products of the flags).
#[derive(Clone, Copy, Debug)]
struct IsZero;

/// Grid of the prefix lookup: step 1, inputs in `[-16, 15)`.
const ZERO_K: u32 = 5;

impl Table for IsZero {
    fn outputs(&self) -> usize {
        1
    }
    fn has_slope(&self, _: usize) -> bool {
        false
    }
    fn segment(&self, y: u64, _: usize) -> (u64, u64) {
        (0, (y == 1 << (ZERO_K - 1)) as u64)
    }
}

/// Scratch words [`wide`] needs for `n` inputs.
pub fn scratch_len(n: usize) -> usize {
    n * (6 * MAX_WINDOWS + 2)
}

/// `out = G(x)` for `n` non-negative shared inputs; `scratch` holds
/// [`scratch_len`] words.
pub fn wide<P: Party + ?Sized>(
    p: &mut P,
    spec: &WideSpec,
    x: &[u64],
    out: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let n = x.len();
    let mut tops = [0u32; MAX_WINDOWS];
    let w = spec.shifts(&mut tops)?;
    let mid = spec.mid_frac();
    if out.len() != n || scratch.len() < scratch_len(n) || n == 0 {
        return Err(ProtocolError::BadBuffer.into());
    }
    let host = p.role().plays_host();
    let unit = libm::exp2(-(spec.in_frac as f64));
    let fns: [WindowFn; MAX_WINDOWS] = core::array::from_fn(|i| WindowFn {
        spec: *spec,
        // half a cell; none for the table window
        floor: if i + 1 < w {
            libm::exp2(tops.get(i).copied().unwrap_or(0) as f64 - CELL_BITS as f64 - 1.0) * unit
        } else {
            0.0
        },
    });
    let grids = spec.grids(n, &tops[..w], &fns)?;
    let gc = grids.len();
    let (outs, rest) = scratch.split_at_mut(n * gc);
    let (flags, rest) = rest.split_at_mut(n * (w - 1));
    let (diffs, rest) = rest.split_at_mut(n * (w - 1));
    let (prods, rest) = rest.split_at_mut(n * (w - 1));
    p.cells(&grids, x, outs)?;
    let value = |outs: &[u64], win: usize, i: usize| outs[i * gc + win];
    let flag = |outs: &[u64], win: usize, i: usize| outs[i * gc + w + win];
    // t_w = sum_(u <= w) (1 - f_u), host adds the ones
    for win in 0..w - 1 {
        for i in 0..n {
            let f = flag(outs, win, i);
            let prev = if win == 0 { 0 } else { flags[(win - 1) * n + i] };
            let one = if host { 1 } else { 0 };
            flags[win * n + i] = prev.wrapping_add(one).wrapping_sub(f);
            diffs[win * n + i] = value(outs, win + 1, i).wrapping_sub(value(outs, win, i));
        }
    }
    if w > 1 {
        let m = n * (w - 1);
        let zshape = LutShape {
            n: m,
            s: 0,
            k: ZERO_K,
            t: 0,
        };
        let (pre, _) = rest.split_at_mut(m);
        p.luts(
            &[LutJob {
                shape: zshape,
                table: &IsZero,
            }],
            flags,
            pre,
        )?;
        p.mul(pre, diffs, 1, prods)?;
    }
    let acc = &mut rest[..n];
    for i in 0..n {
        let mut v = value(outs, 0, i);
        for win in 0..w - 1 {
            v = v.wrapping_add(prods[win * n + i]);
        }
        acc[i] = v;
    }
    match spec.finish {
        // a steep function (the reciprocal down to one unit) may leave no
        // headroom above `out_frac`: the windows already output it
        Finish::Exact if mid == spec.out_frac => {
            out.copy_from_slice(acc);
            Ok(())
        }
        Finish::Exact => p.trunc(mid - spec.out_frac, acc, out),
        Finish::Local => {
            for (o, &v) in out.iter_mut().zip(acc.iter()) {
                *o = crate::protocol::trunc::local(v, mid - spec.out_frac);
            }
            Ok(())
        }
    }
}
