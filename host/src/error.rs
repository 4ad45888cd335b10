//! Errors of the host and the dealer parties. Each keeps its source: a
//! vanished peer is a [`mpcvit_transport::Error`] inside the variant of the
//! link it came from, a lie is a [`ProtocolError`].

use mpcvit_core::ProtocolError;
use std::fmt;

/// Why a host step failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum HostError<E> {
    /// A protocol step refused its input (a bad message, a bad shape).
    Protocol(ProtocolError),
    /// The link to the device failed (closed, timed out, a bad frame).
    Device(mpcvit_transport::Error<E>),
    /// The link from the dealer failed.
    Dealer(mpcvit_transport::Error<E>),
}

impl<E: fmt::Debug> fmt::Display for HostError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Device(e) => write!(f, "device link: {e}"),
            Self::Dealer(e) => write!(f, "dealer link: {e}"),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for HostError<E> {}

impl<E> From<ProtocolError> for HostError<E> {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

/// Why a dealer step failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum DealerError<E> {
    /// A protocol step refused its input (a bad shape, an exhausted session).
    Protocol(ProtocolError),
    /// The link to the host failed.
    Host(mpcvit_transport::Error<E>),
}

impl<E: fmt::Debug> fmt::Display for DealerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Host(e) => write!(f, "host link: {e}"),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for DealerError<E> {}

impl<E> From<ProtocolError> for DealerError<E> {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl<E> From<mpcvit_transport::Error<E>> for DealerError<E> {
    fn from(e: mpcvit_transport::Error<E>) -> Self {
        Self::Host(e)
    }
}

/// Why a model could not be turned into the parties' weights or a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadError {
    /// The model file (or blob) is not usable.
    Model(mpcvit_core::model::ModelError),
    /// A weight cannot be encoded at these fractional bits.
    Weights(ProtocolError),
    /// The forward pass cannot run this model at these fractional bits
    /// (a lookup grid, a window or a bias scale does not fit).
    FracBits(u32),
    /// A matrix's weights are too large for fixed point at these
    /// fractional bits: its products could leave the ring
    /// (`vit::check_weight_range`).
    Range {
        /// The weight.
        id: mpcvit_core::ops::vit::Wid,
        /// The fractional bits.
        frac_bits: u32,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(e) => write!(f, "{e}"),
            Self::Weights(e) => write!(f, "cannot encode the weights: {e}"),
            Self::FracBits(b) => write!(
                f,
                "fixed point with {b} fractional bits does not fit this model's lookups and truncations \
                 (11..=20 fit every model; 16 is the default): export it with other --frac-bits"
            ),
            Self::Range { id, frac_bits } => {
                use mpcvit_core::ops::vit::{INPUT_RANGE_LOG2, Wid, held_width, linear_width};
                let fp = mpcvit_core::ring::FixedPoint::new(*frac_bits).ok();
                let held = fp
                    .and_then(held_width)
                    .filter(|_| matches!(id, Wid::Qkv(_) | Wid::QkvB(_) | Wid::Head | Wid::HeadB));
                let ring = match (id, fp) {
                    (Wid::Proj(_), _) | (_, None) => 64,
                    (_, Some(fp)) => 8 * held.unwrap_or_else(|| linear_width(fp)),
                };
                let what = match held {
                    Some(_) => {
                        "an output column's Euclidean norm times sqrt(dim) (LayerNorm's normalized rows)".to_string()
                    }
                    None => format!(
                        "for inputs up to 2^{INPUT_RANGE_LOG2} (2^{} for fc2), an output column's sum of |w| times the input",
                        INPUT_RANGE_LOG2 + 1
                    ),
                };
                write!(
                    f,
                    "the weights of {id:?} are too large for fixed point with {frac_bits} fractional bits: {what}, \
                     or a bias, would leave the {ring}-bit ring the layer runs in (fewer --frac-bits leave more room)"
                )
            }
        }
    }
}

impl std::error::Error for LoadError {}

impl From<mpcvit_core::model::ModelError> for LoadError {
    fn from(e: mpcvit_core::model::ModelError) -> Self {
        Self::Model(e)
    }
}

impl From<ProtocolError> for LoadError {
    fn from(e: ProtocolError) -> Self {
        Self::Weights(e)
    }
}
