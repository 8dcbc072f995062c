//! What the capture layer reports to the rest of weir, without depending on it: the API and
//! CLI show this; the eBPF crate fills it in.

use serde::Serialize;
use std::collections::BTreeMap;

/// One capture feature and whether it is on (probed at start-up).
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    pub name: String,
    pub enabled: bool,
    /// Why it is off, or how it is done.
    pub detail: String,
}

/// One interface the programs are attached to.
#[derive(Debug, Clone, Serialize)]
pub struct AttachedInterface {
    /// Network namespace ("" for the agent's own).
    pub netns: String,
    pub name: String,
    pub ifindex: u32,
    /// `tcx` or `clsact`.
    pub mode: String,
}

/// A snapshot of the capture layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureStatus {
    pub features: Vec<Feature>,
    pub interfaces: Vec<AttachedInterface>,
    /// Interfaces that could not be attached, with the reason.
    pub attach_errors: BTreeMap<String, String>,
    /// Counters of what was seen, evicted early, or lost. See docs/ARCHITECTURE.md.
    pub counters: BTreeMap<String, u64>,
    pub active_timeout_ms: u64,
    pub sampling: u32,
    pub max_flows: u32,
}

/// A running capture, as the API sees it.
pub trait CaptureSource: Send + Sync {
    /// The current status.
    fn status(&self) -> CaptureStatus;
    /// Evicts every flow now instead of at the next active timeout.
    fn flush(&self);
}
