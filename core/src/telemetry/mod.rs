//! Application telemetry beside the flows: OpenTelemetry spans and log records received over
//! OTLP/HTTP, kept in the records store (kinds `span` and `log`) with its retention, and spans
//! joined to the stored conversations that carried them.
//!
//! - [`TelemetryCodec`] is the port an adapter implements (the `weir-otlp` crate decodes OTLP
//!   protobuf and JSON): bytes in, [`Span`]s and [`LogLine`]s out, or a [`DecodeError`] naming
//!   the place.
//! - [`TelemetryService`] stores what was decoded (all or nothing per request) and answers
//!   trace lookups with each span's flows.
//! - [`peer`]: which address and port a span's attributes name (current and older semantic
//!   conventions, URLs).
//! - [`join`]: a span to the conversations of its connection.
//! - [`logfile`]: syslog files and systemd journals the operator names, as log lines.

pub mod join;
pub mod logfile;
pub mod peer;
mod service;

pub use service::{Accepted, SpanView, TelemetryService};

use std::fmt;

/// How a request body is encoded (OTLP/HTTP: `application/x-protobuf` or `application/json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a `Content-Type` header (parameters ignored); None for anything else.
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// What a span did, as OTLP names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// From OTLP's enum number (unknown numbers are `Unspecified`).
    pub fn from_number(n: i32) -> SpanKind {
        match n {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// From [`SpanKind::as_str`]'s names (anything else is `Unspecified`).
    pub fn from_name(name: &str) -> SpanKind {
        match name {
            "internal" => SpanKind::Internal,
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// One span, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    /// `unset`, `ok` or `error`.
    pub status: &'static str,
    pub status_message: String,
    /// The resource's `service.name` ("" when none).
    pub service: String,
    /// Attributes with values as text (arrays and maps as JSON), span's own first.
    pub attributes: Vec<(String, String)>,
}

/// One log record, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// The event's time, or when it was observed when the event has none (Unix ns).
    pub time_ns: u64,
    /// OTLP severity number (0 unspecified, 1-4 trace, 5-8 debug, 9-12 info, 13-16 warn,
    /// 17-20 error, 21-24 fatal).
    pub severity_number: i32,
    pub severity_text: String,
    pub body: String,
    pub service: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub attributes: Vec<(String, String)>,
}

impl LogLine {
    /// The severity's short name from the number, else from the text ("" when neither).
    pub fn severity(&self) -> String {
        let by_number = match self.severity_number {
            1..=4 => "trace",
            5..=8 => "debug",
            9..=12 => "info",
            13..=16 => "warn",
            17..=20 => "error",
            21..=24 => "fatal",
            _ => "",
        };
        if by_number.is_empty() {
            self.severity_text.to_ascii_lowercase()
        } else {
            by_number.to_string()
        }
    }
}

/// A body that could not be decoded: where (`resourceSpans[0].scopeSpans[1].spans[2].traceId`,
/// or the protobuf message and field) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub at: String,
    pub problem: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.at, self.problem)
        }
    }
}

impl std::error::Error for DecodeError {}

/// The port an OTLP adapter implements.
pub trait TelemetryCodec: Send + Sync {
    /// An `ExportTraceServiceRequest` body to its spans.
    fn spans(&self, body: &[u8], encoding: Encoding) -> Result<Vec<Span>, DecodeError>;
    /// An `ExportLogsServiceRequest` body to its log records.
    fn logs(&self, body: &[u8], encoding: Encoding) -> Result<Vec<LogLine>, DecodeError>;
}

/// What can go wrong receiving or reading telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The body is malformed (the message names the place); nothing of it was stored.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The request is wrong otherwise (a bad trace id, ...).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Records(#[from] crate::records::RecordError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// Checks a trace id (32 hex digits, not all zero) and returns it lowercased.
pub fn check_trace_id(text: &str) -> Result<String, String> {
    check_id(text, 32, "trace id")
}

/// Checks a span id (16 hex digits, not all zero) and returns it lowercased.
pub fn check_span_id(text: &str) -> Result<String, String> {
    check_id(text, 16, "span id")
}

fn check_id(text: &str, digits: usize, what: &str) -> Result<String, String> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "a {what} is {digits} hex digits, got '{}'",
            text.chars().take(80).collect::<String>()
        ));
    }
    if text.bytes().all(|b| b == b'0') {
        return Err(format!("a {what} of all zeros is invalid"));
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
