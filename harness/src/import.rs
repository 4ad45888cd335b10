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
    /// Fixed-point fractional bits recorded in the model (1..=30, what
    /// `FixedPoint` takes).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub frac_bits: u32,
}

/// A decoded pickle value (the subset `torch.save` writes). Containers hold
/// indices into [`Pickle::nodes`]: the memo stores references, as Python's
/// does, so nothing is ever copied and memory stays linear in the input
/// (every opcode reads at least one byte and adds at most one node).
#[derive(Debug, Clone)]
pub enum Node {
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
    Seq(Vec<usize>),
    /// dict / OrderedDict, in insertion order.
    Dict(Vec<(usize, usize)>),
    /// A global `module.name`.
    Global(String),
    /// A persistent id (a storage reference).
    PersId(usize),
    /// A tensor view of a storage.
    Tensor(TensorRef),
    /// Any other object.
    Opaque,
}

/// A decoded pickle: its nodes and the root's index.
#[derive(Debug, Clone)]
pub struct Pickle {
    /// All nodes.
    pub nodes: Vec<Node>,
    /// The value `STOP` returned.
    pub root: usize,
}

impl Pickle {
    /// The node at `i` (`None` for a bad index).
    pub fn get(&self, i: usize) -> &Node {
        self.nodes.get(i).unwrap_or(&Node::None)
    }
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

fn err<T>(what: &str) -> Result<T, String> {
    Err(format!("checkpoint pickle: {what}"))
}

struct Machine<'a> {
    data: &'a [u8],
    i: usize,
    nodes: Vec<Node>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: BTreeMap<u64, usize>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .data
            .get(self.i..self.i.saturating_add(n))
            .ok_or("checkpoint pickle: truncated")?;
        self.i += n;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let b = self.take(n)?;
        let mut a = [0u8; 8];
        a[..n.min(8)].copy_from_slice(&b[..n.min(8)]);
        Ok(u64::from_le_bytes(a))
    }

    fn push(&mut self, n: Node) {
        self.nodes.push(n);
        self.stack.push(self.nodes.len() - 1);
    }

    fn pop(&mut self) -> Result<usize, String> {
        self.stack
            .pop()
            .ok_or_else(|| "checkpoint pickle: stack underflow".to_string())
    }

    fn top(&self) -> Result<usize, String> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "checkpoint pickle: empty stack".to_string())
    }

    fn since_mark(&mut self) -> Result<Vec<usize>, String> {
        let m = self.marks.pop().ok_or("checkpoint pickle: no MARK")?;
        if m > self.stack.len() {
            return err("bad MARK");
        }
        Ok(self.stack.split_off(m))
    }

    fn string(&mut self, len_bytes: usize) -> Result<(), String> {
        let n = self.uint(len_bytes)? as usize;
        let b = self.take(n)?;
        self.push(Node::Str(String::from_utf8_lossy(b).into_owned()));
        Ok(())
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = self.data.get(self.i..).ok_or("checkpoint pickle: truncated")?;
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("checkpoint pickle: bad GLOBAL")?;
        self.i += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    fn extend_top(&mut self, items: Vec<usize>, pairs: bool) -> Result<(), String> {
        let t = self.top()?;
        match self.nodes.get_mut(t) {
            Some(Node::Dict(d)) if pairs => {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            Some(Node::Seq(s)) if !pairs => s.extend(items),
            _ => {}
        }
        Ok(())
    }
}

/// Runs the pickle machine on `data`.
// One match arm per opcode over the machine's stack, memo and arena: the
// arms share that state at every step, and split into functions they would
// pass all of it around; each arm is a few lines.
pub fn unpickle(data: &[u8]) -> Result<Pickle, String> {
    let mut m = Machine {
        data,
        i: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: BTreeMap::new(),
    };
    loop {
        let op = m.uint(1)? as u8;
        match op {
            0x80 => {
                m.take(1)?;
            } // PROTO
            0x95 => {
                m.take(8)?;
            } // FRAME
            b'.' => {
                let root = m.pop()?;
                return Ok(Pickle { nodes: m.nodes, root });
            }
            b'}' => m.push(Node::Dict(Vec::new())),
            b']' | b')' => m.push(Node::Seq(Vec::new())),
            b'N' => m.push(Node::None),
            0x88 => m.push(Node::Bool(true)),
            0x89 => m.push(Node::Bool(false)),
            b'(' => m.marks.push(m.stack.len()),
            b'J' => {
                let v = m.uint(4)? as u32 as i32;
                m.push(Node::Int(v as i64));
            }
            b'K' => {
                let v = m.uint(1)?;
                m.push(Node::Int(v as i64));
            }
            b'M' => {
                let v = m.uint(2)?;
                m.push(Node::Int(v as i64));
            }
            0x8a => {
                // LONG1: n-byte little-endian two's complement
                let n = m.uint(1)? as usize;
                if n > 8 {
                    return err("integer too long");
                }
                let b = m.take(n)?;
                let mut a = [0u8; 8];
                a[..n].copy_from_slice(b);
                let mut v = i64::from_le_bytes(a);
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                m.push(Node::Int(v));
            }
            b'G' => {
                let b = m.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                m.push(Node::Float(f64::from_be_bytes(a)));
            }
            b'X' | b'B' | b'T' => m.string(4)?,
            0x8c | b'C' | b'U' => m.string(1)?,
            0x8d | 0x8e => m.string(8)?,
            b'q' => {
                let k = m.uint(1)?;
                let t = m.top()?;
                m.memo.insert(k, t);
            }
            b'r' => {
                let k = m.uint(4)?;
                let t = m.top()?;
                m.memo.insert(k, t);
            }
            0x94 => {
                let k = m.memo.len() as u64;
                let t = m.top()?;
                m.memo.insert(k, t);
            }
            b'h' | b'j' => {
                let k = m.uint(if op == b'h' { 1 } else { 4 })?;
                let v = *m.memo.get(&k).ok_or("checkpoint pickle: unknown memo key")?;
                m.stack.push(v);
            }
            b'c' => {
                let module = m.line()?;
                let name = m.line()?;
                m.push(Node::Global(format!("{module}.{name}")));
            }
            0x93 => {
                let n = m.pop()?;
                let md = m.pop()?;
                match (m.nodes.get(md), m.nodes.get(n)) {
                    (Some(Node::Str(a)), Some(Node::Str(b))) => {
                        let g = format!("{a}.{b}");
                        m.push(Node::Global(g));
                    }
                    _ => return err("bad STACK_GLOBAL"),
                }
            }
            b't' | b'l' => {
                let items = m.since_mark()?;
                m.push(Node::Seq(items));
            }
            b'd' => {
                let items = m.since_mark()?;
                let pairs = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                m.push(Node::Dict(pairs));
            }
            b'1' => {
                m.since_mark()?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if m.stack.len() < n {
                    return err("stack underflow");
                }
                let items = m.stack.split_off(m.stack.len() - n);
                m.push(Node::Seq(items));
            }
            b'0' => {
                m.pop()?;
            }
            b'2' => {
                let t = m.top()?;
                m.stack.push(t);
            }
            b'Q' => {
                let pid = m.pop()?;
                m.push(Node::PersId(pid));
            }
            b'R' | 0x81 => {
                let args = m.pop()?;
                let f = m.pop()?;
                let n = reduce(&m.nodes, f, args)?;
                match n {
                    Reduced::Node(n) => m.push(n),
                    Reduced::Same(i) => m.stack.push(i),
                }
            }
            b'b' => {
                // BUILD: state for the object below; what we read keeps what
                // it has.
                m.pop()?;
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                m.extend_top(vec![k, v], true)?;
            }
            b'u' => {
                let items = m.since_mark()?;
                m.extend_top(items, true)?;
            }
            b'e' => {
                let items = m.since_mark()?;
                m.extend_top(items, false)?;
            }
            b'a' => {
                let v = m.pop()?;
                m.extend_top(vec![v], false)?;
            }
            o => {
                return Err(format!(
                    "checkpoint pickle: unsupported opcode 0x{o:02x} at byte {}",
                    m.i - 1
                ));
            }
        }
    }
}

fn as_usize(v: &Node) -> Result<usize, String> {
    match v {
        Node::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => err("expected a non-negative integer"),
    }
}

fn usizes(nodes: &[Node], i: usize) -> Result<Vec<usize>, String> {
    match nodes.get(i) {
        Some(Node::Seq(s)) => s
            .iter()
            .map(|&j| as_usize(nodes.get(j).unwrap_or(&Node::None)))
            .collect(),
        _ => err("expected a tuple of integers"),
    }
}

enum Reduced {
    Node(Node),
    /// The call returns one of its arguments (`_rebuild_parameter`).
    Same(usize),
}

fn reduce(nodes: &[Node], f: usize, args: usize) -> Result<Reduced, String> {
    let (Some(Node::Global(name)), Some(Node::Seq(a))) = (nodes.get(f), nodes.get(args)) else {
        return Ok(Reduced::Node(Node::Opaque));
    };
    let arg = |k: usize| a.get(k).and_then(|&j| nodes.get(j));
    Ok(match name.as_str() {
        "collections.OrderedDict" => Reduced::Node(Node::Dict(Vec::new())),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            // (storage persid, offset, size, stride, ...)
            let (Some(Node::PersId(pid)), Some(off)) = (arg(0), arg(1)) else {
                return err("bad _rebuild_tensor_v2 arguments");
            };
            let (Some(&size), Some(&stride)) = (a.get(2), a.get(3)) else {
                return err("bad _rebuild_tensor_v2 arguments");
            };
            // pid = ('storage', <StorageType>, key, location, numel)
            let Some(Node::Seq(p)) = nodes.get(*pid) else {
                return err("bad storage reference");
            };
            let field = |k: usize| p.get(k).and_then(|&j| nodes.get(j));
            let dtype = match field(1) {
                Some(Node::Global(g)) => g.rsplit('.').next().unwrap_or("").to_string(),
                _ => String::new(),
            };
            let key = match field(2) {
                Some(Node::Str(k)) => k.clone(),
                _ => return err("bad storage key"),
            };
            Reduced::Node(Node::Tensor(TensorRef {
                key,
                dtype,
                offset: as_usize(off)?,
                size: usizes(nodes, size)?,
                stride: usizes(nodes, stride)?,
            }))
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => match a.first() {
            Some(&j) => Reduced::Same(j),
            None => Reduced::Node(Node::Opaque),
        },
        _ => Reduced::Node(Node::Opaque),
    })
}

/// A checkpoint: named float tensors.
pub struct Checkpoint {
    /// name -> (shape, values, row-major).
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Reads a PyTorch zip checkpoint.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, String> {
    // a regular file (the zip reader seeks in it): not a FIFO or a device
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Err(format!(
            "cannot read checkpoint {}: not a regular file (or missing)",
            path.display()
        ));
    }
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
    let pk = unpickle(&read(&mut z, &pkl, 1 << 30)?)?;
    // Unwrap {'state_dict': ...} / {'model': ...}.
    let Node::Dict(mut dict) = pk.get(pk.root).clone() else {
        return Err(format!("{}: the checkpoint is not a dict", path.display()));
    };
    for wrapper in ["state_dict", "model"] {
        let inner = dict
            .iter()
            .find(|(k, _)| matches!(pk.get(*k), Node::Str(s) if s == wrapper))
            .map(|&(_, v)| pk.get(v));
        if let Some(Node::Dict(inner)) = inner {
            dict = inner.clone();
            break;
        }
    }
    let mut tensors = BTreeMap::new();
    for (k, v) in dict {
        let (Node::Str(name), Node::Tensor(t)) = (pk.get(k), pk.get(v)) else {
            continue;
        };
        let t = t.clone();
        let name = name.strip_prefix("module.").unwrap_or(name).to_string();
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

/// The official shapes (`custom`: from the checkpoint).
fn official(name: &str) -> Result<Option<Arch>, String> {
    match name {
        "custom" => Ok(None),
        "vit_7_4_32" | "vit_9_12_64" => Ok(crate::bench_vit::named_arch(name)),
        o => Err(format!("unknown --arch {o:?} (vit_7_4_32, vit_9_12_64 or custom)")),
    }
}

/// Converts a checkpoint to a float model. `heads` must be given for
/// `custom` shapes with no `alpha` (Softmax teachers), else it is read from
/// `alpha`.
pub fn convert(ck: &Checkpoint, arch_name: &str, classes: Option<usize>, frac_bits: u32) -> Result<FloatModel, String> {
    let t = &ck.tensors;
    check_keys(t)?;
    let arch = checkpoint_arch(t, arch_name, classes)?;
    let (kinds, gelu) = layout(t, &arch)?;
    let weights = weights(t, &arch)?;
    Ok(FloatModel {
        arch,
        frac_bits,
        kinds,
        gelu,
        weights,
    })
}

/// A checkpoint's tensors by name.
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn get<'t>(t: &'t Tensors, name: &str) -> Result<&'t (Vec<usize>, Vec<f32>), String> {
    t.get(name).ok_or_else(|| format!("checkpoint: missing key {name}"))
}

/// Refuses keys the official layout does not have: report, do not guess.
fn check_keys(t: &Tensors) -> Result<(), String> {
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
    // keys of blocks that do not exist in our layout
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
    Ok(())
}

/// The architecture the checkpoint's shapes give, checked against
/// `arch_name` when it names an official configuration.
fn checkpoint_arch(t: &Tensors, arch_name: &str, classes: Option<usize>) -> Result<Arch, String> {
    let conv = get(t, "tokenizer.conv_layers.0.0.weight")?;
    let [dim, channels, patch, patch2] = conv.0[..] else {
        return Err("checkpoint: tokenizer conv weight is not 4-D".into());
    };
    if patch != patch2 {
        return Err("checkpoint: non-square patches".into());
    }
    let pos = get(t, "classifier.positional_emb")?;
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
    let fc = get(t, "classifier.fc.weight")?;
    let mlp = *get(t, "classifier.blocks.0.linear1.weight")?
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
    Ok(arch)
}

/// The attention kind of every head (a binarized `alpha`, or Softmax
/// without one) and MPCViT+'s GeLU flag of every token (`beta`).
fn layout(t: &Tensors, arch: &Arch) -> Result<(Vec<AttnKind>, Vec<bool>), String> {
    let (layers, heads, tokens) = (arch.layers, arch.heads, arch.tokens());
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
    Ok((kinds, gelu))
}

/// The weights in the core format's order, torch's `(out, in)` linear
/// weights transposed.
fn weights(t: &Tensors, arch: &Arch) -> Result<Vec<f32>, String> {
    let (dim, mlp, tokens) = (arch.dim, arch.mlp, arch.tokens());
    let conv = get(t, "tokenizer.conv_layers.0.0.weight")?;
    let transposed = |name: &str, rows: usize, cols: usize| -> Result<Vec<f32>, String> {
        let (s, v) = get(t, name)?;
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
        let (_, v) = get(t, name)?;
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
    Ok(weights)
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
