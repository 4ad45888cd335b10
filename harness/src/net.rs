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

/// A timeout of `s` seconds (at least one).
pub fn seconds(s: u64) -> Duration {
    Duration::from_secs(s.max(1))
}
