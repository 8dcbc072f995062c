//! Prometheus metrics generated from flows: predefined flow metrics (bytes, packets, flows and
//! drops per interface and direction; per workload when enrichment names them; RTT and DNS
//! latency histograms), with a cardinality budget per metric (series beyond it fold into one
//! whose labels are all `other`, counted) and expiry of series that stopped changing.
//! Rendered as the Prometheus text format, or OpenMetrics when asked.

use crate::flow::Flow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Metrics settings.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Most series one metric keeps; more fold into the `other` series.
    pub max_series: usize,
    /// Series not updated for this long are dropped.
    pub stale_after: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_series: 10_000,
            stale_after: Duration::from_secs(300),
        }
    }
}

/// Label value a folded series carries in every label.
pub const OTHER: &str = "other";

#[derive(Debug, Clone)]
enum Value {
    Counter(f64),
    Histogram {
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

#[derive(Debug, Clone)]
struct Series {
    value: Value,
    updated: Instant,
}

/// One metric family.
#[derive(Debug)]
struct Family {
    /// Name without the `_total` of counters.
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// Upper bounds of a histogram's buckets; None for a counter.
    buckets: Option<&'static [f64]>,
    series: HashMap<Vec<String>, Series>,
    /// New series refused by the budget (folded into `other`).
    folded: u64,
}

impl Family {
    fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: Option<&'static [f64]>,
    ) -> Self {
        Family {
            name,
            help,
            labels,
            buckets,
            series: HashMap::new(),
            folded: 0,
        }
    }

    fn entry(&mut self, labels: Vec<String>, max: usize, now: Instant) -> &mut Series {
        let key = if self.series.contains_key(&labels) || self.series.len() < max {
            labels
        } else {
            self.folded += 1;
            vec![OTHER.to_string(); self.labels.len()]
        };
        let buckets = self.buckets;
        let s = self.series.entry(key).or_insert_with(|| Series {
            value: match buckets {
                Some(b) => Value::Histogram {
                    counts: vec![0; b.len()],
                    sum: 0.0,
                    count: 0,
                },
                None => Value::Counter(0.0),
            },
            updated: now,
        });
        s.updated = now;
        s
    }

    fn add(&mut self, labels: Vec<String>, v: f64, max: usize, now: Instant) {
        if let Value::Counter(c) = &mut self.entry(labels, max, now).value {
            *c += v;
        }
    }

    fn observe(&mut self, labels: Vec<String>, v: f64, max: usize, now: Instant) {
        let bounds = self.buckets.unwrap_or(&[]);
        if let Value::Histogram { counts, sum, count } = &mut self.entry(labels, max, now).value {
            for (c, b) in counts.iter_mut().zip(bounds) {
                if v <= *b {
                    *c += 1;
                }
            }
            *sum += v;
            *count += 1;
        }
    }
}

const RTT_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];
const DNS_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const IF_LABELS: &[&str] = &["netns", "interface", "direction"];
const DROP_LABELS: &[&str] = &["netns", "interface", "direction", "cause"];
const WORKLOAD_LABELS: &[&str] = &[
    "src_namespace",
    "src_workload",
    "dst_namespace",
    "dst_workload",
];

// Indexes of the predefined families.
const BYTES: usize = 0;
const PACKETS: usize = 1;
const FLOWS: usize = 2;
const DROP_PACKETS: usize = 3;
const DROP_BYTES: usize = 4;
const WL_BYTES: usize = 5;
const WL_PACKETS: usize = 6;
const RTT: usize = 7;
const DNS: usize = 8;

/// The flow metrics of one agent.
pub struct FlowMetrics {
    cfg: MetricsConfig,
    families: Mutex<Vec<Family>>,
}

fn direction(d: u8) -> &'static str {
    if d == crate::flow::DIR_EGRESS {
        "egress"
    } else {
        "ingress"
    }
}

impl FlowMetrics {
    pub fn new(cfg: MetricsConfig) -> Self {
        let families = vec![
            Family::new(
                "weir_flow_bytes",
                "Bytes of captured flows (frame lengths, sampling scaled back).",
                IF_LABELS,
                None,
            ),
            Family::new(
                "weir_flow_packets",
                "Packets of captured flows (sampling scaled back).",
                IF_LABELS,
                None,
            ),
            Family::new("weir_flows", "Flow records stored.", IF_LABELS, None),
            Family::new(
                "weir_flow_drop_packets",
                "Packets the kernel dropped, by drop reason.",
                DROP_LABELS,
                None,
            ),
            Family::new(
                "weir_flow_drop_bytes",
                "Bytes the kernel dropped, by drop reason.",
                DROP_LABELS,
                None,
            ),
            Family::new(
                "weir_workload_bytes",
                "Bytes between workloads (flows with an enriched end).",
                WORKLOAD_LABELS,
                None,
            ),
            Family::new(
                "weir_workload_packets",
                "Packets between workloads (flows with an enriched end).",
                WORKLOAD_LABELS,
                None,
            ),
            Family::new(
                "weir_tcp_rtt_seconds",
                "Smoothed TCP round-trip time of flows, one observation per flow record.",
                &["netns", "interface"],
                Some(RTT_BUCKETS),
            ),
            Family::new(
                "weir_dns_latency_seconds",
                "DNS query-to-response time, one observation per response flow record.",
                &["rcode"],
                Some(DNS_BUCKETS),
            ),
        ];
        FlowMetrics {
            cfg,
            families: Mutex::new(families),
        }
    }

    /// Counts a batch of stored flows. The batch is summed per label set first (borrowed
    /// strings, no allocation per flow), then each distinct series is updated once.
    pub fn observe(&self, flows: &[Flow]) {
        type IfKey<'a> = (&'a str, &'a str, u8);
        let mut per_if: HashMap<IfKey, [f64; 3]> = HashMap::new();
        let mut drops: HashMap<(IfKey, &str), [f64; 2]> = HashMap::new();
        let mut workloads: HashMap<[&str; 4], [f64; 2]> = HashMap::new();
        let mut rtt: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
        let mut dns: HashMap<&str, Vec<f64>> = HashMap::new();
        for f in flows {
            let scale = f.scale() as f64;
            let k = (f.netns.as_str(), f.interface.as_str(), f.if_direction);
            let e = per_if.entry(k).or_default();
            e[0] += f.bytes as f64 * scale;
            e[1] += f.packets as f64 * scale;
            e[2] += 1.0;
            if f.pkt_drop_packets > 0 {
                let d = drops
                    .entry((k, f.pkt_drop_latest_drop_cause.as_str()))
                    .or_default();
                d[0] += f.pkt_drop_packets as f64 * scale;
                d[1] += f.pkt_drop_bytes as f64 * scale;
            }
            let w = [
                f.src_k8s_namespace.as_str(),
                f.src_k8s_owner_name.as_str(),
                f.dst_k8s_namespace.as_str(),
                f.dst_k8s_owner_name.as_str(),
            ];
            if w.iter().any(|x| !x.is_empty()) {
                let e = workloads.entry(w).or_default();
                e[0] += f.bytes as f64 * scale;
                e[1] += f.packets as f64 * scale;
            }
            if f.time_flow_rtt_ns > 0 {
                rtt.entry((f.netns.as_str(), f.interface.as_str()))
                    .or_default()
                    .push(f.time_flow_rtt_ns as f64 / 1e9);
            }
            if f.dns_latency_us > 0 {
                dns.entry(f.dns_flags_response_code.as_str())
                    .or_default()
                    .push(f.dns_latency_us as f64 / 1e6);
            }
        }
        let now = Instant::now();
        let max = self.cfg.max_series;
        let mut fam = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let owned = |k: &IfKey| vec![k.0.to_string(), k.1.to_string(), direction(k.2).to_string()];
        for (k, v) in &per_if {
            fam[BYTES].add(owned(k), v[0], max, now);
            fam[PACKETS].add(owned(k), v[1], max, now);
            fam[FLOWS].add(owned(k), v[2], max, now);
        }
        for ((k, cause), v) in &drops {
            let mut l = owned(k);
            l.push(cause.to_string());
            fam[DROP_PACKETS].add(l.clone(), v[0], max, now);
            fam[DROP_BYTES].add(l, v[1], max, now);
        }
        for (w, v) in &workloads {
            let l: Vec<String> = w.iter().map(|x| x.to_string()).collect();
            fam[WL_BYTES].add(l.clone(), v[0], max, now);
            fam[WL_PACKETS].add(l, v[1], max, now);
        }
        for ((ns, ifn), values) in &rtt {
            for v in values {
                fam[RTT].observe(vec![ns.to_string(), ifn.to_string()], *v, max, now);
            }
        }
        for (code, values) in &dns {
            for v in values {
                fam[DNS].observe(vec![code.to_string()], *v, max, now);
            }
        }
    }

    /// Drops series that stopped changing.
    pub fn expire(&self) {
        let stale = self.cfg.stale_after;
        let mut fam = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for f in fam.iter_mut() {
            f.series.retain(|_, s| s.updated.elapsed() < stale);
        }
    }

    /// Number of series kept, over all metrics.
    pub fn series(&self) -> usize {
        let fam = self.families.lock().unwrap_or_else(|p| p.into_inner());
        fam.iter().map(|f| f.series.len()).sum()
    }

    /// Renders every metric, then the `extra` ones (gauges or counters the caller computes,
    /// such as the agent's health), in the text format or OpenMetrics.
    pub fn render(&self, openmetrics: bool, extra: &[Sample]) -> String {
        self.expire();
        let fam = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out =
            String::with_capacity(4096 + fam.iter().map(|f| f.series.len()).sum::<usize>() * 96);
        for f in fam.iter() {
            let is_counter = f.buckets.is_none();
            let _ = writeln!(
                out,
                "# HELP {}{} {}",
                f.name,
                suffix(is_counter, openmetrics),
                f.help
            );
            let _ = writeln!(
                out,
                "# TYPE {}{} {}",
                f.name,
                suffix(is_counter, openmetrics),
                if is_counter { "counter" } else { "histogram" }
            );
            let mut keys: Vec<&Vec<String>> = f.series.keys().collect();
            keys.sort();
            for k in keys {
                let Some(s) = f.series.get(k) else { continue };
                let labels = label_text(f.labels, k, None);
                match &s.value {
                    Value::Counter(v) => {
                        let _ = writeln!(out, "{}_total{labels} {}", f.name, num(*v));
                    }
                    Value::Histogram { counts, sum, count } => {
                        for (c, b) in counts.iter().zip(f.buckets.unwrap_or(&[])) {
                            let l = label_text(f.labels, k, Some(&num(*b)));
                            let _ = writeln!(out, "{}_bucket{l} {c}", f.name);
                        }
                        let l = label_text(f.labels, k, Some("+Inf"));
                        let _ = writeln!(out, "{}_bucket{l} {count}", f.name);
                        let _ = writeln!(out, "{}_sum{labels} {}", f.name, num(*sum));
                        let _ = writeln!(out, "{}_count{labels} {count}", f.name);
                    }
                }
            }
        }
        let folded: Vec<Sample> = fam
            .iter()
            .map(|f| Sample {
                name: "weir_metrics_folded_series",
                help: "New series a metric's cardinality budget folded into its `other` series.",
                counter: true,
                labels: vec![("metric", f.name.to_string())],
                value: f.folded as f64,
            })
            .collect();
        drop(fam);
        render_samples(&mut out, folded.iter().chain(extra), openmetrics);
        if openmetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// One value computed at scrape time (agent health).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Name without `_total` for counters.
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

fn suffix(counter: bool, openmetrics: bool) -> &'static str {
    if counter && !openmetrics {
        "_total"
    } else {
        ""
    }
}

/// Writes samples grouped by name (one HELP/TYPE per name, in first-seen order).
fn render_samples<'a>(
    out: &mut String,
    samples: impl Iterator<Item = &'a Sample>,
    openmetrics: bool,
) {
    let mut order: Vec<&'static str> = Vec::new();
    let mut by_name: HashMap<&'static str, Vec<&Sample>> = HashMap::new();
    for s in samples {
        if !by_name.contains_key(s.name) {
            order.push(s.name);
        }
        by_name.entry(s.name).or_default().push(s);
    }
    for name in order {
        let list = &by_name[name];
        let first = list[0];
        let sfx = suffix(first.counter, openmetrics);
        let _ = writeln!(out, "# HELP {name}{sfx} {}", first.help);
        let _ = writeln!(
            out,
            "# TYPE {name}{sfx} {}",
            if first.counter { "counter" } else { "gauge" }
        );
        for s in list {
            let names: Vec<&str> = s.labels.iter().map(|(k, _)| *k).collect();
            let values: Vec<String> = s.labels.iter().map(|(_, v)| v.clone()).collect();
            let total = if s.counter { "_total" } else { "" };
            let _ = writeln!(
                out,
                "{name}{total}{} {}",
                label_text(&names, &values, None),
                num(s.value)
            );
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(netns: &str, ifname: &str, bytes: u64) -> Flow {
        let mut f = Flow::empty();
        f.netns = netns.into();
        f.interface = ifname.into();
        f.bytes = bytes;
        f.packets = 2;
        f
    }

    #[test]
    fn counts_and_renders_both_formats() {
        let m = FlowMetrics::new(MetricsConfig::default());
        let mut d = flow("ns1", "eth0", 100);
        d.pkt_drop_packets = 3;
        d.pkt_drop_bytes = 300;
        d.pkt_drop_latest_drop_cause = "SKB_DROP_REASON_NETFILTER_DROP".into();
        d.time_flow_rtt_ns = 2_000_000;
        let mut sampled = flow("ns1", "eth0", 10);
        sampled.sampling = 10;
        let mut q = flow("", "we\"ird", 5);
        q.dns_latency_us = 20_000;
        q.dns_flags_response_code = "NXDomain".into();
        m.observe(&[d, sampled, q]);
        let t = m.render(false, &[]);
        assert!(t.contains("# TYPE weir_flow_bytes_total counter"), "{t}");
        assert!(
            t.contains(
                "weir_flow_bytes_total{netns=\"ns1\",interface=\"eth0\",direction=\"ingress\"} 200"
            ),
            "{t}"
        );
        assert!(t.contains("interface=\"we\\\"ird\""), "{t}");
        assert!(t.contains("weir_flow_drop_packets_total{netns=\"ns1\",interface=\"eth0\",direction=\"ingress\",cause=\"SKB_DROP_REASON_NETFILTER_DROP\"} 3"));
        assert!(
            t.contains(
                "weir_tcp_rtt_seconds_bucket{netns=\"ns1\",interface=\"eth0\",le=\"0.005\"} 1"
            ),
            "{t}"
        );
        assert!(t.contains(
            "weir_tcp_rtt_seconds_bucket{netns=\"ns1\",interface=\"eth0\",le=\"0.001\"} 0"
        ));
        assert!(t.contains("weir_dns_latency_seconds_count{rcode=\"NXDomain\"} 1"));
        assert!(!t.contains("# EOF"));
        let o = m.render(true, &[]);
        assert!(o.contains("# TYPE weir_flow_bytes counter"), "{o}");
        assert!(o.contains("weir_flow_bytes_total{"), "{o}");
        assert!(o.ends_with("# EOF\n"));
    }

    #[test]
    fn budget_folds_and_stale_series_expire() {
        let m = FlowMetrics::new(MetricsConfig {
            max_series: 2,
            stale_after: Duration::from_millis(50),
        });
        m.observe(&[
            flow("a", "x", 1),
            flow("b", "x", 1),
            flow("c", "x", 1),
            flow("d", "x", 1),
        ]);
        let t = m.render(false, &[]);
        assert!(
            t.contains(
                "weir_flow_bytes_total{netns=\"other\",interface=\"other\",direction=\"other\"} 2"
            ),
            "{t}"
        );
        assert!(
            t.contains("weir_metrics_folded_series_total{metric=\"weir_flow_bytes\"} 2"),
            "{t}"
        );
        std::thread::sleep(Duration::from_millis(80));
        m.expire();
        assert_eq!(m.series(), 0);
    }
}
