//! Summarizer snapshots to merge (`weir summary NAME --merge FILE`, edge-summary's format:
//! Apache DataSketches images in a small container). Never panics; a snapshot refused leaves
//! the summary as it was.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../plugins/edge-summary/src/sketches.rs"]
#[allow(dead_code)]
mod sketches;

fuzz_target!(|data: &[u8]| {
    let mut s = sketches::Summary::new();
    let before = s.snapshot();
    if s.merge(data).is_err() {
        assert_eq!(
            s.snapshot(),
            before,
            "a refused snapshot changed the summary"
        );
    }
});
