//! The `sink` capability: payloads to the destinations the operator named (`--sink`), those
//! in the plugin's scope only, through the host's transports (`weir-sinks`), within the
//! call's deadline.

use crate::Capability;
use crate::bindings::imports::weir::plugin::sink::Host;
use crate::deadline::{HTTP_WORKERS, within_pool};
use crate::scope::allow_sink;
use crate::state::HostState;
use std::time::{Duration, Instant};

/// Most bytes one send may carry.
pub const MAX_PAYLOAD: usize = 8 << 20;
/// Longest a send may take when the call has no deadline.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

impl Host for HostState {
    fn destinations(&mut self) -> Vec<String> {
        let Some(sinks) = self.ctx.services.sinks.get() else {
            return Vec::new();
        };
        let named = sinks.names();
        let scope = self.scope_of(Capability::Sink);
        named
            .iter()
            .filter(|n| allow_sink(scope, n, &named).is_ok())
            .cloned()
            .collect()
    }

    fn send(&mut self, destination: String, payload: Vec<u8>) -> Result<(), String> {
        let sinks = self.ctx.services.sinks.get().cloned().unwrap_or_default();
        allow_sink(
            self.scope_of(Capability::Sink),
            &destination,
            &sinks.names(),
        )?;
        if payload.len() > MAX_PAYLOAD {
            return Err(format!(
                "sink {destination}: {} bytes, at most {MAX_PAYLOAD} a send",
                payload.len()
            ));
        }
        let Some((_, transport)) = sinks.get(&destination).cloned() else {
            return Err(format!("sink {destination}: not named"));
        };
        // A send ends before the call's deadline (at 80% of what is left), so an unresponsive
        // destination is a failed send the plugin sees, not a plugin that timed out.
        let mut timeout = SEND_TIMEOUT;
        if let Some(d) = self.deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()).mul_f64(0.8));
        }
        if timeout.is_zero() {
            return Err("sink refused: the call's deadline has passed".into());
        }
        let media_type = self.ctx.media_type.clone();
        let sent = within_pool(self, "sink.send", &HTTP_WORKERS, move || {
            Ok(transport.send(&payload, &media_type, timeout))
        })?;
        // An outage is the destination's fault; a payload refused for good is the plugin's.
        sent.map_err(|e| {
            if e.transient() {
                self.destination_failed = true;
            }
            e.to_string()
        })
    }
}
