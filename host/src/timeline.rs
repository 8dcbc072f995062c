//! The `timeline` capability: entries kept in the records store as kind `timeline`, their
//! lane, severity and trace id as labels (`lane`, `severity`, `trace_id`), so `weir records
//! --kind timeline` and `/api/v1/records?kind=timeline` list them.

use crate::bindings::imports::weir::plugin::timeline::{Entry, Host};
use crate::bindings::types::Severity;
use crate::deadline::within;
use crate::state::HostState;

/// Longest lane name, bytes.
pub const MAX_LANE: usize = 64;

fn to_record(e: Entry, i: usize) -> Result<weir_core::records::Entry, String> {
    if e.lane.is_empty() || e.lane.len() > MAX_LANE {
        return Err(format!(
            "entry {i}: lane must be 1-{MAX_LANE} bytes, got {}",
            e.lane.len()
        ));
    }
    let severity = match e.severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    };
    let mut labels = vec![
        ("lane".to_string(), e.lane),
        ("severity".to_string(), severity.to_string()),
    ];
    if let Some(t) = e.trace_id {
        labels.push(("trace_id".to_string(), t));
    }
    labels.extend(e.labels);
    Ok(weir_core::records::Entry {
        time_ms: e.start_ms,
        end_ms: e.end_ms,
        kind: "timeline".into(),
        text: e.text,
        labels,
        flow_filter: e.flow_filter,
    })
}

impl Host for HostState {
    fn add(&mut self, entries: Vec<Entry>) -> Result<Vec<u64>, String> {
        let store = self.ctx.services.records.get().cloned().ok_or_else(|| {
            "no records store in this host (the timeline lives there)".to_string()
        })?;
        let records = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| to_record(e, i))
            .collect::<Result<Vec<_>, _>>()?;
        let source = self.ctx.name.clone();
        within(self, "timeline.add", move || {
            store.write(&source, records).map_err(|e| e.to_string())
        })
    }
}
