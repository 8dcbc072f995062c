//! weir's store against ClickHouse on the same flows and machine, with the queries the UI
//! sends. Prints a table; see docs/PERFORMANCE.md ("Side by side with ClickHouse").
//!
//! The same synthetic flows (`benches/support/synthetic.rs`: 5,000 sources, 2,000
//! destinations, seven ports, ten hours) go into a local store (appended in batches of
//! 10,000, as the ingest stage does) and into a clickhouse-server started here (Debian's;
//! `scripts/deps.sh test` installs it), through weir's own schema, into `flows_ingest` as
//! JSONEachRow, four inserts at a time (agents send RowBinary since clickhouse-export 0.3.0;
//! the export benchmark measures that). Both then answer through the
//! flow-query port ([`FlowQuery`]): what the Overview asks (top talkers, top ports, the
//! time series), top sources, the top 5-tuples, a time series per source, and one host's
//! newest flows. Every answer is checked equal on both sides; each time is the median of
//! five runs, and the ratio is weir's over ClickHouse's.
//!
//! `WEIR_BENCH_FLOWS` (default 2,000,000) sets the size:
//! `cargo bench -p weir-clickhouse --bench side_by_side`.

#[path = "../../benches/support/synthetic.rs"]
mod synthetic;

use std::time::Instant;
use synthetic::{SPAN_MS, T0, make_batch};
use weir_clickhouse::ClickHouse;
use weir_clickhouse::local::LocalServer;
use weir_core::flowquery::FlowQuery;
use weir_core::query::{Expr, Metric, SortBy, TimeRange, parse, parse_group_by};
use weir_core::store::{Buckets, ListRequest, StoreConfig};
use weir_core::{Flow, Store};

/// The same allocator as the `weir` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 10_000;
const RUNS: usize = 5;

/// One flow as an agent's `clickhouse-export` writes it: every field, `Node`, IPv4 as
/// `::ffff:a.b.c.d`.
fn row(f: &Flow) -> String {
    let mut v = serde_json::to_value(f).expect("flow JSON");
    if let Some(o) = v.as_object_mut() {
        o.insert("Node".into(), "bench".into());
        for k in ["SrcAddr", "DstAddr"] {
            if let Some(s) = o.get(k).and_then(|a| a.as_str())
                && !s.contains(':')
            {
                let mapped = format!("::ffff:{s}");
                o.insert(k.into(), mapped.into());
            }
        }
    }
    v.to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` [`RUNS`] times; the median in ms and the last answer.
fn time<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (median(times), last.expect("ran"))
}

fn main() {
    let total = synthetic::total_flows();
    let tmp = tempfile::tempdir().expect("tempdir");
    println!(
        "weir vs ClickHouse: {total} flows, data in {}",
        tmp.path().display()
    );

    let server = LocalServer::start(&tmp.path().join("clickhouse")).expect("clickhouse-server");
    let ch = ClickHouse::new(&server.url(), "weir").expect("clickhouse");
    ch.migrate().expect("migrate");
    let version = ch.query("SELECT version()").expect("version");

    let store = Store::open(StoreConfig::new(tmp.path().join("store"))).expect("store");
    let t = Instant::now();
    for start in (0..total).step_by(BATCH) {
        store
            .append(&make_batch(start, BATCH.min(total - start), total))
            .expect("append");
    }
    store.flush().expect("flush");
    let weir_load = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let url = ch.insert_url();
    let chunk = 50_000;
    let starts: Vec<usize> = (0..total).step_by(chunk).collect();
    std::thread::scope(|s| {
        for part in starts.chunks(starts.len().div_ceil(4).max(1)) {
            let url = &url;
            s.spawn(move || {
                for &start in part {
                    let mut body = String::from(" FORMAT JSONEachRow\n");
                    for f in make_batch(start, chunk.min(total - start), total) {
                        body.push_str(&row(&f));
                        body.push('\n');
                    }
                    let resp = ureq::post(url).send(body.as_bytes()).expect("insert");
                    assert_eq!(resp.status().as_u16(), 200, "insert");
                }
            });
        }
    });
    let ch_load = t.elapsed().as_secs_f64();
    ch.query("OPTIMIZE TABLE weir.flows FINAL")
        .expect("optimize");
    let ch_rows: u64 = ch
        .query("SELECT count() FROM weir.flows")
        .expect("count")
        .trim()
        .parse()
        .expect("count");
    assert_eq!(ch_rows as usize, total, "every flow in ClickHouse");
    let ch_bytes: u64 = ch
        .query(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'weir' AND table = 'flows' AND active",
        )
        .expect("parts")
        .trim()
        .parse()
        .unwrap_or(0);
    let weir_bytes = store.status().bytes;

    let all = Expr::All;
    let range = TimeRange::ALL;
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let mut top = |name: &str, group_by: &str, metric: Metric, k: usize| {
        let g = parse_group_by(group_by).expect("group_by");
        let (w, ours) = time(|| store.top(&all, &range, &g, metric, k).expect("store"));
        let (c, theirs) = time(|| ch.top(&all, &range, &g, metric, k).expect("clickhouse"));
        assert_eq!(ours, theirs, "{name}: the same answer from both");
        assert_eq!(ours.total.flows as usize, total);
        rows.push((format!("{name} ({} groups)", ours.group_count), w, c));
    };
    top(
        "Overview: top-10 talkers, SrcAddr,DstAddr by bytes",
        "SrcAddr,DstAddr",
        Metric::Bytes,
        10,
    );
    top(
        "Overview: top-10 destination ports by bytes",
        "DstPort",
        Metric::Bytes,
        10,
    );
    top("top-10 sources by bytes", "SrcAddr", Metric::Bytes, 10);
    top(
        "top-10 5-tuples by packets",
        "SrcAddr,DstAddr,SrcPort,DstPort,Proto",
        Metric::Packets,
        10,
    );
    let origin = T0 - SPAN_MS;
    let buckets = Some(Buckets {
        origin_ms: origin,
        step_ms: SPAN_MS / 60,
    });
    let mut series = |name: &str, group_by: &str| {
        let g = if group_by.is_empty() {
            Vec::new()
        } else {
            parse_group_by(group_by).expect("group_by")
        };
        let (w, ours) =
            time(|| FlowQuery::aggregate(&store, &all, &range, &g, buckets).expect("store"));
        let (c, theirs) = time(|| ch.aggregate(&all, &range, &g, buckets).expect("clickhouse"));
        assert_eq!(ours, theirs, "{name}: the same answer from both");
        rows.push((format!("{name} ({} series points)", ours.len()), w, c));
    };
    series("Overview: time series, 60 steps", "");
    series("time series per source, 60 steps", "SrcAddr");
    let sort = SortBy::parse("-TimeFlowEndMs").expect("sort");
    let req = ListRequest {
        filter: parse("SrcAddr=10.0.7.42").expect("filter"),
        range,
        sort,
        limit: 100,
        offset: 0,
    };
    let (w, ours) = time(|| store.list(&req).expect("store"));
    let (c, theirs) = time(|| ch.list(&req).expect("clickhouse"));
    assert_eq!(ours.total, theirs.total, "selective: the same count");
    let ends = |r: &weir_core::store::ListResult| -> Vec<u64> {
        r.flows.iter().map(|f| f.time_flow_end_ms).collect()
    };
    assert_eq!(ends(&ours), ends(&theirs), "selective: the same flows");
    rows.push((
        format!("one source, 100 newest ({} match)", ours.total),
        w,
        c,
    ));

    println!();
    println!("ClickHouse {}", version.trim());
    println!();
    println!("| over {total} flows | weir | ClickHouse | weir / ClickHouse | target |");
    println!("|---|---|---|---|---|");
    for (name, w, c) in &rows {
        let target = if name.starts_with("one source") {
            "< 1"
        } else {
            "<= 2"
        };
        println!(
            "| {name} | {w:.0} ms | {c:.0} ms | {:.2} | {target} |",
            w / c
        );
    }
    println!(
        "| load ({} flows/s weir, appended; ClickHouse JSONEachRow x4) | {weir_load:.1} s | {ch_load:.1} s | {:.2} | |",
        (total as f64 / weir_load) as u64,
        weir_load / ch_load
    );
    println!(
        "| on disk | {:.0} bytes/flow | {:.0} bytes/flow | {:.2} | <= 1.5 |",
        weir_bytes as f64 / total as f64,
        ch_bytes as f64 / total as f64,
        weir_bytes as f64 / ch_bytes.max(1) as f64
    );
}
