//! The cluster tier on a real ClickHouse (Debian's clickhouse-server 18.16): `weir server
//! --migrate-only` creates the schema and prints the insert URL; two agents, each with its
//! own flows, write through the bundled `clickhouse-export`; `weir server` then answers the
//! flow API over both, and its answers equal the sum of the agents' own: listing totals,
//! top-N aggregates, time series and the Sankey. Once with imported flows (exact values, for
//! filters with CIDRs, ranges, either-side fields and negation, a latency rule on the server,
//! an older schema and an older insert URL), once with two agents capturing real traffic in
//! namespaces of their own, whose edge summaries (published to ClickHouse) the server merges.

use crate::export::{wait_exported, wait_feed};
use crate::util::{Agent, Pair, WEIR, free_port, now_ms, require, sh};
use std::time::{Duration, Instant};

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py");
use serde_json::{Value, json};
use weir_clickhouse::local::LocalServer;

/// An agent's flows: `net` picks its addresses (each agent its own namespace's).
fn flows(net: u8, n: u64, base: u64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let dst_port = [53, 80, 443, 8080][(i % 4) as usize];
            json!({"SrcAddr": format!("198.18.{net}.{}", 1 + i % 50),
                   "DstAddr": if i % 4 == 0 { format!("2001:db8:{net}::1") } else { format!("198.19.{net}.1") },
                   "Proto": if i % 3 == 0 { 17 } else { 6 }, "SrcPort": 20000 + i,
                   "DstPort": dst_port, "Bytes": 100 + i * 13,
                   "Packets": 1 + i % 7, "Sampling": if i % 5 == 0 { 10 } else { 1 },
                   "Flags": if i % 2 == 0 { 0x12 } else { 0x10 },
                   "SrcK8S_Namespace": format!("ns-{net}"),
                   "TimeFlowRttNs": if dst_port == 443 { 300_000_000 } else { 2_000_000 },
                   "TimeFlowStartMs": base + i * 100, "TimeFlowEndMs": base + i * 100 + 50})
        })
        .collect()
}

#[test]
fn weir_server_over_clickhouse_answers_the_sum_of_two_agents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ch = LocalServer::start(&dir.path().join("clickhouse")).expect("clickhouse-server");
    // The schema, and what agents need.
    let m = migrate(&ch);
    assert_eq!(m["schema"]["from"], 0, "{m}");
    let insert = m["insert_url"].as_str().expect("insert_url").to_string();
    // The URL the server tells agents to use compresses each insert; one agent uses it, the
    // other the plain insert URL, and ClickHouse must hold both agents' flows alike.
    let gzip = m["sink_url"].as_str().expect("sink_url").to_string();
    assert!(gzip.starts_with("http+gzip://"), "{m}");
    assert!(
        m["agent_sink"].as_str().is_some_and(|s| s.contains(&gzip)),
        "{m}"
    );

    let base = now_ms() - 600_000;
    let mut agents = Vec::new();
    for (node, net, n) in [("node-a", 1u8, 700u64), ("node-b", 2, 500)] {
        let root = dir.path().join(node);
        // node-a names itself through the exporter's config, node-b through `--node` (its
        // flows carry `Node`, in its own store too).
        let node_cfg = format!("node={node}");
        let mut install = vec![
            "install",
            "bundled:clickhouse-export",
            "--config",
            "sink=clickhouse",
        ];
        if node == "node-a" {
            install.extend(["--config", &node_cfg]);
        }
        let (code, o, e) = crate::plugins::weir(&root.join("data"), &install);
        assert_eq!(code, 0, "{o}{e}");
        let (code, o, e) = crate::plugins::weir(&root.join("data"), &["install", "bundled:sankey"]);
        assert_eq!(code, 0, "{o}{e}");
        let sink = format!(
            "clickhouse={}",
            if node == "node-a" { &gzip } else { &insert }
        );
        let mut args = vec!["--no-capture", "--sink", &sink];
        if node == "node-b" {
            args.extend(["--node", node]);
        }
        let a = Agent::start(&root, &args);
        wait_feed(&a, "clickhouse-export");
        let (s, v) = a.post(
            "/api/v1/flows",
            &Value::Array(flows(net, n, base)).to_string(),
        );
        assert_eq!(s, 200, "{v}");
        wait_exported(&a, "clickhouse-export", n);
        agents.push(a);
    }

    // The server over both, with the Sankey and a latency rule installed: its plugins read
    // ClickHouse too (flows, and flow-stats' quantiles).
    let (code, o, e) =
        crate::plugins::weir(&dir.path().join("server"), &["install", "bundled:sankey"]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, o, e) = crate::plugins::weir(
        &dir.path().join("server"),
        &[
            "install",
            "bundled:latency",
            "--config",
            "group_by=DstPort",
            "--config",
            "check=rtt",
            "--config",
            "window=30m",
        ],
    );
    assert_eq!(code, 0, "{o}{e}");
    let server = start_server(dir.path(), &ch);
    let status = server.ok("/api/v1/status", &[]);
    assert_eq!(
        status["flows_from"],
        format!("clickhouse http://127.0.0.1:{}/weir", ch.port),
        "{status}"
    );

    let (from, to) = ((base - 60_000).to_string(), (base + 200_000).to_string());
    let range = [("from", from.as_str()), ("to", to.as_str())];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut q: Vec<(&str, &str)> = range.to_vec();
        q.extend_from_slice(extra);
        q
    };
    for filter in [
        "",
        "SrcAddr=198.18.1.0/24",
        "Addr=2001:db8::/32",
        "Port=443 or Proto=udp",
        "not DstPort=80 and Bytes>=2000",
        "DstPort=50-100",
        "Flags=SYN,ACK",
        "SrcK8S_Namespace=ns-2",
        // node-b's flows carry it on both sides; node-a's only in ClickHouse.
        "Node=node-b",
        "Node=node-b and DstPort=443",
    ] {
        assert_sum(&server, &agents, &range, filter);
    }
    // Nodes: each agent's flows under its name, whichever way it was given.
    let by_node = server.ok(
        "/api/v1/flows/aggregate",
        &with(&[("group_by", "Node"), ("metric", "flows"), ("top", "10")]),
    );
    let nodes: std::collections::BTreeMap<String, u64> = by_node["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["key"]["Node"].as_str().unwrap_or("").to_string(),
                g["flows"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [("node-a".to_string(), 700), ("node-b".to_string(), 500)].into(),
        "{by_node}"
    );
    let one = server.ok(
        "/api/v1/flows",
        &with(&[("filter", "Node=node-a"), ("limit", "1")]),
    );
    assert_eq!(one["total"], 700, "{one}");
    assert_eq!(one["flows"][0]["Node"], "node-a", "{one}");
    let local = agents[1].ok("/api/v1/flows", &with(&[("limit", "1")]));
    assert_eq!(
        local["flows"][0]["Node"], "node-b",
        "--node on the agent's own flows"
    );
    // The Sankey, run on the server, is the sum of the agents' Sankeys, link by link.
    let body = json!({"from_ms": base - 60_000, "to_ms": base + 200_000,
                      "params": {"group_by": "Proto,DstPort", "metric": "bytes"}});
    let got = sankey_sum(&server, &agents, &body);
    assert!(!got.0.is_empty());
    assert_eq!(got.0, got.1, "the cluster's Sankey");
    // A page of flows reads back as flows (IPv4 as IPv4, IPv6 as IPv6).
    let page = server.ok(
        "/api/v1/flows",
        &with(&[("filter", "DstPort=53"), ("limit", "3"), ("sort", "-Bytes")]),
    );
    let f = &page["flows"][0];
    assert!(
        f["SrcAddr"]
            .as_str()
            .is_some_and(|s| s.starts_with("198.18.")),
        "{page}"
    );
    assert!(
        f["DstAddr"]
            .as_str()
            .is_some_and(|s| s.starts_with("2001:db8:")),
        "{page}"
    );
    // A page further in is the agents' flows merged in the sort's order, either way.
    let bytes_of = |v: &Value| -> Vec<u64> {
        v["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f["Bytes"].as_u64().unwrap_or(0))
            .collect()
    };
    for sort in ["-Bytes", "Bytes"] {
        let page = server.ok(
            "/api/v1/flows",
            &with(&[("limit", "5"), ("offset", "3"), ("sort", sort)]),
        );
        let mut both: Vec<u64> = agents
            .iter()
            .flat_map(|a| {
                bytes_of(&a.ok("/api/v1/flows", &with(&[("limit", "8"), ("sort", sort)])))
            })
            .collect();
        both.sort_unstable();
        if sort.starts_with('-') {
            both.reverse();
        }
        assert_eq!(bytes_of(&page), both[3..8], "{sort}: {page}");
    }
    // Pages sorted by an address field (its bound compared in PREWHERE), either way.
    for sort in ["-SrcAddr", "DstAddr"] {
        let page = server.ok(
            "/api/v1/flows",
            &with(&[("limit", "5"), ("offset", "3"), ("sort", sort)]),
        );
        assert_eq!(
            page["flows"].as_array().map(Vec::len),
            Some(5),
            "{sort}: {page}"
        );
    }
    // The latency rule on the server sees the agents' round-trip times through ClickHouse:
    // port 443's 95th percentile is 300 ms (a warning), the other ports' 2 ms.
    // (The server evaluates its rules when it starts, too: the alert may be firing already.)
    let (s, v) = server.post("/api/v1/alerts/evaluate", "");
    assert_eq!(s, 200, "{v}");
    let alerts = server.ok("/api/v1/alerts", &[]);
    let active = alerts["active"].as_array().cloned().unwrap_or_default();
    assert_eq!(active.len(), 1, "{alerts}");
    assert_eq!(
        (
            &active[0]["name"],
            &active[0]["state"],
            &active[0]["severity"]
        ),
        (&json!("HighRtt"), &json!("firing"), &json!("warning")),
        "{alerts}"
    );
    assert_eq!(active[0]["labels"]["dst_port"], "443", "{alerts}");
    // Over both agents' flows: 175 + 125 to port 443.
    assert!(
        active[0]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("over 300 flows")),
        "{alerts}"
    );
    // Imports are refused: the cluster's flows come from its agents.
    let (s, v) = server.post("/api/v1/flows", "[]");
    assert_eq!(s, 503, "{v}");
    drop(server);
    drop(agents);

    older_schema_and_older_url(&ch, dir.path(), &insert, base);
}

/// An agent writing into a table from an older schema (a few columns; its flows fill more):
/// the columns the table lacks are left out, with a warning, and every flow arrives. An agent
/// whose sink still has the JSONEachRow URL of clickhouse-export before 0.3.0: its exporter's
/// error says what to change, and nothing is lost.
fn older_schema_and_older_url(ch: &LocalServer, dir: &std::path::Path, insert: &str, base: u64) {
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let sql = |q: &str| -> String {
        let mut r = http.post(&ch.url()).send(q.as_bytes()).expect("clickhouse");
        let body = r.body_mut().read_to_string().expect("body");
        assert_eq!(r.status().as_u16(), 200, "{q}: {body}");
        body
    };
    sql("CREATE DATABASE IF NOT EXISTS old");
    sql(
        "CREATE TABLE old.flows_ingest (Node String, SrcAddr String, DstAddr String, Bytes UInt64, \
         Packets UInt64, TimeFlowEndMs UInt64) ENGINE = MergeTree ORDER BY TimeFlowEndMs",
    );
    let old_url = insert.replace("%60weir%60", "old");
    assert_ne!(old_url, insert, "{insert}");
    let json_url = insert.replace("flows_ingest&", "flows_ingest%20FORMAT%20JSONEachRow&");
    assert_ne!(json_url, insert, "{insert}");
    let (n, mut agents) = (300u64, Vec::new());
    for (node, url) in [("node-c", &old_url), ("node-d", &json_url)] {
        let root = dir.join(node);
        let (code, o, e) = crate::plugins::weir(
            &root.join("data"),
            &[
                "install",
                "bundled:clickhouse-export",
                "--config",
                "sink=clickhouse",
            ],
        );
        assert_eq!(code, 0, "{o}{e}");
        let sink = format!("clickhouse={url}");
        let a = Agent::start(&root, &["--no-capture", "--sink", &sink, "--node", node]);
        wait_feed(&a, "clickhouse-export");
        let (s, v) = a.post(
            "/api/v1/flows",
            &Value::Array(flows(3, n, base)).to_string(),
        );
        assert_eq!(s, 200, "{v}");
        agents.push(a);
    }
    wait_exported(&agents[0], "clickhouse-export", n);
    let want: u64 = flows(3, n, base)
        .iter()
        .map(|f| f["Bytes"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        sql("SELECT count(), sum(Bytes), uniqExact(SrcAddr), any(Node) FROM old.flows_ingest"),
        format!("{n}\t{want}\t50\tnode-c\n")
    );
    let log = agents[0].log_text();
    assert!(
        log.contains("flows_ingest has no column") && log.contains("weir server --migrate-only"),
        "{log}"
    );
    // The older URL: the export stays behind with the error, the store keeps every flow.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let p = crate::export::plugin_named(&agents[1], "clickhouse-export");
        let err = p["export"]["last_error"].as_str().unwrap_or("").to_string();
        if err.contains("FORMAT JSONEachRow, as for clickhouse-export before 0.3.0") {
            assert_eq!(p["export"]["exported_flows"], 0, "{p}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{p}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let from = (base - 60_000).to_string();
    let stored = agents[1].ok("/api/v1/flows", &[("limit", "1"), ("from", &from)]);
    assert_eq!(stored["total"], n, "{stored}");
}

/// The server's answers for `filter` equal the sum of the agents' own: listing totals, top-N
/// aggregates (totals and every group's bytes) and every point of a time series.
fn assert_sum(server: &Agent, agents: &[Agent], range: &[(&str, &str)], filter: &str) {
    fn with<'a>(
        range: &[(&'a str, &'a str)],
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        range.iter().chain(extra).copied().collect()
    }
    // Listing totals.
    let q = with(range, &[("filter", filter), ("limit", "5")]);
    let total = |a: &Agent| a.ok("/api/v1/flows", &q)["total"].as_u64().expect("total");
    let sum: u64 = agents.iter().map(total).sum();
    assert_eq!(total(server), sum, "{filter}: flows");
    // Top-N aggregates: totals, and every group's bytes.
    let q = with(
        range,
        &[
            ("filter", filter),
            ("group_by", "Proto,DstPort"),
            ("top", "100"),
        ],
    );
    let agg = |a: &Agent| a.ok("/api/v1/flows/aggregate", &q);
    let ours = agg(server);
    for k in ["bytes", "packets", "flows"] {
        let sum: u64 = agents
            .iter()
            .map(|a| agg(a)["total"][k].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(
            ours["total"][k].as_u64(),
            Some(sum),
            "{filter}: {k}: {ours}"
        );
    }
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    for a in agents {
        for g in agg(a)["groups"].as_array().expect("groups") {
            *want.entry(g["key"].to_string()).or_default() += g["bytes"].as_u64().unwrap_or(0);
        }
    }
    let got: std::collections::BTreeMap<String, u64> = ours["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| (g["key"].to_string(), g["bytes"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(got, want, "{filter}: groups");
    // Time series: every point.
    let q = with(
        range,
        &[("filter", filter), ("step", "30s"), ("metric", "bytes")],
    );
    let ts = |a: &Agent| a.ok("/api/v1/flows/timeseries", &q);
    let points = |v: &Value| -> Vec<u64> {
        v["series"][0]["points"]
            .as_array()
            .map(|p| p.iter().map(|x| x[1].as_u64().unwrap_or(0)).collect())
            .unwrap_or_default()
    };
    let theirs: Vec<Vec<u64>> = agents.iter().map(|a| points(&ts(a))).collect();
    let ours = points(&ts(server));
    let summed: Vec<u64> = (0..ours.len())
        .map(|i| theirs.iter().map(|p| p.get(i).copied().unwrap_or(0)).sum())
        .collect();
    assert_eq!(ours, summed, "{filter}: time series");
}

/// `weir server` over `ch`, its data in `dir/server`.
fn start_server(dir: &std::path::Path, ch: &LocalServer) -> Agent {
    let port = free_port();
    let log = dir.join("server.log");
    let child = std::process::Command::new(WEIR)
        .args(["server", "--clickhouse", &ch.url()])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("server"))
        .args(["--summaries-every", "1s"])
        .env("WEIR_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("weir server");
    Agent::adopt(child, port, &dir.join("server"), log)
}

type Links = std::collections::BTreeMap<(String, String), u64>;

/// The Sankey's links as the server draws them, and summed over the agents' own Sankeys.
fn sankey_sum(server: &Agent, agents: &[Agent], body: &Value) -> (Links, Links) {
    let links = |a: &Agent| -> Links {
        let (s, v) = a.post("/api/v1/plugins/sankey/run", &body.to_string());
        assert_eq!(s, 200, "{v}");
        v["result"]["view"]["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                (
                    (l["source"].to_string(), l["target"].to_string()),
                    l["value"].as_f64().unwrap_or(0.0) as u64,
                )
            })
            .collect()
    };
    let mut want = Links::new();
    for a in agents {
        for (k, v) in links(a) {
            *want.entry(k).or_default() += v;
        }
    }
    (links(server), want)
}

/// `weir server --migrate-only --json` against `ch`: what agents need.
fn migrate(ch: &LocalServer) -> Value {
    migrate_with(ch, &[])
}

/// [`migrate`] with more of `weir server`'s flags.
fn migrate_with(ch: &LocalServer, extra: &[&str]) -> Value {
    let out = std::process::Command::new(WEIR)
        .args([
            "server",
            "--clickhouse",
            &ch.url(),
            "--migrate-only",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("weir server");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Two agents capturing real traffic in their own namespaces (eBPF on veth pairs, not
/// imports) write through clickhouse-export into one ClickHouse; `weir server`'s listing
/// totals, aggregates, time series and Sankey equal the sums of the agents' own. They publish
/// their edge summaries too, and the server's is the merge of both.
#[test]
fn two_capturing_agents_add_up_on_the_server() {
    require(&["ip", "ping", "python3"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ch = LocalServer::start(&dir.path().join("clickhouse")).expect("clickhouse-server");
    let m = migrate(&ch);
    let sink = format!("clickhouse={}", m["sink_url"].as_str().expect("sink_url"));
    let t0 = now_ms();
    let pairs = [Pair::new(82), Pair::new(83)];
    let mut agents = Vec::new();
    for (k, pair) in pairs.iter().enumerate() {
        let node = format!("cap-{k}");
        let root = dir.path().join(&node);
        for install in [
            &[
                "install",
                "bundled:clickhouse-export",
                "--config",
                "sink=clickhouse",
            ][..],
            &["install", "bundled:sankey"],
            &["install", "bundled:edge-summary"],
        ] {
            let (code, o, e) = crate::plugins::weir(&root.join("data"), install);
            assert_eq!(code, 0, "{o}{e}");
        }
        let a = Agent::start(
            &root,
            &[
                "--no-host-netns",
                "--netns",
                &pair.ns_a,
                "--node",
                &node,
                "--sink",
                &sink,
                "--active-timeout",
                "1s",
                "--publish-summaries",
                &ch.url(),
                "--summaries-every",
                "1s",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while a.ok("/api/v1/status", &[])["capture"]["interfaces"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            assert!(Instant::now() < deadline, "not attached: {}", a.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_feed(&a, "clickhouse-export");
        agents.push(a);
    }
    // Different traffic on each: pings over IPv4 and IPv6, UDP datagrams to a port of its own.
    for (k, pair) in pairs.iter().enumerate() {
        sh(&format!(
            "ip netns exec {ns} ping -c {n} -i 0.01 {b4} && ip netns exec {ns} ping -6 -c 3 -i 0.01 {b6} && ip netns exec {ns} python3 {PY}/udp_send.py {b4} {port} {d} 500",
            ns = pair.ns_a,
            n = 4 + k,
            b4 = pair.b4,
            b6 = pair.b6,
            port = 7400 + k,
            d = 20 + 30 * k,
        ));
    }
    // The range ends just after the traffic: a stray packet later (none is expected in
    // these namespaces) cannot change the sums. A batch sent twice (at-least-once, after a
    // timed-out insert) would fail the test: it does not happen at this volume.
    let t1 = now_ms() + 500;
    for plugin in ["bundled:edge-summary", "bundled:sankey"] {
        let (code, o, e) = crate::plugins::weir(&dir.path().join("server"), &["install", plugin]);
        assert_eq!(code, 0, "{o}{e}");
    }
    let server = start_server(dir.path(), &ch);
    // Every flow each agent stored is in ClickHouse under its node.
    let (from, to) = ((t0 - 5_000).to_string(), t1.to_string());
    let range = [("from", from.as_str()), ("to", to.as_str())];
    for (k, a) in agents.iter().enumerate() {
        a.flush();
        let node = format!("Node=cap-{k}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mine = a.ok("/api/v1/flows", &[range[0], range[1], ("limit", "1")]);
            let there = server.ok(
                "/api/v1/flows",
                &[range[0], range[1], ("limit", "1"), ("filter", &node)],
            );
            if mine["total"].as_u64() > Some(0) && mine["total"] == there["total"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: {} stored, {} in ClickHouse\n{}",
                mine["total"],
                there["total"],
                a.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for filter in ["", "Proto=udp", "Proto=1 or Proto=58", "Node=cap-1"] {
        assert_sum(&server, &agents, &range, filter);
    }
    let body = json!({"from_ms": t0 - 5_000, "to_ms": t1,
                      "params": {"group_by": "Proto,DstPort", "metric": "bytes"}});
    let (got, want) = sankey_sum(&server, &agents, &body);
    assert!(got.len() >= 2, "{got:?}");
    assert_eq!(got, want, "the cluster's Sankey over captured flows");
    // The edge summary: each agent publishes its windows every second and the server merges
    // them, so its flow, byte and packet totals (exact in the frequent-items sketches) are the
    // sums of the agents', and its top talker is one of theirs.
    use crate::summaries::{measure, rows};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = ["flows", "bytes", "packets"];
        let want: Vec<f64> = m
            .iter()
            .map(|k| agents.iter().map(|a| measure(a, k)).sum())
            .collect();
        let got: Vec<f64> = m.iter().map(|k| measure(&server, k)).collect();
        if want[0] > 0.0 && got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server's summary {got:?}, the agents' {want:?}\nserver status {}\n{}",
            server.ok("/api/v1/status", &[])["summary_exchange"],
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let top = |a: &Agent| {
        rows(&crate::summaries::query(a, "overview"))
            .into_iter()
            .find(|r| r[0] == "top talkers by bytes")
            .map(|r| r[1].clone())
    };
    let theirs: Vec<Option<String>> = agents.iter().map(top).collect();
    assert!(theirs.contains(&top(&server)), "{theirs:?}");
    let st = server.ok("/api/v1/status", &[]);
    let ex = &st["summary_exchange"];
    assert_eq!(
        (&ex["role"], &ex["nodes"], &ex["last_error"]),
        (&json!("gather"), &json!(2), &Value::Null),
        "{st}"
    );
    for a in &agents {
        let st = a.ok("/api/v1/status", &[]);
        let ex = &st["summary_exchange"];
        assert_eq!(
            (&ex["role"], &ex["failures"]),
            (&json!("publish"), &json!(0)),
            "{st}"
        );
        assert!(ex["windows"].as_u64() >= Some(1), "{st}");
    }
}

/// An agent writing through Kafka with `ndjson-export`, read by ClickHouse's Kafka engine that
/// `weir server --kafka` sets up: the server answers as the agent does. The broker is Tansu
/// (a Kafka-protocol broker: no Apache Kafka 2.x+ can be installed on these machines), and
/// ClickHouse 18.16 runs with the librdkafka of confluent-kafka's wheel (2.16; Debian's is too
/// old for Tansu).
#[test]
fn an_agent_through_kafka_lands_in_clickhouse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = crate::export::tansu(port);
    let bootstrap = format!("127.0.0.1:{port}");
    crate::export::kafka_client(&["topic", &bootstrap, "weir-flows", "2"]);
    let lib = dir.path().join("librdkafka");
    std::fs::create_dir_all(&lib).expect("lib dir");
    let wheel = std::fs::read_dir("/opt/weir-kafka/lib")
        .expect("/opt/weir-kafka (scripts/deps.sh test installs it)")
        .flatten()
        .map(|py| py.path().join("site-packages/confluent_kafka.libs"))
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .map(|f| f.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("librdkafka"))
        })
        .expect("confluent-kafka's librdkafka");
    std::os::unix::fs::symlink(&wheel, lib.join("librdkafka.so.1")).expect("symlink");
    let ch = LocalServer::start_for_kafka(&dir.path().join("clickhouse"), &lib)
        .expect("clickhouse-server");
    let url = format!("kafka://{bootstrap}/weir-flows");

    // A URL without a topic is refused, naming the flag and what is missing.
    let bad = std::process::Command::new(WEIR)
        .args(["server", "--clickhouse", &ch.url(), "--migrate-only"])
        .args(["--kafka", &format!("kafka://{bootstrap}")])
        .output()
        .expect("weir server");
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && said.contains("--kafka") && said.contains("topic is missing"),
        "{said}"
    );
    let made = now_ms();
    let m = migrate_with(&ch, &["--kafka", &url]);
    assert_eq!(m["kafka"]["created"], true, "{m}");
    // ClickHouse's consumer may write into `flows` while its views are being made, even into
    // an empty database: the rollups and the address and span tables are used only from after
    // now (ranges before read `flows`, whose answers the checks below compare).
    let client = weir_clickhouse::ClickHouse::new(&ch.url(), "weir").expect("client");
    let marks = client
        .query("SELECT name, max(from_ms) FROM weir.weir_rollups GROUP BY name ORDER BY name")
        .expect("marks");
    let marks: Vec<(&str, u64)> = marks
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, f)| (n, f.parse().unwrap_or(0)))
        .collect();
    assert_eq!(
        marks.iter().map(|m| m.0).collect::<Vec<_>>(),
        ["flows_1h", "flows_1m", "flows_addr", "flows_span"],
        "{marks:?}"
    );
    assert!(marks.iter().all(|m| m.1 > made), "{marks:?}");
    // Here nothing was written before the views (the agent starts below): put the marks
    // back to 0 so that the answers below come through the Kafka table's views into the
    // rollups and the address and span tables as well.
    for q in [
        "DROP TABLE weir.weir_rollups",
        "CREATE TABLE weir.weir_rollups (name String, from_ms UInt64) ENGINE = TinyLog",
        "INSERT INTO weir.weir_rollups VALUES ('flows_1h', 0), ('flows_1m', 0), \
         ('flows_addr', 0), ('flows_span', 0)",
    ] {
        client.query(q).expect("marks back to 0");
    }
    // The agent runs what the server printed.
    let root = dir.path().join("agent");
    let plugin = m["kafka"]["agent_plugin"].as_str().expect("agent_plugin");
    let install: Vec<&str> = plugin.split_whitespace().skip(2).collect();
    let (code, o, e) = crate::plugins::weir(&root.join("data"), &install);
    assert_eq!(code, 0, "{o}{e}");
    let sink = format!("kafka={url}");
    let a = Agent::start(
        &root,
        &["--no-capture", "--node", "via-kafka", "--sink", &sink],
    );
    wait_feed(&a, "ndjson-export");
    let base = now_ms() - 600_000;
    let (s, v) = a.post(
        "/api/v1/flows",
        &Value::Array(flows(4, 600, base)).to_string(),
    );
    assert_eq!(s, 200, "{v}");
    wait_exported(&a, "ndjson-export", 600);

    let server = start_server(dir.path(), &ch);
    // Whole hours around the flows (the top-N read them from flows_1h) and a cut range.
    let hour = 3_600_000;
    let (from, to) = ((base / hour - 1) * hour, (now_ms() / hour + 2) * hour - 1);
    let (from, to, cut_from, cut_to) = (
        from.to_string(),
        to.to_string(),
        (base + 10_000).to_string(),
        (base + 40_000).to_string(),
    );
    let wide = [("from", from.as_str()), ("to", to.as_str())];
    let cut = [("from", cut_from.as_str()), ("to", cut_to.as_str())];
    // ClickHouse's consumer joins its group first (slow with Tansu: ~20-30 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let there = server.ok(
            "/api/v1/flows",
            &[
                wide[0],
                wide[1],
                ("limit", "1"),
                ("filter", "Node=via-kafka"),
            ],
        );
        if there["total"] == 600 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 600 flows in ClickHouse through Kafka\n{}",
            there["total"],
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let agents = [a];
    for range in [&wide, &cut] {
        for filter in [
            "",
            "SrcAddr=198.18.4.0/24",
            "Addr=2001:db8::/32",
            "Port=443 or Proto=udp",
        ] {
            assert_sum(&server, &agents, range, filter);
        }
    }
    let by_node = server.ok(
        "/api/v1/flows/aggregate",
        &[
            wide[0],
            wide[1],
            ("group_by", "Node"),
            ("metric", "bytes"),
            ("top", "5"),
        ],
    );
    assert_eq!(
        by_node["groups"][0]["key"]["Node"], "via-kafka",
        "{by_node}"
    );
}
