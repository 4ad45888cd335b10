//! Conformance laws: every secure op of issue 3 decodes to the plaintext
//! fixed-point reference within its stated bound, for random shapes and
//! inputs over the stated ranges. Host, device and dealer (the product's
//! parties) run in three threads over in-memory pipes ([`World`]).

use mpcvit_conformance::World;
use mpcvit_core::FixedPoint;
use mpcvit_core::corr::Role;
use mpcvit_core::protocol::affine;
use mpcvit_core::protocol::linear::LinearShape;
use mpcvit_core::protocol::matmul::MatmulShape;
use mpcvit_core::protocol::trunc;
use mpcvit_core::reference;
use proptest::prelude::*;

/// One law, instantiated per op: for every input drawn from `$strategy`,
/// `$secure` (run on a fresh World) and `$reference` produce ring vectors
/// whose elementwise signed difference `secure - reference` lies in `$lo..=$hi`.
macro_rules! conformance_law {
    ($name:ident, cases = $cases:expr, $strategy:expr,
     secure = |$w:ident, $a:pat_param| $secure:expr,
     reference = |$b:pat_param| $reference:expr,
     bound = $lo:literal ..= $hi:literal) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases($cases))]
            #[test]
            fn $name(input in $strategy, session in any::<u64>()) {
                let mut $w = World::new(7, session);
                let got: Vec<u64> = { let $a = input.clone(); $secure };
                let want: Vec<u64> = { let $b = input; $reference };
                prop_assert_eq!(got.len(), want.len());
                for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                    let d = g.wrapping_sub(*r) as i64;
                    prop_assert!(($lo..=$hi).contains(&d),
                        "element {}: secure {:#x} reference {:#x} (diff {})", i, g, r, d);
                }
            }
        }
    };
}

/// Fixed-point values with |v| < 2^bits (real), as ring elements at f = 16.
fn fx(bits: u32, len: impl Into<proptest::collection::SizeRange>) -> impl Strategy<Value = Vec<u64>> {
    let lim = 1i64 << (bits + 16);
    proptest::collection::vec((-lim..lim).prop_map(|v| v as u64), len)
}

/// A shape `(n, k, m)` with an `n x k` and a `k x m` matrix.
type Shaped<V> = ((usize, usize, usize), Vec<V>, Vec<V>);

fn shape_and<T: Strategy + Clone>(
    dims: impl Strategy<Value = (usize, usize, usize)>,
    elem: T,
) -> impl Strategy<Value = Shaped<T::Value>>
where
    T::Value: Clone + std::fmt::Debug,
{
    dims.prop_flat_map(move |(n, k, m)| {
        (
            Just((n, k, m)),
            proptest::collection::vec(elem.clone(), n * k),
            proptest::collection::vec(elem.clone(), k * m),
        )
    })
}

// Beaver product: exact in the ring, any inputs.
conformance_law!(
    mul_is_exact_ring_product,
    cases = 64,
    (1usize..300).prop_flat_map(|n| (
        proptest::collection::vec(any::<u64>(), n),
        proptest::collection::vec(any::<u64>(), n)
    )),
    secure = |w, (x, y)| w.mul(&x, &y).expect("secure mul"),
    reference = |(x, y)| x.iter().zip(&y).map(|(a, b)| a.wrapping_mul(*b)).collect(),
    bound = 0..=0
);

// Fixed-point product: Beaver then exact truncation, |x|, |y| < 2^10 at f = 16:
// within one unit in the last place (0 or +1) of reference::mul.
conformance_law!(
    fixed_mul_within_one_ulp,
    cases = 64,
    (1usize..300).prop_flat_map(|n| (fx(10, n), fx(10, n))),
    secure = |w, (x, y)| {
        let fp = FixedPoint::default();
        let z = w.mul(&x, &y).expect("secure mul");
        w.trunc(fp, &z).expect("secure trunc")
    },
    reference = |(x, y)| x.iter().zip(&y).map(|(a, b)| reference::mul(*a, *b, 16)).collect(),
    bound = 0..=1
);

// Shared x shared matrix product: exact in the ring, random shapes.
conformance_law!(
    matmul_is_exact_ring_product,
    cases = 64,
    shape_and((1usize..9, 1usize..17, 1usize..9), any::<u64>()),
    secure = |w, ((n, k, m), x, y)| w.matmul(MatmulShape::new(n, k, m), &x, &y).expect("secure matmul"),
    reference = |((n, k, m), x, y)| {
        let mut z = vec![0; n * m];
        reference::matmul(&x, &y, (n, k, m), &mut z).expect("shape");
        z
    },
    bound = 0..=0
);

// Host-weights linear layer with its truncation (the model's only form):
// within one unit in the last place (0 or +1) of the truncated ring product,
// for any shapes, masks and truncations by 1..=30 bits, and inputs and
// weights below 2^26 (products inside the exact truncation's range).
conformance_law!(
    linear_trunc_within_one_ulp_of_ring_product,
    cases = 64,
    (
        shape_and((1usize..9, 1usize..33, 1usize..17), -(1i64 << 26)..(1i64 << 26)).prop_map(|(s, x, w)| (
            s,
            x.into_iter().map(|v| v as u64).collect::<Vec<u64>>(),
            w.into_iter().map(|v| v as u64).collect::<Vec<u64>>()
        )),
        0u64..1000,
        1u32..=30
    ),
    secure = |w, (((n, din, dout), x, wt), layer, bits)| w
        .linear_trunc(LinearShape::new(n, din, dout), layer, (&x, &wt, &[]), bits)
        .expect("secure linear"),
    reference = |(((n, din, dout), x, wt), _, bits)| {
        let mut z = vec![0; n * dout];
        reference::matmul(&x, &wt, (n, din, dout), &mut z).expect("shape");
        z.iter().map(|v| reference::trunc(*v, bits)).collect()
    },
    bound = 0..=1
);

// The same layer in a narrower width of `wb` bytes (3..=8): the device's
// message and the truncation's go in `wb` bytes a word, the product is
// right modulo `2^(8 wb)` only, and the truncation lifts it to the whole
// ring: within one ulp of the truncated ring product for outputs inside
// `[-2^(8 wb - 2), 2^(8 wb - 2))` (inputs and weights below `2^(4 wb -
// 4)`, at most 32 terms), truncations by 1..=30 bits (at most `8 wb - 2`).
conformance_law!(
    linear_trunc_in_a_width_within_one_ulp,
    cases = 64,
    (3usize..=8).prop_flat_map(|wb| {
        let lim = 1i64 << (4 * wb - 4);
        (
            Just(wb),
            shape_and((1usize..9, 1usize..33, 1usize..17), -lim..lim).prop_map(|(s, x, w)| {
                (
                    s,
                    x.into_iter().map(|v| v as u64).collect::<Vec<u64>>(),
                    w.into_iter().map(|v| v as u64).collect::<Vec<u64>>(),
                )
            }),
            1u32..=(30.min(8 * wb as u32 - 2)),
        )
    }),
    secure = |w, (wb, ((n, din, dout), x, wt), bits)| w
        .linear_trunc(LinearShape::new(n, din, dout).with_width(wb), 9, (&x, &wt, &[]), bits)
        .expect("secure linear"),
    reference = |(_, ((n, din, dout), x, wt), bits)| {
        let mut z = vec![0; n * dout];
        reference::matmul(&x, &wt, (n, din, dout), &mut z).expect("shape");
        z.iter().map(|v| reference::trunc(*v, bits)).collect()
    },
    bound = 0..=1
);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A matrix product whose openings go in `wb` bytes a word is the ring
    /// product modulo `2^(8 wb)`, for any inputs.
    #[test]
    fn matmul_in_a_width_is_exact_modulo_its_width(
        wb in 1usize..=8,
        ((n, k, m), x, y) in shape_and((1usize..9, 1usize..17, 1usize..9), any::<u64>()),
        session in any::<u64>(),
    ) {
        let mut w = World::new(7, session);
        let got = w.matmul(MatmulShape::new(n, k, m).with_width(wb), &x, &y).expect("secure matmul");
        let mut want = vec![0; n * m];
        reference::matmul(&x, &y, (n, k, m), &mut want).expect("shape");
        let mask = u64::MAX >> (64 - 8 * wb);
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(g & mask, r & mask, "element {}", i);
        }
    }
}

// A layer whose input is an exact truncation's output, the device's share
// of it taken from its seed (no input message): truncation by `tbits`
// (1..=30), the layer in `wb` bytes (at most `64 - tbits` bits), inputs up
// to `2^(4 wb - 4)` after the truncation: within one ulp of the truncated
// ring product of the truncation's (revealed) output.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn linear_on_a_held_truncation_within_one_ulp(
        (tbits, wb, ((n, din, dout), x, wt), bits) in (1u32..=30).prop_flat_map(|tb| {
            (Just(tb), 2usize..=((64 - tb as usize) / 8).min(8))
        }).prop_flat_map(|(tb, wb)| {
            let lim = 1i64 << (4 * wb - 4);
            (
                Just(tb),
                Just(wb),
                shape_and((1usize..9, 1usize..33, 1usize..17), -lim..lim).prop_map(move |(s, x, w)| (
                    s,
                    // inputs before the truncation: the value times 2^tb plus low bits
                    x.into_iter().map(|v| ((v << tb) | (v & ((1 << tb) - 1)).abs()) as u64).collect::<Vec<u64>>(),
                    w.into_iter().map(|v| v as u64).collect::<Vec<u64>>()
                )),
                1u32..=(30.min(8 * wb as u32 - 2)),
            )
        }),
        session in any::<u64>(),
    ) {
        let mut w = World::new(7, session);
        let s = LinearShape::new(n, din, dout).with_width(wb);
        let out = w.trunc_then_linear_held(tbits, s, 11, (&x, &wt), bits).expect("secure");
        let (t, z) = out.split_at(n * din);
        let mut want = vec![0; n * dout];
        reference::matmul(t, &wt, (n, din, dout), &mut want).expect("shape");
        for (i, (g, r)) in z.iter().zip(&want).enumerate() {
            let d = g.wrapping_sub(reference::trunc(*r, bits)) as i64;
            prop_assert!((0..=1).contains(&d), "element {}: diff {}", i, d);
        }
    }
}

// The same layer with its input sent ahead in blocks (as the attention
// output goes to the projection): any block and row-tile cut, the blocks
// in reverse order, and truncations by 0..=30 bits.
conformance_law!(
    linear_blocks_within_one_ulp_of_ring_product,
    cases = 48,
    (
        shape_and((1usize..9, 1usize..33, 1usize..17), -(1i64 << 26)..(1i64 << 26)).prop_map(|(s, x, w)| (
            s,
            x.into_iter().map(|v| v as u64).collect::<Vec<u64>>(),
            w.into_iter().map(|v| v as u64).collect::<Vec<u64>>()
        )),
        (1usize..5, 1usize..12, 1usize..5),
        0u32..=30
    ),
    secure = |w, (((n, din, dout), x, wt), cut, bits)| w
        .linear_trunc_blocks(LinearShape::new(n, din, dout), 5, (&x, &wt, &[]), bits, cut)
        .expect("secure linear from blocks"),
    reference = |(((n, din, dout), x, wt), _, bits)| {
        let mut z = vec![0; n * dout];
        reference::matmul(&x, &wt, (n, din, dout), &mut z).expect("shape");
        z.iter().map(|v| reference::trunc(*v, bits)).collect()
    },
    bound = 0..=1
);

// Linear layer in fixed point with bias and truncation, |x| < 2^4, |w| < 2
// at f = 16: within one ulp of reference::linear.
conformance_law!(
    fixed_linear_within_one_ulp,
    cases = 48,
    (1usize..6, 1usize..40, 1usize..20).prop_flat_map(|(n, din, dout)| (
        Just((n, din, dout)),
        fx(4, n * din),
        fx(1, din * dout),
        fx(1, dout)
    )),
    secure = |w, ((n, din, dout), x, wt, bias)| {
        let s = LinearShape::new(n, din, dout);
        // the host adds the bias at product scale
        let b2: Vec<u64> = bias.iter().map(|b| b.wrapping_shl(16)).collect();
        w.linear_trunc(s, 3, (&x, &wt, &b2), 16).expect("secure linear")
    },
    reference = |((n, din, dout), x, wt, bias)| {
        let b2: Vec<u64> = bias.iter().map(|b| b.wrapping_shl(16)).collect();
        let mut z = vec![0; n * dout];
        reference::linear(&x, &wt, Some(&b2), (n, din, dout), 16, &mut z).expect("shape");
        z
    },
    bound = 0..=1
);

// Exact truncation over its whole stated range [-2^62, 2^62), several f.
conformance_law!(
    exact_trunc_within_one_ulp,
    cases = 64,
    (
        1u32..=30,
        proptest::collection::vec(-(1i64 << 62)..(1i64 << 62), 1..400)
    ),
    secure = |w, (f, z)| {
        let z: Vec<u64> = z.iter().map(|v| *v as u64).collect();
        w.trunc(FixedPoint::new(f).expect("f"), &z).expect("secure trunc")
    },
    reference = |(f, z)| z.iter().map(|v| reference::trunc(*v as u64, f)).collect(),
    bound = 0..=1
);

// The device's truncation output regenerated from its reply bits and its
// seed (how it holds qkv): the same law, from any starting element.
conformance_law!(
    exact_trunc_regenerated_from_bits,
    cases = 32,
    (
        1u32..=30,
        proptest::collection::vec(-(1i64 << 62)..(1i64 << 62), 1..300),
        1usize..40
    ),
    secure = |w, (f, z, piece)| {
        let z: Vec<u64> = z.iter().map(|v| *v as u64).collect();
        w.trunc_regenerated(FixedPoint::new(f).expect("f"), &z, piece)
            .expect("secure trunc")
    },
    reference = |(f, z, _)| z.iter().map(|v| reference::trunc(*v as u64, f)).collect(),
    bound = 0..=1
);

/// Only the device regenerates, only an op it has drawn, and another op's
/// lanes do not explain its words.
#[test]
fn earlier_op_refusals() {
    let z: Vec<u64> = (0..64u64).map(|i| i.wrapping_mul(0x9e37_79b9) << 8).collect();
    let mut w = World::new(11, 3);
    w.run_any(&z, |p, v| {
        let op = p.next_op_id();
        let mut t = vec![0; v.len()];
        p.trunc(16, v, &mut t)?;
        let mut t2 = vec![0; v.len()];
        p.trunc(16, v, &mut t2)?;
        match p.role() {
            Role::Device => {
                assert!(p.earlier_op(op + 2).is_err(), "an op not yet drawn");
                assert!(p.earlier_op(op + 1).is_ok());
                let first = p.earlier_op(op)?;
                let got = trunc::device_reply_bits(&first, 16, trunc::FULL, 0, &t2, |_, _| {});
                assert_eq!(
                    got,
                    Err(mpcvit_core::ProtocolError::OutOfRange),
                    "the second op's words"
                );
                let got = trunc::device_reply_bits(&first, 16, trunc::FULL, 1, &t[..63], |_, _| {});
                assert_eq!(got, Err(mpcvit_core::ProtocolError::OutOfRange), "off by one element");
                assert!(trunc::device_reply_bits(&first, 16, trunc::FULL, 0, &t, |_, _| {}).is_ok());
            }
            _ => assert!(p.earlier_op(op).is_err(), "the host and the dealer hold no seed lanes"),
        }
        Ok(t)
    })
    .expect("run");
}

/// A block outside the input's columns, a block message of the wrong
/// length and a mask op that is not earlier than the layer are refused.
#[test]
fn linear_block_refusals() {
    use mpcvit_core::ProtocolError;
    use mpcvit_core::corr::{Correlations, SessionId};
    use mpcvit_core::prg::Seed;
    use mpcvit_core::protocol::linear::{self, LinearDeviceSent};
    let mut c = Correlations::new(Role::Device, &Seed::from_bytes([7; 32]), SessionId(1));
    let mask = c.next_op().expect("op");
    let x = [1u64; 6];
    let mut out = [0u8; 48];
    assert_eq!(linear::mask_block(&mask, 4, (0, 0, 3), &x, &mut out), Ok(48));
    assert_eq!(
        linear::mask_block(&mask, 4, (0, 2, 3), &x, &mut out),
        Err(ProtocolError::BadShape),
        "columns 2..5 of 4"
    );
    assert_eq!(
        linear::mask_block(&mask, 4, (0, 0, 4), &x, &mut out),
        Err(ProtocolError::BadShape),
        "6 words are not rows of 4"
    );
    let mut e = [0u64; 8];
    assert!(linear::unmask_block(4, (0, 1, 3), &x, &out, &mut e).is_ok());
    assert!(
        linear::unmask_block(4, (0, 1, 3), &x, &out[..40], &mut e).is_err(),
        "short message"
    );
    assert_eq!(
        linear::unmask_block(4, (1, 1, 3), &x, &out, &mut e),
        Err(ProtocolError::BadBuffer),
        "rows 1..3 of 2"
    );
    let s = LinearShape::new(2, 4, 3);
    let layer = c.next_op().expect("op");
    assert!(LinearDeviceSent::masked(c.earlier(layer.op()).expect("drawn"), s, layer.op(), 0).is_err());
    assert!(LinearDeviceSent::masked(c.earlier(mask.op()).expect("drawn"), s, layer.op(), 0).is_err());
    assert!(LinearDeviceSent::masked(layer, s, mask.op(), 0).is_ok());
    // an input held from a truncation: the truncation must be earlier, and
    // the layer's width within the 64 - bits bits the seed gives
    let t = c.next_op().expect("op").op();
    let held = c.next_op().expect("op");
    let h = |sh: LinearShape, op: u64, bits: u32| {
        LinearDeviceSent::held(c.earlier(held.op()).expect("drawn"), sh, op, bits).is_ok()
    };
    assert!(h(s.with_width(5), t, 24));
    assert!(!h(s.with_width(6), t, 24), "48 bits above 64 - 24");
    assert!(h(s.with_width(6), t, 16));
    assert!(!h(s.with_width(5), held.op(), 24), "not earlier");
    assert!(!h(s.with_width(5), t, 63), "not a truncation's bits");
}

// Local truncation for |z| < 2^32: the failure probability is < 2^-32 per
// element, so the law is -1..=0.
conformance_law!(
    local_trunc_within_one_ulp,
    cases = 64,
    proptest::collection::vec(-(1i64 << 32)..(1i64 << 32), 1..400),
    secure = |w, z| {
        let z: Vec<u64> = z.iter().map(|v| *v as u64).collect();
        w.trunc_local(FixedPoint::default(), &z)
    },
    reference = |z| z.iter().map(|v| reference::trunc(*v as u64, 16)).collect(),
    bound = -1..=0
);

// Public affine ops: exact.
conformance_law!(
    affine_is_exact,
    cases = 64,
    (
        proptest::collection::vec(any::<u64>(), 1..64),
        any::<u64>(),
        any::<u64>()
    ),
    secure = |w, (x, c, k)| {
        let (mut x0, mut x1) = w.share(&x);
        affine::add_public(Role::Host, &mut x0, c);
        affine::add_public(Role::Device, &mut x1, c);
        affine::mul_public(&mut x0, k);
        affine::mul_public(&mut x1, k);
        mpcvit_conformance::reconstruct(&x0, &x1)
    },
    reference = |(x, c, k)| x.iter().map(|v| v.wrapping_add(c).wrapping_mul(k)).collect(),
    bound = 0..=0
);

/// The stated failure probability of local truncation, measured: for
/// `z = 2^56` the share wraps with probability `2^56 / 2^64 = 2^-8`.
/// 200,000 trials expect 781 failures (sd 28); accept 600..=960. The share
/// randomness is seeded, so the count is deterministic.
#[test]
fn local_trunc_failure_rate_matches_bound() {
    let mut w = World::new(9, 1);
    let fp = FixedPoint::default();
    let z = vec![1u64 << 56; 200_000];
    let t = w.trunc_local(fp, &z);
    let want = reference::trunc(1 << 56, 16);
    let failures = t
        .iter()
        .filter(|&&v| v.wrapping_sub(want) as i64 > 1 || (v.wrapping_sub(want) as i64) < -1)
        .count();
    assert!((600..=960).contains(&failures), "{failures} failures");
    // and the exact protocol never fails on the same input
    let t = w.trunc(fp, &z[..20_000]).expect("exact trunc");
    assert!(t.iter().all(|&v| (0..=1).contains(&(v.wrapping_sub(want) as i64))));
}

/// A product finished with the least scratch (`E` and one row of `B` at a
/// time, as a microcontroller's) equals one finished with `B` whole and the
/// plaintext product, for each way `Y` is opened; `y` becomes `F` either way.
#[test]
fn matmul_with_least_scratch() {
    use mpcvit_core::corr::{Correlations, DealerSession, SessionId};
    use mpcvit_core::protocol::matmul::{self, Matmul, Right};
    let keys = mpcvit_conformance::keys(12);
    let mut r = mpcvit_core::prg::Prg::new(&keys.host, 9, 9);
    let (n, k, m) = (3, 7, 5);
    let x: Vec<u64> = (0..2 * n * k).map(|_| r.next_u64()).collect();
    let y: Vec<u64> = (0..k * m).map(|_| r.next_u64()).collect();
    let (x0, x1): (Vec<u64>, Vec<u64>) = x
        .iter()
        .map(|&v| {
            let s = r.next_u64();
            (v.wrapping_sub(s), s)
        })
        .unzip();
    let (y0, y1): (Vec<u64>, Vec<u64>) = y
        .iter()
        .map(|&v| {
            let s = r.next_u64();
            (v.wrapping_sub(s), s)
        })
        .unzip();
    for least in [false, true] {
        let sid = SessionId(5);
        let mut dealer = DealerSession::new(&keys.host, &keys.device, sid);
        let mut host = Correlations::new(Role::Host, &keys.host, sid);
        let mut dev = Correlations::new(Role::Device, &keys.device, sid);
        let (mut yh, mut yd) = (y0.clone(), y1.clone());
        for (i, right) in [Right::Keep, Right::Opened(0)].into_iter().enumerate() {
            let s = MatmulShape::new(n, k, m).with_right(right);
            let op = dealer.next_op().expect("op");
            let mut msg = vec![0u8; mpcvit_core::corr::dealer_message_len(n * m)];
            let mut ds = vec![0; s.dealer_scratch_len()];
            matmul::deal(&op, s, &mut ds, &mut msg).expect("deal");
            let hc = host.next_op_with(&msg).expect("host op");
            let dc = dev.next_op().expect("device op");
            let xs = |v: &[u64]| v[i * n * k..(i + 1) * n * k].to_vec();
            let (mut th, mut td) = (vec![0u8; s.msg_len()], vec![0u8; s.msg_len()]);
            let (oh, _) = Matmul::new(hc, s)
                .expect("h")
                .open(&xs(&x0), &yh, &mut th)
                .expect("open");
            let (od, _) = Matmul::new(dc, s)
                .expect("d")
                .open(&xs(&x1), &yd, &mut td)
                .expect("open");
            let len = if least { s.min_scratch_len() } else { s.scratch_len() };
            let (mut zh, mut zd) = (vec![0; n * m], vec![0; n * m]);
            oh.finish(&xs(&x0), &mut yh, &td, &mut vec![0; len], &mut zh)
                .expect("finish");
            od.finish(&xs(&x1), &mut yd, &th, &mut vec![0; len], &mut zd)
                .expect("finish");
            let mut want = vec![0; n * m];
            reference::matmul(&xs(&x), &y, (n, k, m), &mut want).expect("shape");
            let got = mpcvit_conformance::reconstruct(&zh, &zd);
            assert_eq!(got, want, "least scratch {least}, {right:?}");
            assert_eq!(yh, yd, "both parties hold the same opened F");
        }
        let too_small = MatmulShape::new(n, k, m).min_scratch_len() - 1;
        let s = MatmulShape::new(n, k, m);
        let op = dealer.next_op().expect("op");
        let mut msg = vec![0u8; mpcvit_core::corr::dealer_message_len(n * m)];
        matmul::deal(&op, s, &mut vec![0; s.dealer_scratch_len()], &mut msg).expect("deal");
        let dc = dev.next_op().expect("device op");
        let mut td = vec![0u8; s.msg_len()];
        let (od, _) = Matmul::new(dc, s)
            .expect("d")
            .open(&x1[..n * k], &y1, &mut td)
            .expect("open");
        let got = od.finish(
            &x1[..n * k],
            &mut y1.clone(),
            &td,
            &mut vec![0; too_small],
            &mut vec![0; n * m],
        );
        assert_eq!(got.err(), Some(mpcvit_core::ProtocolError::BadBuffer));
    }
}
