//! The DNS payload parser (what the agent reads from captured DNS packets): never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(m) = weir_ebpf::dns::parse(data) {
        let _ = (m.is_response(), m.rcode());
    }
});
