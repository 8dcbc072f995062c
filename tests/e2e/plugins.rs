//! Plugins through the binary: `weir plugin` on the data directory, hot-loaded by a running
//! agent, flow-processors fed by ingest, and the plugin API.

use crate::util::{Agent, WEIR, now_ms};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn built(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("plugins/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        p.exists(),
        "{} missing: cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml",
        p.display()
    );
    p
}

pub fn staged(dir: &std::path::Path, wasm: &str, toml: &str) -> PathBuf {
    let d = dir.join(format!("src-{toml}"));
    std::fs::create_dir_all(&d).expect("dir");
    std::fs::copy(built(wasm), d.join("plugin.wasm")).expect("wasm");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("plugins/{toml}/plugin.toml")),
        d.join("plugin.toml"),
    )
    .expect("toml");
    d
}

pub fn weir(data: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(WEIR)
        .arg("plugin")
        .args(args)
        .env("WEIR_DATA_DIR", data)
        .output()
        .expect("weir plugin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `weir plugin run ARGS` against the agent; must succeed; returns its standard output.
pub fn run_cli(a: &Agent, args: &[&str]) -> String {
    let out = Command::new(WEIR)
        .args(["plugin", "run"])
        .args(args)
        .arg("--server")
        .arg(a.url(""))
        .output()
        .expect("weir plugin run");
    assert!(
        out.status.success(),
        "weir plugin run {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the agent has called a flow-processor at least once, without failures.
fn wait_called(a: &Agent, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = plugin(a, name).expect("listed");
        if p["loaded"]["calls"].as_u64() >= Some(1) {
            assert_eq!(p["loaded"]["failures"], 0, "{p}");
            return;
        }
        assert!(Instant::now() < deadline, "{name} never called: {p}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn plugin(a: &Agent, name: &str) -> Option<Value> {
    a.ok("/api/v1/plugins", &[])["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["installed"]["manifest"]["name"] == name)
        .cloned()
}

#[test]
fn cli_installs_and_a_running_agent_hot_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Agent::start(dir.path(), &["--no-capture"]);
    let data = dir.path().join("data");
    let src = staged(dir.path(), "flow_count", "flow-count");

    // A wrong pin is refused and nothing is installed.
    let (code, _, err) = weir(
        &data,
        &[
            "install",
            src.to_str().expect("path"),
            "--sha256",
            &"ab".repeat(32),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sha256 mismatch"), "{err}");
    let (code, out, err) = weir(&data, &["install", src.to_str().expect("path")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("flow-count 0.1.0 (flow-processor) installed"),
        "{out}"
    );

    // The agent picks it up without a restart, then feeds it stored batches.
    let deadline = Instant::now() + Duration::from_secs(10);
    while plugin(&a, "flow-count")
        .and_then(|p| p["loaded"].as_object().cloned())
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "not hot-loaded:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut f = weir_core::Flow::empty();
    f.time_flow_end_ms = now_ms();
    f.time_flow_start_ms = f.time_flow_end_ms - 5;
    let (s, v) = a.post(
        "/api/v1/flows",
        &serde_json::to_string(&vec![f; 50]).expect("json"),
    );
    assert_eq!(s, 200, "{v}");
    wait_called(&a, "flow-count");

    // List and info show what it asked for and got.
    let (code, out, _) = weir(&data, &["list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("flow-count") && out.contains("enabled"),
        "{out}"
    );
    let (_, out, _) = weir(&data, &["info", "flow-count", "--json"]);
    let info: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(info["installed"]["granted"], serde_json::json!([]));

    // Disable over the API, remove with the CLI.
    let (s, v) = a.post("/api/v1/plugins/flow-count/disable", "");
    assert_eq!(s, 200, "{v}");
    assert!(plugin(&a, "flow-count").expect("listed")["loaded"].is_null());
    let (code, out, err) = weir(&data, &["remove", "flow-count"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while plugin(&a, "flow-count").is_some() {
        assert!(Instant::now() < deadline, "still listed after remove");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn api_upload_refuses_bad_plugins_and_installs_good_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Agent::start(dir.path(), &["--no-capture"]);
    let (s, v) = a.post("/api/v1/plugins", "definitely not wasm");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bad magic"),
        "{v}"
    );
    // A component with no embedded manifest.
    let raw = std::fs::read(built("flow_count")).expect("wasm");
    let url = a.url("/api/v1/plugins");
    let mut r = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(&url)
        .send(&raw[..])
        .expect("post");
    assert_eq!(r.status(), 400);
    let body = r.body_mut().read_to_string().expect("body");
    assert!(
        body.contains("no plugin.toml and no embedded manifest"),
        "{body}"
    );
    // Install via the CLI-embedded form: stage, install with the CLI into a scratch dir, then
    // upload the installed (self-describing) file.
    let scratch = dir.path().join("scratch");
    let src = staged(dir.path(), "flow_count", "flow-count");
    let (code, _, err) = weir(&scratch, &["install", src.to_str().expect("path")]);
    assert_eq!(code, 0, "{err}");
    let packed = std::fs::read(scratch.join("plugins/flow-count/plugin.wasm")).expect("packed");
    let mut r = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(&format!("{url}?grant=log"))
        .send(&packed[..])
        .expect("post");
    let body = r.body_mut().read_to_string().expect("body");
    assert_eq!(r.status(), 200, "{body}");
    let p = plugin(&a, "flow-count").expect("installed");
    assert_eq!(p["installed"]["granted"], serde_json::json!(["log"]));
    assert_eq!(p["loaded"]["state"]["state"], "enabled");
}

#[test]
fn bundled_plugins_ship_inside_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("cli");
    let (code, out, err) = weir(&data, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("bundled, not installed: flow-count, sankey, chord, topology, drops, dns-errors, no-flows"),
        "{out}"
    );
    let (code, out, err) = weir(&data, &["install", "bundled:flow-count"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("flow-count 0.1.0 (flow-processor) installed"),
        "{out}"
    );
    // The copy inside the binary is the one built from plugins/ (same bytes once installed).
    let other = dir.path().join("from-source");
    let src = staged(dir.path(), "flow_count", "flow-count");
    let (code, _, err) = weir(&other, &["install", src.to_str().expect("p")]);
    assert_eq!(code, 0, "{err}");
    let sha = |d: &std::path::Path| {
        let (_, info, _) = weir(d, &["info", "flow-count", "--json"]);
        let v: Value = serde_json::from_str(&info).expect("json");
        v["installed"]["sha256"]
            .as_str()
            .expect("sha256")
            .to_string()
    };
    assert_eq!(sha(&data), sha(&other));
    let (code, _, err) = weir(&data, &["install", "bundled:nope"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(
            "no bundled plugin named 'nope' (bundled: flow-count, sankey, chord, topology, drops, dns-errors, no-flows, saturation, quiet, latency, ndjson-export, ovs-decoder, policy-engine, what-changed, event-drops, trace-flows, edge-summary, sampling-controller, ipfix-export, otlp-export, clickhouse-export)"
        ),
        "{err}"
    );

    // Over the API: listed, installable by source; local paths and empty requests refused.
    let a = Agent::start(dir.path(), &["--no-capture"]);
    let v = a.ok("/api/v1/plugins", &[]);
    assert_eq!(
        v["bundled"],
        serde_json::json!([
            "flow-count",
            "sankey",
            "chord",
            "topology",
            "drops",
            "dns-errors",
            "no-flows",
            "saturation",
            "quiet",
            "latency",
            "ndjson-export",
            "ovs-decoder",
            "policy-engine",
            "what-changed",
            "event-drops",
            "trace-flows",
            "edge-summary",
            "sampling-controller",
            "ipfix-export",
            "otlp-export",
            "clickhouse-export"
        ]),
        "{v}"
    );
    let (s, v) = a.post("/api/v1/plugins?source=bundled:flow-count", "");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["installed"]["manifest"]["name"], "flow-count", "{v}");
    let (s, v) = a.post("/api/v1/plugins?source=/etc/passwd", "");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("local paths"),
        "{v}"
    );
    let (s, v) = a.post("/api/v1/plugins", "");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nothing to install"),
        "{v}"
    );
}

#[test]
fn scaffolded_plugins_of_every_kind_build_install_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared_target = dir.path().join("target");
    let data = dir.path().join("data");
    let kinds = [
        ("flow-processor", "my-proc"),
        ("visualization", "my-view"),
        ("alert-rule", "my-rule"),
        ("correlator", "my-corr"),
        ("decoder", "my-dec"),
        ("summarizer", "my-sum"),
        ("check", "my-check"),
        ("exporter", "my-export"),
    ];
    for (kind, name) in kinds {
        let out = Command::new(WEIR)
            .args(["plugin", "new", kind, name, "--dir"])
            .arg(dir.path())
            .output()
            .expect("weir plugin new");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Built and installed as a user would: `weir plugin build DIR --install` (one
        // target directory for all six, so the SDK compiles once).
        let build = Command::new(WEIR)
            .args(["plugin", "build", "--install"])
            .arg(dir.path().join(name))
            .env("WEIR_DATA_DIR", &data)
            .env("CARGO_TARGET_DIR", &shared_target)
            .output()
            .expect("weir plugin build");
        let out = String::from_utf8_lossy(&build.stdout);
        assert!(
            build.status.success(),
            "{kind} scaffold does not build:\n{}",
            String::from_utf8_lossy(&build.stderr)
        );
        assert!(
            out.contains(&format!("{name} 0.1.0 ({kind}) installed")),
            "{out}"
        );
    }
    // They run in the agent: the flow-processor and summarizer on stored flows as they come,
    // the exporter sending them to the sink the operator names.
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    rx.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .expect("timeout");
    let sink = format!(
        "out=udp://127.0.0.1:{}",
        rx.local_addr().expect("addr").port()
    );
    let a = Agent::start(dir.path(), &["--no-capture", "--sink", &sink]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !a.ok("/api/v1/plugins", &[])["plugins"]
        .as_array()
        .is_some_and(|l| l.iter().any(|p| p["export"].is_object()))
    {
        assert!(std::time::Instant::now() < deadline, "no exporter feed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let now = now_ms();
    let mut f = weir_core::Flow::empty();
    f.time_flow_start_ms = now - 1000;
    f.time_flow_end_ms = now;
    f.bytes = 10;
    f.src_addr = "198.18.0.1".parse().expect("ip");
    let (s, v) = a.post(
        "/api/v1/flows",
        &serde_json::to_string(&vec![f; 3]).expect("json"),
    );
    assert_eq!(s, 200, "{v}");
    wait_called(&a, "my-proc");
    wait_called(&a, "my-sum");
    let mut buf = vec![0u8; 65536];
    let n = rx.recv(&mut buf).expect("the exporter's datagram");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("\"SrcAddr\":\"198.18.0.1\""), "{text}");
    let run = |name: &str, body: Value| {
        let (s, v) = a.post(&format!("/api/v1/plugins/{name}/run"), &body.to_string());
        (s, v)
    };
    // decoder: records, and a bad line named.
    let (s, v) = run("my-dec", serde_json::json!({"input": "a=1 b=2\n\nc=3\n"}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"]["records"],
        serde_json::json!([{"a": "1", "b": "2"}, {"c": "3"}])
    );
    let (s, v) = run("my-dec", serde_json::json!({"input": "a=1\noops"}));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("line 2: 'oops'"),
        "{v}"
    );
    // correlator: only the event inside the flows' time span becomes an annotation.
    let (s, v) = run(
        "my-corr",
        serde_json::json!({"events": [
            {"time_ms": now - 500, "source": "k8s", "text": "pod restarted", "labels": {"pod": "web-1"}},
            {"time_ms": now - 3_600_000, "source": "k8s", "text": "long ago"},
        ]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["flows"], 3, "{v}");
    let notes = v["result"]["annotations"].as_array().expect("annotations");
    assert_eq!(notes.len(), 1, "{v}");
    assert_eq!(notes[0]["text"], "k8s: pod restarted");
    assert_eq!(notes[0]["labels"]["pod"], "web-1");
    // summarizer: the agent already folded the stored batch in; a run with update adds the
    // window's flows again, and the state survives between calls (kept as its snapshot).
    let (s, v) = run("my-sum", serde_json::json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"]["view"]["rows"],
        serde_json::json!([["198.18.0.1", "30"]]),
        "{v}"
    );
    let (s, v) = run("my-sum", serde_json::json!({"update": true}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"]["view"]["rows"],
        serde_json::json!([["198.18.0.1", "60"]]),
        "{v}"
    );
    assert!(v["result"]["snapshot_bytes"].as_u64() > Some(0), "{v}");
    // check: a verdict as an exit code. The flows went to port 0, which the scaffold's
    // allow-list (53, 80, 443) does not have: fail (1), with the port in the table and on the
    // timeline; an empty window passes (0); a plugin of another kind cannot be checked (2).
    let check = |args: &[&str]| a.cli(&[&["check"], args].concat());
    let (code, out, err) = check(&["my-check", "--from", "-10m"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("FAIL my-check: 1 ports not allowed"),
        "{out}"
    );
    assert!(out.contains("DstPort\tBytes\tFlows\n0\t30\t3"), "{out}");
    let (code, out, err) = check(&[
        "my-check",
        "--from",
        "2020-01-01T00:00:00Z",
        "--to",
        "2020-01-01T01:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["pass"], true, "{v}");
    let (code, _, err) = check(&["my-rule"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("my-rule is not a check (its kind: alert-rule)"),
        "{err}"
    );
    let marks = a.ok("/api/v1/records", &[("kind", "timeline"), ("from", "-1h")]);
    let marks = marks["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0]["source"], "my-check");
    assert_eq!(marks[0]["flow_filter"], "DstPort=0");
    assert!(
        marks[0]["labels"]
            .to_string()
            .contains(r#"["lane","port-allowlist"]"#),
        "{marks:?}"
    );
    // flow-processor over the window, visualization, alert-rule: all through the CLI too.
    for (name, want) in [
        ("my-proc", "my_proc_bytes {} 30.0"),
        ("my-rule", "no alerts"),
    ] {
        let text = run_cli(&a, &[name]);
        assert!(text.contains(want), "{name}: {text}");
    }
    let (s, v) = run("my-view", serde_json::json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["view"]["type"], "table", "{v}");
    assert_eq!(
        v["result"]["view"]["rows"][0],
        serde_json::json!(["198.18.0.1", "30"]),
        "{v}"
    );
    // Bad run requests name the problem; unknown plugins are 404.
    let (s, v) = run("my-rule", serde_json::json!({"from_ms": 5, "to_ms": 1}));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("after to_ms"),
        "{v}"
    );
    let (s, v) = run("my-rule", serde_json::json!({"window": 5}));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field `window`"),
        "{v}"
    );
    let (s, _) = run("nobody", serde_json::json!({}));
    assert_eq!(s, 404);
    // Refuses to overwrite, and unknown kinds are named.
    let out = Command::new(WEIR)
        .args(["plugin", "new", "flow-processor", "my-proc", "--dir"])
        .arg(dir.path())
        .output()
        .expect("weir");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = Command::new(WEIR)
        .args(["plugin", "new", "teleporter", "x", "--dir"])
        .arg(dir.path())
        .output()
        .expect("weir");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown plugin kind 'teleporter'"));
}
