//! Flights: several primitive ops opened together, one message each way,
//! then finished together. Written once here for every party that holds
//! shares (the host and the device run the same functions; the dealer deals
//! the same chunks, [`lut_chunks`] and [`grid_chunks`]).
//!
//! A flight function takes two closures from its party: `next`, which
//! gives the correlation of the next op (the device expands it from its
//! seed, the host reads it from the dealer message it already received),
//! and `exchange`, which sends this party's message and returns the peer's.
//! The peer's message must be exactly as long as this party's (both parties
//! open the same ops); anything else is [`ProtocolError::BadLength`].
//!
//! Chunking: a lookup whose dealer message would exceed
//! [`DEALER_CHUNK_BYTES`] is split into chunks of elements, each its own op,
//! so that no party ever holds more than that in one message. Every party
//! splits the same way, so they draw the same op ids.

use super::LutJob;
use crate::ProtocolError;
use crate::corr::OpCorr;
use crate::protocol::cell::{self, Cell, CellGrid, CellOpened, CellShape};
use crate::protocol::cmp::{Cmp, CmpOpened, CmpShape};
use crate::protocol::lut::{self, Grid, Lut, LutOpened, LutShape, Table};
use crate::protocol::matmul::{Matmul, MatmulOpened, MatmulShape};

/// Largest dealer message of a lookup op, in bytes: bigger lookups are
/// split into chunks of elements.
pub const DEALER_CHUNK_BYTES: usize = 32 << 20;

/// Most ops in one flight (after chunking). The open states live on the
/// stack: a microcontroller's models are small (one chunk per job, as many
/// jobs as heads in a group of the tile), while a desktop party may run
/// vit_9_12_64, whose 792,588 attention scores per layer need hundreds of
/// chunks.
#[cfg(target_os = "none")]
pub const MAX_JOBS: usize = 16;
/// Most ops in one flight (after chunking).
#[cfg(not(target_os = "none"))]
pub const MAX_JOBS: usize = 2048;

/// Elements per chunk of a single-grid lookup job.
pub fn lut_chunk(shape: LutShape, table: &dyn Table) -> usize {
    let per = shape.corrections(table) / shape.n.max(1);
    (DEALER_CHUNK_BYTES / (8 * per.max(1))).max(1)
}

/// Elements per chunk of a multi-grid lookup over `n` elements.
pub fn grids_chunk(grids: &[Grid<'_>], n: usize) -> usize {
    let per = lut::grids_corrections(grids) / n.max(1);
    (DEALER_CHUNK_BYTES / (8 * per.max(1))).max(1)
}

/// The ops of a batch of lookup jobs after chunking, in order.
pub fn lut_chunks<'j, 'a>(jobs: &'j [LutJob<'a>]) -> impl Iterator<Item = LutJob<'a>> + 'j {
    jobs.iter().flat_map(|j| {
        let step = lut_chunk(j.shape, j.table);
        let n = j.shape.n;
        (0..n).step_by(step).map(move |a| LutJob {
            shape: LutShape {
                n: step.min(n - a),
                ..j.shape
            },
            table: j.table,
        })
    })
}

/// Bytes of this party's message in a flight of `jobs` (both parties send
/// the same length).
pub fn luts_msg_len(jobs: &[LutJob<'_>]) -> usize {
    lut_chunks(jobs).map(|j| j.shape.msg_len()).sum()
}

/// One chunk of a multi-grid lookup: elements `start..end`, every grid cut
/// to `end - start` elements.
pub struct GridChunk<'a> {
    /// First element.
    pub start: usize,
    /// One past the last element.
    pub end: usize,
    /// The grids of this chunk.
    pub grids: heapless::Vec<Grid<'a>, { lut::MAX_GRIDS }>,
}

/// The ops of a multi-grid lookup over `n` elements after chunking.
pub fn grid_chunks<'g, 'a>(
    grids: &'g [Grid<'a>],
    n: usize,
) -> impl Iterator<Item = Result<GridChunk<'a>, ProtocolError>> + 'g {
    let step = grids_chunk(grids, n);
    (0..n).step_by(step).map(move |start| {
        let end = (start + step).min(n);
        let mut v = heapless::Vec::new();
        for g in grids {
            v.push(Grid {
                shape: LutShape {
                    n: end - start,
                    ..g.shape
                },
                table: g.table,
            })
            .map_err(|_| ProtocolError::BadShape)?;
        }
        Ok(GridChunk { start, end, grids: v })
    })
}

/// Bytes of this party's message in a multi-grid lookup of `n` elements.
pub fn grids_msg_len(grids: &[Grid<'_>], n: usize) -> usize {
    lut::grids_width(grids) * n
}

/// Bytes of this party's message in a flight of matrix products.
pub fn matmuls_msg_len(shapes: &[MatmulShape]) -> usize {
    shapes.iter().map(|s| s.msg_len()).sum()
}

/// Scratch words [`matmuls`] takes at most (the faster product).
pub fn matmuls_scratch_len(shapes: &[MatmulShape]) -> usize {
    shapes.iter().map(|s| s.scratch_len()).max().unwrap_or(0)
}

/// Scratch words [`matmuls`] needs at least (a microcontroller's).
pub fn matmuls_min_scratch_len(shapes: &[MatmulShape]) -> usize {
    shapes.iter().map(|s| s.min_scratch_len()).max().unwrap_or(0)
}

fn checked_peer(peer: &[u8], expected: usize) -> Result<&[u8], ProtocolError> {
    if peer.len() != expected {
        return Err(ProtocolError::BadLength {
            expected,
            got: peer.len(),
        });
    }
    Ok(peer)
}

fn sub<T>(s: &[T], a: usize, len: usize) -> Result<&[T], ProtocolError> {
    s.get(a..a.checked_add(len).ok_or(ProtocolError::BadBuffer)?)
        .ok_or(ProtocolError::BadBuffer)
}

fn sub_mut<T>(s: &mut [T], a: usize, len: usize) -> Result<&mut [T], ProtocolError> {
    s.get_mut(a..a.checked_add(len).ok_or(ProtocolError::BadBuffer)?)
        .ok_or(ProtocolError::BadBuffer)
}

/// Shared x shared matrix products in one flight: `x`, `y` and `z` hold the
/// operands and results one after the other (each product's `y` becomes
/// its opened `F`, which a [`Right::Keep`] product keeps for later ones);
/// `tx` at least [`matmuls_msg_len`] bytes, `scratch` at least
/// [`matmuls_min_scratch_len`] words ([`matmuls_scratch_len`] for the
/// faster product).
///
/// [`Right::Keep`]: crate::protocol::matmul::Right::Keep
pub fn matmuls<'m, 'r, E: From<ProtocolError>>(
    next: &mut dyn FnMut() -> Result<OpCorr<'m>, E>,
    shapes: &[MatmulShape],
    (x, y, z): (&[u64], &mut [u64], &mut [u64]),
    tx: &mut [u8],
    scratch: &mut [u64],
    exchange: impl FnOnce(&[u8]) -> Result<&'r [u8], E>,
) -> Result<(), E> {
    if let [s] = shapes {
        // one product (a microcontroller's tile of one head): no list of
        // op states on the stack
        let (x, y, z) = (
            sub(x, 0, s.n * s.k)?,
            sub_mut(y, 0, s.k * s.m)?,
            sub_mut(z, 0, s.n * s.m)?,
        );
        let len = s.msg_len();
        let (st, _) = Matmul::new(next()?, *s)?.open(x, y, sub_mut(tx, 0, len)?)?;
        let peer = checked_peer(exchange(sub(tx, 0, len)?)?, len)?;
        let scratch = sub_mut(scratch, 0, s.scratch_len().min(scratch.len()))?;
        return Ok(st.finish(x, y, peer, scratch, z)?);
    }
    matmuls_many(next, shapes, (x, y, z), tx, scratch, exchange)
}

/// [`matmuls`] of more than one product.
#[inline(never)]
fn matmuls_many<'m, 'r, E: From<ProtocolError>>(
    next: &mut dyn FnMut() -> Result<OpCorr<'m>, E>,
    shapes: &[MatmulShape],
    (x, y, z): (&[u64], &mut [u64], &mut [u64]),
    tx: &mut [u8],
    scratch: &mut [u64],
    exchange: impl FnOnce(&[u8]) -> Result<&'r [u8], E>,
) -> Result<(), E> {
    let mut opened: heapless::Vec<MatmulOpened<'m>, MAX_JOBS> = heapless::Vec::new();
    let (mut xo, mut yo, mut to) = (0, 0, 0);
    for &s in shapes {
        let op = Matmul::new(next()?, s)?;
        let (st, _) = op.open(
            sub(x, xo, s.n * s.k)?,
            sub(y, yo, s.k * s.m)?,
            sub_mut(tx, to, s.msg_len())?,
        )?;
        opened.push(st).map_err(|_| ProtocolError::TooManyOps)?;
        xo += s.n * s.k;
        yo += s.k * s.m;
        to += s.msg_len();
    }
    let peer = checked_peer(exchange(sub(tx, 0, to)?)?, to)?;
    let (mut xo, mut yo, mut zo, mut po) = (0, 0, 0, 0);
    for (&s, st) in shapes.iter().zip(opened) {
        st.finish(
            sub(x, xo, s.n * s.k)?,
            sub_mut(y, yo, s.k * s.m)?,
            sub(peer, po, s.msg_len())?,
            sub_mut(scratch, 0, s.scratch_len().min(scratch.len()))?,
            sub_mut(z, zo, s.n * s.m)?,
        )?;
        xo += s.n * s.k;
        yo += s.k * s.m;
        zo += s.n * s.m;
        po += s.msg_len();
    }
    Ok(())
}

/// Lookups in one flight (chunked, [`lut_chunks`]): `x` holds the jobs'
/// inputs one after the other, `out` their outputs; `tx` at least
/// [`luts_msg_len`] bytes.
pub fn luts<'m, 'r, E: From<ProtocolError>>(
    next: &mut dyn FnMut() -> Result<OpCorr<'m>, E>,
    jobs: &[LutJob<'_>],
    x: &[u64],
    out: &mut [u64],
    tx: &mut [u8],
    exchange: impl FnOnce(&[u8]) -> Result<&'r [u8], E>,
) -> Result<(), E> {
    let mut it = lut_chunks(jobs);
    if let (Some(j), None) = (it.next(), it.next()) {
        // one op (always on a microcontroller): no list of op states on the
        // stack
        let len = j.shape.msg_len();
        let (st, _) = Lut::new(next()?, j.shape, j.table)?.open(sub(x, 0, j.shape.n)?, sub_mut(tx, 0, len)?)?;
        let peer = checked_peer(exchange(sub(tx, 0, len)?)?, len)?;
        return Ok(st.finish(j.shape, j.table, sub(tx, 0, len)?, peer, sub_mut(out, 0, j.out_len())?)?);
    }
    luts_chunked(next, jobs, x, out, tx, exchange)
}

/// [`luts`] of more than one op.
#[inline(never)]
fn luts_chunked<'m, 'r, E: From<ProtocolError>>(
    next: &mut dyn FnMut() -> Result<OpCorr<'m>, E>,
    jobs: &[LutJob<'_>],
    x: &[u64],
    out: &mut [u64],
    tx: &mut [u8],
    exchange: impl FnOnce(&[u8]) -> Result<&'r [u8], E>,
) -> Result<(), E> {
    let mut opened: heapless::Vec<LutOpened<'m>, MAX_JOBS> = heapless::Vec::new();
    let (mut xo, mut to) = (0, 0);
    for j in lut_chunks(jobs) {
        let op = Lut::new(next()?, j.shape, j.table)?;
        let len = j.shape.msg_len();
        let (st, _) = op.open(sub(x, xo, j.shape.n)?, sub_mut(tx, to, len)?)?;
        opened.push(st).map_err(|_| ProtocolError::TooManyOps)?;
        xo += j.shape.n;
        to += len;
    }
    let peer = checked_peer(exchange(sub(tx, 0, to)?)?, to)?;
    let (mut po, mut oo) = (0, 0);
    for (j, st) in lut_chunks(jobs).zip(opened) {
        let len = j.shape.msg_len();
        st.finish(
            j.shape,
            j.table,
            sub(tx, po, len)?,
            sub(peer, po, len)?,
            sub_mut(out, oo, j.out_len())?,
        )?;
        po += len;
        oo += j.out_len();
    }
    Ok(())
}

/// One lookup of `x` read through several grids (chunked,
/// [`grid_chunks`]), in one flight: `out` holds, per element, every grid's
/// outputs in grid order; `tx` at least [`grids_msg_len`] bytes.
pub fn grids<'m, 'r, E: From<ProtocolError>>(
    next: &mut dyn FnMut() -> Result<OpCorr<'m>, E>,
    grids: &[Grid<'_>],
    x: &[u64],
    out: &mut [u64],
    tx: &mut [u8],
    exchange: impl FnOnce(&[u8]) -> Result<&'r [u8], E>,
) -> Result<(), E> {
    let n = x.len();
    let outs: usize = grids.iter().map(|g| g.table.outputs()).sum();
    let w = lut::grids_width(grids);
    let mut opened: heapless::Vec<LutOpened<'m>, MAX_JOBS> = heapless::Vec::new();
    for c in grid_chunks(grids, n) {
        let c = c?;
        let op = Lut::with_grids(next()?, &c.grids)?;
        let len = c.end - c.start;
        let (st, _) = op.open(sub(x, c.start, len)?, sub_mut(tx, w * c.start, w * len)?)?;
        opened.push(st).map_err(|_| ProtocolError::TooManyOps)?;
    }
    let peer = checked_peer(exchange(sub(tx, 0, w * n)?)?, w * n)?;
    for (c, st) in grid_chunks(grids, n).zip(opened) {
        let c = c?;
        let len = c.end - c.start;
        st.finish_grids(
            &c.grids,
            sub(tx, w * c.start, w * len)?,
            sub(peer, w * c.start, w * len)?,
            sub_mut(out, outs * c.start, outs * len)?,
        )?;
    }
    Ok(())
}

/// Elements per chunk of a comparison.
pub fn cmp_chunk(shape: CmpShape) -> usize {
    (DEALER_CHUNK_BYTES / (8 * shape.words_per_elem().max(1))).max(1)
}

/// The ops of a comparison after chunking, in order.
pub fn cmp_chunks(shape: CmpShape) -> impl Iterator<Item = CmpShape> {
    let step = cmp_chunk(shape);
    let n = shape.n;
    (0..n).step_by(step).map(move |a| CmpShape {
        n: step.min(n - a),
        ..shape
    })
}

/// Bytes of `tx` a comparison flight needs: both flights' messages.
pub fn cmp_tx_len(shape: CmpShape) -> usize {
    cmp_chunks(shape).map(|c| c.open_len() + c.bits_len()).sum()
}

/// One message exchange in a multi-flight op: sends this party's message
/// and hands the peer's to `on_peer` (which may not outlive the call).
pub type Exchange<'a, E> = dyn FnMut(&[u8], &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> + 'a;

/// A comparison ([`crate::protocol::cmp`]) in two flights, chunked
/// ([`cmp_chunks`]): `out` gets each element's outputs ([`CmpShape`]'s
/// `out`, [`crate::protocol::cmp::CmpOut::outputs`] per element); `tx` at
/// least [`cmp_tx_len`] bytes.
pub fn cmps<'m, E: From<ProtocolError>>(
    next: &mut dyn FnMut() -> Result<OpCorr<'m>, E>,
    shape: CmpShape,
    x: &[u64],
    out: &mut [u64],
    tx: &mut [u8],
    exchange: &mut Exchange<'_, E>,
) -> Result<(), E> {
    let k = shape.out.outputs();
    if x.len() != shape.n || out.len() != shape.n * k {
        return Err(ProtocolError::BadBuffer.into());
    }
    let len1: usize = cmp_chunks(shape).map(|c| c.open_len()).sum();
    let len2: usize = cmp_chunks(shape).map(|c| c.bits_len()).sum();
    let (t1, rest) = tx.split_at_mut_checked(len1).ok_or(ProtocolError::BadBuffer)?;
    let t2 = rest.get_mut(..len2).ok_or(ProtocolError::BadBuffer)?;
    if cmp_chunk(shape) >= shape.n {
        // one op (always on a microcontroller): no list of op states on the
        // stack
        let st = Cmp::new(next()?, shape)?.open(x, t1)?;
        {
            let t1: &[u8] = t1;
            let mut on_open = |peer: &[u8]| -> Result<(), E> { Ok(st.bits(t1, checked_peer(peer, len1)?, out, t2)?) };
            exchange(t1, &mut on_open)?;
        }
        let t2: &[u8] = t2;
        let mut st = Some(st);
        let mut on_bits = |peer: &[u8]| -> Result<(), E> {
            let st = st.take().ok_or(ProtocolError::BadParameter)?;
            Ok(st.finish(t2, checked_peer(peer, len2)?, out)?)
        };
        return exchange(t2, &mut on_bits);
    }
    cmps_chunked(next, shape, x, out, (t1, t2), exchange)
}

/// [`cmps`] of more than one chunk: `t1` and `t2` the two flights' parts
/// of `tx`.
#[inline(never)]
fn cmps_chunked<'m, E: From<ProtocolError>>(
    next: &mut dyn FnMut() -> Result<OpCorr<'m>, E>,
    shape: CmpShape,
    x: &[u64],
    out: &mut [u64],
    (t1, t2): (&mut [u8], &mut [u8]),
    exchange: &mut Exchange<'_, E>,
) -> Result<(), E> {
    let k = shape.out.outputs();
    let (len1, len2) = (t1.len(), t2.len());
    let mut opened: heapless::Vec<CmpOpened<'m>, MAX_JOBS> = heapless::Vec::new();
    let (mut xo, mut to) = (0, 0);
    for c in cmp_chunks(shape) {
        let op = Cmp::new(next()?, c)?;
        let st = op.open(sub(x, xo, c.n)?, sub_mut(t1, to, c.open_len())?)?;
        opened.push(st).map_err(|_| ProtocolError::TooManyOps)?;
        xo += c.n;
        to += c.open_len();
    }
    {
        let t1: &[u8] = t1;
        let mut on_open = |peer: &[u8]| -> Result<(), E> {
            let peer = checked_peer(peer, len1)?;
            let (mut o1, mut o2, mut oo) = (0, 0, 0);
            for (c, st) in cmp_chunks(shape).zip(opened.iter()) {
                let (a, b) = (c.open_len(), c.bits_len());
                st.bits(
                    sub(t1, o1, a)?,
                    sub(peer, o1, a)?,
                    sub_mut(out, oo, c.n * k)?,
                    sub_mut(t2, o2, b)?,
                )?;
                (o1, o2, oo) = (o1 + a, o2 + b, oo + c.n * k);
            }
            Ok(())
        };
        exchange(t1, &mut on_open)?;
    }
    let t2: &[u8] = t2;
    let mut on_bits = |peer: &[u8]| -> Result<(), E> {
        let peer = checked_peer(peer, len2)?;
        let (mut o2, mut oo) = (0, 0);
        for (c, st) in cmp_chunks(shape).zip(core::mem::take(&mut opened)) {
            let b = c.bits_len();
            st.finish(sub(t2, o2, b)?, sub(peer, o2, b)?, sub_mut(out, oo, c.n * k)?)?;
            (o2, oo) = (o2 + b, oo + c.n * k);
        }
        Ok(())
    };
    exchange(t2, &mut on_bits)
}

/// Elements per chunk of a cell lookup of several grids over `n` elements.
pub fn cell_chunk(grids: &[CellGrid<'_>]) -> usize {
    let per: usize = grids.iter().map(|g| g.shape.words_per_elem()).sum();
    (DEALER_CHUNK_BYTES / (8 * per.max(1))).max(1)
}

/// One chunk of a cell lookup: elements `start..end`, every grid cut to
/// `end - start` elements.
pub struct CellChunk<'a> {
    /// First element.
    pub start: usize,
    /// One past the last element.
    pub end: usize,
    /// The grids of this chunk.
    pub grids: heapless::Vec<CellGrid<'a>, { cell::MAX_GRIDS }>,
}

/// The ops of a cell lookup over `n` elements after chunking.
pub fn cell_chunks<'g, 'a>(
    grids: &'g [CellGrid<'a>],
    n: usize,
) -> impl Iterator<Item = Result<CellChunk<'a>, ProtocolError>> + 'g {
    let step = cell_chunk(grids);
    (0..n).step_by(step).map(move |start| {
        let end = (start + step).min(n);
        let mut v = heapless::Vec::new();
        for g in grids {
            v.push(CellGrid {
                shape: CellShape {
                    n: end - start,
                    ..g.shape
                },
                g: g.g,
            })
            .map_err(|_| ProtocolError::BadShape)?;
        }
        Ok(CellChunk { start, end, grids: v })
    })
}

/// Bytes of this party's message in a cell lookup of `n` elements.
pub fn cell_msg_len(grids: &[CellGrid<'_>], n: usize) -> usize {
    cell::grids_width(grids) * n
}

/// A cell lookup ([`crate::protocol::cell`]) of one or more grids in one
/// flight, chunked ([`cell_chunks`]): `out` holds, per element, one value
/// per grid in grid order; `tx` at least [`cell_msg_len`] bytes.
pub fn cells<'m, 'r, E: From<ProtocolError>>(
    next: &mut dyn FnMut() -> Result<OpCorr<'m>, E>,
    grids: &[CellGrid<'_>],
    x: &[u64],
    out: &mut [u64],
    tx: &mut [u8],
    exchange: impl FnOnce(&[u8]) -> Result<&'r [u8], E>,
) -> Result<(), E> {
    let n = x.len();
    let (gc, w) = (grids.len(), cell::grids_width(grids));
    if out.len() != n * gc || grids.iter().any(|g| g.shape.n != n) {
        return Err(ProtocolError::BadBuffer.into());
    }
    if cell_chunk(grids) >= n {
        // one op (always on a microcontroller): the grids as given, no
        // chunk copies of them on the stack
        let st = Cell::with_grids(next()?, grids)?.open(x, sub_mut(tx, 0, w * n)?)?;
        let peer = checked_peer(exchange(sub(tx, 0, w * n)?)?, w * n)?;
        return Ok(st.finish_grids(grids, sub(tx, 0, w * n)?, peer, out)?);
    }
    cells_chunked(next, grids, x, out, tx, exchange)
}

/// [`cells`] of more than one chunk.
#[inline(never)]
fn cells_chunked<'m, 'r, E: From<ProtocolError>>(
    next: &mut dyn FnMut() -> Result<OpCorr<'m>, E>,
    grids: &[CellGrid<'_>],
    x: &[u64],
    out: &mut [u64],
    tx: &mut [u8],
    exchange: impl FnOnce(&[u8]) -> Result<&'r [u8], E>,
) -> Result<(), E> {
    let n = x.len();
    let (gc, w) = (grids.len(), cell::grids_width(grids));
    let mut opened: heapless::Vec<CellOpened<'m>, MAX_JOBS> = heapless::Vec::new();
    for c in cell_chunks(grids, n) {
        let c = c?;
        let len = c.end - c.start;
        let op = Cell::with_grids(next()?, &c.grids)?;
        let st = op.open(sub(x, c.start, len)?, sub_mut(tx, w * c.start, w * len)?)?;
        opened.push(st).map_err(|_| ProtocolError::TooManyOps)?;
    }
    let peer = checked_peer(exchange(sub(tx, 0, w * n)?)?, w * n)?;
    for (c, st) in cell_chunks(grids, n).zip(opened) {
        let c = c?;
        let len = c.end - c.start;
        st.finish_grids(
            &c.grids,
            sub(tx, w * c.start, w * len)?,
            sub(peer, w * c.start, w * len)?,
            sub_mut(out, gc * c.start, gc * len)?,
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    //! The many-op paths, which only flights over [`DEALER_CHUNK_BYTES`] of
    //! dealer words reach, against the one-op paths on a flight of one op:
    //! the same messages and outputs from the same correlations and peer
    //! messages (the device's side).
    use super::*;
    use crate::corr::{Correlations, Role, SessionId};
    use crate::prg::Seed;
    use crate::protocol::cmp::CmpOut;
    use crate::protocol::pwl::{ReluOut, ReluTable};
    use std::vec::Vec;

    fn source() -> Correlations {
        Correlations::new(Role::Device, &Seed::from_bytes([3; 32]), SessionId(9))
    }

    fn bytes(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
            .collect()
    }

    fn inputs(n: usize) -> Vec<u64> {
        (0..n as u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9) << 4).wrapping_sub(1 << 20))
            .collect()
    }

    /// The messages the device sends and its `out_len` outputs in a flight
    /// of one exchange, `run(next, out, tx, exchange)`, the peer answering
    /// `peer` (as long as the device's message).
    fn one_exchange<'p>(
        peer: &'p [u8],
        out_len: usize,
        run: impl FnOnce(
            &mut dyn FnMut() -> Result<OpCorr<'static>, ProtocolError>,
            &mut [u64],
            &mut [u8],
            &mut dyn FnMut(&[u8]) -> Result<&'p [u8], ProtocolError>,
        ) -> Result<(), ProtocolError>,
    ) -> (Vec<u8>, Vec<u64>) {
        let mut c = source();
        let mut tx = std::vec![0u8; peer.len()];
        let mut out = std::vec![0u64; out_len];
        let mut sent = Vec::new();
        let mut ex = |m: &[u8]| -> Result<&'p [u8], ProtocolError> {
            sent.extend_from_slice(m);
            Ok(peer)
        };
        run(&mut || c.next_op(), &mut out, &mut tx, &mut ex).unwrap();
        (sent, out)
    }

    #[test]
    fn cells_many_op_path_matches_one_op() {
        let n = 40;
        let shape = crate::ops::vit::score_exp(n, 16, 0).unwrap();
        let grids = [CellGrid {
            shape,
            g: &crate::ops::vit::ScoreExp,
        }];
        let x = inputs(n);
        let peer = bytes(cell_msg_len(&grids, n), 7);
        let run = |many: bool| {
            one_exchange(&peer, n, |next, out, tx, ex| {
                if many {
                    cells_chunked(next, &grids, &x, out, tx, ex)
                } else {
                    cells(next, &grids, &x, out, tx, ex)
                }
            })
        };
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn luts_many_op_path_matches_one_op() {
        let n = 33;
        let shape = LutShape { n, s: 10, k: 4, t: 0 };
        let table = ReluTable {
            shape,
            out: ReluOut::Both,
        };
        let jobs = [LutJob { shape, table: &table }];
        let x = inputs(n);
        let peer = bytes(luts_msg_len(&jobs), 5);
        let run = |many: bool| {
            one_exchange(&peer, jobs[0].out_len(), |next, out, tx, ex| {
                if many {
                    luts_chunked(next, &jobs, &x, out, tx, ex)
                } else {
                    luts(next, &jobs, &x, out, tx, ex)
                }
            })
        };
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn cmps_many_op_path_matches_one_op() {
        let n = 37;
        let shape = CmpShape::new(n, 16, 5, CmpOut::Relu).unwrap();
        let x = inputs(n);
        let run = |many: bool| {
            let mut c = source();
            let len1: usize = cmp_chunks(shape).map(|c| c.open_len()).sum();
            let mut tx = std::vec![0u8; cmp_tx_len(shape)];
            let peers = [bytes(len1, 1), bytes(tx.len() - len1, 2)];
            let mut out = std::vec![0u64; n * shape.out.outputs()];
            let mut sent = Vec::new();
            let mut calls = 0;
            let mut ex = |m: &[u8], on_peer: &mut dyn FnMut(&[u8]) -> Result<(), ProtocolError>| {
                sent.extend_from_slice(m);
                calls += 1;
                on_peer(&peers[calls - 1])
            };
            let mut next = || c.next_op();
            if many {
                let (t1, t2) = tx.split_at_mut(len1);
                cmps_chunked(&mut next, shape, &x, &mut out, (t1, t2), &mut ex).unwrap();
            } else {
                cmps(&mut next, shape, &x, &mut out, &mut tx, &mut ex).unwrap();
            }
            (sent, out)
        };
        assert_eq!(run(false), run(true));
    }
}
