//! Incident export benchmark: the heap an export needs, streamed (`incident::export_to`:
//! flows and records spooled to unnamed files while hashed, the archive written as it goes)
//! against the window's flows as one NDJSON buffer in memory (what the export held before it
//! streamed, and the least an in-memory export holds) in the same process. Prints a markdown
//! table; see docs/PERFORMANCE.md.
//!
//! `WEIR_BENCH_FLOWS` (default 500,000): `cargo bench -p weir-core --bench incident`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use weir_core::incident::{Sources, Window, export_to};
use weir_core::store::StoreConfig;
use weir_core::{Flow, Store};

/// The binary's allocator, counting the bytes held and their peak.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(l) };
        if !p.is_null() {
            let now = HELD.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(p, l) };
        HELD.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T0: u64 = 1_800_000_000_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` and returns its result with the peak heap above what was held when it began.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = HELD.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

fn mib(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn main() {
    let n = env("WEIR_BENCH_FLOWS", 500_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path().join("flows"))).expect("store");
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n as u64 {
        let mut f = Flow::empty();
        f.time_flow_start_ms = T0 + i;
        f.time_flow_end_ms = T0 + i + 500;
        f.time_received = f.time_flow_end_ms;
        f.src_addr = std::net::IpAddr::from([10, 0, (i >> 8) as u8 % 50, i as u8]);
        f.dst_addr = std::net::IpAddr::from([10, 1, 0, (i % 200) as u8]);
        f.src_port = 30_000 + (i % 20_000) as u16;
        f.dst_port = [80, 443, 53, 8080][(i % 4) as usize];
        f.proto = 6;
        f.bytes = 500 + i % 9000;
        f.packets = 3 + i % 20;
        f.interface = "eth0".into();
        batch.push(f);
        if batch.len() == 10_000 {
            store.append(&batch).expect("append");
            batch.clear();
        }
    }
    store.append(&batch).expect("append");
    store.flush().expect("flush");
    drop(batch);
    let range = weir_core::query::TimeRange {
        from_ms: T0,
        to_ms: T0 + n as u64 + 1000,
    };
    let expr = weir_core::query::parse("").expect("filter");

    // Baseline: the window's flows read and held as one NDJSON buffer.
    let t = Instant::now();
    let (ndjson, held) = peak_of(|| {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = store.select(&expr, &range, after, 10_000).expect("select");
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, f) in &page {
                serde_json::to_writer(&mut out, f).expect("json");
                out.push(b'\n');
            }
        }
        out.len()
    });
    let base_s = t.elapsed().as_secs_f64();

    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).expect("spool");
    let src = Sources {
        store: &store,
        records: None,
        alerts: None,
        plugins: vec![],
        settings: serde_json::json!({}),
        node: "bench".into(),
    };
    let w = Window {
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        filter: String::new(),
        max_flows: n + 1,
    };
    let t = Instant::now();
    let (file, streamed) = peak_of(|| {
        let mut out = std::io::BufWriter::new(tempfile::tempfile_in(&spool).expect("out"));
        let m = export_to(&src, &w, &spool, &mut out).expect("export");
        assert_eq!(m.counts["flows"], n as u64);
        let f = out.into_inner().expect("flush");
        f.metadata().expect("len").len() as usize
    });
    let export_s = t.elapsed().as_secs_f64();

    println!("### Incident export, {n} flows\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| flows as NDJSON held in memory (baseline): peak heap | {} ({} of NDJSON, {:.2} s) |",
        mib(held),
        mib(ndjson),
        base_s
    );
    println!(
        "| streamed export (`export_to`, archive built): peak heap | {} ({:.2} s) |",
        mib(streamed),
        export_s
    );
    println!("| incident file (tar.gz) | {} |", mib(file));
    println!(
        "| peak heap, streamed / baseline | {:.3} |",
        streamed as f64 / held.max(1) as f64
    );
}
