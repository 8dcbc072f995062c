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

/// Runs blocking store or plugin work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::unavailable(format!("worker failed: {e}")))?
}
