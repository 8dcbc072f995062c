//! Operator configuration files: the inventory (TOML) and the user metrics config. Never
//! panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(table) = weir_core::enrich::parse_inventory(text) {
        let _ = table.lookup(&"10.0.0.1".parse().expect("address"));
    }
    let _ = weir_core::metrics::parse_user_metrics(text);
});
