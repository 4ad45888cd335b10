//! The plaintext fixed-point reference of the whole secure model: the same
//! encodings, folds, truncations and approximations as
//! [`mpcvit_core::ops::vit::forward`], computed in the clear at exact grid
//! points. It is the oracle of every whole-model test and of `eval`'s
//! fixed-point column, so it is product code (here, beside the host, which
//! holds the plaintext weights), not test code.
//!
//! Index arithmetic works on vectors whose lengths follow from the
//! architecture, and the weights are checked against it at entry
//! ([`vit::check_weights`]): a panic would be a bug here, not input.
#![allow(clippy::indexing_slicing)]

use mpcvit_core::model::{Arch, AttnKind, ModelView};
use mpcvit_core::ops::layernorm::{self, LnSpec};
use mpcvit_core::ops::vit::{self, Weights, Wid};
use mpcvit_core::ops::{activation, softmax};
use mpcvit_core::protocol::pwl::Func;
use mpcvit_core::reference::trunc;
use mpcvit_core::{FixedPoint, ProtocolError};

/// An image `[c, h, w]` (normalised floats) as the device's patch matrix.
pub fn patches(m: &ModelView<'_>, fp: FixedPoint, image: &[f32]) -> Result<Vec<u64>, ProtocolError> {
    patches_for(&m.arch(), fp, image)
}

/// An image `[c, h, w]` (normalised floats) as the patch matrix of `a`.
pub fn patches_for(a: &Arch, fp: FixedPoint, image: &[f32]) -> Result<Vec<u64>, ProtocolError> {
    if image.len() != a.channels * a.image * a.image {
        return Err(ProtocolError::BadBuffer);
    }
    let (p, g) = (a.patch, a.image / a.patch);
    let mut out = vec![0; (a.tokens() - 1) * a.patch_len()];
    for py in 0..g {
        for px in 0..g {
            let row = &mut out[(py * g + px) * a.patch_len()..][..a.patch_len()];
            for c in 0..a.channels {
                for ky in 0..p {
                    for kx in 0..p {
                        let src = (c * a.image + py * p + ky) * a.image + px * p + kx;
                        row[(c * p + ky) * p + kx] = fp.try_encode_at(image[src] as f64, 1)?;
                    }
                }
            }
        }
    }
    Ok(out)
}

fn linear(
    x: &[u64],
    w: &[u64],
    b: &[u64],
    (n, din, dout): (usize, usize, usize),
    bits: u32,
) -> Result<Vec<u64>, ProtocolError> {
    let mut z = vec![0u64; n * dout];
    mpcvit_core::reference::matmul(x, w, (n, din, dout), &mut z)?;
    for row in z.chunks_mut(dout) {
        for (v, &bb) in row.iter_mut().zip(b) {
            *v = v.wrapping_add(bb);
        }
    }
    Ok(z.iter().map(|&v| trunc(v, bits)).collect())
}

fn matmul_t(x: &[u64], y: &[u64], s: (usize, usize, usize), bits: u32) -> Result<Vec<u64>, ProtocolError> {
    let mut z = vec![0u64; s.0 * s.2];
    mpcvit_core::reference::matmul(x, y, s, &mut z)?;
    Ok(z.iter().map(|&v| trunc(v, bits)).collect())
}

/// The plaintext fixed-point reference of [`vit::forward`] on a float
/// image `[c, h, w]` (normalised): the same
/// encodings, folds, truncations and approximations, at exact grid points.
pub fn forward(m: &ModelView<'_>, fp: FixedPoint, w: &dyn Weights, image: &[f32]) -> Result<Vec<u64>, ProtocolError> {
    let a = m.arch();
    vit::check_weights(&a, w, true)?;
    let (n, d, nh, hd, mlp) = (a.tokens(), a.dim, a.heads, a.head_dim(), a.mlp);
    let f = fp.frac_bits();
    let pt = patches(m, fp, image)?;
    let emb = linear(
        &pt,
        w.get(Wid::PatchW),
        w.get(Wid::PatchB),
        (n - 1, a.patch_len(), d),
        f,
    )?;
    let mut x = vec![0u64; n * d];
    let (cls, pos) = (w.get(Wid::Cls), w.get(Wid::Pos));
    for j in 0..d {
        x[j] = cls[j].wrapping_add(pos[j]);
    }
    for i in d..n * d {
        x[i] = emb[i - d].wrapping_add(pos[i]);
    }
    let ln = LnSpec::new(1, d);
    let ln_rows = |x: &[u64], g: Option<&[u64]>, b: &[u64]| -> Vec<u64> {
        let mut out = vec![0u64; x.len()];
        for (xr, or) in x.chunks(d).zip(out.chunks_mut(d)) {
            layernorm::reference(&LnSpec { rows: 1, ..ln }, fp, xr, g, b, or);
        }
        out
    };
    for l in 0..a.layers {
        let h0 = ln_rows(&x, None, &[]);
        let qkv = linear(&h0, w.get(Wid::Qkv(l)), w.get(Wid::QkvB(l)), (n, d, 3 * d), f)?;
        let col = |t: usize, blk: usize, h: usize, c: usize| qkv[t * 3 * d + blk * d + h * hd + c];
        let mut att = vec![0u64; n * d];
        for h in 0..nh {
            let q: Vec<u64> = (0..n)
                .flat_map(|t| (0..hd).map(move |c| (t, c)))
                .map(|(t, c)| col(t, 0, h, c))
                .collect();
            let kt: Vec<u64> = (0..hd)
                .flat_map(|c| (0..n).map(move |t| (c, t)))
                .map(|(c, t)| col(t, 1, h, c))
                .collect();
            let v: Vec<u64> = (0..n)
                .flat_map(|t| (0..hd).map(move |c| (t, c)))
                .map(|(t, c)| col(t, 2, h, c))
                .collect();
            let out = head_attention(m.attn(l, h), (&q, &kt, &v), (n, hd), fp)?;
            for t in 0..n {
                att[t * d + h * hd..t * d + (h + 1) * hd].copy_from_slice(&out[t * hd..(t + 1) * hd]);
            }
        }
        let proj = linear(&att, w.get(Wid::Proj(l)), w.get(Wid::ProjB(l)), (n, d, d), 2 * f)?;
        for (v, p) in x.iter_mut().zip(&proj) {
            *v = v.wrapping_add(*p);
        }
        x = ln_rows(&x, Some(w.get(Wid::Ln1G(l))), w.get(Wid::Ln1B(l)));
        let mut hid = linear(&x, w.get(Wid::Fc1(l)), w.get(Wid::Fc1B(l)), (n, d, mlp), f)?;
        for t in 0..n {
            if m.gelu(l, t) {
                for v in &mut hid[t * mlp..(t + 1) * mlp] {
                    *v = fp.encode(Func::Gelu.eval(fp.decode(*v)));
                }
            }
        }
        let mut y = linear(&hid, w.get(Wid::Fc2(l)), w.get(Wid::Fc2B(l)), (n, mlp, d), f)?;
        for t in 0..n {
            if !m.gelu(l, t) {
                for v in &mut y[t * d..(t + 1) * d] {
                    *v = activation::relu_reference(*v);
                }
            }
        }
        for (v, yv) in x.iter_mut().zip(&y) {
            *v = v.wrapping_add(*yv);
        }
    }
    let h = ln_rows(&x[..d], None, &[]);
    linear(&h, w.get(Wid::Head), w.get(Wid::HeadB), (1, d, a.classes), f)
}

/// One head's attention output (`n x hd`) from its `Q` (`n x hd`), `K^T`
/// (`hd x n`) and `V` (`n x hd`): ScaleAttn in the associative form,
/// the other kinds through their row normalisation.
fn head_attention(
    kind: AttnKind,
    (q, kt, v): (&[u64], &[u64], &[u64]),
    (n, hd): (usize, usize),
    fp: FixedPoint,
) -> Result<Vec<u64>, ProtocolError> {
    let f = fp.frac_bits();
    Ok(if kind == AttnKind::Scale {
        let ktv = matmul_t(kt, v, (hd, n, hd), f)?;
        matmul_t(q, &ktv, (n, hd, hd), 0)?
    } else {
        let s = matmul_t(q, kt, (n, hd, n), f)?;
        if kind != AttnKind::ReluSoftmax || !vit::rs_after_v(fp) {
            let mut p = vec![0u64; n * n];
            let spec = softmax::NormSpec::new(kind, 1, n);
            for (row, prow) in s.chunks(n).zip(p.chunks_mut(n)) {
                softmax::reference(&spec, fp, row, prow);
            }
            return matmul_t(&p, v, (n, n, hd), 0);
        }
        // RSAttn: (e V) (1 / S), e = ReLU(scores) at f, S at ROW_FRAC
        let e: Vec<u64> = s.iter().map(|&v| activation::relu_reference(v)).collect();
        let mut out = matmul_t(&e, v, (n, n, hd), 0)?;
        let spec = vit::rs_recip_after_v(n, f);
        for (erow, orow) in e.chunks(n).zip(out.chunks_mut(hd)) {
            let sum = erow.iter().fold(0u64, |a, &b| a.wrapping_add(b)) << (vit::ROW_FRAC - f);
            let inv = spec.reference(sum);
            for o in orow {
                *o = trunc(o.wrapping_mul(inv), vit::RS_INV_FRAC);
            }
        }
        out
    })
}
