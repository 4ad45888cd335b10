//! The deployment's keys: `host.key` (host and dealer) and `device.key`
//! (device and dealer), 64 hex digits each, created by `mpcvit keygen`.

use mpcvit_core::prg::Seed;
use rand_core::TryRng;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Key file of the host (shared with the dealer).
pub const HOST_KEY: &str = "host.key";
/// Key file of the device (shared with the dealer).
pub const DEVICE_KEY: &str = "device.key";

/// Reads a key file: 64 hex digits (whitespace around them is ignored).
pub fn read_key(path: &Path) -> Result<Seed, String> {
    let bytes = crate::files::read_bounded(path, "key", crate::files::MAX_KEY)
        .map_err(|e| format!("{e} (make keys with `mpcvit keygen --out DIR`)"))?;
    let text = String::from_utf8_lossy(&bytes);
    let hex = text.trim();
    let bad = || format!("{}: a key file holds 64 hex digits", path.display());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    if k == [0; 32] {
        return Err(format!(
            "{}: an all-zero key is no secret (make keys with `mpcvit keygen --out DIR`)",
            path.display()
        ));
    }
    Ok(Seed::from_bytes(k))
}

/// Creates the key file `path` (mode 0600, never over an existing file).
fn create_key_file(path: &Path) -> Result<std::fs::File, String> {
    use std::fs::OpenOptions;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path).map_err(|e| {
        format!(
            "cannot create {}: {e} (keygen never overwrites a key; choose another --out)",
            path.display()
        )
    })
}

fn write_key(f: &mut std::fs::File, path: &Path, key: &Seed) -> Result<(), String> {
    let hex: String = key.expose().iter().map(|b| format!("{b:02x}")).collect();
    f.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn random_seed() -> Result<Seed, String> {
    let mut k = [0u8; 32];
    os_rng()
        .try_fill_bytes(&mut k)
        .map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(Seed::from_bytes(k))
}

/// The OS's crypto RNG, through the `rand_core` trait every party's
/// randomness comes through (the boards' TRNGs implement it too).
pub fn os_rng() -> impl rand_core::TryCryptoRng<Error = getrandom::Error> {
    getrandom::SysRng
}

/// A random 64-bit number from the OS.
pub fn random_u64() -> Result<u64, String> {
    os_rng().try_next_u64().map_err(|e| format!("no OS randomness: {e}"))
}

/// Options of `mpcvit keygen`.
#[derive(clap::Args, Debug, Clone)]
pub struct KeygenArgs {
    /// Directory to create the key files in (`host.key`: host and dealer;
    /// `device.key`: device and dealer). Existing keys are never overwritten.
    #[arg(long)]
    pub out: PathBuf,
}

/// Creates `host.key` and `device.key` with fresh random keys in `dir`:
/// both or neither (a key left alone would match no other).
pub fn make_keys(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (host, device) = (dir.join(HOST_KEY), dir.join(DEVICE_KEY));
    let mut fh = create_key_file(&host)?;
    let mut fd = match create_key_file(&device) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&host);
            return Err(e);
        }
    };
    let written = random_seed()
        .and_then(|k| write_key(&mut fh, &host, &k))
        .and_then(|()| random_seed())
        .and_then(|k| write_key(&mut fd, &device, &k));
    if written.is_err() {
        // both files are ours (created new above)
        let _ = std::fs::remove_file(&host);
        let _ = std::fs::remove_file(&device);
    }
    written
}

/// `mpcvit keygen`.
pub fn keygen(a: &KeygenArgs) -> Result<(), String> {
    make_keys(&a.out)?;
    println!(
        "wrote {} and {}",
        a.out.join(HOST_KEY).display(),
        a.out.join(DEVICE_KEY).display()
    );
    Ok(())
}
