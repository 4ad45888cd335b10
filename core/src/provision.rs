//! The device's provisioning blob (version 3; `spec/provision.md`): the
//! architecture, the per-head attention kinds and per-token MPCViT+ flags,
//! and the masked weights `W - B` of every host-private weight of one model,
//! in [`Wid::all`] order (host-only constants skipped), bound to the model
//! file by its CRC. The device keeps it in flash and reads it in place. The
//! same layout without the words is the dealer's *plan*.

use crate::checksum::crc32;
use crate::model::{Arch, AttnKind, Layout, ModelError};
use crate::ops::vit::Wid;

/// Blob magic.
pub const MAGIC: [u8; 8] = *b"MPCVITPV";
/// Plan magic (a blob without words, for the dealer).
pub const PLAN_MAGIC: [u8; 8] = *b"MPCVITPN";
/// Blob version.
pub const VERSION: u16 = 3;
/// Header length.
pub const HEADER: usize = 40;

fn le16(v: usize) -> [u8; 2] {
    (v as u16).to_le_bytes()
}

fn rd(b: &[u8], at: usize, n: usize) -> u64 {
    let mut a = [0u8; 8];
    if let (Some(d), Some(s)) = (a.get_mut(..n), b.get(at..at + n)) {
        d.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Words of the blob for `arch`.
pub fn words(arch: &Arch) -> usize {
    Wid::all(arch).filter(|w| !w.host_only()).map(|w| w.len(arch)).sum()
}

/// Length of the layout section: one attention kind per `(layer, head)`,
/// then one MPCViT+ flag per `(layer, token)`, then zero bytes up to a
/// multiple of 8 (so the words are 8-byte aligned when the blob is).
pub fn layout_len(arch: &Arch) -> usize {
    (arch.layers * arch.heads + arch.layers * arch.tokens()).div_ceil(8) * 8
}

/// Length of the blob for `arch`.
pub fn blob_len(arch: &Arch) -> usize {
    HEADER + layout_len(arch) + 8 * words(arch) + 4
}

/// Length of the plan (the blob without the words) for `arch`.
pub fn plan_len(arch: &Arch) -> usize {
    HEADER + layout_len(arch) + 4
}

/// Writes a blob: `masked` yields the device's words in order, `key_check`
/// is [`crate::session::key_check`] of the masks' seed.
pub fn encode(
    arch: &Arch,
    frac_bits: u32,
    (model_crc, key_check): (u32, u32),
    layout: &dyn Layout,
    masked: impl Iterator<Item = u64>,
    out: &mut [u8],
) -> Result<usize, ModelError> {
    encode_inner(
        &MAGIC,
        arch,
        frac_bits,
        (model_crc, key_check),
        layout,
        Some(masked),
        out,
    )
}

/// Writes a plan: the blob's header and layout without the words, what the
/// dealer needs to follow a session (it learns the architecture, which is
/// public, and nothing of the weights).
pub fn encode_plan(
    arch: &Arch,
    frac_bits: u32,
    model_crc: u32,
    layout: &dyn Layout,
    out: &mut [u8],
) -> Result<usize, ModelError> {
    encode_inner(
        &PLAN_MAGIC,
        arch,
        frac_bits,
        (model_crc, 0),
        layout,
        None::<core::iter::Empty<u64>>,
        out,
    )
}

fn encode_inner(
    magic: &[u8; 8],
    arch: &Arch,
    frac_bits: u32,
    (model_crc, key_check): (u32, u32),
    layout: &dyn Layout,
    masked: Option<impl Iterator<Item = u64>>,
    out: &mut [u8],
) -> Result<usize, ModelError> {
    arch.check()?;
    let nw = if masked.is_some() { words(arch) } else { 0 };
    let ll = layout_len(arch);
    let len = HEADER + ll + 8 * nw + 4;
    let out = out.get_mut(..len).ok_or(ModelError::BufferTooSmall)?;
    out.fill(0);
    let header: [&[u8]; 12] = [
        magic,
        &VERSION.to_le_bytes(),
        &[frac_bits as u8, arch.channels as u8],
        &le16(arch.image),
        &[arch.patch as u8, arch.layers as u8, arch.heads as u8, 0],
        &le16(arch.dim),
        &le16(arch.mlp),
        &le16(arch.classes),
        &model_crc.to_le_bytes(),
        &(nw as u32).to_le_bytes(),
        &(ll as u32).to_le_bytes(),
        &key_check.to_le_bytes(),
    ];
    let mut pos = 0;
    for part in header {
        if let Some(d) = out.get_mut(pos..pos + part.len()) {
            d.copy_from_slice(part);
        }
        pos += part.len();
    }
    let t = arch.tokens();
    for l in 0..arch.layers {
        for h in 0..arch.heads {
            if let Some(b) = out.get_mut(HEADER + l * arch.heads + h) {
                *b = layout.attn(l, h) as u8;
            }
        }
        for k in 0..t {
            if let Some(b) = out.get_mut(HEADER + arch.layers * arch.heads + l * t + k) {
                *b = u8::from(layout.gelu(l, k));
            }
        }
    }
    if let Some(masked) = masked {
        let at = HEADER + ll;
        let mut n = 0;
        for (w, chunk) in masked.zip(out.get_mut(at..len - 4).unwrap_or(&mut []).chunks_exact_mut(8)) {
            chunk.copy_from_slice(&w.to_le_bytes());
            n += 1;
        }
        if n != nw {
            return Err(ModelError::Truncated { need: nw, got: n });
        }
    }
    let (body, tail) = out.split_at_mut(len - 4);
    tail.copy_from_slice(&crc32(body).to_le_bytes());
    Ok(len)
}

/// A checked blob (or plan), borrowed.
#[derive(Clone, Copy, Debug)]
pub struct BlobView<'a> {
    bytes: &'a [u8],
    arch: Arch,
    frac_bits: u32,
    model_crc: u32,
}

impl<'a> BlobView<'a> {
    /// Checks a whole blob.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        Self::parse_inner(bytes, &MAGIC)
    }

    /// Checks a whole plan (a blob without words, see [`encode_plan`]);
    /// [`BlobView::words`] of a plan are empty.
    pub fn parse_plan(bytes: &'a [u8]) -> Result<Self, ModelError> {
        Self::parse_inner(bytes, &PLAN_MAGIC)
    }

    fn parse_inner(bytes: &'a [u8], magic: &[u8; 8]) -> Result<Self, ModelError> {
        if bytes.len() < HEADER + 4 {
            return Err(ModelError::Truncated {
                need: HEADER + 4,
                got: bytes.len(),
            });
        }
        if bytes.get(..8) != Some(&magic[..]) {
            return Err(ModelError::BadMagic);
        }
        let version = rd(bytes, 8, 2) as u16;
        if version != VERSION {
            return Err(ModelError::BadVersion(version));
        }
        let arch = Arch {
            image: rd(bytes, 12, 2) as usize,
            channels: rd(bytes, 11, 1) as usize,
            patch: rd(bytes, 14, 1) as usize,
            dim: rd(bytes, 18, 2) as usize,
            layers: rd(bytes, 15, 1) as usize,
            heads: rd(bytes, 16, 1) as usize,
            mlp: rd(bytes, 20, 2) as usize,
            classes: rd(bytes, 22, 2) as usize,
        };
        arch.check()?;
        let frac_bits = rd(bytes, 10, 1) as u32;
        if !(1..=crate::ring::MAX_FRAC_BITS).contains(&frac_bits) {
            return Err(ModelError::BadArch("fractional bits"));
        }
        let nw = if *magic == MAGIC { words(&arch) } else { 0 };
        if rd(bytes, 28, 4) as usize != nw {
            return Err(ModelError::BadArch("word count"));
        }
        let ll = layout_len(&arch);
        if rd(bytes, 32, 4) as usize != ll {
            return Err(ModelError::BadArch("layout length"));
        }
        let need = HEADER + ll + 8 * nw + 4;
        if bytes.len() < need {
            return Err(ModelError::Truncated { need, got: bytes.len() });
        }
        if bytes.len() > need {
            return Err(ModelError::TrailingBytes);
        }
        let (body, crc) = bytes.split_at(need - 4);
        if crc32(body) != rd(crc, 0, 4) as u32 {
            return Err(ModelError::BadChecksum);
        }
        let kinds = bytes.get(HEADER..HEADER + arch.layers * arch.heads).unwrap_or(&[]);
        if let Some(&k) = kinds.iter().find(|&&k| AttnKind::from_u8(k).is_none()) {
            return Err(ModelError::BadAttnKind(k));
        }
        let used = arch.layers * arch.heads + arch.layers * arch.tokens();
        let flags = bytes
            .get(HEADER + arch.layers * arch.heads..HEADER + used)
            .unwrap_or(&[]);
        if let Some(&f) = flags.iter().find(|&&f| f > 1) {
            return Err(ModelError::BadFlag(f));
        }
        if bytes
            .get(HEADER + used..HEADER + ll)
            .is_some_and(|p| p.iter().any(|&b| b != 0))
        {
            return Err(ModelError::BadArch("layout padding"));
        }
        Ok(Self {
            bytes,
            arch,
            frac_bits,
            model_crc: rd(bytes, 24, 4) as u32,
        })
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Fractional bits.
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// CRC of the model file this blob was made from.
    pub fn model_crc(&self) -> u32 {
        self.model_crc
    }

    /// The key check of the masks (0 in a plan).
    pub fn key_check(&self) -> u32 {
        rd(self.bytes, 36, 4) as u32
    }

    /// The bytes of the layout section followed by the words (for a plan:
    /// the layout only).
    fn body(&self) -> &'a [u8] {
        self.bytes
            .get(HEADER..self.bytes.len().saturating_sub(4))
            .unwrap_or(&[])
    }

    /// Byte offset of the words in the blob (a multiple of 8).
    pub fn words_offset(&self) -> usize {
        HEADER + layout_len(&self.arch)
    }

    /// Which words (counted from [`BlobView::words_offset`]) hold `id`;
    /// `None` for host-only ids.
    pub fn word_range(&self, id: Wid) -> Option<core::ops::Range<usize>> {
        let mut off = 0;
        for w in Wid::all(&self.arch).filter(|w| !w.host_only()) {
            if w == id {
                return Some(off..off + w.len(&self.arch));
            }
            off += w.len(&self.arch);
        }
        None
    }

    /// The device's words of `id` (empty for host-only ids and for a plan).
    pub fn words(&self, id: Wid) -> impl Iterator<Item = u64> + 'a {
        let r = if *self.bytes.get(..8).unwrap_or(&[]) == MAGIC {
            self.word_range(id).unwrap_or(0..0)
        } else {
            0..0
        };
        let (start, len) = (r.start, r.len());
        let at = layout_len(&self.arch) + 8 * start;
        self.body()
            .get(at..at + 8 * len)
            .unwrap_or(&[])
            .chunks_exact(8)
            .map(crate::wire::word)
    }
}

impl Layout for BlobView<'_> {
    fn attn(&self, layer: usize, head: usize) -> AttnKind {
        self.body()
            .get(layer * self.arch.heads + head)
            .and_then(|&b| AttnKind::from_u8(b))
            .unwrap_or(AttnKind::Softmax)
    }

    fn gelu(&self, layer: usize, token: usize) -> bool {
        let i = self.arch.layers * self.arch.heads + layer * self.arch.tokens() + token;
        self.body().get(i).is_none_or(|&b| b == 1)
    }
}

/// CRC of a model file as stored in its last 4 bytes (the blob binds to it).
pub fn model_crc(model_file: &[u8]) -> u32 {
    let n = model_file.len();
    rd(model_file, n.saturating_sub(4), 4) as u32
}
