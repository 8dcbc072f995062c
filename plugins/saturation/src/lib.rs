//! Bundled alert rule: a link (or any group of flows) carrying more than a share of its
//! capacity over the window.
//!
//! Config:
//! - `group_by` (default `NetNs,Interface,IfDirection`: each direction of a full-duplex link
//!   has the whole capacity);
//! - `percent_info`, `percent_warning`, `percent_critical` (share of capacity; default 70,
//!   85, 95);
//! - `capacity_bps` (one capacity for every group), `capacity_bps.IFACE` (one interface);
//!   without them, the link speed the capture read from the interface (needs `NetNs` and
//!   `Interface` among the group-by fields). Groups with no known capacity are skipped;
//! - `filter` (a flow filter applied too).

use weir_plugin_sdk::alert_rule::{
    self, Alert, Guest, PluginError, Rank, TimeRange, bits_per_second, config, config_u64,
    flow_stats, group_by, group_stats, label_name, labels_of, severity_of, shown, thresholds,
    window_secs, with_filter,
};

struct Plugin;

/// The capacity of a group in bits/s: configured for its interface, configured for all, or
/// the interface's link speed.
fn capacity(netns: Option<&str>, iface: Option<&str>) -> Result<Option<u64>, PluginError> {
    if let Some(i) = iface
        && config::get(&format!("capacity_bps.{i}")).is_some()
    {
        return config_u64(&format!("capacity_bps.{i}"), 0).map(Some);
    }
    if config::get("capacity_bps").is_some() {
        return config_u64("capacity_bps", 0).map(Some);
    }
    Ok(match (netns, iface) {
        (Some(ns), Some(i)) => flow_stats::link_speed(ns, i),
        _ => None,
    })
}

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        let t = thresholds("percent", [70, 85, 95])?;
        let fields = group_by(&["NetNs", "Interface", "IfDirection"]);
        let at = |name: &str| fields.iter().position(|f| f == name);
        let (ns_at, if_at) = (at("NetNs"), at("Interface"));
        let window_ms = window.to_ms.saturating_sub(window.from_ms).max(1);
        let mut out = Vec::new();
        for g in group_stats(window, &with_filter(""), &fields, None, Rank::Bytes)? {
            let labels = labels_of(&fields, &g.key, label_name);
            let netns = ns_at.map(|i| labels[i].1.as_str());
            let iface = if_at.map(|i| labels[i].1.as_str());
            let Some(cap) = capacity(netns, iface)?.filter(|c| *c > 0) else {
                continue;
            };
            let bps = g.bytes.saturating_mul(8_000) / window_ms;
            let percent = bps.saturating_mul(100) / cap;
            let Some(severity) = severity_of(percent, t) else {
                continue;
            };
            out.push(Alert {
                name: "LinkSaturation".into(),
                severity,
                summary: format!(
                    "{} at {percent}% of {} over {} s ({})",
                    bits_per_second(bps),
                    bits_per_second(cap),
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
