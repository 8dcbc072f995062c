//! Store benchmark: ingest throughput (with queries answering meanwhile), then query latency
//! on the loaded store. Prints a table; see docs/PERFORMANCE.md.
//!
//! `WEIR_BENCH_FLOWS` (default 2,000,000) sets the size; the full run uses 10,000,000:
//! `WEIR_BENCH_FLOWS=10000000 cargo bench -p weir-core --bench store`.

#[path = "../../benches/support/proc_status.rs"]
mod proc_status;
#[path = "../../benches/support/synthetic.rs"]
mod synthetic;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synthetic::{SPAN_MS, make_batch};
use weir_core::query::{Metric, SortBy, TimeRange, parse};
use weir_core::schema::field;
use weir_core::store::{ListRequest, StoreConfig};
use weir_core::{Flow, Store};

/// The same allocator as the `weir` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 10_000;

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn rss_kib(key: &str) -> u64 {
    proc_status::status_kib("self", key)
}

fn main() {
    let total = synthetic::total_flows();
    let tmp = tempfile::tempdir().expect("tempdir");
    println!(
        "store benchmark: {total} flows, {} partitions of 1 h, data in {}",
        SPAN_MS / 3_600_000,
        tmp.path().display()
    );

    let mut cfg = StoreConfig::new(tmp.path().join("store"));
    if let Some(t) = std::env::var("WEIR_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        cfg.writer.threads = t;
    }
    println!("index writer threads: {}", cfg.writer.threads);
    let store = Arc::new(Store::open(cfg).expect("open"));
    // Queries while ingesting: a selective one every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let during: Arc<Mutex<Vec<f64>>> = Arc::default();
    let q_thread = {
        let (store, stop, during) = (store.clone(), stop.clone(), during.clone());
        std::thread::spawn(move || {
            let sort = SortBy::parse("-TimeFlowEndMs").expect("sort");
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let filter =
                    parse(&format!("Addr=10.0.{}.{}", (i / 256) % 20, i % 256)).expect("filter");
                let t = Instant::now();
                let _ = store.list(&ListRequest {
                    filter,
                    range: TimeRange::ALL,
                    sort,
                    limit: 100,
                    offset: 0,
                });
                during
                    .lock()
                    .expect("lock")
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                i += 7;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // A producer thread stands in for the capture, as in the agent.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Flow>>(16);
    let producer = std::thread::spawn(move || {
        for start in (0..total).step_by(BATCH) {
            if tx
                .send(make_batch(start, BATCH.min(total - start), total))
                .is_err()
            {
                return;
            }
        }
    });
    let t = Instant::now();
    let mut last_flush = Instant::now();
    for batch in rx {
        store.append(&batch).expect("append");
        if last_flush.elapsed() >= Duration::from_secs(1) {
            store.flush().expect("flush");
            last_flush = Instant::now();
        }
    }
    store.flush().expect("flush");
    let ingest_s = t.elapsed().as_secs_f64();
    producer.join().expect("producer");
    stop.store(true, Ordering::SeqCst);
    q_thread.join().expect("query thread");
    let ingest_rate = total as f64 / ingest_s;
    let mut during = during.lock().expect("lock").clone();
    let rss_ingest = rss_kib("VmHWM:");

    // Baseline in the same run: the naive design, one sled key per flow, no index.
    let base_n = total.min(1_000_000);
    let sled_db = sled::Config::new()
        .path(tmp.path().join("baseline"))
        .flush_every_ms(None)
        .open()
        .expect("sled");
    let t = Instant::now();
    let mut seq = 0u64;
    for start in (0..base_n).step_by(BATCH) {
        let mut b = sled::Batch::default();
        for f in make_batch(start, BATCH.min(base_n - start), total) {
            seq += 1;
            b.insert(&seq.to_be_bytes(), bincode::serialize(&f).expect("encode"));
        }
        sled_db.apply_batch(b).expect("batch");
    }
    sled_db.flush().expect("flush");
    let sled_rate = base_n as f64 / t.elapsed().as_secs_f64();
    drop(sled_db);

    // Queries on the loaded store.
    let sort = SortBy::parse("-TimeFlowEndMs").expect("sort");
    let mut sel = Vec::new();
    for i in 0..60u32 {
        let filter = parse(&format!(
            "Addr=10.0.{}.{}",
            (i * 13 / 256) % 20,
            (i * 13) % 256
        ))
        .expect("filter");
        let t = Instant::now();
        let r = store
            .list(&ListRequest {
                filter,
                range: TimeRange::ALL,
                sort,
                limit: 100,
                offset: 0,
            })
            .expect("list");
        sel.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(r.total > 0);
    }
    let all = parse("").expect("all");
    let g = [field("SrcAddr").expect("field")];
    let mut top = Vec::new();
    let mut top_first = None;
    for _ in 0..5 {
        let t = Instant::now();
        let res = store
            .top(&all, &TimeRange::ALL, &g, Metric::Bytes, 10)
            .expect("top");
        top.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(res.total.flows as usize, total);
        top_first.get_or_insert(res.top[0].1.bytes);
    }
    // Baseline for the aggregation: summing Bytes over every flow with no grouping.
    let mut scan = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let groups = store
            .aggregate(&parse("").expect("all"), &TimeRange::ALL, &[], None)
            .expect("agg");
        scan.push(t.elapsed().as_secs_f64() * 1000.0);
        let _: HashMap<_, _> = groups;
    }
    // High cardinality: source -> destination pairs (the Overview's top talkers), ranked on
    // raw keys (what the API does), and every group given its values then ranked (what a
    // time series still does; how the top-N was answered before).
    let pairs = [
        field("SrcAddr").expect("field"),
        field("DstAddr").expect("field"),
    ];
    let (mut top_pairs, mut all_pairs, mut pair_groups) = (Vec::new(), Vec::new(), 0);
    for _ in 0..3 {
        let t = Instant::now();
        let res = store
            .top(&all, &TimeRange::ALL, &pairs, Metric::Bytes, 10)
            .expect("top");
        top_pairs.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(res.total.flows as usize, total);
        pair_groups = res.group_count;
        let t = Instant::now();
        let groups = store
            .aggregate(&all, &TimeRange::ALL, &pairs, None)
            .expect("agg");
        let every = weir_core::aggregate::rank(groups, Metric::Bytes, 10);
        all_pairs.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(every, res, "both paths agree");
    }
    // An exporter catching up from the oldest flow: the whole store read by sequence number,
    // 50 000 at a time, as the export feed reads it.
    let t = Instant::now();
    let (mut after, mut read) = (0u64, 0usize);
    loop {
        let rows = store
            .select(&all, &TimeRange::ALL, after, 50_000)
            .expect("select");
        let Some((last, _)) = rows.last() else { break };
        after = *last;
        read += rows.len();
    }
    assert_eq!(read, total, "every flow read once");
    let catch_up = read as f64 / t.elapsed().as_secs_f64();
    let status = store.status();
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| ingest into sled + tantivy | {:.0} flows/s | >= 300000 |",
        ingest_rate
    );
    println!(
        "| baseline: one sled key per flow, no index | {:.0} flows/s | |",
        sled_rate
    );
    println!(
        "| ratio ingest / baseline | {:.2} | |",
        ingest_rate / sled_rate
    );
    println!(
        "| selective query during ingest, p50 / p95 ({} queries) | {:.1} / {:.1} ms | answers |",
        during.len(),
        pct(&mut during, 0.5),
        pct(&mut during, 0.95)
    );
    println!(
        "| selective query (one host, 100 newest), p50 / p95 | {:.1} / {:.1} ms | p50 <= 50 ms |",
        pct(&mut sel, 0.5),
        pct(&mut sel, 0.95)
    );
    println!(
        "| top-10 talkers over all {total} flows, median | {:.0} ms | <= 1000 ms |",
        pct(&mut top, 0.5)
    );
    println!(
        "| top-10 source->destination pairs ({pair_groups} groups), median | {:.0} ms | |",
        pct(&mut top_pairs, 0.5),
    );
    println!(
        "| the same, every group given its values then ranked, median | {:.0} ms | |",
        pct(&mut all_pairs, 0.5),
    );
    println!(
        "| an exporter catching up: every flow by sequence, 50 000 a read | {catch_up:.0} flows/s ({:.2} of ingest) | |",
        catch_up / ingest_rate
    );
    println!(
        "| baseline: ungrouped sum over all flows, median | {:.0} ms | |",
        pct(&mut scan, 0.5)
    );
    println!(
        "| ratio top-10 / ungrouped sum | {:.2} | |",
        pct(&mut top, 0.5) / pct(&mut scan, 0.5)
    );
    println!(
        "| ratio top-10 pairs / ungrouped sum | {:.2} | |",
        pct(&mut top_pairs, 0.5) / pct(&mut scan, 0.5)
    );
    println!(
        "| on disk | {:.1} bytes/flow ({} MiB) | |",
        status.bytes as f64 / total as f64,
        status.bytes >> 20
    );
    println!(
        "| peak RSS of the process during ingest | {} MiB | |",
        rss_ingest / 1024
    );
    // Where the bytes are: sled's records and the index's files by kind.
    let mut by_kind: std::collections::BTreeMap<String, u64> = Default::default();
    disk_by_kind(&tmp.path().join("store"), &mut by_kind);
    for (kind, bytes) in &by_kind {
        println!(
            "| of which {kind} | {:.1} bytes/flow | |",
            *bytes as f64 / total as f64
        );
    }
}

/// Bytes under `dir` by kind: `records` (sled) or the index file's extension.
fn disk_by_kind(dir: &std::path::Path, out: &mut std::collections::BTreeMap<String, u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            disk_by_kind(&path, out);
            continue;
        }
        let text = path.to_string_lossy();
        let kind = if text.contains("/records/") {
            "records (sled)".to_string()
        } else {
            format!(
                "index .{}",
                path.extension()
                    .map(|x| x.to_string_lossy())
                    .unwrap_or_default()
            )
        };
        *out.entry(kind).or_default() += meta.len();
    }
}
