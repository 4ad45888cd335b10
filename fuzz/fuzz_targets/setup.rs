//! The session set-up messages.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mpcvit_core::session::{Accept, DealerSetup, DeviceHello};

fuzz_target!(|data: &[u8]| {
    let _ = DeviceHello::decode(data);
    let _ = Accept::decode(data);
    if let Ok((_, plan)) = DealerSetup::decode(data) {
        let _ = mpcvit_core::provision::BlobView::parse_plan(plan);
    }
});
