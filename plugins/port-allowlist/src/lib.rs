//! A check: passes when every flow of the window (matching `filter`) goes to a destination
//! port in `allowed` (comma-separated, default `53,80,443`); otherwise fails with a table of
//! the other ports (bytes, flows) and puts one timeline entry per offending port.

use weir_plugin_sdk::check::{
    self, Guest, Metric, PluginError, Severity, Table, TimeRange, Value, Verdict, config, flows,
    timeline,
};

struct Plugin;

impl Guest for Plugin {
    fn check(window: TimeRange) -> Result<Verdict, PluginError> {
        let allowed: Vec<u64> = config::get("allowed")
            .unwrap_or_else(|| "53,80,443".into())
            .split(',')
            .map(|p| {
                p.trim()
                    .parse()
                    .map_err(|_| PluginError::InvalidInput(format!("allowed: {p:?} is not a port")))
            })
            .collect::<Result<_, _>>()?;
        let filter = config::get("filter").unwrap_or_default();
        let groups = flows::aggregate(
            &filter,
            window,
            &["DstPort".to_string()],
            Metric::Bytes,
            1000,
        )
        .map_err(PluginError::InvalidInput)?;
        let mut rows = Vec::new();
        let mut marks = Vec::new();
        for g in &groups {
            let Some(Value::Number(port)) = g.key.first() else {
                continue;
            };
            if allowed.contains(port) {
                continue;
            }
            rows.push(vec![
                port.to_string(),
                g.bytes.to_string(),
                g.flows.to_string(),
            ]);
            marks.push(timeline::Entry {
                start_ms: window.from_ms,
                end_ms: Some(window.to_ms),
                lane: "port-allowlist".into(),
                text: format!("traffic to port {port}, not allowed"),
                severity: Severity::Warning,
                labels: vec![("port".into(), port.to_string())],
                flow_filter: Some(format!("DstPort={port}")),
                trace_id: None,
            });
        }
        if !marks.is_empty() {
            // The verdict stands without the timeline (not granted, or no store): best effort.
            let _ = timeline::add(&marks);
        }
        Ok(Verdict {
            pass: rows.is_empty(),
            summary: if rows.is_empty() {
                format!("{} ports carried traffic, all allowed", groups.len())
            } else {
                format!("{} ports not allowed carried traffic", rows.len())
            },
            table: Table {
                columns: vec!["DstPort".into(), "Bytes".into(), "Flows".into()],
                rows,
            },
        })
    }
}

check::export!(Plugin);
