//! Bundled alert rule: DNS error responses (NXDOMAIN, SERVFAIL) per group (default: the
//! response code and the queried name), rated by how many error responses the window holds.
//!
//! Config: `group_by` (default `DnsFlagsResponseCode,DnsName`), `errors_info`,
//! `errors_warning`, `errors_critical` (default 1, 10, 100), `filter`.

use weir_plugin_sdk::alert_rule::{
    self, Alert, Guest, PluginError, TimeRange, alerts_per_group, group_by, thresholds, with_filter,
};

struct Plugin;

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        alerts_per_group(
            window,
            "DnsErrors",
            &with_filter("DnsFlagsResponseCode=NXDomain or DnsFlagsResponseCode=ServFail"),
            &group_by(&["DnsFlagsResponseCode", "DnsName"]),
            thresholds("errors", [1, 10, 100])?,
            str::to_string,
            "DNS error responses",
        )
    }
}

alert_rule::export!(Plugin);
