//! The `records` capability: the agent's records store (`weir_core::records`), written under
//! the calling plugin's name and read by any plugin granted it. Host work runs within the
//! call's deadline like every store access.

use crate::bindings::imports::weir::plugin::records::{Entry, Host, RecordQuery, Stored};
use crate::deadline::within;
use crate::state::HostState;
use weir_core::records as core;

fn to_core(e: Entry) -> core::Entry {
    core::Entry {
        time_ms: e.time_ms,
        end_ms: e.end_ms,
        kind: e.kind,
        text: e.text,
        labels: e.labels,
        flow_filter: e.flow_filter,
    }
}

fn to_wit(s: core::Stored) -> Stored {
    Stored {
        seq: s.seq,
        source: s.source,
        entry: Entry {
            time_ms: s.entry.time_ms,
            end_ms: s.entry.end_ms,
            kind: s.entry.kind,
            text: s.entry.text,
            labels: s.entry.labels,
            flow_filter: s.entry.flow_filter,
        },
    }
}

impl HostState {
    fn records(&self) -> Result<std::sync::Arc<core::RecordStore>, String> {
        self.ctx
            .services
            .records
            .get()
            .cloned()
            .ok_or_else(|| "no records store in this host".to_string())
    }
}

impl Host for HostState {
    fn write(&mut self, entries: Vec<Entry>) -> Result<Vec<u64>, String> {
        let store = self.records()?;
        let source = self.ctx.name.clone();
        let entries: Vec<core::Entry> = entries.into_iter().map(to_core).collect();
        within(self, "records.write", move || {
            store.write(&source, entries).map_err(|e| e.to_string())
        })
    }

    fn query(&mut self, q: RecordQuery) -> Result<Vec<Stored>, String> {
        if q.range.from_ms > q.range.to_ms {
            return Err(format!(
                "reversed time range: {} > {}",
                q.range.from_ms, q.range.to_ms
            ));
        }
        let store = self.records()?;
        let q = core::RecordQuery {
            from_ms: q.range.from_ms,
            to_ms: q.range.to_ms,
            kinds: q.kinds,
            source: q.source,
            labels: q.labels,
            after_seq: q.after_seq,
            limit: q.limit as usize,
        };
        let rows = within(self, "records.query", move || {
            store.query(&q).map_err(|e| e.to_string())
        })?;
        Ok(rows.into_iter().map(to_wit).collect())
    }
}
