//! The bundled visualization plugins (sankey, chord, topology) in a real agent: their numbers
//! equal the aggregate API's for the same filter and window.

use crate::plugins::weir;
use crate::util::{Agent, now_ms};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn flow(src: &str, dst: &str, dport: u16, bytes: u64, end_ms: u64) -> weir_core::Flow {
    let mut f = weir_core::Flow::empty();
    f.src_addr = src.parse().expect("ip");
    f.dst_addr = dst.parse().expect("ip");
    f.dst_port = dport;
    f.src_port = 40000;
    f.proto = 6;
    f.bytes = bytes;
    f.packets = bytes / 100 + 1;
    f.time_flow_start_ms = end_ms - 500;
    f.time_flow_end_ms = end_ms;
    f
}

fn render(a: &Agent, name: &str, body: Value) -> Value {
    let (s, v) = a.post(&format!("/api/v1/plugins/{name}/run"), &body.to_string());
    assert_eq!(s, 200, "{name}: {v}");
    v["result"]["view"].clone()
}

#[test]
fn bundled_visualizations_match_the_aggregate_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for name in ["sankey", "chord", "topology"] {
        let (code, out, err) = weir(&data, &["install", &format!("bundled:{name}")]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!("{name} 0.1.0 (visualization) installed")),
            "{out}"
        );
    }
    let a = Agent::start(dir.path(), &["--no-capture"]);
    let now = now_ms();
    let flows = vec![
        flow("198.18.0.1", "198.18.0.10", 443, 5000, now - 4000),
        flow("198.18.0.1", "198.18.0.10", 443, 3000, now - 3500),
        flow("198.18.0.1", "198.18.0.11", 53, 200, now - 3000),
        flow("198.18.0.2", "198.18.0.10", 80, 7000, now - 2500),
        flow("198.18.0.10", "198.18.0.1", 40000, 9000, now - 2000),
        flow("198.18.0.3", "198.18.0.11", 53, 150, now - 1500),
    ];
    let (s, v) = a.post(
        "/api/v1/flows",
        &serde_json::to_string(&flows).expect("json"),
    );
    assert_eq!(s, 200, "{v}");
    let (from, to) = (now - 60_000, now);
    let window = |params: Value| json!({"from_ms": from, "to_ms": to, "params": params});
    let aggregate = |group_by: &str| {
        a.ok(
            "/api/v1/flows/aggregate",
            &[
                ("group_by", group_by),
                ("metric", "bytes"),
                ("top", "1000"),
                ("from", &from.to_string()),
                ("to", &to.to_string()),
            ],
        )
    };
    let total = aggregate("SrcAddr")["total"]["bytes"]
        .as_u64()
        .expect("total");
    assert_eq!(total, 24_350);

    // Sankey: three columns; every column carries the total; each source node's outgoing
    // links equal that source's aggregate.
    let v = render(
        &a,
        "sankey",
        window(json!({"group_by": "SrcAddr,DstPort,DstAddr"})),
    );
    assert_eq!(v["type"], "sankey", "{v}");
    assert_eq!(v["unit"], "bytes");
    let nodes = v["nodes"].as_array().expect("nodes");
    let links = v["links"].as_array().expect("links");
    let column: BTreeMap<String, u64> = nodes
        .iter()
        .map(|n| {
            (
                n["id"].as_str().expect("id").to_string(),
                n["column"].as_u64().expect("col"),
            )
        })
        .collect();
    let out_of = |col: u64| -> f64 {
        links
            .iter()
            .filter(|l| column[l["source"].as_str().expect("s")] == col)
            .map(|l| l["value"].as_f64().expect("v"))
            .sum()
    };
    assert_eq!(out_of(0), total as f64);
    assert_eq!(out_of(1), total as f64);
    for g in aggregate("SrcAddr")["groups"].as_array().expect("groups") {
        let id = format!("0:{}", g["key"]["SrcAddr"].as_str().expect("addr"));
        let sent: f64 = links
            .iter()
            .filter(|l| l["source"] == id.as_str())
            .map(|l| l["value"].as_f64().expect("v"))
            .sum();
        assert_eq!(sent, g["bytes"].as_f64().expect("bytes"), "{id}");
    }
    // Two-way traffic stays acyclic: 198.18.0.1 is a source node and a destination node.
    assert!(column.contains_key("0:198.18.0.1") && column.contains_key("2:198.18.0.1"));
    // The top group only: the rest is an `other` node per column carrying what is left, so
    // each column still sums to the total; others=false leaves it out.
    let v = render(
        &a,
        "sankey",
        window(json!({"group_by": "SrcAddr,DstPort,DstAddr", "top": "1"})),
    );
    let links = v["links"].as_array().expect("links");
    let other: Vec<&Value> = links.iter().filter(|l| l["source"] == "0:*").collect();
    assert_eq!(other.len(), 1, "{v}");
    assert_eq!(other[0]["target"], "1:*");
    let first: f64 = links
        .iter()
        .filter(|l| l["source"].as_str().is_some_and(|s| s.starts_with("0:")))
        .map(|l| l["value"].as_f64().expect("v"))
        .sum();
    assert_eq!(first, total as f64, "{v}");
    let v = render(
        &a,
        "sankey",
        window(json!({"group_by": "SrcAddr,DstPort,DstAddr", "top": "1", "others": "false"})),
    );
    assert!(
        !v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| n["id"] == "0:*"),
        "{v}"
    );

    // Chord: the matrix holds every pair; in and out are told apart.
    let v = render(&a, "chord", window(json!({})));
    assert_eq!(v["type"], "chord", "{v}");
    let labels: Vec<&str> = v["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let m = &v["matrix"];
    let sum: f64 = m
        .as_array()
        .expect("matrix")
        .iter()
        .flat_map(|r| r.as_array().expect("row"))
        .filter_map(Value::as_f64)
        .sum();
    assert_eq!(sum, total as f64);
    let i = |addr: &str| labels.iter().position(|l| *l == addr).expect(addr);
    assert_eq!(m[i("198.18.0.1")][i("198.18.0.10")], 8000.0);
    assert_eq!(m[i("198.18.0.10")][i("198.18.0.1")], 9000.0);

    // Topology: an edge per pair, nodes weighted by all their traffic.
    let v = render(&a, "topology", window(json!({"metric": "bytes"})));
    assert_eq!(v["type"], "graph", "{v}");
    let pairs = aggregate("SrcAddr,DstAddr")["group_count"]
        .as_u64()
        .expect("count");
    assert_eq!(v["edges"].as_array().map(Vec::len), Some(pairs as usize));
    let node = v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == "198.18.0.10")
        .cloned()
        .expect("node");
    assert_eq!(node["weight"], 5000.0 + 3000.0 + 7000.0 + 9000.0);
    assert_eq!(node["attributes"]["bytes"], "24000");

    // The filter applies; bad parameters and filters are named.
    let v = render(
        &a,
        "sankey",
        json!({"from_ms": from, "to_ms": to, "filter": "DstPort=53"}),
    );
    let dns: f64 = v["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| l["value"].as_f64().expect("v"))
        .sum();
    assert_eq!(dns, 350.0);
    for (name, body, want) in [
        (
            "sankey",
            window(json!({"metric": "furlongs"})),
            "metric 'furlongs'",
        ),
        (
            "sankey",
            window(json!({"group_by": "SrcAddr"})),
            "at least two fields",
        ),
        ("chord", window(json!({"top": "0"})), "top '0'"),
        ("topology", json!({"filter": "Bytez=1"}), "Bytez"),
    ] {
        let (s, v) = a.post(&format!("/api/v1/plugins/{name}/run"), &body.to_string());
        assert_eq!(s, 400, "{name}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(want),
            "{name}: {v}"
        );
    }
}
