// Included by each board's build.rs (`include!("../common/build_support.rs")`):
// puts the deployment into OUT_DIR and sizes the static buffers.
//
// * `MPCVIT_BLOB`: the provisioning blob (`mpcvit provision`) -> device.blob
// * `MPCVIT_DEVICE_KEY`: the device key file (`mpcvit keygen`) -> device.key
// * `MPCVIT_PSK` (optional): a pre-shared key file sealing the host link
//   -> psk.bin (empty without)
// * `MPCVIT_TILE` (optional): `whole` or `ROWS,HEADS,QUERIES`; the board's
//   default otherwise -> sizes.rs: `TILE`, `SCRATCH_WORDS`, `TX_BYTES`,
//   `RX_BYTES`, `TMP_WORDS`, `CLASSES`
// * `MPCVIT_IMAGE` (optional, default 0): which bundled test image a board
//   classifies -> `IMAGE_INDEX` in sizes.rs

/// Puts the board's linker memory map (`file`, in the crate's directory)
/// into OUT_DIR as `memory.x`, where cortex-m-rt's `link.x` looks for it.
#[allow(dead_code)]
fn memory_map(file: &str) {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::copy(file, out.join("memory.x")).expect("memory map");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={file}");
}

/// Reads a 64-hex-digit key file.
fn key_file(path: &std::path::Path, what: &str) -> Vec<u8> {
    let hex = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {what} {}: {e}", path.display()));
    let hex = hex.trim();
    assert_eq!(hex.len(), 64, "{what}: a key file holds 64 hex digits");
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits"))
        .collect()
}

/// Writes the deployment into OUT_DIR; `default_tile` applies without
/// `MPCVIT_TILE`.
fn deploy(default_tile: &str) {
    println!("cargo:rerun-if-changed=../common/build_support.rs");
    use mpcvit_core::ops::vit::{self, Tile};
    use std::{env, fs, path::PathBuf};
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for v in ["MPCVIT_BLOB", "MPCVIT_DEVICE_KEY", "MPCVIT_PSK", "MPCVIT_TILE", "MPCVIT_IMAGE"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let need = |var: &str| -> PathBuf {
        match env::var_os(var) {
            Some(p) => PathBuf::from(p),
            None => panic!(
                "{var} is not set: set MPCVIT_BLOB to a provisioning blob (`mpcvit provision`) and \
                 MPCVIT_DEVICE_KEY to the device key file (`mpcvit keygen`); see this board's README"
            ),
        }
    };
    let blob = need("MPCVIT_BLOB");
    let key = need("MPCVIT_DEVICE_KEY");
    println!("cargo:rerun-if-changed={}", blob.display());
    println!("cargo:rerun-if-changed={}", key.display());
    let psk = match env::var_os("MPCVIT_PSK") {
        Some(p) => {
            let p = PathBuf::from(p);
            println!("cargo:rerun-if-changed={}", p.display());
            key_file(&p, "MPCVIT_PSK")
        }
        None => Vec::new(),
    };
    fs::write(out.join("psk.bin"), psk).expect("write psk.bin");
    fs::write(out.join("device.key"), key_file(&key, "MPCVIT_DEVICE_KEY")).expect("write device.key");
    let bytes = fs::read(&blob).unwrap_or_else(|e| panic!("cannot read MPCVIT_BLOB {}: {e}", blob.display()));
    let view = mpcvit_core::provision::BlobView::parse(&bytes)
        .unwrap_or_else(|e| panic!("MPCVIT_BLOB {} is not a usable provisioning blob: {e}", blob.display()));
    let arch = view.arch();
    fs::write(out.join("device.blob"), &bytes).expect("write device.blob");
    let spec = env::var("MPCVIT_TILE").unwrap_or_else(|_| default_tile.into());
    let tile = if spec == "whole" {
        Tile::WHOLE
    } else {
        let v: Vec<u32> = spec
            .split(',')
            .map(|x| x.trim().parse().expect("MPCVIT_TILE: whole or ROWS,HEADS,QUERIES"))
            .collect();
        assert_eq!(v.len(), 3, "MPCVIT_TILE: whole or ROWS,HEADS,QUERIES");
        Tile {
            rows: v[0] as u16,
            heads: v[1] as u8,
            queries: v[2] as u16,
        }
    };
    let b = mpcvit_device::buffers(&arch, tile);
    let image: usize = env::var("MPCVIT_IMAGE")
        .map(|v| v.parse().expect("MPCVIT_IMAGE: an image index 0..15"))
        .unwrap_or(0);
    assert!(image < 16, "MPCVIT_IMAGE: the bundled file has 16 images");
    let code = format!(
        "/// The tile (build.rs, `MPCVIT_TILE`).\n\
         const TILE: mpcvit_board::mpcvit_core::ops::vit::Tile = mpcvit_board::mpcvit_core::ops::vit::Tile {{ rows: {}, heads: {}, queries: {} }};\n\
         /// `vit::scratch_len` for the blob's model and the tile.\n\
         const SCRATCH_WORDS: usize = {};\n\
         /// `mpcvit_device::buffers`, and at least a set-up answer.\n\
         const TX_BYTES: usize = {};\n\
         /// See `TX_BYTES`.\n\
         const RX_BYTES: usize = {};\n\
         /// See `TX_BYTES`.\n\
         const TMP_WORDS: usize = {};\n\
         /// The model's classes.\n\
         const CLASSES: usize = {};\n\
         /// The bundled test image a board classifies (`MPCVIT_IMAGE`).\n\
         #[allow(dead_code)]\n\
         const IMAGE_INDEX: usize = {};\n",
        tile.rows,
        tile.heads,
        tile.queries,
        vit::scratch_len(&arch, tile, mpcvit_core::Role::Device, &view),
        b.tx.max(256),
        b.rx.max(256),
        b.tmp.max(1),
        arch.classes,
        image,
    );
    fs::write(out.join("sizes.rs"), code).expect("write sizes.rs");
}
