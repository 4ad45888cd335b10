//! Tables for the nonlinear ops: piecewise-linear fits of real functions on
//! the [`super::lut`] grid, and the exact ReLU / DReLU tables.
//!
//! A fitted segment is the chord of the function over the grid cell
//! `[x_y, x_y + 2^s)`, so the fit is continuous: evaluating the next cell's
//! chord (the lookup's carry) stays within the fit error. The output has
//! `out_frac` fractional bits (`2f` by default: truncate by `f` afterwards);
//! the slope is encoded per unit of `u = x' >> t` and the intercept is
//! anchored at the cell's start in exact integer arithmetic, so the rounding
//! of the slope costs at most one unit per cell.

use super::lut::{LutShape, Table};
use crate::ring::FixedPoint;

/// A real function to fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Func {
    /// `exp(x)`.
    Exp,
    /// GeLU `x Phi(x)` (exact, erf).
    Gelu,
    /// `1 / x` (on a positive range).
    Recip,
    /// `1 / sqrt(x)` (on a positive range).
    Rsqrt,
}

/// `exp` saturates above this input (so a softmax row cannot overflow the
/// ring: `e^16 2^16 < 2^40`).
pub const EXP_MAX: f64 = 16.0;

impl Func {
    /// The function's value (`exp` saturates at [`EXP_MAX`]).
    pub fn eval(self, x: f64) -> f64 {
        match self {
            Func::Exp => libm::exp(x.min(EXP_MAX)),
            Func::Gelu => 0.5 * x * (1.0 + libm::erf(x / core::f64::consts::SQRT_2)),
            Func::Recip => 1.0 / x,
            Func::Rsqrt => 1.0 / libm::sqrt(x),
        }
    }
}

/// Chord fit of a [`Func`] on the grid of a lookup shape.
#[derive(Clone, Copy, Debug)]
pub struct Pwl {
    /// The function.
    pub func: Func,
    /// Grid of the lookup.
    pub shape: LutShape,
    /// Fixed point of the input.
    pub fp: FixedPoint,
    /// Fractional bits of the output.
    pub out_frac: u32,
}

impl Pwl {
    /// A fit with output at `2f` bits.
    pub fn new(func: Func, shape: LutShape, fp: FixedPoint) -> Self {
        Self {
            func,
            shape,
            fp,
            out_frac: 2 * fp.frac_bits(),
        }
    }
}

/// The chord segment of `g` (a function of the ring input `x`, as a real)
/// on cell `y` of `shape`, per unit of `u`, at `out_frac` output bits.
pub fn chord_segment(shape: LutShape, y: u64, out_frac: u32, g: impl Fn(f64) -> f64) -> (u64, u64) {
    let cell = (1u64 << shape.s) as f64;
    let x0 = (y << shape.s).wrapping_sub(shape.offset()) as i64 as f64;
    let (g0, g1) = (g(x0), g(x0 + cell));
    let out = libm::exp2(out_frac as f64);
    let a = libm::round((g1 - g0) / cell * libm::exp2(shape.t as f64) * out) as i64 as u64;
    let u0 = (y << shape.s) >> shape.t;
    let b = (libm::round(g0 * out) as i64 as u64).wrapping_sub(a.wrapping_mul(u0));
    (a, b)
}

impl Table for Pwl {
    fn outputs(&self) -> usize {
        1
    }
    fn has_slope(&self, _: usize) -> bool {
        true
    }
    fn segment(&self, y: u64, _: usize) -> (u64, u64) {
        let scale = self.fp.scale();
        chord_segment(self.shape, y, self.out_frac, |x| self.func.eval(x / scale))
    }
}

/// Which outputs a [`ReluTable`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReluOut {
    /// ReLU only (at the input's scale).
    Relu,
    /// DReLU only (0 or 1).
    Drelu,
    /// Output 0 ReLU, output 1 DReLU.
    Both,
}

/// ReLU and DReLU: the slope is 1 on the non-negative half of the grid, 0
/// below.
#[derive(Clone, Copy, Debug)]
pub struct ReluTable {
    /// Grid of the lookup.
    pub shape: LutShape,
    /// Outputs.
    pub out: ReluOut,
}

impl ReluTable {
    fn is_relu(&self, o: usize) -> bool {
        match self.out {
            ReluOut::Relu => true,
            ReluOut::Drelu => false,
            ReluOut::Both => o == 0,
        }
    }
}

impl Table for ReluTable {
    fn outputs(&self) -> usize {
        if self.out == ReluOut::Both { 2 } else { 1 }
    }
    fn has_slope(&self, o: usize) -> bool {
        self.is_relu(o)
    }
    fn segment(&self, y: u64, o: usize) -> (u64, u64) {
        // u = x + offset (t = 0): relu(x) = pos (u - offset)
        let pos = (y >= 1 << (self.shape.k - 1)) as u64;
        let off = self.shape.offset() >> self.shape.t;
        if self.is_relu(o) {
            (pos, pos.wrapping_mul(off).wrapping_neg())
        } else {
            (0, pos)
        }
    }
}
