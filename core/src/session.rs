//! Session set-up (`spec/session.md`): binds the device, the host and the
//! dealer to one session id without the host learning the device's seeds,
//! and every set-up message to its session.
//!
//! 1. The host opens with a [`Challenge`]: a session id it has never used.
//! 2. The device draws a fresh 64-bit nonce, derives its session key
//!    `Kd = derive(device key, DeviceNonce, nonce)` and answers with a
//!    [`DeviceHello`]: its [`Offer`] (the model CRC of its blob, its
//!    fractional bits, the [`Tile`] it runs, whether the host sees the
//!    logits, the blob's key check), the nonce, and a tag under `Kd` over
//!    the session id and the whole offer ([`device_tag`]), which only a
//!    holder of the device key can make.
//! 3. The host relays the session id, nonce, offer and tag with the plan to
//!    the dealer ([`DealerSetup`]), on their sealed link.
//! 4. The dealer re-derives `Kd`, checks the tag, the offer against the plan
//!    and its own host key, refuses a session id it has seen, and answers
//!    with a tag under `Kd` over the session id and the device's tag
//!    ([`DealerConfirm`], [`dealer_tag`]).
//! 5. The host forwards it ([`Accept`]); the device checks it before it
//!    sends anything that depends on the image. Its correlations come from
//!    `Kd` and the session id.
//!
//! A hello is good for the one challenge it answers: replayed to the host
//! (alone, or as the start of a recorded transcript) it meets a new session
//! id and fails the dealer's check. The host sees nonces and tags, which
//! are PRF outputs under keys it does not hold. A host that replays an old
//! session id cannot make the device reuse correlations: the device's nonce
//! is fresh, so `Kd` is new.
//!
//! Every message is a version byte followed by its [`postcard`] encoding
//! ([`Message`]); `MaxSize` bounds the buffers.

use crate::ProtocolError;
use crate::corr::SessionId;
use crate::ops::vit::Tile;
use crate::prg::{Domain, Seed};
use postcard::experimental::max_size::MaxSize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Set-up message version: the version of the messages and of the
/// computation, so that parties that would compute or frame differently
/// refuse each other. It changes whenever [`COMPUTATION`] does, and also
/// when only the set-up changes.
pub const VERSION: u8 = 18;
/// Version of the computation (nonlinear protocols, approximations, the
/// correlation generator): what the secure results depend on. Evaluation
/// journals, the results table and `bench` record it; a result recorded
/// under the same computation version stays valid across set-up changes.
pub const COMPUTATION: u8 = 10;
/// Length of a tag.
pub const TAG_LEN: usize = 16;

/// A key-confirmation tag.
pub type Tag = [u8; TAG_LEN];

/// A set-up message: on the wire, [`VERSION`] and then the postcard
/// encoding of the value.
pub trait Message: Serialize + DeserializeOwned + MaxSize {
    /// The longest encoding, version byte included.
    const MAX_LEN: usize = 1 + Self::POSTCARD_MAX_SIZE;

    /// Encodes into `out`; returns the bytes written.
    fn encode<'a>(&self, out: &'a mut [u8]) -> Result<&'a [u8], ProtocolError> {
        let cap = out.len();
        let short = ProtocolError::BadLength {
            expected: Self::MAX_LEN,
            got: cap,
        };
        let (v, body) = out.split_first_mut().ok_or(short)?;
        *v = VERSION;
        let n = postcard::to_slice(self, body).map_err(|_| short)?.len();
        out.get(..1 + n).ok_or(short)
    }

    /// Decodes a message and returns the bytes after it (where a plan
    /// follows); refuses another version first.
    fn decode_prefix(b: &[u8]) -> Result<(Self, &[u8]), ProtocolError> {
        match b.split_first() {
            Some((&VERSION, body)) => postcard::take_from_bytes(body).map_err(|_| ProtocolError::Malformed),
            Some((&v, _)) => Err(ProtocolError::BadVersion(v)),
            None => Err(ProtocolError::Malformed),
        }
    }

    /// Decodes a message that must fill `b` exactly.
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        match Self::decode_prefix(b)? {
            (m, []) => Ok(m),
            _ => Err(ProtocolError::Malformed),
        }
    }
}

/// What the device asks for: every field is bound into its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Offer {
    /// CRC of the model the device's blob was made from.
    pub model_crc: u32,
    /// Fractional bits of the device's blob.
    pub frac_bits: u8,
    /// How the device cuts each layer (every party runs the same cut).
    pub tile: Tile,
    /// Also reveal the logits to the host (the device's choice; the device
    /// enforces it: it sends its share only when it asked for this).
    pub logits_to_host: bool,
    /// The blob's [`key_check`]: which host key its masks are under.
    pub key_check: u32,
}

impl Offer {
    /// The offer as the words the tag covers (a fixed count, so the tag's
    /// PRF chain reads a prefix-free input).
    fn words(&self) -> [u64; 3] {
        [
            u64::from(self.model_crc) | u64::from(self.frac_bits) << 32 | u64::from(self.logits_to_host) << 40,
            self.tile.code(),
            u64::from(self.key_check),
        ]
    }
}

/// The host's first message to a device: the session id it offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Challenge {
    /// Session id (never 0; never used before by this host).
    pub session: u64,
}

/// The device's answer to the challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct DeviceHello {
    /// What it asks for.
    pub offer: Offer,
    /// Fresh nonce (its session key's).
    pub nonce: u64,
    /// [`device_tag`] over the challenge's session id and the offer.
    pub tag: Tag,
}

/// The host's set-up message to the dealer (the plan follows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct DealerSetup {
    /// Session id.
    pub session: u64,
    /// The device's nonce.
    pub nonce: u64,
    /// The device's offer.
    pub offer: Offer,
    /// The device's tag.
    pub tag: Tag,
}

/// The dealer's answer to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct DealerConfirm {
    /// [`dealer_tag`].
    pub tag: Tag,
}

/// The host's answer to the device: the session id and the dealer's tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Accept {
    /// Session id (the challenge's).
    pub session: u64,
    /// The dealer's tag.
    pub tag: Tag,
}

impl Message for Challenge {}
impl Message for DeviceHello {}
impl Message for DealerSetup {}
impl Message for DealerConfirm {}
impl Message for Accept {}

/// The longest set-up message a device receives ([`Challenge`], [`Accept`]).
pub const DEVICE_RX_MAX: usize = if Challenge::MAX_LEN > Accept::MAX_LEN {
    Challenge::MAX_LEN
} else {
    Accept::MAX_LEN
};

fn tag_of(seed: &Seed) -> Tag {
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(seed.expose().get(..TAG_LEN).unwrap_or(&[0; TAG_LEN]));
    t
}

/// A tag under `key` over `session` and then `words`: a chain of the PRF
/// (`derive`), one step per word. Each caller passes a fixed number of
/// words under its own domain, so the inputs are prefix-free and the chain
/// is a PRF on them (the cascade construction).
fn chain_tag(key: &Seed, domain: Domain, session: u64, words: &[u64]) -> Tag {
    let mut k = key.derive(domain, session);
    for &w in words {
        k = k.derive(domain, w);
    }
    tag_of(&k)
}

fn tag_words(t: &Tag) -> [u64; 2] {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(t.get(..8).unwrap_or(&[0; 8]));
    b.copy_from_slice(t.get(8..).unwrap_or(&[0; 8]));
    [u64::from_le_bytes(a), u64::from_le_bytes(b)]
}

/// Compares two tags without an early exit.
pub fn tags_equal(a: &Tag, b: &Tag) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The device's session key for `nonce`.
pub fn device_session_key(device_key: &Seed, nonce: u64) -> Seed {
    device_key.derive(Domain::DeviceNonce, nonce)
}

/// The device's tag under its session key, over the session id of the
/// challenge it answers and its whole offer: a relay that changes any field,
/// or replays the hello into another session, fails the dealer's check.
pub fn device_tag(session_key: &Seed, session: SessionId, offer: &Offer) -> Tag {
    chain_tag(session_key, Domain::ConfirmDevice, session.0, &offer.words())
}

/// The dealer's tag under the device's session key, over the session id
/// and the device's tag (so over everything the device sent).
pub fn dealer_tag(session_key: &Seed, session: SessionId, device_tag: &Tag) -> Tag {
    chain_tag(session_key, Domain::ConfirmDealer, session.0, &tag_words(device_tag))
}

/// The pre-shared key of the sealed host-dealer link: derived from the host
/// key, which only host and dealer hold, so a party that opens the link is
/// one of them (a device key, or a recording of any link, opens nothing).
pub fn host_dealer_link_key(host_key: &Seed) -> Seed {
    host_key.derive(Domain::HostDealerLink, 0)
}

/// The host's per-model mask seed (shared by host and dealer): derived from
/// the host key and the model's CRC, so each model gets its own masks.
pub fn model_seed(host_key: &Seed, model_crc: u32) -> Seed {
    host_key.derive(Domain::ModelMask, u64::from(model_crc))
}

/// The key check of a model's masks: 32 bits of `derive(model seed,
/// BlobCheck, 0)`. A blob carries it and the device sends it in its hello,
/// so a host (and the dealer) refuses, with a clear reason, a device
/// provisioned under another host key (whose `W - B` would decode to
/// garbage with this host's `B`). It tells nothing about the seed (a PRF
/// output), and it is a check against mistakes, not an authentication.
pub fn key_check(model_seed: &Seed) -> u32 {
    let s = model_seed.derive(Domain::BlobCheck, 0);
    let mut b = [0u8; 4];
    b.copy_from_slice(s.expose().get(..4).unwrap_or(&[0; 4]));
    u32::from_le_bytes(b)
}

/// The key check of `host_key`'s masks for the model of `model_crc`.
pub fn blob_key_check(host_key: &Seed, model_crc: u32) -> u32 {
    key_check(&model_seed(host_key, model_crc))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // tests: a panic is a failure
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer {
            model_crc: 0xDEAD_BEEF,
            frac_bits: 16,
            tile: Tile {
                rows: 2,
                heads: 1,
                queries: 10,
            },
            logits_to_host: true,
            key_check: 0x0123_4567,
        }
    }

    fn roundtrip<M: Message + PartialEq + core::fmt::Debug>(m: &M) {
        let mut b = [0u8; 128];
        let n = m.encode(&mut b).map(<[u8]>::len).unwrap_or(0);
        assert!(n > 1 && n <= M::MAX_LEN, "{n} bytes, at most {}", M::MAX_LEN);
        assert_eq!(M::decode(b.get(..n).unwrap_or_default()).as_ref(), Ok(m));
        // every truncation, and a trailing byte, refused; another version too
        for k in 0..n {
            assert!(M::decode(b.get(..k).unwrap_or_default()).is_err(), "cut at {k}");
        }
        assert_eq!(
            M::decode(b.get(..n + 1).unwrap_or_default()),
            Err(ProtocolError::Malformed)
        );
        b[0] = VERSION - 1;
        assert_eq!(
            M::decode(b.get(..n).unwrap_or_default()),
            Err(ProtocolError::BadVersion(VERSION - 1))
        );
        // a buffer one byte short of the encoding is an error, not a panic
        let mut short = [0u8; 128];
        assert!(m.encode(short.get_mut(..n - 1).unwrap_or_default()).is_err());
    }

    #[test]
    fn the_largest_messages_are_as_spec_session_md_says() {
        assert_eq!(
            [
                Challenge::MAX_LEN,
                DeviceHello::MAX_LEN,
                DealerSetup::MAX_LEN,
                DealerConfirm::MAX_LEN,
                Accept::MAX_LEN,
                DEVICE_RX_MAX,
            ],
            [11, 46, 56, 17, 27, 27]
        );
    }

    #[test]
    fn messages_roundtrip_within_their_max_size() {
        let kd = device_session_key(&Seed::from_bytes([7; 32]), 99);
        let o = offer();
        let sid = SessionId(5);
        let tag = device_tag(&kd, sid, &o);
        roundtrip(&Challenge { session: u64::MAX });
        roundtrip(&DeviceHello {
            offer: Offer {
                model_crc: u32::MAX,
                tile: Tile {
                    rows: u16::MAX,
                    heads: u8::MAX,
                    queries: u16::MAX,
                },
                key_check: u32::MAX,
                ..o
            },
            nonce: u64::MAX,
            tag,
        });
        roundtrip(&DealerSetup {
            session: 5,
            nonce: 99,
            offer: o,
            tag,
        });
        roundtrip(&DealerConfirm { tag });
        roundtrip(&Accept { session: 5, tag });
        // the plan after a dealer set-up is returned whole
        let mut b = [0u8; 128];
        let d = DealerSetup {
            session: 5,
            nonce: 99,
            offer: o,
            tag,
        };
        let n = d.encode(&mut b).map(<[u8]>::len).unwrap_or(0);
        b[n..n + 3].copy_from_slice(&[1, 2, 3]);
        assert_eq!(DealerSetup::decode_prefix(&b[..n + 3]), Ok((d, &[1u8, 2, 3][..])));
        // a logits flag other than 0 or 1 does not decode
        let mut h = [0u8; 128];
        let hello = DeviceHello {
            offer: o,
            nonce: 1,
            tag,
        };
        let n = hello.encode(&mut h).map(<[u8]>::len).unwrap_or(0);
        let flag = 1 + 5 + 1 + 1 + 1 + 1; // version, crc (varint), f, tile
        assert_eq!(h[flag], 1);
        h[flag] = 2;
        assert_eq!(DeviceHello::decode(&h[..n]), Err(ProtocolError::Malformed));
    }

    #[test]
    fn tags_bind_the_session_every_offer_field_and_the_direction() {
        let kd = device_session_key(&Seed::from_bytes([7; 32]), 99);
        let o = offer();
        let sid = SessionId(5);
        let t = device_tag(&kd, sid, &o);
        // another session (a replayed hello), another nonce, any field changed
        let other_kd = device_session_key(&Seed::from_bytes([7; 32]), 100);
        assert!(!tags_equal(&device_tag(&kd, SessionId(6), &o), &t));
        assert!(!tags_equal(&device_tag(&other_kd, sid, &o), &t));
        let tile = o.tile;
        for changed in [
            Offer { model_crc: 1, ..o },
            Offer { frac_bits: 15, ..o },
            Offer {
                logits_to_host: false,
                ..o
            },
            Offer { key_check: 0, ..o },
            Offer { tile: Tile::WHOLE, ..o },
            Offer {
                tile: Tile { rows: 3, ..tile },
                ..o
            },
            Offer {
                tile: Tile { heads: 2, ..tile },
                ..o
            },
            Offer {
                tile: Tile { queries: 9, ..tile },
                ..o
            },
        ] {
            assert!(!tags_equal(&device_tag(&kd, sid, &changed), &t), "{changed:?}");
        }
        // the dealer's tag covers the device's, and is not the device's own
        // tag reflected back
        let d = dealer_tag(&kd, sid, &t);
        assert!(!tags_equal(&d, &t));
        assert!(!tags_equal(&dealer_tag(&kd, SessionId(6), &t), &d));
        let mut t2 = t;
        t2[15] ^= 1;
        assert!(!tags_equal(&dealer_tag(&kd, sid, &t2), &d));
        assert!(tags_equal(&dealer_tag(&kd, sid, &t), &d));
    }

    #[test]
    fn the_key_check_is_one_per_model_seed() {
        let (k1, k2) = (Seed::from_bytes([1; 32]), Seed::from_bytes([2; 32]));
        assert_ne!(blob_key_check(&k1, 5), blob_key_check(&k2, 5));
        assert_ne!(blob_key_check(&k1, 5), blob_key_check(&k1, 6));
        assert_eq!(blob_key_check(&k1, 5), key_check(&model_seed(&k1, 5)));
    }
}
