//! Reading the files a user names: regular files only, of a bounded size,
//! so that `/dev/zero`, a FIFO or a 3 GB file given by mistake is one clear
//! error instead of a hang or memory without end.

use std::io::Read as _;
use std::path::Path;

/// Largest model file or provisioning blob (vit_9_12_64's are ~11 MB).
pub const MAX_MODEL: u64 = 1 << 30;
/// Largest key file (64 hex digits and some white space).
pub const MAX_KEY: u64 = 4 << 10;
/// Largest image or dataset file.
pub const MAX_DATA: u64 = 1 << 30;

/// The bytes of `path`, a regular file of at most `max` bytes; `what`
/// names it in errors ("model", "key", ...).
pub fn read_bounded(path: &Path, what: &str, max: u64) -> Result<Vec<u8>, String> {
    let cannot = |e: std::io::Error| format!("cannot read {what} {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("cannot read {what} {}: not a regular file", path.display()));
    }
    if meta.len() > max {
        return Err(format!(
            "cannot read {what} {}: {} bytes, more than a {what} can have ({max})",
            path.display(),
            meta.len()
        ));
    }
    let mut out = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut out))
        .map_err(cannot)?;
    if out.len() as u64 > max {
        return Err(format!(
            "cannot read {what} {}: it grew past {max} bytes",
            path.display()
        ));
    }
    Ok(out)
}
