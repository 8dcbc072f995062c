//! Prometheus flow metrics: a real Prometheus (Debian's) scrapes the agent on loopback and
//! a PromQL query returns the bytes the namespaces' traffic made; `promtool check metrics`
//! accepts the exposition; OpenMetrics is served when asked for.

use crate::capture::agent_with;
use crate::util::{Pair, Prometheus, now_ms, require, sh};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py");

fn get_text(url: &str, accept: &str) -> (String, String) {
    let mut r = ureq::get(url)
        .header("accept", accept)
        .call()
        .expect("scrape");
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (r.body_mut().read_to_string().expect("body"), ctype)
}

#[test]
fn prometheus_scrapes_flow_metrics_that_match_the_flows() {
    require(&["prometheus", "promtool", "python3", "ping"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(68);
    // A user-defined metric: UDP bytes by destination port.
    let user = dir.path().join("metrics.toml");
    std::fs::write(
        &user,
        "[[metric]]\nname = \"weir_udp_port_bytes\"\ntype = \"counter\"\nvalue = \"Bytes\"\nlabels = [\"DstPort\"]\n[[metric.filter]]\nfield = \"Proto\"\nvalue = \"17\"\n",
    )
    .expect("metrics config");
    let user_arg = format!("--metrics-config={}", user.display());
    // A metrics plugin (flow-processor) defining its own metrics in code.
    let (code, _, err) =
        crate::plugins::weir(&dir.path().join("data"), &["install", "bundled:flow-count"]);
    assert_eq!(code, 0, "{err}");
    let a = agent_with(&pair, dir.path(), &[&user_arg]);
    let t0 = now_ms();
    sh(&format!(
        "ip netns exec {} python3 {PY}/udp_send.py {} 7200 50 200 && ip netns exec {} ping -q -c 5 -i 0.05 {}",
        pair.ns_a, pair.b4, pair.ns_a, pair.b4
    ));
    a.flush();

    // The plugin's counters reach /metrics and agree with the store: UDP bytes by protocol.
    let udp_bytes = a.ok(
        "/api/v1/flows/aggregate",
        &[("filter", "Proto=17"), ("group_by", "Proto"), ("from", "0")],
    )["total"]["bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(udp_bytes > 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (text, _) = get_text(&a.url("/metrics"), "text/plain");
        let got = text
            .lines()
            .find_map(|l| l.strip_prefix("flow_count_bytes_total{proto=\"17\"} "))
            .and_then(|v| v.parse::<f64>().ok());
        if got == Some(udp_bytes as f64) {
            assert!(text.contains("# HELP flow_count_bytes_total Emitted by plugin flow-count."));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flow_count_bytes_total{{proto=\"17\"}} {got:?} != {udp_bytes}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The exposition passes promtool's checks, in both formats.
    let (text, ctype) = get_text(&a.url("/metrics"), "text/plain");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert!(text.contains("weir_flow_bytes_total{"), "{text}");
    assert!(
        text.contains("weir_capture_events_total{event=\"flows_evicted\"}"),
        "{text}"
    );
    assert!(text.contains("weir_store_flows "), "{text}");
    promtool_check(&text);
    let (om, ctype) = get_text(
        &a.url("/metrics"),
        "application/openmetrics-text;version=1.0.0",
    );
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE weir_flow_bytes counter"));

    // A real Prometheus scrapes the agent every second.
    let prom = Prometheus::start(dir.path(), &[("weir", format!("127.0.0.1:{}", a.port))]);
    let pport = prom.port;
    let query = |q: &str| -> Option<f64> {
        let mut r = ureq::get(&format!("http://127.0.0.1:{pport}/api/v1/query"))
            .query("query", q)
            .call()
            .ok()?;
        let v: Value = r.body_mut().read_json().ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
    };
    let expected = |filter: &str| -> u64 {
        let v = a.ok(
            "/api/v1/flows/aggregate",
            &[("filter", filter), ("group_by", "NetNs"), ("from", "0")],
        );
        v["total"]["bytes"].as_u64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let ns_a = format!("NetNs={}", pair.ns_a);
    let udp = format!("{ns_a} and DstPort=7200");
    loop {
        let want = expected(&ns_a);
        let got = query(&format!(
            "sum(weir_flow_bytes_total{{netns=\"{}\"}})",
            pair.ns_a
        ));
        let udp_want = expected(&udp);
        if got == Some(want as f64) && udp_want == 50 * 242 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PromQL says {got:?} bytes for {}, the flows say {want} (UDP flows {udp_want})",
            pair.ns_a
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The user-defined metric counts the UDP flows' bytes by port.
    assert_eq!(
        query("sum(weir_udp_port_bytes_total{dst_port=\"7200\"})"),
        Some((50 * 242) as f64)
    );
    // The scrape target is up and the agent's health is there too.
    assert_eq!(query("up{job=\"weir\"}"), Some(1.0));
    assert!(query("weir_store_flows").unwrap_or(0.0) > 0.0);
    let _ = t0;
}

/// `promtool check metrics` must pass on `text`.
pub fn promtool_check(text: &str) {
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
