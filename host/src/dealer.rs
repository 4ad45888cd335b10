//! The dealer party: runs the same op sequence as the host and the device,
//! but deals each primitive's correlation instead of computing on shares
//! (its local arithmetic runs on placeholder zeros), and sends the host's
//! corrections on its one link.

use crate::error::DealerError;
use embedded_io::{Read, Write};
use mpcvit_core::corr::{DealerOp, dealer_message_len};
use mpcvit_core::ops::{LutJob, Party, flight};
use mpcvit_core::protocol::cell::{self, CellGrid};
use mpcvit_core::protocol::cmp::{self, CmpShape};
use mpcvit_core::protocol::linear::{self, LinearShape};
use mpcvit_core::protocol::lut::{self, Grid};
use mpcvit_core::protocol::matmul::{self, MatmulShape};
use mpcvit_core::protocol::{mul, scale, square, trunc};
use mpcvit_core::{DealerSession, FixedPoint, ProtocolError, Role, Seed, SessionId};
use mpcvit_transport::{FrameKind, Link};

/// The dealer of one session.
pub struct DealerParty<T> {
    fp: FixedPoint,
    host: Link<T>,
    session: DealerSession,
    out: Vec<u8>,
    scratch: Vec<u64>,
}

type Res<E> = Result<(), DealerError<E>>;

impl<T: Read + Write> DealerParty<T> {
    /// The dealer of session `sid` on `host` (bound to the session), with
    /// the host's key and the device's session key.
    pub fn new(fp: FixedPoint, host: Link<T>, host_key: &Seed, device_key: &Seed, sid: SessionId) -> Self {
        Self {
            fp,
            host,
            session: DealerSession::new(host_key, device_key, sid),
            out: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The link to the host (for its meter).
    pub fn link(&self) -> &Link<T> {
        &self.host
    }

    /// Deals the next op: `f` writes its message of `words` corrections
    /// (with `scratch_words` of scratch), which goes to the host.
    fn deal(
        &mut self,
        words: usize,
        scratch_words: usize,
        f: impl FnOnce(&DealerOp, &mut [u64], &mut [u8]) -> Result<usize, ProtocolError>,
    ) -> Res<T::Error> {
        let op = self.session.next_op()?;
        // one buffer for every message (the writer overwrites each word)
        self.out.resize(dealer_message_len(words), 0);
        self.scratch.resize(scratch_words, 0);
        let n = f(&op, &mut self.scratch, &mut self.out)?;
        let msg = self.out.get(..n).ok_or(ProtocolError::BadBuffer)?;
        self.host.send(FrameKind::Dealer, msg)?;
        Ok(())
    }

    /// A linear op with its device mask from `mask`, and the truncation of
    /// its output by `bits` (none with 0).
    fn deal_linear(&mut self, s: LinearShape, mask: linear::Mask, b: &[u64], bits: u32) -> Res<T::Error> {
        self.deal(s.corrections(), s.dout, |op, acc, out| {
            linear::deal_masked(op, s, mask, b, acc, out)
        })?;
        if bits == 0 {
            return Ok(());
        }
        self.deal_trunc(s.n * s.dout, bits, s.width)
    }

    fn deal_trunc(&mut self, n: usize, bits: u32, width: usize) -> Res<T::Error> {
        self.deal(2 * n, 0, |op, _, out| trunc::deal(op, n, bits, width, out))
    }
}

impl<T: Read + Write> Party for DealerParty<T> {
    type Error = DealerError<T::Error>;

    fn role(&self) -> Role {
        Role::Dealer
    }

    fn fp(&self) -> FixedPoint {
        self.fp
    }

    fn next_op_id(&self) -> u64 {
        self.session.ops_used()
    }

    fn mul(&mut self, x: &[u64], _y: &[u64], cols: usize, _z: &mut [u64]) -> Res<T::Error> {
        let n = x.len();
        self.deal(n, 0, |op, _, out| mul::deal_rows(op, n, cols, out))
    }

    fn square(&mut self, x: &[u64], _z: &mut [u64]) -> Res<T::Error> {
        let n = x.len();
        self.deal(n, 0, |op, _, out| square::deal(op, n, out))
    }

    fn square_keep(&mut self, x: &[u64], _e: &mut [u64], z: &mut [u64]) -> Res<T::Error> {
        self.square(x, z)
    }

    fn mul_opened(&mut self, e: &[u64], first: u64, _y: &[u64], cols: usize, _z: &mut [u64]) -> Res<T::Error> {
        let n = e.len();
        self.deal(n, 0, |op, _, out| mul::deal_rows_left(op, n, cols, Some(first), out))
    }

    fn matmuls(&mut self, shapes: &[MatmulShape], _x: &[u64], _y: &mut [u64], _z: &mut [u64]) -> Res<T::Error> {
        for &s in shapes {
            self.deal(s.n * s.m, s.dealer_scratch_len(), |op, scratch, out| {
                matmul::deal(op, s, scratch, out)
            })?;
        }
        Ok(())
    }

    fn linear_trunc(
        &mut self,
        s: LinearShape,
        _x: &[u64],
        b: &[u64],
        _bias: &[u64],
        bits: u32,
        _z: &mut [u64],
    ) -> Res<T::Error> {
        self.deal_linear(s, linear::Mask::Own, b, bits)
    }

    fn linear_mask(&mut self) -> Result<u64, Self::Error> {
        let id = self.session.ops_used();
        self.deal(0, 0, |op, _, out| op.writer(out, 0)?.finish())?;
        Ok(id)
    }

    fn linear_block(
        &mut self,
        _mask: u64,
        _din: usize,
        _block: (usize, usize, usize),
        _x: &[u64],
        _e: &mut [u64],
    ) -> Res<T::Error> {
        Ok(())
    }

    fn linear_trunc_held(
        &mut self,
        (op, tbits): (u64, u32),
        s: LinearShape,
        _x: &[u64],
        b: &[u64],
        _bias: &[u64],
        bits: u32,
        _z: &mut [u64],
    ) -> Res<T::Error> {
        self.deal_linear(s, linear::Mask::Held { op, bits: tbits }, b, bits)
    }

    fn linear_trunc_sent(
        &mut self,
        mask: u64,
        r0: usize,
        s: LinearShape,
        _e: &[u64],
        b: &[u64],
        _bias: &[u64],
        bits: u32,
        _z: &mut [u64],
    ) -> Res<T::Error> {
        self.deal_linear(s, linear::Mask::Blocks { op: mask, row0: r0 }, b, bits)
    }

    fn reveal_to_device(&mut self, _x: &[u64], out: &mut [u64]) -> Res<T::Error> {
        out.fill(0);
        Ok(())
    }

    fn reveal_to_host(&mut self, _x: &[u64], out: &mut [u64]) -> Res<T::Error> {
        out.fill(0);
        Ok(())
    }

    fn luts(&mut self, jobs: &[LutJob<'_>], _x: &[u64], _out: &mut [u64]) -> Res<T::Error> {
        for j in flight::lut_chunks(jobs) {
            let scratch = lut::dealer_scratch_len(j.shape, j.table);
            self.deal(j.shape.corrections(j.table), scratch, |op, scratch, out| {
                lut::deal(op, j.shape, j.table, scratch, out)
            })?;
        }
        Ok(())
    }

    fn lut_grids(&mut self, grids: &[Grid<'_>], x: &[u64], _out: &mut [u64]) -> Res<T::Error> {
        for c in flight::grid_chunks(grids, x.len()) {
            let c = c?;
            let (words, scratch) = (lut::grids_corrections(&c.grids), lut::grids_scratch_len(&c.grids));
            self.deal(words, scratch, |op, scratch, out| {
                lut::deal_grids(op, &c.grids, scratch, out)
            })?;
        }
        Ok(())
    }

    fn cmp(&mut self, shape: CmpShape, _x: &[u64], _out: &mut [u64]) -> Res<T::Error> {
        for c in flight::cmp_chunks(shape) {
            self.deal(c.corrections(), 0, |op, _, out| cmp::deal(op, c, out))?;
        }
        Ok(())
    }

    fn cells(&mut self, grids: &[CellGrid<'_>], x: &[u64], _out: &mut [u64]) -> Res<T::Error> {
        for c in flight::cell_chunks(grids, x.len()) {
            let c = c?;
            let words = cell::grids_corrections(&c.grids);
            self.deal(words, 0, |op, _, out| cell::deal_grids(op, &c.grids, out))?;
        }
        Ok(())
    }

    fn trunc(&mut self, bits: u32, x: &[u64], _z: &mut [u64]) -> Res<T::Error> {
        self.deal_trunc(x.len(), bits, trunc::FULL)
    }

    fn scale_trunc(&mut self, x: &[u64], b: &[u64], bits: u32, _z: &mut [u64]) -> Res<T::Error> {
        let n = x.len();
        let rows = n / b.len().max(1);
        self.deal(n, 0, |op, _, out| scale::deal(op, rows, b, out))?;
        self.deal_trunc(n, bits, trunc::FULL)
    }
}
