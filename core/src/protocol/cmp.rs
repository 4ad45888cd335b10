//! Comparison with zero of a masked value by digit bit-tables: DReLU and
//! ReLU in two rounds, a few hundred dealer bytes per element, exact
//! outside a stated region of `2^s` units just below zero.
//!
//! # Law
//! Shape `(l, s, m)`: inputs `x` in `[-2^(l-1), 2^(l-1) - 2^s)` (ring units).
//! DReLU outputs shares of `[x >= 0]`, ReLU shares of `max(x, 0)`, both
//! exact, except for `x` in `[-2^s, 0)`, where they may output `1` and `x`
//! (`s = 0`: exact everywhere in range).
//!
//! The clip (GeLU's, [`CmpOut::ReluClip`] with a public `t`) compares `x`
//! with the thresholds `theta` in `{0, t, -t}` on one opening and outputs
//! `ReLU(x)` and `min(|x|, t) = 2 ReLU(x) - ReLU(x - t) - ReLU(x + t) + t`;
//! each `ReLU(x - theta)` is exact except for `x - theta` in `[-2^s, 0)`,
//! where it may output `x - theta`. Inputs: `x - theta` in range for
//! every `theta`.
//!
//! # Protocol
//! Correlation, per element: a random `r` (both shares seeded; only
//! `r mod 2^l` matters), random mask bits `g_v` (the sum of the two
//! parties' seeded words; neither party knows them), and derived lanes.
//! With `x' = x + 2^(l-1)` in `[0, 2^l)`:
//! 1. Both parties send `x_b + r_b (+ 2^(l-1) for the host)` modulo `2^l`
//!    (`ceil(l / 8)` bytes): both learn `c = x' + r mod 2^l`, uniform.
//! 2. Write `c = c_t 2^(l-1) + c_r`, `r = r_t 2^(l-1) + r_r`. Then
//!    `msb(x') = c_t xor r_t xor L` with `L = [c_r < r_r]`, and the wrap of
//!    the opening is `w = [c < r]`, so that `x' = c - r + 2^l w`.
//!    `L` is computed on the bits `s..l-1` of `c_r` and `r_r`, cut into
//!    `D` digits of at most `m` bits (from the top): `L = sum_i lt_i
//!    prod_(j<i) eq_j` with `lt_i = [c_i < r_i]`, `eq_i = [c_i = r_i]` (the
//!    terms exclude each other). For each digit the dealer tabulates
//!    `lt_i(v) xor g` and `eq_i(v) xor g'` for every `v` in `[0, 2^(m_i))`
//!    as bit tables: the device's bits are seeded, the host gets the rest
//!    (`2^(m_i)` bits per table). Each party sends its `2 D - 1` bits read at
//!    the public digits `c_i`; both learn `e_v = bit_v xor g_v` (uniform).
//! 3. Each bit is `b_v = e_v + (1 - 2 e_v) g_v`, so `L` is a polynomial in
//!    the mask bits with public coefficients: `L = sum_j coef_j(e) B_j` over
//!    the monomials `B_j` of the masks that occur (5 for `D = 2`, 11 for
//!    `D = 3`). The dealer deals shares of `F B_j` for `F` in `{1, r_t}`
//!    (DReLU) or `{1, r_t, r, r_t r}` (ReLU), with which, locally:
//!    `A = r_t xor L = r_t + L - 2 r_t L`, `DReLU = c_t + (1 - 2 c_t) A`;
//!    `ReLU = DReLU x = DReLU (c - 2^(l-1)) - DReLU r + 2^l DReLU w`,
//!    where `DReLU w = A` when `c_t = 0` and `r_t L` when `c_t = 1`.
//!
//! Ignoring the bits below `s` replaces `L` by `[c_r >> s < r_r >> s]`,
//! which misses `L = 1` only when the high parts are equal and the low
//! bits borrow: then `x` lies in `[-2^s, 0)` (the DReLU flips to 1, and the
//! ReLU, with `w` unaffected, outputs `x`) or within `2^s` of the top of
//! the range (excluded by the input range).
//!
//! Several thresholds share the opening (`x - theta` opens as `c -
//! theta`), `r` and so the bit tables, which they read at different
//! entries (one digit, `t >= 2^(s+1)`); each has its own mask bits `g`, and
//! the monomials `F B_0 = F` are shared. The host then gets the tables
//! under the device's seeded bits `d(v)` alone and the word of all mask
//! bits XOR-shared (`g xor delta`, `delta` the device's seeded word): a
//! party's share of threshold `theta`'s bit at `v` is its table share at
//! `v` XOR its share of `g_theta`.
//!
//! Security: `c` is uniform; each opened bit is masked by its own `g_v`;
//! the host's table bits and words are masked by the device's seeded ones
//! (with several thresholds: the device's bits it sends, `d(v_theta) xor
//! delta_theta`, are masked by `delta`, the host's mask word by `delta`).
//!
//! # Truncation in the opening (`pre`)
//! An input at `pre` more fractional bits than the outputs (a product
//! before its truncation) is compared without a truncation op: each party
//! sends `((x_b + r_b) mod 2^64) >> pre` modulo `2^l` (plus the offset,
//! host), and the dealer uses `R = (r >> pre) mod 2^l` for `r = r_0 +
//! r_1`. The sum of the two messages is `X + R` modulo `2^l` with `X =
//! floor(x / 2^pre) + e`, `e` in `{-1, 0, 1}` (the carries of the low
//! `pre` bits of `x_0 + r_0`, `x_1 + r_1`, `x_0 + x_1` and `r_0 + r_1`),
//! and the protocol above runs unchanged on `X` with mask `R`: outputs
//! are exact functions of `X` at the outputs' scale. Security: each
//! message is the top bits of a share plus its party's uniform `r_b`, as
//! before; `X + R` is uniform.
//!
//! # Cost per element
//! Rounds: 2 (two flights, both directions at once). Each way:
//! `ceil(l / 8)` bytes + `2 D - 1` bits. Dealer -> host: the bit tables,
//! `sum ceil(2^(m_i) / 64)` words, plus `2 |B| - 1` (DReLU) or `4 |B| - 1`
//! (ReLU) words. For `l = 22, s = 5, m = 8` (`D = 2`): 3 B + 3 bits each
//! way, 12 + 9 = 21 words (DReLU) or 12 + 19 = 31 words (ReLU) = 248 B.
//! The clip: `2 D - 1` bits per threshold each way; dealer the tables, one
//! mask word, `3 + 12 (|B| - 1)` monomial words: for GeLU's (`l = 23, s =
//! 15`, `D = 1`) 3 B + 3 bits each way and 2 + 1 + 15 = 18 words.
//! The device expands its words from its seed: one keystream block per
//! table bit it reads and about three for its words.

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::wire;

/// Random lane `r`.
pub const LANE_R: u32 = 0;
/// Random lane of the mask bits `g_v` (bit `v` of the element's word).
pub const LANE_G: u32 = 1;
/// Derived lane of the bit tables (packed 64 to a word).
pub const LANE_TAB: u32 = 2;
/// Derived lane of the monomial words.
pub const LANE_W: u32 = 3;

/// Most digits.
pub const MAX_DIGITS: usize = 3;
/// Largest digit width (bit tables of `2^m` entries).
pub const MAX_M: u32 = 10;
/// Most monomials (`D = 3`).
const MAX_BASIS: usize = 11;
/// Most thresholds on one opening ([`CmpOut::ReluClip`]).
pub const MAX_THRESHOLDS: usize = 3;

/// What a comparison outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CmpOut {
    /// `[x >= 0]`.
    Drelu,
    /// `max(x, 0)`.
    Relu,
    /// `max(x, 0)` and `min(|x|, t)` for a public `t` (ring units, in
    /// `[2^(s+1), 2^(l-2))`), two outputs per element: the ReLUs of `x`,
    /// `x - t` and `x + t` on one opening, combined locally as `min(|x|, t)
    /// = 2 ReLU(x) - ReLU(x - t) - ReLU(x + t) + t`. One digit only: the
    /// thresholds then read their shared bit tables at three different
    /// entries (a device bit sent twice at one entry would tell the host
    /// the XOR of two thresholds' masks).
    ReluClip(u64),
}

impl CmpOut {
    /// Output words per element.
    pub fn outputs(self) -> usize {
        match self {
            CmpOut::ReluClip(_) => 2,
            CmpOut::Drelu | CmpOut::Relu => 1,
        }
    }

    /// The thresholds `theta` compared on the opening (`[x - theta >= 0]`),
    /// as ring values, and how many.
    fn thresholds(self) -> ([u64; MAX_THRESHOLDS], usize) {
        match self {
            CmpOut::ReluClip(t) => ([0, t, t.wrapping_neg()], 3),
            CmpOut::Drelu | CmpOut::Relu => ([0; MAX_THRESHOLDS], 1),
        }
    }

    /// Factors `F` of the monomial words: `{1, r_t}` for a DReLU, `{1,
    /// r_t, r, r_t r}` for ReLUs.
    fn factors(self) -> usize {
        match self {
            CmpOut::Drelu => 2,
            CmpOut::Relu | CmpOut::ReluClip(_) => 4,
        }
    }
}

/// Shape of a comparison op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CmpShape {
    /// Elements.
    pub n: usize,
    /// Bits of the opening: inputs lie in `[-2^(l-1), 2^(l-1) - 2^s)`.
    pub l: u32,
    /// Low bits left out of the comparison (the region `[-2^s, 0)`).
    pub s: u32,
    /// Bits per digit.
    pub m: u32,
    /// Output.
    pub out: CmpOut,
    /// Fractional bits the input carries beyond the outputs' (`0`: none),
    /// dropped by the opening ([`CmpShape::with_pre`]).
    pub pre: u32,
}

/// The digits of a shape: `(shift, width)` from the top, at most
/// [`MAX_DIGITS`].
#[derive(Clone, Copy, Debug)]
struct Digits {
    d: usize,
    shift: [u32; MAX_DIGITS],
    width: [u32; MAX_DIGITS],
}

impl CmpShape {
    /// The shape for inputs in `[-2^range_log2, 2^range_log2)` (real) at `f`
    /// fractional bits, comparing 16 bits above the region `[-2^(range_log2
    /// - 16), 0)` in two digits of 8 bits.
    pub fn new(n: usize, f: u32, range_log2: i32, out: CmpOut) -> Result<Self, ProtocolError> {
        let l = f as i32 + range_log2 + 1;
        if !(2..=62).contains(&l) {
            return Err(ProtocolError::BadParameter);
        }
        let l = l as u32;
        let shape = Self {
            n,
            l,
            s: (l - 1).saturating_sub(16),
            m: 8,
            out,
            pre: 0,
        };
        shape.check()?;
        Ok(shape)
    }

    /// A cheaper comparison for callers that only need *a* branch near zero
    /// (both branches agree there, as in GeLU): one digit of `m` bits,
    /// exact outside `[-2^(range_log2 - m), 0)` (`ceil(2^m / 64) + 7` dealer
    /// words for a ReLU: 11 for `m = 8`).
    pub fn branch(n: usize, f: u32, range_log2: i32, out: CmpOut, m: u32) -> Result<Self, ProtocolError> {
        // the two-digit shape's opening, then one digit of m bits
        let shape = Self {
            m,
            out,
            ..Self::new(n, f, range_log2, CmpOut::Relu)?
        };
        let shape = Self {
            s: (shape.l - 1).saturating_sub(m),
            ..shape
        };
        shape.check()?;
        Ok(shape)
    }

    /// The same comparison of an input that carries `pre` more fractional
    /// bits (a product before its truncation): each party opens the top
    /// `l` bits of its masked share shifted down by `pre`, so the
    /// comparison reads `X = floor(x / 2^pre) + e`, `e` in `{-1, 0, 1}`,
    /// and outputs at the shape's scale. The truncation costs nothing: no
    /// message, no dealer word.
    pub fn with_pre(self, pre: u32) -> Result<Self, ProtocolError> {
        let shape = Self { pre, ..self };
        shape.check()?;
        Ok(shape)
    }

    /// Offset added to the input: `2^(l-1)`.
    pub fn offset(self) -> u64 {
        1u64 << (self.l - 1)
    }

    /// Bytes per element of the opening.
    pub fn width(self) -> usize {
        (self.l as usize).div_ceil(8)
    }

    /// Opened bits per threshold and element in the second flight.
    fn vars(self) -> usize {
        2 * self.digits().d - 1
    }

    /// Opened bits per element in the second flight.
    pub fn bits(self) -> usize {
        self.vars() * self.out.thresholds().1
    }

    /// Bytes each party sends in the first flight.
    pub fn open_len(self) -> usize {
        wire::narrow_len(self.n, self.width())
    }

    /// Bytes each party sends in the second flight.
    pub fn bits_len(self) -> usize {
        (self.n * self.bits()).div_ceil(8)
    }

    fn digits(self) -> Digits {
        let total = (self.l - 1).saturating_sub(self.s);
        let m = self.m.max(1);
        let d = (total.div_ceil(m) as usize).clamp(1, MAX_DIGITS);
        let mut dg = Digits {
            d,
            shift: [0; MAX_DIGITS],
            width: [0; MAX_DIGITS],
        };
        let mut left = total;
        for i in 0..d {
            let w = if i + 1 == d { left } else { m.min(left) };
            left -= w;
            if let (Some(sh), Some(wd)) = (dg.shift.get_mut(i), dg.width.get_mut(i)) {
                *sh = left;
                *wd = w;
            }
        }
        dg
    }

    /// Words of one element's bit tables: one set, shared by the
    /// thresholds, and with several thresholds the word of their mask bits
    /// (XOR-shared).
    fn table_words(self) -> usize {
        self.set_words() + usize::from(self.out.thresholds().1 > 1)
    }

    /// Words of one set of bit tables: `lt_i` for every digit, `eq_i` for
    /// all but the last, `ceil(2^(m_i) / 64)` words each.
    fn set_words(self) -> usize {
        let dg = self.digits();
        (0..dg.d)
            .map(|i| {
                let w = (1usize << dg.width.get(i).copied().unwrap_or(0)).div_ceil(64);
                if i + 1 == dg.d { w } else { 2 * w }
            })
            .sum()
    }

    /// Monomial words of one element: `F B_0 = F` (`F != 1`), shared by
    /// the thresholds (they share `r`), then `F B_j` (`j >= 1`) for each
    /// threshold's mask bits.
    fn mono_words(self) -> usize {
        let b = basis(self.digits().d).len();
        let f = self.out.factors();
        f - 1 + self.out.thresholds().1 * f * (b - 1)
    }

    /// Correction words per element.
    pub fn words_per_elem(self) -> usize {
        self.table_words() + self.mono_words()
    }

    /// Correction words the host receives.
    pub fn corrections(self) -> usize {
        self.n * self.words_per_elem()
    }

    /// Checks the parameters.
    pub fn check(self) -> Result<(), ProtocolError> {
        let total = (self.l - 1).saturating_sub(self.s);
        if self.n == 0
            || !(2..=62).contains(&self.l)
            || self.l + self.pre > 64
            || self.s >= self.l - 1
            || !(1..=MAX_M).contains(&self.m)
            || total.div_ceil(self.m) as usize > MAX_DIGITS
            || matches!(self.out, CmpOut::ReluClip(t)
                if total > self.m || t < 2u64 << self.s || t >= 1u64 << (self.l - 2))
        {
            return Err(ProtocolError::BadShape);
        }
        self.n
            .checked_mul(self.words_per_elem())
            .and_then(|w| w.checked_mul(8))
            .map(|_| ())
            .ok_or(ProtocolError::BadShape)
    }

    /// Whether `x` is in the stated input range (`x - theta` is, for every
    /// threshold `theta`; with `pre`, for every value the comparison may
    /// read).
    pub fn in_range(self, x: u64) -> bool {
        let top = 1i64 << (self.l - 1);
        let (th, k) = self.out.thresholds();
        super::trunc::opened_reads(x, self.pre).all(|v| {
            th.iter()
                .take(k)
                .all(|&t| (-top..top - (1i64 << self.s)).contains(&(v.wrapping_sub(t) as i64)))
        })
    }
}

/// Plaintext reference (exact), per output: `[x >= 0]`, `max(x, 0)`, or
/// `(max(x, 0), min(|x|, t))` (unused outputs 0).
pub fn reference(out: CmpOut, x: u64) -> [u64; 2] {
    outputs(out, x, [false; MAX_THRESHOLDS])
}

/// The outputs for input `x` when threshold `k` takes the positive branch
/// if `pos[k]`, its exact one otherwise.
fn outputs(out: CmpOut, x: u64, pos: [bool; MAX_THRESHOLDS]) -> [u64; 2] {
    let (th, _) = out.thresholds();
    let pos = |k: usize| pos.get(k).copied().unwrap_or(false);
    let relu = |k: usize| {
        let v = x.wrapping_sub(th.get(k).copied().unwrap_or(0));
        if pos(k) || (v as i64) >= 0 { v } else { 0 }
    };
    match out {
        CmpOut::Drelu => [(pos(0) || (x as i64) >= 0) as u64, 0],
        CmpOut::Relu => [relu(0), 0],
        CmpOut::ReluClip(t) => {
            let r0 = relu(0);
            [
                r0,
                r0.wrapping_mul(2)
                    .wrapping_sub(relu(1))
                    .wrapping_sub(relu(2))
                    .wrapping_add(t),
            ]
        }
    }
}

/// Whether `got` (one element's outputs) is what the law allows for input
/// `x` (in range): each threshold `theta` takes its exact branch, or, for
/// `x - theta` in `[-2^s, 0)`, may take the positive one. With `pre`, for
/// one of the values the comparison may read
/// ([`opened_reads`](super::trunc::opened_reads)).
pub fn allowed(shape: CmpShape, x: u64, got: &[u64]) -> bool {
    super::trunc::opened_reads(x, shape.pre).any(|v| allowed_exact(shape, v, got))
}

fn allowed_exact(shape: CmpShape, x: u64, got: &[u64]) -> bool {
    let (th, k) = shape.out.thresholds();
    let fuzzy = |i: usize| {
        let t = th.get(i).copied().unwrap_or(0);
        (-(1i64 << shape.s)..0).contains(&(x.wrapping_sub(t) as i64))
    };
    (0u8..1 << k).any(|m| {
        let pos: [bool; MAX_THRESHOLDS] = core::array::from_fn(|i| m >> i & 1 == 1);
        (0..k).all(|i| m >> i & 1 == 0 || fuzzy(i))
            && got.len() == shape.out.outputs()
            && got.iter().zip(outputs(shape.out, x, pos)).all(|(&g, w)| g == w)
    })
}

/// The variables' masks of the terms: term `i` is `lt_i` (variable `2 i`)
/// and `eq_j` (variable `2 j + 1`) for `j < i`.
fn term(i: usize) -> u8 {
    let mut t = 1u8 << (2 * i);
    for j in 0..i {
        t |= 1 << (2 * j + 1);
    }
    t
}

/// The monomials of the mask bits in `L`, ascending (the first is 1).
fn basis(d: usize) -> heapless::Vec<u8, MAX_BASIS> {
    let mut v: heapless::Vec<u8, MAX_BASIS> = heapless::Vec::new();
    // every subset of every term; at most 11 for D = 3
    for s in 0u8..(1 << (2 * d - 1)) {
        if (0..d).any(|i| s & !term(i) == 0) {
            let _ = v.push(s);
        }
    }
    v
}

/// Coefficients of `L` on the basis for opened bits `e` (bit `v` of `e`).
fn coefs(d: usize, e: u8, basis: &[u8], out: &mut [u64; MAX_BASIS]) {
    *out = [0; MAX_BASIS];
    for i in 0..d {
        let t = term(i);
        for (c, &sub) in out.iter_mut().zip(basis) {
            if sub & !t != 0 {
                continue;
            }
            // prod over t \ sub of e_v, times prod over sub of (1 - 2 e_v)
            let rest = t & !sub;
            if rest & !e != 0 {
                continue;
            }
            let flips = (sub & e).count_ones();
            *c = c.wrapping_add(if flips.is_multiple_of(2) { 1 } else { u64::MAX });
        }
    }
}

/// Dealer: the host's message for one comparison op. Layout per element:
/// its table words, then its monomial words.
pub fn deal(op: &DealerOp, shape: CmpShape, out: &mut [u8]) -> Result<usize, ProtocolError> {
    shape.check()?;
    let (n, l) = (shape.n, shape.l);
    let dg = shape.digits();
    let b = basis(dg.d);
    let (tw, nw) = (shape.set_words(), shape.mono_words());
    let (nt, vars, nf) = (shape.out.thresholds().1, shape.vars(), shape.out.factors());
    let all = shape.table_words();
    let mut w = op.writer(out, shape.corrections())?;
    let lmask = (1u64 << l) - 1;
    let mut rs = op.random(LANE_R);
    let mut gs = op.random(LANE_G);
    // a threshold's table words without its masks: (bits, variable, used
    // bits)
    let mut tabs = [(0u64, 0u32, 0u64); 2 * MAX_DIGITS * (1 << MAX_M) / 64];
    let mut monos = [0u64; 4 * MAX_BASIS * MAX_THRESHOLDS];
    for i in 0..n {
        // the parties' shifted shares open `X + (r >> pre)`
        let r = (rs.next_u64() >> shape.pre) & lmask;
        let g = gs.next_u64();
        let r_t = r >> (l - 1);
        let rr = (r & (lmask >> 1)) >> shape.s;
        // bit tables, in variable order lt_0, eq_0, lt_1, ...: the same for
        // every threshold (they share `r`)
        let mut k = 0;
        for dgt in 0..dg.d {
            let sh = dg.shift.get(dgt).copied().unwrap_or(0);
            let wd = dg.width.get(dgt).copied().unwrap_or(0);
            let ri = (rr >> sh) & ((1u64 << wd) - 1);
            let entries = 1u64 << wd;
            let kinds: &[u32] = if dgt + 1 == dg.d { &[0] } else { &[0, 1] };
            for &kind in kinds {
                // entries `v` of this word: `q 64 .. q 64 + 64` (fewer when
                // the table is shorter than a word)
                let used = if entries >= 64 { u64::MAX } else { (1u64 << entries) - 1 };
                for q in 0..entries.div_ceil(64) {
                    // `ri` relative to the word's first entry
                    let d = ri.wrapping_sub(q * 64);
                    let t = if kind == 0 {
                        // [v < ri]: the bits below d
                        if ri <= q * 64 {
                            0
                        } else if d >= 64 {
                            u64::MAX
                        } else {
                            (1u64 << d) - 1
                        }
                    } else if ri >= q * 64 && d < 64 {
                        // [v == ri]
                        1u64 << d
                    } else {
                        0
                    };
                    if let Some(dst) = tabs.get_mut(k) {
                        *dst = (t, 2 * dgt as u32 + kind, used);
                    }
                    k += 1;
                }
            }
        }
        // one threshold: its mask bits flip the tables; several: the host
        // gets the tables unmasked (under the device's seeded bits) and the
        // mask bits, XOR-shared, in one more word
        let (gt, flip) = if nt == 1 { (g, None) } else { (0, Some(g)) };
        let masked = tabs
            .iter()
            .take(tw)
            .map(|&(t, v, used)| (t ^ ((gt >> v) & 1).wrapping_neg()) & used);
        w.put_lane_xor(&op.device, LANE_TAB, (i * all) as u64, all, masked.chain(flip));
        // monomials: F B_0 = F for F in {r_t, r, r_t r} (shared), then F B_j
        // (j >= 1) for F in {1, r_t, r, r_t r} per threshold
        let fs = [1u64, r_t, r, r_t.wrapping_mul(r)];
        let mut k = 0;
        let mut put = |v: u64| {
            if let Some(dst) = monos.get_mut(k) {
                *dst = v;
            }
            k += 1;
        };
        for &fv in fs.iter().take(nf).skip(1) {
            put(fv);
        }
        for th in 0..nt {
            let gk = g >> (th * vars);
            for &fv in fs.iter().take(nf) {
                for &mono in b.iter().skip(1) {
                    put(fv.wrapping_mul((gk & u64::from(mono) == u64::from(mono)) as u64));
                }
            }
        }
        w.put_lane(&op.device, LANE_W, (i * nw) as u64, nw, monos.iter().copied().take(nw));
    }
    w.finish()
}

/// One party's comparison, before the first flight.
#[derive(Debug)]
pub struct Cmp<'d> {
    corr: OpCorr<'d>,
    shape: CmpShape,
}

/// After the first flight (the opened `c` are kept by the caller); its
/// [`CmpOpened::bits`] writes the second flight's message.
#[derive(Debug)]
pub struct CmpOpened<'d> {
    corr: OpCorr<'d>,
    shape: CmpShape,
}

impl<'d> Cmp<'d> {
    /// A comparison of this shape (the host's corrections are checked).
    pub fn new(corr: OpCorr<'d>, shape: CmpShape) -> Result<Self, ProtocolError> {
        shape.check()?;
        corr.expect_corrections(shape.corrections())?;
        Ok(Self { corr, shape })
    }

    /// Writes this party's masked input modulo `2^l` ([`CmpShape::open_len`]
    /// bytes).
    pub fn open(self, x: &[u64], out: &mut [u8]) -> Result<CmpOpened<'d>, ProtocolError> {
        let sh = self.shape;
        if x.len() != sh.n {
            return Err(ProtocolError::BadBuffer);
        }
        let out = wire::out_prefix(out, sh.open_len())?;
        let off = if self.corr.role() == Role::Host { sh.offset() } else { 0 };
        let mut r = self.corr.random(LANE_R);
        wire::put_narrow(
            out,
            sh.width(),
            x.iter()
                .map(|&v| (v.wrapping_add(r.next_u64()) >> sh.pre).wrapping_add(off)),
        );
        Ok(CmpOpened {
            corr: self.corr,
            shape: sh,
        })
    }
}

impl<'d> CmpOpened<'d> {
    /// Takes both first-flight messages: writes the opened `c` into `c`
    /// (element `i`'s at `c[i k]`, `k` = [`CmpOut::outputs`]; `c` holds the
    /// op's outputs) and this party's table bits ([`CmpShape::bits_len`]
    /// bytes) into `out`.
    pub fn bits(&self, own: &[u8], peer: &[u8], c: &mut [u64], out: &mut [u8]) -> Result<(), ProtocolError> {
        let sh = self.shape;
        wire::expect_len(own, sh.open_len())?;
        wire::expect_len(peer, sh.open_len())?;
        let k = sh.out.outputs();
        if c.len() != sh.n * k {
            return Err(ProtocolError::BadBuffer);
        }
        let out = wire::out_prefix(out, sh.bits_len())?;
        let lmask = (1u64 << sh.l) - 1;
        let dg = sh.digits();
        let (tw, all, nw) = (sh.set_words(), sh.table_words(), sh.mono_words());
        let ((th, nt), vars) = (sh.out.thresholds(), sh.vars());
        let v = sh.bits();
        out.fill(0);
        let it = wire::narrow(own, sh.width()).zip(wire::narrow(peer, sh.width()));
        for (i, ((a, b), ci)) in it.zip(c.iter_mut().step_by(k)).enumerate() {
            let cv = a.wrapping_add(b) & lmask;
            *ci = cv;
            // the element's table words (host: corrections i (all + nw) ..;
            // device: lane words i all ..), expanded once, and with several
            // thresholds the share of their mask bits
            let mut tabs = [0u64; 2 * MAX_DIGITS * (1 << MAX_M) / 64 + 1];
            let tabs = tabs.get_mut(..all).unwrap_or_default();
            self.corr.derived_words(LANE_TAB, i * nw, (i * all) as u64, tabs);
            let flip = if nt > 1 { tabs.get(tw).copied().unwrap_or(0) } else { 0 };
            for (t, &theta) in th.iter().enumerate().take(nt) {
                // the opening of `x - theta`
                let cr = (cv.wrapping_sub(theta) & (lmask >> 1)) >> sh.s;
                let mut q = 0;
                for dgt in 0..dg.d {
                    let shf = dg.shift.get(dgt).copied().unwrap_or(0);
                    let wd = dg.width.get(dgt).copied().unwrap_or(0);
                    let idx = (cr >> shf) & ((1u64 << wd) - 1);
                    let per = (1usize << wd).div_ceil(64);
                    let kinds = if dgt + 1 == dg.d { 1 } else { 2 };
                    for kind in 0..kinds {
                        let word = q + kind * per + (idx / 64) as usize;
                        let var = t * vars + 2 * dgt + kind;
                        let bit = ((tabs.get(word).copied().unwrap_or(0) >> (idx % 64)) ^ (flip >> var)) & 1;
                        let pos = i * v + var;
                        if let Some(byte) = out.get_mut(pos / 8) {
                            *byte |= (bit as u8) << (pos % 8);
                        }
                    }
                    q += kinds * per;
                }
            }
        }
        Ok(())
    }
}

impl CmpOpened<'_> {
    /// Takes both second-flight messages and the opened `c` (as
    /// [`Self::bits`] left them), writes this party's output shares into
    /// `c_out` (element `i`'s outputs at `c_out[i k ..]`).
    pub fn finish(self, own: &[u8], peer: &[u8], c_out: &mut [u64]) -> Result<(), ProtocolError> {
        let sh = self.shape;
        wire::expect_len(own, sh.bits_len())?;
        wire::expect_len(peer, sh.bits_len())?;
        let k = sh.out.outputs();
        if c_out.len() != sh.n * k {
            return Err(ProtocolError::BadBuffer);
        }
        let host = self.corr.role() == Role::Host;
        let dg = sh.digits();
        let b = basis(dg.d);
        let nb = b.len();
        let (tw, nw) = (sh.table_words(), sh.mono_words());
        let ((th, nt), vars, nf) = (sh.out.thresholds(), sh.vars(), sh.out.factors());
        let v = sh.bits();
        let l = sh.l;
        let mut dev = self.corr.random_at(LANE_W, 0);
        let mut words = [0u64; 4 * MAX_BASIS * MAX_THRESHOLDS];
        let mut cf = [0u64; MAX_BASIS];
        let mut relus = [0u64; MAX_THRESHOLDS];
        for (i, slot) in c_out.chunks_exact_mut(k).enumerate() {
            for (j, wd) in words.iter_mut().enumerate().take(nw) {
                *wd = if host {
                    self.corr.derived_word(LANE_W, (i + 1) * tw, (i * nw + j) as u64)
                } else {
                    dev.next_u64()
                };
            }
            let c0 = slot.first().copied().unwrap_or(0);
            let mut drelu0 = 0;
            for (t, (&theta, relu)) in th.iter().zip(relus.iter_mut()).enumerate().take(nt) {
                let mut e = 0u8;
                for q in 0..vars {
                    let pos = i * v + t * vars + q;
                    e |= ((wire::get_bit(own, pos) ^ wire::get_bit(peer, pos)) as u8) << q;
                }
                // W(F, j): (F = 0, j = 0) is the public constant 1, (F, 0)
                // the shared words, (F, j >= 1) this threshold's
                let wf = |f: usize, j: usize| -> u64 {
                    let at = match (f, j) {
                        (0, 0) => return host as u64,
                        (f, 0) => f - 1,
                        (f, j) => nf - 1 + (t * nf + f) * (nb - 1) + j - 1,
                    };
                    words.get(at).copied().unwrap_or(0)
                };
                coefs(dg.d, e, &b, &mut cf);
                let c = c0.wrapping_sub(theta) & ((1u64 << l) - 1);
                let c_t = c >> (l - 1);
                // A = r_t xor L
                let mut a = wf(1, 0);
                for (j, &k) in cf.iter().enumerate().take(nb) {
                    a = a.wrapping_add(k.wrapping_mul(wf(0, j).wrapping_sub(wf(1, j).wrapping_mul(2))));
                }
                let sign = 1u64.wrapping_sub(c_t.wrapping_mul(2));
                let drelu = (c_t * host as u64).wrapping_add(sign.wrapping_mul(a));
                if sh.out == CmpOut::Drelu {
                    drelu0 = drelu;
                    continue;
                }
                let mut ar = wf(3, 0);
                let mut rl = 0u64;
                for (j, &k) in cf.iter().enumerate().take(nb) {
                    ar = ar.wrapping_add(k.wrapping_mul(wf(2, j).wrapping_sub(wf(3, j).wrapping_mul(2))));
                    rl = rl.wrapping_add(k.wrapping_mul(wf(1, j)));
                }
                let dr = c_t.wrapping_mul(wf(2, 0)).wrapping_add(sign.wrapping_mul(ar));
                let dw = if c_t == 0 { a } else { rl };
                *relu = drelu
                    .wrapping_mul(c.wrapping_sub(sh.offset()))
                    .wrapping_sub(dr)
                    .wrapping_add(dw.wrapping_mul(1u64 << l));
            }
            let [r0, r1, r2] = relus;
            let outs = match sh.out {
                CmpOut::Drelu => [drelu0, 0],
                CmpOut::Relu => [r0, 0],
                CmpOut::ReluClip(t) => [
                    r0,
                    r0.wrapping_mul(2)
                        .wrapping_sub(r1)
                        .wrapping_sub(r2)
                        .wrapping_add(if host { t } else { 0 }),
                ],
            };
            for (o, v) in slot.iter_mut().zip(outs) {
                *o = v;
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

    /// Runs one comparison between a host and a device share of `x`.
    fn run(shape: CmpShape, x: &[u64], seed: u8) -> Vec<u64> {
        let (hk, dk) = (Seed::from_bytes([seed; 32]), Seed::from_bytes([seed ^ 0x55; 32]));
        let sid = SessionId(7);
        let mut dealer = DealerSession::new(&hk, &dk, sid);
        let mut msg = vec![0u8; dealer_message_len(shape.corrections())];
        let len = deal(&dealer.next_op().unwrap(), shape, &mut msg).unwrap();
        let mut host = Correlations::new(Role::Host, &hk, sid);
        let mut dev = Correlations::new(Role::Device, &dk, sid);
        let hc = Cmp::new(host.next_op_with(&msg[..len]).unwrap(), shape).unwrap();
        let dc = Cmp::new(dev.next_op().unwrap(), shape).unwrap();
        // the device's share is pseudo-random, the host's the rest
        let x1: Vec<u64> = (0..x.len() as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xABCD)
            .collect();
        let x0: Vec<u64> = x.iter().zip(&x1).map(|(a, b)| a.wrapping_sub(*b)).collect();
        let (mut ho, mut do_) = (vec![0u8; shape.open_len()], vec![0u8; shape.open_len()]);
        let hc = hc.open(&x0, &mut ho).unwrap();
        let dc = dc.open(&x1, &mut do_).unwrap();
        let k = shape.out.outputs();
        let (mut hcv, mut dcv) = (vec![0u64; k * x.len()], vec![0u64; k * x.len()]);
        let (mut hb, mut db) = (vec![0u8; shape.bits_len()], vec![0u8; shape.bits_len()]);
        hc.bits(&ho, &do_, &mut hcv, &mut hb).unwrap();
        dc.bits(&do_, &ho, &mut dcv, &mut db).unwrap();
        assert_eq!(hcv, dcv);
        hc.finish(&hb, &db, &mut hcv).unwrap();
        dc.finish(&db, &hb, &mut dcv).unwrap();
        hcv.iter().zip(&dcv).map(|(a, b)| a.wrapping_add(*b)).collect()
    }

    fn inputs(shape: CmpShape) -> Vec<u64> {
        let top = 1i64 << (shape.l - 1);
        let edge = 1i64 << shape.s;
        let mut v: Vec<i64> = vec![
            -top,
            -top + 1,
            top - edge - 1,
            0,
            1,
            -1,
            -edge,
            -edge - 1,
            edge,
            3 * edge - 1,
        ];
        for k in 0..shape.l - 1 {
            v.extend([1i64 << k, -(1i64 << k), (1i64 << k) - 1, -(1i64 << k) + 1]);
        }
        let mut z = 0x1234_5678u64;
        for _ in 0..300 {
            z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            v.push((z >> 20) as i64 % top);
        }
        v.into_iter().map(|x| x as u64).filter(|&x| shape.in_range(x)).collect()
    }

    #[test]
    fn drelu_and_relu_follow_the_law() {
        for (l, s, m) in [
            (22, 5, 8),
            (22, 0, 7),
            (12, 0, 6),
            (17, 0, 8),
            (30, 9, 10),
            (9, 2, 3),
            (23, 14, 8),
            (12, 5, 6),
            (9, 0, 8),
        ] {
            let clip = 5u64 << (l - 5);
            for out in [CmpOut::Drelu, CmpOut::Relu, CmpOut::ReluClip(clip)] {
                let mut shape = CmpShape {
                    n: 1,
                    l,
                    s,
                    m,
                    out,
                    pre: 0,
                };
                if matches!(out, CmpOut::ReluClip(_)) && l - 1 - s > m {
                    // the clip has one digit
                    assert_eq!(shape.check(), Err(ProtocolError::BadShape));
                    continue;
                }
                shape.check().unwrap();
                let mut x = inputs(shape);
                if let CmpOut::ReluClip(t) = out {
                    // the clip's thresholds and their edges
                    for e in [0, 1, 1u64 << s, (1u64 << s) + 1] {
                        x.extend([t, t.wrapping_neg()].map(|v| v.wrapping_sub(e)));
                        x.extend([t, t.wrapping_neg()].map(|v| v.wrapping_add(e)));
                    }
                    x.retain(|&v| shape.in_range(v));
                }
                shape.n = x.len();
                let k = out.outputs();
                let got = run(shape, &x, l as u8);
                for (&xv, g) in x.iter().zip(got.chunks(k)) {
                    assert!(allowed(shape, xv, g), "{shape:?}: x = {} got {g:?}", xv as i64);
                    if s == 0 {
                        assert_eq!(g, &reference(out, xv)[..k], "{shape:?}: x = {}", xv as i64);
                    }
                }
            }
        }
    }

    #[test]
    fn truncating_openings_follow_the_law() {
        // inputs `pre` bits finer than the outputs: every low part, the
        // edges of the read value's range and thresholds, several masks
        for (l, s, m, out) in [
            (22, 5, 8, CmpOut::Relu),
            (22, 0, 8, CmpOut::Drelu),
            (23, 14, 8, CmpOut::ReluClip(5 << 16)),
        ] {
            for pre in [1, 7, 16, 20] {
                let shape = CmpShape {
                    n: 1,
                    l,
                    s,
                    m,
                    out,
                    pre: 0,
                };
                let mut hi = inputs(shape);
                if let CmpOut::ReluClip(t) = out {
                    for e in [0, 1, 1u64 << s, (1u64 << s) + 1] {
                        hi.extend([t, t.wrapping_neg()].map(|v| v.wrapping_sub(e)));
                        hi.extend([t, t.wrapping_neg()].map(|v| v.wrapping_add(e)));
                    }
                }
                let low = [0u64, 1, (1 << pre) - 1, 0x5A5A_5A5A & ((1 << pre) - 1)];
                let shape = shape.with_pre(pre).unwrap();
                let mut x: Vec<u64> = hi
                    .iter()
                    .flat_map(|&v| low.iter().map(move |&lo| (v << pre) | lo))
                    .filter(|&v| shape.in_range(v))
                    .collect();
                x.sort_unstable();
                x.dedup();
                let shape = CmpShape { n: x.len(), ..shape };
                let k = out.outputs();
                for seed in 0..6u8 {
                    let got = run(shape, &x, seed.wrapping_mul(37).wrapping_add(l as u8));
                    for (&xv, g) in x.iter().zip(got.chunks(k)) {
                        assert!(allowed(shape, xv, g), "{shape:?}: x = {} got {g:?}", xv as i64);
                    }
                }
            }
        }
    }

    #[test]
    fn basis_sizes() {
        assert_eq!(basis(1).len(), 2);
        assert_eq!(basis(2).len(), 5);
        assert_eq!(basis(3).len(), 11);
        let s = CmpShape::new(10, 16, 5, CmpOut::Relu).unwrap();
        assert_eq!((s.l, s.s, s.m, s.digits().d), (22, 5, 8, 2));
        assert_eq!(s.words_per_elem(), 31);
        let s = CmpShape::branch(10, 16, 6, CmpOut::ReluClip(5 << 16), 8).unwrap();
        // one set of tables (4 words) and the mask bits' word; 4 monomial
        // words per threshold and 3 shared
        assert_eq!(
            (s.l, s.s, s.digits().d, s.words_per_elem(), s.bits()),
            (23, 14, 1, 20, 3)
        );
    }
}
