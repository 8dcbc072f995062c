//! The access token: required on every `/api/v1` request when the agent has one. A client
//! address that sends too many wrong ones is answered 429 for a while ([`crate::limits`]).

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

pub async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        return next.run(req).await;
    };
    let ip = super::limits::client_ip(req.extensions());
    if let Some(left) = ip.and_then(|ip| st.clients.locked_out(ip)) {
        st.clients
            .refused
            .locked_out
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return super::limits::too_many(
            format!(
                "too many wrong access tokens from this address: try again in {} s",
                left.as_secs().max(1)
            ),
            left,
        );
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => {
            if let Some(ip) = ip {
                st.clients.wrong_token(ip);
                tracing::warn!(client = %ip, "a request with a wrong access token");
            }
            unauthorized("the access token is wrong")
        }
        None => unauthorized(
            "this agent needs an access token: send `Authorization: Bearer <token>` (weir --token, or the login form)",
        ),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::unauthorized(message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"weir\""),
    );
    r
}
