//! Running an installed plugin on request, JSON in and out (the API's
//! `POST /api/v1/plugins/{name}/run` and `weir plugin run`). The request's shape depends on the
//! plugin's kind; every field has a default, unknown fields are refused by name.

use crate::HostError;
use crate::batch::FlowBatch;
use crate::bindings::types as wit;
use crate::manifest::Kind;
use crate::registry::Registry;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use weir_core::plugins::{PluginRunner, RunError};
use weir_core::query::{self, SortBy, TimeRange, now_ms};
use weir_core::store::ListRequest;

/// Default window: the last five minutes.
const DEFAULT_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Most flows a flow-processor, correlator or summarizer run reads from the store.
const MAX_RUN_FLOWS: usize = 100_000;

/// Everything a run request may carry; which fields matter depends on the kind.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RunRequest {
    /// Window start and end, Unix ms (default: the last five minutes).
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    /// Filter (the query language) for the flows a batch-taking plugin gets, or the one a
    /// visualization is asked to draw.
    filter: String,
    /// visualization parameters.
    params: BTreeMap<String, String>,
    /// decoder input (text) and its content type.
    input: Option<String>,
    content_type: Option<String>,
    /// correlator events.
    events: Vec<EventJson>,
    /// summarizer: a query; when `update` is set the window's flows are folded in first.
    query: String,
    update: bool,
    /// summarizer: query only the kept window starting at this time (ms); absent: every
    /// kept window merged.
    window_start_ms: Option<u64>,
    /// flow-processor and correlator: also keep the annotations in the records store (kind
    /// `annotation`, under the plugin's name), as a background run does; default: only
    /// returned.
    keep: bool,
    /// Labels added to each annotation kept (say what asked for the run).
    keep_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventJson {
    time_ms: u64,
    #[serde(default)]
    source: String,
    text: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn pairs(m: &BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn labels_json(l: &[(String, String)]) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// A view as the UI draws it: `{"type": "sankey" | "chord" | ..., ...}`.
pub fn view_json(v: &wit::View) -> Value {
    match v {
        wit::View::Sankey(s) => json!({
            "type": "sankey",
            "unit": s.unit,
            "nodes": s.nodes.iter().map(|n| json!({"id": n.id, "label": n.label, "column": n.column})).collect::<Vec<_>>(),
            "links": s.links.iter().map(|l| json!({"source": l.source, "target": l.target, "value": l.value})).collect::<Vec<_>>(),
        }),
        wit::View::Chord(c) => {
            json!({"type": "chord", "unit": c.unit, "labels": c.labels, "matrix": c.matrix})
        }
        wit::View::Graph(g) => json!({
            "type": "graph",
            "nodes": g.nodes.iter().map(|n| json!({"id": n.id, "label": n.label, "weight": n.weight, "attributes": labels_json(&n.attributes)})).collect::<Vec<_>>(),
            "edges": g.edges.iter().map(|e| json!({"source": e.source, "target": e.target, "weight": e.weight, "attributes": labels_json(&e.attributes)})).collect::<Vec<_>>(),
        }),
        wit::View::Table(t) => json!({"type": "table", "columns": t.columns, "rows": t.rows}),
        wit::View::Timeseries(t) => json!({
            "type": "timeseries",
            "unit": t.unit,
            "series": t.series.iter().map(|s| json!({"name": s.name, "points": s.points})).collect::<Vec<_>>(),
        }),
        wit::View::Svg(s) => json!({"type": "svg", "svg": s}),
    }
}

pub fn alert_json(a: &wit::Alert) -> Value {
    let severity = severity_name(a.severity);
    json!({"name": a.name, "severity": severity, "summary": a.summary, "labels": labels_json(&a.labels), "time_ms": a.time_ms})
}

pub fn sample_json(s: &wit::MetricSample) -> Value {
    let kind = match s.kind {
        wit::MetricKind::Counter => "counter",
        wit::MetricKind::Gauge => "gauge",
        wit::MetricKind::Histogram => "histogram",
    };
    json!({"name": s.name, "kind": kind, "labels": labels_json(&s.labels), "value": s.value})
}

pub fn annotation_json(a: &wit::Annotation) -> Value {
    json!({"time_ms": a.time_ms, "text": a.text, "labels": labels_json(&a.labels), "flow_filter": a.flow_filter})
}

/// Keeps a run's annotations when asked (`"keep": true`, with its `keep_labels`); how many
/// were kept.
fn keep(
    p: &crate::plugin::Plugin,
    req: &RunRequest,
    annotations: &[wit::Annotation],
) -> Result<usize, RunError> {
    if !req.keep || annotations.is_empty() {
        return Ok(0);
    }
    p.keep_annotations(annotations, &pairs(&req.keep_labels))
        .map_err(|e| RunError::Failed(format!("keeping the annotations: {e}")))
}

fn host_err(e: HostError) -> RunError {
    match e {
        HostError::Plugin { .. } | HostError::WrongKind { .. } => {
            RunError::BadRequest(e.to_string())
        }
        HostError::Busy { .. } => RunError::Busy(e.to_string()),
        HostError::Name(_) => RunError::BadRequest(e.to_string()),
        e => RunError::Failed(e.to_string()),
    }
}

impl RunRequest {
    fn window(&self) -> Result<TimeRange, RunError> {
        let to = self.to_ms.unwrap_or_else(now_ms);
        let from = self
            .from_ms
            .unwrap_or_else(|| to.saturating_sub(DEFAULT_WINDOW_MS));
        if from > to {
            return Err(RunError::BadRequest(format!(
                "from_ms {from} is after to_ms {to}"
            )));
        }
        Ok(TimeRange {
            from_ms: from,
            to_ms: to,
        })
    }
}

impl Registry {
    /// The window's flows (newest first, at most [`MAX_RUN_FLOWS`]) as a batch.
    fn batch_of(&self, req: &RunRequest) -> Result<FlowBatch, RunError> {
        let store = self.flows().ok_or_else(|| {
            RunError::BadRequest("this plugin needs stored flows and the agent has none".into())
        })?;
        let filter =
            query::parse(&req.filter).map_err(|e| RunError::BadRequest(format!("filter: {e}")))?;
        let list = ListRequest {
            filter,
            range: req.window()?,
            sort: SortBy::parse("-TimeFlowEndMs").map_err(|e| RunError::Failed(e.to_string()))?,
            limit: MAX_RUN_FLOWS,
            offset: 0,
        };
        let res = store
            .list(&list)
            .map_err(|e| RunError::Failed(e.to_string()))?;
        Ok(FlowBatch::new(&res.flows))
    }

    /// The loaded plugin `name`, or why not.
    fn loaded_named(&self, name: &str) -> Result<std::sync::Arc<crate::Plugin>, RunError> {
        weir_core::plugins::check_plugin_name(name)
            .map_err(|e| RunError::BadRequest(e.to_string()))?;
        self.get(name).ok_or_else(|| {
            RunError::NotFound(format!(
                "no loaded plugin named '{name}' (see GET /api/v1/plugins)"
            ))
        })
    }
}

impl weir_core::plugins::RuleEvaluator for Registry {
    fn alert_rules(&self) -> Vec<weir_core::plugins::RuleInfo> {
        self.list()
            .into_iter()
            .filter(|l| l.installed.manifest.kind == Kind::AlertRule && l.installed.enabled)
            .map(|l| {
                let unavailable = match (&l.load_error, &l.loaded) {
                    (Some(e), _) => Some(format!("not loaded: {e}")),
                    (None, Some(info)) => match &info.state {
                        crate::PluginState::Enabled => None,
                        crate::PluginState::Disabled(r) => {
                            Some(format!("disabled by the agent: {r}"))
                        }
                    },
                    (None, None) => Some("plugin is not loaded".to_string()),
                };
                weir_core::plugins::RuleInfo {
                    name: l.installed.manifest.name.clone(),
                    config: l.installed.config.clone(),
                    unavailable,
                }
            })
            .collect()
    }

    fn evaluate_rule(
        &self,
        name: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<weir_core::alerts::Observed>, RunError> {
        // A plugin of another kind answers `WrongKind` (a bad request) itself.
        let alerts = self
            .loaded_named(name)?
            .evaluate(wit::TimeRange { from_ms, to_ms })
            .map_err(host_err)?;
        Ok(alerts
            .into_iter()
            .map(|a| weir_core::alerts::Observed {
                severity: severity_name(a.severity).to_string(),
                name: a.name,
                summary: a.summary,
                labels: a.labels.into_iter().collect(),
            })
            .collect())
    }
}

fn severity_name(s: wit::Severity) -> &'static str {
    match s {
        wit::Severity::Info => "info",
        wit::Severity::Warning => "warning",
        wit::Severity::Critical => "critical",
    }
}

impl PluginRunner for Registry {
    fn summary_snapshot(&self, name: &str) -> Result<Vec<u8>, RunError> {
        self.loaded_named(name)?
            .summary_snapshot()
            .map_err(host_err)
    }

    fn merge_summary(&self, name: &str, snapshot: &[u8]) -> Result<(), RunError> {
        self.loaded_named(name)?
            .merge_summary(snapshot)
            .map_err(host_err)
    }

    fn run_cancellable(
        &self,
        name: &str,
        request: &Value,
        cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Value, RunError> {
        crate::deadline::on_behalf(cancel, || self.run(name, request))
    }

    fn run(&self, name: &str, request: &Value) -> Result<Value, RunError> {
        let p = self.loaded_named(name)?;
        let req: RunRequest = serde_json::from_value(request.clone())
            .map_err(|e| RunError::BadRequest(format!("run request: {e}")))?;
        let kind = p.manifest().kind;
        let out = match kind {
            Kind::AlertRule => {
                let w = req.window()?;
                let alerts = p
                    .evaluate(wit::TimeRange {
                        from_ms: w.from_ms,
                        to_ms: w.to_ms,
                    })
                    .map_err(host_err)?;
                json!({"alerts": alerts.iter().map(alert_json).collect::<Vec<_>>()})
            }
            Kind::Check => {
                let w = req.window()?;
                let v = p
                    .check(wit::TimeRange {
                        from_ms: w.from_ms,
                        to_ms: w.to_ms,
                    })
                    .map_err(host_err)?;
                json!({
                    "pass": v.pass,
                    "summary": v.summary,
                    "table": {"columns": v.table.columns, "rows": v.table.rows},
                })
            }
            Kind::Visualization => {
                let w = req.window()?;
                let view = p
                    .render(&wit::RenderRequest {
                        params: pairs(&req.params),
                        filter: req.filter.clone(),
                        range: wit::TimeRange {
                            from_ms: w.from_ms,
                            to_ms: w.to_ms,
                        },
                    })
                    .map_err(host_err)?;
                json!({"view": view_json(&view)})
            }
            Kind::FlowProcessor => {
                let batch = self.batch_of(&req)?;
                let out = p.process(&batch).map_err(host_err)?;
                let kept = keep(&p, &req, &out.annotations)?;
                json!({
                    "kept": kept,
                    "flows": batch.len(),
                    "samples": out.samples.iter().map(sample_json).collect::<Vec<_>>(),
                    "annotations": out.annotations.iter().map(annotation_json).collect::<Vec<_>>(),
                })
            }
            Kind::Correlator => {
                let batch = self.batch_of(&req)?;
                let events: Vec<wit::Event> = req
                    .events
                    .iter()
                    .map(|e| wit::Event {
                        time_ms: e.time_ms,
                        source: e.source.clone(),
                        text: e.text.clone(),
                        labels: pairs(&e.labels),
                    })
                    .collect();
                let out = p.correlate(&batch, &events).map_err(host_err)?;
                let kept = keep(&p, &req, &out)?;
                json!({"flows": batch.len(), "kept": kept, "annotations": out.iter().map(annotation_json).collect::<Vec<_>>()})
            }
            Kind::Decoder => {
                let input = req.input.as_deref().ok_or_else(|| {
                    RunError::BadRequest("a decoder run needs \"input\" (text)".into())
                })?;
                let ct = req.content_type.as_deref().unwrap_or("text/plain");
                let records = p.decode(input.as_bytes(), ct).map_err(host_err)?;
                json!({"records": records.iter().map(|d| labels_json(&d.fields)).collect::<Vec<_>>()})
            }
            Kind::Exporter => {
                let batch = self.batch_of(&req)?;
                p.export(&batch).map_err(host_err)?;
                json!({"flows": batch.len(), "exported": true})
            }
            Kind::Summarizer => {
                let mut flows = 0;
                if req.update {
                    let batch = self.batch_of(&req)?;
                    flows = batch.len();
                    p.summarize(&batch).map_err(host_err)?;
                }
                let view = p
                    .query_summary_window(req.window_start_ms, &req.query)
                    .map_err(host_err)?;
                let windows = p.summary_windows();
                json!({
                    "flows": flows,
                    "snapshot_bytes": p.summary_snapshot().map_err(host_err)?.len(),
                    "windows": windows.len(),
                    "window_secs": p.manifest().summarizer.window_secs,
                    "window_list": windows.iter().map(|(start, bytes)| json!({"start_ms": start, "bytes": bytes})).collect::<Vec<_>>(),
                    "view": view_json(&view),
                })
            }
        };
        Ok(json!({"plugin": name, "kind": kind.world(), "result": out}))
    }
}
