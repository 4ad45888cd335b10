//! Errors of the protocol layer.

use core::fmt;

/// What went wrong in a protocol step. Every error is final for the op that
/// raised it: the op's state machine was consumed by the call.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProtocolError {
    /// A message from the peer (or the dealer) has the wrong length.
    BadLength {
        /// Bytes the protocol step expects.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// A caller-provided buffer does not match the op's shape.
    BadBuffer,
    /// The op's shape is empty or too large for this build.
    BadShape,
    /// A parameter is out of its documented range (e.g. fractional bits).
    BadParameter,
    /// A dealer message belongs to another session or op.
    WrongOp,
    /// The value does not fit the range the protocol is stated for.
    OutOfRange,
    /// An earlier error poisoned the session: nothing more can be done on it.
    Poisoned,
    /// A set-up message has a version this build does not speak.
    BadVersion(u8),
    /// A key-confirmation tag did not verify: the peer does not hold the key,
    /// a relay changed the message, or it belongs to another session (a
    /// replay).
    Unauthenticated,
    /// A set-up message does not decode (truncated, trailing bytes, a value
    /// out of its type).
    Malformed,
    /// More ops in one flight than this build holds open at once
    /// (`ops::flight::MAX_JOBS`): a smaller tile cuts the flight.
    TooManyOps,
    /// A party's weights lack a tensor the architecture needs, or hold one
    /// of the wrong length.
    BadWeights,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength { expected, got } => {
                write!(f, "message has {got} bytes, expected {expected}")
            }
            Self::BadBuffer => f.write_str("caller buffer does not match the op shape"),
            Self::BadShape => f.write_str("op shape is empty or too large"),
            Self::BadParameter => f.write_str("parameter out of range"),
            Self::WrongOp => f.write_str("dealer message is for another session or op"),
            Self::OutOfRange => f.write_str("value outside the protocol's stated range"),
            Self::Poisoned => f.write_str("session poisoned by an earlier error"),
            Self::BadVersion(v) => write!(f, "set-up message version {v} is not supported"),
            Self::Unauthenticated => {
                f.write_str("key confirmation failed (wrong key, altered relay, or a replay from another session)")
            }
            Self::Malformed => f.write_str("set-up message does not decode"),
            Self::BadWeights => {
                f.write_str("the weights do not match the architecture (a tensor missing or of the wrong length)")
            }
            Self::TooManyOps => f.write_str("more ops in one flight than this build holds open (use a smaller tile)"),
        }
    }
}

impl core::error::Error for ProtocolError {}
