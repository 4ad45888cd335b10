//! Product of two shared matrices `X (n x k)` and `Y (k x m)` with a matrix
//! Beaver triple (for `Q K^T` and `attention x V`).
//!
//! Correlation: random `A (n x k)`, `B (k x m)`, derived `C = A B`.
//! Online, both parties send at once `(X - A, Y - B)` (their shares); both
//! learn `E = X - A`, `F = Y - B` and output
//! `Z_b = C_b + E B_b + A_b F (+ E F for the host)`, `Z = X Y` in the ring.
//!
//! Cost: one flight, `8 (nk + km)` bytes each way, `8 nm` dealer -> host.
//! A product whose result is read modulo `2^(8 w)` only (scores that a
//! lookup or comparison opens before their truncation) sends the low `w`
//! bytes of each masked word ([`MatmulShape::with_width`]): `w (nk + km)`.
//!
//! # One right operand, several products ([`Right`])
//! Products of several left operands with the same `Y` (an attention head's
//! `K^T` or `V` against each flight of query rows) open `F = Y - B` once:
//! the first product ([`Right::Keep`]) gives each party `F`, and each later
//! one ([`Right::Opened`]) takes `F`, reuses the first op's `B` and has
//! its own `A'` and `C' = A' B`: it sends only `X - A'` (`8 nk` bytes each
//! way). Security: `B` masks one opening only (the first op's); every
//! `A'` masks one `X`, and `C'` is dealt as any product's `C`, so each
//! later product is the first one's with other rows of `X`.

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::ring::check_len;
use crate::wire;

/// Random lane `A`.
pub const LANE_A: u32 = 0;
/// Random lane `B`.
pub const LANE_B: u32 = 1;
/// Derived lane `C = A B`.
pub const LANE_C: u32 = 2;

/// How a product opens its right operand `Y`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Right {
    /// `y` is this party's share of `Y`; `F = Y - B` is opened.
    #[default]
    Share,
    /// As [`Right::Share`], and this party's `y` becomes `F` (for later
    /// [`Right::Opened`] products of the same `Y`).
    Keep,
    /// `y` holds `F = Y - B` opened by the earlier op `op` (a
    /// [`Right::Keep`] product of the same shape), whose `B` this product
    /// reuses: only `X - A` is opened.
    Opened(u64),
}

/// Shape `(n, k, m)` of `X (n x k) * Y (k x m)`, and how `Y` is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    /// Rows of `X`.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of `Y`.
    pub m: usize,
    /// How `Y` is opened.
    pub right: Right,
    /// Bytes per opened word (1..=8): the product is right modulo
    /// `2^(8 width)` only, for a result read no higher (8: the whole ring).
    pub width: usize,
}

impl MatmulShape {
    /// `X (n x k) * Y (k x m)`, `Y` opened by this product.
    pub const fn new(n: usize, k: usize, m: usize) -> Self {
        Self {
            n,
            k,
            m,
            right: Right::Share,
            width: 8,
        }
    }

    /// The same product with `Y` opened as `right` says.
    pub const fn with_right(self, right: Right) -> Self {
        Self { right, ..self }
    }

    /// The same product with openings of `width` bytes a word: right
    /// modulo `2^(8 width)`. A [`Right::Opened`] product takes `F` at the
    /// width of the product that opened it.
    pub const fn with_width(self, width: usize) -> Self {
        Self { width, ..self }
    }

    /// Words of `Y` this party opens (none when `Y` is already opened).
    fn opened_y(self) -> usize {
        match self.right {
            Right::Opened(_) => 0,
            Right::Share | Right::Keep => self.k * self.m,
        }
    }

    /// Bytes each party sends.
    pub fn msg_len(self) -> usize {
        wire::narrow_len(self.n * self.k + self.opened_y(), self.width)
    }
    /// Scratch words a party's finish takes at most: `E` and all of `B`'s
    /// rows at once (the faster product).
    pub fn scratch_len(self) -> usize {
        self.n * self.k + self.k * self.m
    }
    /// Scratch words a party's finish needs at least: `E` and one row of
    /// `B` at a time (a microcontroller's).
    pub fn min_scratch_len(self) -> usize {
        self.n * self.k + self.m
    }
    /// Scratch words the dealer needs.
    pub fn dealer_scratch_len(self) -> usize {
        self.k * self.m + self.m
    }
    fn check(self) -> Result<(), ProtocolError> {
        if self.n == 0 || self.k == 0 || self.m == 0 || !(1..=8).contains(&self.width) {
            return Err(ProtocolError::BadShape);
        }
        let nk = self.n.checked_mul(self.k);
        let km = self.k.checked_mul(self.m);
        let nm = self.n.checked_mul(self.m);
        match (nk, km, nm) {
            (Some(a), Some(b), Some(_)) if a.checked_add(b).and_then(|s| s.checked_mul(8)).is_some() => Ok(()),
            _ => Err(ProtocolError::BadShape),
        }
    }
}

/// Dealer: the host's message. `scratch` holds `dealer_scratch_len` words.
pub fn deal(op: &DealerOp, s: MatmulShape, scratch: &mut [u64], out: &mut [u8]) -> Result<usize, ProtocolError> {
    s.check()?;
    let scratch = scratch
        .get_mut(..s.dealer_scratch_len())
        .ok_or(ProtocolError::BadBuffer)?;
    let (b, acc) = scratch.split_at_mut(s.k * s.m);
    let mut bp = match s.right {
        Right::Opened(first) => op.random_of_earlier(first, LANE_B)?,
        Right::Share | Right::Keep => op.random(LANE_B),
    };
    for v in b.iter_mut() {
        *v = bp.next_u64();
    }
    let mut a = op.random(LANE_A);
    let mut c1 = op.device_derived(LANE_C);
    let mut w = op.writer(out, s.n * s.m)?;
    for _ in 0..s.n {
        acc.fill(0);
        for b_row in b.chunks_exact(s.m) {
            let av = a.next_u64();
            for (o, &y) in acc.iter_mut().zip(b_row) {
                *o = o.wrapping_add(av.wrapping_mul(y));
            }
        }
        for &c in acc.iter() {
            w.put(c, c1.next_u64());
        }
    }
    w.finish()
}

/// One party's matrix product, before opening.
#[derive(Debug)]
pub struct Matmul<'d> {
    corr: OpCorr<'d>,
    s: MatmulShape,
}

/// One party's matrix product, after opening.
#[derive(Debug)]
pub struct MatmulOpened<'d> {
    corr: OpCorr<'d>,
    s: MatmulShape,
}

impl<'d> Matmul<'d> {
    /// A product of this shape.
    pub fn new(corr: OpCorr<'d>, s: MatmulShape) -> Result<Self, ProtocolError> {
        s.check()?;
        corr.expect_corrections(s.n * s.m)?;
        Ok(Self { corr, s })
    }

    /// Writes `(X - A, Y - B)` (this party's shares; `X - A` alone with
    /// [`Right::Opened`]) into `out`.
    pub fn open(self, x: &[u64], y: &[u64], out: &mut [u8]) -> Result<(MatmulOpened<'d>, usize), ProtocolError> {
        let s = self.s;
        check_len(x, s.n, s.k)?;
        check_len(y, s.k, s.m)?;
        let len = s.msg_len();
        let (oe, of) = wire::out_prefix(out, len)?.split_at_mut(s.width * s.n * s.k);
        let mut a = self.corr.random(LANE_A);
        wire::put_narrow(oe, s.width, x.iter().map(|&v| v.wrapping_sub(a.next_u64())));
        if s.opened_y() > 0 {
            let mut b = self.corr.random(LANE_B);
            wire::put_narrow(of, s.width, y.iter().map(|&v| v.wrapping_sub(b.next_u64())));
        }
        Ok((MatmulOpened { corr: self.corr, s }, len))
    }
}

impl MatmulOpened<'_> {
    /// Takes the peer's opening and writes this party's share of `X Y`.
    /// `scratch` holds at least [`MatmulShape::min_scratch_len`] words (at
    /// [`MatmulShape::scratch_len`] the product takes `B` whole). `y` (this
    /// party's share) becomes `F = Y - B`, which a [`Right::Keep`] product
    /// keeps for later [`Right::Opened`] ones.
    pub fn finish(
        mut self,
        x: &[u64],
        y: &mut [u64],
        peer: &[u8],
        scratch: &mut [u64],
        z: &mut [u64],
    ) -> Result<(), ProtocolError> {
        let s = self.s;
        check_len(x, s.n, s.k)?;
        check_len(y, s.k, s.m)?;
        check_len(z, s.n, s.m)?;
        wire::expect_len(peer, s.msg_len())?;
        if scratch.len() < s.min_scratch_len() {
            return Err(ProtocolError::BadBuffer);
        }
        let (e, rest) = scratch.split_at_mut(s.n * s.k);
        let (pe, pf) = peer.split_at(s.width * s.n * s.k);
        // E = X - A (own) + peer's; F = Y - B likewise, over y (an Opened
        // product finds it there)
        let mut a = self.corr.random(LANE_A);
        for ((ev, &xv), p) in e.iter_mut().zip(x).zip(wire::narrow(pe, s.width)) {
            *ev = xv.wrapping_sub(a.next_u64()).wrapping_add(p);
        }
        if !matches!(s.right, Right::Opened(_)) {
            let mut b = self.corr.random(LANE_B);
            for (yv, p) in y.iter_mut().zip(wire::narrow(pf, s.width)) {
                *yv = yv.wrapping_sub(b.next_u64()).wrapping_add(p);
            }
        }
        let f: &[u64] = y;
        // Z = C_b (+ E F for the host)
        let mut c = self.corr.derived(LANE_C, s.n * s.m)?;
        for zv in z.iter_mut() {
            *zv = c.next_u64();
        }
        if self.corr.role() == Role::Host {
            crate::ring::matmul_acc(z, e, f, (s.n, s.k, s.m))?;
        }
        // Z += A_b F, A_b regenerated row by row.
        let mut a = self.corr.random(LANE_A);
        for z_row in z.chunks_exact_mut(s.m) {
            for f_row in f.chunks_exact(s.m) {
                let av = a.next_u64();
                for (zv, &fv) in z_row.iter_mut().zip(f_row) {
                    *zv = zv.wrapping_add(av.wrapping_mul(fv));
                }
            }
        }
        // Z += E B_b: all of B_b at once when the scratch holds it, else a
        // row at a time (row kk of B_b times column kk of E)
        let mut b = match s.right {
            Right::Opened(first) => self.corr.random_of_earlier(first, LANE_B)?,
            Right::Share | Right::Keep => self.corr.random(LANE_B),
        };
        if let Some(bb) = rest.get_mut(..s.k * s.m) {
            b.fill(bb);
            crate::ring::matmul_acc(z, e, bb, (s.n, s.k, s.m))?;
        } else {
            let row = rest.get_mut(..s.m).ok_or(ProtocolError::BadBuffer)?;
            for kk in 0..s.k {
                b.fill(row);
                for (z_row, e_row) in z.chunks_exact_mut(s.m).zip(e.chunks_exact(s.k)) {
                    let ev = e_row.get(kk).copied().unwrap_or(0);
                    for (zv, &bv) in z_row.iter_mut().zip(row.iter()) {
                        *zv = zv.wrapping_add(ev.wrapping_mul(bv));
                    }
                }
            }
        }
        Ok(())
    }
}
