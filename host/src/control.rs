//! The `capture-control` capability: a plugin's in-kernel filter rules and sampling, through
//! the agent's guard (`weir_core::control::GuardedCapture`): within the grant's bounds,
//! rate-limited, the operator's rules first, withdrawn when the plugin stops controlling.

use crate::Capability;
use crate::bindings::imports::weir::plugin::capture_control::Host;
use crate::state::HostState;
use std::sync::Arc;
use weir_core::capture::FilterRule;
use weir_core::control::{Bounds, GuardedCapture};

impl HostState {
    fn control(&self) -> Result<(Arc<GuardedCapture>, Bounds), String> {
        let guard = self.ctx.services.control.get().cloned().ok_or_else(|| {
            "capture-control: this agent captures nothing (started with --no-capture?)".to_string()
        })?;
        let bounds = Bounds::parse(self.scope_of(Capability::CaptureControl))
            .map_err(|e| format!("capture-control: {e}"))?;
        Ok((guard, bounds))
    }
}

impl Host for HostState {
    fn rules(&mut self) -> Vec<String> {
        self.ctx
            .services
            .control
            .get()
            .map(|g| g.rules_text())
            .unwrap_or_default()
    }

    fn set_rules(&mut self, rules: Vec<String>) -> Result<(), String> {
        let (guard, bounds) = self.control()?;
        let parsed = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                FilterRule::parse(r).map_err(|e| format!("capture-control: rule {}: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Map updates only (no program reload): done here, so a change is never applied
        // after the call's deadline has passed and the plugin was told it failed.
        guard
            .set_plugin_rules(&self.ctx.name, parsed, &bounds)
            .map_err(|e| e.to_string())
    }

    fn sampling(&mut self) -> u32 {
        self.ctx
            .services
            .control
            .get()
            .map(|g| g.sampling())
            .unwrap_or(0)
    }

    fn set_sampling(&mut self, one_in: u32) -> Result<(), String> {
        let (guard, bounds) = self.control()?;
        guard
            .set_plugin_sampling(&self.ctx.name, one_in, &bounds)
            .map_err(|e| e.to_string())
    }
}
