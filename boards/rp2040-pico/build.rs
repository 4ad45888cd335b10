//! The memory map and the deployment (`../common/build_support.rs`:
//! `MPCVIT_BLOB`, `MPCVIT_DEVICE_KEY`, optional `MPCVIT_PSK` and
//! `MPCVIT_TILE`, default `1,1,5`, which fits the Pico's 264 KiB).
include!("../common/build_support.rs");

fn main() {
    memory_map("memory.x");
    deploy("1,1,5");
}
