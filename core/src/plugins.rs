//! What the plugin host offers the API, without the API seeing wasmtime types.

/// Plugin management, as the HTTP API uses it. Errors are user-facing messages.
pub trait PluginAdmin: Send + Sync {
    /// Installed plugins with what they asked for and got, state and recent errors (JSON).
    fn list(&self) -> serde_json::Value;
    /// Installs (or upgrades) a plugin from the bytes of a `.wasm` with an embedded manifest.
    fn install(
        &self,
        wasm: &[u8],
        sha256: Option<&str>,
        grants: Option<Vec<String>>,
        upgrade: bool,
    ) -> Result<serde_json::Value, String>;
    fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), String>;
    fn remove(&self, name: &str) -> Result<(), String>;
}
