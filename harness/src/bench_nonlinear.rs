//! Cost and accuracy of the nonlinear ops (issue "Secure nonlinear
//! operations"), measured with host, device and dealer in three threads over
//! in-memory pipes; printed beside a model of CrypTen's published algorithms.

use mpcvit_core::FixedPoint;
use mpcvit_core::model::AttnKind;
use mpcvit_core::ops::Party;
use mpcvit_core::ops::activation::{self, grid};
use mpcvit_core::ops::layernorm::{self, LnSpec};
use mpcvit_core::ops::max;
use mpcvit_core::ops::softmax::{self, NormSpec};
use mpcvit_core::ops::wide::{self, WideSpec};
use mpcvit_core::protocol::pwl::Func;
use mpcvit_host::local::{LocalError, LocalKeys, PartyFn, Run3, run3_mem, weight_views};
use serde::Serialize;

/// One op's measured cost and accuracy.
#[derive(Serialize, Clone, Debug)]
pub struct NlRow {
    /// Op.
    pub op: String,
    /// Input range and shape.
    pub domain: String,
    /// Elements (per-element figures divide by this).
    pub elements: usize,
    /// Rounds the device waited for the host.
    pub rounds: u64,
    /// Device -> host bytes per element (frames included).
    pub dh_per_elem: f64,
    /// Host -> device bytes per element.
    pub hd_per_elem: f64,
    /// Dealer -> host bytes per element.
    pub dealer_per_elem: f64,
    /// Wall time per element, three threads (ns).
    pub ns_per_elem: f64,
    /// Max absolute error against the float function on the grid.
    pub max_abs_err: f64,
    /// Max relative error (where the function is bounded away from 0).
    pub max_rel_err: Option<f64>,
    /// CrypTen's published algorithm (model, not measured): rounds.
    pub crypten_rounds: f64,
    /// CrypTen model: bytes per element per party per direction.
    pub crypten_bytes: f64,
}

const F: u32 = 16;

fn fp() -> FixedPoint {
    FixedPoint::default()
}

fn enc(v: &[f64]) -> Vec<u64> {
    v.iter().map(|&x| fp().encode(x)).collect()
}

fn dec(v: &[u64]) -> Vec<f64> {
    v.iter().map(|&x| fp().decode(x)).collect()
}

fn grid_pts(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| lo + (hi - lo) * i as f64 / n as f64).collect()
}

type Op<'a> = PartyFn<'a, std::io::Error>;

/// A party of the local runs.
type P<'p> = dyn Party<Error = LocalError<std::io::Error>> + 'p;

/// The keys of every run here (fixed: reproducible figures).
fn keys() -> LocalKeys {
    LocalKeys::fixed(9)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    name: &str,
    domain: String,
    x: &[f64],
    views: [&[u64]; 3],
    f: &Op<'_>,
    want: &[f64],
    rel_floor: Option<f64>,
    crypten: (f64, f64),
    out_frac: u32,
) -> Result<NlRow, String> {
    let xs = enc(x);
    let r: Run3 = run3_mem(fp(), &keys(), 1, &xs, views, f).map_err(|e| format!("{name}: {e}"))?;
    let got: Vec<f64> = r
        .output
        .iter()
        .map(|&v| v as i64 as f64 / 2f64.powi(out_frac as i32))
        .collect();
    let (mut abs, mut rel) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        abs = abs.max((g - w).abs());
        if rel_floor.is_some_and(|fl| w.abs() >= fl) {
            rel = rel.max(((g - w) / w).abs());
        }
    }
    let n = want.len() as f64;
    Ok(NlRow {
        op: name.into(),
        domain,
        elements: want.len(),
        rounds: r.device.rounds,
        dh_per_elem: r.device.bytes_sent as f64 / n,
        hd_per_elem: r.device.bytes_recv as f64 / n,
        dealer_per_elem: r.dealer.bytes_recv as f64 / n,
        ns_per_elem: r.wall_ns as f64 / n,
        max_abs_err: abs,
        max_rel_err: rel_floor.map(|_| rel),
        crypten_rounds: crypten.0,
        crypten_bytes: crypten.1,
    })
}

/// CrypTen models (rounds, bytes per element per direction) from its
/// published algorithms with default iteration counts, 64-bit ring:
/// comparison = arithmetic-to-binary (share 1 round) + Kogge-Stone adder
/// (6 AND levels, ~4 words each) + binary-to-arithmetic (1 round);
/// multiplication = 1 round, 2 words; exp = 8 squarings; reciprocal = 10
/// Newton steps of 2 products plus an exp initial guess; rsqrt = 3 Newton
/// steps of 3 products plus an exp initial guess; erf = Taylor series with
/// 8 terms (odd powers, ~8 products in ~4 rounds); max = a log-depth tree
/// of comparisons and selections.
mod crypten {
    pub const CMP: (f64, f64) = (8.0, 8.0 * 1.0 + 6.0 * 32.0 + 16.0);
    pub const MUL: (f64, f64) = (1.0, 16.0);
    pub const EXP: (f64, f64) = (8.0, 8.0 * 16.0);
    pub const RECIP: (f64, f64) = (EXP.0 + 20.0, EXP.1 + 20.0 * 16.0);
    pub const RSQRT: (f64, f64) = (EXP.0 + 9.0, EXP.1 + 9.0 * 16.0);
    pub const GELU: (f64, f64) = (4.0 + 2.0, 8.0 * 16.0 + 2.0 * 16.0);
    pub fn max(n: f64) -> (f64, f64) {
        let levels = n.log2().ceil();
        (levels * (CMP.0 + MUL.0), (CMP.1 + MUL.1) * (n - 1.0) / n)
    }
    pub fn softmax(n: f64) -> (f64, f64) {
        let m = max(n);
        (m.0 + EXP.0 + RECIP.0 + MUL.0, m.1 + EXP.1 + RECIP.1 / n + MUL.1)
    }
    pub fn layernorm(d: f64) -> (f64, f64) {
        (MUL.0 + RSQRT.0 + MUL.0, MUL.1 + RSQRT.1 / d + MUL.1)
    }
}

/// Runs every nonlinear op once on a dense grid (about `n` elements).
pub fn run(n: usize) -> Result<Vec<NlRow>, String> {
    let mut rows = Vec::new();
    activations(n, &mut rows)?;
    wide_ops(n, &mut rows)?;
    // attention rows of 65 scores (vit_7_4_32's tokens); the LayerNorm
    // inputs continue the same generator
    let cols = 65;
    let nrows = (n / cols).max(1);
    let mut r = mpcvit_core::prg::Prg::new(&mpcvit_core::Seed::from_bytes([1; 32]), 5, 0);
    let scores: Vec<f64> = (0..nrows * cols)
        .map(|_| (r.next_u64() % 12000) as f64 / 1000.0 - 6.0)
        .collect();
    attention_rows(&scores, nrows, cols, &mut rows)?;
    row_max(&scores, nrows, cols, &mut rows)?;
    layernorms(n, &mut r, &mut rows)?;
    Ok(rows)
}

/// No weights: the views of ops without host-private vectors.
const NONE: [&[u64]; 3] = [&[], &[], &[]];

/// ReLU and DReLU by the comparison, GeLU by comparison and tail lookup,
/// exp by its cell lookup (the ops the model runs).
fn activations(n: usize, rows: &mut Vec<NlRow>) -> Result<(), String> {
    use mpcvit_core::ops::vit::{ROW_FRAC, ScoreExp, score_exp};
    use mpcvit_core::protocol::cmp::{CmpOut, CmpShape};
    let sh = CmpShape::new(n, F, 5, CmpOut::Relu).map_err(|e| e.to_string())?;
    let (lo, hi) = (-32.0, 32.0 - 2f64.powi(sh.s as i32 - F as i32));
    let xs = grid_pts(lo, hi, n);
    let xq = dec(&enc(&xs));
    let region = 2f64.powi(sh.s as i32 - F as i32);
    for (name, out) in [("ReLU", CmpOut::Relu), ("DReLU", CmpOut::Drelu)] {
        // outside the stated region [-2^(s-f), 0) both are exact; inside it
        // they may return the positive branch, which the error column shows
        let want: Vec<f64> = xq
            .iter()
            .map(|&x| {
                if out == CmpOut::Relu {
                    x.max(0.0)
                } else {
                    (x >= 0.0) as u8 as f64 / 65536.0
                }
            })
            .collect();
        let f = move |p: &mut P<'_>, x: &[u64], _: &[u64]| {
            let mut o = vec![0; x.len()];
            p.cmp(CmpShape { n: x.len(), out, ..sh }, x, &mut o)?;
            Ok(o)
        };
        let mut r = measure(
            name,
            format!("[{lo:.0}, {hi:.3}), 2 digits of 8 bits, region [-{region}, 0)"),
            &xs,
            NONE,
            &f,
            &want,
            None,
            if name == "ReLU" {
                (crypten::CMP.0 + 1.0, crypten::CMP.1 + 16.0)
            } else {
                crypten::CMP
            },
            F,
        )?;
        if out == CmpOut::Drelu {
            r.max_abs_err *= 65536.0; // DReLU is an integer 0/1
        }
        rows.push(r);
    }
    let (glo, ghi) = (-58.0, 58.0);
    let xs = grid_pts(glo, ghi, n);
    let want: Vec<f64> = dec(&enc(&xs)).iter().map(|&x| Func::Gelu.eval(x)).collect();
    let gelu = |p: &mut P<'_>, x: &[u64], _: &[u64]| {
        let mut o = vec![0; x.len()];
        let mut scratch = vec![0; 2 * x.len()];
        activation::gelu(p, 5, 0, x, &mut o, &mut scratch)?;
        Ok(o)
    };
    rows.push(measure(
        "GeLU",
        format!("[{glo}, {ghi}), ReLU(x) - G(min(|x|, 5 - 2^-16)), 4 cells of degree 6"),
        &xs,
        NONE,
        &gelu,
        &want,
        None,
        crypten::GELU,
        F,
    )?);
    let (elo, ehi) = (-16.0, mpcvit_core::ops::vit::EXP_CAP);
    let xs = grid_pts(elo, ehi, n);
    let want: Vec<f64> = dec(&enc(&xs)).iter().map(|&x| x.exp()).collect();
    let exp = |p: &mut P<'_>, x: &[u64], _: &[u64]| {
        let mut o = vec![0; x.len()];
        mpcvit_core::ops::cell(p, score_exp(x.len(), F, 0)?, &ScoreExp, x, &mut o)?;
        Ok(o)
    };
    rows.push(measure(
        "exp",
        format!("[{elo}, {ehi}), 16 cells of 4, out 2^-{ROW_FRAC}"),
        &xs,
        NONE,
        &exp,
        &want,
        Some(1e-2),
        crypten::EXP,
        ROW_FRAC,
    )?);
    Ok(())
}

/// Reciprocal and inverse square root over wide ranges.
fn wide_ops(n: usize, rows: &mut Vec<NlRow>) -> Result<(), String> {
    // reciprocal and inverse square root over wide ranges
    let m = n.min(2000);
    let recip = WideSpec::new(Func::Recip, 2f64.powi(-8), 2f64.powi(12), F, 40);
    let rsq = WideSpec::new(Func::Rsqrt, 2f64.powi(-10), 2f64.powi(10), F, 40);
    for (name, spec, cr) in [("reciprocal", recip, crypten::RECIP), ("rsqrt", rsq, crypten::RSQRT)] {
        let xs: Vec<f64> = (0..m)
            .map(|i| spec.lo * (spec.hi / spec.lo).powf(i as f64 / m as f64))
            .collect();
        let want: Vec<f64> = dec(&enc(&xs)).iter().map(|&x| spec.eval(x)).collect();
        let f = move |p: &mut P<'_>, x: &[u64], _: &[u64]| {
            let mut out = vec![0; x.len()];
            let mut scratch = vec![0; wide::scratch_len(x.len())];
            wide::wide(p, &spec, x, &mut out, &mut scratch)?;
            Ok(out)
        };
        rows.push(measure(
            name,
            format!("[{:e}, {:e}], log grid, out 2^-40", spec.lo, spec.hi),
            &xs,
            NONE,
            &f,
            &want,
            Some(0.0),
            cr,
            40,
        )?);
    }
    Ok(())
}

/// The attention normalizations on rows of `cols` scores.
fn attention_rows(scores: &[f64], nrows: usize, cols: usize, rows: &mut Vec<NlRow>) -> Result<(), String> {
    for kind in [
        AttnKind::Softmax,
        AttnKind::ReluSoftmax,
        AttnKind::Quad,
        AttnKind::Scale,
    ] {
        let spec = NormSpec::new(kind, nrows, cols);
        let sq = dec(&enc(scores));
        let mut want = Vec::new();
        for row in sq.chunks(cols) {
            let e: Vec<f64> = match kind {
                AttnKind::Softmax => row.iter().map(|v| v.exp()).collect(),
                AttnKind::ReluSoftmax => row.iter().map(|v| v.max(0.0)).collect(),
                AttnKind::Quad => row.iter().map(|v| (v + 5.0).powi(2)).collect(),
                AttnKind::Scale => row.to_vec(),
            };
            let s: f64 = match kind {
                AttnKind::Scale => cols as f64,
                AttnKind::ReluSoftmax => e.iter().sum::<f64>() + 1e-5,
                _ => e.iter().sum(),
            };
            want.extend(e.iter().map(|v| v / s));
        }
        let f = move |p: &mut P<'_>, x: &[u64], _: &[u64]| {
            let mut out = vec![0; x.len()];
            let mut scratch = vec![0; spec.scratch_len()];
            softmax::normalize(p, &spec, x, &mut out, &mut scratch)?;
            Ok(out)
        };
        let cr = match kind {
            AttnKind::Softmax => crypten::softmax(cols as f64),
            AttnKind::ReluSoftmax => (
                crypten::CMP.0 + 1.0 + crypten::RECIP.0 + 1.0,
                crypten::CMP.1 + 16.0 + crypten::RECIP.1 / cols as f64 + 16.0,
            ),
            AttnKind::Quad => (
                1.0 + crypten::RECIP.0 + 1.0,
                16.0 + crypten::RECIP.1 / cols as f64 + 16.0,
            ),
            AttnKind::Scale => (0.0, 0.0),
        };
        rows.push(measure(
            &format!("{kind:?} row"),
            format!("{nrows} rows x {cols}, scores in [-6, 6)"),
            scores,
            NONE,
            &f,
            &want,
            None,
            cr,
            F,
        )?);
    }
    Ok(())
}

/// The row max of rows of `cols` scores.
fn row_max(scores: &[f64], nrows: usize, cols: usize, rows: &mut Vec<NlRow>) -> Result<(), String> {
    // row max of 65
    let sh = grid(1, F, 4, 10).map_err(|e| e.to_string())?;
    let sq = dec(&enc(scores));
    let want: Vec<f64> = sq
        .chunks(cols)
        .map(|r| r.iter().cloned().fold(f64::MIN, f64::max))
        .collect();
    let f = move |p: &mut P<'_>, x: &[u64], _: &[u64]| {
        let rws = x.len() / cols;
        let mut out = vec![0; rws];
        let mut scratch = vec![0; max::scratch_len(rws, cols)];
        max::row_max(p, sh.s, sh.k, cols, x, &mut out, &mut scratch)?;
        Ok(out)
    };
    let mut mrow = measure(
        "row max",
        format!("{nrows} rows x {cols}"),
        scores,
        NONE,
        &f,
        &want,
        None,
        crypten::max(cols as f64),
        F,
    )?;
    // per score, not per row
    let per = cols as f64;
    mrow.dh_per_elem /= per;
    mrow.hd_per_elem /= per;
    mrow.dealer_per_elem /= per;
    mrow.ns_per_elem /= per;
    mrow.elements *= cols;
    rows.push(mrow);
    Ok(())
}

/// LayerNorm rows of 64 and 256, inputs and affines from `r`.
fn layernorms(n: usize, r: &mut mpcvit_core::prg::Prg, rows: &mut Vec<NlRow>) -> Result<(), String> {
    // LayerNorm rows of 64 and 256
    for d in [64usize, 256] {
        let nr = (n / d).max(1);
        let xs: Vec<f64> = (0..nr * d)
            .map(|_| (r.next_u64() % 16000) as f64 / 1000.0 - 8.0)
            .collect();
        let gam: Vec<f64> = (0..d).map(|_| (r.next_u64() % 4000) as f64 / 1000.0 - 2.0).collect();
        let bet: Vec<f64> = (0..d).map(|_| (r.next_u64() % 2000) as f64 / 1000.0 - 1.0).collect();
        let views = weight_views(&keys(), 77, &enc(&gam));
        let beta = enc(&bet);
        let spec = LnSpec::new(nr, d);
        let xq = dec(&enc(&xs));
        let mut want = Vec::new();
        for row in xq.chunks(d) {
            let mu = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / d as f64;
            want.extend((0..d).map(|j| {
                (row[j] - mu) / (var + 1e-5).sqrt() * fp().decode(fp().encode(gam[j]))
                    + fp().decode(fp().encode(bet[j]))
            }));
        }
        let f = |p: &mut P<'_>, x: &[u64], g: &[u64]| {
            let mut out = vec![0; x.len()];
            let mut scratch = vec![0; spec.scratch_len()];
            layernorm::layernorm(p, &spec, x, Some(g), &beta, &mut out, &mut scratch)?;
            Ok(out)
        };
        rows.push(measure(
            &format!("LayerNorm d={d}"),
            format!("{nr} rows, x in [-8, 8)"),
            &xs,
            [&views[0], &views[1], &views[2]],
            &f,
            &want,
            None,
            crypten::layernorm(d as f64),
            F,
        )?);
    }
    Ok(())
}

/// Prints the cost and the accuracy tables.
pub fn print(rows: &[NlRow]) {
    println!(
        "\n| op | domain | rounds | B/elem D->H | B/elem H->D | B/elem dealer->H | ns/elem (3 threads) | CrypTen rounds (model) | CrypTen B/elem/dir (model) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.op,
            r.domain,
            r.rounds,
            r.dh_per_elem,
            r.hd_per_elem,
            r.dealer_per_elem,
            r.ns_per_elem,
            r.crypten_rounds,
            r.crypten_bytes
        );
    }
    println!("\n| op | elements | max abs error vs float | max rel error |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2e} | {} |",
            r.op,
            r.elements,
            r.max_abs_err,
            r.max_rel_err.map_or("-".to_string(), |v| format!("{v:.2e}"))
        );
    }
}
