//! Bundled alert rule: a latency percentile above a threshold, per group: TCP round-trip
//! time (`TimeFlowRttNs`, measured by the kernel's smoothed RTT) and DNS query-to-response
//! time (`DnsLatencyUs`).
//!
//! Config:
//! - `group_by` (default `NetNs,Interface`);
//! - `quantile` (default 0.95: the 95th percentile over the window's flows that carry the
//!   measurement);
//! - `rtt_ms_info`, `rtt_ms_warning`, `rtt_ms_critical` (default 100, 250, 500);
//! - `dns_ms_info`, `dns_ms_warning`, `dns_ms_critical` (default 100, 500, 2000);
//! - `min_samples`: flows with a measurement a group needs to be judged (default 5);
//! - `check`: `rtt`, `dns` or `rtt,dns` (default);
//! - `filter` (a flow filter applied too).

use weir_plugin_sdk::alert_rule::{
    self, Alert, Guest, Measure, PluginError, Rank, TimeRange, config, config_f64, config_u64,
    group_by, group_stats, label_name, labels_of, severity_of, shown, thresholds, window_secs,
    with_filter,
};

struct Plugin;

/// One latency check: its alert, field, unit per millisecond and default thresholds.
struct Check {
    key: &'static str,
    alert: &'static str,
    field: &'static str,
    what: &'static str,
    per_ms: u64,
    defaults: [u64; 3],
}

const CHECKS: [Check; 2] = [
    Check {
        key: "rtt",
        alert: "HighRtt",
        field: "TimeFlowRttNs",
        what: "TCP round-trip time",
        per_ms: 1_000_000,
        defaults: [100, 250, 500],
    },
    Check {
        key: "dns",
        alert: "SlowDns",
        field: "DnsLatencyUs",
        what: "DNS latency",
        per_ms: 1_000,
        defaults: [100, 500, 2000],
    },
];

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        let q = config_f64("quantile", 0.95)?;
        if !(0.0..=1.0).contains(&q) {
            return Err(PluginError::InvalidInput(format!(
                "config quantile: expected 0..=1, got {q}"
            )));
        }
        let min_samples = config_u64("min_samples", 5)?;
        let wanted = config::get("check").unwrap_or_else(|| "rtt,dns".into());
        let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
        if let Some(bad) = wanted.iter().find(|w| !CHECKS.iter().any(|c| c.key == **w)) {
            return Err(PluginError::InvalidInput(format!(
                "config check: unknown check {bad:?} (known: rtt, dns)"
            )));
        }
        let fields = group_by(&["NetNs", "Interface"]);
        let pct = format!("p{}", (q * 100.0).round() as u64);
        let mut out = Vec::new();
        for c in CHECKS.iter().filter(|c| wanted.contains(&c.key)) {
            let t = thresholds(&format!("{}_ms", c.key), c.defaults)?;
            let measure = Measure {
                field: c.field.into(),
                quantiles: vec![q],
            };
            let filter = with_filter(&format!("{}>0", c.field));
            for g in group_stats(window, &filter, &fields, Some(&measure), Rank::Quantile)? {
                let Some(&v) = g.quantiles.first() else {
                    continue;
                };
                if g.measured < min_samples {
                    continue;
                }
                let ms = v / c.per_ms;
                let Some(severity) = severity_of(ms, t) else {
                    continue;
                };
                let mut labels = labels_of(&fields, &g.key, label_name);
                let summary = format!(
                    "{} {pct} {:.1} ms over {} flows in {} s ({})",
                    c.what,
                    v as f64 / c.per_ms as f64,
                    g.measured,
                    window_secs(&window),
                    shown(&labels)
                );
                labels.push(("quantile".into(), pct.clone()));
                out.push(Alert {
                    name: c.alert.into(),
                    severity,
                    summary,
                    labels,
                    time_ms: window.to_ms,
                });
            }
        }
        Ok(out)
    }
}

alert_rule::export!(Plugin);
