//! What the plugin host offers the API, without the API seeing wasmtime types.

/// Plugin management, as the HTTP API uses it. Errors are user-facing messages.
pub trait PluginAdmin: PluginRunner + Send + Sync {
    /// Installed plugins with what they asked for and got, state and recent errors (JSON).
    fn list(&self) -> serde_json::Value;
    /// Names of the plugins built into the binary (installable as `bundled:NAME`).
    fn bundled(&self) -> Vec<String>;
    /// Installs (or upgrades) a plugin from the bytes of an uploaded `.wasm` with an embedded
    /// manifest, or from a source (`oci://...` or `bundled:NAME`); exactly one of the two.
    fn install(
        &self,
        upload: Option<&[u8]>,
        source: Option<&str>,
        sha256: Option<&str>,
        grants: Option<Vec<String>>,
        upgrade: bool,
    ) -> Result<serde_json::Value, String>;
    fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), String>;
    fn remove(&self, name: &str) -> Result<(), String>;
}

/// Why running a plugin on request failed; the API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No such plugin (404).
    #[error("{0}")]
    NotFound(String),
    /// The request does not suit the plugin, or the plugin called its input invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// The plugin failed: trapped, timed out, ran out of memory, reported failure, or is
    /// disabled (422).
    #[error("{0}")]
    Failed(String),
}

/// Running installed plugins on request (`POST /api/v1/plugins/{name}/run`). The request and
/// the result are JSON whose shape depends on the plugin's kind (see docs/PLUGINS.md).
pub trait PluginRunner: Send + Sync {
    fn run(&self, name: &str, request: &serde_json::Value) -> Result<serde_json::Value, RunError>;
}
