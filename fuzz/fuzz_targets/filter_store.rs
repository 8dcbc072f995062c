//! The store's tantivy query and the in-memory evaluator agree on every filter: the flows a
//! listing returns are exactly the stored flows the filter matches (count and each flow).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use weir_core::Flow;
use weir_core::query::{SortBy, TimeRange, parse};
use weir_core::store::{ListRequest, Store, StoreConfig};

const T0: u64 = 1_800_000_000_000;

struct Fixture {
    store: Store,
    flows: Vec<Flow>,
    _dir: tempfile::TempDir,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = StoreConfig::new(dir.path());
        cfg.partition_ms = 900_000;
        let store = Store::open(cfg).expect("store");
        let flows = weir_fuzz::flows(400, T0);
        store.append(&flows).expect("append");
        store.flush().expect("flush");
        Fixture {
            store,
            flows,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.to_ascii_lowercase().contains("traceid") {
        return;
    }
    let Ok(filter) = parse(text) else {
        return;
    };
    let fx = fixture();
    let range = TimeRange {
        from_ms: T0 - 3_000_000,
        to_ms: T0 - 600_000,
    };
    let want = fx
        .flows
        .iter()
        .filter(|f| range.overlaps(f.time_flow_start_ms, f.time_flow_end_ms) && filter.matches(f))
        .count();
    let got = fx
        .store
        .list(&ListRequest {
            filter: filter.clone(),
            range,
            sort: SortBy::parse("-TimeFlowEndMs").expect("sort"),
            limit: 10_000,
            offset: 0,
        })
        .expect("list");
    assert_eq!(got.total as usize, want, "count for {text:?} ({filter:?})");
    assert_eq!(got.flows.len(), want, "rows for {text:?}");
    for f in &got.flows {
        assert!(
            filter.matches(f),
            "{text:?} listed a flow it does not match: {f:?}"
        );
    }
});
