//! The memory map and the deployment (`../common/build_support.rs`:
//! `MPCVIT_BLOB`, `MPCVIT_DEVICE_KEY`, optional `MPCVIT_PSK` and
//! `MPCVIT_TILE`, default `2,1,10`, which fits SRAM1's 96 KiB with the
//! stack).
include!("../common/build_support.rs");

fn main() {
    memory_map("memory.x");
    deploy("2,1,10");
}
