//! The network-policy evaluator port ([`weir_core::policy::PolicyEngine`]) served by the
//! bundled `policy-engine` plugin in the sandbox: the agent and `weir policy` load it with its
//! own limits and only the `log` capability, so policy files and cluster objects meet the same
//! walls as any plugin input.

use crate::{Plugin, Runtime};
use weir_core::policy::{PolicyEngine, PolicyError, Record};

/// The content type the engine takes.
const CONTENT_TYPE: &str = "application/vnd.weir.policy+json";

/// A policy-engine plugin loaded for evaluating.
pub struct SandboxPolicyEngine {
    plugin: Plugin,
}

impl SandboxPolicyEngine {
    /// Loads `wasm` (a decoder-world component answering policy requests) with `manifest`.
    pub fn load(
        rt: &Runtime,
        wasm: &[u8],
        manifest: &str,
    ) -> Result<SandboxPolicyEngine, PolicyError> {
        let plugin =
            Plugin::load_tool(rt, wasm, manifest, "policy engine").map_err(PolicyError::Engine)?;
        Ok(SandboxPolicyEngine { plugin })
    }
}

impl PolicyEngine for SandboxPolicyEngine {
    fn run(&self, request: &serde_json::Value) -> Result<Vec<Record>, PolicyError> {
        let body = serde_json::to_vec(request).map_err(|e| PolicyError::Invalid(e.to_string()))?;
        let out = self
            .plugin
            .decode(&body, CONTENT_TYPE)
            .map_err(|e| match e {
                crate::HostError::Plugin {
                    message,
                    invalid_input: true,
                    ..
                } => PolicyError::Invalid(message),
                other => {
                    // A request that makes the engine fail (too big, too slow) must not switch it
                    // off for every later request.
                    self.plugin.reset();
                    PolicyError::Engine(other.to_string())
                }
            })?;
        Ok(out.into_iter().map(|d| d.fields).collect())
    }
}
