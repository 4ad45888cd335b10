//! Functions of a positive input over a wide dynamic range (reciprocal for
//! the attention rows, inverse square root for LayerNorm) in seven rounds:
//! windows select the input's scale, one product normalizes it, one cell
//! lookup ([`crate::protocol::cell`]) reads the function's series, one
//! product scales the result back.
//!
//! One cell structure cannot cover `[2^-16, 2^29]` with relative precision,
//! so one opening of `x` is read through `W - 1` windows (grids of one
//! cell lookup, one flight). Window `j` reads `x mod 2^t_j` with
//! [`CELL_BITS`] bits of cells of width `L_j = 2^(t_j - 5)`; the windows
//! are [`STEP`] bits apart, top first (`t_0 = M`). Each outputs its flag
//! `f_j = [cell < 3]` ("the input is too small for this window"), one word
//! per cell.
//!
//! The lookup reads an input's cell or the next one, so `f_j = 0` implies
//! `x >= 2 L_j` and `f_j = 1` implies `x < 3 L_j = 3/4 2^(t_j - 3)`: inside
//! the next window, below its top cell (which the lookup leaves out). The
//! right window is the first from the top whose flag is 0: the flags are
//! combined into prefix products `P_j = f_0 ... f_j` by one more lookup
//! (`P_j = [t_j = 0]` with `t_j = sum_(u <= j) (1 - f_u)`, a small integer,
//! on a 4-bit grid with step 1, 5 bits past 14 windows: exact), and window
//! `j` is selected by `sel_j = P_(j-1) - P_j` (exactly one is 1).
//!
//! With `k_j = M - t_j`, the selected window's input `x` lies in `[2 L_j,
//! 31 L_j)`, so `y = x 2^k_j` lies in the top window's `[2 L_0, 31 L_0)`:
//! one product `y = x sum_j sel_j 2^k_j` (exact) normalizes. For the
//! power functions `G(x) = post func(pre x)` (the reciprocal, the inverse
//! square root), `G(x) = post func(pre y) func(2^-k_j)`: one cell lookup on
//! `y` gives the series of `post func(pre y)` (degree [`DEGREE`] on 32
//! cells, fitted by the dealer on the interval each element's mask gives
//! it: accurate above `L_0`, where it varies by at most a factor 2), and one
//! product by `sum_j sel_j func(2^-k_j)` (exact powers of two for the
//! reciprocal, at 24 more bits for the inverse square root) scales it
//! back. A function with an epsilon, `post func(pre x + eps)`, reads `x +
//! eps / pre` (the host adds it, rounded to the input's unit).
//!
//! The series is read at as many fractional bits as its largest value
//! allows (its public basis with as many as balance the rounding of its
//! words against the rounding of the basis), then truncated (exact) to
//! leave the factors' range room in the ring; the output's scale is as
//! large as the largest value allows, so every value keeps its relative
//! precision. A final truncation brings the result to `out_frac`.
//!
//! The windows go down until the last one's flag region lies below `lo`,
//! so every input from `lo` up is read by the series. The inputs below it
//! (a row sum of zero, a LayerNorm row of almost zero variance, where `G`
//! stays finite by its epsilon) fall to a unit window of 32 cells of `lo /
//! 16` read as a table (the function at each cell's start, on the same
//! opening as the flags): exact for inputs on its grid (a sum of ReLUs
//! below one unit is 0), within one cell for the others. It is selected by
//! `P_(W-2)` (all flags 1), in the same round as the scaling product.
//!
//! Rounds: flags and unit window (1) + prefix lookup (1) + normalizing
//! product (1) + series (1) + its truncation (1) + scaling products (1) +
//! truncation (1, or 0 with [`Finish::Local`]). Bytes per input: one
//! opening (up to 8 each way), the prefix lookup (1 each way per window),
//! the series' opening (up to 8), three products (16 each way each), two
//! truncations (8 and 1 bit); dealer `32 + 16` words per window, 32 for the
//! unit window, `32 (DEGREE + 1)` for the series and a few for the
//! products and the truncations.

use super::{LutJob, Party};

use crate::ProtocolError;
use crate::protocol::cell::{Basis, CellFn, CellGrid, CellShape};
use crate::protocol::lut::{LutShape, Table};
use crate::protocol::pwl::Func;

/// Largest number of windows.
pub const MAX_WINDOWS: usize = 24;
/// Cell bits of a window (and of the series).
pub const CELL_BITS: u32 = 5;
/// A window's flag is 0 from this cell on.
pub const FLAG_CELLS: u64 = 3;
/// Bits between windows.
pub const STEP: u32 = 3;
/// Degree of the series.
pub const DEGREE: u32 = 5;
/// Cell bits of the last window (cells of `lo / 16`).
const UNIT_BITS: u32 = 5;
/// Extra bits of the windows' output over `out_frac` with a local finish.
pub const LOCAL_EXTRA: u32 = 8;

/// How the result is brought from the op's scale to `out_frac`.
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

    /// Checks that the op exists: its windows fit the ring, every grid is a
    /// valid cell lookup and the scales fit the ring.
    pub fn check(&self) -> Result<(), ProtocolError> {
        let mut tops = [0u32; MAX_WINDOWS];
        let w = self.shifts(&mut tops)?;
        let tops = tops.get(..w).unwrap_or_default();
        let sc = self.scales(tops)?;
        let unit = UnitFn::new(self);
        let mut grids = heapless::Vec::new();
        self.first_grids(1, tops, &sc, &unit, &mut grids)?;
        for g in &grids {
            g.shape.check()?;
        }
        self.series_shape(1, &sc)?.check()
    }

    /// `eps / pre` in ring units (the host adds it to the input, so that
    /// the function of the sum is a power of it: `G(x) = post func(pre (x +
    /// eps / pre))`).
    fn eps_ring(&self) -> u64 {
        if self.eps > 0.0 {
            libm::round(self.eps / self.pre * libm::exp2(self.in_frac as f64)) as u64
        } else {
            0
        }
    }

    /// The scales of the op for windows `tops`: see [`Scales`].
    fn scales(&self, tops: &[u32]) -> Result<Scales, ProtocolError> {
        let w = tops.len();
        let m = tops.first().copied().ok_or(ProtocolError::BadParameter)?;
        let last = tops
            .get(w.wrapping_sub(2))
            .copied()
            .ok_or(ProtocolError::BadParameter)?;
        let unit = libm::exp2(-(self.in_frac as f64));
        // the series' largest value, at twice its cell width
        let h_top = libm::fabs(self.power(libm::exp2(m as f64 - CELL_BITS as f64 + 1.0) * unit));
        let c_bits: u32 = match self.func {
            Func::Rsqrt => 24,
            _ => 0,
        };
        let c_max = libm::fabs(self.factor(m - last));
        let unit_max = libm::fabs(self.eval(0.0)).max(libm::fabs(self.eval(self.lo)));
        let top = (c_max * h_top).max(unit_max).max(1e-300);
        let bits = libm::ceil(libm::log2(top)) as i32;
        let mut g = 61 - bits.max(-60);
        if self.finish == Finish::Local {
            g = g.min((self.out_frac + LOCAL_EXTRA) as i32);
        }
        let h_frac = g - c_bits as i32;
        // the series itself as large as its top allows, truncated to h_frac
        let s_frac = (60 - libm::ceil(libm::log2(h_top.max(1e-300))) as i32).min(62);
        if !h_top.is_finite() || !c_max.is_finite() || !(1..=62).contains(&h_frac) || g > 62 || s_frac < h_frac {
            return Err(ProtocolError::BadParameter);
        }
        // balance the words' rounding (2^(p - 1 - s)) against the basis'
        // (h_top 2^-p)
        let best = (s_frac as f64 + libm::log2(h_top.max(1e-300))) / 2.0;
        let p = (libm::round(best).clamp(0.0, 30.0) as u32).min(s_frac as u32);
        Ok(Scales {
            g_frac: g as u32,
            h_frac: h_frac as u32,
            s_frac: s_frac as u32,
            c_bits,
            p,
            m,
        })
    }

    /// `post func(pre x)` (no epsilon: the input carries it).
    fn power(&self, x: f64) -> f64 {
        self.post * self.func.eval(self.pre * x)
    }

    /// `func(2^-k)`: the factor of a window `k` bits below the top.
    fn factor(&self, k: u32) -> f64 {
        self.func.eval(libm::exp2(-(k as f64)))
    }

    /// The plaintext reference: `G(x)` rounded at `out_frac` bits (the
    /// secure op is within the series' fit of it, or one unit cell below
    /// `lo` for inputs off the unit grid).
    pub fn reference(&self, x: u64) -> u64 {
        let real = x as i64 as f64 / libm::exp2(self.in_frac as f64);
        let v = self.eval(real.max(0.0)) * libm::exp2(self.out_frac as f64);
        if v.is_finite() { libm::round(v) as i64 as u64 } else { 0 }
    }

    /// The grids read on the input's opening, into `grids` (filled in
    /// place: a returned list would be copied on a microcontroller's
    /// stack): the unit window's table (at the output scale `g_frac` of the
    /// op's [`Scales`] `sc`), then the flags of the series windows
    /// `tops[..w-1]`.
    fn first_grids<'a>(
        &self,
        n: usize,
        tops: &[u32],
        sc: &Scales,
        unit: &'a UnitFn,
        grids: &mut heapless::Vec<CellGrid<'a>, MAX_WINDOWS>,
    ) -> Result<(), ProtocolError> {
        let w = tops.len();
        grids.clear();
        let t_unit = tops.last().copied().ok_or(ProtocolError::BadParameter)?;
        let shape = CellShape {
            n,
            l: t_unit,
            kh: UNIT_BITS,
            offset: 0,
            f: self.in_frac,
            p: 0,
            out: sc.g_frac,
            basis: Basis::Step,
            pre: 0,
        };
        grids
            .push(CellGrid { shape, g: unit })
            .map_err(|_| ProtocolError::BadShape)?;
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
                pre: 0,
            };
            grids
                .push(CellGrid { shape, g: &FLAG })
                .map_err(|_| ProtocolError::BadShape)?;
        }
        Ok(())
    }

    /// The series on the normalized input (the top window's cells).
    fn series_shape(&self, n: usize, sc: &Scales) -> Result<CellShape, ProtocolError> {
        let shape = CellShape {
            n,
            l: sc.m,
            kh: CELL_BITS,
            offset: 0,
            f: self.in_frac,
            p: sc.p,
            out: sc.s_frac,
            basis: Basis::Cheb(DEGREE),
            pre: 0,
        };
        shape.check()?;
        Ok(shape)
    }
}

/// The scales of a wide op. The selected window `j` (`k_j = M - t_j` bits
/// below the top window `M`) normalizes the input to `y = x 2^k_j`, in
/// the top window's range, and `G(x) = post func(pre y) func(2^-k_j)`: the
/// series of `post func(pre y)` (read at `s_frac` bits, as large as its
/// top allows, then truncated to `h_frac`) times the window's factor at
/// `c_bits` bits (exact powers of two for the reciprocal) gives `G` at
/// `g_frac = h_frac + c_bits` bits, as large as the output range allows.
#[derive(Clone, Copy, Debug)]
struct Scales {
    g_frac: u32,
    h_frac: u32,
    s_frac: u32,
    c_bits: u32,
    p: u32,
    m: u32,
}

/// The unit window's function: `G` of the input without the epsilon the
/// host added (`eps`, real).
#[derive(Clone, Copy, Debug)]
struct UnitFn {
    spec: WideSpec,
    eps: f64,
}

impl UnitFn {
    fn new(spec: &WideSpec) -> Self {
        Self {
            spec: *spec,
            eps: spec.eps_ring() as f64 * libm::exp2(-(spec.in_frac as f64)),
        }
    }
}

impl CellFn for UnitFn {
    fn eval(&self, _cell: u64, x: f64) -> f64 {
        self.spec.eval((x - self.eps).max(0.0))
    }
}

/// The dealer's function of the series on the normalized input: `post
/// func(pre y)`, continued below half a cell (where no selected input
/// falls and it may not exist) by its tangent there.
#[derive(Clone, Copy, Debug)]
struct SeriesFn {
    spec: WideSpec,
    floor: f64,
}

impl CellFn for SeriesFn {
    fn eval(&self, _cell: u64, x: f64) -> f64 {
        let sp = &self.spec;
        // the unclamped power, smooth above the floor
        let raw = |x: f64| sp.power(x);
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

/// `[t == 0]` for a small integer `t >= 0` (the prefix products of the
/// flags), read as `t - (2^(k-1) - 1)` on a grid of step 1 ([`zero_k`]
/// bits): `t = 0` is index 1.
#[derive(Clone, Copy, Debug)]
struct IsZero;

/// Index bits of the prefix lookup for `w` windows: the grid holds `t`
/// in `[0, 2^k - 2)`, and `t <= w - 1`.
fn zero_k(w: usize) -> u32 {
    if w <= 14 { 4 } else { 5 }
}

impl Table for IsZero {
    fn outputs(&self) -> usize {
        1
    }
    fn has_slope(&self, _: usize) -> bool {
        false
    }
    fn segment(&self, y: u64, _: usize) -> (u64, u64) {
        (0, (y == 1) as u64)
    }
}

/// Scratch words [`wide`] needs for `n` inputs.
pub fn scratch_len(n: usize) -> usize {
    n * (3 * MAX_WINDOWS + 10)
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
    let tops = &tops[..w];
    if out.len() != n || scratch.len() < scratch_len(n) || n == 0 || w < 2 {
        return Err(ProtocolError::BadBuffer.into());
    }
    let sc = spec.scales(tops)?;
    let host = p.role().plays_host();
    let unit_fn = UnitFn::new(spec);
    let mut grids = heapless::Vec::new();
    spec.first_grids(n, tops, &sc, &unit_fn, &mut grids)?;
    let (xp, rest) = scratch.split_at_mut(n);
    let (outs, rest) = rest.split_at_mut(n * w);
    let (ts, rest) = rest.split_at_mut(n * (w - 1));
    let (pre, rest) = rest.split_at_mut(n * (w - 1));
    let (s_norm, rest) = rest.split_at_mut(n);
    // the scaling products' operands: [E | sel_unit] times [h | v_unit]
    let (fac, rest) = rest.split_at_mut(2 * n);
    let (val, rest) = rest.split_at_mut(2 * n);
    let (prods, rest) = rest.split_at_mut(2 * n);
    let (y, rest) = rest.split_at_mut(n);
    let (hs, _) = rest.split_at_mut(n);
    // 1. the input with the epsilon (host), read through the unit window
    //    and every series window's flag
    let eps = if host { spec.eps_ring() } else { 0 };
    for (o, &v) in xp.iter_mut().zip(x) {
        *o = v.wrapping_add(eps);
    }
    p.cells(&grids, xp, outs)?;
    // 2. t_j = sum_(u <= j) (1 - f_u) (host adds the ones), P_j = [t_j = 0]
    //    (the host starts the sums at -(2^(k-1) - 1), the grid's offset)
    let zk = zero_k(w);
    let base = if host { (1u64 << (zk - 1)) - 1 } else { 0 };
    for j in 0..w - 1 {
        for i in 0..n {
            let f = outs[i * w + 1 + j];
            let prev = if j == 0 {
                base.wrapping_neg()
            } else {
                ts[(j - 1) * n + i]
            };
            ts[j * n + i] = prev.wrapping_add(host as u64).wrapping_sub(f);
        }
    }
    let zshape = LutShape {
        n: n * (w - 1),
        s: 0,
        k: zk,
        t: 0,
    };
    p.luts(
        &[LutJob {
            shape: zshape,
            table: &IsZero,
        }],
        ts,
        pre,
    )?;
    // the selection of window j: P_(j-1) - P_j (P_(-1) = 1); the unit
    // window's is P_(w-2). S = sum sel_j 2^k_j normalizes, E = sum sel_j
    // c_j scales back (c_j at c_bits, one per window).
    let shift = |j: usize| sc.m - tops[j];
    let cfac: [u64; MAX_WINDOWS] = core::array::from_fn(|j| {
        let k = if j + 1 < w { shift(j) } else { 0 };
        libm::round(spec.factor(k) * libm::exp2(sc.c_bits as f64)) as u64
    });
    let (e_fac, sel_unit) = fac.split_at_mut(n);
    for i in 0..n {
        let (mut sn, mut ef) = (0u64, 0u64);
        for j in 0..w - 1 {
            let prev = if j == 0 { host as u64 } else { pre[(j - 1) * n + i] };
            let sel = prev.wrapping_sub(pre[j * n + i]);
            sn = sn.wrapping_add(sel << shift(j));
            ef = ef.wrapping_add(sel.wrapping_mul(cfac[j]));
        }
        s_norm[i] = sn;
        e_fac[i] = ef;
        sel_unit[i] = pre[(w - 2) * n + i];
    }
    // 3. y = x S, in the top window's range
    p.mul(xp, s_norm, 1, y)?;
    // 4. the series of post func(pre y) on the top window's cells
    let series = SeriesFn {
        spec: *spec,
        floor: libm::exp2(sc.m as f64 - CELL_BITS as f64 - 1.0) * libm::exp2(-(spec.in_frac as f64)),
    };
    let (h, v_unit) = val.split_at_mut(n);
    let shape = spec.series_shape(n, &sc)?;
    // 5. to h_frac, so that the factor's range fits beside it
    if sc.s_frac > sc.h_frac {
        crate::ops::cell(p, shape, &series, y, hs)?;
        p.trunc(sc.s_frac - sc.h_frac, hs, h)?;
    } else {
        crate::ops::cell(p, shape, &series, y, h)?;
    }
    // 6. G = E h + sel_unit v_unit, one flight
    for (i, v) in v_unit.iter_mut().enumerate() {
        *v = outs[i * w];
    }
    p.mul(fac, val, 1, prods)?;
    let acc = y;
    for i in 0..n {
        acc[i] = prods[i].wrapping_add(prods[n + i]);
    }
    let g = sc.g_frac;
    match spec.finish {
        Finish::Exact if g == spec.out_frac => {
            out.copy_from_slice(acc);
            Ok(())
        }
        Finish::Exact | Finish::Local if g < spec.out_frac => {
            for (o, &v) in out.iter_mut().zip(acc.iter()) {
                *o = v << (spec.out_frac - g);
            }
            Ok(())
        }
        Finish::Exact => p.trunc(g - spec.out_frac, acc, out),
        Finish::Local => {
            for (o, &v) in out.iter_mut().zip(acc.iter()) {
                *o = crate::protocol::trunc::local(v, g - spec.out_frac);
            }
            Ok(())
        }
    }
}
