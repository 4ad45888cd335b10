//! A byte stream that alters what one party writes, frame by frame: the
//! "wire" of tampering tests (rustls-test's `transfer_altered`). The link
//! flushes after every frame, so what is written between two flushes is
//! one frame; `alter` sees it whole and may change, cut or drop it, and
//! may close the stream after it (so that the reader sees the end of a
//! truncated frame instead of waiting for its rest).

use embedded_io::{ErrorType, Read, Write};
use mpcvit_transport::mem::{self, MemEnd};

/// What `alter` decides after changing a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Keep the stream open.
    Continue,
    /// Close it (the reader sees its end).
    Close,
}

/// Alters frame `at` of a stream: gets the frame's raw bytes.
pub type Alter = Box<dyn FnMut(&mut Vec<u8>) -> After + Send>;

/// One end of an in-memory pipe whose writes may be altered.
pub struct Tampered {
    inner: Option<MemEnd>,
    alter: Option<(u64, Alter)>,
    frames: u64,
    pending: Vec<u8>,
}

impl Tampered {
    /// An end that passes everything through.
    pub fn clean(inner: MemEnd) -> Self {
        Self {
            inner: Some(inner),
            alter: None,
            frames: 0,
            pending: Vec::new(),
        }
    }

    /// An end whose frame number `at` (from 0) goes through `alter`.
    pub fn altering(inner: MemEnd, at: u64, alter: Alter) -> Self {
        Self {
            alter: Some((at, alter)),
            ..Self::clean(inner)
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed by the tamper hook")
}

impl ErrorType for Tampered {
    type Error = std::io::Error;
}

impl Read for Tampered {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self.inner.as_mut() {
            Some(s) => s.read(buf),
            None => Ok(0),
        }
    }
}

impl Write for Tampered {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if self.inner.is_none() {
            return Err(gone());
        }
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        let mut frame = std::mem::take(&mut self.pending);
        let mut after = After::Continue;
        if let Some((at, alter)) = self.alter.as_mut()
            && *at == self.frames
        {
            after = alter(&mut frame);
        }
        self.frames += 1;
        let s = self.inner.as_mut().ok_or_else(gone)?;
        s.write_all(&frame)?;
        s.flush()?;
        if after == After::Close {
            self.inner = None;
        }
        Ok(())
    }
}

/// The links of [`mpcvit_host::local::run3`] with the device's frame `at`
/// (to the host) altered by `alter`.
pub fn device_altered(at: u64, alter: Alter) -> ((Tampered, Tampered), (Tampered, Tampered)) {
    let (hd, dh) = mem::pair();
    let (hdl, dlh) = mem::pair();
    (
        (Tampered::clean(hd), Tampered::altering(dh, at, alter)),
        (Tampered::clean(hdl), Tampered::clean(dlh)),
    )
}
