//! The `capture-control` capability: a plugin's in-kernel filter rules and sampling, through
//! the agent's guard (`weir_core::control::GuardedCapture`): within the grant's bounds,
//! rate-limited, the operator's rules first, withdrawn when the plugin stops controlling.
//! And `storage-sampling`: a plugin's rules for which flows the store keeps, through the
//! agent's `weir_core::sampling::StorageSampler` (guards first, rate-limited, withdrawn the
//! same way).

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
        // Map updates only (no program reload), written before this returns (with the next
        // flip of the flow maps, waited for at most 500 ms): a change is never applied after
        // the call's deadline has passed and the plugin was told it failed.
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

mod storage {
    use crate::bindings::imports::weir::plugin::storage_sampling::{ClassStats, Host, Rule};
    use crate::state::HostState;
    use weir_core::sampling::RuleSpec;

    impl HostState {
        fn sampler(&self) -> Result<&std::sync::Arc<weir_core::sampling::StorageSampler>, String> {
            self.ctx.services.sampler.get().ok_or_else(|| {
                "storage-sampling: this host stores no flows (no sampler)".to_string()
            })
        }
    }

    fn wit_rule(r: RuleSpec) -> Rule {
        Rule {
            class: r.class,
            filter: r.filter,
            one_in: r.one_in,
            threshold_bytes: r.threshold_bytes,
        }
    }

    impl Host for HostState {
        fn rules(&mut self) -> Vec<Rule> {
            self.sampler()
                .map(|s| s.rules(false).into_iter().map(wit_rule).collect())
                .unwrap_or_default()
        }

        fn set_rules(
            &mut self,
            rules: Vec<Rule>,
            shadow: bool,
            reason: String,
        ) -> Result<(), String> {
            let specs = rules
                .into_iter()
                .map(|r| RuleSpec {
                    class: r.class,
                    filter: r.filter,
                    one_in: r.one_in,
                    threshold_bytes: r.threshold_bytes,
                })
                .collect();
            self.sampler()?
                .set_plugin_rules(&self.ctx.name, specs, shadow, &reason)
                .map_err(|e| e.to_string())
        }

        fn stats(&mut self) -> Vec<ClassStats> {
            self.sampler()
                .map(|s| {
                    s.stats()
                        .into_iter()
                        .map(|c| ClassStats {
                            class: c.class,
                            shadow: c.shadow,
                            offered_flows: c.counters.offered_flows,
                            offered_bytes: c.counters.offered_bytes,
                            kept_flows: c.counters.kept_flows,
                            kept_scaled_bytes: c.counters.kept_scaled_bytes,
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
    }
}
