use super::*;
use proto::{
    ArrayValue, ExportLogsServiceRequest, ExportTraceServiceRequest, LogRecord, Resource,
    ResourceLogs, ResourceSpans, RpcStatus, ScopeLogs, ScopeSpans, Status,
};

/// The example from the OTLP specification's repository (examples/trace.json), shortened.
const TRACE_JSON: &str = r#"{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
    "scopeSpans": [{
      "scope": {"name": "my.library", "version": "1.0.0"},
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "EEE19B7EC3C1B173",
        "name": "I'm a server span",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": 1544712661000000000,
        "kind": 2,
        "attributes": [
          {"key": "my.span.attr", "value": {"stringValue": "some value"}},
          {"key": "client.address", "value": {"stringValue": "198.18.0.1"}},
          {"key": "client.port", "value": {"intValue": "40000"}},
          {"key": "list", "value": {"arrayValue": {"values": [{"intValue": 1}, {"boolValue": true}]}}}
        ],
        "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
        "events": [{"name": "ignored"}]
      }]
    }]
  }]
}"#;

#[test]
fn json_traces_decode_with_hex_ids_string_integers_and_resource_attributes() {
    let spans = Otlp.spans(TRACE_JSON.as_bytes(), Encoding::Json).unwrap();
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(s.parent_span_id.as_deref(), Some("eee19b7ec3c1b173"));
    assert_eq!(
        (s.kind, s.status, s.status_message.as_str()),
        (SpanKind::Server, "error", "boom")
    );
    assert_eq!(s.end_ns - s.start_ns, 1_000_000_000);
    assert_eq!(s.service, "my.service");
    let get = |k: &str| {
        s.attributes
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("client.port"), Some("40000"));
    assert_eq!(get("list"), Some("[1,true]"));
    assert_eq!(get("service.name"), Some("my.service"));
}

#[test]
fn protobuf_traces_decode_like_json() {
    let json = Otlp.spans(TRACE_JSON.as_bytes(), Encoding::Json).unwrap();
    let kv = |k: &str, v: Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::String("my.service".into()))],
            }),
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![proto::Span {
                    trace_id: vec![
                        0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33,
                        0x81, 0x3f, 0xc6, 0x0c,
                    ],
                    span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
                    parent_span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73],
                    name: "I'm a server span".into(),
                    kind: 2,
                    start_time_unix_nano: 1544712660000000000,
                    end_time_unix_nano: 1544712661000000000,
                    attributes: vec![
                        kv("my.span.attr", Value::String("some value".into())),
                        kv("client.address", Value::String("198.18.0.1".into())),
                        kv("client.port", Value::Int(40000)),
                        kv(
                            "list",
                            Value::Array(ArrayValue {
                                values: vec![
                                    AnyValue {
                                        value: Some(Value::Int(1)),
                                    },
                                    AnyValue {
                                        value: Some(Value::Bool(true)),
                                    },
                                ],
                            }),
                        ),
                    ],
                    status: Some(Status {
                        message: "boom".into(),
                        code: 2,
                    }),
                }],
            }],
        }],
    };
    let bytes = req.encode_to_vec();
    assert_eq!(Otlp.spans(&bytes, Encoding::Protobuf).unwrap(), json);
    // Truncated: refused, naming the message.
    let e = Otlp
        .spans(&bytes[..bytes.len() - 3], Encoding::Protobuf)
        .unwrap_err();
    assert_eq!(e.at, "body");
    assert!(e.problem.contains("not an OTLP protobuf message"), "{e}");
}

#[test]
fn bad_json_names_the_place() {
    let cases: &[(&str, &str)] = &[
        ("{\"resourceSpans\": [", "body: not JSON"),
        ("[]", "body: expected an object, got an array"),
        (
            "{\"resourceSpans\": {}}",
            "resourceSpans: expected an array, got an object",
        ),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"1"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected hex digits, got 'zz'",
        ),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc6","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"1"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 16 bytes, got 15",
        ),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"x1"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: expected an unsigned integer, got 'x1'",
        ),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"5","endTimeUnixNano":"4"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].endTimeUnixNano: 4 is before startTimeUnixNano 5",
        ),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"5","endTimeUnixNano":"6","kind":"SPAN_KIND_NOPE"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].kind: unknown value 'SPAN_KIND_NOPE'",
        ),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"5","attributes":[{"key":"k","value":{"intValue":"1.5"}}]}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.intValue: expected an integer, got '1.5'",
        ),
    ];
    for (body, want) in cases {
        let e = Otlp.spans(body.as_bytes(), Encoding::Json).unwrap_err();
        assert!(
            e.to_string().starts_with(want),
            "{body}\n  got {e}\n want {want}"
        );
    }
}

#[test]
fn logs_decode_in_both_encodings_with_severity_and_trace_context() {
    let body = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
      "scopeLogs":[{"logRecords":[
        {"timeUnixNano":"1544712660300000000","severityNumber":17,"severityText":"ERROR",
         "body":{"stringValue":"payment failed"},"traceId":"5b8efff798038103d269b633813fc60c",
         "spanId":"eee19b7ec3c1b174","attributes":[{"key":"code","value":{"intValue":502}}]},
        {"observedTimeUnixNano":"1544712660400000000","severityText":"Notice",
         "body":{"kvlistValue":{"values":[{"key":"a","value":{"doubleValue":1.5}}]}}}
      ]}]}]}"#;
    let logs = Otlp.logs(body.as_bytes(), Encoding::Json).unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(
        (
            logs[0].severity(),
            logs[0].body.as_str(),
            logs[0].service.as_str()
        ),
        ("error".to_string(), "payment failed", "shop")
    );
    assert_eq!(logs[0].span_id.as_deref(), Some("eee19b7ec3c1b174"));
    assert_eq!(logs[1].time_ns, 1544712660400000000);
    assert_eq!(
        (logs[1].severity(), logs[1].body.as_str()),
        ("notice".to_string(), r#"{"a":1.5}"#)
    );
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                scope: None,
                log_records: vec![LogRecord {
                    time_unix_nano: 5,
                    severity_number: 30,
                    ..Default::default()
                }],
            }],
        }],
    };
    let e = Otlp
        .logs(&req.encode_to_vec(), Encoding::Protobuf)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "resourceLogs[0].scopeLogs[0].logRecords[0].severityNumber: 30 is outside 0-24"
    );
}

#[test]
fn gzip_bodies_inflate_within_the_limit_and_responses_are_otlp_shaped() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(TRACE_JSON.as_bytes()).unwrap();
    let packed = gz.finish().unwrap();
    let out = decompress(&packed, Some("gzip"), 1 << 20).unwrap();
    assert_eq!(out, TRACE_JSON.as_bytes());
    let e = decompress(&packed, Some("gzip"), 100).unwrap_err();
    assert!(matches!(e, BodyError::TooLarge(100)), "{e}");
    assert!(e.to_string().contains("more than 100 bytes"), "{e}");
    assert!(matches!(
        decompress(b"xx", Some("gzip"), 100),
        Err(BodyError::Corrupt(_))
    ));
    let e = decompress(b"x", Some("br"), 1).unwrap_err();
    assert!(matches!(e, BodyError::Unsupported(_)), "{e}");
    assert!(e.to_string().starts_with("Content-Encoding: "), "{e}");
    assert!(success_body(Encoding::Protobuf).is_empty());
    let st = RpcStatus::decode(status_body(3, "bad", Encoding::Protobuf).as_slice()).unwrap();
    assert_eq!((st.code, st.message.as_str()), (3, "bad"));
}
