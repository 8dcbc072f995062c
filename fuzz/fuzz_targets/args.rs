//! The small languages of arguments and parameters: times and ranges (`from`/`to`), durations,
//! sizes, sort and group-by parameters, capture filter rules, sink destinations, object
//! selectors, addresses and networks. None panics; a time range that parses is ordered.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_core::query::{self, SortBy, TimeRange};

#[path = "../../src/units.rs"]
#[allow(dead_code)]
mod units;

const NOW: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let a = weir_fuzz::args(data, 3);
    if let Ok(r) = TimeRange::parse(Some(&a[0]), Some(&a[1]), NOW) {
        assert!(r.from_ms <= r.to_ms, "{a:?} gave {r:?}");
    }
    let _ = TimeRange::parse(Some(&a[0]), None, NOW);
    let _ = query::parse_time(&a[2], NOW);
    let _ = query::parse_duration_ms(&a[0]);
    let _ = SortBy::parse(&a[0]);
    let _ = query::parse_group_by(&a[1]);
    if let Ok(n) = units::size(&a[0]) {
        let _ = units::human_bytes(n);
    }
    let _ = units::duration(&a[1]);
    let _ = weir_core::capture::FilterRule::parse(&a[2]);
    let _ = weir_core::sink::Destination::parse(&a[0]);
    let _ = weir_core::objects::Selector::parse(&a[1]);
    let _ = query::parse_ip_or_cidr(&a[2]);
    if let Ok((net, bits)) = weir_core::schema::parse_network(&a[0]) {
        assert!(bits <= 128);
        assert_eq!(
            net & !weir_core::schema::prefix_mask(bits),
            0,
            "{a:?}: host bits set"
        );
    }
    let _ = weir_core::ovs::parse_num(&a[1]);
});
