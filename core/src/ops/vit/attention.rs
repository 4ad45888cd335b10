//! Steps 3-5 of a layer: the attention of every head, all heads of a
//! group in the same protocol steps.

use super::held::Rows;
use super::spec::{
    Arena, ROW_FRAC, RS_INV_FRAC, SCORE_RANGE_LOG2, ScoreExp, VitSpec, attn_buffers, ktv_chunk, norm_scratch_len,
    row_recip, row_trunc, rs_after_v, rs_recip_after_v, score_exp, score_width,
};
use crate::ProtocolError;
use crate::model::AttnKind;
use crate::ops::Party;
use crate::ops::wide;
use crate::protocol::cmp::{CmpOut, CmpShape};
use crate::protocol::matmul::{MatmulShape, Right};

/// Most heads in a group (a tile's `heads`): one flight's products.
const MAX_GROUP: usize = if crate::ops::flight::MAX_JOBS < crate::model::MAX_HEADS {
    crate::ops::flight::MAX_JOBS
} else {
    crate::model::MAX_HEADS
};

/// Row normalization of `heads.len()` heads of `rows x n` scores at `f +
/// pre` bits (none of them ScaleAttn), all in the same rounds; output at
/// `f` bits. With `pre > 0` (no 2Quad head) the exp lookup and the
/// comparison drop the `pre` bits in their openings. `ktv`: the layer's
/// ScaleAttn `K^T V` to truncate by `f` (input, output), which rides in
/// the RSAttn comparison's first flight ([`Party::trunc_cmp`]) and is
/// truncated on its own without an RSAttn head.
///
/// `rs_inv` (`heads.len() x rows` words, head order): the RSAttn heads
/// stop before their product ([`rs_after_v`](super::spec::rs_after_v)):
/// their blocks of `out` get `e = ReLU(x)` at `f` bits and their rows of
/// `rs_inv` the reciprocal of the row sums at
/// [`RS_INV_FRAC`](super::spec::RS_INV_FRAC) bits
/// ([`rs_recip_after_v`](super::spec::rs_recip_after_v)); the other heads'
/// rows of `rs_inv` are left alone.
// One function on purpose: the kinds' elementwise steps, the row sums, the
// reciprocal batch and the product share the arena and the per-kind offsets
// step by step; split, each piece would take most of them as arguments.
#[allow(clippy::too_many_arguments)]
pub fn normalize_heads<P: Party + ?Sized>(
    p: &mut P,
    rows: usize,
    n: usize,
    heads: &[AttnKind],
    pre: u32,
    ktv: Option<(&[u64], &mut [u64])>,
    x: &[u64],
    (out, rs_inv): (&mut [u64], Option<&mut [u64]>),
    scratch: &mut [u64],
) -> Result<(), P::Error> {
    let fp = p.fp();
    let f = fp.frac_bits();
    let nn = rows * n;
    let hcount = heads.len();
    let mut ktv = ktv;
    if hcount == 0 {
        if let Some((t, tz)) = ktv {
            p.trunc(f, t, tz)?;
        }
        return Ok(());
    }
    if x.len() != hcount * nn || out.len() != x.len() || rs_inv.as_ref().is_some_and(|v| v.len() != hcount * rows) {
        return Err(ProtocolError::BadBuffer.into());
    }
    if hcount > MAX_GROUP {
        return Err(ProtocolError::TooManyOps.into());
    }
    if pre > 0 && heads.contains(&AttnKind::Quad) {
        return Err(ProtocolError::BadParameter.into());
    }
    let host = p.role().plays_host();
    let mut ar = Arena { rest: scratch };
    // The heads' rows in kind order (Softmax, RSAttn, 2Quad heads, each in
    // head order) from the elementwise step to the truncation; the
    // truncated rows go back to head order in `out` at the end.
    // elementwise step, every value brought to ROW_FRAC bits: exp of
    // x - x_row0 (Softmax, a cell lookup), ReLU (RSAttn, the comparison),
    // the square of x + c (2Quad)
    let ns = heads.iter().filter(|k| **k == AttnKind::Softmax).count() * nn;
    let nr = heads.iter().filter(|k| **k == AttnKind::ReluSoftmax).count() * nn;
    let nq = heads.iter().filter(|k| **k == AttnKind::Quad).count() * nn;
    // [inputs | 2Quad inputs] (the product's output afterwards), [values
    // e: outputs | 2Quad outputs], 2Quad squares
    let work = ar.take(2 * (ns + nr) + 3 * nq)?;
    let (prod, rest) = work.split_at_mut(ns + nr + nq);
    let (e, qsq) = rest.split_at_mut(ns + nr + nq);
    {
        let (ins, qin) = prod.split_at_mut(ns + nr);
        let (outs, qout) = e.split_at_mut(ns + nr);
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
        // Softmax heads: one exp cell lookup; RSAttn heads: the
        // comparison's ReLU (two rounds, the K^T V truncation in the
        // first), shifted to ROW_FRAC. A layer mixing both pays the two
        // steps in sequence.
        if ns > 0 {
            crate::ops::cell(p, score_exp(ns, f, pre)?, &ScoreExp, &ins[..ns], &mut outs[..ns])?;
        }
        if nr > 0 {
            let rshape = CmpShape::new(nr, f, SCORE_RANGE_LOG2, CmpOut::Relu)?.with_pre(pre)?;
            match ktv.take() {
                Some((t, tz)) => p.trunc_cmp(f, t, tz, rshape, &ins[ns..ns + nr], &mut outs[ns..ns + nr])?,
                None => p.cmp(rshape, &ins[ns..ns + nr], &mut outs[ns..ns + nr])?,
            }
            if rs_inv.is_none() {
                for v in outs[ns..ns + nr].iter_mut() {
                    *v <<= ROW_FRAC - f;
                }
            }
        }
        if let Some((t, tz)) = ktv.take() {
            p.trunc(f, t, tz)?;
        }
        if nq > 0 {
            let c = fp.encode(crate::ops::softmax::QUAD_C);
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
            if 2 * f > ROW_FRAC {
                p.trunc(2 * f - ROW_FRAC, qsq, qout)?;
            } else {
                for (o, &v) in qout.iter_mut().zip(qsq.iter()) {
                    *o = v << (ROW_FRAC - 2 * f);
                }
            }
        }
    }
    // reciprocal of every row sum, one batch per kind present (each on its
    // own range: fewer windows); its rows are contiguous in kind order
    let rows = hcount * rows;
    let sums = ar.take(rows)?;
    let inv = ar.take(rows)?;
    for (s, row) in sums.iter_mut().zip(e.chunks_exact(n)) {
        *s = row.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    }
    // deferred RSAttn rows are at f: their sums come to ROW_FRAC
    if rs_inv.is_some() {
        for s in sums[ns / n..(ns + nr) / n].iter_mut() {
            *s <<= ROW_FRAC - f;
        }
    }
    let wscratch = ar.take(wide::scratch_len(rows))?;
    let per = rows / hcount;
    let mut r0 = 0;
    for kind in [AttnKind::Softmax, AttnKind::ReluSoftmax, AttnKind::Quad] {
        let m = heads.iter().filter(|k| **k == kind).count() * per;
        if m == 0 {
            continue;
        }
        let spec = if kind == AttnKind::ReluSoftmax && rs_inv.is_some() {
            rs_recip_after_v(n, f)
        } else {
            row_recip(n, f, kind)
        };
        wide::wide(
            p,
            &spec,
            &sums[r0..r0 + m],
            &mut inv[r0..r0 + m],
            &mut wscratch[..wide::scratch_len(m)],
        )?;
        r0 += m;
    }
    match rs_inv {
        None => {
            p.mul(e, inv, n, prod)?;
            p.trunc(row_trunc(f), prod, out)?;
        }
        Some(rs_inv) => {
            // RSAttn's e and reciprocal rows out as they are (the
            // reciprocal in head order); the other kinds' rows together
            // (2Quad's moved down next to Softmax's) through the product
            out[ns..ns + nr].copy_from_slice(&e[ns..ns + nr]);
            let mut k = ns / n;
            for (hi, _) in heads.iter().enumerate().filter(|(_, h)| **h == AttnKind::ReluSoftmax) {
                rs_inv[hi * per..(hi + 1) * per].copy_from_slice(&inv[k..k + per]);
                k += per;
            }
            let m = ns + nq;
            if m > 0 {
                e.copy_within(ns + nr..ns + nr + nq, ns);
                inv.copy_within((ns + nr) / n..(ns + nr + nq) / n, ns / n);
                p.mul(&e[..m], &inv[..m / n], n, &mut prod[..m])?;
                p.trunc(row_trunc(f), &prod[..m], &mut e[..m])?;
                out[..ns].copy_from_slice(&e[..ns]);
                out[ns + nr..].copy_from_slice(&e[ns..m]);
            }
        }
    }
    // kind order to head order, a block swap at a time: at[k] is the head
    // whose rows are at block k
    let mut at = [0usize; MAX_GROUP];
    let mut k = 0;
    for kind in [AttnKind::Softmax, AttnKind::ReluSoftmax, AttnKind::Quad] {
        for (hi, _) in heads.iter().enumerate().filter(|(_, h)| **h == kind) {
            at[k] = hi;
            k += 1;
        }
    }
    for i in 0..hcount {
        while at[i] != i {
            let j = at[i];
            let (lo, hi) = out.split_at_mut(j.max(i) * nn);
            lo[j.min(i) * nn..(j.min(i) + 1) * nn].swap_with_slice(&mut hi[..nn]);
            at.swap(i, j);
        }
    }
    Ok(())
}

/// RSAttn's rows weighted after `V` ([`rs_after_v`]): for each RSAttn
/// head of `kinds` (a group's heads in order), its block of `z` (`qr`
/// rows of `hd`: `e V` at `2f`) times its rows' reciprocals (`inv`: `qr`
/// rows for each of the group's non-Scale heads, in order), truncated by
/// [`RS_INV_FRAC`] (to `2f`), in place. The RSAttn blocks are gathered into
/// `x` (and their reciprocals to the front of `inv`) for one product
/// (into `w`) and one truncation.
fn rs_weight<P: Party + ?Sized>(
    p: &mut P,
    kinds: &[AttnKind],
    (qr, hd): (usize, usize),
    (inv, w): (&mut [u64], &mut [u64]),
    x: &mut [u64],
    z: &mut [u64],
) -> Result<(), P::Error> {
    let blk = qr * hd;
    let (mut k, mut r, mut ni) = (0, 0, 0);
    for (hi, &kind) in kinds.iter().enumerate() {
        if kind == AttnKind::Scale {
            continue;
        }
        if kind == AttnKind::ReluSoftmax {
            x[k..k + blk].copy_from_slice(&z[hi * blk..(hi + 1) * blk]);
            inv.copy_within(ni * qr..(ni + 1) * qr, r);
            k += blk;
            r += qr;
        }
        ni += 1;
    }
    if k == 0 {
        return Ok(());
    }
    p.mul(&x[..k], &inv[..r], hd, &mut w[..k])?;
    p.trunc(RS_INV_FRAC, &w[..k], &mut x[..k])?;
    let mut k = 0;
    for (hi, &kind) in kinds.iter().enumerate() {
        if kind == AttnKind::ReluSoftmax {
            z[hi * blk..(hi + 1) * blk].copy_from_slice(&x[k..k + blk]);
            k += blk;
        }
    }
    Ok(())
}

/// Steps 3-5 of layer `l` (see the module docs) for every head group and
/// query tile of `spec.tile`: `qkv` (`n x 3d`, read a row piece at a time)
/// to the attention output of query rows `0..queries` (`n` or, in the
/// last layer, 1: the class token; every token is a key), each tile's rows sent for the
/// projection as they are made ([`Party::linear_block`] under `mask`; the
/// host keeps them in `att`, `n x d`, the others' `att` is empty). With
/// more than one query tile, each head's right operands (`K^T` and `V`,
/// ScaleAttn's `K^T V`) are opened in the first tile only
/// ([`Right::Keep`]): their opened values stay in the group's
/// right-operand buffers, where the later tiles' products take them
/// ([`Right::Opened`]).
// The head loops index several per-head arrays in step.
// One function on purpose: steps 3, 4 and 5 fill and read the same
// operand buffers, head by head, with offsets that carry from one step to
// the next (K^T V and the opened operands kept over the query tiles).
#[allow(clippy::needless_range_loop)]
pub(super) fn attention<P: Party + ?Sized>(
    p: &mut P,
    spec: &VitSpec<'_>,
    l: usize,
    qkv: &Rows<'_>,
    mask: u64,
    (queries, att): (usize, &mut [u64]),
    stage: &mut [u64],
) -> Result<(), P::Error> {
    let a = spec.arch;
    let (n, d, nh, hd) = (a.tokens(), a.dim, a.heads, a.head_dim());
    if queries == 0 || queries > n {
        return Err(ProtocolError::BadParameter.into());
    }
    let f = spec.fp.frac_bits();
    let (g, q) = (spec.tile.heads_of(&a), spec.tile.queries_of(&a));
    // a group's products are one flight: no more heads than it holds
    if g > MAX_GROUP {
        return Err(ProtocolError::TooManyOps.into());
    }
    // column of block blk (q, k, v) of head h in qkv
    let col = |blk: usize, h: usize| blk * d + h * hd;
    let scale_head = |h: usize| spec.model.attn(l, h) == AttnKind::Scale;
    // how a head's right operand is opened in the tile at q0 (`first`: the
    // first tile's op that opened it)
    let tiles = q < n;
    let right = |q0: usize, first: u64| {
        if !tiles {
            Right::Share
        } else if q0 == 0 {
            Right::Keep
        } else {
            Right::Opened(first)
        }
    };
    for g0 in (0..nh).step_by(g) {
        let g1 = (g0 + g).min(nh);
        // the normalized heads' lookup or comparison opens the scores at
        // 2f (dropping f bits in its opening, no truncation op) unless a
        // 2Quad head squares them
        let quad = (g0..g1).any(|h| spec.model.attn(l, h) == AttnKind::Quad);
        let pre = if quad { 0 } else { f };
        let sw = score_width(f, pre)?;
        let mut ar = Arena { rest: &mut *stage };
        let b = attn_buffers(g, q, n, hd);
        // K^T V of the group's ScaleAttn heads (in their order), from its
        // truncation in the first tile's step 4 to its product in step 5
        let ktv = ar.take(b.ktv)?;
        // left operands (and the truncated scores of a 2Quad group)
        let mm_x = ar.take(b.x)?;
        // right operands of steps 3 and 5: each product's opened `F` stays
        // in its part over the query tiles (step 3's, of the normalized
        // heads, moved to the front after the first tile)
        let y3 = ar.take(b.y)?;
        let y5 = ar.take(b.y)?;
        let mm_z = ar.take(b.z)?;
        let probs = ar.take(g * q * n)?;
        let nscratch = ar.take(norm_scratch_len(g, q, n, quad))?;
        let row = ar.take(hd)?;
        // RSAttn heads that weight `e V` ([`rs_after_v`]): their rows'
        // reciprocals (the normalized heads' order, then gathered), and
        // the product of the gathered `e V` rows with them
        let mut kinds_g = [AttnKind::Scale; MAX_GROUP];
        for h in g0..g1 {
            kinds_g[h - g0] = spec.model.attn(l, h);
        }
        let after_v = rs_after_v(spec.fp) && kinds_g[..g1 - g0].contains(&AttnKind::ReluSoftmax);
        let rs_inv = ar.take(if after_v { g * q } else { 0 })?;
        let rs_w = ar.take(if after_v { g * q * hd } else { 0 })?;
        // rank of a ScaleAttn head among the group's
        let rank = |h: usize| (g0..h).filter(|&k| scale_head(k)).count();
        // the first tile's first op of step 3 (every head's K^T or K^T V
        // product, in head order) and of step 5 (its V or K^T V product)
        let (mut first3, mut first5) = (0, 0);
        // ScaleAttn's K^T V by key chunks: every chunk but the last in a
        // flight of its own before the first query flight, its sum kept in
        // ktv; the last chunk's product in step 3
        let kc = ktv_chunk(n, q);
        let last_c = (n - 1) / kc * kc;
        let scales = (g0..g1).filter(|&h| scale_head(h)).count();
        if scales > 0 {
            for c0 in (0..last_c).step_by(kc) {
                let kr = (c0 + kc).min(n) - c0;
                let mut shapes = [MatmulShape::new(0, 0, 0); MAX_GROUP];
                let (mut xo, mut yo) = (0, 0);
                for (i, h) in (g0..g1).filter(|&h| scale_head(h)).enumerate() {
                    qkv.load_block_t(p, (c0, kr), col(1, h), row, &mut mm_x[xo..xo + hd * kr])?;
                    qkv.load_block(p, c0, col(2, h), hd, &mut y3[yo..yo + kr * hd])?;
                    shapes[i] = MatmulShape::new(hd, kr, hd);
                    xo += hd * kr;
                    yo += kr * hd;
                }
                let zo = scales * hd * hd;
                p.matmuls(&shapes[..scales], &mm_x[..xo], &mut y3[..yo], &mut mm_z[..zo])?;
                for (a, &v) in ktv[..zo].iter_mut().zip(mm_z[..zo].iter()) {
                    *a = a.wrapping_add(v);
                }
            }
        }
        for q0 in (0..queries).step_by(q) {
            let q1 = (q0 + q).min(queries);
            let qr = q1 - q0;
            // 3. Q K^T for the normalized heads, K^T V for the ScaleAttn
            //    heads (first tile only), one flight; K^T V is truncated in
            //    step 4's first flight (every product here in a group with
            //    a 2Quad head)
            let mut shapes = [MatmulShape::new(0, 0, 0); MAX_GROUP];
            let mut is_ktv = [false; MAX_GROUP];
            let mut ns = 0;
            if q0 == 0 {
                first3 = p.next_op_id();
            }
            let (mut xo, mut yo, mut zo) = (0, 0, 0);
            for h in g0..g1 {
                let s = if scale_head(h) {
                    if q0 > 0 {
                        continue;
                    }
                    let kr = n - last_c;
                    qkv.load_block_t(p, (last_c, kr), col(1, h), row, &mut mm_x[xo..xo + hd * kr])?;
                    qkv.load_block(p, last_c, col(2, h), hd, &mut y3[yo..yo + kr * hd])?;
                    MatmulShape::new(hd, kr, hd)
                } else {
                    qkv.load_block(p, q0, col(0, h), hd, &mut mm_x[xo..xo + qr * hd])?;
                    if q0 == 0 {
                        qkv.load_block_t(p, (0, n), col(1, h), row, &mut y3[yo..yo + hd * n])?;
                    }
                    MatmulShape::new(qr, hd, n)
                        .with_right(right(q0, first3 + (h - g0) as u64))
                        .with_width(sw)
                };
                shapes[ns] = s;
                is_ktv[ns] = scale_head(h);
                ns += 1;
                xo += s.n * s.k;
                yo += s.k * s.m;
                zo += s.n * s.m;
            }
            // with pre > 0, the words of ScaleAttn's untruncated K^T V,
            // gathered into mm_x for the normalization's first flight
            let mut kt = 0;
            if ns > 0 {
                p.matmuls(&shapes[..ns], &mm_x[..xo], &mut y3[..yo], &mut mm_z[..zo])?;
                if last_c > 0 && q0 == 0 {
                    // the earlier key chunks' sum into each K^T V (ScaleAttn
                    // heads in the group's order, as in ktv)
                    let (mut at, mut rk) = (0, 0);
                    for (s, &ktv_of) in shapes[..ns].iter().zip(&is_ktv) {
                        let len = s.n * s.m;
                        if ktv_of {
                            let part = &ktv[rk * hd * hd..(rk + 1) * hd * hd];
                            for (z, &v) in mm_z[at..at + len].iter_mut().zip(part) {
                                *z = z.wrapping_add(v);
                            }
                            rk += 1;
                        }
                        at += len;
                    }
                }
                if tiles && q0 == 0 {
                    // the normalized heads' opened K^T to the front, in
                    // head order: the later tiles' right operands
                    let (mut from, mut to) = (0, 0);
                    for (s, &ktv_of) in shapes[..ns].iter().zip(&is_ktv) {
                        let len = s.k * s.m;
                        if !ktv_of {
                            y3.copy_within(from..from + len, to);
                            to += len;
                        }
                        from += len;
                    }
                }
                if pre == 0 {
                    p.trunc(f, &mm_z[..zo], &mut mm_x[..zo])?;
                    mm_z[..zo].copy_from_slice(&mm_x[..zo]);
                } else {
                    // the scores go on at 2f
                    let mut at = 0;
                    for (s, &ktv_of) in shapes[..ns].iter().zip(&is_ktv) {
                        let len = s.n * s.m;
                        if ktv_of {
                            mm_x[kt..kt + len].copy_from_slice(&mm_z[at..at + len]);
                            kt += len;
                        }
                        at += len;
                    }
                }
            }
            // 4. normalize the non-Scale heads (their scores moved to the
            //    front of mm_z); keep K^T V
            let mut kinds = [AttnKind::Softmax; MAX_GROUP];
            let (mut nk, mut zo, mut so, mut si) = (0, 0, 0, 0);
            for h in g0..g1 {
                if scale_head(h) {
                    if q0 == 0 {
                        if pre == 0 {
                            let at = rank(h) * hd * hd;
                            ktv[at..at + hd * hd].copy_from_slice(&mm_z[zo..zo + hd * hd]);
                        }
                        zo += hd * hd;
                    }
                } else {
                    let len = shapes[si].n * shapes[si].m;
                    kinds[nk] = spec.model.attn(l, h);
                    mm_z.copy_within(zo..zo + len, so);
                    so += len;
                    zo += len;
                    nk += 1;
                }
                if !scale_head(h) || q0 == 0 {
                    si += 1;
                }
            }
            // the truncated K^T V goes straight to ktv (ScaleAttn heads in
            // the group's order)
            let pending = (kt > 0).then_some((&mm_x[..kt], &mut ktv[..kt]));
            normalize_heads(
                p,
                qr,
                n,
                &kinds[..nk],
                pre,
                pending,
                &mm_z[..so],
                (
                    &mut probs[..so],
                    if after_v { Some(&mut rs_inv[..nk * qr]) } else { None },
                ),
                nscratch,
            )?;
            // 5. P V and Q (K^T V), one flight
            let (mut xo, mut yo, mut po) = (0, 0, 0);
            let mut shapes2 = [MatmulShape::new(0, 0, 0); MAX_GROUP];
            if q0 == 0 {
                first5 = p.next_op_id();
            }
            for h in g0..g1 {
                let s = if scale_head(h) {
                    qkv.load_block(p, q0, col(0, h), hd, &mut mm_x[xo..xo + qr * hd])?;
                    if q0 == 0 {
                        let at = rank(h) * hd * hd;
                        y5[yo..yo + hd * hd].copy_from_slice(&ktv[at..at + hd * hd]);
                    }
                    MatmulShape::new(qr, hd, hd)
                } else {
                    mm_x[xo..xo + qr * n].copy_from_slice(&probs[po..po + qr * n]);
                    po += qr * n;
                    if q0 == 0 {
                        qkv.load_block(p, 0, col(2, h), hd, &mut y5[yo..yo + n * hd])?;
                    }
                    MatmulShape::new(qr, n, hd)
                }
                .with_right(right(q0, first5 + (h - g0) as u64));
                shapes2[h - g0] = s;
                xo += s.n * s.k;
                yo += s.k * s.m;
            }
            let gh = g1 - g0;
            p.matmuls(&shapes2[..gh], &mm_x[..xo], &mut y5[..yo], &mut mm_z[..gh * qr * hd])?;
            if after_v {
                rs_weight(p, &kinds_g[..gh], (qr, hd), (&mut *rs_inv, &mut *rs_w), mm_x, mm_z)?;
            }
            // the tile's rows of the group's columns, row-major in mm_x
            // (free after the products), to the projection
            let w = gh * hd;
            let blk = &mut mm_x[..qr * w];
            for h in 0..gh {
                let o = h * qr * hd;
                for t in 0..qr {
                    blk[t * w + h * hd..t * w + (h + 1) * hd].copy_from_slice(&mm_z[o + t * hd..o + (t + 1) * hd]);
                }
            }
            p.linear_block(mask, d, (q0, g0 * hd, w), blk, att)?;
        }
    }
    Ok(())
}
