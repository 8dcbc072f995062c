//! Test fixture: an alert rule that misbehaves in the way its `mode` config names, to show
//! that deadlines cover waits and host calls too, and that one rule cannot hold up others.

use weir_plugin_sdk::alert_rule::{
    self, Alert, Guest, Metric, PluginError, TimeRange, config, flows,
};

struct Plugin;

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        match config::get("mode").unwrap_or_default().as_str() {
            // Waits in WASI past any deadline.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(60));
                Err(PluginError::Failed("woke after 60 s".into()))
            }
            // Host work in a loop: aggregates over the widest range, again and again.
            "hostcall" => {
                let all = TimeRange {
                    from_ms: 0,
                    to_ms: u64::MAX / 2,
                };
                let mut calls = 0u64;
                loop {
                    let _ = flows::aggregate(
                        "",
                        all,
                        &[
                            "SrcAddr".into(),
                            "DstAddr".into(),
                            "SrcPort".into(),
                            "DstPort".into(),
                        ],
                        Metric::Bytes,
                        1000,
                    );
                    calls += 1;
                    std::hint::black_box(calls);
                }
            }
            // Grabs memory until the sandbox stops it.
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            // More alerts than one evaluation may return.
            "alerts" => Ok((0..6000)
                .map(|i| Alert {
                    name: "Many".into(),
                    severity: alert_rule::Severity::Info,
                    summary: String::new(),
                    labels: vec![("i".into(), i.to_string())],
                    time_ms: window.to_ms,
                })
                .collect()),
            // One alert with 600 changing labels.
            "labels" => Ok(vec![Alert {
                name: "Wide".into(),
                severity: alert_rule::Severity::Info,
                summary: String::new(),
                labels: (0..600)
                    .map(|i| (format!("l{i}"), format!("{}", window.to_ms + i)))
                    .collect(),
                time_ms: window.to_ms,
            }]),
            // Behaves: one alert, so a test can see it ran.
            _ => Ok(vec![Alert {
                name: "HostileRuleRan".into(),
                severity: alert_rule::Severity::Info,
                summary: "ran".into(),
                labels: Vec::new(),
                time_ms: window.to_ms,
            }]),
        }
    }
}

alert_rule::export!(Plugin);
