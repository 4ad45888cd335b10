//! Where the shares that live through a layer wait between the stages:
//! the residual stream `x` (`n x d`, from the embedding and the end of each
//! layer's MLP to LayerNorm 0, the projection's residual and the head) and
//! a layer's `qkv` (`n x 3d`, from its truncation to attention).
//!
//! The host and the dealer keep every word. The device keeps bits: its
//! share of an exact truncation's output is `-lo1 + (1 - 2m) hi1
//! 2^(W-1-f)` (`W` the truncation's width in bits), two lanes of its seed
//! and the host's reply bit `m`
//! ([`crate::protocol::trunc::device_shares_at`]). Each row of `qkv` is one
//! truncation's output, each row of `x` at most two (LayerNorm 1's and
//! `fc2`'s, or the embedding's), so the device keeps one bit per element
//! and term and one op per row and term, and regenerates a row (piece)
//! when a stage reads it: `3 n d` words become `3 n d` bits and `n` words,
//! `n d` words `2 n d` bits and `2 n` words. Nothing is drawn and nothing
//! is sent. A model with MPCViT+ linearized tokens keeps `x` as words (a
//! ReLU's output is not a truncation's).

use crate::ProtocolError;
use crate::corr::Role;
use crate::model::{Arch, Layout};
use crate::ops::Party;
use crate::protocol::trunc;

/// Words of the `qkv` store of `role`: `3 n d` (the host, the dealer), or
/// the device's bits and one term per row.
pub fn qkv_len(a: &Arch, role: Role) -> usize {
    held_len(a.tokens(), 3 * a.dim, (role == Role::Device).then_some(1))
}

/// Words of the residual stream's store of `role`: every word (the host,
/// the dealer, a device running a model with MPCViT+ linearized tokens),
/// or the device's bits and two terms per row.
pub fn resid_len(a: &Arch, role: Role, layout: &dyn Layout) -> usize {
    held_len(a.tokens(), a.dim, holds_resid(a, role, layout).then_some(2))
}

/// Words of `n` rows of `width`: held with `terms` per row, or as words.
fn held_len(n: usize, width: usize, terms: Option<usize>) -> usize {
    match terms {
        Some(k) => (k * n * width).div_ceil(64) + k * n,
        None => n * width,
    }
}

/// Whether `role` keeps `x` as bits: the device, when every token of every
/// layer goes through GeLU.
fn holds_resid(a: &Arch, role: Role, layout: &dyn Layout) -> bool {
    role == Role::Device && (0..a.layers).all(|l| (0..a.tokens()).all(|t| layout.gelu(l, t)))
}

/// No term (a row whose share is zero: the class token before layer 0).
const NO_TERM: u64 = u64::MAX;

/// One truncation output that makes up rows at the device: the op, the
/// first row's place among the op's rows, the bits it truncated by and
/// the width it ran in.
#[derive(Clone, Copy)]
pub(super) struct Term {
    /// The truncation op.
    pub op: u64,
    /// The row's index among the op's rows.
    pub row: usize,
    /// Bits the op truncated by.
    pub frac: u32,
    /// Bytes of its width ([`trunc::supported`]).
    pub width: usize,
}

impl Term {
    /// The output of the truncation by `frac` in `width` bytes that `p`
    /// ran last, from its first row.
    pub(super) fn last<P: Party + ?Sized>(p: &P, frac: u32, width: usize) -> Self {
        Self {
            op: p.next_op_id().wrapping_sub(1),
            row: 0,
            frac,
            width,
        }
    }

    fn pack(self) -> Result<u64, ProtocolError> {
        if self.op >= 1 << 36 || self.row >= 1 << 16 || !trunc::supported(self.frac, self.width) {
            return Err(ProtocolError::BadParameter);
        }
        Ok(self.op << 28 | (self.width as u64) << 24 | (self.row as u64) << 8 | self.frac as u64)
    }

    fn unpack(w: u64) -> Option<Self> {
        (w != NO_TERM).then_some(Self {
            op: w >> 28,
            width: ((w >> 24) & 0xf) as usize,
            row: ((w >> 8) & 0xffff) as usize,
            frac: (w & 0xff) as u32,
        })
    }
}

/// Rows of `width` words: every word, or the device's terms.
pub(super) enum Rows<'s> {
    /// Every word, row-major.
    Words { words: &'s mut [u64], width: usize },
    /// Bit `k (t width + c) + j` of `bits`: term `j` of element `(t, c)`;
    /// `terms[k t + j]`: term `j` of row `t`, packed, or [`NO_TERM`].
    Held {
        bits: &'s mut [u64],
        terms: &'s mut [u64],
        width: usize,
        k: usize,
    },
}

impl<'s> Rows<'s> {
    /// `n` rows of `width` in `region` ([`held_len`] words), all zero.
    fn new(n: usize, width: usize, terms: Option<usize>, region: &'s mut [u64]) -> Self {
        region.fill(0);
        match terms {
            Some(k) => {
                let (bits, t) = region.split_at_mut((k * n * width).div_ceil(64).min(region.len()));
                t.fill(NO_TERM);
                Rows::Held {
                    bits,
                    terms: t,
                    width,
                    k,
                }
            }
            None => Rows::Words { words: region, width },
        }
    }

    /// A layer's `qkv` at `role` in `region` ([`qkv_len`] words).
    pub(super) fn qkv(a: &Arch, role: Role, region: &'s mut [u64]) -> Self {
        Self::new(a.tokens(), 3 * a.dim, (role == Role::Device).then_some(1), region)
    }

    /// The residual stream at `role` for a model of `layout` in `region`
    /// ([`resid_len`] words).
    pub(super) fn resid(a: &Arch, role: Role, layout: &dyn Layout, region: &'s mut [u64]) -> Self {
        Self::new(a.tokens(), a.dim, holds_resid(a, role, layout).then_some(2), region)
    }

    /// The words, when this store keeps them (the host adds its constants
    /// to `x` there).
    pub(super) fn words(&mut self) -> Option<&mut [u64]> {
        match self {
            Rows::Words { words, .. } => Some(words),
            Rows::Held { .. } => None,
        }
    }

    /// Sets rows `t0..` (whole rows) to the sum of `parts`' words, each the
    /// output of truncation `term` (its rows from `term.row`) at the device.
    pub(super) fn set<P: Party + ?Sized>(
        &mut self,
        p: &P,
        t0: usize,
        parts: &[(Term, &[u64])],
    ) -> Result<(), P::Error> {
        let len = parts.first().map_or(0, |(_, z)| z.len());
        if parts.iter().any(|(_, z)| z.len() != len) {
            return Err(ProtocolError::BadBuffer.into());
        }
        match self {
            Rows::Words { words, width } => {
                let at = t0 * *width;
                let dst = words.get_mut(at..at + len).ok_or(ProtocolError::BadBuffer)?;
                dst.fill(0);
                for (_, z) in parts {
                    for (o, &v) in dst.iter_mut().zip(z.iter()) {
                        *o = o.wrapping_add(v);
                    }
                }
                Ok(())
            }
            Rows::Held { bits, terms, width, k } => {
                let (w, k) = (*width, *k);
                let rows = len / w;
                if parts.len() > k || len != rows * w || k * (t0 + rows) > terms.len() {
                    return Err(ProtocolError::BadBuffer.into());
                }
                if k * (t0 + rows) * w > bits.len() * 64 {
                    return Err(ProtocolError::BadBuffer.into());
                }
                for (j, (term, z)) in parts.iter().enumerate() {
                    let corr = p.earlier_op(term.op)?;
                    trunc::device_reply_bits(&corr, term.frac, term.width, (term.row * w) as u64, z, |i, m| {
                        let e = k * (t0 * w + i) + j;
                        let (at, b) = (e / 64, e % 64);
                        bits[at] = (bits[at] & !(1 << b)) | ((m as u64) << b);
                    })?;
                    for r in 0..rows {
                        terms[k * (t0 + r) + j] = Term {
                            row: term.row + r,
                            ..*term
                        }
                        .pack()?;
                    }
                }
                for r in t0..t0 + rows {
                    for j in parts.len()..k {
                        terms[k * r + j] = NO_TERM;
                    }
                }
                Ok(())
            }
        }
    }

    /// Words `col..col + out.len()` of row `t`.
    pub(super) fn load<P: Party + ?Sized>(&self, p: &P, t: usize, col: usize, out: &mut [u64]) -> Result<(), P::Error> {
        match self {
            Rows::Words { words, width } => {
                if col + out.len() > *width {
                    return Err(ProtocolError::BadBuffer.into());
                }
                let at = t * *width + col;
                out.copy_from_slice(words.get(at..at + out.len()).ok_or(ProtocolError::BadBuffer)?);
                Ok(())
            }
            Rows::Held { bits, terms, width, k } => {
                let (w, k) = (*width, *k);
                if col + out.len() > w {
                    return Err(ProtocolError::BadBuffer.into());
                }
                out.fill(0);
                // each term's words a piece at a time, added up
                let mut piece = [0u64; 16];
                for j in 0..k {
                    let Some(term) = terms.get(k * t + j).copied().and_then(Term::unpack) else {
                        continue;
                    };
                    let corr = p.earlier_op(term.op)?;
                    for (c, part) in out.chunks_mut(piece.len()).enumerate() {
                        let c0 = col + c * piece.len();
                        let pw = piece.get_mut(..part.len()).ok_or(ProtocolError::BadBuffer)?;
                        let base = t * w + c0;
                        trunc::device_shares_at(
                            &corr,
                            term.frac,
                            term.width,
                            (term.row * w + c0) as u64,
                            |i| {
                                let e = k * (base + i) + j;
                                bits.get(e / 64).map_or(0, |v| (v >> (e % 64)) & 1)
                            },
                            pw,
                        )?;
                        for (o, &v) in part.iter_mut().zip(pw.iter()) {
                            *o = o.wrapping_add(v);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Rows `t0..` (whole rows) into `out`.
    pub(super) fn load_rows<P: Party + ?Sized>(&self, p: &P, t0: usize, out: &mut [u64]) -> Result<(), P::Error> {
        let w = match self {
            Rows::Words { width, .. } | Rows::Held { width, .. } => *width,
        };
        self.load_block(p, t0, 0, w, out)
    }

    /// Columns `col..col + w` of rows `t0..` into `out`, `w` words a row.
    pub(super) fn load_block<P: Party + ?Sized>(
        &self,
        p: &P,
        t0: usize,
        col: usize,
        w: usize,
        out: &mut [u64],
    ) -> Result<(), P::Error> {
        for (r, row) in out.chunks_mut(w.max(1)).enumerate() {
            self.load(p, t0 + r, col, row)?;
        }
        Ok(())
    }

    /// Columns `col..col + row.len()` of rows `t0..t0 + n` into `out`
    /// transposed (`out[c n + t]`), a row at a time through `row`.
    pub(super) fn load_block_t<P: Party + ?Sized>(
        &self,
        p: &P,
        (t0, n): (usize, usize),
        col: usize,
        row: &mut [u64],
        out: &mut [u64],
    ) -> Result<(), P::Error> {
        if out.len() != n * row.len() {
            return Err(ProtocolError::BadBuffer.into());
        }
        for t in 0..n {
            self.load(p, t0 + t, col, row)?;
            for (c, &v) in row.iter().enumerate() {
                out[c * n + t] = v;
            }
        }
        Ok(())
    }
}
