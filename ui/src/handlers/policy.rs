//! /api/v1/policy: Kubernetes network policies over the live cluster (when the agent watches
//! one) and/or YAML sent in the request: the description (what selects what), truth tables,
//! one connection explained, and the what-if replay of stored flows against proposed policies.
//!
//! Files travel as `[{"name": "np.yaml", "text": "..."}]`, so every problem names its file and
//! line; problems come back in `problems` beside the answer (the other objects are evaluated),
//! and what was read but most likely is not meant (a named port no pod declares) in `warnings`.

use super::blocking;
use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use weir_core::policy::{Findings, Objects, PolicyError, PolicyService, PortProto, table, whatif};
use weir_core::query::{TimeRange, now_ms};

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Invalid(m) | PolicyError::File(m) => ApiError::bad_request("body", m),
            PolicyError::Engine(_) => ApiError::plugin_failed(e.to_string()),
            PolicyError::Store(s) => ApiError::unavailable(s.to_string()),
        }
    }
}

fn service(st: &AppState) -> Result<Arc<PolicyService>, ApiError> {
    st.policy
        .clone()
        .ok_or_else(|| ApiError::unavailable("this agent has no policy engine"))
}

/// A file sent in a request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    name: String,
    text: String,
}

fn objects(files: &[File]) -> Objects {
    let mut o = Objects::default();
    for f in files {
        o.add_text(&f.name, &f.text);
    }
    o
}

/// The objects a request evaluates: the live ones (unless `live` is false) then its files.
fn gather(svc: &PolicyService, live: bool, files: &[File]) -> Objects {
    let mut o = if live {
        svc.live_objects()
    } else {
        Objects::default()
    };
    o.extend(objects(files));
    o
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalBody {
    #[serde(default)]
    files: Vec<File>,
    /// Include the live objects (default true).
    #[serde(default = "default_true")]
    live: bool,
    /// `table`: `80/TCP`...
    #[serde(default)]
    ports: Vec<String>,
    /// `describe`: one pod (`ns/name`) with its effective peers.
    #[serde(default)]
    pod: Option<String>,
    /// `explain`.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    port: Option<String>,
}

fn port(s: &str, at: &str) -> Result<PortProto, ApiError> {
    s.parse().map_err(|e: String| ApiError::bad_request(at, e))
}

/// `POST /api/v1/policy/describe`: every policy and every pod.
pub async fn describe(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: EvalBody = super::json_object(&body)?;
    let svc = service(&st)?;
    blocking(move || {
        let o = gather(&svc, b.live, &b.files);
        let (mut v, found) = weir_core::policy::describe(&*svc.engine()?, &o, b.pod.as_deref())?;
        beside(&mut v, found);
        Ok(Json(v))
    })
    .await
}

/// The engine's problems and warnings, beside its answer.
fn beside(v: &mut Value, found: Findings) {
    v["problems"] = json!(found.problems);
    v["warnings"] = json!(found.warnings);
}

/// `POST /api/v1/policy/table`: the truth table per port.
pub async fn truth_table(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: EvalBody = super::json_object(&body)?;
    let svc = service(&st)?;
    let mut ports = b
        .ports
        .iter()
        .map(|p| port(p, "ports"))
        .collect::<Result<Vec<_>, _>>()?;
    if ports.is_empty() {
        ports.push(port("80/TCP", "ports")?);
    }
    blocking(move || {
        let o = gather(&svc, b.live, &b.files);
        let (t, found) = table::simulate(&*svc.engine()?, &o, &ports, false)?;
        let mut v = t.json();
        beside(&mut v, found);
        Ok(Json(v))
    })
    .await
}

/// `POST /api/v1/policy/explain`: one connection's verdict and what decided it.
pub async fn explain(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: EvalBody = super::json_object(&body)?;
    let svc = service(&st)?;
    if b.from.is_empty() || b.to.is_empty() {
        return Err(ApiError::bad_request(
            "from",
            "explain needs from and to (ns/pod or an address)",
        ));
    }
    let p = port(b.port.as_deref().unwrap_or("80/TCP"), "port")?;
    blocking(move || {
        let o = gather(&svc, b.live, &b.files);
        let (mut v, found) = weir_core::policy::explain(&*svc.engine()?, &o, &b.from, &b.to, p)?;
        beside(&mut v, found);
        Ok(Json(v))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatifBody {
    /// The proposed policies.
    proposed: Vec<File>,
    /// The current policies (default: the live ones; none: everything observed was allowed).
    #[serde(default)]
    current: Option<Vec<File>>,
    /// Namespaces and Pods (default: the live ones).
    #[serde(default)]
    cluster: Vec<File>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    filter: String,
}

/// `POST /api/v1/policy/whatif`: stored conversations under the proposed policies.
pub async fn whatif_run(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: WhatifBody = super::json_object(&body)?;
    let svc = service(&st)?;
    if b.proposed.is_empty() {
        return Err(ApiError::bad_request(
            "proposed",
            "no proposed policy files",
        ));
    }
    let range = TimeRange::parse(
        Some(b.from.as_deref().unwrap_or("-7d")),
        b.to.as_deref(),
        now_ms(),
    )
    .map_err(|e| ApiError::query("from", e))?;
    let filter = weir_core::query::parse(&b.filter).map_err(|e| ApiError::query("filter", e))?;
    let store = st.store.clone();
    blocking(move || {
        let live = svc.live_objects();
        let cluster = if b.cluster.is_empty() {
            live.without_policies()
        } else {
            objects(&b.cluster).without_policies()
        };
        let mut proposed = cluster.clone();
        proposed.extend(objects(&b.proposed));
        let current = match &b.current {
            Some(files) => {
                let mut c = cluster.clone();
                c.extend(objects(files));
                Some(c)
            }
            None if svc.live.is_some() => Some(live),
            None => None,
        };
        let report = whatif::run(
            &*svc.engine()?,
            &store,
            &filter,
            &range,
            &proposed,
            current.as_ref(),
        )?;
        let mut v =
            serde_json::to_value(&report).map_err(|e| ApiError::unavailable(e.to_string()))?;
        v["compared_with"] = json!(match (&b.current, svc.live.is_some()) {
            (Some(_), _) => "current files",
            (None, true) => "live policies",
            (None, false) => "observed (every observed connection counts as allowed now)",
        });
        Ok(Json(v))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodBody {
    /// `ns/name`.
    pod: String,
    #[serde(default)]
    files: Vec<File>,
    #[serde(default = "default_true")]
    live: bool,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

/// `POST /api/v1/policy/pod`: one pod's observed conversations judged by its policies, the
/// allowed ingress paths it never used, and a least-privilege suggestion (YAML).
pub async fn pod_view(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: PodBody = super::json_object(&body)?;
    let svc = service(&st)?;
    let range = TimeRange::parse(
        Some(b.from.as_deref().unwrap_or("-7d")),
        b.to.as_deref(),
        now_ms(),
    )
    .map_err(|e| ApiError::query("from", e))?;
    let store = st.store.clone();
    blocking(move || {
        let o = gather(&svc, b.live, &b.files);
        let v = weir_core::policy::observed::pod_view(&*svc.engine()?, &o, &store, &range, &b.pod)?;
        Ok(Json(
            serde_json::to_value(&v).map_err(|e| ApiError::unavailable(e.to_string()))?,
        ))
    })
    .await
}
