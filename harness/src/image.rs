//! Images for the device: binary PGM/PPM files and the datasets'
//! per-channel normalisation.

use crate::data;
use std::path::Path;

/// Normalisation by channel count (the datasets' statistics the models are
/// trained with: Fashion-MNIST for grey, CIFAR-10 for colour).
pub fn normalise(pixels: &[u8], channels: usize) -> Vec<f32> {
    let plane = pixels.len() / channels.max(1);
    pixels
        .iter()
        .enumerate()
        .map(|(j, &p)| {
            let c = j / plane.max(1);
            let (m, s) = if channels == 1 {
                (data::FMNIST_MEAN[0], data::FMNIST_STD[0])
            } else {
                (data::CIFAR_MEAN[c.min(2)], data::CIFAR_STD[c.min(2)])
            };
            (p as f32 / 255.0 - m) / s
        })
        .collect()
}

/// Reads a binary PGM/PPM into planar `[c, h, w]` bytes.
pub fn read_pnm(path: &Path) -> Result<(usize, usize, Vec<u8>), String> {
    let b = crate::files::read_bounded(path, "image", crate::files::MAX_DATA)?;
    let bad = |why: &str| {
        format!(
            "{}: {why} (expected a binary PGM P5 or PPM P6, maxval 255)",
            path.display()
        )
    };
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'#') {
            if b[i] == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        let s = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        if s == i {
            return Err(bad("truncated header"));
        }
        fields.push(String::from_utf8_lossy(&b[s..i]).into_owned());
    }
    let c = match fields[0].as_str() {
        "P5" => 1,
        "P6" => 3,
        _ => return Err(bad("unsupported format")),
    };
    let num = |s: &str| s.parse::<usize>().map_err(|_| bad("bad number in header"));
    let (w, h, max) = (num(&fields[1])?, num(&fields[2])?, num(&fields[3])?);
    if max != 255 || w == 0 || w != h || w > 1024 {
        return Err(bad("unsupported size or depth"));
    }
    let body = b.get(i + 1..).unwrap_or(&[]);
    if body.len() != w * h * c {
        return Err(bad("pixel data has the wrong length"));
    }
    // Interleaved RGB to planar.
    let mut out = vec![0u8; body.len()];
    for (k, &v) in body.iter().enumerate() {
        out[(k % c) * w * h + k / c] = v;
    }
    Ok((c, w, out))
}

/// Per-channel normalisation statistics for `channels` (grey: Fashion-MNIST,
/// colour: CIFAR-10), as [`normalise`] uses them.
pub fn norm_stats(channels: usize) -> (Vec<f32>, Vec<f32>) {
    if channels == 1 {
        (data::FMNIST_MEAN.to_vec(), data::FMNIST_STD.to_vec())
    } else {
        (data::CIFAR_MEAN.to_vec(), data::CIFAR_STD.to_vec())
    }
}
