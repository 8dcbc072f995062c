//! Policy benchmark: the truth table of 1,000 pods in 50 namespaces with 300 policies and 3
//! ports, from the bundled `policy-engine` in the real sandbox, against a naive pod-by-pod
//! evaluation (every selector evaluated for every cell) in the same run; then the what-if
//! replay of stored flows (default 1 M, `WEIR_BENCH_WHATIF_FLOWS`) against a proposed set.
//! Prints markdown tables; see docs/PERFORMANCE.md. Needs the plugins built
//! (`cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`). Run:
//! `cargo bench -p weir-host --bench policy`.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Instant;
use weir_core::Flow;
use weir_core::policy::table::simulate;
use weir_core::policy::{Objects, PortProto, whatif};
use weir_core::query::TimeRange;
use weir_core::store::{Store, StoreConfig};
use weir_host::Runtime;
use weir_host::policy::SandboxPolicyEngine;

const NS: usize = 50;
const PODS_PER_NS: usize = 20;
const POLICIES: usize = 300;
const APPS: [&str; 5] = ["web", "api", "db", "cache", "queue"];

fn pod_ip(n: usize, p: usize) -> String {
    format!("10.{}.{}.{}", 100 + n / 250, n % 250, 10 + p)
}

/// 50 namespaces (team t0..t4, env prod/dev), 20 pods each (app of 5, tier, a named port).
fn cluster() -> Vec<Value> {
    let mut o = vec![];
    for n in 0..NS {
        o.push(json!({"kind": "Namespace", "metadata": {"name": format!("ns{n}"),
            "labels": {"team": format!("t{}", n % 5), "env": if n % 2 == 0 { "prod" } else { "dev" }}}}));
        for p in 0..PODS_PER_NS {
            o.push(json!({"kind": "Pod", "metadata": {"name": format!("p{p}"), "namespace": format!("ns{n}"),
                "labels": {"app": APPS[p % 5], "tier": if p < 10 { "front" } else { "back" }, "idx": p.to_string()}},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}, {"name": "tls", "containerPort": 443}]}]},
                "status": {"podIP": pod_ip(n, p)}}));
        }
    }
    o
}

/// 300 policies, 6 per namespace, every shape: same-namespace pods, namespace selectors with
/// expressions, both in one peer, ipBlocks with except, named ports, endPort ranges, egress.
fn policies() -> Vec<Value> {
    let mut o = vec![];
    for i in 0..POLICIES {
        let n = i % NS;
        let app = APPS[i % 5];
        let spec = match i % 6 {
            0 => json!({"podSelector": {"matchLabels": {"app": app}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "front"}}}], "ports": [{"port": "http"}]}]}),
            1 => {
                json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [app, "db"]}]},
                "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["t1"]}]}}],
                    "ports": [{"port": 400, "endPort": 500}]}]})
            }
            2 => json!({"podSelector": {"matchLabels": {"tier": "back"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}, "podSelector": {"matchLabels": {"app": "api"}}}]}]}),
            3 => json!({"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.100.0.0/16", "except": [format!("10.100.{n}.0/24")]}}]},
                           {"ports": [{"protocol": "UDP", "port": 53}]}]}),
            4 => {
                json!({"podSelector": {"matchExpressions": [{"key": "idx", "operator": "Exists"}, {"key": "canary", "operator": "DoesNotExist"}]},
                "ingress": [{"from": [{"podSelector": {}}]}, {"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 5)}}}], "ports": [{"port": 443}]}]})
            }
            _ => {
                json!({"podSelector": {"matchLabels": {"app": "queue"}}, "ingress": [], "egress": [], "policyTypes": ["Ingress", "Egress"]})
            }
        };
        o.push(json!({"kind": "NetworkPolicy", "metadata": {"name": format!("pol{i}"), "namespace": format!("ns{n}")}, "spec": spec}));
    }
    o
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn objects(items: Vec<Value>) -> Objects {
    let n = items.len();
    Objects {
        items,
        sources: (0..n)
            .map(|_| weir_core::policy::Source {
                file: "bench".into(),
                line: 0,
                item: None,
            })
            .collect(),
        problems: vec![],
    }
}

fn main() {
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let wasm = std::fs::read(plugins.join("target/wasm32-wasip2/release/policy_engine.wasm"))
        .expect("build the plugins first (see the module docs)");
    let manifest =
        std::fs::read_to_string(plugins.join("policy-engine/plugin.toml")).expect("manifest");
    // The naive baseline needs more than the default 10 s ceiling per call.
    let rt = Runtime::new(None).expect("runtime");
    let policy = weir_host::SandboxPolicy {
        max_timeout_ms: 600_000,
        ..rt.policy()
    };
    let rt = rt.with_policy(policy);
    let manifest = manifest.replace("timeout_ms = 60000", "timeout_ms = 600000");
    let engine = SandboxPolicyEngine::load(&rt, &wasm, &manifest).expect("engine");
    let mut all = cluster();
    all.extend(policies());
    let objs = objects(all);
    let ports: Vec<PortProto> = ["80/TCP", "443/TCP", "53/UDP"]
        .iter()
        .map(|p| p.parse().expect("port"))
        .collect();

    let mut table = None;
    let fast = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let (tb, problems) = simulate(&engine, &objs, &ports, false).expect("table");
                let s = t.elapsed().as_secs_f64();
                assert!(problems.problems.is_empty(), "{problems:?}");
                table = Some(tb);
                s
            })
            .collect(),
    );
    let t = Instant::now();
    let (naive_table, _) = simulate(&engine, &objs, &ports, true).expect("naive table");
    let naive = t.elapsed().as_secs_f64();
    let table = table.expect("a table");
    assert_eq!(table, naive_table, "the index changes no cell");
    let cells = table.pods.len() * table.pods.len() * ports.len();
    let blocked: usize = table
        .grids
        .iter()
        .flat_map(|g| g.rows.iter().flatten())
        .filter(|c| **c == 'X')
        .count();

    println!(
        "## Truth table: {} pods, {NS} namespaces, {POLICIES} policies, {} ports ({cells} cells, {blocked} blocked)\n",
        table.pods.len(),
        ports.len()
    );
    println!("| evaluation | time | cells/s | / naive | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| naive: every selector per cell (baseline) | {naive:.2} s | {:.0} | 1.00 | |",
        cells as f64 / naive
    );
    println!(
        "| weir: selections indexed per pod and rule | {fast:.2} s | {:.0} | {:.2} | <= 2 s: {} |",
        cells as f64 / fast,
        fast / naive,
        if fast <= 2.0 { "met" } else { "**not met**" }
    );

    // What-if over stored flows.
    let n: usize = std::env::var("WEIR_BENCH_WHATIF_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("store");
    let now = weir_core::query::now_ms();
    let t = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let (sn, sp) = (i % NS, (i / NS) % PODS_PER_NS);
        let (dn, dp) = ((i / 7) % NS, (i / 13) % PODS_PER_NS);
        let mut f = Flow {
            src_addr: pod_ip(sn, sp).parse().expect("ip"),
            dst_addr: pod_ip(dn, dp).parse().expect("ip"),
            src_port: 32768 + (i % 20_000) as u16,
            dst_port: [80, 443, 53][i % 3],
            proto: if i % 3 == 2 { 17 } else { 6 },
            flags: if i % 3 == 2 { 0 } else { 0x1012 },
            bytes: 1000,
            packets: 2,
            time_flow_start_ms: now - 3_000_000 + (i as u64 % 3_000_000),
            time_flow_end_ms: now - 3_000_000 + (i as u64 % 3_000_000) + 5,
            ..Flow::default()
        };
        f.src_k8s_namespace = format!("ns{sn}");
        f.src_k8s_name = format!("p{sp}");
        f.src_k8s_labels = format!(
            "app={},idx={sp},tier={}",
            APPS[sp % 5],
            if sp < 10 { "front" } else { "back" }
        );
        f.src_k8s_namespace_labels = format!(
            "env={},kubernetes.io/metadata.name=ns{sn},team=t{}",
            if sn % 2 == 0 { "prod" } else { "dev" },
            sn % 5
        );
        f.dst_k8s_namespace = format!("ns{dn}");
        f.dst_k8s_name = format!("p{dp}");
        f.dst_k8s_labels = format!(
            "app={},idx={dp},tier={}",
            APPS[dp % 5],
            if dp < 10 { "front" } else { "back" }
        );
        f.dst_k8s_namespace_labels = format!(
            "env={},kubernetes.io/metadata.name=ns{dn},team=t{}",
            if dn % 2 == 0 { "prod" } else { "dev" },
            dn % 5
        );
        batch.push(f);
        if batch.len() == 10_000 {
            store.append(&batch).expect("append");
            batch.clear();
        }
    }
    store.append(&batch).expect("append");
    store.flush().expect("flush");
    let load = t.elapsed().as_secs_f64();
    let range = TimeRange::parse(Some("-2h"), None, weir_core::query::now_ms()).expect("range");
    let filter = weir_core::query::parse("").expect("filter");
    // Proposed: every policy plus an AdminNetworkPolicy that closes ns0 to other namespaces
    // (adding a NetworkPolicy can only allow more; an admin Deny cuts).
    let mut proposed_items = cluster();
    proposed_items.extend(policies());
    proposed_items.push(json!({"kind": "AdminNetworkPolicy", "metadata": {"name": "ns0-closed"},
        "spec": {"priority": 1, "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "ns0"}}},
            "ingress": [{"name": "others", "action": "Deny", "from": [{"namespaces": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["ns0"]}]}}]}]}}));
    let proposed = objects(proposed_items);
    // Baseline, same store: a group per connection (every field the fold reads), folded into
    // conversations afterwards, as the what-if read them before.
    let t = Instant::now();
    let keys: Vec<_> = ["SrcAddr", "DstAddr", "SrcPort", "DstPort", "Proto", "Flags"]
        .iter()
        .map(|n| weir_core::schema::field(n).expect("field"))
        .collect();
    let groups = store
        .aggregate(&filter, &range, &keys, None)
        .expect("aggregate");
    let connections = groups.len();
    let mut folded = std::collections::HashMap::new();
    for ((k, _), t) in groups {
        let key = if k[3] <= k[2] {
            (k[0].clone(), k[1].clone(), k[3].clone(), k[4].clone())
        } else {
            (k[1].clone(), k[0].clone(), k[2].clone(), k[4].clone())
        };
        let e: &mut (u64, u64) = folded.entry(key).or_default();
        e.0 += t.flows;
        e.1 += t.bytes;
    }
    let base = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let obs = whatif::observe(&store, &filter, &range).expect("observe");
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report =
        whatif::run(&engine, &store, &filter, &range, &proposed, Some(&objs)).expect("whatif");
    let total = t.elapsed().as_secs_f64();
    println!(
        "\n## What-if over {n} stored flows ({} conversations; loaded in {load:.1} s)\n",
        obs.conversations.len()
    );
    println!("| step | time | flows/s | target |");
    println!("|---|---|---|---|");
    println!(
        "| baseline: a group per connection ({connections}), folded afterwards ({} conversations) | {base:.2} s | {:.0} | |",
        folded.len(),
        n as f64 / base
    );
    println!(
        "| read: flows folded into conversations while scanning, identities of each side | {read:.2} s | {:.0} | {:.2} of the baseline |",
        n as f64 / read,
        read / base
    );
    println!(
        "| whole what-if (read, judge under both sets, compare, last seen) | {total:.2} s | {:.0} | 10 M in <= 10 s: {} |",
        n as f64 / total,
        match (n >= 10_000_000, total * 10_000_000.0 / n as f64 <= 10.0) {
            (true, true) => "met",
            (true, false) => "**not met**",
            (false, true) => "on course (run with WEIR_BENCH_WHATIF_FLOWS=10000000)",
            (false, false) => "**not on course**",
        }
    );
    println!(
        "\n{} workload pairs cut, {} newly allowed",
        report.cut_groups, report.newly_allowed_groups
    );
    assert!(report.cut_groups > 0, "closing ns0 cuts something");
}
