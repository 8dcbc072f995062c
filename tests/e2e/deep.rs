//! Deeper capture on real traffic: drops with the kernel's reasons, TCP RTT against `ss -ti`,
//! DNS names, response codes and latency from a DNS server in a namespace, filter rules
//! changed on live traffic, and enrichment from an inventory file.

use crate::capture::{agent_for, agent_with_env};
use crate::util::{Agent, KillOnDrop, Pair, WEIR, now_ms, require, sh};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py");

/// Starts `python3 script args` in `ns` in the background and waits for its "ready" line.
/// Starts one of the helper scripts in namespace `ns` (its stderr is the test's).
fn spawn_py(ns: &str, script: &str, args: &[&str], stdout: Stdio) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", &format!("{PY}/{script}")])
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {script}: {e}"))
}

pub fn python_bg(ns: &str, script: &str, args: &[&str]) -> KillOnDrop {
    let mut child = spawn_py(ns, script, args, Stdio::piped());
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready", "{script} did not start");
    KillOnDrop(child)
}

fn py(ns: &str, script: &str, args: &[&str]) -> String {
    sh(&format!(
        "ip netns exec {ns} python3 {PY}/{script} {}",
        args.join(" ")
    ))
}

fn flows(a: &Agent, filter: &str, from: u64) -> Vec<Value> {
    let from = from.to_string();
    let v = a.ok(
        "/api/v1/flows",
        &[("filter", filter), ("from", &from), ("limit", "1000")],
    );
    v["flows"].as_array().cloned().unwrap_or_default()
}

fn sum(fs: &[Value], field: &str) -> u64 {
    fs.iter().map(|f| f[field].as_u64().unwrap_or(0)).sum()
}

#[test]
fn drops_carry_the_kernels_reason_and_exact_counts() {
    require(&["nft", "python3", "tc"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(60);
    let a = agent_for(&pair, dir.path());
    let (drops, st) = a.capture_feature("drops");
    assert_eq!(drops["enabled"], true, "{st}");

    // 1. A firewall drop: nftables in B drops UDP to port 9999.
    sh(&format!(
        "ip netns exec {} nft 'add table inet t; add chain inet t input {{ type filter hook input priority 0; }}; add rule inet t input udp dport 9999 drop'",
        pair.ns_b
    ));
    let t0 = now_ms();
    let port = py(&pair.ns_a, "udp_send.py", &[&pair.b4, "9999", "25", "100"]);
    // 2. A closed port: UDP to 9998 with nothing listening.
    let port2 = py(&pair.ns_a, "udp_send.py", &[&pair.b4, "9998", "7", "50"]);
    a.flush();
    let f = flows(
        &a,
        &format!(
            "NetNs={} and DstPort=9999 and SrcPort={}",
            pair.ns_b,
            port.trim()
        ),
        t0,
    );
    assert_eq!(sum(&f, "PktDropPackets"), 25, "{f:#?}");
    // Frames as the interface counts them: 14 + 20 + 8 + 100.
    assert_eq!(sum(&f, "PktDropBytes"), 25 * 142, "{f:#?}");
    assert_eq!(sum(&f, "Packets"), 25, "the same flow holds the packets");
    assert!(
        f.iter()
            .any(|x| x["PktDropLatestDropCause"] == "SKB_DROP_REASON_NETFILTER_DROP"),
        "{f:#?}"
    );
    let f = flows(
        &a,
        &format!(
            "NetNs={} and DstPort=9998 and SrcPort={}",
            pair.ns_b,
            port2.trim()
        ),
        t0,
    );
    assert_eq!(sum(&f, "PktDropPackets"), 7, "{f:#?}");
    assert!(
        f.iter()
            .any(|x| x["PktDropLatestDropCause"] == "SKB_DROP_REASON_NO_SOCKET"),
        "{f:#?}"
    );
    // Drops are queryable by reason and aggregate as a metric.
    let from = t0.to_string();
    let g = a.ok(
        "/api/v1/flows/aggregate",
        &[
            (
                "filter",
                &format!(
                    "PktDropLatestDropCause=SKB_DROP_REASON_NETFILTER_DROP and NetNs={}",
                    pair.ns_b
                ),
            ),
            ("group_by", "DstPort"),
            ("metric", "drop_packets"),
            ("from", &from),
        ],
    );
    assert_eq!(g["groups"][0]["key"]["DstPort"], 9999, "{g}");
    assert_eq!(g["groups"][0]["drop_packets"], 25, "{g}");

    // 3. A full queue: a tiny tbf on A's egress drops part of a burst. What left TC egress
    // minus what B received is exactly what the qdisc dropped.
    sh(&format!(
        "tc -n {} qdisc add dev {} root tbf rate 1mbit burst 3000 limit 3000",
        pair.ns_a, pair.a_if
    ));
    let t1 = now_ms();
    let port3 = py(
        &pair.ns_a,
        "udp_send.py",
        &[&pair.b4, "7777", "400", "1000"],
    );
    std::thread::sleep(Duration::from_millis(500));
    a.flush();
    let key = format!("DstPort=7777 and SrcPort={}", port3.trim());
    let sent = flows(&a, &format!("{key} and NetNs={}", pair.ns_a), t1);
    let recv = flows(&a, &format!("{key} and NetNs={}", pair.ns_b), t1);
    let (tx, rx, dropped) = (
        sum(&sent, "Packets"),
        sum(&recv, "Packets"),
        sum(&sent, "PktDropPackets"),
    );
    assert_eq!(tx, 400, "{sent:#?}");
    assert!(dropped > 0 && rx < 400, "tx {tx} rx {rx} dropped {dropped}");
    assert_eq!(tx - rx, dropped, "tx {tx} rx {rx} dropped {dropped}");
    assert!(
        sent.iter().any(|x| x["PktDropLatestDropCause"]
            .as_str()
            .is_some_and(|c| c.contains("QDISC"))),
        "{sent:#?}"
    );
}

/// `rtt:<ms>/<var>` of the one TCP socket to `dst:port` in `ns`, in ms.
fn ss_rtt_ms(ns: &str, dst: &str, port: &str) -> f64 {
    let out = sh(&format!(
        "ip netns exec {ns} ss -tin state established dst {dst}:{port}"
    ));
    let rtt = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rtt:"))
        .unwrap_or_else(|| panic!("no rtt in ss output:\n{out}"));
    rtt.split('/')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad rtt `{rtt}`"))
}

/// The RTT the agent attached to the data flow, in ms (latest record that has one).
fn flow_rtt_ms(a: &Agent, pair: &Pair, sport: &str, port: &str, from: u64) -> f64 {
    let f = flows(
        a,
        &format!(
            "NetNs={} and SrcAddr={} and SrcPort={sport} and DstPort={port} and TimeFlowRttNs>0",
            pair.ns_a, pair.a4
        ),
        from,
    );
    let latest = f
        .iter()
        .max_by_key(|x| x["TimeFlowEndMs"].as_u64().unwrap_or(0))
        .unwrap_or_else(|| panic!("no flow with an RTT"));
    latest["TimeFlowRttNs"].as_u64().unwrap_or(0) as f64 / 1e6
}

#[test]
fn tcp_rtt_matches_the_kernels_own_figure() {
    require(&["ss", "python3", "tc"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(61);
    let a = agent_for(&pair, dir.path());
    let _server = python_bg(&pair.ns_b, "tcp_idle.py", &["serve", "5301"]);
    for (shaped, bytes) in [(false, "4000000"), (true, "2000000")] {
        if shaped {
            // A slow link with a queue: the RTT grows to milliseconds.
            sh(&format!(
                "tc -n {} qdisc add dev {} root tbf rate 40mbit burst 20kb latency 30ms",
                pair.ns_a, pair.a_if
            ));
        }
        let t0 = now_ms();
        let mut client = Command::new("ip")
            .args(["netns", "exec", &pair.ns_a, "python3"])
            .arg(format!("{PY}/tcp_idle.py"))
            .args(["send", &pair.b4, "5301", bytes, "4"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("client");
        let mut sport = String::new();
        BufReader::new(client.stdout.take().expect("stdout"))
            .read_line(&mut sport)
            .expect("port");
        // Data sent and acknowledged, "bye" received; the connection idles and its RTT no
        // longer moves (see py/tcp_idle.py).
        std::thread::sleep(Duration::from_millis(2000));
        let kernel = ss_rtt_ms(&pair.ns_a, &pair.b4, "5301");
        a.flush();
        let ours = flow_rtt_ms(&a, &pair, sport.trim(), "5301", t0);
        // The connection's arriving flow on the same interface carries it too.
        let back = flows(
            &a,
            &format!(
                "NetNs={} and SrcAddr={} and SrcPort=5301 and DstPort={} and TimeFlowRttNs>0",
                pair.ns_a,
                pair.b4,
                sport.trim()
            ),
            t0,
        );
        let back_ms = back
            .iter()
            .max_by_key(|x| x["TimeFlowEndMs"].as_u64().unwrap_or(0))
            .map(|x| x["TimeFlowRttNs"].as_u64().unwrap_or(0) as f64 / 1e6)
            .unwrap_or_else(|| panic!("shaped={shaped}: no RTT on the arriving flow"));
        let _ = client.wait();
        let err = (ours - kernel).abs() / kernel;
        eprintln!(
            "rtt shaped={shaped}: flow {ours} ms, arriving flow {back_ms} ms, ss {kernel} ms"
        );
        assert!(
            (back_ms - kernel).abs() / kernel <= 0.2,
            "shaped={shaped}: arriving flow's RTT {back_ms} ms vs ss {kernel} ms"
        );
        assert!(
            err <= 0.2,
            "shaped={shaped}: flow RTT {ours} ms vs ss {kernel} ms ({:.0} %)",
            err * 100.0
        );
        if shaped {
            assert!(
                kernel > 1.0,
                "shaping should make the RTT ms-scale: {kernel}"
            );
        }
    }
}

#[test]
fn dns_names_codes_and_latency() {
    require(&["python3"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::alone(62);
    let a = agent_for(&pair, dir.path());
    let added_log = dir.path().join("dns-added.log");
    let _server = python_bg(
        &pair.ns_b,
        "dns_server.py",
        &["20", added_log.to_str().expect("path")],
    );
    let t0 = now_ms();
    let out = py(
        &pair.ns_a,
        "dns_client.py",
        &[
            &pair.b4,
            "slow.test",
            "nx.test",
            "fail.test",
            "ok.test",
            "tcp:nx.test",
        ],
    );
    a.flush();
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 5, "{out}");
    // Responses seen entering A carry the name, the code and the latency.
    for (i, (name, proto, code)) in [
        ("slow.test", "udp", "NoError"),
        ("nx.test", "udp", "NXDomain"),
        ("fail.test", "udp", "ServFail"),
        ("ok.test", "udp", "NoError"),
        ("nx.test", "tcp", "NXDomain"),
    ]
    .iter()
    .enumerate()
    {
        let port = lines[i][1];
        let f = flows(
            &a,
            &format!(
                "NetNs={} and SrcPort=53 and DstPort={port} and Proto={proto} and DnsName=\"{name}\"",
                pair.ns_a
            ),
            t0,
        );
        let resp = f
            .iter()
            .find(|x| x["DnsFlagsResponseCode"] == *code)
            .unwrap_or_else(|| panic!("{name} over {proto}: no {code} response in {f:#?}"));
        assert_eq!(resp["DnsQType"], 1, "{resp}");
        let lat = resp["DnsLatencyUs"].as_u64().unwrap_or(0) as f64 / 1000.0;
        let client_ms: f64 = lines[i][2].parse().expect("client latency");
        assert!(lat > 0.0, "{name}: no latency");
        // The kernel sees the query leave after the client started its clock and the answer
        // arrive before the client reads it: never longer than what the client measured
        // (1 ms of slack for clock granularity). On a quiet machine the two agree within 1 ms;
        // tests running beside this one only widen the gap on the client's side, so the lower
        // bound is the server's own delay (slow.test, below).
        assert!(
            lat <= client_ms + 1.0,
            "{name}: the client measured {client_ms} ms, the flow says {lat} ms"
        );
        if *name == "slow.test" {
            assert!(
                lat >= 20.0,
                "slow.test: the server adds 20 ms, the flow says {lat} ms"
            );
        }
    }
    // NXDOMAIN and SERVFAIL are queryable.
    let nx = flows(
        &a,
        &format!("NetNs={} and DnsFlagsResponseCode=NXDomain", pair.ns_a),
        t0,
    );
    assert_eq!(nx.len(), 2, "{nx:#?}");
    let fail = flows(&a, "DnsFlagsResponseCode=ServFail", t0);
    assert!(fail.iter().all(|x| x["DnsName"] == "fail.test") && !fail.is_empty());
}

fn status_counter(a: &Agent, name: &str) -> u64 {
    a.ok("/api/v1/status", &[])["capture"]["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

fn filter_cli(a: &Agent, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(WEIR)
        .arg("filter")
        .args(args)
        .arg("--server")
        .arg(a.url(""))
        .output()
        .expect("weir filter");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A flow's packets reuse the filter decision cached in the flow, and a rule change still
/// reaches a live flow: one ping's echo flow admitted, then refused, then admitted again
/// (rules change at a map flip, and every configuration written lapses the cached
/// decisions; the timer evicts nothing meanwhile).
#[test]
fn a_live_flows_cached_filter_decision_lapses_when_the_rules_change() {
    require(&["ping"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(85);
    let a = crate::capture::agent_in_a(&pair, dir.path(), &["--active-timeout", "60s"]);
    let set = |rules: &[&str]| {
        let mut args = vec!["set"];
        args.extend_from_slice(rules);
        let (code, _, err) = filter_cli(&a, &args);
        assert_eq!(code, 0, "{err}");
    };
    set(&["accept proto=icmp"]);
    let t0 = now_ms();
    // 60 echo requests 50 ms apart: 3 s, the rules changed at 1 s and 2 s.
    let mut ping = Command::new("ip")
        .args([
            "netns", "exec", &pair.ns_a, "ping", "-q", "-c", "60", "-i", "0.05",
        ])
        .arg(&pair.b4)
        .stdout(Stdio::null())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_secs(1));
    let filtered = status_counter(&a, "kernel_filtered");
    // The flow is in the kernel's map, its decision cached: the new rules must win.
    set(&["reject proto=icmp", "accept"]);
    std::thread::sleep(Duration::from_secs(1));
    let refused = status_counter(&a, "kernel_filtered") - filtered;
    set(&["accept proto=icmp"]);
    let t3 = now_ms();
    assert!(ping.wait().expect("ping").success());
    a.flush();
    let requests = format!("NetNs={} and IcmpType=8", pair.ns_a);
    let counted = sum(&flows(&a, &requests, t0), "Packets");
    // Admitted again: the key refused in the second is not refused now.
    let third = sum(&flows(&a, &requests, t3), "Packets");
    assert!(
        third >= 5,
        "{third} echo requests counted in the third second"
    );
    // About 20 requests and 20 replies in the second (less when the command is slow to
    // change the rules); the first and third counted.
    assert!(refused >= 10, "{refused} packets refused in the second");
    assert!(
        (10..=55).contains(&counted),
        "{counted} of 60 echo requests counted, {refused} packets refused"
    );
}

#[test]
fn filter_rules_change_on_live_traffic() {
    require(&["python3", "ping"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(63);
    let a = agent_for(&pair, dir.path());
    let send = |port: &str, n: &str| py(&pair.ns_a, "udp_send.py", &[&pair.b4, port, n, "20"]);
    let ping = || {
        sh(&format!(
            "ip netns exec {} ping -q -c 4 -i 0.05 {}",
            pair.ns_a, pair.b4
        ))
    };
    let count = |filter: &str, from: u64| sum(&flows(&a, filter, from), "Packets");
    let ns = format!("NetNs={}", pair.ns_a);
    // Echo requests and replies only (UDP to closed ports draws ICMP errors too).
    let echo = format!("{ns} and Proto=icmp and (IcmpType=8 or IcmpType=0)");

    // No rules: everything is counted.
    let t0 = now_ms();
    ping();
    send("7000", "10");
    a.flush();
    assert_eq!(count(&echo, t0), 8);

    // A deny rule: ICMP leaves, UDP stays.
    let (code, out, err) = filter_cli(&a, &["set", "reject proto=icmp"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1. reject proto=icmp"), "{out}");
    let filtered_before = status_counter(&a, "kernel_filtered");
    let t1 = now_ms();
    ping();
    send("7000", "10");
    a.flush();
    assert_eq!(count(&format!("{ns} and Proto=icmp"), t1), 0);
    assert_eq!(count(&format!("{ns} and DstPort=7000"), t1), 10);
    assert!(status_counter(&a, "kernel_filtered") >= filtered_before + 8);

    // An allow-list with a port range and direction: only UDP 7000-7001 leaving A.
    let (code, _, err) = filter_cli(
        &a,
        &["set", "accept proto=udp ports=7000-7001 direction=egress"],
    );
    assert_eq!(code, 0, "{err}");
    let t2 = now_ms();
    send("7001", "6");
    send("7002", "5");
    ping();
    a.flush();
    assert_eq!(count(&format!("{ns} and DstPort=7001"), t2), 6);
    assert_eq!(count(&format!("{ns} and DstPort=7002"), t2), 0);
    assert_eq!(count("Proto=icmp", t2), 0);
    assert_eq!(
        count(&format!("NetNs={} and DstPort=7001", pair.ns_b), t2),
        0,
        "ingress in B is not in the allow-list"
    );

    // A bad rule is refused with its number and part; the rules in force stay.
    let (code, _, err) = filter_cli(&a, &["set", "accept ports=7000", "accept cidr=10.0.0.0/99"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rule 2: cidr: prefix /99"), "{err}");
    let (s, v) = put(&a, r#"{"rules":[{"action":"accept","ports":"9-1"}]}"#);
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("rule 1: ports"),
        "{v}"
    );
    let (code, out, _) = filter_cli(&a, &["list", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed["rules"][0]["ports"], "7000-7001", "{listed}");

    // Cleared: everything again.
    let (code, out, _) = filter_cli(&a, &["clear"]);
    assert_eq!(code, 0);
    assert!(out.contains("no filter rules"), "{out}");
    let t3 = now_ms();
    ping();
    a.flush();
    assert_eq!(count(&echo, t3), 8);
}

fn put(a: &Agent, body: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .put(&a.url("/api/v1/capture/filters"))
        .send(body.as_bytes())
        .expect("request");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn inventory_names_both_ends_and_reloads() {
    require(&["ping"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(64);
    let inv = dir.path().join("inventory.toml");
    let write = |name: &str| {
        std::fs::write(
            &inv,
            format!(
                r#"
[[host]]
cidr = "{a}"
name = "{name}"
namespace = "shop"
workload = "frontend"
workload_kind = "Deployment"
kind = "Pod"
node = "node-a"
zone = "zone-1"
labels = {{ app = "web" }}

[[host]]
cidr = "198.18.64.0/24"
name = "lab-net"
kind = "Network"
"#,
                a = pair.a4
            ),
        )
        .expect("write inventory");
    };
    write("client-a");
    let a = Agent::start(
        dir.path(),
        &[
            "--no-host-netns",
            "--netns",
            &pair.ns_a,
            "--active-timeout",
            "1s",
            "--inventory",
            inv.to_str().expect("path"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.ok("/api/v1/status", &[])["capture"]["interfaces"]
        .as_array()
        .map_or(0, Vec::len)
        == 0
    {
        assert!(Instant::now() < deadline, "not attached");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = now_ms();
    sh(&format!(
        "ip netns exec {} ping -q -c 3 -i 0.05 {} && ip netns exec {} ping -6 -q -c 2 -i 0.05 {}",
        pair.ns_a, pair.b4, pair.ns_a, pair.b6
    ));
    a.flush();
    let f = flows(&a, &format!("SrcAddr={} and Proto=icmp", pair.a4), t0);
    assert!(!f.is_empty());
    for x in &f {
        assert_eq!(x["SrcK8S_Name"], "client-a", "{x}");
        assert_eq!(x["SrcK8S_Namespace"], "shop");
        assert_eq!(x["SrcK8S_OwnerName"], "frontend");
        assert_eq!(x["SrcK8S_OwnerType"], "Deployment");
        assert_eq!(x["SrcK8S_HostName"], "node-a");
        assert_eq!(x["SrcK8S_Zone"], "zone-1");
        assert_eq!(x["SrcK8S_Labels"], "app=web");
        assert_eq!(x["DstK8S_Name"], "lab-net", "B is only in the /24: {x}");
    }
    // IPv6 addresses are in no entry: both ends stay empty.
    let f6 = flows(&a, &format!("SrcAddr={}", pair.a6), t0);
    assert!(!f6.is_empty());
    assert!(
        f6.iter()
            .all(|x| x["SrcK8S_Name"] == "" && x["DstK8S_Name"] == "")
    );
    // Enriched fields filter, group and count like any other.
    let from = t0.to_string();
    let g = a.ok(
        "/api/v1/flows/aggregate",
        &[
            ("filter", "K8S_Namespace=shop"),
            ("group_by", "SrcK8S_Name,DstK8S_Name"),
            ("from", &from),
        ],
    );
    let names: Vec<(String, String)> = g["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["key"]["SrcK8S_Name"].as_str().unwrap_or("").to_string(),
                g["key"]["DstK8S_Name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        names.contains(&("client-a".into(), "lab-net".into())),
        "{g}"
    );
    assert!(
        names.contains(&("lab-net".into(), "client-a".into())),
        "{g}"
    );

    // The file changes: new flows get the new name; a broken file keeps the last good one.
    write("client-renamed");
    std::thread::sleep(Duration::from_millis(1500));
    let t1 = now_ms();
    sh(&format!(
        "ip netns exec {} ping -q -c 2 -i 0.05 {}",
        pair.ns_a, pair.b4
    ));
    a.flush();
    let f = flows(&a, &format!("SrcAddr={} and Proto=icmp", pair.a4), t1);
    assert!(!f.is_empty() && f.iter().all(|x| x["SrcK8S_Name"] == "client-renamed"));
    std::fs::write(&inv, "[[host]]\ncidr = \"not-an-address\"\n").expect("write");
    std::thread::sleep(Duration::from_millis(1500));
    let t2 = now_ms();
    sh(&format!(
        "ip netns exec {} ping -q -c 2 -i 0.05 {}",
        pair.ns_a, pair.b4
    ));
    a.flush();
    let f = flows(&a, &format!("SrcAddr={} and Proto=icmp", pair.a4), t2);
    assert!(!f.is_empty() && f.iter().all(|x| x["SrcK8S_Name"] == "client-renamed"));
    let st = a.ok("/api/v1/status", &[]);
    assert!(
        st["enrichment"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("host 1: cidr")),
        "{st}"
    );
}

/// The objects a real API server returned for a small cluster (trimmed of managedFields),
/// with the pair's addresses put in.
fn recorded_cluster(dir: &std::path::Path, pair: &Pair) {
    let pods = serde_json::json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "4711"},
        "items": [
            {
                "metadata": {
                    "name": "web-7d9f8b6c5d-x2kqp", "namespace": "shop",
                    "uid": "0b6f5a0e-4c1e-4d6c-9a51-1f0c8c0d1a01", "resourceVersion": "4700",
                    "creationTimestamp": "2026-11-20T09:00:00Z",
                    "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web-7d9f8b6c5d", "uid": "5d1c2b3a-0000-4000-8000-000000000001",
                        "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "nginx:1.27"}]},
                "status": {"phase": "Running", "hostIP": "192.0.2.10",
                    "podIP": pair.a4, "podIPs": [{"ip": pair.a4}]}
            },
            {
                "metadata": {
                    "name": "kube-proxy-8xv2n", "namespace": "kube-system",
                    "uid": "0b6f5a0e-4c1e-4d6c-9a51-1f0c8c0d1a02", "resourceVersion": "120",
                    "labels": {"k8s-app": "kube-proxy"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                        "name": "kube-proxy", "uid": "5d1c2b3a-0000-4000-8000-000000000002",
                        "controller": true}]
                },
                "spec": {"nodeName": "node-a", "hostNetwork": true,
                    "containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.33.0"}]},
                "status": {"phase": "Running", "hostIP": "192.0.2.10", "podIP": "192.0.2.10",
                    "podIPs": [{"ip": "192.0.2.10"}]}
            }
        ]
    });
    let services = serde_json::json!({
        "kind": "ServiceList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "4711"},
        "items": [{
            "metadata": {"name": "api", "namespace": "shop",
                "uid": "7e3a9c1d-0000-4000-8000-000000000003", "resourceVersion": "900",
                "labels": {"app": "api"}},
            "spec": {"type": "ClusterIP", "clusterIP": pair.b6, "clusterIPs": [pair.b6],
                "ipFamilies": ["IPv6"], "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
                "selector": {"app": "api"}},
            "status": {"loadBalancer": {}}
        }]
    });
    let nodes = serde_json::json!({
        "kind": "NodeList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "4711"},
        "items": [{
            "metadata": {"name": "node-a", "uid": "9a8b7c6d-0000-4000-8000-000000000004",
                "resourceVersion": "4600",
                "labels": {"kubernetes.io/hostname": "node-a",
                    "topology.kubernetes.io/zone": "zone-1"}},
            "spec": {"podCIDR": "198.18.65.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"},
                {"type": "Hostname", "address": "node-a"}]}
        }]
    });
    for (name, v) in [("pods", pods), ("services", services), ("nodes", nodes)] {
        std::fs::write(dir.join(format!("{name}.json")), v.to_string()).expect("write");
    }
}

#[test]
fn kubernetes_pods_services_and_nodes_from_a_recorded_api() {
    require(&["python3", "ping"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(65);
    let api_dir = dir.path().join("api");
    std::fs::create_dir_all(&api_dir).expect("mkdir");
    recorded_cluster(&api_dir, &pair);
    let api = crate::util::KubeApi::start(&api_dir);
    let kubeconfig = api.kubeconfig.clone();
    let a = Agent::start(
        dir.path(),
        &[
            "--no-host-netns",
            "--netns",
            &pair.ns_a,
            "--active-timeout",
            "1s",
            "--kubeconfig",
            kubeconfig.to_str().expect("path"),
        ],
    );
    let wait_for = |what: &str, ok: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = a.ok("/api/v1/status", &[]);
            if ok(&st) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {st}\n{}", a.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("listed and attached", &|st| {
        let e = &st["enrichment"];
        e["synced"]["pods"] == true
            && e["synced"]["services"] == true
            && e["synced"]["nodes"] == true
            && st["capture"]["interfaces"].as_array().map_or(0, Vec::len) > 0
    });
    let ping = |dst: &str| {
        let six = if dst.contains(':') { "-6" } else { "" };
        sh(&format!(
            "ip netns exec {} ping {six} -q -c 2 -i 0.05 {dst}",
            pair.ns_a
        ));
    };
    let t0 = now_ms();
    ping(&pair.b4);
    ping(&pair.b6);
    a.flush();
    let to_b4 = flows(
        &a,
        &format!("SrcAddr={} and DstAddr={}", pair.a4, pair.b4),
        t0,
    );
    assert!(!to_b4.is_empty());
    for x in &to_b4 {
        assert_eq!(x["SrcK8S_Name"], "web-7d9f8b6c5d-x2kqp", "{x}");
        assert_eq!(x["SrcK8S_Namespace"], "shop");
        assert_eq!(x["SrcK8S_OwnerName"], "web", "the ReplicaSet's Deployment");
        assert_eq!(x["SrcK8S_OwnerType"], "Deployment");
        assert_eq!(x["SrcK8S_Type"], "Pod");
        assert_eq!(x["SrcK8S_HostName"], "node-a");
        assert_eq!(x["SrcK8S_Zone"], "zone-1", "the node's zone");
        assert_eq!(x["SrcK8S_Labels"], "app=web,pod-template-hash=7d9f8b6c5d");
        assert_eq!(x["DstK8S_Name"], "", "no object has B's address yet");
    }
    let to_svc = flows(&a, &format!("DstAddr={}", pair.b6), t0);
    assert!(!to_svc.is_empty());
    for x in &to_svc {
        assert_eq!(x["DstK8S_Name"], "api", "{x}");
        assert_eq!(x["DstK8S_Type"], "Service");
        assert_eq!(x["DstK8S_Namespace"], "shop");
        assert_eq!(x["SrcK8S_Name"], "", "A's IPv6 address is no pod's");
    }

    // A pod appears through the watch: new flows name it.
    let added = serde_json::json!({"type": "ADDED", "object": {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "shop",
            "uid": "0b6f5a0e-4c1e-4d6c-9a51-1f0c8c0d1a09", "resourceVersion": "4712",
            "labels": {"app": "db"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                "uid": "5d1c2b3a-0000-4000-8000-000000000009", "controller": true}]},
        "spec": {"nodeName": "node-a", "containers": [{"name": "db", "image": "postgres:17"}]},
        "status": {"phase": "Running", "podIP": pair.b4, "podIPs": [{"ip": pair.b4}]}
    }});
    std::fs::write(api_dir.join("pods.watch.jsonl"), format!("{added}\n")).expect("watch");
    wait_for("watched pod", &|st| st["enrichment"]["pods"] == 2);
    let t1 = now_ms();
    ping(&pair.b4);
    a.flush();
    let f = flows(
        &a,
        &format!("SrcAddr={} and DstAddr={}", pair.a4, pair.b4),
        t1,
    );
    assert!(!f.is_empty());
    for x in &f {
        assert_eq!(x["DstK8S_Name"], "db-0", "{x}");
        assert_eq!(x["DstK8S_OwnerName"], "db");
        assert_eq!(x["DstK8S_OwnerType"], "StatefulSet");
    }
    let g = a.ok(
        "/api/v1/flows/aggregate",
        &[
            ("filter", "SrcK8S_Namespace=shop and DstK8S_Namespace=shop"),
            ("group_by", "SrcK8S_OwnerName,DstK8S_OwnerName"),
            ("from", &t1.to_string()),
        ],
    );
    let pairs: Vec<(&str, &str)> = g["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|x| {
            (
                x["key"]["SrcK8S_OwnerName"].as_str().unwrap_or(""),
                x["key"]["DstK8S_OwnerName"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        pairs.contains(&("web", "db")) && pairs.contains(&("db", "web")),
        "{g}"
    );
    let log = std::fs::read_to_string(api_dir.join("requests.log")).unwrap_or_default();
    for kind in ["pods", "services", "nodes"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("/api/v1/{kind}?")) && l.contains("watch=")),
            "no watch of {kind}:\n{log}"
        );
    }
}

#[test]
fn both_ends_of_a_veth_are_one_flow_listing_the_interfaces() {
    require(&["python3", "ping", "nft"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(66);
    // No timer eviction inside the conversation: only the flush below drains the maps, so
    // the 10 pings are one record (a timer round falling inside them would split them 6 + 4).
    let a = crate::capture::agent_with(&pair, dir.path(), &["--active-timeout", "10m"]);
    sh(&format!(
        "ip netns exec {} nft 'add table inet t; add chain inet t input {{ type filter hook input priority 0; }}; add rule inet t input udp dport 9999 drop'",
        pair.ns_b
    ));
    let t0 = now_ms();
    sh(&format!(
        "ip netns exec {} ping -q -c 10 -i 0.05 {}",
        pair.ns_a, pair.b4
    ));
    let port = py(&pair.ns_a, "udp_send.py", &[&pair.b4, "9999", "12", "100"]);
    a.flush();
    let req = flows(&a, &format!("SrcAddr={} and IcmpType=8", pair.a4), t0);
    assert_eq!(req.len(), 1, "one record for both ends: {req:#?}");
    let r = &req[0];
    assert_eq!(r["Packets"], 10, "counted once: {r}");
    assert_eq!(r["Bytes"], 980);
    assert_eq!(
        (r["NetNs"].as_str(), r["Interface"].as_str()),
        (Some(pair.ns_a.as_str()), Some(pair.a_if.as_str())),
        "the first sighting (A's egress) is kept"
    );
    assert_eq!(
        r["Interfaces"],
        format!("{}/{},{}/{}", pair.ns_a, pair.a_if, pair.ns_b, pair.b_if)
    );
    assert_eq!(r["IfDirections"], "1,0");
    let rep = flows(&a, &format!("SrcAddr={} and IcmpType=0", pair.b4), t0);
    assert_eq!(rep.len(), 1, "{rep:#?}");
    assert_eq!(rep[0]["Interface"], pair.b_if.as_str());
    assert_eq!(rep[0]["IfDirections"], "1,0");
    // A drop at B's end lands on the one record kept at A's end.
    let udp = flows(&a, &format!("DstPort=9999 and SrcPort={}", port.trim()), t0);
    assert_eq!(udp.len(), 1, "{udp:#?}");
    assert_eq!(udp[0]["Packets"], 12);
    assert_eq!(udp[0]["PktDropPackets"], 12);
    assert_eq!(
        udp[0]["PktDropLatestDropCause"],
        "SKB_DROP_REASON_NETFILTER_DROP"
    );
    assert_eq!(udp[0]["NetNs"], pair.ns_a.as_str());
    let st = a.ok("/api/v1/status", &[]);
    assert!(
        st["capture"]["counters"]["duplicates_merged"]
            .as_u64()
            .unwrap_or(0)
            >= 3,
        "{st}"
    );
    // The clock is measured again every round; the wall clock did not step here.
    assert_eq!(st["capture"]["counters"]["clock_steps"], 0, "{st}");
}

/// With the flow map full (one entry), packets reach user space one by one through the ring
/// buffer; they go through the same finishing step as drained flows: a conversation's packets
/// are summed into a few records (not one per packet), both ends of the veth are merged, and
/// DNS answers carry their name.
#[test]
fn a_full_map_sends_packets_through_the_ring_buffer_finished_like_drained_flows() {
    require(&["python3"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(75);
    let a = crate::capture::agent_with(
        &pair,
        dir.path(),
        &["--max-flows", "1", "--active-timeout", "10m"],
    );
    let added_log = dir.path().join("dns-added.log");
    let _dns = python_bg(
        &pair.ns_b,
        "dns_server.py",
        &["20", added_log.to_str().expect("path")],
    );
    let _sink = python_bg(&pair.ns_b, "flow_mix.py", &["sink", "9100"]);
    let t0 = now_ms();
    // A new flow every half millisecond keeps the one-entry map full.
    let mut busy = spawn_py(
        &pair.ns_a,
        "flow_mix.py",
        &["udp", &pair.b4, "9100", "2000", "3"],
        Stdio::null(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let port = py(&pair.ns_a, "udp_send.py", &[&pair.b4, "9000", "40", "100"]);
    let names = ["ok.test", "nx.test", "fail.test", "ok.test", "nx.test"];
    let out = py(
        &pair.ns_a,
        "dns_client.py",
        &[&[pair.b4.as_str()][..], &names].concat(),
    );
    assert!(busy.wait().expect("flow_mix").success());
    a.flush();
    let ring = status_counter(&a, "ringbuf_flows");
    assert!(
        ring > 1000,
        "the map was full: {ring} packets through the ring buffer"
    );

    // One conversation: a few summed records, not 40 (or 80) per-packet ones.
    let udp = flows(&a, &format!("DstPort=9000 and SrcPort={}", port.trim()), t0);
    assert!(
        !udp.is_empty() && udp.len() <= 10,
        "{} records for 40 packets: {udp:#?}",
        udp.len()
    );
    let packets = sum(&udp, "Packets");
    assert!((40..=80).contains(&packets), "{packets} packets: {udp:#?}");
    // Both ends in one record, in the order they were seen (either comes first).
    let (ea, eb) = (
        format!("{}/{}", pair.ns_a, pair.a_if),
        format!("{}/{}", pair.ns_b, pair.b_if),
    );
    let both = [format!("{ea},{eb}"), format!("{eb},{ea}")];
    assert!(
        udp.iter()
            .any(|f| both.iter().any(|b| f["Interfaces"] == b.as_str())),
        "no record merged both ends ({both:?}): {udp:#?}"
    );

    // DNS answers that went through the ring buffer carry their name, like drained ones.
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), names.len(), "{out}");
    for (name, line) in names.iter().zip(&lines) {
        let answers = flows(
            &a,
            &format!("SrcPort=53 and DstPort={} and Proto=17", line[1]),
            t0,
        );
        assert!(!answers.is_empty(), "{name}: no answer flow");
        for f in &answers {
            assert_eq!(f["DnsName"], *name, "{name}: {f}");
        }
    }
}

/// A cgroup (v2) made for a test, removed on drop.
struct TestCgroup {
    dirs: Vec<std::path::PathBuf>,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn egress_flows_name_the_senders_cgroup_and_container() {
    require(&["python3"]);
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = info
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(str::to_string))
                .flatten()
        })
        .expect("a cgroup2 mount (prerequisite)");
    let id = "0123456789abcdef".repeat(4);
    let top = format!("weir-e2e-{}", std::process::id());
    let rel = format!("/{top}/docker-{id}.scope");
    let cg = TestCgroup {
        dirs: vec![
            std::path::PathBuf::from(format!("{root}/{top}")),
            std::path::PathBuf::from(format!("{root}{rel}")),
        ],
    };
    for d in &cg.dirs {
        std::fs::create_dir_all(d).expect("create cgroup");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(67);
    // One record per sighting is asserted below: only the flush drains the maps.
    let a = crate::capture::agent_with(
        &pair,
        dir.path(),
        &["--no-dedup", "--active-timeout", "10m"],
    );
    let t0 = now_ms();
    let port = sh(&format!(
        "sh -c 'echo $$ > {root}{rel}/cgroup.procs && exec ip netns exec {} python3 {PY}/udp_send.py {} 7100 5 10'",
        pair.ns_a, pair.b4
    ));
    a.flush();
    let key = format!("DstPort=7100 and SrcPort={}", port.trim());
    let out = flows(&a, &format!("{key} and NetNs={}", pair.ns_a), t0);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0]["Cgroup"], rel.as_str(), "{}", out[0]);
    assert_eq!(out[0]["ContainerId"], id.as_str());
    // Filterable like any field; the receiving end has no socket at TC ingress.
    assert_eq!(flows(&a, &format!("ContainerId={id}"), t0).len(), 1);
    let inb = flows(&a, &format!("{key} and NetNs={}", pair.ns_b), t0);
    assert_eq!(inb.len(), 1);
    assert_eq!(inb[0]["Cgroup"], "");
    drop(cg);
}

/// A step of the wall clock during capture. libfaketime shifts the agent's CLOCK_REALTIME by
/// what a file says (read again on every call); the kernel's packet times and the monotonic
/// clock are untouched, as in a real NTP step or a resumed VM. Flows captured before the step
/// keep the old time, flows captured after it carry the new one (they stayed at the old, off
/// by the step, when the offset was measured only at start); forward and back, each step
/// counted once.
#[test]
fn a_wall_clock_step_during_capture_is_followed_and_counted() {
    require(&["python3"]);
    // Debian's libfaketime, wherever the architecture puts it.
    let lib = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is missing (bash scripts/deps.sh test installs it)");
    let lib = lib.to_string_lossy().into_owned();
    let lib = lib.as_str();
    let dir = tempfile::tempdir().expect("tempdir");
    let shift = dir.path().join("clock-shift");
    std::fs::write(&shift, "+0\n").expect("shift file");
    let shift_path = shift.to_string_lossy().into_owned();
    let pair = Pair::new(79);
    let a = agent_with_env(
        &pair,
        dir.path(),
        // No timer eviction between the steps: each burst is evicted by its flush.
        &["--active-timeout", "120s"],
        &[
            ("LD_PRELOAD", lib),
            ("FAKETIME_TIMESTAMP_FILE", &shift_path),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let t0 = now_ms();
    py(&pair.ns_a, "udp_send.py", &[&pair.b4, "7001", "5", "100"]);
    a.flush();
    let t1 = now_ms();
    // Two hours forward.
    const STEP_MS: u64 = 2 * 3_600_000;
    std::fs::write(&shift, "+2h\n").expect("shift file");
    py(&pair.ns_a, "udp_send.py", &[&pair.b4, "7002", "5", "100"]);
    a.flush();
    let t2 = now_ms();
    let all = |port: u16| {
        let v = a.ok(
            "/api/v1/flows",
            &[
                ("filter", &format!("NetNs={} and DstPort={port}", pair.ns_a)),
                ("from", "0"),
                ("to", &(t2 + 3 * STEP_MS).to_string()),
            ],
        );
        v["flows"].as_array().cloned().unwrap_or_default()
    };
    let (before, after) = (all(7001), all(7002));
    assert!(
        !before.is_empty() && !after.is_empty(),
        "{before:?} {after:?}"
    );
    assert_eq!(sum(&before, "Packets"), 5);
    assert_eq!(sum(&after, "Packets"), 5);
    let slack = 5_000;
    for f in &before {
        let end = f["TimeFlowEndMs"].as_u64().unwrap_or(0);
        assert!(
            end + slack >= t0 && end <= t1 + slack,
            "before the step: {end} not within {t0}..{t1}"
        );
    }
    for f in &after {
        let end = f["TimeFlowEndMs"].as_u64().unwrap_or(0);
        assert!(
            end + slack >= t1 + STEP_MS && end <= t2 + STEP_MS + slack,
            "after the step: {end} not within {}..{} (the new time)",
            t1 + STEP_MS,
            t2 + STEP_MS
        );
    }
    // Then back, to an hour behind.
    const BACK_MS: u64 = 3_600_000;
    std::fs::write(&shift, "-1h\n").expect("shift file");
    py(&pair.ns_a, "udp_send.py", &[&pair.b4, "7003", "5", "100"]);
    a.flush();
    let t3 = now_ms();
    let back = all(7003);
    assert_eq!(sum(&back, "Packets"), 5, "{back:?}");
    for f in &back {
        let end = f["TimeFlowEndMs"].as_u64().unwrap_or(0);
        assert!(
            end + slack >= t2 - BACK_MS && end <= t3 - BACK_MS + slack,
            "after the step back: {end} not within {}..{}",
            t2 - BACK_MS,
            t3 - BACK_MS
        );
    }
    let st = a.ok("/api/v1/status", &[]);
    assert_eq!(st["capture"]["counters"]["clock_steps"], 2, "{st}");
    let log = a.log_text();
    assert!(log.contains("the wall clock stepped"), "{log}");
}

/// The kernel flow map full for a minute (`WEIR_E2E_FULL_MAP_SECONDS` for longer): a one-entry
/// map in one namespace and 3,000 new UDP flows a second, so every packet but one a round
/// reaches user space through the ring buffer; halfway, the agent is stopped for 4 s so the
/// ring buffer overflows. The agent keeps up with bounded memory, recovers, and every packet
/// sent is stored or counted as lost (`kernel_ringbuf_lost`): none vanishes.
#[test]
fn a_kernel_map_full_for_a_minute_and_an_overflowing_ring_lose_no_packet_uncounted() {
    require(&["python3"]);
    let seconds: u64 = std::env::var("WEIR_E2E_FULL_MAP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(80);
    // One namespace, so each packet is seen once (A's egress).
    let a = crate::capture::agent_in_a(
        &pair,
        dir.path(),
        &["--max-flows", "1", "--active-timeout", "10m"],
    );
    let _sink = python_bg(&pair.ns_b, "flow_mix.py", &["sink", "9100"]);
    let t0 = now_ms();
    let busy = spawn_py(
        &pair.ns_a,
        "flow_mix.py",
        &["udp", &pair.b4, "9100", "3000", &seconds.to_string()],
        Stdio::piped(),
    );
    let pid = a.child.as_ref().map(|c| c.id()).expect("agent pid");
    let rss_kib = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            })
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut rss_max = 0;
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut paused = false;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1));
        rss_max = rss_max.max(rss_kib());
        if !paused && start.elapsed() >= Duration::from_secs(seconds / 2) {
            // The ring buffer overflows: the agent stopped for 4 s reads nothing while 12,000
            // records (~2 MiB) arrive for its 1 MiB ring. The kernel counts what it drops.
            paused = true;
            sh(&format!("kill -STOP {pid}"));
            std::thread::sleep(Duration::from_secs(4));
            sh(&format!("kill -CONT {pid}"));
        }
    }
    let out = busy.wait_with_output().expect("flow_mix");
    assert!(out.status.success());
    let sent: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("count sent");
    a.flush();
    let st = a.ok("/api/v1/status", &[]);
    let counter = |k: &str| st["capture"]["counters"][k].as_u64().unwrap_or(0);
    let (ring, lost, full) = (
        counter("ringbuf_flows"),
        counter("kernel_ringbuf_lost"),
        counter("kernel_map_full"),
    );
    let g = a.ok(
        "/api/v1/flows/aggregate",
        &[
            ("group_by", "DstPort"),
            ("metric", "packets"),
            ("filter", &format!("NetNs={} and DstPort=9100", pair.ns_a)),
            ("from", &t0.saturating_sub(5_000).to_string()),
        ],
    );
    let stored = g["total"]["packets"].as_u64().unwrap_or(0);
    eprintln!(
        "map full for {seconds} s: sent {sent}, stored {stored}, ring {ring}, lost {lost}, map_full {full}, agent RSS max {} MiB",
        rss_max / 1024
    );
    assert!(sent > 2_000 * seconds, "the generator sent {sent}");
    assert!(
        full > sent / 2,
        "the map was full: {full} of {sent} packets"
    );
    assert!(ring > sent / 2, "{ring} records through the ring buffer");
    assert!(
        lost > 1_000,
        "the ring buffer overflowed while the agent was stopped: {lost} lost"
    );
    // Lost packets may include a few others than these (ARP, neighbour discovery).
    assert!(
        stored <= sent && stored + lost >= sent && stored + lost - sent <= 50,
        "sent {sent}, stored {stored}, lost {lost}: {} unaccounted",
        sent.saturating_sub(stored + lost)
    );
    assert!(
        rss_max < 400 * 1024,
        "the agent grew to {} MiB",
        rss_max / 1024
    );
    assert_eq!(a.get_raw("/healthz").map(|r| r.0).unwrap_or(0), 200);
}
