//! The device party on the B-L475E-IOT01A board (STM32L475VG, Cortex-M4F
//! at 80 MHz, 128 KiB of RAM): one private inference per boot over USART1
//! (PB6 TX, PB7 RX, the ST-LINK's virtual COM port, 921600 8N1), which
//! `socat` carries to `mpcvit host` (README).
//!
//! The internal flash (1 MiB) holds the code, the device key and the demo's
//! test images; the provisioning blob (1 MB for the bundled model) is in the
//! board's 8 MiB QSPI flash, which the firmware maps at `0x90000000`
//! before it reads a weight (build.rs, `memory.x`). The nonce comes from the
//! hardware RNG. Static buffers only, sized at build time for the blob's
//! model and the tile. Logs go out over RTT with defmt; DWT's cycle counter
//! times the inference.

#![no_std]
#![no_main]

use defmt::{error, info};
use defmt_rtt as _;
use mpcvit_board::{Trng, log_outcome};
use panic_probe as _;
use stm32l4xx_hal::hal::serial::{Read as _, Write as _};
use stm32l4xx_hal::qspi::{Qspi, QspiConfig};
use stm32l4xx_hal::rcc::{MsiFreq, PllConfig, PllDivider, PllSource};
use stm32l4xx_hal::rng::RngCore;
use stm32l4xx_hal::{pac, prelude::*, serial};

const BAUD: u32 = 921_600;

mpcvit_board::deployment!(blob_section = ".qspi");

/// USART1 as an `embedded-io` 0.7 stream over the HAL's `embedded-hal` 0.2
/// byte interface.
struct Serial(serial::Serial<pac::USART1, (PinTx, PinRx)>);

type PinTx = stm32l4xx_hal::gpio::PB6<stm32l4xx_hal::gpio::Alternate<stm32l4xx_hal::gpio::PushPull, 7>>;
type PinRx = stm32l4xx_hal::gpio::PB7<stm32l4xx_hal::gpio::Alternate<stm32l4xx_hal::gpio::PushPull, 7>>;

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

/// Puts QUADSPI in memory-mapped mode: every read of `0x90000000..` becomes
/// a single-line FAST READ (`0x0B`, 24-bit address, 8 dummy cycles) of the
/// MX25R6435F. Single-line needs no setting in the flash's status register
/// (quad reads would need its QE bit): slower, but nothing to get wrong.
fn map_qspi() {
    // SAFETY: QUADSPI was configured and enabled by `Qspi::new` and is not
    // used through the HAL after this; this only writes its command
    // register once, before anything reads the mapped region.
    let q = unsafe { &*pac::QUADSPI::ptr() };
    while q.sr.read().busy().bit_is_set() {}
    q.ccr.write(|w| unsafe {
        w.fmode()
            .bits(0b11)
            .dmode()
            .bits(0b01)
            .dcyc()
            .bits(8)
            .adsize()
            .bits(0b10)
            .admode()
            .bits(0b01)
            .imode()
            .bits(0b01)
            .instruction()
            .bits(0x0B)
    });
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let (Some(dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        halt("peripherals")
    };
    let mut flash = dp.FLASH.constrain();
    let mut rcc = dp.RCC.constrain();
    let mut pwr = dp.PWR.constrain(&mut rcc.apb1r1);
    // MSI at 48 MHz clocks the RNG (the L475 has no HSI48) and the PLL:
    // 48 MHz / 3 x 10 / 2 = 80 MHz system clock.
    let clocks = rcc
        .cfgr
        .msi(MsiFreq::RANGE48M)
        .pll_source(PllSource::MSI)
        .sysclk_with_pll(80.MHz(), PllConfig::new(3, 10, PllDivider::Div2))
        .pclk1(80.MHz())
        .pclk2(80.MHz())
        .freeze(&mut flash.acr, &mut pwr);
    cp.DCB.enable_trace();
    cp.DWT.enable_cycle_counter();

    let mut gpiob = dp.GPIOB.split(&mut rcc.ahb2);
    let tx = gpiob
        .pb6
        .into_alternate(&mut gpiob.moder, &mut gpiob.otyper, &mut gpiob.afrl);
    let rx = gpiob
        .pb7
        .into_alternate(&mut gpiob.moder, &mut gpiob.otyper, &mut gpiob.afrl);
    let uart = serial::Serial::usart1(
        dp.USART1,
        (tx, rx),
        serial::Config::default().baudrate(BAUD.bps()),
        clocks,
        &mut rcc.apb2,
    );

    // QSPI flash: PE10 CLK, PE11 NCS, PE12-PE15 IO0-IO3 (AF10); 80 MHz /
    // 3 = 26.7 MHz, 8 MiB
    let mut gpioe = dp.GPIOE.split(&mut rcc.ahb2);
    let pins = (
        gpioe
            .pe10
            .into_alternate(&mut gpioe.moder, &mut gpioe.otyper, &mut gpioe.afrh),
        gpioe
            .pe11
            .into_alternate(&mut gpioe.moder, &mut gpioe.otyper, &mut gpioe.afrh),
        gpioe
            .pe12
            .into_alternate(&mut gpioe.moder, &mut gpioe.otyper, &mut gpioe.afrh),
        gpioe
            .pe13
            .into_alternate(&mut gpioe.moder, &mut gpioe.otyper, &mut gpioe.afrh),
        gpioe
            .pe14
            .into_alternate(&mut gpioe.moder, &mut gpioe.otyper, &mut gpioe.afrh),
        gpioe
            .pe15
            .into_alternate(&mut gpioe.moder, &mut gpioe.otyper, &mut gpioe.afrh),
    );
    let _qspi = Qspi::new(
        dp.QUADSPI,
        pins,
        &mut rcc.ahb3,
        QspiConfig::default().clock_prescaler(2).flash_size(22),
    );
    map_qspi();

    let mut rng = dp.RNG.enable(&mut rcc.ahb2, clocks);

    info!(
        "mpcvit: image {}, tile {} {} {}",
        IMAGE_INDEX, TILE.rows, TILE.heads, TILE.queries
    );
    // The 32-bit cycle counter wraps after 53.7 s at 80 MHz: times are
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
