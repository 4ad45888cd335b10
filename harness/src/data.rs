//! Datasets: Fashion-MNIST (gzipped IDX, as the Debian package
//! `dataset-fashion-mnist` installs it) and CIFAR-10 binary batches.
//!
//! Loaders check magic numbers, dimensions and sizes and return an error
//! naming the file; nothing panics on a bad file.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the Debian package puts Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub use mpcvit_core::model::{CIFAR_MEAN, CIFAR_STD, FMNIST_MEAN, FMNIST_STD};

/// A labelled image set, images stored as raw bytes `[n, c, h, w]`.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Channels.
    pub channels: usize,
    /// Side (square images).
    pub side: usize,
    /// Raw pixels, `n * c * side * side`.
    pub pixels: Vec<u8>,
    /// Labels.
    pub labels: Vec<u8>,
    /// Number of classes.
    pub classes: usize,
    /// Per-channel normalisation.
    pub mean: Vec<f32>,
    /// Per-channel normalisation.
    pub std: Vec<f32>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.side * self.side
    }

    /// Raw bytes of image `i`.
    pub fn raw(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Normalised image `i` as `[c, h, w]` floats.
    pub fn image(&self, i: usize) -> Vec<f32> {
        let plane = self.side * self.side;
        self.raw(i)
            .iter()
            .enumerate()
            .map(|(j, &p)| {
                let c = j / plane;
                (p as f32 / 255.0 - self.mean[c]) / self.std[c]
            })
            .collect()
    }

    /// The first `n` images (or all).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.pixels.truncate(n * self.image_len());
            self.labels.truncate(n);
        }
    }
}

/// Reads a file, gunzipping it if it starts with the gzip magic (at most
/// 1 GiB of output).
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let raw = crate::files::read_bounded(path, "data file", crate::files::MAX_DATA)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(1 << 30)
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: bad gzip data: {e}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses an IDX image file alone (magic 2051): count, side, pixels.
pub fn idx_images(images: &[u8], what: &str) -> Result<(usize, usize, Vec<u8>), String> {
    if images.len() < 16 || be32(images, 0) != 2051 {
        return Err(format!("{what}: not an IDX image file (magic 2051)"));
    }
    let (n, rows, cols) = (
        be32(images, 4) as usize,
        be32(images, 8) as usize,
        be32(images, 12) as usize,
    );
    if rows == 0 || rows != cols || rows > 1024 {
        return Err(format!("{what}: unsupported image size {rows}x{cols}"));
    }
    let want = n.checked_mul(rows * cols).and_then(|v| v.checked_add(16));
    if want != Some(images.len()) {
        return Err(format!(
            "{what}: image file has {} bytes, header says {n} images of {rows}x{cols}",
            images.len()
        ));
    }
    Ok((n, rows, images[16..].to_vec()))
}

/// Parses an IDX image file (magic 2051) and label file (magic 2049).
pub fn parse_idx(images: &[u8], labels: &[u8], what: &str) -> Result<(usize, usize, Vec<u8>, Vec<u8>), String> {
    let (n, side, pixels) = idx_images(images, what)?;
    if labels.len() < 8 || be32(labels, 0) != 2049 {
        return Err(format!("{what}: not an IDX label file (magic 2049)"));
    }
    let nl = be32(labels, 4) as usize;
    if n != nl {
        return Err(format!("{what}: {n} images but {nl} labels"));
    }
    if labels.len() != 8 + n {
        return Err(format!(
            "{what}: label file has {} bytes, header says {n} labels",
            labels.len()
        ));
    }
    Ok((n, side, pixels, labels[8..].to_vec()))
}

/// Loads a Fashion-MNIST split (`train` or `t10k`) from `dir`.
pub fn fashion_mnist(dir: &Path, split: &str) -> Result<Dataset, String> {
    let find = |kind: &str| -> Result<PathBuf, String> {
        for ext in ["-ubyte.gz", "-ubyte"] {
            let p = dir.join(format!("{split}-{kind}{ext}"));
            if p.exists() {
                return Ok(p);
            }
        }
        Err(format!(
            "Fashion-MNIST {split} {kind} not found in {} (install the Debian package dataset-fashion-mnist)",
            dir.display()
        ))
    };
    let (ip, lp) = (find("images-idx3")?, find("labels-idx1")?);
    let (_, side, pixels, labels) = parse_idx(&read_file(&ip)?, &read_file(&lp)?, &ip.display().to_string())?;
    if let Some(bad) = labels.iter().find(|&&l| l >= 10) {
        return Err(format!("{}: label {bad} out of range 0..10", lp.display()));
    }
    Ok(Dataset {
        channels: 1,
        side,
        pixels,
        labels,
        classes: 10,
        mean: FMNIST_MEAN.to_vec(),
        std: FMNIST_STD.to_vec(),
    })
}

/// Loads CIFAR-10 binary batches (each record: 1 label byte + 3072 pixels).
pub fn cifar10(files: &[PathBuf]) -> Result<Dataset, String> {
    const REC: usize = 1 + 3 * 32 * 32;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let b = read_file(f)?;
        if b.is_empty() || b.len() % REC != 0 {
            return Err(format!(
                "{}: {} bytes is not a whole number of CIFAR-10 records of {REC}",
                f.display(),
                b.len()
            ));
        }
        for rec in b.chunks_exact(REC) {
            if rec[0] >= 10 {
                return Err(format!("{}: label {} out of range 0..10", f.display(), rec[0]));
            }
            labels.push(rec[0]);
            pixels.extend_from_slice(&rec[1..]);
        }
    }
    if labels.is_empty() {
        return Err("no CIFAR-10 batch files given".into());
    }
    Ok(Dataset {
        channels: 3,
        side: 32,
        pixels,
        labels,
        classes: 10,
        mean: CIFAR_MEAN.to_vec(),
        std: CIFAR_STD.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(n: u32, side: u32) -> (Vec<u8>, Vec<u8>) {
        let mut im = vec![];
        for v in [2051, n, side, side] {
            im.extend_from_slice(&u32::to_be_bytes(v));
        }
        im.extend((0..n * side * side).map(|i| i as u8));
        let mut lb = vec![];
        for v in [2049, n] {
            lb.extend_from_slice(&u32::to_be_bytes(v));
        }
        lb.extend((0..n).map(|i| (i % 10) as u8));
        (im, lb)
    }

    #[test]
    fn idx_roundtrip_and_errors() {
        let (im, lb) = idx(3, 4);
        let (n, side, px, l) = parse_idx(&im, &lb, "t").unwrap();
        assert_eq!((n, side, px.len(), l), (3, 4, 48, vec![0, 1, 2]));
        assert!(parse_idx(&im[..im.len() - 1], &lb, "t").unwrap_err().contains("bytes"));
        assert!(parse_idx(&lb, &lb, "t").unwrap_err().contains("magic 2051"));
        let (_, lb2) = idx(4, 4);
        assert!(parse_idx(&im, &lb2, "t").unwrap_err().contains("3 images but 4 labels"));
    }

    #[test]
    fn fashion_mnist_from_generated_gz_files() {
        let dir = std::env::temp_dir().join(format!("mpcvit-fm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (im, lb) = idx(5, 28);
        for (name, data) in [("t10k-images-idx3-ubyte.gz", &im), ("t10k-labels-idx1-ubyte.gz", &lb)] {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            std::io::Write::write_all(&mut e, data).unwrap();
            e.finish().unwrap();
        }
        let d = fashion_mnist(&dir, "t10k").unwrap();
        assert_eq!((d.len(), d.side, d.image(1).len()), (5, 28, 784));
        assert!(
            fashion_mnist(&dir, "train")
                .unwrap_err()
                .contains("dataset-fashion-mnist")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cifar_records() {
        let dir = std::env::temp_dir().join(format!("mpcvit-cf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = vec![];
        for l in [3u8, 9] {
            b.push(l);
            b.extend(std::iter::repeat_n(l, 3072));
        }
        let p = dir.join("data_batch_1.bin");
        std::fs::write(&p, &b).unwrap();
        let d = cifar10(std::slice::from_ref(&p)).unwrap();
        assert_eq!((d.len(), d.labels.clone(), d.image(0).len()), (2, vec![3, 9], 3072));
        std::fs::write(&p, &b[..100]).unwrap();
        assert!(cifar10(std::slice::from_ref(&p)).unwrap_err().contains("whole number"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
