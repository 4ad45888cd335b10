//! Puts the memory map in place and the deployment into flash
//! (`../common/build_support.rs`: `MPCVIT_BLOB`, `MPCVIT_DEVICE_KEY`,
//! optional `MPCVIT_PSK` and `MPCVIT_TILE`, default `2,1,5`, which fits
//! 64 KiB of RAM with the stack). `mpcvit demo --device qemu` sets them; a
//! plain build without them fails with a message saying so.
include!("../common/build_support.rs");

fn main() {
    memory_map("memory-an386.x");
    deploy("2,1,5");
}
