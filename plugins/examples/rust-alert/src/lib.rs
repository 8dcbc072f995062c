//! Example alert rule (docs/ALERTS.md): a destination port that received at least
//! `bytes_warning` bytes in the window, one alert per port.
//!
//! Config: `bytes_info`, `bytes_warning`, `bytes_critical` (bytes in the window; default 0 =
//! off, 100 MB, 1 GB), `group_by` (default `DstPort`), `filter` (a flow filter applied too).

use weir_plugin_sdk::alert_rule::{
    self, Alert, Guest, Metric, PluginError, TimeRange, flows, group_by, label_name, labels_of,
    severity_of, shown, thresholds, window_secs, with_filter,
};

struct Plugin;

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        let t = thresholds("bytes", [0, 100_000_000, 1_000_000_000])?;
        let fields = group_by(&["DstPort"]);
        // Flows without a port (ICMP, ARP) have DstPort 0: leave them out.
        let filter = with_filter("DstPort>0");
        let groups = flows::aggregate(&filter, window, &fields, Metric::Bytes, 1000)
            .map_err(PluginError::InvalidInput)?;
        let mut alerts = Vec::new();
        for g in groups {
            let Some(severity) = severity_of(g.bytes, t) else {
                continue;
            };
            // Labels identify the alert (dst_port=443): keep measured values out of them.
            let labels = labels_of(&fields, &g.key, label_name);
            alerts.push(Alert {
                name: "PortHot".into(),
                severity,
                summary: format!(
                    "{} bytes in {} s to {}",
                    g.bytes,
                    window_secs(&window),
                    shown(&labels)
                ),
                labels,
                time_ms: window.to_ms,
            });
        }
        Ok(alerts)
    }
}

alert_rule::export!(Plugin);
