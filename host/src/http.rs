//! The `outbound-http` capability: requests to the hosts in the plugin's granted scope only,
//! redirects not followed, the time bounded by the call's deadline, bodies capped; answers
//! recorded for an incident's replay, which answers from them (`crate::tape`).

use crate::bindings::imports::weir::plugin::outbound_http::{Host, Request, Response};
use crate::deadline::{HTTP_WORKERS, within_pool};
use crate::state::HostState;
use std::time::{Duration, Instant};

/// Largest response body a plugin gets; a longer one is refused.
pub const MAX_RESPONSE_BYTES: u64 = 4 << 20;
/// Largest request body a plugin may send.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;

/// One client for every plugin: connections to a granted host are reused between requests
/// (keep-alive), never followed through a redirect.
fn client() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into()
    })
}

fn send(req: Request, timeout: Duration) -> Result<Response, String> {
    let method = ureq::http::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("method {:?} is not an HTTP method", req.method))?;
    let mut b = ureq::http::Request::builder().method(method).uri(&req.url);
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let request = b.body(req.body).map_err(|e| format!("request: {e}"))?;
    let request = client()
        .configure_request(request)
        .timeout_global(Some(timeout))
        .build();
    let mut resp = client()
        .run(request)
        .map_err(|e| format!("{}: {e}", req.url))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| {
            format!(
                "{}: reading the body (at most {MAX_RESPONSE_BYTES} bytes): {e}",
                req.url
            )
        })?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

impl Host for HostState {
    fn send(&mut self, req: Request, timeout_ms: u32) -> Result<Response, String> {
        let uri: ureq::http::Uri = req.url.parse().map_err(|e| {
            format!(
                "url {:?}: {e}",
                req.url.chars().take(200).collect::<String>()
            )
        })?;
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => return Err(format!("url {:?}: only http:// and https://", req.url)),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("url {:?}: no host", req.url))?;
        let port = uri.port_u16().unwrap_or(default_port);
        let scope = self
            .ctx
            .scopes
            .get(&crate::Capability::OutboundHttp)
            .cloned()
            .unwrap_or_default();
        crate::scope::allow_http(&scope, host, port)?;
        if let Some((k, _)) = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        {
            return Err(format!(
                "header {k:?}: the host comes from the url, which the scope checks"
            ));
        }
        if req.body.len() > MAX_REQUEST_BYTES || req.headers.len() > MAX_HEADERS {
            return Err(format!(
                "request too large: at most {MAX_REQUEST_BYTES} bytes of body and {MAX_HEADERS} headers"
            ));
        }
        // A replay answers from what the original node got, never from the network.
        let key = crate::tape::Key::of(&req);
        if let Some(tape) = self.ctx.tape.as_ref().filter(|t| t.replays()) {
            return tape.answer(&key);
        }
        if self.ctx.services.replay.get().is_some() {
            return Err(format!(
                "outbound-http in a replay answers only from the incident's recording, and this plugin has none: {} {} not sent",
                req.method,
                req.url.chars().take(300).collect::<String>()
            ));
        }
        // Never past the call's deadline: the request's own timeout ends it there.
        let mut timeout = Duration::from_millis(u64::from(timeout_ms.max(1)));
        if let Some(d) = self.deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        if timeout.is_zero() {
            return Err("outbound-http refused: the call's deadline has passed".into());
        }
        let resp = within_pool(self, "outbound-http.send", &HTTP_WORKERS, move || {
            send(req, timeout)
        })?;
        if let Some(tape) = &self.ctx.tape {
            tape.record(&key, &resp);
        }
        Ok(resp)
    }
}
