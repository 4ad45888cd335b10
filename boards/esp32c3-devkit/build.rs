//! The deployment (`../common/build_support.rs`: `MPCVIT_BLOB`,
//! `MPCVIT_DEVICE_KEY`, optional `MPCVIT_PSK` and `MPCVIT_TILE`, default
//! `2,1,10`, which leaves room in the C3's data RAM). esp-hal provides the
//! memory map (`linkall.x`).

include!("../common/build_support.rs");

fn main() {
    deploy("2,1,10");
}
