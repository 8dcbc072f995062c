//! Smart-sampling benchmark: 1 M flows a second offered (synthetic, as the import path hands
//! them to the sample stage: batches of 10,000) through the storage sampler, with the bundled
//! `sampling-controller` (the real wasm plugin, budget 10,000 stored flows/s, deciding every
//! second) fed the stored batches. Prints, per second, flows offered and stored; then how long
//! the controller took to hold the budget, the top-10 talkers' recall and the byte total
//! against the exact answers over the offered flows, and the sampler's cost per flow against
//! building the batches' columns (a baseline in the same run). See docs/PERFORMANCE.md.
//! Needs the plugins built: `cargo build --release --target wasm32-wasip2 --manifest-path
//! plugins/Cargo.toml`, then `cargo bench -p weir-host --bench sampling`
//! (`WEIR_BENCH_SECONDS`, default 15).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::Flow;
use weir_core::sampling::StorageSampler;
use weir_host::plugin::{LoadRequest, Plugin};
use weir_host::{Capability, FlowBatch, Manifest, Runtime, Services};

const BUDGET: u64 = 10_000;
const PER_SECOND: usize = 1_000_000;
const BATCH: usize = 10_000;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

fn controller(rt: &Runtime, services: Services) -> Plugin {
    let wasm = std::fs::read(dir().join("target/wasm32-wasip2/release/sampling_controller.wasm"))
        .expect("build the plugins first (see the header of this file)");
    let manifest = Manifest::parse(
        &std::fs::read_to_string(dir().join("sampling-controller/plugin.toml")).expect("toml"),
        "plugin.toml",
    )
    .expect("manifest");
    let config = BTreeMap::from([
        ("budget".to_string(), BUDGET.to_string()),
        ("interval_s".to_string(), "1".to_string()),
    ]);
    Plugin::load(
        rt,
        LoadRequest {
            wasm: &wasm,
            manifest: Some(manifest),
            grants: &[
                Capability::StorageSampling,
                Capability::Clock,
                Capability::Config,
                Capability::Log,
            ],
            limits: None,
            config,
            flows: None,
            services,
            scopes: Default::default(),
        },
    )
    .expect("load")
}

/// One second of traffic: a UDP flood to one port (60 %), web and database flows with
/// Zipf-like talkers over 5,000 sources, and a few bulk TCP transfers.
fn second() -> Vec<Flow> {
    let mut x = 7u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    (0..PER_SECOND)
        .map(|i| {
            let mut f = Flow::empty();
            let u = (next() % 1_000_000) as f64 / 1_000_000.0;
            let src = ((u * 5001f64.ln()).exp() as u64)
                .saturating_sub(1)
                .min(4999);
            f.src_addr = format!("10.{}.{}.{}", 1 + src / 65536, (src / 256) % 256, src % 256)
                .parse()
                .expect("ip");
            f.dst_addr = format!("10.200.0.{}", next() % 50).parse().expect("ip");
            f.src_port = 32768 + (next() % 28000) as u16;
            let r = next() % 100;
            if r < 60 {
                f.proto = 17;
                f.dst_port = 9000;
                f.bytes = 80 + next() % 40;
            } else if i % 20_000 == 0 {
                f.proto = 6;
                f.dst_port = 5201;
                f.bytes = 50_000_000 + next() % 10_000_000;
            } else {
                f.proto = 6;
                f.dst_port = [443, 80, 5432, 6379][(next() % 4) as usize];
                f.bytes = 200 + next() % 20_000;
                f.flags = 0x12;
            }
            f.packets = 1 + f.bytes / 1200;
            f
        })
        .collect()
}

fn main() {
    let seconds: usize = std::env::var("WEIR_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let pool: Vec<Arc<Vec<Flow>>> = second()
        .chunks(BATCH)
        .map(|c| Arc::new(c.to_vec()))
        .collect();
    let sampler = Arc::new(StorageSampler::new(&[], None).expect("sampler"));
    let services = Services::default();
    let _ = services.sampler.set(sampler.clone());
    let rt = Runtime::new(None).expect("runtime");
    let ctl = controller(&rt, services);

    // Baseline: building one second's columns (what the plugins stage pays per batch).
    let t = Instant::now();
    for b in &pool {
        std::hint::black_box(FlowBatch::shared(b.clone()));
    }
    let columns_ns = t.elapsed().as_nanos() as f64 / PER_SECOND as f64;

    let mut rows = Vec::new();
    let mut sample_ns = Vec::new();
    let mut est: HashMap<String, u64> = HashMap::new();
    let mut est_bytes = 0u64;
    let mut measured = 0u64;
    let start = Instant::now();
    for s in 0..seconds {
        let due = start + Duration::from_secs(s as u64 + 1);
        let (mut stored, mut took) = (0usize, Duration::ZERO);
        for b in &pool {
            let t = Instant::now();
            let kept = sampler.sample(b);
            took += t.elapsed();
            let kept = kept.map(Arc::new).unwrap_or_else(|| b.clone());
            stored += kept.len();
            // The last five seconds: the estimate from what was stored.
            if s + 5 >= seconds {
                for f in kept.iter() {
                    let v = f.bytes * f.scale();
                    *est.entry(f.src_addr.to_string()).or_default() += v;
                    est_bytes += v;
                }
            }
            if let Err(e) = ctl.process(&FlowBatch::shared(kept)) {
                eprintln!("controller: {e}");
            }
        }
        if s + 5 >= seconds {
            measured += 1;
        }
        sample_ns.push(took.as_nanos() as f64 / PER_SECOND as f64);
        let late = Instant::now().saturating_duration_since(due);
        rows.push((s + 1, stored, late));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }

    // Exact answers over the offered flows of the measured seconds.
    let mut exact: HashMap<String, u64> = HashMap::new();
    let mut exact_bytes = 0u64;
    for b in &pool {
        for f in b.iter() {
            *exact.entry(f.src_addr.to_string()).or_default() += f.bytes * measured;
            exact_bytes += f.bytes * measured;
        }
    }
    let top = |m: &HashMap<String, u64>| {
        let mut v: Vec<(&String, &u64)> = m.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.into_iter()
            .take(10)
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    let (te, ts) = (top(&exact), top(&est));
    let recall = te.iter().filter(|k| ts.contains(k)).count();
    let held = rows
        .iter()
        .position(|r| {
            rows[r.0 - 1..]
                .iter()
                .all(|x| x.1 as f64 <= BUDGET as f64 * 1.1)
        })
        .map(|i| rows[i].0);

    println!("| second | offered | stored | late by |");
    println!("|---|---|---|---|");
    for (s, stored, late) in &rows {
        println!(
            "| {s} | {PER_SECOND} | {stored} | {} ms |",
            late.as_millis()
        );
    }
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!("| budget (stored flows/s) | {BUDGET} | |");
    match held {
        Some(s) => println!(
            "| held within 10 % of the budget from second | {s} | <= 10 s: {} |",
            if s <= 10 { "met" } else { "not met" }
        ),
        None => println!("| held within 10 % of the budget | never | <= 10 s: not met |"),
    }
    println!(
        "| top-10 talkers by bytes, last {measured} s, from stored flows: recall | {recall}/10 | >= 0.99 |"
    );
    println!(
        "| byte total, stored scaled back / offered | {:.4} | within 2 % |",
        est_bytes as f64 / exact_bytes as f64
    );
    let mut sorted = sample_ns.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "| sample stage per offered flow, median second | {:.0} ns | |",
        sorted[sorted.len() / 2]
    );
    println!("| baseline: batch to columns per flow | {columns_ns:.0} ns | |");
}
