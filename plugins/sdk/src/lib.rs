//! Guest SDK for weir plugins. Each world of `weir:plugin` (see `wit/`) is a module with its
//! bindings, one `Guest` trait, an `export!` macro and the host calls it may import (`log`,
//! `flows`, `config`, ... as modules): implement the trait and export it.
//!
//! ```ignore
//! use weir_plugin_sdk::flow_processor::{self, Batch, FlowBatch, Guest, PluginError, Processed};
//! struct MyPlugin;
//! impl Guest for MyPlugin {
//!     fn process(batch: &FlowBatch) -> Result<Processed, PluginError> {
//!         let batch = Batch::new(batch);
//!         let total: u64 = batch.bytes().iter().sum();
//!         ..
//!     }
//! }
//! flow_processor::export!(MyPlugin);
//! ```
//! Batches arrive as a host resource; [`flow_processor::Batch`] pulls each column across the
//! boundary the first time it is read, so a plugin pays only for the fields it uses.
//! Build with `cargo build --release --target wasm32-wasip2`: the result is a component.

/// Getters for the lazily fetched columns of a `Batch`.
macro_rules! batch_columns {
    ($($(#[$doc:meta])* $name:ident: $t:ty),* $(,)?) => {
        $($(#[$doc])* pub fn $name(&self) -> &[$t] {
            self.cols.$name.get_or_init(|| self.raw.$name())
        })*
    };
}

/// Typed access to `flow-fields` columns, generated into each world that imports it.
macro_rules! field_helpers {
    () => {
        pub use self::weir::plugin::flow_fields::{
            self, Column, FieldInfo, FieldKind, Selection, TextColumn,
        };

        impl Column {
            /// The values of a number field (`None` for another kind).
            pub fn numbers(&self) -> Option<&[u64]> {
                match self {
                    Column::Numbers(v) => Some(v),
                    _ => None,
                }
            }

            /// The values of an address field (`None` for another kind).
            pub fn addrs(&self) -> Option<&[IpAddr]> {
                match self {
                    Column::Addrs(v) => Some(v),
                    _ => None,
                }
            }

            /// Value `i` of a text field (`None` for another kind or out of range).
            pub fn text(&self, i: usize) -> Option<&str> {
                match self {
                    Column::Texts(t) => t
                        .index
                        .get(i)
                        .and_then(|&k| t.values.get(k as usize))
                        .map(String::as_str),
                    _ => None,
                }
            }

            /// Number of values.
            pub fn len(&self) -> usize {
                match self {
                    Column::Numbers(v) => v.len(),
                    Column::Addrs(v) => v.len(),
                    Column::Texts(t) => t.index.len(),
                }
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        /// Every stored flow matching `filter` in `range`, `page` at a time (lowest sequence
        /// first), each page given to `each`; returns the last sequence seen (0 when none),
        /// to resume from with `after_seq` later.
        pub fn select_all(
            filter: &str,
            range: TimeRange,
            fields: &[&str],
            page: u32,
            after_seq: u64,
            mut each: impl FnMut(&Selection),
        ) -> Result<u64, String> {
            let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            let mut after = after_seq;
            loop {
                let sel = flow_fields::select(filter, range, &fields, page, after)?;
                let Some(&last) = sel.seqs.last() else {
                    return Ok(after);
                };
                each(&sel);
                after = last;
            }
        }
    };
}

/// Config readers, generated into each world that imports `config`.
macro_rules! config_helpers {
    () => {
        /// A whole-number config value (`_` allowed as a separator), or the default; a bad
        /// value is invalid input naming the key.
        pub fn config_u64(key: &str, default: u64) -> Result<u64, PluginError> {
            match config::get(key) {
                None => Ok(default),
                Some(raw) => raw.trim().replace('_', "").parse().map_err(|_| {
                    PluginError::InvalidInput(format!(
                        "config {key}: expected a whole number, got {raw:?}"
                    ))
                }),
            }
        }
    };
}

/// A lazily fetched view of a host `flow-batch`, generated into each world that takes batches.
macro_rules! batch_view {
    () => {
        use std::cell::OnceCell;

        /// A batch of flows: each column is fetched from the host once, when first read.
        /// All columns have `len()` entries in the same order.
        pub struct Batch<'a> {
            raw: &'a FlowBatch,
            len: usize,
            cols: Cols,
        }

        #[derive(Default)]
        struct Cols {
            time_flow_start_ms: OnceCell<Vec<u64>>,
            time_flow_end_ms: OnceCell<Vec<u64>>,
            time_received: OnceCell<Vec<u64>>,
            etype: OnceCell<Vec<u16>>,
            src_mac: OnceCell<Vec<u64>>,
            dst_mac: OnceCell<Vec<u64>>,
            src_addr: OnceCell<Vec<IpAddr>>,
            dst_addr: OnceCell<Vec<IpAddr>>,
            src_port: OnceCell<Vec<u16>>,
            dst_port: OnceCell<Vec<u16>>,
            proto: OnceCell<Vec<u8>>,
            icmp_type: OnceCell<Vec<u8>>,
            icmp_code: OnceCell<Vec<u8>>,
            bytes: OnceCell<Vec<u64>>,
            packets: OnceCell<Vec<u64>>,
            skbs: OnceCell<Vec<u64>>,
            flags: OnceCell<Vec<u16>>,
            if_direction: OnceCell<Vec<u8>>,
            sampling: OnceCell<Vec<u32>>,
            interface: OnceCell<Vec<u32>>,
            netns: OnceCell<Vec<u32>>,
            names: OnceCell<Vec<String>>,
        }

        impl<'a> Batch<'a> {
            pub fn new(raw: &'a FlowBatch) -> Self {
                Batch { raw, len: raw.len() as usize, cols: Cols::default() }
            }

            /// Number of flows.
            pub fn len(&self) -> usize {
                self.len
            }

            pub fn is_empty(&self) -> bool {
                self.len == 0
            }

            /// The batch's window: its first flow's start to its last flow's end, Unix ms
            /// (None when empty).
            pub fn window_ms(&self) -> Option<(u64, u64)> {
                let from = self.time_flow_start_ms().iter().copied().min()?;
                let to = self.time_flow_end_ms().iter().copied().max()?;
                Some((from, to.max(from)))
            }

            batch_columns!(
                time_flow_start_ms: u64,
                time_flow_end_ms: u64,
                time_received: u64,
                etype: u16,
                /// 48-bit MACs in the low bits.
                src_mac: u64,
                dst_mac: u64,
                src_addr: IpAddr,
                dst_addr: IpAddr,
                src_port: u16,
                dst_port: u16,
                proto: u8,
                icmp_type: u8,
                icmp_code: u8,
                /// As observed: multiply by `sampling` (see [`Batch::scale`]) for estimates.
                bytes: u64,
                packets: u64,
                skbs: u64,
                flags: u16,
                if_direction: u8,
                sampling: u32,
                /// Indices into [`Batch::names`]; see [`Batch::interface_name`].
                interface: u32,
                netns: u32,
                names: String,
            );

            /// Sampling multiplier of flow `i` (1 when unsampled).
            pub fn scale(&self, i: usize) -> u64 {
                u64::from(self.sampling()[i].max(1))
            }

            /// Interface name of flow `i`.
            pub fn interface_name(&self, i: usize) -> &str {
                let idx = self.interface()[i] as usize;
                self.names().get(idx).map(String::as_str).unwrap_or("")
            }

            /// Network namespace of flow `i`.
            pub fn netns_name(&self, i: usize) -> &str {
                let idx = self.netns()[i] as usize;
                self.names().get(idx).map(String::as_str).unwrap_or("")
            }

            /// Any field of the schema by name (`TimeFlowRttNs`, `SrcK8S_Namespace`, ...):
            /// needs the `flow-fields` capability. An unknown name is invalid input.
            pub fn field(&self, name: &str) -> Result<Column, PluginError> {
                weir::plugin::flow_fields::read(self.raw, name).map_err(PluginError::InvalidInput)
            }

            /// Whole records (every field crosses the boundary: slower than columns).
            pub fn rows(&self) -> Vec<Flow> {
                self.raw.rows(0, self.len as u32)
            }
        }
    };
}

/// The flow-processor world: batches of flows in, metric samples and annotations out.
pub mod flow_processor {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "flow-processor",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::flow_processor",
    });
    pub use self::weir::plugin::types::*;
    /// The host calls this world may import (each a capability the operator grants).
    pub use self::weir::plugin::{
        capture_control, clock, config, k8s_objects, kv, log, metrics, outbound_http, probe,
        records, storage_sampling, timeline,
    };
    field_helpers!();
    batch_view!();
    config_helpers!();
}

/// The visualization world: a render request in, a view out.
pub mod visualization {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "visualization",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::visualization",
    });
    pub use self::weir::plugin::types::*;
    /// The host calls this world may import (each a capability the operator grants).
    pub use self::weir::plugin::{
        capture_control, clock, config, flow_stats, flows, k8s_objects, kv, log, outbound_http,
        probe, records, timeline,
    };
    field_helpers!();

    /// A request parameter.
    pub fn param<'a>(req: &'a RenderRequest, key: &str) -> Option<&'a str> {
        req.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `metric` parameter: bytes (default), packets or flows.
    pub fn metric_param(req: &RenderRequest) -> Result<Metric, PluginError> {
        match param(req, "metric").unwrap_or("bytes") {
            "bytes" => Ok(Metric::Bytes),
            "packets" => Ok(Metric::Packets),
            "flows" => Ok(Metric::Flows),
            other => Err(PluginError::InvalidInput(format!(
                "metric '{other}': use bytes, packets or flows"
            ))),
        }
    }

    /// A whole-number parameter within `lo..=hi`.
    pub fn number_param(
        req: &RenderRequest,
        key: &str,
        default: u32,
        lo: u32,
        hi: u32,
    ) -> Result<u32, PluginError> {
        let Some(text) = param(req, key) else {
            return Ok(default);
        };
        match text.trim().parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(PluginError::InvalidInput(format!(
                "{key} '{text}': a whole number from {lo} to {hi}"
            ))),
        }
    }

    /// The `group_by` parameter as field names (comma-separated), or `default`.
    pub fn group_by_param(req: &RenderRequest, default: &str) -> Vec<String> {
        param(req, "group_by")
            .unwrap_or(default)
            .split(',')
            .map(|f| f.trim().to_string())
            .collect()
    }

    /// The groups a view draws: `group_by` (default `default_group_by`; its field count within
    /// `fields`, else `InvalidInput` saying `needs`), `metric` and `top` (default
    /// `default_top`), aggregated over the request's filter and window.
    pub struct Grouped {
        pub fields: Vec<String>,
        pub metric: Metric,
        pub groups: Vec<Group>,
    }

    pub fn grouped(
        req: &RenderRequest,
        default_group_by: &str,
        fields: std::ops::RangeInclusive<usize>,
        needs: &str,
        default_top: u32,
    ) -> Result<Grouped, PluginError> {
        let names = group_by_param(req, default_group_by);
        if !fields.contains(&names.len()) {
            return Err(PluginError::InvalidInput(format!("group_by needs {needs}")));
        }
        let metric = metric_param(req)?;
        let top = number_param(req, "top", default_top, 1, 10_000)?;
        let groups = flows::aggregate(&req.filter, req.range, &names, metric, top)
            .map_err(PluginError::InvalidInput)?;
        Ok(Grouped {
            fields: names,
            metric,
            groups,
        })
    }

    /// A group's value for a metric.
    pub fn pick(g: &Group, m: Metric) -> u64 {
        match m {
            Metric::Bytes => g.bytes,
            Metric::Packets => g.packets,
            Metric::Flows => g.flows,
        }
    }

    /// The unit a metric is drawn in.
    pub fn unit(m: Metric) -> &'static str {
        match m {
            Metric::Bytes => "bytes",
            Metric::Packets => "packets",
            Metric::Flows => "flows",
        }
    }

    /// A grouped value as text (addresses as the UI and the query language write them).
    pub fn value_text(v: &Value) -> String {
        match v {
            Value::Number(n) => n.to_string(),
            Value::Ip(ip) => crate::ip(ip.hi, ip.lo).to_string(),
            Value::Text(t) => t.clone(),
        }
    }
}

/// The alert-rule world: a time window in, alerts out.
pub mod alert_rule {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "alert-rule",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::alert_rule",
    });
    pub use self::weir::plugin::flow_stats::{GroupStats, Measure, Rank};
    pub use self::weir::plugin::types::*;
    /// The host calls this world may import (each a capability the operator grants).
    pub use self::weir::plugin::{
        capture_control, clock, config, flow_stats, flows, k8s_objects, kv, log, metrics,
        outbound_http, probe, records, timeline,
    };
    field_helpers!();

    config_helpers!();

    /// Info, warning and critical thresholds from `<prefix>_info`, `_warning`, `_critical`
    /// (each a whole number), checked to be in order.
    pub fn thresholds(prefix: &str, defaults: [u64; 3]) -> Result<[u64; 3], PluginError> {
        let t = [
            config_u64(&format!("{prefix}_info"), defaults[0])?,
            config_u64(&format!("{prefix}_warning"), defaults[1])?,
            config_u64(&format!("{prefix}_critical"), defaults[2])?,
        ];
        if t[0] > t[1] || t[1] > t[2] {
            return Err(PluginError::InvalidInput(format!(
                "config {prefix}_info <= {prefix}_warning <= {prefix}_critical is required, got {} {} {}",
                t[0], t[1], t[2]
            )));
        }
        Ok(t)
    }

    /// The severity a value reaches, if any.
    pub fn severity_of(value: u64, t: [u64; 3]) -> Option<Severity> {
        if value >= t[2] {
            Some(Severity::Critical)
        } else if value >= t[1] {
            Some(Severity::Warning)
        } else if value >= t[0] && t[0] > 0 {
            Some(Severity::Info)
        } else {
            None
        }
    }

    /// A group key value as text.
    pub fn text(v: &Value) -> String {
        match v {
            Value::Number(n) => n.to_string(),
            Value::Ip(ip) => crate::ip(ip.hi, ip.lo).to_string(),
            Value::Text(t) => t.clone(),
        }
    }

    /// `base` and the operator's `filter` config, both applied.
    pub fn with_filter(base: &str) -> String {
        match config::get("filter").filter(|f| !f.trim().is_empty()) {
            Some(f) if base.is_empty() => f,
            Some(f) => format!("({base}) and ({f})"),
            None => base.to_string(),
        }
    }

    /// One alert per group of matching flows whose flow count reaches a threshold: the
    /// shape of the bundled rules. `label` renames a group field for the alert's labels;
    /// `what` names what the count counts in the summary.
    pub fn alerts_per_group(
        window: TimeRange,
        name: &str,
        filter: &str,
        fields: &[String],
        t: [u64; 3],
        label: impl Fn(&str) -> String,
        what: &str,
    ) -> Result<Vec<Alert>, PluginError> {
        let groups = flows::aggregate(filter, window, fields, Metric::Flows, 1000)
            .map_err(PluginError::InvalidInput)?;
        let secs = (window.to_ms.saturating_sub(window.from_ms) / 1000).max(1);
        Ok(groups
            .iter()
            .filter_map(|g| {
                let severity = severity_of(g.flows, t)?;
                let labels: Vec<(String, String)> = fields
                    .iter()
                    .zip(&g.key)
                    .map(|(f, v)| (label(f), text(v)))
                    .collect();
                let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                Some(Alert {
                    name: name.into(),
                    severity,
                    summary: format!("{} {what} in {secs} s ({})", g.flows, shown.join(", ")),
                    labels,
                    time_ms: window.to_ms,
                })
            })
            .collect())
    }

    /// A decimal config value, or the default; a bad value is invalid input naming the key.
    pub fn config_f64(key: &str, default: f64) -> Result<f64, PluginError> {
        match config::get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .replace('_', "")
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    PluginError::InvalidInput(format!(
                        "config {key}: expected a number, got {raw:?}"
                    ))
                }),
        }
    }

    /// Thresholds for "lower is worse" values (`<prefix>_info` >= `_warning` >= `_critical`).
    pub fn thresholds_below(prefix: &str, defaults: [u64; 3]) -> Result<[u64; 3], PluginError> {
        let t = [
            config_u64(&format!("{prefix}_info"), defaults[0])?,
            config_u64(&format!("{prefix}_warning"), defaults[1])?,
            config_u64(&format!("{prefix}_critical"), defaults[2])?,
        ];
        if t[0] < t[1] || t[1] < t[2] {
            return Err(PluginError::InvalidInput(format!(
                "config {prefix}_info >= {prefix}_warning >= {prefix}_critical is required, got {} {} {}",
                t[0], t[1], t[2]
            )));
        }
        Ok(t)
    }

    /// The severity a "lower is worse" value reaches, if any.
    pub fn severity_below(value: u64, t: [u64; 3]) -> Option<Severity> {
        if value <= t[2] {
            Some(Severity::Critical)
        } else if value <= t[1] {
            Some(Severity::Warning)
        } else if value <= t[0] {
            Some(Severity::Info)
        } else {
            None
        }
    }

    /// The window's length in seconds (at least 1).
    pub fn window_secs(window: &TimeRange) -> u64 {
        (window.to_ms.saturating_sub(window.from_ms) / 1000).max(1)
    }

    /// A group's labels: each group-by field (named by `label`) with its value as text;
    /// `IfDirection` reads `ingress` / `egress`.
    pub fn labels_of(
        fields: &[String],
        key: &[Value],
        label: impl Fn(&str) -> String,
    ) -> Vec<(String, String)> {
        fields
            .iter()
            .zip(key)
            .map(|(f, v)| {
                let text = match (f.as_str(), v) {
                    ("IfDirection", Value::Number(0)) => "ingress".to_string(),
                    ("IfDirection", Value::Number(1)) => "egress".to_string(),
                    _ => text(v),
                };
                (label(f), text)
            })
            .collect()
    }

    /// The usual label names: `NetNs` -> `netns`, `IfDirection` -> `direction`, others in
    /// snake case (`DstPort` -> `dst_port`).
    pub fn label_name(field: &str) -> String {
        match field {
            "NetNs" => "netns".into(),
            "IfDirection" => "direction".into(),
            "PktDropLatestDropCause" => "reason".into(),
            _ => {
                let mut out = String::new();
                let mut prev_lower = false;
                for c in field.chars() {
                    if c.is_ascii_uppercase() && prev_lower {
                        out.push('_');
                    }
                    prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
                    out.push(c.to_ascii_lowercase());
                }
                out
            }
        }
    }

    /// `k=v, k=v` for summaries.
    pub fn shown(labels: &[(String, String)]) -> String {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Groups with every total (and quantiles when `measure` is given), through the
    /// `flow-stats` capability.
    pub fn group_stats(
        window: TimeRange,
        filter: &str,
        fields: &[String],
        measure: Option<&Measure>,
        rank: Rank,
    ) -> Result<Vec<GroupStats>, PluginError> {
        flow_stats::aggregate(filter, window, fields, measure, rank, 1000)
            .map_err(PluginError::InvalidInput)
    }

    /// Bits per second, readable (`8.4 Mb/s`).
    pub fn bits_per_second(bps: u64) -> String {
        human(bps as f64, "b/s")
    }

    /// Bytes, readable (`1.2 MB`).
    pub fn bytes(n: u64) -> String {
        human(n as f64, "B")
    }

    fn human(v: f64, unit: &str) -> String {
        let (v, p) = if v >= 1e9 {
            (v / 1e9, "G")
        } else if v >= 1e6 {
            (v / 1e6, "M")
        } else if v >= 1e3 {
            (v / 1e3, "k")
        } else {
            return format!("{v:.0} {unit}");
        };
        format!("{v:.1} {p}{unit}")
    }

    /// Group-by fields from the `group_by` config (comma-separated), or the default.
    pub fn group_by(default: &[&str]) -> Vec<String> {
        match config::get("group_by").filter(|g| !g.trim().is_empty()) {
            Some(g) => g
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => default.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The correlator world: a batch of flows and external events in, annotations out.
pub mod correlator {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "correlator",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::correlator",
    });
    pub use self::weir::plugin::types::*;
    /// The host calls this world may import (each a capability the operator grants).
    pub use self::weir::plugin::{
        capture_control, clock, config, flows, k8s_objects, kv, log, outbound_http, probe, records,
        timeline,
    };
    field_helpers!();
    batch_view!();
    config_helpers!();

    /// Every record `q` selects from `q.after_seq` on, `q.limit` a page (lowest sequence
    /// first), each page given to `each`, at most `max_pages` pages. Returns true when records
    /// were left unread past the last page.
    pub fn query_records(
        mut q: records::RecordQuery,
        max_pages: usize,
        mut each: impl FnMut(Vec<records::Stored>),
    ) -> Result<bool, String> {
        for _ in 0..max_pages {
            let page = records::query(&q)?;
            let Some(last) = page.last() else {
                return Ok(false);
            };
            q.after_seq = last.seq;
            each(page);
        }
        Ok(!records::query(&records::RecordQuery { limit: 1, ..q })?.is_empty())
    }
}

/// The decoder world: bytes or text in, records out.
pub mod decoder {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "decoder",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::decoder",
    });
    pub use self::weir::plugin::types::*;
    /// The host calls this world may import (each a capability the operator grants).
    pub use self::weir::plugin::{config, log, records};
}

/// The summarizer world: mergeable sketches updated with batches, snapshotted, merged and
/// queried. The host keeps the state between calls as the last snapshot: every call starts a
/// fresh instance, merges that snapshot into empty sketches, then runs.
pub mod summarizer {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "summarizer",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::summarizer",
    });
    pub use self::weir::plugin::types::*;
    /// The host calls this world may import (each a capability the operator grants).
    pub use self::weir::plugin::{clock, config, kv, log, records, timeline};
    field_helpers!();
    batch_view!();
}

/// The check world: a window in, a verdict out (pass or fail, a summary, the evidence as a
/// table); `weir check NAME` turns it into an exit code for CI.
pub mod check {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "check",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::check",
    });
    pub use self::weir::plugin::flow_stats::{GroupStats, Measure, Rank};
    pub use self::weir::plugin::types::*;
    /// The host calls this world may import (each a capability the operator grants).
    pub use self::weir::plugin::{
        capture_control, clock, config, flow_stats, flows, k8s_objects, kv, log, outbound_http,
        probe, records, timeline,
    };
    field_helpers!();
}

/// The exporter world: the host feeds every stored flow (matching the manifest's `[exporter]
/// filter) once, in order, batch by batch; `export` sends it out through `sink`. Returning an
/// error makes the host retry the same batch later (at-least-once).
pub mod exporter {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "exporter",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin_sdk::exporter",
    });
    pub use self::weir::plugin::types::*;
    /// The host calls this world may import (each a capability the operator grants).
    pub use self::weir::plugin::{clock, config, kv, log, metrics, records, sink};
    field_helpers!();
    batch_view!();
    config_helpers!();

    /// Appends value `i` of a column as JSON: numbers as numbers, texts as strings,
    /// addresses as strings (IPv4 as `a.b.c.d`, or as `::ffff:a.b.c.d` with `mapped_v4`).
    pub fn push_json_value(out: &mut String, col: &Column, i: usize, mapped_v4: bool) {
        if let Some(v) = col.numbers() {
            out.push_str(&v.get(i).copied().unwrap_or(0).to_string());
        } else if let Some(a) = col.addrs() {
            let text = a
                .get(i)
                .map(|ip| {
                    if mapped_v4 {
                        std::net::Ipv6Addr::from((u128::from(ip.hi) << 64) | u128::from(ip.lo))
                            .to_string()
                    } else {
                        crate::ip(ip.hi, ip.lo).to_string()
                    }
                })
                .unwrap_or_default();
            crate::push_json_str(out, &text);
        } else {
            crate::push_json_str(out, col.text(i).unwrap_or(""));
        }
    }

    /// Appends flow `i` as one JSON object and a newline: `head` (members already written,
    /// e.g. `"Node":"a"`, or empty) then each `names[k]` with its value from `cols[k]` (see
    /// [`push_json_value`]).
    pub fn push_json_line(
        out: &mut String,
        head: &str,
        names: &[String],
        cols: &[Column],
        i: usize,
        mapped_v4: bool,
    ) {
        out.push('{');
        out.push_str(head);
        for (k, (name, col)) in names.iter().zip(cols).enumerate() {
            if k > 0 || !head.is_empty() {
                out.push(',');
            }
            crate::push_json_str(out, name);
            out.push(':');
            push_json_value(out, col, i, mapped_v4);
        }
        out.push_str("}\n");
    }

    /// Lines gathered into payloads of at most `max` bytes (cut at line ends; a longer line
    /// goes alone), each sent to `dest` as soon as the next line would not fit.
    pub struct LinePayloads {
        dest: String,
        max: usize,
        buf: String,
    }

    impl LinePayloads {
        pub fn new(dest: String, max: usize) -> Self {
            LinePayloads {
                dest,
                max,
                buf: String::new(),
            }
        }

        /// Adds one line (with its `\n`).
        pub fn push(&mut self, line: &str) -> Result<(), PluginError> {
            if !self.buf.is_empty() && self.buf.len() + line.len() > self.max {
                self.flush()?;
            }
            self.buf.push_str(line);
            Ok(())
        }

        /// Sends what is gathered.
        pub fn flush(&mut self) -> Result<(), PluginError> {
            if !self.buf.is_empty() {
                sink::send(&self.dest, self.buf.as_bytes()).map_err(PluginError::Failed)?;
                self.buf.clear();
            }
            Ok(())
        }
    }

    /// The sink to send to: config `sink`, else the first destination granted.
    pub fn destination() -> Result<String, PluginError> {
        match config::get("sink") {
            Some(s) => Ok(s),
            None => sink::destinations().into_iter().next().ok_or_else(|| {
                PluginError::InvalidInput(
                    "no sink to send to: the operator names them with `weir agent --sink <name>=<url>`"
                        .into(),
                )
            }),
        }
    }
}

/// An IP protocol number as a short name (`tcp`, `udp`, `sctp`, else `ipN`).
pub fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => format!("ip{n}"),
    }
}

/// An address from its WIT form (IPv4-mapped addresses become IPv4).
pub fn ip(hi: u64, lo: u64) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo));
    match v6.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(v6),
    }
}

/// Appends `s` to `out` as a JSON string (quotes and escapes).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
