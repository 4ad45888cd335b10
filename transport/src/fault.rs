//! Fault injection (std), in the spirit of smoltcp's `FaultInjector`: a
//! writer that sees whole frames and, on a seeded schedule, drops,
//! corrupts, truncates, duplicates, reorders, replays or delays them, or
//! kills the stream. Put it on one direction of a link (or in a relay
//! between two sockets) to test what the other side does with a broken or
//! hostile peer.
//!
//! It sees a stream as [`Units`]: plain *frames*, recognised by their
//! header's length field (bytes that do not parse as a frame header are
//! passed through unchanged: the injector never makes a frame out of
//! garbage), or sealed *records* (`crate::seal`: `len: u16 | ciphertext |
//! tag`) after the stream's opening, which passes through untouched. On a
//! sealed stream every fault but a delay must make the reader refuse the
//! stream (a record out of order fails its tag).

use crate::frame::{HEADER_LEN, TRAILER_LEN};
use std::io::{self, Write};
use std::time::Duration;

/// What to do to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Do not send it.
    Drop,
    /// Flip one bit (header, payload or CRC, chosen by the seed).
    Corrupt,
    /// Send only a prefix of it, then close the stream.
    Truncate,
    /// Send it twice.
    Duplicate,
    /// Hold it back and send it after the next frame.
    Reorder,
    /// Send it, then send the previous frame again.
    Replay,
    /// Send it late (the session should still succeed).
    Delay(Duration),
    /// Close the stream instead of sending it (the peer disappears).
    Kill,
}

impl Fault {
    /// Every kind, with a 50 ms delay.
    pub const ALL: [Fault; 8] = [
        Fault::Drop,
        Fault::Corrupt,
        Fault::Truncate,
        Fault::Duplicate,
        Fault::Reorder,
        Fault::Replay,
        Fault::Delay(Duration::from_millis(50)),
        Fault::Kill,
    ];

    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Drop => "drop",
            Fault::Corrupt => "corrupt",
            Fault::Truncate => "truncate",
            Fault::Duplicate => "duplicate",
            Fault::Reorder => "reorder",
            Fault::Replay => "replay",
            Fault::Delay(_) => "delay",
            Fault::Kill => "kill",
        }
    }
}

/// How a stream is cut into the units faults apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Units {
    /// Link frames (`crate::frame`).
    Frames,
    /// Sealed records after an opening of `prefix` bytes (`crate::seal`:
    /// 16 from an initiator, 12 from a mutual responder, 0 from a plain
    /// responder).
    Records {
        /// Bytes of the opening, passed through first.
        prefix: usize,
    },
}

/// A writer that applies `fault` to unit number `at` (counting from 0) of
/// what passes through it; `seed` picks bit and cut positions.
#[derive(Debug)]
pub struct FaultyWriter<W: Write> {
    units: Units,
    /// Opening bytes still to pass through (records).
    prefix_left: usize,
    inner: Option<W>,
    fault: Fault,
    at: u64,
    seed: u64,
    frames: u64,
    pending: Vec<u8>,
    held: Option<Vec<u8>>,
    previous: Option<Vec<u8>>,
    fired: bool,
}

impl<W: Write> FaultyWriter<W> {
    /// Wraps `inner`, a stream of frames.
    pub fn new(inner: W, fault: Fault, at: u64, seed: u64) -> Self {
        Self::with_units(inner, Units::Frames, fault, at, seed)
    }

    /// Wraps `inner`, a stream of `units`.
    pub fn with_units(inner: W, units: Units, fault: Fault, at: u64, seed: u64) -> Self {
        Self {
            units,
            prefix_left: match units {
                Units::Frames => 0,
                Units::Records { prefix } => prefix,
            },
            inner: Some(inner),
            fault,
            at,
            seed,
            frames: 0,
            pending: Vec::new(),
            held: None,
            previous: None,
            fired: false,
        }
    }

    /// Whether the fault has been applied.
    pub fn fired(&self) -> bool {
        self.fired
    }

    /// Units (frames or records) seen so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn out(&mut self, b: &[u8]) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(w) => w.write_all(b),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream killed by fault injector",
            )),
        }
    }

    fn rand(&mut self, m: usize) -> usize {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % m.max(1) as u64) as usize
    }

    fn frame(&mut self, f: Vec<u8>) -> io::Result<()> {
        let n = self.frames;
        self.frames += 1;
        if n != self.at {
            self.out(&f)?;
            if let Some(h) = self.held.take() {
                self.out(&h)?;
            }
            self.previous = Some(f);
            return Ok(());
        }
        self.fired = true;
        match self.fault {
            Fault::Drop => {}
            Fault::Corrupt => {
                let mut g = f.clone();
                let bit = self.rand(8 * g.len());
                if let Some(b) = g.get_mut(bit / 8) {
                    *b ^= 1 << (bit % 8);
                }
                self.out(&g)?;
            }
            Fault::Truncate => {
                let cut = 1 + self.rand(f.len().saturating_sub(1));
                self.out(f.get(..cut).unwrap_or(&[]))?;
                self.kill();
            }
            Fault::Duplicate => {
                self.out(&f)?;
                self.out(&f)?;
            }
            Fault::Reorder => self.held = Some(f.clone()),
            Fault::Replay => {
                self.out(&f)?;
                // The previous frame, or this one if it is the first.
                let again = self.previous.clone().unwrap_or_else(|| f.clone());
                self.out(&again)?;
            }
            Fault::Delay(d) => {
                std::thread::sleep(d);
                self.out(&f)?;
            }
            Fault::Kill => self.kill(),
        }
        self.previous = Some(f);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut w) = self.inner.take() {
            let _ = w.flush();
        }
    }
}

impl<W: Write> Write for FaultyWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.inner.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream killed by fault injector",
            ));
        }
        self.pending.extend_from_slice(buf);
        if self.prefix_left > 0 {
            let n = self.prefix_left.min(self.pending.len());
            let rest = self.pending.split_off(n);
            let opening = std::mem::replace(&mut self.pending, rest);
            self.prefix_left -= n;
            self.out(&opening)?;
        }
        if let Units::Records { .. } = self.units {
            // `len: u16 LE | ciphertext | tag (16)`
            while let Some(&[a, b]) = self.pending.get(..2) {
                let total = 2 + usize::from(u16::from_le_bytes([a, b])) + 16;
                if self.pending.len() < total {
                    break;
                }
                let rest = self.pending.split_off(total);
                let r = std::mem::replace(&mut self.pending, rest);
                self.frame(r)?;
            }
            return Ok(buf.len());
        }
        loop {
            if self.pending.len() < HEADER_LEN {
                break;
            }
            if self.pending.get(..2) != Some(b"MV") {
                // Not a frame: pass it through.
                let p = std::mem::take(&mut self.pending);
                self.out(&p)?;
                break;
            }
            let mut lb = [0u8; 4];
            if let Some(s) = self.pending.get(16..20) {
                lb.copy_from_slice(s);
            }
            let len = u32::from_le_bytes(lb) as usize;
            let total = HEADER_LEN + len + TRAILER_LEN;
            if self.pending.len() < total {
                break;
            }
            let rest = self.pending.split_off(total);
            let f = std::mem::replace(&mut self.pending, rest);
            self.frame(f)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::frame::{FrameKind, Header};

    fn frame(seq: u32, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            kind: FrameKind::Data,
            session: 7,
            seq,
            len: payload.len() as u32,
        }
        .encode();
        let mut v = h.to_vec();
        v.extend_from_slice(payload);
        v.extend_from_slice(&[0, 0, 0, 0]);
        v
    }

    fn run(fault: Fault, at: u64) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = FaultyWriter::new(&mut out, fault, at, 99);
            for i in 0..3u32 {
                let f = frame(i, &[i as u8; 5]);
                // In two pieces, as a stream would deliver it.
                w.write_all(&f[..7]).ok();
                w.write_all(&f[7..]).ok();
            }
        }
        out
    }

    #[test]
    fn each_fault_does_what_it_says() {
        let f: Vec<Vec<u8>> = (0..3).map(|i| frame(i, &[i as u8; 5])).collect();
        let clean: Vec<u8> = f.concat();
        assert_eq!(run(Fault::Drop, 9), clean, "no fault past the end");
        assert_eq!(run(Fault::Drop, 1), [f[0].clone(), f[2].clone()].concat());
        assert_eq!(
            run(Fault::Duplicate, 1),
            [&f[0], &f[1], &f[1], &f[2]].map(|v| v.clone()).concat()
        );
        assert_eq!(
            run(Fault::Reorder, 1),
            [&f[0], &f[2], &f[1]].map(|v| v.clone()).concat()
        );
        assert_eq!(
            run(Fault::Replay, 1),
            [&f[0], &f[1], &f[0], &f[2]].map(|v| v.clone()).concat()
        );
        assert_eq!(run(Fault::Delay(Duration::from_millis(1)), 1), clean);
        assert_eq!(run(Fault::Kill, 1), f[0]);
        let t = run(Fault::Truncate, 1);
        assert!(t.len() > f[0].len() && t.len() < f[0].len() + f[1].len() && t.starts_with(&f[0]));
        let c = run(Fault::Corrupt, 1);
        assert_eq!(c.len(), clean.len());
        let diff: u32 = c.iter().zip(&clean).map(|(a, b)| (a ^ b).count_ones()).sum();
        assert_eq!(diff, 1);
    }

    #[test]
    fn records_after_the_opening_are_units() {
        // an opening of 3 bytes, then records of 1 and 2 plaintext bytes
        let rec = |n: u8| {
            let mut v = u16::from(n).to_le_bytes().to_vec();
            v.extend(std::iter::repeat_n(n, usize::from(n) + 16));
            v
        };
        let stream: Vec<u8> = [vec![9, 9, 9], rec(1), rec(2)].concat();
        let mut out = Vec::new();
        {
            let mut w = FaultyWriter::with_units(&mut out, Units::Records { prefix: 3 }, Fault::Drop, 1, 5);
            for b in &stream {
                w.write_all(std::slice::from_ref(b)).ok();
            }
            assert_eq!(w.frames(), 2);
        }
        assert_eq!(out, [vec![9, 9, 9], rec(1)].concat());
    }
}
