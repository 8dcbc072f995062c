//! What the plugin host offers the API, without the API seeing wasmtime types.

/// An installed, enabled alert rule as alerting sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    pub name: String,
    /// The operator's config of the rule (`window`, `for`, thresholds...).
    pub config: std::collections::BTreeMap<String, String>,
    /// Why it cannot be evaluated now (not loaded, or disabled by the agent); None: ready.
    pub unavailable: Option<String>,
}

/// The plugin port alerting uses: typed rules and results and typed errors, so no caller
/// walks the JSON the HTTP API returns (JSON stays at the HTTP edge).
pub trait RuleEvaluator: Send + Sync {
    /// Every installed, enabled alert rule.
    fn alert_rules(&self) -> Vec<RuleInfo>;
    /// Evaluates rule `name` over `[from_ms, to_ms]`.
    fn evaluate_rule(
        &self,
        name: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<crate::alerts::Observed>, RunError>;
}

/// Plugin management, as the HTTP API uses it. Errors are user-facing messages.
pub trait PluginAdmin: PluginRunner + RuleEvaluator + Send + Sync {
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
    /// Grants a capability (with its scope, for a scoped one) or revokes it, without
    /// reinstalling; answers what the plugin now holds.
    fn set_grant(
        &self,
        name: &str,
        capability: &str,
        grant: bool,
        scope: Option<Vec<String>>,
    ) -> Result<serde_json::Value, String>;
    fn remove(&self, name: &str) -> Result<(), String>;
    /// Every installed plugin as an incident carries it: `installed.json`, the component and
    /// its durable state (written out first).
    fn incident_plugins(&self) -> Result<Vec<crate::incident::PluginFile>, String>;
}

/// The rule every plugin name follows. Names become directory names under the data dir, so
/// every route and the registry check it before a name touches the file system.
pub const PLUGIN_NAME_RULE: &str = "1-64 characters of a-z, 0-9, '-' or '_'";
/// [`PLUGIN_NAME_RULE`] as a regular expression (for the API's description).
pub const PLUGIN_NAME_PATTERN: &str = "^[a-z0-9_-]{1,64}$";

/// A plugin name that breaks [`PLUGIN_NAME_RULE`] (a path, `..`, a slash, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin name '{}': a name is {PLUGIN_NAME_RULE}", .0.escape_debug())]
pub struct InvalidName(pub String);

/// Checks a plugin name against [`PLUGIN_NAME_RULE`]; nothing else may become a path.
pub fn check_plugin_name(name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidName(name.chars().take(200).collect()))
    }
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
    /// The plugin already runs as many calls as it may, or the agent's plugin memory budget
    /// is spoken for: try again later (429).
    #[error("{0}")]
    Busy(String),
}

/// Running installed plugins on request (`POST /api/v1/plugins/{name}/run`). The request and
/// the result are JSON whose shape depends on the plugin's kind (see docs/PLUGINS.md).
pub trait PluginRunner: Send + Sync {
    fn run(&self, name: &str, request: &serde_json::Value) -> Result<serde_json::Value, RunError>;

    /// [`PluginRunner::run`], ended early (as [`RunError::Failed`], "cancelled") once `cancel`
    /// is set: the API sets it when the client goes away. The default ignores it.
    fn run_cancellable(
        &self,
        name: &str,
        request: &serde_json::Value,
        cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<serde_json::Value, RunError> {
        let _ = cancel;
        self.run(name, request)
    }

    /// A summarizer's state as one snapshot (every kept window merged), to merge into
    /// another agent's (`GET /api/v1/plugins/{name}/snapshot`).
    fn summary_snapshot(&self, name: &str) -> Result<Vec<u8>, RunError>;

    /// Merges another agent's snapshot into a summarizer's current window
    /// (`POST /api/v1/plugins/{name}/merge`).
    fn merge_summary(&self, name: &str, snapshot: &[u8]) -> Result<(), RunError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_become_paths_are_refused() {
        for ok in ["sankey", "top-ports", "a_b", "x1", &"a".repeat(64)] {
            assert_eq!(check_plugin_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../victim",
            "../../victim",
            "/tmp/victim",
            "a/b",
            "a\\b",
            ".hidden",
            "A",
            "a b",
            "a\nb",
            "é",
            &"a".repeat(65),
        ] {
            let e = check_plugin_name(bad).expect_err(bad);
            assert!(e.to_string().contains("invalid plugin name"), "{e}");
            assert!(!e.to_string().contains('\n'), "escaped: {e}");
        }
    }
}
