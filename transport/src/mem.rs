//! An in-memory duplex byte pipe (std), for tests and single-process runs.
//!
//! Reads block until data arrives, the peer end is dropped (end of stream),
//! or the read timeout passes (`std::io::ErrorKind::TimedOut`), so a
//! protocol bug shows as an error, never as a hang. Like a socket, a pipe
//! holds at most [`CAPACITY`] unread bytes: a writer that runs ahead (the
//! dealer, whole inferences ahead of the host) waits for the reader instead
//! of buffering without bound (vit_9_12_64's dealer traffic, tens of GB,
//! once filled 24 GB of RAM this way); it gives up with `TimedOut` only when
//! the reader takes nothing for [`WRITE_PATIENCE`] read timeouts.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Most unread bytes a pipe holds before writers wait.
pub const CAPACITY: usize = 64 << 20;
/// A writer at capacity gives up after this many read timeouts without the
/// reader taking anything.
pub const WRITE_PATIENCE: u32 = 20;

#[derive(Default)]
struct Pipe {
    data: VecDeque<u8>,
    closed: bool,
    /// Bytes read so far (the writer's sign of progress).
    taken: u64,
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
        let n = std::io::Read::read(&mut p.data, buf)?;
        p.taken += n as u64;
        cv.notify_all();
        Ok(n)
    }
}

impl embedded_io::Write for MemEnd {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (lock, cv) = &*self.tx;
        let mut p = lock.lock().map_err(|_| poisoned())?;
        loop {
            if p.closed {
                return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "peer closed"));
            }
            if p.data.len() < CAPACITY {
                break;
            }
            // The reader may be busy with a long local step (a host op of
            // vit_9_12_64 takes more than 30 s): a writer waits many read
            // timeouts for it to take anything.
            let seen = p.taken;
            let (q, _) = cv
                .wait_timeout_while(p, self.timeout.saturating_mul(WRITE_PATIENCE), |q| {
                    q.data.len() >= CAPACITY && !q.closed && q.taken == seen
                })
                .map_err(|_| poisoned())?;
            p = q;
            if p.data.len() >= CAPACITY && !p.closed && p.taken == seen {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "write timed out: the reader took nothing",
                ));
            }
        }
        let n = buf.len().min(CAPACITY - p.data.len());
        // a slice extends a VecDeque by memcpy (an iterator adaptor goes byte by byte)
        p.data.extend(buf.get(..n).unwrap_or(&[]));
        cv.notify_all();
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use embedded_io::{Read, Write};

    #[test]
    fn a_writer_ahead_of_its_reader_waits_at_capacity() {
        let (mut a, mut b) = pair();
        let total = 3 * CAPACITY + 12345;
        let writer = std::thread::spawn(move || {
            let chunk = vec![7u8; 1 << 20];
            let mut left = total;
            while left > 0 {
                let n = a.write(&chunk[..left.min(chunk.len())]).expect("write");
                left -= n;
            }
            a
        });
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        let mut most = 0;
        while got < total {
            most = most.max(b.available());
            got += b.read(&mut buf).expect("read");
        }
        let _a = writer.join().expect("writer");
        assert_eq!(got, total);
        assert!(most <= CAPACITY, "held {most} bytes");
    }

    #[test]
    fn a_writer_whose_reader_takes_nothing_times_out() {
        let (mut a, _b) = pair();
        a.set_timeout(Duration::from_millis(5));
        let chunk = vec![1u8; 1 << 20];
        let mut err = None;
        for _ in 0..(CAPACITY >> 20) + 2 {
            if let Err(e) = a.write(&chunk) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err.map(|e| e.kind()), Some(std::io::ErrorKind::TimedOut));
    }
}
