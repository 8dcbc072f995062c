//! Incidents end to end: an agent with imported flows, a span and a log over OTLP, a firing
//! alert, a silence and a configured rule exports a signed incident; `weir incident open`
//! serves it on a fresh data dir, and every view (aggregates, listing, time series,
//! timeline, trace, records, alerts, the bundled visualizations) is byte for byte the
//! original's; the replay's clock is the incident's end, and it refuses changes. Files
//! changed after export (a member, the manifest behind a signature), stripped of their
//! signature, or truncated, are refused with the problem named, and nothing is written.

use crate::util::{Agent, WEIR, now_ms};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn weir(args: &[&str], data: Option<&Path>) -> (i32, String, String) {
    let mut c = Command::new(WEIR);
    c.args(args);
    if let Some(d) = data {
        c.env("WEIR_DATA_DIR", d);
    }
    let out = c.output().expect("weir");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Every view the test compares, as (what, status and body).
fn views(a: &Agent, from: u64, to: u64) -> Vec<(String, u16, String)> {
    let w = format!("from={from}&to={to}");
    let mut out = Vec::new();
    for path in [
        format!("/api/v1/flows/aggregate?{w}&group_by=SrcAddr,DstAddr&top=50"),
        format!("/api/v1/flows/aggregate?{w}&group_by=DstPort&metric=packets"),
        format!("/api/v1/flows?{w}&limit=1000&sort=-Bytes"),
        format!("/api/v1/flows/timeseries?{w}&step=1m"),
        format!("/api/v1/timeline?{w}&step=30s"),
        format!("/api/v1/traces/{TRACE}"),
        format!("/api/v1/flows?{w}&filter=TraceId%3D{TRACE}"),
        format!("/api/v1/records?{w}"),
        "/api/v1/alerts/history".to_string(),
    ] {
        let (s, body) = a.get_raw(&path).expect("request");
        out.push((path, s, body));
    }
    for view in ["sankey", "chord", "topology"] {
        let path = format!("/api/v1/plugins/{view}/run");
        let (s, body) = a.post_raw(&path, &json!({"from_ms": from, "to_ms": to}).to_string());
        out.push((path, s, body));
    }
    out
}

fn repack(src: &Path, dst: &Path, script: &str) {
    let st = Command::new("python3")
        .arg("-c")
        .arg(format!(
            r#"
import hashlib, io, json, sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
members = {{}}
with tarfile.open(src, "r:gz") as t:
    for m in t.getmembers():
        members[m.name] = t.extractfile(m).read()
{script}
with tarfile.open(dst, "w:gz") as t:
    for name, data in members.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
"#
        ))
        .arg(src)
        .arg(dst)
        .status()
        .expect("python3");
    assert!(st.success(), "repacking failed");
}

#[test]
fn an_incident_replays_byte_for_byte_elsewhere_and_a_changed_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let a = Agent::start(dir.path(), &["--no-capture", "--alert-interval", "1h"]);
    // A configured rule: fires when port 7777 has no flows in its window.
    let (code, _, err) = weir(
        &[
            "plugin",
            "install",
            "bundled:no-flows",
            "--config",
            "for=0",
            "--config",
            "filter=DstPort=7777",
        ],
        Some(&data),
    );
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.ok("/api/v1/plugins", &[])["plugins"]
        .as_array()
        .is_none_or(|l| {
            !l.iter().any(|p| {
                p["installed"]["manifest"]["name"] == "no-flows"
                    && p["loaded"]["state"]["state"] == "enabled"
            })
        })
    {
        assert!(Instant::now() < deadline, "no-flows never loaded");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Twenty minutes of history: 60 flows among a few hosts, one of them the span's
    // connection.
    let t0 = now_ms() - 20 * 60_000;
    let flows: Vec<Value> = (0..60u64)
        .map(|i| {
            let start = t0 + i * 10_000;
            let (sport, dport) = (if i == 6 { 43210 } else { 40000 + i }, [80, 443, 8080][(i % 3) as usize]);
            json!({
                "TimeFlowStartMs": start, "TimeFlowEndMs": start + 4000,
                "SrcAddr": format!("10.9.0.{}", i % 4 + 1), "DstAddr": format!("10.9.1.{}", i % 3 + 1),
                "SrcPort": sport, "DstPort": dport,
                "Proto": 6, "Etype": 2048, "Bytes": 1500 * (i + 1), "Packets": i + 2,
                "Interface": "eth0", "IfDirection": i % 2,
            })
        })
        .collect();
    let (s, v) = a.post("/api/v1/flows", &Value::Array(flows.clone()).to_string());
    assert_eq!(s, 200, "{v}");
    // The span: a client call to 10.9.1.1:80 (flow 6 is 10.9.0.3:43210 -> 10.9.1.1:80).
    let span_start = (t0 + 60_000) * 1_000_000;
    let span = json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeSpans": [{"spans": [{"traceId": TRACE, "spanId": "00f067aa0ba902b7",
        "name": "GET /pay", "kind": 3, "startTimeUnixNano": span_start.to_string(),
        "endTimeUnixNano": (span_start + 2_500_000_000u64).to_string(),
        "attributes": [{"key": "server.address", "value": {"stringValue": "10.9.1.1"}},
        {"key": "server.port", "value": {"intValue": 80}}]}]}]}]});
    a.send_otlp("/v1/traces", &span);
    let log = json!({"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": (span_start + 1_000_000_000u64).to_string(), "severityNumber": 17,
        "traceId": TRACE, "body": {"stringValue": "payment backend unreachable"}}]}]}]});
    a.send_otlp("/v1/logs", &log);
    let (s, v) = a.post("/api/v1/alerts/evaluate", "");
    assert_eq!(s, 200, "{v}");
    assert!(
        a.ok("/api/v1/alerts", &[])["active"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["rule"] == "no-flows")),
        "no-flows did not fire: {}",
        a.ok("/api/v1/alerts", &[])
    );
    let (s, v) = a.post(
        "/api/v1/alerts/silences",
        &json!({"matchers": {"rule": "no-flows"}, "duration": "2h", "comment": "incident drill"})
            .to_string(),
    );
    assert_eq!(s, 200, "{v}");

    // Export, signed.
    let keys = dir.path().join("keys");
    let (code, _, err) = weir(
        &[
            "plugin",
            "keygen",
            "oncall",
            "--dir",
            keys.to_str().expect("p"),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let file = dir.path().join("incident.tar.gz");
    let from = t0 - 60_000;
    let to = now_ms() + 1000;
    let (code, out, err) = a.cli(&[
        "incident",
        "export",
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
        "-o",
        file.to_str().expect("p"),
        "--sign-key",
        keys.join("oncall.key").to_str().expect("p"),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(&out).expect("summary JSON");
    assert_eq!(summary["counts"]["flows"], 60, "{summary}");
    assert_eq!(summary["counts"]["records"], 2, "{summary}");
    assert_eq!(summary["counts"]["silences"], 1, "{summary}");
    assert_eq!(summary["counts"]["plugins"], 4, "{summary}");
    assert!(summary["counts"]["alerts"].as_u64() >= Some(1), "{summary}");
    assert!(summary["signed_by_key"].is_string(), "{summary}");
    // The file is a plain tar.gz any tool lists.
    let listing = crate::util::sh(&format!("tar tzf {}", file.display()));
    for m in [
        "incident.json",
        "flows.ndjson",
        "records.ndjson",
        "alerts.json",
        "plugins.json",
        "plugins/no-flows.wasm",
        "settings.json",
        "incident.sig",
    ] {
        assert!(listing.lines().any(|l| l == m), "{m} missing: {listing}");
    }
    let (code, out, err) = weir(
        &[
            "incident",
            "verify",
            file.to_str().expect("p"),
            "--trusted-keys",
            keys.to_str().expect("p"),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signed by oncall"), "{out}");
    let original = views(&a, from, to);
    for (path, s, body) in &original {
        assert_eq!(*s, 200, "{path}: {body}");
    }
    // The trace is joined to its connection on the original.
    let trace: Value = serde_json::from_str(&original[5].2).expect("trace JSON");
    assert!(
        trace["spans"][0]["flows"]["conversations"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{trace}"
    );

    // `TraceId=` selects the flows of the trace's connection (flow 6), and a bad id names
    // itself at its place in the filter.
    let by_trace: Value = serde_json::from_str(&original[6].2).expect("flows JSON");
    assert_eq!(by_trace["total"], 1, "{by_trace}");
    assert_eq!(by_trace["flows"][0]["SrcPort"], 43210, "{by_trace}");
    let (s, v) = a.get("/api/v1/flows", &[("filter", "DstPort=80 and TraceId=abc")]);
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["parameter"], "filter", "{v}");
    assert_eq!(v["error"]["position"], 23, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("32 hex digits")),
        "{v}"
    );

    // Open it elsewhere: a fresh data dir, trusted keys required.
    let replay_dir = dir.path().join("replay");
    let b = Agent::replay(
        &file,
        &replay_dir,
        &[
            "--trusted-keys",
            keys.to_str().expect("p"),
            "--require-signature",
        ],
    );
    let replayed = views(&b, from, to);
    for ((path, s1, b1), (_, s2, b2)) in original.iter().zip(&replayed) {
        assert_eq!(s1, s2, "{path}");
        assert!(b1 == b2, "{path} differs:\noriginal {b1}\nreplayed {b2}");
    }
    // The replay's clock is the incident's end: its default views are the original's over
    // the hour before that end.
    // (A `to` past the export's own time is cut to it.)
    let end = summary["to_ms"].as_u64().expect("to_ms");
    assert!(end <= to && end + 5000 > to, "{summary}");
    let status = b.ok("/api/v1/status", &[]);
    assert_eq!(status["replay"]["clock_ms"], end, "{status}");
    let (_, default_tl) = b.get_raw("/api/v1/timeline").expect("timeline");
    let (_, same_tl) = a
        .get_raw(&format!(
            "/api/v1/timeline?from={}&to={end}",
            end - 3_600_000
        ))
        .expect("timeline");
    assert!(default_tl == same_tl, "default timeline of the replay");
    // The rule came with its config and grants.
    let rule = |x: &Agent| {
        x.ok("/api/v1/plugins", &[])["plugins"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|p| p["installed"]["manifest"]["name"] == "no-flows")
                    .cloned()
            })
            .expect("no-flows listed")
    };
    let (ra, rb) = (rule(&a), rule(&b));
    for k in ["config", "granted", "sha256", "enabled"] {
        assert_eq!(ra["installed"][k], rb["installed"][k], "{k}");
    }
    assert_eq!(rb["installed"]["config"]["filter"], "DstPort=7777");
    // Read-only: imports, OTLP, silences and installs are refused, and change nothing.
    for (path, body) in [
        (
            "/api/v1/flows",
            Value::Array(flows[..1].to_vec()).to_string(),
        ),
        ("/v1/traces", span.to_string()),
        (
            "/api/v1/alerts/silences",
            json!({"matchers": {"rule": "x"}, "duration": "1h"}).to_string(),
        ),
        ("/api/v1/alerts/evaluate", String::new()),
        (
            "/api/v1/plugins",
            json!({"source": "bundled:quiet"}).to_string(),
        ),
    ] {
        let (s, v) = b.post(path, &body);
        assert_eq!(s, 403, "{path}: {v}");
        assert_eq!(v["error"]["kind"], "forbidden", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("read-only") && m.contains("incident.tar.gz")),
            "{v}"
        );
    }
    assert!(
        views(&b, from, to) == replayed,
        "a refused change changed a view"
    );
    // The page says it is a replay, and draws the incident on its default range.
    crate::util::browser_test("replay.mjs", &b.url(""), &[]);
    drop(b);

    // Changed after export: a member (the flows), and then the manifest too (behind the
    // signature); stripped of its signature; truncated. Each refused, naming the problem,
    // with nothing written.
    let bad = dir.path().join("bad.tar.gz");
    let refused = |file: &Path, args: &[&str], expect: &str| {
        let target = dir.path().join("never");
        let mut all = vec![
            "incident",
            "open",
            file.to_str().expect("p"),
            "--data-dir",
            target.to_str().expect("p"),
            "--listen",
            "127.0.0.1:1",
        ];
        all.extend_from_slice(args);
        let (code, _, err) = weir(&all, None);
        assert_eq!(code, 2, "{expect}: {err}");
        assert!(err.contains(expect), "expected {expect:?} in: {err}");
        assert!(
            !target.exists(),
            "a refused incident wrote {}",
            target.display()
        );
        let (code, _, err) = weir(
            &[&["incident", "verify", file.to_str().expect("p")], args].concat(),
            None,
        );
        assert_eq!(code, 2, "verify {expect}: {err}");
        assert!(
            err.contains(expect),
            "verify: expected {expect:?} in: {err}"
        );
    };
    let trust = ["--trusted-keys", keys.to_str().expect("p")];
    repack(
        &file,
        &bad,
        r#"members["flows.ndjson"] = members["flows.ndjson"].replace(b"10.9.1.1", b"10.9.1.9")"#,
    );
    refused(&bad, &[], "flows.ndjson: sha256 ");
    refused(&bad, &[], "changed after it was exported");
    repack(
        &file,
        &bad,
        r#"
flows = members["flows.ndjson"].replace(b"10.9.1.1", b"10.9.1.9")
members["flows.ndjson"] = flows
m = json.loads(members["incident.json"])
for e in m["members"]:
    if e["path"] == "flows.ndjson":
        e["sha256"] = hashlib.sha256(flows).hexdigest()
        e["bytes"] = len(flows)
members["incident.json"] = json.dumps(m, indent=2).encode()
"#,
    );
    refused(&bad, &trust, "bad signature by oncall");
    repack(&file, &bad, r#"del members["incident.sig"]"#);
    refused(
        &bad,
        &[&trust[..], &["--require-signature"]].concat(),
        "not signed",
    );
    let whole = std::fs::read(&file).expect("read");
    std::fs::write(&bad, &whole[..whole.len() / 2]).expect("write");
    refused(&bad, &[], "truncated");
    std::fs::write(&bad, b"{\"not\": \"an incident\"}").expect("write");
    refused(&bad, &[], "not a gzip-compressed archive");
    // The original agent lost nothing.
    let (s, body) = a
        .get_raw(&format!(
            "/api/v1/flows?from={from}&to={to}&limit=1000&sort=-Bytes"
        ))
        .expect("flows");
    assert_eq!(s, 200);
    assert!(body == original[2].2, "the original's flows changed");
}
