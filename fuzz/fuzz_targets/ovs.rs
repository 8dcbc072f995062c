//! OVS text: `ovs-dpctl show` output and the datapath-flow filter language. Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = weir_core::ovs::parse_dpctl_show(text);
    let _ = weir_core::ovs::views::FlowFilter::parse(text);
});
