//! The secure MPCViT forward pass wired for tests and the harness: the three
//! parties' weight views, a three-thread run over in-memory pipes, and the
//! plaintext fixed-point reference of the whole model.

use crate::party::Driver;
use crate::{Keys, Res, RunError};
use mpcvit_core::model::{Arch, AttnKind, ModelView};
use mpcvit_core::ops::layernorm::{self, LnSpec};
use mpcvit_core::ops::vit::{self, MLP_GRID_BITS, MLP_RANGE_LOG2, SCORE_RANGE_LOG2, Tile, VitSpec, Weights, Wid};
use mpcvit_core::ops::{activation, softmax};
use mpcvit_core::prg::Seed;
use mpcvit_core::protocol::linear::model_mask;
use mpcvit_core::protocol::pwl::Func;
use mpcvit_core::reference::trunc;
use mpcvit_core::{FixedPoint, SessionId};
use mpcvit_transport::link::Link;
use mpcvit_transport::{Meter, mem};
use std::collections::HashMap;

/// One party's weights.
#[derive(Clone, Debug, Default)]
pub struct WeightMap(pub HashMap<Wid, Vec<u64>>);

impl Weights for WeightMap {
    fn get(&self, id: Wid) -> &[u64] {
        self.0.get(&id).map_or(&[], |v| v.as_slice())
    }
}

/// The host's, the device's and the dealer's views of a model.
/// `model_seed` is the host's per-model mask seed (shared with the dealer).
pub fn weight_maps(m: &ModelView<'_>, fp: FixedPoint, model_seed: &Seed) -> Result<[WeightMap; 3], String> {
    let a = m.arch();
    let (mut h, mut d, mut dl) = (WeightMap::default(), WeightMap::default(), WeightMap::default());
    for id in Wid::all(&a) {
        let mut w = vec![0; id.len(&a)];
        vit::encode_weight(m, fp, id, &mut w).map_err(|e| e.to_string())?;
        if !id.host_only() {
            let mut b = vec![0; w.len()];
            model_mask(model_seed, id.mask_id()).fill(&mut b);
            d.0.insert(id, w.iter().zip(&b).map(|(x, y)| x.wrapping_sub(*y)).collect());
            dl.0.insert(id, b);
        }
        h.0.insert(id, w);
    }
    Ok([h, d, dl])
}

/// An image `[c, h, w]` (normalised floats) as the device's patch matrix.
pub fn patches(m: &ModelView<'_>, fp: FixedPoint, image: &[f32]) -> Vec<u64> {
    patches_for(&m.arch(), fp, image)
}

/// An image `[c, h, w]` (normalised floats) as the patch matrix of `a`.
pub fn patches_for(a: &Arch, fp: FixedPoint, image: &[f32]) -> Vec<u64> {
    let (p, g) = (a.patch, a.image / a.patch);
    let mut out = vec![0; (a.tokens() - 1) * a.patch_len()];
    for py in 0..g {
        for px in 0..g {
            let row = &mut out[(py * g + px) * a.patch_len()..][..a.patch_len()];
            for c in 0..a.channels {
                for ky in 0..p {
                    for kx in 0..p {
                        let src = (c * a.image + py * p + ky) * a.image + px * p + kx;
                        row[(c * p + ky) * p + kx] = fp.encode(image.get(src).copied().unwrap_or(0.0) as f64);
                    }
                }
            }
        }
    }
    out
}

/// What a secure inference measured.
#[derive(Debug, Clone)]
pub struct Inference {
    /// The logits the device received (fixed point).
    pub logits: Vec<u64>,
    /// The host's logits: zeros unless the run revealed them to the host.
    pub host_logits: Vec<u64>,
    /// The device's link meter.
    pub device: Meter,
    /// The host's dealer-link meter.
    pub dealer: Meter,
    /// Wall time, ns.
    pub wall_ns: u64,
}

/// One secure inference with the three parties in threads over in-memory
/// pipes.
pub fn secure(
    m: &ModelView<'_>,
    fp: FixedPoint,
    maps: &[WeightMap; 3],
    keys: &Keys,
    session: u64,
    image: &[f32],
) -> Res<Inference> {
    secure_tiled(m, fp, maps, keys, session, image, Tile::WHOLE, false)
}

/// [`secure`] with each layer cut by `tile`, and the logits revealed to
/// the host too if `logits_to_host`.
#[allow(clippy::too_many_arguments)]
pub fn secure_tiled(
    m: &ModelView<'_>,
    fp: FixedPoint,
    maps: &[WeightMap; 3],
    keys: &Keys,
    session: u64,
    image: &[f32],
    tile: Tile,
    logits_to_host: bool,
) -> Res<Inference> {
    let parties = drivers(fp, keys, session, mem::pair(), mem::pair());
    run_parties(m, fp, maps, parties, image, (tile, logits_to_host))
}

/// Host, device and dealer of `session` over two stream pairs: `dev` =
/// (host end, device end), `dealer` = (host end, dealer end).
fn drivers<T: embedded_io::Read + embedded_io::Write>(
    fp: FixedPoint,
    keys: &Keys,
    session: u64,
    dev: (T, T),
    dealer: (T, T),
) -> [Driver<T>; 3] {
    let sid = SessionId(session);
    let host = Driver::host(
        fp,
        Link::new(dev.0, session),
        Link::new(dealer.0, session),
        &keys.host,
        sid,
    );
    let device = Driver::device(fp, Link::new(dev.1, session), &keys.device, sid);
    let dl = Driver::dealer(fp, Link::new(dealer.1, session), &keys.host, &keys.device, sid);
    [host, device, dl]
}

/// One secure inference with the three parties in threads over TCP on
/// 127.0.0.1.
pub fn secure_tcp(
    m: &ModelView<'_>,
    fp: FixedPoint,
    maps: &[WeightMap; 3],
    keys: &Keys,
    session: u64,
    image: &[f32],
) -> Res<Inference> {
    use mpcvit_transport::tcp::Tcp;
    use std::net::{TcpListener, TcpStream};
    let io = |e: std::io::Error| RunError::Link(e.to_string());
    let timeout = Some(std::time::Duration::from_secs(60));
    let l = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let addr = l.local_addr().map_err(io)?;
    let pair = || -> Res<(Tcp, Tcp)> {
        let a = TcpStream::connect(addr).map_err(io)?;
        let (b, _) = l.accept().map_err(io)?;
        Ok((Tcp::new(a, timeout).map_err(io)?, Tcp::new(b, timeout).map_err(io)?))
    };
    let (dev_end, host_dev) = pair()?;
    let (dealer_end, host_dealer) = pair()?;
    let parties = drivers(fp, keys, session, (host_dev, dev_end), (host_dealer, dealer_end));
    run_parties(m, fp, maps, parties, image, (Tile::WHOLE, false))
}

/// Runs host, device and dealer (in that order in `parties`) in three
/// threads; the device holds the image; every party cuts layers by the
/// tile, and the host sees the logits too if the flag says so.
pub fn run_parties<T: embedded_io::Read + embedded_io::Write + Send>(
    m: &ModelView<'_>,
    fp: FixedPoint,
    maps: &[WeightMap; 3],
    parties: [Driver<T>; 3],
    image: &[f32],
    (tile, logits_to_host): (Tile, bool),
) -> Res<Inference> {
    let a = m.arch();
    let spec = VitSpec {
        arch: a,
        fp,
        model: m,
        tile,
        logits_to_host,
    };
    let x1 = patches(m, fp, image);
    let zeros = vec![0u64; x1.len()];
    let [mut host, mut dev, mut dl] = parties;
    let run = |p: &mut Driver<T>, w: &WeightMap, x: &[u64]| -> Res<Vec<u64>> {
        let mut out = vec![0; a.classes];
        let mut scratch = vec![0; vit::scratch_len(&a, tile)];
        vit::forward(p, &spec, w, x, &mut out, &mut scratch)?;
        Ok(out)
    };
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        let dealer = s.spawn(|| run(&mut dl, &maps[2], &zeros).map(|_| ()));
        let device = s.spawn(|| run(&mut dev, &maps[1], &x1).map(|z| (z, dev.link().meter())));
        let h = run(&mut host, &maps[0], &zeros);
        let d = device
            .join()
            .map_err(|_| RunError::Link("device thread panicked".into()))?;
        let dlr = dealer
            .join()
            .map_err(|_| RunError::Link("dealer thread panicked".into()))?;
        let host_logits = h?;
        dlr?;
        let (logits, meter) = d?;
        Ok(Inference {
            logits,
            host_logits,
            device: meter,
            dealer: host.dealer_link().map(|l| l.meter()).unwrap_or_default(),
            wall_ns: u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX),
        })
    })
}

fn linear(x: &[u64], w: &[u64], b: &[u64], n: usize, din: usize, dout: usize, bits: u32) -> Vec<u64> {
    let mut z = vec![0u64; n * dout];
    mpcvit_core::reference::matmul(x, w, (n, din, dout), &mut z).expect("shape");
    for row in z.chunks_mut(dout) {
        for (v, &bb) in row.iter_mut().zip(b) {
            *v = v.wrapping_add(bb);
        }
    }
    z.iter().map(|&v| trunc(v, bits)).collect()
}

fn matmul_t(x: &[u64], y: &[u64], s: (usize, usize, usize), bits: u32) -> Vec<u64> {
    let mut z = vec![0u64; s.0 * s.2];
    mpcvit_core::reference::matmul(x, y, s, &mut z).expect("shape");
    z.iter().map(|&v| trunc(v, bits)).collect()
}

/// The plaintext fixed-point reference of [`vit::forward`]: the same
/// encodings, folds, truncations and approximations, at exact grid points.
pub fn reference(m: &ModelView<'_>, fp: FixedPoint, w: &WeightMap, image: &[f32]) -> Vec<u64> {
    let a = m.arch();
    let (n, d, nh, hd, mlp) = (a.tokens(), a.dim, a.heads, a.head_dim(), a.mlp);
    let f = fp.frac_bits();
    let pt = patches(m, fp, image);
    let emb = linear(&pt, w.get(Wid::PatchW), w.get(Wid::PatchB), n - 1, a.patch_len(), d, f);
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
    let exp_grid = activation::grid(1, f, SCORE_RANGE_LOG2, 10).expect("grid");
    let mlp_grid = activation::grid(1, f, MLP_RANGE_LOG2, MLP_GRID_BITS).expect("grid");
    let recip = vit::row_recip(n, f);
    for l in 0..a.layers {
        let h0 = ln_rows(&x, None, &[]);
        let qkv = linear(&h0, w.get(Wid::Qkv(l)), w.get(Wid::QkvB(l)), n, d, 3 * d, f);
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
            let kind = m.attn(l, h);
            let out = if kind == AttnKind::Scale {
                let ktv = matmul_t(&kt, &v, (hd, n, hd), f);
                matmul_t(&q, &ktv, (n, hd, hd), 0)
            } else {
                let s = matmul_t(&q, &kt, (n, hd, n), f);
                let mut p = vec![0u64; n * n];
                for (row, prow) in s.chunks(n).zip(p.chunks_mut(n)) {
                    let e: Vec<u64> = match kind {
                        AttnKind::Softmax => row
                            .iter()
                            .map(|&v| activation::fitted_reference(Func::Exp, exp_grid, fp, v.wrapping_sub(row[0])))
                            .collect(),
                        AttnKind::ReluSoftmax => row.iter().map(|&v| activation::relu_reference(v)).collect(),
                        _ => row
                            .iter()
                            .map(|&v| {
                                let c = v.wrapping_add(fp.encode(softmax::QUAD_C));
                                trunc(c.wrapping_mul(c), f)
                            })
                            .collect(),
                    };
                    let sum = e.iter().fold(0u64, |a, &b| a.wrapping_add(b));
                    let inv = recip.reference(sum);
                    for (o, &ev) in prow.iter_mut().zip(&e) {
                        *o = trunc(ev.wrapping_mul(inv), recip.out_frac);
                    }
                }
                matmul_t(&p, &v, (n, n, hd), 0)
            };
            for t in 0..n {
                att[t * d + h * hd..t * d + (h + 1) * hd].copy_from_slice(&out[t * hd..(t + 1) * hd]);
            }
        }
        let proj = linear(&att, w.get(Wid::Proj(l)), w.get(Wid::ProjB(l)), n, d, d, 2 * f);
        for (v, p) in x.iter_mut().zip(&proj) {
            *v = v.wrapping_add(*p);
        }
        x = ln_rows(&x, Some(w.get(Wid::Ln1G(l))), w.get(Wid::Ln1B(l)));
        let mut hid = linear(&x, w.get(Wid::Fc1(l)), w.get(Wid::Fc1B(l)), n, d, mlp, f);
        for t in 0..n {
            if m.gelu(l, t) {
                for v in &mut hid[t * mlp..(t + 1) * mlp] {
                    *v = activation::fitted_reference(Func::Gelu, mlp_grid, fp, *v);
                }
            }
        }
        let mut y = linear(&hid, w.get(Wid::Fc2(l)), w.get(Wid::Fc2B(l)), n, mlp, d, f);
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
    linear(&h, w.get(Wid::Head), w.get(Wid::HeadB), 1, d, a.classes, f)
}

/// The device's provisioning blob for a model file: its `W - B` words.
pub fn device_blob(model_file: &[u8], fp: FixedPoint, model_seed: &Seed) -> Result<Vec<u8>, String> {
    let m = ModelView::parse(model_file).map_err(|e| e.to_string())?;
    let a = m.arch();
    let maps = weight_maps(&m, fp, model_seed)?;
    let words: Vec<u64> = Wid::all(&a)
        .filter(|w| !w.host_only())
        .flat_map(|w| maps[1].get(w).to_vec())
        .collect();
    let mut out = vec![0; mpcvit_core::provision::blob_len(&a)];
    mpcvit_core::provision::encode(
        &a,
        fp.frac_bits(),
        mpcvit_core::provision::model_crc(model_file),
        &m,
        words.into_iter(),
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

impl WeightMap {
    /// The dealer's view: the masks `B` of every host-private weight, from
    /// the per-model mask seed (no weights needed).
    pub fn dealer(a: &Arch, model_seed: &Seed) -> Self {
        Self(
            Wid::all(a)
                .filter(|w| !w.host_only())
                .map(|w| {
                    let mut b = vec![0; w.len(a)];
                    model_mask(model_seed, w.mask_id()).fill(&mut b);
                    (w, b)
                })
                .collect(),
        )
    }

    /// The device's view read from its provisioning blob.
    pub fn from_blob(b: &mpcvit_core::provision::BlobView<'_>) -> Self {
        let a = b.arch();
        Self(
            Wid::all(&a)
                .filter(|w| !w.host_only())
                .map(|w| (w, b.words(w).collect()))
                .collect(),
        )
    }
}
