#![doc = include_str!("../README.md")]
// unsafe only for two allocator calls in `serve` (glibc's mallopt and
// malloc_trim), each allowed where it is made and commented
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod dealer;
pub mod error;
pub mod host;
pub mod local;
pub mod net;
pub mod reference;
pub mod serve;
pub mod weights;

pub use dealer::DealerParty;
pub use error::{DealerError, HostError, LoadError};
pub use host::HostParty;
pub use weights::{WeightMap, device_blob, weight_maps};
