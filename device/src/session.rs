//! The device's side of the session set-up (`spec/session.md`), and the
//! device's whole session flow ([`infer`]: set-up, forward pass, argmax),
//! which the desktop device and every firmware run.

use super::{DeviceError, DeviceParty, HighWater, Read, Write};
use mpcvit_core::FixedPoint;
use mpcvit_core::ops::vit::Tile;
use mpcvit_core::ops::vit::{self, VitSpec, Weights};
use mpcvit_core::prg::Seed;
use mpcvit_core::provision::BlobView;
pub use mpcvit_core::session::Offer;
use mpcvit_core::session::{self as s, Accept, Challenge, DeviceHello, Message};
use mpcvit_core::{ProtocolError, SessionId};
use mpcvit_transport::Meter;
use mpcvit_transport::{FrameKind, Link};
use rand_core::TryCryptoRng;

/// Receives a set-up answer from the host: its message, or its refusal
/// (an `Abort` whose reason is left in `buf`).
fn answer<'b, T: Read + Write>(link: &mut Link<T>, buf: &'b mut [u8]) -> Result<&'b [u8], DeviceError<T::Error>> {
    let (kind, p) = link.recv(buf)?;
    match kind {
        FrameKind::Abort => Err(DeviceError::Refused { reason_len: p.len() }),
        FrameKind::Hello => Ok(p),
        _ => Err(DeviceError::Protocol(ProtocolError::WrongOp)),
    }
}

/// Runs the set-up on `link` (session 0): takes the host's challenge,
/// draws a nonce from `rng`, sends the hello with `offer` bound to the
/// challenge, checks the dealer's tag, binds the link to the session.
/// Returns the session id and the device's session key. `buf` receives
/// the host's messages ([`s::DEVICE_RX_MAX`] bytes are enough; an abort
/// reason longer than `buf` is a frame error).
pub fn open<T: Read + Write, R: TryCryptoRng + ?Sized>(
    link: &mut Link<T>,
    device_key: &Seed,
    rng: &mut R,
    offer: &Offer,
    buf: &mut [u8],
) -> Result<(SessionId, Seed), DeviceError<T::Error>> {
    let sid = SessionId(Challenge::decode(answer(link, buf)?)?.session);
    if sid.0 == 0 {
        return Err(DeviceError::Protocol(ProtocolError::BadParameter));
    }
    let nonce = rng.try_next_u64().map_err(|_| DeviceError::Randomness)?;
    let kd = s::device_session_key(device_key, nonce);
    let tag = s::device_tag(&kd, sid, offer);
    let mut hello = [0u8; DeviceHello::MAX_LEN];
    let hello = DeviceHello {
        offer: *offer,
        nonce,
        tag,
    }
    .encode(&mut hello)?;
    link.send(FrameKind::Hello, hello)?;
    let acc = Accept::decode(answer(link, buf)?)?;
    if acc.session != sid.0 || !s::tags_equal(&acc.tag, &s::dealer_tag(&kd, sid, &tag)) {
        return Err(DeviceError::Protocol(ProtocolError::Unauthenticated));
    }
    link.set_session(sid.0);
    Ok((sid, kd))
}

/// The caller's buffers for one inference ([`infer`]).
pub struct Buffers<'a> {
    /// `vit::scratch_len` words.
    pub scratch: &'a mut [u64],
    /// Largest message out ([`crate::buffers`]).
    pub tx: &'a mut [u8],
    /// Largest message in; also receives the set-up answer.
    pub rx: &'a mut [u8],
    /// Per-op temporaries.
    pub tmp: &'a mut [u64],
    /// The logits (at least the model's classes); the first `classes` hold
    /// them after [`infer`].
    pub logits: &'a mut [u64],
}

/// What one inference gave and measured.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Session id.
    pub session: u64,
    /// Predicted class: the first largest logit.
    pub prediction: usize,
    /// Classes (the first `classes` of the logits buffer).
    pub classes: usize,
    /// The link meter of the inference (after set-up).
    pub meter: Meter,
    /// Peak use of the buffers.
    pub high_water: HighWater,
    /// `clock()` at the start, after set-up, and at the end.
    pub ticks: [u64; 3],
}

/// Why [`infer`] failed.
// Returned once per session: the refusal text travels in the error by value
// (the receive buffer it arrived in belongs to the caller's `Buffers`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Failure<E> {
    /// The buffers do not fit the model and tile, or the image its size.
    Setup(&'static str),
    /// The host refused; its reason (UTF-8), cut at [`REASON_MAX`] bytes.
    Refused {
        /// The reason's bytes.
        reason: [u8; REASON_MAX],
        /// Its length.
        len: usize,
    },
    /// The set-up failed (the link, or the dealer's key confirmation).
    Handshake(DeviceError<E>),
    /// The inference failed.
    Device(DeviceError<E>),
}

/// Longest refusal reason kept.
pub const REASON_MAX: usize = 256;

impl<E> Failure<E> {
    /// The host's refusal reason, if it refused.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Refused { reason, len } => core::str::from_utf8(reason.get(..*len).unwrap_or_default()).ok(),
            _ => None,
        }
    }
}

/// What the device brings to a session: its blob (architecture, model
/// checksum, fractional bits, attention layout), its weights `W - B` and
/// its key.
pub struct Deployment<'a> {
    /// The provisioning blob.
    pub blob: &'a BlobView<'a>,
    /// The device's view of the weights (read from the blob).
    pub weights: &'a dyn Weights,
    /// The device's key (shared with the dealer).
    pub key: &'a Seed,
}

/// One private inference of `pixels` (8-bit, `[c, h, w]`, normalised per
/// channel by `(mean, std)`) with the host on `io`: set-up announcing
/// `offer`'s tile and logits flag (the blob gives the model), its nonce
/// drawn from `rng` (a crypto RNG: the OS, the board's TRNG), forward pass,
/// argmax. `clock` reads a tick counter (or returns 0); it is called at the
/// start, after set-up and at the end.
#[allow(clippy::result_large_err)] // see `Failure`
pub fn infer<T: Read + Write, R: TryCryptoRng + ?Sized>(
    (clock, rng): (&mut dyn FnMut() -> u64, &mut R),
    io: T,
    dep: &Deployment<'_>,
    (tile, logits_to_host): (Tile, bool),
    pixels: &[u8],
    (mean, std): (&[f32], &[f32]),
    b: Buffers<'_>,
) -> Result<Outcome, Failure<T::Error>> {
    let blob = dep.blob;
    let arch = blob.arch();
    let t_start = clock();
    let fp = FixedPoint::new(blob.frac_bits()).map_err(|_| Failure::Setup("the blob's fractional bits"))?;
    let scratch_need = vit::scratch_len(&arch, tile, mpcvit_core::Role::Device, blob);
    let (Some(scratch), Some(logits)) = (b.scratch.get_mut(..scratch_need), b.logits.get_mut(..arch.classes)) else {
        return Err(Failure::Setup("the model needs more RAM than the buffers given"));
    };
    // the patches are encoded a row tile at a time from the pixels
    let patches = vit::Pixels::new(&arch, fp, pixels, mean, std)
        .map_err(|_| Failure::Setup("the image does not fit the model"))?;
    let mut link = Link::new(io, 0);
    let offer = Offer {
        model_crc: blob.model_crc(),
        frac_bits: u8::try_from(blob.frac_bits()).map_err(|_| Failure::Setup("the blob's fractional bits"))?,
        tile,
        logits_to_host,
        key_check: blob.key_check(),
    };
    let (sid, kd) = match open(&mut link, dep.key, rng, &offer, b.rx) {
        Ok(v) => v,
        Err(DeviceError::Refused { reason_len }) => {
            let mut reason = [0u8; REASON_MAX];
            let len = reason_len.min(REASON_MAX);
            if let (Some(dst), Some(src)) = (reason.get_mut(..len), b.rx.get(..len)) {
                dst.copy_from_slice(src);
            }
            return Err(Failure::Refused { reason, len });
        }
        Err(e) => return Err(Failure::Handshake(e)),
    };
    let m0 = link.meter();
    let t_setup = clock();
    let mut party = DeviceParty::new(fp, link, &kd, sid, b.tx, b.rx, b.tmp);
    let spec = VitSpec {
        arch,
        fp,
        model: blob,
        tile,
        logits_to_host,
    };
    vit::forward(&mut party, &spec, dep.weights, &patches, logits, scratch).map_err(Failure::Device)?;
    Ok(Outcome {
        session: sid.0,
        prediction: argmax(logits),
        classes: arch.classes,
        meter: party.link().meter().since(&m0),
        high_water: party.high_water(),
        ticks: [t_start, t_setup, clock()],
    })
}

/// Index of the largest fixed-point value (signed), the first on ties (as
/// `torch.argmax`); 0 for an empty slice.
pub fn argmax(logits: &[u64]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if logits.get(best).is_some_and(|&b| (v as i64) > (b as i64)) {
            best = i;
        }
    }
    best
}
