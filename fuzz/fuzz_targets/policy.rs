//! Kubernetes YAML (policies, pods, namespaces, services; multi-document): never panics; a
//! document that cannot be read is recorded with its place, never dropped silently.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_core::policy::load::Objects;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut o = Objects::default();
    o.add_text("fuzz.yaml", text);
    let _ = o.pod_addresses();
    let _ = o.without_policies();
});
