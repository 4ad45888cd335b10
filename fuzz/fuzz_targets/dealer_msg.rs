//! A dealer message's header check on the host.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mpcvit_core::{Correlations, Role, Seed, SessionId};

fuzz_target!(|data: &[u8]| {
    let mut c = Correlations::new(Role::Host, &Seed::from_bytes([1; 32]), SessionId(7));
    if c.next_op_with(data).is_err() {
        assert!(c.next_op_with(data).is_err(), "a refused message poisons the source");
    }
});
