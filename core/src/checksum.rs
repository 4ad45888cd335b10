//! CRC-32 (ISO-HDLC, the zlib/Ethernet CRC) for files and blobs.

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32/ISO-HDLC of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    CRC.checksum(data)
}
