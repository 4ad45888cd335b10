//! Where a layer's `qkv` lives from its truncation (step 2) to attention
//! (steps 3-5).
//!
//! The host and the dealer keep every word. The device keeps one bit per
//! element: its share of an exact truncation's output is `-lo1 + (1 - 2m)
//! hi1 2^(63-f)`, two lanes of its seed and the host's reply bit `m`
//! ([`crate::protocol::trunc::device_shares_at`]), so it keeps the bits and
//! the op id of each row tile's truncation and regenerates a row's words
//! when attention reads them. `3 n d` words become `3 n d / 64` words and
//! `n / rows` op ids; nothing is drawn and nothing is sent.

use super::spec::Tile;
use crate::ProtocolError;
use crate::corr::Role;
use crate::model::Arch;
use crate::ops::Party;
use crate::protocol::trunc;

/// Words of the `qkv` store of `role`: `3 n d` (the host, the dealer), or
/// the device's bits and one op id per row tile.
pub fn qkv_len(a: &Arch, tile: Tile, role: Role) -> usize {
    let (n, d) = (a.tokens(), a.dim);
    match role {
        Role::Device => (3 * n * d).div_ceil(64) + n.div_ceil(tile.rows_of(a)),
        Role::Host | Role::Dealer => 3 * n * d,
    }
}

/// A layer's `qkv` (`n x 3d`), its words or the device's bits.
pub(super) enum Qkv<'s> {
    /// Every word, row-major, rows of `width`.
    Words { words: &'s mut [u64], width: usize },
    /// The device's reply bits (element `t 3d + c` at bit `i % 64` of word
    /// `i / 64`) and the truncation op of each row tile of `rows` rows.
    Held {
        bits: &'s mut [u64],
        ops: &'s mut [u64],
        rows: usize,
        width: usize,
        frac: u32,
    },
}

impl<'s> Qkv<'s> {
    /// The store of `role` in `region` ([`qkv_len`] words) for rows cut by
    /// `tile`, truncated to `f` bits.
    pub(super) fn new(a: &Arch, tile: Tile, role: Role, f: u32, region: &'s mut [u64]) -> Self {
        match role {
            Role::Device => {
                let (bits, ops) = region.split_at_mut((3 * a.tokens() * a.dim).div_ceil(64));
                Qkv::Held {
                    bits,
                    ops,
                    rows: tile.rows_of(a),
                    width: 3 * a.dim,
                    frac: f,
                }
            }
            Role::Host | Role::Dealer => Qkv::Words {
                words: region,
                width: 3 * a.dim,
            },
        }
    }

    /// Keeps rows `r0..` (`z`, whole rows), the output of the truncation
    /// `p` ran last.
    pub(super) fn keep<P: Party + ?Sized>(&mut self, p: &P, r0: usize, z: &[u64]) -> Result<(), P::Error> {
        match self {
            Qkv::Words { words, width } => {
                let at = r0 * *width;
                words
                    .get_mut(at..at + z.len())
                    .ok_or(ProtocolError::BadBuffer)?
                    .copy_from_slice(z);
                Ok(())
            }
            Qkv::Held {
                bits,
                ops,
                rows,
                width,
                frac,
            } => {
                let op = p.next_op_id().checked_sub(1).ok_or(ProtocolError::BadParameter)?;
                *ops.get_mut(r0 / *rows).ok_or(ProtocolError::BadBuffer)? = op;
                let base = r0 * *width;
                if bits.len() * 64 < base + z.len() {
                    return Err(ProtocolError::BadBuffer.into());
                }
                let corr = p.earlier_op(op)?;
                trunc::device_reply_bits(&corr, *frac, 0, z, |i, m| {
                    let k = base + i;
                    let (w, b) = (k / 64, k % 64);
                    bits[w] = (bits[w] & !(1 << b)) | ((m as u64) << b);
                })?;
                Ok(())
            }
        }
    }

    /// Words `col..col + out.len()` of row `t`.
    pub(super) fn load<P: Party + ?Sized>(&self, p: &P, t: usize, col: usize, out: &mut [u64]) -> Result<(), P::Error> {
        match self {
            Qkv::Words { words, width } => {
                if col + out.len() > *width {
                    return Err(ProtocolError::BadBuffer.into());
                }
                let at = t * *width + col;
                out.copy_from_slice(words.get(at..at + out.len()).ok_or(ProtocolError::BadBuffer)?);
                Ok(())
            }
            Qkv::Held {
                bits,
                ops,
                rows,
                width,
                frac,
            } => {
                if col + out.len() > *width {
                    return Err(ProtocolError::BadBuffer.into());
                }
                let op = *ops.get(t / *rows).ok_or(ProtocolError::BadBuffer)?;
                let corr = p.earlier_op(op)?;
                let base = t * *width + col;
                let index = ((t % *rows) * *width + col) as u64;
                trunc::device_shares_at(
                    &corr,
                    *frac,
                    index,
                    |i| {
                        let k = base + i;
                        bits.get(k / 64).map_or(0, |w| (w >> (k % 64)) & 1)
                    },
                    out,
                )?;
                Ok(())
            }
        }
    }
}
