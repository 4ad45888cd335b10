//! Puts the memory map in place and the deployment's data into flash: the
//! provisioning blob (`MPCVIT_BLOB`), the device key (`MPCVIT_DEVICE_KEY`, a
//! key file of `mpcvit keygen`) and the demo's test images. `mpcvit demo
//! --device qemu` sets both variables; a plain build without them fails
//! with a message saying so.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::copy("memory-an386.x", out.join("memory.x")).expect("memory map");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory-an386.x");
    println!("cargo:rerun-if-env-changed=MPCVIT_BLOB");
    println!("cargo:rerun-if-env-changed=MPCVIT_DEVICE_KEY");
    println!("cargo:rerun-if-env-changed=MPCVIT_PSK");
    println!("cargo:rerun-if-env-changed=MPCVIT_TILE");
    // Optional: seal the host link with this pre-shared key file.
    let psk: Vec<u8> = match env::var_os("MPCVIT_PSK") {
        Some(p) => {
            println!("cargo:rerun-if-changed={}", PathBuf::from(&p).display());
            let hex = fs::read_to_string(&p).expect("read MPCVIT_PSK");
            let hex = hex.trim();
            assert_eq!(hex.len(), 64, "a key file holds 64 hex digits");
            (0..32)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                .collect()
        }
        None => Vec::new(),
    };
    fs::write(out.join("psk.bin"), psk).expect("write psk");
    let need = |var: &str| -> PathBuf {
        match env::var_os(var) {
            Some(p) => PathBuf::from(p),
            None => panic!(
                "{var} is not set: build this firmware with `mpcvit demo --device qemu` \
                 (or set MPCVIT_BLOB to a provisioning blob and MPCVIT_DEVICE_KEY to the device key file)"
            ),
        }
    };
    let blob = need("MPCVIT_BLOB");
    let key = need("MPCVIT_DEVICE_KEY");
    println!("cargo:rerun-if-changed={}", blob.display());
    println!("cargo:rerun-if-changed={}", key.display());
    fs::copy(&blob, out.join("device.blob")).expect("copy blob");
    sizes(&blob, &out);
    let hex = fs::read_to_string(&key).expect("read device key");
    let hex = hex.trim();
    assert_eq!(hex.len(), 64, "a key file holds 64 hex digits");
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    fs::write(out.join("device.key"), bytes).expect("write key");
}

/// The tile this firmware runs (`MPCVIT_TILE`: `whole` or
/// `ROWS,HEADS,QUERIES`, default `2,1,10`) and the static buffers it needs
/// for the blob's architecture: `vit::scratch_len` and
/// `mpcvit_device::buffers`, written to `sizes.rs`.
fn sizes(blob: &std::path::Path, out: &std::path::Path) {
    use mpcvit_core::ops::vit::{self, Tile};
    let bytes = fs::read(blob).expect("read blob");
    let view = mpcvit_core::provision::BlobView::parse(&bytes).expect("MPCVIT_BLOB is not a valid provisioning blob");
    let arch = view.arch();
    let spec = env::var("MPCVIT_TILE").unwrap_or_else(|_| "2,1,10".into());
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
    let code = format!(
        "/// The tile (build.rs, `MPCVIT_TILE`).\n\
         const TILE: Tile = Tile {{ rows: {}, heads: {}, queries: {} }};\n\
         /// `vit::scratch_len` for the blob and the tile.\n\
         const SCRATCH_WORDS: usize = {};\n\
         /// `mpcvit_device::buffers`; at least a set-up answer.\n\
         const TX_BYTES: usize = {};\n\
         /// See `TX_BYTES`.\n\
         const RX_BYTES: usize = {};\n\
         /// See `TX_BYTES`.\n\
         const TMP_WORDS: usize = {};\n\
         /// The patch matrix.\n\
         const PATCH_WORDS: usize = {};\n",
        tile.rows,
        tile.heads,
        tile.queries,
        vit::scratch_len(&arch, tile),
        b.tx.max(256),
        b.rx.max(256),
        b.tmp.max(1),
        (arch.tokens() - 1) * arch.patch_len(),
    );
    fs::write(out.join("sizes.rs"), code).expect("write sizes.rs");
}
