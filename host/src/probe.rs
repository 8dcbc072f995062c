//! The `probe` capability: one connection attempt from a network namespace, bounded by the
//! grant's scope (where probes start and go) and by the call's deadline; made by the agent's
//! prober (`weir_core::probe::Prober`, the kernel adapter's `NetnsProber`).

use crate::Capability;
use crate::bindings::imports::weir::plugin::probe::{Host, Outcome, ProbeResult, Protocol, Target};
use crate::convert::ip_from_wit;
use crate::deadline::within;
use crate::state::HostState;
use std::time::{Duration, Instant};
use weir_core::probe as core;

/// Longest timeout one probe may ask.
pub const MAX_TIMEOUT_MS: u32 = 10_000;

impl Host for HostState {
    fn connect(&mut self, t: Target) -> Result<ProbeResult, String> {
        let addr = std::net::IpAddr::V6(ip_from_wit(&t.addr)).to_canonical();
        if !t.netns.is_empty() && !core::valid_netns(&t.netns) {
            return Err(format!(
                "probe: {:?} is not a network namespace name",
                t.netns
            ));
        }
        core::allowed(self.scope_of(Capability::Probe), &t.netns, &addr)?;
        if t.port == 0 {
            return Err("probe: port 0".into());
        }
        let prober =
            self.ctx.services.prober.get().cloned().ok_or_else(|| {
                "probe: this host makes no probes (only the agent does)".to_string()
            })?;
        let mut timeout = Duration::from_millis(u64::from(t.timeout_ms.clamp(1, MAX_TIMEOUT_MS)));
        if let Some(d) = self.deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        if timeout.is_zero() {
            return Err("probe refused: the call's deadline has passed".into());
        }
        let target = core::Target {
            netns: t.netns,
            addr,
            port: t.port,
            protocol: match t.protocol {
                Protocol::Tcp => core::Protocol::Tcp,
                Protocol::Udp => core::Protocol::Udp,
            },
            timeout,
        };
        let (outcome, elapsed) = within(self, "probe.connect", move || {
            prober.probe(&target).map_err(|e| format!("probe: {e}"))
        })?;
        let (outcome, detail) = match outcome {
            core::Outcome::Connected => (Outcome::Connected, String::new()),
            core::Outcome::Answered => (Outcome::Answered, String::new()),
            core::Outcome::Refused => (Outcome::Refused, String::new()),
            core::Outcome::Unreachable(d) => (Outcome::Unreachable, d),
            core::Outcome::TimedOut => (Outcome::TimedOut, String::new()),
            core::Outcome::NoAnswer => (Outcome::NoAnswer, String::new()),
        };
        Ok(ProbeResult {
            outcome,
            detail,
            elapsed_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        })
    }
}
