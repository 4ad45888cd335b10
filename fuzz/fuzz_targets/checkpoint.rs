//! The checkpoint pickle machine (`mpcvit import`'s data.pkl reader).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mpcvit::import::unpickle(data);
});
