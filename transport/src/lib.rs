#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "std")]
pub mod fault;
pub mod frame;
pub mod link;
#[cfg(feature = "std")]
pub mod mem;
pub mod seal;
#[cfg(feature = "std")]
pub mod shape;
#[cfg(feature = "std")]
pub mod tcp;

pub use frame::{FrameDecoder, FrameError, FrameKind, Header};
pub use link::{Error, Link, Meter, Pace};
