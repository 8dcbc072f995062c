//! Request handlers, one module per area.

pub mod alerts;
pub mod auth;
pub mod flows;
pub mod incident;
pub mod limits;
pub mod meta;
pub mod otlp;
pub mod ovs;
pub mod plugins;
pub mod policy;
pub mod records;
pub mod security;
pub mod timeline;

use crate::error::ApiError;

/// A JSON object body read into `T`. Anything else is refused: serde reads a struct from an
/// array too (the fields in order), so `[]` would pass as a body of defaults.
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "body",
            "the body must be a JSON object ({...})",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "body",
            format!("line {} column {}: {e}", e.line(), e.column()),
        )
    })
}

/// Runs blocking store or plugin work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::unavailable(format!("worker failed: {e}")))?
}
