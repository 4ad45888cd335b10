//! CRC-32 (ISO-HDLC, the zlib/Ethernet CRC) for files and blobs.

/// CRC-32/ISO-HDLC of `data` (`crc32fast`: SIMD folding where the target has
/// it, slice-by-16 elsewhere).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}
