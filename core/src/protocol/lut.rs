//! Piecewise-linear lookup table on a masked input: the building block of
//! every nonlinear op (a one-time truth table with a linear term).
//!
//! Parameters: a shift `s`, `k` index bits, and a shift `t <= s` of the
//! linear term. Input: a shared `x` in `[-2^(s+k-1) + 2^s, 2^(s+k-1) - 2^s)`;
//! `x' = x + 2^(s+k-1)` lies in `[2^s, 2^(s+k) - 2^s)`, its grid index is
//! `y = x' >> s` and its linear coordinate `u = x' >> t`. A public [`Table`]
//! gives, for each index `y` and output `o`, a segment `(a, b)`: the op
//! returns shares of `a(y) u + b(y)`. (`t` lets a slope be encoded per `2^t`
//! input units, so a fitted segment keeps its precision when `s` is large.)
//!
//! Correlation: random `r` (both shares seeded). With `M = 2^(s+k-t)`,
//! `R = (r >> s) mod 2^k` and `ru = (r >> t) mod M`, the dealer tabulates
//! for every `j` in `[0, 2^k)`, with `(a, b)` the segment at `j - R`:
//! `A[j] = a` and `B[j] = b - a ru + a M [j < R]` (derived lanes: the
//! device's shares are its seeded words at `(element, j)`, read by random
//! access; the host gets the rest).
//!
//! Online (one flight, both directions at once): each party sends
//! `x_b + r_b (+ 2^(s+k-1) for the host)`; both learn `c = x' + r`, which is
//! uniform, the index `C = (c >> s) mod 2^k` and `cu = (c >> t) mod M`. Each
//! outputs `A_b[C] cu + B_b[C]`. Since `cu = u + ru + kappa - M [cu < ru +
//! kappa]` with `kappa` the carry from the bits below `t`, and the input
//! range keeps `C != R` so that `[cu < ru + kappa] = [C < R]`, the output is
//! `a(y_C) (u + kappa) + b(y_C)` with `y_C = C - R = y + carry`:
//! `carry, kappa` in `{0, 1}` are the carries into bits `s` and `t` (the
//! segment is the input's or the next one; `u` is exact or one unit above;
//! with `t = 0` there is no `kappa`).
//!
//! Only the low `s + k` bits of `c` are read (`C` and `cu` lie below bit
//! `s + k`, and carries only move up), so each party sends its masked input
//! modulo `2^(8 w)` with `w = ceil((s + k) / 8)` bytes ([`LutShape::width`];
//! several grids read one opening of the widest of them): 3 bytes instead of
//! 8 for 22-bit grids.
//!
//! Security: `c` is uniform (masked by `r`); the table shares each party sees
//! are uniform (masked by the other's seeded words), and nobody learns `R`.
//! Cost per element: `w` bytes each way in one flight; dealer -> host
//! `2^k` words per table (`a` tables only where a slope is used).

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::wire;

/// Random lane `r`.
pub const LANE_R: u32 = 0;
/// First table lane: output `o` uses `LANE_T + 2 o` (slopes) and
/// `LANE_T + 2 o + 1` (intercepts).
pub const LANE_T: u32 = 1;

/// Largest supported index width.
pub const MAX_K: u32 = 14;
/// Smallest supported index width.
pub const MIN_K: u32 = 2;

/// A public piecewise-linear function of the grid index.
pub trait Table {
    /// Outputs per element.
    fn outputs(&self) -> usize;
    /// Whether output `o` has a slope (else it is a pure table and its
    /// slope table is neither sent nor used).
    fn has_slope(&self, o: usize) -> bool;
    /// Segment `(a, b)` of output `o` at grid index `y` (`0 <= y < 2^k`);
    /// the output is `a x + b` in the ring.
    fn segment(&self, y: u64, o: usize) -> (u64, u64);
}

/// Shape of a lookup op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LutShape {
    /// Elements.
    pub n: usize,
    /// Shift: the grid step is `2^s` (in ring units).
    pub s: u32,
    /// Index bits: `2^k` segments.
    pub k: u32,
    /// Shift of the linear coordinate `u = x' >> t` (`t <= s`).
    pub t: u32,
}

impl LutShape {
    /// Offset added to the input: `2^(s+k-1)`.
    pub fn offset(self) -> u64 {
        1u64 << (self.s + self.k - 1)
    }

    /// Bytes per element of the opening: the masked input modulo
    /// `2^(s+k)`, rounded up to whole bytes.
    pub fn width(self) -> usize {
        ((self.s + self.k) as usize).div_ceil(8).clamp(1, 8)
    }

    /// Bytes each party sends.
    pub fn msg_len(self) -> usize {
        wire::narrow_len(self.n, self.width())
    }

    fn entries(self) -> usize {
        1usize << self.k
    }

    /// Correction words the host receives for `table`.
    pub fn corrections(self, table: &dyn Table) -> usize {
        self.n * self.words_per_elem(table)
    }

    fn words_per_elem(self, table: &dyn Table) -> usize {
        let per_table: usize = (0..table.outputs()).map(|o| 1 + table.has_slope(o) as usize).sum();
        per_table * self.entries()
    }

    fn check(self, table: &dyn Table) -> Result<(), ProtocolError> {
        if self.n == 0
            || table.outputs() == 0
            || !(MIN_K..=MAX_K).contains(&self.k)
            || self.s + self.k > 62
            || self.t > self.s
        {
            return Err(ProtocolError::BadShape);
        }
        self.n
            .checked_mul(self.words_per_elem(table))
            .and_then(|w| w.checked_mul(8))
            .map(|_| ())
            .ok_or(ProtocolError::BadShape)
    }

    /// The grid index of a plaintext input (the reference's `y`).
    pub fn index(self, x: u64) -> u64 {
        x.wrapping_add(self.offset()) >> self.s
    }

    /// The linear coordinate of a plaintext input (the reference's `u`).
    pub fn coord(self, x: u64) -> u64 {
        x.wrapping_add(self.offset()) >> self.t
    }

    /// Smallest input in the stated range.
    pub fn min_input(self) -> i64 {
        -(self.offset() as i64) + (1i64 << self.s)
    }

    /// Largest input in the stated range (exclusive).
    pub fn max_input(self) -> i64 {
        (self.offset() - (1u64 << self.s)) as i64
    }

    /// Whether `x` is in the stated input range.
    pub fn in_range(self, x: u64) -> bool {
        (self.min_input()..self.max_input()).contains(&(x as i64))
    }
}

/// Plaintext reference: `a(y) u + b(y)` at grid index `y` and coordinate
/// `u` (pass `shape.index(x)`, `shape.coord(x)`, or the next ones).
pub fn reference(table: &dyn Table, u: u64, y: u64, o: usize) -> u64 {
    let (a, b) = table.segment(y, o);
    a.wrapping_mul(u).wrapping_add(b)
}

/// One grid of a multi-grid lookup: several grids read the same opened
/// value (one mask `r`, one message), each with its own shift, index width,
/// linear shift and table. All grids of an op have the same `n`.
#[derive(Clone, Copy)]
pub struct Grid<'a> {
    /// The grid.
    pub shape: LutShape,
    /// Its table.
    pub table: &'a dyn Table,
}

fn check_grids(grids: &[Grid<'_>]) -> Result<usize, ProtocolError> {
    let first = grids.first().ok_or(ProtocolError::BadShape)?;
    let mut words = 0usize;
    for g in grids {
        g.shape.check(g.table)?;
        if g.shape.n != first.shape.n {
            return Err(ProtocolError::BadShape);
        }
        words = words
            .checked_add(g.shape.corrections(g.table))
            .ok_or(ProtocolError::BadShape)?;
    }
    Ok(words)
}

/// Bytes per element of a multi-grid lookup's opening: the widest grid's.
pub fn grids_width(grids: &[Grid<'_>]) -> usize {
    grids.iter().map(|g| g.shape.width()).max().unwrap_or(8)
}

/// Correction words the host receives for a multi-grid lookup.
pub fn grids_corrections(grids: &[Grid<'_>]) -> usize {
    grids.iter().map(|g| g.shape.corrections(g.table)).sum()
}

/// Scratch words [`deal`] needs: the table's segments, computed once per op.
pub fn dealer_scratch_len(shape: LutShape, table: &dyn Table) -> usize {
    2 * table.outputs() * (1usize << shape.k.min(MAX_K))
}

/// Dealer: the host's message for one lookup op. `scratch` holds
/// [`dealer_scratch_len`] words.
pub fn deal(
    op: &DealerOp,
    shape: LutShape,
    table: &dyn Table,
    scratch: &mut [u64],
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    deal_grids(op, &[Grid { shape, table }], scratch, out)
}

/// Largest number of grids of one lookup.
pub const MAX_GRIDS: usize = 16;

/// Scratch words [`deal_grids`] needs.
pub fn grids_scratch_len(grids: &[Grid<'_>]) -> usize {
    grids.iter().map(|g| dealer_scratch_len(g.shape, g.table)).sum()
}

/// Dealer: a multi-grid lookup; `scratch` holds [`grids_scratch_len`].
pub fn deal_grids(
    op: &DealerOp,
    grids: &[Grid<'_>],
    scratch: &mut [u64],
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    let words = check_grids(grids)?;
    let mut w = op.writer(out, words)?;
    let n = grids.first().map_or(0, |g| g.shape.n);
    let mut rs = op.random(LANE_R);
    // one pass per element keeps the host's layout: element, grid, output
    let mut lane = LANE_T;
    if grids.len() > MAX_GRIDS {
        return Err(ProtocolError::BadShape);
    }
    let mut lanes = [0u32; MAX_GRIDS];
    for (gi, g) in grids.iter().enumerate() {
        *lanes.get_mut(gi).ok_or(ProtocolError::BadShape)? = lane;
        lane += 2 * g.table.outputs() as u32;
    }
    // every grid's segments, computed once per op
    let mut rest: &mut [u64] = scratch
        .get_mut(..grids_scratch_len(grids))
        .ok_or(ProtocolError::BadBuffer)?;
    let mut segs: [&[u64]; MAX_GRIDS] = [&[]; MAX_GRIDS];
    for (gi, g) in grids.iter().enumerate() {
        let entries = g.shape.entries();
        let (seg, r) = core::mem::take(&mut rest).split_at_mut(dealer_scratch_len(g.shape, g.table));
        rest = r;
        for (o, tab) in seg.chunks_exact_mut(2 * entries).enumerate() {
            for (y, ab) in tab.chunks_exact_mut(2).enumerate() {
                let (a, b) = g.table.segment(y as u64, o);
                ab.copy_from_slice(&[a, b]);
            }
        }
        *segs.get_mut(gi).ok_or(ProtocolError::BadShape)? = seg;
    }
    for i in 0..n as u64 {
        let rv = rs.next_u64();
        for (gi, g) in grids.iter().enumerate() {
            let sh = g.shape;
            let entries = sh.entries();
            let seg = segs.get(gi).copied().unwrap_or(&[]);
            let (k, s, t) = (sh.k, sh.s, sh.t);
            let mask = (1u64 << k) - 1;
            let m = 1u64 << (s + k - t);
            let big_r = (rv >> s) & mask;
            let ru = (rv >> t) & (m - 1);
            let base = lanes.get(gi).copied().unwrap_or(LANE_T);
            // entry j reads segment (j - R) mod 2^k: the segments rotated
            // by R, the first R of them (j < R) wrapped
            let split = 2 * (entries - big_r as usize);
            let word = i * entries as u64;
            for (o, tab) in seg.chunks_exact(2 * entries).enumerate() {
                let lane_a = base + 2 * o as u32;
                let (head, tail) = tab.split_at(split.min(tab.len()));
                let rotated = || tail.chunks_exact(2).chain(head.chunks_exact(2));
                let ab = |s: &[u64]| (s.first().copied().unwrap_or(0), s.get(1).copied().unwrap_or(0));
                if g.table.has_slope(o) {
                    w.put_lane(&op.device, lane_a, word, entries, rotated().map(|s| ab(s).0));
                }
                let wrapped = big_r as usize;
                let values = rotated().enumerate().map(|(j, s)| {
                    let (a, b) = ab(s);
                    let wrap = if j < wrapped { m } else { 0 };
                    b.wrapping_sub(a.wrapping_mul(ru)).wrapping_add(a.wrapping_mul(wrap))
                });
                w.put_lane(&op.device, lane_a + 1, word, entries, values);
            }
        }
    }
    w.finish()
}

/// One party's lookup, before opening.
#[derive(Debug)]
pub struct Lut<'d> {
    corr: OpCorr<'d>,
    n: usize,
    offset: u64,
    width: usize,
}

/// One party's lookup, after opening.
#[derive(Debug)]
pub struct LutOpened<'d> {
    corr: OpCorr<'d>,
    n: usize,
    offset: u64,
    width: usize,
}

impl<'d> Lut<'d> {
    /// A lookup of this shape for `table` (the host's corrections are checked
    /// against the table's size).
    pub fn new(corr: OpCorr<'d>, shape: LutShape, table: &dyn Table) -> Result<Self, ProtocolError> {
        Self::with_grids(corr, &[Grid { shape, table }])
    }

    /// A multi-grid lookup: one opening read through every grid.
    pub fn with_grids(corr: OpCorr<'d>, grids: &[Grid<'_>]) -> Result<Self, ProtocolError> {
        let words = check_grids(grids)?;
        corr.expect_corrections(words)?;
        let first = grids.first().ok_or(ProtocolError::BadShape)?.shape;
        Ok(Self {
            corr,
            n: first.n,
            offset: first.offset(),
            width: grids_width(grids),
        })
    }

    /// Writes this party's masked input `x_b + r_b` (+ the first grid's
    /// offset for the host), modulo `2^(8 w)`: `w` = [`grids_width`] bytes
    /// per element.
    pub fn open(self, x: &[u64], out: &mut [u8]) -> Result<(LutOpened<'d>, usize), ProtocolError> {
        if x.len() != self.n {
            return Err(ProtocolError::BadBuffer);
        }
        let len = wire::narrow_len(self.n, self.width);
        let out = wire::out_prefix(out, len)?;
        let off = if self.corr.role() == Role::Host { self.offset } else { 0 };
        let mut r = self.corr.random(LANE_R);
        wire::put_narrow(
            out,
            self.width,
            x.iter().map(|&v| v.wrapping_add(r.next_u64()).wrapping_add(off)),
        );
        Ok((
            LutOpened {
                corr: self.corr,
                n: self.n,
                offset: self.offset,
                width: self.width,
            },
            len,
        ))
    }
}

impl LutOpened<'_> {
    /// Takes the peer's masked input and writes this party's output shares,
    /// `out[i * outputs + o]`. `own` is the message this party sent.
    pub fn finish(
        self,
        shape: LutShape,
        table: &dyn Table,
        own: &[u8],
        peer: &[u8],
        out: &mut [u64],
    ) -> Result<(), ProtocolError> {
        self.finish_grids(&[Grid { shape, table }], own, peer, out)
    }

    /// Finishes a multi-grid lookup: `out` holds, per element, every grid's
    /// outputs in grid order.
    pub fn finish_grids(
        self,
        grids: &[Grid<'_>],
        own: &[u8],
        peer: &[u8],
        out: &mut [u64],
    ) -> Result<(), ProtocolError> {
        let n = self.n;
        check_grids(grids)?;
        if grids
            .first()
            .is_some_and(|g| g.shape.n != n || g.shape.offset() != self.offset)
            || grids_width(grids) != self.width
        {
            return Err(ProtocolError::BadShape);
        }
        let len = wire::narrow_len(n, self.width);
        wire::expect_len(own, len)?;
        wire::expect_len(peer, len)?;
        let outputs: usize = grids.iter().map(|g| g.table.outputs()).sum();
        if out.len() != n * outputs {
            return Err(ProtocolError::BadBuffer);
        }
        let host = self.corr.role() == Role::Host;
        let per_elem: usize = grids.iter().map(|g| g.shape.words_per_elem(g.table)).sum();
        let it = wire::narrow(own, self.width)
            .zip(wire::narrow(peer, self.width))
            .zip(out.chunks_exact_mut(outputs.max(1)));
        for (i, ((m_own, p), o_row)) in it.enumerate() {
            // c for the first grid's offset (right in its low 8 w bits, all
            // that is read); other grids shift it publicly
            let c0 = m_own.wrapping_add(p);
            let mut table_off = i * per_elem;
            let mut lane = LANE_T;
            let mut o_iter = o_row.iter_mut();
            for g in grids {
                let sh = g.shape;
                let c = c0.wrapping_sub(self.offset).wrapping_add(sh.offset());
                let mask = (1u64 << sh.k) - 1;
                let m = 1u64 << (sh.s + sh.k - sh.t);
                let entries = sh.entries();
                let idx = (c >> sh.s) & mask;
                let cu = (c >> sh.t) & (m - 1);
                let elem = i as u64 * entries as u64 + idx;
                let at = if host { idx } else { elem };
                for o in 0..g.table.outputs() {
                    let lane_a = lane + 2 * o as u32;
                    let a = if g.table.has_slope(o) {
                        let a = self.corr.derived_word(lane_a, table_off, at);
                        table_off += entries;
                        a
                    } else {
                        0
                    };
                    let b = self.corr.derived_word(lane_a + 1, table_off, at);
                    table_off += entries;
                    if let Some(v) = o_iter.next() {
                        *v = a.wrapping_mul(cu).wrapping_add(b);
                    }
                }
                lane += 2 * g.table.outputs() as u32;
            }
        }
        Ok(())
    }
}
