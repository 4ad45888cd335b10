//! The frame format (see `spec/frames.md`).
//!
//! ```text
//! offset size field
//!  0     2    magic "MV"
//!  2     1    version (1)
//!  3     1    kind
//!  4     8    session id (LE)
//! 12     4    sequence number (LE), per direction, from 0
//! 16     4    payload length N (LE)
//! 20     N    payload
//! 20+N   4    CRC-32/ISO-HDLC of bytes 0 .. 20+N (LE)
//! ```

use core::fmt;
use crc32fast::Hasher;

/// Frame magic.
pub const MAGIC: [u8; 2] = *b"MV";
/// Frame format version.
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 20;
/// Trailer (CRC) length.
pub const TRAILER_LEN: usize = 4;
/// Bytes a frame adds to its payload.
pub const OVERHEAD: usize = HEADER_LEN + TRAILER_LEN;

/// CRC-32/ISO-HDLC of `data`, the CRC frames carry (`crc32fast`: SIMD folding
/// on hosts that have it, slice-by-16 on microcontrollers).
pub fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum FrameKind {
    /// Session set-up.
    Hello = 1,
    /// A protocol message between host and device.
    Data = 2,
    /// Correlation material from the dealer.
    Dealer = 3,
    /// The sender gives up on the session (payload: a reason code).
    Abort = 4,
    /// The sender has finished the session.
    Bye = 5,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Hello,
            2 => Self::Data,
            3 => Self::Dealer,
            4 => Self::Abort,
            5 => Self::Bye,
            _ => return None,
        })
    }
}

/// A malformed, foreign or out-of-order frame.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The first two bytes are not the magic.
    BadMagic,
    /// Unsupported format version.
    BadVersion(u8),
    /// Unknown frame kind.
    BadKind(u8),
    /// The payload is longer than the receiver's buffer.
    TooLong {
        /// Announced payload length.
        len: u32,
        /// Largest accepted payload length.
        max: u32,
    },
    /// The CRC does not match.
    BadCrc,
    /// The frame belongs to another session.
    WrongSession {
        /// This link's session.
        expected: u64,
        /// The frame's session.
        got: u64,
    },
    /// A frame was lost, repeated or reordered.
    WrongSequence {
        /// The sequence number due.
        expected: u32,
        /// The frame's sequence number.
        got: u32,
    },
    /// A frame of another kind than the protocol step expects.
    UnexpectedKind(FrameKind),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => f.write_str("bad frame magic"),
            Self::BadVersion(v) => write!(f, "unsupported frame version {v}"),
            Self::BadKind(k) => write!(f, "unknown frame kind {k}"),
            Self::TooLong { len, max } => {
                write!(f, "frame payload of {len} bytes exceeds the limit of {max}")
            }
            Self::BadCrc => f.write_str("frame CRC mismatch (corrupted in transit)"),
            Self::WrongSession { expected, got } => {
                write!(f, "frame for session {got:#x}, this link is session {expected:#x}")
            }
            Self::WrongSequence { expected, got } => {
                write!(
                    f,
                    "frame sequence {got}, expected {expected} (lost, replayed or reordered)"
                )
            }
            Self::UnexpectedKind(k) => write!(f, "unexpected {k:?} frame"),
        }
    }
}

impl core::error::Error for FrameError {}

/// A decoded, validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Frame kind.
    pub kind: FrameKind,
    /// Session id.
    pub session: u64,
    /// Sequence number.
    pub seq: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let parts: [&[u8]; 6] = [
            &MAGIC,
            &[VERSION, self.kind as u8],
            &self.session.to_le_bytes(),
            &self.seq.to_le_bytes(),
            &self.len.to_le_bytes(),
            &[],
        ];
        let mut pos = 0;
        for p in parts {
            if let Some(dst) = h.get_mut(pos..pos + p.len()) {
                dst.copy_from_slice(p);
            }
            pos += p.len();
        }
        h
    }

    /// Decodes and checks magic, version and kind; `max_len` bounds the
    /// payload length.
    pub fn decode(h: &[u8; HEADER_LEN], max_len: usize) -> Result<Self, FrameError> {
        let [m0, m1, version, kind, rest @ ..] = *h;
        if [m0, m1] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        if version != VERSION {
            return Err(FrameError::BadVersion(version));
        }
        let kind = FrameKind::from_u8(kind).ok_or(FrameError::BadKind(kind))?;
        let [s0, s1, s2, s3, s4, s5, s6, s7, q0, q1, q2, q3, l0, l1, l2, l3] = rest;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let max = u32::try_from(max_len).unwrap_or(u32::MAX);
        if len > max {
            return Err(FrameError::TooLong { len, max });
        }
        Ok(Self {
            kind,
            session: u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
            seq: u32::from_le_bytes([q0, q1, q2, q3]),
            len,
        })
    }
}

/// Starts a CRC over a header.
pub fn crc_start(h: &[u8; HEADER_LEN]) -> Hasher {
    let mut d = Hasher::new();
    d.update(h);
    d
}

/// A complete frame borrowed from a decoder's buffer.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// The payload.
    pub payload: &'a [u8],
}

/// What [`FrameDecoder::feed`] did with its input.
#[derive(Debug)]
pub enum Feed {
    /// All input was consumed; no frame is complete yet.
    NeedMore,
    /// A frame is complete after `consumed` input bytes; take it with
    /// [`FrameDecoder::frame`] before feeding the rest.
    Frame {
        /// Input bytes used.
        consumed: usize,
    },
    /// The input is not a valid frame; the decoder has reset and skipped
    /// `consumed` bytes.
    Error {
        /// What was wrong.
        error: FrameError,
        /// Input bytes used.
        consumed: usize,
    },
}

/// Streaming frame decoder with a fixed buffer of `N` bytes (header,
/// payload and trailer of one frame). Bytes in as they arrive, frames out.
pub struct FrameDecoder<const N: usize> {
    buf: [u8; N],
    fill: usize,
    need: usize,
    complete: bool,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// Largest payload this decoder accepts.
    pub const MAX_PAYLOAD: usize = N.saturating_sub(OVERHEAD);

    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            fill: 0,
            need: HEADER_LEN,
            complete: false,
        }
    }

    /// Drops any partial frame.
    pub fn reset(&mut self) {
        self.fill = 0;
        self.need = HEADER_LEN;
        self.complete = false;
    }

    /// Feeds bytes. After `Feed::Frame`, call [`Self::frame`], then feed the
    /// rest of the input (from `consumed`).
    pub fn feed(&mut self, input: &[u8]) -> Feed {
        if self.complete {
            self.reset();
        }
        let mut used = 0;
        while used < input.len() {
            let take = (self.need - self.fill).min(input.len() - used);
            let (Some(dst), Some(src)) = (
                self.buf.get_mut(self.fill..self.fill + take),
                input.get(used..used + take),
            ) else {
                self.reset();
                return Feed::Error {
                    error: FrameError::TooLong {
                        len: 0,
                        max: Self::MAX_PAYLOAD as u32,
                    },
                    consumed: used,
                };
            };
            dst.copy_from_slice(src);
            self.fill += take;
            used += take;
            if self.fill < self.need {
                continue;
            }
            if self.need == HEADER_LEN {
                match self.header() {
                    Ok(h) => self.need = HEADER_LEN + h.len as usize + TRAILER_LEN,
                    Err(error) => {
                        self.reset();
                        return Feed::Error { error, consumed: used };
                    }
                }
                if self.fill < self.need {
                    continue;
                }
            }
            // Whole frame: check the CRC.
            let body_end = self.need - TRAILER_LEN;
            let ok = match (self.buf.get(..body_end), self.buf.get(body_end..self.need)) {
                (Some(body), Some(&[c0, c1, c2, c3])) => crc(body) == u32::from_le_bytes([c0, c1, c2, c3]),
                _ => false,
            };
            if ok {
                self.complete = true;
                return Feed::Frame { consumed: used };
            }
            self.reset();
            return Feed::Error {
                error: FrameError::BadCrc,
                consumed: used,
            };
        }
        Feed::NeedMore
    }

    fn header(&self) -> Result<Header, FrameError> {
        let mut h = [0u8; HEADER_LEN];
        if let Some(src) = self.buf.get(..HEADER_LEN) {
            h.copy_from_slice(src);
        }
        Header::decode(&h, Self::MAX_PAYLOAD)
    }

    /// The frame completed by the last `feed`, if any.
    pub fn frame(&self) -> Option<Frame<'_>> {
        if !self.complete {
            return None;
        }
        let header = self.header().ok()?;
        let payload = self.buf.get(HEADER_LEN..self.need - TRAILER_LEN)?;
        Some(Frame { header, payload })
    }
}

/// Encodes a whole frame into `out`; returns its length.
pub fn encode(header: &Header, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let total = OVERHEAD + payload.len();
    let out = out.get_mut(..total)?;
    let h = header.encode();
    let (oh, rest) = out.split_at_mut(HEADER_LEN);
    oh.copy_from_slice(&h);
    let (op, oc) = rest.split_at_mut(payload.len());
    op.copy_from_slice(payload);
    let mut d = crc_start(&h);
    d.update(payload);
    oc.copy_from_slice(&d.finalize().to_le_bytes());
    Some(total)
}
