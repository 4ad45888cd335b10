//! `mpcvit bench-ops`: the cost of each secure op, measured.
//!
//! Host, device and dealer run in one thread over in-memory pipes; the
//! online time is the sum of host and device compute (in a deployment they
//! run on two machines, so this is an upper bound), the dealer time is
//! reported apart. Bytes are counted by the links, frame headers included.

use mpcvit_conformance::World;
use mpcvit_core::FixedPoint;
use mpcvit_core::prg::{Prg, Seed};
use mpcvit_core::protocol::linear::LinearShape;
use mpcvit_core::protocol::matmul::MatmulShape;
use mpcvit_transport::Meter;
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

struct Snap {
    dev: Meter,
    dealer: Meter,
}

fn snap(w: &World) -> Snap {
    Snap {
        dev: w.device.host.meter(),
        dealer: w.host.dealer.meter(),
    }
}

#[allow(clippy::too_many_arguments)]
fn row(
    op: &'static str,
    shape: String,
    elements: usize,
    w: &World,
    before: &Snap,
    best: (u64, u64),
    plain_ns: f64,
) -> Row {
    let dev = w.device.host.meter().since(&before.dev);
    let dealer = w.host.dealer.meter().since(&before.dealer);
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

/// Runs `f` `reps` times on a fresh world; meters of the last run, fastest time.
fn measure(
    reps: usize,
    mut f: impl FnMut(&mut World) -> Result<(), String>,
) -> Result<(World, Snap, (u64, u64)), String> {
    let mut best = (u64::MAX, u64::MAX);
    let mut last = None;
    for r in 0..reps.max(1) {
        let mut w = World::new(42, r as u64);
        let s = snap(&w);
        f(&mut w)?;
        best = (best.0.min(w.last_ns.0), best.1.min(w.last_ns.1));
        last = Some((w, s));
    }
    let (w, s) = last.ok_or("no repetition ran")?;
    Ok((w, s, best))
}

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
    let fp = FixedPoint::default();
    let mut rows = Vec::new();
    let mut sizes = vec![];
    let mut s = 1000;
    while s <= a.max_size {
        sizes.push(s);
        s *= 10;
    }
    for &n in &sizes {
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
        let (w, s0, t) = measure(a.reps, |w| w.mul(&x, &y).map(|_| ()).map_err(|e| format!("{e:?}")))?;
        rows.push(row("mul (Beaver, ring)", format!("{n}"), n, &w, &s0, t, plain_mul));
        let (w, s0, t) = measure(a.reps, |w| w.trunc(fp, &x).map(|_| ()).map_err(|e| format!("{e:?}")))?;
        rows.push(row("trunc exact", format!("{n}"), n, &w, &s0, t, plain_shift));
        let (w, s0, t) = measure(a.reps, |w| {
            black_box(w.trunc_local(fp, &x));
            Ok(())
        })?;
        rows.push(row("trunc local", format!("{n}"), n, &w, &s0, t, plain_shift));
        // fixed-point product: mul then exact truncation (two ops)
        let (w, s0, t) = measure(a.reps, |w| {
            let z = w.mul(&x, &y).map_err(|e| format!("{e:?}"))?;
            let first = w.last_ns;
            w.trunc(fp, &z).map_err(|e| format!("{e:?}"))?;
            w.last_ns = (w.last_ns.0 + first.0, w.last_ns.1 + first.1);
            Ok(())
        })?;
        rows.push(row(
            "fixed mul (mul + trunc exact)",
            format!("{n}"),
            n,
            &w,
            &s0,
            t,
            plain_mul,
        ));
    }
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
        let sh = MatmulShape { n, k, m };
        let (w, s0, t) = measure(a.reps, |w| {
            w.matmul(sh, &x, &y).map(|_| ()).map_err(|e| format!("{e:?}"))
        })?;
        rows.push(row(
            "matmul (shared x shared)",
            format!("{n}x{k} * {k}x{m}"),
            n * m,
            &w,
            &s0,
            t,
            pn,
        ));
    }
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
        let sh = LinearShape { n, din, dout };
        let (w, s0, t) = measure(a.reps, |w| {
            w.linear(sh, 0, &x, &wt).map(|_| ()).map_err(|e| format!("{e:?}"))
        })?;
        rows.push(row(
            "linear (host W x shared X)",
            format!("{n}x{din} * {din}x{dout}"),
            n * dout,
            &w,
            &s0,
            t,
            pn,
        ));
    }
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
