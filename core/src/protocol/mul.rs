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

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::wire;

/// Random lane `a`.
pub const LANE_A: u32 = 0;
/// Random lane `b`.
pub const LANE_B: u32 = 1;
/// Derived lane `c = a b`.
pub const LANE_C: u32 = 2;

/// Bytes each party sends for `n` elements.
pub fn msg_len(n: usize) -> usize {
    wire::words_len(2 * n)
}

/// Dealer: the host's message for a product of `n` elements.
pub fn deal(op: &DealerOp, n: usize, out: &mut [u8]) -> Result<usize, ProtocolError> {
    if n == 0 {
        return Err(ProtocolError::BadShape);
    }
    let (mut a, mut b) = (op.random(LANE_A), op.random(LANE_B));
    let mut c1 = op.device_derived(LANE_C);
    let mut w = op.writer(out, n)?;
    for _ in 0..n {
        w.put(a.next_u64().wrapping_mul(b.next_u64()), c1.next_u64());
    }
    w.finish()
}

/// One party's elementwise product, before opening.
#[derive(Debug)]
pub struct Mul<'d> {
    corr: OpCorr<'d>,
    n: usize,
}

/// One party's elementwise product, after opening.
#[derive(Debug)]
pub struct MulOpened<'d> {
    corr: OpCorr<'d>,
    n: usize,
}

impl<'d> Mul<'d> {
    /// A product of `n` elements.
    pub fn new(corr: OpCorr<'d>, n: usize) -> Result<Self, ProtocolError> {
        if n == 0 || n > usize::MAX / 16 {
            return Err(ProtocolError::BadShape);
        }
        corr.expect_corrections(n)?;
        Ok(Self { corr, n })
    }

    /// Writes `(x - a, y - b)` (this party's shares) into `out`.
    pub fn open(self, x: &[u64], y: &[u64], out: &mut [u8]) -> Result<(MulOpened<'d>, usize), ProtocolError> {
        if x.len() != self.n || y.len() != self.n {
            return Err(ProtocolError::BadBuffer);
        }
        let len = msg_len(self.n);
        let (oe, of) = wire::out_prefix(out, len)?.split_at_mut(8 * self.n);
        let mut a = self.corr.random(LANE_A);
        wire::put_words(oe, x.iter().map(|&v| v.wrapping_sub(a.next_u64())));
        let mut b = self.corr.random(LANE_B);
        wire::put_words(of, y.iter().map(|&v| v.wrapping_sub(b.next_u64())));
        Ok((
            MulOpened {
                corr: self.corr,
                n: self.n,
            },
            len,
        ))
    }
}

impl MulOpened<'_> {
    /// Takes the peer's opening and writes this party's share of `x y`.
    pub fn finish(mut self, x: &[u64], y: &[u64], peer: &[u8], z: &mut [u64]) -> Result<(), ProtocolError> {
        let n = self.n;
        if x.len() != n || y.len() != n || z.len() != n {
            return Err(ProtocolError::BadBuffer);
        }
        wire::expect_len(peer, msg_len(n))?;
        let (pe, pf) = peer.split_at(8 * n);
        let (mut a, mut b) = (self.corr.random(LANE_A), self.corr.random(LANE_B));
        let mut c = self.corr.derived(LANE_C, n)?;
        let host = self.corr.role() == Role::Host;
        let it = x
            .iter()
            .zip(y)
            .zip(wire::words(pe).zip(wire::words(pf)))
            .zip(z.iter_mut());
        for (((&xv, &yv), (pe, pf)), zv) in it {
            let (ai, bi) = (a.next_u64(), b.next_u64());
            let e = xv.wrapping_sub(ai).wrapping_add(pe);
            let f = yv.wrapping_sub(bi).wrapping_add(pf);
            let mut r = c
                .next_u64()
                .wrapping_add(e.wrapping_mul(bi))
                .wrapping_add(f.wrapping_mul(ai));
            if host {
                r = r.wrapping_add(e.wrapping_mul(f));
            }
            *zv = r;
        }
        Ok(())
    }
}
