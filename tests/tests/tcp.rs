//! Each op once over real TCP sockets on 127.0.0.1, with host, device and
//! dealer in separate threads, checked against the plaintext reference.

use mpcvit_conformance::{Keys, reconstruct, tcp_parties};
use mpcvit_core::protocol::linear::{self, LinearShape};
use mpcvit_core::protocol::matmul::MatmulShape;
use mpcvit_core::{FixedPoint, prg::Prg, prg::Seed, reference};
use std::thread;

fn random(n: usize, id: u64) -> Vec<u64> {
    let mut p = Prg::new(&Seed::from_bytes([3; 32]), id, 0);
    (0..n).map(|_| p.next_u64()).collect()
}

/// Splits `x` into two shares with a seeded mask.
fn share(x: &[u64], id: u64) -> (Vec<u64>, Vec<u64>) {
    let r = random(x.len(), id);
    (x.iter().zip(&r).map(|(a, b)| a.wrapping_sub(*b)).collect(), r)
}

#[test]
fn mul_over_tcp() {
    let (mut h, mut d, mut dl) = tcp_parties(1, 11).expect("sockets");
    let (x, y) = (random(1000, 1), random(1000, 2));
    let ((x0, x1), (y0, y1)) = (share(&x, 3), share(&y, 4));
    let (z0, z1) = thread::scope(|s| {
        s.spawn(|| dl.mul(1000).expect("dealer"));
        let dev = s.spawn(|| {
            let st = d.mul_open(&x1, &y1).expect("device open");
            d.mul_finish(st, &x1, &y1).expect("device finish")
        });
        let msg = h.recv_dealer().expect("dealer msg");
        let st = h.mul_open(&msg, &x0, &y0).expect("host open");
        let z0 = h.mul_finish(st, &x0, &y0).expect("host finish");
        (z0, dev.join().expect("device thread"))
    });
    let want: Vec<u64> = x.iter().zip(&y).map(|(a, b)| a.wrapping_mul(*b)).collect();
    assert_eq!(reconstruct(&z0, &z1), want);
}

#[test]
fn matmul_over_tcp() {
    let (mut h, mut d, mut dl) = tcp_parties(2, 12).expect("sockets");
    let s = MatmulShape { n: 17, k: 32, m: 17 };
    let (x, y) = (random(s.n * s.k, 5), random(s.k * s.m, 6));
    let ((x0, x1), (y0, y1)) = (share(&x, 7), share(&y, 8));
    let (z0, z1) = thread::scope(|sc| {
        sc.spawn(|| dl.matmul(s).expect("dealer"));
        let dev = sc.spawn(|| {
            let st = d.matmul_open(s, &x1, &y1).expect("device open");
            d.matmul_finish(st, s, &x1, &y1).expect("device finish")
        });
        let msg = h.recv_dealer().expect("dealer msg");
        let st = h.matmul_open(&msg, s, &x0, &y0).expect("host open");
        let z0 = h.matmul_finish(st, s, &x0, &y0).expect("host finish");
        (z0, dev.join().expect("device thread"))
    });
    let mut want = vec![0; s.n * s.m];
    reference::matmul(&x, &y, (s.n, s.k, s.m), &mut want).expect("shape");
    assert_eq!(reconstruct(&z0, &z1), want);
}

#[test]
fn linear_over_tcp() {
    let (mut h, mut d, mut dl) = tcp_parties(3, 13).expect("sockets");
    let s = LinearShape {
        n: 65,
        din: 64,
        dout: 48,
    };
    let (x, w) = (random(s.n * s.din, 9), random(s.din * s.dout, 10));
    let (x0, x1) = share(&x, 11);
    let mut f = vec![0; w.len()];
    linear::masked_weights(&Keys::test(3).model, 5, &w, &mut f).expect("mask");
    let (z0, z1) = thread::scope(|sc| {
        sc.spawn(|| dl.linear(s, 5).expect("dealer"));
        let dev = sc.spawn(|| d.linear(s, &x1, &f).expect("device"));
        let msg = h.recv_dealer().expect("dealer msg");
        let z0 = h.linear(&msg, s, &x0, &w).expect("host");
        (z0, dev.join().expect("device thread"))
    });
    let mut want = vec![0; s.n * s.dout];
    reference::matmul(&x, &w, (s.n, s.din, s.dout), &mut want).expect("shape");
    assert_eq!(reconstruct(&z0, &z1), want);
}

#[test]
fn trunc_over_tcp() {
    let (mut h, mut d, mut dl) = tcp_parties(4, 14).expect("sockets");
    let fp = FixedPoint::default();
    let z: Vec<u64> = random(5000, 12).iter().map(|v| ((*v as i64) >> 2) as u64).collect();
    let (z0, z1) = share(&z, 13);
    let (t0, t1) = thread::scope(|sc| {
        sc.spawn(|| dl.trunc(z.len(), fp).expect("dealer"));
        let dev = sc.spawn(|| {
            let st = d.trunc_open(fp, &z1).expect("device open");
            d.trunc_finish(st, z1.len()).expect("device finish")
        });
        let msg = h.recv_dealer().expect("dealer msg");
        let t0 = h.trunc(&msg, fp, &z0).expect("host");
        (t0, dev.join().expect("device thread"))
    });
    for (got, v) in reconstruct(&t0, &t1).iter().zip(&z) {
        let d = got.wrapping_sub(reference::trunc(*v, 16)) as i64;
        assert!((0..=1).contains(&d), "diff {d}");
    }
}
