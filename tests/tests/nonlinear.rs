//! Conformance laws of the lookup protocol and the nonlinear ops built on
//! it, against the plaintext fixed-point reference.

use mpcvit_conformance::World;
use mpcvit_core::FixedPoint;
use mpcvit_core::protocol::lut::{self, LutShape, Table};
use mpcvit_core::protocol::pwl::{Func, Pwl, ReluTable};
use mpcvit_core::reference;
use proptest::prelude::*;

/// Inputs inside the stated range of a shape.
fn inputs(sh: LutShape, len: usize) -> impl Strategy<Value = Vec<u64>> {
    let lo = -(sh.offset() as i64);
    let hi = (sh.offset() - (1 << sh.s)) as i64;
    proptest::collection::vec((lo..hi).prop_map(|v| v as u64), len)
}

fn shape() -> impl Strategy<Value = LutShape> {
    (1usize..120, 4u32..24, 1u32..=10).prop_map(|(n, s, k)| LutShape { n, s, k })
}

/// The lookup law: output `o` of element `i` is the reference at the
/// input's grid index or the next one.
fn check_lut(sh: LutShape, t: &dyn Table, x: &[u64], got: &[u64]) -> Result<(), TestCaseError> {
    let outs = t.outputs();
    for (i, &xv) in x.iter().enumerate() {
        let y = sh.index(xv);
        for o in 0..outs {
            let g = got[i * outs + o];
            let (r0, r1) = (lut::reference(t, xv, y, o), lut::reference(t, xv, y + 1, o));
            prop_assert!(
                g == r0 || g == r1,
                "x {:#x} y {} o {}: got {:#x}, want {:#x} or {:#x}",
                xv,
                y,
                o,
                g,
                r0,
                r1
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
        let t = ReluTable { shape: sh };
        let got = w.lut(sh, &t, &x).expect("secure lut");
        check_lut(sh, &t, &x, &got)?;
    }

    #[test]
    fn lut_pwl_table_law((sh, x) in (1usize..60, 8u32..14, 2u32..=8).prop_map(|(n, s, k)| LutShape { n, s, k })
            .prop_flat_map(|sh| (Just(sh), inputs(sh, sh.n))), session in any::<u64>()) {
        let mut w = World::new(12, session);
        let t = Pwl { func: Func::Gelu, shape: sh, fp: FixedPoint::new(12).expect("f") };
        let got = w.lut(sh, &t, &x).expect("secure lut");
        check_lut(sh, &t, &x, &got)?;
    }

    /// ReLU and DReLU are exact except in the stated region `[-2^s, 0)`,
    /// where ReLU may pass `x` through and DReLU may say 1.
    #[test]
    fn relu_and_drelu_exact_outside_the_carry_region((sh, x) in shape().prop_flat_map(|sh| (Just(sh), inputs(sh, sh.n))), session in any::<u64>()) {
        let mut w = World::new(13, session);
        let got = w.lut(sh, &ReluTable { shape: sh }, &x).expect("secure lut");
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
            (sh, x) in (1usize..60).prop_map(|n| LutShape { n, s: 12, k: 8 }).prop_flat_map(|sh| (Just(sh), inputs(sh, sh.n))),
            session in any::<u64>()) {
        let fp = FixedPoint::default();
        let mut w = World::new(14, session);
        let t = Pwl { func, shape: sh, fp };
        let z = w.lut(sh, &t, &x).expect("secure lut");
        let out = w.trunc(fp, &z).expect("secure trunc");
        for (i, &xv) in x.iter().enumerate() {
            let y = sh.index(xv);
            let ok = [y, y + 1].iter().any(|&yy| {
                let d = out[i].wrapping_sub(reference::trunc(lut::reference(&t, xv, yy, 0), 16)) as i64;
                (0..=1).contains(&d)
            });
            prop_assert!(ok, "x {:#x}", xv);
        }
    }
}
