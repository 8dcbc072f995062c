//! Bundled self-alert: fires (critical) when fewer than `min_flows` flows (default 1) were
//! stored in the window, e.g. capture stopped or every interface went quiet.
//!
//! Config: `min_flows` (default 1), `filter` (count only matching flows).

use weir_plugin_sdk::alert_rule::{
    self, Alert, Guest, Metric, PluginError, Severity, TimeRange, config_u64, flows, with_filter,
};

struct Plugin;

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        let min = config_u64("min_flows", 1)?;
        let filter = with_filter("");
        let total: u64 =
            flows::aggregate(&filter, window, &["Etype".to_string()], Metric::Flows, 1000)
                .map_err(PluginError::InvalidInput)?
                .iter()
                .map(|g| g.flows)
                .sum();
        if total >= min {
            return Ok(Vec::new());
        }
        let secs = (window.to_ms.saturating_sub(window.from_ms) / 1000).max(1);
        Ok(vec![Alert {
            name: "NoFlows".into(),
            severity: Severity::Critical,
            summary: format!("{total} flows stored in the last {secs} s (expected at least {min})"),
            labels: if filter.is_empty() {
                Vec::new()
            } else {
                vec![("filter".into(), filter)]
            },
            time_ms: window.to_ms,
        }])
    }
}

alert_rule::export!(Plugin);
