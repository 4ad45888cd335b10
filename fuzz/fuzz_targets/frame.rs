//! The streaming frame decoder, fed the input in pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mpcvit_transport::frame::Feed;
use mpcvit_transport::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    let mut d = FrameDecoder::<512>::new();
    // The first byte picks the piece size.
    let (step, rest) = data.split_first().map_or((1, data), |(s, r)| (1 + *s as usize % 64, r));
    for chunk in rest.chunks(step) {
        let mut c = chunk;
        while !c.is_empty() {
            match d.feed(c) {
                Feed::NeedMore => break,
                Feed::Frame { consumed } | Feed::Error { consumed, .. } => c = &c[consumed.max(1).min(c.len())..],
            }
        }
    }
});
