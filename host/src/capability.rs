//! Capabilities: the host interfaces of `weir:plugin`, each granted per plugin.

use serde::{Deserialize, Serialize};

/// One host interface a plugin may import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Log,
    Metrics,
    Kv,
    Flows,
    FlowStats,
    FlowFields,
    Records,
    OutboundHttp,
    K8sObjects,
    Probe,
    CaptureControl,
    StorageSampling,
    Sink,
    Timeline,
    Clock,
    Config,
}

impl Capability {
    pub const ALL: [Capability; 16] = [
        Capability::Log,
        Capability::Metrics,
        Capability::Kv,
        Capability::Flows,
        Capability::FlowStats,
        Capability::FlowFields,
        Capability::Records,
        Capability::OutboundHttp,
        Capability::K8sObjects,
        Capability::Probe,
        Capability::CaptureControl,
        Capability::StorageSampling,
        Capability::Sink,
        Capability::Timeline,
        Capability::Clock,
        Capability::Config,
    ];

    /// The WIT interface name (the capability's name).
    pub fn name(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Metrics => "metrics",
            Capability::Kv => "kv",
            Capability::Flows => "flows",
            Capability::FlowStats => "flow-stats",
            Capability::FlowFields => "flow-fields",
            Capability::Records => "records",
            Capability::OutboundHttp => "outbound-http",
            Capability::K8sObjects => "k8s-objects",
            Capability::Probe => "probe",
            Capability::CaptureControl => "capture-control",
            Capability::StorageSampling => "storage-sampling",
            Capability::Sink => "sink",
            Capability::Timeline => "timeline",
            Capability::Clock => "clock",
            Capability::Config => "config",
        }
    }

    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Every capability's name, comma-separated (for messages).
    pub fn known() -> String {
        Capability::ALL.map(Capability::name).join(", ")
    }

    /// Whether a grant of it carries a scope (what it may reach); granted without one, it
    /// reaches nothing.
    pub fn scoped(self) -> bool {
        matches!(
            self,
            Capability::OutboundHttp
                | Capability::K8sObjects
                | Capability::Probe
                | Capability::CaptureControl
                | Capability::Sink
        )
    }

    /// The capability behind an import name such as `weir:plugin/kv@0.1.0`.
    pub fn of_import(import: &str) -> Option<Capability> {
        let rest = import.strip_prefix("weir:plugin/")?;
        let iface = rest.split('@').next()?;
        Capability::parse(iface)
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Capability;

    /// The API's description lists the capabilities a plugin can hold (`Capability` in
    /// `ui/src/openapi/components.json`): the same names as here, in the same order.
    #[test]
    fn the_api_description_lists_every_capability() {
        let text = include_str!("../../ui/src/openapi/components.json");
        let doc: serde_json::Value = serde_json::from_str(text).expect("components.json");
        let described: Vec<&str> = doc["Capability"]["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        assert_eq!(described, Capability::ALL.map(Capability::name).to_vec());
    }
}
