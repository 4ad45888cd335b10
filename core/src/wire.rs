//! Little-endian word and bit packing for protocol messages.
//!
//! Every protocol message is a sequence of fixed-width little-endian `u64`
//! words, or of bits packed LSB-first into bytes. Readers check lengths before
//! touching a byte.

use crate::error::ProtocolError;

/// Bytes needed for `n` words.
pub const fn words_len(n: usize) -> usize {
    n * 8
}

/// Bytes needed for `n` packed bits.
pub const fn bits_len(n: usize) -> usize {
    n.div_ceil(8)
}

/// Word from an 8-byte slice (0 if the slice is short; callers check first).
#[inline]
pub fn word(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    if let Some(src) = b.get(..8) {
        a.copy_from_slice(src);
    }
    u64::from_le_bytes(a)
}

/// Word `i` of `buf`.
pub fn read_u64(buf: &[u8], i: usize) -> Result<u64, ProtocolError> {
    let b = buf.get(i * 8..i * 8 + 8).ok_or(ProtocolError::BadLength {
        expected: i * 8 + 8,
        got: buf.len(),
    })?;
    Ok(word(b))
}

/// Writes word `i` of `buf`.
pub fn write_u64(buf: &mut [u8], i: usize, v: u64) -> Result<(), ProtocolError> {
    let b = buf.get_mut(i * 8..i * 8 + 8).ok_or(ProtocolError::BadBuffer)?;
    b.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Checks that a peer message has exactly `expected` bytes.
pub fn expect_len(msg: &[u8], expected: usize) -> Result<(), ProtocolError> {
    if msg.len() == expected {
        Ok(())
    } else {
        Err(ProtocolError::BadLength {
            expected,
            got: msg.len(),
        })
    }
}

/// The prefix of `out` that holds `len` bytes.
pub fn out_prefix(out: &mut [u8], len: usize) -> Result<&mut [u8], ProtocolError> {
    out.get_mut(..len).ok_or(ProtocolError::BadBuffer)
}

/// Iterator over the words of a length-checked message.
pub fn words(msg: &[u8]) -> impl Iterator<Item = u64> + '_ {
    msg.chunks_exact(8).map(word)
}

/// Writes `vals` as words into `out` (which must be exactly the right size).
pub fn put_words(out: &mut [u8], vals: impl Iterator<Item = u64>) {
    for (dst, v) in out.chunks_exact_mut(8).zip(vals) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

/// Bytes needed for `n` values of `width` bytes each (see [`put_narrow`]).
pub const fn narrow_len(n: usize, width: usize) -> usize {
    n * width
}

/// Writes the low `width` bytes of each value, little-endian, into `out`
/// (which must be exactly the right size): for values that matter only
/// modulo `2^(8 width)`, such as a lookup's masked input. A `width` outside
/// 1..=8 writes nothing.
pub fn put_narrow(out: &mut [u8], width: usize, vals: impl Iterator<Item = u64>) {
    if !(1..=8).contains(&width) {
        return;
    }
    for (dst, v) in out.chunks_exact_mut(width).zip(vals) {
        if let Some(src) = v.to_le_bytes().get(..width) {
            dst.copy_from_slice(src);
        }
    }
}

/// Iterator over the `width`-byte little-endian values of a length-checked
/// message, zero-extended to `u64` (none for a `width` outside 1..=8).
pub fn narrow(msg: &[u8], width: usize) -> impl Iterator<Item = u64> + '_ {
    let msg = if (1..=8).contains(&width) { msg } else { &[] };
    msg.chunks_exact(width.max(1)).map(|b| {
        let mut a = [0u8; 8];
        if let Some(dst) = a.get_mut(..b.len()) {
            dst.copy_from_slice(b);
        }
        u64::from_le_bytes(a)
    })
}

/// Bit `i` of a packed bit string (LSB-first).
#[inline]
pub fn get_bit(bits: &[u8], i: usize) -> u64 {
    bits.get(i / 8).map_or(0, |b| u64::from((b >> (i % 8)) & 1))
}

/// Packs bits (each 0 or 1) LSB-first into `out`.
pub fn put_bits(out: &mut [u8], bits: impl Iterator<Item = u64>) {
    out.fill(0);
    for (i, b) in bits.enumerate() {
        if let Some(byte) = out.get_mut(i / 8) {
            *byte |= ((b & 1) as u8) << (i % 8);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn narrow_values_round_trip_modulo_their_width() {
        let vals = [0u64, 1, 0x1234_5678_9abc_def0, u64::MAX, 0x00ff_ff00_0000_00ff];
        for width in 1..=8usize {
            let mut buf = [0xAAu8; 40];
            let out = &mut buf[..narrow_len(vals.len(), width)];
            put_narrow(out, width, vals.iter().copied());
            let mask = if width == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * width)) - 1
            };
            let back: std::vec::Vec<u64> = narrow(out, width).collect();
            let want: std::vec::Vec<u64> = vals.iter().map(|v| v & mask).collect();
            assert_eq!(back, want, "width {width}");
            assert!(buf[narrow_len(vals.len(), width)..].iter().all(|&b| b == 0xAA));
        }
        // a width no message uses reads and writes nothing (no panic)
        let mut buf = [0xAAu8; 20];
        put_narrow(&mut buf[..18], 9, vals.iter().copied());
        put_narrow(&mut buf[..0], 0, vals.iter().copied());
        assert!(buf.iter().all(|&b| b == 0xAA));
        assert_eq!(narrow(&buf, 0).count() + narrow(&buf, 9).count(), 0);
    }
}
