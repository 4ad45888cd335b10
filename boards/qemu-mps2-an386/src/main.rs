//! The device party on QEMU's `mps2-an386` (Cortex-M4F): one private
//! inference per boot, over UART0 (which QEMU bridges to a TCP socket).
//!
//! Flash holds the provisioning blob, the device key and the demo's test
//! images (build.rs). At boot the firmware reads a 13-byte preamble from
//! the UART: `"MVQ1"`, a 64-bit nonce and an image index. The nonce stands
//! in for the hardware RNG a real board has (QEMU's mps2 has none), the index
//! for a camera. Then it runs the session set-up and the forward pass with
//! `mpcvit-device`, prints its report as one `fw: {...}` line on
//! semihosting stdout and exits QEMU with status 0 (or an error line and a
//! non-zero status). Static buffers only, no heap.

#![no_std]
#![no_main]

use core::cell::Cell;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use cortex_m::interrupt::Mutex;
use cortex_m::peripheral::{SYST, syst::SystClkSource};
use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::hprintln;
use mpcvit_core::FixedPoint;
use mpcvit_core::ops::vit::{self, Tile, VitSpec, Weights, Wid};
use mpcvit_core::prg::Seed;
use mpcvit_core::provision::BlobView;
use mpcvit_device::{DeviceError, DeviceParty};
use mpcvit_transport::Link;
use mpcvit_transport::seal::Sealed;

// ------------------------------------------------------------ flash data

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

static BLOB: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/device.blob")));
static KEY: [u8; 32] = *include_bytes!(concat!(env!("OUT_DIR"), "/device.key"));
/// Pre-shared key of a sealed host link (`MPCVIT_PSK`), or empty.
static PSK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/psk.bin"));
static IMAGES: &[u8] = include_bytes!("../../../models/fmnist-t10k-16-images-idx3-ubyte");

// ------------------------------------------------------------ RAM buffers

// TILE and the buffer sizes it needs for the blob's model (build.rs).
include!(concat!(env!("OUT_DIR"), "/sizes.rs"));
const MAX_CLASSES: usize = 256;

static mut SCRATCH: [u64; SCRATCH_WORDS] = [0; SCRATCH_WORDS];
static mut TX: [u8; TX_BYTES] = [0; TX_BYTES];
static mut RX: [u8; RX_BYTES] = [0; RX_BYTES];
static mut TMP: [u64; TMP_WORDS] = [0; TMP_WORDS];
static mut PATCHES: [u64; PATCH_WORDS] = [0; PATCH_WORDS];
/// Record buffers of the sealed link (unused without a PSK).
const RECORD_BYTES: usize = 4 << 10;
static mut SEAL_TX: [u8; RECORD_BYTES] = [0; RECORD_BYTES];
static mut SEAL_RX: [u8; RECORD_BYTES] = [0; RECORD_BYTES];

// ------------------------------------------------------------ UART0

const UART0: usize = 0x4000_4000;
const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const TXFULL: u32 = 1 << 0;
const RXFULL: u32 = 1 << 1;

fn rd(off: usize) -> u32 {
    // SAFETY: a CMSDK UART register of this board.
    unsafe { read_volatile((UART0 + off) as *const u32) }
}

fn wr(off: usize, v: u32) {
    // SAFETY: a CMSDK UART register of this board.
    unsafe { write_volatile((UART0 + off) as *mut u32, v) }
}

/// Ticks spent waiting for UART bytes (to separate compute from link time).
static WAIT_TICKS: Counter = Counter::new();
static BYTES_IN: Counter = Counter::new();
static BYTES_OUT: Counter = Counter::new();

/// A 64-bit counter (the M4 has no 64-bit atomics).
struct Counter(Mutex<Cell<u64>>);

impl Counter {
    const fn new() -> Self {
        Self(Mutex::new(Cell::new(0)))
    }

    fn add(&self, v: u64) {
        cortex_m::interrupt::free(|cs| {
            let c = self.0.borrow(cs);
            c.set(c.get() + v);
        });
    }

    fn get(&self) -> u64 {
        cortex_m::interrupt::free(|cs| self.0.borrow(cs).get())
    }
}

fn getb() -> u8 {
    if rd(STATE) & RXFULL == 0 {
        let t0 = now_ticks();
        while rd(STATE) & RXFULL == 0 {}
        WAIT_TICKS.add(now_ticks() - t0);
    }
    rd(DATA) as u8
}

fn putb(b: u8) {
    if rd(STATE) & TXFULL != 0 {
        let t0 = now_ticks();
        while rd(STATE) & TXFULL != 0 {}
        WAIT_TICKS.add(now_ticks() - t0);
    }
    wr(DATA, b as u32);
}

struct Uart;

impl embedded_io::ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let Some(first) = buf.first_mut() else { return Ok(0) };
        *first = getb();
        let mut n = 1;
        // Take whatever else is already there without waiting.
        for b in buf.iter_mut().skip(1) {
            if rd(STATE) & RXFULL == 0 {
                break;
            }
            *b = rd(DATA) as u8;
            n += 1;
        }
        BYTES_IN.add(n as u64);
        Ok(n)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        buf.iter().for_each(|&b| putb(b));
        BYTES_OUT.add(buf.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

// ------------------------------------------------------------ time, stack, exit

static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.store(WRAPS.load(Relaxed) + 1, Relaxed);
}

fn now_ticks() -> u64 {
    loop {
        let w = WRAPS.load(Relaxed);
        let cvr = SYST::get_current();
        if w == WRAPS.load(Relaxed) {
            return ((w as u64) << 24) | (0x00FF_FFFF - cvr) as u64;
        }
    }
}

unsafe extern "C" {
    static _stack_end: u32;
    static _stack_start: u32;
    static __sdata: u32;
    static __edata: u32;
    static __sbss: u32;
    static __ebss: u32;
}

fn stack_used() -> usize {
    let top = &raw const _stack_start as usize;
    let mut p = &raw const _stack_end as usize;
    // SAFETY: reads painted stack words between the linker's bounds.
    while p < top && unsafe { read_volatile(p as *const u32) } == 0xCCCC_CCCC {
        p += 4;
    }
    top - p
}

fn static_bytes() -> usize {
    (&raw const __edata as usize - &raw const __sdata as usize)
        + (&raw const __ebss as usize - &raw const __sbss as usize)
}

fn qemu_exit(code: u32) -> ! {
    let args = [0x20026usize, code as usize];
    // SAFETY: semihosting SYS_EXIT_EXTENDED.
    unsafe { cortex_m_semihosting::syscall(0x20, &args) };
    loop {
        cortex_m::asm::bkpt();
    }
}

// ------------------------------------------------------------ the device

/// The device's words, read in place from the blob in flash.
struct FlashWeights {
    view: BlobView<'static>,
    words: &'static [u64],
}

impl Weights for FlashWeights {
    fn get(&self, id: Wid) -> &[u64] {
        self.view.word_range(id).and_then(|r| self.words.get(r)).unwrap_or(&[])
    }
}

fn fail(code: u32, what: &str) -> ! {
    hprintln!("fw: error: {}", what);
    qemu_exit(code)
}

#[entry]
fn main() -> ! {
    let Some(cp) = cortex_m::Peripherals::take() else {
        fail(9, "peripherals")
    };
    wr(BAUDDIV, 16);
    wr(CTRL, 0b11);
    let mut syst = cp.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();

    let blob = match BlobView::parse(&BLOB.0) {
        Ok(b) => b,
        Err(_) => fail(2, "the provisioning blob in flash is damaged"),
    };
    let off = blob.words_offset();
    let nwords = (BLOB.0.len() - off - 4) / 8;
    let ptr = BLOB.0[off..].as_ptr();
    if ptr as usize % 8 != 0 {
        fail(2, "blob words are not aligned");
    }
    // SAFETY: 8-aligned, in bounds, immutable flash data; LE words on a LE core.
    let words: &'static [u64] = unsafe { core::slice::from_raw_parts(ptr as *const u64, nwords) };
    let weights = FlashWeights { view: blob, words };
    let arch = blob.arch();
    let Ok(fp) = FixedPoint::new(blob.frac_bits()) else {
        fail(2, "fractional bits")
    };
    if arch.channels != 1 || arch.image != 28 || arch.classes > MAX_CLASSES {
        fail(2, "this firmware's test images are 28x28 grey");
    }
    let np = (arch.tokens() - 1) * arch.patch_len();
    if vit::scratch_len(&arch, TILE) > SCRATCH_WORDS || np > PATCH_WORDS {
        fail(3, "the model needs more RAM than this firmware reserves");
    }

    // Preamble: "MVQ1", nonce, image index.
    use embedded_io::Read as _;
    let mut uart = Uart;
    let mut pre = [0u8; 13];
    if uart.read_exact(&mut pre).is_err() || pre[..4] != *b"MVQ1" {
        fail(4, "bad preamble");
    }
    let mut nb = [0u8; 8];
    nb.copy_from_slice(&pre[4..12]);
    let nonce = u64::from_le_bytes(nb);
    let index = pre[12] as usize;
    let image = match IMAGES.get(16 + index * 784..16 + (index + 1) * 784) {
        Some(i) => i,
        None => fail(4, "image index out of range"),
    };

    // SAFETY: each static buffer is borrowed once, here, for the whole run.
    let (scratch, tx, rx, tmp, patches) = unsafe {
        (
            &mut *(&raw mut SCRATCH),
            &mut *(&raw mut TX),
            &mut *(&raw mut RX),
            &mut *(&raw mut TMP),
            &mut *(&raw mut PATCHES),
        )
    };
    let patches = &mut patches[..np];
    let t_start = now_ticks();
    if vit::patches_from_pixels(&arch, fp, image, &[0.2860], &[0.3530], patches).is_err() {
        fail(5, "patch encoding");
    }
    let key = Seed::from_bytes(KEY);
    let job = Job {
        key: &key,
        nonce,
        blob,
        weights: &weights,
        fp,
        patches,
        scratch: &mut scratch[..],
        tx: &mut tx[..],
        rx: &mut rx[..],
        tmp: &mut tmp[..],
        t_start,
    };
    if PSK.len() == 32 {
        let mut psk = [0u8; 32];
        psk.copy_from_slice(PSK);
        // The salt must be fresh per connection: derive it from the nonce.
        let d = key.derive(mpcvit_core::prg::Domain::Other, nonce);
        let mut salt = [0u8; 12];
        salt.copy_from_slice(&d.expose()[..12]);
        // SAFETY: the record buffers are borrowed once, here.
        let (stx, srx) = unsafe { (&mut *(&raw mut SEAL_TX), &mut *(&raw mut SEAL_RX)) };
        match Sealed::initiator(Uart, &psk, salt, &mut stx[..], &mut srx[..]) {
            Ok(io) => run(io, job, true),
            Err(_) => fail(6, "cannot open the sealed link"),
        }
    } else {
        run(Uart, job, false)
    }
}

/// Everything one inference needs besides the link.
struct Job<'a> {
    key: &'a Seed,
    nonce: u64,
    blob: BlobView<'static>,
    weights: &'a FlashWeights,
    fp: FixedPoint,
    patches: &'a [u64],
    scratch: &'a mut [u64],
    tx: &'a mut [u8],
    rx: &'a mut [u8],
    tmp: &'a mut [u64],
    t_start: u64,
}

fn run<T: embedded_io::Read + embedded_io::Write>(io: T, job: Job<'_>, sealed: bool) -> ! {
    let Job {
        key,
        nonce,
        blob,
        weights,
        fp,
        patches,
        scratch,
        tx,
        rx,
        tmp,
        t_start,
    } = job;
    let arch = blob.arch();
    let mut link = Link::new(io, 0);
    let (sid, kd) = match mpcvit_device::session::open(
        &mut link,
        key,
        nonce,
        blob.model_crc(),
        blob.frac_bits() as u8,
        TILE,
        &mut rx[..],
    ) {
        Ok(v) => v,
        Err(DeviceError::Refused { reason_len }) => {
            let why = core::str::from_utf8(&rx[..reason_len.min(RX_BYTES)]).unwrap_or("?");
            hprintln!("fw: error: the host refused the session: {}", why);
            qemu_exit(6)
        }
        Err(e) => {
            hprintln!("fw: error: set-up failed: {}", e);
            qemu_exit(6)
        }
    };
    let m0 = link.meter();
    let (w0, t0) = (WAIT_TICKS.get(), now_ticks());
    let mut party = DeviceParty::new(fp, link, &kd, sid, tx, rx, tmp);
    let spec = VitSpec {
        arch,
        fp,
        model: &blob,
        tile: TILE,
    };
    let mut logits = [0u64; MAX_CLASSES];
    let logits = &mut logits[..arch.classes];
    if let Err(e) = vit::forward(&mut party, &spec, weights, patches, logits, scratch) {
        hprintln!("fw: error: inference failed: {}", e);
        qemu_exit(7);
    }
    let t1 = now_ticks();
    let wait = WAIT_TICKS.get() - w0;
    let m = party.link().meter().since(&m0);
    let hw = party.high_water();
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if (v as i64) > (logits[best] as i64) {
            best = i;
        }
    }
    // One line the harness parses. Ticks are SysTick at 25 MHz; under
    // `-icount shift=0` one tick is 40 instructions.
    hprintln!(
        "fw: {{\"session\":\"{:016x}\",\"prediction\":{},\"logits\":{:?},\"ticks_total\":{},\"ticks_wait\":{},\"ticks_setup\":{},\"bytes_sent\":{},\"bytes_recv\":{},\"uart_bytes_out\":{},\"uart_bytes_in\":{},\"rounds\":{},\"stack_bytes\":{},\"static_bytes\":{},\"scratch_bytes\":{},\"tx_bytes\":{},\"rx_bytes\":{},\"tmp_bytes\":{},\"blob_bytes\":{},\"sealed\":{},\"tile\":[{},{},{}]}}",
        sid.0,
        best,
        LogitsI64(logits),
        t1 - t0,
        wait,
        t0 - t_start,
        m.bytes_sent,
        m.bytes_recv,
        BYTES_OUT.get(),
        BYTES_IN.get(),
        m.rounds,
        stack_used(),
        static_bytes(),
        8 * vit::scratch_len(&arch, TILE),
        hw.tx,
        hw.rx,
        8 * hw.tmp,
        BLOB.0.len(),
        sealed,
        TILE.rows,
        TILE.heads,
        TILE.queries
    );
    qemu_exit(0)
}

/// Logits as signed raw fixed-point integers, JSON array syntax.
struct LogitsI64<'a>(&'a [u64]);

impl core::fmt::Debug for LogitsI64<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|&v| v as i64)).finish()
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("fw: PANIC: {}", info);
    qemu_exit(101)
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    hprintln!("fw: HARDFAULT: {:?}", ef);
    qemu_exit(102)
}
