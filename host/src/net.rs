//! The byte stream of every party link over TCP: shaped like a link
//! profile or not, optionally sealed with a pre-shared key
//! (ChaCha20-Poly1305 records, `mpcvit_transport::seal`).

use mpcvit_transport::Link;
use mpcvit_transport::seal::{SALT_LEN, SealError, Sealed};
use mpcvit_transport::shape::{Profile, Shaped};
use mpcvit_transport::tcp::{Deadline, Tcp};
use std::net::TcpStream;
use std::time::Duration;

/// A party link's stream: TCP (shaped or not), in the clear or sealed.
pub enum Net {
    /// In the clear (frames still carry a CRC).
    Plain(Shaped<Tcp>),
    /// ChaCha20-Poly1305 records.
    Sealed(Box<Sealed<Shaped<Tcp>, Vec<u8>>>),
}

/// The error of a [`Net`] stream.
pub type NetError = SealError<std::io::Error>;

/// A link error on a [`Net`] stream.
pub type LinkError = mpcvit_transport::Error<NetError>;

/// Record buffers of sealed links (plaintext bytes per record).
const RECORD: usize = mpcvit_transport::seal::RECORD_MAX;

impl embedded_io::ErrorType for Net {
    type Error = NetError;
}

impl embedded_io::Read for Net {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self {
            Net::Plain(t) => t.read(buf).map_err(SealError::Io),
            Net::Sealed(t) => t.read(buf),
        }
    }
}

impl embedded_io::Write for Net {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        match self {
            Net::Plain(t) => t.write(buf).map_err(SealError::Io),
            Net::Sealed(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        match self {
            Net::Plain(t) => t.flush().map_err(SealError::Io),
            Net::Sealed(t) => t.flush(),
        }
    }
}

/// Which end of a sealed link this party is.
#[derive(Clone, Copy)]
pub enum Seal<'k> {
    /// Not sealed.
    None,
    /// The end that opens the sealed link (the device), with the key.
    Initiator(&'k [u8; 32]),
    /// The end that accepts it (the host), with the key.
    Responder(&'k [u8; 32]),
    /// The end that opens a mutual sealed link (the host, to its dealer):
    /// both ends' salts make the key.
    MutualInitiator(&'k [u8; 32]),
    /// The end that accepts a mutual sealed link (the dealer).
    MutualResponder(&'k [u8; 32]),
}

/// Why a link could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The socket options could not be set.
    Socket(std::io::Error),
    /// No randomness for the sealed link's salt.
    Randomness,
    /// The sealed link's handshake failed (as initiator: the stream;
    /// as responder: the peer did not open a sealed link under this key).
    Seal(NetError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Socket(e) => write!(f, "socket set-up failed: {e}"),
            Self::Randomness => f.write_str("no OS randomness for the sealed link"),
            Self::Seal(e) => write!(
                f,
                "the sealed link did not open ({e}): do both ends use the same --psk?"
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// A party link on `s`: each read and write times out after `timeout`, a
/// frame must arrive whole within `timeout` of its first byte, every read
/// and write fails past `deadline` (which the caller moves from phase to
/// phase), traffic is shaped by `profile`, and sealed as `seal` says.
/// Bound to session 0 (set-up).
pub fn link(
    s: TcpStream,
    (timeout, deadline): (Duration, Deadline),
    profile: Option<Profile>,
    seal: Seal<'_>,
) -> Result<Link<Net>, OpenError> {
    let tcp = Tcp::with_deadline(s, Some(timeout), deadline).map_err(OpenError::Socket)?;
    let t = Shaped::new(tcp, profile);
    let salt = || -> Result<[u8; SALT_LEN], OpenError> {
        let mut salt = [0u8; SALT_LEN];
        rand_core::TryRng::try_fill_bytes(&mut getrandom::SysRng, &mut salt).map_err(|_| OpenError::Randomness)?;
        Ok(salt)
    };
    let bufs = || (vec![0u8; RECORD], vec![0u8; RECORD]);
    let sealed = match seal {
        Seal::None => return Ok(paced(Net::Plain(t))),
        Seal::Initiator(psk) => {
            let (tx, rx) = bufs();
            Sealed::initiator(t, psk, salt()?, tx, rx)
        }
        Seal::Responder(psk) => {
            let (tx, rx) = bufs();
            Sealed::responder(t, psk, tx, rx)
        }
        Seal::MutualInitiator(psk) => {
            let (tx, rx) = bufs();
            Sealed::initiator_mutual(t, psk, salt()?, tx, rx)
        }
        Seal::MutualResponder(psk) => {
            let (tx, rx) = bufs();
            Sealed::responder_mutual(t, psk, salt()?, tx, rx)
        }
    };
    Ok(paced(Net::Sealed(Box::new(sealed.map_err(OpenError::Seal)?))))
}

/// A link on `net` whose frames each have the socket's timeout as a
/// deadline from their first byte ([`Tcp::pace`]).
fn paced(net: Net) -> Link<Net> {
    let mut l = Link::new(net, 0);
    l.set_pacer(|n, p| match n {
        Net::Plain(t) => t.get_mut().pace(p),
        Net::Sealed(t) => t.get_mut().get_mut().pace(p),
    });
    l
}

/// Whether a link error is a timeout: the peer sent nothing, or read
/// nothing, for the link's timeout.
pub fn timed_out(e: &LinkError) -> bool {
    matches!(e, mpcvit_transport::Error::Transport(SealError::Io(io)) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// Whether a link error means the peer closed or reset the connection.
pub fn peer_gone(e: &LinkError) -> bool {
    use std::io::ErrorKind as K;
    match e {
        mpcvit_transport::Error::Closed | mpcvit_transport::Error::Transport(SealError::Closed) => true,
        mpcvit_transport::Error::Transport(SealError::Io(io)) => matches!(
            io.kind(),
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
        ),
        _ => false,
    }
}
