//! `mpcvit import`: official MPCViT PyTorch checkpoints (`.pth` / `.pth.tar`)
//! to the core model format.
//!
//! A PyTorch checkpoint is a zip archive: `<name>/data.pkl` (a pickle of the
//! state dict, tensors as persistent references to storages) and
//! `<name>/data/<key>` (the raw storages). No Rust crate reads that pickle
//! subset without pulling in a whole ML framework (candle, burn-import), so
//! this module has a small pickle machine for exactly what `torch.save`
//! writes (protocol 2): containers, strings, numbers, `GLOBAL` + `REDUCE`
//! for `OrderedDict`, `_rebuild_tensor_v2` and `_rebuild_parameter`, and
//! persistent ids for storages. Anything else decodes to an opaque value;
//! malformed input is an error, never a panic, and sizes are bounded.
//!
//! Key layout (official `src/vit.py`, `src/utils/transformers.py`):
//! `tokenizer.conv_layers.0.0.{weight,bias}` (the patch embedding, a conv
//! with kernel = stride = patch), `classifier.class_emb`,
//! `classifier.positional_emb`, `classifier.blocks.N.{pre_norm, self_attn.qkv
//! (no bias), self_attn.proj, self_attn.alpha (1 x heads x 1 x 1: 1 RSAttn,
//! 0 ScaleAttn), norm1, linear1, linear2, beta (1 x tokens x 1, MPCViT+)}`,
//! `classifier.norm`, `classifier.fc`. A `state_dict` (or `model`) wrapper
//! and a `module.` prefix are accepted.

use crate::float::FloatModel;
use mpcvit_core::model::{Arch, AttnKind, Tensor};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Options of `mpcvit import`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The checkpoint (`.pth` or `.pth.tar`, PyTorch zip format).
    pub checkpoint: PathBuf,
    /// The official architecture: vit_7_4_32 (CIFAR) or vit_9_12_64
    /// (Tiny-ImageNet); `custom` takes the shape from the checkpoint.
    #[arg(long, default_value = "custom")]
    pub arch: String,
    /// Number of classes (default: from `classifier.fc.weight`).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Where to write the model file.
    #[arg(long)]
    pub out: PathBuf,
    /// Fixed-point fractional bits recorded in the model.
    #[arg(long, default_value_t = 16)]
    pub frac_bits: u32,
}

/// A decoded pickle value (the subset `torch.save` writes).
#[derive(Debug, Clone)]
pub enum Val {
    /// None.
    None,
    /// bool.
    Bool(bool),
    /// int.
    Int(i64),
    /// float.
    Float(f64),
    /// str or bytes.
    Str(String),
    /// tuple or list.
    Seq(Vec<Val>),
    /// dict / OrderedDict, in insertion order.
    Dict(Vec<(Val, Val)>),
    /// A global `module.name`.
    Global(String),
    /// A persistent id (a storage reference).
    PersId(Box<Val>),
    /// A tensor view of a storage.
    Tensor(TensorRef),
    /// Any other object.
    Opaque,
}

/// A tensor in the checkpoint.
#[derive(Debug, Clone)]
pub struct TensorRef {
    /// Storage key (file `data/<key>` in the archive).
    pub key: String,
    /// Storage type (`FloatStorage`, ...).
    pub dtype: String,
    /// Offset in elements.
    pub offset: usize,
    /// Shape.
    pub size: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

const MAX_OPS: usize = 50_000_000;
const MAX_LEN: usize = 1 << 28;

fn err<T>(what: &str) -> Result<T, String> {
    Err(format!("checkpoint pickle: {what}"))
}

/// Runs the pickle machine on `data`.
pub fn unpickle(data: &[u8]) -> Result<Val, String> {
    let mut stack: Vec<Val> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: BTreeMap<u64, Val> = BTreeMap::new();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = data
            .get(*i..i.saturating_add(n))
            .ok_or("checkpoint pickle: truncated")?;
        *i += n;
        Ok(s)
    };
    let u = |b: &[u8]| -> u64 {
        let mut a = [0u8; 8];
        a[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
        u64::from_le_bytes(a)
    };
    for _ in 0..MAX_OPS {
        let op = *take(&mut i, 1)?.first().ok_or("checkpoint pickle: truncated")?;
        match op {
            0x80 => {
                take(&mut i, 1)?;
            } // PROTO
            0x95 => {
                take(&mut i, 8)?;
            } // FRAME
            b'.' => {
                return stack
                    .pop()
                    .ok_or_else(|| "checkpoint pickle: empty stack at STOP".to_string());
            }
            b'}' => stack.push(Val::Dict(Vec::new())),
            b']' => stack.push(Val::Seq(Vec::new())),
            b')' => stack.push(Val::Seq(Vec::new())),
            b'N' => stack.push(Val::None),
            0x88 => stack.push(Val::Bool(true)),
            0x89 => stack.push(Val::Bool(false)),
            b'(' => marks.push(stack.len()),
            b'J' => {
                let v = u(take(&mut i, 4)?) as u32 as i32;
                stack.push(Val::Int(v as i64));
            }
            b'K' => {
                let v = u(take(&mut i, 1)?);
                stack.push(Val::Int(v as i64));
            }
            b'M' => {
                let v = u(take(&mut i, 2)?);
                stack.push(Val::Int(v as i64));
            }
            0x8a => {
                // LONG1: n-byte little-endian two's complement
                let n = u(take(&mut i, 1)?) as usize;
                let b = take(&mut i, n)?;
                if n > 8 {
                    return err("integer too long");
                }
                let mut v = u(b) as i64;
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Val::Int(v));
            }
            b'G' => {
                let b = take(&mut i, 8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                stack.push(Val::Float(f64::from_be_bytes(a)));
            }
            b'X' | b'B' | b'T' => {
                let n = u(take(&mut i, 4)?) as usize;
                if n > MAX_LEN {
                    return err("string too long");
                }
                stack.push(Val::Str(String::from_utf8_lossy(take(&mut i, n)?).into_owned()));
            }
            0x8c | b'C' | b'U' => {
                let n = u(take(&mut i, 1)?) as usize;
                stack.push(Val::Str(String::from_utf8_lossy(take(&mut i, n)?).into_owned()));
            }
            0x8d | 0x8e => {
                let n = u(take(&mut i, 8)?) as usize;
                if n > MAX_LEN {
                    return err("string too long");
                }
                stack.push(Val::Str(String::from_utf8_lossy(take(&mut i, n)?).into_owned()));
            }
            b'q' => {
                let k = u(take(&mut i, 1)?);
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or("checkpoint pickle: BINPUT on empty stack")?,
                );
            }
            b'r' => {
                let k = u(take(&mut i, 4)?);
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or("checkpoint pickle: BINPUT on empty stack")?,
                );
            }
            0x94 => {
                let k = memo.len() as u64;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or("checkpoint pickle: MEMOIZE on empty stack")?,
                );
            }
            b'h' | b'j' => {
                let k = u(take(&mut i, if op == b'h' { 1 } else { 4 })?);
                stack.push(memo.get(&k).cloned().ok_or("checkpoint pickle: unknown memo key")?);
            }
            b'c' => {
                let mut line = || -> Result<String, String> {
                    let rest = data.get(i..).ok_or("checkpoint pickle: truncated")?;
                    let end = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or("checkpoint pickle: bad GLOBAL")?;
                    let s = String::from_utf8_lossy(&rest[..end]).into_owned();
                    i += end + 1;
                    Ok(s)
                };
                let m = line()?;
                let n = line()?;
                stack.push(Val::Global(format!("{m}.{n}")));
            }
            0x93 => {
                let n = stack.pop();
                let m = stack.pop();
                match (m, n) {
                    (Some(Val::Str(m)), Some(Val::Str(n))) => stack.push(Val::Global(format!("{m}.{n}"))),
                    _ => return err("bad STACK_GLOBAL"),
                }
            }
            b't' | b'l' | b'd' | b'1' => {
                let m = marks.pop().ok_or("checkpoint pickle: no MARK")?;
                if m > stack.len() {
                    return err("bad MARK");
                }
                let items = stack.split_off(m);
                match op {
                    b't' | b'l' => stack.push(Val::Seq(items)),
                    b'd' => {
                        let mut d = Vec::new();
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                        stack.push(Val::Dict(d));
                    }
                    _ => {}
                }
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return err("stack underflow");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Val::Seq(items));
            }
            b'0' => {
                stack.pop();
            }
            b'2' => {
                let top = stack.last().cloned().ok_or("checkpoint pickle: DUP on empty stack")?;
                stack.push(top);
            }
            b'Q' => {
                let pid = stack.pop().ok_or("checkpoint pickle: stack underflow")?;
                stack.push(Val::PersId(Box::new(pid)));
            }
            b'R' | 0x81 => {
                let args = stack.pop().ok_or("checkpoint pickle: stack underflow")?;
                let f = stack.pop().ok_or("checkpoint pickle: stack underflow")?;
                stack.push(reduce(f, args)?);
            }
            b'b' => {
                // BUILD: state for the object below; tensors and dicts keep
                // what they have.
                stack.pop().ok_or("checkpoint pickle: stack underflow")?;
            }
            b's' => {
                let v = stack.pop().ok_or("checkpoint pickle: stack underflow")?;
                let k = stack.pop().ok_or("checkpoint pickle: stack underflow")?;
                match stack.last_mut() {
                    Some(Val::Dict(d)) => d.push((k, v)),
                    Some(_) => {}
                    None => return err("SETITEM on empty stack"),
                }
            }
            b'u' | b'e' => {
                let m = marks.pop().ok_or("checkpoint pickle: no MARK")?;
                if m > stack.len() || m == 0 {
                    return err("bad MARK");
                }
                let items = stack.split_off(m);
                match (op, stack.last_mut()) {
                    (b'u', Some(Val::Dict(d))) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    (b'e', Some(Val::Seq(s))) => s.extend(items),
                    _ => {}
                }
            }
            b'a' => {
                let v = stack.pop().ok_or("checkpoint pickle: stack underflow")?;
                if let Some(Val::Seq(s)) = stack.last_mut() {
                    s.push(v);
                }
            }
            o => {
                return Err(format!(
                    "checkpoint pickle: unsupported opcode 0x{o:02x} at byte {}",
                    i - 1
                ));
            }
        }
        if stack.len() > 1 << 22 {
            return err("stack too deep");
        }
    }
    err("too many operations")
}

fn as_usize(v: &Val) -> Result<usize, String> {
    match v {
        Val::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => err("expected a non-negative integer"),
    }
}

fn usizes(v: &Val) -> Result<Vec<usize>, String> {
    match v {
        Val::Seq(s) => s.iter().map(as_usize).collect(),
        _ => err("expected a tuple of integers"),
    }
}

fn reduce(f: Val, args: Val) -> Result<Val, String> {
    let Val::Global(name) = f else { return Ok(Val::Opaque) };
    let Val::Seq(a) = args else { return Ok(Val::Opaque) };
    Ok(match name.as_str() {
        "collections.OrderedDict" => Val::Dict(Vec::new()),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            // (storage persid, offset, size, stride, ...)
            let (Some(Val::PersId(pid)), Some(off), Some(size), Some(stride)) =
                (a.first(), a.get(1), a.get(2), a.get(3))
            else {
                return err("bad _rebuild_tensor_v2 arguments");
            };
            // pid = ('storage', <StorageType>, key, location, numel)
            let Val::Seq(p) = pid.as_ref() else {
                return err("bad storage reference");
            };
            let dtype = match p.get(1) {
                Some(Val::Global(g)) => g.rsplit('.').next().unwrap_or("").to_string(),
                _ => String::new(),
            };
            let key = match p.get(2) {
                Some(Val::Str(k)) => k.clone(),
                _ => return err("bad storage key"),
            };
            Val::Tensor(TensorRef {
                key,
                dtype,
                offset: as_usize(off)?,
                size: usizes(size)?,
                stride: usizes(stride)?,
            })
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            a.into_iter().next().unwrap_or(Val::Opaque)
        }
        _ => Val::Opaque,
    })
}

/// A checkpoint: named float tensors.
pub struct Checkpoint {
    /// name -> (shape, values, row-major).
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Reads a PyTorch zip checkpoint.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read checkpoint {}: {e}", path.display()))?;
    let mut z = zip::ZipArchive::new(f).map_err(|e| {
        format!(
            "{}: not a PyTorch zip checkpoint ({e}); checkpoints saved by torch < 1.6 (legacy format) are not supported",
            path.display()
        )
    })?;
    let names: Vec<String> = z
        .file_names()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad zip directory: {e}", path.display()))?
        .into_iter()
        .map(|n| n.into_owned())
        .collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") || n.as_str() == "data.pkl")
        .ok_or_else(|| format!("{}: no data.pkl in the archive", path.display()))?
        .clone();
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let read = |z: &mut zip::ZipArchive<std::fs::File>, name: &str, max: u64| -> Result<Vec<u8>, String> {
        let mut e = z
            .by_name(name)
            .map_err(|e| format!("{}: {name}: {e}", path.display()))?;
        if e.size() > max {
            return Err(format!("{}: {name} is too large", path.display()));
        }
        let mut v = Vec::with_capacity(e.size() as usize);
        e.read_to_end(&mut v)
            .map_err(|e| format!("{}: {name}: {e}", path.display()))?;
        Ok(v)
    };
    let root = unpickle(&read(&mut z, &pkl, 1 << 30)?)?;
    // Unwrap {'state_dict': ...} / {'model': ...}.
    let mut dict = match root {
        Val::Dict(d) => d,
        _ => return Err(format!("{}: the checkpoint is not a dict", path.display())),
    };
    for wrapper in ["state_dict", "model"] {
        if let Some((_, Val::Dict(inner))) = dict.iter().find(|(k, _)| matches!(k, Val::Str(s) if s == wrapper)) {
            dict = inner.clone();
            break;
        }
    }
    let mut tensors = BTreeMap::new();
    for (k, v) in dict {
        let (Val::Str(name), Val::Tensor(t)) = (k, v) else {
            continue;
        };
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        if t.dtype != "FloatStorage" {
            return Err(format!(
                "{}: {name} is {}, only float32 is supported",
                path.display(),
                t.dtype
            ));
        }
        let raw = read(&mut z, &format!("{prefix}data/{}", t.key), 1 << 30)?;
        let storage: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let count: usize = t.size.iter().product();
        if t.size.len() != t.stride.len() {
            return Err(format!("{}: {name}: size and stride differ in rank", path.display()));
        }
        let mut vals = Vec::with_capacity(count);
        for flat in 0..count {
            let (mut rem, mut at) = (flat, t.offset);
            for (d, s) in t.size.iter().zip(&t.stride).rev() {
                at += (rem % d) * s;
                rem /= d;
            }
            vals.push(
                *storage
                    .get(at)
                    .ok_or_else(|| format!("{}: {name} reads past its storage", path.display()))?,
            );
        }
        tensors.insert(name, (t.size, vals));
    }
    if tensors.is_empty() {
        return Err(format!("{}: no float tensors found", path.display()));
    }
    Ok(Checkpoint { tensors })
}

/// The official shapes.
fn official(name: &str) -> Result<Option<Arch>, String> {
    Ok(match name {
        "custom" => None,
        "vit_7_4_32" => Some(Arch {
            image: 32,
            channels: 3,
            patch: 4,
            dim: 256,
            layers: 7,
            heads: 4,
            mlp: 512,
            classes: 10,
        }),
        "vit_9_12_64" => Some(Arch {
            image: 64,
            channels: 3,
            patch: 4,
            dim: 192,
            layers: 9,
            heads: 12,
            mlp: 384,
            classes: 200,
        }),
        o => return Err(format!("unknown --arch {o:?} (vit_7_4_32, vit_9_12_64 or custom)")),
    })
}

/// Converts a checkpoint to a float model. `heads` must be given for
/// `custom` shapes with no `alpha` (Softmax teachers), else it is read from
/// `alpha`.
pub fn convert(ck: &Checkpoint, arch_name: &str, classes: Option<usize>, frac_bits: u32) -> Result<FloatModel, String> {
    let t = &ck.tensors;
    let get = |name: &str| -> Result<&(Vec<usize>, Vec<f32>), String> {
        t.get(name).ok_or_else(|| format!("checkpoint: missing key {name}"))
    };
    let conv = get("tokenizer.conv_layers.0.0.weight")?;
    let [dim, channels, patch, patch2] = conv.0[..] else {
        return Err("checkpoint: tokenizer conv weight is not 4-D".into());
    };
    if patch != patch2 {
        return Err("checkpoint: non-square patches".into());
    }
    let pos = get("classifier.positional_emb")?;
    let tokens = *pos.0.get(1).ok_or("checkpoint: bad positional_emb")?;
    let grid = ((tokens - 1) as f64).sqrt() as usize;
    if grid * grid + 1 != tokens {
        return Err(format!(
            "checkpoint: {tokens} tokens is not a square grid plus a class token"
        ));
    }
    let mut layers = 0;
    while t.contains_key(&format!("classifier.blocks.{layers}.pre_norm.weight")) {
        layers += 1;
    }
    let fc = get("classifier.fc.weight")?;
    let mlp = *get("classifier.blocks.0.linear1.weight")?
        .0
        .first()
        .ok_or("checkpoint: bad linear1")?;
    let heads = match t.get("classifier.blocks.0.self_attn.alpha") {
        Some((s, _)) => *s.get(1).ok_or("checkpoint: bad alpha")?,
        None => match official(arch_name)? {
            Some(a) => a.heads,
            None => return Err("checkpoint: no self_attn.alpha (a Softmax teacher?): give --arch".into()),
        },
    };
    let arch = Arch {
        image: grid * patch,
        channels,
        patch,
        dim,
        layers,
        heads,
        mlp,
        classes: classes.unwrap_or(fc.0[0]),
    };
    arch.check().map_err(|e| format!("checkpoint: {e}"))?;
    if let Some(o) = official(arch_name)?
        && o != arch
    {
        return Err(format!("checkpoint shape {arch:?} is not {arch_name} ({o:?})"));
    }
    // Unknown keys: report, do not guess.
    let known = |k: &str| {
        k.starts_with("tokenizer.conv_layers.0.0.")
            || matches!(
                k,
                "classifier.class_emb"
                    | "classifier.positional_emb"
                    | "classifier.norm.weight"
                    | "classifier.norm.bias"
                    | "classifier.fc.weight"
                    | "classifier.fc.bias"
            )
            || k.starts_with("classifier.blocks.")
    };
    if let Some(k) = t.keys().find(|k| !known(k)) {
        return Err(format!("checkpoint: unknown key {k}"));
    }
    let mut kinds = Vec::with_capacity(layers * heads);
    let mut gelu = Vec::with_capacity(layers * tokens);
    for l in 0..layers {
        match t.get(&format!("classifier.blocks.{l}.self_attn.alpha")) {
            Some((_, a)) => {
                if a.len() != heads {
                    return Err(format!(
                        "checkpoint: layer {l} alpha has {} values, expected {heads}",
                        a.len()
                    ));
                }
                for &x in a {
                    if x != 0.0 && x != 1.0 {
                        return Err(format!(
                            "checkpoint: layer {l} alpha {x} is not binarized (0 ScaleAttn or 1 RSAttn): export after the search"
                        ));
                    }
                    kinds.push(if x == 1.0 {
                        AttnKind::ReluSoftmax
                    } else {
                        AttnKind::Scale
                    });
                }
            }
            None => kinds.extend(std::iter::repeat_n(AttnKind::Softmax, heads)),
        }
        match t.get(&format!("classifier.blocks.{l}.beta")) {
            Some((_, b)) => {
                if b.len() != tokens || b.iter().any(|&x| x != 0.0 && x != 1.0) {
                    return Err(format!("checkpoint: layer {l} beta must be {tokens} values of 0 or 1"));
                }
                gelu.extend(b.iter().map(|&x| x == 1.0));
            }
            None => gelu.extend(std::iter::repeat_n(true, tokens)),
        }
    }
    // Weights in file order, with torch's (out, in) linear weights transposed.
    let transposed = |name: &str, rows: usize, cols: usize| -> Result<Vec<f32>, String> {
        let (s, v) = get(name)?;
        if s[..] != [cols, rows] {
            return Err(format!("checkpoint: {name} has shape {s:?}, expected [{cols}, {rows}]"));
        }
        let mut out = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                out[r * cols + c] = v[c * rows + r];
            }
        }
        Ok(out)
    };
    let vector = |name: &str, len: usize| -> Result<Vec<f32>, String> {
        let (_, v) = get(name)?;
        if v.len() != len {
            return Err(format!("checkpoint: {name} has {} values, expected {len}", v.len()));
        }
        Ok(v.clone())
    };
    let b = |l: usize, rest: &str| format!("classifier.blocks.{l}.{rest}");
    let mut weights = Vec::with_capacity(arch.weights());
    for i in 0..arch.tensor_count() {
        let tensor = arch.tensor_at(i).ok_or("tensor index")?;
        let (rows, cols) = arch.shape(tensor);
        let w = match tensor {
            Tensor::PatchW => {
                // conv [dim][c][ky][kx] -> [(c*p+ky)*p+kx][dim]
                let (_, v) = conv;
                let pl = arch.patch_len();
                let mut out = vec![0f32; pl * dim];
                for o in 0..dim {
                    for k in 0..pl {
                        out[k * dim + o] = v[o * pl + k];
                    }
                }
                out
            }
            Tensor::PatchB => vector("tokenizer.conv_layers.0.0.bias", dim)?,
            Tensor::Cls => vector("classifier.class_emb", dim)?,
            Tensor::Pos => vector("classifier.positional_emb", tokens * dim)?,
            Tensor::Ln0G(l) => vector(&b(l, "pre_norm.weight"), dim)?,
            Tensor::Ln0B(l) => vector(&b(l, "pre_norm.bias"), dim)?,
            Tensor::Qkv(l) => transposed(&b(l, "self_attn.qkv.weight"), rows, cols)?,
            Tensor::ProjW(l) => transposed(&b(l, "self_attn.proj.weight"), rows, cols)?,
            Tensor::ProjB(l) => vector(&b(l, "self_attn.proj.bias"), dim)?,
            Tensor::Ln1G(l) => vector(&b(l, "norm1.weight"), dim)?,
            Tensor::Ln1B(l) => vector(&b(l, "norm1.bias"), dim)?,
            Tensor::Fc1W(l) => transposed(&b(l, "linear1.weight"), rows, cols)?,
            Tensor::Fc1B(l) => vector(&b(l, "linear1.bias"), mlp)?,
            Tensor::Fc2W(l) => transposed(&b(l, "linear2.weight"), rows, cols)?,
            Tensor::Fc2B(l) => vector(&b(l, "linear2.bias"), dim)?,
            Tensor::NormG => vector("classifier.norm.weight", dim)?,
            Tensor::NormB => vector("classifier.norm.bias", dim)?,
            Tensor::HeadW => transposed("classifier.fc.weight", rows, cols)?,
            Tensor::HeadB => vector("classifier.fc.bias", arch.classes)?,
        };
        if w.len() != rows * cols {
            return Err(format!(
                "checkpoint: {tensor:?} has {} values, expected {}",
                w.len(),
                rows * cols
            ));
        }
        weights.extend(w);
    }
    // Keys of blocks that do not exist in our layout.
    for k in t.keys().filter(|k| k.starts_with("classifier.blocks.")) {
        let rest = k.splitn(4, '.').nth(3).unwrap_or("");
        let ok = matches!(
            rest,
            "pre_norm.weight"
                | "pre_norm.bias"
                | "self_attn.qkv.weight"
                | "self_attn.proj.weight"
                | "self_attn.proj.bias"
                | "self_attn.alpha"
                | "norm1.weight"
                | "norm1.bias"
                | "linear1.weight"
                | "linear1.bias"
                | "linear2.weight"
                | "linear2.bias"
                | "beta"
        );
        if !ok {
            return Err(format!("checkpoint: unknown key {k}"));
        }
    }
    Ok(FloatModel {
        arch,
        frac_bits,
        kinds,
        gelu,
        weights,
    })
}

/// `mpcvit import`.
pub fn run(a: &Args) -> Result<(), String> {
    let ck = read_checkpoint(&a.checkpoint)?;
    let fm = convert(&ck, &a.arch, a.classes, a.frac_bits)?;
    fm.save(&a.out)?;
    let rs = fm.kinds.iter().filter(|&&k| k == AttnKind::ReluSoftmax).count();
    println!(
        "wrote {}: {}x{}x{} input, patch {}, dim {}, {} layers x {} heads ({rs} RSAttn), MLP {}, {} classes",
        a.out.display(),
        fm.arch.channels,
        fm.arch.image,
        fm.arch.image,
        fm.arch.patch,
        fm.arch.dim,
        fm.arch.layers,
        fm.arch.heads,
        fm.arch.mlp,
        fm.arch.classes
    );
    Ok(())
}
