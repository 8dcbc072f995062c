//! OCI references and image manifests as a registry answers them: never panics; a layer
//! digest accepted is `sha256:` and 64 hex digits (it becomes part of a URL).
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_host::oci::{Reference, wasm_layer};

fuzz_target!(|data: &[u8]| {
    let a = weir_fuzz::args(data, 2);
    let _ = Reference::parse(&a[0]);
    let r = Reference::parse("oci://localhost:5000/weir/plugin:1.0").expect("a valid reference");
    if let Ok(digest) = wasm_layer(&r, data) {
        assert_eq!(digest.len(), 71, "{digest}");
        assert!(digest.starts_with("sha256:"), "{digest}");
        assert!(
            digest[7..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{digest}"
        );
    }
});
