//! Steps 6-8 of a layer: projection, residual, LayerNorm 1 and the MLP.

use super::held::{Rows, Term};
use super::spec::{Arena, MLP_RANGE_LOG2, VitSpec};
use super::weights::{Weights, Wid, linear_width};
use crate::ops::layernorm::{self, LnSpec};
use crate::ops::{Party, activation};
use crate::protocol::cmp::{CmpOut, CmpShape};
use crate::protocol::linear::LinearShape;

/// Steps 6-8 of layer `l` for token rows `r0..r1`: projection of the
/// attention output (input at 2f) whose blocks went under op `mask` (`e`:
/// the host's rows of it, masked, [`Party::linear_trunc_sent`]), residual
/// into `x`, LayerNorm 1 (host-private scale), the MLP with GeLU or
/// MPCViT+ linearized tokens, residual.
#[allow(clippy::too_many_arguments)]
pub(super) fn mlp_rows<P: Party + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    w: &dyn Weights,
    l: usize,
    (r0, r1): (usize, usize),
    (mask, e): (u64, &[u64]),
    resid: &mut Rows<'_>,
    stage: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let (d, mlp) = (a.dim, a.mlp);
    let f = spec.fp.frac_bits();
    let rr = r1 - r0;
    let mut ar = Arena { rest: stage };
    let ln = LnSpec::new(rr, d);
    let x = ar.take(rr * d)?;
    resid.load_rows(p, r0, x)?;
    let proj = ar.take(rr * d)?;
    let hln = ar.take(rr * d)?;
    let lns = ar.take(ln.scratch_len())?;
    let hid = ar.take(rr * mlp)?;
    let hid2 = ar.take(rr * mlp)?;
    let y = ar.take(rr * d)?;
    let sel_in = ar.take(rr * mlp.max(d))?;
    let sel_out = ar.take(rr * mlp.max(d))?;
    let gelu_scratch = ar.take(2 * rr * mlp)?;
    // 6. projection, residual
    p.linear_trunc_sent(
        mask,
        r0,
        LinearShape::new(rr, d, d),
        e,
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
    let t_ln = Term::last(p, f + layernorm::R_FRAC, crate::protocol::trunc::FULL);
    // 8. MLP: GeLU tokens through comparison and tail lookup, linearized
    // tokens not. When every row is a GeLU row, fc1's product goes to
    // GeLU untruncated: its comparison drops the f bits in its opening.
    let gelu = |t: usize| spec.model.gelu(l, r0 + t);
    let g_rows = (0..rr).filter(|&t| gelu(t)).count();
    let pre = if g_rows == rr { f } else { 0 };
    // fc1 runs in the layers' width; untruncated, GeLU's comparison reads
    // its bits `pre..pre + 8 w`, inside that width (`check_frac_bits`)
    let lw = linear_width(spec.fp);
    p.linear_trunc(
        LinearShape::new(rr, d, mlp).with_width(lw),
        hln,
        w.get(Wid::Fc1(l)),
        w.get(Wid::Fc1B(l)),
        f - pre,
        hid,
    )?;
    hid2.copy_from_slice(hid);
    if g_rows > 0 {
        let mut o = 0;
        for t in (0..rr).filter(|&t| gelu(t)) {
            sel_in[o..o + mlp].copy_from_slice(&hid[t * mlp..(t + 1) * mlp]);
            o += mlp;
        }
        activation::gelu(
            p,
            MLP_RANGE_LOG2,
            pre,
            &sel_in[..o],
            &mut sel_out[..o],
            &mut gelu_scratch[..2 * o],
        )?;
        let mut o = 0;
        for t in (0..rr).filter(|&t| gelu(t)) {
            hid2[t * mlp..(t + 1) * mlp].copy_from_slice(&sel_out[o..o + mlp]);
            o += mlp;
        }
    }
    p.linear_trunc(
        LinearShape::new(rr, mlp, d).with_width(lw),
        hid2,
        w.get(Wid::Fc2(l)),
        w.get(Wid::Fc2B(l)),
        f,
        y,
    )?;
    let t_fc2 = Term::last(p, f, lw);
    if g_rows < rr {
        let mut o = 0;
        for t in (0..rr).filter(|&t| !gelu(t)) {
            sel_in[o..o + d].copy_from_slice(&y[t * d..(t + 1) * d]);
            o += d;
        }
        let shape = CmpShape::new(o, f, MLP_RANGE_LOG2, CmpOut::Relu)?;
        p.cmp(shape, &sel_in[..o], &mut sel_out[..o])?;
        let mut o = 0;
        for t in (0..rr).filter(|&t| !gelu(t)) {
            y[t * d..(t + 1) * d].copy_from_slice(&sel_out[o..o + d]);
            o += d;
        }
    }
    // x is LayerNorm 1's output plus the MLP's
    resid.set(p, r0, &[(t_ln, hln), (t_fc2, y)])
}
