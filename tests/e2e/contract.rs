//! Plugin contract 0.1.2 against a real agent: annotations a flow-processor returns are kept
//! in the records store, listed by `/api/v1/records` and `weir records`, and survive kill -9.

use crate::sandbox::with_plugin;
use crate::util::{Agent, WEIR, now_ms};
use serde_json::json;
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
        let out = std::process::Command::new(WEIR)
            .arg("records")
            .args(args)
            .env("WEIR_SERVER", a.url(""))
            .output()
            .expect("weir records");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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
