//! OTLP's JSON encoding (the protobuf JSON mapping with OTLP's exceptions: trace and span ids
//! as hex, enums as integers, 64-bit integers as decimal strings or numbers) read into the
//! same messages as protobuf, every problem named by its path
//! (`resourceSpans[0].scopeSpans[1].spans[2].startTimeUnixNano`). Field names are
//! lowerCamelCase; snake_case is accepted too. Unknown fields are ignored, as the
//! specification asks of receivers.

use crate::proto::*;
use base64::Engine;
use serde_json::{Map, Value as J};
use weir_core::telemetry::DecodeError;

fn err(at: &str, problem: impl Into<String>) -> DecodeError {
    DecodeError {
        at: at.to_string(),
        problem: problem.into(),
    }
}

/// Parses the body, naming the line and column of a syntax error.
pub fn parse(body: &[u8]) -> Result<J, DecodeError> {
    serde_json::from_slice(body).map_err(|e| err("body", format!("not JSON: {e}")))
}

fn field<'a>(o: &'a Map<String, J>, camel: &str, snake: &str) -> Option<&'a J> {
    o.get(camel)
        .or_else(|| o.get(snake))
        .filter(|v| !v.is_null())
}

fn object<'a>(v: &'a J, at: &str) -> Result<&'a Map<String, J>, DecodeError> {
    v.as_object()
        .ok_or_else(|| err(at, format!("expected an object, got {}", type_name(v))))
}

fn type_name(v: &J) -> &'static str {
    match v {
        J::Null => "null",
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "an array",
        J::Object(_) => "an object",
    }
}

/// Each element of an array field, with its path.
fn each<'a, T>(
    o: &'a Map<String, J>,
    at: &str,
    camel: &str,
    snake: &str,
    mut f: impl FnMut(&'a J, &str) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let Some(v) = field(o, camel, snake) else {
        return Ok(vec![]);
    };
    let here = join(at, camel);
    let list = v
        .as_array()
        .ok_or_else(|| err(&here, format!("expected an array, got {}", type_name(v))))?;
    list.iter()
        .enumerate()
        .map(|(i, x)| f(x, &format!("{here}[{i}]")))
        .collect()
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

fn string(o: &Map<String, J>, at: &str, camel: &str, snake: &str) -> Result<String, DecodeError> {
    match field(o, camel, snake) {
        None => Ok(String::new()),
        Some(J::String(s)) => Ok(s.clone()),
        Some(v) => Err(err(
            &join(at, camel),
            format!("expected a string, got {}", type_name(v)),
        )),
    }
}

/// A 64-bit unsigned integer: a decimal string or a number.
fn u64_field(o: &Map<String, J>, at: &str, camel: &str, snake: &str) -> Result<u64, DecodeError> {
    let here = || join(at, camel);
    match field(o, camel, snake) {
        None => Ok(0),
        Some(J::String(s)) => s
            .parse()
            .map_err(|_| err(&here(), format!("expected an unsigned integer, got '{s}'"))),
        Some(J::Number(n)) => n
            .as_u64()
            .ok_or_else(|| err(&here(), format!("expected an unsigned integer, got {n}"))),
        Some(v) => Err(err(
            &here(),
            format!("expected an integer, got {}", type_name(v)),
        )),
    }
}

/// An enum: its number (names like `SPAN_KIND_CLIENT` are looked up in `names`).
fn enum_field(
    o: &Map<String, J>,
    at: &str,
    camel: &str,
    snake: &str,
    names: &[&str],
) -> Result<i32, DecodeError> {
    let here = || join(at, camel);
    match field(o, camel, snake) {
        None => Ok(0),
        Some(J::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| err(&here(), format!("expected an enum number, got {n}"))),
        Some(J::String(s)) => names
            .iter()
            .position(|n| n == s)
            .map(|i| i as i32)
            .ok_or_else(|| err(&here(), format!("unknown value '{s}'"))),
        Some(v) => Err(err(
            &here(),
            format!("expected an enum number, got {}", type_name(v)),
        )),
    }
}

/// A trace or span id: hex digits (OTLP/JSON's exception to base64).
fn id(o: &Map<String, J>, at: &str, camel: &str, snake: &str) -> Result<Vec<u8>, DecodeError> {
    let here = join(at, camel);
    let s = match field(o, camel, snake) {
        None => return Ok(vec![]),
        Some(J::String(s)) => s,
        Some(v) => {
            return Err(err(
                &here,
                format!("expected hex digits, got {}", type_name(v)),
            ));
        }
    };
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(
            &here,
            format!(
                "expected hex digits, got '{}'",
                s.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok((0..s.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect())
}

fn any_value(v: &J, at: &str) -> Result<AnyValue, DecodeError> {
    let o = object(v, at)?;
    let value = if let Some(s) = field(o, "stringValue", "string_value") {
        Some(Value::String(
            s.as_str()
                .ok_or_else(|| err(&join(at, "stringValue"), "expected a string"))?
                .to_string(),
        ))
    } else if let Some(b) = field(o, "boolValue", "bool_value") {
        Some(Value::Bool(b.as_bool().ok_or_else(|| {
            err(&join(at, "boolValue"), "expected a boolean")
        })?))
    } else if let Some(i) = field(o, "intValue", "int_value") {
        let here = join(at, "intValue");
        Some(Value::Int(match i {
            J::String(s) => s
                .parse()
                .map_err(|_| err(&here, format!("expected an integer, got '{s}'")))?,
            J::Number(n) => n
                .as_i64()
                .ok_or_else(|| err(&here, format!("expected an integer, got {n}")))?,
            other => {
                return Err(err(
                    &here,
                    format!("expected an integer, got {}", type_name(other)),
                ));
            }
        }))
    } else if let Some(d) = field(o, "doubleValue", "double_value") {
        let here = join(at, "doubleValue");
        Some(Value::Double(match d {
            J::Number(n) => n.as_f64().unwrap_or(0.0),
            J::String(s) => match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => s
                    .parse()
                    .map_err(|_| err(&here, format!("expected a number, got '{s}'")))?,
            },
            other => {
                return Err(err(
                    &here,
                    format!("expected a number, got {}", type_name(other)),
                ));
            }
        }))
    } else if let Some(a) = field(o, "arrayValue", "array_value") {
        let here = join(at, "arrayValue");
        let ao = object(a, &here)?;
        Some(Value::Array(ArrayValue {
            values: each(ao, &here, "values", "values", any_value)?,
        }))
    } else if let Some(k) = field(o, "kvlistValue", "kvlist_value") {
        let here = join(at, "kvlistValue");
        let ko = object(k, &here)?;
        Some(Value::KvList(KeyValueList {
            values: each(ko, &here, "values", "values", key_value)?,
        }))
    } else if let Some(b) = field(o, "bytesValue", "bytes_value") {
        let here = join(at, "bytesValue");
        let s = b
            .as_str()
            .ok_or_else(|| err(&here, "expected base64 text"))?;
        Some(Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| err(&here, format!("not base64: {e}")))?,
        ))
    } else {
        None
    };
    Ok(AnyValue { value })
}

fn key_value(v: &J, at: &str) -> Result<KeyValue, DecodeError> {
    let o = object(v, at)?;
    Ok(KeyValue {
        key: string(o, at, "key", "key")?,
        value: field(o, "value", "value")
            .map(|x| any_value(x, &join(at, "value")))
            .transpose()?,
    })
}

fn attributes(o: &Map<String, J>, at: &str) -> Result<Vec<KeyValue>, DecodeError> {
    each(o, at, "attributes", "attributes", key_value)
}

fn resource(o: &Map<String, J>, at: &str) -> Result<Option<Resource>, DecodeError> {
    field(o, "resource", "resource")
        .map(|r| {
            let here = join(at, "resource");
            Ok(Resource {
                attributes: attributes(object(r, &here)?, &here)?,
            })
        })
        .transpose()
}

fn scope(o: &Map<String, J>, at: &str) -> Result<Option<InstrumentationScope>, DecodeError> {
    field(o, "scope", "scope")
        .map(|s| {
            let here = join(at, "scope");
            let so = object(s, &here)?;
            Ok(InstrumentationScope {
                name: string(so, &here, "name", "name")?,
                version: string(so, &here, "version", "version")?,
            })
        })
        .transpose()
}

const SPAN_KINDS: &[&str] = &[
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

fn span(v: &J, at: &str) -> Result<Span, DecodeError> {
    let o = object(v, at)?;
    let status = field(o, "status", "status")
        .map(|s| {
            let here = join(at, "status");
            let so = object(s, &here)?;
            Ok::<_, DecodeError>(Status {
                message: string(so, &here, "message", "message")?,
                code: enum_field(so, &here, "code", "code", STATUS_CODES)?,
            })
        })
        .transpose()?;
    Ok(Span {
        trace_id: id(o, at, "traceId", "trace_id")?,
        span_id: id(o, at, "spanId", "span_id")?,
        parent_span_id: id(o, at, "parentSpanId", "parent_span_id")?,
        name: string(o, at, "name", "name")?,
        kind: enum_field(o, at, "kind", "kind", SPAN_KINDS)?,
        start_time_unix_nano: u64_field(o, at, "startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: u64_field(o, at, "endTimeUnixNano", "end_time_unix_nano")?,
        attributes: attributes(o, at)?,
        status,
    })
}

/// An `ExportTraceServiceRequest` in JSON.
pub fn traces(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    let v = parse(body)?;
    let o = object(&v, "body")?;
    Ok(ExportTraceServiceRequest {
        resource_spans: each(o, "", "resourceSpans", "resource_spans", |rs, at| {
            let ro = object(rs, at)?;
            Ok(ResourceSpans {
                resource: resource(ro, at)?,
                scope_spans: each(ro, at, "scopeSpans", "scope_spans", |ss, at| {
                    let so = object(ss, at)?;
                    Ok(ScopeSpans {
                        scope: scope(so, at)?,
                        spans: each(so, at, "spans", "spans", span)?,
                    })
                })?,
            })
        })?,
    })
}

const SEVERITIES: &[&str] = &[
    "SEVERITY_NUMBER_UNSPECIFIED",
    "SEVERITY_NUMBER_TRACE",
    "SEVERITY_NUMBER_TRACE2",
    "SEVERITY_NUMBER_TRACE3",
    "SEVERITY_NUMBER_TRACE4",
    "SEVERITY_NUMBER_DEBUG",
    "SEVERITY_NUMBER_DEBUG2",
    "SEVERITY_NUMBER_DEBUG3",
    "SEVERITY_NUMBER_DEBUG4",
    "SEVERITY_NUMBER_INFO",
    "SEVERITY_NUMBER_INFO2",
    "SEVERITY_NUMBER_INFO3",
    "SEVERITY_NUMBER_INFO4",
    "SEVERITY_NUMBER_WARN",
    "SEVERITY_NUMBER_WARN2",
    "SEVERITY_NUMBER_WARN3",
    "SEVERITY_NUMBER_WARN4",
    "SEVERITY_NUMBER_ERROR",
    "SEVERITY_NUMBER_ERROR2",
    "SEVERITY_NUMBER_ERROR3",
    "SEVERITY_NUMBER_ERROR4",
    "SEVERITY_NUMBER_FATAL",
    "SEVERITY_NUMBER_FATAL2",
    "SEVERITY_NUMBER_FATAL3",
    "SEVERITY_NUMBER_FATAL4",
];

fn log_record(v: &J, at: &str) -> Result<LogRecord, DecodeError> {
    let o = object(v, at)?;
    Ok(LogRecord {
        time_unix_nano: u64_field(o, at, "timeUnixNano", "time_unix_nano")?,
        observed_time_unix_nano: u64_field(
            o,
            at,
            "observedTimeUnixNano",
            "observed_time_unix_nano",
        )?,
        severity_number: enum_field(o, at, "severityNumber", "severity_number", SEVERITIES)?,
        severity_text: string(o, at, "severityText", "severity_text")?,
        body: field(o, "body", "body")
            .map(|b| any_value(b, &join(at, "body")))
            .transpose()?,
        attributes: attributes(o, at)?,
        trace_id: id(o, at, "traceId", "trace_id")?,
        span_id: id(o, at, "spanId", "span_id")?,
    })
}

/// An `ExportLogsServiceRequest` in JSON.
pub fn logs(body: &[u8]) -> Result<ExportLogsServiceRequest, DecodeError> {
    let v = parse(body)?;
    let o = object(&v, "body")?;
    Ok(ExportLogsServiceRequest {
        resource_logs: each(o, "", "resourceLogs", "resource_logs", |rl, at| {
            let ro = object(rl, at)?;
            Ok(ResourceLogs {
                resource: resource(ro, at)?,
                scope_logs: each(ro, at, "scopeLogs", "scope_logs", |sl, at| {
                    let so = object(sl, at)?;
                    Ok(ScopeLogs {
                        scope: scope(so, at)?,
                        log_records: each(so, at, "logRecords", "log_records", log_record)?,
                    })
                })?,
            })
        })?,
    })
}
