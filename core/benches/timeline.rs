//! Timeline benchmark: `timeline::build` over 24 h of stored flows and records (spans, logs,
//! Kubernetes events), against the flow volume alone (one bucketed aggregate) in the same
//! process. Prints a markdown table; see docs/PERFORMANCE.md.
//!
//! `WEIR_BENCH_FLOWS` (default 1,000,000) and `WEIR_BENCH_RECORDS` (default 100,000) set the
//! size; the target is 10 M flows and 1 M records in 300 ms:
//! `WEIR_BENCH_FLOWS=10000000 WEIR_BENCH_RECORDS=1000000 cargo bench -p weir-core --bench timeline`.

use std::time::Instant;
use weir_core::query::{TimeRange, parse};
use weir_core::records::{Entry, RecordStore};
use weir_core::store::{Buckets, StoreConfig};
use weir_core::timeline::{TimelineRequest, build};
use weir_core::{Flow, Store};

/// The same allocator as the `weir` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: u64 = 1_800_000_000_000;
const DAY_MS: u64 = 24 * 3_600_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flows(start: usize, n: usize, total: usize) -> Vec<Flow> {
    (start..start + n)
        .map(|i| {
            let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut f = Flow::empty();
            f.time_flow_end_ms = T0 + (i as u64 * DAY_MS) / total as u64;
            f.time_flow_start_ms = f.time_flow_end_ms - x % 5000;
            f.time_received = f.time_flow_end_ms;
            f.src_addr = std::net::Ipv4Addr::from(0x0a00_0000 | (x % 5000) as u32).into();
            f.dst_addr = std::net::Ipv4Addr::from(0x0a10_0000 | ((x >> 16) % 2000) as u32).into();
            f.dst_port = [80, 443, 53, 5432][(x >> 40) as usize % 4];
            f.proto = 6;
            f.bytes = 64 + (x >> 44) % 100_000;
            f.packets = 1 + f.bytes / 1400;
            f.pkt_drop_packets = u64::from(x.is_multiple_of(97));
            f
        })
        .collect()
}

fn record(i: usize, total: usize) -> Entry {
    let t = T0 + (i as u64 * DAY_MS) / total as u64;
    let (kind, sev) = match i % 10 {
        0 => ("k8s-event", "warning"),
        1..=4 => ("span", "info"),
        _ => ("log", if i % 50 == 5 { "error" } else { "info" }),
    };
    Entry {
        time_ms: t,
        end_ms: (kind == "span").then_some(t + 20),
        kind: kind.into(),
        text: format!("{kind} {i}"),
        labels: vec![
            ("severity".into(), sev.into()),
            ("service".into(), format!("svc{}", i % 20)),
            ("trace_id".into(), format!("{:032x}", i as u128 + 1)),
        ],
        flow_filter: Some(format!("DstPort={}", [80, 443][i % 2])),
    }
}

fn main() {
    let (nf, nr) = (
        env("WEIR_BENCH_FLOWS", 1_000_000),
        env("WEIR_BENCH_RECORDS", 100_000),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path().join("flows"))).expect("store");
    let t = Instant::now();
    let mut i = 0;
    while i < nf {
        let n = 10_000.min(nf - i);
        store.append(&flows(i, n, nf)).expect("append");
        i += n;
    }
    store.flush().expect("flush");
    let records = RecordStore::open(&dir.path().join("records")).expect("records");
    let mut i = 0;
    while i < nr {
        let n = 1000.min(nr - i);
        records
            .write("bench", (i..i + n).map(|j| record(j, nr)).collect())
            .expect("write");
        i += n;
    }
    eprintln!(
        "loaded {nf} flows and {nr} records in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let range = TimeRange {
        from_ms: T0,
        to_ms: T0 + DAY_MS,
    };
    let step = DAY_MS / 200;
    let filter = parse("").expect("filter");
    let time = |f: &dyn Fn()| {
        let mut v: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[2]
    };
    let volume = time(&|| {
        store
            .aggregate(
                &filter,
                &range,
                &[],
                Some(Buckets {
                    origin_ms: T0,
                    step_ms: step,
                }),
            )
            .expect("aggregate");
    });
    // The records' time index walked alone, nothing counted: the floor of the lanes' share.
    let walk = time(&|| {
        let mut n = 0u64;
        records
            .scan_brief(T0, T0 + DAY_MS, usize::MAX, |_, _, _| n += 1)
            .expect("walk");
        assert_eq!(n, nr as u64);
    });
    let req = TimelineRequest {
        range,
        step_ms: step,
        filter: filter.clone(),
        max_items: 500,
    };
    let full = time(&|| {
        let t = build(&store, Some(&records), &[], &req).expect("timeline");
        assert_eq!(t.lanes.iter().map(|l| l.total).sum::<u64>(), nr as u64);
    });
    let lanes = build(&store, Some(&records), &[], &req)
        .map(|t| t.lanes.len())
        .unwrap_or(0);
    // Opening the records store again: its counts per minute are built by one walk.
    drop(records);
    let t = Instant::now();
    let records = RecordStore::open(&dir.path().join("records")).expect("reopen");
    let reopen = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(records.len(), nr);
    println!(
        "Timeline over 24 h: {nf} flows, {nr} records ({lanes} lanes), 200 buckets; median of 5\n"
    );
    println!("| what | ms | vs volume only |");
    println!("|---|---:|---:|");
    println!("| flow volume only (bucketed aggregate) | {volume:.0} | 1.00 |");
    println!(
        "| records' time index walked alone | {walk:.0} | {:.2} |",
        walk / volume.max(0.001)
    );
    println!(
        "| whole timeline (volume + every lane) | {full:.0} | {:.2} |",
        full / volume.max(0.001)
    );
    println!("\nOpening the records store ({nr} records, counts per minute built): {reopen:.0} ms");
}
