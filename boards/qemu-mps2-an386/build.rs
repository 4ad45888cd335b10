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
    let hex = fs::read_to_string(&key).expect("read device key");
    let hex = hex.trim();
    assert_eq!(hex.len(), 64, "a key file holds 64 hex digits");
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    fs::write(out.join("device.key"), bytes).expect("write key");
}
