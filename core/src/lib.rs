#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checksum;
pub mod corr;
pub mod error;
pub mod model;
pub mod ops;
pub mod prg;
pub mod protocol;
pub mod provision;
pub mod reference;
pub mod ring;
pub mod session;
pub mod wire;

pub use corr::{Correlations, DealerSession, OpCorr, Role, SessionId};
pub use error::ProtocolError;
pub use prg::Seed;
pub use ring::FixedPoint;
