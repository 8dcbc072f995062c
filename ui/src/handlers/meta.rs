//! Status, schema, health and the capture controls.

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::response::Html;
use serde_json::{Value, json};
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
    }))
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

/// `GET /healthz`
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /`: a landing page until the web UI lands.
pub async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html><head><meta charset=utf-8><title>weir</title></head><body>",
        "<h1>weir</h1><p>Flow history on this node. API:</p><ul>",
        "<li><a href=/api/v1/status>/api/v1/status</a></li>",
        "<li><a href=/api/v1/flows>/api/v1/flows</a>?filter=&amp;from=&amp;to=&amp;sort=&amp;limit=&amp;offset=</li>",
        "<li><a href=/api/v1/flows/aggregate?group_by=SrcAddr,DstAddr>/api/v1/flows/aggregate</a>?group_by=&amp;metric=&amp;top=</li>",
        "<li><a href=/api/v1/flows/timeseries>/api/v1/flows/timeseries</a>?step=&amp;group_by=</li>",
        "<li>/api/v1/flows/follow?filter= (newline-delimited JSON)</li>",
        "<li><a href=/api/v1/fields>/api/v1/fields</a></li></ul></body></html>"
    ))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/status, /api/v1/flows, /api/v1/fields")
}
