//! The cluster tier on a real ClickHouse (Debian's clickhouse-server 18.16): `weir server
//! --migrate-only` creates the schema and prints the insert URL; two agents, each with its
//! own flows (imported, not captured: capture is covered elsewhere, here the point is the
//! path from agents' stores into one ClickHouse), write through the bundled
//! `clickhouse-export`; `weir server` then answers the flow API over both, and its answers
//! equal the sum of the agents' own: listing totals, top-N aggregates and time series, for
//! filters with CIDRs, ranges, either-side fields and negation.

use crate::export::{wait_exported, wait_feed};
use crate::util::{Agent, WEIR, free_port, now_ms};
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
                   "TimeFlowStartMs": base + i * 100, "TimeFlowEndMs": base + i * 100 + 50})
        })
        .collect()
}

#[test]
fn weir_server_over_clickhouse_answers_the_sum_of_two_agents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ch = LocalServer::start(&dir.path().join("clickhouse")).expect("clickhouse-server");
    // The schema, and what agents need.
    let out = std::process::Command::new(WEIR)
        .args([
            "server",
            "--clickhouse",
            &ch.url(),
            "--migrate-only",
            "--json",
        ])
        .output()
        .expect("weir server");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).expect("json");
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

    // The server over both, with the Sankey installed: its plugins read ClickHouse too.
    let (code, o, e) =
        crate::plugins::weir(&dir.path().join("server"), &["install", "bundled:sankey"]);
    assert_eq!(code, 0, "{o}{e}");
    let port = free_port();
    let log = dir.path().join("server.log");
    let child = std::process::Command::new(WEIR)
        .args(["server", "--clickhouse", &ch.url()])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("server"))
        .env("WEIR_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("weir server");
    let server = Agent::adopt(child, port, &dir.path().join("server"), log);
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
        // Listing totals.
        let q = with(&[("filter", filter), ("limit", "5")]);
        let total = |a: &Agent| a.ok("/api/v1/flows", &q)["total"].as_u64().expect("total");
        let sum: u64 = agents.iter().map(total).sum();
        assert_eq!(total(&server), sum, "{filter}: flows");
        // Top-N aggregates: totals, and every group's bytes.
        let q = with(&[
            ("filter", filter),
            ("group_by", "Proto,DstPort"),
            ("top", "100"),
        ]);
        let agg = |a: &Agent| a.ok("/api/v1/flows/aggregate", &q);
        let ours = agg(&server);
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
        for a in &agents {
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
        let q = with(&[("filter", filter), ("step", "30s"), ("metric", "bytes")]);
        let ts = |a: &Agent| a.ok("/api/v1/flows/timeseries", &q);
        let points = |v: &Value| -> Vec<u64> {
            v["series"][0]["points"]
                .as_array()
                .map(|p| p.iter().map(|x| x[1].as_u64().unwrap_or(0)).collect())
                .unwrap_or_default()
        };
        let theirs: Vec<Vec<u64>> = agents.iter().map(|a| points(&ts(a))).collect();
        let ours = points(&ts(&server));
        let summed: Vec<u64> = (0..ours.len())
            .map(|i| theirs.iter().map(|p| p.get(i).copied().unwrap_or(0)).sum())
            .collect();
        assert_eq!(ours, summed, "{filter}: time series");
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
    let links = |a: &Agent| -> std::collections::BTreeMap<(String, String), u64> {
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
    let mut want: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for a in &agents {
        for (k, v) in links(a) {
            *want.entry(k).or_default() += v;
        }
    }
    let got = links(&server);
    assert!(!got.is_empty());
    assert_eq!(got, want, "the cluster's Sankey");
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
    // Imports are refused: the cluster's flows come from its agents.
    let (s, v) = server.post("/api/v1/flows", "[]");
    assert_eq!(s, 503, "{v}");
}
