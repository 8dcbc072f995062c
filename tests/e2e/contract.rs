//! Plugin contract 0.1.2 against a real agent: annotations a flow-processor returns are kept
//! in the records store, listed by `/api/v1/records` and `weir records`, and survive kill -9.

use crate::sandbox::{install, plugin, with_plugin};
use crate::util::{Agent, KubeApi, Pair, now_ms, sh};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[test]
fn annotations_become_records_listed_by_api_and_cli_and_survive_kill_9() {
    let (_dir, root) = with_plugin("contract_probe", "contract-probe", "mode=annotate");
    let mut a = Agent::start(&root, &["--no-capture"]);
    let now = now_ms();
    for i in 0..3u64 {
        let flow = json!([{"SrcAddr": "198.18.0.1", "DstAddr": "198.18.0.2", "Proto": 6, "Bytes": 1,
                           "DstPort": 1000 + i, "Packets": 1, "TimeFlowStartMs": now - 3000 + i,
                           "TimeFlowEndMs": now - 2000 + i}]);
        let (s, v) = a.post("/api/v1/flows", &flow.to_string());
        assert_eq!(s, 200, "{v}");
    }
    let q = [("kind", "annotation"), ("from", "-1h")];
    let deadline = Instant::now() + Duration::from_secs(15);
    let records = loop {
        let v = a.ok("/api/v1/records", &q);
        let r = v["records"].as_array().cloned().unwrap_or_default();
        if r.len() >= 3 {
            break r;
        }
        assert!(Instant::now() < deadline, "annotations not kept: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(records.len(), 3, "{records:?}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["source"], "contract-probe", "{r}");
        assert_eq!(r["text"], "probe", "{r}");
        assert_eq!(
            r["time_ms"],
            now - 2000 + i as u64,
            "at the batch's newest flow: {r}"
        );
        assert_eq!(r["labels"], json!([["flows", "1"]]), "{r}");
    }
    // Paging by sequence: after the first, the other two.
    let first = records[0]["seq"].as_u64().expect("seq").to_string();
    let v = a.ok("/api/v1/records", &[("from", "-1h"), ("after", &first)]);
    assert_eq!(v["records"].as_array().map(Vec::len), Some(2), "{v}");
    // Bad asks: 400 naming the parameter.
    for (param, value) in [
        ("kind", "Bad Kind"),
        ("label", "novalue"),
        ("after", "x"),
        ("limit", "20000"),
    ] {
        let (s, v) = a.get("/api/v1/records", &[(param, value)]);
        assert_eq!(s, 400, "{param}={value}: {v}");
        assert_eq!(v["error"]["parameter"], param, "{v}");
    }
    // The CLI, as a script would use it, and as a table.
    let cli = |args: &[&str]| {
        let (code, out, err) = a.cli(&[&["records"], args].concat());
        assert_eq!(code, 0, "{err}");
        out
    };
    let v: serde_json::Value =
        serde_json::from_str(&cli(&["--kind", "annotation", "--json"])).expect("json");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(3), "{v}");
    let table = cli(&["--source", "contract-probe", "--limit", "2"]);
    assert_eq!(table.matches(" annotation ").count(), 2, "{table}");
    assert!(table.contains("more: weir records --after"), "{table}");
    // Written before the call returned: kill -9 at once loses none.
    a.kill9();
    a.spawn();
    let v = a.ok("/api/v1/records", &q);
    assert_eq!(
        v["records"],
        json!(records),
        "records after kill -9 and restart"
    );
}

/// The rows of a summarizer's table view, through the run API.
fn summary_rows(a: &Agent, name: &str) -> Value {
    let (s, v) = a.post(&format!("/api/v1/plugins/{name}/run"), r#"{"query": ""}"#);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["view"]["type"], "table", "{v}");
    v["result"]["view"]["rows"].clone()
}

/// Imports `flows` (SrcAddr, Bytes) ending a second ago.
fn import(a: &Agent, flows: &[(String, u64)]) {
    let now = now_ms();
    let body: Vec<Value> = flows
        .iter()
        .map(|(src, bytes)| {
            json!({"SrcAddr": src, "DstAddr": "198.18.0.9", "Proto": 17, "Bytes": bytes, "Packets": 1,
                   "TimeFlowStartMs": now - 2000, "TimeFlowEndMs": now - 1000})
        })
        .collect();
    for chunk in body.chunks(200) {
        let (s, v) = a.post("/api/v1/flows", &Value::from(chunk.to_vec()).to_string());
        assert_eq!(s, 200, "{v}");
    }
}

/// Waits until the summarizer has seen `bytes` in all.
fn wait_total(a: &Agent, name: &str, bytes: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = summary_rows(a, name);
        let total: u64 = rows
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                r[1].as_str()
                    .and_then(|b| b.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        if total == bytes {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{name} saw {total} of {bytes} bytes: {rows}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_agents_summaries_merged_answer_like_one_agent_and_survive_kill_9() {
    let flows = |n: usize, seed: u64| -> Vec<(String, u64)> {
        (0..n as u64)
            .map(|i| {
                let x = i.wrapping_mul(2_654_435_761).wrapping_add(seed);
                (format!("10.9.{}.{}", x % 4, (x >> 8) % 30), 100 + x % 5000)
            })
            .collect()
    };
    let (one, two) = (flows(600, 3), flows(400, 11));
    let sum = |f: &[(String, u64)]| f.iter().map(|(_, b)| b).sum::<u64>();
    let start = || {
        let (dir, root) = with_plugin("src_bytes", "src-bytes", "unused=1");
        let a = Agent::start(&root, &["--no-capture"]);
        (dir, a)
    };
    let ((_da, mut a), (_db, b), (_dc, c)) = (start(), start(), start());
    import(&a, &one);
    import(&b, &two);
    import(&c, &one);
    import(&c, &two);
    wait_total(&a, "src-bytes", sum(&one));
    wait_total(&b, "src-bytes", sum(&two));
    let whole = wait_total(&c, "src-bytes", sum(&one) + sum(&two));
    // B's state, shipped to A over HTTP.
    let snapshot = ureq::get(&b.url("/api/v1/plugins/src-bytes/snapshot"))
        .call()
        .expect("snapshot")
        .body_mut()
        .read_to_vec()
        .expect("bytes");
    assert!(!snapshot.is_empty());
    let merged = ureq::post(&a.url("/api/v1/plugins/src-bytes/merge"))
        .send(&snapshot[..])
        .expect("merge")
        .body_mut()
        .read_json::<Value>()
        .expect("json");
    assert_eq!(merged["merged"], true, "{merged}");
    assert_eq!(
        summary_rows(&a, "src-bytes"),
        whole,
        "A + B merged = C, row for row"
    );
    // Refusals: garbage (the plugin's own message, 400), not a summarizer, a bad name.
    let (s, v) = a.post("/api/v1/plugins/src-bytes/merge", "garbage");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("snapshot line 1"),
        "{v}"
    );
    let (s, v) = a.get("/api/v1/plugins/nosuch/snapshot", &[]);
    assert_eq!(s, 404, "{v}");
    let (s, v) = a.post("/api/v1/plugins?source=bundled:sankey", "");
    assert_eq!(s, 200, "{v}");
    let (s, v) = a.get("/api/v1/plugins/sankey/snapshot", &[]);
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a summarizer"),
        "{v}"
    );
    let (s, _) = a.get("/api/v1/plugins/..%2Fx/snapshot", &[]);
    assert_eq!(s, 400);
    // The agent writes plugin state every 2 s; then the hardest stop there is.
    std::thread::sleep(Duration::from_millis(2500));
    a.kill9();
    a.spawn();
    assert_eq!(
        summary_rows(&a, "src-bytes"),
        whole,
        "summary after kill -9 and restart"
    );
}

#[test]
fn grants_and_scopes_change_without_reinstalling_through_api_and_cli() {
    let (_dir, root) = with_plugin("contract_probe", "contract-probe", "mode=schema");
    let a = Agent::start(&root, &["--no-capture"]);
    let p = plugin(&a, "contract-probe");
    assert_eq!(
        p["installed"]["scopes"]["outbound-http"],
        json!(["127.0.0.1:*"]),
        "{p}"
    );
    assert!(p["loaded"].is_object(), "{p}");
    // Revoked over the API: still installed, not loaded, saying which capability it misses.
    let (s, v) = a.post(
        "/api/v1/plugins/contract-probe/grants",
        r#"{"revoke": "outbound-http"}"#,
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["scopes"].get("outbound-http").is_none(), "{v}");
    assert_eq!(
        v["scopes"]["k8s-objects"],
        json!(["NetworkPolicy", "Namespace"]),
        "the others stay: {v}"
    );
    let p = plugin(&a, "contract-probe");
    assert!(p["loaded"].is_null(), "{p}");
    assert!(
        p["load_error"]
            .as_str()
            .unwrap_or("")
            .contains("outbound-http capability is not granted"),
        "{p}"
    );
    // Granted again with the CLI, a narrower scope: loaded again (the agent syncs in 2 s).
    let (code, out, err) = crate::plugins::weir(
        &root.join("data"),
        &[
            "grant",
            "contract-probe",
            "outbound-http",
            "--scope",
            "127.0.0.1:9090",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("scopes: outbound-http: 127.0.0.1:9090"),
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = plugin(&a, "contract-probe");
        if p["loaded"].is_object() {
            assert_eq!(
                p["installed"]["scopes"]["outbound-http"],
                json!(["127.0.0.1:9090"])
            );
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded: {p}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Refusals: a bad entry, a scope on an unscoped capability, an unknown capability,
    // neither or both of grant/revoke.
    for (body, says) in [
        (r#"{"grant": "outbound-http", "scope": ["a/b"]}"#, "a/b"),
        (r#"{"grant": "kv", "scope": ["x:1"]}"#, "kv takes no scope"),
        (r#"{"grant": "teleport"}"#, "unknown capability 'teleport'"),
        (r#"{}"#, "exactly one"),
        (r#"{"grant": "kv", "revoke": "kv"}"#, "exactly one"),
    ] {
        let (s, v) = a.post("/api/v1/plugins/contract-probe/grants", body);
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(says),
            "{body}: {v}"
        );
    }
    // A plugin that is not installed is not found (404), whatever the route.
    for (path, body) in [
        ("/api/v1/plugins/nope/grants", r#"{"grant": "kv"}"#),
        ("/api/v1/plugins/nope/disable", "{}"),
    ] {
        let (s, v) = a.post(path, body);
        assert_eq!(s, 404, "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("plugin nope is not installed"),
            "{v}"
        );
    }
    let (s, v) = a.delete("/api/v1/plugins/nope");
    assert_eq!(s, 404, "{v}");
}

/// A recorded cluster: one pod in namespace `shop` (labelled), a NetworkPolicy there, an
/// Event; AdminNetworkPolicies not served (404), BaselineAdminNetworkPolicies forbidden (403).
fn recorded_cluster(dir: &std::path::Path) {
    let list = KubeApi::list;
    let files = [
        (
            "pods",
            list(
                "PodList",
                json!([{
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1", "resourceVersion": "5",
                "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "nginx"}]},
            "status": {"podIP": "198.18.70.1", "podIPs": [{"ip": "198.18.70.1"}]}}]),
            ),
        ),
        ("services", list("ServiceList", json!([]))),
        ("nodes", list("NodeList", json!([]))),
        (
            "namespaces",
            list(
                "NamespaceList",
                json!([
            {"metadata": {"name": "shop", "uid": "n1", "resourceVersion": "2",
                "labels": {"kubernetes.io/metadata.name": "shop", "team": "payments"},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}]}},
            {"metadata": {"name": "kube-system", "uid": "n2", "resourceVersion": "3",
                "labels": {"kubernetes.io/metadata.name": "kube-system"}}}]),
            ),
        ),
        (
            "networkpolicies",
            list(
                "NetworkPolicyList",
                json!([{
            "metadata": {"name": "deny-ingress", "namespace": "shop", "uid": "p1", "resourceVersion": "7"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}]),
            ),
        ),
        ("endpointslices", list("EndpointSliceList", json!([]))),
        (
            "events",
            list(
                "EventList",
                json!([{
            "metadata": {"name": "web-0.1", "namespace": "shop", "uid": "e1", "resourceVersion": "8"},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-0"},
            "reason": "Started", "message": "Started container web", "type": "Normal"}]),
            ),
        ),
    ];
    KubeApi::write_lists(dir, files);
    std::fs::write(dir.join("baselineadminnetworkpolicies.forbidden"), "").expect("write");
}

#[test]
fn kubernetes_objects_reach_plugins_by_scoped_kind_and_namespace_labels_reach_flows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api_dir = dir.path().join("api");
    std::fs::create_dir_all(&api_dir).expect("mkdir");
    recorded_cluster(&api_dir);
    let api = KubeApi::start(&api_dir);
    let root = dir.path().join("agent");
    install(
        &root.join("data"),
        &dir.path().join("src"),
        "contract_probe",
        "contract-probe",
        &[
            "mode=k8s",
            "kinds=NetworkPolicy,Namespace,Pod,Secret",
            "json_has=podSelector",
        ],
    );
    let a = Agent::start(
        &root,
        &[
            "--no-capture",
            "--kubeconfig",
            api.kubeconfig.to_str().expect("path"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = a.ok("/api/v1/status", &[]);
        let e = &st["enrichment"];
        if ["pods", "namespaces", "networkpolicies", "events"]
            .iter()
            .all(|k| e["synced"][k] == true)
            && e["unavailable"].as_object().map_or(0, |o| o.len()) == 2
        {
            break st;
        }
        assert!(Instant::now() < deadline, "not synced: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let e = &st["enrichment"];
    assert_eq!(
        e["unavailable"]["adminnetworkpolicies"], "not served by the API server",
        "{e}"
    );
    assert!(
        e["unavailable"]["baselineadminnetworkpolicies"]
            .as_str()
            .unwrap_or("")
            .contains("403"),
        "{e}"
    );
    assert_eq!(e["objects"]["NetworkPolicy"], 1, "{e}");
    assert_eq!(e["objects"]["Event"], 1, "{e}");

    // A flow from the pod: its namespace's labels are on it; the probe runs on the batch.
    let post = |port: u64| {
        let now = now_ms();
        let flow = json!([{"SrcAddr": "198.18.70.1", "DstAddr": "198.18.70.2", "Proto": 6,
            "Bytes": 1, "Packets": 1, "DstPort": port, "TimeFlowStartMs": now - 2000,
            "TimeFlowEndMs": now - 1000}]);
        let (s, v) = a.post("/api/v1/flows", &flow.to_string());
        assert_eq!(s, 200, "{v}");
    };
    post(80);
    let v = a.ok(
        "/api/v1/flows",
        &[("filter", "DstPort=80"), ("from", "-1h")],
    );
    let f = &v["flows"][0];
    assert_eq!(f["SrcK8S_Namespace"], "shop", "{v}");
    assert_eq!(
        f["SrcK8S_NamespaceLabels"], "kubernetes.io/metadata.name=shop,team=payments",
        "{f}"
    );
    assert_eq!(f["DstK8S_NamespaceLabels"], "", "{f}");
    // The policy engine reads the same live objects: the watched policy selects the live
    // pod, and a proposal replayed against the stored flow is compared with the live set.
    let (s, d) = a.post("/api/v1/policy/describe", "{}");
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["policies"][0]["name"], "deny-ingress", "{d}");
    assert_eq!(d["policies"][0]["selects"], json!(["shop/web-0"]), "{d}");
    let proposal = json!({"proposed": [{"name": "no-egress.yaml", "text":
        "kind: NetworkPolicy\nmetadata: {name: no-egress, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n---\nkind: NetworkPolicy\nmetadata: {name: metrics-in, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports:\n    - {port: metricz}\n"}],
        "from": "-1h"});
    let (s, w) = a.post("/api/v1/policy/whatif", &proposal.to_string());
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["compared_with"], "live policies", "{w}");
    // A named port no live pod declares is a warning beside the answer, not a problem.
    assert_eq!(w["problems"], json!([]), "{w}");
    assert_eq!(
        w["warnings"],
        json!([
            "no-egress.yaml:7: NetworkPolicy shop/metrics-in, field spec.ingress[0].ports[0].port: named port \"metricz\" (TCP) is declared by no pod in the input: the rule allows nothing on it until a pod declares it"
        ]),
        "{w}"
    );
    assert_eq!(w["cut"][0]["from"], "shop/web-0", "{w}");
    assert_eq!(w["cut"][0]["to"], "198.18.70.2", "{w}");
    assert!(
        w["cut"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("NetworkPolicy shop/no-egress"),
        "{w}"
    );
    let records = |kind: &str, n: usize| -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = a.ok("/api/v1/records", &[("kind", kind), ("from", "-1h")]);
            let r = v["records"].as_array().cloned().unwrap_or_default();
            if r.len() >= n {
                return r;
            }
            assert!(Instant::now() < deadline, "{kind}: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let got: Vec<(String, Value)> = records("k8s-probe", 3)
        .iter()
        .map(|r| {
            (
                r["text"].as_str().unwrap_or("").to_string(),
                r["labels"].clone(),
            )
        })
        .collect();
    let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "NetworkPolicy shop/deny-ingress",
            "Namespace /kube-system",
            "Namespace /shop"
        ],
        "in scope: listed, sorted; {got:?}"
    );
    assert_eq!(got[0].1, json!([["json_has", "true"]]), "the object's JSON");
    assert!(
        got[2]
            .1
            .as_array()
            .expect("labels")
            .contains(&json!(["team", "payments"])),
        "{got:?}"
    );
    let errors = records("k8s-probe-error", 2);
    let says = |kind: &str| {
        errors
            .iter()
            .find(|r| r["labels"] == json!([["kind", kind]]))
            .and_then(|r| r["text"].as_str())
            .unwrap_or("")
            .to_string()
    };
    assert!(
        says("Pod").contains(
            "kind Pod is outside this plugin's scope (granted kinds: NetworkPolicy, Namespace)"
        ),
        "{errors:?}"
    );
    assert!(
        says("Secret").contains("Secret is never readable"),
        "{errors:?}"
    );
    assert_eq!(
        records("k8s-probe-kinds", 1)[0]["text"],
        "Namespace,NetworkPolicy",
        "kinds() lists what is watched and in scope"
    );

    // Widened with the CLI: pods readable after the reload. Secrets cannot be granted.
    let data = root.join("data");
    let (code, out, err) = crate::plugins::weir(
        &data,
        &["grant", "contract-probe", "k8s-objects", "--scope", "*"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = crate::plugins::weir(
        &data,
        &[
            "grant",
            "contract-probe",
            "k8s-objects",
            "--scope",
            "Secret",
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("Secrets are never readable"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        post(81);
        let v = a.ok("/api/v1/records", &[("kind", "k8s-probe"), ("from", "-1h")]);
        let pods = v["records"].as_array().map_or(0, |r| {
            r.iter().filter(|r| r["text"] == "Pod shop/web-0").count()
        });
        if pods > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods not listed after the grant: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn probes_connect_from_a_namespace_and_report_what_the_kernel_answered() {
    let pair = Pair::new(70);
    let _listener = crate::deep::python_bg(&pair.ns_b, "listen.py", &["7070"]);
    // In B: port 7071 dropped, 7072 rejected as administratively prohibited, 7073 closed.
    sh(&format!(
        "printf 'table inet probe {{\\n chain input {{\\n  type filter hook input priority 0;\\n  tcp dport 7071 drop\\n  tcp dport 7072 reject with icmpx admin-prohibited\\n }}\\n}}\\n' | ip netns exec {} nft -f -",
        pair.ns_b
    ));
    let (a, b) = (&pair.ns_a, &pair.b4);
    let targets = [
        format!("{a}/{b}/7070/tcp/1000"),
        format!("{a}/{}/7070/tcp/1000", pair.b6),
        format!("{a}/{b}/7071/tcp/300"),
        format!("{a}/{b}/7072/tcp/1000"),
        format!("{a}/{b}/7073/tcp/1000"),
        format!("{a}/{b}/7070/udp/1000"),
        format!("{a}/{b}/7073/udp/1000"),
        format!("{a}/10.0.0.1/7070/tcp/100"),
        format!("weir-no-such-ns/{b}/7070/tcp/100"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("agent");
    let config = format!("targets={}", targets.join(";"));
    install(
        &root.join("data"),
        &dir.path().join("src"),
        "contract_probe",
        "contract-probe",
        &["mode=probe", &config],
    );
    let a = Agent::start(&root, &["--no-capture"]);
    let now = now_ms();
    let flow = json!([{"SrcAddr": "198.18.70.1", "DstAddr": "198.18.70.2", "Proto": 6,
        "Bytes": 1, "Packets": 1, "TimeFlowStartMs": now - 2000, "TimeFlowEndMs": now - 1000}]);
    let (s, v) = a.post("/api/v1/flows", &flow.to_string());
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        let v = a.ok(
            "/api/v1/records",
            &[("kind", "probe-result"), ("from", "-1h")],
        );
        let r = v["records"].as_array().cloned().unwrap_or_default();
        if r.len() >= targets.len() {
            break r;
        }
        assert!(Instant::now() < deadline, "no probe results: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let texts: Vec<&str> = got
        .iter()
        .map(|r| r["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        &texts[..7],
        [
            "connected",
            "connected",
            "timed-out",
            "unreachable",
            "refused",
            "answered",
            "refused"
        ],
        "{got:?}"
    );
    assert!(
        got[3]["labels"][1][1]
            .as_str()
            .unwrap_or("")
            .contains("No route to host"),
        "the system's words: {}",
        got[3]
    );
    assert!(
        texts[7].contains("address 10.0.0.1 is outside this plugin's scope (granted: from:*, to:198.18.0.0/15, to:2001:db8::/32)"),
        "{}",
        texts[7]
    );
    assert!(
        texts[8].contains("network namespace weir-no-such-ns"),
        "{}",
        texts[8]
    );
}

/// Records of `kind` once there are at least `n`.
fn records_of(a: &Agent, kind: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = a.ok(
            "/api/v1/records",
            &[("kind", kind), ("from", "-1h"), ("limit", "10000")],
        );
        let r = v["records"].as_array().cloned().unwrap_or_default();
        if r.len() >= n {
            return r;
        }
        assert!(Instant::now() < deadline, "{kind}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn capture_control_keeps_the_operators_rules_first_bounds_plugins_and_restores() {
    let pair = Pair::new(71);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("agent");
    let data = root.join("data");
    let src = dir.path().join("src");
    let plugin_rule = format!("reject cidr={} proto=udp ports=7001", pair.b4);
    let install_probe =
        |config: &[&str]| install(&data, &src, "contract_probe", "contract-probe", config);
    install_probe(&[
        "mode=capture",
        &format!("rules={plugin_rule}"),
        "sampling=10",
        "repeat=5",
    ]);
    let a = crate::capture::agent_in_a(
        &pair,
        &root,
        &["--active-timeout", "1s", "--filter", "reject ports=9"],
    );
    let trigger = || {
        let now = now_ms();
        let flow = json!([{"SrcAddr": "198.18.0.1", "DstAddr": "198.18.0.2", "Proto": 6, "Bytes": 1,
            "Packets": 1, "TimeFlowStartMs": now - 2000, "TimeFlowEndMs": now - 1000}]);
        let (s, v) = a.post("/api/v1/flows", &flow.to_string());
        assert_eq!(s, 200, "{v}");
    };
    trigger();
    let results = records_of(&a, "capture-result", 6);
    let said: Vec<(&str, &str)> = results[..6]
        .iter()
        .map(|r| {
            (
                r["labels"][0][1].as_str().unwrap_or(""),
                r["text"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(said[0], ("sampling", "ok"), "{said:?}");
    for (i, (call, text)) in said[1..5].iter().enumerate() {
        assert_eq!(
            (*call, *text),
            (format!("rules-{i}").as_str(), "ok"),
            "{said:?}"
        );
    }
    assert_eq!(said[5].0, "rules-4");
    assert!(
        said[5].1.contains("rate limit: at most 5 changes at once"),
        "{said:?}"
    );
    // In force: the operator's rule first, then the plugin's; the plugin's sampling. The
    // filters API answers the operator's own (what its PUT replaces).
    let rule_texts = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("rules")
            .iter()
            .map(|r| {
                serde_json::from_value::<weir_core::capture::FilterRule>(r.clone())
                    .expect("rule")
                    .text()
            })
            .collect()
    };
    let v = a.ok("/api/v1/capture/filters", &[]);
    assert_eq!(rule_texts(&v["rules"]), ["reject ports=9".to_string()]);
    let st = a.ok("/api/v1/status", &[]);
    assert_eq!(
        rule_texts(&st["capture"]["filters"]),
        ["reject ports=9".to_string(), plugin_rule.clone()]
    );
    let st = a.ok("/api/v1/status", &[]);
    let c = &st["capture"];
    assert_eq!(c["sampling"], 10, "{c}");
    assert_eq!(
        c["control"]["operator_rules"],
        json!(["reject ports=9"]),
        "{c}"
    );
    assert_eq!(
        c["control"]["controllers"][0]["plugin"], "contract-probe",
        "{c}"
    );
    assert_eq!(c["control"]["controllers"][0]["sampling"], 10, "{c}");
    let (code, out, err) = a.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("capture control (plugins; the operator's rules come first):")
            && out.contains("contract-probe")
            && out.contains("sampling 1 in 10"),
        "{out}"
    );
    assert!(
        records_of(&a, "capture-change", 2)
            .iter()
            .any(|r| r["labels"] == json!([["by", "contract-probe"]]))
    );
    // The kernel does it: UDP to 7001 is not captured, UDP to 7002 is, 1 in 10.
    let t0 = now_ms();
    let py = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/udp_send.py");
    sh(&format!(
        "ip netns exec {} python3 {py} {} 7001 50 100",
        pair.ns_a, pair.b4
    ));
    sh(&format!(
        "ip netns exec {} python3 {py} {} 7002 300 100",
        pair.ns_a, pair.b4
    ));
    a.flush();
    let flows = |filter: &str| {
        let v = a.ok(
            "/api/v1/flows",
            &[
                ("filter", filter),
                ("from", &t0.to_string()),
                ("limit", "1000"),
            ],
        );
        v["flows"].as_array().cloned().unwrap_or_default()
    };
    assert!(
        flows("Proto=17 and DstPort=7001").is_empty(),
        "rejected in the kernel"
    );
    let sampled = flows("Proto=17 and DstPort=7002");
    assert!(!sampled.is_empty(), "captured");
    assert!(sampled.iter().all(|f| f["Sampling"] == 10), "{sampled:?}");
    let packets: u64 = sampled
        .iter()
        .map(|f| f["Packets"].as_u64().unwrap_or(0))
        .sum();
    assert!(packets < 150, "1 in 10 of 300 packets, not {packets}");

    // Disabled: its rules and sampling withdrawn, the operator's restored.
    let (s, v) = a.post("/api/v1/plugins/contract-probe/disable", "{}");
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = a.ok("/api/v1/status", &[])["capture"].clone();
        if c["control"]["controllers"]
            .as_array()
            .is_some_and(Vec::is_empty)
        {
            assert_eq!(c["sampling"], 0, "{c}");
            assert_eq!(c["filters"].as_array().map(Vec::len), Some(1), "{c}");
            let last = c["control"]["changes"]
                .as_array()
                .and_then(|l| l.last().cloned());
            assert!(
                last.as_ref()
                    .is_some_and(|l| l["what"].as_str().unwrap_or("").contains("withdrawn")),
                "{last:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not withdrawn: {c}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Outside the bounds (rules inside 198.18.0.0/15, reject only, sampling 1-100): refused,
    // naming the bound; nothing changes.
    let (s, v) = a.delete("/api/v1/plugins/contract-probe");
    assert_eq!(s, 200, "{v}");
    install_probe(&[
        "mode=capture",
        "rules=reject cidr=10.0.0.0/8",
        "sampling=1000",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        trigger();
        let v = a.ok(
            "/api/v1/records",
            &[
                ("kind", "capture-result"),
                ("from", "-1h"),
                ("limit", "10000"),
            ],
        );
        let r: Vec<String> = v["records"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|r| r["text"].as_str())
                    .filter(|t| t.contains("bounds") || t.contains("grant's networks"))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if r.len() >= 2 {
            break r;
        }
        assert!(Instant::now() < deadline, "no refusals: {v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        refused.iter().any(
            |t| t.contains("sampling 1 in 1000 is outside the grant's bounds (sampling=1-100)")
        ),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|t| t.contains("its cidr must lie inside the grant's networks")),
        "{refused:?}"
    );
    let c = a.ok("/api/v1/status", &[])["capture"].clone();
    assert_eq!(
        (c["sampling"].clone(), c["filters"].as_array().map(Vec::len)),
        (json!(0), Some(1)),
        "{c}"
    );
}
