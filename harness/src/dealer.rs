//! `mpcvit dealer`: the dealer as a server (`mpcvit_host::serve::Dealer`).

use crate::keys::{DEVICE_KEY, HOST_KEY, read_key};
use crate::net::{ServerArgs, announce, listen};
use log::{info, warn};
use mpcvit_host::serve::{Dealer, serve};
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
    /// Timeouts and limits.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `mpcvit dealer`.
pub fn dealer(a: &DealerArgs) -> Result<(), String> {
    let d = Arc::new(Dealer::new(
        read_key(&a.keys.join(HOST_KEY))?,
        read_key(&a.keys.join(DEVICE_KEY))?,
        a.server.limits(),
    ));
    let l = listen(&a.listen, "dealer")?;
    announce("dealer", &l)?;
    // a host is refused by closing: it expects a sealed opening, not a frame
    serve(&l, a.server.serve_limits(), None, move |s, admission| {
        let d = d.clone();
        move || match d.session(s, &admission) {
            Ok(sid) => info!("dealer: session {:016x} done", sid.0),
            Err(e) => warn!("dealer: session failed: {e}"),
        }
    });
    Ok(())
}
