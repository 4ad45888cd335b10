//! The model-file decoder.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = mpcvit_core::model::ModelView::parse(data) {
        // A parsed model is safe to read everywhere.
        let a = m.arch();
        for i in 0..a.tensor_count() {
            if let Some(t) = a.tensor_at(i) {
                let _ = m.iter(t).count();
            }
        }
    }
});
