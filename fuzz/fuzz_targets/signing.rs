//! Public keys and signed components: any bytes as a key, any bytes as a signed component
//! checked against a trusted key. Never panics, and never accepts what that key did not sign.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use weir_host::signing::{TrustedKey, parse_public, verify};

static TRUSTED: OnceLock<Vec<TrustedKey>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let _ = parse_public(data, "fuzz.pub");
    let trusted = TRUSTED.get_or_init(|| {
        let (_secret, public) = weir_host::signing::generate();
        vec![TrustedKey {
            name: "fuzz".into(),
            key: parse_public(public.as_bytes(), "generated").expect("a generated key parses"),
        }]
    });
    // The secret key is dropped unused: nothing the fuzzer makes can carry a valid signature.
    assert!(
        verify(data, trusted).is_err(),
        "accepted an unsigned component"
    );
});
