//! Edge summaries: the bundled `edge-summary` (Apache DataSketches in the sandbox) against
//! the exact answers of the store over the same flows, read back by Apache DataSketches for
//! Python (the real library, /opt/weir-sketches), merged across agents, and refusing bad
//! snapshots.

use crate::util::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use weir_core::Flow;

const PY: &str = "/opt/weir-sketches/bin/python";

/// A deterministic mix: Zipf-like talkers over 3000 sources, web and DNS
/// ports, RTTs and DNS latencies, two workloads, two interfaces.
fn mix(seed: u64, n: usize) -> Vec<Flow> {
    let mut x = seed;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    let now = now_ms();
    (0..n)
        .map(|i| {
            let mut f = Flow::empty();
            let r = next();
            // Zipf-like sources over 3000: source s sends about 1/(s+1) of the heaviest's.
            let u = (r % 1_000_000) as f64 / 1_000_000.0;
            let src = ((u * 3001f64.ln()).exp() as u64)
                .saturating_sub(1)
                .min(2999);
            f.src_addr = format!("10.{}.{}.{}", 1 + src / 65536, (src / 256) % 256, src % 256)
                .parse()
                .expect("address");
            f.dst_addr = format!("192.0.2.{}", next() % 200)
                .parse()
                .expect("address");
            f.proto = if next() % 5 == 0 { 17 } else { 6 };
            f.dst_port = [443, 80, 53, 8080, 5432][(next() % 5) as usize];
            f.src_port = 30000 + (next() % 30000) as u16;
            f.bytes = 100 + next() % 20_000;
            f.packets = 1 + f.bytes / 1200;
            f.time_flow_end_ms = now - (i as u64 % 1000);
            f.time_flow_start_ms = f.time_flow_end_ms - next() % 10_000;
            f.time_flow_rtt_ns = if f.proto == 6 {
                (200 + next() % 50_000) * 1000
            } else {
                0
            };
            if f.dst_port == 53 {
                f.dns_name = format!("svc{}.example.com", next() % 40);
                f.dns_latency_us = 100 + next() % 20_000;
            }
            f.interface = if i % 3 == 0 { "eth0" } else { "eth1" }.into();
            if src.is_multiple_of(2) {
                f.src_k8s_namespace = "shop".into();
                f.src_k8s_owner_name = if src < 20 { "frontend" } else { "cart" }.into();
            }
            f
        })
        .collect()
}

fn summary_agent(dir: &std::path::Path) -> Agent {
    let a = Agent::start(dir, &["--no-capture"]);
    let (s, v) = a.post("/api/v1/plugins?source=bundled:edge-summary", "");
    assert_eq!(s, 200, "{v}");
    a
}

fn import(a: &Agent, flows: &[Flow]) {
    for chunk in flows.chunks(5000) {
        let (s, v) = a.post(
            "/api/v1/flows",
            &serde_json::to_string(chunk).expect("json"),
        );
        assert_eq!(s, 200, "{v}");
    }
}

pub(crate) fn query(a: &Agent, q: &str) -> Value {
    let (s, v) = a.post(
        "/api/v1/plugins/edge-summary/run",
        &serde_json::json!({ "query": q }).to_string(),
    );
    assert_eq!(s, 200, "{q}: {v}");
    v["result"]["view"].clone()
}

pub(crate) fn rows(view: &Value) -> Vec<Vec<String>> {
    view["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r.as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect()
}

/// The overview's value for `measure`.
pub(crate) fn measure(a: &Agent, m: &str) -> f64 {
    rows(&query(a, "overview"))
        .into_iter()
        .find(|r| r[0] == m)
        .and_then(|r| r[1].parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the summarizer has folded in `n` flows.
fn wait_flows(a: &Agent, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = measure(a, "flows") as usize;
        if seen == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "summarizer saw {seen} of {n} flows\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (item, estimate, lower, upper) rows of a `top` query.
fn top(a: &Agent, q: &str) -> Vec<(String, u64, u64, u64)> {
    rows(&query(a, q))
        .into_iter()
        .map(|r| {
            let n = |i: usize| r[i].parse::<u64>().expect("count");
            (r[1].clone(), n(2), n(3), n(4))
        })
        .collect()
}

fn python_read(file: &std::path::Path) -> Value {
    require(&[PY]);
    let out = std::process::Command::new(PY)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/py/read_sketches.py"
        ))
        .arg(file)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from python")
}

/// The quantile of rank `q` of `v` (sorted): the smallest item whose inclusive rank is >= q.
fn exact_quantile(v: &[f64], q: f64) -> f64 {
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Normalized rank of `x` in `v` (sorted): fraction of items <= x.
fn rank(v: &[f64], x: f64) -> f64 {
    v.partition_point(|y| *y <= x) as f64 / v.len() as f64
}

#[test]
fn sketches_agree_with_the_store_and_with_apache_datasketches_python() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = summary_agent(dir.path());
    let flows = mix(7, 40_000);
    import(&a, &flows);
    wait_flows(&a, flows.len());
    // And the store has every flow (imports become visible at the next flush).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g = a.ok(
            "/api/v1/flows/aggregate",
            &[("group_by", "SrcAddr"), ("top", "1"), ("from", "-1h")],
        );
        if g["total"]["flows"].as_u64() == Some(flows.len() as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "store: {}", g["total"]);
        std::thread::sleep(Duration::from_millis(200));
    }

    // Top-N against the store: recall of the top 10 and every exact count inside the bounds.
    for (metric, field) in [
        ("bytes", "bytes"),
        ("packets", "packets"),
        ("flows", "flows"),
    ] {
        let exact = a.ok(
            "/api/v1/flows/aggregate",
            &[
                ("group_by", "SrcAddr"),
                ("metric", metric),
                ("top", "10"),
                ("from", "-1h"),
            ],
        );
        let exact: Vec<(String, u64)> = exact["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| {
                (
                    g["key"]["SrcAddr"].as_str().unwrap_or("").to_string(),
                    g[field].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(exact.len(), 10, "{exact:?}");
        let est = top(&a, &format!("top talkers {metric} 10"));
        let found = exact
            .iter()
            .filter(|(k, _)| est.iter().any(|e| &e.0 == k))
            .count();
        assert!(
            found >= 9,
            "{metric}: recall {found}/10: {est:?} vs {exact:?}"
        );
        // Every exact count lies within the sketch's bounds; an item the sketch guarantees
        // (exact count above its maximum error) is never missed.
        let max_error = est.iter().map(|e| e.3 - e.2).max().unwrap_or(0);
        for (k, n) in &exact {
            match est.iter().find(|e| &e.0 == k) {
                Some(e) => assert!(
                    e.2 <= *n && *n <= e.3,
                    "{metric} {k}: exact {n} outside {e:?}"
                ),
                None => assert!(*n <= max_error + est[9].1, "{metric} {k}: {n} missed"),
            }
        }
    }
    // Cardinality: distinct sources against the store's group count, within 3 standard
    // errors of CPC at lg_k 11 (about 1.5 % each).
    let g = a.ok(
        "/api/v1/flows/aggregate",
        &[("group_by", "SrcAddr"), ("top", "1"), ("from", "-1h")],
    );
    let exact = g["group_count"].as_f64().expect("group_count");
    let est = measure(&a, "distinct sources");
    assert!(
        (est - exact).abs() / exact < 0.045,
        "distinct sources {est} vs {exact}"
    );
    // Quantiles: the rank of each estimate within 3 x the KLL k=200 rank error (1.65 %).
    let mut sizes: Vec<f64> = flows.iter().map(|f| f.bytes as f64).collect();
    sizes.sort_by(f64::total_cmp);
    let mut rtts: Vec<f64> = flows
        .iter()
        .filter(|f| f.time_flow_rtt_ns > 0)
        .map(|f| f.time_flow_rtt_ns as f64 / 1000.0)
        .collect();
    rtts.sort_by(f64::total_cmp);
    for (metric, exact) in [("flow_bytes", &sizes), ("rtt_us", &rtts)] {
        let qs = rows(&query(&a, &format!("quantiles {metric}")));
        for (row, q) in qs.iter().zip([0.5, 0.9, 0.95, 0.99]) {
            let v: f64 = row[1].parse().expect("value");
            let r = rank(exact, v);
            assert!(
                (r - q).abs() < 0.05,
                "{metric} {}: {v} has rank {r} (exact quantile {})",
                row[0],
                exact_quantile(exact, q)
            );
        }
        assert_eq!(qs[0][2], exact.len().to_string(), "{metric} n");
    }
    // Per-group quantiles exist for both interfaces and the two workloads.
    let groups = rows(&query(&a, "groups"));
    for g in ["if=eth0", "if=eth1", "wl=shop/frontend", "wl=shop/cart"] {
        assert!(groups.iter().any(|r| r[0] == g), "{g}: {groups:?}");
    }
    let dns = top(&a, "top dns flows 40");
    assert_eq!(dns.len(), 40, "{dns:?}");

    // The snapshot, as the CLI saves it, read by Apache DataSketches for Python: the same
    // top items and counts, the same cardinalities, the same quantiles as weir's answer.
    let file = dir.path().join("node.wsk");
    let (code, out, err) = a.cli(&[
        "summary",
        "edge-summary",
        "--save",
        file.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let py = python_read(&file);
    // weir's own answers over exactly those bytes: another agent that merged the file (the
    // agent's windows were merged into the file, and a KLL merge is randomized, so the same
    // bytes are compared, not two merges).
    let reader = summary_agent(&dir.path().join("reader"));
    let (code, out, err) = reader.cli(&[
        "summary",
        "edge-summary",
        "--merge",
        file.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for q in [
        "talkers bytes",
        "ports flows",
        "conversations packets",
        "workloads bytes",
    ] {
        let name = format!("top/{}", q.replace(' ', "/"));
        let ours: Vec<Value> = top(&reader, &format!("top {q} 10"))
            .into_iter()
            .map(|(k, e, lo, hi)| serde_json::json!([k, e, lo, hi]))
            .collect();
        let theirs = py[&name]["top"].as_array().cloned().unwrap_or_default();
        // Same set with the same numbers (order among equal estimates may differ).
        let mut o = ours.clone();
        let mut t = theirs.clone();
        o.sort_by_key(|v| v.to_string());
        t.sort_by_key(|v| v.to_string());
        assert_eq!(o, t, "{name}: ours {ours:?} python {theirs:?}");
    }
    let distinct = rows(&query(&reader, "distinct"));
    for r in &distinct {
        let theirs = py[&format!("distinct/{}", r[0])]["estimate"]
            .as_f64()
            .expect("python estimate");
        let ours: f64 = r[1].parse().expect("estimate");
        assert!((theirs - ours).abs() <= 0.5, "{}: {ours} vs {theirs}", r[0]);
    }
    for metric in ["flow_bytes", "rtt_us", "dns_latency_us", "duration_ms"] {
        let ours = rows(&query(&reader, &format!("quantiles {metric}")));
        let theirs = py[&format!("quantile/{metric}")]["quantiles"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(theirs.len(), 5, "{metric}: {py}");
        for (r, t) in ours.iter().zip(&theirs) {
            let o: f64 = r[1].parse().expect("value");
            let t = t.as_f64().expect("python value");
            assert!(
                (o - t).abs() <= 0.006 * t.abs().max(1.0),
                "{metric} {}: {o} vs {t}: ours {ours:?}, python {theirs:?}, reader windows {}",
                r[0],
                reader
                    .post(
                        "/api/v1/plugins/edge-summary/run",
                        &serde_json::json!({"query": "sketches"}).to_string()
                    )
                    .1
            );
        }
    }
    // The Summary page shows the same answers (ui/web/test/summary.mjs).
    browser_test("summary.mjs", &a.url(""), &[]);
    // The CLI prints the same table.
    let (code, out, err) = a.cli(&["summary", "edge-summary", "top", "talkers", "bytes", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Rank  talkers"), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[test]
fn two_agents_merged_equal_one_that_saw_both_and_bad_snapshots_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = mix(11, 20_000);
    let (left, right) = flows.split_at(9_000);
    let a = summary_agent(&dir.path().join("a"));
    let b = summary_agent(&dir.path().join("b"));
    let both = summary_agent(&dir.path().join("both"));
    let central = summary_agent(&dir.path().join("central"));
    import(&a, left);
    import(&b, right);
    import(&both, &flows);
    wait_flows(&a, left.len());
    wait_flows(&b, right.len());
    wait_flows(&both, flows.len());
    for (n, node) in [&a, &b].into_iter().enumerate() {
        let file = dir.path().join(format!("node{n}.wsk"));
        let path = file.to_str().expect("path");
        let (code, out, err) = node.cli(&["summary", "edge-summary", "--save", path]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = central.cli(&["summary", "edge-summary", "--merge", path]);
        assert_eq!(code, 0, "{out}{err}");
    }
    assert_eq!(measure(&central, "flows") as usize, flows.len());
    // Totals and top items: the same numbers (frequent items merge exactly while the
    // bounds hold; each estimate brackets the other's count).
    for q in ["talkers bytes", "ports packets", "dns flows"] {
        let merged = top(&central, &format!("top {q} 10"));
        let one = top(&both, &format!("top {q} 10"));
        let keys = |v: &[(String, u64, u64, u64)]| {
            let mut k: Vec<String> = v.iter().map(|e| e.0.clone()).collect();
            k.sort();
            k
        };
        // Items the sketches guarantee (lower bound above the other's maximum error) are in
        // both; the tail below the error may differ.
        let sure = |v: &[(String, u64, u64, u64)], other: &[(String, u64, u64, u64)]| {
            let err = other.iter().map(|e| e.3 - e.2).max().unwrap_or(0);
            let floor = other.last().map(|e| e.1).unwrap_or(0);
            v.iter()
                .filter(|e| e.2 > floor + err)
                .map(|e| e.0.clone())
                .collect::<Vec<_>>()
        };
        for k in sure(&merged, &one) {
            assert!(keys(&one).contains(&k), "{q} {k}: {merged:?} vs {one:?}");
        }
        for k in sure(&one, &merged) {
            assert!(keys(&merged).contains(&k), "{q} {k}: {merged:?} vs {one:?}");
        }
        assert!(sure(&one, &merged).len() >= 5, "{q}: {one:?}");
        for m in &merged {
            if let Some(o) = one.iter().find(|e| e.0 == m.0) {
                assert!(m.2 <= o.3 && o.2 <= m.3, "{q} {}: {m:?} vs {o:?}", m.0);
            }
        }
    }
    for m in ["bytes", "packets"] {
        assert_eq!(measure(&central, m), measure(&both, m), "{m}");
    }
    // Cardinalities: a CPC union estimates what one sketch of both would (within 2 %).
    let merged: BTreeMap<String, f64> = rows(&query(&central, "distinct"))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap_or(0.0)))
        .collect();
    let one: HashMap<String, f64> = rows(&query(&both, "distinct"))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap_or(0.0)))
        .collect();
    for (k, v) in &merged {
        let o = one[k];
        assert!(
            (v - o).abs() / o < 0.02,
            "distinct {k}: merged {v} vs one {o}"
        );
    }
    // Quantiles: same n, ranks within the KLL error.
    let merged = rows(&query(&central, "quantiles flow_bytes"));
    let one = rows(&query(&both, "quantiles flow_bytes"));
    let mut sizes: Vec<f64> = flows.iter().map(|f| f.bytes as f64).collect();
    sizes.sort_by(f64::total_cmp);
    for (m, o) in merged.iter().zip(&one) {
        assert_eq!(m[2], o[2], "n");
        let (rm, ro) = (
            rank(&sizes, m[1].parse().expect("v")),
            rank(&sizes, o[1].parse().expect("v")),
        );
        assert!((rm - ro).abs() < 0.05, "{}: {rm} vs {ro}", m[0]);
    }

    // Bad snapshots: refused with the reason and the place; nothing merged.
    let before = measure(&central, "flows");
    let good = std::fs::read(dir.path().join("node0.wsk")).expect("snapshot");
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let mut corrupt = good.clone();
    let at = good.len() - 40;
    corrupt[at..].iter_mut().for_each(|b| *b ^= 0x5a);
    for (body, want) in [
        (b"198.18.0.1 30\n".to_vec(), "not an edge-summary snapshot"),
        (truncated, "byte "),
        (corrupt, "sketch "),
    ] {
        let (s, _, v) = Agent::post_bytes(
            &central.url("/api/v1/plugins/edge-summary/merge"),
            "application/octet-stream",
            None,
            &body,
        );
        let v: Value = serde_json::from_slice(&v).expect("json error");
        assert_eq!(s, 400, "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or("").to_string();
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert_eq!(measure(&central, "flows"), before);
    // And through the CLI: exit 2 with the message.
    let foreign = dir.path().join("foreign.bin");
    std::fs::write(&foreign, b"not a sketch").expect("write");
    let (code, out, err) = central.cli(&[
        "summary",
        "edge-summary",
        "--merge",
        foreign.to_str().expect("path"),
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("not an edge-summary snapshot"), "{err}");
}
