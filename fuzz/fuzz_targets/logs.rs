//! Log lines a log-file source reads: syslog text and journald JSON. Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_core::telemetry::logfile::{parse_journal, parse_syslog};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_syslog(text, "fuzz.log", 1_800_000_000_000);
    if let Ok(v) = serde_json::from_str(text) {
        let _ = parse_journal(&v, "fuzz.log");
    }
});
