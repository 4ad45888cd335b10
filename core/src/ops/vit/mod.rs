//! The secure MPCViT forward pass, written once over [`Party`](crate::ops::Party).
//!
//! Layout: tokens are `n x d` row-major (token 0 is the class token); `qkv`
//! is `n x 3d` with `q | k | v` column blocks, head `h` at columns
//! `h hd .. (h+1) hd` of each block (the official `reshape(B, N, 3, H, hd)`).
//!
//! Per layer (all heads in the same protocol steps, so a layer costs the
//! rounds of its most expensive head):
//! 1. LayerNorm 0 without its affine part (folded into `qkv`): 10 rounds.
//! 2. `qkv` linear with truncation: 1.
//! 3. One flight of matrix products: `Q_h K_h^T` for Softmax / RSAttn /
//!    2Quad heads, `K_h^T V_h` for ScaleAttn heads (associative form,
//!    `O(n hd^2)`): 1. The scores go on untruncated: the exp lookup and
//!    the comparison drop their `f` extra bits in their openings (`pre`);
//!    the ScaleAttn heads' `K^T V` is truncated in the RSAttn comparison's
//!    first flight ([`Party::trunc_cmp`](crate::ops::Party::trunc_cmp)): 0
//!    in a group with an RSAttn head, else 1 (none without ScaleAttn heads).
//!    A group with a 2Quad head truncates all of them: 1. With more than
//!    one query flight, `K^T V` is the sum of two key chunks' products
//!    ([`ktv_chunk`]), the first in a flight of its own: 1 more.
//! 4. Row normalization of the non-Scale heads ([`normalize_heads`]): 10 for
//!    Softmax heads (exp lookup 1, reciprocal 7, product 1, truncation 1),
//!    11 for RSAttn heads (the comparison takes 2); the reciprocal of every
//!    row of every head is one batch. A layer mixing Softmax and RSAttn pays
//!    both elementwise steps in sequence (12); 2Quad adds 2. At `f <= 16`
//!    ([`rs_after_v`]) RSAttn heads stop after the reciprocal: their
//!    product and truncation come after step 5, on `hd` columns instead
//!    of `n`.
//! 5. One flight of products: `P_h V_h` (RSAttn at `f <= 16`: `e_h V_h`
//!    with `e = ReLU(scores)`, then times the rows' reciprocals (1) and
//!    truncated (1); 2 more in a group that also has a Softmax or 2Quad
//!    head), and `Q_h (K^T V)_h` for ScaleAttn heads (their `1/N` is
//!    folded into the projection's rows): 1.
//! 6. Projection with truncation by `2f`, residual: 1.
//! 7. LayerNorm 1 with its learned scale (host-private, [`Party::scale_trunc`](crate::ops::Party::scale_trunc))
//!    and shift: 10.
//! 8. `fc1`, untruncated when every token of the flight is a GeLU token
//!    (GeLU's comparison opens it with `pre = f`; the device's linear
//!    message and its opening share a flight), else with truncation: 1;
//!    GeLU on the GeLU tokens (comparison 2, tail lookup 1): 3 (2 after
//!    an untruncated `fc1`);
//!    `fc2` with truncation: 1; precise ReLU on the MPCViT+ linearized
//!    tokens: 2; residual.
//!
//! The last layer computes the class token only from step 3 on (its
//! queries, then its row), all the head reads; every token is a key.
//!
//! Final LayerNorm on the class token (affine folded into the head), head,
//! and the logits are revealed to the device only.
//!
//! Host weights are fixed-point encodings of the float weights with these
//! folds ([`encode_weight`]); the device holds `W - B` for every weight the
//! host keeps private, the dealer the masks `B`.

mod attention;
mod forward;
mod held;
mod mlp;
mod spec;
mod weights;

pub use attention::normalize_heads;
pub use forward::{Patches, Pixels, forward};
pub use held::{qkv_len, resid_len};
pub use spec::{
    EXP_CAP, MLP_RANGE_LOG2, ROW_FRAC, RS_INV_FRAC, SCORE_RANGE_LOG2, ScoreExp, ScratchParts, Tile, VitSpec, att_len,
    check_frac_bits, ktv_chunk, norm_scratch_len, row_recip, row_trunc, rs_after_v, rs_recip_after_v, score_exp,
    scratch_len, scratch_parts,
};
pub use weights::{
    INPUT_RANGE_LOG2, Weights, Wid, check_weight_range, check_weights, encode_weight, held_width, linear_width,
};
