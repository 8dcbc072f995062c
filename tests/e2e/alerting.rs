//! Alerting end to end: custom alert scripts (Python, JavaScript) evaluated by the agent on
//! real namespace traffic, the pending -> firing -> resolved lifecycle with history, silences,
//! notifications to a real Prometheus Alertmanager (Debian's) and to a JSON webhook, and a
//! notification queued while the webhook is down that survives an agent restart.

use crate::plugins::weir;
use crate::util::{Agent, KillOnDrop, Pair, free_port, require, sh};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py");

fn guest(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/target/guests")
        .join(name)
}

fn webhook(port: u16, log: &Path) -> KillOnDrop {
    let mut c = Command::new("python3")
        .arg(format!("{PY}/webhook.py"))
        .arg(port.to_string())
        .arg(log)
        .stdout(Stdio::piped())
        .spawn()
        .expect("webhook.py");
    let mut line = String::new();
    BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    KillOnDrop(c)
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn hook_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A real Alertmanager on loopback (one receiver, no clustering), ready; and its port.
fn alertmanager(dir: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let cfg = dir.join("am.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: none\n",
    )
    .expect("am config");
    let am = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertmanager");
    let am = KillOnDrop(am);
    wait_until("alertmanager up", 20, || {
        ureq::get(&format!("http://127.0.0.1:{port}/-/ready"))
            .call()
            .is_ok()
    });
    (am, port)
}

/// The alerts Alertmanager holds (active ones).
fn am_alerts(port: u16) -> Vec<Value> {
    ureq::get(&format!("http://127.0.0.1:{port}/api/v2/alerts"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn custom_alerts_fire_resolve_and_reach_alertmanager_and_a_webhook() {
    require(&["prometheus-alertmanager", "python3"]);
    for g in ["heavy-talkers", "quiet-network"] {
        assert!(
            guest(g).join("plugin.toml").exists(),
            "{g} missing: run scripts/build-guest-plugins.sh"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let pair = Pair::new(69);
    let (_am, am_port) = alertmanager(dir.path());
    let am_alerts = || am_alerts(am_port);
    // The alert scripts: Python fires on a heavy pair, JavaScript on a quiet port.
    for (g, cfg) in [
        ("heavy-talkers", "threshold_bytes=100000"),
        ("quiet-network", "min_bytes=1000"),
    ] {
        // heavy-talkers: a pair moving 100 kB in the window; quiet-network: under 1000 bytes
        // in the window.
        let (code, _, err) = weir(
            &data,
            &["install", guest(g).to_str().expect("p"), "--config", cfg],
        );
        assert_eq!(code, 0, "{err}");
    }
    let hook_port = free_port();
    let hook_log = dir.path().join("hook.log");
    let args: Vec<String> = [
        "--no-host-netns",
        "--netns",
        &pair.ns_a,
        "--active-timeout",
        "1s",
        "--alert-interval",
        "1h",
        "--alert-window",
        "4s",
        "--alertmanager",
        &format!("http://127.0.0.1:{am_port}"),
        "--alert-webhook",
        &format!("http://127.0.0.1:{hook_port}/hook"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Agent::start(dir.path(), &argv);
    wait_until("attached", 20, || {
        a.ok("/api/v1/status", &[])["capture"]["interfaces"]
            .as_array()
            .map_or(0, Vec::len)
            > 0
    });

    // Real traffic: 200 datagrams of 1000 bytes from A to B.
    sh(&format!(
        "ip netns exec {} python3 {PY}/udp_send.py {} 7300 200 1000",
        pair.ns_a, pair.b4
    ));
    a.flush();
    // The webhook is down: notifications queue.
    let (s, v) = a.post("/api/v1/alerts/evaluate", "");
    assert_eq!(s, 200, "{v}");
    let changed = v["changed"].as_array().cloned().unwrap_or_default();
    let firing: Vec<&str> = changed
        .iter()
        .filter(|x| x["state"] == "firing")
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert!(firing.contains(&"heavy-talker"), "{v}");
    let active = a.ok("/api/v1/alerts", &[]);
    assert!(
        active["queued_notifications"].as_u64() > Some(0),
        "{active}"
    );
    // Alertmanager got the firing alert.
    wait_until("alert in alertmanager", 20, || {
        am_alerts().iter().any(|x| {
            x["labels"]["alertname"] == "heavy-talker"
                && x["labels"]["weir_rule"] == "heavy-talkers"
        })
    });

    // Restart the agent with the webhook still down, then bring the webhook up: the queued
    // notification arrives (retries with backoff, kept on disk).
    a.stop();
    a.spawn();
    let _hook = webhook(hook_port, &hook_log);
    wait_until(
        "queued webhook notification delivered after restart",
        60,
        || {
            hook_lines(&hook_log)
                .iter()
                .any(|x| x["status"] == "firing" && x["alert"]["name"] == "heavy-talker")
        },
    );

    // No more traffic: after the window the rule stops reporting it and it resolves (at
    // this evaluation, or already at the one the restarted agent ran first).
    std::thread::sleep(Duration::from_secs(5));
    let (s, v) = a.post("/api/v1/alerts/evaluate", "");
    assert_eq!(s, 200, "{v}");
    wait_until("resolved notification", 30, || {
        hook_lines(&hook_log)
            .iter()
            .any(|x| x["status"] == "resolved" && x["alert"]["name"] == "heavy-talker")
    });
    wait_until("resolved in alertmanager", 30, || {
        am_alerts()
            .iter()
            .filter(|x| x["labels"]["alertname"] == "heavy-talker")
            .all(|x| x["status"]["state"] != "active")
    });
    // The quiet JavaScript rule fires on the quiet window; silenced, it does not notify.
    let quiet_notified = || {
        hook_lines(&hook_log)
            .iter()
            .filter(|x| x["alert"]["rule"] == "quiet-network")
            .count()
    };
    let history = a.ok("/api/v1/alerts/history", &[("limit", "100")]);
    let states: Vec<(String, String)> = history["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap_or("").to_string(),
                x["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&("heavy-talker".into(), "firing".into())),
        "{history}"
    );
    assert!(
        states.contains(&("heavy-talker".into(), "resolved".into())),
        "{history}"
    );
    assert!(
        states
            .iter()
            .any(|(n, s)| n == "quiet-network" && s == "firing"),
        "the JavaScript rule fired on a quiet window: {history}"
    );
    wait_until("quiet-network notified", 30, || quiet_notified() > 0);
    let (s, v) = a.post(
        "/api/v1/alerts/silences",
        r#"{"matchers": {"rule": "heavy-talkers"}, "duration": "1h", "comment": "e2e"}"#,
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = a.post(
        "/api/v1/alerts/silences",
        r#"{"matchers": {}, "duration": "1h"}"#,
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("matcher")
    );
    // New traffic would fire heavy-talker again, silenced: no new notification for it.
    let before = hook_lines(&hook_log).len();
    sh(&format!(
        "ip netns exec {} python3 {PY}/udp_send.py {} 7300 200 1000",
        pair.ns_a, pair.b4
    ));
    a.flush();
    let (_, v) = a.post("/api/v1/alerts/evaluate", "");
    assert!(
        v["changed"].as_array().is_some_and(|c| c
            .iter()
            .any(|x| x["name"] == "heavy-talker" && x["silenced"] == true)),
        "{v}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !hook_lines(&hook_log)[before..]
            .iter()
            .any(|x| x["alert"]["name"] == "heavy-talker"),
        "a silenced alert was notified"
    );
    // The CLI lists active alerts and silences.
    let text = alerts_cli(&a);
    assert!(
        text.contains("heavy-talker") && text.contains("silence"),
        "{text}"
    );
}

/// `weir alerts` against the agent: must succeed; its output.
fn alerts_cli(a: &Agent) -> String {
    let out = Command::new(crate::util::WEIR)
        .args(["alerts", "--server", &a.url("")])
        .output()
        .expect("weir alerts");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Alert names (with severity) among the agent's active alerts.
fn active_alerts(a: &Agent) -> Vec<(String, String)> {
    a.ok("/api/v1/alerts", &[])["active"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["state"] == "firing")
        .map(|x| {
            (
                x["name"].as_str().unwrap_or("").to_string(),
                x["severity"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn evaluate(a: &Agent) -> Value {
    a.flush();
    let (s, v) = a.post("/api/v1/alerts/evaluate", "");
    assert_eq!(s, 200, "{v}");
    v
}

fn changed(v: &Value, state: &str) -> Vec<String> {
    v["changed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["state"] == state)
        .filter_map(|x| x["name"].as_str().map(String::from))
        .collect()
}

/// Every bundled rule on traffic made for it in namespaces: drops (nftables), DNS errors and
/// slow DNS (a real resolver), saturation (iperf3 against the veth's own link speed), high
/// RTT (iperf3 through a token-bucket queue), quiet (a steady ping that stops) and the
/// no-flows self-alert; each fires, reaches a real Alertmanager, and resolves.
#[test]
fn bundled_rules_fire_on_real_traffic_reach_alertmanager_and_resolve() {
    require(&["python3", "nft", "iperf3", "prometheus-alertmanager", "tc"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let pair = Pair::alone(70);
    let (_am, am_port) = alertmanager(dir.path());
    for (rule, cfg) in [
        // Only UDP: ping's echo replies count as NO_SOCKET drops (the raw socket got a
        // copy); the three packets to 7777 (no listener) stay under packets_info.
        (
            "drops",
            vec![
                "packets_info=4",
                "packets_warning=5",
                "packets_critical=1000",
                "filter=Proto=udp",
            ],
        ),
        ("dns-errors", vec!["errors_warning=2"]),
        ("no-flows", vec!["filter=DstPort=7777"]),
        // Shares of the veth's reported 10 Gb/s that iperf3 passes easily.
        (
            "saturation",
            vec![
                "percent_info=1",
                "percent_warning=1",
                "percent_critical=2",
                "filter=Port=5201",
            ],
        ),
        (
            "latency",
            vec![
                "rtt_ms_info=50",
                "rtt_ms_warning=100",
                "rtt_ms_critical=100000",
                "dns_ms_warning=200",
                "dns_ms_critical=100000",
                "min_samples=2",
            ],
        ),
        (
            "quiet",
            vec![
                "seasonality=none",
                "learn_windows=2",
                "min_baseline_bytes=500",
                "filter=Proto=icmp",
            ],
        ),
    ] {
        let mut args = vec!["install".to_string(), format!("bundled:{rule}")];
        for c in cfg {
            args.push("--config".into());
            args.push(c.into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = weir(&data, &argv);
        assert_eq!(code, 0, "{rule}: {err}");
    }
    sh(&format!(
        "ip netns exec {} nft 'add table inet t; add chain inet t input {{ type filter hook input priority 0; }}; add rule inet t input udp dport 9999 drop'",
        pair.ns_b
    ));
    // slow.test answers after 300 ms.
    let _dns = crate::deep::python_bg(&pair.ns_b, "dns_server.py", &["300"]);
    let am_url = format!("http://127.0.0.1:{am_port}");
    let a = crate::capture::agent_with(
        &pair,
        dir.path(),
        &[
            "--alert-interval",
            "1h",
            "--alert-window",
            "10s",
            "--alertmanager",
            &am_url,
        ],
    );
    // The capture read the veth's link speed, which saturation uses.
    let st = a.ok("/api/v1/status", &[]);
    assert!(
        st["capture"]["interfaces"]
            .as_array()
            .is_some_and(|l| l.iter().all(|i| i["speed_bps"] == 10_000_000_000u64)),
        "veth speed: {st}"
    );
    let ping = |_: ()| {
        KillOnDrop(
            Command::new("ip")
                .args(["netns", "exec", &pair.ns_a, "ping", "-q", "-i", "0.2"])
                .arg(&pair.b4)
                .stdout(Stdio::null())
                .spawn()
                .expect("ping"),
        )
    };
    let iperf = |secs: u32| {
        sh(&format!(
            "ip netns exec {b} iperf3 -s -1 -D && sleep 0.5 && ip netns exec {a} iperf3 -c {ip} -t {secs} >/dev/null",
            a = pair.ns_a,
            b = pair.ns_b,
            ip = pair.b4
        ));
    };

    // A steady ping teaches quiet its baseline (two windows).
    let pinger = ping(());
    std::thread::sleep(Duration::from_secs(3));
    evaluate(&a);
    // A bulk transfer, drops, three NXDOMAIN and four slow answers, nothing to port 7777.
    iperf(3);
    sh(&format!(
        "ip netns exec {ns} python3 {PY}/udp_send.py {b} 9999 5 100 && ip netns exec {ns} python3 {PY}/dns_client.py {b} nx.test nx.test nx.test slow.test slow.test slow.test slow.test",
        ns = pair.ns_a,
        b = pair.b4
    ));
    evaluate(&a);
    let active = active_alerts(&a);
    let has = |name: &str, sev: &str| active.iter().any(|(n, s)| n == name && s == sev);
    for (name, sev) in [
        ("PacketDrops", "warning"),
        ("DnsErrors", "warning"),
        ("NoFlows", "critical"),
        ("LinkSaturation", "critical"),
        ("SlowDns", "warning"),
    ] {
        assert!(
            has(name, sev),
            "{name} {sev} not firing: {active:?}\n{}\n{}",
            a.ok(
                "/api/v1/flows",
                &[("filter", "Port=53 or PktDropPackets>0"), ("limit", "40")]
            ),
            a.log_text()
        );
    }
    assert!(
        !active.iter().any(|(n, _)| n == "TrafficQuiet"),
        "{active:?}"
    );
    let full = a.ok("/api/v1/alerts", &[]);
    let drops = full["active"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["name"] == "PacketDrops").cloned())
        .expect("drops");
    assert_eq!(
        drops["labels"]["reason"], "SKB_DROP_REASON_NETFILTER_DROP",
        "{drops}"
    );
    assert!(
        drops["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("5 packets")),
        "{drops}"
    );
    let in_am = |names: &[&str]| {
        let got = am_alerts(am_port);
        names
            .iter()
            .all(|n| got.iter().any(|x| x["labels"]["alertname"] == *n))
    };
    wait_until("bundled alerts in alertmanager", 30, || {
        in_am(&[
            "PacketDrops",
            "DnsErrors",
            "NoFlows",
            "LinkSaturation",
            "SlowDns",
        ])
    });

    // A congested link: a token bucket queue on a's side makes TCP's RTT climb.
    sh(&format!(
        "ip netns exec {} tc qdisc add dev {} root tbf rate 4mbit burst 32kb latency 800ms",
        pair.ns_a, pair.a_if
    ));
    iperf(4);
    sh(&format!(
        "ip netns exec {} tc qdisc del dev {} root",
        pair.ns_a, pair.a_if
    ));
    evaluate(&a);
    let active = active_alerts(&a);
    assert!(
        active.iter().any(|(n, s)| n == "HighRtt" && s == "warning"),
        "HighRtt not firing: {active:?}\n{}",
        a.ok(
            "/api/v1/flows",
            &[("filter", "TimeFlowRttNs>0"), ("limit", "20")]
        )
    );
    wait_until("HighRtt in alertmanager", 30, || in_am(&["HighRtt"]));

    // The ping stops: quiet fires (zero where there was traffic). Traffic to 7777 resolves
    // the self-alert, and the window passing resolves the others.
    drop(pinger);
    std::thread::sleep(Duration::from_secs(11));
    sh(&format!(
        "ip netns exec {} python3 {PY}/udp_send.py {} 7777 3 10",
        pair.ns_a, pair.b4
    ));
    let v = evaluate(&a);
    let history = a.ok("/api/v1/alerts/history", &[("limit", "500")]);
    let active = active_alerts(&a);
    for name in [
        "PacketDrops",
        "DnsErrors",
        "NoFlows",
        "LinkSaturation",
        "SlowDns",
        "HighRtt",
    ] {
        assert!(
            !active.iter().any(|(n, _)| n == name),
            "{name} still firing: {active:?}"
        );
        assert!(
            history["history"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x["state"] == "resolved" && x["name"] == name),
            "{name} never resolved: {history}"
        );
    }
    let active = active_alerts(&a);
    assert!(
        active
            .iter()
            .any(|(n, s)| n == "TrafficQuiet" && s == "critical"),
        "TrafficQuiet not firing: {active:?} {v}"
    );
    wait_until("quiet in alertmanager, the rest resolved there", 30, || {
        let got = am_alerts(am_port);
        got.iter()
            .any(|x| x["labels"]["alertname"] == "TrafficQuiet")
            && !got
                .iter()
                .any(|x| x["labels"]["alertname"] == "LinkSaturation")
    });
    // The ping comes back: quiet resolves.
    let _pinger = ping(());
    std::thread::sleep(Duration::from_secs(6));
    let v = evaluate(&a);
    assert!(
        changed(&v, "resolved").iter().any(|n| n == "TrafficQuiet"),
        "{v}"
    );
}

/// Rules that cannot run say why (CLI, API, /metrics); a rule's alerts resolve when it is
/// disabled; a `failing` rule comes back with `weir plugin enable`; plugin health and alert
/// metrics are on /metrics.
#[test]
fn rule_errors_are_shown_and_disabled_rules_resolve_their_alerts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let a = Agent::start(dir.path(), &["--no-capture", "--alert-interval", "1h"]);
    for (rule, cfg) in [
        // Nothing is captured: the self-alert fires at once.
        ("no-flows", "for=0"),
        ("latency", "window=5 minutes"),
        ("saturation", "percent_info=lots"),
    ] {
        let (code, _, err) = weir(
            &data,
            &["install", &format!("bundled:{rule}"), "--config", cfg],
        );
        assert_eq!(code, 0, "{rule}: {err}");
    }
    let loaded = |n: usize| {
        a.ok("/api/v1/plugins", &[])["plugins"]
            .as_array()
            .is_some_and(|l| {
                l.iter()
                    .filter(|p| p["installed"]["manifest"]["kind"] == "alert-rule")
                    .filter(|p| p["loaded"]["state"]["state"] == "enabled")
                    .count()
                    == n
            })
    };
    wait_until("three rules loaded", 20, || loaded(3));
    // No capture here, so nothing to flush first.
    let evaluate = |a: &Agent| {
        let (s, v) = a.post("/api/v1/alerts/evaluate", "");
        assert_eq!(s, 200, "{v}");
        v
    };
    let v = evaluate(&a);
    assert!(
        changed(&v, "firing").contains(&"NoFlows".to_string()),
        "{v}"
    );
    let al = a.ok("/api/v1/alerts", &[]);
    let errors = &al["rule_errors"];
    assert!(
        errors["latency"]
            .as_str()
            .is_some_and(|e| e.contains("config window") && e.contains("5 minutes")),
        "{al}"
    );
    assert!(
        errors["saturation"]
            .as_str()
            .is_some_and(|e| e.contains("percent_info")),
        "{al}"
    );
    let text = alerts_cli(&a);
    assert!(
        text.contains("NoFlows") && text.contains("rule latency failing: config window"),
        "{text}"
    );
    let (_, metrics) = a
        .get_raw("/metrics")
        .map_err(|e| e.to_string())
        .expect("metrics");
    for line in [
        "weir_alerts{state=\"firing\",severity=\"critical\"} 1",
        "weir_alert_rules_failing 2",
        "weir_alert_notifications_queued 0",
        "weir_plugin_call_seconds_total{plugin=\"no-flows\"}",
        "weir_plugin_max_call_seconds{plugin=\"no-flows\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }

    // Three failed evaluations disable saturation (`failing`); fixed and enabled from the
    // CLI, it runs again.
    evaluate(&a);
    evaluate(&a);
    wait_until("saturation failing", 10, || loaded(2));
    evaluate(&a);
    let why = a.ok("/api/v1/alerts", &[])["rule_errors"]["saturation"].clone();
    assert!(
        why.as_str()
            .is_some_and(|w| w.starts_with("disabled by the agent: 3 consecutive failures")),
        "{why}"
    );
    let (code, _, err) = weir(&data, &["enable", "saturation"]);
    assert_eq!(code, 0, "{err}");
    wait_until("saturation enabled again", 10, || loaded(3));

    // Disabling the rule resolves its alert.
    let (code, _, err) = weir(&data, &["disable", "no-flows"]);
    assert_eq!(code, 0, "{err}");
    wait_until("no-flows disabled", 10, || loaded(2));
    let v = evaluate(&a);
    assert!(
        changed(&v, "resolved").contains(&"NoFlows".to_string()),
        "{v}"
    );
    assert!(active_alerts(&a).is_empty());
}
