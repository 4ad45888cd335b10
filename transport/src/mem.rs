//! An in-memory duplex byte pipe (std), for tests and single-process runs.
//!
//! Reads block until data arrives, the peer end is dropped (end of stream),
//! or the read timeout passes (`std::io::ErrorKind::TimedOut`), so a
//! protocol bug shows as an error, never as a hang.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Pipe {
    data: VecDeque<u8>,
    closed: bool,
}

type Shared = Arc<(Mutex<Pipe>, Condvar)>;

/// One end of an in-memory duplex pipe.
pub struct MemEnd {
    rx: Shared,
    tx: Shared,
    timeout: Duration,
}

impl std::fmt::Debug for MemEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemEnd")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Default read timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected pair of ends.
pub fn pair() -> (MemEnd, MemEnd) {
    let a: Shared = Arc::default();
    let b: Shared = Arc::default();
    (
        MemEnd {
            rx: a.clone(),
            tx: b.clone(),
            timeout: DEFAULT_TIMEOUT,
        },
        MemEnd {
            rx: b,
            tx: a,
            timeout: DEFAULT_TIMEOUT,
        },
    )
}

impl MemEnd {
    /// Sets the read timeout.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Bytes waiting to be read.
    pub fn available(&self) -> usize {
        self.rx.0.lock().map(|p| p.data.len()).unwrap_or(0)
    }
}

impl Drop for MemEnd {
    fn drop(&mut self) {
        for s in [&self.tx, &self.rx] {
            if let Ok(mut p) = s.0.lock() {
                p.closed = true;
            }
            s.1.notify_all();
        }
    }
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("pipe lock poisoned")
}

impl embedded_io::ErrorType for MemEnd {
    type Error = std::io::Error;
}

impl embedded_io::Read for MemEnd {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (lock, cv) = &*self.rx;
        let guard = lock.lock().map_err(|_| poisoned())?;
        let (mut p, res) = cv
            .wait_timeout_while(guard, self.timeout, |p| p.data.is_empty() && !p.closed)
            .map_err(|_| poisoned())?;
        if p.data.is_empty() {
            if p.closed {
                return Ok(0);
            }
            debug_assert!(res.timed_out());
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"));
        }
        std::io::Read::read(&mut p.data, buf)
    }
}

impl embedded_io::Write for MemEnd {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let (lock, cv) = &*self.tx;
        let mut p = lock.lock().map_err(|_| poisoned())?;
        if p.closed {
            return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "peer closed"));
        }
        p.data.extend(buf);
        cv.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
