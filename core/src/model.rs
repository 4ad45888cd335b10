//! The model file format (version 1; `spec/model.md`) and the architecture.
//!
//! A model file holds the architecture, the per-head attention kinds, the
//! per-layer per-token MPCViT+ flags, the fixed-point precision, and the float
//! weights, followed by a CRC-32. [`ModelView::parse`] checks every field once
//! at the boundary (magic, version, sizes, shape consistency, checksum) and
//! then hands out tensors as borrowed little-endian `f32` bytes, so a model in
//! flash is used in place.

use core::fmt;

/// File magic.
pub const MAGIC: [u8; 8] = *b"MPCVITMD";
/// Format version.
pub const VERSION: u16 = 1;
/// Fixed header length (before the kinds and flags).
pub const FIXED_HEADER: usize = 32;

/// Largest accepted dimensions (so sizes cannot overflow on 32-bit MCUs).
pub const MAX_DIM: usize = 4096;
/// Largest accepted number of layers.
pub const MAX_LAYERS: usize = 64;
/// Largest accepted number of heads.
pub const MAX_HEADS: usize = 64;

/// Fashion-MNIST normalisation (mean, std of the training pixels in
/// [0, 1]): the statistics every model of this project trained on it uses,
/// and the device's input encoding on desktop and firmware.
pub const FMNIST_MEAN: [f32; 1] = [0.2860];
/// See [`FMNIST_MEAN`].
pub const FMNIST_STD: [f32; 1] = [0.3530];
/// CIFAR-10 per-channel normalisation (mean, std), as the official MPCViT
/// code uses it.
pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// See [`CIFAR_MEAN`].
pub const CIFAR_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// The attention of one head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum AttnKind {
    /// `softmax(A)`.
    Softmax = 0,
    /// `relu(A) / (sum relu(A) + 1e-5)` (MPCViT's RSAttn).
    ReluSoftmax = 1,
    /// `A / N` (ScaleAttn).
    Scale = 2,
    /// `(A + c)^2 / sum (A + c)^2` (MPCFormer's 2Quad, c = 5).
    Quad = 3,
}

impl AttnKind {
    /// From the file byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Softmax,
            1 => Self::ReluSoftmax,
            2 => Self::Scale,
            3 => Self::Quad,
            _ => return None,
        })
    }
}

/// A model file that cannot be used.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ModelError {
    /// Shorter than its header says.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// Longer than its header says (trailing bytes).
    TrailingBytes,
    /// Not a model file.
    BadMagic,
    /// A version this build does not read.
    BadVersion(u16),
    /// The checksum does not match (corrupt file).
    BadChecksum,
    /// An architecture field is zero, too large or inconsistent.
    BadArch(&'static str),
    /// An attention kind byte is unknown.
    BadAttnKind(u8),
    /// An MPCViT+ flag byte is not 0 or 1.
    BadFlag(u8),
    /// A weight is NaN or infinite.
    NonFinite,
    /// The output buffer is too small.
    BufferTooSmall,
}

/// A [`ModelError`] worded for the kind of file that raised it
/// ([`ModelError::in_file`]).
pub struct InFile(ModelError, &'static str);

impl ModelError {
    /// The error worded for `kind` of file (`"provisioning blob"`,
    /// `"plan"`): the blob and plan parsers share the model file's errors.
    pub fn in_file(self, kind: &'static str) -> InFile {
        InFile(self, kind)
    }
}

impl fmt::Display for InFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.1;
        match self.0 {
            ModelError::Truncated { need, got } => write!(f, "{kind} truncated: {got} bytes, need {need}"),
            ModelError::TrailingBytes => write!(f, "{kind} has trailing bytes"),
            ModelError::BadMagic => write!(f, "not an mpcvit {kind} (bad magic)"),
            ModelError::BadVersion(v) => write!(f, "unsupported {kind} format version {v}"),
            ModelError::BadChecksum => write!(f, "{kind} checksum mismatch (corrupt file)"),
            e => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { need, got } => write!(f, "model file truncated: {got} bytes, need {need}"),
            Self::TrailingBytes => f.write_str("model file has trailing bytes"),
            Self::BadMagic => f.write_str("not an mpcvit model file (bad magic)"),
            Self::BadVersion(v) => write!(f, "unsupported model format version {v}"),
            Self::BadChecksum => f.write_str("model file checksum mismatch (corrupt file)"),
            Self::BadArch(what) => write!(f, "bad architecture: {what}"),
            Self::BadAttnKind(b) => write!(f, "unknown attention kind {b}"),
            Self::BadFlag(b) => write!(f, "bad MPCViT+ flag {b}"),
            Self::NonFinite => f.write_str("model weight is NaN or infinite"),
            Self::BufferTooSmall => f.write_str("buffer too small for the model"),
        }
    }
}

impl core::error::Error for ModelError {}

/// The architecture of a ViT-Lite / MPCViT model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Arch {
    /// Image side (square images).
    pub image: usize,
    /// Input channels.
    pub channels: usize,
    /// Patch side (conv kernel = stride).
    pub patch: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// MLP hidden width.
    pub mlp: usize,
    /// Classes.
    pub classes: usize,
}

/// Which tensor, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tensor {
    /// Patch embedding weight `[patch*patch*channels, dim]` (input index
    /// `(c * patch + ky) * patch + kx`).
    PatchW,
    /// Patch embedding bias `[dim]`.
    PatchB,
    /// Class token `[dim]`.
    Cls,
    /// Positional embedding `[tokens, dim]`.
    Pos,
    /// Layer `l` pre-attention LayerNorm scale `[dim]`.
    Ln0G(usize),
    /// ... and shift.
    Ln0B(usize),
    /// Layer `l` qkv weight `[dim, 3 dim]` (columns q | k | v, head-major).
    Qkv(usize),
    /// Layer `l` attention projection weight `[dim, dim]`.
    ProjW(usize),
    /// ... and bias `[dim]`.
    ProjB(usize),
    /// Layer `l` post-attention LayerNorm scale `[dim]`.
    Ln1G(usize),
    /// ... and shift.
    Ln1B(usize),
    /// Layer `l` MLP first weight `[dim, mlp]`.
    Fc1W(usize),
    /// ... bias `[mlp]`.
    Fc1B(usize),
    /// Layer `l` MLP second weight `[mlp, dim]`.
    Fc2W(usize),
    /// ... bias `[dim]`.
    Fc2B(usize),
    /// Final LayerNorm scale `[dim]`.
    NormG,
    /// ... shift.
    NormB,
    /// Head weight `[dim, classes]`.
    HeadW,
    /// ... bias `[classes]`.
    HeadB,
}

const PER_LAYER: usize = 11;

impl Arch {
    /// Tokens: patches plus the class token.
    pub fn tokens(&self) -> usize {
        let g = self.image / self.patch.max(1);
        g * g + 1
    }

    /// Patch vector length.
    pub fn patch_len(&self) -> usize {
        self.patch * self.patch * self.channels
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads.max(1)
    }

    /// Checks ranges and consistency.
    pub fn check(&self) -> Result<(), ModelError> {
        let nz = |v: usize, max: usize, what| {
            if v == 0 || v > max {
                Err(ModelError::BadArch(what))
            } else {
                Ok(())
            }
        };
        nz(self.image, 1024, "image size")?;
        nz(self.channels, 4, "channels")?;
        nz(self.patch, 64, "patch")?;
        nz(self.dim, MAX_DIM, "dim")?;
        nz(self.layers, MAX_LAYERS, "layers")?;
        nz(self.heads, MAX_HEADS, "heads")?;
        nz(self.mlp, MAX_DIM, "mlp")?;
        nz(self.classes, MAX_DIM, "classes")?;
        if !self.image.is_multiple_of(self.patch) {
            return Err(ModelError::BadArch("image size not a multiple of patch"));
        }
        if !self.dim.is_multiple_of(self.heads) {
            return Err(ModelError::BadArch("dim not a multiple of heads"));
        }
        if self.tokens() > 4097 {
            return Err(ModelError::BadArch("too many tokens"));
        }
        Ok(())
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        4 + PER_LAYER * self.layers + 4
    }

    /// The `i`-th tensor in file order.
    pub fn tensor_at(&self, i: usize) -> Option<Tensor> {
        let l = self.layers;
        Some(match i {
            0 => Tensor::PatchW,
            1 => Tensor::PatchB,
            2 => Tensor::Cls,
            3 => Tensor::Pos,
            i if i < 4 + PER_LAYER * l => {
                let (layer, k) = ((i - 4) / PER_LAYER, (i - 4) % PER_LAYER);
                [
                    Tensor::Ln0G,
                    Tensor::Ln0B,
                    Tensor::Qkv,
                    Tensor::ProjW,
                    Tensor::ProjB,
                    Tensor::Ln1G,
                    Tensor::Ln1B,
                    Tensor::Fc1W,
                    Tensor::Fc1B,
                    Tensor::Fc2W,
                    Tensor::Fc2B,
                ]
                .get(k)?(layer)
            }
            i => [Tensor::NormG, Tensor::NormB, Tensor::HeadW, Tensor::HeadB]
                .get(i - 4 - PER_LAYER * l)
                .copied()?,
        })
    }

    /// Shape `(rows, cols)` of a tensor (vectors are `(1, n)`).
    pub fn shape(&self, t: Tensor) -> (usize, usize) {
        let (d, m) = (self.dim, self.mlp);
        match t {
            Tensor::PatchW => (self.patch_len(), d),
            Tensor::Pos => (self.tokens(), d),
            Tensor::Qkv(_) => (d, 3 * d),
            Tensor::ProjW(_) => (d, d),
            Tensor::Fc1W(_) => (d, m),
            Tensor::Fc1B(_) => (1, m),
            Tensor::Fc2W(_) => (m, d),
            Tensor::HeadW => (d, self.classes),
            Tensor::HeadB => (1, self.classes),
            _ => (1, d),
        }
    }

    /// Elements of a tensor.
    pub fn len(&self, t: Tensor) -> usize {
        let (r, c) = self.shape(t);
        r * c
    }

    /// Total number of weights.
    pub fn weights(&self) -> usize {
        (0..self.tensor_count())
            .filter_map(|i| self.tensor_at(i))
            .map(|t| self.len(t))
            .sum()
    }

    /// Offset (in `f32` elements) of a tensor in the weight area.
    pub fn offset(&self, t: Tensor) -> usize {
        let mut off = 0;
        for i in 0..self.tensor_count() {
            match self.tensor_at(i) {
                Some(x) if x == t => return off,
                Some(x) => off += self.len(x),
                None => break,
            }
        }
        off
    }

    /// Length of the header: fixed part, kinds, flags, padded to 4 bytes.
    pub fn header_len(&self) -> usize {
        (FIXED_HEADER + self.layers * self.heads + self.layers * self.tokens()).next_multiple_of(4)
    }

    /// Length of the whole file.
    pub fn file_len(&self) -> usize {
        self.header_len() + 4 * self.weights() + 4
    }
}

/// `f32` from 4 little-endian bytes (0.0 if short; callers pass 4).
fn f32_le(c: &[u8]) -> f32 {
    f32::from_bits(rd32(c, 0))
}

fn rd16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

fn rd32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// A checked model file, borrowed.
#[derive(Clone, Copy)]
pub struct ModelView<'a> {
    bytes: &'a [u8],
    arch: Arch,
    frac_bits: u32,
}

impl fmt::Debug for ModelView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelView")
            .field("arch", &self.arch)
            .field("frac_bits", &self.frac_bits)
            .finish()
    }
}

impl<'a> ModelView<'a> {
    /// Checks a whole model file.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        if bytes.len() < FIXED_HEADER {
            return Err(ModelError::Truncated {
                need: FIXED_HEADER,
                got: bytes.len(),
            });
        }
        if bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(ModelError::BadMagic);
        }
        let version = rd16(bytes, 8);
        if version != VERSION {
            return Err(ModelError::BadVersion(version));
        }
        let b = |i: usize| bytes.get(i).copied().unwrap_or(0) as usize;
        let arch = Arch {
            image: rd16(bytes, 14) as usize,
            channels: b(13),
            patch: b(16),
            dim: rd16(bytes, 20) as usize,
            layers: b(17),
            heads: b(18),
            mlp: rd16(bytes, 22) as usize,
            classes: rd16(bytes, 24) as usize,
        };
        arch.check()?;
        let frac_bits = b(12) as u32;
        if !(1..=crate::ring::MAX_FRAC_BITS).contains(&frac_bits) {
            return Err(ModelError::BadArch("fractional bits"));
        }
        if rd16(bytes, 10) as usize != arch.header_len() {
            return Err(ModelError::BadArch("header length"));
        }
        if rd16(bytes, 26) as usize != arch.tokens() {
            return Err(ModelError::BadArch("token count"));
        }
        if rd32(bytes, 28) as usize != arch.weights() {
            return Err(ModelError::BadArch("weight count"));
        }
        let need = arch.file_len();
        if bytes.len() < need {
            return Err(ModelError::Truncated { need, got: bytes.len() });
        }
        if bytes.len() > need {
            return Err(ModelError::TrailingBytes);
        }
        let (body, crc) = bytes.split_at(need - 4);
        if crate::checksum::crc32(body) != rd32(crc, 0) {
            return Err(ModelError::BadChecksum);
        }
        let view = Self { bytes, arch, frac_bits };
        for i in 0..arch.layers * arch.heads {
            let k = b(FIXED_HEADER + i);
            AttnKind::from_u8(k as u8).ok_or(ModelError::BadAttnKind(k as u8))?;
        }
        let flags = FIXED_HEADER + arch.layers * arch.heads;
        for i in 0..arch.layers * arch.tokens() {
            let f = b(flags + i);
            if f > 1 {
                return Err(ModelError::BadFlag(f as u8));
            }
        }
        let w = bytes.get(arch.header_len()..need - 4).unwrap_or(&[]);
        if w.chunks_exact(4).any(|c| !f32_le(c).is_finite()) {
            return Err(ModelError::NonFinite);
        }
        Ok(view)
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Fractional bits the model is meant to run with.
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// Attention kind of `(layer, head)`.
    pub fn attn(&self, layer: usize, head: usize) -> AttnKind {
        let i = FIXED_HEADER + layer * self.arch.heads + head;
        self.bytes
            .get(i)
            .and_then(|&b| AttnKind::from_u8(b))
            .unwrap_or(AttnKind::Softmax)
    }

    /// MPCViT+ flag of `(layer, token)`: `true` = GeLU (beta = 1), `false`
    /// = linearized (beta = 0).
    pub fn gelu(&self, layer: usize, token: usize) -> bool {
        let i = FIXED_HEADER + self.arch.layers * self.arch.heads + layer * self.arch.tokens() + token;
        self.bytes.get(i).is_none_or(|&b| b == 1)
    }

    /// A tensor as little-endian `f32` bytes.
    pub fn tensor_bytes(&self, t: Tensor) -> &'a [u8] {
        let start = self.arch.header_len() + 4 * self.arch.offset(t);
        self.bytes.get(start..start + 4 * self.arch.len(t)).unwrap_or(&[])
    }

    /// Iterator over a tensor's elements.
    pub fn iter(&self, t: Tensor) -> impl Iterator<Item = f32> + 'a {
        self.tensor_bytes(t).chunks_exact(4).map(f32_le)
    }
}

/// The public per-head and per-token choices of a model: what every party
/// needs besides the architecture (the host from the model file, the device
/// from its provisioning blob, the dealer from the session set-up).
pub trait Layout {
    /// Attention kind of `(layer, head)`.
    fn attn(&self, layer: usize, head: usize) -> AttnKind;
    /// MPCViT+ flag of `(layer, token)`: `true` = GeLU, `false` = linearized.
    fn gelu(&self, layer: usize, token: usize) -> bool;
}

/// The layout of the paper's models for sizing buffers without a model at
/// hand: every token goes through GeLU (no MPCViT+ linearized token);
/// every head reads as Softmax.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllGelu;

impl Layout for AllGelu {
    fn attn(&self, _layer: usize, _head: usize) -> AttnKind {
        AttnKind::Softmax
    }

    fn gelu(&self, _layer: usize, _token: usize) -> bool {
        true
    }
}

impl Layout for ModelView<'_> {
    fn attn(&self, layer: usize, head: usize) -> AttnKind {
        ModelView::attn(self, layer, head)
    }

    fn gelu(&self, layer: usize, token: usize) -> bool {
        ModelView::gelu(self, layer, token)
    }
}

/// Writes a model file into `out`; `weights` yields all tensors in file
/// order, `kind(l, h)` and `gelu(l, t)` the per-head kinds and per-token flags.
pub fn encode(
    arch: &Arch,
    frac_bits: u32,
    kind: impl Fn(usize, usize) -> AttnKind,
    gelu: impl Fn(usize, usize) -> bool,
    weights: impl Iterator<Item = f32>,
    out: &mut [u8],
) -> Result<usize, ModelError> {
    arch.check()?;
    let len = arch.file_len();
    let out = out.get_mut(..len).ok_or(ModelError::BufferTooSmall)?;
    out.fill(0);
    let mut put = |at: usize, b: &[u8]| {
        if let Some(d) = out.get_mut(at..at + b.len()) {
            d.copy_from_slice(b);
        }
    };
    put(0, &MAGIC);
    put(8, &VERSION.to_le_bytes());
    put(10, &(arch.header_len() as u16).to_le_bytes());
    put(12, &[frac_bits as u8, arch.channels as u8]);
    put(14, &(arch.image as u16).to_le_bytes());
    put(16, &[arch.patch as u8, arch.layers as u8, arch.heads as u8, 0]);
    put(20, &(arch.dim as u16).to_le_bytes());
    put(22, &(arch.mlp as u16).to_le_bytes());
    put(24, &(arch.classes as u16).to_le_bytes());
    put(26, &(arch.tokens() as u16).to_le_bytes());
    put(28, &(arch.weights() as u32).to_le_bytes());
    for l in 0..arch.layers {
        for h in 0..arch.heads {
            put(FIXED_HEADER + l * arch.heads + h, &[kind(l, h) as u8]);
        }
        for t in 0..arch.tokens() {
            put(
                FIXED_HEADER + arch.layers * arch.heads + l * arch.tokens() + t,
                &[gelu(l, t) as u8],
            );
        }
    }
    let mut n = 0;
    for (i, w) in weights.take(arch.weights()).enumerate() {
        if !w.is_finite() {
            return Err(ModelError::NonFinite);
        }
        put(arch.header_len() + 4 * i, &w.to_le_bytes());
        n += 1;
    }
    if n != arch.weights() {
        return Err(ModelError::Truncated {
            need: arch.weights(),
            got: n,
        });
    }
    let (body, tail) = out.split_at_mut(len - 4);
    tail.copy_from_slice(&crate::checksum::crc32(body).to_le_bytes());
    Ok(len)
}
