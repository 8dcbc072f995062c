//! Plugin manifests: `plugin.toml` text and the `weir:manifest` custom section found in a
//! component's bytes. Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_host::manifest::{Manifest, custom_section};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Manifest::parse(text, "fuzz/plugin.toml");
    }
    if let Ok(Some(section)) = custom_section(data, "weir:manifest")
        && let Ok(text) = std::str::from_utf8(section)
    {
        let _ = Manifest::parse(text, "fuzz.wasm");
    }
});
