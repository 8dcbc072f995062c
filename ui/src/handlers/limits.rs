//! Per-request limits ([`crate::limits`]): requests in progress per client (429 beyond) and
//! the request timeout (408; the body's upload counts, a streamed response does not).

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The client's address, when the request came through [`crate::serve`] (tests calling the
/// router directly have none and are not limited).
pub fn client_ip(ext: &Extensions) -> Option<IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// A 429 telling the client when to come back.
pub fn too_many(message: String, retry_after: Duration) -> Response {
    let mut r = ApiError::busy(message).into_response();
    let secs = retry_after.as_secs().max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

pub async fn per_request(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let clients = &st.clients;
    let Ok(_slot) = client_ip(req.extensions())
        .map(|ip| clients.request(ip))
        .transpose()
    else {
        return too_many(
            format!(
                "this client has {} requests in progress, the most one client may have (--max-requests-per-client): wait for some to finish",
                clients.limits.requests_per_client
            ),
            Duration::from_secs(1),
        );
    };
    let limit = clients.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            clients.refused.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                timeout_ms = limit.as_millis() as u64,
                "a request took longer than the request timeout: answered 408"
            );
            ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                kind: "timeout",
                message: format!(
                    "the request (its upload included) took longer than {} ms, the most this agent gives one (--request-timeout): narrow the query or send a smaller body",
                    limit.as_millis()
                ),
                parameter: None,
                position: None,
            }
            .into_response()
        }
    }
}
