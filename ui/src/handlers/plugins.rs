//! /api/v1/plugins: list, install (upload), enable, disable, remove.

use crate::AppState;
use crate::error::ApiError;
use crate::params::{Param, Params};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use weir_core::plugins::{PluginAdmin, RunError};

fn admin(st: &AppState) -> Result<Arc<dyn PluginAdmin>, ApiError> {
    st.plugins
        .clone()
        .ok_or_else(|| ApiError::unavailable("plugins are off in this agent"))
}

/// The `{name}` of a plugin route, checked before anything else sees it: a name becomes a
/// directory under the data dir, so `..%2F..%2Fx` or an absolute path is refused here (and
/// again by the registry).
fn plugin_name(name: String) -> Result<String, ApiError> {
    weir_core::plugins::check_plugin_name(&name)
        .map(|()| name)
        .map_err(|e| ApiError::bad_request("name", e.to_string()))
}

/// 404 unless `name` is installed (so a typo is "not found", not a bad request).
fn installed(a: &Arc<dyn PluginAdmin>, name: &str) -> Result<(), ApiError> {
    let listed = a.list();
    let known = listed
        .as_array()
        .is_some_and(|l| l.iter().any(|p| p["installed"]["manifest"]["name"] == name));
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "plugin {name} is not installed"
        )))
    }
}

/// Plugin work off the async threads; its messages are the user's to read (400).
async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    super::blocking(move || f().map_err(|m| ApiError::bad_request("plugin", m))).await
}

/// `GET /api/v1/plugins`
pub async fn list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let a = admin(&st)?;
    let (plugins, bundled) = run(move || Ok((a.list(), a.bundled()))).await?;
    Ok(Json(json!({ "plugins": plugins, "bundled": bundled })))
}

/// What `POST /api/v1/plugins` takes.
pub const INSTALL: &[Param] = &[
    Param::text(
        "sha256",
        "The component's expected SHA-256 (hex); the install is refused if it differs.",
    ),
    Param::text(
        "grant",
        "Capabilities granted at install, comma-separated (e.g. `flows,log`).",
    ),
    Param::flag(
        "upgrade",
        "Replace an installed plugin of the same name (its state and grants kept).",
    ),
    Param::text(
        "source",
        "With an empty body: where to fetch it, `oci://REGISTRY/REPO:TAG` or `bundled:NAME`.",
    ),
];

/// `POST /api/v1/plugins?sha256=&grant=flows,log&upgrade=true` with the `.wasm` as the body
/// (manifest embedded), or with an empty body and `source=oci://...` or `source=bundled:NAME`.
pub async fn install(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q, INSTALL)?;
    let upgrade = p.flag("upgrade")?;
    let a = admin(&st)?;
    let source = p.get("source").map(String::from);
    let sha = p.get("sha256").map(String::from);
    let grants = p.get("grant").map(|g| {
        g.split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    });
    let installed = run(move || {
        let upload = (!body.is_empty()).then_some(&body[..]);
        a.install(upload, source.as_deref(), sha.as_deref(), grants, upgrade)
    })
    .await?;
    Ok(Json(json!({ "installed": installed })))
}

pub async fn enable(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(name)?;
    let a = admin(&st)?;
    installed(&a, &name)?;
    run(move || a.set_enabled(&name, true)).await?;
    Ok(Json(json!({ "enabled": true })))
}

pub async fn disable(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(name)?;
    let a = admin(&st)?;
    installed(&a, &name)?;
    run(move || a.set_enabled(&name, false)).await?;
    Ok(Json(json!({ "enabled": false })))
}

/// `POST /api/v1/plugins/{name}/run` with a JSON body whose fields depend on the plugin's
/// kind (window `from_ms`/`to_ms`, `filter`, `params`, `input`, `events`, `query`...).
pub async fn run_plugin(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(name)?;
    let a = admin(&st)?;
    let request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        super::json_object(&body)?
    };
    if let Some(what) = &st.read_only
        && request.get("keep") == Some(&Value::Bool(true))
    {
        return Err(ApiError::forbidden(format!(
            "this agent is read-only: it replays {what}; a run that keeps its annotations would change it"
        )));
    }
    // Set when this handler is dropped before the run ends (the client went away): the
    // plugin's call is then cancelled instead of running on to its deadline.
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guard = SetOnDrop(Some(gone.clone()));
    let out = super::blocking(move || {
        a.run_cancellable(&name, &request, gone)
            .map_err(|e| run_error(e, "body"))
    })
    .await;
    guard.disarm();
    Ok(Json(out?))
}

/// The body of `POST /api/v1/plugins/{name}/grants`: one of `grant` (with `scope` for a
/// scoped capability) or `revoke`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    grant: Option<String>,
    revoke: Option<String>,
    scope: Option<Vec<String>>,
}

/// `POST /api/v1/plugins/{name}/grants` with `{"grant": "outbound-http", "scope":
/// ["prom:9090"]}` or `{"revoke": "outbound-http"}`: changes what an installed plugin holds
/// without reinstalling it; answers what it now holds.
pub async fn grants(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(name)?;
    let a = admin(&st)?;
    installed(&a, &name)?;
    let b: GrantBody = super::json_object(&body)?;
    let (cap, grant) = match (b.grant, b.revoke) {
        (Some(c), None) => (c, true),
        (None, Some(c)) => (c, false),
        _ => {
            return Err(ApiError::bad_request(
                "body",
                "give exactly one of \"grant\" or \"revoke\"",
            ));
        }
    };
    run(move || a.set_grant(&name, &cap, grant, b.scope))
        .await
        .map(Json)
}

fn run_error(e: RunError, parameter: &str) -> ApiError {
    match e {
        RunError::NotFound(m) => ApiError::not_found(m),
        RunError::BadRequest(m) => ApiError::bad_request(parameter, m),
        RunError::Failed(m) => ApiError::plugin_failed(m),
        RunError::Busy(m) => ApiError::busy(m),
    }
}

/// `GET /api/v1/plugins/{name}/snapshot`: a summarizer's state (every kept window merged) as
/// bytes, for `POST .../merge` on another agent.
pub async fn snapshot(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let name = plugin_name(name)?;
    let a = admin(&st)?;
    let bytes =
        super::blocking(move || a.summary_snapshot(&name).map_err(|e| run_error(e, "name")))
            .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// `POST /api/v1/plugins/{name}/merge` with another agent's snapshot as the body: merged into
/// the summarizer's current window (the plugin refuses a snapshot it cannot read: 400).
pub async fn merge(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(name)?;
    let a = admin(&st)?;
    let n = body.len();
    super::blocking(move || {
        a.merge_summary(&name, &body)
            .map_err(|e| run_error(e, "body"))
    })
    .await?;
    Ok(Json(json!({ "merged": true, "bytes": n })))
}

/// Sets its flag when dropped, unless disarmed first.
struct SetOnDrop(Option<Arc<std::sync::atomic::AtomicBool>>);

impl SetOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            f.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

pub async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(name)?;
    let a = admin(&st)?;
    installed(&a, &name)?;
    run(move || a.remove(&name)).await?;
    Ok(Json(json!({ "removed": true })))
}
