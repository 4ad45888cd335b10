//! Elementwise product of a shared `X` (n x d) with a host-private column
//! vector `g` (d): `Z[i][j] = X[i][j] g[j]` (LayerNorm's learned scale).
//!
//! The diagonal case of [`super::linear`]: once per model the device gets
//! `F = g - B` (per-model mask `B` from the host's model seed, as in linear);
//! per op the device has a fresh mask `A1` (n x d) and the derived
//! `C = A1 (.) B`. The device sends `X1 - A1`; the host outputs
//! `(X0 + msg) (.) g + C0`, the device `A1 (.) F + C1` (input-independent).
//!
//! Cost: one flight device -> host, 8 bytes per element; 8 bytes per element
//! dealer -> host. Output at the product scale.

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::ring::check_len;
use crate::wire;

/// Device mask lane.
pub const LANE_A: u32 = 0;
/// Derived lane `C = A1 (.) B`.
pub const LANE_C: u32 = 1;

fn check(n: usize, d: usize) -> Result<(), ProtocolError> {
    match n.checked_mul(d).and_then(|v| v.checked_mul(8)) {
        Some(_) if n > 0 && d > 0 => Ok(()),
        _ => Err(ProtocolError::BadShape),
    }
}

/// Dealer: the host's message; `b` is the per-model mask (d words).
pub fn deal(op: &DealerOp, n: usize, b: &[u64], out: &mut [u8]) -> Result<usize, ProtocolError> {
    check(n, b.len())?;
    let mut a1 = op.device.random(LANE_A);
    let mut c1 = op.device_derived(LANE_C);
    let mut w = op.writer(out, n * b.len())?;
    for _ in 0..n {
        for &bv in b {
            w.put(a1.next_u64().wrapping_mul(bv), c1.next_u64());
        }
    }
    w.finish()
}

/// Host side: consumes the device's message.
pub fn host(corr: OpCorr<'_>, x0: &[u64], g: &[u64], device_msg: &[u8], z0: &mut [u64]) -> Result<(), ProtocolError> {
    let d = g.len();
    let n = x0.len() / d.max(1);
    check(n, d)?;
    if corr.role() != Role::Host {
        return Err(ProtocolError::BadParameter);
    }
    check_len(x0, n, d)?;
    check_len(z0, n, d)?;
    corr.expect_corrections(n * d)?;
    wire::expect_len(device_msg, wire::words_len(n * d))?;
    let mut corr = corr;
    let mut c0 = corr.derived(LANE_C, n * d)?;
    for ((z_row, x_row), m_row) in z0
        .chunks_exact_mut(d)
        .zip(x0.chunks_exact(d))
        .zip(device_msg.chunks_exact(8 * d))
    {
        for (((z, &x), m), &gv) in z_row.iter_mut().zip(x_row).zip(wire::words(m_row)).zip(g) {
            *z = x.wrapping_add(m).wrapping_mul(gv).wrapping_add(c0.next_u64());
        }
    }
    Ok(())
}

/// Device side: writes `X1 - A1` into `out` and its output share into `z1`
/// (the op is consumed: the mask is used once).
pub fn device(
    corr: OpCorr<'static>,
    x1: &[u64],
    f: &[u64],
    out: &mut [u8],
    z1: &mut [u64],
) -> Result<usize, ProtocolError> {
    let d = f.len();
    let n = x1.len() / d.max(1);
    check(n, d)?;
    if corr.role() != Role::Device {
        return Err(ProtocolError::BadParameter);
    }
    check_len(x1, n, d)?;
    check_len(z1, n, d)?;
    let len = wire::words_len(n * d);
    let out = wire::out_prefix(out, len)?;
    let mut a1 = corr.random(LANE_A);
    wire::put_words(out, x1.iter().map(|&x| x.wrapping_sub(a1.next_u64())));
    let (mut a1, mut c1) = (corr.random(LANE_A), corr.random(LANE_C));
    for z_row in z1.chunks_exact_mut(d) {
        for (z, &fv) in z_row.iter_mut().zip(f) {
            *z = a1.next_u64().wrapping_mul(fv).wrapping_add(c1.next_u64());
        }
    }
    Ok(len)
}
