//! Secure protocols, one file each. All are two-party (host P0, device P1)
//! with an offline dealer; see `spec/protocols.md` for the costs table.
//!
//! | op | flights | device -> host | host -> device | dealer -> host |
//! |---|---|---|---|---|
//! | [`linear`] (host W, shared X) | 1 (D->H) | 8 per input elem | 0 | 8 per output elem |
//! | [`mul`] (elementwise Beaver) | 1 (both ways at once) | 16 per elem | 16 per elem | 8 per elem |
//! | [`matmul`] (shared x shared) | 1 (both ways at once) | 8 (nk + km) | 8 (nk + km) | 8 nm |
//! | [`trunc`] exact | 2 (D->H, H->D) | 8 per elem | 1 bit per elem | 16 per elem |
//! | [`trunc`] local | 0 | 0 | 0 | 0 |
//! | [`square`] | 1 (both ways at once) | 8 per elem | 8 per elem | 8 per elem |
//! | [`scale`] (host-private vector) | 1 (D->H) | 8 per elem | 0 | 8 per elem |
//! | [`lut`] (k-bit grid) | 1 (both ways at once) | `ceil((s+k)/8)` per elem | the same | `2^k` words per table per elem |
//! | [`cmp`] (DReLU / ReLU) | 2 (both ways at once) | `ceil(l/8)` + `(2D-1)/8` per elem | the same | 21 / 31 words per elem (`D = 2`) |
//! | [`cell`] (cells and series) | 1 (both ways at once) | `ceil(l/8)` per elem | the same | `2^kh (K+1)` words per grid per elem |
//! | [`affine`] | 0 | 0 | 0 | 0 |
//!
//! [`pwl`] holds the tables the piecewise-linear lookups use (fitted
//! chords, ReLU/DReLU).

pub mod affine;
pub mod cell;
pub mod cmp;
pub mod linear;
pub mod lut;
pub mod matmul;
pub mod mul;
pub mod pwl;
pub mod scale;
pub mod square;
pub mod trunc;
