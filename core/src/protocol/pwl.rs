//! Tables for the nonlinear ops: piecewise-linear fits of real functions on
//! the [`super::lut`] grid, and the exact ReLU / DReLU tables.
//!
//! A fitted segment is the chord of the function over the grid cell
//! `[x_y, x_y + 2^s)`, so the fit is continuous: evaluating the next cell's
//! chord (the lookup's carry) stays within the fit error. Slopes are encoded
//! with `f` fractional bits and intercepts with `2f`, so a fitted output has
//! the product scale `2f` and is truncated by `f` afterwards.

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

impl Func {
    /// The function's value.
    pub fn eval(self, x: f64) -> f64 {
        match self {
            Func::Exp => libm::exp(x),
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
}

impl Pwl {
    /// The real input at the left edge of grid cell `y`.
    pub fn cell_start(&self, y: u64) -> f64 {
        let ring = (y << self.shape.s).wrapping_sub(self.shape.offset()) as i64;
        ring as f64 / self.fp.scale()
    }

    /// Real `(a, b)` of the chord on cell `y`.
    pub fn chord(&self, y: u64) -> (f64, f64) {
        let h = (1u64 << self.shape.s) as f64 / self.fp.scale();
        let x0 = self.cell_start(y);
        let (g0, g1) = (self.func.eval(x0), self.func.eval(x0 + h));
        let a = (g1 - g0) / h;
        (a, g0 - a * x0)
    }
}

impl Table for Pwl {
    fn outputs(&self) -> usize {
        1
    }
    fn has_slope(&self, _: usize) -> bool {
        true
    }
    fn segment(&self, y: u64, _: usize) -> (u64, u64) {
        let (a, b) = self.chord(y);
        (self.fp.encode(a), self.fp.encode_double(b))
    }
}

/// ReLU (output 0, at the input's scale) and DReLU (output 1, 0 or 1): the
/// slope is 1 on the non-negative half of the grid, 0 below.
#[derive(Clone, Copy, Debug)]
pub struct ReluTable {
    /// Grid of the lookup.
    pub shape: LutShape,
}

impl Table for ReluTable {
    fn outputs(&self) -> usize {
        2
    }
    fn has_slope(&self, o: usize) -> bool {
        o == 0
    }
    fn segment(&self, y: u64, o: usize) -> (u64, u64) {
        let pos = (y >= 1 << (self.shape.k - 1)) as u64;
        if o == 0 { (pos, 0) } else { (0, pos) }
    }
}
