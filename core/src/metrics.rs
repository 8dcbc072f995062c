//! Prometheus metrics generated from flows: predefined flow metrics (bytes, packets, flows and
//! drops per interface and direction; per workload when enrichment names them; RTT and DNS
//! latency histograms), with a cardinality budget per metric (series beyond it fold into one
//! whose labels are all `other`, counted) and expiry of series that stopped changing.
//! Rendered as the Prometheus text format, or OpenMetrics when asked.

use crate::flow::Flow;
use crate::schema::{FieldDef, FieldKind, Value as SchemaValue};
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
    /// Most series all the metrics of one plugin keep together; more fold into `other`.
    pub plugin_max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_series: 10_000,
            stale_after: Duration::from_secs(300),
            plugin_max_series: 1_000,
        }
    }
}

/// A sample a plugin emitted: through the `metrics` capability, or in a flow-processor's
/// result. Counters add `value`, gauges set it, histograms observe it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSample {
    pub name: String,
    pub kind: UserKind,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Buckets of plugin histograms (Prometheus' defaults).
const PLUGIN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Whether `s` is a valid Prometheus metric (`colon`) or label name.
fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// Most metric families one plugin may own; samples naming more are refused (counted).
pub const PLUGIN_MAX_FAMILIES: usize = 100;
/// Longest metric or label name, and longest label value, a plugin sample may carry (bytes).
pub const PLUGIN_MAX_NAME_BYTES: usize = 128;
pub const PLUGIN_MAX_LABEL_VALUE_BYTES: usize = 256;
/// Endings the text format adds to family names: a plugin family ending in one could collide
/// with another family's samples (a counter `x` is exposed as `x_total`, a histogram `h` as
/// `h_bucket`, `h_sum`, `h_count`), so plugin names may not end in them.
pub const EXPOSITION_SUFFIXES: [&str; 6] =
    ["_total", "_count", "_sum", "_bucket", "_created", "_info"];
/// Label names the exposition reserves.
pub const RESERVED_LABELS: [&str; 3] = ["__name__", "le", "quantile"];

/// Whether a plugin sample's names and values are ones the exposition can always carry.
fn plugin_sample_ok(s: &PluginSample) -> bool {
    valid_name(&s.name, true)
        && s.name.len() <= PLUGIN_MAX_NAME_BYTES
        && !s.name.starts_with("weir_")
        && !s.name.starts_with("__")
        && !EXPOSITION_SUFFIXES.iter().any(|x| s.name.ends_with(x))
        && s.value.is_finite()
        && !(s.kind == UserKind::Counter && s.value < 0.0)
        && s.labels.iter().all(|(k, v)| {
            valid_name(k, false)
                && k.len() <= PLUGIN_MAX_NAME_BYTES
                && !k.starts_with("__")
                && !RESERVED_LABELS.contains(&k.as_str())
                && v.len() <= PLUGIN_MAX_LABEL_VALUE_BYTES
        })
        && s.labels
            .iter()
            .enumerate()
            .all(|(i, (k, _))| !s.labels[..i].iter().any(|(j, _)| j == k))
}

/// Whether any family already exposes a sample named `name` (or would, with a suffix).
fn exposed_by_any(fam: &[Family], name: &str) -> bool {
    fam.iter().any(|f| {
        f.name == name
            || EXPOSITION_SUFFIXES.iter().any(|x| {
                name.strip_suffix(x) == Some(f.name.as_str())
                    || f.name.strip_suffix(x) == Some(name)
            })
    })
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
    name: String,
    help: String,
    labels: Vec<String>,
    /// Upper bounds of a histogram's buckets; None for a counter or gauge.
    buckets: Option<Vec<f64>>,
    /// A gauge (user metrics): the latest value, not a sum.
    gauge: bool,
    /// The plugin that defined it (plugin metrics).
    owner: Option<String>,
    series: HashMap<Vec<String>, Series>,
    /// New series refused by the budget (folded into `other`).
    folded: u64,
}

impl Family {
    fn new(name: &str, help: &str, labels: &[&str], buckets: Option<&[f64]>) -> Self {
        Family {
            name: name.to_string(),
            help: help.to_string(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            buckets: buckets.map(<[f64]>::to_vec),
            gauge: false,
            owner: None,
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
        let buckets = &self.buckets;
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

    fn set(&mut self, labels: Vec<String>, v: f64, max: usize, now: Instant) {
        if let Value::Counter(c) = &mut self.entry(labels, max, now).value {
            *c = v;
        }
    }

    fn observe(&mut self, labels: Vec<String>, v: f64, max: usize, now: Instant) {
        let bounds = self.buckets.clone().unwrap_or_default();
        if let Value::Histogram { counts, sum, count } = &mut self.entry(labels, max, now).value {
            for (c, b) in counts.iter_mut().zip(&bounds) {
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
    /// Plugin samples refused (bad name or labels, a name taken), per plugin.
    rejected: Mutex<std::collections::BTreeMap<String, u64>>,
    /// User-defined metrics, each with its family at `PREDEFINED + index`.
    user: Vec<UserMetric>,
}

/// Number of predefined families (user families come after them).
const PREDEFINED: usize = 9;

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
            rejected: Mutex::new(Default::default()),
            user: Vec::new(),
        }
    }

    /// Adds user-defined metrics (see [`parse_user_metrics`]).
    pub fn with_user(mut self, user: Vec<UserMetric>) -> Self {
        let fam = self.families.get_mut().unwrap_or_else(|p| p.into_inner());
        for u in &user {
            // Label names as Prometheus writes them: DstPort -> dst_port.
            let names: Vec<String> = u.labels.iter().map(|l| snake_case(l.name)).collect();
            let labels: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut f = Family::new(&u.name, &u.help, &labels, u.buckets.as_deref());
            f.gauge = u.kind == UserKind::Gauge;
            fam.push(f);
        }
        self.user = user;
        self
    }

    fn observe_user(&self, fam: &mut [Family], flows: &[Flow], now: Instant) {
        let max = self.cfg.max_series;
        for (i, u) in self.user.iter().enumerate() {
            let f = &mut fam[PREDEFINED + i];
            for flow in flows {
                if !u.matches(flow) {
                    continue;
                }
                let labels: Vec<String> =
                    u.labels.iter().map(|d| (d.get)(flow).to_string()).collect();
                let v = u.value_of(flow);
                match u.kind {
                    UserKind::Counter => f.add(labels, v, max, now),
                    UserKind::Gauge => f.set(labels, v, max, now),
                    UserKind::Histogram => f.observe(labels, v, max, now),
                }
            }
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
        if !self.user.is_empty() {
            self.observe_user(&mut fam, flows, now);
        }
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

    /// Records what a plugin emitted. Each metric name belongs to the plugin that first
    /// emitted it, with the label names and kind of that first sample; a sample that does not
    /// fit (an invalid name, a `weir_` name, another plugin's metric, other labels or kind)
    /// is refused and counted. All the plugin's metrics share one series budget
    /// (`plugin_max_series`): beyond it new series fold into their metric's `other` series.
    /// Returns how many samples were refused.
    pub fn record_plugin(&self, plugin: &str, samples: &[PluginSample]) -> usize {
        if samples.is_empty() {
            return 0;
        }
        let now = Instant::now();
        let mut fam = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut refused = 0;
        let mut owned = fam
            .iter()
            .filter(|f| f.owner.as_deref() == Some(plugin))
            .count();
        for s in samples {
            let names: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
            let valid = plugin_sample_ok(s);
            let at = fam.iter().position(|f| f.name == s.name);
            let fits = match at {
                Some(i) => {
                    let f = &fam[i];
                    f.owner.as_deref() == Some(plugin)
                        && f.labels == names
                        && f.gauge == (s.kind == UserKind::Gauge)
                        && f.buckets.is_some() == (s.kind == UserKind::Histogram)
                }
                // A new family: within the plugin's family budget, and no family of anyone
                // may already expose a sample of that name.
                None => owned < PLUGIN_MAX_FAMILIES && !exposed_by_any(&fam, &s.name),
            };
            if !valid || !fits {
                refused += 1;
                continue;
            }
            let i = at.unwrap_or_else(|| {
                let buckets = (s.kind == UserKind::Histogram).then_some(PLUGIN_BUCKETS);
                let mut f = Family::new(
                    &s.name,
                    &format!("Emitted by plugin {plugin}."),
                    &names,
                    buckets,
                );
                f.gauge = s.kind == UserKind::Gauge;
                f.owner = Some(plugin.to_string());
                fam.push(f);
                owned += 1;
                fam.len() - 1
            });
            // The plugin's budget left for this metric: what its other metrics do not use.
            let used_elsewhere: usize = fam
                .iter()
                .enumerate()
                .filter(|(j, f)| *j != i && f.owner.as_deref() == Some(plugin))
                .map(|(_, f)| f.series.len())
                .sum();
            let max = self
                .cfg
                .plugin_max_series
                .saturating_sub(used_elsewhere)
                .max(1);
            let labels: Vec<String> = s.labels.iter().map(|(_, v)| v.clone()).collect();
            let f = &mut fam[i];
            match s.kind {
                UserKind::Counter => f.add(labels, s.value, max, now),
                UserKind::Gauge => f.set(labels, s.value, max, now),
                UserKind::Histogram => f.observe(labels, s.value, max, now),
            }
        }
        drop(fam);
        if refused > 0 {
            *self
                .rejected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(plugin.to_string())
                .or_default() += refused as u64;
            tracing::debug!(plugin, refused, "plugin metric samples refused");
        }
        refused
    }

    /// Forgets the metrics of plugins no longer loaded (removed or disabled): their families
    /// and refusal counts leave /metrics with them.
    pub fn retain_plugins(&self, loaded: &[&str]) {
        let mut fam = self.families.lock().unwrap_or_else(|p| p.into_inner());
        fam.retain(|f| f.owner.as_deref().is_none_or(|o| loaded.contains(&o)));
        drop(fam);
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p, _| loaded.contains(&p.as_str()));
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
            let is_counter = f.buckets.is_none() && !f.gauge;
            let kind = if f.gauge {
                "gauge"
            } else if is_counter {
                "counter"
            } else {
                "histogram"
            };
            let _ = writeln!(
                out,
                "# HELP {}{} {}",
                f.name,
                suffix(is_counter, openmetrics),
                f.help
            );
            let _ = writeln!(
                out,
                "# TYPE {}{} {kind}",
                f.name,
                suffix(is_counter, openmetrics)
            );
            let names: Vec<&str> = f.labels.iter().map(String::as_str).collect();
            let mut keys: Vec<&Vec<String>> = f.series.keys().collect();
            keys.sort();
            for k in keys {
                let Some(s) = f.series.get(k) else { continue };
                let labels = label_text(&names, k, None);
                match &s.value {
                    Value::Counter(v) => {
                        let total = if f.gauge { "" } else { "_total" };
                        let _ = writeln!(out, "{}{total}{labels} {}", f.name, num(*v));
                    }
                    Value::Histogram { counts, sum, count } => {
                        for (c, b) in counts.iter().zip(f.buckets.as_deref().unwrap_or(&[])) {
                            let l = label_text(&names, k, Some(&num(*b)));
                            let _ = writeln!(out, "{}_bucket{l} {c}", f.name);
                        }
                        let l = label_text(&names, k, Some("+Inf"));
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
                labels: vec![("metric", f.name.clone())],
                value: f.folded as f64,
            })
            .collect();
        drop(fam);
        let rejected: Vec<Sample> = self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, n)| Sample {
                name: "weir_plugin_metric_samples_refused",
                help: "Metric samples a plugin emitted that were refused (invalid or reserved name, another plugin's metric, other labels or kind).",
                counter: true,
                labels: vec![("plugin", p.clone())],
                value: *n as f64,
            })
            .collect();
        render_samples(
            &mut out,
            folded.iter().chain(&rejected).chain(extra),
            openmetrics,
        );
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

/// What a user metric does with the values it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKind {
    Counter,
    Gauge,
    Histogram,
}

/// How a filter compares a flow field.
#[derive(Debug, Clone)]
enum Match {
    Equal(String),
    NotEqual(String),
    /// The field is set: a non-empty string, a non-zero number or address.
    Presence,
    Absence,
    /// The whole value matches the expression.
    Regex(regex::Regex),
}

/// A user-defined metric, in the spirit of NetObserv's FlowMetric.
#[derive(Debug)]
pub struct UserMetric {
    name: String,
    help: String,
    kind: UserKind,
    /// A numeric field to sum or observe; None counts flows.
    value: Option<&'static FieldDef>,
    /// Divides the value (e.g. 1e9 to turn TimeFlowRttNs into seconds).
    divider: f64,
    labels: Vec<&'static FieldDef>,
    filters: Vec<(&'static FieldDef, Match)>,
    buckets: Option<Vec<f64>>,
}

impl UserMetric {
    fn matches(&self, f: &Flow) -> bool {
        self.filters.iter().all(|(d, m)| {
            let v = (d.get)(f);
            let set = match &v {
                SchemaValue::U64(n) => *n != 0,
                SchemaValue::Str(s) => !s.is_empty(),
                SchemaValue::Ip(ip) => {
                    !ip.is_unspecified()
                        && ip.to_ipv4_mapped() != Some(std::net::Ipv4Addr::UNSPECIFIED)
                }
            };
            match m {
                Match::Equal(x) => v.to_string() == *x,
                Match::NotEqual(x) => v.to_string() != *x,
                Match::Presence => set,
                Match::Absence => !set,
                Match::Regex(r) => r.is_match(&v.to_string()),
            }
        })
    }

    fn value_of(&self, f: &Flow) -> f64 {
        let raw = match self.value {
            None => 1.0,
            Some(d) => match (d.get)(f) {
                SchemaValue::U64(n) => n as f64,
                _ => 0.0,
            },
        };
        // Sums of packets and bytes are scaled back by sampling, as the API does.
        let scaled = match self.value.map(|d| d.name) {
            Some("Bytes" | "Packets" | "PktDropBytes" | "PktDropPackets") => raw * f.scale() as f64,
            _ => raw,
        };
        scaled / self.divider
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    #[serde(default)]
    metric: Vec<UserDef>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserDef {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    help: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    divider: Option<f64>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    buckets: Option<Vec<f64>>,
    #[serde(default)]
    filter: Vec<FilterDef>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterDef {
    field: String,
    #[serde(rename = "match", default = "default_match")]
    how: String,
    #[serde(default)]
    value: String,
}

fn default_match() -> String {
    "equal".into()
}

/// A flow field name as a Prometheus label name: `SrcK8S_Namespace` -> `src_k8s_namespace`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase();
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Parses user metrics: TOML `[[metric]]` tables with `name`, `type` (counter, gauge,
/// histogram), `help`, `value` (a numeric flow field; omitted: count flows), `divider`,
/// `labels` (flow fields), `buckets` (histograms), and `[[metric.filter]]` tables with
/// `field`, `match` (equal, not_equal, presence, absence, regex) and `value`. Errors name the
/// metric and the key.
pub fn parse_user_metrics(text: &str) -> Result<Vec<UserMetric>, String> {
    let file: UserFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, d) in file.metric.into_iter().enumerate() {
        let at = |m: String| format!("metric {} ({}): {m}", i + 1, d.name);
        if !valid_name(&d.name, true) || d.name.ends_with("_total") {
            return Err(at(
                "name must match [a-zA-Z_:][a-zA-Z0-9_:]* and not end in _total (added for counters)"
                    .into(),
            ));
        }
        if !names.insert(d.name.clone()) {
            return Err(at("a metric of this name is already defined".into()));
        }
        let kind = match d.kind.as_str() {
            "counter" => UserKind::Counter,
            "gauge" => UserKind::Gauge,
            "histogram" => UserKind::Histogram,
            k => return Err(at(format!("type '{k}': counter, gauge or histogram"))),
        };
        let field = |n: &str, what: &str| {
            crate::schema::field(n).ok_or_else(|| {
                at(format!(
                    "{what}: unknown flow field '{n}'{}",
                    crate::schema::suggest(n)
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default()
                ))
            })
        };
        let value = match &d.value {
            Some(v) => {
                let def = field(v, "value")?;
                if def.kind != FieldKind::U64 {
                    return Err(at(format!("value: {v} is not a number field")));
                }
                Some(def)
            }
            None => None,
        };
        let labels = d
            .labels
            .iter()
            .map(|l| field(l, "labels"))
            .collect::<Result<Vec<_>, _>>()?;
        let buckets = match (kind, d.buckets) {
            (UserKind::Histogram, Some(b))
                if !b.is_empty() && b.windows(2).all(|w| w[0] < w[1]) =>
            {
                Some(b)
            }
            (UserKind::Histogram, _) => {
                return Err(at(
                    "buckets: a histogram needs increasing bucket bounds".into()
                ));
            }
            (_, Some(_)) => return Err(at("buckets: only histograms have buckets".into())),
            (_, None) => None,
        };
        let divider = d.divider.unwrap_or(1.0);
        if divider <= 0.0 {
            return Err(at("divider must be above 0".into()));
        }
        let mut filters = Vec::new();
        for (j, fd) in d.filter.iter().enumerate() {
            let def = field(&fd.field, &format!("filter {}", j + 1))?;
            let m = match fd.how.as_str() {
                "equal" => Match::Equal(fd.value.clone()),
                "not_equal" => Match::NotEqual(fd.value.clone()),
                "presence" => Match::Presence,
                "absence" => Match::Absence,
                "regex" => Match::Regex(
                    regex::Regex::new(&format!("^(?:{})$", fd.value))
                        .map_err(|e| at(format!("filter {}: regex: {e}", j + 1)))?,
                ),
                other => {
                    return Err(at(format!(
                        "filter {}: match '{other}': equal, not_equal, presence, absence or regex",
                        j + 1
                    )));
                }
            };
            filters.push((def, m));
        }
        out.push(UserMetric {
            help: if d.help.is_empty() {
                format!("User metric {}.", d.name)
            } else {
                d.help
            },
            name: d.name,
            kind,
            value,
            divider,
            labels,
            filters,
            buckets,
        });
    }
    Ok(out)
}

impl crate::ingest::StoredStage for FlowMetrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn accept(&self, batch: &crate::ingest::Stored<'_>) {
        self.observe(batch.flows());
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
    fn user_metrics_count_filter_and_observe() {
        let user = parse_user_metrics(
            r#"
[[metric]]
name = "udp_bytes"
type = "counter"
value = "Bytes"
labels = ["DstPort", "Interface"]
[[metric.filter]]
field = "Proto"
value = "17"
[[metric.filter]]
field = "Interface"
match = "regex"
value = "veth.*"

[[metric.filter]]
field = "SrcK8S_Name"
match = "absence"

[[metric]]
name = "flow_size_bytes"
type = "histogram"
value = "Bytes"
buckets = [100, 1000]

[[metric]]
name = "last_rtt_seconds"
type = "gauge"
value = "TimeFlowRttNs"
divider = 1e9
"#,
        )
        .unwrap();
        let m = FlowMetrics::new(MetricsConfig::default()).with_user(user);
        let mut a = flow("n", "veth0", 500);
        a.proto = 17;
        a.dst_port = 53;
        a.time_flow_rtt_ns = 2_000_000;
        let mut b = a.clone();
        b.interface = "eth0".into();
        let mut c = a.clone();
        c.proto = 6;
        m.observe(&[a.clone(), a, b, c]);
        let t = m.render(false, &[]);
        assert!(
            t.contains("udp_bytes_total{dst_port=\"53\",interface=\"veth0\"} 1000"),
            "{t}"
        );
        assert!(
            !t.contains("udp_bytes_total{dst_port=\"53\",interface=\"eth0\"}"),
            "regex filter: {t}"
        );
        assert_eq!(snake_case("SrcK8S_Namespace"), "src_k8s_namespace");
        assert_eq!(snake_case("TimeFlowRttNs"), "time_flow_rtt_ns");
        assert!(t.contains("flow_size_bytes_bucket{le=\"1000\"} 4"), "{t}");
        assert!(t.contains("flow_size_bytes_bucket{le=\"100\"} 0"), "{t}");
        assert!(t.contains("# TYPE last_rtt_seconds gauge"), "{t}");
        assert!(t.contains("last_rtt_seconds 0.002"), "{t}");
    }

    #[test]
    fn bad_user_metrics_name_the_problem() {
        let e = |t: &str| parse_user_metrics(t).unwrap_err();
        assert!(
            e("[[metric]]\nname = \"x\"\ntype = \"summary\"\n")
                .contains("metric 1 (x): type 'summary'")
        );
        assert!(
            e("[[metric]]\nname = \"x\"\ntype = \"counter\"\nvalue = \"Byts\"\n")
                .contains("did you mean Bytes")
        );
        assert!(
            e("[[metric]]\nname = \"x\"\ntype = \"counter\"\nvalue = \"Interface\"\n")
                .contains("not a number")
        );
        assert!(e("[[metric]]\nname = \"x\"\ntype = \"histogram\"\n").contains("buckets"));
        assert!(e("[[metric]]\nname = \"x_total\"\ntype = \"counter\"\n").contains("_total"));
        assert!(e("[[metric]]\nname = \"x\"\ntype = \"counter\"\n[[metric.filter]]\nfield = \"Proto\"\nmatch = \"regex\"\nvalue = \"(\"\n").contains("filter 1: regex"));
        assert!(e("[[metric]]\nname = \"x\"\ntype = \"counter\"\n[[metric]]\nname = \"x\"\ntype = \"gauge\"\n").contains("already defined"));
    }

    #[test]
    fn budget_folds_and_stale_series_expire() {
        let m = FlowMetrics::new(MetricsConfig {
            max_series: 2,
            stale_after: Duration::from_millis(50),
            ..Default::default()
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

    fn plugin_sample(
        name: &str,
        kind: UserKind,
        labels: &[(&str, &str)],
        value: f64,
    ) -> PluginSample {
        PluginSample {
            name: name.into(),
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn plugin_metrics_have_owners_a_shared_budget_and_refusals_counted() {
        let m = FlowMetrics::new(MetricsConfig {
            plugin_max_series: 3,
            ..Default::default()
        });
        let sample = plugin_sample;
        use UserKind::*;
        let refused = m.record_plugin(
            "p",
            &[
                sample("app_requests", Counter, &[("port", "80")], 2.0),
                sample("app_requests", Counter, &[("port", "80")], 3.0),
                sample("app_requests", Counter, &[("port", "443")], 1.0),
                sample("app_queue", Gauge, &[], 7.0),
                sample("app_queue", Gauge, &[], 4.0),
                // Budget of 3 series for the plugin: this one folds into `other`.
                sample("app_requests", Counter, &[("port", "22")], 5.0),
                sample("app_latency_seconds", Histogram, &[], 0.2),
                // Refused: reserved, invalid, other labels, other kind, bad value, _total.
                sample("weir_flows", Counter, &[], 1.0),
                sample("9bad", Counter, &[], 1.0),
                sample("app_requests", Counter, &[("host", "x")], 1.0),
                sample("app_requests", Gauge, &[("port", "80")], 1.0),
                sample("app_neg", Counter, &[], -1.0),
                sample("app_x_total", Counter, &[], 1.0),
                sample("app_dup", Counter, &[("a", "1"), ("a", "2")], 1.0),
            ],
        );
        assert_eq!(refused, 7);
        // Another plugin cannot write into p's metric.
        assert_eq!(
            m.record_plugin("q", &[sample("app_queue", Gauge, &[], 1.0)]),
            1
        );
        let text = m.render(false, &[]);
        assert!(
            text.contains("app_requests_total{port=\"80\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("app_requests_total{port=\"443\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("app_requests_total{port=\"other\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("app_queue 4\n"), "{text}");
        assert!(
            text.contains("# TYPE app_latency_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("weir_metrics_folded_series_total{metric=\"app_requests\"} 1"));
        assert!(text.contains("weir_plugin_metric_samples_refused_total{plugin=\"p\"} 7"));
        assert!(text.contains("weir_plugin_metric_samples_refused_total{plugin=\"q\"} 1"));
        assert!(
            text.contains("# HELP app_queue Emitted by plugin p."),
            "{text}"
        );
    }

    #[test]
    fn plugin_families_cannot_collide_in_the_exposition_and_leave_with_their_plugin() {
        let m = FlowMetrics::new(MetricsConfig::default());
        let sample =
            |name: &str, kind, labels: &[(&str, &str)]| plugin_sample(name, kind, labels, 1.0);
        use UserKind::*;
        let long = "v".repeat(PLUGIN_MAX_LABEL_VALUE_BYTES + 1);
        let refused = m.record_plugin(
            "p",
            &[
                sample("x", Counter, &[]),
                sample("h", Histogram, &[]),
                // Would expose x_total next to x's, h_count next to h's.
                sample("x_total", Gauge, &[]),
                sample("h_count", Gauge, &[]),
                sample("g_sum", Gauge, &[]),
                // Reserved labels, an oversized value.
                sample("y", Gauge, &[("le", "1")]),
                sample("y", Gauge, &[("quantile", "1")]),
                sample("y", Gauge, &[("__name__", "z")]),
                sample("y", Gauge, &[("k", &long)]),
            ],
        );
        assert_eq!(refused, 7);
        // Another plugin cannot shadow them either.
        assert_eq!(m.record_plugin("q", &[sample("x_total", Gauge, &[])]), 1);
        // A plugin's families are bounded.
        let many: Vec<PluginSample> = (0..PLUGIN_MAX_FAMILIES + 50)
            .map(|i| sample(&format!("m{i}"), Gauge, &[]))
            .collect();
        assert_eq!(m.record_plugin("r", &many), 50);
        let text = m.render(false, &[]);
        let mut seen = std::collections::HashSet::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            let ty = text.lines().find(|t| {
                t.starts_with("# TYPE ") && name.starts_with(t.split(' ').nth(2).unwrap_or("-"))
            });
            assert!(ty.is_some(), "no TYPE for {name}");
            seen.insert(name.to_string());
        }
        assert!(seen.contains("x_total") && seen.contains("h_count"));
        // Removed plugins take their families along.
        m.retain_plugins(&["q"]);
        let text = m.render(false, &[]);
        assert!(!text.contains("x_total") && !text.contains("m1 "), "{text}");
        assert!(!text.contains("plugin=\"p\""), "{text}");
    }
}
