//! Functions of a positive input over a wide dynamic range (reciprocal for
//! softmax, inverse square root for LayerNorm) in three round trips.
//!
//! One lookup grid cannot cover `[2^-8, 2^12]` with relative precision, so
//! the input is read through `W` windows of `k` bits at shifts
//! `s_0 > s_1 > ...`, `k - g` bits apart (all lookups share one flight).
//! Window `w` fits `G` by chords on its own grid and, except the last, also
//! outputs the flag `f_w = [digit_w < 2^g - 1]` ("the input is too small for
//! this window"). A window whose flag is 0 sees its leading digit at least
//! `2^g - 2`, so its chord has relative error about `2^-2g`. The right
//! window is the first (from the top) whose flag is 0. A window below it may
//! see its digit wrapped (its flag is then meaningless), so the flags are
//! combined into prefix products `P_w = f_0 ... f_w` by one more lookup:
//! `P_w = [t_w = 0]` with `t_w = sum_(u <= w) (1 - f_u)`, a small integer, on
//! a 5-bit grid with step 1 (exact: no carry). Then
//! `G ~ v_0 + sum_w P_w (v_(w+1) - v_w)`: one round of products, all in
//! parallel. A final exact truncation brings the result to `out_frac`.
//!
//! Rounds: window lookups (1) + prefix lookup (1) + products (1) +
//! truncation (1, or 0 with [`Finish::Local`]).

use super::{LutJob, Party};

use crate::ProtocolError;
use crate::protocol::lut::{LutShape, Table};
use crate::protocol::pwl::{Func, chord_segment};

/// Largest number of windows.
pub const MAX_WINDOWS: usize = 12;
/// Resolution of the linear term inside a cell: `2^SUB_BITS` units.
const SUB_BITS: u32 = 8;
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
    /// Index bits per window.
    pub k: u32,
    /// Guard bits.
    pub g: u32,
    /// Last step.
    pub finish: Finish,
}

impl WideSpec {
    /// `func` on `[lo, hi]` with no pre/post factors or epsilon, 10-bit
    /// windows with 6 guard bits, exact finish.
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
            k: 10,
            g: 6,
            finish: Finish::Exact,
        }
    }

    /// The function on a real input.
    pub fn eval(&self, x: f64) -> f64 {
        self.post * self.func.eval(self.pre * x + self.eps)
    }

    fn ring_lo(&self) -> u32 {
        (libm::floor(libm::log2(self.lo)) as i32 + self.in_frac as i32).max(0) as u32
    }

    /// Bits of the largest ring input (exclusive bound `2^H`).
    fn ring_hi(&self) -> u32 {
        (libm::floor(libm::log2(self.hi)) as i32 + self.in_frac as i32 + 2).max(1) as u32
    }

    /// Window shifts, top first.
    pub fn shifts(&self, out: &mut [u32; MAX_WINDOWS]) -> Result<usize, ProtocolError> {
        let (l, h) = (self.ring_lo(), self.ring_hi());
        if self.g == 0 || self.g + 2 > self.k || h <= self.k || h > 61 || !(self.lo > 0.0 && self.hi > self.lo) {
            return Err(ProtocolError::BadParameter);
        }
        let step = self.k - self.g;
        let mut s = h - self.k;
        let mut w = 0;
        loop {
            *out.get_mut(w).ok_or(ProtocolError::BadParameter)? = s;
            w += 1;
            if s + self.g <= l + 1 || s == 0 {
                return Ok(w);
            }
            s = s.saturating_sub(step);
        }
    }

    /// Output scale of the windows before the final truncation: as large as
    /// the output range allows.
    pub fn mid_frac(&self) -> u32 {
        if self.finish == Finish::Local {
            return self.out_frac + LOCAL_EXTRA;
        }
        let top = libm::fabs(self.eval(self.lo))
            .max(libm::fabs(self.eval(self.hi)))
            .max(1e-300);
        let bits = libm::ceil(libm::log2(top)).max(0.0) as u32;
        58u32.saturating_sub(bits).max(self.out_frac)
    }

    /// The plaintext reference at the exact grid (no carries): what the
    /// secure op computes up to one cell of a window.
    pub fn reference(&self, x: u64) -> u64 {
        let mut sh = [0u32; MAX_WINDOWS];
        let Ok(w) = self.shifts(&mut sh) else { return 0 };
        let mid = self.mid_frac();
        let mut pick = None;
        for (i, &s) in sh.iter().take(w).enumerate() {
            let t = Window {
                spec: *self,
                s,
                last: i + 1 == w,
                mid,
            };
            let y = (x >> s) & ((1 << self.k) - 1);
            if i + 1 == w || t.flag(y) == 0 {
                pick = Some((t, y));
                break;
            }
        }
        let Some((t, y)) = pick else { return 0 };
        let (a, b) = t.segment(y, 0);
        let v = a.wrapping_mul(x >> t.shape(1).t).wrapping_add(b);
        crate::reference::trunc(v, mid - self.out_frac)
    }
}

/// The lookup table of one window.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    spec: WideSpec,
    s: u32,
    last: bool,
    mid: u32,
}

impl Window {
    fn flag(&self, y: u64) -> u64 {
        (y + 1 < (1 << self.spec.g)) as u64
    }

    fn shape(&self, n: usize) -> LutShape {
        LutShape {
            n,
            s: self.s,
            k: self.spec.k,
            t: self.s.saturating_sub(SUB_BITS),
        }
    }
}

impl Table for Window {
    fn outputs(&self) -> usize {
        if self.last { 1 } else { 2 }
    }
    fn has_slope(&self, o: usize) -> bool {
        o == 0
    }
    fn segment(&self, y: u64, o: usize) -> (u64, u64) {
        if o == 1 {
            return (0, self.flag(y));
        }
        let sp = &self.spec;
        let unit = libm::exp2(sp.in_frac as f64);
        let (lo, hi) = (sp.lo * unit, sp.hi * unit);
        let shape = self.shape(1);
        let off = shape.offset() as f64;
        // the lookup input is v - offset; G is clamped to [lo, hi]
        chord_segment(shape, y, self.mid, |x| sp.eval((x + off).clamp(lo, hi) / unit))
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
    n * (7 * MAX_WINDOWS + 2)
}

/// `out = G(x)` for `n` positive shared inputs; `scratch` holds
/// [`scratch_len`] words.
pub fn wide<P: Party + ?Sized>(
    p: &mut P,
    spec: &WideSpec,
    x: &[u64],
    out: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let n = x.len();
    let mut sh = [0u32; MAX_WINDOWS];
    let w = spec.shifts(&mut sh)?;
    let mid = spec.mid_frac();
    if out.len() != n || scratch.len() < scratch_len(n) || n == 0 {
        return Err(ProtocolError::BadBuffer.into());
    }
    let host = p.role().plays_host();
    let (inputs, rest) = scratch.split_at_mut(n * w);
    let (outs, rest) = rest.split_at_mut(n * 2 * w);
    let (flags, rest) = rest.split_at_mut(n * (w - 1));
    let (diffs, rest) = rest.split_at_mut(n * (w - 1));
    let (prods, rest) = rest.split_at_mut(n * (w - 1));
    let windows: [Window; MAX_WINDOWS] = core::array::from_fn(|i| Window {
        spec: *spec,
        s: sh.get(i).copied().unwrap_or(0),
        last: i + 1 == w,
        mid,
    });
    for (i, win) in windows.iter().take(w).enumerate() {
        let off = 1u64 << (win.s + spec.k - 1);
        for (d, &v) in inputs[i * n..(i + 1) * n].iter_mut().zip(x) {
            *d = if host { v.wrapping_sub(off) } else { v };
        }
    }
    let jobs: [LutJob<'_>; MAX_WINDOWS] = core::array::from_fn(|i| LutJob {
        shape: windows[i].shape(n),
        table: &windows[i],
    });
    let total: usize = jobs.iter().take(w).map(|j| j.out_len()).sum();
    p.luts(&jobs[..w], inputs, &mut outs[..total])?;
    // values v_w[i] and flags f_w[i] out of the lookup outputs
    let base = |win: usize| -> usize { (0..win).map(|v| n * windows[v].outputs()).sum() };
    let value = |outs: &[u64], win: usize, i: usize| outs[base(win) + i * windows[win].outputs()];
    // t_w = sum_(u <= w) (1 - f_u), host adds the ones
    for win in 0..w - 1 {
        for i in 0..n {
            let f = outs[base(win) + 2 * i + 1];
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
    let acc = &mut inputs[..n];
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
