//! Plugin contract 0.1.2 against a real agent: annotations a flow-processor returns are kept
//! in the records store, listed by `/api/v1/records` and `weir records`, and survive kill -9.

use crate::sandbox::{plugin, with_plugin};
use crate::util::{Agent, now_ms};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[test]
fn annotations_become_records_listed_by_api_and_cli_and_survive_kill_9() {
    let (_dir, root) = with_plugin("contract_probe", "contract-probe", "mode=annotate");
    let mut a = Agent::start(&root, &["--no-capture"]);
    let now = now_ms();
    for i in 0..3u64 {
        let flow = json!([{"SrcAddr": "198.18.0.1", "DstAddr": "198.18.0.2", "Proto": 6, "Bytes": 1,
                           "DstPort": 1000 + i, "Packets": 1, "TimeFlowStartMs": now - 3000 + i,
                           "TimeFlowEndMs": now - 2000 + i}]);
        let (s, v) = a.post("/api/v1/flows", &flow.to_string());
        assert_eq!(s, 200, "{v}");
    }
    let q = [("kind", "annotation"), ("from", "-1h")];
    let deadline = Instant::now() + Duration::from_secs(15);
    let records = loop {
        let v = a.ok("/api/v1/records", &q);
        let r = v["records"].as_array().cloned().unwrap_or_default();
        if r.len() >= 3 {
            break r;
        }
        assert!(Instant::now() < deadline, "annotations not kept: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(records.len(), 3, "{records:?}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["source"], "contract-probe", "{r}");
        assert_eq!(r["text"], "probe", "{r}");
        assert_eq!(
            r["time_ms"],
            now - 2000 + i as u64,
            "at the batch's newest flow: {r}"
        );
        assert_eq!(r["labels"], json!([["flows", "1"]]), "{r}");
    }
    // Paging by sequence: after the first, the other two.
    let first = records[0]["seq"].as_u64().expect("seq").to_string();
    let v = a.ok("/api/v1/records", &[("from", "-1h"), ("after", &first)]);
    assert_eq!(v["records"].as_array().map(Vec::len), Some(2), "{v}");
    // Bad asks: 400 naming the parameter.
    for (param, value) in [
        ("kind", "Bad Kind"),
        ("label", "novalue"),
        ("after", "x"),
        ("limit", "20000"),
    ] {
        let (s, v) = a.get("/api/v1/records", &[(param, value)]);
        assert_eq!(s, 400, "{param}={value}: {v}");
        assert_eq!(v["error"]["parameter"], param, "{v}");
    }
    // The CLI, as a script would use it, and as a table.
    let cli = |args: &[&str]| {
        let (code, out, err) = a.cli(&[&["records"], args].concat());
        assert_eq!(code, 0, "{err}");
        out
    };
    let v: serde_json::Value =
        serde_json::from_str(&cli(&["--kind", "annotation", "--json"])).expect("json");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(3), "{v}");
    let table = cli(&["--source", "contract-probe", "--limit", "2"]);
    assert_eq!(table.matches(" annotation ").count(), 2, "{table}");
    assert!(table.contains("more: weir records --after"), "{table}");
    // Written before the call returned: kill -9 at once loses none.
    a.kill9();
    a.spawn();
    let v = a.ok("/api/v1/records", &q);
    assert_eq!(
        v["records"],
        json!(records),
        "records after kill -9 and restart"
    );
}

/// The rows of a summarizer's table view, through the run API.
fn summary_rows(a: &Agent, name: &str) -> Value {
    let (s, v) = a.post(&format!("/api/v1/plugins/{name}/run"), r#"{"query": ""}"#);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["view"]["type"], "table", "{v}");
    v["result"]["view"]["rows"].clone()
}

/// Imports `flows` (SrcAddr, Bytes) ending a second ago.
fn import(a: &Agent, flows: &[(String, u64)]) {
    let now = now_ms();
    let body: Vec<Value> = flows
        .iter()
        .map(|(src, bytes)| {
            json!({"SrcAddr": src, "DstAddr": "198.18.0.9", "Proto": 17, "Bytes": bytes, "Packets": 1,
                   "TimeFlowStartMs": now - 2000, "TimeFlowEndMs": now - 1000})
        })
        .collect();
    for chunk in body.chunks(200) {
        let (s, v) = a.post("/api/v1/flows", &Value::from(chunk.to_vec()).to_string());
        assert_eq!(s, 200, "{v}");
    }
}

/// Waits until the summarizer has seen `bytes` in all.
fn wait_total(a: &Agent, name: &str, bytes: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = summary_rows(a, name);
        let total: u64 = rows
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                r[1].as_str()
                    .and_then(|b| b.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        if total == bytes {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{name} saw {total} of {bytes} bytes: {rows}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_agents_summaries_merged_answer_like_one_agent_and_survive_kill_9() {
    let flows = |n: usize, seed: u64| -> Vec<(String, u64)> {
        (0..n as u64)
            .map(|i| {
                let x = i.wrapping_mul(2_654_435_761).wrapping_add(seed);
                (format!("10.9.{}.{}", x % 4, (x >> 8) % 30), 100 + x % 5000)
            })
            .collect()
    };
    let (one, two) = (flows(600, 3), flows(400, 11));
    let sum = |f: &[(String, u64)]| f.iter().map(|(_, b)| b).sum::<u64>();
    let start = || {
        let (dir, root) = with_plugin("src_bytes", "src-bytes", "unused=1");
        let a = Agent::start(&root, &["--no-capture"]);
        (dir, a)
    };
    let ((_da, mut a), (_db, b), (_dc, c)) = (start(), start(), start());
    import(&a, &one);
    import(&b, &two);
    import(&c, &one);
    import(&c, &two);
    wait_total(&a, "src-bytes", sum(&one));
    wait_total(&b, "src-bytes", sum(&two));
    let whole = wait_total(&c, "src-bytes", sum(&one) + sum(&two));
    // B's state, shipped to A over HTTP.
    let snapshot = ureq::get(&b.url("/api/v1/plugins/src-bytes/snapshot"))
        .call()
        .expect("snapshot")
        .body_mut()
        .read_to_vec()
        .expect("bytes");
    assert!(!snapshot.is_empty());
    let merged = ureq::post(&a.url("/api/v1/plugins/src-bytes/merge"))
        .send(&snapshot[..])
        .expect("merge")
        .body_mut()
        .read_json::<Value>()
        .expect("json");
    assert_eq!(merged["merged"], true, "{merged}");
    assert_eq!(
        summary_rows(&a, "src-bytes"),
        whole,
        "A + B merged = C, row for row"
    );
    // Refusals: garbage (the plugin's own message, 400), not a summarizer, a bad name.
    let (s, v) = a.post("/api/v1/plugins/src-bytes/merge", "garbage");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("snapshot line 1"),
        "{v}"
    );
    let (s, v) = a.get("/api/v1/plugins/nosuch/snapshot", &[]);
    assert_eq!(s, 404, "{v}");
    let (s, v) = a.post("/api/v1/plugins?source=bundled:sankey", "");
    assert_eq!(s, 200, "{v}");
    let (s, v) = a.get("/api/v1/plugins/sankey/snapshot", &[]);
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a summarizer"),
        "{v}"
    );
    let (s, _) = a.get("/api/v1/plugins/..%2Fx/snapshot", &[]);
    assert_eq!(s, 400);
    // The agent writes plugin state every 2 s; then the hardest stop there is.
    std::thread::sleep(Duration::from_millis(2500));
    a.kill9();
    a.spawn();
    assert_eq!(
        summary_rows(&a, "src-bytes"),
        whole,
        "summary after kill -9 and restart"
    );
}

#[test]
fn grants_and_scopes_change_without_reinstalling_through_api_and_cli() {
    let (_dir, root) = with_plugin("contract_probe", "contract-probe", "mode=schema");
    let a = Agent::start(&root, &["--no-capture"]);
    let p = plugin(&a, "contract-probe");
    assert_eq!(
        p["installed"]["scopes"]["outbound-http"],
        json!(["127.0.0.1:*"]),
        "{p}"
    );
    assert!(p["loaded"].is_object(), "{p}");
    // Revoked over the API: still installed, not loaded, saying which capability it misses.
    let (s, v) = a.post(
        "/api/v1/plugins/contract-probe/grants",
        r#"{"revoke": "outbound-http"}"#,
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["scopes"].as_object().is_none_or(|o| o.is_empty()), "{v}");
    let p = plugin(&a, "contract-probe");
    assert!(p["loaded"].is_null(), "{p}");
    assert!(
        p["load_error"]
            .as_str()
            .unwrap_or("")
            .contains("outbound-http capability is not granted"),
        "{p}"
    );
    // Granted again with the CLI, a narrower scope: loaded again (the agent syncs in 2 s).
    let (code, out, err) = crate::plugins::weir(
        &root.join("data"),
        &[
            "grant",
            "contract-probe",
            "outbound-http",
            "--scope",
            "127.0.0.1:9090",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("scopes: outbound-http: 127.0.0.1:9090"),
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = plugin(&a, "contract-probe");
        if p["loaded"].is_object() {
            assert_eq!(
                p["installed"]["scopes"]["outbound-http"],
                json!(["127.0.0.1:9090"])
            );
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded: {p}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Refusals: a bad entry, a scope on an unscoped capability, an unknown capability,
    // neither or both of grant/revoke.
    for (body, says) in [
        (r#"{"grant": "outbound-http", "scope": ["a/b"]}"#, "a/b"),
        (r#"{"grant": "kv", "scope": ["x:1"]}"#, "kv takes no scope"),
        (r#"{"grant": "teleport"}"#, "unknown capability 'teleport'"),
        (r#"{}"#, "exactly one"),
        (r#"{"grant": "kv", "revoke": "kv"}"#, "exactly one"),
    ] {
        let (s, v) = a.post("/api/v1/plugins/contract-probe/grants", body);
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(says),
            "{body}: {v}"
        );
    }
}
