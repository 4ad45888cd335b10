//! `mpcvit train`: the MPCViT method on CPU with burn (feature `train`).
//!
//! Stages, each resumable (a checkpoint after every epoch) and logged to
//! `OUT/train.log`:
//! 1. **teacher**: an all-Softmax ViT of the same shape;
//! 2. **search**: every head is `a RSAttn + (1 - a) ScaleAttn` with a
//!    learnable `a` (init 1), loss CE + lambda L1(a), warm-started from the
//!    teacher; with `--plus`, a per-token `beta` (init 1) also mixes GeLU with
//!    the identity in the MLP (MPCViT+);
//! 3. **binarize**: the top `mu` fraction of all alphas (across layers and
//!    heads) become RSAttn, the rest ScaleAttn (betas likewise with
//!    `--mu-beta`);
//! 4. **retrain** the binarized model, with knowledge distillation from the
//!    teacher (soft cross-entropy on logits + 0.5 MSE on the final tokens, as
//!    the official `KLTokenMSELoss`, plus CE on the labels) unless `--no-kd`;
//! 5. **export** to the core model format and check the float forward of the
//!    exported file against burn's.
//!
//! Resuming restarts an interrupted stage at its last finished epoch with the
//! model, AdamW's state and the learning-rate schedule of that epoch, so a
//! resumed run goes on as an uninterrupted one would. (A checkpoint written
//! before the optimizer state was saved resumes with fresh AdamW moments, as
//! its log line says.) Each epoch's checkpoint files are written beside the
//! old ones and renamed over them, the epoch number last.

use crate::data::{self, Dataset};
use crate::float::FloatModel;
use crate::logits::argmax;
use crate::progress::Progress;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::module::Param;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::{gelu, log_softmax, relu, softmax};
use mpcvit_core::model::{Arch, AttnKind as FileKind, Tensor as T};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `mpcvit train`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Output directory: checkpoints, logs, the exported model.
    #[arg(long, default_value = "runs/fmnist")]
    pub out: PathBuf,
    /// Dataset: fashion-mnist or cifar10.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Fashion-MNIST directory.
    #[arg(long, default_value = data::FASHION_MNIST_DIR)]
    pub data_dir: PathBuf,
    /// CIFAR-10 training batch files (data_batch_*.bin).
    #[arg(long, num_args = 1..)]
    pub cifar_train: Vec<PathBuf>,
    /// CIFAR-10 test batch file (test_batch.bin).
    #[arg(long)]
    pub cifar_test: Option<PathBuf>,
    /// Epochs of the Softmax teacher.
    #[arg(long, default_value_t = 10)]
    pub epochs_teacher: usize,
    /// Epochs of the architecture search.
    #[arg(long, default_value_t = 2)]
    pub epochs_search: usize,
    /// Epochs of the retraining after binarization.
    #[arg(long, default_value_t = 10)]
    pub epochs_retrain: usize,
    /// Fraction of heads kept as RSAttn (the rest ScaleAttn).
    #[arg(long, default_value_t = 0.5)]
    pub mu: f64,
    /// Retrain without knowledge distillation.
    #[arg(long)]
    pub no_kd: bool,
    /// Weight of the L1 penalty on the alphas (and betas).
    #[arg(long, default_value_t = 1e-5)]
    pub lambda: f64,
    /// MPCViT+: also search and binarize the per-token MLP linearization.
    #[arg(long)]
    pub plus: bool,
    /// MPCViT+: fraction of (layer, token) MLPs that keep GeLU.
    #[arg(long, default_value_t = 0.5)]
    pub mu_beta: f64,
    /// Training augmentation: random shift by up to this many pixels plus a
    /// random left-right mirror; 0 turns augmentation off.
    #[arg(long, default_value_t = 2)]
    pub augment: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Peak learning rate (AdamW, cosine schedule).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Use only the first N training images.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Stop each epoch after this many steps (smoke runs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Stop a stage after its epoch N checkpoint, as an interruption would
    /// (exits with an error; run again to resume). For checking resumes.
    #[arg(long, value_name = "N")]
    pub stop_after_epoch: Option<usize>,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Encoder layers.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Heads per layer.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// MLP hidden width.
    #[arg(long, default_value_t = 128)]
    pub mlp: usize,
    /// Patch size.
    #[arg(long, default_value_t = 4)]
    pub patch: usize,
    /// Fixed-point fractional bits recorded in the exported model.
    #[arg(long, default_value_t = 16)]
    pub frac_bits: u32,
    /// Train the teacher only (for the teacher row of the results table).
    #[arg(long)]
    pub teacher_only: bool,
    /// Skip the search: all heads of this kind (rsattn or scale).
    #[arg(long)]
    pub uniform: Option<String>,
    /// Name of the exported model file inside OUT.
    #[arg(long, default_value = "model.mpcvit")]
    pub export_name: String,
}

/// Attention mode of a head during training.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum Mode {
    /// Softmax.
    Softmax,
    /// RSAttn.
    Relu,
    /// ScaleAttn.
    Scale,
    /// Searching: alpha RSAttn + (1 - alpha) ScaleAttn.
    Search,
}

/// Model configuration.
#[derive(Config, Debug)]
pub struct VitConfig {
    /// Mode per `layer * heads + head`.
    pub modes: Vec<Mode>,
    /// GeLU flag per `layer * tokens + token` (ignored while searching beta).
    pub gelu: Vec<bool>,
    /// Search the per-token beta.
    pub search_beta: bool,
    /// Image side.
    pub image: usize,
    /// Channels.
    pub channels: usize,
    /// Patch.
    pub patch: usize,
    /// Dim.
    pub dim: usize,
    /// Layers.
    pub depth: usize,
    /// Heads.
    pub heads: usize,
    /// MLP width.
    pub mlp: usize,
    /// Classes.
    pub classes: usize,
}

#[derive(Module, Debug)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    alpha: Param<Tensor<1>>,
    #[module(skip)]
    modes: Vec<Mode>,
    heads: usize,
}

#[derive(Module, Debug)]
pub struct Block {
    ln0: LayerNorm,
    attn: Attention,
    ln1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    beta: Param<Tensor<1>>,
    #[module(skip)]
    gelu: Vec<bool>,
    search_beta: bool,
}

#[derive(Module, Debug)]
pub struct Vit {
    patch_embed: Linear,
    cls: Param<Tensor<3>>,
    pos: Param<Tensor<3>>,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
    patch: usize,
    channels: usize,
}

fn mask(v: Vec<f32>, shape: [usize; 4], dev: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(v, shape), dev)
}

impl Attention {
    fn coef(&self, m: Mode, dev: &Device) -> (bool, Tensor<4>) {
        let v: Vec<f32> = self.modes.iter().map(|&x| (x == m) as u8 as f32).collect();
        (v.iter().any(|&c| c > 0.0), mask(v, [1, self.heads, 1, 1], dev))
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let (h, dh) = (self.heads, d / self.heads);
        let dev = x.device();
        let qkv = self.qkv.forward(x).reshape([b, n, 3 * h, dh]).swap_dims(1, 2);
        let q = qkv.clone().narrow(1, 0, h);
        let k = qkv.clone().narrow(1, h, h);
        let v = qkv.narrow(1, 2 * h, h);
        let a = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (dh as f32).sqrt());
        let (any_sm, c_sm) = self.coef(Mode::Softmax, &dev);
        let (any_rs, c_rs) = self.coef(Mode::Relu, &dev);
        let (any_sc, c_sc) = self.coef(Mode::Scale, &dev);
        let (any_mx, c_mx) = self.coef(Mode::Search, &dev);
        // alpha enters the graph only when a head searches: an all-Softmax
        // teacher that computed it anyway left one unreachable autodiff graph
        // per step, and burn's sweep of them on every backward made training
        // slower the longer it ran (5x slower after 900 steps)
        let (w_rs, w_sc) = if any_mx {
            let alpha = self.alpha.val().clamp(0.0, 1.0).reshape([1, h, 1, 1]);
            (
                c_rs + c_mx.clone() * alpha.clone(),
                c_sc + c_mx * alpha.neg().add_scalar(1.0),
            )
        } else {
            (c_rs, c_sc)
        };
        let mut p = Tensor::<4>::zeros([b, h, n, n], &dev);
        if any_sm {
            p = p + softmax(a.clone(), 3) * c_sm;
        }
        if any_rs || any_mx {
            let r = relu(a.clone());
            let r = r.clone() / r.sum_dim(3).add_scalar(1e-5);
            p = p + r * w_rs;
        }
        if any_sc || any_mx {
            p = p + a.div_scalar(n as f32) * w_sc;
        }
        self.proj.forward(p.matmul(v).swap_dims(1, 2).reshape([b, n, d]))
    }

    fn alpha_l1(&self) -> Tensor<1> {
        let (_, m) = self.coef(Mode::Search, &self.alpha.val().device());
        (self.alpha.val().abs() * m.reshape([self.heads])).sum()
    }
}

impl Block {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [_, n, _] = x.dims();
        let x = x.clone() + self.attn.forward(self.ln0.forward(x));
        let x = self.ln1.forward(x);
        let h = self.fc1.forward(x.clone());
        let dev = x.device();
        let beta = if self.search_beta {
            self.beta.val().clamp(0.0, 1.0).reshape([1, n, 1])
        } else {
            let v: Vec<f32> = self.gelu.iter().map(|&g| g as u8 as f32).collect();
            Tensor::<3>::from_data(TensorData::new(v, [1, n, 1]), &dev)
        };
        let h = gelu(h.clone()) * beta.clone() + h * beta.clone().neg().add_scalar(1.0);
        let y = self.fc2.forward(h);
        let y = relu(y.clone()) * beta.clone().neg().add_scalar(1.0) + y * beta;
        x + y
    }
}

impl VitConfig {
    fn tokens(&self) -> usize {
        (self.image / self.patch).pow(2) + 1
    }

    /// A freshly initialised model.
    pub fn init(&self, dev: &Device) -> Vit {
        let (d, h, t) = (self.dim, self.heads, self.tokens());
        let lin = |i, o| LinearConfig::new(i, o).with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 });
        let blocks = (0..self.depth)
            .map(|l| Block {
                ln0: LayerNormConfig::new(d).init(dev),
                attn: Attention {
                    qkv: lin(d, 3 * d).with_bias(false).init(dev),
                    proj: lin(d, d).init(dev),
                    alpha: Initializer::Constant { value: 1.0 }.init([h], dev),
                    modes: self.modes[l * h..(l + 1) * h].to_vec(),
                    heads: h,
                },
                ln1: LayerNormConfig::new(d).init(dev),
                fc1: lin(d, self.mlp).init(dev),
                fc2: lin(self.mlp, d).init(dev),
                beta: Initializer::Constant { value: 1.0 }.init([t], dev),
                gelu: self.gelu[l * t..(l + 1) * t].to_vec(),
                search_beta: self.search_beta,
            })
            .collect();
        Vit {
            patch_embed: lin(self.patch * self.patch * self.channels, d).init(dev),
            cls: Initializer::Zeros.init([1, 1, d], dev),
            pos: Initializer::Normal { mean: 0.0, std: 0.2 }.init([1, t, d], dev),
            blocks,
            norm: LayerNormConfig::new(d).init(dev),
            head: lin(d, self.classes).init(dev),
            patch: self.patch,
            channels: self.channels,
        }
    }
}

impl Vit {
    /// Images `[b, c*h*w]` (normalised) to (logits, final normed tokens).
    pub fn forward(&self, x: Tensor<2>, side: usize) -> (Tensor<2>, Tensor<3>) {
        let [b, _] = x.dims();
        let (p, c) = (self.patch, self.channels);
        let g = side / p;
        let x = x
            .reshape([b * c, g, p, g, p])
            .permute([0, 1, 3, 2, 4])
            .reshape([b, c, g * g, p * p])
            .swap_dims(1, 2)
            .reshape([b, g * g, c * p * p]);
        let x = self.patch_embed.forward(x);
        let d = x.dims()[2];
        let cls = self.cls.val().expand([b, 1, d]);
        let mut x = Tensor::cat(vec![cls, x], 1) + self.pos.val();
        for blk in &self.blocks {
            x = blk.forward(x);
        }
        let x = self.norm.forward(x);
        (self.head.forward(x.clone().narrow(1, 0, 1).reshape([b, d])), x)
    }

    fn l1(&self) -> Option<Tensor<1>> {
        let mut s: Option<Tensor<1>> = None;
        for blk in &self.blocks {
            let mut t = blk.attn.alpha_l1();
            if blk.search_beta {
                t = t + blk.beta.val().abs().sum();
            }
            s = Some(match s {
                Some(a) => a + t,
                None => t,
            });
        }
        s
    }

    fn alphas(&self) -> Vec<f32> {
        self.blocks.iter().flat_map(|b| to_vec(b.attn.alpha.val())).collect()
    }

    fn betas(&self) -> Vec<f32> {
        self.blocks.iter().flat_map(|b| to_vec(b.beta.val())).collect()
    }
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap_or_default()
}

/// The dataset pair for the run.
fn load(a: &Args) -> Result<(Dataset, Dataset), String> {
    let (mut tr, mut te) = match a.dataset.as_str() {
        "fashion-mnist" => (
            data::fashion_mnist(&a.data_dir, "train")?,
            data::fashion_mnist(&a.data_dir, "t10k")?,
        ),
        "cifar10" => {
            let test = a.cifar_test.clone().ok_or("--cifar-test is required for cifar10")?;
            (data::cifar10(&a.cifar_train)?, data::cifar10(&[test])?)
        }
        other => return Err(format!("unknown dataset {other:?} (fashion-mnist or cifar10)")),
    };
    if let Some(n) = a.limit_train {
        tr.truncate(n);
    }
    if let Some(n) = a.limit_test {
        te.truncate(n);
    }
    Ok((tr, te))
}

fn batch(ds: &Dataset, idx: &[usize], dev: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let mut xb = Vec::with_capacity(idx.len() * ds.image_len());
    for &i in idx {
        xb.extend(ds.image(i));
    }
    let yb: Vec<i64> = idx.iter().map(|&i| ds.labels[i] as i64).collect();
    (
        Tensor::from_data(TensorData::new(xb, [idx.len(), ds.image_len()]), dev),
        Tensor::from_data(TensorData::new(yb, [idx.len()]), dev),
    )
}

/// A training batch with augmentation: each image is shifted by up to
/// `shift` pixels in each direction (the uncovered border is background, raw
/// value 0) and mirrored left-right with probability 1/2, both drawn from
/// `seed` and the image's position so that a resumed run sees the same data.
fn batch_augmented(ds: &Dataset, idx: &[usize], shift: usize, seed: u64, dev: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let (side, plane) = (ds.side, ds.side * ds.side);
    let mut xb = Vec::with_capacity(idx.len() * ds.image_len());
    let mut raw = vec![0u8; ds.image_len()];
    for (k, &i) in idx.iter().enumerate() {
        let mut s = (seed ^ (k as u64).wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (i as u64) << 20) | 1;
        let mut draw = |m: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % m
        };
        let span = 2 * shift as u64 + 1;
        let dy = draw(span) as isize - shift as isize;
        let dx = draw(span) as isize - shift as isize;
        let flip = draw(2) == 1;
        let src = ds.raw(i);
        for c in 0..ds.channels {
            for y in 0..side {
                for x in 0..side {
                    let sx = if flip { side - 1 - x } else { x } as isize - dx;
                    let sy = y as isize - dy;
                    let inside = (0..side as isize).contains(&sx) && (0..side as isize).contains(&sy);
                    raw[c * plane + y * side + x] = if inside {
                        src[c * plane + sy as usize * side + sx as usize]
                    } else {
                        0
                    };
                }
            }
        }
        xb.extend(
            raw.iter()
                .enumerate()
                .map(|(j, &p)| (p as f32 / 255.0 - ds.mean[j / plane]) / ds.std[j / plane]),
        );
    }
    let yb: Vec<i64> = idx.iter().map(|&i| ds.labels[i] as i64).collect();
    (
        Tensor::from_data(TensorData::new(xb, [idx.len(), ds.image_len()]), dev),
        Tensor::from_data(TensorData::new(yb, [idx.len()]), dev),
    )
}

fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// Test accuracy of a model.
pub fn evaluate(m: &Vit, ds: &Dataset, dev: &Device) -> f64 {
    let m = m.valid();
    let plain = dev.clone().without_autodiff();
    let idx: Vec<usize> = (0..ds.len()).collect();
    let mut correct = 0i64;
    for c in idx.chunks(500) {
        let (xb, yb) = batch(ds, c, &plain);
        let (logits, _) = m.forward(xb, ds.side);
        correct += logits
            .argmax(1)
            .reshape([c.len()])
            .equal(yb)
            .int()
            .sum()
            .into_scalar::<i64>();
    }
    correct as f64 / ds.len().max(1) as f64
}

struct Log(std::fs::File);

impl Log {
    fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let p = dir.join("train.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
        Ok(Self(f))
    }
    fn line(&mut self, s: &str) {
        let _ = writeln!(self.0, "{s}");
        eprintln!("{s}");
    }
}

struct Stage<'a> {
    name: &'a str,
    epochs: usize,
    lambda: f64,
    teacher: Option<&'a Vit>,
}

/// The heads the search keeps as RSAttn (the top `--mu` of its alphas, the
/// rest ScaleAttn) and, with `--plus`, the token MLPs that keep GeLU (the
/// top `--mu-beta` of its betas).
fn binarize(a: &Args, searched: &Vit, all_gelu: &[bool], log: &mut Log) -> (Vec<Mode>, Vec<bool>) {
    let alphas = searched.alphas();
    let keep = top_fraction(&alphas, a.mu);
    let modes: Vec<Mode> = keep.iter().map(|&k| if k { Mode::Relu } else { Mode::Scale }).collect();
    log.line(&format!("[binarize] alphas {alphas:.3?}"));
    log.line(&format!(
        "[binarize] mu {} -> {} of {} heads RSAttn: {modes:?}",
        a.mu,
        keep.iter().filter(|&&k| k).count(),
        keep.len()
    ));
    let gelu = if a.plus {
        let betas = searched.betas();
        let g = top_fraction(&betas, a.mu_beta);
        log.line(&format!(
            "[binarize] mu-beta {} -> {} of {} token MLPs keep GeLU",
            a.mu_beta,
            g.iter().filter(|&&k| k).count(),
            g.len()
        ));
        g
    } else {
        all_gelu.to_vec()
    };
    (modes, gelu)
}

/// Exports the final model to the core format and checks the export's float
/// forward pass against burn's on up to 200 test images; writes the run's
/// report (`TAG.json`).
fn export_and_check(
    a: &Args,
    (final_model, final_cfg): (&Vit, &VitConfig),
    data: &(Dataset, Dataset),
    dev: &Device,
    log: &mut Log,
    (tag, t_acc): (&str, f64),
) -> Result<(), String> {
    let acc = evaluate(final_model, &data.1, dev);
    let fm = export(final_model, final_cfg, a.frac_bits)?;
    let path = a.out.join(&a.export_name);
    fm.save(&path)?;
    let back = FloatModel::load(&path)?;
    let check = data.1.len().min(200);
    let plain = dev.clone().without_autodiff();
    let valid = final_model.valid();
    let idx: Vec<usize> = (0..check).collect();
    let (xb, _) = batch(&data.1, &idx, &plain);
    let burn_logits = to_vec(valid.forward(xb, data.1.side).0);
    let (mut max_diff, mut agree, mut correct) = (0f32, 0usize, 0usize);
    let classes = data.1.classes;
    for i in 0..check {
        let ours = back.forward(&data.1.image(i));
        let theirs = &burn_logits[i * classes..(i + 1) * classes];
        for (o, t) in ours.iter().zip(theirs) {
            max_diff = max_diff.max((o - t).abs());
        }
        agree += (argmax(&ours) == argmax(theirs)) as usize;
        correct += (argmax(&ours) == data.1.labels[i] as usize) as usize;
    }
    log.line(&format!(
        "[export] {} ({} weights): burn test accuracy {acc:.4}; exported float forward vs burn on {check} images: max |logit diff| {max_diff:.2e}, argmax agreement {agree}/{check}, accuracy {:.4}",
        path.display(),
        fm.arch.weights(),
        correct as f64 / check.max(1) as f64
    ));
    if agree + check / 50 < check {
        return Err(format!(
            "exported model disagrees with burn on {} of {check} images",
            check - agree
        ));
    }
    let report = serde_json::json!({
        "tag": tag, "float_test_accuracy": acc, "teacher_test_accuracy": t_acc,
        "test_images": data.1.len(), "model": path, "kinds": format!("{:?}", fm.kinds),
        "linearized_mlps": fm.gelu.iter().filter(|g| !**g).count(),
    });
    let rp = a.out.join(format!("{tag}.json"));
    crate::float::write_atomic(
        &rp,
        serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())?
            .as_bytes(),
    )?;
    Ok(())
}

/// The loss of one training batch (`idx` of `train`; augmented with
/// `seed`): cross-entropy, plus distillation from the teacher (KL on
/// softened logits + MSE on the final tokens) and the search's L1 on alpha
/// when the stage has them; and how many of the batch the model got right.
fn batch_loss(
    a: &Args,
    st: &Stage<'_>,
    (model, teacher): (&Vit, Option<&Vit>),
    ce: &burn::nn::loss::CrossEntropyLoss,
    (train, idx): (&Dataset, &[usize]),
    seed: u64,
    dev: &Device,
) -> (Tensor<1>, i64) {
    let (xb, yb) = if a.augment > 0 {
        batch_augmented(train, idx, a.augment, seed, dev)
    } else {
        batch(train, idx, dev)
    };
    let (logits, tokens) = model.forward(xb.clone(), train.side);
    let mut loss = ce.forward(logits.clone(), yb.clone());
    if let Some(t) = teacher {
        let (tl, tt) = t.forward(xb.without_autodiff(), train.side);
        let soft = (softmax(tl, 1) * log_softmax(logits.clone(), 1))
            .sum_dim(1)
            .neg()
            .mean();
        let diff = tokens - tt;
        let mse = (diff.clone() * diff).mean();
        loss = loss + soft + mse.mul_scalar(0.5);
    }
    if st.lambda > 0.0
        && let Some(l1) = model.l1()
    {
        loss = loss + l1.mul_scalar(st.lambda);
    }
    let correct: i64 = logits
        .argmax(1)
        .reshape([idx.len()])
        .equal(yb)
        .int()
        .sum()
        .into_scalar::<i64>();
    (loss, correct)
}

/// Trains one stage with a checkpoint per epoch; returns the final model.
fn run_stage(
    a: &Args,
    st: &Stage<'_>,
    cfg: &VitConfig,
    init: Vit,
    data: &(Dataset, Dataset),
    dev: &Device,
    log: &mut Log,
) -> Result<Vit, String> {
    let done = a.out.join(format!("{}.bpk", st.name));
    if done.exists() {
        log.line(&format!("[{}] already done: loading {}", st.name, done.display()));
        return cfg
            .init(dev)
            .try_load_file(&done)
            .map_err(|e| format!("cannot load {}: {e:?}", done.display()));
    }
    let ckpt = a.out.join(format!("{}.ckpt.bpk", st.name));
    let optim_ckpt = a.out.join(format!("{}.optim.bpk", st.name));
    let state = a.out.join(format!("{}.epoch", st.name));
    let (train, test) = data;
    let per_epoch = (train.len() / a.batch).min(a.max_steps.unwrap_or(usize::MAX)).max(1);
    let total = per_epoch * st.epochs.max(1);
    let mut model = init;
    let mut start = 0;
    if ckpt.exists() && state.exists() {
        start = std::fs::read_to_string(&state)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        model = cfg
            .init(dev)
            .try_load_file(&ckpt)
            .map_err(|e| format!("cannot load {}: {e:?}", ckpt.display()))?;
    }
    let ce = CrossEntropyLossConfig::new().init(dev);
    let mut optim = AdamWConfig::new().with_weight_decay(0.05).init();
    if start > 0 {
        if optim_ckpt.exists() {
            optim = optim
                .load(&optim_ckpt)
                .map_err(|e| format!("cannot load {}: {e:?}", optim_ckpt.display()))?;
            log.line(&format!("[{}] resuming after epoch {start}", st.name));
        } else {
            log.line(&format!(
                "[{}] resuming after epoch {start} (no optimizer state saved: AdamW's moments start afresh)",
                st.name
            ));
        }
    }
    let mut sched = CosineAnnealingLrSchedulerConfig::new(a.lr, total)
        .with_min_lr(a.lr / 100.0)
        .init()
        .map_err(|e| format!("bad learning-rate schedule: {e}"))?;
    for _ in 0..start * per_epoch {
        sched.step();
    }
    let teacher = st.teacher.map(|t| t.valid());
    for epoch in start..st.epochs {
        let order = shuffled(train.len(), a.seed ^ (epoch as u64 + 1) ^ st.name.len() as u64);
        let mut pb = Progress::new(per_epoch, &format!("{} epoch {}/{}", st.name, epoch + 1, st.epochs));
        let t0 = Instant::now();
        let (mut run_loss, mut run_acc, mut seen) = (0.0f64, 0i64, 0usize);
        for step in 0..per_epoch {
            let idx = &order[step * a.batch..(step + 1) * a.batch];
            let seed = a.seed ^ ((epoch * per_epoch + step) as u64) << 8;
            let (loss, correct) = batch_loss(a, st, (&model, teacher.as_ref()), &ce, (train, idx), seed, dev);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(sched.step(), model, grads);
            run_loss += loss.into_scalar::<f32>() as f64;
            run_acc += correct;
            seen += idx.len();
            pb.set_message(format!(
                "loss {:.4} acc {:.3}",
                run_loss / (step + 1) as f64,
                run_acc as f64 / seen as f64
            ));
            pb.inc();
        }
        pb.finish();
        let acc = evaluate(&model, test, dev);
        log.line(&format!(
            "[{}] epoch {}/{} loss {:.4} train-acc {:.4} test-acc {:.4} ({:.0} img/s)",
            st.name,
            epoch + 1,
            st.epochs,
            run_loss / per_epoch as f64,
            run_acc as f64 / seen.max(1) as f64,
            acc,
            seen as f64 / t0.elapsed().as_secs_f64()
        ));
        save_checkpoint(&model, &optim, epoch + 1, [&ckpt, &optim_ckpt, &state])?;
        if a.stop_after_epoch == Some(epoch + 1) && epoch + 1 < st.epochs {
            return Err(format!(
                "[{}] stopped after epoch {} as asked (--stop-after-epoch); run again to resume",
                st.name,
                epoch + 1
            ));
        }
    }
    model
        .clone()
        .save_file(&done)
        .map_err(|e| format!("cannot save {}: {e:?}", done.display()))?;
    let _ = std::fs::remove_file(&ckpt);
    let _ = std::fs::remove_file(&optim_ckpt);
    let _ = std::fs::remove_file(&state);
    Ok(model)
}

/// Writes an epoch's model, optimizer state and epoch number beside the old
/// ones (`*.part.bpk`, `*.epoch.part`), then renames them over the old ones,
/// the epoch number last: a run stopped while writing (the slow part)
/// resumes from the last whole epoch; only a stop in the instant between
/// the renames leaves the model an epoch ahead of its number.
fn save_checkpoint(
    model: &Vit,
    optim: &burn::optim::ModuleOptimizer,
    epoch: usize,
    [ckpt, optim_ckpt, state]: [&Path; 3],
) -> Result<(), String> {
    let (ckpt_part, optim_part, state_part) = (
        ckpt.with_extension("part.bpk"),
        optim_ckpt.with_extension("part.bpk"),
        state.with_extension("epoch.part"),
    );
    model
        .clone()
        .save_file(&ckpt_part)
        .map_err(|e| format!("cannot save {}: {e:?}", ckpt_part.display()))?;
    optim
        .save(&optim_part)
        .map_err(|e| format!("cannot save {}: {e:?}", optim_part.display()))?;
    std::fs::write(&state_part, format!("{epoch}\n"))
        .map_err(|e| format!("cannot write {}: {e}", state_part.display()))?;
    for (from, to) in [(&ckpt_part, ckpt), (&optim_part, optim_ckpt), (&state_part, state)] {
        std::fs::rename(from, to).map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

fn top_fraction(v: &[f32], mu: f64) -> Vec<bool> {
    let keep = ((mu * v.len() as f64).round() as usize).min(v.len());
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[j].total_cmp(&v[i]).then(i.cmp(&j)));
    let mut out = vec![false; v.len()];
    for &i in order.iter().take(keep) {
        out[i] = true;
    }
    out
}

/// Exports a trained model to the core format.
pub fn export(m: &Vit, cfg: &VitConfig, frac_bits: u32) -> Result<FloatModel, String> {
    let arch = Arch {
        image: cfg.image,
        channels: cfg.channels,
        patch: cfg.patch,
        dim: cfg.dim,
        layers: cfg.depth,
        heads: cfg.heads,
        mlp: cfg.mlp,
        classes: cfg.classes,
    };
    arch.check().map_err(|e| e.to_string())?;
    let lin_w = |l: &Linear| to_vec(l.weight.val());
    let lin_b = |l: &Linear| l.bias.as_ref().map(|b| to_vec(b.val())).unwrap_or_default();
    let ln = |n: &LayerNorm| {
        (
            to_vec(n.gamma.val()),
            n.beta.as_ref().map(|b| to_vec(b.val())).unwrap_or_default(),
        )
    };
    let mut weights = Vec::with_capacity(arch.weights());
    for i in 0..arch.tensor_count() {
        let t = arch.tensor_at(i).ok_or("tensor index")?;
        let v = match t {
            T::PatchW => lin_w(&m.patch_embed),
            T::PatchB => lin_b(&m.patch_embed),
            T::Cls => to_vec(m.cls.val()),
            T::Pos => to_vec(m.pos.val()),
            T::Ln0G(l) => ln(&m.blocks[l].ln0).0,
            T::Ln0B(l) => ln(&m.blocks[l].ln0).1,
            T::Qkv(l) => lin_w(&m.blocks[l].attn.qkv),
            T::ProjW(l) => lin_w(&m.blocks[l].attn.proj),
            T::ProjB(l) => lin_b(&m.blocks[l].attn.proj),
            T::Ln1G(l) => ln(&m.blocks[l].ln1).0,
            T::Ln1B(l) => ln(&m.blocks[l].ln1).1,
            T::Fc1W(l) => lin_w(&m.blocks[l].fc1),
            T::Fc1B(l) => lin_b(&m.blocks[l].fc1),
            T::Fc2W(l) => lin_w(&m.blocks[l].fc2),
            T::Fc2B(l) => lin_b(&m.blocks[l].fc2),
            T::NormG => ln(&m.norm).0,
            T::NormB => ln(&m.norm).1,
            T::HeadW => lin_w(&m.head),
            T::HeadB => lin_b(&m.head),
        };
        if v.len() != arch.len(t) {
            return Err(format!("tensor {t:?}: {} values, expected {}", v.len(), arch.len(t)));
        }
        weights.extend(v);
    }
    let kinds = cfg
        .modes
        .iter()
        .map(|m| match m {
            Mode::Softmax => Ok(FileKind::Softmax),
            Mode::Relu => Ok(FileKind::ReluSoftmax),
            Mode::Scale => Ok(FileKind::Scale),
            Mode::Search => Err("cannot export a model that is still searching".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FloatModel {
        arch,
        frac_bits,
        kinds,
        gelu: cfg.gelu.clone(),
        weights,
    })
}

/// Runs the pipeline.
pub fn run(a: &Args) -> Result<(), String> {
    if !(0.0..=1.0).contains(&a.mu) || !(0.0..=1.0).contains(&a.mu_beta) {
        return Err("--mu and --mu-beta must be within 0..=1".into());
    }
    if a.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let mut log = Log::open(&a.out)?;
    log.line(&format!(
        "== mpcvit train {:?}",
        std::env::args().skip(1).collect::<Vec<_>>()
    ));
    let data = load(a)?;
    if data.0.len() < a.batch {
        return Err(format!(
            "{} training images is fewer than one batch of {}",
            data.0.len(),
            a.batch
        ));
    }
    log.line(&format!(
        "data: {} train / {} test images, {}x{}x{}",
        data.0.len(),
        data.1.len(),
        data.0.channels,
        data.0.side,
        data.0.side
    ));
    let dev = Device::flex().autodiff();
    let tokens = (data.0.side / a.patch).pow(2) + 1;
    let (l, h) = (a.layers, a.heads);
    let cfg = |modes: Vec<Mode>, gelu: Vec<bool>, search_beta: bool| VitConfig {
        modes,
        gelu,
        search_beta,
        image: data.0.side,
        channels: data.0.channels,
        patch: a.patch,
        dim: a.dim,
        depth: l,
        heads: h,
        mlp: a.mlp,
        classes: data.0.classes,
    };
    let all_gelu = vec![true; l * tokens];
    // 1. teacher
    let t_cfg = cfg(vec![Mode::Softmax; l * h], all_gelu.clone(), false);
    let seed_model = |c: &VitConfig| {
        dev.seed(a.seed);
        c.init(&dev)
    };
    let teacher_stage = Stage {
        name: "teacher",
        epochs: a.epochs_teacher,
        lambda: 0.0,
        teacher: None,
    };
    let teacher = run_stage(a, &teacher_stage, &t_cfg, seed_model(&t_cfg), &data, &dev, &mut log)?;
    let t_acc = evaluate(&teacher, &data.1, &dev);
    log.line(&format!("[teacher] float test accuracy {t_acc:.4}"));
    let (modes, gelu, student_init, tag) = if a.teacher_only {
        (t_cfg.modes.clone(), all_gelu.clone(), None, "teacher".to_string())
    } else if let Some(u) = &a.uniform {
        let m = match u.as_str() {
            "rsattn" => Mode::Relu,
            "scale" => Mode::Scale,
            o => return Err(format!("--uniform {o:?}: use rsattn or scale")),
        };
        (vec![m; l * h], all_gelu.clone(), None, format!("uniform-{u}"))
    } else {
        // 2. search, warm-started from the teacher
        let s_cfg = cfg(vec![Mode::Search; l * h], all_gelu.clone(), a.plus);
        let init = s_cfg.init(&dev).load_record(teacher.clone().into_record());
        let search_stage = Stage {
            name: "search",
            epochs: a.epochs_search,
            lambda: a.lambda,
            teacher: None,
        };
        let searched = run_stage(a, &search_stage, &s_cfg, init, &data, &dev, &mut log)?;
        // 3. binarize
        let (modes, gelu) = binarize(a, &searched, &all_gelu, &mut log);
        (
            modes,
            gelu,
            Some(searched),
            format!("mu{}{}", a.mu, if a.no_kd { "" } else { "-kd" }),
        )
    };
    let (final_cfg, final_model) = if a.teacher_only {
        (t_cfg, teacher.clone())
    } else {
        // 4. retrain
        let r_cfg = cfg(modes, gelu, false);
        let init = match student_init {
            Some(s) => r_cfg.init(&dev).load_record(s.into_record()),
            None => r_cfg.init(&dev).load_record(teacher.clone().into_record()),
        };
        let name = format!("retrain-{tag}");
        let kd = if a.no_kd { None } else { Some(&teacher) };
        let stage = Stage {
            name: &name,
            epochs: a.epochs_retrain,
            lambda: 0.0,
            teacher: kd,
        };
        let m = run_stage(a, &stage, &r_cfg, init, &data, &dev, &mut log)?;
        (r_cfg, m)
    };
    // 5. export and check
    export_and_check(a, (&final_model, &final_cfg), &data, &dev, &mut log, (&tag, t_acc))
}
