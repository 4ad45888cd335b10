//! The secure model's weights: their ids, each party's view, and the host's
//! fixed-point encodings with the folds.

use crate::FixedPoint;
use crate::ProtocolError;
use crate::model::{Arch, AttnKind, ModelView, Tensor};

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
    let (d, hd, n, c) = (a.dim, a.head_dim(), a.tokens(), a.classes);
    let qscale = 1.0 / libm::sqrt(hd as f64);
    // `q` columns of `qkv` carry the attention scale
    let qs = |j: usize| if j < d { qscale } else { 1.0 };
    // The tensors' byte ranges, looked up once each: `ModelView::get` finds
    // a tensor by walking the file's tensor list, per call.
    let found = core::cell::RefCell::new([(None::<Tensor>, &[][..]); 4]);
    let g = |t: Tensor, i: usize| -> f64 {
        let mut c = found.borrow_mut();
        let b = match c.iter().find(|e| e.0 == Some(t)) {
            Some(e) => e.1,
            None => {
                let b = m.tensor_bytes(t);
                c.rotate_right(1);
                c[0] = (Some(t), b);
                b
            }
        };
        b.get(4 * i..4 * i + 4)
            .and_then(|x| <[u8; 4]>::try_from(x).ok())
            .map_or(0.0, |x| f32::from_le_bytes(x) as f64)
    };
    // (scale of the encoding in multiples of f, the float value of word i)
    let (k, value): (u32, &dyn Fn(usize) -> f64) = match id {
        Wid::PatchW => (1, &|i| g(Tensor::PatchW, i)),
        Wid::PatchB => (2, &|i| g(Tensor::PatchB, i)),
        Wid::Cls => (1, &|i| g(Tensor::Cls, i)),
        Wid::Pos => (1, &|i| g(Tensor::Pos, i)),
        Wid::Qkv(l) => (1, &move |i| {
            let (r, j) = (i / (3 * d), i % (3 * d));
            g(Tensor::Ln0G(l), r) * g(Tensor::Qkv(l), i) * qs(j)
        }),
        Wid::QkvB(l) => (2, &move |j| {
            let v: f64 = (0..d)
                .map(|r| g(Tensor::Ln0B(l), r) * g(Tensor::Qkv(l), r * 3 * d + j))
                .sum();
            v * qs(j)
        }),
        Wid::Proj(l) => (1, &move |i| {
            let s = if m.attn(l, i / d / hd) == AttnKind::Scale {
                1.0 / n as f64
            } else {
                1.0
            };
            g(Tensor::ProjW(l), i) * s
        }),
        Wid::ProjB(l) => (3, &move |i| g(Tensor::ProjB(l), i)),
        Wid::Ln1G(l) => (1, &move |i| g(Tensor::Ln1G(l), i)),
        Wid::Ln1B(l) => (1, &move |i| g(Tensor::Ln1B(l), i)),
        Wid::Fc1(l) => (1, &move |i| g(Tensor::Fc1W(l), i)),
        Wid::Fc1B(l) => (2, &move |i| g(Tensor::Fc1B(l), i)),
        Wid::Fc2(l) => (1, &move |i| g(Tensor::Fc2W(l), i)),
        Wid::Fc2B(l) => (2, &move |i| g(Tensor::Fc2B(l), i)),
        Wid::Head => (1, &|i| g(Tensor::NormG, i / c) * g(Tensor::HeadW, i)),
        Wid::HeadB => (2, &|j| {
            g(Tensor::HeadB, j)
                + (0..d)
                    .map(|r| g(Tensor::NormB, r) * g(Tensor::HeadW, r * c + j))
                    .sum::<f64>()
        }),
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = fp.try_encode_at(value(i), k)?;
    }
    Ok(())
}

/// Log2 of the largest input magnitude a linear layer is checked for
/// ([`check_weight_range`]): the range the nonlinear protocols are stated
/// for (`MLP_RANGE_LOG2`, `[-32, 32)`); LayerNorm's normalised outputs,
/// which `qkv` and the head read with `gamma` folded in, stay within
/// `sqrt(dim)`, at most 32 for `dim <= 1024`. `fc2` reads GeLU's outputs,
/// below 58.5 ([`crate::ops::activation::gelu`]): one bit more.
pub const INPUT_RANGE_LOG2: u32 = 5;

/// Bytes of the width the host-weights linear layers run in and their
/// truncations lift from ([`crate::protocol::linear::LinearShape::width`]):
/// `2f + 16` bits rounded up to bytes (6 at `f = 16`), so an output at
/// `2f` may reach `2^13` (real) with a bit to spare for the bias. The
/// projection reads the attention output at `2f` (its output is at `3f`)
/// and runs in the whole ring.
pub fn linear_width(fp: FixedPoint) -> usize {
    (2 * fp.frac_bits() as usize + 16)
        .div_ceil(8)
        .min(crate::protocol::trunc::FULL)
}

/// Bytes of the width `qkv` and the head run in when their input is the
/// output of LayerNorm's last truncation (by [`crate::ops::layernorm::R_FRAC`]
/// bits) as the device holds it ([`crate::protocol::linear::Mask::Held`]):
/// the `64 - R_FRAC` bits in which the device's share comes from its seed
/// (5 bytes), when they leave the outputs at `2f` at least `2^5` (real)
/// below the bias bit (`f <= 16`). `None` above: the layer sends its input
/// and runs in [`linear_width`].
pub fn held_width(fp: FixedPoint) -> Option<usize> {
    let w = (64 - crate::ops::layernorm::R_FRAC as usize) / 8;
    (8 * w as u32 - 3 >= 2 * fp.frac_bits() + INPUT_RANGE_LOG2).then_some(w)
}

/// LayerNorm's normalized rows have Euclidean norm `sqrt(d)` (`sum_j
/// ((x_j - mean) / sqrt(var + eps))^2 = d var / (var + eps) <= d`); the
/// secure LayerNorm's may exceed it by its inverse square root's error, far
/// below this factor.
const LN_NORM_MARGIN: f64 = 1.125;

/// The width (bytes) weight `id`'s layer runs in and the log2 of its input
/// range (at `f`); `None` for vectors. The projection runs in the whole
/// ring and is checked as before widths (its input counted at `f`, no bias
/// bound).
fn layer_range(id: Wid, fp: FixedPoint) -> Option<(usize, u32)> {
    match id {
        Wid::PatchW
        | Wid::PatchB
        | Wid::Qkv(_)
        | Wid::QkvB(_)
        | Wid::Fc1(_)
        | Wid::Fc1B(_)
        | Wid::Head
        | Wid::HeadB => Some((linear_width(fp), INPUT_RANGE_LOG2)),
        Wid::Fc2(_) | Wid::Fc2B(_) => Some((linear_width(fp), INPUT_RANGE_LOG2 + 1)),
        Wid::Proj(_) => Some((crate::protocol::trunc::FULL, INPUT_RANGE_LOG2)),
        _ => None,
    }
}

/// Checks that weight `id`'s encoding `w` (at `f`) keeps every output of
/// its linear layer inside the range the exact truncation after it reads,
/// `[-2^(W-2), 2^(W-2))` for the layer's width of `W` bits
/// ([`linear_width`]), for inputs up to `2^INPUT_RANGE_LOG2` in magnitude
/// (one bit more for `fc2`) at `f`: each output column's `sum |w|` (in
/// words) times the largest input (in words) stays below `2^(W-3)`, and
/// each bias word below `2^(W-3)` in magnitude. The projection (whole
/// ring) keeps the bound `2^62` without a bias bound. Embeddings and
/// vectors pass (their encoding is range-checked by
/// `FixedPoint::try_encode_at`).
/// A model that fails would leave the layer's ring in the products and
/// give garbage; it is refused when it is loaded.
pub fn check_weight_range(a: &Arch, fp: FixedPoint, id: Wid, w: &[u64]) -> Result<(), ProtocolError> {
    let Some((width, in_log2)) = layer_range(id, fp) else {
        return Ok(());
    };
    if w.len() != id.len(a) {
        return Err(ProtocolError::BadWeights);
    }
    let held = held_width(fp).filter(|_| matches!(id, Wid::Qkv(_) | Wid::QkvB(_) | Wid::Head | Wid::HeadB));
    // a bit of the range for the bias, except in the whole ring
    let top = match held {
        Some(hw) => 8 * hw as u32 - 3,
        None if width == crate::protocol::trunc::FULL => 62,
        None => 8 * width as u32 - 3,
    };
    if id.host_only() {
        // a bias
        let limit = 1u64 << top;
        return match w.iter().any(|&x| (x as i64).unsigned_abs() >= limit) {
            true => Err(ProtocolError::OutOfRange),
            false => Ok(()),
        };
    }
    if held.is_some() {
        return check_held_norms(a, fp, top, w);
    }
    let fan_in = match id {
        Wid::PatchW => a.patch_len(),
        Wid::Fc2(_) => a.mlp,
        _ => a.dim,
    };
    if fan_in == 0 {
        return Err(ProtocolError::BadWeights);
    }
    let cols = w.len() / fan_in;
    let limit = 1u128 << top.saturating_sub(in_log2 + fp.frac_bits());
    let mut sums = [0u128; 64];
    for chunk in (0..cols).step_by(sums.len()) {
        let width = sums.len().min(cols - chunk);
        sums.iter_mut().for_each(|s| *s = 0);
        for row in w.chunks_exact(cols) {
            for (s, &x) in sums.iter_mut().zip(row.iter().skip(chunk).take(width)) {
                *s += u128::from((x as i64).unsigned_abs());
            }
        }
        if sums.iter().any(|&s| s >= limit) {
            return Err(ProtocolError::OutOfRange);
        }
    }
    Ok(())
}

/// [`check_weight_range`] for the matrices of `qkv` and the head in the
/// held width ([`held_width`]): their input is a LayerNorm's normalized
/// row, of Euclidean norm at most `sqrt(d)` ([`LN_NORM_MARGIN`] over it),
/// so each output is at most `sqrt(d)` times its column's Euclidean norm
/// (Cauchy-Schwarz), which must stay below `2^top` at `2f`.
fn check_held_norms(a: &Arch, fp: FixedPoint, top: u32, w: &[u64]) -> Result<(), ProtocolError> {
    let top = libm::exp2(top as f64);
    let d = a.dim;
    let cols = w.len() / d.max(1);
    let scale = libm::sqrt(d as f64) * LN_NORM_MARGIN * libm::exp2(fp.frac_bits() as f64);
    for c in 0..cols {
        let sq: f64 = w
            .iter()
            .skip(c)
            .step_by(cols.max(1))
            .map(|&x| {
                let v = x as i64 as f64;
                v * v
            })
            .sum();
        if libm::sqrt(sq) * scale >= top {
            return Err(ProtocolError::OutOfRange);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// dim 8, MLP 80, 10 classes.
    fn small_arch() -> Arch {
        Arch {
            image: 28,
            channels: 1,
            patch: 7,
            dim: 8,
            layers: 1,
            heads: 2,
            mlp: 80,
            classes: 10,
        }
    }

    /// The column sums are compared with the limit exactly: one word more
    /// in any column fails, wherever the column lies.
    #[test]
    fn weight_range_bounds_each_output_column() {
        let a = small_arch();
        let fp = FixedPoint::new(16).expect("f");
        // fc1 runs in 6 bytes at f = 16
        assert_eq!(linear_width(fp), 6);
        let limit = 1u64 << (48 - 3 - INPUT_RANGE_LOG2 - 16);
        let (id, cols) = (Wid::Fc1(0), 80);
        for col in [0, 63, 64, 79] {
            let mut w = vec![0u64; id.len(&a)];
            // the column's sum at the limit less one: spread over its rows,
            // negative words counted by magnitude
            w[col] = limit / 2;
            w[cols + col] = (-((limit / 2 - 1) as i64)) as u64;
            assert_eq!(check_weight_range(&a, fp, id, &w), Ok(()), "column {col}");
            w[2 * cols + col] = 1;
            assert_eq!(
                check_weight_range(&a, fp, id, &w),
                Err(ProtocolError::OutOfRange),
                "column {col}"
            );
        }
        // the projection runs in the whole ring
        let proj = 1u64 << (62 - INPUT_RANGE_LOG2 - 16);
        let mut w = vec![0u64; Wid::Proj(0).len(&a)];
        w[3] = proj - 1;
        assert_eq!(check_weight_range(&a, fp, Wid::Proj(0), &w), Ok(()));
        w[8 + 3] = 1;
        assert_eq!(
            check_weight_range(&a, fp, Wid::Proj(0), &w),
            Err(ProtocolError::OutOfRange)
        );
        // a bias word below 2^(W-3) passes, one at it fails
        let mut b = vec![(-((1i64 << 45) - 1)) as u64; 80];
        assert_eq!(check_weight_range(&a, fp, Wid::Fc1B(0), &b), Ok(()));
        b[79] = 1 << 45;
        assert_eq!(
            check_weight_range(&a, fp, Wid::Fc1B(0), &b),
            Err(ProtocolError::OutOfRange)
        );
        // vectors pass whatever their words
        assert_eq!(check_weight_range(&a, fp, Wid::Ln1B(0), &[u64::MAX / 2; 8]), Ok(()));
    }

    /// `qkv` and the head in the held width are bounded by their columns'
    /// Euclidean norms times `sqrt(d)`: two entries of 0.7 of the limit
    /// pass (their absolute sum, 1.4, would not), 0.75 each fails.
    #[test]
    fn held_range_bounds_each_column_norm() {
        let a = small_arch();
        let fp = FixedPoint::new(16).expect("f");
        assert_eq!(held_width(fp), Some(5));
        assert_eq!(held_width(FixedPoint::new(17).expect("f")), None);
        let lim = libm::exp2(37.0) / (libm::sqrt(8.0) * LN_NORM_MARGIN * libm::exp2(16.0));
        let cols = 24;
        for col in [0, 5, 23] {
            let mut w = vec![0u64; Wid::Qkv(0).len(&a)];
            w[col] = (0.7 * lim) as i64 as u64;
            w[3 * cols + col] = (-0.7 * lim) as i64 as u64;
            assert_eq!(check_weight_range(&a, fp, Wid::Qkv(0), &w), Ok(()), "column {col}");
            w[col] = (0.75 * lim) as i64 as u64;
            w[3 * cols + col] = (0.75 * lim) as i64 as u64;
            assert_eq!(
                check_weight_range(&a, fp, Wid::Qkv(0), &w),
                Err(ProtocolError::OutOfRange),
                "column {col}"
            );
        }
        let mut b = vec![(1u64 << 37) - 1; 10];
        assert_eq!(check_weight_range(&a, fp, Wid::HeadB, &b), Ok(()));
        b[9] = 1 << 37;
        assert_eq!(
            check_weight_range(&a, fp, Wid::HeadB, &b),
            Err(ProtocolError::OutOfRange)
        );
    }

    /// Every weight has its own mask stream: two tensors sharing one would
    /// give the device the difference of their weights from its blob.
    #[test]
    fn mask_ids_are_distinct_over_all_weight_ids() {
        let a = Arch {
            image: 32,
            channels: 3,
            patch: 4,
            dim: 256,
            layers: 7,
            heads: 4,
            mlp: 512,
            classes: 10,
        };
        let ids: std::vec::Vec<u64> = Wid::all(&a).map(Wid::mask_id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "two weights share a mask stream");
    }
}
