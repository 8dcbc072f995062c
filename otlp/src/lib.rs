//! weir's OTLP adapter: OpenTelemetry traces and logs as OTLP/HTTP sends them
//! (`ExportTraceServiceRequest`, `ExportLogsServiceRequest`; protobuf or JSON, optionally
//! gzip-compressed) decoded into weir's telemetry model ([`weir_core::telemetry`]), which keeps
//! them and joins spans to flows. Also the bodies OTLP/HTTP answers with: an empty
//! `Export*ServiceResponse`, or a `google.rpc.Status` for an error.
//!
//! Every problem is named by its path in OTLP's JSON field names, for both encodings
//! (`resourceSpans[0].scopeSpans[0].spans[3].traceId: a trace id is 16 bytes, got 15`).

mod json;
pub mod proto;

use base64::Engine;
use prost::Message;
use proto::{AnyValue, KeyValue, Value};
use std::io::Read;
use weir_core::telemetry::{DecodeError, Encoding, LogLine, Span, SpanKind, TelemetryCodec, hex};

/// The OTLP codec.
#[derive(Debug, Default, Clone, Copy)]
pub struct Otlp;

fn err(at: &str, problem: impl Into<String>) -> DecodeError {
    DecodeError {
        at: at.to_string(),
        problem: problem.into(),
    }
}

/// Why a body could not be read as sent (before any OTLP decoding); each kind is its own
/// HTTP status (413, 415, 400).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body: inflates to more than {0} bytes, the most accepted")]
    TooLarge(usize),
    #[error("Content-Encoding: '{0}' is not supported (gzip or identity)")]
    Unsupported(String),
    #[error("body: not gzip: {0}")]
    Corrupt(String),
}

/// A body as sent: `identity` (or none) or `gzip`, inflated to at most `limit` bytes.
pub fn decompress(
    body: &[u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    match content_encoding
        .map(|c| c.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| BodyError::Corrupt(e.to_string()))?;
            if out.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            Ok(out)
        }
        Some(other) => Err(BodyError::Unsupported(other.to_string())),
    }
}

/// The success body: an empty `Export*ServiceResponse`.
pub fn success_body(encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => proto::ExportResponse::default().encode_to_vec(),
        Encoding::Json => b"{}".to_vec(),
    }
}

/// An error body: `google.rpc.Status` with `code` (gRPC's numbering: 3 invalid argument, 8
/// resource exhausted, 13 internal) and `message`.
pub fn status_body(code: i32, message: &str, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => proto::RpcStatus {
            code,
            message: message.to_string(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    }
}

/// An attribute value as text: strings as they are, arrays and maps as JSON, bytes as base64.
pub fn value_text(v: &AnyValue) -> String {
    match &v.value {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Double(d)) => d.to_string(),
        Some(Value::Bytes(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(_) => value_json(v).to_string(),
    }
}

fn value_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None => J::Null,
        Some(Value::String(s)) => J::from(s.clone()),
        Some(Value::Bool(b)) => J::from(*b),
        Some(Value::Int(i)) => J::from(*i),
        Some(Value::Double(d)) => J::from(*d),
        Some(Value::Bytes(b)) => J::from(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(Value::Array(a)) => J::Array(a.values.iter().map(value_json).collect()),
        Some(Value::KvList(l)) => J::Object(
            l.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map(value_json).unwrap_or(J::Null),
                    )
                })
                .collect(),
        ),
    }
}

fn text_attributes(attrs: &[KeyValue]) -> Vec<(String, String)> {
    attrs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(value_text).unwrap_or_default(),
            )
        })
        .collect()
}

fn service(resource: &Option<proto::Resource>) -> (String, Vec<(String, String)>) {
    let attrs = resource
        .as_ref()
        .map(|r| text_attributes(&r.attributes))
        .unwrap_or_default();
    let name = attrs
        .iter()
        .find(|(k, _)| k == "service.name")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    (name, attrs)
}

/// An id field: `len` bytes (not all zero) when `required`, else also empty.
fn id_hex(
    bytes: &[u8],
    len: usize,
    required: bool,
    at: &str,
) -> Result<Option<String>, DecodeError> {
    if bytes.is_empty() && !required {
        return Ok(None);
    }
    if bytes.len() != len {
        return Err(err(
            at,
            format!("expected {len} bytes, got {}", bytes.len()),
        ));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(err(at, "all zeros is not a valid id"));
    }
    Ok(Some(hex(bytes)))
}

fn merged(own: Vec<(String, String)>, resource: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = own;
    for (k, v) in resource {
        if !out.iter().any(|(n, _)| n == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

/// Spans of a decoded request, checked.
pub fn spans_of(req: proto::ExportTraceServiceRequest) -> Result<Vec<Span>, DecodeError> {
    let mut out = Vec::new();
    for (i, rs) in req.resource_spans.into_iter().enumerate() {
        let (svc, res_attrs) = service(&rs.resource);
        for (j, ss) in rs.scope_spans.into_iter().enumerate() {
            for (k, s) in ss.spans.into_iter().enumerate() {
                let at = format!("resourceSpans[{i}].scopeSpans[{j}].spans[{k}]");
                let f = |n: &str| format!("{at}.{n}");
                let trace_id = id_hex(&s.trace_id, 16, true, &f("traceId"))?.unwrap_or_default();
                let span_id = id_hex(&s.span_id, 8, true, &f("spanId"))?.unwrap_or_default();
                let parent_span_id = id_hex(&s.parent_span_id, 8, false, &f("parentSpanId"))?;
                if s.start_time_unix_nano == 0 {
                    return Err(err(&f("startTimeUnixNano"), "missing (0)"));
                }
                if s.end_time_unix_nano < s.start_time_unix_nano {
                    return Err(err(
                        &f("endTimeUnixNano"),
                        format!(
                            "{} is before startTimeUnixNano {}",
                            s.end_time_unix_nano, s.start_time_unix_nano
                        ),
                    ));
                }
                let (status, status_message) = match &s.status {
                    Some(st) => (
                        match st.code {
                            1 => "ok",
                            2 => "error",
                            _ => "unset",
                        },
                        st.message.clone(),
                    ),
                    None => ("unset", String::new()),
                };
                out.push(Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    name: s.name,
                    kind: SpanKind::from_number(s.kind),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    status,
                    status_message,
                    service: svc.clone(),
                    attributes: merged(text_attributes(&s.attributes), &res_attrs),
                });
            }
        }
    }
    Ok(out)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Log records of a decoded request, checked.
pub fn logs_of(req: proto::ExportLogsServiceRequest) -> Result<Vec<LogLine>, DecodeError> {
    let mut out = Vec::new();
    for (i, rl) in req.resource_logs.into_iter().enumerate() {
        let (svc, res_attrs) = service(&rl.resource);
        for (j, sl) in rl.scope_logs.into_iter().enumerate() {
            for (k, l) in sl.log_records.into_iter().enumerate() {
                let at = format!("resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}]");
                let f = |n: &str| format!("{at}.{n}");
                if !(0..=24).contains(&l.severity_number) {
                    return Err(err(
                        &f("severityNumber"),
                        format!("{} is outside 0-24", l.severity_number),
                    ));
                }
                let time_ns = [l.time_unix_nano, l.observed_time_unix_nano]
                    .into_iter()
                    .find(|t| *t != 0)
                    .unwrap_or_else(now_ns);
                out.push(LogLine {
                    time_ns,
                    severity_number: l.severity_number,
                    severity_text: l.severity_text,
                    body: l.body.as_ref().map(value_text).unwrap_or_default(),
                    service: svc.clone(),
                    trace_id: id_hex(&l.trace_id, 16, false, &f("traceId"))?,
                    span_id: id_hex(&l.span_id, 8, false, &f("spanId"))?,
                    attributes: merged(text_attributes(&l.attributes), &res_attrs),
                });
            }
        }
    }
    Ok(out)
}

fn protobuf<M: Message + Default>(body: &[u8]) -> Result<M, DecodeError> {
    M::decode(body).map_err(|e| err("body", format!("not an OTLP protobuf message: {e}")))
}

impl TelemetryCodec for Otlp {
    fn spans(&self, body: &[u8], encoding: Encoding) -> Result<Vec<Span>, DecodeError> {
        let req = match encoding {
            Encoding::Protobuf => protobuf(body)?,
            Encoding::Json => json::traces(body)?,
        };
        spans_of(req)
    }

    fn logs(&self, body: &[u8], encoding: Encoding) -> Result<Vec<LogLine>, DecodeError> {
        let req = match encoding {
            Encoding::Protobuf => protobuf(body)?,
            Encoding::Json => json::logs(body)?,
        };
        logs_of(req)
    }
}

#[cfg(test)]
mod tests;
