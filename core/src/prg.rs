//! Seeds and the ChaCha pseudo-random generator.
//!
//! ChaCha is used as a PRF: key = a 32-byte seed, nonce = `(id: u64 LE,
//! lane: u32 LE)`, the IETF layout of RFC 8439. Sub-seeds
//! ([`Seed::derive`]) use ChaCha20; the correlation lanes ([`Prg`]), which
//! every party expands by the hundred megabytes per inference, use
//! ChaCha12: the reduced-round variant that the `rand` crate's `StdRng`
//! uses, with a wide margin over the best published attacks (7 rounds).
//! Each lane is an independent keystream that can be read sequentially or
//! from any word position, so a party regenerates a correlation when it
//! needs it instead of storing it (device RAM stays bounded by a tile).
//! Words are the keystream read as little-endian `u64`.

use chacha20::cipher::common::array::Array;
use chacha20::cipher::consts::U64;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherCore};
use chacha20::variants::Ietf;
use chacha20::{ChaCha20, ChaChaCore, R12};
use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Domain separation for [`Seed::derive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Domain {
    /// A party's per-session seed, from its provisioned key and the session id.
    Session = 0x5345_5353,
    /// The host's per-model mask seed (the `B` of the linear layer).
    ModelMask = 0x4d4f_444c,
    /// Caller-defined sub-keys.
    Other = 0x4f54_4852,
    /// The device's session key, from its provisioned key and its nonce.
    DeviceNonce = 0x4e4f_4e43,
    /// The device's key-confirmation tag.
    ConfirmDevice = 0x434f_4e44,
    /// The dealer's key-confirmation tag (bound to the session id).
    ConfirmDealer = 0x434f_4e4c,
    /// The pre-shared key of the sealed host-dealer link.
    HostDealerLink = 0x484f_444c,
    /// The key check a blob carries (which host key its masks are under).
    BlobCheck = 0x424c_4f42,
}

/// A 32-byte secret. Zeroized on drop; `Debug` prints `Seed(<redacted>)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Seed([u8; 32]);

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

impl Seed {
    /// Wraps 32 secret bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret bytes, for provisioning storage only.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// A sub-seed: the first 32 keystream bytes under nonce `(id, domain)`.
    pub fn derive(&self, domain: Domain, id: u64) -> Seed {
        let mut out = [0u8; 32];
        let mut c = cipher(self, id, domain as u32);
        c.apply_keystream(&mut out);
        Seed(out)
    }
}

fn nonce(id: u64, lane: u32) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    let (a, b) = nonce.split_at_mut(8);
    a.copy_from_slice(&id.to_le_bytes());
    b.copy_from_slice(&lane.to_le_bytes());
    nonce
}

/// ChaCha20 under `(id, lane)`: sub-seeds.
fn cipher(seed: &Seed, id: u64, lane: u32) -> ChaCha20 {
    ChaCha20::new(&seed.0.into(), &nonce(id, lane).into())
}

/// ChaCha12's block function: the correlation lanes. The crate's core
/// (not its byte-stream wrapper) so that a lane is read a whole block at a
/// time straight into [`Prg`]'s buffer, and a random access expands only
/// the block it reads.
type Lane = ChaChaCore<R12, Ietf>;

/// One keystream block.
type Block = Array<u8, U64>;

/// ChaCha12 under `(id, lane)`, positioned at the block holding `word`.
fn lane_at(seed: &Seed, id: u64, lane: u32, word: u64) -> Lane {
    let mut c = Lane::new(&seed.0.into(), &nonce(id, lane).into());
    // a lane never reaches 2^32 blocks (256 GiB); saturate rather than wrap
    c.set_block_pos(u32::try_from(word / WORDS_PER_BLOCK).unwrap_or(u32::MAX));
    c
}

/// `u64` words per keystream block.
const WORDS_PER_BLOCK: u64 = 8;
/// Blocks [`Prg`] holds and a sequential refill expands: four where a SIMD
/// backend makes four at once, one on a microcontroller (whose software
/// backend makes one at a time, so a larger refill only wastes the blocks a
/// short lane never reads, and every reader on the stack would carry 192
/// bytes it does not use).
#[cfg(not(target_os = "none"))]
const BUF_BLOCKS: usize = 4;
#[cfg(target_os = "none")]
const BUF_BLOCKS: usize = 1;
/// Blocks a sequential refill expands (the first refill after
/// [`Prg::new`] or a seek expands one).
const BURST: usize = BUF_BLOCKS;

fn block_word(b: &Block, i: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(c) = b.get(8 * i..8 * i + 8) {
        w.copy_from_slice(c);
    }
    u64::from_le_bytes(w)
}

/// A sequential reader of one keystream lane as `u64` words.
pub struct Prg {
    cipher: Lane,
    buf: [Block; BUF_BLOCKS],
    /// Words of `buf` that hold keystream.
    len: usize,
    /// The next word of `buf`.
    pos: usize,
    /// Blocks the next refill expands: one after [`Prg::new`] (many lanes
    /// are read for a few words), [`BURST`] from then on.
    next: usize,
}

impl fmt::Debug for Prg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prg(<redacted>)")
    }
}

impl Drop for Prg {
    fn drop(&mut self) {
        for b in self.buf.iter_mut() {
            b.as_mut_slice().zeroize();
        }
    }
}

impl Prg {
    /// The lane `lane` of the stream `id` under `seed`, from word 0.
    pub fn new(seed: &Seed, id: u64, lane: u32) -> Self {
        Self {
            cipher: lane_at(seed, id, lane, 0),
            buf: Default::default(),
            len: 0,
            pos: 0,
            next: 1,
        }
    }

    /// The same lane, positioned at word `word`.
    pub fn at(seed: &Seed, id: u64, lane: u32, word: u64) -> Self {
        let mut p = Self::new(seed, id, lane);
        p.seek(word);
        p
    }

    /// Word `word` of the lane, computed alone (one keystream block): for
    /// random access into large lanes such as lookup tables.
    pub fn word(seed: &Seed, id: u64, lane: u32, word: u64) -> u64 {
        let mut c = lane_at(seed, id, lane, word);
        let mut b = Block::default();
        c.write_keystream_block(&mut b);
        let w = block_word(&b, (word % WORDS_PER_BLOCK) as usize);
        b.as_mut_slice().zeroize();
        w
    }

    /// Overwrites `out` with the lane's keystream from word `word` on: its
    /// 8-byte little-endian chunks are words `word, word + 1, ...` (a whole
    /// run expanded in place, without the word buffer: the dealer's tables).
    pub fn keystream_at(seed: &Seed, id: u64, lane: u32, word: u64, out: &mut [u8]) {
        let mut c = lane_at(seed, id, lane, word);
        let mut b = Block::default();
        let skip = 8 * (word % WORDS_PER_BLOCK) as usize;
        let mut rest = out;
        if skip > 0 {
            c.write_keystream_block(&mut b);
            let k = rest.len().min(64 - skip);
            let (head, tail) = rest.split_at_mut(k);
            head.copy_from_slice(b.get(skip..skip + k).unwrap_or_default());
            rest = tail;
        }
        let (blocks, tail) = Block::slice_as_chunks_mut(rest);
        c.write_keystream_blocks(blocks);
        if !tail.is_empty() {
            c.write_keystream_block(&mut b);
            tail.copy_from_slice(b.get(..tail.len()).unwrap_or_default());
        }
        b.as_mut_slice().zeroize();
    }

    /// Moves to word `word` of the lane.
    pub fn seek(&mut self, word: u64) {
        self.cipher
            .set_block_pos(u32::try_from(word / WORDS_PER_BLOCK).unwrap_or(u32::MAX));
        self.next = 1;
        self.refill();
        self.pos = (word % WORDS_PER_BLOCK) as usize;
    }

    fn refill(&mut self) {
        let k = self.next.clamp(1, BUF_BLOCKS);
        if let Some(blocks) = self.buf.get_mut(..k) {
            self.cipher.write_keystream_blocks(blocks);
        }
        self.len = k * WORDS_PER_BLOCK as usize;
        self.pos = 0;
        self.next = BURST;
    }

    /// The next word.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        if self.pos >= self.len {
            self.refill();
        }
        let per = WORDS_PER_BLOCK as usize;
        let w = self
            .buf
            .get(self.pos / per)
            .map_or(0, |b| block_word(b, self.pos % per));
        self.pos += 1;
        w
    }

    /// Fills `out` with the next words.
    pub fn fill(&mut self, out: &mut [u64]) {
        for w in out {
            *w = self.next_u64();
        }
    }

    /// The next word reduced to one bit (0 or 1).
    #[inline]
    pub fn next_bit(&mut self) -> u64 {
        self.next_u64() & 1
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use chacha20::ChaCha12;

    #[test]
    fn seek_matches_sequential() {
        let s = Seed::from_bytes([7; 32]);
        let mut a = Prg::new(&s, 3, 1);
        let mut v = [0u64; 100];
        a.fill(&mut v);
        for (i, want) in v.iter().enumerate() {
            assert_eq!(Prg::at(&s, 3, 1, i as u64).next_u64(), *want);
            assert_eq!(Prg::word(&s, 3, 1, i as u64), *want);
        }
        for start in [0usize, 1, 7, 31, 33] {
            let mut bytes = [0xFFu8; 8 * 60];
            Prg::keystream_at(&s, 3, 1, start as u64, &mut bytes);
            for (j, c) in bytes.chunks_exact(8).enumerate() {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                assert_eq!(Some(u64::from_le_bytes(b)), v.get(start + j).copied());
            }
        }
        // the crate's ChaCha12 byte stream is the reference: sequential
        // reads across refills, runs of any length from any word
        let mut want = [0u8; 8 * 100];
        ChaCha12::new(&s.0.into(), &nonce(3, 1).into()).apply_keystream(&mut want);
        for (j, c) in want.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            assert_eq!(v.get(j).copied(), Some(u64::from_le_bytes(b)), "word {j}");
        }
        for (start, len) in [
            (0usize, 3usize),
            (3, 2),
            (5, 3),
            (6, 17),
            (9, 64),
            (15, 1),
            (0, 200),
            (40, 250),
        ] {
            let mut got = [0u8; 8 * 100];
            let end = (8 * start + len).min(want.len());
            let out = &mut got[..end - 8 * start];
            Prg::keystream_at(&s, 3, 1, start as u64, out);
            assert_eq!(out, &want[8 * start..end], "run of {len} bytes from word {start}");
        }
        assert_ne!(Prg::new(&s, 3, 2).next_u64(), v[0]);
        assert_ne!(Prg::new(&s, 4, 1).next_u64(), v[0]);
    }

    #[test]
    fn debug_is_redacted() {
        let s = Seed::from_bytes([0xAB; 32]);
        assert_eq!(format!("{s:?}"), "Seed(<redacted>)");
    }

    /// Known-answer vector for sub-seeds: RFC 8439 section 2.4.2's
    /// keystream is ChaCha20 with counter 1, our ChaCha20 starts at counter
    /// 0, so the RFC's first block is our bytes 64..; `derive` is the first
    /// 32 bytes of that ChaCha20 stream.
    /// The correlation lanes are ChaCha12 under the same key and nonce
    /// layout, checked against the crate's ChaCha12 and against ChaCha20.
    #[test]
    fn rfc8439_keystream() {
        use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = i as u8;
        }
        let s = Seed::from_bytes(key);
        // nonce = id LE (8 bytes) || lane LE (4 bytes) = 00*7 4a 00*4
        let id = 0x4a00_0000_0000_0000u64;
        let mut c20 = cipher(&s, id, 0);
        c20.seek(64u64);
        let mut b = [0u8; 8];
        c20.apply_keystream(&mut b);
        // RFC 8439 2.4.2: keystream block for counter 1 begins 22 4f 51 f3 40 1b d9 e1
        assert_eq!(b, [0x22, 0x4f, 0x51, 0xf3, 0x40, 0x1b, 0xd9, 0xe1]);
        // `derive` is the first 32 bytes of that ChaCha20 stream
        let mut first = [0u8; 32];
        cipher(&s, id, Domain::Session as u32).apply_keystream(&mut first);
        assert_eq!(s.derive(Domain::Session, id).expose(), &first);
        // lanes: ChaCha12, not ChaCha20
        let mut c12 = ChaCha12::new(&key.into(), &nonce(id, 0).into());
        c12.seek(64u64);
        let mut b12 = [0u8; 8];
        c12.apply_keystream(&mut b12);
        assert_eq!(Prg::at(&s, id, 0, 8).next_u64(), u64::from_le_bytes(b12));
        assert_ne!(b12, b);
    }
}
