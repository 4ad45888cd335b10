//! Row maximum by a tournament of ReLUs: `max(a, b) = b + relu(a - b)`.
//!
//! `ceil(log2 cols)` rounds, one ReLU lookup each (8 bytes device -> host per
//! comparison). Each ReLU may pass a difference in `[-2^s, 0)`, so the result
//! is at most `levels * 2^s` below the true maximum, never above it.
//! (Softmax does not need it: see [`super::softmax`].)

use super::Party;
use crate::ProtocolError;
use crate::protocol::lut::LutShape;
use crate::protocol::pwl::{ReluOut, ReluTable};

/// Scratch words for `rows x cols`.
pub fn scratch_len(rows: usize, cols: usize) -> usize {
    3 * rows * cols
}

/// Row maxima of `x` (`rows x cols`) into `out` (`rows`); differences must
/// lie in the grid `[-2^(s+k-1), 2^(s+k-1) - 2^s)`.
pub fn row_max<P: Party + ?Sized>(
    p: &mut P,
    s: u32,
    k: u32,
    cols: usize,
    x: &[u64],
    out: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let rows = out.len();
    if cols == 0 || x.len() != rows * cols || scratch.len() < scratch_len(rows, cols) {
        return Err(ProtocolError::BadBuffer.into());
    }
    let (cur, rest) = scratch.split_at_mut(rows * cols);
    let (diff, rest) = rest.split_at_mut(rows * cols / 2 + 1);
    let relu = &mut rest[..rows * cols / 2 + 1];
    cur.copy_from_slice(x);
    let mut m = cols;
    while m > 1 {
        let pairs = m / 2;
        for r in 0..rows {
            for i in 0..pairs {
                diff[r * pairs + i] = cur[r * cols + 2 * i].wrapping_sub(cur[r * cols + 2 * i + 1]);
            }
        }
        let shape = LutShape {
            n: rows * pairs,
            s,
            k,
            t: 0,
        };
        super::lut(
            p,
            shape,
            &ReluTable {
                shape,
                out: ReluOut::Relu,
            },
            &diff[..rows * pairs],
            &mut relu[..rows * pairs],
        )?;
        for r in 0..rows {
            for i in 0..pairs {
                cur[r * cols + i] = cur[r * cols + 2 * i + 1].wrapping_add(relu[r * pairs + i]);
            }
            if m % 2 == 1 {
                cur[r * cols + pairs] = cur[r * cols + m - 1];
            }
        }
        m = pairs + m % 2;
    }
    for (o, r) in out.iter_mut().zip(0..rows) {
        *o = cur[r * cols];
    }
    Ok(())
}
