//! The device party on a Raspberry Pi Pico (RP2040, Cortex-M0+ at 125 MHz):
//! one private inference per boot over UART0 (GP0 TX, GP1 RX, 921600 8N1),
//! which a USB-serial bridge and `socat` carry to `mpcvit host` (README).
//!
//! Flash holds the provisioning blob, the device key and the demo's test
//! images (build.rs); the nonce comes from the ring oscillator's random bit,
//! whitened through ChaCha. Static buffers only, sized at build time for the
//! blob's model and the tile. Logs go out over RTT with defmt.

#![no_std]
#![no_main]
// `*(&raw const STATIC)` reads the timer `static mut` without a reference
// to the static itself (the `static_mut_refs` lint).
#![allow(clippy::deref_addrof)]

use defmt::{error, info};
use defmt_rtt as _;
use fugit::RateExtU32;
use mpcvit_board::{Trng, log_outcome};
use mpcvit_core::prg::{Domain, Seed};
use panic_probe as _;
use rp2040_hal::{self as hal, Clock, pac};

/// The second-stage bootloader for the Pico's W25Q080 flash.
#[unsafe(link_section = ".boot2")]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

const XOSC_HZ: u32 = 12_000_000;
const BAUD: u32 = 921_600;

mpcvit_board::deployment!();

type Uart0 = hal::uart::UartPeripheral<
    hal::uart::Enabled,
    pac::UART0,
    (
        hal::gpio::Pin<hal::gpio::bank0::Gpio0, hal::gpio::FunctionUart, hal::gpio::PullDown>,
        hal::gpio::Pin<hal::gpio::bank0::Gpio1, hal::gpio::FunctionUart, hal::gpio::PullDown>,
    ),
>;

/// UART0 as an `embedded-io` 0.7 stream (the HAL speaks nb and an older
/// embedded-io).
struct Serial(Uart0);

impl embedded_io::ErrorType for Serial {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for Serial {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.0.read_raw(buf) {
                Ok(n) if n > 0 => return Ok(n),
                Ok(_) | Err(nb::Error::WouldBlock) => {}
                Err(nb::Error::Other(_)) => return Err(embedded_io::ErrorKind::InvalidData),
            }
        }
    }
}

impl embedded_io::Write for Serial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write_full_blocking(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// 32 random bits: 256 ring-oscillator bits (biased and correlated on
/// their own) whitened by a ChaCha derivation.
fn random_u32(rosc: &hal::rosc::RingOscillator<hal::rosc::Enabled>) -> u32 {
    let mut raw = [0u8; 32];
    for byte in raw.iter_mut() {
        for _ in 0..8 {
            *byte = (*byte << 1) | rosc.get_random_bit() as u8;
        }
    }
    let d = Seed::from_bytes(raw).derive(Domain::Other, 0);
    let mut b = [0u8; 4];
    b.copy_from_slice(&d.expose()[..4]);
    u32::from_le_bytes(b)
}

/// The SysTick-free clock of this board: the 1 MHz timer.
static mut TIMER: Option<hal::Timer> = None;

fn now_us() -> u64 {
    // SAFETY: written once in `main` before any call.
    unsafe { (*(&raw const TIMER)).as_ref().map_or(0, |t| t.get_counter().ticks()) }
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let mut pac = pac::Peripherals::take().expect("peripherals");
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(
        XOSC_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    ) else {
        halt("clocks")
    };
    let sio = hal::Sio::new(pac.SIO);
    let pins = hal::gpio::Pins::new(pac.IO_BANK0, pac.PADS_BANK0, sio.gpio_bank0, &mut pac.RESETS);
    let timer = hal::Timer::new(pac.TIMER, &mut pac.RESETS, &clocks);
    // SAFETY: the only write, before any read.
    unsafe { *(&raw mut TIMER) = Some(timer) };
    let uart = hal::uart::UartPeripheral::new(
        pac.UART0,
        (pins.gpio0.into_function(), pins.gpio1.into_function()),
        &mut pac.RESETS,
    )
    .enable(
        hal::uart::UartConfig::new(BAUD.Hz(), hal::uart::DataBits::Eight, None, hal::uart::StopBits::One),
        clocks.peripheral_clock.freq(),
    )
    .expect("uart");
    let rosc = hal::rosc::RingOscillator::new(pac.ROSC).initialize();

    info!(
        "mpcvit: image {}, tile {} {} {}",
        IMAGE_INDEX, TILE.rows, TILE.heads, TILE.queries
    );
    let res = run_bundled(&mut now_us, &mut Trng(|| random_u32(&rosc)), Serial(uart));
    log_outcome(&res, "us");
    loop {
        cortex_m::asm::wfi();
    }
}

fn halt(why: &str) -> ! {
    error!("mpcvit: {}", why);
    loop {
        cortex_m::asm::wfi();
    }
}
