//! Link shaping (std): makes a real byte stream behave like a slower link so
//! that measured times include bandwidth and latency.
//!
//! The model is the one the benchmarks use to estimate latency: every byte
//! costs `8 / bits_per_s` seconds, and every change from sending to
//! receiving (a round, as [`crate::Meter`] counts them) costs one round-trip
//! time. [`Shaped`] applies it by sleeping in the party that wraps its stream
//! (one end of the link is enough): serialization time after each write and
//! read, and the round-trip time before the first read after a write. Short
//! waits are accumulated and slept once they reach a millisecond, because the
//! OS cannot sleep for nanoseconds.

use std::time::{Duration, Instant};

/// A link's bandwidth and round-trip time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    /// Name (`lan`, `wan`, `ble`, `uart`).
    pub name: &'static str,
    /// Bandwidth, bit/s.
    pub bits_per_s: f64,
    /// Round-trip time, s.
    pub rtt_s: f64,
}

impl Profile {
    /// 1 Gbit/s, 0.5 ms (the LAN setting of MPC papers).
    pub const LAN: Self = Self {
        name: "lan",
        bits_per_s: 1e9,
        rtt_s: 0.5e-3,
    };
    /// 400 Mbit/s, 40 ms (Cheetah's WAN, used by the MPCViT paper).
    pub const WAN: Self = Self {
        name: "wan",
        bits_per_s: 400e6,
        rtt_s: 40e-3,
    };
    /// Bluetooth LE 2M PHY: ~1.4 Mbit/s of application throughput, a
    /// 7.5 ms connection interval (a round waits about two).
    pub const BLE: Self = Self {
        name: "ble",
        bits_per_s: 1.4e6,
        rtt_s: 15e-3,
    };
    /// A UART at 921600 baud, 8N1 (10 line bits a byte), wire latency only.
    pub const UART: Self = Self {
        name: "uart",
        bits_per_s: 921_600.0 * 8.0 / 10.0,
        rtt_s: 0.1e-3,
    };
    /// All named profiles.
    pub const ALL: [Self; 4] = [Self::LAN, Self::WAN, Self::BLE, Self::UART];

    /// A profile by name.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name == name)
    }

    /// Seconds this link adds to `rounds` rounds carrying `bytes` bytes (both
    /// directions), on top of computation.
    pub fn added_s(&self, rounds: u64, bytes: u64) -> f64 {
        rounds as f64 * self.rtt_s + bytes as f64 * 8.0 / self.bits_per_s
    }
}

/// A byte stream with a [`Profile`] applied (or passed through with `None`).
#[derive(Debug)]
pub struct Shaped<T> {
    inner: T,
    profile: Option<Profile>,
    debt: Duration,
    last_was_write: bool,
    slept: Duration,
}

impl<T> Shaped<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, profile: Option<Profile>) -> Self {
        Self {
            inner,
            profile,
            debt: Duration::ZERO,
            last_was_write: false,
            slept: Duration::ZERO,
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The stream, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Time spent sleeping to shape the link so far.
    pub fn slept(&self) -> Duration {
        self.slept
    }

    fn charge(&mut self, bytes: usize, turn: bool) {
        let Some(p) = self.profile else { return };
        self.debt += Duration::from_secs_f64(bytes as f64 * 8.0 / p.bits_per_s);
        if turn {
            self.debt += Duration::from_secs_f64(p.rtt_s);
        }
        if self.debt >= Duration::from_millis(1) || turn {
            let t0 = Instant::now();
            std::thread::sleep(self.debt);
            self.slept += t0.elapsed();
            self.debt = Duration::ZERO;
        }
    }
}

impl<T: embedded_io::ErrorType> embedded_io::ErrorType for Shaped<T> {
    type Error = T::Error;
}

impl<T: embedded_io::Read> embedded_io::Read for Shaped<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let turn = self.last_was_write;
        if turn {
            // The peer's answer cannot arrive before one round trip.
            self.charge(0, true);
            self.last_was_write = false;
        }
        let n = self.inner.read(buf)?;
        self.charge(n, false);
        Ok(n)
    }
}

impl<T: embedded_io::Write> embedded_io::Write for Shaped<T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let n = self.inner.write(buf)?;
        self.last_was_write = true;
        self.charge(n, false);
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use embedded_io::{Read as _, Write as _};

    #[test]
    fn profiles_by_name() {
        for p in Profile::ALL {
            assert_eq!(Profile::by_name(p.name), Some(p));
        }
        assert_eq!(Profile::by_name("carrier-pigeon"), None);
        assert!((Profile::WAN.added_s(10, 50_000_000) - (0.4 + 1.0)).abs() < 1e-9);
    }

    /// A write then a read over a shaped WAN pipe takes at least one RTT and
    /// the serialization time of the bytes.
    #[test]
    fn shaping_sleeps_for_rtt_and_bytes() {
        let (a, mut b) = crate::mem::pair();
        let slow = Profile {
            name: "test",
            bits_per_s: 8e6,
            rtt_s: 20e-3,
        };
        let mut s = Shaped::new(a, Some(slow));
        let t0 = Instant::now();
        s.write_all(&[7u8; 10_000]).expect("write");
        let mut got = [0u8; 10_000];
        b.read_exact(&mut got).expect("peer read");
        b.write_all(&got[..10]).expect("peer write");
        let mut back = [0u8; 10];
        s.read_exact(&mut back).expect("read");
        // 10 kB at 1 MB/s = 10 ms, plus 20 ms for the round.
        assert!(t0.elapsed() >= Duration::from_millis(30), "{:?}", t0.elapsed());
        assert!(s.slept() >= Duration::from_millis(29));
        let mut plain = Shaped::new(b, None);
        plain.write_all(&[1]).expect("write");
        assert_eq!(plain.slept(), Duration::ZERO);
    }
}
