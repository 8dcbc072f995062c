//! A plugin's outbound-http tape as an incident carries it (a replay answers from it): never
//! panics; what it reads (up to its first torn entry) writes back to the same entries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_host::tape::{parse, to_bytes};

fuzz_target!(|data: &[u8]| {
    let (list, _) = parse(data);
    let again = to_bytes(&list).expect("entries encode");
    let (back, torn) = parse(&again);
    assert_eq!((back.len(), torn), (list.len(), None));
    assert_eq!(to_bytes(&back).expect("entries encode"), again);
});
