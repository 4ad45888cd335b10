//! The float model: an owned model file with the plaintext float forward
//! pass (the accuracy oracle), and atomic load/save.

use mpcvit_core::model::{self, Arch, AttnKind, ModelView, Tensor};
use std::path::Path;

pub use mpcvit_core::ops::layernorm::LN_EPS;
pub use mpcvit_core::ops::softmax::{QUAD_C, RS_EPS};

/// An owned, checked model.
#[derive(Clone, Debug)]
pub struct FloatModel {
    /// Architecture.
    pub arch: Arch,
    /// Fixed-point fractional bits.
    pub frac_bits: u32,
    /// Attention kind per `layer * heads + head`.
    pub kinds: Vec<AttnKind>,
    /// GeLU flag per `layer * tokens + token` (false = MPCViT+ linearized).
    pub gelu: Vec<bool>,
    /// All weights in file order.
    pub weights: Vec<f32>,
}

impl FloatModel {
    /// From a checked view.
    pub fn from_view(v: &ModelView<'_>) -> Self {
        let a = v.arch();
        let mut weights = Vec::with_capacity(a.weights());
        for i in 0..a.tensor_count() {
            if let Some(t) = a.tensor_at(i) {
                weights.extend(v.iter(t));
            }
        }
        Self {
            arch: a,
            frac_bits: v.frac_bits(),
            kinds: (0..a.layers)
                .flat_map(|l| (0..a.heads).map(move |h| (l, h)))
                .map(|(l, h)| v.attn(l, h))
                .collect(),
            gelu: (0..a.layers)
                .flat_map(|l| (0..a.tokens()).map(move |t| (l, t)))
                .map(|(l, t)| v.gelu(l, t))
                .collect(),
            weights,
        }
    }

    /// Parses model file bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, String> {
        Ok(Self::from_view(&ModelView::parse(b).map_err(|e| e.to_string())?))
    }

    /// Encodes as a model file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut out = vec![0; self.arch.file_len()];
        let t = self.arch.tokens();
        let h = self.arch.heads;
        model::encode(
            &self.arch,
            self.frac_bits,
            |l, hh| self.kinds[l * h + hh],
            |l, tt| self.gelu[l * t + tt],
            self.weights.iter().copied(),
            &mut out,
        )
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Loads a model file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let b = crate::files::read_bounded(path, "model", crate::files::MAX_MODEL)?;
        Self::from_bytes(&b).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Saves atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// A tensor's weights.
    pub fn tensor(&self, t: Tensor) -> &[f32] {
        let o = self.arch.offset(t);
        &self.weights[o..o + self.arch.len(t)]
    }

    /// Attention kind of `(layer, head)`.
    pub fn kind(&self, l: usize, h: usize) -> AttnKind {
        self.kinds[l * self.arch.heads + h]
    }

    /// The float forward pass: normalised image `[c, h, w]` to logits.
    pub fn forward(&self, image: &[f32]) -> Vec<f32> {
        let x = self.forward_tokens(image);
        let a = &self.arch;
        let d = a.dim;
        let x = layer_norm(&x[..d], self.tensor(Tensor::NormG), self.tensor(Tensor::NormB), d);
        let logits = linear(
            &x,
            self.tensor(Tensor::HeadW),
            Some(self.tensor(Tensor::HeadB)),
            1,
            d,
            a.classes,
        );
        logits.into_iter().map(|v| v as f32).collect()
    }

    /// Tokens after the last encoder layer (before the final LayerNorm).
    pub fn forward_tokens(&self, image: &[f32]) -> Vec<f64> {
        let a = &self.arch;
        let (d, n, p) = (a.dim, a.tokens(), a.patch);
        let g = a.image / p;
        // patch vectors, index (c * p + ky) * p + kx
        let mut patches = vec![0f64; (n - 1) * a.patch_len()];
        for py in 0..g {
            for px in 0..g {
                let row = &mut patches[(py * g + px) * a.patch_len()..][..a.patch_len()];
                for c in 0..a.channels {
                    for ky in 0..p {
                        for kx in 0..p {
                            let src = (c * a.image + py * p + ky) * a.image + px * p + kx;
                            row[(c * p + ky) * p + kx] = image.get(src).copied().unwrap_or(0.0) as f64;
                        }
                    }
                }
            }
        }
        let emb = linear(
            &patches,
            self.tensor(Tensor::PatchW),
            Some(self.tensor(Tensor::PatchB)),
            n - 1,
            a.patch_len(),
            d,
        );
        let pos = self.tensor(Tensor::Pos);
        let cls = self.tensor(Tensor::Cls);
        let mut x = vec![0f64; n * d];
        for j in 0..d {
            x[j] = cls[j] as f64 + pos[j] as f64;
        }
        for t in 1..n {
            for j in 0..d {
                x[t * d + j] = emb[(t - 1) * d + j] + pos[t * d + j] as f64;
            }
        }
        for l in 0..a.layers {
            x = self.layer(l, &x);
        }
        x
    }

    fn layer(&self, l: usize, x: &[f64]) -> Vec<f64> {
        let a = &self.arch;
        let (d, n, h, hd) = (a.dim, a.tokens(), a.heads, a.head_dim());
        let hln = layer_norm(x, self.tensor(Tensor::Ln0G(l)), self.tensor(Tensor::Ln0B(l)), d);
        let qkv = linear(&hln, self.tensor(Tensor::Qkv(l)), None, n, d, 3 * d);
        let scale = (hd as f64).powf(-0.5);
        let mut att = vec![0f64; n * d];
        for head in 0..h {
            let col = |t: usize, which: usize, j: usize| qkv[t * 3 * d + which * d + head * hd + j];
            let mut row = vec![0f64; n];
            for i in 0..n {
                for (jj, r) in row.iter_mut().enumerate() {
                    *r = (0..hd).map(|c| col(i, 0, c) * col(jj, 1, c)).sum::<f64>() * scale;
                }
                let probs = attention_row(self.kind(l, head), &row);
                for c in 0..hd {
                    att[i * d + head * hd + c] = (0..n).map(|jj| probs[jj] * col(jj, 2, c)).sum();
                }
            }
        }
        let proj = linear(
            &att,
            self.tensor(Tensor::ProjW(l)),
            Some(self.tensor(Tensor::ProjB(l))),
            n,
            d,
            d,
        );
        let x1: Vec<f64> = x.iter().zip(&proj).map(|(a, b)| a + b).collect();
        let x1 = layer_norm(&x1, self.tensor(Tensor::Ln1G(l)), self.tensor(Tensor::Ln1B(l)), d);
        let mut hid = linear(
            &x1,
            self.tensor(Tensor::Fc1W(l)),
            Some(self.tensor(Tensor::Fc1B(l))),
            n,
            d,
            a.mlp,
        );
        for t in 0..n {
            if self.gelu[l * n + t] {
                hid[t * a.mlp..(t + 1) * a.mlp].iter_mut().for_each(|v| *v = gelu(*v));
            }
        }
        let mut y = linear(
            &hid,
            self.tensor(Tensor::Fc2W(l)),
            Some(self.tensor(Tensor::Fc2B(l))),
            n,
            a.mlp,
            d,
        );
        for t in 0..n {
            if !self.gelu[l * n + t] {
                y[t * d..(t + 1) * d].iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        x1.iter().zip(&y).map(|(a, b)| a + b).collect()
    }
}

/// One row of attention probabilities from scores `row` (already scaled).
pub fn attention_row(kind: AttnKind, row: &[f64]) -> Vec<f64> {
    let n = row.len() as f64;
    match kind {
        AttnKind::Softmax => {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        }
        AttnKind::ReluSoftmax => {
            let r: Vec<f64> = row.iter().map(|v| v.max(0.0)).collect();
            let s: f64 = r.iter().sum::<f64>() + RS_EPS;
            r.iter().map(|v| v / s).collect()
        }
        AttnKind::Scale => row.iter().map(|v| v / n).collect(),
        AttnKind::Quad => {
            let q: Vec<f64> = row.iter().map(|v| (v + QUAD_C) * (v + QUAD_C)).collect();
            let s: f64 = q.iter().sum();
            q.iter().map(|v| v / s).collect()
        }
    }
}

/// Exact GeLU `x Phi(x)`.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// `x (n x din) W (din x dout) + b`.
pub fn linear(x: &[f64], w: &[f32], b: Option<&[f32]>, n: usize, din: usize, dout: usize) -> Vec<f64> {
    let mut out = vec![0f64; n * dout];
    for i in 0..n {
        let o = &mut out[i * dout..(i + 1) * dout];
        if let Some(b) = b {
            o.iter_mut().zip(b).for_each(|(v, &bb)| *v = bb as f64);
        }
        for k in 0..din {
            let xv = x[i * din + k];
            for (v, &wv) in o.iter_mut().zip(&w[k * dout..(k + 1) * dout]) {
                *v += xv * wv as f64;
            }
        }
    }
    out
}

/// Row-wise LayerNorm with scale `g` and shift `b`.
pub fn layer_norm(x: &[f64], g: &[f32], b: &[f32], d: usize) -> Vec<f64> {
    let mut out = vec![0f64; x.len()];
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        for j in 0..d {
            or[j] = (xr[j] - mean) * inv * g[j] as f64 + b[j] as f64;
        }
    }
    out
}

/// Writes a file atomically: a temporary file beside it, then rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, data).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
