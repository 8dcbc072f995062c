//! The filter language: never panics, an error's caret rendering never panics, and a parsed
//! filter printed and parsed again is the same filter (`parse(print(x)) == x`); evaluating it
//! against flows never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use weir_core::query::parse;

static FLOWS: OnceLock<Vec<weir_core::Flow>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Err(e) => {
            let _ = e.render(text);
        }
        Ok(e) => {
            // A TraceId comparison depends on the spans an agent keeps: not spelled back.
            if !text.to_ascii_lowercase().contains("traceid") {
                let printed = e.to_string();
                assert_eq!(
                    parse(&printed).as_ref(),
                    Ok(&e),
                    "{text:?} printed as {printed:?}"
                );
            }
            for f in FLOWS.get_or_init(|| weir_fuzz::flows(50, 1_800_000_000_000)) {
                let _ = e.matches(f);
            }
        }
    }
});
