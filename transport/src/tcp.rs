//! Blocking TCP (std) as an `embedded-io` byte stream.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

/// A TCP stream usable as a [`crate::Link`] byte stream.
#[derive(Debug)]
pub struct Tcp(pub TcpStream);

impl Tcp {
    /// Wraps a connected stream: disables Nagle (protocol messages are
    /// latency-bound) and sets a read timeout so a silent peer is an error.
    pub fn new(s: TcpStream, read_timeout: Option<Duration>) -> std::io::Result<Self> {
        s.set_nodelay(true)?;
        s.set_read_timeout(read_timeout)?;
        Ok(Self(s))
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
                r => return r,
            }
        }
    }
}

impl embedded_io::Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush()
    }
}
