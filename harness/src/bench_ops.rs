//! `mpcvit bench-ops`: the cost of each secure op, measured.
//!
//! Host, device and dealer run in three threads over in-memory pipes
//! (`mpcvit_host::local`): the dealer first, timed alone, then host and
//! device, timed together (the online time). Bytes are counted by the
//! links, frame headers included.

use mpcvit_core::FixedPoint;
use mpcvit_core::ops::Party;
use mpcvit_core::prg::{Prg, Seed};
use mpcvit_core::protocol::linear::LinearShape;
use mpcvit_core::protocol::matmul::MatmulShape;
use mpcvit_host::local::{self, LocalError, LocalKeys, PartyFn, Run3, Schedule};
use serde::Serialize;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `bench-ops`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/ops.json")]
    out: PathBuf,
    /// Largest elementwise size to run (10^3 .. this, by factors of 10).
    #[arg(long, default_value_t = 1_000_000)]
    max_size: usize,
    /// Repetitions per row; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Elements per nonlinear-op row (dense grid over each op's domain; a
    /// 10-bit lookup costs 8-16 KiB of dealer traffic per element, and one
    /// dealer message is limited to 64 MiB).
    #[arg(long, default_value_t = 3_000)]
    nonlinear: usize,
}

#[derive(Serialize, Clone, Debug)]
struct Row {
    op: &'static str,
    shape: String,
    elements: usize,
    rounds: u64,
    msgs_device_to_host: u64,
    msgs_host_to_device: u64,
    bytes_device_to_host_per_elem: f64,
    bytes_host_to_device_per_elem: f64,
    bytes_dealer_to_host_per_elem: f64,
    online_ns_per_elem: f64,
    dealer_ns_per_elem: f64,
    plain_int64_ns_per_elem: f64,
    ratio_to_plain: f64,
}

fn random(n: usize, id: u64, bits: u32) -> Vec<u64> {
    let mut p = Prg::new(&Seed::from_bytes([1; 32]), id, 0);
    (0..n).map(|_| ((p.next_u64() as i64) >> (64 - bits)) as u64).collect()
}

fn row(op: &'static str, shape: String, elements: usize, r: &Run3, best: (u64, u64), plain_ns: f64) -> Row {
    let (dev, dealer) = (r.device, r.dealer);
    let e = elements as f64;
    let online = best.1 as f64 / e;
    Row {
        op,
        shape,
        elements,
        rounds: dev.rounds,
        msgs_device_to_host: dev.msgs_sent,
        msgs_host_to_device: dev.msgs_recv,
        bytes_device_to_host_per_elem: dev.bytes_sent as f64 / e,
        bytes_host_to_device_per_elem: dev.bytes_recv as f64 / e,
        bytes_dealer_to_host_per_elem: dealer.bytes_recv as f64 / e,
        online_ns_per_elem: online,
        dealer_ns_per_elem: best.0 as f64 / e,
        plain_int64_ns_per_elem: plain_ns,
        ratio_to_plain: if plain_ns > 0.0 { online / plain_ns } else { f64::NAN },
    }
}

/// Runs `f` on the three parties `reps` times (the dealer first, then host
/// and device), `x` split into shares afresh each time; the meters of the
/// last run and the fastest (dealer, online) times.
fn measure(
    reps: usize,
    x: &[u64],
    views: [&[u64]; 3],
    f: &PartyFn<'_, std::io::Error>,
) -> Result<(Run3, (u64, u64)), String> {
    let keys = LocalKeys::fixed(42);
    let fp = FixedPoint::default();
    let mut best = (u64::MAX, u64::MAX);
    let mut last = None;
    for r in 0..reps.max(1) {
        let (x0, x1) = local::share(&keys, r as u64, x);
        let links = (mpcvit_transport::mem::pair(), mpcvit_transport::mem::pair());
        let run = local::run3(fp, &keys, r as u64, links, [&x0, &x1], views, f, Schedule::DealerFirst)
            .map_err(|e| e.to_string())?;
        best = (best.0.min(run.dealer_ns), best.1.min(run.online_ns));
        last = Some(run);
    }
    Ok((last.ok_or("no repetition ran")?, best))
}

/// An op of `n` elements on the first half of the input and, for binary
/// ops, the second.
type Res = Result<Vec<u64>, LocalError<std::io::Error>>;

fn plain_ns(reps: usize, elements: usize, mut f: impl FnMut()) -> f64 {
    let mut best = u128::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_nanos());
    }
    best as f64 / elements as f64
}

fn plain_matmul(x: &[i64], y: &[i64], (n, k, m): (usize, usize, usize)) -> Vec<i64> {
    let mut z = vec![0i64; n * m];
    for i in 0..n {
        for l in 0..k {
            let a = x[i * k + l];
            for j in 0..m {
                z[i * m + j] = z[i * m + j].wrapping_add(a.wrapping_mul(y[l * m + j]));
            }
        }
    }
    z
}

/// Runs the benchmark.
pub fn run(a: &Args) -> Result<(), String> {
    let mut rows = Vec::new();
    let mut sizes = vec![];
    let mut s = 1000;
    while s <= a.max_size {
        sizes.push(s);
        s *= 10;
    }
    elementwise(a, &sizes, &mut rows)?;
    matmuls(a, &mut rows)?;
    linears(a, &mut rows)?;
    print_table(&rows);
    eprintln!("bench-ops: nonlinear ops, {} elements each", a.nonlinear);
    let nl = crate::bench_nonlinear::run(a.nonlinear)?;
    crate::bench_nonlinear::print(&nl);
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&serde_json::json!({ "linear_and_arithmetic": rows, "nonlinear": nl }))
        .map_err(|e| e.to_string())?;
    let tmp = a.out.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out).map_err(|e| format!("cannot write {}: {e}", a.out.display()))?;
    eprintln!("bench-ops: wrote {}", a.out.display());
    Ok(())
}

/// Products and truncations of `sizes` elements.
fn elementwise(a: &Args, sizes: &[usize], rows: &mut Vec<Row>) -> Result<(), String> {
    let fp = FixedPoint::default();
    for &n in sizes {
        eprintln!("bench-ops: elementwise ops, n = {n}");
        let x = random(n, 1, 40);
        let y = random(n, 2, 40);
        let (xi, yi): (Vec<i64>, Vec<i64>) = (
            x.iter().map(|&v| v as i64).collect(),
            y.iter().map(|&v| v as i64).collect(),
        );
        let plain_mul = plain_ns(a.reps, n, || {
            let z: Vec<i64> = xi.iter().zip(&yi).map(|(a, b)| a.wrapping_mul(*b) >> 16).collect();
            black_box(z);
        });
        let plain_shift = plain_ns(a.reps, n, || {
            let z: Vec<i64> = xi.iter().map(|a| a >> 16).collect();
            black_box(z);
        });
        let xy: Vec<u64> = x.iter().chain(&y).copied().collect();
        let mul = |p: &mut dyn Party<Error = LocalError<std::io::Error>>, v: &[u64], _: &[u64]| -> Res {
            let (a, b) = v.split_at(n);
            let mut z = vec![0; n];
            p.mul(a, b, 1, &mut z)?;
            Ok(z)
        };
        let (r, t) = measure(a.reps, &xy, [&[], &[], &[]], &mul)?;
        rows.push(row("mul (Beaver, ring)", format!("{n}"), n, &r, t, plain_mul));
        let trunc = |p: &mut dyn Party<Error = LocalError<std::io::Error>>, v: &[u64], _: &[u64]| -> Res {
            let mut z = vec![0; v.len()];
            p.trunc(fp.frac_bits(), v, &mut z)?;
            Ok(z)
        };
        let (r, t) = measure(a.reps, &x, [&[], &[], &[]], &trunc)?;
        rows.push(row("trunc exact", format!("{n}"), n, &r, t, plain_shift));
        // local truncation moves no bytes: each share is shifted alone
        let keys = LocalKeys::fixed(42);
        let mut best = u64::MAX;
        for rep in 0..a.reps.max(1) {
            let (x0, x1) = local::share(&keys, rep as u64, &x);
            let t0 = Instant::now();
            let z: Vec<u64> = x0
                .iter()
                .zip(&x1)
                .map(|(&u, &v)| {
                    mpcvit_core::protocol::trunc::local(u, fp.frac_bits())
                        .wrapping_add(mpcvit_core::protocol::trunc::local(v, fp.frac_bits()))
                })
                .collect();
            black_box(z);
            best = best.min(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        rows.push(Row {
            op: "trunc local",
            shape: format!("{n}"),
            elements: n,
            rounds: 0,
            msgs_device_to_host: 0,
            msgs_host_to_device: 0,
            bytes_device_to_host_per_elem: 0.0,
            bytes_host_to_device_per_elem: 0.0,
            bytes_dealer_to_host_per_elem: 0.0,
            online_ns_per_elem: best as f64 / n as f64,
            dealer_ns_per_elem: 0.0,
            plain_int64_ns_per_elem: plain_shift,
            ratio_to_plain: best as f64 / n as f64 / plain_shift,
        });
        // fixed-point product: mul then exact truncation (two ops)
        let fixed_mul = |p: &mut dyn Party<Error = LocalError<std::io::Error>>, v: &[u64], _: &[u64]| -> Res {
            let (a, b) = v.split_at(n);
            let (mut z, mut t) = (vec![0; n], vec![0; n]);
            p.mul(a, b, 1, &mut z)?;
            p.trunc(fp.frac_bits(), &z, &mut t)?;
            Ok(t)
        };
        let (r, t) = measure(a.reps, &xy, [&[], &[], &[]], &fixed_mul)?;
        rows.push(row(
            "fixed mul (mul + trunc exact)",
            format!("{n}"),
            n,
            &r,
            t,
            plain_mul,
        ));
    }
    Ok(())
}

/// Shared x shared matrix products up to `--max-size` outputs.
fn matmuls(a: &Args, rows: &mut Vec<Row>) -> Result<(), String> {
    let mm_shapes: Vec<(usize, usize, usize)> = vec![(32, 32, 32), (100, 100, 100), (65, 64, 65), (316, 316, 316)]
        .into_iter()
        .filter(|(n, _, m)| n * m <= a.max_size)
        .collect();
    for (n, k, m) in mm_shapes {
        eprintln!("bench-ops: matmul {n}x{k} by {k}x{m}");
        let x = random(n * k, 3, 40);
        let y = random(k * m, 4, 40);
        let (xi, yi): (Vec<i64>, Vec<i64>) = (
            x.iter().map(|&v| v as i64).collect(),
            y.iter().map(|&v| v as i64).collect(),
        );
        let pn = plain_ns(a.reps, n * m, || {
            black_box(plain_matmul(&xi, &yi, (n, k, m)));
        });
        let sh = MatmulShape::new(n, k, m);
        let xy: Vec<u64> = x.iter().chain(&y).copied().collect();
        let mm = |p: &mut dyn Party<Error = LocalError<std::io::Error>>, v: &[u64], _: &[u64]| -> Res {
            let (a, b) = v.split_at(n * k);
            let mut z = vec![0; n * m];
            p.matmul(sh, a, &mut b.to_vec(), &mut z)?;
            Ok(z)
        };
        let (r, t) = measure(a.reps, &xy, [&[], &[], &[]], &mm)?;
        rows.push(row(
            "matmul (shared x shared)",
            format!("{n}x{k} * {k}x{m}"),
            n * m,
            &r,
            t,
            pn,
        ));
    }
    Ok(())
}

/// Host-weights linear layers with their truncation: vit_7_4_32's `qkv`, the bundled model's `qkv`, a projection.
fn linears(a: &Args, rows: &mut Vec<Row>) -> Result<(), String> {
    let fp = FixedPoint::default();
    for (n, din, dout) in [(65usize, 256usize, 768usize), (50, 64, 192), (65, 256, 256)] {
        eprintln!("bench-ops: linear {n}x{din} by {din}x{dout}");
        let x = random(n * din, 5, 40);
        let wt = random(din * dout, 6, 40);
        let (xi, wi): (Vec<i64>, Vec<i64>) = (
            x.iter().map(|&v| v as i64).collect(),
            wt.iter().map(|&v| v as i64).collect(),
        );
        let pn = plain_ns(a.reps, n * dout, || {
            black_box(plain_matmul(&xi, &wi, (n, din, dout)));
        });
        let sh = LinearShape::new(n, din, dout);
        let views = local::weight_views(&LocalKeys::fixed(42), 0, &wt);
        let lin = |p: &mut dyn Party<Error = LocalError<std::io::Error>>, v: &[u64], w: &[u64]| -> Res {
            let mut z = vec![0; n * dout];
            p.linear_trunc(sh, v, w, &[], fp.frac_bits(), &mut z)?;
            Ok(z)
        };
        let (r, t) = measure(a.reps, &x, [&views[0], &views[1], &views[2]], &lin)?;
        rows.push(row(
            "linear + trunc (host W x shared X)",
            format!("{n}x{din} * {din}x{dout}"),
            n * dout,
            &r,
            t,
            pn,
        ));
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "| op | shape | rounds | msgs D->H / H->D | B/elem D->H | B/elem H->D | B/elem dealer->H | online ns/elem | dealer ns/elem | int64 ns/elem | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} / {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.0}x |",
            r.op,
            r.shape,
            r.rounds,
            r.msgs_device_to_host,
            r.msgs_host_to_device,
            r.bytes_device_to_host_per_elem,
            r.bytes_host_to_device_per_elem,
            r.bytes_dealer_to_host_per_elem,
            r.online_ns_per_elem,
            r.dealer_ns_per_elem,
            r.plain_int64_ns_per_elem,
            r.ratio_to_plain
        );
    }
}
