//! Incident files (`weir incident restore`): never panics; every part of a file that opens
//! reads or fails with an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_core::incident::Incident;

fuzz_target!(|data: &[u8]| {
    if let Ok(i) = Incident::from_bytes(data) {
        let _ = i.flows();
        let _ = i.records();
        let _ = i.alerts();
        let _ = i.settings();
        let _ = i.plugins();
        let _ = i.to_bytes();
    }
});
