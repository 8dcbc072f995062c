//! Bundled alert rule: traffic far below what is usual for this hour, or none where there
//! usually is some.
//!
//! Each evaluation compares the bytes of every group in the window with a baseline learned
//! for the same slot (the hour of the week by default): the mean of past windows in that
//! slot, kept in the plugin's key-value store. A window that alerts does not feed the
//! baseline, so an outage never becomes the new normal. Groups are remembered, so a group
//! that stops sending entirely (no flows at all) is still judged: zero traffic is critical.
//!
//! Config:
//! - `group_by` (default `NetNs,Interface`);
//! - `percent_info`, `percent_warning`, `percent_critical`: alert when the window's bytes are
//!   at most this share of the baseline (default 50, 20, 5);
//! - `seasonality`: `hour-of-week` (default), `hour-of-day` or `none` (one baseline);
//! - `learn_windows`: evaluations a slot needs before its baseline is trusted (default 12);
//! - `min_baseline_bytes`: groups usually quieter than this are not judged (default 10000);
//! - `memory`: how many past windows the mean spans at most (default 1000; older ones fade);
//! - `filter` (a flow filter applied too).

use std::collections::BTreeMap;
use weir_plugin_sdk::alert_rule::{
    self, Alert, Guest, PluginError, Rank, Severity, TimeRange, bytes, config, config_u64,
    group_by, group_stats, kv, label_name, labels_of, log, severity_below, shown, thresholds_below,
    window_secs, with_filter,
};

struct Plugin;

/// A slot's baseline: the mean bytes per window and how many windows it has seen.
#[derive(Clone, Copy, Default)]
struct Baseline {
    mean: f64,
    seen: u64,
}

impl Baseline {
    fn decode(b: &[u8]) -> Option<Baseline> {
        let mean = f64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let seen = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        Some(Baseline { mean, seen })
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = self.mean.to_le_bytes().to_vec();
        v.extend_from_slice(&self.seen.to_le_bytes());
        v
    }

    /// Folds one window in: a plain mean at first, then an exponential one over `memory`.
    fn learn(&mut self, value: u64, memory: u64) {
        let n = self.seen.min(memory.max(1) - 1) as f64;
        self.mean += (value as f64 - self.mean) / (n + 1.0);
        self.seen += 1;
    }
}

/// The slot a time falls in.
fn slot(now_ms: u64, seasonality: &str) -> Result<u64, PluginError> {
    let hour = now_ms / 3_600_000;
    match seasonality {
        "hour-of-week" => Ok(hour % (24 * 7)),
        "hour-of-day" => Ok(hour % 24),
        "none" => Ok(0),
        other => Err(PluginError::InvalidInput(format!(
            "config seasonality: expected hour-of-week, hour-of-day or none, got {other:?}"
        ))),
    }
}

const SEP: char = '\u{1f}';

fn encode_labels(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(&SEP.to_string())
}

fn decode_labels(s: &str) -> Vec<(String, String)> {
    s.split(SEP)
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect()
}

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        let t = thresholds_below("percent", [50, 20, 5])?;
        let season = config::get("seasonality").unwrap_or_else(|| "hour-of-week".into());
        let learn = config_u64("learn_windows", 12)?.max(1);
        let min_baseline = config_u64("min_baseline_bytes", 10_000)?;
        let memory = config_u64("memory", 1000)?.max(1);
        let fields = group_by(&["NetNs", "Interface"]);
        let filter = with_filter("");
        // Baselines are per group-by list, filter and slot: changing either starts afresh.
        let prefix = format!(
            "b/{}/{}/{}/",
            fields.join(","),
            filter,
            slot(window.to_ms, season.trim())?
        );

        let mut now: BTreeMap<String, (Vec<(String, String)>, u64)> = BTreeMap::new();
        for g in group_stats(window, &filter, &fields, None, Rank::Bytes)? {
            let labels = labels_of(&fields, &g.key, label_name);
            now.insert(encode_labels(&labels), (labels, g.bytes));
        }
        for key in kv::list_keys(&prefix) {
            let group = key[prefix.len()..].to_string();
            now.entry(group.clone())
                .or_insert_with(|| (decode_labels(&group), 0));
        }

        let mut out = Vec::new();
        for (group, (labels, current)) in now {
            let key = format!("{prefix}{group}");
            let mut base = kv::get(&key)
                .and_then(|b| Baseline::decode(&b))
                .unwrap_or_default();
            let judged = base.seen >= learn && base.mean >= min_baseline as f64;
            let percent = if base.mean > 0.0 {
                (current as f64 * 100.0 / base.mean) as u64
            } else {
                100
            };
            let severity = if !judged {
                None
            } else if current == 0 {
                Some(Severity::Critical)
            } else {
                severity_below(percent, t)
            };
            match severity {
                Some(severity) => out.push(Alert {
                    name: "TrafficQuiet".into(),
                    severity,
                    summary: format!(
                        "{} in {} s, {percent}% of the usual {} for this {} ({})",
                        bytes(current),
                        window_secs(&window),
                        bytes(base.mean as u64),
                        match season.trim() {
                            "hour-of-week" => "hour of the week",
                            "hour-of-day" => "hour of the day",
                            _ => "window",
                        },
                        shown(&labels)
                    ),
                    labels,
                    time_ms: window.to_ms,
                }),
                None => {
                    base.learn(current, memory);
                    if let Err(e) = kv::set(&key, &base.encode()) {
                        log::log(
                            log::Level::Warn,
                            &format!("cannot keep the baseline of {group}: {e}"),
                        );
                    }
                }
            }
        }
        Ok(out)
    }
}

alert_rule::export!(Plugin);
