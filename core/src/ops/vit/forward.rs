//! The whole forward pass, and the device's input encoding.

use super::attention::attention;
use super::held::{Rows, Term, qkv_len, resid_len};
use super::mlp::mlp_rows;
use super::spec::{Arena, VitSpec, att_len, scratch_len};
use super::weights::{Weights, Wid, check_weights, held_width, linear_width};
use crate::FixedPoint;
use crate::ProtocolError;
use crate::model::Arch;
use crate::ops::Party;
use crate::ops::layernorm::{self, LnSpec};
use crate::protocol::linear::LinearShape;

/// The secure forward pass: `patches` (`(n-1) x patch_len`, this party's
/// share, read a row tile at a time, [`Pixels`] at the device, which holds
/// the image; the host's share is zero) to the
/// logits, revealed to the device (the host and the dealer get zeros).
/// `scratch` holds [`scratch_len`]`(arch, spec.tile, role, spec.model)`
/// words.
pub fn forward<P: Party + ?Sized, I: Patches + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    w: &dyn Weights,
    patches: &I,
    logits: &mut [u64],
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let (n, d, pl) = (a.tokens(), a.dim, a.patch_len());
    let f = spec.fp.frac_bits();
    let role = p.role();
    let host = role == crate::Role::Host;
    if patches.words() != (n - 1) * pl
        || logits.len() != a.classes
        || scratch.len() < scratch_len(&a, spec.tile, role, spec.model)
    {
        return Err(ProtocolError::BadBuffer.into());
    }
    check_weights(&a, w, host)?;
    let (x, rest) = scratch.split_at_mut(resid_len(&a, role, spec.model));
    let mut x = Rows::resid(&a, role, spec.model, x);
    let (qkv, rest) = rest.split_at_mut(qkv_len(&a, role));
    let mut qkv = Rows::qkv(&a, role, qkv);
    let (att, stage) = rest.split_at_mut(att_len(&a, role));
    embed(p, spec, w, patches, &mut x, stage)?;
    let r = spec.tile.rows_of(&a);
    for l in 0..a.layers {
        // the last layer's attention output and what follows it are read
        // for the class token only (the head's input): one query row, one
        // token row from the projection on
        let rows_out = if l + 1 == a.layers { 1 } else { n };
        // 1-2. LayerNorm 0 (affine folded) and qkv, by row tiles
        for r0 in (0..n).step_by(r) {
            let r1 = (r0 + r).min(n);
            let rr = r1 - r0;
            let mut ar = Arena { rest: &mut *stage };
            let ln = LnSpec::new(rr, d);
            let xr = ar.take(rr * d)?;
            let hln = ar.take(rr * d)?;
            let lns = ar.take(ln.scratch_len())?;
            let zt = ar.take(rr * 3 * d)?;
            x.load_rows(p, r0, xr)?;
            layernorm::layernorm(p, &ln, xr, None, &[], hln, lns)?;
            let qw = after_layernorm(
                p,
                spec,
                LinearShape::new(rr, d, 3 * d),
                hln,
                (w.get(Wid::Qkv(l)), w.get(Wid::QkvB(l))),
                zt,
            )?;
            qkv.set(p, r0, &[(Term::last(p, f, qw), zt)])?;
        }
        // 3-5. attention by head groups and query tiles; its output goes
        // to the host masked for the projection as each tile is made (the
        // host keeps it in `att`, the device keeps none of it)
        let mask = p.linear_mask()?;
        attention(p, spec, l, &qkv, mask, (rows_out, att), stage)?;
        // 6-8. projection, residual, LayerNorm 1, MLP, residual, by row tiles
        for r0 in (0..rows_out).step_by(r) {
            let r1 = (r0 + r).min(rows_out);
            let e = att.get(r0 * d..r1 * d).unwrap_or_default();
            mlp_rows(p, spec, w, l, (r0, r1), (mask, e), &mut x, stage)?;
        }
    }
    head(p, spec, w, &x, stage, logits)
}

/// Patch embedding (by row tiles) into rows `1..n` of `x`, then the class
/// token into row 0 and the positions, which are the host's constants.
fn embed<P: Party + ?Sized, I: Patches + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    w: &dyn Weights,
    patches: &I,
    x: &mut Rows<'_>,
    stage: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let (n, d, pl) = (a.tokens(), a.dim, a.patch_len());
    let f = spec.fp.frac_bits();
    let host = p.role() == crate::Role::Host;
    let r = spec.tile.rows_of(&a);
    let lw = linear_width(spec.fp);
    let mut ar = Arena { rest: stage };
    let z = ar.take(r * d)?;
    let rows = ar.take(r * pl)?;
    for r0 in (0..n - 1).step_by(r) {
        let r1 = (r0 + r).min(n - 1);
        let z = &mut z[..(r1 - r0) * d];
        let rows = &mut rows[..(r1 - r0) * pl];
        patches.read(r0 * pl, rows)?;
        p.linear_trunc(
            LinearShape::new(r1 - r0, pl, d).with_width(lw),
            rows,
            w.get(Wid::PatchW),
            w.get(Wid::PatchB),
            f,
            z,
        )?;
        x.set(p, r0 + 1, &[(Term::last(p, f, lw), z)])?;
    }
    if let (true, Some(x)) = (host, x.words()) {
        let (cls, pos) = (w.get(Wid::Cls), w.get(Wid::Pos));
        for (j, v) in x[..d].iter_mut().enumerate() {
            *v = cls[j].wrapping_add(pos[j]);
        }
        for (v, &pv) in x[d..].iter_mut().zip(&pos[d..]) {
            *v = v.wrapping_add(pv);
        }
    }
    Ok(())
}

/// `qkv` or the head on `x`, the output of the LayerNorm that `p` ran
/// last, truncated by `f`: without an input message in
/// [`held_width`] (the device's share of `x` is its seed's, from the
/// LayerNorm's last truncation), else in [`linear_width`] with one.
/// Returns the width.
fn after_layernorm<P: Party + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    s: LinearShape,
    x: &[u64],
    (w, bias): (&[u64], &[u64]),
    z: &mut [u64],
) -> Result<usize, P::Error> {
    let f = spec.fp.frac_bits();
    match held_width(spec.fp) {
        Some(hw) => {
            let ln = (p.next_op_id().wrapping_sub(1), layernorm::R_FRAC);
            p.linear_trunc_held(ln, s.with_width(hw), x, w, bias, f, z)?;
            Ok(hw)
        }
        None => {
            let lw = linear_width(spec.fp);
            p.linear_trunc(s.with_width(lw), x, w, bias, f, z)?;
            Ok(lw)
        }
    }
}

/// The final LayerNorm on the class token (row 0 of `x`), the head, and
/// the logits revealed to the device (and to the host if the spec says so).
fn head<P: Party + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    w: &dyn Weights,
    x: &Rows<'_>,
    stage: &mut [u64],
    logits: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let d = a.dim;
    let host = p.role() == crate::Role::Host;
    let mut ar = Arena { rest: stage };
    let ln1 = LnSpec::new(1, d);
    let x0 = ar.take(d)?;
    let hln = ar.take(d)?;
    let lns = ar.take(ln1.scratch_len())?;
    x.load_rows(p, 0, x0)?;
    layernorm::layernorm(p, &ln1, x0, None, &[], hln, lns)?;
    let out = ar.take(a.classes)?;
    after_layernorm(
        p,
        spec,
        LinearShape::new(1, d, a.classes),
        hln,
        (w.get(Wid::Head), w.get(Wid::HeadB)),
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

/// The forward pass's input: the patch matrix (`(tokens - 1) x
/// patch_len`, this party's share), read a row tile at a time.
pub trait Patches {
    /// Words of the whole matrix.
    fn words(&self) -> usize;
    /// Words `at..at + out.len()` (whole rows) into `out`.
    fn read(&self, at: usize, out: &mut [u64]) -> Result<(), ProtocolError>;
}

/// A matrix in memory (the host's and the dealer's zeros, a test's share).
impl Patches for [u64] {
    fn words(&self) -> usize {
        self.len()
    }

    fn read(&self, at: usize, out: &mut [u64]) -> Result<(), ProtocolError> {
        out.copy_from_slice(self.get(at..at + out.len()).ok_or(ProtocolError::BadBuffer)?);
        Ok(())
    }
}

/// The device's input: 8-bit pixels `[c, h, w]`, normalised per channel as
/// `(p / 255 - mean[c]) / std[c]` in `f32` and encoded in fixed point when
/// a row tile of patches is read (no patch matrix in memory). The desktop
/// device and the firmware both use this, so they feed the same bits.
pub struct Pixels<'a> {
    arch: Arch,
    fp: FixedPoint,
    pixels: &'a [u8],
    mean: &'a [f32],
    std: &'a [f32],
}

impl<'a> Pixels<'a> {
    /// The pixels of one image of `a` (refused unless the image fits).
    pub fn new(
        a: &Arch,
        fp: FixedPoint,
        pixels: &'a [u8],
        mean: &'a [f32],
        std: &'a [f32],
    ) -> Result<Self, ProtocolError> {
        if pixels.len() != a.channels * a.image * a.image || mean.len() < a.channels || std.len() < a.channels {
            return Err(ProtocolError::BadBuffer);
        }
        Ok(Self {
            arch: *a,
            fp,
            pixels,
            mean,
            std,
        })
    }
}

impl Patches for Pixels<'_> {
    fn words(&self) -> usize {
        (self.arch.tokens() - 1) * self.arch.patch_len()
    }

    fn read(&self, at: usize, out: &mut [u64]) -> Result<(), ProtocolError> {
        let a = &self.arch;
        let (p, g, side, pl) = (a.patch, a.image / a.patch, a.image, a.patch_len());
        if !at.is_multiple_of(pl) || !out.len().is_multiple_of(pl) || at + out.len() > self.words() {
            return Err(ProtocolError::BadBuffer);
        }
        let r0 = at / pl;
        for (k, row) in out.chunks_exact_mut(pl).enumerate() {
            let (py, px) = ((r0 + k) / g, (r0 + k) % g);
            for c in 0..a.channels {
                for ky in 0..p {
                    for kx in 0..p {
                        let src = (c * side + py * p + ky) * side + px * p + kx;
                        let v = (self.pixels[src] as f32 / 255.0 - self.mean[c]) / self.std[c];
                        row[(c * p + ky) * p + kx] = self.fp.try_encode_at(v as f64, 1)?;
                    }
                }
            }
        }
        Ok(())
    }
}
