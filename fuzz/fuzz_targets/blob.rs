//! The provisioning-blob and plan decoders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mpcvit_core::model::Layout;
use mpcvit_core::provision::BlobView;

fuzz_target!(|data: &[u8]| {
    for v in [BlobView::parse(data), BlobView::parse_plan(data)].into_iter().flatten() {
        let a = v.arch();
        let _ = v.attn(a.layers.saturating_sub(1), a.heads.saturating_sub(1));
        for id in mpcvit_core::ops::vit::Wid::all(&a) {
            let _ = v.words(id).count();
        }
    }
});
