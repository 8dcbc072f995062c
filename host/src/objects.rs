//! The `k8s-objects` capability: Kubernetes objects as the agent's watcher keeps them
//! (`weir_core::objects::ObjectSource`), for the kinds in the plugin's granted scope; Secrets
//! never. Reads run within the call's deadline like every host call.

use crate::Capability;
use crate::bindings::imports::weir::plugin::k8s_objects::{Host, Object};
use crate::deadline::within;
use crate::scope::allow_kind;
use crate::state::HostState;
use weir_core::objects::Selector;

/// Most objects one call returns.
pub const MAX_OBJECTS: usize = 10_000;
/// Most bytes of JSON one call returns.
pub const MAX_JSON_BYTES: usize = 16 << 20;

impl Host for HostState {
    fn kinds(&mut self) -> Vec<String> {
        let Some(src) = self.ctx.services.objects.get() else {
            return Vec::new();
        };
        let scope = self.scope_of(Capability::K8sObjects);
        src.kinds()
            .into_iter()
            .filter(|k| allow_kind(scope, k).is_ok())
            .collect()
    }

    fn list(
        &mut self,
        kind: String,
        namespace: Option<String>,
        selector: Option<String>,
    ) -> Result<Vec<Object>, String> {
        allow_kind(self.scope_of(Capability::K8sObjects), &kind)?;
        let src = self.ctx.services.objects.get().cloned().ok_or_else(|| {
            "k8s-objects: this agent watches no cluster (start it with --kubernetes or --kubeconfig)"
                .to_string()
        })?;
        let selector = Selector::parse(selector.as_deref().unwrap_or(""))
            .map_err(|e| format!("k8s-objects: {e}"))?;
        let found = within(self, "k8s-objects.list", move || {
            src.list(&kind, namespace.as_deref(), &selector)
                .map_err(|e| format!("k8s-objects: {e}"))
        })?;
        if found.len() > MAX_OBJECTS {
            return Err(format!(
                "k8s-objects: {} objects match, at most {MAX_OBJECTS} a call: narrow it by namespace or selector",
                found.len()
            ));
        }
        let bytes: usize = found.iter().map(|o| o.json.len()).sum();
        if bytes > MAX_JSON_BYTES {
            return Err(format!(
                "k8s-objects: {bytes} bytes of objects match, at most {MAX_JSON_BYTES} a call: narrow it by namespace or selector"
            ));
        }
        Ok(found
            .into_iter()
            .map(|o| Object {
                kind: o.kind,
                namespace: o.namespace,
                name: o.name,
                labels: o.labels.into_iter().collect(),
                json: o.json,
            })
            .collect())
    }
}
