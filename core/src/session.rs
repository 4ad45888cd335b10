//! Session set-up (`spec/session.md`): binds the device, the host and the
//! dealer to one session id without the host learning the device's seeds.
//!
//! 1. The device draws a fresh 64-bit nonce and derives its session key
//!    `Kd = derive(device key, DeviceNonce, nonce)`; it sends the host a
//!    [`DeviceHello`] with the model CRC of its blob, its fractional bits, the
//!    [`Tile`] it runs (its working set), the nonce and a tag
//!    `derive(Kd, ConfirmDevice, tile)` that only a holder of the device key
//!    can make.
//! 2. The host picks a session id that it has never used, and relays the
//!    nonce, tile and tag with the plan to the dealer ([`DealerSetup`]
//!    header).
//! 3. The dealer re-derives `Kd`, checks the tag, refuses a session id it has
//!    seen, and answers with `derive(Kd, ConfirmDealer, sid)`.
//! 4. The host forwards the session id and the dealer's tag ([`Accept`]); the
//!    device checks the tag before it sends anything that depends on the
//!    image. Its correlations come from `Kd` and the session id.
//!
//! The host sees nonces and tags, which are PRF outputs under keys it does
//! not hold. A host that replays an old session id cannot make the device
//! reuse correlations: the device's nonce is fresh, so `Kd` is new. A host
//! that alters the nonce or the tag is caught by the tag checks.

use crate::ProtocolError;
use crate::corr::SessionId;
use crate::ops::vit::Tile;
use crate::prg::{Domain, Seed};

/// Set-up message version: also the version of the computation (nonlinear
/// protocols and approximations) and of the messages, so that parties that
/// would compute or frame differently refuse each other.
pub const VERSION: u8 = 6;
/// Length of a [`DeviceHello`].
pub const DEVICE_HELLO_LEN: usize = 40;
/// Length of an [`Accept`].
pub const ACCEPT_LEN: usize = 25;
/// Length of the fixed part of a [`DealerSetup`] (the plan follows).
pub const DEALER_SETUP_LEN: usize = 38;
/// Length of a tag.
pub const TAG_LEN: usize = 16;

/// A key-confirmation tag.
pub type Tag = [u8; TAG_LEN];

/// The device's first message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceHello {
    /// CRC of the model the device's blob was made from.
    pub model_crc: u32,
    /// Fractional bits of the device's blob.
    pub frac_bits: u8,
    /// Also reveal the logits to the host (the device's choice; the device
    /// enforces it: it sends its share only when it asked for this).
    pub logits_to_host: bool,
    /// How the device cuts each layer (every party runs the same cut).
    pub tile: Tile,
    /// Fresh nonce.
    pub nonce: u64,
    /// `derive(Kd, ConfirmDevice, tile)`.
    pub tag: Tag,
    /// The blob's [`key_check`]: which host key its masks are under.
    pub key_check: u32,
}

/// The host's answer to the device: the session id and the dealer's tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accept {
    /// Session id.
    pub session: u64,
    /// `derive(Kd, ConfirmDealer, session)`.
    pub tag: Tag,
}

/// The fixed part of the host's set-up message to the dealer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DealerSetup {
    /// Session id.
    pub session: u64,
    /// The device's nonce.
    pub nonce: u64,
    /// The device's tile.
    pub tile: Tile,
    /// The device's tag.
    pub tag: Tag,
}

fn tag_of(seed: &Seed) -> Tag {
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(seed.expose().get(..TAG_LEN).unwrap_or(&[0; TAG_LEN]));
    t
}

fn get<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = b.get(at..at + N) {
        a.copy_from_slice(s);
    }
    a
}

fn put(out: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = out.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

fn check(b: &[u8], len: usize, exact: bool) -> Result<(), ProtocolError> {
    if b.len() < len || (exact && b.len() != len) {
        return Err(ProtocolError::BadLength {
            expected: len,
            got: b.len(),
        });
    }
    match b.first() {
        Some(&VERSION) => Ok(()),
        Some(&v) => Err(ProtocolError::BadVersion(v)),
        None => Err(ProtocolError::BadLength { expected: len, got: 0 }),
    }
}

/// Compares two tags without an early exit.
pub fn tags_equal(a: &Tag, b: &Tag) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The device's session key for `nonce`.
pub fn device_session_key(device_key: &Seed, nonce: u64) -> Seed {
    device_key.derive(Domain::DeviceNonce, nonce)
}

/// The device's tag under its session key, bound to its tile (a relay that
/// changed the tile would fail the dealer's check, not desynchronise).
pub fn device_tag(session_key: &Seed, tile: Tile) -> Tag {
    tag_of(&session_key.derive(Domain::ConfirmDevice, tile.code()))
}

/// The dealer's tag for `session` under the device's session key.
pub fn dealer_tag(session_key: &Seed, session: SessionId) -> Tag {
    tag_of(&session_key.derive(Domain::ConfirmDealer, session.0))
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
/// so a host refuses, with a clear reason, a device provisioned under
/// another host key (whose `W - B` would decode to garbage with this
/// host's `B`). It tells nothing about the seed (a PRF output), and it is
/// a check against mistakes, not an authentication.
pub fn key_check(model_seed: &Seed) -> u32 {
    let s = model_seed.derive(Domain::BlobCheck, 0);
    u32::from_le_bytes(get(s.expose(), 0))
}

impl DeviceHello {
    /// Encodes into the first [`DEVICE_HELLO_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8; DEVICE_HELLO_LEN]) {
        out[0] = VERSION;
        put(out, 1, &self.model_crc.to_le_bytes());
        out[5] = self.frac_bits;
        out[6] = u8::from(self.logits_to_host);
        put(out, 7, &self.tile.encode());
        put(out, 12, &self.nonce.to_le_bytes());
        put(out, 20, &self.tag);
        put(out, 36, &self.key_check.to_le_bytes());
    }

    /// Decodes and checks the length and version.
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        check(b, DEVICE_HELLO_LEN, true)?;
        let logits_to_host = match get::<1>(b, 6)[0] {
            0 => false,
            1 => true,
            _ => return Err(ProtocolError::BadParameter),
        };
        Ok(Self {
            model_crc: u32::from_le_bytes(get(b, 1)),
            frac_bits: get::<1>(b, 5)[0],
            logits_to_host,
            tile: Tile::decode(get(b, 7)),
            nonce: u64::from_le_bytes(get(b, 12)),
            tag: get(b, 20),
            key_check: u32::from_le_bytes(get(b, 36)),
        })
    }
}

impl Accept {
    /// Encodes.
    pub fn encode(&self, out: &mut [u8; ACCEPT_LEN]) {
        out[0] = VERSION;
        put(out, 1, &self.session.to_le_bytes());
        put(out, 9, &self.tag);
    }

    /// Decodes and checks the length and version.
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        check(b, ACCEPT_LEN, true)?;
        Ok(Self {
            session: u64::from_le_bytes(get(b, 1)),
            tag: get(b, 9),
        })
    }
}

impl DealerSetup {
    /// Encodes the fixed part into `out` (the plan goes after it).
    pub fn encode(&self, out: &mut [u8; DEALER_SETUP_LEN]) {
        out[0] = VERSION;
        put(out, 1, &self.session.to_le_bytes());
        put(out, 9, &self.nonce.to_le_bytes());
        put(out, 17, &self.tile.encode());
        put(out, 22, &self.tag);
    }

    /// Decodes the fixed part; returns it and the rest (the plan).
    pub fn decode(b: &[u8]) -> Result<(Self, &[u8]), ProtocolError> {
        check(b, DEALER_SETUP_LEN, false)?;
        Ok((
            Self {
                session: u64::from_le_bytes(get(b, 1)),
                nonce: u64::from_le_bytes(get(b, 9)),
                tile: Tile::decode(get(b, 17)),
                tag: get(b, 22),
            },
            b.get(DEALER_SETUP_LEN..).unwrap_or(&[]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_setup_roundtrip_with_the_tile_bound_into_the_tag() {
        let kd = device_session_key(&Seed::from_bytes([7; 32]), 99);
        let tile = Tile {
            rows: 2,
            heads: 1,
            queries: 10,
        };
        let h = DeviceHello {
            model_crc: 0xDEAD_BEEF,
            frac_bits: 16,
            logits_to_host: true,
            tile,
            nonce: 99,
            tag: device_tag(&kd, tile),
            key_check: 0x0123_4567,
        };
        let mut b = [0u8; DEVICE_HELLO_LEN];
        h.encode(&mut b);
        assert_eq!(DeviceHello::decode(&b), Ok(h));
        let d = DealerSetup {
            session: 5,
            nonce: 99,
            tile,
            tag: h.tag,
        };
        let mut s = [0u8; DEALER_SETUP_LEN];
        d.encode(&mut s);
        assert_eq!(DealerSetup::decode(&s).map(|x| x.0), Ok(d));
        // a relay that changes the tile no longer matches the device's tag
        for other in [
            Tile::WHOLE,
            Tile { rows: 3, ..tile },
            Tile { heads: 2, ..tile },
            Tile { queries: 9, ..tile },
        ] {
            assert!(!tags_equal(&device_tag(&kd, other), &h.tag));
        }
        // the key check: one per model seed
        let (k1, k2) = (Seed::from_bytes([1; 32]), Seed::from_bytes([2; 32]));
        assert_ne!(key_check(&model_seed(&k1, 5)), key_check(&model_seed(&k2, 5)));
        assert_ne!(key_check(&model_seed(&k1, 5)), key_check(&model_seed(&k1, 6)));
        assert_eq!(key_check(&model_seed(&k1, 5)), key_check(&model_seed(&k1, 5)));
        // version 1 hellos are refused
        b[0] = 1;
        assert_eq!(DeviceHello::decode(&b), Err(ProtocolError::BadVersion(1)));
    }
}
