//! Flow import bodies (JSON array or NDJSON): never panics, and every flow accepted survives
//! being written as JSON and read back unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_core::import::parse_flows;

fuzz_target!(|data: &[u8]| {
    if let Ok(flows) = parse_flows(data) {
        for f in flows {
            let json = serde_json::to_string(&f).expect("a flow serializes");
            let back: weir_core::Flow = serde_json::from_str(&json).expect("its JSON reads back");
            assert_eq!(back, f, "{json}");
        }
    }
});
