//! Bundled alert rule: packets the kernel dropped, per group (default: namespace and
//! interface) and drop reason, rated by how many packets were dropped in the window.
//!
//! Config: `group_by` (flow fields, default `NetNs,Interface`), `packets_info`,
//! `packets_warning`, `packets_critical` (dropped packets in the window; default 1, 100,
//! 1000), `filter` (a flow filter applied too).

use weir_plugin_sdk::alert_rule::{
    self, Alert, Guest, PluginError, Rank, TimeRange, group_by, group_stats, label_name, labels_of,
    severity_of, shown, thresholds, window_secs, with_filter,
};

struct Plugin;

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        let t = thresholds("packets", [1, 100, 1000])?;
        let mut fields = group_by(&["NetNs", "Interface"]);
        fields.push("PktDropLatestDropCause".into());
        let filter = with_filter("PktDropPackets>0");
        let mut out = Vec::new();
        for g in group_stats(window, &filter, &fields, None, Rank::DropPackets)? {
            let Some(severity) = severity_of(g.drop_packets, t) else {
                continue;
            };
            let labels = labels_of(&fields, &g.key, label_name);
            out.push(Alert {
                name: "PacketDrops".into(),
                severity,
                summary: format!(
                    "{} packets ({} bytes) dropped over {} flows in {} s ({})",
                    g.drop_packets,
                    g.drop_bytes,
                    g.flows,
                    window_secs(&window),
                    shown(&labels)
                ),
                labels,
                time_ms: window.to_ms,
            });
        }
        Ok(out)
    }
}

alert_rule::export!(Plugin);
