//! Metrics benchmark: the cost of counting stored flows into the predefined flow metrics, and
//! the time to render a scrape with 10 k series (text and OpenMetrics), against a baseline of
//! formatting the same number of lines by hand in the same run. Prints a table; see
//! docs/PERFORMANCE.md. `cargo bench -p weir-core --bench metrics`.

use std::time::Instant;
use weir_core::Flow;
use weir_core::metrics::{FlowMetrics, MetricsConfig};

fn flows(n: usize, interfaces: usize) -> Vec<Flow> {
    (0..n)
        .map(|i| {
            let mut f = Flow::empty();
            f.netns = format!("ns{}", i % 4);
            f.interface = format!("veth{}", i % interfaces);
            f.if_direction = (i % 2) as u8;
            f.bytes = 1500 + (i % 7) as u64;
            f.packets = 3;
            if i % 10 == 0 {
                f.time_flow_rtt_ns = 1_000_000 + (i as u64 % 5000) * 1000;
            }
            if i % 13 == 0 {
                f.pkt_drop_packets = 1;
                f.pkt_drop_bytes = 100;
                f.pkt_drop_latest_drop_cause = "SKB_DROP_REASON_NETFILTER_DROP".into();
            }
            f
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // Counting: 1 M flows in batches of 8 k, as the ingest stage hands them over.
    let m = FlowMetrics::new(MetricsConfig::default());
    let batch = flows(1_000_000, 64);
    let t = Instant::now();
    for chunk in batch.chunks(8192) {
        m.observe(chunk);
    }
    let observe_ns = t.elapsed().as_nanos() as f64 / batch.len() as f64;

    // Scrape: ~10 k series (4 netns x 1250 interfaces x 2 directions = 10 k per counter
    // family, budget 10 k), text and OpenMetrics, five runs each.
    let big = FlowMetrics::new(MetricsConfig::default());
    big.observe(&flows(40_000, 1250));
    let series = big.series();
    let mut text_ms = Vec::new();
    let mut om_ms = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        size = big.render(false, &[]).len();
        text_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let _ = big.render(true, &[]);
        om_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // Baseline: formatting as many lines of the same shape with no metric logic.
    let lines = size / 90;
    let mut base_ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut s = String::with_capacity(size);
        for i in 0..lines {
            use std::fmt::Write as _;
            let _ = writeln!(
                s,
                "weir_flow_bytes_total{{netns=\"ns{}\",interface=\"veth{i}\",direction=\"ingress\"}} {}",
                i % 4,
                i * 1500
            );
        }
        std::hint::black_box(&s);
        base_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (tm, om, bm) = (median(text_ms), median(om_ms), median(base_ms));
    println!("metrics benchmark (medians of 5 renders)");
    println!();
    println!("| measure | value | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!("| counting stored flows into the flow metrics | {observe_ns:.0} ns/flow | | | |");
    println!(
        "| scrape with {series} series, text ({:.1} MB) | {tm:.1} ms | {bm:.1} ms (format {lines} lines) | {:.2} | <= 50 ms |",
        size as f64 / 1e6,
        tm / bm
    );
    println!("| same, OpenMetrics | {om:.1} ms | | | <= 50 ms |");
}
