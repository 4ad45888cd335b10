//! What every party of a forward pass agrees on: the architecture-level
//! spec, the tile that cuts each layer into flights, the lookup grids, and
//! the scratch each stage takes.

use crate::FixedPoint;
use crate::ProtocolError;
use crate::model::{Arch, Layout};
use crate::ops::layernorm::LnSpec;
use crate::ops::softmax::RS_EPS;
use crate::ops::wide::{self, WideSpec};
use crate::protocol::pwl::Func;

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
/// * `queries`: query rows per flight in attention (the first flight opens
///   each head's `K^T`, `V` and `K^T V`, the later ones open only their
///   query rows and probabilities).
///
/// 0 means all (the whole layer in one flight per step, [`Tile::WHOLE`]).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    postcard::experimental::max_size::MaxSize,
)]
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
/// Range of the MLP's comparisons (the linearized tokens' ReLU):
/// `[-32, 32)`. GeLU's comparison (at 0 and `+-5`) opens one bit more, so
/// GeLU inputs lie in `[-59, 58.5)` ([`crate::ops::activation::gelu`]).
pub const MLP_RANGE_LOG2: i32 = 5;

/// Checks that the forward pass can run `arch` with `layout`'s heads and
/// MLPs at `f` fractional bits: every lookup grid it builds exists at `f`
/// (the score and MLP grids, the fine grids of the exact ReLU where RSAttn
/// heads or linearized MLP tokens use it), the row reciprocal's and
/// LayerNorm's windows fit the ring, and biases at `3f` stay below `2^62`.
/// A model that fails is refused when it is loaded, not in a session.
pub fn check_frac_bits(a: &Arch, layout: &dyn Layout, f: u32) -> Result<(), ProtocolError> {
    use crate::model::AttnKind;
    use crate::ops::activation;
    if 3 * f > 62 {
        return Err(ProtocolError::BadParameter);
    }
    use crate::protocol::cmp::{CmpOut, CmpShape};
    // the score and GeLU grids read their inputs before truncation too;
    // GeLU's comparison reads fc1's product at bits `f..f + 8 w`, which
    // must lie in the width fc1 runs in
    score_exp(1, f, f)?;
    let fp = crate::FixedPoint::new(f)?;
    let gelu_cmp = activation::gelu_shapes(1, f, MLP_RANGE_LOG2, f)?.0;
    let fc1_bits = 8 * super::weights::linear_width(fp);
    if f as usize + 8 * gelu_cmp.width() > fc1_bits {
        return Err(ProtocolError::BadParameter);
    }
    let heads = (0..a.layers).flat_map(|l| (0..a.heads).map(move |h| layout.attn(l, h)));
    if heads.clone().any(|k| k == AttnKind::ReluSoftmax) {
        CmpShape::new(1, f, SCORE_RANGE_LOG2, CmpOut::Relu)?.with_pre(f)?;
        if rs_after_v(fp) {
            rs_recip_after_v(a.tokens(), f).check()?;
        }
    }
    let tokens = (0..a.layers).flat_map(|l| (0..a.tokens()).map(move |t| layout.gelu(l, t)));
    if tokens.clone().any(|g| !g) {
        CmpShape::new(1, f, MLP_RANGE_LOG2, CmpOut::Relu)?;
    }
    for kind in [AttnKind::Softmax, AttnKind::ReluSoftmax, AttnKind::Quad] {
        if heads.clone().any(|k| k == kind) {
            row_recip(a.tokens(), f, kind).check()?;
        }
    }
    crate::ops::layernorm::LnSpec::new(1, a.dim).rsqrt(f).check()?;
    Ok(())
}

/// Fractional bits of the attention rows' elementwise values (Softmax's
/// exp, RSAttn's ReLU, 2Quad's square) from the elementwise step through
/// the row sums to the product with the reciprocal: as many as a row sum of
/// 257 saturated exps (`e^(EXP_CAP + 4)`) leaves to the reciprocal's
/// windows (below `2^61`), enough for exp's 10 + 18 bits.
pub const ROW_FRAC: u32 = 28;

/// Softmax's exp is exact up to this shifted score; above it saturates in
/// `[e^EXP_CAP, e^(EXP_CAP + 4)]` (the cell's factor is capped, the public
/// factor of its low part is not).
pub const EXP_CAP: f64 = 12.0;

/// The dealer's cell factor of Softmax's exp: `exp(min(xi, EXP_CAP))`.
#[derive(Clone, Copy, Debug)]
pub struct ScoreExp;

impl crate::protocol::cell::CellFn for ScoreExp {
    fn eval(&self, _cell: u64, xi: f64) -> f64 {
        libm::exp(xi.min(EXP_CAP))
    }
    fn zero_on(&self, _cell: u64, lo: f64, _hi: f64) -> bool {
        // e^(lo + 4) 2^ROW_FRAC below half a unit
        lo + 4.0 < -(ROW_FRAC as f64 + 1.0) * core::f64::consts::LN_2
    }
}

/// The cell lookup of Softmax's exp on `n` shifted scores in `[-32, 28)`
/// at `f` bits (at `f + pre` bits, the product before its truncation, which
/// the opening drops): 16 cells of 4, the exp basis at 10 bits, output at
/// [`ROW_FRAC`] bits (relative error about `2^-11` plus `e^4 2^-19`
/// absolute).
pub fn score_exp(n: usize, f: u32, pre: u32) -> Result<crate::protocol::cell::CellShape, ProtocolError> {
    use crate::protocol::cell::{Basis, CellShape};
    let l = f as i32 + SCORE_RANGE_LOG2 + 1;
    if !(4..=62).contains(&l) || f + 2 > ROW_FRAC {
        return Err(ProtocolError::BadParameter);
    }
    let shape = CellShape {
        n,
        l: l as u32,
        kh: 4,
        offset: 1u64 << (l - 1),
        f,
        p: 10,
        out: ROW_FRAC,
        basis: Basis::Exp,
        pre,
    };
    shape.check()?;
    Ok(shape)
}

/// Bytes a word of the `Q K^T` products' openings: with `pre > 0` the
/// scores are read only by the exp lookup's and the comparison's openings
/// ([`score_exp`], RSAttn's `CmpShape`), which take bits `pre..pre + 8 w`
/// of each share (`w` their opening's bytes), so the product need only be
/// right modulo `2^(pre + 8 w)`; with `pre = 0` (a 2Quad head squares the
/// truncated scores) the whole ring.
pub fn score_width(f: u32, pre: u32) -> Result<usize, ProtocolError> {
    if pre == 0 {
        return Ok(crate::protocol::trunc::FULL);
    }
    let exp = score_exp(1, f, pre)?.width_bytes();
    let cmp = crate::protocol::cmp::CmpShape::new(1, f, SCORE_RANGE_LOG2, crate::protocol::cmp::CmpOut::Relu)?
        .with_pre(pre)?
        .width();
    Ok((pre as usize + 8 * exp.max(cmp))
        .div_ceil(8)
        .min(crate::protocol::trunc::FULL))
}

/// The reciprocal of attention row sums (at [`ROW_FRAC`] bits) of heads of
/// `kind` (ScaleAttn has none), on that kind's range: Softmax sums are at
/// least 1 (the row's first score has `exp(0)`), RSAttn sums reach down to
/// one unit of the scores (`2^-f`) and 0 (the epsilon keeps `1 / (S +
/// eps)` finite; the last window has exact cells), 2Quad sums down to
/// `2^-8`.
pub fn row_recip(n: usize, f: u32, kind: crate::model::AttnKind) -> WideSpec {
    row_recip_at(n, f, kind, 61 - ROW_FRAC)
}

/// Fractional bits of RSAttn's row reciprocal when the rows weight `e V`
/// ([`rs_after_v`]): `(e V) / S` at `2f + 24` bits stays below `2^61`
/// (real values below `2^(37 - 2f)`, the held `qkv`'s bound), inside the
/// exact truncation's range.
pub const RS_INV_FRAC: u32 = 24;

/// Whether RSAttn heads take the product with `V` before the reciprocal:
/// `out = (e V) (1 / S)` truncated by [`RS_INV_FRAC`] instead of `P = e (1
/// / S)` truncated to `f` and then `P V`. `e = ReLU(s)` is at `f` bits and
/// at most 32, `V` at most `2^(37 - 2f)` (real; `qkv` runs in the held
/// width, [`held_width`](super::held_width), `f <= 16`), so `e V` needs no
/// truncation and the rows' `n`-wide product and truncation become `hd`
/// wide. Above `f = 16` the probabilities are made first.
pub fn rs_after_v(fp: crate::FixedPoint) -> bool {
    super::weights::held_width(fp).is_some()
}

/// The RSAttn heads' row reciprocal when [`rs_after_v`]: [`row_recip`]'s
/// range at [`RS_INV_FRAC`] bits.
pub fn rs_recip_after_v(n: usize, f: u32) -> WideSpec {
    row_recip_at(n, f, crate::model::AttnKind::ReluSoftmax, RS_INV_FRAC)
}

fn row_recip_at(n: usize, f: u32, kind: crate::model::AttnKind, out: u32) -> WideSpec {
    use crate::model::AttnKind;
    let n = n as f64;
    let (lo, hi, eps) = match kind {
        AttnKind::Softmax => (0.5, n * libm::exp(EXP_CAP + 4.0) * 1.01, 0.0),
        AttnKind::ReluSoftmax => (
            libm::exp2(-(f as f64)),
            n * libm::exp2(SCORE_RANGE_LOG2 as f64) * 1.01,
            RS_EPS,
        ),
        _ => {
            let top = libm::exp2(SCORE_RANGE_LOG2 as f64) + crate::ops::softmax::QUAD_C;
            (libm::exp2(-8.0), n * top * top * 1.01, 0.0)
        }
    };
    WideSpec {
        eps,
        ..WideSpec::new(Func::Recip, lo, hi, ROW_FRAC, out)
    }
}

/// Bits the product of a row's values (at [`ROW_FRAC`]) and its reciprocal
/// (at `61 - ROW_FRAC`) is truncated by to come back to `f` bits: the
/// product is `e / S` at 61 bits, below the exact truncation's `2^62`.
pub fn row_trunc(f: u32) -> u32 {
    61 - f
}

pub(super) struct Arena<'a> {
    pub(super) rest: &'a mut [u64],
}

impl<'a> Arena<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a mut [u64], ProtocolError> {
        if n > self.rest.len() {
            return Err(ProtocolError::BadBuffer);
        }
        let (a, b) = core::mem::take(&mut self.rest).split_at_mut(n);
        self.rest = b;
        a.fill(0);
        Ok(a)
    }
}

/// Scratch words [`normalize_heads`](super::normalize_heads) needs for `heads` heads of `rows x n`
/// (`quad`: some of them 2Quad): the elementwise step's inputs and outputs
/// (`2 h r n`, and 2Quad's square in between: `3 h r n`), whose inputs'
/// words the product with the reciprocals takes afterwards, two words per
/// row and the reciprocal's scratch.
pub fn norm_scratch_len(heads: usize, rows: usize, n: usize, quad: bool) -> usize {
    (2 + quad as usize) * heads * rows * n + wide::scratch_len(heads * rows) + 2 * heads * rows
}

/// Words of attention's buffers for a group of `g` heads and `q` query
/// rows of `n` tokens, `hd` per head.
pub(super) struct AttnBuffers {
    /// K^T V of the ScaleAttn heads: `g hd^2`.
    pub ktv: usize,
    /// Left operands: `Q` rows, a key chunk of ScaleAttn's `K^T`
    /// ([`ktv_chunk`]), the probabilities, and the truncated scores or the
    /// gathered `K^T V`.
    pub x: usize,
    /// Right operands of step 3 or of step 5: `K^T` or `V`, or `K^T V`.
    pub y: usize,
    /// Products: the scores, `K^T V`, the outputs.
    pub z: usize,
}

/// Tokens per key chunk of ScaleAttn's `K^T V` with `q` query rows a
/// flight of `n` tokens: with more than one query flight `K^T V` is the sum
/// of two chunks' products, the first in a flight of its own (opening `K^T`
/// and `V` whole in one flight would be the largest message of the layer),
/// the second in the first query flight; else one product.
pub fn ktv_chunk(n: usize, q: usize) -> usize {
    if q < n { n.div_ceil(2) } else { n }
}

/// The attention buffers of [`AttnBuffers`].
pub(super) fn attn_buffers(g: usize, q: usize, n: usize, hd: usize) -> AttnBuffers {
    AttnBuffers {
        ktv: g * hd * hd,
        x: g * (q * hd).max(hd * ktv_chunk(n, q)).max(q * n).max(hd * hd),
        y: g * n.max(hd) * hd,
        z: g * (q * n).max(hd * hd).max(q * hd),
    }
}

/// Scratch words [`forward`](super::forward) needs with `tile` at
/// `role` for a model of `layout` ([`scratch_parts`], added up).
pub fn scratch_len(a: &Arch, tile: Tile, role: crate::corr::Role, layout: &dyn Layout) -> usize {
    let p = scratch_parts(a, tile, role, layout);
    p.resid + p.qkv + p.att + p.stage
}

/// Words of the attention output a party keeps through a layer: the host
/// `n d` (the projection's masked input, [`Party::linear_block`](crate::ops::Party::linear_block)), the
/// device and the dealer none (the device sends each tile's rows as they
/// are made).
pub fn att_len(a: &Arch, role: crate::corr::Role) -> usize {
    if role == crate::corr::Role::Host {
        a.tokens() * a.dim
    } else {
        0
    }
}

/// The parts of [`scratch_len`], in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScratchParts {
    /// The residual stream `x` (`n d` words, or at the device of an
    /// all-GeLU model `2 n d` bits and two terms per row,
    /// [`resid_len`](super::resid_len)).
    pub resid: usize,
    /// A layer's `qkv` (`3 n d` words, or at the device `3 n d` bits and
    /// one op per row, [`qkv_len`](super::qkv_len)).
    pub qkv: usize,
    /// The attention output, the projection's input (`n d` words at the
    /// host, none at the device and the dealer, [`att_len`]).
    pub att: usize,
    /// The largest stage's temporaries: a few rows (`rows` of the tile) of
    /// the per-token stages, or attention's operands for `heads x queries`
    /// of the tile (each head's `K^T` and `V` over all `n` tokens, its
    /// scores over `queries x n`).
    pub stage: usize,
}

/// What [`forward`](super::forward) keeps through a layer and the largest
/// stage's temporaries, at `role` for a model of `layout` cut by `tile`.
pub fn scratch_parts(a: &Arch, tile: Tile, role: crate::corr::Role, layout: &dyn Layout) -> ScratchParts {
    let (n, d, m, hd) = (a.tokens(), a.dim, a.mlp, a.head_dim());
    let (r, g, q) = (tile.rows_of(a), tile.heads_of(a), tile.queries_of(a));
    let ln = LnSpec::new(r, d).scratch_len();
    // x's rows, LayerNorm 0 and qkv's rows
    let stage_a = 5 * r * d + ln;
    // K^T V, the products' operands, the probabilities, a row of qkv
    let b = attn_buffers(g, q, n, hd);
    let has = |kind| (0..a.layers).any(|l| (0..a.heads).any(|h| layout.attn(l, h) == kind));
    let quad = has(crate::model::AttnKind::Quad);
    // RSAttn's reciprocal rows and weighted rows ([`rs_after_v`])
    let rs = has(crate::model::AttnKind::ReluSoftmax);
    let stage_b =
        b.ktv + b.x + 2 * b.y + b.z + g * q * n + norm_scratch_len(g, q, n, quad) + hd + rs as usize * g * q * (hd + 1);
    // x's rows, the projection, LayerNorm 1, the MLP
    let stage_c = 4 * r * d + ln + 4 * r * m + 2 * r * m.max(d);
    let last = 2 * d + LnSpec::new(1, d).scratch_len() + 2 * a.classes;
    // the embedding's output and input rows
    let embed = r * (d + a.patch_len());
    ScratchParts {
        resid: super::held::resid_len(a, role, layout),
        qkv: super::held::qkv_len(a, role),
        att: att_len(a, role),
        stage: stage_a.max(stage_b).max(stage_c).max(last).max(embed),
    }
}
