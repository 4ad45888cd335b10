//! The device party as firmware on QEMU's `mps2-an386` (Cortex-M4F): build
//! the firmware for a deployment, boot it with its UART on a local socket,
//! relay that socket to the host, and read the firmware's report.
//!
//! The relay (this process) sits where a serial-to-network bridge would: it
//! sends the firmware's 13-byte preamble (a fresh random seed, standing in
//! for the RNG QEMU's mps2 lacks, and the test image's index), then copies bytes
//! both ways and counts them. QEMU runs with `-icount shift=0`, so the
//! firmware's 25 MHz timer counts instructions (one tick = 40).

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The firmware crate (outside the workspace).
pub fn board_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/qemu-mps2-an386")
}

/// Instructions per timer tick under `-icount shift=0` on mps2 (25 MHz).
pub const INSTR_PER_TICK: u64 = 40;

/// Builds the firmware with `blob` and the device key in flash; returns the
/// ELF path.
pub fn build_firmware(
    blob: &Path,
    device_key: &Path,
    psk: Option<&Path>,
    tile: Option<&str>,
) -> Result<PathBuf, String> {
    let dir = board_dir();
    if !dir.join("Cargo.toml").exists() {
        return Err(format!(
            "the firmware sources are not at {} (run from a checkout of mpcvit-rs)",
            dir.display()
        ));
    }
    eprintln!("building the mps2-an386 firmware (release) ...");
    // Run in the board's directory so that its .cargo/config.toml (target,
    // linker script) applies.
    let mut cmd = Command::new("cargo");
    // The ELF is looked for in the board's own target directory: a
    // CARGO_TARGET_DIR of the caller's would put it elsewhere.
    cmd.current_dir(&dir)
        .args(["build", "--release", "--quiet"])
        .env_remove("CARGO_TARGET_DIR")
        .env("MPCVIT_BLOB", blob)
        .env("MPCVIT_DEVICE_KEY", device_key);
    match psk {
        Some(p) => cmd.env("MPCVIT_PSK", p),
        None => cmd.env_remove("MPCVIT_PSK"),
    };
    match tile {
        Some(t) => cmd.env("MPCVIT_TILE", t),
        None => cmd.env_remove("MPCVIT_TILE"),
    };
    let st = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo to build the firmware: {e}"))?;
    if !st.success() {
        return Err("building the firmware failed (see the compiler output above)".into());
    }
    Ok(dir.join("target/thumbv7em-none-eabihf/release/mpcvit-fw"))
}

/// Flash and RAM sections of the firmware ELF (`size -A` style), bytes.
pub fn elf_sizes(elf: &Path) -> Result<(u64, u64, u64), String> {
    // Parse the ELF32 section headers directly: text+rodata (flash), data,
    // bss.
    let b = std::fs::read(elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    let u16at = |o: usize| b.get(o..o + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]])) as usize;
    let u32at = |o: usize| {
        b.get(o..o + 4)
            .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])) as u64
    };
    if b.get(..4) != Some(b"\x7fELF") || b.get(4) != Some(&1) {
        return Err(format!("{} is not an ELF32 file", elf.display()));
    }
    let (shoff, shentsize, shnum) = (u32at(32) as usize, u16at(46), u16at(48));
    let (mut flash, mut data, mut bss) = (0, 0, 0);
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        let (ty, flags, size) = (u32at(h + 4), u32at(h + 8), u32at(h + 20));
        const ALLOC: u64 = 2;
        const WRITE: u64 = 1;
        if flags & ALLOC == 0 {
            continue;
        }
        match (ty, flags & WRITE != 0) {
            (8, _) => bss += size,     // NOBITS
            (_, true) => data += size, // in RAM, initialised from flash
            (_, false) => flash += size,
        }
    }
    Ok((flash + data, data, bss))
}

/// What the firmware reported (its `fw: {...}` line) plus the relay's view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FwReport {
    /// Session id.
    pub session: String,
    /// Predicted class.
    pub prediction: usize,
    /// Logits, raw signed fixed point.
    pub logits: Vec<i64>,
    /// Timer ticks (25 MHz) of the inference (after set-up).
    pub ticks_total: u64,
    /// Of which waiting for the UART.
    pub ticks_wait: u64,
    /// Ticks before the inference (patch encoding and set-up).
    pub ticks_setup: u64,
    /// Protocol bytes device -> host (frames, after set-up).
    pub bytes_sent: u64,
    /// Protocol bytes host -> device.
    pub bytes_recv: u64,
    /// All UART bytes out (set-up included).
    pub uart_bytes_out: u64,
    /// All UART bytes in (preamble and set-up included).
    pub uart_bytes_in: u64,
    /// Rounds.
    pub rounds: u64,
    /// Stack high-water mark.
    pub stack_bytes: u64,
    /// .data + .bss.
    pub static_bytes: u64,
    /// Activation scratch used of the static buffer.
    pub scratch_bytes: u64,
    /// Largest message sent.
    pub tx_bytes: u64,
    /// Largest message received.
    pub rx_bytes: u64,
    /// Largest per-op temporary.
    pub tmp_bytes: u64,
    /// Provisioning blob in flash.
    pub blob_bytes: u64,
    /// Whether the host link was sealed (ChaCha20-Poly1305).
    #[serde(default)]
    pub sealed: bool,
    /// The tile the firmware runs: rows, heads, queries (0 = all).
    #[serde(default)]
    pub tile: [u32; 3],
    /// Wall time of the QEMU run, s (relay view).
    #[serde(default)]
    pub wall_s: f64,
}

struct Kill(Option<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Boots the firmware for one inference of bundled image `index` against
/// the host at `host`; gives up after `timeout`.
pub fn run_device(elf: &Path, host: &str, index: u8, timeout: Duration) -> Result<FwReport, String> {
    let t0 = Instant::now();
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen for QEMU's UART: {e}"))?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    let child = Command::new("qemu-system-arm")
        .args(["-M", "mps2-an386", "-display", "none", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0"])
        .args(["-serial", &format!("tcp:127.0.0.1:{port}")])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot start qemu-system-arm: {e} (install it: apt-get install --no-install-recommends qemu-system-arm)")
        })?;
    let mut guard = Kill(Some(child));
    let pid = guard.0.as_ref().map(|c| c.id());
    crate::demo::track(pid);
    let r = relay(&mut guard, &l, host, index, timeout, t0);
    drop(guard);
    if let Some(p) = pid {
        crate::demo::untrack(p);
    }
    r
}

/// Feeds QEMU's UART the preamble and relays it to the host until the
/// firmware exits.
// One loop over both directions and the exit check: the two copies share
// the sockets, the byte counts and the deadline.
fn relay(
    guard: &mut Kill,
    l: &TcpListener,
    host: &str,
    index: u8,
    timeout: Duration,
    t0: Instant,
) -> Result<FwReport, String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let uart = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(c) = guard.0.as_mut()
                    && let Ok(Some(st)) = c.try_wait()
                {
                    return Err(format!("QEMU exited before connecting its UART ({st})"));
                }
                if t0.elapsed() > Duration::from_secs(20) {
                    return Err("QEMU did not connect its UART within 20 s".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("accepting QEMU's UART: {e}")),
        }
    };
    uart.set_nonblocking(false).map_err(|e| e.to_string())?;
    uart.set_nodelay(true).map_err(|e| e.to_string())?;
    let seed = crate::keys::random_u64()?;
    let mut pre = Vec::with_capacity(13);
    pre.extend_from_slice(b"MVQ1");
    pre.extend_from_slice(&seed.to_le_bytes());
    pre.push(index);
    (&uart)
        .write_all(&pre)
        .map_err(|e| format!("writing the preamble: {e}"))?;
    let hs = TcpStream::connect(host).map_err(|e| format!("cannot connect to the host at {host}: {e}"))?;
    hs.set_nodelay(true).map_err(|e| e.to_string())?;
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 << 10];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let a = pump(
        uart.try_clone().map_err(|e| e.to_string())?,
        hs.try_clone().map_err(|e| e.to_string())?,
    );
    let b = pump(
        hs.try_clone().map_err(|e| e.to_string())?,
        uart.try_clone().map_err(|e| e.to_string())?,
    );
    // Wait for QEMU (the firmware exits after one inference).
    let status = loop {
        let Some(c) = guard.0.as_mut() else {
            return Err("QEMU lost".into());
        };
        if let Ok(Some(st)) = c.try_wait() {
            break st;
        }
        if t0.elapsed() > timeout {
            return Err(format!("the QEMU device did not finish within {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall_s = t0.elapsed().as_secs_f64();
    let _ = uart.shutdown(Shutdown::Both);
    let _ = hs.shutdown(Shutdown::Both);
    let _ = a.join();
    let _ = b.join();
    let mut child = guard.0.take().ok_or("QEMU lost")?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let line = out.lines().find(|l| l.starts_with("fw: "));
    match (status.code(), line) {
        (Some(0), Some(l)) => {
            let mut r: FwReport = serde_json::from_str(l.trim_start_matches("fw: "))
                .map_err(|e| format!("the firmware's report is unreadable ({e}): {l}"))?;
            r.wall_s = wall_s;
            Ok(r)
        }
        (code, l) => Err(format!(
            "the QEMU device failed (exit {}): {}{}",
            code.map_or("signal".into(), |c| c.to_string()),
            l.unwrap_or("no report"),
            if err.trim().is_empty() {
                String::new()
            } else {
                format!(" / qemu: {}", err.trim())
            }
        )),
    }
}
