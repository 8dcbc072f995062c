//! The HTTP API and the CLI against a real agent: answers, paging, aggregation, live tailing,
//! and clear errors for bad input.

use crate::util::{Agent, WEIR, now_ms};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;
use weir_core::Flow;

fn flows(n: usize, t: u64) -> Vec<Flow> {
    (0..n)
        .map(|i| {
            let mut f = Flow::empty();
            f.time_flow_start_ms = t - 1000 - i as u64;
            f.time_flow_end_ms = t - i as u64;
            f.src_addr = format!("198.18.0.{}", 1 + i % 5).parse().expect("ip");
            f.dst_addr = if i % 2 == 0 {
                "198.19.0.1"
            } else {
                "2001:db8::1"
            }
            .parse()
            .expect("ip");
            f.src_port = 40_000 + i as u16;
            f.dst_port = [80, 443, 53][i % 3];
            f.proto = if i % 3 == 2 { 17 } else { 6 };
            f.bytes = 100 * (i as u64 + 1);
            f.packets = i as u64 + 1;
            f.sampling = if i == 0 { 10 } else { 0 };
            f.interface = "eth9".into();
            f
        })
        .collect()
}

fn loaded_agent(dir: &std::path::Path) -> (Agent, Vec<Flow>, u64) {
    let a = Agent::start(dir, &["--no-capture"]);
    let t = now_ms();
    let fl = flows(60, t);
    let body = serde_json::to_string(&fl).expect("json");
    let (s, v) = a.post("/api/v1/flows", &body);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], 60);
    std::thread::sleep(Duration::from_millis(1500));
    (a, fl, t)
}

fn expect_400(a: &Agent, path: &str, q: &[(&str, &str)], needle: &str) -> Value {
    let (s, v) = a.get(path, q);
    assert_eq!(s, 400, "{path} {q:?}: {v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "{path} {q:?}: '{msg}' lacks '{needle}'"
    );
    v
}

#[test]
fn queries_page_sort_and_aggregate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, fl, t) = loaded_agent(dir.path());
    let v = a.ok(
        "/api/v1/flows",
        &[
            ("filter", "DstAddr=198.19.0.0/16 and Proto=tcp"),
            ("from", "0"),
        ],
    );
    let want = fl
        .iter()
        .filter(|f| f.dst_addr.is_ipv4() && f.proto == 6)
        .count();
    assert_eq!(v["total"], want);
    let page1 = a.ok(
        "/api/v1/flows",
        &[("sort", "-Bytes"), ("limit", "7"), ("from", "0")],
    );
    let page2 = a.ok(
        "/api/v1/flows",
        &[
            ("sort", "-Bytes"),
            ("limit", "7"),
            ("offset", "7"),
            ("from", "0"),
        ],
    );
    let bytes: Vec<u64> = page1["flows"]
        .as_array()
        .into_iter()
        .chain(page2["flows"].as_array())
        .flatten()
        .map(|f| f["Bytes"].as_u64().unwrap_or(0))
        .collect();
    let expect: Vec<u64> = (47..=60).rev().map(|i| i * 100).collect();
    assert_eq!(bytes, expect);
    // Aggregation scales the sampled flow back (flow 0 has 1-in-10 sampling).
    let g = a.ok(
        "/api/v1/flows/aggregate",
        &[
            ("group_by", "SrcAddr"),
            ("metric", "packets"),
            ("top", "2"),
            ("from", "0"),
        ],
    );
    let total: u64 = fl.iter().map(|f| f.packets * f.scale()).sum();
    assert_eq!(g["total"]["packets"], total);
    assert_eq!(g["groups"].as_array().map(Vec::len), Some(2));
    assert_eq!(g["group_count"], 5);
    let top: u64 = g["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|x| x["packets"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(top + g["others"]["packets"].as_u64().unwrap_or(0), total);
    // Time series over the last minute in 10 s steps adds up too.
    let from = (t - 60_000).to_string();
    let to = (t + 1).to_string();
    let ts = a.ok(
        "/api/v1/flows/timeseries",
        &[
            ("from", &from),
            ("to", &to),
            ("step", "10s"),
            ("metric", "bytes"),
        ],
    );
    let sum: u64 = ts["series"][0]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p[1].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sum, fl.iter().map(|f| f.bytes * f.scale()).sum::<u64>());
    assert_eq!(ts["buckets"], 7);
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _, _) = loaded_agent(dir.path());
    let v = expect_400(
        &a,
        "/api/v1/flows",
        &[("filter", "SrcPort=")],
        "expected a value",
    );
    assert_eq!(v["error"]["position"], 8);
    assert_eq!(v["error"]["kind"], "bad_query");
    let v = expect_400(
        &a,
        "/api/v1/flows",
        &[("filter", "Proto=tcp and SrcAdr=1.2.3.4")],
        "unknown field 'SrcAdr'",
    );
    assert_eq!(v["error"]["position"], 14);
    expect_400(
        &a,
        "/api/v1/flows",
        &[("filter", "SrcAdr=1")],
        "did you mean SrcAddr",
    );
    expect_400(&a, "/api/v1/flows", &[("filter", "(Port=1")], "missing ')'");
    expect_400(
        &a,
        "/api/v1/flows",
        &[("filter", "SrcAddr=10.0.0.0/40")],
        "prefix",
    );
    expect_400(
        &a,
        "/api/v1/flows",
        &[("from", "-1m"), ("to", "-5m")],
        "reversed time range",
    );
    expect_400(
        &a,
        "/api/v1/flows",
        &[("from", "yesterday")],
        "cannot read time",
    );
    expect_400(
        &a,
        "/api/v1/flows",
        &[("limit", "100000000")],
        "above the maximum",
    );
    expect_400(&a, "/api/v1/flows", &[("limit", "0")], "at least 1");
    expect_400(&a, "/api/v1/flows", &[("limit", "lots")], "whole number");
    expect_400(
        &a,
        "/api/v1/flows",
        &[("limt", "5")],
        "unknown parameter 'limt'",
    );
    expect_400(&a, "/api/v1/flows", &[("sort", "Interface")], "cannot sort");
    expect_400(&a, "/api/v1/flows/aggregate", &[], "group_by is required");
    expect_400(
        &a,
        "/api/v1/flows/aggregate",
        &[("group_by", "SrcAddr,Nope")],
        "unknown field 'Nope'",
    );
    expect_400(
        &a,
        "/api/v1/flows/aggregate",
        &[("group_by", "SrcAddr"), ("metric", "volume")],
        "unknown metric",
    );
    expect_400(
        &a,
        "/api/v1/flows/timeseries",
        &[("from", "-7d"), ("step", "1s")],
        "buckets",
    );
    // Imports: a bad line is named, nothing of the batch is stored.
    let before = a.ok("/api/v1/flows", &[("from", "0"), ("limit", "1")])["total"].clone();
    let (s, v) = a.post(
        "/api/v1/flows",
        "{\"SrcAddr\":\"198.18.0.1\"}\n{\"SrcAddr\":\"nope\"}\n",
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("line 2"),
        "{v}"
    );
    let (s, v) = a.post("/api/v1/flows", "[{\"Bites\":5}]");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field `Bites`"),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        a.ok("/api/v1/flows", &[("from", "0"), ("limit", "1")])["total"],
        before
    );
    // Unknown endpoints answer JSON too.
    let (s, v) = a.get("/api/v1/nope", &[]);
    assert_eq!(s, 404);
    assert_eq!(v["error"]["kind"], "not_found");
}

#[test]
fn cli_prints_tables_json_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _, _) = loaded_agent(dir.path());
    let server = format!("http://127.0.0.1:{}", a.port);
    let run = |args: &[&str]| {
        let out = Command::new(WEIR)
            .args(args)
            .env("WEIR_SERVER", &server)
            .output()
            .expect("weir");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["flows", "DstPort=53", "--from", "0"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("END"), "{out}");
    assert!(out.contains("20 of 20 matching flows"), "{out}");
    assert!(out.contains("UDP"), "{out}");
    let (code, out, err) = run(&["flows", "--json", "--limit", "3", "--from", "0"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["flows"].as_array().map(Vec::len), Some(3));
    let (code, _, err) = run(&["flows", "DstPort=http"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("DstPort expects") && err.contains("\n  DstPort=http\n          ^"),
        "{err}"
    );
    let (code, out, err) = run(&["top", "-g", "DstPort", "-m", "flows", "--from", "0"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 groups; total"), "{out}");
    let (code, out, err) = run(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("capture: off") && out.contains("60 flows"),
        "{out}"
    );
    let (code, out, _) = run(&["status", "--json"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["storage"]["flows"], 60);
    let (code, _, err) = Command::new(WEIR)
        .args(["status", "--server", "http://127.0.0.1:1"])
        .output()
        .map(|o| {
            (
                o.status.code(),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .expect("weir");
    assert_eq!(code, Some(1));
    assert!(err.contains("is `weir agent` running?"), "{err}");
}

#[test]
fn follow_streams_matching_flows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Agent::start(dir.path(), &["--no-capture"]);
    let mut child = Command::new(WEIR)
        .args([
            "flows",
            "--follow",
            "--json",
            "DstPort=443",
            "--server",
            &format!("http://127.0.0.1:{}", a.port),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("weir flows --follow");
    std::thread::sleep(Duration::from_millis(800));
    let body: String = flows(9, now_ms())
        .iter()
        .map(|f| serde_json::to_string(f).expect("json") + "\n")
        .collect();
    let (s, v) = a.post("/api/v1/flows", &body);
    assert_eq!(s, 200, "{v}");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut got = Vec::new();
    for _ in 0..3 {
        let line = lines.next().expect("a line").expect("read");
        let f: Value = serde_json::from_str(&line).expect("json line");
        got.push(f["DstPort"].as_u64());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, vec![Some(443); 3]);
}

/// A page on another site cannot change the agent through the visitor's browser: state-changing
/// requests whose Origin is not the agent are refused, and nothing changes; the agent's own
/// page, curl and the CLI (no Origin) go through. Every response carries the security headers.
#[test]
fn cross_site_requests_are_refused_and_responses_carry_security_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, fl, _) = loaded_agent(dir.path());
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let host = a
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let body = serde_json::to_string(&fl[..5]).expect("json");
    let send = |origin: Option<&str>| {
        let mut req = http
            .post(&a.url("/api/v1/flows"))
            .header("content-type", "application/json");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let mut r = req.send(body.as_bytes()).expect("request");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().expect("body"))
    };
    for evil in [
        "http://evil.example",
        "null",
        "http://127.0.0.1:1",
        "https://evil.example:443",
    ] {
        let (s, b) = send(Some(evil));
        assert_eq!(s, 403, "{evil}: {b}");
        assert!(b.contains("cross-site request refused"), "{evil}: {b}");
    }
    let mut del = http
        .delete(&a.url("/api/v1/alerts/silences/1"))
        .header("origin", "http://evil.example")
        .call()
        .expect("request");
    assert_eq!(
        del.status().as_u16(),
        403,
        "{:?}",
        del.body_mut().read_to_string()
    );
    // Nothing of the refused imports was stored.
    std::thread::sleep(Duration::from_millis(1500));
    let total = |a: &Agent| {
        a.ok(
            "/api/v1/flows/aggregate",
            &[("group_by", "Proto"), ("from", "-1h")],
        )["total"]["flows"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(total(&a), 60);
    let (s, b) = send(Some(&format!("http://{host}")));
    assert_eq!(s, 200, "same origin: {b}");
    let (s, b) = send(None);
    assert_eq!(s, 200, "no origin: {b}");
    // Reads are not checked (a cross-origin page cannot read the answers anyway).
    let r = http
        .get(&a.url("/api/v1/status"))
        .header("origin", "http://evil.example")
        .call()
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    for path in ["/", "/api/v1/status", "/api/v1/nope"] {
        let r = http.get(&a.url(path)).call().expect("request");
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let csp = h("content-security-policy");
        assert!(
            csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
    }
}

/// The HTTP limits come from `weir agent`'s flags, are shown in the status, and hold: an upload
/// slower than `--request-timeout` is answered 408 (and counted), a nonsensical limit is refused
/// at start with the flag named.
#[test]
fn http_limits_come_from_flags_and_a_slow_upload_gets_408() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(WEIR)
        .args(["agent", "--no-capture", "--data-dir"])
        .arg(dir.path().join("refused"))
        .args(["--max-requests-per-client", "0"])
        .output()
        .expect("run weir");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-requests-per-client 0 would refuse every client"),
        "{err}"
    );

    let a = Agent::start(
        dir.path(),
        &[
            "--no-capture",
            "--request-timeout",
            "1s",
            "--max-requests-per-client",
            "5",
            "--max-follows-per-client",
            "2",
        ],
    );
    let limits = &a.ok("/api/v1/status", &[])["http"]["limits"];
    assert_eq!(limits["request_timeout_ms"], 1000, "{limits}");
    assert_eq!(limits["requests_per_client"], 5, "{limits}");
    assert_eq!(limits["follows_per_client"], 2, "{limits}");
    assert_eq!(limits["header_timeout_ms"], 10_000, "the default: {limits}");

    let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = std::time::Instant::now();
    s.write_all(
        b"POST /api/v1/flows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[{\"Bytes\":1",
    )
    .expect("write");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let took = started.elapsed();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "answered after {took:?}, the timeout being 1 s"
    );
    let http = &a.ok("/api/v1/status", &[])["http"];
    assert_eq!(http["timed_out_requests"], 1, "{http}");
    // The CLI's status says it too.
    let out = Command::new(WEIR)
        .args(["status", "--server", &a.url("")])
        .output()
        .expect("weir status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("http: ") && text.contains(" 1 timed out"),
        "{text}"
    );
}
