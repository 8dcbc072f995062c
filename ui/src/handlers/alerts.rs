//! Alerts: what is pending or firing, the history of state changes, silences, and running
//! the rules now.

use super::blocking;
use crate::AppState;
use crate::error::ApiError;
use crate::params::{Param, Params};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use weir_core::alerts::{AlertError, AlertStore};

fn store(st: &AppState) -> Result<std::sync::Arc<AlertStore>, ApiError> {
    st.alerts
        .clone()
        .ok_or_else(|| ApiError::unavailable("alerting is off in this agent (it needs plugins)"))
}

fn alert_err(e: AlertError) -> ApiError {
    match e {
        AlertError::BadRequest(m) => ApiError::bad_request("body", m),
        other => ApiError::unavailable(other.to_string()),
    }
}

/// `GET /api/v1/alerts`: pending and firing alerts, silences, queued notifications.
pub async fn list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = store(&st)?;
    blocking(move || {
        Ok(Json(json!({
            "active": s.active(),
            "silences": s.silences(),
            "queued_notifications": s.queued(),
            "given_up_notifications": s.given_up(),
            "rule_errors": s.rule_errors(),
        })))
    })
    .await
}

/// What `GET /api/v1/alerts/history` takes.
pub const HISTORY: &[Param] = &[Param::count(
    "limit",
    100,
    10_000,
    "The most state changes to answer.",
)];

/// `GET /api/v1/alerts/history?limit=`: state changes, newest first.
pub async fn history(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let s = store(&st)?;
    let limit = Params::new(q, HISTORY)?.count("limit")?;
    blocking(move || Ok(Json(json!({ "history": s.history(limit) })))).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    matchers: BTreeMap<String, String>,
    /// How long, e.g. `2h` (from now).
    duration: String,
    #[serde(default)]
    comment: String,
}

/// `POST /api/v1/alerts/silences` with `{"matchers": {"label": "value"}, "duration": "2h",
/// "comment": "..."}`.
pub async fn silence(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let s = store(&st)?;
    let b: SilenceBody = super::json_object(&body)?;
    let ms = weir_core::query::parse_duration_ms(&b.duration).ok_or_else(|| {
        ApiError::bad_request(
            "duration",
            format!("'{}' is not a duration (e.g. 30m, 2h)", b.duration),
        )
    })?;
    let now = weir_core::query::now_ms();
    blocking(move || {
        let sil = s
            .silence(b.matchers, now, now + ms, b.comment)
            .map_err(alert_err)?;
        Ok(Json(json!({ "silence": sil })))
    })
    .await
}

/// `DELETE /api/v1/alerts/silences/{id}`
pub async fn unsilence(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = store(&st)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("id", format!("'{id}' is not a silence id")))?;
    blocking(move || {
        if s.unsilence(id).map_err(alert_err)? {
            Ok(Json(json!({ "removed": id })))
        } else {
            Err(ApiError::not_found(format!("no silence {id}")))
        }
    })
    .await
}

/// `POST /api/v1/alerts/evaluate`: runs every alert rule now; answers the state changes.
pub async fn evaluate(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = store(&st)?;
    let Some(plugins) = st.plugins.clone() else {
        return Err(ApiError::unavailable("plugins are off in this agent"));
    };
    let Some(cfg) = st.alerting.clone() else {
        return Err(ApiError::unavailable("alerting is off in this agent"));
    };
    blocking(move || {
        let changed = weir_core::notify::evaluate_all(plugins.as_ref(), &s, &cfg);
        weir_core::notify::deliver_due(&s, &cfg);
        Ok(Json(json!({ "changed": changed })))
    })
    .await
}
