//! Bundled alert rule: flows whose packets the kernel dropped, per group (default:
//! namespace and interface) and drop reason, rated by how many flows had drops in the window.
//!
//! Config: `group_by` (flow fields, default `NetNs,Interface`), `flows_info`,
//! `flows_warning`, `flows_critical` (flows with drops in the window; default 1, 10, 100),
//! `filter` (a flow filter applied too).

use weir_plugin_sdk::alert_rule::{
    self, Alert, Guest, PluginError, TimeRange, alerts_per_group, group_by, thresholds, with_filter,
};

struct Plugin;

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        let t = thresholds("flows", [1, 10, 100])?;
        let mut fields = group_by(&["NetNs", "Interface"]);
        fields.push("PktDropLatestDropCause".into());
        alerts_per_group(
            window,
            "PacketDrops",
            &with_filter("PktDropPackets>0"),
            &fields,
            t,
            |f| {
                if f == "PktDropLatestDropCause" {
                    "reason".into()
                } else {
                    f.to_string()
                }
            },
            "flows with dropped packets",
        )
    }
}

alert_rule::export!(Plugin);
