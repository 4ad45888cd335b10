//! Cell lookup: a smooth function of a masked input, by cells on the top
//! bits of the opening and a short series in the public low bits. One
//! round, a few bytes each way, `2^kh (K + 1)` dealer words per element.
//!
//! # Law
//! Shape `(l, kh, offset, basis)`, input `t` (ring units, `f` fractional
//! bits) with `t' = t + offset` in `[0, 2^l - 2^se)`, `se = l - kh` (the top
//! cell is left out). The output is `G(t)` at `out` fractional bits, where
//! `G` is the dealer's function ([`CellFn`]), within the fit's error (the
//! dealer fits each element on the exact interval its mask gives it) plus
//! the rounding stated in [`CellShape::error_bound`].
//!
//! # Protocol
//! Correlation per element: a random `r` (both shares seeded; only
//! `r mod 2^l` matters), `R = r >> se`, `r_L = r mod 2^se`, and derived
//! words `W[j][m]` for every read index `j` in `[0, 2^kh)` and term `m`.
//! 1. Both parties send `t_b + r_b (+ offset, host)` modulo `2^l`
//!    (`ceil(l / 8)` bytes): both learn `c = t' + r mod 2^l`, uniform.
//! 2. With `C = c >> se` and `c_L = c mod 2^se`: `t' = (C - R) 2^se + c_L -
//!    r_L (mod 2^l)`. Read as the cell `v = (C - R) mod 2^kh` and the
//!    offset `z = c_L - r_L` in `(-2^se, 2^se)`, this is exact for every
//!    `t'` below the top cell (a borrow of the low part moves the read to
//!    the next cell and makes `z` negative, and `v 2^se + z` is still
//!    `t'`). For cell `v` the dealer knows the real interval
//!    `[xi, xi + Lw)`, `xi = v 2^se - offset - r_L` (in real units), that
//!    `c_L` in `[0, 2^se)` maps to, and deals the series of `G` on it in a
//!    public basis of `c_L`: `W[j][m]` for `v = (j - R) mod 2^kh`.
//! 3. Each party outputs `sum_m P_m(c_L) W_b[C][m]`, with the public
//!    basis `P_m` computed identically by both in integers:
//!    * [`Basis::Cheb`]: Chebyshev polynomials `T_m(u)`, `u = 2 c_L / 2^se
//!      - 1` in `[-1, 1)`, at `p` fractional bits (the dealer interpolates
//!      `G` at `K + 1` Chebyshev nodes of its interval);
//!    * [`Basis::Exp`]: `P_0 = exp(c_L)` at `p` bits, one term, and the
//!      dealer's word is `G(xi)` with `G` an exponential (possibly clamped
//!      above): `exp(c_L) exp(xi) = exp(t)` exactly.
//!
//! Security: `c` is uniform; the host's words are masked by the device's
//! seeded words; nobody learns `R` or `r_L`.
//!
//! An input at `pre` more fractional bits (a product before its
//! truncation) is read without a truncation op, as in
//! [`crate::protocol::cmp`]: each party opens `((t_b + r_b) mod 2^64) >>
//! pre`, the dealer's mask is `r >> pre`, and the lookup reads `floor(t /
//! 2^pre) + e`, `e` in `{-1, 0, 1}`.
//!
//! # Cost per element
//! One round; `ceil(l / 8)` bytes each way; dealer -> host `2^kh (K + 1)`
//! words (`K = 0` for [`Basis::Exp`]). The device reads `K + 1` seeded
//! words at a random position (one or two keystream blocks).

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::wire;

/// Random lane `r`.
pub const LANE_R: u32 = 0;
/// Derived lane of the words.
pub const LANE_W: u32 = 1;

/// Largest series degree.
pub const MAX_DEGREE: u32 = 15;
/// Largest number of cell bits.
pub const MAX_KH: u32 = 6;

/// The public basis of the low bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Basis {
    /// Chebyshev polynomials `T_0 .. T_K` of the cell coordinate.
    Cheb(u32),
    /// `exp` of the low part (one term).
    Exp,
    /// One constant per cell: the dealer's function at the cell's start
    /// (a table with the lookup's carry: an input in cell `y` reads cell
    /// `y` or `y + 1`; exact for inputs on a cell's start).
    Step,
}

impl Basis {
    /// Terms per cell.
    pub fn terms(self) -> usize {
        match self {
            Basis::Cheb(k) => k as usize + 1,
            Basis::Exp | Basis::Step => 1,
        }
    }
}

/// Shape of a cell lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CellShape {
    /// Elements.
    pub n: usize,
    /// Bits of the opening.
    pub l: u32,
    /// Cell bits (the top `kh` bits of the opening).
    pub kh: u32,
    /// Added to the input (ring units): `0` for non-negative inputs.
    pub offset: u64,
    /// Fractional bits of the input.
    pub f: u32,
    /// Fractional bits of the public basis values.
    pub p: u32,
    /// Fractional bits of the output (the dealer's words carry `out - p`).
    pub out: u32,
    /// The basis.
    pub basis: Basis,
    /// Fractional bits the input carries beyond `f` (`0`: none), dropped
    /// by the opening, as in [`crate::protocol::cmp`]: the lookup reads
    /// `floor(t / 2^pre) + e`, `e` in `{-1, 0, 1}`.
    pub pre: u32,
}

/// A real function dealt per cell (the dealer's side of a cell lookup).
pub trait CellFn {
    /// [`Basis::Cheb`]: `G(x)` at the real `x`; [`Basis::Exp`]: the cell
    /// factor at the interval's start `xi` (the output is `exp(c_L)` times
    /// it). `cell` is the cell index `v` (a function may treat cells
    /// differently, e.g. the top one).
    fn eval(&self, cell: u64, x: f64) -> f64;
    /// Whether `G` is zero on all of `[lo, hi)` (the dealer skips the fit).
    fn zero_on(&self, _cell: u64, _lo: f64, _hi: f64) -> bool {
        false
    }
    /// An interval on which `G` is analytic and the same for every cell:
    /// the dealer then evaluates it there through a piecewise Chebyshev
    /// interpolant built once per op ([`Smooth`]), not per node.
    fn smooth_on(&self) -> Option<(f64, f64)> {
        None
    }
}

/// Pieces of a [`Smooth`] interpolant.
const SMOOTH_PIECES: usize = 64;
/// Nodes per piece (degree 9).
const SMOOTH_NODES: usize = 10;

/// A function's piecewise Chebyshev interpolant on `[lo, hi)`: 64 pieces
/// of degree 9, about 5 KB, built by the dealer once per op from 640
/// evaluations; a node then costs a Clenshaw sum instead of the function
/// (GeLU's tail is `erfc`: most of a fit's cost). For an analytic function
/// on pieces of width `h` the interpolant's error is of order `(h / 4)^10 /
/// 10!` times the tenth derivative, far below the fits' rounding.
pub struct Smooth<'a> {
    g: &'a dyn CellFn,
    lo: f64,
    hi: f64,
    inv_h: f64,
    coef: [[f64; SMOOTH_NODES]; SMOOTH_PIECES],
}

impl<'a> Smooth<'a> {
    /// The interpolant of `g` on its [`CellFn::smooth_on`] interval (`None`
    /// if it has none or the interval is empty).
    pub fn new(g: &'a dyn CellFn) -> Option<Self> {
        let (lo, hi) = g.smooth_on()?;
        if !(lo < hi && lo.is_finite() && hi.is_finite()) {
            return None;
        }
        let h = (hi - lo) / SMOOTH_PIECES as f64;
        let cheb = ChebTable::new(Basis::Cheb(SMOOTH_NODES as u32 - 1));
        let mut coef = [[0f64; SMOOTH_NODES]; SMOOTH_PIECES];
        for (i, c) in coef.iter_mut().enumerate() {
            let a = lo + i as f64 * h;
            let mut vals = [0f64; SMOOTH_NODES];
            for (s, &u) in vals.iter_mut().zip(cheb.nodes.iter()) {
                *s = g.eval(0, a + (u + 1.0) * 0.5 * h);
            }
            for (w, row) in c.iter_mut().zip(cheb.dct.iter()) {
                *w = row.iter().zip(vals.iter()).map(|(d, s)| d * s).sum();
            }
        }
        Some(Self {
            g,
            lo,
            hi,
            inv_h: 1.0 / h,
            coef,
        })
    }
}

impl CellFn for Smooth<'_> {
    fn eval(&self, cell: u64, x: f64) -> f64 {
        if !(x >= self.lo && x < self.hi) {
            return self.g.eval(cell, x);
        }
        let t = (x - self.lo) * self.inv_h;
        let i = (t as usize).min(SMOOTH_PIECES - 1);
        let u = 2.0 * (t - i as f64) - 1.0;
        let c = self.coef.get(i).copied().unwrap_or_default();
        // Clenshaw: sum c_m T_m(u)
        let (mut b1, mut b2) = (0f64, 0f64);
        for &cm in c.iter().skip(1).rev() {
            let b0 = cm + 2.0 * u * b1 - b2;
            b2 = b1;
            b1 = b0;
        }
        c.first().copied().unwrap_or(0.0) + u * b1 - b2
    }
    fn zero_on(&self, cell: u64, lo: f64, hi: f64) -> bool {
        self.g.zero_on(cell, lo, hi)
    }
}

impl CellShape {
    /// Bits of the low part.
    pub fn se(self) -> u32 {
        self.l - self.kh
    }

    /// Cells.
    pub fn cells(self) -> usize {
        1usize << self.kh
    }

    /// Real width of a cell.
    pub fn width(self) -> f64 {
        crate::ring::pow2(self.se() as i32 - self.f as i32)
    }

    /// Bytes per element of the opening.
    pub fn width_bytes(self) -> usize {
        (self.l as usize).div_ceil(8)
    }

    /// Bytes each party sends.
    pub fn msg_len(self) -> usize {
        wire::narrow_len(self.n, self.width_bytes())
    }

    /// Correction words per element.
    pub fn words_per_elem(self) -> usize {
        self.cells() * self.basis.terms()
    }

    /// Correction words the host receives.
    pub fn corrections(self) -> usize {
        self.n * self.words_per_elem()
    }

    /// Checks the parameters.
    pub fn check(self) -> Result<(), ProtocolError> {
        let degree_ok = match self.basis {
            Basis::Cheb(k) => k <= MAX_DEGREE,
            Basis::Exp | Basis::Step => true,
        };
        if self.n == 0
            || !(2..=62).contains(&self.l)
            || !(1..=MAX_KH).contains(&self.kh)
            || self.kh >= self.l
            || !degree_ok
            || self.p > 30
            || self.out < self.p
            || self.out > 62
            || self.offset >= 1u64 << self.l
            || self.l + self.pre > 64
        {
            return Err(ProtocolError::BadShape);
        }
        self.n
            .checked_mul(self.words_per_elem())
            .and_then(|w| w.checked_mul(8))
            .map(|_| ())
            .ok_or(ProtocolError::BadShape)
    }

    /// Whether `t` (ring, at `f + pre` bits) is in the input range (every
    /// value the lookup may read is).
    pub fn in_range(self, t: u64) -> bool {
        super::trunc::opened_reads(t, self.pre)
            .all(|v| v.wrapping_add(self.offset) < (1u64 << self.l) - (1u64 << self.se()))
    }

    /// The real input at cell `v`, coordinate `c_l - r_l`.
    fn real(self, v: u64, c_l: f64, r_l: u64) -> f64 {
        ((v << self.se()) as f64 - self.offset as f64 + c_l - r_l as f64) * crate::ring::pow2(-(self.f as i32))
    }

    /// Bound on the rounding error of the output (real units), beyond the
    /// fit's: each of the `K + 1` words is rounded (half a unit at `out -
    /// p` bits, times `|P_m| <= 1`) and each basis value is rounded (half a
    /// unit at `p` bits, plus the Chebyshev recurrence's growth of one unit
    /// per degree, times the coefficient, bounded by `coef_bound`).
    pub fn error_bound(self, coef_bound: f64) -> f64 {
        let t = self.basis.terms() as f64;
        let word = 0.5 * libm::exp2(-((self.out - self.p) as f64));
        let basis = (t + 1.0) * libm::exp2(-(self.p as f64));
        match self.basis {
            Basis::Cheb(_) => t * (word + basis * coef_bound),
            // exp(c_L) < e^Lw scales the word's rounding
            Basis::Exp => libm::exp(self.width()) * word + basis * coef_bound,
            Basis::Step => word,
        }
    }
}

/// The public basis values at `c_l`, at `p` bits: identical integers on
/// every party (no floating point for Chebyshev; `exp` through `libm`).
pub fn basis_values(shape: CellShape, c_l: u64, out: &mut [i64]) {
    let p = shape.p;
    let one = 1i64 << p;
    match shape.basis {
        Basis::Cheb(k) => {
            // u = 2 c_L / 2^se - 1 at p bits
            let u = (((c_l as u128) << (p + 1)) >> shape.se()) as i64 - one;
            let mut prev = one;
            let mut cur = u;
            for (m, o) in out.iter_mut().enumerate().take(k as usize + 1) {
                *o = match m {
                    0 => one,
                    1 => u,
                    _ => {
                        // |u|, |T_m| <= 2^p (plus the recurrence's rounding): the
                        // product stays below 2^(2p + 2) <= 2^62 for p <= 30
                        let next = ((2 * u).wrapping_mul(cur) >> p) - prev;
                        prev = cur;
                        cur = next;
                        next
                    }
                };
            }
        }
        Basis::Exp => {
            let x = c_l as f64 / libm::exp2(shape.f as f64);
            if let Some(o) = out.first_mut() {
                *o = libm::round(libm::exp(x) * libm::exp2(p as f64)) as i64;
            }
        }
        Basis::Step => {
            if let Some(o) = out.first_mut() {
                *o = one;
            }
        }
    }
}

/// Chebyshev nodes and the interpolation matrix of one degree, computed
/// once per dealt op (`cos` is most of a fit's cost).
#[derive(Clone, Copy, Debug)]
pub struct ChebTable {
    n: usize,
    nodes: [f64; MAX_DEGREE as usize + 1],
    // dct[m][j] = (2 / n) cos(pi m (j + 1/2) / n), halved for m = 0
    dct: [[f64; MAX_DEGREE as usize + 1]; MAX_DEGREE as usize + 1],
}

impl ChebTable {
    /// The table of `basis` (empty for the one-term bases).
    pub fn new(basis: Basis) -> Self {
        let n = match basis {
            Basis::Cheb(k) => (k as usize + 1).min(MAX_DEGREE as usize + 1),
            _ => 0,
        };
        let mut t = Self {
            n,
            nodes: [0.0; MAX_DEGREE as usize + 1],
            dct: [[0.0; MAX_DEGREE as usize + 1]; MAX_DEGREE as usize + 1],
        };
        let pi = core::f64::consts::PI;
        for (j, u) in t.nodes.iter_mut().enumerate().take(n) {
            *u = libm::cos(pi * (j as f64 + 0.5) / n as f64);
        }
        for (m, row) in t.dct.iter_mut().enumerate().take(n) {
            for (j, c) in row.iter_mut().enumerate().take(n) {
                let w = if m == 0 { 1.0 } else { 2.0 } / n as f64;
                *c = w * libm::cos(pi * m as f64 * (j as f64 + 0.5) / n as f64);
            }
        }
        t
    }
}

/// The dealer's words of cell `v` for the low mask `r_l`, at `out - p` bits.
pub fn cell_words(shape: CellShape, g: &dyn CellFn, v: u64, r_l: u64, out: &mut [u64]) {
    cell_words_with(shape, &ChebTable::new(shape.basis), g, v, r_l, out)
}

/// [`cell_words`] with the Chebyshev table of the shape's basis.
pub fn cell_words_with(shape: CellShape, cheb: &ChebTable, g: &dyn CellFn, v: u64, r_l: u64, out: &mut [u64]) {
    let terms = shape.basis.terms();
    let lw = crate::ring::pow2(shape.se() as i32);
    let scale = crate::ring::pow2((shape.out - shape.p) as i32);
    let lo = shape.real(v, 0.0, r_l);
    let hi = shape.real(v, lw, r_l);
    if g.zero_on(v, lo, hi) {
        out.iter_mut().take(terms).for_each(|w| *w = 0);
        return;
    }
    match shape.basis {
        Basis::Exp => {
            if let Some(w) = out.first_mut() {
                *w = round_word(g.eval(v, lo) * scale);
            }
        }
        Basis::Step => {
            if let Some(w) = out.first_mut() {
                *w = round_word(g.eval(v, shape.real(v, 0.0, 0)) * scale);
            }
        }
        Basis::Cheb(_) => {
            let n = cheb.n;
            let mut vals = [0f64; MAX_DEGREE as usize + 1];
            for (s, &u) in vals.iter_mut().zip(cheb.nodes.iter()).take(n) {
                *s = g.eval(v, shape.real(v, (u + 1.0) * 0.5 * lw, r_l));
            }
            for (w, row) in out.iter_mut().zip(cheb.dct.iter()).take(n) {
                let a: f64 = row.iter().zip(vals.iter()).take(n).map(|(c, s)| c * s).sum();
                *w = round_word(a * scale);
            }
        }
    }
}

/// A dealer's word: `x` rounded to the nearest integer (halves away from
/// zero; `x + 0.5` may round up once more at `0.5 - 2^-54`), saturating,
/// NaN to 0. Casts, where `libm::round` is a tenth of a fit's cost.
fn round_word(x: f64) -> u64 {
    (if x >= 0.0 { x + 0.5 } else { x - 0.5 }) as i64 as u64
}

/// Most grids of one cell lookup (one opening read through several cell
/// structures, as the wide-range functions' windows). On a
/// microcontroller, where the flights' chunk lists of grids live on the
/// stack, as many as those functions read (`ops::wide::MAX_WINDOWS`).
#[cfg(not(target_os = "none"))]
pub const MAX_GRIDS: usize = 48;
/// Most grids of one cell lookup.
#[cfg(target_os = "none")]
pub const MAX_GRIDS: usize = 24;

/// One grid of a cell lookup: its shape (every grid of an op has the same
/// `n`) and the dealer's function.
#[derive(Clone, Copy)]
pub struct CellGrid<'a> {
    /// The grid.
    pub shape: CellShape,
    /// Its function (read by the dealer only).
    pub g: &'a dyn CellFn,
}

/// Checks a set of grids; returns the correction words per element.
fn check_grids(grids: &[CellGrid<'_>]) -> Result<usize, ProtocolError> {
    let first = grids.first().ok_or(ProtocolError::BadShape)?;
    if grids.len() > MAX_GRIDS {
        return Err(ProtocolError::BadShape);
    }
    let mut per = 0usize;
    for g in grids {
        g.shape.check()?;
        if g.shape.n != first.shape.n || g.shape.pre != first.shape.pre {
            return Err(ProtocolError::BadShape);
        }
        per += g.shape.words_per_elem();
    }
    first
        .shape
        .n
        .checked_mul(per)
        .and_then(|w| w.checked_mul(8))
        .ok_or(ProtocolError::BadShape)?;
    Ok(per)
}

/// Bytes per element of the opening of several grids: the widest.
pub fn grids_width(grids: &[CellGrid<'_>]) -> usize {
    grids.iter().map(|g| g.shape.width_bytes()).max().unwrap_or(8)
}

/// Bytes each party sends for several grids.
pub fn grids_msg_len(grids: &[CellGrid<'_>]) -> usize {
    grids
        .first()
        .map_or(0, |g| wire::narrow_len(g.shape.n, grids_width(grids)))
}

/// Correction words the host receives for several grids.
pub fn grids_corrections(grids: &[CellGrid<'_>]) -> usize {
    grids.iter().map(|g| g.shape.corrections()).sum()
}

/// Dealer: the host's message for one cell lookup op of one grid.
pub fn deal(op: &DealerOp, shape: CellShape, g: &dyn CellFn, out: &mut [u8]) -> Result<usize, ProtocolError> {
    deal_grids(op, &[CellGrid { shape, g }], out)
}

/// Dealer: the host's message for one cell lookup op of several grids.
/// Layout per element: each grid's words in read-index order, grid after
/// grid.
pub fn deal_grids(op: &DealerOp, grids: &[CellGrid<'_>], out: &mut [u8]) -> Result<usize, ProtocolError> {
    let per = check_grids(grids)?;
    let n = grids.first().map_or(0, |g| g.shape.n);
    let mut w = op.writer(out, n * per)?;
    let mut rs = op.random(LANE_R);
    // the words of one grid of one element, by cell, then rotated by R
    let mut by_cell = [0u64; (1 << MAX_KH) * (MAX_DEGREE as usize + 1)];
    // one table per distinct basis (a few kilobytes each)
    let mut tables: heapless::Vec<(Basis, ChebTable), 4> = heapless::Vec::new();
    let mut which = [0usize; MAX_GRIDS];
    for (k, g) in which.iter_mut().zip(grids) {
        *k = match tables.iter().position(|(b, _)| *b == g.shape.basis) {
            Some(k) => k,
            None => {
                tables
                    .push((g.shape.basis, ChebTable::new(g.shape.basis)))
                    .map_err(|_| ProtocolError::BadShape)?;
                tables.len() - 1
            }
        };
    }
    let empty = ChebTable::new(Basis::Step);
    // the first smooth grid's interpolant (GeLU's tail; one per op is all
    // the model deals)
    let smooth = grids.iter().enumerate().find_map(|(k, g)| Some((k, Smooth::new(g.g)?)));
    let pre = grids.first().map_or(0, |g| g.shape.pre);
    for i in 0..n {
        // the parties' shifted shares open `t + (r >> pre)`
        let r = rs.next_u64() >> pre;
        let mut at = (i * per) as u64;
        for (gi, (grid, &k)) in grids.iter().zip(which.iter()).enumerate() {
            let cheb = tables.get(k).map_or(&empty, |(_, t)| t);
            let g: &dyn CellFn = match &smooth {
                Some((sk, s)) if *sk == gi => s,
                _ => grid.g,
            };
            let sh = grid.shape;
            let (terms, cells, se) = (sh.basis.terms(), sh.cells() as u64, sh.se());
            let r = r & ((1u64 << sh.l) - 1);
            let (big_r, r_l) = (r >> se, r & ((1u64 << se) - 1));
            for v in 0..cells {
                let a = v as usize * terms;
                if let Some(dst) = by_cell.get_mut(a..a + terms) {
                    cell_words_with(sh, cheb, g, v, r_l, dst);
                }
            }
            // read index j holds cell (j - R) mod 2^kh
            let rotated = (0..cells).flat_map(|j| {
                let v = (j.wrapping_sub(big_r) & (cells - 1)) as usize;
                by_cell.get(v * terms..(v + 1) * terms).unwrap_or(&[]).iter().copied()
            });
            let len = sh.words_per_elem();
            w.put_lane(&op.device, LANE_W, at, len, rotated);
            at += len as u64;
        }
    }
    w.finish()
}

/// One party's cell lookup, before opening.
#[derive(Debug)]
pub struct Cell<'d> {
    corr: OpCorr<'d>,
    n: usize,
    offset: u64,
    width: usize,
    pre: u32,
}

/// After opening.
#[derive(Debug)]
pub struct CellOpened<'d> {
    corr: OpCorr<'d>,
    n: usize,
    offset: u64,
    width: usize,
}

impl<'d> Cell<'d> {
    /// A cell lookup of one grid (the host's corrections are checked).
    pub fn new(corr: OpCorr<'d>, shape: CellShape) -> Result<Self, ProtocolError> {
        struct Nothing;
        impl CellFn for Nothing {
            fn eval(&self, _: u64, _: f64) -> f64 {
                0.0
            }
        }
        Self::with_grids(corr, &[CellGrid { shape, g: &Nothing }])
    }

    /// A cell lookup of several grids read from one opening.
    pub fn with_grids(corr: OpCorr<'d>, grids: &[CellGrid<'_>]) -> Result<Self, ProtocolError> {
        let per = check_grids(grids)?;
        let first = grids.first().ok_or(ProtocolError::BadShape)?.shape;
        corr.expect_corrections(first.n * per)?;
        Ok(Self {
            corr,
            n: first.n,
            offset: first.offset,
            width: grids_width(grids),
            pre: first.pre,
        })
    }

    /// Writes this party's masked input (plus the first grid's offset, for
    /// the host) modulo `2^(8 w)`, `w` = [`grids_width`] bytes per element.
    pub fn open(self, x: &[u64], out: &mut [u8]) -> Result<CellOpened<'d>, ProtocolError> {
        if x.len() != self.n {
            return Err(ProtocolError::BadBuffer);
        }
        let out = wire::out_prefix(out, wire::narrow_len(self.n, self.width))?;
        let off = if self.corr.role() == Role::Host { self.offset } else { 0 };
        let mut r = self.corr.random(LANE_R);
        wire::put_narrow(
            out,
            self.width,
            x.iter()
                .map(|&v| (v.wrapping_add(r.next_u64()) >> self.pre).wrapping_add(off)),
        );
        Ok(CellOpened {
            corr: self.corr,
            n: self.n,
            offset: self.offset,
            width: self.width,
        })
    }
}

impl CellOpened<'_> {
    /// Takes both messages, writes this party's output shares (one grid).
    pub fn finish(self, shape: CellShape, own: &[u8], peer: &[u8], out: &mut [u64]) -> Result<(), ProtocolError> {
        struct Nothing;
        impl CellFn for Nothing {
            fn eval(&self, _: u64, _: f64) -> f64 {
                0.0
            }
        }
        self.finish_grids(&[CellGrid { shape, g: &Nothing }], own, peer, out)
    }

    /// Takes both messages, writes this party's output shares: per
    /// element, one value per grid in grid order.
    pub fn finish_grids(
        self,
        grids: &[CellGrid<'_>],
        own: &[u8],
        peer: &[u8],
        out: &mut [u64],
    ) -> Result<(), ProtocolError> {
        let per = check_grids(grids)?;
        let n = self.n;
        if grids
            .first()
            .is_some_and(|g| g.shape.n != n || g.shape.offset != self.offset)
            || grids_width(grids) != self.width
        {
            return Err(ProtocolError::BadShape);
        }
        let len = wire::narrow_len(n, self.width);
        wire::expect_len(own, len)?;
        wire::expect_len(peer, len)?;
        let gc = grids.len();
        if out.len() != n * gc {
            return Err(ProtocolError::BadBuffer);
        }
        let mut pm = [0i64; MAX_DEGREE as usize + 1];
        let it = wire::narrow(own, self.width).zip(wire::narrow(peer, self.width));
        for (i, ((a, b), row)) in it.zip(out.chunks_exact_mut(gc)).enumerate() {
            // c for the first grid's offset; other grids shift it publicly
            let c0 = a.wrapping_add(b).wrapping_sub(self.offset);
            let mut at = (i * per) as u64;
            for (grid, o) in grids.iter().zip(row.iter_mut()) {
                let sh = grid.shape;
                let (terms, se) = (sh.basis.terms(), sh.se());
                let c = c0.wrapping_add(sh.offset) & ((1u64 << sh.l) - 1);
                let (big_c, c_l) = (c >> se, c & ((1u64 << se) - 1));
                basis_values(sh, c_l, &mut pm);
                let base = at + big_c * terms as u64;
                let mut ws = [0u64; MAX_DEGREE as usize + 1];
                let ws = ws.get_mut(..terms).unwrap_or_default();
                self.corr.derived_words(LANE_W, 0, base, ws);
                *o = pm
                    .iter()
                    .zip(ws.iter())
                    .fold(0u64, |a, (&p, &w)| a.wrapping_add((p as u64).wrapping_mul(w)));
                at += sh.words_per_elem() as u64;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::corr::{Correlations, DealerSession, SessionId, dealer_message_len};
    use crate::prg::Seed;
    use std::vec;
    use std::vec::Vec;

    struct Gauss;
    impl CellFn for Gauss {
        fn eval(&self, _: u64, x: f64) -> f64 {
            x * 0.5 * libm::erfc(x / core::f64::consts::SQRT_2)
        }
        fn zero_on(&self, _: u64, lo: f64, _: f64) -> bool {
            lo > 9.0
        }
    }

    /// [`Smooth`] of GeLU's tail: within 1e-12 of `erfc` on its interval
    /// (dense grid, both ends, piece boundaries), the function itself
    /// outside it, and `None` for a function that declares no interval.
    #[test]
    fn smooth_interpolant_matches_function() {
        let g = crate::ops::activation::GeluTail;
        let s = Smooth::new(&g).expect("GeLU's tail is smooth");
        let (lo, hi) = g.smooth_on().unwrap();
        let h = (hi - lo) / SMOOTH_PIECES as f64;
        let mut worst = 0f64;
        let xs = (0..=18_000)
            .map(|i| lo + i as f64 * (hi - lo) / 18_000.0)
            .chain((0..=SMOOTH_PIECES).flat_map(|i| [lo + i as f64 * h - 1e-12, lo + i as f64 * h]))
            .chain([lo - 3.0, hi + 0.5, 40.0, -20.0]);
        for x in xs {
            let d = (s.eval(1, x) - g.eval(1, x)).abs();
            worst = worst.max(d);
            assert!(d <= 1e-12, "x = {x}: {d:e}");
        }
        assert!(worst > 0.0, "the interpolant is not the function");
        assert!(Smooth::new(&ExpCell).is_none());
    }

    struct ExpCell;
    impl CellFn for ExpCell {
        fn eval(&self, _: u64, x: f64) -> f64 {
            libm::exp(x.min(12.0))
        }
    }

    fn run(shape: CellShape, g: &dyn CellFn, x: &[u64]) -> Vec<u64> {
        let (hk, dk) = (Seed::from_bytes([3; 32]), Seed::from_bytes([9; 32]));
        let sid = SessionId(5);
        let mut dealer = DealerSession::new(&hk, &dk, sid);
        let mut msg = vec![0u8; dealer_message_len(shape.corrections())];
        let len = deal(&dealer.next_op().unwrap(), shape, g, &mut msg).unwrap();
        let mut host = Correlations::new(Role::Host, &hk, sid);
        let mut dev = Correlations::new(Role::Device, &dk, sid);
        let hc = Cell::new(host.next_op_with(&msg[..len]).unwrap(), shape).unwrap();
        let dc = Cell::new(dev.next_op().unwrap(), shape).unwrap();
        let x1: Vec<u64> = (0..x.len() as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x77)
            .collect();
        let x0: Vec<u64> = x.iter().zip(&x1).map(|(a, b)| a.wrapping_sub(*b)).collect();
        let (mut ho, mut dm) = (vec![0u8; shape.msg_len()], vec![0u8; shape.msg_len()]);
        let hc = hc.open(&x0, &mut ho).unwrap();
        let dc = dc.open(&x1, &mut dm).unwrap();
        let (mut a, mut b) = (vec![0u64; x.len()], vec![0u64; x.len()]);
        hc.finish(shape, &ho, &dm, &mut a).unwrap();
        dc.finish(shape, &dm, &ho, &mut b).unwrap();
        a.iter().zip(&b).map(|(p, q)| p.wrapping_add(*q)).collect()
    }

    fn grid(shape: CellShape) -> Vec<u64> {
        let lo = -(shape.offset as i64);
        let hi = (1i64 << shape.l) - (1i64 << shape.se()) - shape.offset as i64;
        let step = ((hi - lo) / 1500).max(1);
        let mut v: Vec<u64> = (lo..hi).step_by(step as usize).map(|x| x as u64).collect();
        // cell edges and the range's ends
        for k in 0..shape.cells() as i64 - 1 {
            let e = (k << shape.se()) - shape.offset as i64;
            v.extend([e as u64, (e - 1) as u64, (e + 1) as u64]);
        }
        v.extend([lo as u64, (hi - 1) as u64]);
        v.retain(|&t| shape.in_range(t));
        v
    }

    /// The Chebyshev tests' shape: cells of 4 on `[0, 28)`, degree 9.
    fn gauss_shape() -> CellShape {
        let f = 16;
        CellShape {
            n: 1,
            l: f + 5,
            kh: 3,
            offset: 0,
            f,
            p: 16,
            out: f + 18,
            basis: Basis::Cheb(9),
            pre: 0,
        }
    }

    #[test]
    fn chebyshev_cells_follow_the_function() {
        let shape = gauss_shape();
        shape.check().unwrap();
        let x = grid(CellShape { n: 1, ..shape });
        let shape = CellShape { n: x.len(), ..shape };
        let got = run(shape, &Gauss, &x);
        // the fit's error (1e-4 for degree 9 on cells of 4) plus rounding
        let bound = 1.5e-4;
        let mut worst = 0f64;
        for (&t, &g) in x.iter().zip(&got) {
            let want = Gauss.eval(0, t as i64 as f64 / 65536.0);
            let err = (g as i64 as f64 / libm::exp2(shape.out as f64) - want).abs();
            worst = worst.max(err);
            assert!(
                err <= bound,
                "t = {} got {} want {want} (bound {bound})",
                t as i64,
                g as i64
            );
        }
        assert!(worst > 0.0);
    }

    #[test]
    fn truncating_openings_read_the_truncated_input() {
        // the grid of the Chebyshev test, each input `pre` bits finer with
        // several low parts: the lookup is G of one of the values it may
        // read, within the fit's bound
        for pre in [1, 16, 24] {
            let shape = gauss_shape();
            let low = [0u64, 1, (1 << pre) - 1, 0x3C3C_3C3C & ((1 << pre) - 1)];
            let shape = CellShape { pre, ..shape };
            shape.check().unwrap();
            let x: Vec<u64> = grid(CellShape { pre: 0, ..shape })
                .iter()
                .flat_map(|&t| low.iter().map(move |&lo| (t << pre) | lo))
                .filter(|&t| shape.in_range(t))
                .collect();
            let shape = CellShape { n: x.len(), ..shape };
            let got = run(shape, &Gauss, &x);
            for (&t, &g) in x.iter().zip(&got) {
                let g = g as i64 as f64 / libm::exp2(shape.out as f64);
                let err = crate::protocol::trunc::opened_reads(t, shape.pre)
                    .map(|v| (g - Gauss.eval(0, v as i64 as f64 / 65536.0)).abs())
                    .fold(f64::INFINITY, f64::min);
                assert!(err <= 1.5e-4, "pre {pre}: t = {} got {g} (err {err})", t as i64);
            }
        }
    }

    #[test]
    fn exp_cells_are_exp() {
        let f = 16;
        let shape = CellShape {
            n: 1,
            l: f + 6,
            kh: 4,
            offset: 1 << (f + 5),
            f,
            p: 10,
            out: f + 14,
            basis: Basis::Exp,
            pre: 0,
        };
        shape.check().unwrap();
        let x = grid(shape);
        let shape = CellShape { n: x.len(), ..shape };
        let got = run(shape, &ExpCell, &x);
        for (&t, &g) in x.iter().zip(&got) {
            let xr = t as i64 as f64 / 65536.0;
            let got = g as i64 as f64 / libm::exp2(shape.out as f64);
            if xr <= 12.0 {
                let want = libm::exp(xr);
                let err = (got - want).abs();
                assert!(
                    err <= want * 2e-3 + shape.error_bound(0.0),
                    "x = {xr} got {got} want {want}"
                );
            } else {
                assert!(
                    got >= libm::exp(12.0) * 0.99 && got <= libm::exp(16.0) * 1.01,
                    "x = {xr} got {got}"
                );
            }
        }
    }
}
