//! IDX dataset decoders (Fashion-MNIST layout): the first two bytes (LE)
//! say where the image file ends and the label file starts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (head, rest) = data.split_at(2);
    let split = u16::from_le_bytes([head[0], head[1]]) as usize % (rest.len() + 1);
    let (a, b) = rest.split_at(split);
    let _ = mpcvit::data::idx_images(a, "fuzz");
    let _ = mpcvit::data::parse_idx(a, b, "fuzz");
});
