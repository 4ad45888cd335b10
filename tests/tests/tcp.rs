//! Each op once over real TCP sockets on 127.0.0.1, with host, device and
//! dealer (the product's parties) in separate threads, checked against the
//! plaintext reference.

use mpcvit_conformance::{P, Res, keys, tcp_links};
use mpcvit_core::protocol::linear::LinearShape;
use mpcvit_core::protocol::matmul::MatmulShape;
use mpcvit_core::{FixedPoint, prg::Prg, prg::Seed, reference};
use mpcvit_host::local::{self, LocalError, Schedule};

fn random(n: usize, id: u64) -> Vec<u64> {
    let mut p = Prg::new(&Seed::from_bytes([3; 32]), id, 0);
    (0..n).map(|_| p.next_u64()).collect()
}

type TcpRes = Result<Vec<u64>, LocalError<std::io::Error>>;

/// Runs `f` over TCP with `x` shared; the reconstructed output.
fn over_tcp(
    test: u8,
    session: u64,
    x: &[u64],
    views: [&[u64]; 3],
    f: impl Fn(&mut P<'_>, &[u64], &[u64]) -> Res<Vec<u64>> + Sync,
) -> Vec<u64> {
    let k = keys(test);
    let (x0, x1) = local::share(&k, session, x);
    local::run3(
        FixedPoint::default(),
        &k,
        session,
        tcp_links().expect("sockets"),
        [&x0, &x1],
        views,
        &f,
        Schedule::Concurrent,
    )
    .expect("run over TCP")
    .output
}

#[test]
fn mul_over_tcp() {
    let (x, y) = (random(1000, 1), random(1000, 2));
    let xy: Vec<u64> = x.iter().chain(&y).copied().collect();
    let got = over_tcp(1, 11, &xy, [&[], &[], &[]], |p, v, _| -> TcpRes {
        let (a, b) = v.split_at(1000);
        let mut z = vec![0; 1000];
        p.mul(a, b, 1, &mut z)?;
        Ok(z)
    });
    let want: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a.wrapping_mul(*b)).collect();
    assert_eq!(got, want);
}

#[test]
fn matmul_over_tcp() {
    let s = MatmulShape::new(17, 32, 17);
    let (x, y) = (random(s.n * s.k, 5), random(s.k * s.m, 6));
    let xy: Vec<u64> = x.iter().chain(&y).copied().collect();
    let got = over_tcp(2, 12, &xy, [&[], &[], &[]], |p, v, _| -> TcpRes {
        let (a, b) = v.split_at(s.n * s.k);
        let mut z = vec![0; s.n * s.m];
        p.matmul(s, a, &mut b.to_vec(), &mut z)?;
        Ok(z)
    });
    let mut want = vec![0; s.n * s.m];
    reference::matmul(&x, &y, (s.n, s.k, s.m), &mut want).expect("shape");
    assert_eq!(got, want);
}

#[test]
fn linear_over_tcp() {
    let s = LinearShape::new(65, 64, 48);
    // below 2^25, so that the products stay in the exact truncation's range
    let small = |v: Vec<u64>| -> Vec<u64> { v.iter().map(|&u| ((u as i64) >> 39) as u64).collect() };
    let (x, w) = (small(random(s.n * s.din, 9)), small(random(s.din * s.dout, 10)));
    let views = local::weight_views(&keys(3), 5, &w);
    let got = over_tcp(3, 13, &x, [&views[0], &views[1], &views[2]], |p, v, w| -> TcpRes {
        let mut z = vec![0; s.n * s.dout];
        p.linear_trunc(s, v, w, &[], 16, &mut z)?;
        Ok(z)
    });
    let mut want = vec![0; s.n * s.dout];
    reference::matmul(&x, &w, (s.n, s.din, s.dout), &mut want).expect("shape");
    for (g, v) in got.iter().zip(&want) {
        let d = g.wrapping_sub(reference::trunc(*v, 16)) as i64;
        assert!((0..=1).contains(&d), "diff {d}");
    }
}

#[test]
fn trunc_over_tcp() {
    let z: Vec<u64> = random(5000, 12).iter().map(|v| ((*v as i64) >> 2) as u64).collect();
    let got = over_tcp(4, 14, &z, [&[], &[], &[]], |p, v, _| -> TcpRes {
        let mut t = vec![0; v.len()];
        p.trunc(16, v, &mut t)?;
        Ok(t)
    });
    for (g, v) in got.iter().zip(&z) {
        let d = g.wrapping_sub(reference::trunc(*v, 16)) as i64;
        assert!((0..=1).contains(&d), "diff {d}");
    }
}
