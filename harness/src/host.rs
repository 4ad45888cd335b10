//! `mpcvit host`: the host as a server (`mpcvit_host::serve::Host`).

use crate::keys::{HOST_KEY, read_key};
use crate::net::{ServerArgs, announce, listen};
use crate::provision::read_model;
use log::{info, warn};
use mpcvit_host::serve::{Host, serve};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Options of `mpcvit host`.
#[derive(clap::Args, Debug, Clone)]
pub struct HostArgs {
    /// The model file (core format).
    #[arg(long)]
    pub model: PathBuf,
    /// Directory with `host.key`.
    #[arg(long)]
    pub keys: PathBuf,
    /// Address to listen on for devices (port 0: any free port; the bound
    /// address is printed on the first line of stdout).
    #[arg(long, default_value = "127.0.0.1:7101")]
    pub listen: String,
    /// The dealer's address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub dealer: String,
    /// Timeouts and limits.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Seal the device links with ChaCha20-Poly1305 under this pre-shared
    /// key file (64 hex digits, e.g. one written by `mpcvit keygen`); devices
    /// must use the same `--psk`.
    #[arg(long)]
    pub psk: Option<PathBuf>,
}

/// `mpcvit host`.
pub fn host(a: &HostArgs) -> Result<(), String> {
    let model = read_model(&a.model)?;
    let key = read_key(&a.keys.join(HOST_KEY))?;
    let psk = a.psk.as_deref().map(read_key).transpose()?;
    let h = Host::new(model, key, a.dealer.clone(), a.server.limits(), psk)
        .map_err(|e| format!("{}: not a usable model file: {e}", a.model.display()))?;
    let h = Arc::new(h);
    let busy = h.busy_reply(a.server.serve_limits().1);
    let l = listen(&a.listen, "host")?;
    announce("host", &l)?;
    serve(&l, a.server.serve_limits(), busy.as_deref(), move |s, admission| {
        let h = h.clone();
        move || match h.session(s, &admission) {
            Ok(r) => {
                let sid = format!("{:016x}", r.session.0);
                info!(
                    "host: session {sid} done: waited on the device {} times, device->host {} B, host->device {} B, dealer->host {} B, {:.2} s",
                    r.rounds, r.device_bytes_in, r.device_bytes_out, r.dealer_bytes_in, r.wall_s
                );
                // the device chose to show its result: one JSON line on stdout
                // (a closed stdout must not end the host: write errors are ignored)
                if let Some(out) = &r.revealed {
                    let logits: Vec<f64> = out.iter().map(|&v| h.fp().decode(v)).collect();
                    let prediction = crate::logits::argmax(&logits);
                    let line = serde_json::json!({"session": sid, "prediction": prediction, "logits": logits});
                    let mut o = std::io::stdout().lock();
                    let _ = writeln!(o, "{line}").and_then(|()| o.flush());
                }
            }
            Err(e) => warn!("host: session failed: {e}"),
        }
    });
    Ok(())
}
