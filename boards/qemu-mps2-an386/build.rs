//! Puts the memory map in place and the deployment into flash
//! (`../common/build_support.rs`: `MPCVIT_BLOB`, `MPCVIT_DEVICE_KEY`, optional
//! `MPCVIT_PSK` and `MPCVIT_TILE`, default `2,1,10`). `mpcvit demo --device
//! qemu` sets them; a plain build without them fails with a message saying
//! so.
use std::{env, fs, path::PathBuf};

include!("../common/build_support.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::copy("memory-an386.x", out.join("memory.x")).expect("memory map");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory-an386.x");
    println!("cargo:rerun-if-changed=../common/build_support.rs");
    deploy("2,1,10");
}
