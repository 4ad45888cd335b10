#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dealer;
pub mod error;
pub mod host;
pub mod local;
pub mod reference;
pub mod weights;

pub use dealer::DealerParty;
pub use error::{DealerError, HostError, LoadError};
pub use host::HostParty;
pub use weights::{WeightMap, device_blob, weight_maps};
