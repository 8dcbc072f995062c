//! The sandbox holds, tried as an attacker would against a real agent with stored flows:
//! no route reaches outside the data dir, a plugin that sleeps or loops on host calls ends at
//! its deadline without starving the others or the API, the operator's ceilings win over a
//! manifest, plugin log lines cannot be forged, a plugin failing every other call is
//! disabled, and SIGTERM exits promptly whatever plugins are doing. docs/RELIABILITY.md has
//! the figures.

use crate::plugins::{staged, weir};
use crate::util::{Agent, now_ms};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub(crate) fn listed(a: &Agent, name: &str) -> Option<Value> {
    a.ok("/api/v1/plugins", &[])["plugins"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|p| p["installed"]["manifest"]["name"] == name)
                .cloned()
        })
}

pub(crate) fn plugin(a: &Agent, name: &str) -> Value {
    listed(a, name).unwrap_or_else(|| panic!("{name} not listed"))
}

/// The operator's ceilings in these tests: 500 ms and 64 MiB per call, whatever a manifest
/// asks (flags for the agent, the same variables for `weir plugin`).
const CEILINGS: [&str; 4] = [
    "--plugin-max-timeout-ms",
    "500",
    "--plugin-max-memory-mb",
    "64",
];

/// Installs a fixture with the CLI into `data` (before the agent starts, or hot-loaded).
pub(crate) fn install(
    data: &std::path::Path,
    tmp: &std::path::Path,
    wasm: &str,
    toml: &str,
    config: &[&str],
) -> String {
    let src = staged(tmp, wasm, toml);
    let mut cmd = std::process::Command::new(crate::util::WEIR);
    cmd.args(["plugin", "install", src.to_str().expect("p")])
        .env("WEIR_DATA_DIR", data)
        .env("WEIR_PLUGIN_MAX_TIMEOUT_MS", "500")
        .env("WEIR_PLUGIN_MAX_MEMORY_MB", "64");
    for c in config {
        cmd.args(["--config", c]);
    }
    let out = cmd.output().expect("weir plugin install");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "install {toml}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A fresh data dir (`<tmp>/agent/data`) with one fixture installed; the temp dir and the
/// agent's root.
pub(crate) fn with_plugin(
    wasm: &str,
    toml: &str,
    config: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("agent");
    install(
        &root.join("data"),
        &dir.path().join("src"),
        wasm,
        toml,
        &[config],
    );
    (dir, root)
}

/// Waits until `name` is loaded with `mode`.
fn wait_loaded(a: &Agent, name: &str, mode: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = listed(a, name).unwrap_or_default();
        if p["installed"]["config"]["mode"] == mode && p["loaded"].is_object() {
            return;
        }
        assert!(Instant::now() < deadline, "{name} ({mode}) not loaded: {p}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An HTTP client that returns error statuses as answers.
fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `GET /api/v1/status` latency now, in ms (must answer 200).
fn status_ms(a: &Agent) -> u128 {
    let t = Instant::now();
    let (s, _) = a.get("/api/v1/status", &[]);
    assert_eq!(s, 200);
    t.elapsed().as_millis()
}

#[test]
fn no_plugin_route_reaches_outside_the_data_dir() {
    let _heavy = crate::util::heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("agent");
    // The plugins live in root/data/plugins: a victim at every depth a traversal could reach,
    // each looking like an installed plugin (what the old remove checked for).
    let victims = [
        root.join("data/victim"),
        root.join("victim"),
        dir.path().join("victim"),
        dir.path().join("abs-victim"),
    ];
    for v in &victims {
        std::fs::create_dir_all(v).expect("victim");
        std::fs::write(v.join("installed.json"), "{}").expect("victim file");
    }
    let a = Agent::start(&root, &["--no-capture"]);
    let abs = victims[3].to_str().expect("p").replace('/', "%2F");
    let names = [
        "..%2Fvictim".to_string(),
        "..%2F..%2Fvictim".to_string(),
        "..%2F..%2F..%2Fvictim".to_string(),
        "%2E%2E%2F%2E%2E%2Fvictim".to_string(),
        abs,
        "..".to_string(),
        "%2E%2E".to_string(),
        "a%5C..%5Cvictim".to_string(),
        "victim%00".to_string(),
    ];
    for n in &names {
        let (s, v) = a.delete(&format!("/api/v1/plugins/{n}"));
        assert_eq!(s, 400, "DELETE {n}: {v}");
        assert_eq!(v["error"]["parameter"], "name", "DELETE {n}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("invalid plugin name")),
            "{v}"
        );
        for action in ["enable", "disable", "run", "merge"] {
            let (s, v) = a.post(&format!("/api/v1/plugins/{n}/{action}"), "{}");
            assert_eq!(s, 400, "POST {n}/{action}: {v}");
        }
        let (s, v) = a.post(
            &format!("/api/v1/plugins/{n}/grants"),
            r#"{"revoke": "kv"}"#,
        );
        assert_eq!(s, 400, "POST {n}/grants: {v}");
        let (s, v) = a.get(&format!("/api/v1/plugins/{n}/snapshot"), &[]);
        assert_eq!(s, 400, "GET {n}/snapshot: {v}");
    }
    // `..` as a bare path segment is resolved by the client or routed nowhere: never 200.
    let (s, v) = a.delete("/api/v1/plugins/../../victim");
    assert_ne!(s, 200, "{v}");
    // The CLI goes through the same registry check.
    let (code, _, err) = weir(&root.join("data"), &["remove", "../victim"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid plugin name"), "{err}");
    for v in &victims {
        assert!(v.join("installed.json").exists(), "{} deleted", v.display());
    }
    // A real name still works end to end.
    let (s, v) = a.delete("/api/v1/plugins/sankey");
    assert_eq!(s, 200, "{v}");
}

#[test]
fn hostile_plugins_meet_their_deadlines_and_starve_nobody() {
    let _heavy = crate::util::heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("agent");
    let data = root.join("data");
    let tmp = dir.path().join("src");
    // The operator's ceilings: 500 ms per call whatever a manifest asks.
    let out = install(&data, &tmp, "hostile_rule", "hostile-rule", &["mode=sleep"]);
    assert!(
        out.contains("asked 4096 MiB, 600000 ms per call; granted 64 MiB, 500 ms (lowered to the agent's ceilings)"),
        "{out}"
    );
    install(&data, &tmp, "flow_count", "flow-count", &[]);
    let mut args = vec!["--no-capture", "--alert-interval", "1h"];
    args.extend(CEILINGS);
    let a = Agent::start(&root, &args);
    let got = plugin(&a, "hostile-rule");
    assert_eq!(
        got["loaded"]["limits"],
        json!({"memory_mb": 64, "timeout_ms": 500}),
        "{got}"
    );
    assert_eq!(got["loaded"]["asked_limits"]["memory_mb"], 4096);

    // Stored flows for the host-call attack and for the processors to count.
    let now = now_ms();
    let flows: Vec<Value> = (0..20_000u64)
        .map(|i| {
            json!({"SrcAddr": format!("198.18.{}.{}", i / 250 % 250, i % 250), "DstAddr": "198.18.255.1",
                   "SrcPort": 1024 + i % 60000, "DstPort": 443, "Proto": 6, "Bytes": 100, "Packets": 1,
                   "TimeFlowStartMs": now - 5000, "TimeFlowEndMs": now - 4000})
        })
        .collect();
    for chunk in flows.chunks(5000) {
        let (s, v) = a.post(
            "/api/v1/flows",
            &serde_json::to_string(chunk).expect("json"),
        );
        assert_eq!(s, 200, "{v}");
    }

    // A sleeping rule: each run ends at its deadline (plus a margin), not after 60 s.
    for mode in ["sleep", "hostcall"] {
        if mode != "sleep" {
            let (s, v) = a.delete("/api/v1/plugins/hostile-rule");
            assert_eq!(s, 200, "{v}");
            install(
                &data,
                &tmp,
                "hostile_rule",
                "hostile-rule",
                &[&format!("mode={mode}")],
            );
        }
        wait_loaded(&a, "hostile-rule", mode);
        let mut worst = 0u128;
        let (mut busy, mut timeouts) = (0, 0);
        for _ in 0..3 {
            let t = Instant::now();
            let (s, v) = a.post("/api/v1/plugins/hostile-rule/run", "{}");
            let took = t.elapsed().as_millis();
            worst = worst.max(took);
            match s {
                422 => {
                    assert!(
                        v["error"]["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("deadline") || m.contains("disabled")),
                        "{mode}: {v}"
                    );
                    timeouts += 1;
                }
                429 => busy += 1,
                _ => panic!("{mode}: {s} {v}"),
            }
            // The API's own routes keep answering meanwhile.
            assert!(status_ms(&a) < 1000);
        }
        assert!(timeouts >= 1, "{mode}: no run ended at its deadline");
        assert!(
            worst < 2000,
            "{mode}: a 500 ms call took {worst} ms ({busy} busy)"
        );
        eprintln!("{mode}: worst run {worst} ms against a 500 ms deadline");
    }

    // Concurrent runs beyond the per-plugin bound are refused at once (429), and /status
    // answers under 1 s throughout.
    let (s, _) = a.post("/api/v1/plugins/hostile-rule/enable", "");
    assert_eq!(s, 200);
    std::thread::sleep(Duration::from_millis(2500));
    let url = a.url("/api/v1/plugins/hostile-rule/run");
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = client();
                let t = Instant::now();
                let r = agent.post(&url).send("{}".as_bytes()).expect("run");
                (r.status().as_u16(), t.elapsed().as_millis())
            })
        })
        .collect();
    for _ in 0..5 {
        assert!(status_ms(&a) < 1000, "status slow under 16 concurrent runs");
    }
    let results: Vec<(u16, u128)> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let refused = results.iter().filter(|(s, _)| *s == 429).count();
    assert!(refused >= 8, "at most 4 run at once: {results:?}");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, ms)| *ms < 1000),
        "refusals are immediate: {results:?}"
    );

    // A slow processor (250 ms a batch, within its deadline, so never disabled) does not
    // starve flow-count: each is on its own worker, and what the slow one cannot take is
    // skipped and counted against it alone.
    install(&data, &tmp, "hostile", "hostile", &["mode=slow"]);
    wait_loaded(&a, "hostile", "slow");
    let fc = plugin(&a, "flow-count");
    let before = fc["loaded"]["calls"].as_u64().unwrap_or(0);
    let skipped_before = fc["loaded"]["skipped_batches"].as_u64().unwrap_or(0);
    let batches = 40u64;
    // All at once (an import answers after the next flush, so one by one would pace them):
    // each is its own batch, arriving far faster than 250 ms apart.
    let url = a.url("/api/v1/flows");
    let posts: Vec<_> = (0..batches)
        .map(|i| {
            let chunk: Vec<Value> = flows[..100]
                .iter()
                .map(|f| {
                    let mut f = f.clone();
                    f["DstPort"] = json!(1000 + i);
                    f
                })
                .collect();
            let body = serde_json::to_string(&chunk).expect("json");
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = client();
                agent
                    .post(&url)
                    .send(body.as_bytes())
                    .expect("import")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for p in posts {
        assert_eq!(p.join().expect("thread"), 200);
    }
    // flow-count accounts for every batch (taken or counted as skipped), and takes nearly all
    // of them: a burst of 40 concurrent imports on two busy cores may overflow a queue once
    // or twice, but never the way the slow plugin's does.
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let fc = plugin(&a, "flow-count");
        let calls = fc["loaded"]["calls"].as_u64().unwrap_or(0) - before;
        let skipped = fc["loaded"]["skipped_batches"].as_u64().unwrap_or(0) - skipped_before;
        if calls + skipped >= batches {
            assert_eq!(
                calls + skipped,
                batches,
                "every batch is accounted for: {fc}"
            );
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "flow-count saw {calls} of {batches} batches (skipped {skipped}) while hostile slept: {fc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        seen >= batches - 4,
        "flow-count was starved: {seen} of {batches} batches"
    );
    // Let the slow one finish its queue, then account for every batch.
    let deadline = Instant::now() + Duration::from_secs(15);
    let h = loop {
        let h = plugin(&a, "hostile");
        let skipped = h["loaded"]["skipped_batches"].as_u64().unwrap_or(0);
        let calls = h["loaded"]["calls"].as_u64().unwrap_or(0);
        if skipped + calls >= batches || Instant::now() > deadline {
            assert!(skipped > 0, "the slow processor could not keep up: {h}");
            assert_eq!(
                skipped + calls,
                batches,
                "every batch it lost is counted: {h}"
            );
            break h;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(h["loaded"]["failures"], 0, "{h}");
}

#[test]
fn sigterm_exits_promptly_with_a_rule_asleep_in_a_call() {
    let _heavy = crate::util::heavy();
    let (_dir, root) = with_plugin("hostile_rule", "hostile-rule", "mode=sleep");
    // A 10 s deadline (the default ceiling), evaluated every second.
    let mut a = Agent::start(&root, &["--no-capture", "--alert-interval", "1s"]);
    // Wait until the alert thread is inside the rule's call.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.log_text().contains("hostile-rule") {
        assert!(
            Instant::now() < deadline,
            "rule never ran:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    a.stop();
    let took = t.elapsed();
    eprintln!("SIGTERM to exit with a rule asleep: {took:?}");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    assert!(a.log_text().contains("stopped"), "{}", a.log_text());
}

#[test]
fn plugin_log_lines_cannot_be_forged_or_flood_the_log() {
    let _heavy = crate::util::heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("agent");
    let data = root.join("data");
    let tmp = dir.path().join("src");
    install(&data, &tmp, "hostile", "hostile", &["mode=forge"]);
    let a = Agent::start(&root, &["--no-capture"]);
    let now = now_ms();
    let flow = json!([{"SrcAddr": "198.18.0.1", "DstAddr": "198.18.0.2", "Proto": 6, "Bytes": 1,
                       "Packets": 1, "TimeFlowStartMs": now - 2000, "TimeFlowEndMs": now - 1000}]);
    let (s, v) = a.post("/api/v1/flows", &flow.to_string());
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = plugin(&a, "hostile");
        if p["loaded"]["log_dropped"].as_u64().unwrap_or(0) > 9000 {
            break;
        }
        assert!(Instant::now() < deadline, "flood not limited: {p}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = a.log_text();
    for line in log.lines().filter(|l| l.contains("forged")) {
        assert!(
            line.contains("hostile") && line.contains("plugin log") && line.contains("ok\\n"),
            "a forged line: {line}"
        );
    }
    assert!(!log.contains('\x1b'), "escape sequences reach the log");
    let flood = log.lines().filter(|l| l.contains("flood ")).count();
    assert!(flood <= 120, "{flood} flood lines logged");
    assert!(log.contains("plugin log lines dropped"));
}

#[test]
fn a_run_whose_client_goes_away_is_cancelled() {
    let _heavy = crate::util::heavy();
    // A 10 s deadline (the default ceiling); the client gives up after 300 ms.
    let (_dir, root) = with_plugin("hostile_rule", "hostile-rule", "mode=sleep");
    let a = Agent::start(&root, &["--no-capture", "--alert-interval", "1h"]);
    let impatient: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(300)))
        .build()
        .into();
    let t = Instant::now();
    let r = impatient
        .post(&a.url("/api/v1/plugins/hostile-rule/run"))
        .send("{}".as_bytes());
    assert!(r.is_err(), "the client timed out");
    // The call ended soon after, not at its 10 s deadline, and is not counted as a failure.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = plugin(&a, "hostile-rule");
        if p["loaded"]["calls"].as_u64() == Some(1) {
            let took = p["loaded"]["max_call_seconds"].as_f64().unwrap_or(99.0);
            eprintln!("run cancelled {took:.3} s after it started (client gave up at 0.3 s)");
            assert!(took < 1.5, "{p}");
            assert_eq!(p["loaded"]["failures"], 0, "{p}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "call still running after {:?}: {p}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn plugin_kv_survives_kill_9() {
    let _heavy = crate::util::heavy();
    let (_dir, root) = with_plugin("hostile", "hostile", "mode=kv");
    let mut a = Agent::start(&root, &["--no-capture"]);
    let count = |a: &Agent| {
        let (s, v) = a.post("/api/v1/plugins/hostile/run", "{}");
        assert_eq!(s, 200, "{v}");
        v["result"]["samples"][0]["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("no kv count: {v}"))
    };
    for want in 1..=3 {
        assert_eq!(count(&a), f64::from(want));
    }
    // The agent writes plugin state every 2 s; then the hardest stop there is.
    std::thread::sleep(Duration::from_millis(2500));
    a.kill9();
    a.spawn();
    assert_eq!(count(&a), 4.0, "kv after kill -9 and restart");
}

#[test]
fn plugin_metrics_keep_the_scrape_valid_and_leave_with_the_plugin() {
    let _heavy = crate::util::heavy();
    crate::util::require(&["promtool"]);
    let (_dir, root) = with_plugin("hostile", "hostile", "mode=metrics");
    let a = Agent::start(&root, &["--no-capture"]);
    let now = now_ms();
    for i in 0..3u64 {
        let flow = json!([{"SrcAddr": "198.18.0.1", "DstAddr": "198.18.0.2", "Proto": 6, "Bytes": 1,
                           "DstPort": 1000 + i, "Packets": 1, "TimeFlowStartMs": now - 2000,
                           "TimeFlowEndMs": now - 1000}]);
        let (s, v) = a.post("/api/v1/flows", &flow.to_string());
        assert_eq!(s, 200, "{v}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while plugin(&a, "hostile")["loaded"]["calls"]
        .as_u64()
        .unwrap_or(0)
        < 3
    {
        assert!(Instant::now() < deadline, "not called");
        std::thread::sleep(Duration::from_millis(100));
    }
    let scrape = || a.get_raw("/metrics").expect("scrape").1;
    let text = scrape();
    crate::metrics::promtool_check(&text);
    // x (a counter) is there as x_total once; the colliding gauge and reserved labels not.
    assert_eq!(
        text.lines().filter(|l| l.starts_with("x_total ")).count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("h_count ")).count(),
        1,
        "{text}"
    );
    assert!(
        !text.contains("y{le=") && !text.contains("z{quantile="),
        "{text}"
    );
    // 100 families at most (x and h among them), however many new names each call brings.
    let families = text
        .lines()
        .filter(|l| l.starts_with("# HELP ") && l.ends_with("Emitted by plugin hostile."))
        .count();
    assert_eq!(families, 100, "{text}");
    // Removed: its families leave /metrics with it.
    let (s, v) = a.delete("/api/v1/plugins/hostile");
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape().contains("Emitted by plugin hostile.") {
        assert!(Instant::now() < deadline, "families stayed after removal");
        std::thread::sleep(Duration::from_millis(250));
    }
    crate::metrics::promtool_check(&scrape());
}

/// Peak resident memory of a process so far (VmHWM), MiB.
fn peak_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

#[test]
fn memory_stays_bounded_under_concurrent_memory_bombs() {
    let _heavy = crate::util::heavy();
    // A rule asking 4 GiB that grabs memory until stopped, run 16 at a time, three rounds,
    // under a 64 MiB ceiling: at most 4 calls run, so at most 4 x 64 MiB of plugin memory.
    let (_dir, root) = with_plugin("hostile_rule", "hostile-rule", "mode=bomb");
    let mut args = vec!["--no-capture", "--alert-interval", "1h"];
    args.extend(CEILINGS);
    let a = Agent::start(&root, &args);
    let pid = a.child.as_ref().expect("running").id();
    // Warm: one run compiles and instantiates, so the baseline includes that.
    let (s, v) = a.post("/api/v1/plugins/hostile-rule/run", "{}");
    assert_eq!(s, 422, "{v}");
    let before = peak_mib(pid);
    let url = a.url("/api/v1/plugins/hostile-rule/run");
    let mut refused = 0;
    for _ in 0..3 {
        // Re-enabled each round: three memory failures in a row disable it.
        let (s, _) = a.post("/api/v1/plugins/hostile-rule/enable", "");
        assert_eq!(s, 200);
        let runs: Vec<_> = (0..16)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let r = client().post(&url).send("{}".as_bytes()).expect("run");
                    r.status().as_u16()
                })
            })
            .collect();
        for r in runs {
            let s = r.join().expect("thread");
            assert!(s == 422 || s == 429, "{s}");
            refused += usize::from(s == 429);
        }
    }
    let after = peak_mib(pid);
    eprintln!(
        "agent peak RSS {before} MiB before, {after} MiB after 48 memory bombs ({refused} refused as busy)"
    );
    assert!(
        after.saturating_sub(before) <= 4 * 64 + 64,
        "peak grew {before} -> {after} MiB"
    );
    assert!(refused > 0);
}
