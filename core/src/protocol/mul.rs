//! Elementwise product of two shared vectors with a Beaver triple.
//!
//! Correlation: random `a`, `b` (both shares seeded), derived `c = a b`
//! (device share seeded, host share from the dealer).
//! Online, both parties send at once `(x_i - a_i, y_i - b_i)`; both learn
//! `e = x - a`, `f = y - b` (uniform, so nothing about `x`, `y`) and output
//! `z_i = c_i + e b_i + f a_i (+ e f for the host)`, with `z = x y` exactly in
//! the ring (the product scale 2f: truncate next).
//!
//! Cost per element: 16 bytes each way in one flight, 8 bytes dealer -> host.
//!
//! Row broadcast ([`Mul::with_rows`]): `y` has one value per row of `cols`
//! elements of `x` (`z[i] = x[i] y[i / cols]`), with `c[i] = a[i] b[i / cols]`;
//! `y - b` is opened once per row, so a row costs `8 (cols + 1)` bytes each way.
//!
//! Opened left operand ([`Mul::with_left`]): when an earlier square
//! op already opened `e = x - a` (its `a`, lane [`super::square::LANE_A`],
//! [`super::square::SquareOpened::finish`] with `keep`), the product takes that
//! `e` and `a`: only `y - b` is sent (`8` bytes per row each way) and the
//! dealer deals `c = a b` with the square's `a`. `a` still masks one
//! opening only.

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::wire;

/// Random lane `a`.
pub const LANE_A: u32 = 0;
/// Random lane `b`.
pub const LANE_B: u32 = 1;
/// Derived lane `c = a b`.
pub const LANE_C: u32 = 2;

/// Bytes each party sends for `n` elements (no broadcast).
pub fn msg_len(n: usize) -> usize {
    wire::words_len(2 * n)
}

/// Bytes each party sends for `n` elements broadcast over rows of `cols`.
pub fn rows_msg_len(n: usize, cols: usize) -> usize {
    msg_parts(n, cols, None).1
}

/// Bytes of a party's message that open `x - a` (none when the left operand
/// is already opened), and of the whole message.
fn msg_parts(n: usize, cols: usize, left: Option<u64>) -> (usize, usize) {
    let x = if left.is_some() { 0 } else { wire::words_len(n) };
    (x, x + wire::words_len(n / cols.max(1)))
}

fn check(n: usize, cols: usize) -> Result<(), ProtocolError> {
    if n == 0 || cols == 0 || !n.is_multiple_of(cols) || n > usize::MAX / 16 {
        Err(ProtocolError::BadShape)
    } else {
        Ok(())
    }
}

/// Dealer: the host's message for a product of `n` elements.
pub fn deal(op: &DealerOp, n: usize, out: &mut [u8]) -> Result<usize, ProtocolError> {
    deal_rows(op, n, 1, out)
}

/// Dealer: the host's message for a row-broadcast product.
pub fn deal_rows(op: &DealerOp, n: usize, cols: usize, out: &mut [u8]) -> Result<usize, ProtocolError> {
    deal_rows_left(op, n, cols, None, out)
}

/// Dealer: the host's message for a row-broadcast product whose left
/// operand the earlier square op `left` opened, if any ([`Mul::with_left`]).
pub fn deal_rows_left(
    op: &DealerOp,
    n: usize,
    cols: usize,
    left: Option<u64>,
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    check(n, cols)?;
    let mut a = match left {
        Some(first) => op.random_of_earlier(first, super::square::LANE_A)?,
        None => op.random(LANE_A),
    };
    let mut b = op.random(LANE_B);
    let mut c1 = op.device_derived(LANE_C);
    let mut w = op.writer(out, n)?;
    for _ in 0..n / cols {
        let bv = b.next_u64();
        for _ in 0..cols {
            w.put(a.next_u64().wrapping_mul(bv), c1.next_u64());
        }
    }
    w.finish()
}

/// One party's elementwise product, before opening.
#[derive(Debug)]
pub struct Mul<'d> {
    corr: OpCorr<'d>,
    n: usize,
    cols: usize,
    /// The square op that opened the left operand.
    left: Option<u64>,
}

/// One party's elementwise product, after opening.
#[derive(Debug)]
pub struct MulOpened<'d> {
    corr: OpCorr<'d>,
    n: usize,
    cols: usize,
    left: Option<u64>,
}

impl<'d> Mul<'d> {
    /// A product of `n` elements.
    pub fn new(corr: OpCorr<'d>, n: usize) -> Result<Self, ProtocolError> {
        Self::with_rows(corr, n, 1)
    }

    /// A product of `n` elements of `x` by `n / cols` row values of `y`.
    pub fn with_rows(corr: OpCorr<'d>, n: usize, cols: usize) -> Result<Self, ProtocolError> {
        Self::with_left(corr, n, cols, None)
    }

    /// As [`Self::with_rows`], with `left = Some(first)` the left operand
    /// opened by the earlier square op `first` (of the same `n` elements):
    /// `x` is then that op's `e = x - a`
    /// ([`super::square::SquareOpened::finish`] with `keep`).
    pub fn with_left(corr: OpCorr<'d>, n: usize, cols: usize, left: Option<u64>) -> Result<Self, ProtocolError> {
        check(n, cols)?;
        corr.expect_corrections(n)?;
        if let Some(first) = left {
            // refused here, not at the first use of the lane, on every party
            corr.random_of_earlier(first, super::square::LANE_A)?;
        }
        Ok(Self { corr, n, cols, left })
    }

    /// Bytes this op sends.
    pub fn msg_len(&self) -> usize {
        msg_parts(self.n, self.cols, self.left).1
    }

    /// Writes `(x - a, y - b)` (this party's shares; `y - b` alone with an
    /// opened left operand) into `out`.
    pub fn open(self, x: &[u64], y: &[u64], out: &mut [u8]) -> Result<(MulOpened<'d>, usize), ProtocolError> {
        if x.len() != self.n || y.len() != self.n / self.cols {
            return Err(ProtocolError::BadBuffer);
        }
        let (left, len) = msg_parts(self.n, self.cols, self.left);
        let (oe, of) = wire::out_prefix(out, len)?.split_at_mut(left);
        if self.left.is_none() {
            let mut a = self.corr.random(LANE_A);
            wire::put_words(oe, x.iter().map(|&v| v.wrapping_sub(a.next_u64())));
        }
        let mut b = self.corr.random(LANE_B);
        wire::put_words(of, y.iter().map(|&v| v.wrapping_sub(b.next_u64())));
        Ok((
            MulOpened {
                corr: self.corr,
                n: self.n,
                cols: self.cols,
                left: self.left,
            },
            len,
        ))
    }
}

impl MulOpened<'_> {
    /// Takes the peer's opening and writes this party's share of `x y`.
    pub fn finish(mut self, x: &[u64], y: &[u64], peer: &[u8], z: &mut [u64]) -> Result<(), ProtocolError> {
        let (n, cols) = (self.n, self.cols);
        if x.len() != n || y.len() != n / cols || z.len() != n {
            return Err(ProtocolError::BadBuffer);
        }
        let opened = self.left.is_some();
        let (left, len) = msg_parts(n, cols, self.left);
        wire::expect_len(peer, len)?;
        let (pe, pf) = peer.split_at(left);
        let mut a = match self.left {
            Some(first) => self.corr.random_of_earlier(first, super::square::LANE_A)?,
            None => self.corr.random(LANE_A),
        };
        let mut b = self.corr.random(LANE_B);
        let mut c = self.corr.derived(LANE_C, n)?;
        let host = self.corr.role() == Role::Host;
        // the peer's x - a, or zeros when x is already the opened e
        let mut pe_words = wire::words(pe);
        let rows = x.chunks_exact(cols).zip(z.chunks_exact_mut(cols));
        for ((x_row, z_row), (&yv, pf)) in rows.zip(y.iter().zip(wire::words(pf))) {
            let bi = b.next_u64();
            let f = yv.wrapping_sub(bi).wrapping_add(pf);
            for (&xv, zv) in x_row.iter().zip(z_row.iter_mut()) {
                let ai = a.next_u64();
                let e = if opened {
                    xv
                } else {
                    xv.wrapping_sub(ai).wrapping_add(pe_words.next().unwrap_or(0))
                };
                let mut r = c
                    .next_u64()
                    .wrapping_add(e.wrapping_mul(bi))
                    .wrapping_add(f.wrapping_mul(ai));
                if host {
                    r = r.wrapping_add(e.wrapping_mul(f));
                }
                *zv = r;
            }
        }
        Ok(())
    }
}
