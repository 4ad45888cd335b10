//! The memory map and the deployment (`../common/build_support.rs`:
//! `MPCVIT_BLOB`, `MPCVIT_DEVICE_KEY`, optional `MPCVIT_PSK` and
//! `MPCVIT_TILE`, default `1,1,5`, which fits the Pico's 264 KiB).
use std::{env, fs, path::PathBuf};

include!("../common/build_support.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("memory map");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=../common/build_support.rs");
    deploy("1,1,5");
}
