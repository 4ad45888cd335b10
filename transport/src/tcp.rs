//! Blocking TCP (std) as an `embedded-io` byte stream.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A point in time by which a connection's current phase must be done,
/// shared by the stream and its owner (who moves it from phase to phase:
/// set-up, then the session). Past it, every read and write fails with
/// `ErrorKind::TimedOut`, however the peer paces its bytes: a per-read
/// timeout alone lets a peer that sends one byte per timeout hold a
/// connection forever.
#[derive(Clone, Debug, Default)]
pub struct Deadline(Arc<Mutex<Option<Instant>>>);

impl Deadline {
    /// Sets the deadline (`None`: no deadline).
    pub fn set(&self, at: Option<Instant>) {
        if let Ok(mut d) = self.0.lock() {
            *d = at;
        }
    }

    /// Time left until the deadline: `None` without one, `Some(ZERO)` past it.
    fn left(&self) -> Option<Duration> {
        let at = self.0.lock().ok().and_then(|d| *d)?;
        Some(at.saturating_duration_since(Instant::now()))
    }
}

/// A TCP stream usable as a [`crate::Link`] byte stream.
#[derive(Debug)]
pub struct Tcp {
    s: TcpStream,
    timeout: Option<Duration>,
    deadline: Deadline,
    /// The deadline of the frame being received (`Pace::Started` plus the
    /// timeout), if one is.
    frame: Option<Instant>,
}

impl Tcp {
    /// Wraps a connected stream: disables Nagle (protocol messages are
    /// latency-bound) and sets `timeout` on every read and every write, so
    /// a silent peer, or one that stops reading, is an error
    /// (`ErrorKind::TimedOut`) instead of a wait without end.
    pub fn new(s: TcpStream, timeout: Option<Duration>) -> std::io::Result<Self> {
        Self::with_deadline(s, timeout, Deadline::default())
    }

    /// [`Tcp::new`] with a `deadline` the owner keeps a clone of.
    pub fn with_deadline(s: TcpStream, timeout: Option<Duration>, deadline: Deadline) -> std::io::Result<Self> {
        s.set_nodelay(true)?;
        s.set_read_timeout(timeout)?;
        s.set_write_timeout(timeout)?;
        Ok(Self {
            s,
            timeout,
            deadline,
            frame: None,
        })
    }

    /// The stream.
    pub fn get_ref(&self) -> &TcpStream {
        &self.s
    }

    /// A frame's progress ([`crate::Link::set_pacer`]): from its first
    /// byte, the rest of the frame must arrive within the timeout, however
    /// the peer paces it (each read has the timeout too, so a peer that
    /// trickles a byte at a time would otherwise hold the link).
    pub fn pace(&mut self, p: crate::Pace) {
        self.frame = match p {
            crate::Pace::Started => self.timeout.map(|t| Instant::now() + t),
            crate::Pace::Done => None,
        };
    }

    /// Before a read or a write: past the phase's or the frame's deadline
    /// an error; before it, the socket's timeout cut to the time left.
    fn arm(&self, what: &str) -> std::io::Result<()> {
        let frame = self.frame.map(|at| at.saturating_duration_since(Instant::now()));
        let left = match (self.deadline.left(), frame) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        if left.is_zero() {
            let which = if frame.is_some_and(|f| f.is_zero()) {
                "a whole frame within the timeout"
            } else {
                "before the deadline of this phase"
            };
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer did not {what} {which}"),
            ));
        }
        let t = Some(self.timeout.map_or(left, |t| t.min(left)));
        self.s.set_read_timeout(t)?;
        self.s.set_write_timeout(t)
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
        self.arm("send")?;
        loop {
            match self.s.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| timed_out(e, "send")),
            }
        }
    }
}

impl embedded_io::Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.arm("read what it was sent")?;
        loop {
            match self.s.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| timed_out(e, "read what it was sent")),
            }
        }
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.s.flush().map_err(|e| timed_out(e, "read what it was sent"))
    }
}
