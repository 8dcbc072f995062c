//! Status, schema, health and the capture controls.

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};
use weir_core::metrics::Sample;
use weir_core::schema::{EITHER_SIDE, FIELDS, FieldKind};

/// `GET /api/v1/status`
pub async fn status(State(st): State<AppState>) -> Json<Value> {
    let store = st.store.clone();
    let storage = tokio::task::spawn_blocking(move || store.status())
        .await
        .ok();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": st.started.elapsed().as_secs(),
        "capture": st.capture.as_ref().map(|c| c.status()),
        "ingest": st.ingest.snapshot(),
        "storage": storage,
        // Where the flow API reads: this node's store, or the cluster's ClickHouse.
        "flows_from": st.flows.describe(),
        "enrichment": st.enricher.as_ref().map(|e| e.status()),
        "ovs": st.ovs.as_ref().map(|o| o.status()),
        "storage_sampling": st.sampling.as_ref().map(|s| s.status()),
        "summary_exchange": st.summary_exchange.as_ref().map(|s| s.status()),
        // Connections open, and what the HTTP limits refused.
        "http": st.clients.status(),
        // Set when the agent replays an incident (read-only, clock pinned to its end).
        "replay": st.read_only.as_ref().map(|what| json!({
            "incident": what.as_ref(),
            "clock_ms": weir_core::query::pinned_ms(),
        })),
    }))
}

/// `GET /api/v1/openapi.json`: the description of /api/v1 ([`crate::openapi`]).
pub async fn openapi(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_text(st.token.is_some()),
    )
}

/// `GET /api/v1/fields`: the flow fields, for completion and docs.
pub async fn fields() -> Json<Value> {
    let fields: Vec<Value> = FIELDS
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": match f.kind { FieldKind::U64 => "number", FieldKind::Ip => "ip", FieldKind::Str => "string" },
                "indexed": f.indexed,
                "doc": f.doc,
            })
        })
        .collect();
    let either: Vec<Value> = EITHER_SIDE
        .iter()
        .map(|(n, a, b)| json!({ "name": n, "matches": [a, b] }))
        .collect();
    Json(json!({ "fields": fields, "either_side": either }))
}

/// `POST /api/v1/capture/flush`: evict every flow from the kernel maps now.
pub async fn flush(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let Some(cap) = st.capture.clone() else {
        return Err(ApiError::unavailable("capture is off in this agent"));
    };
    tokio::task::spawn_blocking(move || cap.flush())
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(Json(json!({ "flushed": true })))
}

/// `GET /api/v1/capture/filters`: the operator's in-kernel filter rules (what PUT replaces);
/// plugins' rules follow them, and the status lists all in force.
pub async fn filters(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let Some(cap) = st.capture.clone() else {
        return Err(ApiError::unavailable("capture is off in this agent"));
    };
    Ok(Json(json!({ "rules": cap.filters() })))
}

/// `PUT /api/v1/capture/filters` with `{"rules": [...]}` (or a bare list): replaces the
/// in-kernel filter rules on live traffic, without reloading programs. A bad rule is refused
/// with its number and the bad part; the rules in force stay.
pub async fn set_filters(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(cap) = st.capture.clone() else {
        return Err(ApiError::unavailable("capture is off in this agent"));
    };
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("body", format!("body is not JSON: {e}")))?;
    let list = match v {
        Value::Object(mut o) => o.remove("rules").ok_or_else(|| {
            ApiError::bad_request("body", "expected {\"rules\": [...]} or a list of rules")
        })?,
        other => other,
    };
    let Value::Array(items) = list else {
        return Err(ApiError::bad_request("rules", "rules must be a list"));
    };
    let mut rules = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let r: weir_core::capture::FilterRule = match item {
            Value::String(text) => weir_core::capture::FilterRule::parse(&text)
                .map_err(|e| ApiError::bad_request("rules", format!("rule {}: {e}", i + 1)))?,
            // An object only: serde would also read an array as the fields in order.
            obj @ Value::Object(_) => serde_json::from_value(obj)
                .map_err(|e| ApiError::bad_request("rules", format!("rule {}: {e}", i + 1)))?,
            other => {
                return Err(ApiError::bad_request(
                    "rules",
                    format!(
                        "rule {}: a rule is an object or a text like \"reject cidr=10.0.0.0/8\", not {other}",
                        i + 1
                    ),
                ));
            }
        };
        rules.push(r);
    }
    let applied = rules.clone();
    tokio::task::spawn_blocking(move || cap.set_filters(rules))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| ApiError::bad_request("rules", e))?;
    Ok(Json(json!({ "rules": applied })))
}

/// `GET /metrics`: flow metrics and the agent's health in the Prometheus text format, or
/// OpenMetrics when the scraper asks for it (`Accept: application/openmetrics-text`).
pub async fn metrics(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let Some(m) = st.metrics.clone() else {
        return Err(ApiError::unavailable("metrics are off in this agent"));
    };
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let text = super::blocking(move || {
        let extra = health_samples(&st);
        Ok(m.render(openmetrics, &extra))
    })
    .await?;
    let ctype = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    Ok(([(header::CONTENT_TYPE, ctype)], text).into_response())
}

/// The agent's own health, computed at scrape time.
fn health_samples(st: &AppState) -> Vec<Sample> {
    let mut out = Vec::new();
    let counter = |name, help, labels, value: u64| Sample {
        name,
        help,
        counter: true,
        labels,
        value: value as f64,
    };
    if let Some(cap) = &st.capture {
        for (k, v) in cap.status().counters {
            out.push(counter(
                "weir_capture_events",
                "Capture events: flows evicted, skbs sampled out, map full, ring buffer losses, drops and RTT samples attached, DNS payloads, duplicates merged (see docs/ARCHITECTURE.md).",
                vec![("event", k)],
                v,
            ));
        }
    }
    let i = st.ingest.snapshot();
    for (k, v) in [
        ("flows", i.flows),
        ("offered", i.offered),
        ("batches", i.batches),
        ("flushes", i.flushes),
        ("errors", i.errors),
    ] {
        out.push(counter(
            "weir_ingest",
            "Ingest stage: flows stored and offered (before storage sampling), batches, flushes, errors.",
            vec![("what", k.to_string())],
            v,
        ));
    }
    let s = st.store.status();
    for (name, help, v) in [
        (
            "weir_store_bytes",
            "Bytes the store takes on disk.",
            s.bytes,
        ),
        ("weir_store_flows", "Flows held by the store.", s.flows),
        (
            "weir_store_partitions",
            "Time partitions held by the store.",
            s.partitions.len() as u64,
        ),
    ] {
        out.push(Sample {
            name,
            help,
            counter: false,
            labels: Vec::new(),
            value: v as f64,
        });
    }
    if let Some(p) = &st.plugins {
        for entry in p.list().as_array().into_iter().flatten() {
            let name = entry["installed"]["manifest"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let info = &entry["loaded"];
            out.push(counter(
                "weir_plugin_calls",
                "Calls into a plugin.",
                vec![("plugin", name.clone())],
                info["calls"].as_u64().unwrap_or(0),
            ));
            out.push(counter(
                "weir_plugin_failures",
                "Plugin calls that failed (trap, timeout, memory, error).",
                vec![("plugin", name.clone())],
                info["failures"].as_u64().unwrap_or(0),
            ));
            out.push(Sample {
                name: "weir_plugin_call_seconds",
                help: "Time spent in a plugin's calls (divide its rate by the calls' rate for the mean latency).",
                counter: true,
                labels: vec![("plugin", name.clone())],
                value: info["busy_seconds"].as_f64().unwrap_or(0.0),
            });
            out.push(Sample {
                name: "weir_plugin_max_call_seconds",
                help: "The longest call into a plugin since it was loaded.",
                counter: false,
                labels: vec![("plugin", name.clone())],
                value: info["max_call_seconds"].as_f64().unwrap_or(0.0),
            });
            // An exporter's feed: what it sent, what it is behind, how it fails.
            let feed = &entry["export"];
            if feed.is_object() {
                for (what, v) in [
                    ("flows", &feed["exported_flows"]),
                    ("batches", &feed["exported_batches"]),
                    ("failures", &feed["failures"]),
                ] {
                    out.push(counter(
                        "weir_export",
                        "An exporter's feed: flows and batches exported, failed calls.",
                        vec![("plugin", name.clone()), ("what", what.to_string())],
                        v.as_u64().unwrap_or(0),
                    ));
                }
                for (metric, help, v) in [
                    (
                        "weir_export_behind_flows",
                        "Flows stored and durable that an exporter has not exported yet (its backlog).",
                        &feed["behind"],
                    ),
                    (
                        "weir_export_failing_calls",
                        "Failed export calls in a row (0 when the last one succeeded).",
                        &feed["failing"],
                    ),
                ] {
                    out.push(Sample {
                        name: metric,
                        help,
                        counter: false,
                        labels: vec![("plugin", name.clone())],
                        value: v.as_f64().unwrap_or(0.0),
                    });
                }
            }
        }
    }
    if let Some(s) = &st.sampling {
        const FLOWS: (&str, &str) = (
            "weir_storage_sampling_flows",
            "Storage sampling per class (guards keep:*, plugins' rules, other): flows offered and kept; shadow=true counts what shadow rules would keep.",
        );
        const BYTES: (&str, &str) = (
            "weir_storage_sampling_bytes",
            "Storage sampling per class: bytes offered, and bytes of the kept flows scaled back (their difference is the sampling error).",
        );
        for c in s.stats() {
            for ((name, help), what, v) in [
                (FLOWS, "offered", c.counters.offered_flows),
                (FLOWS, "kept", c.counters.kept_flows),
                (BYTES, "offered", c.counters.offered_bytes),
                (BYTES, "kept_scaled", c.counters.kept_scaled_bytes),
            ] {
                let labels = vec![
                    ("class", c.class.clone()),
                    ("shadow", c.shadow.to_string()),
                    ("what", what.to_string()),
                ];
                out.push(counter(name, help, labels, v));
            }
        }
    }
    if let Some(a) = &st.alerts {
        let mut by: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for al in a.active() {
            let state = serde_json::to_value(al.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            *by.entry((state, al.severity)).or_default() += 1;
        }
        for ((state, severity), n) in by {
            out.push(Sample {
                name: "weir_alerts",
                help: "Active alerts by state (pending, firing) and severity.",
                counter: false,
                labels: vec![("state", state), ("severity", severity)],
                value: n as f64,
            });
        }
        out.push(Sample {
            name: "weir_alert_notifications_queued",
            help: "Alert notifications waiting for delivery.",
            counter: false,
            labels: Vec::new(),
            value: a.queued() as f64,
        });
        out.push(counter(
            "weir_alert_notifications_given_up",
            "Alert notifications given up (undelivered for a day, or refused 5 times).",
            Vec::new(),
            a.given_up(),
        ));
        out.push(Sample {
            name: "weir_alert_rules_failing",
            help: "Alert rules whose last evaluation failed.",
            counter: false,
            labels: Vec::new(),
            value: a.rule_errors().len() as f64,
        });
    }
    out.push(Sample {
        name: "weir_uptime_seconds",
        help: "Seconds since the agent started.",
        counter: false,
        labels: Vec::new(),
        value: st.started.elapsed().as_secs_f64().floor(),
    });
    out
}

/// `GET /healthz`
pub async fn healthz() -> &'static str {
    "ok\n"
}

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// `GET /`: the web UI (embedded at build time), or how to build it.
pub async fn index() -> Response {
    match assets::INDEX_HTML {
        Some(html) => Html(html).into_response(),
        None => Html(concat!(
            "<!doctype html><html><head><meta charset=utf-8><title>weir</title></head><body>",
            "<h1>weir</h1><p>This binary was built without its web front end: run ",
            "<code>cd ui/web &amp;&amp; npm ci &amp;&amp; npm run build</code>, then build weir again ",
            "(scripts/run-agent.sh does both). The API is at <a href=/api/v1/status>/api/v1/status</a>.</p>",
            "</body></html>"
        ))
        .into_response(),
    }
}

/// `GET /assets/{file}`: the front end's script and style sheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (assets::APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (assets::APP_CSS, "text/css; charset=utf-8"),
        _ => (None, ""),
    };
    match body {
        Some(b) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            b,
        )
            .into_response(),
        None => ApiError::not_found(format!("no asset named {file}")).into_response(),
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/status, /api/v1/flows, /api/v1/fields")
}
