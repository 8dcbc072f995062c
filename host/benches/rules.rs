//! Alert-rule benchmark: every bundled rule evaluated over a window holding 1 M stored flows
//! (real sled/tantivy store, real sandbox), against the store's own aggregation with the same
//! grouping (the floor any rule pays). Medians of 5 after one warm-up call. Prints a table;
//! see docs/PERFORMANCE.md. Needs the plugins built:
//! `cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`, then
//! `cargo bench -p weir-host --bench rules` (`WEIR_BENCH_FLOWS` changes the 1 M).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use weir_core::Flow;
use weir_core::query::{TimeRange, parse, parse_group_by};
use weir_host::plugin::wit_types::TimeRange as WitRange;
use weir_host::plugin::{LoadRequest, Plugin};
use weir_host::{Manifest, Runtime};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    )
}

/// Flows of a busy node over five minutes: 4 namespaces x 8 interfaces x 2 directions, a
/// third TCP with an RTT, one in 20 DNS (some NXDOMAIN), one in 100 with drops.
fn synth(n: usize, t0: u64, span_ms: u64) -> Vec<Flow> {
    (0..n)
        .map(|i| {
            let mut f = Flow::empty();
            let end = t0 + (i as u64 * span_ms) / n as u64;
            f.time_flow_end_ms = end;
            f.time_flow_start_ms = end.saturating_sub(1000);
            f.netns = format!("ns{}", i % 4);
            f.interface = format!("veth{}", (i / 4) % 8);
            f.if_direction = (i % 2) as u8;
            f.src_addr = format!("10.0.{}.{}", (i / 250) % 16, i % 250)
                .parse()
                .expect("ip");
            f.dst_addr = format!("10.1.0.{}", i % 100).parse().expect("ip");
            f.bytes = 100 + (i % 1500) as u64;
            f.packets = 1 + (i % 20) as u64;
            match i % 20 {
                0 => {
                    f.proto = 17;
                    f.dst_port = 53;
                    f.dns_latency_us = 200 + (i % 5000) as u64;
                    f.dns_name = format!("host{}.example", i % 50);
                    f.dns_flags_response_code =
                        if i % 7 == 0 { "NXDomain" } else { "NoError" }.into();
                }
                1..=7 => {
                    f.proto = 6;
                    f.dst_port = 443;
                    f.time_flow_rtt_ns = 50_000 + (i % 100_000) as u64 * 10;
                }
                _ => {
                    f.proto = 17;
                    f.dst_port = 8000 + (i % 100) as u16;
                }
            }
            if i % 100 == 3 {
                f.pkt_drop_packets = 1 + (i % 3) as u64;
                f.pkt_drop_bytes = 100;
                f.pkt_drop_latest_drop_cause = "SKB_DROP_REASON_NETFILTER_DROP".into();
            }
            f
        })
        .collect()
}

fn main() {
    let n: usize = std::env::var("WEIR_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = Arc::new(Runtime::new(None).expect("runtime"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        weir_core::Store::open(weir_core::store::StoreConfig::new(tmp.path().join("store")))
            .expect("store"),
    );
    let t0 = weir_core::query::now_ms() / 3_600_000 * 3_600_000;
    let span = 300_000;
    let flows = synth(n, t0, span);
    for chunk in flows.chunks(10_000) {
        store.append(chunk).expect("append");
    }
    store.flush().expect("flush");
    drop(flows);
    let range = TimeRange {
        from_ms: t0,
        to_ms: t0 + span,
    };
    let window = WitRange {
        from_ms: range.from_ms,
        to_ms: range.to_ms,
    };
    // Baseline: the store aggregating every flow of the window by namespace and interface.
    let all = parse("").expect("filter");
    let by_if = parse_group_by("NetNs,Interface").expect("group by");
    let baseline = time(|| {
        std::hint::black_box(
            store
                .aggregate(&all, &range, &by_if, None)
                .expect("aggregate"),
        );
    });

    let rules: [(&str, &[(&str, &str)]); 6] = [
        ("saturation", &[("capacity_bps", "1000000")]),
        ("quiet", &[("seasonality", "none"), ("learn_windows", "1")]),
        ("drops", &[]),
        ("latency", &[]),
        ("dns-errors", &[]),
        ("no-flows", &[]),
    ];
    println!("alert-rule benchmark: {n} stored flows in a 5-minute window, medians of 5");
    println!();
    println!("| rule | evaluation | alerts | / baseline | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| baseline: store aggregation NetNs,Interface over every flow | {baseline:.0} ms | | 1.00 | |"
    );
    for (name, config) in rules {
        let manifest = Manifest::parse(
            &std::fs::read_to_string(dir().join(name).join("plugin.toml")).expect("toml"),
            "plugin.toml",
        )
        .expect("manifest");
        let wasm = std::fs::read(dir().join(format!(
            "target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        )))
        .expect("build the plugins first (see the header of this file)");
        let grants = manifest.capabilities.clone();
        let rule = Plugin::load(
            &rt,
            LoadRequest {
                wasm: &wasm,
                manifest: Some(manifest),
                grants: &grants,
                limits: None,
                config: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                flows: Some(store.clone()),
                services: Default::default(),
                scopes: Default::default(),
            },
        )
        .expect("load");
        let mut alerts = 0;
        let ms = time(|| alerts = rule.evaluate(window).expect("evaluate").len());
        println!(
            "| {name} | {ms:.0} ms | {alerts} | {:.2} | <= 100 ms |",
            ms / baseline
        );
    }
}
