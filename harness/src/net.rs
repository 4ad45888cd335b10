//! The command line's side of networking: listening with an error that
//! says what to do, announcing the bound address, connecting to a peer.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Binds a listener with an error that says what to do.
pub fn listen(addr: &str, who: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another program uses this port: pick another --listen address, or port 0 for any free one)"
        } else {
            ""
        };
        format!("{who}: cannot listen on {addr}: {e}{hint}")
    })
}

/// Prints the bound address on stdout's first line (the demo reads it).
pub fn announce(who: &str, l: &TcpListener) -> Result<SocketAddr, String> {
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    // The first stdout line is the bound address (the demo reads it).
    println!("mpcvit {who} listening on {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    Ok(addr)
}

/// Connects to a peer with an error that names it.
pub fn connect(addr: &str, what: &str) -> Result<TcpStream, String> {
    TcpStream::connect(addr).map_err(|e| format!("cannot connect to the {what} at {addr}: {e} (is it running?)"))
}

/// The timeouts and limits of `mpcvit host` and `mpcvit dealer`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Seconds to wait for a silent peer (each read and write), and for a
    /// connection's whole set-up, before ending its session.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Seconds a session may take after set-up, however its peer paces its
    /// bytes.
    #[arg(long, default_value_t = 3600)]
    pub session_limit: u64,
    /// Exit after this many sessions (default: serve forever).
    #[arg(long)]
    pub sessions: Option<u64>,
    /// Most connections served at once. Past it, a new connection takes
    /// the slot of the oldest one still in set-up, or is refused at once
    /// when every slot holds a session whose device the dealer confirmed.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions: u32,
}

impl ServerArgs {
    /// The limits of each connection.
    pub fn limits(&self) -> mpcvit_host::serve::Limits {
        mpcvit_host::serve::Limits {
            timeout: seconds(self.timeout),
            session: seconds(self.session_limit),
        }
    }

    /// What `serve` takes: the sessions to serve before exiting, the most
    /// in flight at once.
    pub fn serve_limits(&self) -> (Option<u64>, usize) {
        (self.sessions, self.max_sessions as usize)
    }
}

/// A timeout of `s` seconds (at least one).
pub fn seconds(s: u64) -> Duration {
    Duration::from_secs(s.max(1))
}
