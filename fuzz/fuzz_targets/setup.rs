//! The session set-up messages.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mpcvit_core::session::{Accept, Challenge, DealerConfirm, DealerSetup, DeviceHello, Message};

fuzz_target!(|data: &[u8]| {
    let _ = Challenge::decode(data);
    let _ = DeviceHello::decode(data);
    let _ = DealerConfirm::decode(data);
    let _ = Accept::decode(data);
    if let Ok((_, plan)) = DealerSetup::decode_prefix(data) {
        let _ = mpcvit_core::provision::BlobView::parse_plan(plan);
    }
});
