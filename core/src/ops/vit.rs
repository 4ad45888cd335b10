//! The secure MPCViT forward pass, written once over [`Party`].
//!
//! Layout: tokens are `n x d` row-major (token 0 is the class token); `qkv`
//! is `n x 3d` with `q | k | v` column blocks, head `h` at columns
//! `h hd .. (h+1) hd` of each block (the official `reshape(B, N, 3, H, hd)`).
//!
//! Per layer (all heads in the same protocol steps, so a layer costs the
//! rounds of its most expensive head):
//! 1. LayerNorm 0 without its affine part (folded into `qkv`): 6 rounds.
//! 2. `qkv` linear with truncation: 1.
//! 3. One flight of matrix products: `Q_h K_h^T` for Softmax / RSAttn /
//!    2Quad heads, `K_h^T V_h` for ScaleAttn heads (associative form,
//!    `O(n hd^2)`): 1. Truncation of all of them: 1.
//! 4. Row normalization of the non-Scale heads ([`normalize_heads`]): 7 for
//!    Softmax heads (exp lookup 1, reciprocal 4, product 1, truncation 1),
//!    8 for RSAttn heads (the precise ReLU takes 2); the reciprocal of every
//!    row of every head is one batch. A layer mixing Softmax and RSAttn pays
//!    both elementwise steps in sequence (9); 2Quad adds 2.
//! 5. One flight of products: `P_h V_h`, and `Q_h (K^T V)_h` for ScaleAttn
//!    heads (their `1/N` is folded into the projection's rows): 1.
//! 6. Projection with truncation by `2f`, residual: 1.
//! 7. LayerNorm 1 with its learned scale (host-private, [`Party::scale_trunc`])
//!    and shift: 6.
//! 8. `fc1` with truncation: 1; GeLU on the GeLU tokens (one lookup): 1;
//!    `fc2` with truncation: 1; precise ReLU on the MPCViT+ linearized
//!    tokens: 2; residual.
//!
//! Final LayerNorm on the class token (affine folded into the head), head,
//! and the logits are revealed to the device only.
//!
//! Host weights are fixed-point encodings of the float weights with these
//! folds ([`encode_weight`]); the device holds `W - B` for every weight the
//! host keeps private, the dealer the masks `B`.

use super::layernorm::{self, LnSpec};
use super::softmax::RS_EPS;
use super::wide::{self, WideSpec};
use super::{LutJob, Party, activation};
use crate::FixedPoint;
use crate::ProtocolError;
use crate::model::{Arch, AttnKind, Layout, ModelView, Tensor};
use crate::protocol::linear::LinearShape;
use crate::protocol::lut::LutShape;
use crate::protocol::matmul::MatmulShape;
use crate::protocol::pwl::Func;
use crate::protocol::trunc;

/// A fixed-point weight (or host-only constant) of the secure model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wid {
    /// Patch embedding `[patch_len, d]`.
    PatchW,
    /// Its bias at `2f` (host only).
    PatchB,
    /// Class token `[d]` (host only).
    Cls,
    /// Positional embedding `[n, d]` (host only).
    Pos,
    /// `qkv` of layer `l`, LayerNorm 0's scale and the attention scale folded.
    Qkv(usize),
    /// Its bias at `2f`: LayerNorm 0's shift through `qkv` (host only).
    QkvB(usize),
    /// Projection, ScaleAttn heads' `1/N` folded into their rows.
    Proj(usize),
    /// Its bias at `3f` (host only).
    ProjB(usize),
    /// LayerNorm 1 scale `[d]` (host-private, masked for the device).
    Ln1G(usize),
    /// LayerNorm 1 shift `[d]` at `f` (host only).
    Ln1B(usize),
    /// MLP first weight.
    Fc1(usize),
    /// Its bias at `2f` (host only).
    Fc1B(usize),
    /// MLP second weight.
    Fc2(usize),
    /// Its bias at `2f` (host only).
    Fc2B(usize),
    /// Head, the final LayerNorm's scale folded.
    Head,
    /// Head bias with the final LayerNorm's shift folded, at `2f` (host only).
    HeadB,
}

impl Wid {
    /// Whether only the host uses it (an additive constant).
    pub fn host_only(self) -> bool {
        matches!(
            self,
            Wid::PatchB
                | Wid::Cls
                | Wid::Pos
                | Wid::QkvB(_)
                | Wid::ProjB(_)
                | Wid::Ln1B(_)
                | Wid::Fc1B(_)
                | Wid::Fc2B(_)
                | Wid::HeadB
        )
    }

    /// The id of its per-model mask stream.
    pub fn mask_id(self) -> u64 {
        let (k, l) = match self {
            Wid::PatchW => (0, 0),
            Wid::PatchB => (1, 0),
            Wid::Cls => (2, 0),
            Wid::Pos => (3, 0),
            Wid::Head => (4, 0),
            Wid::HeadB => (5, 0),
            Wid::Qkv(l) => (10, l),
            Wid::QkvB(l) => (11, l),
            Wid::Proj(l) => (12, l),
            Wid::ProjB(l) => (13, l),
            Wid::Ln1G(l) => (14, l),
            Wid::Ln1B(l) => (15, l),
            Wid::Fc1(l) => (16, l),
            Wid::Fc1B(l) => (17, l),
            Wid::Fc2(l) => (18, l),
            Wid::Fc2B(l) => (19, l),
        };
        ((k as u64) << 32) | l as u64
    }

    /// Number of words.
    pub fn len(self, a: &Arch) -> usize {
        let (d, m) = (a.dim, a.mlp);
        match self {
            Wid::PatchW => a.patch_len() * d,
            Wid::Pos => a.tokens() * d,
            Wid::Qkv(_) => d * 3 * d,
            Wid::QkvB(_) => 3 * d,
            Wid::Proj(_) => d * d,
            Wid::Fc1(_) => d * m,
            Wid::Fc1B(_) => m,
            Wid::Fc2(_) => m * d,
            Wid::Head => d * a.classes,
            Wid::HeadB => a.classes,
            _ => d,
        }
    }

    /// Every id of a model, host-only ones included.
    pub fn all(a: &Arch) -> impl Iterator<Item = Wid> + '_ {
        let per_layer = |l| {
            [
                Wid::Qkv(l),
                Wid::QkvB(l),
                Wid::Proj(l),
                Wid::ProjB(l),
                Wid::Ln1G(l),
                Wid::Ln1B(l),
                Wid::Fc1(l),
                Wid::Fc1B(l),
                Wid::Fc2(l),
                Wid::Fc2B(l),
            ]
        };
        [Wid::PatchW, Wid::PatchB, Wid::Cls, Wid::Pos]
            .into_iter()
            .chain((0..a.layers).flat_map(per_layer))
            .chain([Wid::Head, Wid::HeadB])
    }
}

/// A party's view of the model weights.
pub trait Weights {
    /// The party's words of `id` (host: the encoding; device: encoding minus
    /// mask; dealer: the mask; host-only ids are empty for device and dealer).
    fn get(&self, id: Wid) -> &[u64];
}

/// Checks that `w` holds every weight a party uses, at its length: the
/// host uses every id, the device and the dealer the host-private ones
/// (`!host_only`). A missing id is a typed error here, never an empty slice
/// that a later step would index.
pub fn check_weights(a: &Arch, w: &dyn Weights, host: bool) -> Result<(), ProtocolError> {
    for id in Wid::all(a) {
        if (host || !id.host_only()) && w.get(id).len() != id.len(a) {
            return Err(ProtocolError::BadWeights);
        }
    }
    Ok(())
}

/// The host's fixed-point encoding of `id` with the folds, into `out`
/// (`id.len(arch)` words).
pub fn encode_weight(m: &ModelView<'_>, fp: FixedPoint, id: Wid, out: &mut [u64]) -> Result<(), ProtocolError> {
    let a = m.arch();
    if out.len() != id.len(&a) {
        return Err(ProtocolError::BadBuffer);
    }
    let (d, hd, n) = (a.dim, a.head_dim(), a.tokens());
    let qscale = 1.0 / libm::sqrt(hd as f64);
    let enc = |v: f64| fp.encode(v);
    let enc2 = |v: f64| fp.encode_double(v);
    let enc3 = |v: f64| (libm::round(v * fp.scale() * fp.scale() * fp.scale()) as i64) as u64;
    let g = |t: Tensor, i: usize| m.get(t, i) as f64;
    match id {
        Wid::PatchW => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc(g(Tensor::PatchW, i))),
        Wid::PatchB => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc2(g(Tensor::PatchB, i))),
        Wid::Cls => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc(g(Tensor::Cls, i))),
        Wid::Pos => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc(g(Tensor::Pos, i))),
        Wid::Qkv(l) => {
            for (i, row) in out.chunks_exact_mut(3 * d).enumerate() {
                let gam = g(Tensor::Ln0G(l), i);
                for (j, o) in row.iter_mut().enumerate() {
                    let s = if j < d { qscale } else { 1.0 };
                    *o = enc(gam * g(Tensor::Qkv(l), i * 3 * d + j) * s);
                }
            }
        }
        Wid::QkvB(l) => {
            for (j, o) in out.iter_mut().enumerate() {
                let s = if j < d { qscale } else { 1.0 };
                let v: f64 = (0..d)
                    .map(|i| g(Tensor::Ln0B(l), i) * g(Tensor::Qkv(l), i * 3 * d + j))
                    .sum();
                *o = enc2(v * s);
            }
        }
        Wid::Proj(l) => {
            for (i, row) in out.chunks_exact_mut(d).enumerate() {
                let s = if m.attn(l, i / hd) == AttnKind::Scale {
                    1.0 / n as f64
                } else {
                    1.0
                };
                for (j, o) in row.iter_mut().enumerate() {
                    *o = enc(g(Tensor::ProjW(l), i * d + j) * s);
                }
            }
        }
        Wid::ProjB(l) => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc3(g(Tensor::ProjB(l), i))),
        Wid::Ln1G(l) => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc(g(Tensor::Ln1G(l), i))),
        Wid::Ln1B(l) => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc(g(Tensor::Ln1B(l), i))),
        Wid::Fc1(l) => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc(g(Tensor::Fc1W(l), i))),
        Wid::Fc1B(l) => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc2(g(Tensor::Fc1B(l), i))),
        Wid::Fc2(l) => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc(g(Tensor::Fc2W(l), i))),
        Wid::Fc2B(l) => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = enc2(g(Tensor::Fc2B(l), i))),
        Wid::Head => {
            let c = a.classes;
            for (i, row) in out.chunks_exact_mut(c).enumerate() {
                let gam = g(Tensor::NormG, i);
                for (j, o) in row.iter_mut().enumerate() {
                    *o = enc(gam * g(Tensor::HeadW, i * c + j));
                }
            }
        }
        Wid::HeadB => {
            let c = a.classes;
            for (j, o) in out.iter_mut().enumerate() {
                let v: f64 = g(Tensor::HeadB, j)
                    + (0..d)
                        .map(|i| g(Tensor::NormB, i) * g(Tensor::HeadW, i * c + j))
                        .sum::<f64>();
                *o = enc2(v);
            }
        }
    }
    Ok(())
}

/// The architecture-level facts the forward pass needs.
#[derive(Clone, Copy)]
pub struct VitSpec<'a> {
    /// Architecture.
    pub arch: Arch,
    /// Fixed point.
    pub fp: FixedPoint,
    /// The attention kinds and MPCViT+ flags.
    pub model: &'a (dyn Layout + Sync),
    /// How each layer is cut into flights.
    pub tile: Tile,
    /// Also reveal the logits to the host (the device's choice, announced at
    /// set-up): after the device has them, it sends its share.
    pub logits_to_host: bool,
}

/// How a layer is cut into flights: fewer rounds against a smaller working
/// set. Every party runs the same cut (the device announces it at set-up,
/// `spec/session.md`); the values computed do not depend on it, only the
/// rounds, the messages and the scratch ([`scratch_len`]).
///
/// * `rows`: token rows per flight in the per-token stages (LayerNorms,
///   `qkv`, projection, MLP);
/// * `heads`: heads per flight in attention;
/// * `queries`: query rows per flight in attention (each flight re-opens
///   the group's `K^T`, `hd n` words, a cost only tiles pay).
///
/// 0 means all (the whole layer in one flight per step, [`Tile::WHOLE`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tile {
    /// Token rows per flight in the per-token stages (0: all).
    pub rows: u16,
    /// Heads per flight in attention (0: all).
    pub heads: u8,
    /// Query rows per flight in attention (0: all).
    pub queries: u16,
}

impl Tile {
    /// The whole layer in one flight per step: fewest rounds.
    pub const WHOLE: Tile = Tile {
        rows: 0,
        heads: 0,
        queries: 0,
    };

    /// Encoded length.
    pub const LEN: usize = 5;

    fn clamp(v: usize, all: usize) -> usize {
        if v == 0 || v > all { all } else { v }
    }

    /// Token rows per flight for `a`.
    pub fn rows_of(&self, a: &Arch) -> usize {
        Self::clamp(self.rows as usize, a.tokens())
    }

    /// Heads per flight for `a`.
    pub fn heads_of(&self, a: &Arch) -> usize {
        Self::clamp(self.heads as usize, a.heads)
    }

    /// Query rows per flight for `a`.
    pub fn queries_of(&self, a: &Arch) -> usize {
        Self::clamp(self.queries as usize, a.tokens())
    }

    /// Little-endian `rows (2) | heads (1) | queries (2)`.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let [r0, r1] = self.rows.to_le_bytes();
        let [q0, q1] = self.queries.to_le_bytes();
        [r0, r1, self.heads, q0, q1]
    }

    /// The inverse of [`Tile::encode`].
    pub fn decode(b: [u8; Self::LEN]) -> Self {
        Self {
            rows: u16::from_le_bytes([b[0], b[1]]),
            heads: b[2],
            queries: u16::from_le_bytes([b[3], b[4]]),
        }
    }

    /// As one integer (bound into the device's set-up tag).
    pub fn code(&self) -> u64 {
        let b = self.encode();
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], 0, 0, 0])
    }
}

impl core::fmt::Debug for VitSpec<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VitSpec")
            .field("arch", &self.arch)
            .field("fp", &self.fp)
            .field("tile", &self.tile)
            .field("logits_to_host", &self.logits_to_host)
            .finish_non_exhaustive()
    }
}

/// Grid of the softmax / ReLU lookups on attention scores: `[-32, 32)`.
pub const SCORE_RANGE_LOG2: i32 = 5;
/// Grid of the GeLU / ReLU lookups in the MLP: `[-32, 32)`.
pub const MLP_RANGE_LOG2: i32 = 5;
/// Index bits of the GeLU lookup: cells of `2^-5` on [`MLP_RANGE_LOG2`].
///
/// The lookup reads the next cell's chord with probability equal to the
/// input's position in its cell (the carry of the mask, `protocol::lut`),
/// off the curve by up to `max|g''| h^2` for cells of width `h`; summed over
/// an MLP's hidden units and carried through the layers this was the
/// largest gap between secure and fixed-point logits (1.5-2.2e-2 on the
/// bundled model with 10 bits, whatever the fractional bits; 3.9e-3 with
/// 11). One more bit doubles the dealer's GeLU tables (offline) and
/// changes nothing online.
pub const MLP_GRID_BITS: u32 = 11;

/// The reciprocal of attention row sums shared by Softmax and RSAttn heads.
///
/// Its range reaches down to one unit (`2^-f`): an RSAttn row with a single
/// small positive score has a sum of a few units, where `1 / (S + eps)` is
/// steep, and a window whose cells span several units would read a chord
/// far off the function there (and the secure op, reading a neighbouring
/// cell, farther still). The last window then has shift 0: exact cells.
pub fn row_recip(n: usize, f: u32) -> WideSpec {
    let top = libm::exp(crate::protocol::pwl::EXP_MAX).max(libm::exp2(SCORE_RANGE_LOG2 as f64));
    WideSpec {
        eps: RS_EPS,
        ..WideSpec::new(
            Func::Recip,
            libm::exp2(-(f as f64)),
            n as f64 * top * 1.01,
            f,
            61 - f - 2,
        )
    }
}

struct Arena<'a> {
    rest: &'a mut [u64],
}

impl<'a> Arena<'a> {
    fn take(&mut self, n: usize) -> Result<&'a mut [u64], ProtocolError> {
        if n > self.rest.len() {
            return Err(ProtocolError::BadBuffer);
        }
        let (a, b) = core::mem::take(&mut self.rest).split_at_mut(n);
        self.rest = b;
        a.fill(0);
        Ok(a)
    }
}

/// Scratch words [`normalize_heads`] needs for `heads` heads of `rows x n`.
pub fn norm_scratch_len(heads: usize, rows: usize, n: usize) -> usize {
    12 * heads * rows * n + wide::scratch_len(heads * rows) + 8 * heads * rows
}

/// Scratch words [`forward`] needs with `tile`: the activations that live
/// through a layer (`x`, `qkv` and the attention output: `5 n d`) plus the
/// largest stage's temporaries.
pub fn scratch_len(a: &Arch, tile: Tile) -> usize {
    let (n, d, m, hd) = (a.tokens(), a.dim, a.mlp, a.head_dim());
    let (r, g, q) = (tile.rows_of(a), tile.heads_of(a), tile.queries_of(a));
    let ln = LnSpec::new(r, d).scratch_len();
    let stage_a = r * d + ln;
    let big = q.max(hd) * n.max(hd);
    let stage_b = g * hd * hd + 4 * g * big + g * q * n + norm_scratch_len(g, q, n);
    let stage_c = 4 * r * d + ln + 2 * r * m + 2 * r * m.max(d) + 5 * r * d;
    let last = d + LnSpec::new(1, d).scratch_len() + 2 * a.classes;
    5 * n * d + stage_a.max(stage_b).max(stage_c).max(last)
}

/// Row normalization of `heads.len()` heads of `rows x n` scores at `f`
/// bits (none of them ScaleAttn), all in the same rounds.
pub fn normalize_heads<P: Party + ?Sized>(
    p: &mut P,
    rows: usize,
    n: usize,
    heads: &[AttnKind],
    x: &[u64],
    out: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let fp = p.fp();
    let f = fp.frac_bits();
    let nn = rows * n;
    let hcount = heads.len();
    if hcount == 0 {
        return Ok(());
    }
    if x.len() != hcount * nn || out.len() != x.len() {
        return Err(ProtocolError::BadBuffer.into());
    }
    let host = p.kind().role() == crate::Role::Host;
    let mut ar = Arena { rest: scratch };
    let e = ar.take(hcount * nn)?;
    // elementwise step: exp of x - x_row0 (Softmax), ReLU (RSAttn) in one
    // flight; 2Quad squares then truncates (two more rounds)
    let grid = activation::grid(0, f, SCORE_RANGE_LOG2, 10)?;
    let (exp_shape, exp_table) = activation::fitted_table(Func::Exp, grid, fp);
    let ns = heads.iter().filter(|k| **k == AttnKind::Softmax).count() * nn;
    let nr = heads.iter().filter(|k| **k == AttnKind::ReluSoftmax).count() * nn;
    let nq = heads.iter().filter(|k| **k == AttnKind::Quad).count() * nn;
    let ins = ar.take(ns + nr)?;
    let outs = ar.take(ns + nr)?;
    let (mut is, mut ir) = (0, ns);
    for (hi, &k) in heads.iter().enumerate() {
        let blk = &x[hi * nn..(hi + 1) * nn];
        match k {
            AttnKind::Softmax => {
                for (row_in, row) in ins[is..is + nn].chunks_exact_mut(n).zip(blk.chunks_exact(n)) {
                    for (o, &v) in row_in.iter_mut().zip(row) {
                        *o = v.wrapping_sub(row[0]);
                    }
                }
                is += nn;
            }
            AttnKind::ReluSoftmax => {
                ins[ir..ir + nn].copy_from_slice(blk);
                ir += nn;
            }
            _ => {}
        }
    }
    // Softmax heads: one exp lookup; RSAttn heads: the precise ReLU (two
    // rounds). A layer mixing both pays the two steps in sequence.
    if ns > 0 {
        let es = LutShape { n: ns, ..exp_shape };
        p.luts(
            &[LutJob {
                shape: es,
                table: &exp_table,
            }],
            &ins[..ns],
            &mut outs[..ns],
        )?;
    }
    if nr > 0 {
        let rshape = LutShape { n: nr, ..grid };
        let rs_scratch = ar.take(5 * nr)?;
        activation::relu_precise(p, rshape, &ins[ns..ns + nr], &mut outs[ns..ns + nr], rs_scratch)?;
    }
    for v in outs[..ns].iter_mut() {
        *v = trunc::local(*v, activation::EXTRA_BITS);
    }
    let qin = ar.take(nq)?;
    let qsq = ar.take(nq)?;
    let qout = ar.take(nq)?;
    if nq > 0 {
        let c = fp.encode(super::softmax::QUAD_C);
        let mut iq = 0;
        for (hi, &k) in heads.iter().enumerate() {
            if k == AttnKind::Quad {
                for (o, &v) in qin[iq..iq + nn].iter_mut().zip(&x[hi * nn..(hi + 1) * nn]) {
                    *o = if host { v.wrapping_add(c) } else { v };
                }
                iq += nn;
            }
        }
        p.square(qin, qsq)?;
        p.trunc(f, qsq, qout)?;
    }
    let (mut is, mut ir, mut iq) = (0, ns, 0);
    for (hi, &k) in heads.iter().enumerate() {
        let dst = &mut e[hi * nn..(hi + 1) * nn];
        match k {
            AttnKind::Softmax => {
                dst.copy_from_slice(&outs[is..is + nn]);
                is += nn;
            }
            AttnKind::ReluSoftmax => {
                dst.copy_from_slice(&outs[ir..ir + nn]);
                ir += nn;
            }
            _ => {
                dst.copy_from_slice(&qout[iq..iq + nn]);
                iq += nn;
            }
        }
    }
    // reciprocal of every row sum, one batch
    let rows = hcount * rows;
    let sums = ar.take(rows)?;
    let inv = ar.take(rows)?;
    for (s, row) in sums.iter_mut().zip(e.chunks_exact(n)) {
        *s = row.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    }
    let spec = row_recip(n, f);
    let wscratch = ar.take(wide::scratch_len(rows))?;
    wide::wide(p, &spec, sums, inv, wscratch)?;
    let prod = ar.take(hcount * nn)?;
    p.mul(e, inv, n, prod)?;
    p.trunc(spec.out_frac, prod, out)
}

/// The secure forward pass: `patches` (`(n-1) x patch_len`, this party's
/// share; the device holds the image, so the host's share is zero) to the
/// logits, revealed to the device (the host and the dealer get zeros).
/// `scratch` holds [`scratch_len`]`(arch, spec.tile)` words.
pub fn forward<P: Party + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    w: &dyn Weights,
    patches: &[u64],
    logits: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let (n, d, pl) = (a.tokens(), a.dim, a.patch_len());
    let f = spec.fp.frac_bits();
    let host = p.kind() == super::PartyKind::Host;
    if patches.len() != (n - 1) * pl || logits.len() != a.classes || scratch.len() < scratch_len(&a, spec.tile) {
        return Err(ProtocolError::BadBuffer.into());
    }
    check_weights(&a, w, host)?;
    let (x, rest) = scratch.split_at_mut(n * d);
    let (qkv, rest) = rest.split_at_mut(3 * n * d);
    let (att, stage) = rest.split_at_mut(n * d);
    x.fill(0);
    // patch embedding (row tiles), class token, positions
    let r = spec.tile.rows_of(&a);
    for r0 in (0..n - 1).step_by(r) {
        let r1 = (r0 + r).min(n - 1);
        p.linear_trunc(
            LinearShape {
                n: r1 - r0,
                din: pl,
                dout: d,
            },
            &patches[r0 * pl..r1 * pl],
            w.get(Wid::PatchW),
            w.get(Wid::PatchB),
            f,
            &mut x[(r0 + 1) * d..(r1 + 1) * d],
        )?;
    }
    if host {
        let (cls, pos) = (w.get(Wid::Cls), w.get(Wid::Pos));
        for (j, v) in x[..d].iter_mut().enumerate() {
            *v = cls[j].wrapping_add(pos[j]);
        }
        for (v, &pv) in x[d..].iter_mut().zip(&pos[d..]) {
            *v = v.wrapping_add(pv);
        }
    }
    for l in 0..a.layers {
        // 1-2. LayerNorm 0 (affine folded) and qkv, by row tiles
        for r0 in (0..n).step_by(r) {
            let r1 = (r0 + r).min(n);
            let rr = r1 - r0;
            let mut ar = Arena { rest: &mut *stage };
            let ln = LnSpec::new(rr, d);
            let hln = ar.take(rr * d)?;
            let lns = ar.take(ln.scratch_len())?;
            layernorm::layernorm(p, &ln, &x[r0 * d..r1 * d], None, &[], hln, lns)?;
            p.linear_trunc(
                LinearShape {
                    n: rr,
                    din: d,
                    dout: 3 * d,
                },
                hln,
                w.get(Wid::Qkv(l)),
                w.get(Wid::QkvB(l)),
                f,
                &mut qkv[r0 * 3 * d..r1 * 3 * d],
            )?;
        }
        // 3-5. attention by head groups and query tiles
        attention(p, spec, l, qkv, att, stage)?;
        // 6-8. projection, residual, LayerNorm 1, MLP, residual, by row tiles
        for r0 in (0..n).step_by(r) {
            let r1 = (r0 + r).min(n);
            mlp_rows(
                p,
                spec,
                w,
                l,
                r0,
                r1,
                &att[r0 * d..r1 * d],
                &mut x[r0 * d..r1 * d],
                stage,
            )?;
        }
    }
    // final LayerNorm on the class token, head, reveal
    let mut ar = Arena { rest: stage };
    let ln1 = LnSpec::new(1, d);
    let hln = ar.take(d)?;
    let lns = ar.take(ln1.scratch_len())?;
    layernorm::layernorm(p, &ln1, &x[..d], None, &[], hln, lns)?;
    let out = ar.take(a.classes)?;
    p.linear_trunc(
        LinearShape {
            n: 1,
            din: d,
            dout: a.classes,
        },
        hln,
        w.get(Wid::Head),
        w.get(Wid::HeadB),
        f,
        out,
    )?;
    p.reveal_to_device(out, logits)?;
    if spec.logits_to_host {
        let shown = ar.take(a.classes)?;
        p.reveal_to_host(out, shown)?;
        if host {
            logits.copy_from_slice(shown);
        }
    }
    Ok(())
}

/// Steps 3-5 of layer `l` (see the module docs) for every head group and
/// query tile of `spec.tile`: `qkv` (`n x 3d`) to `att` (`n x d`).
// The head loops index several per-head arrays in step.
#[allow(clippy::needless_range_loop)]
fn attention<P: Party + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    l: usize,
    qkv: &[u64],
    att: &mut [u64],
    stage: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let (n, d, nh, hd) = (a.tokens(), a.dim, a.heads, a.head_dim());
    let f = spec.fp.frac_bits();
    let (g, q) = (spec.tile.heads_of(&a), spec.tile.queries_of(&a));
    let col = |t: usize, blk: usize, h: usize, c: usize| qkv[t * 3 * d + blk * d + h * hd + c];
    let scale_head = |h: usize| spec.model.attn(l, h) == AttnKind::Scale;
    for g0 in (0..nh).step_by(g) {
        let g1 = (g0 + g).min(nh);
        let mut ar = Arena { rest: &mut *stage };
        // K^T V of the group's ScaleAttn heads, kept over its query tiles
        let ktv = ar.take(g * hd * hd)?;
        let big = g * q.max(hd) * n.max(hd);
        let mm_x = ar.take(big)?;
        let mm_y = ar.take(big)?;
        let mm_z = ar.take(big)?;
        let mm_t = ar.take(big)?;
        let probs = ar.take(g * q * n)?;
        let nscratch = ar.take(norm_scratch_len(g, q, n))?;
        for q0 in (0..n).step_by(q) {
            let q1 = (q0 + q).min(n);
            let qr = q1 - q0;
            // 3. Q K^T for the normalized heads, K^T V for the ScaleAttn
            //    heads (first tile only), one flight; truncate them all
            let mut shapes = [MatmulShape { n: 0, k: 0, m: 0 }; crate::model::MAX_HEADS];
            let mut ns = 0;
            let (mut xo, mut yo, mut zo) = (0, 0, 0);
            for h in g0..g1 {
                let s = if scale_head(h) {
                    if q0 > 0 {
                        continue;
                    }
                    for c in 0..hd {
                        for t in 0..n {
                            mm_x[xo + c * n + t] = col(t, 1, h, c);
                        }
                    }
                    for t in 0..n {
                        for c in 0..hd {
                            mm_y[yo + t * hd + c] = col(t, 2, h, c);
                        }
                    }
                    MatmulShape { n: hd, k: n, m: hd }
                } else {
                    for t in q0..q1 {
                        for c in 0..hd {
                            mm_x[xo + (t - q0) * hd + c] = col(t, 0, h, c);
                        }
                    }
                    for c in 0..hd {
                        for t in 0..n {
                            mm_y[yo + c * n + t] = col(t, 1, h, c);
                        }
                    }
                    MatmulShape { n: qr, k: hd, m: n }
                };
                shapes[ns] = s;
                ns += 1;
                xo += s.n * s.k;
                yo += s.k * s.m;
                zo += s.n * s.m;
            }
            if ns > 0 {
                p.matmuls(&shapes[..ns], &mm_x[..xo], &mm_y[..yo], &mut mm_z[..zo])?;
                p.trunc(f, &mm_z[..zo], &mut mm_t[..zo])?;
            }
            // 4. normalize the non-Scale heads; keep K^T V
            let mut kinds = [AttnKind::Softmax; crate::model::MAX_HEADS];
            let (mut nk, mut zo, mut so, mut si) = (0, 0, 0, 0);
            for h in g0..g1 {
                if scale_head(h) {
                    if q0 == 0 {
                        let at = (h - g0) * hd * hd;
                        ktv[at..at + hd * hd].copy_from_slice(&mm_t[zo..zo + hd * hd]);
                        zo += hd * hd;
                    }
                } else {
                    let len = shapes[si].n * shapes[si].m;
                    kinds[nk] = spec.model.attn(l, h);
                    mm_z[so..so + len].copy_from_slice(&mm_t[zo..zo + len]);
                    so += len;
                    zo += len;
                    nk += 1;
                }
                if !scale_head(h) || q0 == 0 {
                    si += 1;
                }
            }
            normalize_heads(p, qr, n, &kinds[..nk], &mm_z[..so], &mut probs[..so], nscratch)?;
            // 5. P V and Q (K^T V), one flight
            let (mut xo, mut yo, mut po) = (0, 0, 0);
            let mut shapes2 = [MatmulShape { n: 0, k: 0, m: 0 }; crate::model::MAX_HEADS];
            for h in g0..g1 {
                let s = if scale_head(h) {
                    for t in q0..q1 {
                        for c in 0..hd {
                            mm_x[xo + (t - q0) * hd + c] = col(t, 0, h, c);
                        }
                    }
                    let at = (h - g0) * hd * hd;
                    mm_y[yo..yo + hd * hd].copy_from_slice(&ktv[at..at + hd * hd]);
                    MatmulShape { n: qr, k: hd, m: hd }
                } else {
                    mm_x[xo..xo + qr * n].copy_from_slice(&probs[po..po + qr * n]);
                    po += qr * n;
                    for t in 0..n {
                        for c in 0..hd {
                            mm_y[yo + t * hd + c] = col(t, 2, h, c);
                        }
                    }
                    MatmulShape { n: qr, k: n, m: hd }
                };
                shapes2[h - g0] = s;
                xo += s.n * s.k;
                yo += s.k * s.m;
            }
            let gh = g1 - g0;
            p.matmuls(&shapes2[..gh], &mm_x[..xo], &mm_y[..yo], &mut mm_z[..gh * qr * hd])?;
            for h in g0..g1 {
                let o = (h - g0) * qr * hd;
                for t in q0..q1 {
                    att[t * d + h * hd..t * d + (h + 1) * hd]
                        .copy_from_slice(&mm_z[o + (t - q0) * hd..o + (t - q0 + 1) * hd]);
                }
            }
        }
    }
    Ok(())
}

/// Steps 6-8 of layer `l` for token rows `r0..r1`: projection of `att`
/// (input at 2f), residual into `x`, LayerNorm 1 (host-private scale), the
/// MLP with GeLU or MPCViT+ linearized tokens, residual.
#[allow(clippy::too_many_arguments)]
fn mlp_rows<P: Party + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    w: &dyn Weights,
    l: usize,
    r0: usize,
    r1: usize,
    att: &[u64],
    x: &mut [u64],
    stage: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let (d, mlp) = (a.dim, a.mlp);
    let f = spec.fp.frac_bits();
    let rr = r1 - r0;
    let mut ar = Arena { rest: stage };
    let ln = LnSpec::new(rr, d);
    let proj = ar.take(rr * d)?;
    let hln = ar.take(rr * d)?;
    let lns = ar.take(ln.scratch_len())?;
    let hid = ar.take(rr * mlp)?;
    let hid2 = ar.take(rr * mlp)?;
    let y = ar.take(rr * d)?;
    let sel_in = ar.take(rr * mlp.max(d))?;
    let sel_out = ar.take(rr * mlp.max(d))?;
    let relu_scratch = ar.take(5 * rr * d)?;
    // 6. projection, residual
    p.linear_trunc(
        LinearShape { n: rr, din: d, dout: d },
        att,
        w.get(Wid::Proj(l)),
        w.get(Wid::ProjB(l)),
        2 * f,
        proj,
    )?;
    for (v, &pv) in x.iter_mut().zip(proj.iter()) {
        *v = v.wrapping_add(pv);
    }
    // 7. LayerNorm 1 (affine, host-private scale)
    layernorm::layernorm(p, &ln, x, Some(w.get(Wid::Ln1G(l))), w.get(Wid::Ln1B(l)), hln, lns)?;
    x.copy_from_slice(hln);
    // 8. MLP: GeLU tokens through the GeLU lookup, linearized tokens not
    p.linear_trunc(
        LinearShape {
            n: rr,
            din: d,
            dout: mlp,
        },
        x,
        w.get(Wid::Fc1(l)),
        w.get(Wid::Fc1B(l)),
        f,
        hid,
    )?;
    hid2.copy_from_slice(hid);
    let gelu = |t: usize| spec.model.gelu(l, r0 + t);
    let g_rows = (0..rr).filter(|&t| gelu(t)).count();
    if g_rows > 0 {
        let mut o = 0;
        for t in (0..rr).filter(|&t| gelu(t)) {
            sel_in[o..o + mlp].copy_from_slice(&hid[t * mlp..(t + 1) * mlp]);
            o += mlp;
        }
        let grid = activation::grid(o, f, MLP_RANGE_LOG2, MLP_GRID_BITS)?;
        activation::fitted(p, Func::Gelu, grid, &sel_in[..o], &mut sel_out[..o])?;
        let mut o = 0;
        for t in (0..rr).filter(|&t| gelu(t)) {
            hid2[t * mlp..(t + 1) * mlp].copy_from_slice(&sel_out[o..o + mlp]);
            o += mlp;
        }
    }
    p.linear_trunc(
        LinearShape {
            n: rr,
            din: mlp,
            dout: d,
        },
        hid2,
        w.get(Wid::Fc2(l)),
        w.get(Wid::Fc2B(l)),
        f,
        y,
    )?;
    if g_rows < rr {
        let mut o = 0;
        for t in (0..rr).filter(|&t| !gelu(t)) {
            sel_in[o..o + d].copy_from_slice(&y[t * d..(t + 1) * d]);
            o += d;
        }
        let grid = activation::grid(o, f, MLP_RANGE_LOG2, 10)?;
        activation::relu_precise(p, grid, &sel_in[..o], &mut sel_out[..o], &mut relu_scratch[..5 * o])?;
        let mut o = 0;
        for t in (0..rr).filter(|&t| !gelu(t)) {
            y[t * d..(t + 1) * d].copy_from_slice(&sel_out[o..o + d]);
            o += d;
        }
    }
    for (v, &yv) in x.iter_mut().zip(y.iter()) {
        *v = v.wrapping_add(yv);
    }
    Ok(())
}

/// The device's input: 8-bit pixels `[c, h, w]`, normalised per channel as
/// `(p / 255 - mean[c]) / std[c]` in `f32` and encoded in fixed point, as the
/// patch matrix `((tokens - 1) x patch_len)` the forward pass takes. The
/// desktop device and the firmware both use this, so they feed the same
/// bits.
pub fn patches_from_pixels(
    a: &Arch,
    fp: FixedPoint,
    pixels: &[u8],
    mean: &[f32],
    std: &[f32],
    out: &mut [u64],
) -> Result<(), ProtocolError> {
    let (p, g, side) = (a.patch, a.image / a.patch, a.image);
    if pixels.len() != a.channels * side * side
        || out.len() != (a.tokens() - 1) * a.patch_len()
        || mean.len() < a.channels
        || std.len() < a.channels
    {
        return Err(ProtocolError::BadBuffer);
    }
    for py in 0..g {
        for px in 0..g {
            let row = (py * g + px) * a.patch_len();
            for c in 0..a.channels {
                for ky in 0..p {
                    for kx in 0..p {
                        let src = (c * side + py * p + ky) * side + px * p + kx;
                        let v = (pixels[src] as f32 / 255.0 - mean[c]) / std[c];
                        out[row + (c * p + ky) * p + kx] = fp.encode(v as f64);
                    }
                }
            }
        }
    }
    Ok(())
}
