//! IDX dataset decoders (Fashion-MNIST layout).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize) % (data.len() + 1);
    let (a, b) = data.split_at(split);
    let _ = mpcvit::data::idx_images(a, "fuzz");
    let _ = mpcvit::data::parse_idx(a, b, "fuzz");
});
