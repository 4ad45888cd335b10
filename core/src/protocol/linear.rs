//! Linear layer with host-held weights: `Z = X W` for a shared `X` (n x din)
//! and the host's plaintext `W` (din x dout).
//!
//! Protocol (DESIGN.md "the device is thin"):
//! * once per model, the host draws a mask `B` (din x dout) from its model
//!   seed, which the dealer also holds, and gives the device `F = W - B`
//!   (the provisioning blob). `F` is uniform: it says nothing about `W`.
//! * per op the device has a fresh mask `A1` (n x din, device seed) and the
//!   derived `C = A1 B` is shared: `C1` from the device seed, `C0` from the
//!   dealer.
//! * online the device sends `X1 - A1`; the host forms `E = X0 + X1 - A1`
//!   and outputs `Z0 = E W + C0`. The device outputs `Z1 = A1 F + C1`, which
//!   does not depend on the input and can be computed ahead of time.
//!
//! `Z0 + Z1 = (X - A1) W + A1 B + A1 (W - B) = X W`.
//!
//! Security: the host sees `X1 - A1` with `A1` uniform and unknown to it; the
//! device receives nothing. Cost: one flight device -> host of `8 n din`
//! bytes, `8 n dout` dealer -> host, no host -> device traffic. The output has
//! the product scale (2f fractional bits): truncate next.

use crate::corr::{DealerOp, OpCorr, Role};
use crate::error::ProtocolError;
use crate::prg::{Domain, Prg, Seed};
use crate::ring::check_len;
use crate::wire;

/// Lane of the device mask `A1` (device-only).
pub const LANE_A: u32 = 0;
/// Derived lane of `C = A1 B`.
pub const LANE_C: u32 = 1;

/// Shape of a linear op: `n` rows, `din` inputs, `dout` outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Rows (tokens) of the input.
    pub n: usize,
    /// Input features.
    pub din: usize,
    /// Output features.
    pub dout: usize,
}

impl LinearShape {
    /// Bytes of the device's message.
    pub fn msg_len(self) -> usize {
        wire::words_len(self.n * self.din)
    }
    /// Correction words the dealer sends the host.
    pub fn corrections(self) -> usize {
        self.n * self.dout
    }
    fn check(self) -> Result<(), ProtocolError> {
        if self.n == 0 || self.din == 0 || self.dout == 0 {
            return Err(ProtocolError::BadShape);
        }
        self.n
            .checked_mul(self.din.max(self.dout))
            .and_then(|v| v.checked_mul(8))
            .map(|_| ())
            .ok_or(ProtocolError::BadShape)
    }
}

/// The per-model weight mask `B` of layer `layer` (din x dout, row-major),
/// read sequentially from the model seed.
pub fn model_mask(model_seed: &Seed, layer: u64) -> Prg {
    let s = model_seed.derive(Domain::ModelMask, 0);
    Prg::new(&s, layer, 0)
}

/// The device's public masked weights `F = W - B` of one layer.
pub fn masked_weights(model_seed: &Seed, layer: u64, w: &[u64], f_out: &mut [u64]) -> Result<(), ProtocolError> {
    if w.len() != f_out.len() {
        return Err(ProtocolError::BadBuffer);
    }
    let mut b = model_mask(model_seed, layer);
    for (o, &x) in f_out.iter_mut().zip(w) {
        *o = x.wrapping_sub(b.next_u64());
    }
    Ok(())
}

/// Dealer: writes the host's message for one linear op. `b` is the layer's
/// mask (din x dout) and `acc` a scratch row of `dout` words.
pub fn deal(
    op: &DealerOp,
    shape: LinearShape,
    b: &[u64],
    acc: &mut [u64],
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    shape.check()?;
    check_len(b, shape.din, shape.dout)?;
    let acc = acc.get_mut(..shape.dout).ok_or(ProtocolError::BadBuffer)?;
    let mut a1 = op.device.random(LANE_A);
    let mut c1 = op.device_derived(LANE_C);
    let mut w = op.writer(out, shape.corrections())?;
    for _ in 0..shape.n {
        acc.fill(0);
        for b_row in b.chunks_exact(shape.dout) {
            let a = a1.next_u64();
            for (o, &y) in acc.iter_mut().zip(b_row) {
                *o = o.wrapping_add(a.wrapping_mul(y));
            }
        }
        for &c in acc.iter() {
            w.put(c, c1.next_u64());
        }
    }
    w.finish()
}

/// Host side of one linear op.
#[derive(Debug)]
pub struct LinearHost<'d> {
    corr: OpCorr<'d>,
    shape: LinearShape,
}

impl<'d> LinearHost<'d> {
    /// Checks the shape and the dealer's corrections.
    pub fn new(corr: OpCorr<'d>, shape: LinearShape) -> Result<Self, ProtocolError> {
        shape.check()?;
        if corr.role() != Role::Host {
            return Err(ProtocolError::BadParameter);
        }
        corr.expect_corrections(shape.corrections())?;
        Ok(Self { corr, shape })
    }

    /// Consumes the device's message: `z0 = (x0 + msg) W + C0`.
    pub fn finish(mut self, x0: &[u64], w: &[u64], device_msg: &[u8], z0: &mut [u64]) -> Result<(), ProtocolError> {
        let s = self.shape;
        check_len(x0, s.n, s.din)?;
        check_len(w, s.din, s.dout)?;
        check_len(z0, s.n, s.dout)?;
        wire::expect_len(device_msg, s.msg_len())?;
        let mut c0 = self.corr.derived(LANE_C, s.corrections())?;
        let rows = x0
            .chunks_exact(s.din)
            .zip(device_msg.chunks_exact(8 * s.din))
            .zip(z0.chunks_exact_mut(s.dout));
        for ((x_row, m_row), z_row) in rows {
            for z in z_row.iter_mut() {
                *z = c0.next_u64();
            }
            for ((&x, m), w_row) in x_row.iter().zip(wire::words(m_row)).zip(w.chunks_exact(s.dout)) {
                let e = x.wrapping_add(m);
                for (z, &wv) in z_row.iter_mut().zip(w_row) {
                    *z = z.wrapping_add(e.wrapping_mul(wv));
                }
            }
        }
        Ok(())
    }
}

/// Device side of one linear op, before it has sent.
#[derive(Debug)]
pub struct LinearDevice {
    corr: OpCorr<'static>,
    shape: LinearShape,
}

/// Device side after sending: only the (input-independent) output is left.
#[derive(Debug)]
pub struct LinearDeviceSent {
    corr: OpCorr<'static>,
    shape: LinearShape,
}

impl LinearDevice {
    /// A new op of this shape.
    pub fn new(corr: OpCorr<'static>, shape: LinearShape) -> Result<Self, ProtocolError> {
        shape.check()?;
        if corr.role() != Role::Device {
            return Err(ProtocolError::BadParameter);
        }
        Ok(Self { corr, shape })
    }

    /// Writes `x1 - A1` into `out`; returns the next state and the length.
    pub fn send(self, x1: &[u64], out: &mut [u8]) -> Result<(LinearDeviceSent, usize), ProtocolError> {
        let s = self.shape;
        check_len(x1, s.n, s.din)?;
        let out = wire::out_prefix(out, s.msg_len())?;
        let mut a1 = self.corr.random(LANE_A);
        wire::put_words(out, x1.iter().map(|&x| x.wrapping_sub(a1.next_u64())));
        Ok((
            LinearDeviceSent {
                corr: self.corr,
                shape: s,
            },
            s.msg_len(),
        ))
    }
}

impl LinearDeviceSent {
    /// The device's output share `z1 = A1 F + C1`, for the rows
    /// `row0..row0 + z1.len() / dout` (so a caller can produce it in tiles).
    pub fn output_rows(&self, f: &[u64], row0: usize, z1: &mut [u64]) -> Result<(), ProtocolError> {
        let s = self.shape;
        check_len(f, s.din, s.dout)?;
        if !z1.len().is_multiple_of(s.dout) || row0 + z1.len() / s.dout > s.n {
            return Err(ProtocolError::BadBuffer);
        }
        let mut a1 = self.corr.random_at(LANE_A, (row0 * s.din) as u64);
        // The device's share of a derived lane is its own seeded stream.
        let mut c1 = self.corr.random_at(LANE_C, (row0 * s.dout) as u64);
        for z_row in z1.chunks_exact_mut(s.dout) {
            for z in z_row.iter_mut() {
                *z = c1.next_u64();
            }
            for f_row in f.chunks_exact(s.dout) {
                let a = a1.next_u64();
                for (z, &fv) in z_row.iter_mut().zip(f_row) {
                    *z = z.wrapping_add(a.wrapping_mul(fv));
                }
            }
        }
        Ok(())
    }

    /// The whole output share; consumes the op.
    pub fn output(self, f: &[u64], z1: &mut [u64]) -> Result<(), ProtocolError> {
        check_len(z1, self.shape.n, self.shape.dout)?;
        self.output_rows(f, 0, z1)
    }
}
