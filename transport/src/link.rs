//! A framed, checked and metered message link over `embedded-io`.

use crate::frame::{self, FrameError, FrameKind, HEADER_LEN, Header, TRAILER_LEN};
use core::fmt;
use embedded_io::{Read, ReadExactError, Write};

/// A link error: the layer below, or a bad frame.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error<E> {
    /// The underlying byte stream failed.
    Transport(E),
    /// A frame was malformed, foreign or out of order.
    Frame(FrameError),
    /// The peer closed the stream (or it ended mid-frame).
    Closed,
    /// An earlier error poisoned this link.
    Poisoned,
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "transport error: {e:?}"),
            Self::Frame(e) => write!(f, "{e}"),
            Self::Closed => f.write_str("peer closed the connection"),
            Self::Poisoned => f.write_str("link poisoned by an earlier error"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// Traffic counters of one side of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Meter {
    /// Bytes sent, frame overhead included.
    pub bytes_sent: u64,
    /// Bytes received, frame overhead included.
    pub bytes_recv: u64,
    /// Frames sent.
    pub msgs_sent: u64,
    /// Frames received.
    pub msgs_recv: u64,
    /// Rounds: times this side received after having sent, i.e. waited on
    /// the peer (a change of direction on the critical path).
    pub rounds: u64,
    last_was_send: bool,
}

impl Meter {
    /// Counters since `earlier`.
    pub fn since(&self, earlier: &Meter) -> Meter {
        Meter {
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            bytes_recv: self.bytes_recv - earlier.bytes_recv,
            msgs_sent: self.msgs_sent - earlier.msgs_sent,
            msgs_recv: self.msgs_recv - earlier.msgs_recv,
            rounds: self.rounds - earlier.rounds,
            last_was_send: self.last_was_send,
        }
    }
}

/// A message link over the byte stream `T`.
pub struct Link<T> {
    io: T,
    session: u64,
    tx_seq: u32,
    rx_seq: u32,
    meter: Meter,
    poisoned: bool,
    pacer: Option<fn(&mut T, Pace)>,
}

/// Where an incoming frame stands, told to a transport that bounds how long
/// one frame may take ([`Link::set_pacer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// The frame's first byte has arrived.
    Started,
    /// The frame is complete (or the link failed).
    Done,
}

impl<T> fmt::Debug for Link<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("session", &self.session)
            .field("tx_seq", &self.tx_seq)
            .field("rx_seq", &self.rx_seq)
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

impl<T: Read + Write> Link<T> {
    /// A link for `session` over `io`; sequence numbers start at 0.
    pub fn new(io: T, session: u64) -> Self {
        Self {
            io,
            session,
            tx_seq: 0,
            rx_seq: 0,
            meter: Meter::default(),
            poisoned: false,
            pacer: None,
        }
    }

    /// Calls `pacer` on the transport when a frame's first byte has arrived
    /// and when the frame is complete, so that the transport can bound the
    /// time one frame takes (a peer that trickles a frame byte by byte),
    /// apart from the wait for a frame to begin (a peer that computes).
    pub fn set_pacer(&mut self, pacer: fn(&mut T, Pace)) {
        self.pacer = Some(pacer);
    }

    fn pace(&mut self, p: Pace) {
        if let Some(f) = self.pacer {
            f(&mut self.io, p);
        }
    }

    /// The session id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Rebinds the link to another session (after a handshake) and restarts
    /// the sequence numbers.
    pub fn set_session(&mut self, session: u64) {
        self.session = session;
        self.tx_seq = 0;
        self.rx_seq = 0;
    }

    /// Traffic so far.
    pub fn meter(&self) -> Meter {
        self.meter
    }

    /// The byte stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The byte stream, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Gives back the byte stream.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// Whether an error has poisoned the link.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn fail<R>(&mut self, e: Error<T::Error>) -> Result<R, Error<T::Error>> {
        self.poisoned = true;
        Err(e)
    }

    fn write_all(&mut self, mut buf: &[u8]) -> Result<(), Error<T::Error>> {
        while !buf.is_empty() {
            match self.io.write(buf) {
                Ok(0) => return self.fail(Error::Closed),
                Ok(n) => buf = buf.get(n..).unwrap_or(&[]),
                Err(e) => return self.fail(Error::Transport(e)),
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Error<T::Error>> {
        match self.io.read_exact(buf) {
            Ok(()) => Ok(()),
            Err(ReadExactError::UnexpectedEof) => self.fail(Error::Closed),
            Err(ReadExactError::Other(e)) => self.fail(Error::Transport(e)),
        }
    }

    /// Sends one frame and flushes.
    pub fn send(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), Error<T::Error>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let Ok(len) = u32::try_from(payload.len()) else {
            return self.fail(Error::Frame(FrameError::TooLong {
                len: u32::MAX,
                max: u32::MAX,
            }));
        };
        let h = Header {
            kind,
            session: self.session,
            seq: self.tx_seq,
            len,
        }
        .encode();
        let mut crc = frame::crc_start(&h);
        crc.update(payload);
        self.write_all(&h)?;
        self.write_all(payload)?;
        self.write_all(&crc.finalize().to_le_bytes())?;
        if let Err(e) = self.io.flush() {
            return self.fail(Error::Transport(e));
        }
        self.tx_seq = self.tx_seq.wrapping_add(1);
        self.meter.bytes_sent += (frame::OVERHEAD + payload.len()) as u64;
        self.meter.msgs_sent += 1;
        self.meter.last_was_send = true;
        Ok(())
    }

    /// Receives one frame into `buf` (which bounds the payload length) and
    /// returns its kind and payload. Any bad frame poisons the link.
    pub fn recv<'b>(&mut self, buf: &'b mut [u8]) -> Result<(FrameKind, &'b [u8]), Error<T::Error>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let mut hb = [0u8; HEADER_LEN];
        // the wait for a frame to begin is the peer's to take; once its
        // first byte is here the transport may bound the rest (`set_pacer`)
        self.read_exact(hb.get_mut(..1).unwrap_or_default())?;
        self.pace(Pace::Started);
        let r = self.recv_rest(&mut hb, buf);
        self.pace(Pace::Done);
        r
    }

    /// The rest of a frame whose first header byte is in `hb`.
    fn recv_rest<'b>(
        &mut self,
        hb: &mut [u8; HEADER_LEN],
        buf: &'b mut [u8],
    ) -> Result<(FrameKind, &'b [u8]), Error<T::Error>> {
        self.read_exact(hb.get_mut(1..).unwrap_or_default())?;
        let h = match Header::decode(hb, buf.len()) {
            Ok(h) => h,
            Err(e) => return self.fail(Error::Frame(e)),
        };
        let len = h.len as usize;
        let Some(payload) = buf.get_mut(..len) else {
            return self.fail(Error::Frame(FrameError::TooLong {
                len: h.len,
                max: u32::MAX,
            }));
        };
        self.read_exact(payload)?;
        let mut tb = [0u8; TRAILER_LEN];
        self.read_exact(&mut tb)?;
        let payload = buf.get(..len).unwrap_or(&[]);
        let mut crc = frame::crc_start(hb);
        crc.update(payload);
        if crc.finalize() != u32::from_le_bytes(tb) {
            return self.fail(Error::Frame(FrameError::BadCrc));
        }
        if h.session != self.session {
            return self.fail(Error::Frame(FrameError::WrongSession {
                expected: self.session,
                got: h.session,
            }));
        }
        if h.seq != self.rx_seq {
            return self.fail(Error::Frame(FrameError::WrongSequence {
                expected: self.rx_seq,
                got: h.seq,
            }));
        }
        self.rx_seq = self.rx_seq.wrapping_add(1);
        self.meter.bytes_recv += (frame::OVERHEAD + len) as u64;
        self.meter.msgs_recv += 1;
        if self.meter.last_was_send {
            self.meter.rounds += 1;
        }
        self.meter.last_was_send = false;
        Ok((h.kind, payload))
    }

    /// Receives a frame that must be of `kind`.
    pub fn recv_kind<'b>(&mut self, kind: FrameKind, buf: &'b mut [u8]) -> Result<&'b [u8], Error<T::Error>> {
        let (k, p) = self.recv(buf)?;
        if k == kind {
            Ok(p)
        } else {
            self.poisoned = true;
            Err(Error::Frame(FrameError::UnexpectedKind(k)))
        }
    }
}
