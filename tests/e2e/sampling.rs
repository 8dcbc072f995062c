//! Smart sampling at storage on real traffic: the bundled `sampling-controller` keeps the
//! stored flow rate within its budget while a flood of small UDP flows, a bulk iperf3 UDP
//! transfer, a port scan, DNS errors and firewall drops go over a veth pair; every drop, RST,
//! SYN without answer and DNS error is stored 1:1, and the scaled-back totals match the
//! interface's own counters. And the controller's shadow mode, which changes nothing.

use crate::capture::agent_with;
use crate::deep::python_bg;
use crate::plugins::weir;
use crate::util::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py");

fn install_controller(data: &std::path::Path, cfg: &[&str]) {
    let mut args = vec!["install", "bundled:sampling-controller"];
    for c in cfg {
        args.push("--config");
        args.push(c);
    }
    let (code, out, err) = weir(data, &args);
    assert_eq!(code, 0, "{out}{err}");
}

fn flows(a: &Agent, filter: &str, from: u64) -> Vec<Value> {
    let from = from.to_string();
    let v = a.ok(
        "/api/v1/flows",
        &[("filter", filter), ("from", &from), ("limit", "5000")],
    );
    v["flows"].as_array().cloned().unwrap_or_default()
}

fn total(a: &Agent, filter: &str, from: u64, to: u64) -> Value {
    let (from, to) = (from.to_string(), to.to_string());
    a.ok(
        "/api/v1/flows/aggregate",
        &[
            ("filter", filter),
            ("group_by", "IfDirection"),
            ("from", &from),
            ("to", &to),
            ("top", "10"),
        ],
    )
}

fn mix(ns: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, "python3", &format!("{PY}/flow_mix.py")])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flow_mix")
}

fn finish(c: std::process::Child) -> String {
    let out = c.wait_with_output().expect("flow_mix");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_controller_keeps_the_budget_and_every_important_flow() {
    require(&["python3", "iperf3", "nft"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::alone(74);
    let budget = 250u64;
    install_controller(
        &dir.path().join("data"),
        &[&format!("budget={budget}"), "interval_s=2"],
    );
    let a = agent_with(&pair, dir.path(), &["--no-dedup"]);
    let _sink = python_bg(&pair.ns_b, "flow_mix.py", &["sink", "9000"]);
    let _dns = python_bg(&pair.ns_b, "dns_server.py", &["20"]);
    sh(&format!(
        "ip netns exec {} nft 'add table inet t; add chain inet t input {{ type filter hook input priority 0; }}; add rule inet t input udp dport 9999 drop'",
        pair.ns_b
    ));
    let iperf_log = dir.path().join("iperf.log");
    sh(&format!(
        "ip netns exec {} iperf3 -s -1 -D --logfile {}",
        pair.ns_b,
        iperf_log.display()
    ));
    std::thread::sleep(Duration::from_millis(500));
    a.flush();
    let t0 = now_ms();
    let before = Pair::stats(&pair.ns_a, &pair.a_if);

    // 1500 new UDP flows a second for 16 s: about 3000 records a second (both ends).
    let flood = mix(&pair.ns_a, &["udp", &pair.b4, "9000", "1500", "16"]);
    let bulk = std::process::Command::new("ip")
        .args([
            "netns", "exec", &pair.ns_a, "iperf3", "-c", &pair.b4, "-u", "-l", "1400", "-t", "12",
            "-b", "60M", "-J",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("iperf3");
    // Once the controller has sampled a while: a port scan, DNS errors and drops.
    std::thread::sleep(Duration::from_secs(7));
    let scan = mix(&pair.ns_a, &["scan", &pair.b4, "1000", "1059", "50"]);
    let nx: Vec<String> = (0..8).map(|_| "nx.test".to_string()).collect();
    let mut args: Vec<&str> = vec![&pair.b4];
    args.extend(nx.iter().map(String::as_str));
    let dns_out = sh(&format!(
        "ip netns exec {} python3 {PY}/dns_client.py {}",
        pair.ns_a,
        args.join(" ")
    ));
    let drop_port = sh(&format!(
        "ip netns exec {} python3 {PY}/udp_send.py {} 9999 25 100",
        pair.ns_a, pair.b4
    ));
    let scanned: u64 = finish(scan).parse().expect("scan count");
    let sent: u64 = finish(flood).parse().expect("flood count");
    let bulk_out = bulk.wait_with_output().expect("iperf3");
    assert!(bulk_out.status.success());
    let after = Pair::stats(&pair.ns_a, &pair.a_if);
    let t_end = now_ms();
    a.flush();
    let delta = after.delta(&before);
    assert!(sent > 20_000, "flood sent {sent}");

    // The controller set rules with a reason, shown in the status and on the timeline.
    let st = a.ok("/api/v1/status", &[]);
    let s = &st["storage_sampling"];
    let changes = s["changes"].as_array().cloned().unwrap_or_default();
    let first = changes
        .iter()
        .find(|c| {
            c["by"] == "sampling-controller" && !c["rules"].as_array().is_none_or(Vec::is_empty)
        })
        .unwrap_or_else(|| panic!("no rules set: {s:#}\n{}", a.log_text()));
    assert!(
        first["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("budget {budget}/s")),
        "{first}"
    );
    assert!(
        first["rules"].to_string().contains("udp/9000"),
        "the flood's class is sampled: {first}"
    );
    assert!(
        !a.records("sampling-change").is_empty(),
        "the change is on the timeline"
    );
    // From 3 s after the first rules to the end of the flood, the store kept at most the
    // budget (a tick's lag and the guards' burst allowed: 25 %), while far more was offered.
    let from = first["time_ms"].as_u64().expect("time") + 3000;
    let to = t0 + 16_000;
    assert!(to > from + 4000, "controlled for too short a time: {first}");
    let secs = (to - from) as f64 / 1000.0;
    let stored = total(&a, "", from, to)["total"]["flows"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        stored / secs <= budget as f64 * 1.25,
        "stored {:.0} flows/s over a budget of {budget} ({s:#})",
        stored / secs
    );
    let offered = s["offered"].as_u64().unwrap_or(0);
    assert!(offered > 2 * s["kept"].as_u64().unwrap_or(0), "{s:#}");

    // Every flow that matters is stored 1:1: the scan's SYNs without answer and the RSTs
    // they got, each DNS error, every dropped packet.
    let scan_flows = flows(&a, "Proto=tcp and Port=1000-1059", t0);
    let syn_ports: BTreeSet<u64> = scan_flows
        .iter()
        .filter(|f| f["SrcAddr"] == pair.a4.as_str() && f["Sampling"].as_u64().unwrap_or(0) <= 1)
        .filter_map(|f| f["DstPort"].as_u64())
        .collect();
    let rst_ports: BTreeSet<u64> = scan_flows
        .iter()
        .filter(|f| {
            f["SrcAddr"] == pair.b4.as_str() && f["Flags"].as_u64().unwrap_or(0) & 0x404 != 0
        })
        .filter_map(|f| f["SrcPort"].as_u64())
        .collect();
    assert_eq!(
        syn_ports.len() as u64,
        scanned,
        "SYNs stored: {syn_ports:?}"
    );
    assert_eq!(
        rst_ports.len() as u64,
        scanned,
        "RSTs stored: {rst_ports:?}"
    );
    let nx_ports: BTreeSet<String> = dns_out
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
        .collect();
    assert_eq!(nx_ports.len(), 8, "{dns_out}");
    let nx_flows = flows(
        &a,
        &format!("NetNs={} and DnsFlagsResponseCode=NXDomain", pair.ns_a),
        t0,
    );
    let stored_nx: BTreeSet<String> = nx_flows
        .iter()
        .filter_map(|f| f["DstPort"].as_u64().map(|p| p.to_string()))
        .collect();
    assert_eq!(stored_nx, nx_ports, "every DNS error stored");
    let dropped = flows(
        &a,
        &format!(
            "NetNs={} and DstPort=9999 and SrcPort={}",
            pair.ns_b,
            drop_port.trim()
        ),
        t0,
    );
    let drops: u64 = dropped
        .iter()
        .map(|f| f["PktDropPackets"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(drops, 25, "{dropped:#?}");

    // Scaled back, the interface's totals match its own counters within 2 %. The interface
    // counts skbs: iperf3's TCP control connection's may be GSO super-packets, so its flows count by their
    // Skbs (scaled like packets); every other flow here is one skb a packet.
    let on_if = format!("NetNs={} and Interface={}", pair.ns_a, pair.a_if);
    let g = total(&a, &on_if, t0, t_end + 5000);
    let rest = total(&a, &format!("{on_if} and not Port=5201"), t0, t_end + 5000);
    let bulk = flows(&a, &format!("{on_if} and Port=5201"), t0);
    assert!(!bulk.is_empty() && bulk.len() < 5000, "{}", bulk.len());
    let by_dir = |v: &Value, d: u64, m: &str| -> f64 {
        v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["key"]["IfDirection"] == d)
            .and_then(|x| x[m].as_f64())
            .unwrap_or(0.0)
    };
    let bulk_skbs = |d: u64| -> f64 {
        bulk.iter()
            .filter(|f| f["IfDirection"] == d)
            .map(|f| {
                (f["Skbs"].as_u64().unwrap_or(0) * f["Sampling"].as_u64().unwrap_or(1).max(1))
                    as f64
            })
            .sum()
    };
    for (d, m, got, want) in [
        (1, "bytes", by_dir(&g, 1, "bytes"), delta.tx_bytes),
        (0, "bytes", by_dir(&g, 0, "bytes"), delta.rx_bytes),
        (
            1,
            "skbs",
            by_dir(&rest, 1, "packets") + bulk_skbs(1),
            delta.tx_packets,
        ),
        (
            0,
            "skbs",
            by_dir(&rest, 0, "packets") + bulk_skbs(0),
            delta.rx_packets,
        ),
    ] {
        let err = (got - want as f64).abs() / want as f64;
        assert!(
            err < 0.02,
            "direction {d} {m}: {got} vs the interface's {want} ({err:.4})"
        );
    }
    // The flood alone (the sampled class): its datagrams scaled back within 10 % (1 in N of
    // some 24,000 records: a few per cent of sampling error).
    let udp = total(
        &a,
        &format!(
            "NetNs={} and Interface={} and DstPort=9000",
            pair.ns_a, pair.a_if
        ),
        t0,
        t_end + 5000,
    );
    let packets = udp["total"]["packets"].as_f64().unwrap_or(0.0);
    assert!(
        (packets - sent as f64).abs() / (sent as f64) < 0.10,
        "flood datagrams {packets} vs {sent} sent"
    );
}

#[test]
fn shadow_mode_changes_nothing_and_says_what_it_would_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    install_controller(
        &dir.path().join("data"),
        &["budget=200", "interval_s=1", "shadow=true"],
    );
    let a = Agent::start(dir.path(), &["--no-capture"]);
    // 6 s of imported flows, some 3000 a second (an import returns once its flows are
    // durable, at the next flush): small UDP flows from few sources to one port.
    let mut imported = 0u64;
    let start = Instant::now();
    let t0 = now_ms();
    while start.elapsed() < Duration::from_secs(6) {
        let now = now_ms();
        let batch: Vec<weir_core::Flow> = (0..3000)
            .map(|i| {
                let mut f = weir_core::Flow::empty();
                f.src_addr = format!("10.7.0.{}", i % 5).parse().expect("ip");
                f.dst_addr = "10.7.1.1".parse().expect("ip");
                f.proto = 17;
                f.src_port = 40000 + (i % 20000) as u16;
                f.dst_port = 5353;
                f.bytes = 100 + i % 50;
                f.packets = 1;
                f.time_flow_start_ms = now - 10;
                f.time_flow_end_ms = now;
                f
            })
            .collect();
        let (s, v) = a.post(
            "/api/v1/flows",
            &serde_json::to_string(&batch).expect("json"),
        );
        assert_eq!(s, 200, "{v}");
        imported += batch.len() as u64;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, stored) = loop {
        let st = a.ok("/api/v1/status", &[]);
        let stored = a.ok(
            "/api/v1/flows/aggregate",
            &[
                ("group_by", "Proto"),
                ("from", &t0.to_string()),
                ("top", "1"),
            ],
        )["total"]["flows"]
            .as_u64()
            .unwrap_or(0);
        let shadowed = st["storage_sampling"]["changes"]
            .as_array()
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c["shadow"] == true && c["rules"].as_array().is_some_and(|r| !r.is_empty())
                })
            });
        if stored == imported && shadowed {
            break (st, stored);
        }
        assert!(
            Instant::now() < deadline,
            "stored {stored} of {imported}; {:#}\n{}",
            st["storage_sampling"],
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // Nothing was dropped: every imported flow is stored, unscaled.
    assert_eq!(stored, imported);
    let s = &status["storage_sampling"];
    assert!(
        s["controllers"][0]["rules"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{s:#}"
    );
    // The shadow rules would have kept far fewer, with a small byte error.
    let classes = s["classes"].as_array().cloned().unwrap_or_default();
    let shadow: Vec<&Value> = classes.iter().filter(|c| c["shadow"] == true).collect();
    let off: u64 = shadow
        .iter()
        .map(|c| c["offered_flows"].as_u64().unwrap_or(0))
        .sum();
    let kept: u64 = shadow
        .iter()
        .map(|c| c["kept_flows"].as_u64().unwrap_or(0))
        .sum();
    let off_b: f64 = shadow
        .iter()
        .map(|c| c["offered_bytes"].as_f64().unwrap_or(0.0))
        .sum();
    let est_b: f64 = shadow
        .iter()
        .map(|c| c["kept_scaled_bytes"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(
        off > 0 && kept * 3 < off,
        "shadow kept {kept} of {off}: {s:#}"
    );
    assert!(
        (est_b - off_b).abs() / off_b < 0.1,
        "shadow bytes {est_b} vs {off_b}"
    );
    // `weir status` says what the controller would do and why.
    let (code, out, err) = a.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("storage sampling: ")
            && out.contains("shadow udp/5353: Proto=17 and Port=5353: 1 in")
            && out.contains("change by sampling-controller (shadow): offered"),
        "{out}"
    );
    // The Summary page shows the shadow rules and their reason (ui/web/test/sampling.mjs).
    browser_test("sampling.mjs", &a.url(""), &[]);
    // And it says so on /metrics.
    let (code, metrics) = a.get_raw("/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("sampling_controller_shadow_byte_error_ratio"),
        "{metrics}"
    );
    // The host's own counters per class, shadow ones too.
    for want in [
        "weir_storage_sampling_flows_total{class=\"udp/5353\",shadow=\"true\",what=\"kept\"}",
        "weir_storage_sampling_bytes_total{class=\"udp/5353\",shadow=\"true\",what=\"kept_scaled\"}",
        "weir_ingest_total{what=\"offered\"}",
    ] {
        assert!(metrics.contains(want), "{want} not in\n{metrics}");
    }
}

#[test]
fn heavy_classes_are_sampled_in_the_kernel_with_syn_and_rst_exempt() {
    require(&["python3", "iperf3", "ethtool"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::alone(81);
    // B's end segments what A sends (no TSO/GSO/GRO on it), so B receives, and acknowledges,
    // one skb a segment: thousands of packets a second for the kernel program, most of the
    // class's cost.
    for (ns, ifname) in [(&pair.ns_a, &pair.a_if), (&pair.ns_b, &pair.b_if)] {
        sh(&format!(
            "ip netns exec {ns} ethtool -K {ifname} tso off gso off gro off"
        ));
    }
    // A second address on B where nothing listens: connects to it get a RST.
    let refuser = "198.18.81.3";
    let mac_b = sh(&format!(
        "ip netns exec {} cat /sys/class/net/{}/address",
        pair.ns_b, pair.b_if
    ));
    sh(&format!(
        "ip -n {} addr add {refuser}/24 dev {} && ip -n {} neigh replace {refuser} lladdr {} dev {} nud permanent",
        pair.ns_b,
        pair.b_if,
        pair.ns_a,
        mac_b.trim(),
        pair.a_if
    ));
    // A budget no flow rate here reaches: only the kernel part acts.
    install_controller(
        &dir.path().join("data"),
        &["budget=1000000", "interval_s=2", "kernel_pps=4000"],
    );
    let a = agent_with(&pair, dir.path(), &["--no-dedup"]);
    sh(&format!(
        "ip netns exec {} iperf3 -s -1 -D -B {}",
        pair.ns_b, pair.b4
    ));
    std::thread::sleep(Duration::from_millis(500));
    a.flush();
    let t0 = now_ms();
    let before_a = Pair::stats(&pair.ns_a, &pair.a_if);
    let before_b = Pair::stats(&pair.ns_b, &pair.b_if);
    let bulk = std::process::Command::new("ip")
        .args([
            "netns", "exec", &pair.ns_a, "iperf3", "-c", &pair.b4, "-t", "14", "-b", "40M", "-J",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("iperf3");
    // Once the class is sampled in the kernel: connection attempts on its port, each refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rule = loop {
        let st = a.ok("/api/v1/status", &[]);
        let filters = st["capture"]["filters"].clone();
        let texts: Vec<String> = filters
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                serde_json::from_value::<weir_core::capture::FilterRule>(r.clone()).ok()
            })
            .map(|r| r.text())
            .collect();
        if let Some(t) = texts
            .iter()
            .find(|t| t.starts_with("sample proto=tcp ports=5201 sampling="))
        {
            assert!(
                texts.contains(&"sample proto=tcp ports=5201 tcp_flags=SYN,RST".to_string()),
                "SYN and RST exempt before the class: {texts:?}"
            );
            break t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no kernel sampling rule: {st:#}\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let n: u64 = rule
        .rsplit('=')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("sampling");
    assert!(n >= 2, "{rule}");
    let refused = sh(&format!(
        "ip netns exec {} python3 -c \"
import socket
ports = []
for _ in range(30):
    s = socket.socket()
    s.settimeout(2)
    s.bind(('{}', 0))
    p = s.getsockname()[1]
    try:
        s.connect(('{refuser}', 5201))
    except ConnectionRefusedError:
        ports.append(p)
    s.close()
print(' '.join(map(str, ports)))
\"",
        pair.ns_a, pair.a4
    ));
    let refused: Vec<u64> = refused
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(refused.len(), 30, "every attempt refused: {refused:?}");
    let out = bulk.wait_with_output().expect("iperf3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let delta_a = Pair::stats(&pair.ns_a, &pair.a_if).delta(&before_a);
    let delta_b = Pair::stats(&pair.ns_b, &pair.b_if).delta(&before_b);
    let t_end = now_ms();
    a.flush();

    // Fewer packets left the kernel, counted; the change is kept with who made it.
    let st = a.ok("/api/v1/status", &[]);
    let sampled_out = st["capture"]["counters"]["kernel_sampled_out"]
        .as_u64()
        .unwrap_or(0);
    assert!(sampled_out > 1000, "{:#}", st["capture"]["counters"]);
    assert!(
        a.records("capture-change").iter().any(|r| {
            r["text"]
                .as_str()
                .unwrap_or("")
                .contains("sample proto=tcp ports=5201 sampling=")
                && r.to_string().contains("sampling-controller")
        }),
        "{:#?}",
        a.records("capture-change")
    );

    // Every refused attempt is stored: its SYN (A to the refuser) and the RST it got back,
    // each at 1:1 although 1 in {n} of the class's other packets leave the kernel.
    let attempts = flows(&a, &format!("Addr={refuser} and Port=5201"), t0);
    for p in &refused {
        let syn = attempts.iter().any(|f| {
            f["SrcPort"] == *p
                && f["DstAddr"] == refuser
                && f["Flags"].as_u64().unwrap_or(0) & 0x2 != 0
                && f["Sampling"].as_u64().unwrap_or(0) <= 1
        });
        let rst = attempts.iter().any(|f| {
            f["DstPort"] == *p
                && f["SrcAddr"] == refuser
                && f["Flags"].as_u64().unwrap_or(0) & 0x404 != 0
                && f["Sampling"].as_u64().unwrap_or(0) <= 1
        });
        assert!(
            syn && rst,
            "port {p}: SYN {syn}, RST {rst} in {attempts:#?}"
        );
    }

    // Scaled back, what each end received matches its interface's counters: within four
    // standard errors of 1-in-N sampling of the skbs that left the kernel, and 0.5 % for the
    // rest. (Received: one skb a segment; what A sends are GSO skbs of some 30 segments, too
    // few for a useful bound.)
    for (ns, ifname, delta) in [
        (&pair.ns_b, &pair.b_if, &delta_b),
        (&pair.ns_a, &pair.a_if, &delta_a),
    ] {
        let on_if = format!("NetNs={ns} and Interface={ifname} and IfDirection=0");
        let bulk = flows(&a, &format!("{on_if} and Port=5201"), t0);
        let kept: u64 = bulk
            .iter()
            .filter(|f| f["Sampling"].as_u64().unwrap_or(0) > 1)
            .map(|f| f["Skbs"].as_u64().unwrap_or(0))
            .sum();
        // B receives thousands a second; A, B's acknowledgements (a few hundred in all).
        assert!(kept > 100, "{ifname}: {kept} sampled skbs kept");
        // The highest 1 in N the class had (the controller may retune it as rates move).
        let n = bulk
            .iter()
            .filter_map(|f| f["Sampling"].as_u64())
            .max()
            .unwrap_or(n)
            .max(n);
        let bound = 4.0 * ((n - 1) as f64 / kept as f64).sqrt() + 0.005;
        let g = total(&a, &on_if, t0, t_end + 5000)["total"].clone();
        for (m, want) in [("bytes", delta.rx_bytes), ("packets", delta.rx_packets)] {
            let got = g[m].as_f64().unwrap_or(0.0);
            let err = (got - want as f64).abs() / want as f64;
            eprintln!(
                "{ifname} received {m}: off by {err:.4}, bound {bound:.4} (1 in {n}, {kept} skbs kept)"
            );
            assert!(
                err < bound,
                "{ifname} received {m}: {got} vs the interface's {want} ({err:.4}, bound {bound:.4}, 1 in {n}, {kept} skbs kept)"
            );
        }
        // The kernel let through about 1 in N of the class's skbs.
        assert!(
            (kept as f64) < delta.rx_packets as f64 * 0.75,
            "{ifname}: {kept} skbs kept of {}",
            delta.rx_packets
        );
    }
}
