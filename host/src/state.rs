//! What a plugin's store holds, and the host side of every capability.

use crate::bindings::imports::weir::plugin::{clock, config, flow_stats, flows, kv, log, metrics};
use crate::bindings::types as wit;
use crate::convert::{flow_to_wit, value_to_wit};
use crate::lock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weir_core::query::{self, Metric, SortBy, TimeRange};
use weir_core::store::{Buckets, ListRequest, Totals};

/// Most bytes a plugin's key-value store may hold.
pub const KV_LIMIT: usize = 1 << 20;

/// Where the `flow-stats` capability reads link speeds: the running capture, once started
/// (empty in hosts without one).
pub type Links = Arc<std::sync::OnceLock<Arc<dyn weir_core::capture::CaptureSource>>>;

/// Per-plugin state that outlives a call: configuration, key-value data, emitted metrics.
pub struct PluginCtx {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub kv: Mutex<BTreeMap<String, Vec<u8>>>,
    pub flows: Option<Arc<weir_core::Store>>,
    pub links: Links,
    pub metrics: Mutex<Vec<wit::MetricSample>>,
}

impl PluginCtx {
    pub fn new(
        name: &str,
        config: BTreeMap<String, String>,
        flows: Option<Arc<weir_core::Store>>,
        links: Links,
    ) -> Self {
        PluginCtx {
            name: name.to_string(),
            config,
            kv: Mutex::new(BTreeMap::new()),
            flows,
            links,
            metrics: Mutex::new(Vec::new()),
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
    fn log(&mut self, level: log::Level, message: String) {
        let plugin = self.ctx.name.as_str();
        let message: String = message.chars().take(4096).collect();
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl metrics::Host for HostState {
    fn emit(&mut self, samples: Vec<wit::MetricSample>) {
        let mut m = lock(&self.ctx.metrics);
        let room = 100_000usize.saturating_sub(m.len());
        m.extend(samples.into_iter().take(room));
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
        Ok(())
    }

    fn delete(&mut self, key: String) {
        lock(&self.ctx.kv).remove(&key);
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

fn range_of(r: &wit::TimeRange) -> Result<TimeRange, String> {
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

fn pick(t: &Totals, m: Metric) -> u64 {
    match m {
        Metric::Bytes => t.bytes,
        Metric::Packets => t.packets,
        Metric::Flows => t.flows,
        Metric::DropBytes => t.drop_bytes,
        Metric::DropPackets => t.drop_packets,
    }
}

impl HostState {
    fn store(&self) -> Result<&Arc<weir_core::Store>, String> {
        self.ctx
            .flows
            .as_ref()
            .ok_or_else(|| "no flow store in this host".to_string())
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
        let res = self.store()?.list(&req).map_err(|e| e.to_string())?;
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
        let groups = self
            .store()?
            .aggregate(&expr, &range_of(&range)?, &fields, None)
            .map_err(|e| e.to_string())?;
        let mut rows: Vec<_> = groups.into_iter().collect();
        rows.sort_by(|a, b| {
            pick(&b.1, m)
                .cmp(&pick(&a.1, m))
                .then_with(|| a.0.cmp(&b.0))
        });
        Ok(rows
            .into_iter()
            .take(top)
            .map(|((key, _), t)| wit::Group {
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
        let groups = self
            .store()?
            .aggregate(
                &expr,
                &r,
                &fields,
                Some(Buckets {
                    origin_ms: r.from_ms,
                    step_ms,
                }),
            )
            .map_err(|e| e.to_string())?;
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
                let values = self
                    .store()?
                    .group_values(&expr, &r, &fields, f)
                    .map_err(|e| format!("measure: {e}"))?;
                Some((values, m.quantiles.clone()))
            }
            None => None,
        };
        let groups = self
            .store()?
            .aggregate(&expr, &r, &fields, None)
            .map_err(|e| e.to_string())?;
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
        self.ctx.links.get()?.link_speed(&netns, &interface)
    }
}
