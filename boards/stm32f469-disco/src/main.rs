//! The device party on the STM32F469I-DISCO board (STM32F469NI, Cortex-M4F
//! at 180 MHz): one private inference per boot over USART3 (PB10 TX, PB11
//! RX, the ST-LINK's virtual COM port, 921600 8N1), which `socat` carries to
//! `mpcvit host` (README).
//!
//! Flash holds the provisioning blob, the device key and the demo's test
//! images (build.rs); the nonce comes from the hardware RNG. Static buffers
//! only, sized at build time for the blob's model and the tile. Logs go out
//! over RTT with defmt; DWT's cycle counter times the inference.

#![no_std]
#![no_main]

use defmt::{error, info};
use defmt_rtt as _;
use embedded_hal_nb::serial::{Read as _, Write as _};
use mpcvit_board::{Trng, log_outcome};
use panic_probe as _;
use rand_core::RngCore;
use stm32f4xx_hal::{pac, prelude::*, serial};

const BAUD: u32 = 921_600;

mpcvit_board::deployment!();

/// USART3 as an `embedded-io` 0.7 stream over the HAL's `embedded-hal-nb`
/// byte interface.
struct Serial(serial::Serial<pac::USART3>);

impl embedded_io::ErrorType for Serial {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for Serial {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let Some(first) = buf.first_mut() else { return Ok(0) };
        *first = nb::block!(self.0.read()).map_err(|_| embedded_io::ErrorKind::InvalidData)?;
        let mut n = 1;
        // Take whatever else is already there without waiting.
        for b in buf.iter_mut().skip(1) {
            match self.0.read() {
                Ok(v) => *b = v,
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(_)) => return Err(embedded_io::ErrorKind::InvalidData),
            }
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Serial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &b in buf {
            nb::block!(self.0.write(b)).map_err(|_| embedded_io::ErrorKind::Other)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        nb::block!(self.0.flush()).map_err(|_| embedded_io::ErrorKind::Other)
    }
}

fn cycles() -> u64 {
    u64::from(cortex_m::peripheral::DWT::cycle_count())
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let (Some(dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        halt("peripherals")
    };
    // 8 MHz crystal on the DISCO board; the RNG needs the 48 MHz clock.
    let clocks = dp
        .RCC
        .constrain()
        .cfgr
        .use_hse(8.MHz())
        .sysclk(180.MHz())
        .require_pll48clk()
        .freeze();
    cp.DCB.enable_trace();
    cp.DWT.enable_cycle_counter();
    let gpiob = dp.GPIOB.split();
    let Ok(uart) = dp.USART3.serial(
        (gpiob.pb10, gpiob.pb11),
        serial::Config::default().baudrate(BAUD.bps()),
        &clocks,
    ) else {
        halt("uart")
    };
    let mut rng = dp.RNG.constrain(&clocks);

    info!(
        "mpcvit: image {}, tile {} {} {}",
        IMAGE_INDEX, TILE.rows, TILE.heads, TILE.queries
    );
    // The 32-bit cycle counter wraps after 23.9 s at 180 MHz: times are
    // modulo 2^32 cycles (the meter's bytes and rounds are exact).
    let res = run_bundled(&mut cycles, &mut Trng(|| rng.next_u32()), Serial(uart));
    log_outcome(&res, "cycles (mod 2^32)");
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
