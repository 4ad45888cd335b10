//! What every device firmware of mpcvit-rs shares: the device's weights read
//! in place from the provisioning blob in flash, and one private inference
//! (set-up, forward pass, argmax) over any `embedded-io` byte stream. A
//! board adds its clocks, its UART, its random source ([`Trng`]) and its
//! logging.
//!
//! `build_support.rs` (included by each board's `build.rs`) puts the blob,
//! the device key and an optional pre-shared key into `OUT_DIR` and writes
//! `sizes.rs`: the tile (`MPCVIT_TILE`) and the static buffers it needs for
//! the blob's model.

#![no_std]
#![deny(missing_docs)]

pub use embedded_io;
pub use mpcvit_core;
use mpcvit_core::ops::vit::{Weights, Wid};
use mpcvit_core::provision::BlobView;
pub use mpcvit_device;
pub use mpcvit_device::rand_core;
pub use mpcvit_device::session::{Buffers, Failure, Outcome};
use rand_core::{Infallible, TryCryptoRng, TryRng};

/// The Fashion-MNIST normalisation the bundled model was trained with.
pub use mpcvit_core::model::{FMNIST_MEAN, FMNIST_STD};

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

/// A board's hardware random source as the `rand_core` crypto RNG the
/// device's set-up draws its nonce from: `.0` returns 32 random bits (the
/// board's TRNG, or its entropy whitened by a PRF). The board vouches for
/// the source: that is what the `TryCryptoRng` marker says.
pub struct Trng<F: FnMut() -> u32>(pub F);

impl<F: FnMut() -> u32> TryRng for Trng<F> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0)())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let hi = u64::from((self.0)());
        Ok(hi << 32 | u64::from((self.0)()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(4) {
            let w = (self.0)().to_le_bytes();
            chunk.copy_from_slice(w.get(..chunk.len()).unwrap_or_default());
        }
        Ok(())
    }
}

impl<F: FnMut() -> u32> TryCryptoRng for Trng<F> {}

/// Declares a firmware's deployment in flash and its static buffers, from
/// `build_support.rs`'s files in `OUT_DIR`: `BLOB` (8-byte aligned), `KEY`,
/// `PSK` (empty without `MPCVIT_PSK`), `IMAGES` (the 16 bundled
/// Fashion-MNIST test images, IDX), the constants of `sizes.rs`, and
/// `take_buffers()`, which hands out the static buffers (call it once).
/// `deployment!(blob_section = ".name")` puts the blob in that link section
/// (a board whose memory map places it in external memory-mapped flash);
/// the firmware must make that memory readable before `run_bundled`.
#[macro_export]
macro_rules! deployment {
    () => {
        /// The provisioning blob (in the firmware's flash).
        static BLOB_BYTES: Aligned<[u8; BLOB_LEN]> =
            Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/device.blob")));
        $crate::deployment!(@rest);
    };
    (blob_section = $section:literal) => {
        /// The provisioning blob (in the link section the board names).
        #[unsafe(link_section = $section)]
        static BLOB_BYTES: Aligned<[u8; BLOB_LEN]> =
            Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/device.blob")));
        $crate::deployment!(@rest);
    };
    (@rest) => {
        #[repr(C, align(8))]
        struct Aligned<T: ?Sized>(T);

        const BLOB_LEN: usize = include_bytes!(concat!(env!("OUT_DIR"), "/device.blob")).len();
        static BLOB: &Aligned<[u8]> = &BLOB_BYTES;
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
        /// static buffers (take them once: call this once) and the nonce
        /// drawn from `rng`.
        #[allow(dead_code)]
        fn run_bundled<
            T: $crate::embedded_io::Read + $crate::embedded_io::Write,
            R: $crate::rand_core::TryCryptoRng,
        >(
            clock: &mut dyn FnMut() -> u64,
            rng: &mut R,
            io: T,
        ) -> Result<$crate::Outcome, $crate::Failure<T::Error>> {
            let weights = $crate::FlashWeights::new(&BLOB.0).map_err($crate::Failure::Setup)?;
            let pixels = image(IMAGE_INDEX).ok_or($crate::Failure::Setup("image index out of range"))?;
            let key = $crate::mpcvit_core::prg::Seed::from_bytes(KEY);
            let norm = (&$crate::FMNIST_MEAN[..], &$crate::FMNIST_STD[..]);
            let dep = $crate::mpcvit_device::session::Deployment {
                blob: weights.blob(),
                weights: &weights,
                key: &key,
            };
            $crate::mpcvit_device::session::infer(
                (clock, rng),
                io,
                &dep,
                (TILE, false),
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
        Err(Failure::Handshake(e) | Failure::Device(e)) => {
            defmt::error!("mpcvit: failed: {}", defmt::Display2Format(e))
        }
    }
}
