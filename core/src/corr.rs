//! Correlation sources: who holds which seed, and how ops draw from it.
//!
//! * The **device** and the dealer share a provisioned key `K_d`; the host and
//!   the dealer share `K_h`. Each derives a per-session seed from its key and
//!   the session id ([`Seed::derive`] with [`Domain::Session`]). The host relays
//!   all device traffic but never learns `K_d`.
//! * Op number `k` of a session reads the keystream `(session seed, nonce =
//!   (k, lane))`. [`Correlations::next_op`] hands out `k` and advances the
//!   counter, so one correlation cannot be drawn twice: reuse would need a
//!   second `OpCorr` for the same `k`, and no API makes one.
//! * A correlated value `v = v0 + v1` is either **random** (`v0` from the host
//!   seed, `v1` from the device seed, the dealer knows both), or **derived**
//!   (`v1` from the device seed; `v0 = g(randoms) - v1` is computed by the
//!   dealer and sent to the host as a *correction word*). The device therefore
//!   receives nothing from the dealer at all.
//!
//! Dealer messages carry a 16-byte header `(session id, op id)`, both
//! little-endian `u64`, followed by the correction words; the host checks both
//! before using a word, so a replayed, reordered or foreign message is refused.

use crate::error::ProtocolError;
use crate::prg::{Domain, Prg, Seed};
use crate::wire;

/// Who a party is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// P0: holds the model weights and the host's shares.
    Host,
    /// P1: holds the image, the device's shares, and receives the prediction.
    Device,
    /// The dealer: deals every op's correlations and holds no shares. It
    /// runs the composite ops' local arithmetic on placeholder values, as
    /// the host does (see [`Role::plays_host`]).
    Dealer,
}

impl Role {
    /// Whether this party does the host's side of local share arithmetic
    /// (adding public constants): the host, and the dealer, whose values
    /// are placeholders that follow the host's steps.
    pub fn plays_host(self) -> bool {
        !matches!(self, Role::Device)
    }
}

/// A session identifier, bound into every seed and dealer message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionId(pub u64);

/// Length of a dealer message header.
pub const DEALER_HEADER_LEN: usize = 16;

/// Words [`OpCorr::derived_words`] expands per keystream call.
const DERIVED_RUN: usize = 16;

/// One party's correlation source for one session.
pub struct Correlations {
    seed: Seed,
    role: Role,
    session: SessionId,
    next_op: u64,
    poisoned: bool,
}

impl core::fmt::Debug for Correlations {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Correlations")
            .field("role", &self.role)
            .field("session", &self.session)
            .field("next_op", &self.next_op)
            .finish_non_exhaustive()
    }
}

impl Correlations {
    /// The source of `role` for `session`, from the party's provisioned key.
    /// The dealer has no source of its own ([`DealerSession`] holds the
    /// host's and the device's): a source made for [`Role::Dealer`] refuses
    /// every op.
    pub fn new(role: Role, key: &Seed, session: SessionId) -> Self {
        Self {
            seed: key.derive(Domain::Session, session.0),
            role,
            session,
            next_op: 0,
            poisoned: role == Role::Dealer,
        }
    }

    /// The party this source belongs to.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session id.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Number of ops drawn so far (the id of the next op).
    pub fn ops_used(&self) -> u64 {
        self.next_op
    }

    /// Device (or dealer mirror): the next op's correlations, all seeded.
    pub fn next_op(&mut self) -> Result<OpCorr<'static>, ProtocolError> {
        if self.poisoned {
            return Err(ProtocolError::Poisoned);
        }
        let op = self.next_op;
        self.next_op = self.next_op.wrapping_add(1);
        Ok(self.seeded(op))
    }

    /// Op `op`'s correlations from this party's seed.
    fn seeded(&self, op: u64) -> OpCorr<'static> {
        OpCorr {
            seed: self.seed.clone(),
            op,
            role: self.role,
            corrections: &[],
            taken: 0,
        }
    }

    /// Host: the next op's correlations, with the dealer's message for it.
    /// A message for another session or op poisons this source.
    pub fn next_op_with<'d>(&mut self, dealer_msg: &'d [u8]) -> Result<OpCorr<'d>, ProtocolError> {
        if self.poisoned {
            return Err(ProtocolError::Poisoned);
        }
        let parsed = parse_dealer_header(dealer_msg);
        match parsed {
            Ok((s, op, body)) if s == self.session.0 && op == self.next_op => {
                let mut c = self.next_op()?;
                c.corrections = body;
                Ok(c)
            }
            Ok(_) => {
                self.poisoned = true;
                Err(ProtocolError::WrongOp)
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// The device's correlations of the earlier op `op`, to regenerate an
    /// output share it did not keep (a held truncation,
    /// [`crate::protocol::trunc::device_shares_at`]): nothing is drawn. Only
    /// the device's source answers (the host's shares come from the
    /// dealer's messages); an op not yet drawn is
    /// [`ProtocolError::BadParameter`].
    pub fn earlier(&self, op: u64) -> Result<OpCorr<'static>, ProtocolError> {
        if self.poisoned {
            return Err(ProtocolError::Poisoned);
        }
        if self.role != Role::Device || op >= self.next_op {
            return Err(ProtocolError::BadParameter);
        }
        Ok(self.seeded(op))
    }

    /// Marks the session as failed: every later draw errs.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }
}

fn parse_dealer_header(msg: &[u8]) -> Result<(u64, u64, &[u8]), ProtocolError> {
    let (head, body) = msg
        .split_at_checked(DEALER_HEADER_LEN)
        .ok_or(ProtocolError::BadLength {
            expected: DEALER_HEADER_LEN,
            got: msg.len(),
        })?;
    let s = wire::read_u64(head, 0)?;
    let op = wire::read_u64(head, 1)?;
    if !body.len().is_multiple_of(8) {
        return Err(ProtocolError::BadLength {
            expected: body.len() - body.len() % 8,
            got: body.len(),
        });
    }
    Ok((s, op, body))
}

/// The correlations of one op for one party.
pub struct OpCorr<'d> {
    seed: Seed,
    op: u64,
    role: Role,
    corrections: &'d [u8],
    taken: usize,
}

impl core::fmt::Debug for OpCorr<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpCorr")
            .field("op", &self.op)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl<'d> OpCorr<'d> {
    /// The party.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The op id.
    pub fn op(&self) -> u64 {
        self.op
    }

    /// This party's share of a random lane, from word 0.
    pub fn random(&self, lane: u32) -> Prg {
        Prg::new(&self.seed, self.op, lane)
    }

    /// This party's share of random lane `lane` of the earlier op `op`,
    /// from word 0: a product that reuses an earlier product's mask
    /// ([`crate::protocol::matmul::Right::Opened`]). An op that is not
    /// earlier than this one is [`ProtocolError::BadParameter`].
    pub fn random_of_earlier(&self, op: u64, lane: u32) -> Result<Prg, ProtocolError> {
        if op >= self.op {
            return Err(ProtocolError::BadParameter);
        }
        Ok(Prg::new(&self.seed, op, lane))
    }

    /// This party's share of a random lane, from word `word`.
    pub fn random_at(&self, lane: u32, word: u64) -> Prg {
        Prg::at(&self.seed, self.op, lane, word)
    }

    /// Overwrites `out` with words `word, word + 1, ...` of random lane `lane`
    /// (little-endian), expanded in bulk.
    pub fn keystream_at(&self, lane: u32, word: u64, out: &mut [u8]) {
        Prg::keystream_at(&self.seed, self.op, lane, word, out)
    }

    /// Checks that the host has exactly `words` correction words for this op
    /// (the device has none and always passes).
    pub fn expect_corrections(&self, words: usize) -> Result<(), ProtocolError> {
        if self.role == Role::Device {
            return Ok(());
        }
        let expected = words.checked_mul(8).ok_or(ProtocolError::BadShape)?;
        if self.corrections.len() == expected {
            Ok(())
        } else {
            Err(ProtocolError::BadLength {
                expected,
                got: self.corrections.len(),
            })
        }
    }

    /// This party's share of word `index` of derived lane `lane`, by random
    /// access: the device expands it from its seed, the host reads correction
    /// word `offset + index` (callers check the length first with
    /// [`Self::expect_corrections`]).
    pub fn derived_word(&self, lane: u32, offset: usize, index: u64) -> u64 {
        match self.role {
            Role::Device => Prg::word(&self.seed, self.op, lane, index),
            // the dealer never holds an op (its source is poisoned)
            Role::Host | Role::Dealer => {
                let at = offset.saturating_add(index as usize).saturating_mul(8);
                wire::word(self.corrections.get(at..at.saturating_add(8)).unwrap_or(&[]))
            }
        }
    }

    /// This party's shares of words `index..index + out.len()` of derived
    /// lane `lane` (as [`Self::derived_word`], word by word): the device
    /// expands just the keystream blocks that hold them.
    pub fn derived_words(&self, lane: u32, offset: usize, index: u64, out: &mut [u64]) {
        match self.role {
            Role::Device => {
                let mut bytes = [0u8; 8 * DERIVED_RUN];
                let mut at = index;
                for chunk in out.chunks_mut(DERIVED_RUN) {
                    let b = bytes.get_mut(..8 * chunk.len()).unwrap_or_default();
                    Prg::keystream_at(&self.seed, self.op, lane, at, b);
                    for (w, c) in chunk.iter_mut().zip(b.chunks_exact(8)) {
                        *w = wire::word(c);
                    }
                    at += chunk.len() as u64;
                }
            }
            Role::Host | Role::Dealer => {
                for (k, w) in out.iter_mut().enumerate() {
                    *w = self.derived_word(lane, offset, index + k as u64);
                }
            }
        }
    }

    /// This party's share of a derived lane of `n` words: the device expands
    /// it from its seed, the host takes the next `n` correction words.
    pub fn derived(&mut self, lane: u32, n: usize) -> Result<Derived<'d>, ProtocolError> {
        match self.role {
            Role::Device => Ok(Derived::Seeded(self.random(lane))),
            Role::Host | Role::Dealer => {
                let start = self.taken;
                let end = n
                    .checked_mul(8)
                    .and_then(|b| b.checked_add(start))
                    .ok_or(ProtocolError::BadShape)?;
                let words = self.corrections.get(start..end).ok_or(ProtocolError::BadLength {
                    expected: end,
                    got: self.corrections.len(),
                })?;
                self.taken = end;
                Ok(Derived::Given(words))
            }
        }
    }
}

/// A party's share of a derived lane, read sequentially.
// The seeded variant carries its keystream buffer inline on purpose: no heap
// in core, and a reader lives on the stack for one op only.
#[allow(clippy::large_enum_variant)]
pub enum Derived<'d> {
    /// The device's share, expanded from its seed.
    Seeded(Prg),
    /// The host's share: correction words from the dealer (LE `u64`).
    Given(&'d [u8]),
}

impl Derived<'_> {
    /// The next word (0 past the end of a checked slice, which callers
    /// prevent by checking lengths first).
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        match self {
            Derived::Seeded(p) => p.next_u64(),
            Derived::Given(s) => {
                let (w, rest) = s.split_at_checked(8).unwrap_or((&[], &[]));
                *s = rest;
                wire::word(w)
            }
        }
    }
}

/// The dealer's view of a session: both parties' seeds, in lock-step.
#[derive(Debug)]
pub struct DealerSession {
    host: Correlations,
    device: Correlations,
}

/// The dealer's view of one op.
#[derive(Debug)]
pub struct DealerOp {
    /// The host's streams for this op.
    pub host: OpCorr<'static>,
    /// The device's streams for this op.
    pub device: OpCorr<'static>,
    session: SessionId,
}

impl DealerSession {
    /// The dealer side of `session`, from both provisioned keys.
    pub fn new(host_key: &Seed, device_key: &Seed, session: SessionId) -> Self {
        Self {
            host: Correlations::new(Role::Host, host_key, session),
            device: Correlations::new(Role::Device, device_key, session),
        }
    }

    /// The next op (advances both mirrors).
    pub fn next_op(&mut self) -> Result<DealerOp, ProtocolError> {
        Ok(DealerOp {
            host: self.host.next_op()?,
            device: self.device.next_op()?,
            session: self.host.session(),
        })
    }

    /// Ops dealt so far.
    pub fn ops_used(&self) -> u64 {
        self.host.ops_used()
    }
}

impl DealerOp {
    /// The joint value of random lane `lane` at the current position of the
    /// two readers.
    pub fn random(&self, lane: u32) -> JointPrg {
        JointPrg {
            h: self.host.random(lane),
            d: self.device.random(lane),
        }
    }

    /// The joint value of random lane `lane` of the earlier op `op`
    /// ([`OpCorr::random_of_earlier`]).
    pub fn random_of_earlier(&self, op: u64, lane: u32) -> Result<JointPrg, ProtocolError> {
        Ok(JointPrg {
            h: self.host.random_of_earlier(op, lane)?,
            d: self.device.random_of_earlier(op, lane)?,
        })
    }

    /// Writes the message header and returns a writer for correction words
    /// into `out` (which must hold `DEALER_HEADER_LEN + 8 * words` bytes).
    pub fn writer<'o>(&self, out: &'o mut [u8], words: usize) -> Result<CorrectionWriter<'o>, ProtocolError> {
        let len = words
            .checked_mul(8)
            .and_then(|b| b.checked_add(DEALER_HEADER_LEN))
            .ok_or(ProtocolError::BadShape)?;
        let out = out.get_mut(..len).ok_or(ProtocolError::BadBuffer)?;
        wire::write_u64(out, 0, self.session.0)?;
        wire::write_u64(out, 1, self.host.op())?;
        Ok(CorrectionWriter {
            out,
            pos: DEALER_HEADER_LEN,
            short: false,
        })
    }

    /// The device's share stream of derived lane `lane`.
    pub fn device_derived(&self, lane: u32) -> Prg {
        self.device.random(lane)
    }
}

/// The sum of the host's and the device's share streams of a random lane.
pub struct JointPrg {
    h: Prg,
    d: Prg,
}

impl JointPrg {
    /// The next joint value `v0 + v1`.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.h.next_u64().wrapping_add(self.d.next_u64())
    }
}

/// Writes the host's correction words of a dealer message.
pub struct CorrectionWriter<'o> {
    out: &'o mut [u8],
    pos: usize,
    /// A [`Self::put_lane`] got fewer values than words: [`Self::finish`]
    /// errs (those words hold the device's raw share).
    short: bool,
}

impl CorrectionWriter<'_> {
    /// Writes the host's share `value - device_share` of one derived word.
    #[inline]
    pub fn put(&mut self, value: u64, device_share: u64) {
        let w = value.wrapping_sub(device_share).to_le_bytes();
        if let Some(dst) = self.out.get_mut(self.pos..self.pos + 8) {
            dst.copy_from_slice(&w);
        }
        self.pos += 8;
    }

    /// Writes the host's shares of `count` consecutive words of the device's
    /// derived lane `lane`, from word `word` on: `value - device_share` for
    /// each of `values` (which yields `count` of them). The device's words
    /// are expanded in bulk straight into the output, then adjusted.
    pub fn put_lane(
        &mut self,
        device: &OpCorr<'_>,
        lane: u32,
        word: u64,
        count: usize,
        values: impl Iterator<Item = u64>,
    ) {
        self.put_lane_with(device, lane, word, count, values, u64::wrapping_sub);
    }

    /// [`Self::put_lane`] for bit-valued words: the host's word is
    /// `value xor device_share` (XOR shares of packed bits).
    pub fn put_lane_xor(
        &mut self,
        device: &OpCorr<'_>,
        lane: u32,
        word: u64,
        count: usize,
        values: impl Iterator<Item = u64>,
    ) {
        self.put_lane_with(device, lane, word, count, values, |v, d| v ^ d);
    }

    fn put_lane_with(
        &mut self,
        device: &OpCorr<'_>,
        lane: u32,
        word: u64,
        count: usize,
        values: impl Iterator<Item = u64>,
        share: fn(u64, u64) -> u64,
    ) {
        let end = self.pos.saturating_add(count.saturating_mul(8));
        if let Some(dst) = self.out.get_mut(self.pos..end) {
            device.keystream_at(lane, word, dst);
            let mut put = 0;
            for (c, v) in dst.chunks_exact_mut(8).zip(values) {
                let mut d = [0u8; 8];
                d.copy_from_slice(c);
                c.copy_from_slice(&share(v, u64::from_le_bytes(d)).to_le_bytes());
                put += 1;
            }
            self.short |= put != count;
        }
        self.pos = end;
    }

    /// Total message length; errs if fewer or more words than announced were
    /// written.
    pub fn finish(self) -> Result<usize, ProtocolError> {
        if self.pos == self.out.len() && !self.short {
            Ok(self.pos)
        } else {
            Err(ProtocolError::BadBuffer)
        }
    }
}

/// The length of a dealer message with `words` correction words.
pub fn dealer_message_len(words: usize) -> usize {
    DEALER_HEADER_LEN + 8 * words
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn dealer() -> DealerOp {
        DealerSession::new(&Seed::from_bytes([1; 32]), &Seed::from_bytes([2; 32]), SessionId(9))
            .next_op()
            .unwrap()
    }

    /// The bulk writer writes what word-by-word `put` writes, and the host's
    /// word plus the device's derived word is the value.
    /// Each op draws its own correlations: op ids count up from 0, and
    /// the streams of two ops differ (a counter that never advanced would
    /// reuse every Beaver triple, and the results would still be right).
    #[test]
    fn every_op_has_its_own_id_and_streams() {
        let key = Seed::from_bytes([4; 32]);
        let mut c = Correlations::new(Role::Device, &key, SessionId(9));
        let mut firsts = std::vec::Vec::new();
        for k in 0..200u64 {
            let op = c.next_op().expect("op");
            assert_eq!(op.op(), k);
            firsts.push(op.random(0).next_u64());
        }
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 200, "two ops share a stream");
        assert_eq!(c.ops_used(), 200);
        // the dealer's mirror counts the same way
        let mut d = DealerSession::new(&Seed::from_bytes([5; 32]), &key, SessionId(9));
        for k in 0..10u64 {
            let op = d.next_op().expect("op");
            assert_eq!((op.host.op(), op.device.op()), (k, k));
        }
    }

    #[test]
    fn put_lane_matches_put() {
        let op = dealer();
        let values = |n: usize| (0..n as u64).map(|j| j.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (n, start) = (77, 1000);
        let mut a = std::vec![0u8; dealer_message_len(n)];
        let mut b = std::vec![0xAAu8; dealer_message_len(n)];
        let mut w = op.writer(&mut a, n).unwrap();
        let mut d = op.device.random_at(5, start);
        values(n).for_each(|v| w.put(v, d.next_u64()));
        assert_eq!(w.finish(), Ok(a.len()));
        let mut w = op.writer(&mut b, n).unwrap();
        w.put_lane(&op.device, 5, start, n, values(n));
        assert_eq!(w.finish(), Ok(b.len()));
        assert_eq!(a, b);
        let host = |j: usize| u64::from_le_bytes(b[DEALER_HEADER_LEN + 8 * j..][..8].try_into().unwrap());
        for (j, v) in values(n).enumerate() {
            assert_eq!(host(j).wrapping_add(op.device.derived_word(5, 0, start + j as u64)), v);
        }
    }

    /// Fewer values than words would leave the device's raw share in the
    /// message: the writer refuses to finish.
    #[test]
    fn a_short_lane_fails() {
        let op = dealer();
        let mut a = std::vec![0u8; dealer_message_len(8)];
        let mut w = op.writer(&mut a, 8).unwrap();
        w.put_lane(&op.device, 1, 0, 8, 0..7u64);
        assert_eq!(w.finish(), Err(ProtocolError::BadBuffer));
    }
}
