//! OTLP/HTTP receivers (`POST /v1/traces`, `POST /v1/logs`: protobuf or JSON, gzip or not)
//! and trace lookups (`GET /api/v1/traces/{trace_id}`: the spans with their flows, and the
//! trace's log lines).
//!
//! Answers follow OTLP/HTTP: 200 with an empty `Export*ServiceResponse` in the request's
//! encoding; 400 with a `google.rpc.Status` naming the problem's place for a malformed body
//! (nothing of it is stored); 413 past [`OTLP_BODY_LIMIT`]; 415 for another content type; 503
//! when the agent keeps no telemetry.

use super::blocking;
use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use weir_core::telemetry::{Encoding, TelemetryError, TelemetryService};
use weir_otlp::BodyError;

/// Largest OTLP body accepted, as sent and once inflated.
pub const OTLP_BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Logs,
}

fn answer(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    let ct = match encoding {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    };
    (status, [(header::CONTENT_TYPE, ct)], body).into_response()
}

fn failure(status: StatusCode, code: i32, encoding: Encoding, message: &str) -> Response {
    answer(
        status,
        encoding,
        weir_otlp::status_body(code, message, encoding),
    )
}

async fn receive(st: AppState, headers: HeaderMap, body: Body, signal: Signal) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = Encoding::from_content_type(ct) else {
        return failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            Encoding::Json,
            &format!(
                "Content-Type '{ct}': OTLP/HTTP is application/x-protobuf or application/json"
            ),
        );
    };
    let Some(svc) = st.telemetry.clone() else {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            encoding,
            "this agent keeps no telemetry (started without a records store)",
        );
    };
    let raw = match to_bytes(body, OTLP_BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                8,
                encoding,
                &format!("body larger than {OTLP_BODY_LIMIT} bytes: send smaller batches"),
            );
        }
    };
    let ce = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let done = tokio::task::spawn_blocking(move || {
        let body = weir_otlp::decompress(&raw, ce.as_deref(), OTLP_BODY_LIMIT)?;
        Ok::<_, BodyError>(match signal {
            Signal::Traces => svc.receive_spans(&body, encoding),
            Signal::Logs => svc.receive_logs(&body, encoding),
        })
    })
    .await;
    match done {
        Ok(Ok(Ok(a))) => {
            tracing::debug!(stored = a.stored, "otlp received");
            answer(StatusCode::OK, encoding, weir_otlp::success_body(encoding))
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "otlp request refused");
            let status = match e {
                BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                BodyError::Corrupt(_) => StatusCode::BAD_REQUEST,
            };
            failure(status, 3, encoding, &e.to_string())
        }
        Ok(Ok(Err(TelemetryError::Decode(e)))) => {
            tracing::info!(error = %e, "otlp request refused");
            failure(StatusCode::BAD_REQUEST, 3, encoding, &e.to_string())
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "otlp request not stored");
            failure(
                StatusCode::SERVICE_UNAVAILABLE,
                14,
                encoding,
                &e.to_string(),
            )
        }
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            13,
            encoding,
            &e.to_string(),
        ),
    }
}

/// `POST /v1/traces`
pub async fn traces(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    receive(st, headers, body, Signal::Traces).await
}

/// `POST /v1/logs`
pub async fn logs(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    receive(st, headers, body, Signal::Logs).await
}

fn service(st: &AppState) -> Result<Arc<TelemetryService>, ApiError> {
    st.telemetry
        .clone()
        .ok_or_else(|| ApiError::unavailable("this agent keeps no telemetry"))
}

/// `GET /api/v1/traces/{trace_id}`: `{trace_id, spans: [...], logs: [...]}`, each span with
/// `flows: {matched, conversations}`.
pub async fn trace(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&st)?;
    blocking(move || {
        let (spans, logs) = svc.trace(&id).map_err(|e| match e {
            TelemetryError::Invalid(m) => ApiError::bad_request("trace_id", m),
            TelemetryError::Store(s) => ApiError::from(s),
            other => ApiError::unavailable(other.to_string()),
        })?;
        if spans.is_empty() && logs.is_empty() {
            return Err(ApiError::not_found(format!(
                "no spans or logs of trace {id} are kept"
            )));
        }
        Ok(Json(
            json!({"trace_id": id.to_ascii_lowercase(), "spans": spans, "logs": logs}),
        ))
    })
    .await
}
