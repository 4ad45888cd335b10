//! `mpcvit device`: one private inference as the device, over TCP to the
//! host, with the session flow every firmware runs
//! (`mpcvit_device::session::infer`).

use crate::data;
use crate::image::{norm_stats, read_pnm};
use crate::keys::{DEVICE_KEY, os_rng, read_key};
use crate::net::{connect, seconds};
use mpcvit_core::ops::vit::{self, Tile};
use mpcvit_core::provision::BlobView;
use mpcvit_core::{FixedPoint, ProtocolError};
use mpcvit_device::DeviceError;
use mpcvit_host::WeightMap;
use mpcvit_host::net::{Seal, link, peer_gone, timed_out};
use mpcvit_transport::shape::Profile;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `mpcvit device`.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// The host's address.
    #[arg(long, default_value = "127.0.0.1:7101")]
    pub connect: String,
    /// The provisioning blob (`mpcvit provision`).
    #[arg(long)]
    pub blob: PathBuf,
    /// Directory with `device.key`.
    #[arg(long)]
    pub keys: PathBuf,
    /// The image: a binary PGM (P5, grey) or PPM (P6, colour) of the model's
    /// size.
    #[arg(long, conflicts_with = "index")]
    pub image: Option<PathBuf>,
    /// Or the image at this index of an IDX image file (`--images`).
    #[arg(long)]
    pub index: Option<usize>,
    /// IDX image file for `--index` (gzip or raw).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")]
    pub images: PathBuf,
    /// Shape this party's socket traffic like a link: lan, wan, ble, uart.
    #[arg(long, value_parser = parse_profile)]
    pub link: Option<Profile>,
    /// Seconds to wait for a silent host before giving up.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Seal the link to the host with ChaCha20-Poly1305 under this
    /// pre-shared key file (the host's `--psk`).
    #[arg(long)]
    pub psk: Option<PathBuf>,
    /// How each layer is cut into flights: `whole` (fewest rounds) or
    /// `ROWS,HEADS,QUERIES` (token rows per flight in the per-token stages,
    /// heads and query rows per flight in attention; smaller is a smaller
    /// working set and more rounds). The host and dealer follow the device.
    #[arg(long, value_parser = parse_tile, default_value = "whole")]
    pub tile: Tile,
    /// Also reveal the logits to the host (which prints them as one JSON
    /// line per session); by default only the device learns them.
    #[arg(long)]
    pub logits_to_host: bool,
}

/// Parses a tile: `whole` or `ROWS,HEADS,QUERIES` (0 = all).
pub fn parse_tile(s: &str) -> Result<Tile, String> {
    if s == "whole" {
        return Ok(Tile::WHOLE);
    }
    let v: Vec<&str> = s.split(',').collect();
    let bad = || format!("bad tile {s:?}: use whole or ROWS,HEADS,QUERIES such as 10,1,10 (0 = all)");
    if v.len() != 3 {
        return Err(bad());
    }
    let rows = v[0].trim().parse::<u16>().map_err(|_| bad())?;
    let heads = v[1].trim().parse::<u8>().map_err(|_| bad())?;
    let queries = v[2].trim().parse::<u16>().map_err(|_| bad())?;
    Ok(Tile { rows, heads, queries })
}

/// Parses a link profile name.
pub fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::by_name(s).ok_or_else(|| format!("unknown link {s:?}: use lan, wan, ble or uart"))
}

/// What the device learned and measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeviceReport {
    /// Session id.
    pub session: String,
    /// Predicted class.
    pub prediction: usize,
    /// Logits.
    pub logits: Vec<f64>,
    /// Device -> host bytes (after set-up).
    pub bytes_sent: u64,
    /// Host -> device bytes.
    pub bytes_recv: u64,
    /// Rounds.
    pub rounds: u64,
    /// Wall time of the inference after set-up, s (shaped if `--link`).
    pub wall_s: f64,
    /// Wall time including connection and set-up, s.
    pub total_s: f64,
    /// Link profile applied, if any.
    pub link: Option<String>,
    /// The device party's buffers (peak use).
    pub working_set: WorkingSet,
}

/// Peak use of the device party's buffers in one inference (besides the
/// blob, which stays in flash, and the image).
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct WorkingSet {
    /// The forward pass's activation scratch (`vit::scratch_len`).
    pub scratch_bytes: usize,
    /// Largest message sent.
    pub tx_bytes: usize,
    /// Largest message received.
    pub rx_bytes: usize,
    /// Largest per-op temporary.
    pub tmp_bytes: usize,
}

/// The device's image as 8-bit pixels `[c, h, w]`, checked against the
/// blob's architecture.
fn device_image(a: &DeviceArgs, arch: &mpcvit_core::model::Arch) -> Result<Vec<u8>, String> {
    let (c, side, px) = match (&a.image, a.index) {
        (Some(p), _) => read_pnm(p)?,
        (None, Some(i)) => {
            let raw = data::read_file(&a.images)?;
            let (n, side, px) = data::idx_images(&raw, &a.images.display().to_string())?;
            if i >= n {
                return Err(format!(
                    "--index {i} is out of range: {} has {n} images",
                    a.images.display()
                ));
            }
            (1, side, px[i * side * side..(i + 1) * side * side].to_vec())
        }
        (None, None) => return Err("give the image: --image FILE or --index N".into()),
    };
    if c != arch.channels || side != arch.image {
        return Err(format!(
            "the model takes {}x{}x{} images, this one is {c}x{side}x{side}",
            arch.channels, arch.image, arch.image
        ));
    }
    Ok(px)
}

/// `mpcvit device`.
pub fn device(a: &DeviceArgs) -> Result<(), String> {
    let r = device_run(a)?;
    if a.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    } else {
        println!(
            "prediction {} (session {}, {} rounds, device->host {} B, host->device {} B, {:.2} s{})",
            r.prediction,
            r.session,
            r.rounds,
            r.bytes_sent,
            r.bytes_recv,
            r.wall_s,
            r.link
                .as_deref()
                .map(|l| format!(", shaped as {l}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Whether the host's records did not open under our pre-shared key (or
/// were not sealed at all).
fn not_sealed_by_us(e: &mpcvit_host::net::LinkError) -> bool {
    use mpcvit_host::net::NetError;
    matches!(
        e,
        mpcvit_transport::Error::Transport(NetError::Auth | NetError::Malformed)
    )
}

/// Runs one private inference as the device ([`mpcvit_device::session::infer`],
/// as every firmware runs it).
pub fn device_run(a: &DeviceArgs) -> Result<DeviceReport, String> {
    use mpcvit_device::session::{self as ds, Failure};
    let t_start = Instant::now();
    let blob_bytes = crate::files::read_bounded(&a.blob, "blob", crate::files::MAX_MODEL)?;
    let blob = BlobView::parse(&blob_bytes)
        .map_err(|e| format!("{}: {}", a.blob.display(), e.in_file("provisioning blob")))?;
    let key = read_key(&a.keys.join(DEVICE_KEY))?;
    let arch = blob.arch();
    let fp = FixedPoint::new(blob.frac_bits()).map_err(|e| e.to_string())?;
    let (mean, std) = norm_stats(arch.channels);
    let pixels = device_image(a, &arch)?;
    let map = WeightMap::from_blob(&blob);
    let dep = ds::Deployment {
        blob: &blob,
        weights: &map,
        key: &key,
    };
    // The key stays in its zeroizing Seed; the link borrows it.
    let psk = a.psk.as_deref().map(read_key).transpose()?;
    let seal = psk.as_ref().map_or(Seal::None, |k| Seal::Initiator(k.expose()));
    let no_deadline = mpcvit_transport::tcp::Deadline::default();
    let io = link(
        connect(&a.connect, "host")?,
        (seconds(a.timeout), no_deadline),
        a.link,
        seal,
    )
    .map_err(|e| e.to_string())?
    .into_inner();
    let mut scratch = vec![0; vit::scratch_len(&arch, a.tile, mpcvit_core::Role::Device, &blob)];
    let mut logits = vec![0; arch.classes];
    let mut bufs = mpcvit_host::local::DeviceBuffers::default();
    let (tx, rx, tmp) = bufs.split();
    let b = ds::Buffers {
        scratch: &mut scratch,
        tx,
        rx,
        tmp,
        logits: &mut logits,
    };
    let mut clock = || u64::try_from(t_start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let r = ds::infer(
        (&mut clock, &mut os_rng()),
        io,
        &dep,
        (a.tile, a.logits_to_host),
        &pixels,
        (&mean, &std),
        b,
    );
    let o = match r {
        Ok(o) => o,
        Err(f @ Failure::Refused { .. }) => {
            return Err(format!("the host refused the session: {}", f.reason().unwrap_or("?")));
        }
        Err(Failure::Setup(e)) => return Err(e.into()),
        Err(Failure::Handshake(DeviceError::Randomness)) => return Err("no OS randomness for the nonce".into()),
        Err(Failure::Handshake(DeviceError::Protocol(ProtocolError::Unauthenticated))) => {
            return Err(
                "the dealer's key confirmation failed: the host's dealer does not hold this device's key".into(),
            );
        }
        Err(Failure::Handshake(DeviceError::Link(e))) if peer_gone(&e) || not_sealed_by_us(&e) => {
            return Err(if a.psk.is_some() {
                "the host closed the connection during set-up: check that host and device use the same --psk \
                     (sealed records that do not authenticate are refused; the host's log says why)"
                    .into()
            } else {
                "the host closed the connection during set-up (does it require --psk? the host's log says why)".into()
            });
        }
        Err(Failure::Handshake(DeviceError::Link(e))) if timed_out(&e) && a.psk.is_none() => {
            // a host that seals its device links waits for the device's
            // sealed opening, and this device for the host's challenge
            return Err(format!(
                "the host did not answer the set-up within {} s (does it require --psk? the host's log says why)",
                a.timeout.max(1)
            ));
        }
        Err(Failure::Handshake(DeviceError::Link(e)) | Failure::Device(DeviceError::Link(e))) if timed_out(&e) => {
            return Err(format!(
                "the host did not answer within {} s (--timeout; the host's log says why)",
                a.timeout.max(1)
            ));
        }
        Err(Failure::Handshake(e)) => return Err(format!("set-up with the host failed: {e}")),
        Err(Failure::Device(DeviceError::Link(e))) if peer_gone(&e) => {
            return Err("the host closed the connection during the inference (see the host's log)".into());
        }
        Err(Failure::Device(e)) => return Err(format!("inference failed: {e}")),
    };
    let logits: Vec<f64> = logits.iter().map(|&v| fp.decode(v)).collect();
    let [_, t_setup, t_end] = o.ticks;
    Ok(DeviceReport {
        session: format!("{:016x}", o.session),
        prediction: o.prediction,
        logits,
        bytes_sent: o.meter.bytes_sent,
        bytes_recv: o.meter.bytes_recv,
        rounds: o.meter.rounds,
        wall_s: t_end.saturating_sub(t_setup) as f64 / 1e9,
        total_s: t_start.elapsed().as_secs_f64(),
        link: a.link.map(|p| p.name.to_string()),
        working_set: WorkingSet {
            scratch_bytes: 8 * vit::scratch_len(&arch, a.tile, mpcvit_core::Role::Device, &blob),
            tx_bytes: o.high_water.tx,
            rx_bytes: o.high_water.rx,
            tmp_bytes: 8 * o.high_water.tmp,
        },
    })
}
