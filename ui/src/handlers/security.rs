//! What every response carries and what every state-changing request must show.
//!
//! - Headers: a content security policy that runs only the agent's own script (no inline
//!   script, no `javascript:` URLs, no eval), loads nothing from elsewhere and cannot be framed;
//!   `nosniff`, no referrer.
//! - Origin: a browser names the page that sends a request in `Origin`. A POST, PUT, PATCH or
//!   DELETE whose Origin is not this agent (scheme-less comparison of the Origin's host and
//!   port with the request's `Host`) is refused with 403, so a web page the operator happens
//!   to visit cannot install plugins or import flows into an agent on loopback without a
//!   token. Requests without Origin (curl, the CLI, exporters) are not browsers' and pass.
//!   Behind a reverse proxy that rewrites `Host`, its `X-Forwarded-Host` is accepted too.

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The content security policy of every response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'";

pub async fn headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

pub async fn same_origin(req: Request, next: Next) -> Response {
    if matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return next.run(req).await;
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return next.run(req).await;
    };
    let origin = origin.to_str().unwrap_or("(not text)");
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // Behind a reverse proxy that rewrites Host, the host the browser used is forwarded.
    let forwarded = req
        .headers()
        .get("x-forwarded-host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if authority(origin).is_some_and(|a| {
        [host, forwarded]
            .iter()
            .any(|h| !h.is_empty() && a.eq_ignore_ascii_case(h))
    }) {
        return next.run(req).await;
    }
    ApiError::forbidden(format!(
        "cross-site request refused: {} {} from a page at Origin '{origin}', not this agent \
         (Host '{host}'); open the agent's own UI, or send the request without an Origin header",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

/// `host[:port]` of an Origin (`scheme://host[:port]`), with the scheme's default port
/// dropped as a Host header drops it.
fn authority(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    Some(match scheme {
        "http" => rest.strip_suffix(":80").unwrap_or(rest),
        "https" => rest.strip_suffix(":443").unwrap_or(rest),
        _ => rest,
    })
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn origins_reduce_to_what_host_says() {
        assert_eq!(authority("http://127.0.0.1:9977"), Some("127.0.0.1:9977"));
        assert_eq!(authority("http://weir.example:80"), Some("weir.example"));
        assert_eq!(authority("https://[::1]:443"), Some("[::1]"));
        assert_eq!(authority("null"), None);
        assert_eq!(authority("http://a/b"), None);
    }
}
