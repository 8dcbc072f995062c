//! Edge-summary benchmark: what the bundled `edge-summary` summarizer (Apache DataSketches in
//! the sandbox) costs per flow at ingest, against ingest itself (store append + flush of the
//! same flows) in the same run, and how accurate it is against the exact answers over the
//! same flows. Prints a markdown table; see docs/PERFORMANCE.md. Needs the plugins built:
//! `cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`, then
//! `cargo bench -p weir-host --bench summaries` (`WEIR_BENCH_FLOWS` flows, default 1 M;
//! `WEIR_BENCH_RUNS` runs of the summaries, default 3).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use weir_core::Flow;
use weir_host::plugin::wit_types::View;
use weir_host::plugin::{LoadRequest, Plugin};
use weir_host::{Capability, FlowBatch, Manifest, Runtime};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

/// The fields edge-summary reads through `flow-fields` (see its `update`).
const BY_NAME: [&str; 5] = [
    "TimeFlowRttNs",
    "DnsLatencyUs",
    "DnsName",
    "SrcK8S_Namespace",
    "SrcK8S_OwnerName",
];

fn load(rt: &Runtime) -> Plugin {
    let wasm = std::fs::read(dir().join("target/wasm32-wasip2/release/edge_summary.wasm"))
        .expect("build the plugins first (see the header of this file)");
    let manifest = Manifest::parse(
        &std::fs::read_to_string(dir().join("edge-summary/plugin.toml")).expect("toml"),
        "plugin.toml",
    )
    .expect("manifest");
    Plugin::load(
        rt,
        LoadRequest {
            wasm: &wasm,
            manifest: Some(manifest),
            grants: &[Capability::FlowFields],
            limits: None,
            config: BTreeMap::new(),
            flows: None,
            services: Default::default(),
            scopes: Default::default(),
        },
    )
    .expect("load")
}

/// Zipf-like talkers over 20,000 sources, 500 destinations, web and DNS ports, RTTs, DNS
/// names and latencies, two interfaces, workloads for half the sources.
fn mix(n: usize) -> Vec<Flow> {
    let mut x = 42u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    let t0 = 1_700_000_000_000u64;
    (0..n)
        .map(|i| {
            let mut f = Flow::empty();
            let u = (next() % 1_000_000) as f64 / 1_000_000.0;
            let src = ((u * 20001f64.ln()).exp() as u64)
                .saturating_sub(1)
                .min(19_999);
            f.src_addr = format!("10.{}.{}.{}", src / 65536, (src / 256) % 256, src % 256)
                .parse()
                .expect("ip");
            f.dst_addr = format!("10.200.{}.{}", (next() % 500) / 250, next() % 250)
                .parse()
                .expect("ip");
            f.proto = if next() % 5 == 0 { 17 } else { 6 };
            f.dst_port = [443, 80, 53, 8080, 5432, 6379][(next() % 6) as usize];
            f.src_port = 30000 + (next() % 30000) as u16;
            f.bytes = 100 + next() % 20_000;
            f.packets = 1 + f.bytes / 1200;
            f.time_flow_end_ms = t0 + i as u64;
            f.time_flow_start_ms = f.time_flow_end_ms - next() % 10_000;
            if f.proto == 6 {
                f.time_flow_rtt_ns = (200 + next() % 50_000) * 1000;
            }
            if f.dst_port == 53 {
                f.dns_name = format!("svc{}.example.com", next() % 400);
                f.dns_latency_us = 100 + next() % 20_000;
            }
            f.interface = if i % 3 == 0 { "eth0" } else { "eth1" }.into();
            if src.is_multiple_of(2) {
                f.src_k8s_namespace = "shop".into();
                f.src_k8s_owner_name = format!("app{}", src % 40);
            }
            f
        })
        .collect()
}

fn rows(v: &View) -> Vec<Vec<String>> {
    match v {
        View::Table(t) => t.rows.clone(),
        _ => Vec::new(),
    }
}

fn main() {
    let n: usize = std::env::var("WEIR_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_batch = 10_000;
    let flows = mix(n);
    let batches: Vec<Arc<Vec<Flow>>> = flows
        .chunks(per_batch)
        .map(|c| Arc::new(c.to_vec()))
        .collect();

    // Baseline: ingest without summaries (append every batch to a store, then flush).
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = weir_core::Store::open(weir_core::store::StoreConfig::new(tmp.path().join("s")))
        .expect("store");
    let t = Instant::now();
    // `WEIR_BENCH_NO_STORE=1` skips the baseline (to profile the summary alone).
    if std::env::var_os("WEIR_BENCH_NO_STORE").is_none() {
        for b in &batches {
            store.append(b).expect("append");
        }
        store.flush().expect("flush");
    }
    let ingest_ns = t.elapsed().as_nanos() as f64 / n as f64;

    // The host's columns, built once per batch for every batch-taking plugin.
    let t = Instant::now();
    let cols: Vec<FlowBatch> = batches
        .iter()
        .map(|b| FlowBatch::shared(b.clone()))
        .collect();
    let columns_ns = t.elapsed().as_nanos() as f64 / n as f64;

    // What the host does for the fields edge-summary reads by name (`flow-fields`), per
    // batch: the part of the plugin's time spent outside the sandbox building columns.
    let by_name: Vec<&weir_core::schema::FieldDef> = BY_NAME
        .iter()
        .map(|f| weir_host::fields::field_named(f).expect("field"))
        .collect();
    let t = Instant::now();
    for b in &batches {
        for f in &by_name {
            std::hint::black_box(weir_host::fields::column_of(b.iter(), f));
        }
    }
    let fields_ns = t.elapsed().as_nanos() as f64 / n as f64;

    // The summaries, `WEIR_BENCH_RUNS` times (default 3), each by a fresh instance: the
    // median and the range (this machine kind is noisy).
    let runs: usize = std::env::var("WEIR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(3);
    let rt = Runtime::new(None).expect("runtime");
    let now = 1_700_000_000_000u64;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let p = load(&rt);
        let t = Instant::now();
        for b in &cols {
            p.summarize_at(b, now).expect("summarize");
        }
        times.push(t.elapsed().as_nanos() as f64 / n as f64);
        last = Some(p);
    }
    let p = last.expect("at least one run");
    times.sort_by(f64::total_cmp);
    let summary_ns = times[times.len() / 2];
    let range = format!("{:.0}-{:.0}", times[0], times[times.len() - 1]);
    // The fixed cost of one call with the state full (the warm instance: no restore).
    let empty = FlowBatch::new(&[]);
    let t = Instant::now();
    for _ in 0..20 {
        p.summarize_at(&empty, now).expect("summarize");
    }
    let call_ms = t.elapsed().as_secs_f64() * 1000.0 / 20.0;
    let snapshot_bytes = p.summary_snapshot().expect("snapshot").len();

    // Accuracy against the exact answers over the same flows.
    let mut exact: HashMap<String, u64> = HashMap::new();
    for f in &flows {
        *exact.entry(f.src_addr.to_string()).or_default() += f.bytes;
    }
    let mut exact_top: Vec<(String, u64)> = exact.into_iter().collect();
    exact_top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let est = rows(&p.query_summary("top talkers bytes 10").expect("query"));
    let found = exact_top[..10]
        .iter()
        .filter(|(k, _)| est.iter().any(|r| &r[1] == k))
        .count();
    let total: u64 = flows.iter().map(|f| f.bytes).sum();
    let overview = rows(&p.query_summary("overview").expect("query"));
    let est_total: u64 = overview
        .iter()
        .find(|r| r[0] == "bytes")
        .and_then(|r| r[1].parse().ok())
        .unwrap_or(0);
    let distinct = overview
        .iter()
        .find(|r| r[0] == "distinct sources")
        .and_then(|r| r[1].parse::<f64>().ok())
        .unwrap_or(0.0);
    let exact_distinct = exact_top.len() as f64;

    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| flows ({} batches of {per_batch}) | {n} | |",
        batches.len()
    );
    println!(
        "| ingest without summaries (store append + flush), per flow (baseline) | {ingest_ns:.0} ns | |"
    );
    println!(
        "| host: batch to columns, once per batch for every plugin, per flow | {columns_ns:.0} ns | |"
    );
    println!(
        "| host: the {} fields edge-summary reads by name, per flow (within the next row) | {fields_ns:.0} ns | |",
        BY_NAME.len()
    );
    println!(
        "| edge-summary (every sketch), per flow, median of {runs} runs ({range}) | {summary_ns:.0} ns | <= 150 ns: {} |",
        if summary_ns <= 150.0 {
            "met"
        } else {
            "not met"
        }
    );
    println!(
        "| ratio edge-summary / ingest | {:.2} | |",
        summary_ns / ingest_ns
    );
    println!("| one call with an empty batch, state full (warm instance) | {call_ms:.3} ms | |");
    println!(
        "| snapshot size, state full | {} KiB | |",
        snapshot_bytes / 1024
    );
    println!("| top-10 talkers by bytes: recall | {found}/10 | >= 0.99 |");
    println!(
        "| byte total: estimate / exact | {:.4} | within 2 % |",
        est_total as f64 / total as f64
    );
    println!(
        "| distinct sources: estimate / exact ({exact_distinct}) | {:.4} | |",
        distinct / exact_distinct
    );
}
