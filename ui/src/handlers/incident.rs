//! `GET /api/v1/incident?from=&to=&filter=&max_flows=`: the window's history, the installed
//! plugins and the agent's settings as one incident file (`weir_core::incident`), for
//! `weir incident export` and the Timeline page's Export button, built in an unnamed file
//! beside the store and streamed. And the read-only guard of an agent replaying an incident
//! (`weir incident open`).

use super::blocking;
use crate::AppState;
use crate::error::ApiError;
use crate::params::{FILTER, FROM, Param, Params, TO};
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use weir_core::incident::{self, IncidentError, Sources, Window};

/// Most flows `max_flows` may ask for.
const MAX_FLOWS: usize = 10_000_000;

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::Store(s) => ApiError::from(s),
            IncidentError::Records(r) => ApiError::from(r),
            IncidentError::Content { path, problem } if path == "filter" => {
                ApiError::bad_request("filter", problem)
            }
            IncidentError::TooLarge(m) => ApiError::bad_request("max_flows", m),
            e => ApiError::unavailable(e.to_string()),
        }
    }
}

/// The node's name, for the manifest.
fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What `GET /api/v1/incident` takes.
pub const PARAMS: &[Param] = &[
    FILTER,
    FROM,
    TO,
    Param::count(
        "max_flows",
        incident::DEFAULT_MAX_FLOWS as u64,
        MAX_FLOWS as u64,
        "The most flows the file carries (the newest kept).",
    ),
];

pub async fn export(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = Params::new(q, PARAMS)?;
    p.filter()?;
    let mut range = p.range()?;
    // An open end is now: the incident's end is its replay's clock.
    range.to_ms = range.to_ms.min(weir_core::query::now_ms());
    let window = Window {
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        filter: p.get("filter").unwrap_or("").to_string(),
        max_flows: p.count("max_flows")?,
    };
    let name = format!(
        "weir-incident-{}-{}.tar.gz",
        node_name(),
        weir_core::query::format_ms(range.from_ms).replace([':', ' '], "-")
    );
    let (file, len) = blocking(move || {
        let plugins = match &st.plugins {
            Some(p) => p.incident_plugins().map_err(ApiError::unavailable)?,
            None => Vec::new(),
        };
        let mut settings = (*st.settings).clone();
        if let Some(c) = &st.capture
            && let serde_json::Value::Object(m) = &mut settings
        {
            m.insert(
                "capture_status".into(),
                serde_json::to_value(c.status()).unwrap_or_default(),
            );
            m.insert(
                "capture_filters".into(),
                serde_json::to_value(c.filters()).unwrap_or_default(),
            );
        }
        let src = Sources {
            store: &st.store,
            records: st.records.as_deref(),
            alerts: st.alerts.as_deref(),
            plugins,
            settings,
            node: node_name(),
        };
        // Built in an unnamed file beside the store, so memory holds a page of the window.
        let (file, len, _) = incident::export_file(&src, &window, st.store.dir())?;
        Ok((file, len))
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(file_chunks(file)),
    )
        .into_response())
}

/// A file's bytes as a stream of chunks, read on a blocking thread (a slow client holds one
/// chunk in flight, not the file).
fn file_chunks(
    mut file: std::fs::File,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        // A client that takes no chunk for this long is given up on: the thread and the
        // unnamed file are released (the connection ends short of its Content-Length).
        let send = |x| rt.block_on(tx.send_timeout(x, STALLED_CLIENT));
        loop {
            let mut buf = vec![0u8; 1 << 16];
            let sent = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    send(Ok(buf))
                }
                Err(e) => {
                    let _ = send(Err(e));
                    return;
                }
            };
            if sent.is_err() {
                // The client went away, or stalled.
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// How long a download may take no bytes before it is given up on.
const STALLED_CLIENT: std::time::Duration = std::time::Duration::from_secs(120);

/// Requests that only compute (plugin views, policy questions) pass a read-only agent;
/// anything else that is not a read is refused.
fn computes(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && ((path.starts_with("/api/v1/plugins/") && path.ends_with("/run"))
            || matches!(
                path,
                "/api/v1/policy/describe"
                    | "/api/v1/policy/table"
                    | "/api/v1/policy/explain"
                    | "/api/v1/policy/whatif"
                    | "/api/v1/policy/pod"
            ))
}

/// Refuses changes on an agent replaying an incident (403, naming the incident).
pub async fn read_only_guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(what) = &st.read_only {
        let m = req.method();
        if !(m == Method::GET || m == Method::HEAD || computes(m, req.uri().path())) {
            return ApiError::forbidden(format!(
                "this agent is read-only: it replays {what}; {} {} would change it",
                m,
                req.uri().path()
            ))
            .into_response();
        }
    }
    next.run(req).await
}
