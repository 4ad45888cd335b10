//! The device party on QEMU's `mps2-an386` (Cortex-M4F): one private
//! inference per boot, over UART0 (which QEMU bridges to a TCP socket).
//!
//! Flash holds the provisioning blob, the device key and the demo's test
//! images (build.rs). At boot the firmware reads a 13-byte preamble from
//! the UART: `"MVQ1"`, a 64-bit seed and an image index. The seed, expanded
//! by the PRF, stands in for the hardware RNG a real board has (QEMU's mps2
//! has none) as the [`Trng`] the set-up draws its nonce from; the index
//! stands in for a camera. Then it runs the session set-up and the forward pass with
//! `mpcvit-device`, prints its report as one `fw: {...}` line on
//! semihosting stdout and exits QEMU with status 0 (or an error line and a
//! non-zero status). Static buffers only, no heap.

#![no_std]
#![no_main]
// `&mut *(&raw mut STATIC)` is how a `static mut` buffer is borrowed once
// without a reference to the static itself (the `static_mut_refs` lint).
#![allow(clippy::deref_addrof)]

use core::cell::Cell;
use core::ptr::{read_volatile, write_volatile};
use cortex_m::interrupt::Mutex;
use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::hprintln;
use mpcvit_board::mpcvit_device::session::{Deployment, infer};
use mpcvit_board::rand_core::TryRng;
use mpcvit_board::{FMNIST_MEAN, FMNIST_STD, Failure, FlashWeights, Outcome, Trng};
use mpcvit_core::prg::Seed;
use mpcvit_transport::seal::Sealed;

// ------------------------------------------------------------ flash data

// BLOB, KEY, PSK, IMAGES, TILE and the static buffers sized for the blob's
// model and the tile (build.rs).
mpcvit_board::deployment!();

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

/// TIMER0, a CMSDK APB timer: a 32-bit down counter at the 25 MHz
/// peripheral clock, reloaded from 0xFFFF_FFFF (one wrap every 171.8 s of
/// virtual time). SysTick's 24 bits wrap every 0.67 s, and under `-icount`
/// QEMU reloads it on a guest read before it raises the wrap, so readings
/// extended by counting wraps could fall one period behind.
const TIMER0: usize = 0x4000_0000;
const T_CTRL: usize = 0x00;
const T_VALUE: usize = 0x04;
const T_RELOAD: usize = 0x08;

fn timer_rd(off: usize) -> u32 {
    // SAFETY: a CMSDK APB timer register of this board.
    unsafe { read_volatile((TIMER0 + off) as *const u32) }
}

fn timer_wr(off: usize, v: u32) {
    // SAFETY: a CMSDK APB timer register of this board.
    unsafe { write_volatile((TIMER0 + off) as *mut u32, v) }
}

fn start_timer() {
    timer_wr(T_CTRL, 0);
    timer_wr(T_RELOAD, u32::MAX);
    timer_wr(T_VALUE, u32::MAX);
    // Enabled, internal clock, no interrupt.
    timer_wr(T_CTRL, 1);
}

/// The last raw timer reading and the ticks counted up to it.
static CLOCK: Mutex<Cell<(u32, u64)>> = Mutex::new(Cell::new((u32::MAX, 0)));

/// Ticks (25 MHz) since [`start_timer`]: each reading adds the counter's
/// wrapping distance to the one before, exact as long as readings are less
/// than one 32-bit period apart (they are a UART wait apart).
fn now_ticks() -> u64 {
    cortex_m::interrupt::free(|cs| {
        let raw = timer_rd(T_VALUE);
        let clock = CLOCK.borrow(cs);
        let (last, ticks) = clock.get();
        let ticks = ticks + u64::from(last.wrapping_sub(raw));
        clock.set((raw, ticks));
        ticks
    })
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

fn fail(code: u32, what: &str) -> ! {
    hprintln!("fw: error: {}", what);
    qemu_exit(code)
}

#[entry]
fn main() -> ! {
    wr(BAUDDIV, 16);
    wr(CTRL, 0b11);
    start_timer();

    let weights = match FlashWeights::new(&BLOB.0) {
        Ok(w) => w,
        Err(e) => fail(2, e),
    };
    let arch = weights.blob().arch();
    if arch.channels != 1 || arch.image != 28 {
        fail(2, "this firmware's test images are 28x28 grey");
    }

    // Preamble: "MVQ1", the random source's seed, image index.
    use embedded_io::Read as _;
    let mut uart = Uart;
    let mut pre = [0u8; 13];
    if uart.read_exact(&mut pre).is_err() || pre[..4] != *b"MVQ1" {
        fail(4, "bad preamble");
    }
    let mut nb = [0u8; 8];
    nb.copy_from_slice(&pre[4..12]);
    let mut raw = [0u8; 32];
    raw[..8].copy_from_slice(&nb);
    let stand_in = Seed::from_bytes(raw);
    let mut drawn = 0u64;
    let mut rng = Trng(move || {
        drawn += 1;
        let d = stand_in.derive(mpcvit_core::prg::Domain::Other, drawn);
        let mut w = [0u8; 4];
        w.copy_from_slice(&d.expose()[..4]);
        u32::from_le_bytes(w)
    });
    let index = pre[12] as usize;
    let Some(image) = image(index) else {
        fail(4, "image index out of range")
    };
    let bufs = take_buffers();
    let key = Seed::from_bytes(KEY);
    let norm = (&FMNIST_MEAN[..], &FMNIST_STD[..]);
    let dep = Deployment {
        blob: weights.blob(),
        weights: &weights,
        key: &key,
    };
    // UART waits at each clock reading: the inference's own are the last
    // two readings apart.
    let mut waits = [0u64; 3];
    let mut k = 0;
    let mut clock = || {
        waits[k.min(2)] = WAIT_TICKS.get();
        k += 1;
        now_ticks()
    };
    if PSK.len() == 32 {
        let mut psk = [0u8; 32];
        psk.copy_from_slice(PSK);
        // The salt must be fresh per connection: from the random source.
        let mut salt = [0u8; 12];
        let Ok(()) = rng.try_fill_bytes(&mut salt);
        // SAFETY: the record buffers are borrowed once, here.
        let (stx, srx) = unsafe { (&mut *(&raw mut SEAL_TX), &mut *(&raw mut SEAL_RX)) };
        match Sealed::initiator(Uart, &psk, salt, &mut stx[..], &mut srx[..]) {
            Ok(io) => {
                let r = infer((&mut clock, &mut rng), io, &dep, (TILE, false), image, norm, bufs);
                report(r, true, waits[2] - waits[1])
            }
            Err(_) => fail(6, "cannot open the sealed link"),
        }
    } else {
        let r = infer((&mut clock, &mut rng), Uart, &dep, (TILE, false), image, norm, bufs);
        report(r, false, waits[2] - waits[1])
    }
}

/// Prints the outcome as one `fw: {...}` line (or an error line) and exits.
fn report<E: core::fmt::Debug>(res: Result<Outcome, Failure<E>>, sealed: bool, wait: u64) -> ! {
    let o = match res {
        Ok(o) => o,
        Err(Failure::Setup(e)) => fail(3, e),
        Err(f @ Failure::Refused { .. }) => {
            hprintln!("fw: error: the host refused the session: {}", f.reason().unwrap_or("?"));
            qemu_exit(6)
        }
        Err(Failure::Handshake(e) | Failure::Device(e)) => {
            hprintln!("fw: error: set-up or inference failed: {}", e);
            qemu_exit(7)
        }
    };
    // SAFETY: the inference is over; nothing else borrows LOGITS now.
    let logits: &[u64] = unsafe { &*(&raw const LOGITS) };
    let logits = &logits[..o.classes.min(CLASSES)];
    let [t_start, t0, t1] = o.ticks;
    let (m, hw) = (o.meter, o.high_water);
    // One line the harness parses. Ticks are TIMER0's at 25 MHz; under
    // `-icount shift=0` one tick is 40 instructions.
    hprintln!(
        "fw: {{\"session\":\"{:016x}\",\"prediction\":{},\"logits\":{:?},\"ticks_total\":{},\"ticks_wait\":{},\"ticks_setup\":{},\"bytes_sent\":{},\"bytes_recv\":{},\"uart_bytes_out\":{},\"uart_bytes_in\":{},\"rounds\":{},\"stack_bytes\":{},\"static_bytes\":{},\"scratch_bytes\":{},\"tx_bytes\":{},\"rx_bytes\":{},\"tmp_bytes\":{},\"blob_bytes\":{},\"sealed\":{},\"tile\":[{},{},{}]}}",
        o.session,
        o.prediction,
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
        8 * SCRATCH_WORDS,
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
