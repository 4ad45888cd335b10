//! Elementwise square of a shared vector with a Beaver square pair.
//!
//! Correlation: random `a`, derived `c = a^2`. Online, both parties send at
//! once `x_b - a_b`; both learn `e = x - a` and output
//! `z_b = c_b + 2 e a_b (+ e^2 for the host)`, `z = x^2` in the ring.
//! Cost per element: 8 bytes each way in one flight (half of a general
//! product), 8 bytes dealer -> host.
//!
//! [`SquareOpened::finish`] can also give each party `e`, so that a later
//! product of the same `x` (LayerNorm's row product,
//! [`super::mul::Mul::with_left`]) opens nothing more for it.

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::wire;

/// Random lane `a`.
pub const LANE_A: u32 = 0;
/// Derived lane `c = a^2`.
pub const LANE_C: u32 = 1;

/// Bytes each party sends for `n` elements.
pub fn msg_len(n: usize) -> usize {
    wire::words_len(n)
}

fn check(n: usize) -> Result<(), ProtocolError> {
    if n == 0 || n > usize::MAX / 16 {
        Err(ProtocolError::BadShape)
    } else {
        Ok(())
    }
}

/// Dealer: the host's message.
pub fn deal(op: &DealerOp, n: usize, out: &mut [u8]) -> Result<usize, ProtocolError> {
    check(n)?;
    let mut a = op.random(LANE_A);
    let mut c1 = op.device_derived(LANE_C);
    let mut w = op.writer(out, n)?;
    for _ in 0..n {
        let av = a.next_u64();
        w.put(av.wrapping_mul(av), c1.next_u64());
    }
    w.finish()
}

/// One party's square, before opening.
#[derive(Debug)]
pub struct Square<'d> {
    corr: OpCorr<'d>,
    n: usize,
}

/// One party's square, after opening.
#[derive(Debug)]
pub struct SquareOpened<'d> {
    corr: OpCorr<'d>,
    n: usize,
}

impl<'d> Square<'d> {
    /// A square of `n` elements.
    pub fn new(corr: OpCorr<'d>, n: usize) -> Result<Self, ProtocolError> {
        check(n)?;
        corr.expect_corrections(n)?;
        Ok(Self { corr, n })
    }

    /// Writes `x_b - a_b` into `out`.
    pub fn open(self, x: &[u64], out: &mut [u8]) -> Result<(SquareOpened<'d>, usize), ProtocolError> {
        if x.len() != self.n {
            return Err(ProtocolError::BadBuffer);
        }
        let len = msg_len(self.n);
        let out = wire::out_prefix(out, len)?;
        let mut a = self.corr.random(LANE_A);
        wire::put_words(out, x.iter().map(|&v| v.wrapping_sub(a.next_u64())));
        Ok((
            SquareOpened {
                corr: self.corr,
                n: self.n,
            },
            len,
        ))
    }
}

impl SquareOpened<'_> {
    /// Takes the peer's opening and writes this party's share of `x^2`,
    /// and the opened `e = x - a` into `keep` if given.
    pub fn finish(
        mut self,
        x: &[u64],
        peer: &[u8],
        z: &mut [u64],
        mut keep: Option<&mut [u64]>,
    ) -> Result<(), ProtocolError> {
        if x.len() != self.n || z.len() != self.n || keep.as_ref().is_some_and(|e| e.len() != self.n) {
            return Err(ProtocolError::BadBuffer);
        }
        wire::expect_len(peer, msg_len(self.n))?;
        let mut a = self.corr.random(LANE_A);
        let mut c = self.corr.derived(LANE_C, self.n)?;
        let host = self.corr.role() == Role::Host;
        for (i, ((&xv, p), zv)) in x.iter().zip(wire::words(peer)).zip(z.iter_mut()).enumerate() {
            let av = a.next_u64();
            let e = xv.wrapping_sub(av).wrapping_add(p);
            let mut r = c.next_u64().wrapping_add(e.wrapping_mul(av).wrapping_mul(2));
            if host {
                r = r.wrapping_add(e.wrapping_mul(e));
            }
            *zv = r;
            if let Some(ev) = keep.as_deref_mut().and_then(|k| k.get_mut(i)) {
                *ev = e;
            }
        }
        Ok(())
    }
}
