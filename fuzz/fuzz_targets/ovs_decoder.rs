//! The OVS decoder plugin's parsers (`plugins/ovs-decoder`: datapath flows as
//! `ovs-appctl dpctl/dump-flows` prints them, OpenFlow flows as `ovs-ofctl dump-flows` does),
//! compiled natively from the plugin's own source. Never panics; what a line decodes to is
//! valid JSON (the plugin hands it to the agent as a record); an error's column is inside the
//! line.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../plugins/ovs-decoder/src/json.rs"]
#[allow(dead_code)]
mod json;
#[path = "../../plugins/ovs-decoder/src/odp.rs"]
#[allow(dead_code)]
mod odp;
#[path = "../../plugins/ovs-decoder/src/ofp.rs"]
#[allow(dead_code)]
mod ofp;
#[path = "../../plugins/ovs-decoder/src/syntax.rs"]
#[allow(dead_code)]
mod syntax;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        for decoded in [odp::decode(line), ofp::decode(line)] {
            match decoded {
                Ok(out) => {
                    if let Err(e) = serde_json::from_str::<serde_json::Value>(&out) {
                        panic!("{line:?} decoded to invalid JSON ({e}): {out}");
                    }
                }
                Err(e) => assert!(
                    e.at <= line.len(),
                    "{line:?}: error at {} past the line's end: {}",
                    e.at,
                    e.message
                ),
            }
        }
    }
});
