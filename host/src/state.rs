//! What a plugin's store holds, and the host side of every capability.

use crate::bindings::imports::weir::plugin::{clock, config, flow_stats, flows, kv, log, metrics};
use crate::bindings::types as wit;
use crate::convert::{flow_to_wit, value_to_wit};
use crate::deadline::within;
use crate::lock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_core::query::{self, Metric, SortBy, TimeRange};
use weir_core::store::{Buckets, ListRequest};

/// Most bytes a plugin's key-value store may hold.
pub const KV_LIMIT: usize = 1 << 20;
/// Log lines a plugin may write per second on average, and in a burst.
pub const LOG_LINES_PER_SEC: f64 = 20.0;
pub const LOG_BURST: f64 = 100.0;
/// Characters of one plugin log message kept (the rest is cut, with a note).
pub const LOG_MESSAGE_CHARS: usize = 1024;
/// Points (series x buckets) one time-series host call may return.
pub const MAX_SERIES_POINTS: usize = 1_000_000;
/// Metric samples a plugin may have waiting for the agent's next sync, and their bytes
/// (names and labels); beyond either, new samples are dropped.
pub const METRIC_BUFFER_SAMPLES: usize = 100_000;
pub const METRIC_BUFFER_BYTES: usize = 8 << 20;

/// Samples emitted through `metrics` since the agent last took them, and their bytes.
#[derive(Default)]
pub struct MetricBuffer {
    pub samples: Vec<wit::MetricSample>,
    pub bytes: usize,
}

fn sample_bytes(s: &wit::MetricSample) -> usize {
    s.name.len()
        + s.labels
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Where the `flow-stats` capability reads link speeds: the running capture, once started
/// (empty in hosts without one).
pub type Links = Arc<std::sync::OnceLock<Arc<dyn weir_core::capture::CaptureSource>>>;

/// Agent services plugins reach through capabilities, set once when the agent has them
/// (plugins loaded before see them too); empty in hosts without them.
#[derive(Clone, Default)]
pub struct Services {
    /// Link speeds (`flow-stats`).
    pub links: Links,
    /// The records store (`records`).
    pub records: Arc<std::sync::OnceLock<Arc<weir_core::records::RecordStore>>>,
    /// The operator's named destinations (`sink`).
    pub sinks: Arc<std::sync::OnceLock<weir_core::sink::Sinks>>,
    /// The guarded capture (`capture-control`).
    pub control: Arc<std::sync::OnceLock<Arc<weir_core::control::GuardedCapture>>>,
    /// Storage sampling (`storage-sampling`).
    pub sampler: Arc<std::sync::OnceLock<Arc<weir_core::sampling::StorageSampler>>>,
    /// Connection attempts from network namespaces (`probe`).
    pub prober: Arc<std::sync::OnceLock<Arc<dyn weir_core::probe::Prober>>>,
    /// Cluster objects (`k8s-objects`).
    pub objects: Arc<std::sync::OnceLock<Arc<dyn weir_core::objects::ObjectSource>>>,
    /// Where `flows` (query, aggregate, time series) reads when not the agent's own store:
    /// the cluster's ClickHouse under `weir server`.
    pub flow_query: Arc<std::sync::OnceLock<Arc<dyn weir_core::flowquery::FlowQuery>>>,
    /// Set when the agent replays an incident: `outbound-http` answers from the plugin's
    /// recorded tape only, never the network (`crate::tape`).
    pub replay: Arc<std::sync::OnceLock<()>>,
}

/// Per-plugin state that outlives a call: configuration, key-value data, emitted metrics.
pub struct PluginCtx {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub kv: Mutex<BTreeMap<String, Vec<u8>>>,
    pub flows: Option<Arc<weir_core::Store>>,
    pub services: Services,
    /// What each scoped capability granted may reach.
    pub scopes: crate::scope::Scopes,
    pub metrics: Mutex<MetricBuffer>,
    /// Log rate limit: tokens left and when they were last topped up.
    pub log_bucket: Mutex<(f64, std::time::Instant)>,
    /// Log lines the rate limit dropped.
    pub log_dropped: std::sync::atomic::AtomicU64,
    /// Where kv is kept across restarts (`<plugin dir>/kv.json`); None keeps it in memory.
    pub kv_path: Option<std::path::PathBuf>,
    /// kv changed since it was last written.
    pub kv_dirty: std::sync::atomic::AtomicBool,
    /// What the plugin's sink payloads are (`[exporter] media_type`).
    pub media_type: String,
    /// What `outbound-http` got, recorded for replay (a replay answers from it); None
    /// records nothing (a plugin without a state directory).
    pub tape: Option<crate::tape::Tape>,
}

impl HostState {
    /// What the plugin's grant of scoped capability `cap` reaches (empty: nothing).
    pub(crate) fn scope_of(&self, cap: crate::Capability) -> &[String] {
        self.ctx.scopes.get(&cap).map(Vec::as_slice).unwrap_or(&[])
    }
}

impl PluginCtx {
    pub fn new(
        name: &str,
        config: BTreeMap<String, String>,
        flows: Option<Arc<weir_core::Store>>,
        services: Services,
    ) -> Self {
        PluginCtx {
            name: name.to_string(),
            config,
            kv: Mutex::new(BTreeMap::new()),
            flows,
            services,
            scopes: Default::default(),
            metrics: Mutex::new(MetricBuffer::default()),
            log_bucket: Mutex::new((LOG_BURST, std::time::Instant::now())),
            log_dropped: Default::default(),
            kv_path: None,
            tape: None,
            kv_dirty: Default::default(),
            media_type: crate::manifest::DEFAULT_MEDIA_TYPE.into(),
        }
    }

    /// Keeps kv in `path` from now on, starting from what it holds. A file that does not
    /// parse is set aside (`kv.json.corrupt-<ms>`), never overwritten, and kv starts empty.
    pub fn keep_kv_in(&mut self, path: std::path::PathBuf) {
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, Vec<u8>>>(&bytes) {
                Ok(kv) => *lock(&self.kv) = kv,
                Err(e) => {
                    let aside = weir_core::aside::set_aside(&path);
                    tracing::warn!(plugin = %self.name, path = %path.display(), error = %e, aside = ?aside, "plugin kv unreadable: set aside, starting empty");
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(plugin = %self.name, path = %path.display(), error = %e, "plugin kv unreadable");
            }
        }
        self.kv_path = Some(path);
    }

    /// Writes kv to its file when it changed (temporary file, then rename: a crash leaves the
    /// old or the new state, never half of one). Returns whether it wrote.
    pub fn persist_kv(&self) -> std::io::Result<bool> {
        use std::sync::atomic::Ordering;
        let Some(path) = &self.kv_path else {
            return Ok(false);
        };
        if !self.kv_dirty.swap(false, Ordering::SeqCst) {
            return Ok(false);
        }
        let json = serde_json::to_vec(&*lock(&self.kv)).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            self.kv_dirty.store(true, Ordering::SeqCst);
        }
        written.map(|()| true)
    }

    /// Takes one log line's token; false when the plugin is over its log rate.
    fn log_allowed(&self) -> bool {
        let mut b = lock(&self.log_bucket);
        let now = std::time::Instant::now();
        let refill = now.duration_since(b.1).as_secs_f64() * LOG_LINES_PER_SEC;
        *b = ((b.0 + refill).min(LOG_BURST), now);
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            let dropped = self
                .log_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Say so once per burst of drops, not once per line.
            if dropped.is_power_of_two() || dropped == 0 {
                tracing::warn!(plugin = %self.name, dropped = dropped + 1, "plugin log lines dropped (rate limit)");
            }
            false
        }
    }
}

/// The data of one call's store.
pub struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub ctx: Arc<PluginCtx>,
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
    /// When the running call's budget ends (WASI waits and host calls are cut there).
    pub deadline: Option<std::time::Instant>,
    /// Set when a wait or host call ran into the deadline: the call is then a timeout.
    pub overran: std::sync::atomic::AtomicBool,
    /// The plugin's cancel generation, and the one the running call started under.
    pub cancel: crate::deadline::Cancel,
    pub generation: u64,
    /// A `sink` send of this call failed transiently (the destination down): the call's
    /// failure is then the destination's, not counted against the plugin.
    pub destination_failed: bool,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::types::Host for HostState {}

impl log::Host for HostState {
    /// A plugin's words are data: always attributed, escaped (a newline or an escape
    /// sequence cannot start a line that reads as the agent's own), cut to
    /// [`LOG_MESSAGE_CHARS`] and rate-limited per plugin.
    fn log(&mut self, level: log::Level, message: String) {
        if !self.ctx.log_allowed() {
            return;
        }
        let plugin = self.ctx.name.as_str();
        let text = plugin_text(&message);
        match level {
            log::Level::Trace => tracing::trace!(plugin, text = %text, "plugin log"),
            log::Level::Debug => tracing::debug!(plugin, text = %text, "plugin log"),
            log::Level::Info => tracing::info!(plugin, text = %text, "plugin log"),
            log::Level::Warn => tracing::warn!(plugin, text = %text, "plugin log"),
            log::Level::Error => tracing::error!(plugin, text = %text, "plugin log"),
        }
    }
}

/// A plugin's text as one quoted, escaped line: control characters (newlines, escape
/// sequences), quotes and backslashes escaped, cut to [`LOG_MESSAGE_CHARS`].
pub fn plugin_text(message: &str) -> String {
    let total = message.chars().count();
    let kept: String = message.chars().take(LOG_MESSAGE_CHARS).collect();
    let mut out = format!("\"{}\"", kept.escape_debug());
    if total > LOG_MESSAGE_CHARS {
        out.push_str(&format!(" (+{} characters cut)", total - LOG_MESSAGE_CHARS));
    }
    out
}

impl metrics::Host for HostState {
    fn emit(&mut self, samples: Vec<wit::MetricSample>) {
        // Held until the agent's next sync: bounded in samples and in bytes.
        let mut m = lock(&self.ctx.metrics);
        for s in samples {
            let b = sample_bytes(&s);
            if m.samples.len() >= METRIC_BUFFER_SAMPLES || m.bytes + b > METRIC_BUFFER_BYTES {
                break;
            }
            m.bytes += b;
            m.samples.push(s);
        }
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        lock(&self.ctx.kv).get(&key).cloned()
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let mut kv = lock(&self.ctx.kv);
        let used: usize = kv
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if used + key.len() + value.len() > KV_LIMIT {
            return Err(format!("key-value store full ({KV_LIMIT} bytes)"));
        }
        kv.insert(key, value);
        self.ctx
            .kv_dirty
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn delete(&mut self, key: String) {
        if lock(&self.ctx.kv).remove(&key).is_some() {
            self.ctx
                .kv_dirty
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn list_keys(&mut self, prefix: String) -> Vec<String> {
        lock(&self.ctx.kv)
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect()
    }
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> u64 {
        query::now_ms()
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.ctx.config.get(&key).cloned()
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.ctx
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

pub(crate) fn range_of(r: &wit::TimeRange) -> Result<TimeRange, String> {
    if r.from_ms > r.to_ms {
        return Err(format!("reversed time range: {} > {}", r.from_ms, r.to_ms));
    }
    Ok(TimeRange {
        from_ms: r.from_ms,
        to_ms: r.to_ms,
    })
}

fn metric_of(m: wit::Metric) -> Metric {
    match m {
        wit::Metric::Bytes => Metric::Bytes,
        wit::Metric::Packets => Metric::Packets,
        wit::Metric::Flows => Metric::Flows,
    }
}

impl HostState {
    pub(crate) fn store(&self) -> Result<&Arc<weir_core::Store>, String> {
        self.ctx
            .flows
            .as_ref()
            .ok_or_else(|| "no flow store in this host".to_string())
    }

    /// What `flows`, `flow-stats` and `flow-fields`' `select` read: the cluster's query
    /// engine when the host has one, else the store.
    pub(crate) fn flow_query(&self) -> Result<Arc<dyn weir_core::flowquery::FlowQuery>, String> {
        match self.ctx.services.flow_query.get() {
            Some(q) => Ok(q.clone()),
            None => Ok(self.store()?.clone()),
        }
    }
}

impl flows::Host for HostState {
    fn query(
        &mut self,
        filter: String,
        range: wit::TimeRange,
        limit: u32,
    ) -> Result<Vec<wit::Flow>, String> {
        let req = ListRequest {
            filter: query::parse(&filter).map_err(|e| e.to_string())?,
            range: range_of(&range)?,
            sort: SortBy::parse("-TimeFlowEndMs").map_err(|e| e.to_string())?,
            limit: query::check_limit("limit", limit as usize, query::MAX_LIMIT)?,
            offset: 0,
        };
        let store = self.flow_query()?;
        let res = within(self, "flows.query", move || {
            store.list(&req).map_err(|e| e.to_string())
        })?;
        Ok(res.flows.iter().map(flow_to_wit).collect())
    }

    fn aggregate(
        &mut self,
        filter: String,
        range: wit::TimeRange,
        group_by: Vec<String>,
        metric: wit::Metric,
        top: u32,
    ) -> Result<Vec<wit::Group>, String> {
        let fields = query::parse_group_by(&group_by.join(",")).map_err(|e| e.to_string())?;
        let expr = query::parse(&filter).map_err(|e| e.to_string())?;
        let top = query::check_limit("top", top as usize, query::MAX_GROUPS)?;
        let m = metric_of(metric);
        let store = self.flow_query()?;
        let r = range_of(&range)?;
        let ranked = within(self, "flows.aggregate", move || {
            store
                .top(&expr, &r, &fields, m, top)
                .map_err(|e| e.to_string())
        })?;
        Ok(ranked
            .top
            .into_iter()
            .map(|(key, t)| wit::Group {
                key: key.iter().map(value_to_wit).collect(),
                bytes: t.bytes,
                packets: t.packets,
                flows: t.flows,
            })
            .collect())
    }

    fn timeseries(
        &mut self,
        filter: String,
        range: wit::TimeRange,
        step_ms: u64,
        group_by: Vec<String>,
        metric: wit::Metric,
        top: u32,
    ) -> Result<Vec<wit::Series>, String> {
        let fields = if group_by.is_empty() {
            Vec::new()
        } else {
            query::parse_group_by(&group_by.join(",")).map_err(|e| e.to_string())?
        };
        let expr = query::parse(&filter).map_err(|e| e.to_string())?;
        let r = range_of(&range)?;
        if step_ms == 0 || r.to_ms.saturating_sub(r.from_ms) / step_ms > query::MAX_BUCKETS {
            return Err(format!(
                "step {step_ms} ms gives too many buckets (max {})",
                query::MAX_BUCKETS
            ));
        }
        let buckets = (r.to_ms - r.from_ms).div_ceil(step_ms).max(1);
        let top = query::check_limit("top", top as usize, query::MAX_GROUPS)?;
        // Bytes, not only items: series x buckets is what the answer holds.
        let points = (top.max(1) as u64).saturating_mul(buckets);
        if points > MAX_SERIES_POINTS as u64 {
            return Err(format!(
                "{top} series x {buckets} buckets is {points} points, the most one call returns is {MAX_SERIES_POINTS}: fewer series or a longer step"
            ));
        }
        let store = self.flow_query()?;
        let (fields_q, origin_ms) = (fields.clone(), r.from_ms);
        let groups = within(self, "flows.timeseries", move || {
            store
                .aggregate(&expr, &r, &fields_q, Some(Buckets { origin_ms, step_ms }))
                .map_err(|e| e.to_string())
        })?;
        let ts = weir_core::aggregate::time_series(
            groups,
            &fields,
            metric_of(metric),
            top,
            r.from_ms,
            step_ms,
            buckets,
        );
        // Keys come back as JSON; re-read them per field kind.
        Ok(ts
            .series
            .into_iter()
            .map(|s| wit::Series {
                key: fields
                    .iter()
                    .map(|f| match &s.key[f.name] {
                        serde_json::Value::Number(n) => wit::Value::Number(n.as_u64().unwrap_or(0)),
                        serde_json::Value::String(t) => {
                            match (f.kind, t.parse::<std::net::IpAddr>()) {
                                (weir_core::schema::FieldKind::Ip, Ok(ip)) => {
                                    wit::Value::Ip(crate::convert::ip_to_wit(&ip))
                                }
                                _ => wit::Value::Text(t.clone()),
                            }
                        }
                        _ => wit::Value::Text(String::new()),
                    })
                    .collect(),
                points: s.points,
            })
            .collect())
    }
}

/// Group-by fields; none is one group of everything.
fn group_fields(group_by: &[String]) -> Result<Vec<&'static weir_core::schema::FieldDef>, String> {
    if group_by.is_empty() {
        return Ok(Vec::new());
    }
    query::parse_group_by(&group_by.join(",")).map_err(|e| e.to_string())
}

impl flow_stats::Host for HostState {
    fn aggregate(
        &mut self,
        filter: String,
        range: wit::TimeRange,
        group_by: Vec<String>,
        measure: Option<flow_stats::Measure>,
        rank: flow_stats::Rank,
        top: u32,
    ) -> Result<Vec<flow_stats::GroupStats>, String> {
        use flow_stats::Rank;
        let fields = group_fields(&group_by)?;
        let expr = query::parse(&filter).map_err(|e| e.to_string())?;
        let top = query::check_limit("top", top as usize, query::MAX_GROUPS)?;
        let r = range_of(&range)?;
        let measured = match &measure {
            Some(m) => {
                if m.quantiles.is_empty() || m.quantiles.len() > 16 {
                    return Err("measure: give 1 to 16 quantiles".into());
                }
                if let Some(q) = m.quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
                    return Err(format!("measure: quantile {q} is outside 0..=1"));
                }
                let f = query::parse_group_by(&m.field).map_err(|e| format!("measure: {e}"))?;
                let [f] = f[..] else {
                    return Err("measure: one field".into());
                };
                Some((f, m.quantiles.clone()))
            }
            None => None,
        };
        let store = self.flow_query()?;
        let (expr_q, fields_q) = (expr.clone(), fields.clone());
        let (measured, groups) = within(self, "flow-stats.aggregate", move || {
            let measured = match measured {
                Some((f, qs)) => Some((
                    store
                        .group_values(&expr_q, &r, &fields_q, f)
                        .map_err(|e| format!("measure: {e}"))?,
                    qs,
                )),
                None => None,
            };
            let groups = store
                .aggregate(&expr_q, &r, &fields_q, None)
                .map_err(|e| e.to_string())?;
            Ok((measured, groups))
        })?;
        let mut values = measured
            .as_ref()
            .map(|(v, _)| v.clone())
            .unwrap_or_default();
        let mut rows: Vec<flow_stats::GroupStats> = groups
            .into_iter()
            .map(|((key, _), t)| {
                let (measured_n, q) = match (values.get_mut(&key), &measured) {
                    (Some(v), Some((_, qs))) => {
                        (v.len() as u64, weir_core::store::collect::quantiles(v, qs))
                    }
                    _ => (0, Vec::new()),
                };
                flow_stats::GroupStats {
                    key: key.iter().map(value_to_wit).collect(),
                    bytes: t.bytes,
                    packets: t.packets,
                    flows: t.flows,
                    drop_bytes: t.drop_bytes,
                    drop_packets: t.drop_packets,
                    measured: measured_n,
                    quantiles: q,
                }
            })
            .collect();
        let score = |g: &flow_stats::GroupStats| match rank {
            Rank::Bytes => g.bytes,
            Rank::Packets => g.packets,
            Rank::Flows => g.flows,
            Rank::DropBytes => g.drop_bytes,
            Rank::DropPackets => g.drop_packets,
            Rank::Quantile => g.quantiles.iter().copied().max().unwrap_or(0),
        };
        rows.sort_by(|a, b| {
            score(b)
                .cmp(&score(a))
                .then_with(|| a.bytes.cmp(&b.bytes).reverse())
        });
        rows.truncate(top);
        Ok(rows)
    }

    fn link_speed(&mut self, netns: String, interface: String) -> Option<u64> {
        self.ctx
            .services
            .links
            .get()?
            .link_speed(&netns, &interface)
    }
}
