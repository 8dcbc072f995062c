//! OpenTelemetry into the agent: the real OpenTelemetry Python SDK (its OTLP/HTTP protobuf
//! exporters for spans and logs, and the urllib instrumentation) traces HTTP calls made from
//! one network namespace to a server in another; every client span must be joined to exactly
//! the connection the server saw (its client port) by the agent and by the bundled
//! `trace-flows` correlator alike, the log lines must keep their trace
//! context, and malformed, oversized or mistyped OTLP must be refused with the place named
//! while what was stored stays.

use crate::capture::agent_with;
use crate::util::{Agent, KillOnDrop, Pair, free_port, require, sh};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const OTEL_PY: &str = "/opt/weir-otel/bin/python";
const CALLS: usize = 3;

fn py(name: &str) -> String {
    format!("{}/tests/e2e/py/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A trace as the API shows it, once its client span has flows (the capture's records reach
/// the store within a flush).
fn joined_trace(a: &Agent, trace_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = a.get(&format!("/api/v1/traces/{trace_id}"), &[]);
        let ready = s == 200
            && v["spans"].as_array().is_some_and(|spans| {
                spans
                    .iter()
                    .any(|sp| sp["kind"] == "client" && sp["flows"]["matched"] != "none")
                    && v["logs"].as_array().is_some_and(|l| !l.is_empty())
            });
        if ready {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} never joined: {s} {v}"
        );
        a.flush();
    }
}

#[test]
fn sdk_spans_join_the_exact_connection_logs_keep_their_trace_and_bad_otlp_is_named() {
    require(&["ip", "python3", OTEL_PY]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(72);
    let otlp_port = free_port();
    let otlp_addr = format!("127.0.0.1:{otlp_port}");
    let a = agent_with(&pair, dir.path(), &["--otlp-listen", &otlp_addr]);

    // The server in B prints each request's client port.
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.ns_b,
            "python3",
            &py("http_ports.py"),
            &pair.b4,
            "8080",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("http server");
    let server_out = server.stdout.take().expect("server stdout");
    let _server = KillOnDrop(server);
    let mut server_lines = BufReader::new(server_out).lines();
    assert_eq!(
        server_lines.next().and_then(Result::ok).as_deref(),
        Some("ready"),
        "http server did not start"
    );

    // The SDK exports to the OTLP listener from the root namespace; the calls go from A.
    let out = Command::new(OTEL_PY)
        .args([
            &py("otel_calls.py"),
            &format!("http://{otlp_addr}"),
            &pair.ns_a,
            &format!("http://{}:8080/", pair.b4),
            &CALLS.to_string(),
        ])
        .output()
        .expect("otel_calls.py");
    assert!(
        out.status.success(),
        "otel_calls.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("call line"))
        .collect();
    assert_eq!(calls.len(), CALLS, "{calls:?}");
    let mut ports: HashMap<u64, u64> = HashMap::new();
    for _ in 0..CALLS {
        let line = server_lines
            .next()
            .and_then(Result::ok)
            .expect("server line");
        let v: Value = serde_json::from_str(&line).expect("server JSON");
        ports.insert(
            v["i"].as_u64().expect("i"),
            v["port"].as_u64().expect("port"),
        );
    }

    for c in &calls {
        let i = c["i"].as_u64().expect("i");
        let trace_id = c["trace_id"].as_str().expect("trace id");
        let t = joined_trace(&a, trace_id);
        let spans = t["spans"].as_array().expect("spans");
        let parent = spans
            .iter()
            .find(|s| s["name"] == format!("call-{i}"))
            .unwrap_or_else(|| panic!("parent span of call {i}: {t}"));
        assert_eq!(parent["kind"], "internal");
        assert_eq!(parent["flows"]["matched"], "no-peer", "{parent}");
        assert_eq!(parent["service"], "weir-e2e-client");
        let client = spans
            .iter()
            .find(|s| s["kind"] == "client")
            .unwrap_or_else(|| panic!("client span of call {i}: {t}"));
        assert_eq!(client["parent_span_id"], parent["span_id"]);
        assert_eq!(client["peer"], format!("{}:8080", pair.b4), "{client}");
        // The connection the server saw, and only it.
        let flows = &client["flows"];
        assert_eq!(flows["matched"], "opened", "call {i}: {client}");
        let convs = flows["conversations"].as_array().expect("conversations");
        assert_eq!(convs.len(), 1, "call {i}: {flows}");
        assert_eq!(
            convs[0]["client"],
            format!("{}:{}", pair.a4, ports[&i]),
            "call {i}: span joined to another connection: {flows}"
        );
        assert_eq!(convs[0]["server"], format!("{}:8080", pair.b4));
        // Request + response headers and the 1000-byte body, framed: more than 1000 bytes.
        assert!(convs[0]["bytes"].as_u64() > Some(1000), "{flows}");
        assert!(convs[0]["rtt_ns"].as_u64() > Some(0), "{flows}");
        // The log line written inside the parent span carries its trace and span.
        let logs = t["logs"].as_array().expect("logs");
        let line = logs
            .iter()
            .find(|l| {
                l["text"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&format!("for call {i}")))
            })
            .unwrap_or_else(|| panic!("log line of call {i}: {logs:?}"));
        let label = |name: &str| {
            line["labels"]
                .as_array()
                .and_then(|l| l.iter().find(|p| p[0] == name))
                .map(|p| p[1].clone())
                .unwrap_or(Value::Null)
        };
        assert_eq!(label("severity"), "warn", "{line}");
        assert_eq!(label("span_id"), parent["span_id"], "{line}");
        assert_eq!(label("service"), "weir-e2e-client");
    }
    // The CLI shows the same join.
    let first = calls[0]["trace_id"].as_str().expect("trace id");
    let (code, out, err) = a.cli(&["trace", first]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "opened: {}:{} -> {}:8080",
            pair.a4, ports[&0], pair.b4
        )),
        "{out}"
    );
    assert!(out.contains("log warn  calling"), "{out}");
    // The bundled trace-flows correlator joins the same spans to the same connections: one
    // annotation per client span, naming the port the server saw, with a filter selecting
    // exactly that connection's flows; the parent spans name no peer and get none.
    let data = a.dir.join("data");
    let (code, _, err) = crate::plugins::weir(&data, &["install", "bundled:trace-flows"]);
    assert_eq!(code, 0, "{err}");
    let (f, to) = (
        (crate::util::now_ms() - 600_000).to_string(),
        (crate::util::now_ms() + 1000).to_string(),
    );
    let out = a.plugin_run(&["trace-flows", "--json", "--from", &f, "--to", &to]);
    let v: Value = serde_json::from_str(&out).expect("run JSON");
    let notes = v["result"]["annotations"].as_array().expect("annotations");
    assert_eq!(notes.len(), CALLS, "{v}");
    for c in &calls {
        let i = c["i"].as_u64().expect("i");
        let trace_id = c["trace_id"].as_str().expect("trace id");
        let n = notes
            .iter()
            .find(|n| n["labels"]["trace_id"] == trace_id)
            .unwrap_or_else(|| panic!("no annotation for call {i}: {v}"));
        let l = &n["labels"];
        assert_eq!(l["span_kind"], "client", "{n}");
        assert_eq!(l["matched"], "opened", "{n}");
        assert_eq!(l["client"], format!("{}:{}", pair.a4, ports[&i]), "{n}");
        assert_eq!(l["server"], format!("{}:8080", pair.b4), "{n}");
        assert!(
            n["text"].as_str().is_some_and(|t| t.contains(&format!(
                "{}:{} -> {}:8080 tcp",
                pair.a4, ports[&i], pair.b4
            ))),
            "{n}"
        );
        // Its bytes are the agent's own join's for that span.
        let t = joined_trace(&a, trace_id);
        let conv = t["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["kind"] == "client"))
            .map(|s| s["flows"]["conversations"][0].clone())
            .expect("joined conversation");
        assert_eq!(l["bytes"], conv["bytes"].to_string(), "{n} {conv}");
        assert_eq!(l["packets"], conv["packets"].to_string(), "{n} {conv}");
        let filter = n["flow_filter"].as_str().expect("flow filter");
        let listed = a.ok(
            "/api/v1/flows",
            &[("filter", filter), ("from", &f), ("to", &to)],
        );
        let flows = listed["flows"].as_array().expect("flows");
        assert!(!flows.is_empty(), "{listed}");
        for fl in flows {
            let ports_seen = (fl["SrcPort"].as_u64(), fl["DstPort"].as_u64());
            assert!(
                ports_seen == (Some(ports[&i]), Some(8080))
                    || ports_seen == (Some(8080), Some(ports[&i])),
                "{fl}"
            );
        }
    }
    let (code, _, err) = a.cli(&["trace", "not-a-trace"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("trace id is 32 hex digits"), "{err}");
    // Spans are also records, listed like any others.
    let recs = a.ok("/api/v1/records", &[("kind", "span"), ("limit", "1000")]);
    assert_eq!(
        recs["records"].as_array().map(Vec::len),
        Some(2 * CALLS),
        "{recs}"
    );

    // JSON on the agent's own listener, with a span that names no address.
    let url = a.url("/v1/traces");
    let json_trace = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
        "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "name":"no address","kind":1,"startTimeUnixNano":"1544712660000000000",
        "endTimeUnixNano":"1544712661000000000"}]}]}]}"#;
    let (s, ct, body) = Agent::post_bytes(&url, "application/json", None, json_trace.as_bytes());
    assert_eq!(
        (s, ct.as_str(), body.as_slice()),
        (200, "application/json", &b"{}"[..])
    );
    let t = a.ok("/api/v1/traces/5b8efff798038103d269b633813fc60c", &[]);
    assert_eq!(t["spans"][0]["flows"]["matched"], "no-peer", "{t}");

    // Bad input: refused, the place named, nothing stored lost.
    let before = a.ok("/api/v1/records", &[("limit", "10000")])["records"]
        .as_array()
        .map(Vec::len);
    let bad = json_trace.replace("eee19b7ec3c1b174", "eee19b7ec3c1b1");
    let (s, ct, body) = Agent::post_bytes(&url, "application/json", None, bad.as_bytes());
    let v: Value = serde_json::from_slice(&body).expect("status JSON");
    assert_eq!((s, ct.as_str()), (400, "application/json"), "{v}");
    assert_eq!(v["code"], 3);
    assert_eq!(
        v["message"],
        "resourceSpans[0].scopeSpans[0].spans[0].spanId: expected 8 bytes, got 7"
    );
    let (s, _, body) = Agent::post_bytes(&url, "application/json", None, b"{\"resourceSpans\": [");
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not JSON"));
    // Protobuf garbage answers a protobuf google.rpc.Status naming the problem.
    let (s, ct, body) = Agent::post_bytes(
        &url,
        "application/x-protobuf",
        None,
        b"\x0a\xff\xff\xff\x0f",
    );
    assert_eq!((s, ct.as_str()), (400, "application/x-protobuf"));
    assert!(
        String::from_utf8_lossy(&body).contains("not an OTLP protobuf message"),
        "{body:?}"
    );
    let (s, _, _) = Agent::post_bytes(&url, "text/plain", None, b"hello");
    assert_eq!(s, 415);
    // A gzip body that inflates past the limit (17 MiB of zeros, ~17 KiB sent).
    let bomb = dir.path().join("bomb.gz");
    sh(&format!(
        "python3 -c \"import gzip,sys; sys.stdout.buffer.write(gzip.compress(bytes(17 << 20)))\" > {}",
        bomb.display()
    ));
    let packed = std::fs::read(&bomb).expect("bomb");
    let (s, _, body) = Agent::post_bytes(&url, "application/json", Some("gzip"), &packed);
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&body));
    // Logs refused the same way.
    let (s, _, body) = Agent::post_bytes(
        &a.url("/v1/logs"),
        "application/json",
        None,
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":99}]}]}]}"#,
    );
    assert_eq!(s, 400);
    assert!(
        String::from_utf8_lossy(&body).contains(
            "resourceLogs[0].scopeLogs[0].logRecords[0].severityNumber: 99 is outside 0-24"
        )
    );
    let after = a.ok("/api/v1/records", &[("limit", "10000")])["records"]
        .as_array()
        .map(Vec::len);
    assert_eq!(before, after, "a refused request stored something");
    // A trace id that is not one.
    let (s, v) = a.get("/api/v1/traces/xyz", &[]);
    assert_eq!(s, 400, "{v}");
}
