//! The ring Z_2^64 and the fixed-point encoding.
//!
//! Ring elements are plain `u64`; every ring operation in this crate is an
//! explicit `wrapping_*` call, so the modulus is visible where it is used.
//! A real number `v` is encoded as `round(v * 2^f)` in two's complement.

use crate::error::ProtocolError;

/// Largest supported number of fractional bits.
pub const MAX_FRAC_BITS: u32 = 30;
/// Default number of fractional bits (CrypTen's).
pub const DEFAULT_FRAC_BITS: u32 = 16;

/// `2^k` as a float, exactly, for integer `k` (clamped to the normal
/// range `-1022..=1023`): built from the exponent bits, where
/// `libm::exp2` evaluates a series (the dealer scales every fitted word).
pub const fn pow2(k: i32) -> f64 {
    let k = if k < -1022 {
        -1022
    } else if k > 1023 {
        1023
    } else {
        k
    };
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// Fixed-point parameters: `f` fractional bits in Z_2^64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FixedPoint {
    frac_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        Self {
            frac_bits: DEFAULT_FRAC_BITS,
        }
    }
}

impl FixedPoint {
    /// Fixed point with `frac_bits` fractional bits, `1..=MAX_FRAC_BITS`.
    pub fn new(frac_bits: u32) -> Result<Self, ProtocolError> {
        if (1..=MAX_FRAC_BITS).contains(&frac_bits) {
            Ok(Self { frac_bits })
        } else {
            Err(ProtocolError::BadParameter)
        }
    }

    /// The number of fractional bits `f`.
    pub fn frac_bits(self) -> u32 {
        self.frac_bits
    }

    /// `2^f` as a float.
    pub fn scale(self) -> f64 {
        (1u64 << self.frac_bits) as f64
    }

    /// The encoding of 1.0.
    pub fn one(self) -> u64 {
        1u64 << self.frac_bits
    }

    /// Encodes `v` (rounded to nearest; saturates at the i64 range).
    pub fn encode(self, v: f64) -> u64 {
        let s = libm::round(v * self.scale());
        // `as` saturates for out-of-range floats and maps NaN to 0.
        (s as i64) as u64
    }

    /// Encodes `v` at twice the scale (`2f` fractional bits), as a bias that
    /// is added before truncation.
    pub fn encode_double(self, v: f64) -> u64 {
        let s = libm::round(v * self.scale() * self.scale());
        (s as i64) as u64
    }

    /// Encodes `v` at `k` times the scale (`k f` fractional bits, `k` in
    /// 1..=3: a weight, a bias added at a product's scale, a bias added at
    /// a product of three), refusing what the ring cannot hold: NaN,
    /// infinities, and magnitudes of `2^62` or more after scaling (the
    /// exact truncation's range). Model weights and images are encoded with
    /// this, so a model that fixed point cannot represent is refused at
    /// load instead of saturating silently ([`Self::encode`] saturates).
    pub fn try_encode_at(self, v: f64, k: u32) -> Result<u64, ProtocolError> {
        if !(1..=3).contains(&k) || k * self.frac_bits > 62 {
            return Err(ProtocolError::BadParameter);
        }
        let s = libm::round(v * libm::exp2(f64::from(k * self.frac_bits)));
        // 2^62, exactly representable
        const LIMIT: f64 = 4_611_686_018_427_387_904.0;
        if !s.is_finite() || s.abs() >= LIMIT {
            return Err(ProtocolError::OutOfRange);
        }
        Ok((s as i64) as u64)
    }

    /// Decodes a ring element as a signed fixed-point number.
    pub fn decode(self, x: u64) -> f64 {
        (x as i64) as f64 / self.scale()
    }
}

/// The two's-complement signed view of a ring element.
#[inline]
pub fn signed(x: u64) -> i64 {
    x as i64
}

/// Reconstructs a value from its two additive shares.
#[inline]
pub fn reconstruct(x0: u64, x1: u64) -> u64 {
    x0.wrapping_add(x1)
}

/// Most significant bit of a ring element (0 or 1).
#[inline]
pub fn msb(x: u64) -> u64 {
    x >> 63
}

/// `out[i][j] += sum_l a[i][l] * b[l][j]` over Z_2^64, row-major,
/// `a: n x k`, `b: k x m`, `out: n x m`. Errs on mismatched lengths.
pub fn matmul_acc(
    out: &mut [u64],
    a: &[u64],
    b: &[u64],
    (n, k, m): (usize, usize, usize),
) -> Result<(), ProtocolError> {
    check_len(a, n, k)?;
    check_len(b, k, m)?;
    check_len(out, n, m)?;
    for (a_row, o_row) in a.chunks_exact(k.max(1)).zip(out.chunks_exact_mut(m.max(1))) {
        for (&x, b_row) in a_row.iter().zip(b.chunks_exact(m.max(1))) {
            for (o, &y) in o_row.iter_mut().zip(b_row) {
                *o = o.wrapping_add(x.wrapping_mul(y));
            }
        }
    }
    Ok(())
}

/// Checks `buf.len() == rows * cols` (without overflow).
pub fn check_len(buf: &[u64], rows: usize, cols: usize) -> Result<(), ProtocolError> {
    match rows.checked_mul(cols) {
        Some(len) if len == buf.len() => Ok(()),
        _ => Err(ProtocolError::BadBuffer),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn try_encode_refuses_what_the_ring_cannot_hold() {
        let fp = FixedPoint::default();
        assert_eq!(fp.try_encode_at(1.5, 1), Ok(3 << 15));
        assert_eq!(fp.try_encode_at(-1.0, 2), Ok((-(1i64 << 32)) as u64));
        // 2^46 * 2^16 = 2^62: the first magnitude refused at f = 16
        assert_eq!(fp.try_encode_at(2f64.powi(46), 1), Err(ProtocolError::OutOfRange));
        assert_eq!(fp.try_encode_at(-(2f64.powi(46)), 1), Err(ProtocolError::OutOfRange));
        assert!(fp.try_encode_at(2f64.powi(46) - 1.0, 1).is_ok());
        assert_eq!(fp.try_encode_at(2f64.powi(14), 3), Err(ProtocolError::OutOfRange));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(fp.try_encode_at(bad, 1), Err(ProtocolError::OutOfRange));
        }
        // three times 21 fractional bits do not fit under 2^62
        let f21 = FixedPoint::new(21).expect("f");
        assert_eq!(f21.try_encode_at(1.0, 3), Err(ProtocolError::BadParameter));
        assert_eq!(fp.try_encode_at(1.0, 0), Err(ProtocolError::BadParameter));
    }
}
