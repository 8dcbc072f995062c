//! Receiving spans and logs into the records store, and reading traces back with their flows.
//!
//! A span is kept as kind `span`: its start and end, its name as text, and labels `trace_id`,
//! `span_id`, `parent_span_id`, `service`, `span_kind`, `status`, `status_message`,
//! `duration_us`, the endpoints found in its attributes (`peer_addr`, `peer_port`,
//! `peer_from`, `local_port`) and then its attributes as they fit (32 labels in all, values cut
//! at 512 bytes). A log record is kind `log`: its body as text, labels `severity`,
//! `severity_number`, `service`, `trace_id`, `span_id`, then attributes. Both are written
//! under the source `otlp`.

use super::join::{SpanFlows, span_flows};
use super::peer::{Endpoints, Peer, endpoints};
use super::{Encoding, LogLine, Span, SpanKind, TelemetryCodec, TelemetryError, check_trace_id};
use crate::records::{Entry, MAX_LABEL_BYTES, MAX_LABELS, MAX_TEXT, MAX_WRITE, RecordQuery};
use crate::records::{RecordStore, Stored};
use crate::store::Store;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The records' source name.
pub const SOURCE: &str = "otlp";
/// Most spans one trace lookup returns.
pub const MAX_TRACE_SPANS: usize = 10_000;

/// What a receive stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub stored: usize,
}

/// One span as a trace lookup shows it, with its flows.
#[derive(Debug, Clone, Serialize)]
pub struct SpanView {
    pub seq: u64,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: String,
    pub service: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub duration_us: u64,
    pub status: String,
    /// `addr:port` of the other end, when the attributes name it.
    pub peer: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub flows: SpanFlows,
}

/// Receives OTLP bodies through a codec and keeps them; answers trace lookups.
pub struct TelemetryService {
    codec: Box<dyn TelemetryCodec>,
    records: Arc<RecordStore>,
    store: Arc<Store>,
    spans: AtomicU64,
    logs: AtomicU64,
    refused: AtomicU64,
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> String {
    crate::records::cut(text, max).to_string()
}

/// Adds attributes after the fixed labels while they fit.
fn add_attributes(labels: &mut Vec<(String, String)>, attrs: &[(String, String)]) {
    for (k, v) in attrs {
        if labels.len() >= MAX_LABELS {
            break;
        }
        if k.is_empty() || k.len() > MAX_LABEL_BYTES || labels.iter().any(|(n, _)| n == k) {
            continue;
        }
        labels.push((k.clone(), cut(v, MAX_LABEL_BYTES)));
    }
}

fn span_entry(s: &Span) -> Entry {
    let ep = endpoints(s.kind, &s.attributes);
    let start_ms = s.start_ns / 1_000_000;
    let end_ms = s.end_ns.max(s.start_ns).div_ceil(1_000_000);
    let mut labels = vec![
        ("trace_id".to_string(), s.trace_id.clone()),
        ("span_id".to_string(), s.span_id.clone()),
        ("span_kind".to_string(), s.kind.as_str().to_string()),
        ("status".to_string(), s.status.to_string()),
        (
            "duration_us".to_string(),
            (s.end_ns.saturating_sub(s.start_ns) / 1000).to_string(),
        ),
    ];
    if let Some(p) = &s.parent_span_id {
        labels.push(("parent_span_id".into(), p.clone()));
    }
    if !s.service.is_empty() {
        labels.push(("service".into(), cut(&s.service, MAX_LABEL_BYTES)));
    }
    if !s.status_message.is_empty() {
        labels.push((
            "status_message".into(),
            cut(&s.status_message, MAX_LABEL_BYTES),
        ));
    }
    let mut flow_filter = None;
    if let Some(p) = ep.remote {
        labels.push(("peer_addr".into(), p.addr.to_string()));
        labels.push(("peer_port".into(), p.port.to_string()));
        labels.push(("peer_from".into(), p.from.to_string()));
        flow_filter = Some(format!(
            "(SrcAddr={a} and SrcPort={n}) or (DstAddr={a} and DstPort={n})",
            a = p.addr,
            n = p.port
        ));
    }
    if let Some(lp) = ep.local_port {
        labels.push(("local_port".into(), lp.to_string()));
    }
    add_attributes(&mut labels, &s.attributes);
    Entry {
        time_ms: start_ms,
        end_ms: Some(end_ms),
        kind: "span".into(),
        text: cut(&s.name, MAX_TEXT),
        labels,
        flow_filter,
    }
}

fn log_entry(l: &LogLine) -> Entry {
    let mut labels = vec![
        ("severity".to_string(), cut(&l.severity(), MAX_LABEL_BYTES)),
        ("severity_number".to_string(), l.severity_number.to_string()),
    ];
    if !l.service.is_empty() {
        labels.push(("service".into(), cut(&l.service, MAX_LABEL_BYTES)));
    }
    if let Some(t) = &l.trace_id {
        labels.push(("trace_id".into(), t.clone()));
    }
    if let Some(s) = &l.span_id {
        labels.push(("span_id".into(), s.clone()));
    }
    add_attributes(&mut labels, &l.attributes);
    Entry {
        time_ms: l.time_ns / 1_000_000,
        end_ms: None,
        kind: "log".into(),
        text: cut(&l.body, MAX_TEXT),
        labels,
        flow_filter: None,
    }
}

/// The endpoints kept on a span record.
fn stored_endpoints(s: &Stored) -> Endpoints {
    let remote = match (
        s.label("peer_addr").and_then(|a| a.parse().ok()),
        s.label("peer_port").and_then(|p| p.parse().ok()),
    ) {
        (Some(addr), Some(port)) => Some(Peer {
            addr,
            port,
            from: "stored",
        }),
        _ => None,
    };
    Endpoints {
        remote,
        local_port: s.label("local_port").and_then(|p| p.parse().ok()),
    }
}

impl TelemetryService {
    pub fn new(
        codec: Box<dyn TelemetryCodec>,
        records: Arc<RecordStore>,
        store: Arc<Store>,
    ) -> TelemetryService {
        TelemetryService {
            codec,
            records,
            store,
            spans: AtomicU64::new(0),
            logs: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn write(&self, entries: Vec<Entry>) -> Result<Accepted, TelemetryError> {
        self.write_as(SOURCE, entries)
    }

    fn write_as(&self, source: &str, entries: Vec<Entry>) -> Result<Accepted, TelemetryError> {
        let n = entries.len();
        let mut it = entries.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Entry> = it.by_ref().take(MAX_WRITE).collect();
            self.records.write(source, chunk)?;
        }
        Ok(Accepted { stored: n })
    }

    /// Keeps log lines read from a file the operator named (`source`: `syslog`, `journald`).
    pub fn keep_logs(&self, source: &str, lines: &[LogLine]) -> Result<Accepted, TelemetryError> {
        let a = self.write_as(source, lines.iter().map(log_entry).collect())?;
        self.logs.fetch_add(a.stored as u64, Ordering::Relaxed);
        Ok(a)
    }

    fn refused<T>(&self, r: Result<T, super::DecodeError>) -> Result<T, TelemetryError> {
        r.map_err(|e| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            TelemetryError::Decode(e)
        })
    }

    /// Decodes an OTLP traces body and keeps its spans.
    pub fn receive_spans(
        &self,
        body: &[u8],
        encoding: Encoding,
    ) -> Result<Accepted, TelemetryError> {
        let spans = self.refused(self.codec.spans(body, encoding))?;
        let a = self.write(spans.iter().map(span_entry).collect())?;
        self.spans.fetch_add(a.stored as u64, Ordering::Relaxed);
        Ok(a)
    }

    /// Decodes an OTLP logs body and keeps its records.
    pub fn receive_logs(
        &self,
        body: &[u8],
        encoding: Encoding,
    ) -> Result<Accepted, TelemetryError> {
        let logs = self.refused(self.codec.logs(body, encoding))?;
        let a = self.write(logs.iter().map(log_entry).collect())?;
        self.logs.fetch_add(a.stored as u64, Ordering::Relaxed);
        Ok(a)
    }

    /// Spans and log records received since start, and requests refused.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.spans.load(Ordering::Relaxed),
            self.logs.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// The spans of a trace, in start order, each with its flows; and the trace's log lines.
    pub fn trace(&self, trace_id: &str) -> Result<(Vec<SpanView>, Vec<Stored>), TelemetryError> {
        let id = check_trace_id(trace_id).map_err(TelemetryError::Invalid)?;
        let q = |kind: &str| RecordQuery {
            from_ms: 0,
            to_ms: u64::MAX,
            kinds: vec![kind.to_string()],
            source: Some(SOURCE.into()),
            labels: vec![("trace_id".into(), id.clone())],
            after_seq: 0,
            limit: MAX_TRACE_SPANS,
        };
        let mut spans = Vec::new();
        for s in self.records.query(&q("span"))? {
            spans.push(self.view(&s)?);
        }
        spans.sort_by_key(|v| (v.start_ms, v.seq));
        let logs = self.records.query(&q("log"))?;
        Ok((spans, logs))
    }

    /// The connections a trace's spans were joined to (client, server, protocol), each once:
    /// what `TraceId=` in a filter selects.
    pub fn trace_connections(
        &self,
        trace_id: &str,
    ) -> Result<Vec<crate::query::trace::Connection>, TelemetryError> {
        let (spans, _) = self.trace(trace_id)?;
        let mut out = Vec::new();
        for c in spans.iter().flat_map(|s| &s.flows.conversations) {
            if let (Ok(a), Ok(b)) = (c.client.parse(), c.server.parse())
                && !out.contains(&(a, b, c.proto))
            {
                out.push((a, b, c.proto));
            }
        }
        Ok(out)
    }

    /// One stored span with its flows.
    pub fn view(&self, s: &Stored) -> Result<SpanView, TelemetryError> {
        let kind = SpanKind::from_name(s.label("span_kind").unwrap_or(""));
        let ep = stored_endpoints(s);
        let end_ms = s.entry.end_ms.unwrap_or(s.entry.time_ms);
        let flows = span_flows(&self.store, kind, s.entry.time_ms, end_ms, &ep)?;
        let get = |n: &str| s.label(n).unwrap_or("").to_string();
        Ok(SpanView {
            seq: s.seq,
            trace_id: get("trace_id"),
            span_id: get("span_id"),
            parent_span_id: s.label("parent_span_id").map(str::to_string),
            name: s.entry.text.clone(),
            kind: kind.as_str().to_string(),
            service: get("service"),
            start_ms: s.entry.time_ms,
            end_ms,
            duration_us: get("duration_us").parse().unwrap_or(0),
            status: get("status"),
            peer: ep
                .remote
                .map(|p| std::net::SocketAddr::new(p.addr, p.port).to_string()),
            labels: s.entry.labels.iter().cloned().collect(),
            flows,
        })
    }
}
