//! The timeline end to end: a recorded Kubernetes API (a stand-in: no API server runs on the
//! test machines) with a pod whose address is one end of a real veth pair, its events arriving
//! over the watch (an OOM kill) and a NetworkPolicy changed; real traffic to the pod; a log
//! line and a span over OTLP. The timeline must put the flow volume (equal to the aggregate
//! API's), the events (kept as records with the pod's workload, their flow filter selecting
//! the pod's flows), the policy change, the log and the span on one axis; a restarted agent
//! must not record an event twice; and the Timeline page in a real browser must draw it, hide
//! lanes, zoom, and lead from an event to its flows. The bundled `event-drops` correlator must
//! find the packets a netfilter rule dropped right after the OOM kill and name the event.

use crate::capture::agent_with;
use crate::util::{KubeApi, Pair, browser_test, iso, label, now_ms, require, sh};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The recorded cluster: pod shop/web-5d9f-x (Deployment web) at `ip`, a NetworkPolicy, and
/// one event already there (Scheduled).
fn cluster(dir: &std::path::Path, ip: &str, t: u64) {
    let list = KubeApi::list;
    let files = [
        (
            "pods",
            list(
                "PodList",
                json!([{
            "metadata": {"name": "web-5d9f-x", "namespace": "shop", "uid": "p1", "resourceVersion": "5",
                "labels": {"app": "web", "pod-template-hash": "5d9f"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f", "uid": "rs1", "controller": true}]},
            "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "nginx"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}]),
            ),
        ),
        ("services", list("ServiceList", json!([]))),
        ("nodes", list("NodeList", json!([]))),
        (
            "namespaces",
            list(
                "NamespaceList",
                json!([{"metadata": {"name": "shop", "uid": "n1", "resourceVersion": "2"}}]),
            ),
        ),
        (
            "networkpolicies",
            list(
                "NetworkPolicyList",
                json!([{
            "metadata": {"name": "deny-ingress", "namespace": "shop", "uid": "np1", "resourceVersion": "7"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}]),
            ),
        ),
        (
            "endpointslices",
            list(
                "EndpointSliceList",
                json!([{
            "metadata": {"name": "web-abc", "namespace": "shop", "uid": "es1", "resourceVersion": "6",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-5d9f-x"}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]),
            ),
        ),
        (
            "events",
            list(
                "EventList",
                json!([{
            "metadata": {"name": "web-5d9f-x.1", "namespace": "shop", "uid": "e1", "resourceVersion": "8"},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-5d9f-x"},
            "reason": "Scheduled", "message": "Successfully assigned shop/web-5d9f-x to node-a",
            "type": "Normal", "count": 1, "lastTimestamp": iso(t)}]),
            ),
        ),
    ];
    KubeApi::write_lists(dir, files);
}

fn append(path: &std::path::Path, line: &Value) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("watch file");
    writeln!(f, "{line}").expect("append");
}

#[test]
fn events_logs_spans_and_flows_share_one_timeline_that_the_page_draws() {
    require(&["ip", "ping", "python3", "node", "chromium"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(73);
    let t0 = now_ms();
    let api_dir = dir.path().join("api");
    std::fs::create_dir_all(&api_dir).expect("mkdir");
    cluster(&api_dir, &pair.b4, t0 - 20_000);
    let api = KubeApi::start(&api_dir);
    let kubeconfig = api.kubeconfig.to_str().expect("path").to_string();
    let mut a = agent_with(&pair, dir.path(), &["--kubeconfig", &kubeconfig]);

    // The recorder has the cluster (the first event is recorded) and has listed the policies
    // once (a poll later): only then is a policy change a change.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.records("k8s-event").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first event was never recorded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(2500));
    // Traffic to the pod, then the events: the OOM kill over the watch, the policy changed.
    sh(&format!(
        "ip netns exec {} ping -c 5 -i 0.2 -q {}",
        pair.ns_a, pair.b4
    ));
    let t_oom = now_ms();
    append(
        &api_dir.join("events.watch.jsonl"),
        &json!({"type": "ADDED", "object": {
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": "web-5d9f-x.2", "namespace": "shop", "uid": "e2", "resourceVersion": "11"},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-5d9f-x"},
            "reason": "OOMKilling", "message": "Memory cgroup out of memory: Killed process 4242 (nginx)",
            "type": "Warning", "count": 1, "lastTimestamp": iso(t_oom)}}),
    );
    append(
        &api_dir.join("networkpolicies.watch.jsonl"),
        &json!({"type": "MODIFIED", "object": {
            "kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
            "metadata": {"name": "deny-ingress", "namespace": "shop", "uid": "np1", "resourceVersion": "12"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"]}}}),
    );
    // The pod stops being ready: the service's endpoint slice loses its address.
    append(
        &api_dir.join("endpointslices.watch.jsonl"),
        &json!({"type": "MODIFIED", "object": {
            "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": "web-abc", "namespace": "shop", "uid": "es1", "resourceVersion": "13",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [pair.b4.clone()], "conditions": {"ready": false}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
    );
    // After the OOM kill the pod drops what it is sent: ten pings dropped by a netfilter rule
    // in its namespace (the five before the event went through).
    sh(&format!(
        "ip netns exec {} nft 'add table inet oom; add chain inet oom in {{ type filter hook input priority 0; }}; add rule inet oom in icmp type echo-request drop'",
        pair.ns_b
    ));
    sh(&format!(
        "ip netns exec {} ping -c 10 -i 0.2 -W 1 -q {} || true",
        pair.ns_a, pair.b4
    ));
    sh(&format!(
        "ip netns exec {} nft delete table inet oom",
        pair.ns_b
    ));
    // A log line and a span over OTLP (JSON).
    let now_ns = now_ms() * 1_000_000;
    let log = json!({"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": now_ns.to_string(), "severityNumber": 17,
        "body": {"stringValue": "payment backend unreachable"}}]}]}]});
    a.send_otlp("/v1/logs", &log);
    let span = json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "GET /pay", "kind": 3, "startTimeUnixNano": now_ns.to_string(), "endTimeUnixNano": (now_ns + 40_000_000).to_string(),
        "status": {"code": 2}, "attributes": [{"key": "server.address", "value": {"stringValue": pair.b4.clone()}},
        {"key": "server.port", "value": {"intValue": 80}}]}]}]}]});
    a.send_otlp("/v1/traces", &span);
    a.flush();

    // Both events and the policy change are recorded (the watch reaches the agent first).
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.records("k8s-event").len() < 2 || a.records("k8s-change").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "events not recorded: {:?} {:?}",
            a.records("k8s-event"),
            a.records("k8s-change")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let evs = a.records("k8s-event");
    let oom = evs
        .iter()
        .find(|r| label(r, "reason") == Some("OOMKilling"))
        .expect("OOM event");
    assert_eq!(label(oom, "workload"), Some("web"), "{oom}");
    assert_eq!(label(oom, "severity"), Some("critical"));
    assert_eq!(oom["time_ms"].as_u64(), Some(t_oom / 1000 * 1000));
    let changes = a.records("k8s-change");
    let text = |r: &Value| r["text"].as_str().unwrap_or("").to_string();
    assert!(
        changes
            .iter()
            .any(|r| text(r) == "NetworkPolicy shop/deny-ingress changed"),
        "{changes:?}"
    );
    let ep = changes
        .iter()
        .find(|r| label(r, "object_kind") == Some("EndpointSlice"))
        .expect("endpoint change");
    assert_eq!(
        text(ep),
        format!(
            "Endpoints of service shop/web changed: {} removed; none ready",
            pair.b4
        )
    );
    assert_eq!(label(ep, "severity"), Some("warning"), "{ep}");
    assert_eq!(ep["flow_filter"], format!("Addr={}", pair.b4), "{ep}");

    // The timeline over the same range as the aggregate API.
    let (from, to) = ((t0 - 60_000).to_string(), (now_ms() + 1000).to_string());
    let t = a.ok(
        "/api/v1/timeline",
        &[("from", &from), ("to", &to), ("step", "10s")],
    );
    let agg = a.ok(
        "/api/v1/flows/aggregate",
        &[
            ("from", &from),
            ("to", &to),
            ("group_by", "Proto"),
            ("top", "100"),
        ],
    );
    let agg_bytes = agg["total"]["bytes"].as_u64().unwrap_or(0);
    let vol: u64 = t["volume"]["bytes"]
        .as_array()
        .expect("volume")
        .iter()
        .map(|b| b.as_u64().unwrap_or(0))
        .sum();
    assert!(agg_bytes > 0, "{agg}");
    assert_eq!(vol, agg_bytes, "timeline volume vs aggregate");
    let lane = |id: &str| -> Value {
        t["lanes"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["id"] == id).cloned())
            .unwrap_or_else(|| panic!("lane {id}: {t}"))
    };
    let events = lane("events");
    assert_eq!(events["total"], 4, "{events}");
    let item = events["items"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i["severity"] == "critical").cloned())
        .expect("critical event");
    assert!(
        item["text"]
            .as_str()
            .is_some_and(|s| s.starts_with("OOMKilling: Pod shop/web-5d9f-x"))
    );
    // The event's filter selects the pod's flows, and only those.
    let filter = item["flow_filter"].as_str().expect("flow filter");
    let flows = a.ok(
        "/api/v1/flows",
        &[("filter", filter), ("from", &from), ("limit", "1000")],
    );
    let list = flows["flows"].as_array().expect("flows");
    assert!(!list.is_empty(), "no flows for {filter}");
    assert!(
        list.iter()
            .all(|f| f["SrcK8S_Name"] == "web-5d9f-x" || f["DstK8S_Name"] == "web-5d9f-x")
    );
    assert_eq!(lane("logs")["items"][0]["severity"], "critical");
    let sp = lane("spans");
    assert_eq!(
        sp["items"][0]["trace_id"],
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(sp["items"][0]["severity"], "critical");
    // Bad parameters name themselves.
    let (s, v) = a.get("/api/v1/timeline", &[("from", &from), ("step", "1ms")]);
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["parameter"], "step", "{v}");

    // The page, in a real browser.
    browser_test(
        "timeline.mjs",
        &a.url(""),
        &[
            ("WEIR_FROM", iso(t0 - 60_000)),
            ("WEIR_TO", iso(now_ms() + 2000)),
        ],
    );
    // The page's Export button downloaded an incident file that verifies.
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/ui-screenshots/timeline-incident.tar.gz");
    let out = std::process::Command::new(crate::util::WEIR)
        .args(["incident", "verify", "--json"])
        .arg(&file)
        .output()
        .expect("weir incident verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("verify JSON");
    let m = &v["manifest"];
    // The window shown (its ends aligned to the timeline's step): the flows, and the events,
    // the policy change, the log and the span.
    assert!(
        m["from_ms"].as_u64() > Some(t0 - 120_000),
        "the window shown: {m}"
    );
    assert!(m["counts"]["flows"].as_u64() > Some(0), "{m}");
    assert!(m["counts"]["records"].as_u64() >= Some(5), "{m}");

    // The bundled event-drops correlator: the OOM kill was followed by the ten drops.
    let data = a.dir.join("data");
    let (code, _, err) = crate::plugins::weir(&data, &["install", "bundled:event-drops"]);
    assert_eq!(code, 0, "{err}");
    let (f, to) = ((t0 - 60_000).to_string(), (now_ms() + 1000).to_string());
    let out = a.plugin_run(&["event-drops", "--json", "--keep", "--from", &f, "--to", &to]);
    let v: Value = serde_json::from_str(&out).expect("run JSON");
    let notes = v["result"]["annotations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let oom_note = notes
        .iter()
        .find(|n| n["labels"]["reason"] == "OOMKilling")
        .unwrap_or_else(|| {
            // What the correlator had to go on: the events and the flows (times, drops).
            let flows = a.ok(
                "/api/v1/flows",
                &[("from", &f), ("to", &to), ("limit", "100")],
            );
            let brief: Vec<String> = flows["flows"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .map(|x| {
                            format!(
                                "{}..{} {}>{} p{} drop{}",
                                x["TimeFlowStartMs"],
                                x["TimeFlowEndMs"],
                                x["SrcAddr"],
                                x["DstAddr"],
                                x["Packets"],
                                x["PktDropPackets"]
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            panic!(
                "no annotation for the OOM kill (at {t_oom}): {v}\nevents: {:?}\nflows: {brief:?}",
                a.records("k8s-event")
            )
        });
    let l = &oom_note["labels"];
    let after: u64 = l["drop_packets_after"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // The ten pings, and whatever else the pod's stack dropped (a few packets to no socket,
    // before the event and after it, in these runs): annotated only because more came after.
    assert!(after >= 10, "{oom_note}");
    assert_eq!(
        l["drop_cause"], "SKB_DROP_REASON_NETFILTER_DROP",
        "{oom_note}"
    );
    // Exactly the ten: the count after the cause ends at a comma or the colon.
    let text = oom_note["text"].as_str().unwrap_or("");
    assert!(
        text.contains("SKB_DROP_REASON_NETFILTER_DROP 10,")
            || text.contains("SKB_DROP_REASON_NETFILTER_DROP 10:"),
        "{oom_note}"
    );
    assert_eq!(oom_note["time_ms"].as_u64(), Some(t_oom / 1000 * 1000));
    // Kept as asked (--keep): the annotations are records of the plugin, on the timeline.
    assert_eq!(
        v["result"]["kept"].as_u64(),
        Some(notes.len() as u64),
        "{v}"
    );
    let kept = a.ok(
        "/api/v1/records",
        &[
            ("kind", "annotation"),
            ("source", "event-drops"),
            ("from", "-1h"),
            ("label", "reason=OOMKilling"),
        ],
    );
    assert_eq!(kept["records"].as_array().map(Vec::len), Some(1), "{kept}");
    assert_eq!(kept["records"][0]["text"], oom_note["text"], "{kept}");
    // Its filter selects the dropped flows; those ending in the 300 s after the event are
    // the ones counted (no sampling here: the listed counts are the scaled ones), every one of
    // them the pod's.
    let t_ev = t_oom / 1000 * 1000;
    let filter = format!(
        "({}) and TimeFlowEndMs>={t_ev} and TimeFlowEndMs<={}",
        oom_note["flow_filter"].as_str().expect("filter"),
        t_ev + 300_000
    );
    let dropped = a.ok(
        "/api/v1/flows",
        &[
            ("filter", &filter),
            ("from", &t_ev.to_string()),
            ("to", &(t_ev + 300_000).to_string()),
            ("limit", "1000"),
        ],
    );
    let list = dropped["flows"].as_array().cloned().unwrap_or_default();
    let sum: u64 = list
        .iter()
        .map(|f| f["PktDropPackets"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sum, after, "{dropped}");
    assert!(
        list.iter()
            .all(|f| f["SrcK8S_Name"] == "web-5d9f-x" || f["DstK8S_Name"] == "web-5d9f-x")
    );

    // A restarted agent does not record the same events again.
    a.stop();
    a.spawn();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(a.records("k8s-event").len(), 2, "events recorded twice");
}
