//! Optional authenticated encryption of a byte stream with a pre-shared key
//! (ChaCha20-Poly1305, RFC 8439), for host-device links that cross networks
//! nobody trusts. `no_std`, buffers provided by the caller.
//!
//! [`Sealed`] sits under a [`crate::Link`]: the link's frames are written
//! into a plaintext buffer and sealed as one *record* on `flush` (or when the
//! buffer is full). Wire format:
//!
//! * the initiator (the device) first sends `"MVS1"` and a fresh 12-byte
//!   salt; both sides derive the connection key `K = ChaCha20(PSK, salt)`
//!   (the first 32 keystream bytes), so every connection has its own key;
//! * each record is `len: u16 LE | ciphertext (len bytes) | tag (16)`, with
//!   nonce `role (1) | 0 (3) | counter: u64 LE` (role 0 initiator, 1
//!   responder; counters start at 0 per direction) and the length bytes as
//!   associated data.
//!
//! The *mutual* opening (`"MVS2"`, the host-dealer link) adds the
//! responder's freshness: the initiator sends `"MVS2"` and its salt, the
//! responder answers with a salt of its own, and the connection key is
//! `K = ChaCha20(ChaCha20(PSK, salt_i)[..32], salt_r)[..32]`. A recorded
//! connection replayed to the responder then meets another key, so the
//! responder never encrypts under a key and nonce it used before, and the
//! replayed records fail authentication.
//!
//! A record that fails authentication, or is longer than the reader's
//! buffer, is an error and poisons the stream. Reordered, replayed, dropped
//! or forged records fail the tag (the counter is implicit). What the link
//! still shows: record sizes and timing.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use embedded_io::{ErrorKind, ErrorType, Read, ReadExactError, Write};
use zeroize::Zeroize;

/// Magic that opens a sealed stream.
pub const MAGIC: [u8; 4] = *b"MVS1";
/// Magic that opens a sealed stream whose key both sides' salts make.
pub const MAGIC_MUTUAL: [u8; 4] = *b"MVS2";
/// Salt length.
pub const SALT_LEN: usize = 12;
/// Bytes a record adds to its plaintext.
pub const RECORD_OVERHEAD: usize = 2 + 16;
/// Largest record plaintext either side writes; a reader's buffer must hold
/// this much (records up to its buffer size are accepted).
pub const RECORD_MAX: usize = 4096;

/// A sealed-stream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError<E> {
    /// The underlying stream failed.
    Io(E),
    /// The peer closed the stream.
    Closed,
    /// A record did not authenticate (wrong key, tampering, reordering).
    Auth,
    /// A record is longer than the read buffer, or the opening is not
    /// `"MVS1"`.
    Malformed,
    /// An earlier error poisoned the stream.
    Poisoned,
}

impl<E: core::fmt::Debug> core::fmt::Display for SealError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "transport error: {e:?}"),
            Self::Closed => f.write_str("peer closed the connection"),
            Self::Auth => f.write_str("sealed record failed authentication (wrong pre-shared key or tampering)"),
            Self::Malformed => f.write_str("malformed sealed record"),
            Self::Poisoned => f.write_str("sealed stream poisoned by an earlier error"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for SealError<E> {}

impl<E: embedded_io::Error> embedded_io::Error for SealError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Io(e) => e.kind(),
            Self::Closed => ErrorKind::BrokenPipe,
            Self::Auth | Self::Malformed => ErrorKind::InvalidData,
            Self::Poisoned => ErrorKind::Other,
        }
    }
}

/// A byte stream sealed with ChaCha20-Poly1305. `B` is the buffer type
/// (`&mut [u8]` on a microcontroller, `Vec<u8>` on a desktop); records
/// carry at most [`RECORD_MAX`] bytes (or the write buffer's size, if
/// smaller), so buffers of `RECORD_MAX` bytes on both sides always suffice.
pub struct Sealed<T, B> {
    io: T,
    aead: ChaCha20Poly1305,
    role: u8,
    tx: B,
    tx_len: usize,
    tx_ctr: u64,
    rx: B,
    rx_pos: usize,
    rx_end: usize,
    rx_ctr: u64,
    poisoned: bool,
}

impl<T, B> Sealed<T, B> {
    /// The stream under the records.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }
}

impl<T, B> core::fmt::Debug for Sealed<T, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sealed")
            .field("role", &self.role)
            .field("tx_ctr", &self.tx_ctr)
            .field("rx_ctr", &self.rx_ctr)
            .finish_non_exhaustive()
    }
}

fn connection_key(psk: &[u8; 32], salt: &[u8; SALT_LEN]) -> ChaCha20Poly1305 {
    let mut k = [0u8; 32];
    ChaCha20::new(psk.into(), salt.into()).apply_keystream(&mut k);
    let aead = ChaCha20Poly1305::new(Key::from_slice(&k));
    k.zeroize();
    aead
}

/// Sends an opening: `magic` and this side's salt.
fn send_opening<T: Write>(io: &mut T, magic: [u8; 4], salt: &[u8; SALT_LEN]) -> Result<(), SealError<T::Error>> {
    io.write_all(&magic).map_err(SealError::Io)?;
    io.write_all(salt).map_err(SealError::Io)?;
    io.flush().map_err(SealError::Io)
}

/// Fills `buf` from the stream; its end is [`SealError::Closed`].
fn read_all<T: Read>(io: &mut T, buf: &mut [u8]) -> Result<(), SealError<T::Error>> {
    io.read_exact(buf).map_err(|e| match e {
        ReadExactError::UnexpectedEof => SealError::Closed,
        ReadExactError::Other(e) => SealError::Io(e),
    })
}

/// Reads an opening that must start with `magic`; returns the peer's salt.
fn read_opening<T: Read>(io: &mut T, magic: [u8; 4]) -> Result<[u8; SALT_LEN], SealError<T::Error>> {
    let mut open = [0u8; 4 + SALT_LEN];
    read_all(io, &mut open)?;
    let (m, salt) = open.split_at(4);
    if m != magic {
        return Err(SealError::Malformed);
    }
    let mut out = [0u8; SALT_LEN];
    out.copy_from_slice(salt);
    Ok(out)
}

/// The key of a mutual opening: the initiator's salt, then the
/// responder's, each through ChaCha20 as a PRF.
fn mutual_key(psk: &[u8; 32], initiator: &[u8; SALT_LEN], responder: &[u8; SALT_LEN]) -> ChaCha20Poly1305 {
    let mut k1 = [0u8; 32];
    ChaCha20::new(psk.into(), initiator.into()).apply_keystream(&mut k1);
    let mut k = [0u8; 32];
    ChaCha20::new((&k1).into(), responder.into()).apply_keystream(&mut k);
    k1.zeroize();
    let aead = ChaCha20Poly1305::new(Key::from_slice(&k));
    k.zeroize();
    aead
}

fn nonce(role: u8, ctr: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0] = role;
    n[4..].copy_from_slice(&ctr.to_le_bytes());
    n
}

impl<T: Read + Write, B: AsMut<[u8]>> Sealed<T, B> {
    /// The initiating side: sends the opening with `salt` (fresh random
    /// bytes, never reused with the same key).
    pub fn initiator(
        mut io: T,
        psk: &[u8; 32],
        salt: [u8; SALT_LEN],
        tx: B,
        rx: B,
    ) -> Result<Self, SealError<T::Error>> {
        send_opening(&mut io, MAGIC, &salt)?;
        Ok(Self::with(io, connection_key(psk, &salt), 0, tx, rx))
    }

    /// The responding side: reads the opening.
    pub fn responder(mut io: T, psk: &[u8; 32], tx: B, rx: B) -> Result<Self, SealError<T::Error>> {
        let salt = read_opening(&mut io, MAGIC)?;
        Ok(Self::with(io, connection_key(psk, &salt), 1, tx, rx))
    }

    /// The initiating side of a mutual opening: sends `"MVS2"` and `salt`
    /// (fresh random bytes), reads the responder's salt.
    pub fn initiator_mutual(
        mut io: T,
        psk: &[u8; 32],
        salt: [u8; SALT_LEN],
        tx: B,
        rx: B,
    ) -> Result<Self, SealError<T::Error>> {
        send_opening(&mut io, MAGIC_MUTUAL, &salt)?;
        let mut theirs = [0u8; SALT_LEN];
        read_all(&mut io, &mut theirs)?;
        Ok(Self::with(io, mutual_key(psk, &salt, &theirs), 0, tx, rx))
    }

    /// The responding side of a mutual opening: reads `"MVS2"` and the
    /// initiator's salt, answers with `salt` (fresh random bytes).
    pub fn responder_mutual(
        mut io: T,
        psk: &[u8; 32],
        salt: [u8; SALT_LEN],
        tx: B,
        rx: B,
    ) -> Result<Self, SealError<T::Error>> {
        let theirs = read_opening(&mut io, MAGIC_MUTUAL)?;
        io.write_all(&salt).map_err(SealError::Io)?;
        io.flush().map_err(SealError::Io)?;
        Ok(Self::with(io, mutual_key(psk, &theirs, &salt), 1, tx, rx))
    }

    fn with(io: T, aead: ChaCha20Poly1305, role: u8, tx: B, rx: B) -> Self {
        Self {
            io,
            aead,
            role,
            tx,
            tx_len: 0,
            tx_ctr: 0,
            rx,
            rx_pos: 0,
            rx_end: 0,
            rx_ctr: 0,
            poisoned: false,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    fn cap(b: &mut B) -> usize {
        b.as_mut().len().min(RECORD_MAX)
    }

    fn fail<R>(&mut self, e: SealError<T::Error>) -> Result<R, SealError<T::Error>> {
        self.poisoned = true;
        Err(e)
    }

    fn seal_record(&mut self) -> Result<(), SealError<T::Error>> {
        if self.tx_len == 0 {
            return Ok(());
        }
        let n = self.tx_len;
        let len = (n as u16).to_le_bytes();
        let nonce = nonce(self.role, self.tx_ctr);
        let buf = self.tx.as_mut().get_mut(..n).unwrap_or(&mut []);
        let tag = match self
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &len, buf)
        {
            Ok(t) => t,
            Err(_) => return self.fail(SealError::Malformed),
        };
        self.tx_ctr += 1;
        self.tx_len = 0;
        let r = self
            .io
            .write_all(&len)
            .and_then(|()| self.io.write_all(self.tx.as_mut().get(..n).unwrap_or(&[])))
            .and_then(|()| self.io.write_all(&tag))
            .and_then(|()| self.io.flush());
        match r {
            Ok(()) => Ok(()),
            Err(e) => self.fail(SealError::Io(e)),
        }
    }

    fn open_record(&mut self) -> Result<(), SealError<T::Error>> {
        let mut len = [0u8; 2];
        if let Err(e) = read_all(&mut self.io, &mut len) {
            return self.fail(e);
        }
        let n = u16::from_le_bytes(len) as usize;
        if n == 0 || n > self.rx.as_mut().len() {
            return self.fail(SealError::Malformed);
        }
        let mut tag = [0u8; 16];
        let r = {
            let buf = self.rx.as_mut().get_mut(..n).unwrap_or(&mut []);
            read_all(&mut self.io, buf).and_then(|()| read_all(&mut self.io, &mut tag))
        };
        if let Err(e) = r {
            return self.fail(e);
        }
        let nonce = nonce(1 - self.role, self.rx_ctr);
        let buf = self.rx.as_mut().get_mut(..n).unwrap_or(&mut []);
        if self
            .aead
            .decrypt_in_place_detached(Nonce::from_slice(&nonce), &len, buf, Tag::from_slice(&tag))
            .is_err()
        {
            return self.fail(SealError::Auth);
        }
        self.rx_ctr += 1;
        self.rx_pos = 0;
        self.rx_end = n;
        Ok(())
    }
}

impl<T: ErrorType, B> ErrorType for Sealed<T, B> {
    type Error = SealError<T::Error>;
}

impl<T: Read + Write, B: AsMut<[u8]>> Read for Sealed<T, B> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if self.poisoned {
            return Err(SealError::Poisoned);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.rx_pos == self.rx_end {
            self.open_record()?;
        }
        let avail = self.rx.as_mut().get(self.rx_pos..self.rx_end).unwrap_or(&[]);
        let n = avail.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or(&mut [])
            .copy_from_slice(avail.get(..n).unwrap_or(&[]));
        self.rx_pos += n;
        Ok(n)
    }
}

impl<T: Read + Write, B: AsMut<[u8]>> Write for Sealed<T, B> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if self.poisoned {
            return Err(SealError::Poisoned);
        }
        let cap = Self::cap(&mut self.tx);
        if cap == 0 {
            return self.fail(SealError::Malformed);
        }
        if self.tx_len == cap {
            self.seal_record()?;
        }
        let n = (cap - self.tx_len).min(buf.len());
        let at = self.tx_len;
        self.tx
            .as_mut()
            .get_mut(at..at + n)
            .unwrap_or(&mut [])
            .copy_from_slice(buf.get(..n).unwrap_or(&[]));
        self.tx_len += n;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        if self.poisoned {
            return Err(SealError::Poisoned);
        }
        self.seal_record()
    }
}

#[cfg(all(test, feature = "std"))]
#[allow(clippy::expect_used, clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{FrameKind, Link};
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    /// A byte buffer that can be written, then read back.
    #[derive(Default)]
    struct Wire {
        data: Vec<u8>,
        pos: usize,
    }

    impl ErrorType for Wire {
        type Error = core::convert::Infallible;
    }

    impl Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = buf.len().min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    #[test]
    fn frames_roundtrip_in_records() {
        let psk = [7u8; 32];
        let (a, b) = crate::mem::pair();
        let t = std::thread::spawn(move || {
            let s = Sealed::responder(b, &psk, vec![0; 64], vec![0; 64]).expect("responder");
            let mut l = Link::new(s, 5);
            let mut buf = [0u8; 300];
            let p = l.recv_kind(FrameKind::Data, &mut buf).expect("recv").to_vec();
            l.send(FrameKind::Data, &p).expect("echo");
            p
        });
        let s = Sealed::initiator(a, &psk, [9; SALT_LEN], vec![0; 64], vec![0; 64]).expect("open");
        let mut a = Link::new(s, 5);
        let msg: Vec<u8> = (0..200u8).collect(); // longer than a record: split
        a.send(FrameKind::Data, &msg).expect("send");
        let mut buf = [0u8; 300];
        assert_eq!(a.recv_kind(FrameKind::Data, &mut buf).expect("echo"), &msg[..]);
        assert_eq!(t.join().expect("thread"), msg);
    }

    fn sealed_hello(psk: [u8; 32]) -> Vec<u8> {
        let mut s =
            Sealed::initiator(Wire::default(), &psk, [3; SALT_LEN], vec![0u8; 64], vec![0u8; 64]).expect("open");
        s.write_all(b"hello").expect("write");
        s.flush().expect("flush");
        s.io.data
    }

    fn open(wire: &[u8], psk: [u8; 32]) -> Result<[u8; 5], SealError<core::convert::Infallible>> {
        let w = Wire {
            data: wire.to_vec(),
            pos: 0,
        };
        let mut r = Sealed::responder(w, &psk, vec![0u8; 64], vec![0u8; 64])?;
        let mut out = [0u8; 5];
        match r.read_exact(&mut out) {
            Ok(()) => Ok(out),
            Err(ReadExactError::Other(e)) => Err(e),
            Err(ReadExactError::UnexpectedEof) => Err(SealError::Closed),
        }
    }

    #[test]
    fn wrong_key_and_every_bit_flip_fail() {
        let wire = sealed_hello([1; 32]);
        assert_eq!(open(&wire, [1; 32]).expect("intact"), *b"hello");
        assert_eq!(open(&wire, [2; 32]).err(), Some(SealError::Auth));
        for bit in 0..8 * wire.len() {
            let mut w = wire.clone();
            w[bit / 8] ^= 1 << (bit % 8);
            assert!(open(&w, [1; 32]).is_err(), "bit {bit} flipped and still accepted");
        }
        // The plaintext is not on the wire.
        assert!(!wire.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn a_poisoned_stream_stays_poisoned() {
        let mut wire = sealed_hello([1; 32]);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut r =
            Sealed::responder(Wire { data: wire, pos: 0 }, &[1; 32], vec![0u8; 64], vec![0u8; 64]).expect("open");
        let mut out = [0u8; 5];
        assert_eq!(r.read(&mut out).err(), Some(SealError::Auth));
        assert_eq!(r.read(&mut out).err(), Some(SealError::Poisoned));
        assert_eq!(r.write(b"x").err(), Some(SealError::Poisoned));
    }

    /// Records carry an implicit counter: the same plaintext sealed twice
    /// gives two ciphertexts, and a record replayed, reordered or dropped
    /// fails its tag.
    #[test]
    fn replayed_reordered_and_dropped_records_fail() {
        let psk = [2u8; 32];
        let mut s =
            Sealed::initiator(Wire::default(), &psk, [3; SALT_LEN], vec![0u8; 64], vec![0u8; 64]).expect("open");
        for _ in 0..3 {
            s.write_all(b"hello").expect("write");
            s.flush().expect("flush");
        }
        let wire = s.io.data;
        let open = 4 + SALT_LEN;
        let rec = 2 + 5 + 16;
        let r: Vec<&[u8]> = (0..3).map(|i| &wire[open + i * rec..open + (i + 1) * rec]).collect();
        assert_ne!(
            r[0], r[1],
            "the same plaintext sealed twice must differ (the counter advances)"
        );
        let read_all_of = |records: &[&[u8]]| {
            let mut data = wire[..open].to_vec();
            for x in records {
                data.extend_from_slice(x);
            }
            let mut rd = Sealed::responder(Wire { data, pos: 0 }, &psk, vec![0u8; 64], vec![0u8; 64]).expect("open");
            let mut out = [0u8; 5];
            (0..records.len())
                .map(|_| rd.read_exact(&mut out).map(|()| out))
                .collect::<Result<Vec<_>, _>>()
        };
        assert!(read_all_of(&[r[0], r[1], r[2]]).is_ok());
        for (what, order) in [
            ("replayed", [r[0], r[0], r[1]]),
            ("reordered", [r[1], r[0], r[2]]),
            ("dropped", [r[0], r[2], r[1]]),
        ] {
            assert!(
                matches!(read_all_of(&order), Err(ReadExactError::Other(SealError::Auth))),
                "{what} record accepted"
            );
        }
    }

    /// A mutual opening: both salts make the key, frames go both ways.
    #[test]
    fn mutual_opening_roundtrip_and_wrong_key() {
        for (their_psk, ok) in [([7u8; 32], true), ([8u8; 32], false)] {
            let (a, b) = crate::mem::pair();
            let t = std::thread::spawn(move || {
                let s = Sealed::responder_mutual(b, &their_psk, [4; SALT_LEN], vec![0; 64], vec![0; 64])
                    .expect("responder");
                let mut l = Link::new(s, 5);
                let mut buf = [0u8; 64];
                let p = l.recv_kind(FrameKind::Data, &mut buf).map(<[u8]>::to_vec);
                if let Ok(p) = &p {
                    l.send(FrameKind::Data, p).expect("echo");
                }
                p
            });
            let s = Sealed::initiator_mutual(a, &[7u8; 32], [9; SALT_LEN], vec![0; 64], vec![0; 64]).expect("open");
            let mut l = Link::new(s, 5);
            l.send(FrameKind::Data, b"set-up").expect("send");
            let got = t.join().expect("thread");
            if ok {
                assert_eq!(got.as_deref().expect("the responder reads it"), b"set-up");
                let mut buf = [0u8; 64];
                assert_eq!(l.recv_kind(FrameKind::Data, &mut buf).expect("echo"), b"set-up");
            } else {
                // a responder without the key refuses the first record
                assert!(matches!(got, Err(crate::Error::Transport(SealError::Auth))), "{got:?}");
            }
        }
    }

    /// A recorded mutual connection replayed to a responder with a fresh
    /// salt fails: the responder's salt changes the key, so the recorded
    /// records do not authenticate (and the responder never reuses a key
    /// and nonce).
    #[test]
    fn replayed_mutual_connection_fails() {
        let psk = [5u8; 32];
        // the initiator's side of a connection, recorded: its opening and
        // one record under the key made with responder salt [1; 12]
        let mut rec = Wire::default();
        rec.data.extend_from_slice(&[1u8; SALT_LEN]);
        let mut s = Sealed::initiator_mutual(rec, &psk, [2; SALT_LEN], vec![0u8; 64], vec![0u8; 64]).expect("open");
        s.write_all(b"hello").expect("write");
        s.flush().expect("flush");
        let recorded = s.io.data[SALT_LEN..].to_vec();
        let replay = |salt: [u8; SALT_LEN]| {
            let w = Wire {
                data: recorded.clone(),
                pos: 0,
            };
            let mut r = Sealed::responder_mutual(w, &psk, salt, vec![0u8; 64], vec![0u8; 64]).expect("opening");
            let mut out = [0u8; 5];
            r.read_exact(&mut out).map(|()| out)
        };
        // with the salt of the recorded connection it opens (the recording is sound)
        assert_eq!(replay([1; SALT_LEN]).expect("same salts"), *b"hello");
        // with a fresh salt it does not
        assert!(matches!(
            replay([3; SALT_LEN]),
            Err(ReadExactError::Other(SealError::Auth))
        ));
    }
}
