//! Composite secure ops (softmax, LayerNorm, reciprocal, max, GeLU, ...)
//! written once over the [`Party`] trait.
//!
//! The primitives in [`crate::protocol`] are sans-IO state machines. A
//! composite op is a fixed sequence of primitives and local arithmetic; it is
//! written as straight-line code against [`Party`], whose three
//! implementations (host, device, dealer) move the primitives' bytes. The
//! dealer runs the same code: its primitives deal correlations and its local
//! arithmetic runs on placeholder values, so every party draws the same ops
//! in the same order. Scratch memory is the caller's (`&mut [u64]`); each op
//! states how much it needs.
//!
//! Index arithmetic here works on caller buffers whose lengths are checked
//! at each op's entry, never on peer or file bytes, so the modules below
//! allow `indexing_slicing` (a panic would be an arithmetic bug, not input).

pub mod activation;
pub mod flight;
#[allow(clippy::indexing_slicing)]
pub mod layernorm;
#[allow(clippy::indexing_slicing)]
pub mod max;
#[allow(clippy::indexing_slicing)]
pub mod softmax;
#[allow(clippy::indexing_slicing)]
pub mod vit;
#[allow(clippy::indexing_slicing)]
pub mod wide;

use crate::FixedPoint;
use crate::corr::Role;
use crate::protocol::lut::{LutShape, Table};
use crate::protocol::matmul::MatmulShape;

/// One lookup in a batch of lookups that share a flight.
#[derive(Clone, Copy)]
pub struct LutJob<'a> {
    /// Shape.
    pub shape: LutShape,
    /// Table.
    pub table: &'a dyn Table,
}

impl LutJob<'_> {
    /// Output words of this job.
    pub fn out_len(&self) -> usize {
        self.shape.n * self.table.outputs()
    }
}

/// The primitives a composite op uses. Each call is one primitive op (one
/// correlation); `luts` runs several lookups in one flight.
pub trait Party {
    /// The driver's error.
    type Error: From<crate::ProtocolError>;
    /// Host, device or dealer.
    fn role(&self) -> Role;
    /// Fixed-point parameters.
    fn fp(&self) -> FixedPoint;
    /// The id of the next primitive op (every party draws the same ids):
    /// a product that reuses an earlier one's opening names it
    /// ([`crate::protocol::matmul::Right::Opened`]).
    fn next_op_id(&self) -> u64;
    /// The device's correlations of the earlier op `op`
    /// ([`crate::corr::Correlations::earlier`]), to regenerate a share it
    /// keeps as bits ([`vit`]'s `x` and `qkv`). The host and the dealer keep whole
    /// words and refuse (this default).
    fn earlier_op(&self, op: u64) -> Result<crate::corr::OpCorr<'static>, crate::ProtocolError> {
        let _ = op;
        Err(crate::ProtocolError::BadParameter)
    }
    /// Product `z[i] = x[i] y[i / cols]` (ring; `cols = 1`: elementwise).
    fn mul(&mut self, x: &[u64], y: &[u64], cols: usize, z: &mut [u64]) -> Result<(), Self::Error>;
    /// Product by a host-private column vector, `x[i][j] g[j]`, then exact
    /// truncation by `bits`, in one round trip (the device's scale output is
    /// input-independent, so its truncation message rides with its scale
    /// message). `g` is the party's view of the weights: the host's `g`, the
    /// device's provisioned `g - B`, the dealer's mask `B`
    /// ([`crate::protocol::scale`]).
    fn scale_trunc(&mut self, x: &[u64], g: &[u64], bits: u32, z: &mut [u64]) -> Result<(), Self::Error>;
    /// Elementwise square `z = x^2` (ring).
    fn square(&mut self, x: &[u64], z: &mut [u64]) -> Result<(), Self::Error>;
    /// Elementwise square whose opening a later product takes
    /// ([`Self::mul_opened`]): `e` gets the opened `x - a`.
    fn square_keep(&mut self, x: &[u64], e: &mut [u64], z: &mut [u64]) -> Result<(), Self::Error>;
    /// Row-broadcast product `z[i] = x[i] y[i / cols]` whose left operand
    /// the earlier square op `first` opened: `e` is that op's `x - a`
    /// ([`Self::square_keep`], every element in order); only `y` is opened
    /// ([`crate::protocol::mul::Mul::with_left`]).
    fn mul_opened(&mut self, e: &[u64], first: u64, y: &[u64], cols: usize, z: &mut [u64]) -> Result<(), Self::Error>;
    /// Shared x shared matrix product (ring).
    fn matmul(&mut self, s: MatmulShape, x: &[u64], y: &mut [u64], z: &mut [u64]) -> Result<(), Self::Error> {
        self.matmuls(&[s], x, y, z)
    }
    /// Several shared x shared matrix products in one flight: `x`, `y` and
    /// `z` hold the operands and results one after the other. Each product
    /// leaves its opened `F = Y - B` in its part of `y`, which a later one
    /// that says [`Right::Opened`](crate::protocol::matmul::Right::Opened)
    /// takes there (after one that says
    /// [`Right::Keep`](crate::protocol::matmul::Right::Keep)).
    fn matmuls(&mut self, s: &[MatmulShape], x: &[u64], y: &mut [u64], z: &mut [u64]) -> Result<(), Self::Error>;
    /// Linear layer with host weights, `x (n x din) W + bias`, then exact
    /// truncation by `bits`, in one round trip (the device's output share is
    /// input-independent, so its truncation message rides with its linear
    /// message). `bits = 0`: no truncation, one flight device -> host.
    /// `w` is the party's view of `W` (host `W`, device `W - B`, dealer
    /// `B`); `bias` (at the product scale) is used by the host only.
    fn linear_trunc(
        &mut self,
        s: crate::protocol::linear::LinearShape,
        x: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Result<(), Self::Error>;
    /// Draws the mask op of a linear layer whose input is sent in blocks as
    /// they are made ([`Self::linear_block`]) and run later by row tiles
    /// ([`Self::linear_trunc_sent`]); returns its id. Nothing is sent.
    fn linear_mask(&mut self) -> Result<u64, Self::Error>;
    /// Sends one block of the input of the linear layer masked by op `mask`
    /// (`din` columns): rows `r0..`, columns `c0..c0 + cols`, `x` this
    /// party's share of it row-major. The device sends `x1 - A1`, one
    /// flight device -> host with no answer; the host writes `X - A1` into
    /// `e` (its store of the whole input, `n x din`); the dealer does
    /// nothing. The blocks of one mask must not overlap.
    fn linear_block(
        &mut self,
        mask: u64,
        din: usize,
        block: (usize, usize, usize),
        x: &[u64],
        e: &mut [u64],
    ) -> Result<(), Self::Error>;
    /// [`Self::linear_trunc`] on the rows `r0..r0 + s.n` of an input whose
    /// blocks went with [`Self::linear_block`] under `mask`: the host reads
    /// its rows of `X - A1` in `e`, the device sends only the truncation's
    /// message (none with `bits = 0`).
    #[allow(clippy::too_many_arguments)]
    fn linear_trunc_sent(
        &mut self,
        mask: u64,
        r0: usize,
        s: crate::protocol::linear::LinearShape,
        e: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Result<(), Self::Error>;
    /// [`Self::linear_trunc`] on an input that is, element for element in
    /// order, the output of the earlier exact truncation `trunc = (op,
    /// bits)` in the whole ring: the device's share of it modulo `2^(64 -
    /// bits)` comes from its seed, so the device sends nothing for the
    /// input ([`crate::protocol::linear::Mask::Held`]); the layer runs in
    /// `s.width` bytes, at most `64 - bits` bits (else refused). `x` is this
    /// party's share of that output.
    #[allow(clippy::too_many_arguments)]
    fn linear_trunc_held(
        &mut self,
        trunc: (u64, u32),
        s: crate::protocol::linear::LinearShape,
        x: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Result<(), Self::Error>;
    /// Reveals `x` to the device only: the host sends its share; the device
    /// outputs the value, the host and the dealer get zeros.
    fn reveal_to_device(&mut self, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error>;
    /// Reveals `x` to the host: the device sends its share; the host outputs
    /// the value, the device and the dealer get zeros.
    fn reveal_to_host(&mut self, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error>;
    /// Lookups, all opened in one flight: `x` holds the jobs' inputs one
    /// after the other, `out` their outputs.
    fn luts(&mut self, jobs: &[LutJob<'_>], x: &[u64], out: &mut [u64]) -> Result<(), Self::Error>;
    /// One lookup read through several grids (one opening, one flight):
    /// `out` holds, per element, every grid's outputs in grid order.
    fn lut_grids(
        &mut self,
        grids: &[crate::protocol::lut::Grid<'_>],
        x: &[u64],
        out: &mut [u64],
    ) -> Result<(), Self::Error>;
    /// Comparison with zero in two flights ([`crate::protocol::cmp`]):
    /// `out` gets shares of `[x >= 0]`, `max(x, 0)`, or per element
    /// `max(x, 0)` and `min(|x|, t)`, per `shape.out`.
    fn cmp(&mut self, shape: crate::protocol::cmp::CmpShape, x: &[u64], out: &mut [u64]) -> Result<(), Self::Error>;
    /// Cell lookup in one flight ([`crate::protocol::cell`]), one opening
    /// read through every grid: `out` holds, per element, one value per
    /// grid (at its `shape.out` fractional bits). Only the dealer reads the
    /// grids' functions.
    fn cells(
        &mut self,
        grids: &[crate::protocol::cell::CellGrid<'_>],
        x: &[u64],
        out: &mut [u64],
    ) -> Result<(), Self::Error>;
    /// Exact truncation by `bits` (1..=62) of every element.
    fn trunc(&mut self, bits: u32, x: &[u64], z: &mut [u64]) -> Result<(), Self::Error>;
    /// A truncation of `t` by `bits` into `tz` ([`Self::trunc`]), then a
    /// comparison ([`Self::cmp`]): two ops, in that order, whose first
    /// messages a party may send before it reads either answer. The device
    /// does, so the truncation costs no round of its own; the host's answer
    /// to the truncation needs only the device's message, so it runs the
    /// two ops one after the other (this default).
    #[allow(clippy::too_many_arguments)]
    fn trunc_cmp(
        &mut self,
        bits: u32,
        t: &[u64],
        tz: &mut [u64],
        shape: crate::protocol::cmp::CmpShape,
        x: &[u64],
        out: &mut [u64],
    ) -> Result<(), Self::Error> {
        self.trunc(bits, t, tz)?;
        self.cmp(shape, x, out)
    }
}

/// One lookup (a batch of one).
pub fn lut<P: Party + ?Sized>(
    p: &mut P,
    shape: LutShape,
    table: &dyn Table,
    x: &[u64],
    out: &mut [u64],
) -> Result<(), P::Error> {
    p.luts(&[LutJob { shape, table }], x, out)
}

/// A cell lookup of one grid: `out` gets shares of `g(x)` at `shape.out`
/// fractional bits.
pub fn cell<P: Party + ?Sized>(
    p: &mut P,
    shape: crate::protocol::cell::CellShape,
    g: &dyn crate::protocol::cell::CellFn,
    x: &[u64],
    out: &mut [u64],
) -> Result<(), P::Error> {
    p.cells(&[crate::protocol::cell::CellGrid { shape, g }], x, out)
}
