//! Blocking TCP (std) as an `embedded-io` byte stream.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

/// A TCP stream usable as a [`crate::Link`] byte stream.
#[derive(Debug)]
pub struct Tcp(pub TcpStream);

impl Tcp {
    /// Wraps a connected stream: disables Nagle (protocol messages are
    /// latency-bound) and sets `timeout` on every read and every write, so
    /// a silent peer, or one that stops reading, is an error
    /// (`ErrorKind::TimedOut`) instead of a wait without end.
    pub fn new(s: TcpStream, timeout: Option<Duration>) -> std::io::Result<Self> {
        s.set_nodelay(true)?;
        s.set_read_timeout(timeout)?;
        s.set_write_timeout(timeout)?;
        Ok(Self(s))
    }
}

/// A socket timeout, which the OS reports as `WouldBlock` (or `TimedOut`),
/// as `TimedOut` with a message that says so.
fn timed_out(e: std::io::Error, what: &str) -> std::io::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the peer did not {what} within the timeout"),
        ),
        _ => e,
    }
}

impl embedded_io::ErrorType for Tcp {
    type Error = std::io::Error;
}

impl embedded_io::Read for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| timed_out(e, "send")),
            }
        }
    }
}

impl embedded_io::Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| timed_out(e, "read what it was sent")),
            }
        }
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush().map_err(|e| timed_out(e, "read what it was sent"))
    }
}
