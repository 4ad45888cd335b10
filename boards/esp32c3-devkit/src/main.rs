//! The device party on an ESP32-C3 board (RISC-V at 160 MHz): one private
//! inference per boot over UART1 (GPIO4 TX, GPIO5 RX, 921600 8N1) through a
//! 3.3 V USB-serial adapter, which `socat` carries to `mpcvit host`
//! (README). defmt logs go out over the C3's built-in USB-Serial-JTAG.
//!
//! Flash holds the provisioning blob, the device key and the demo's test
//! images (build.rs); the nonce comes from the hardware RNG with the SAR ADC
//! entropy source on. Static buffers only, sized at build time for the
//! blob's model and the tile.

#![no_std]
#![no_main]

use defmt::info;
use esp_backtrace as _;
use esp_hal::rng::{Trng, TrngSource};
use esp_hal::time::Instant;
use esp_hal::uart::{self, Uart};
use esp_hal::{Blocking, main};
use esp_println as _;
use mpcvit_board::log_outcome;

esp_bootloader_esp_idf::esp_app_desc!();

const BAUD: u32 = 921_600;

mpcvit_board::deployment!();

/// UART1 as an `embedded-io` 0.7 stream over esp-hal's blocking calls.
struct Serial(Uart<'static, Blocking>);

impl embedded_io::ErrorType for Serial {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for Serial {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Blocks until at least one byte is there.
        self.0.read(buf).map_err(|_| embedded_io::ErrorKind::InvalidData)
    }
}

impl embedded_io::Write for Serial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write(buf).map_err(|_| embedded_io::ErrorKind::Other)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush().map_err(|_| embedded_io::ErrorKind::Other)
    }
}

fn micros() -> u64 {
    Instant::now().duration_since_epoch().as_micros()
}

#[main]
fn main() -> ! {
    let p = esp_hal::init(esp_hal::Config::default().with_cpu_clock(esp_hal::clock::CpuClock::max()));
    let Ok(uart) = Uart::new(p.UART1, uart::Config::default().with_baudrate(BAUD)) else {
        halt("uart")
    };
    let uart = uart.with_tx(p.GPIO4).with_rx(p.GPIO5);
    let _entropy = TrngSource::new(p.RNG, p.ADC1);
    let Ok(trng) = Trng::try_new() else { halt("rng") };

    info!(
        "mpcvit: image {}, tile {} {} {}",
        IMAGE_INDEX, TILE.rows, TILE.heads, TILE.queries
    );
    let res = run_bundled(&mut micros, &mut mpcvit_board::Trng(|| trng.random()), Serial(uart));
    log_outcome(&res, "us");
    halt("done")
}

fn halt(why: &str) -> ! {
    info!("mpcvit: {}", why);
    loop {
        core::hint::spin_loop();
    }
}
