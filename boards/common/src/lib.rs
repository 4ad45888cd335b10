//! What every device firmware of mpcvit-rs shares: the device's weights read
//! in place from the provisioning blob in flash, and one private inference
//! (set-up, forward pass, argmax) over any `embedded-io` byte stream. A
//! board adds its clocks, its UART, its random nonce and its logging.
//!
//! `build_support.rs` (included by each board's `build.rs`) puts the blob,
//! the device key and an optional pre-shared key into `OUT_DIR` and writes
//! `sizes.rs`: the tile (`MPCVIT_TILE`) and the static buffers it needs for
//! the blob's model.

#![no_std]
#![deny(missing_docs)]

pub use embedded_io;
use embedded_io::{Read, Write};
pub use mpcvit_core;
use mpcvit_core::FixedPoint;
use mpcvit_core::ops::vit::{self, Tile, VitSpec, Weights, Wid};
use mpcvit_core::prg::Seed;
use mpcvit_core::provision::BlobView;
use mpcvit_device::{DeviceError, DeviceParty, HighWater};
use mpcvit_transport::{Link, Meter};

/// The Fashion-MNIST normalisation the bundled model was trained with.
pub const FMNIST_MEAN: [f32; 1] = [0.2860];
/// See [`FMNIST_MEAN`].
pub const FMNIST_STD: [f32; 1] = [0.3530];

/// The device's words, read in place from the blob in flash.
pub struct FlashWeights {
    view: BlobView<'static>,
    words: &'static [u64],
}

impl FlashWeights {
    /// Parses the blob (checksum included) and maps its words; the blob must
    /// be 8-byte aligned (`#[repr(align(8))]` around `include_bytes!`).
    pub fn new(blob: &'static [u8]) -> Result<Self, &'static str> {
        let view = BlobView::parse(blob).map_err(|_| "the provisioning blob in flash is damaged")?;
        let off = view.words_offset();
        let body = blob.get(off..blob.len().saturating_sub(4)).ok_or("blob layout")?;
        if !(body.as_ptr() as usize).is_multiple_of(8) {
            return Err("the blob's words are not 8-byte aligned");
        }
        // SAFETY: `body` is 8-aligned (checked), lives in immutable 'static
        // flash data, and every bit pattern is a valid u64; the cores these
        // boards use are little-endian, as the blob's words are.
        #[allow(unsafe_code)]
        let words = unsafe { core::slice::from_raw_parts(body.as_ptr() as *const u64, body.len() / 8) };
        Ok(Self { view, words })
    }

    /// The blob's header view.
    pub fn blob(&self) -> &BlobView<'static> {
        &self.view
    }
}

impl Weights for FlashWeights {
    fn get(&self, id: Wid) -> &[u64] {
        self.view.word_range(id).and_then(|r| self.words.get(r)).unwrap_or(&[])
    }
}

/// The caller's static buffers.
pub struct Buffers<'a> {
    /// `vit::scratch_len` words.
    pub scratch: &'a mut [u64],
    /// Largest message out (`mpcvit_device::buffers`).
    pub tx: &'a mut [u8],
    /// Largest message in; also receives the set-up answer.
    pub rx: &'a mut [u8],
    /// Per-op temporaries.
    pub tmp: &'a mut [u64],
    /// The patch matrix.
    pub patches: &'a mut [u64],
    /// The logits (at least the model's classes).
    pub logits: &'a mut [u64],
}

/// What one inference gave and measured.
pub struct Outcome {
    /// Session id.
    pub session: u64,
    /// Predicted class.
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

/// Longest refusal reason kept.
pub const REASON_MAX: usize = 128;

impl<E> Failure<E> {
    /// The host's refusal reason, if it refused.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Refused { reason, len } => core::str::from_utf8(reason.get(..*len).unwrap_or(&[])).ok(),
            _ => None,
        }
    }
}

/// Why an inference failed.
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
    /// Set-up or inference failed.
    Device(DeviceError<E>),
}

/// One private inference of `pixels` (8-bit, `[c, h, w]`) with the host on
/// `io`: set-up for a fresh `nonce` announcing `tile`, forward pass, argmax.
/// `clock` reads the board's tick counter (or returns 0); it is called at
/// the start, after set-up and at the end.
// Called once per boot: the refusal text travels in the error by value.
#[allow(clippy::too_many_arguments, clippy::result_large_err)]
pub fn infer<T: Read + Write>(
    clock: &mut dyn FnMut() -> u64,
    io: T,
    weights: &FlashWeights,
    key: &Seed,
    nonce: u64,
    tile: Tile,
    pixels: &[u8],
    (mean, std): (&[f32], &[f32]),
    b: Buffers<'_>,
) -> Result<Outcome, Failure<T::Error>> {
    let blob = weights.blob();
    let arch = blob.arch();
    let t_start = clock();
    let fp = FixedPoint::new(blob.frac_bits()).map_err(|_| Failure::Setup("fractional bits"))?;
    let np = (arch.tokens() - 1) * arch.patch_len();
    if b.scratch.len() < vit::scratch_len(&arch, tile) || b.patches.len() < np || b.logits.len() < arch.classes {
        return Err(Failure::Setup("the model needs more RAM than this firmware reserves"));
    }
    let patches = &mut b.patches[..np];
    vit::patches_from_pixels(&arch, fp, pixels, mean, std, patches)
        .map_err(|_| Failure::Setup("the image does not fit the model"))?;
    let mut link = Link::new(io, 0);
    let offer = mpcvit_device::session::Offer {
        model_crc: blob.model_crc(),
        frac_bits: blob.frac_bits() as u8,
        tile,
        logits_to_host: false,
    };
    let (sid, kd) = match mpcvit_device::session::open(&mut link, key, nonce, &offer, &mut b.rx[..]) {
        Ok(v) => v,
        Err(DeviceError::Refused { reason_len }) => {
            let mut reason = [0u8; REASON_MAX];
            let len = reason_len.min(REASON_MAX).min(b.rx.len());
            reason[..len].copy_from_slice(&b.rx[..len]);
            return Err(Failure::Refused { reason, len });
        }
        Err(e) => return Err(Failure::Device(e)),
    };
    let m0 = link.meter();
    let t_setup = clock();
    let mut party = DeviceParty::new(fp, link, &kd, sid, b.tx, b.rx, b.tmp);
    let spec = VitSpec {
        arch,
        fp,
        model: blob,
        tile,
        logits_to_host: false,
    };
    let logits = &mut b.logits[..arch.classes];
    vit::forward(&mut party, &spec, weights, patches, logits, b.scratch).map_err(Failure::Device)?;
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if (v as i64) > (logits[best] as i64) {
            best = i;
        }
    }
    Ok(Outcome {
        session: sid.0,
        prediction: best,
        classes: arch.classes,
        meter: party.link().meter().since(&m0),
        high_water: party.high_water(),
        ticks: [t_start, t_setup, clock()],
    })
}

/// Declares a firmware's deployment in flash and its static buffers, from
/// `build_support.rs`'s files in `OUT_DIR`: `BLOB` (8-byte aligned), `KEY`,
/// `PSK` (empty without `MPCVIT_PSK`), `IMAGES` (the 16 bundled
/// Fashion-MNIST test images, IDX), the constants of `sizes.rs`, and
/// `take_buffers()`, which hands out the static buffers (call it once).
#[macro_export]
macro_rules! deployment {
    () => {
        #[repr(C, align(8))]
        struct Aligned<T: ?Sized>(T);

        static BLOB: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/device.blob")));
        static KEY: [u8; 32] = *include_bytes!(concat!(env!("OUT_DIR"), "/device.key"));
        /// Pre-shared key of a sealed host link (`MPCVIT_PSK`), or empty.
        #[allow(dead_code)]
        static PSK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/psk.bin"));
        static IMAGES: &[u8] = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/fmnist-t10k-16-images-idx3-ubyte"
        ));

        // TILE and the buffer sizes it needs for the blob's model (build.rs).
        include!(concat!(env!("OUT_DIR"), "/sizes.rs"));

        static mut SCRATCH: [u64; SCRATCH_WORDS] = [0; SCRATCH_WORDS];
        static mut TX: [u8; TX_BYTES] = [0; TX_BYTES];
        static mut RX: [u8; RX_BYTES] = [0; RX_BYTES];
        static mut TMP: [u64; TMP_WORDS] = [0; TMP_WORDS];
        static mut PATCHES: [u64; PATCH_WORDS] = [0; PATCH_WORDS];
        static mut LOGITS: [u64; CLASSES] = [0; CLASSES];

        /// The static buffers; call once (a second call would alias them).
        fn take_buffers() -> $crate::Buffers<'static> {
            // SAFETY: `&mut *(&raw mut STATIC)` borrows each static once;
            // the firmware calls this once, before any other use.
            #[allow(clippy::deref_addrof)]
            unsafe {
                $crate::Buffers {
                    scratch: &mut *(&raw mut SCRATCH),
                    tx: &mut *(&raw mut TX),
                    rx: &mut *(&raw mut RX),
                    tmp: &mut *(&raw mut TMP),
                    patches: &mut *(&raw mut PATCHES),
                    logits: &mut *(&raw mut LOGITS),
                }
            }
        }

        /// Test image `i` (28 x 28 grey) of the bundled IDX file.
        #[allow(dead_code)]
        fn image(i: usize) -> Option<&'static [u8]> {
            IMAGES.get(16 + i * 784..16 + (i + 1) * 784)
        }

        /// One private inference of bundled test image `IMAGE_INDEX`
        /// (`MPCVIT_IMAGE`) over `io` with the blob and key in flash, the
        /// static buffers (take them once: call this once) and `nonce`.
        #[allow(dead_code)]
        fn run_bundled<T: $crate::embedded_io::Read + $crate::embedded_io::Write>(
            clock: &mut dyn FnMut() -> u64,
            io: T,
            nonce: u64,
        ) -> Result<$crate::Outcome, $crate::Failure<T::Error>> {
            let weights = $crate::FlashWeights::new(&BLOB.0).map_err($crate::Failure::Setup)?;
            let pixels = image(IMAGE_INDEX).ok_or($crate::Failure::Setup("image index out of range"))?;
            let key = $crate::mpcvit_core::prg::Seed::from_bytes(KEY);
            let norm = (&$crate::FMNIST_MEAN[..], &$crate::FMNIST_STD[..]);
            $crate::infer(
                clock,
                io,
                &weights,
                &key,
                nonce,
                TILE,
                pixels,
                norm,
                take_buffers(),
            )
        }
    };
}

/// Logs an inference's outcome with defmt: the prediction and what it
/// cost (`unit` names the clock's ticks), or why it failed.
#[cfg(feature = "defmt")]
pub fn log_outcome<E: core::fmt::Debug>(res: &Result<Outcome, Failure<E>>, unit: &str) {
    match res {
        Ok(o) => {
            let [t0, t1, t2] = o.ticks;
            defmt::info!(
                "mpcvit: prediction {} (session {=u64:x}); set-up {} {}, inference {} {}, {} rounds, {} B out, {} B in, buffers used: tx {} B, rx {} B, tmp {} words",
                o.prediction,
                o.session,
                t1.wrapping_sub(t0),
                unit,
                t2.wrapping_sub(t1),
                unit,
                o.meter.rounds,
                o.meter.bytes_sent,
                o.meter.bytes_recv,
                o.high_water.tx,
                o.high_water.rx,
                o.high_water.tmp
            );
        }
        Err(Failure::Setup(e)) => defmt::error!("mpcvit: {}", e),
        Err(f @ Failure::Refused { .. }) => defmt::error!("mpcvit: the host refused: {}", f.reason().unwrap_or("?")),
        Err(Failure::Device(e)) => defmt::error!("mpcvit: failed: {}", defmt::Display2Format(e)),
    }
}
