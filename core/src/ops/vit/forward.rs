//! The whole forward pass, and the device's input encoding.

use super::attention::attention;
use super::held::{Qkv, Resid, Term, qkv_len, resid_len};
use super::mlp::mlp_rows;
use super::spec::{Arena, VitSpec, scratch_len};
use super::weights::{Weights, Wid, check_weights};
use crate::FixedPoint;
use crate::ProtocolError;
use crate::model::Arch;
use crate::ops::Party;
use crate::ops::layernorm::{self, LnSpec};
use crate::protocol::linear::LinearShape;

/// The secure forward pass: `patches` (`(n-1) x patch_len`, this party's
/// share; the device holds the image, so the host's share is zero) to the
/// logits, revealed to the device (the host and the dealer get zeros).
/// `scratch` holds [`scratch_len`]`(arch, spec.tile, role, spec.model)`
/// words.
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
    let host = p.role() == crate::Role::Host;
    let role = p.role();
    if patches.len() != (n - 1) * pl
        || logits.len() != a.classes
        || scratch.len() < scratch_len(&a, spec.tile, role, spec.model)
    {
        return Err(ProtocolError::BadBuffer.into());
    }
    check_weights(&a, w, host)?;
    let (x, rest) = scratch.split_at_mut(resid_len(&a, role, spec.model));
    let mut x = Resid::new(&a, role, spec.model, x);
    let (qkv, rest) = rest.split_at_mut(qkv_len(&a, spec.tile, role));
    let mut qkv = Qkv::new(&a, spec.tile, role, f, qkv);
    let (att, stage) = rest.split_at_mut(n * d);
    embed(p, spec, w, patches, &mut x, stage)?;
    let r = spec.tile.rows_of(&a);
    for l in 0..a.layers {
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
            x.load(p, r0, xr)?;
            layernorm::layernorm(p, &ln, xr, None, &[], hln, lns)?;
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
                zt,
            )?;
            qkv.keep(p, r0, zt)?;
        }
        // 3-5. attention by head groups and query tiles
        attention(p, spec, l, &qkv, att, stage)?;
        // 6-8. projection, residual, LayerNorm 1, MLP, residual, by row tiles
        for r0 in (0..n).step_by(r) {
            let r1 = (r0 + r).min(n);
            mlp_rows(p, spec, w, l, r0, r1, &att[r0 * d..r1 * d], &mut x, stage)?;
        }
    }
    head(p, spec, w, &x, stage, logits)
}

/// Patch embedding (by row tiles) into rows `1..n` of `x`, then the class
/// token into row 0 and the positions, which are the host's constants.
fn embed<P: Party + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    w: &dyn Weights,
    patches: &[u64],
    x: &mut Resid<'_>,
    stage: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let (n, d, pl) = (a.tokens(), a.dim, a.patch_len());
    let f = spec.fp.frac_bits();
    let host = p.role() == crate::Role::Host;
    let r = spec.tile.rows_of(&a);
    let z = Arena { rest: stage }.take(r * d)?;
    for r0 in (0..n - 1).step_by(r) {
        let r1 = (r0 + r).min(n - 1);
        let z = &mut z[..(r1 - r0) * d];
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
            z,
        )?;
        let op = p.next_op_id().wrapping_sub(1);
        x.set(p, r0 + 1, &[(Term { op, row: 0, frac: f }, z)])?;
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

/// The final LayerNorm on the class token (row 0 of `x`), the head, and
/// the logits revealed to the device (and to the host if the spec says so).
fn head<P: Party + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    w: &dyn Weights,
    x: &Resid<'_>,
    stage: &mut [u64],
    logits: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let (d, f) = (a.dim, spec.fp.frac_bits());
    let host = p.role() == crate::Role::Host;
    let mut ar = Arena { rest: stage };
    let ln1 = LnSpec::new(1, d);
    let x0 = ar.take(d)?;
    let hln = ar.take(d)?;
    let lns = ar.take(ln1.scratch_len())?;
    x.load(p, 0, x0)?;
    layernorm::layernorm(p, &ln1, x0, None, &[], hln, lns)?;
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
                        out[row + (c * p + ky) * p + kx] = fp.try_encode_at(v as f64, 1)?;
                    }
                }
            }
        }
    }
    Ok(())
}
