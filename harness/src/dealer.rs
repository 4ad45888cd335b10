//! `mpcvit dealer`: the dealer as a server (`mpcvit_host::serve::Dealer`).

use crate::keys::{DEVICE_KEY, HOST_KEY, read_key};
use crate::net::{announce, listen, seconds};
use log::{info, warn};
use mpcvit_host::serve::{Dealer, Limits, serve};
use std::path::PathBuf;
use std::sync::Arc;

/// Options of `mpcvit dealer`.
#[derive(clap::Args, Debug, Clone)]
pub struct DealerArgs {
    /// Address to listen on for hosts (port 0: any free port; the bound
    /// address is printed on the first line of stdout).
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub listen: String,
    /// Directory with `host.key` and `device.key`.
    #[arg(long)]
    pub keys: PathBuf,
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
    /// Most sessions in flight at once; a connection past that is closed
    /// at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions: u32,
}

/// `mpcvit dealer`.
pub fn dealer(a: &DealerArgs) -> Result<(), String> {
    let limits = Limits {
        timeout: seconds(a.timeout),
        session: seconds(a.session_limit),
    };
    let d = Arc::new(Dealer::new(
        read_key(&a.keys.join(HOST_KEY))?,
        read_key(&a.keys.join(DEVICE_KEY))?,
        limits,
    ));
    let l = listen(&a.listen, "dealer")?;
    announce("dealer", &l)?;
    // a host is refused by closing: it expects a sealed opening, not a frame
    serve(&l, (a.sessions, a.max_sessions as usize), None, move |s| {
        let d = d.clone();
        move || match d.session(s) {
            Ok(sid) => info!("dealer: session {:016x} done", sid.0),
            Err(e) => warn!("dealer: session failed: {e}"),
        }
    });
    Ok(())
}
