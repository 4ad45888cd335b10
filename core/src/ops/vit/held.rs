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
use crate::model::{Arch, Layout};
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

/// Words of the residual stream `x` (`n x d`) of `role`: every word (the
/// host, the dealer, a device running a model with MPCViT+ linearized
/// tokens), or the device's two reply bits per element and two terms per
/// row (the `Resid` store below).
pub fn resid_len(a: &Arch, role: Role, layout: &dyn Layout) -> usize {
    let (n, d) = (a.tokens(), a.dim);
    if holds_resid(a, role, layout) {
        (2 * n * d).div_ceil(64) + 2 * n
    } else {
        n * d
    }
}

/// Whether `role` keeps `x` as bits: the device, when every token of every
/// layer goes through GeLU (a linearized token adds a ReLU's output, which
/// is not a truncation's).
fn holds_resid(a: &Arch, role: Role, layout: &dyn Layout) -> bool {
    role == Role::Device && (0..a.layers).all(|l| (0..a.tokens()).all(|t| layout.gelu(l, t)))
}

/// No term (a row whose share is zero: the class token before layer 0).
const NO_TERM: u64 = u64::MAX;

/// One truncation output that makes up a row of `x` at the device: the op,
/// the row's place in it, its bits.
#[derive(Clone, Copy)]
pub(super) struct Term {
    /// The truncation op.
    pub op: u64,
    /// The row's index among the op's rows.
    pub row: usize,
    /// Bits the op truncated by.
    pub frac: u32,
}

impl Term {
    fn pack(self) -> Result<u64, ProtocolError> {
        if self.op >= 1 << 40 || self.row >= 1 << 16 || !(1..=trunc::MAX_BITS).contains(&self.frac) {
            return Err(ProtocolError::BadParameter);
        }
        Ok(self.op << 24 | (self.row as u64) << 8 | self.frac as u64)
    }

    fn unpack(w: u64) -> Option<Self> {
        (w != NO_TERM).then_some(Self {
            op: w >> 24,
            row: ((w >> 8) & 0xffff) as usize,
            frac: (w & 0xff) as u32,
        })
    }
}

/// The residual stream `x` (`n x d`) between the stages that write it
/// (embedding, the end of each layer's MLP) and those that read it
/// (LayerNorm 0, the projection's residual, the head): its words or, at
/// the device, at most two truncation outputs per row (LayerNorm 1's and
/// `fc2`'s, or the embedding's), each held as its reply bits and
/// regenerated from the device's seed when read.
pub(super) enum Resid<'s> {
    /// Every word, row-major.
    Words { words: &'s mut [u64], d: usize },
    /// Bit `2 (t d + c) + k` of `bits`: term `k` of element `(t, c)`;
    /// `terms[2 t + k]`: term `k` of row `t`, packed, or [`NO_TERM`].
    Held {
        bits: &'s mut [u64],
        terms: &'s mut [u64],
        d: usize,
    },
}

impl<'s> Resid<'s> {
    /// The store of `role` in `region` ([`resid_len`] words), all zero.
    pub(super) fn new(a: &Arch, role: Role, layout: &dyn Layout, region: &'s mut [u64]) -> Self {
        region.fill(0);
        if holds_resid(a, role, layout) {
            let (bits, terms) = region.split_at_mut((2 * a.tokens() * a.dim).div_ceil(64));
            terms.fill(NO_TERM);
            Resid::Held { bits, terms, d: a.dim }
        } else {
            Resid::Words {
                words: region,
                d: a.dim,
            }
        }
    }

    /// Whether this store keeps words (the host adds its constants there).
    pub(super) fn words(&mut self) -> Option<&mut [u64]> {
        match self {
            Resid::Words { words, .. } => Some(words),
            Resid::Held { .. } => None,
        }
    }

    /// Sets rows `t0..` to `z` (whole rows): the sum of `parts`' words, each
    /// the output of truncation `term` (rows from `term.row`), the device's
    /// share of every element.
    pub(super) fn set<P: Party + ?Sized>(
        &mut self,
        p: &P,
        t0: usize,
        parts: &[(Term, &[u64])],
    ) -> Result<(), P::Error> {
        match self {
            Resid::Words { words, d } => {
                let len = parts.first().map_or(0, |(_, z)| z.len());
                let dst = words.get_mut(t0 * *d..t0 * *d + len).ok_or(ProtocolError::BadBuffer)?;
                dst.fill(0);
                for (_, z) in parts {
                    for (o, &v) in dst.iter_mut().zip(z.iter()) {
                        *o = o.wrapping_add(v);
                    }
                }
                Ok(())
            }
            Resid::Held { bits, terms, d } => {
                let d = *d;
                if parts.len() > 2 {
                    return Err(ProtocolError::BadParameter.into());
                }
                for (k, (term, z)) in parts.iter().enumerate() {
                    let rows = z.len() / d;
                    if z.len() != rows * d || (t0 + rows) * d * 2 > bits.len() * 64 || 2 * (t0 + rows) > terms.len() {
                        return Err(ProtocolError::BadBuffer.into());
                    }
                    let corr = p.earlier_op(term.op)?;
                    trunc::device_reply_bits(&corr, term.frac, (term.row * d) as u64, z, |i, m| {
                        let e = 2 * (t0 * d + i) + k;
                        let (w, b) = (e / 64, e % 64);
                        bits[w] = (bits[w] & !(1 << b)) | ((m as u64) << b);
                    })?;
                    for r in 0..rows {
                        terms[2 * (t0 + r) + k] = Term {
                            row: term.row + r,
                            ..*term
                        }
                        .pack()?;
                    }
                }
                let rows = parts.first().map_or(0, |(_, z)| z.len() / d);
                for r in t0..t0 + rows {
                    for k in parts.len()..2 {
                        terms[2 * r + k] = NO_TERM;
                    }
                }
                Ok(())
            }
        }
    }

    /// Rows `t0..` into `out` (whole rows).
    pub(super) fn load<P: Party + ?Sized>(&self, p: &P, t0: usize, out: &mut [u64]) -> Result<(), P::Error> {
        match self {
            Resid::Words { words, d } => {
                let at = t0 * *d;
                out.copy_from_slice(words.get(at..at + out.len()).ok_or(ProtocolError::BadBuffer)?);
                Ok(())
            }
            Resid::Held { bits, terms, d } => {
                let d = *d;
                out.fill(0);
                // a term's words a piece at a time, added to the row
                let mut piece = [0u64; 16];
                for (r, row) in out.chunks_mut(d).enumerate() {
                    let t = t0 + r;
                    for k in 0..2 {
                        let Some(term) = terms.get(2 * t + k).copied().and_then(Term::unpack) else {
                            continue;
                        };
                        let corr = p.earlier_op(term.op)?;
                        for (j, part) in row.chunks_mut(piece.len()).enumerate() {
                            let c0 = j * piece.len();
                            let pw = piece.get_mut(..part.len()).ok_or(ProtocolError::BadBuffer)?;
                            let base = t * d + c0;
                            trunc::device_shares_at(
                                &corr,
                                term.frac,
                                (term.row * d + c0) as u64,
                                |i| {
                                    let e = 2 * (base + i) + k;
                                    bits.get(e / 64).map_or(0, |w| (w >> (e % 64)) & 1)
                                },
                                pw,
                            )?;
                            for (o, &v) in part.iter_mut().zip(pw.iter()) {
                                *o = o.wrapping_add(v);
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}
