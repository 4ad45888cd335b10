//! The plaintext fixed-point reference: the oracle of every secure op.
//!
//! Each function computes, on plaintext ring elements, exactly what the secure
//! protocol computes on shares, up to the protocol's stated error (one unit in
//! the last place for truncation). Tests decode secure outputs and compare
//! them with these.

use crate::error::ProtocolError;
use crate::ring;

/// Truncation by `f` bits: `floor(x / 2^f)` on the signed value.
#[inline]
pub fn trunc(x: u64, f: u32) -> u64 {
    ((x as i64) >> f) as u64
}

/// Fixed-point product: `trunc(x * y)`.
#[inline]
pub fn mul(x: u64, y: u64, f: u32) -> u64 {
    trunc(x.wrapping_mul(y), f)
}

/// Ring matrix product without truncation: `x (n x k) * y (k x m)`.
pub fn matmul(x: &[u64], y: &[u64], shape: (usize, usize, usize), out: &mut [u64]) -> Result<(), ProtocolError> {
    out.fill(0);
    ring::matmul_acc(out, x, y, shape)
}

/// Linear layer `x W + bias` at double scale, then truncated: the reference
/// of `protocol::linear` followed by `protocol::trunc`.
pub fn linear(
    x: &[u64],
    w: &[u64],
    bias2: Option<&[u64]>,
    shape: (usize, usize, usize),
    f: u32,
    out: &mut [u64],
) -> Result<(), ProtocolError> {
    matmul(x, w, shape, out)?;
    if let Some(b) = bias2 {
        if b.len() != shape.2 {
            return Err(ProtocolError::BadBuffer);
        }
        for row in out.chunks_exact_mut(shape.2.max(1)) {
            for (o, &bb) in row.iter_mut().zip(b) {
                *o = o.wrapping_add(bb);
            }
        }
    }
    for o in out.iter_mut() {
        *o = trunc(*o, f);
    }
    Ok(())
}
