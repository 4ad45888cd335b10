//! Conformance laws of the lookup protocol and the nonlinear ops built on
//! it, against the plaintext fixed-point reference.

use mpcvit_conformance::World;
use mpcvit_core::FixedPoint;
use mpcvit_core::protocol::lut::{self, LutShape, Table};
use mpcvit_core::protocol::pwl::{Func, Pwl, ReluOut, ReluTable};
use mpcvit_core::reference;
use proptest::prelude::*;

/// Inputs inside the stated range of a shape.
fn inputs(sh: LutShape, len: usize) -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec((sh.min_input()..sh.max_input()).prop_map(|v| v as u64), len)
}

fn shape() -> impl Strategy<Value = LutShape> {
    (1usize..120, 4u32..24, 2u32..=10).prop_map(|(n, s, k)| LutShape { n, s, k, t: 0 })
}

/// The references a lookup output may equal: grid index `y` or `y + 1`,
/// coordinate `u` or `u + 1` (the latter only when `t > 0`).
fn allowed(sh: LutShape, t: &dyn Table, x: u64, o: usize) -> Vec<u64> {
    let (y, u) = (sh.index(x), sh.coord(x));
    let us: &[u64] = if sh.t > 0 { &[0, 1] } else { &[0] };
    let mut v = vec![];
    for dy in [0, 1] {
        for &du in us {
            v.push(lut::reference(t, u + du, y + dy, o));
        }
    }
    v
}

/// The lookup law: each output equals one of the [`allowed`] references.
fn check_lut(sh: LutShape, t: &dyn Table, x: &[u64], got: &[u64]) -> Result<(), TestCaseError> {
    let outs = t.outputs();
    for (i, &xv) in x.iter().enumerate() {
        for o in 0..outs {
            let g = got[i * outs + o];
            let ok = allowed(sh, t, xv, o);
            prop_assert!(
                ok.contains(&g),
                "x {:#x} o {}: got {:#x}, want one of {:x?}",
                xv,
                o,
                g,
                ok
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn lut_relu_table_law((sh, x) in shape().prop_flat_map(|sh| (Just(sh), inputs(sh, sh.n))), session in any::<u64>()) {
        let mut w = World::new(11, session);
        let t = ReluTable { shape: sh, out: ReluOut::Both };
        let got = w.lut(sh, &t, &x).expect("secure lut");
        check_lut(sh, &t, &x, &got)?;
    }

    #[test]
    fn lut_pwl_table_law((sh, x) in (1usize..60, 8u32..14, 2u32..=8, 0u32..8).prop_map(|(n, s, k, t)| LutShape { n, s, k, t: t.min(s) })
            .prop_flat_map(|sh| (Just(sh), inputs(sh, sh.n))), session in any::<u64>()) {
        let mut w = World::new(12, session);
        let t = Pwl::new(Func::Gelu, sh, FixedPoint::new(12).expect("f"));
        let got = w.lut(sh, &t, &x).expect("secure lut");
        check_lut(sh, &t, &x, &got)?;
    }

    /// ReLU and DReLU are exact except in the stated region `[-2^s, 0)`,
    /// where ReLU may pass `x` through and DReLU may say 1.
    #[test]
    fn relu_and_drelu_exact_outside_the_carry_region((sh, x) in shape().prop_flat_map(|sh| (Just(sh), inputs(sh, sh.n))), session in any::<u64>()) {
        let mut w = World::new(13, session);
        let got = w.lut(sh, &ReluTable { shape: sh, out: ReluOut::Both }, &x).expect("secure lut");
        for (i, &xv) in x.iter().enumerate() {
            let xs = xv as i64;
            let (relu, drelu) = (got[2 * i], got[2 * i + 1]);
            if xs >= 0 || xs < -(1 << sh.s) {
                prop_assert_eq!(relu, if xs >= 0 { xv } else { 0 });
                prop_assert_eq!(drelu, (xs >= 0) as u64);
            } else {
                prop_assert!((relu == 0 && drelu == 0) || (relu == xv && drelu == 1));
            }
        }
    }

    /// Fitted functions after truncation: within the lookup law and one ulp.
    #[test]
    fn pwl_then_trunc_within_one_ulp(func in prop_oneof![Just(Func::Gelu), Just(Func::Exp)],
            (sh, x) in (1usize..60).prop_map(|n| LutShape { n, s: 12, k: 8, t: 4 }).prop_flat_map(|sh| (Just(sh), inputs(sh, sh.n))),
            session in any::<u64>()) {
        let fp = FixedPoint::default();
        let mut w = World::new(14, session);
        let t = Pwl::new(func, sh, fp);
        let z = w.lut(sh, &t, &x).expect("secure lut");
        let out = w.trunc(fp, &z).expect("secure trunc");
        for (i, &xv) in x.iter().enumerate() {
            let ok = allowed(sh, &t, xv, 0).iter().any(|&r| {
                let d = out[i].wrapping_sub(reference::trunc(r, 16)) as i64;
                (0..=1).contains(&d)
            });
            prop_assert!(ok, "x {:#x}", xv);
        }
    }
}
