//! The engine against expectations transcribed from the Kubernetes e2e NetworkPolicy suite:
//! kubernetes/kubernetes test/e2e/network/netpol/network_policy.go at revision
//! 9db638c0807a720aa050ebcef69c32e4d4cce280 (the line of each `f.It` is cited). Its model:
//! namespaces x, y, z (labelled only `kubernetes.io/metadata.name`), pods a, b, c in each
//! (labelled `pod: <name>`), container ports named `serve-<port>-<proto>`. Self cells are not
//! checked there (`ignoreLoopback`), nor here. Cases the suite does not have (endPort,
//! Exists/DoesNotExist, admin policies) follow the API reference and are marked so.

use super::*;
use serde_json::json;
use std::collections::BTreeSet;

const NS: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn cluster() -> Vec<Value> {
    let mut out = vec![];
    for (ni, ns) in NS.iter().enumerate() {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        for (pi, p) in PODS.iter().enumerate() {
            out.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": p, "namespace": ns, "labels": {"pod": p}},
                "spec": {"containers": [{"name": "c", "ports": [
                    {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
                    {"name": "serve-81-tcp", "containerPort": 81, "protocol": "TCP"},
                    {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"},
                ]}]},
                "status": {"podIP": format!("10.{}.{}.{}", 10 + ni, pi, 2 + pi)},
            }));
        }
    }
    out
}

fn yaml_free(policies: Vec<Value>) -> Vec<Value> {
    let mut o = cluster();
    o.extend(policies);
    o
}

fn field(d: &Decoded, k: &str) -> String {
    d.fields
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The blocked cells (`from -> to`, self cells left out) for one port.
fn blocked(objects: Vec<Value>, port: u16, proto: &str, naive: bool) -> BTreeSet<String> {
    let out = handle(&json!({"op": "table", "objects": objects, "naive": naive,
        "ports": [{"port": port, "protocol": proto}]}))
    .expect("table");
    let problems: Vec<String> = out
        .iter()
        .filter(|d| field(d, "kind") == "problem")
        .map(|d| format!("{}: {}", field(d, "field"), field(d, "message")))
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    let pods: Vec<String> = serde_json::from_str(&field(&out[0], "json")).unwrap();
    let mut set = BTreeSet::new();
    for r in out.iter().filter(|d| field(d, "kind") == "row") {
        let from = field(r, "from");
        for (to, c) in pods.iter().zip(field(r, "cells").chars()) {
            if c == 'X' {
                set.insert(format!("{from} -> {to}"));
            } else {
                assert!(c == '.' || (c == '#' && *to == from), "{from} -> {to}: {c}");
            }
        }
    }
    set
}

fn check(case: &str, policies: Vec<Value>, port: u16, proto: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    for naive in [false, true] {
        let got = blocked(yaml_free(policies.clone()), port, proto, naive);
        assert_eq!(got, want, "{case} ({port}/{proto}, naive {naive})");
    }
}

/// Every `from -> to` with `to` in namespace `ns` (or from it, `egress`), self left out.
fn all_into(ns: &str) -> Vec<String> {
    let mut v = vec![];
    for fns in NS {
        for fp in PODS {
            for tp in PODS {
                if !(fns == ns && fp == tp) {
                    v.push(format!("{fns}/{fp} -> {ns}/{tp}"));
                }
            }
        }
    }
    v
}

fn all_from(ns: &str) -> Vec<String> {
    let mut v = vec![];
    for fp in PODS {
        for tns in NS {
            for tp in PODS {
                if !(tns == ns && fp == tp) {
                    v.push(format!("{ns}/{fp} -> {tns}/{tp}"));
                }
            }
        }
    }
    v
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn np(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "x"}, "spec": spec})
}

const INTO_XA: [&str; 8] = [
    "x/b -> x/a",
    "x/c -> x/a",
    "y/a -> x/a",
    "y/b -> x/a",
    "y/c -> x/a",
    "z/a -> x/a",
    "z/b -> x/a",
    "z/c -> x/a",
];

#[test]
fn e2e_default_deny_ingress_line_120() {
    let p = np(
        "deny-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}),
    );
    check(
        "default-deny-ingress",
        vec![p],
        80,
        "TCP",
        &refs(&all_into("x")),
    );
}

#[test]
fn e2e_allow_from_pods_in_server_namespace_by_pod_selector_line_162() {
    let p = np(
        "x-a-allows-x-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    let want: Vec<&str> = INTO_XA
        .iter()
        .copied()
        .filter(|c| *c != "x/b -> x/a")
        .collect();
    check("podSelector", vec![p], 80, "TCP", &want);
}

#[test]
fn e2e_namespace_selector_match_expressions_in_line_267() {
    let p = np(
        "allow-ns-y-match-selector",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["y"]}]}}]}]}),
    );
    check(
        "In",
        vec![p],
        80,
        "TCP",
        &[
            "x/b -> x/a",
            "x/c -> x/a",
            "z/a -> x/a",
            "z/b -> x/a",
            "z/c -> x/a",
        ],
    );
}

#[test]
fn e2e_pod_selector_or_namespace_selector_line_292() {
    let p = np(
        "allow-ns-y-match-selector",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Ingress"], "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]}},
            {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    check("OR", vec![p], 80, "TCP", &["x/c -> x/a"]);
}

#[test]
fn e2e_pod_selector_and_namespace_selector_line_321() {
    let p = np(
        "allow-ns-y-podselector-and-nsselector",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Ingress"], "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]},
             "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    check(
        "AND",
        vec![p],
        80,
        "TCP",
        &[
            "x/b -> x/a",
            "x/c -> x/a",
            "y/a -> x/a",
            "y/c -> x/a",
            "z/a -> x/a",
            "z/c -> x/a",
        ],
    );
}

#[test]
fn e2e_ingress_from_namespace_on_one_named_port_line_536() {
    let p = np(
        "allow-client-a-via-ns-selector-80",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}],
            "ports": [{"protocol": "TCP", "port": "serve-80-tcp"}]}]}),
    );
    check(
        "named 80",
        vec![p.clone()],
        80,
        "TCP",
        &[
            "x/b -> x/a",
            "x/c -> x/a",
            "z/a -> x/a",
            "z/b -> x/a",
            "z/c -> x/a",
        ],
    );
    check("named 81", vec![p], 81, "TCP", &INTO_XA);
}

#[test]
fn e2e_ingress_on_one_named_port_line_515() {
    let p = np(
        "allow-all",
        json!({"podSelector": {"matchLabels": {}}, "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
    );
    check("named only 81", vec![p.clone()], 81, "TCP", &[]);
    check(
        "named only 81, probe 80",
        vec![p],
        80,
        "TCP",
        &refs(&all_into("x")),
    );
}

#[test]
fn e2e_deny_egress_from_all_pods_in_a_namespace_line_722() {
    let p = np(
        "deny-egress-ns-x",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": []}),
    );
    check("deny egress", vec![p], 80, "TCP", &refs(&all_from("x")));
}

#[test]
fn e2e_egress_to_pod_in_other_namespace_line_870() {
    let p = np(
        "allow-to-ns-y-pod-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}},
            "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    );
    check(
        "egress AND",
        vec![p],
        80,
        "TCP",
        &[
            "x/a -> x/b",
            "x/a -> x/c",
            "x/a -> y/b",
            "x/a -> y/c",
            "x/a -> z/a",
            "x/a -> z/b",
            "x/a -> z/c",
        ],
    );
}

#[test]
fn e2e_ip_block_except_on_egress_line_1019() {
    // x/a is 10.10.0.2, x/b 10.10.1.3: the suite's "<x/a IP>/4" holds every pod here.
    let p = np(
        "allow-client-a-via-cidr-egress-rule",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.10.0.2/4", "except": ["10.10.1.3/32"]}}]}]}),
    );
    check("ipBlock except", vec![p], 80, "TCP", &["x/a -> x/b"]);
}

#[test]
fn e2e_ingress_and_egress_together_line_736() {
    let p = np(
        "allow-client-a-via-pod-selector",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Egress", "Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
        "egress": [{"ports": [{"port": 80}]}]}),
    );
    let into: Vec<&str> = INTO_XA
        .iter()
        .copied()
        .filter(|c| *c != "x/b -> x/a")
        .collect();
    check("both 80", vec![p.clone()], 80, "TCP", &into);
    let mut want: Vec<String> = all_from("x")
        .into_iter()
        .filter(|c| c.starts_with("x/a "))
        .collect();
    want.extend(into.iter().map(|s| s.to_string()));
    check("both 81", vec![p], 81, "TCP", &refs(&want));
}

#[test]
fn e2e_stacked_policies_are_a_union_line_458() {
    let p = |name: &str, port: u16| {
        np(
            name,
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}],
            "ports": [{"protocol": "TCP", "port": port}]}]}),
        )
    };
    let allow = [
        "x/b -> x/a",
        "x/c -> x/a",
        "z/a -> x/a",
        "z/b -> x/a",
        "z/c -> x/a",
    ];
    check(
        "stacked 81",
        vec![p("allow-client-a-via-ns-selector", 81)],
        81,
        "TCP",
        &allow,
    );
    check(
        "stacked 80 before",
        vec![p("allow-client-a-via-ns-selector", 81)],
        80,
        "TCP",
        &INTO_XA,
    );
    check(
        "stacked 80 after",
        vec![
            p("allow-client-a-via-ns-selector", 81),
            p("allow-client-a-via-ns-selector-80", 80),
        ],
        80,
        "TCP",
        &allow,
    );
}

// Beyond the e2e suite, from the API reference.

#[test]
fn end_port_ranges_and_protocols() {
    let p = np(
        "range",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]}),
    );
    check("80 in 80-81", vec![p.clone()], 81, "TCP", &[]);
    check(
        "UDP not in a TCP range",
        vec![p.clone()],
        80,
        "UDP",
        &INTO_XA,
    );
    check("82 beyond", vec![p], 82, "TCP", &INTO_XA);
}

#[test]
fn exists_and_does_not_exist() {
    let p = np(
        "exists",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]},
        "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"},
            {"key": "pod", "operator": "NotIn", "values": ["c"]}]}}]}]}),
    );
    // Every x pod isolated; only x/a and x/b (no tier label, not c) may reach them.
    let mut want = all_into("x");
    want.retain(|c| c.starts_with("x/c") || !c.starts_with("x/"));
    check("exists", vec![p], 80, "TCP", &refs(&want));
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_egress_rules_are_given() {
    // No policyTypes and an egress section: both directions; an empty ingress denies all.
    let p = np(
        "both",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "egress": [{"to": [{"podSelector": {}}]}]}),
    );
    let mut want: Vec<String> = INTO_XA.iter().map(|s| s.to_string()).collect();
    want.extend(
        all_from("x")
            .into_iter()
            .filter(|c| c.starts_with("x/a ") && !c.contains("-> x/")),
    );
    check("defaults", vec![p], 80, "TCP", &refs(&want));
}

fn admin(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

#[test]
fn admin_policies_come_first_pass_hands_over_and_the_baseline_comes_last() {
    let ns = |n: &str| json!({"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": n}}});
    // Deny everything into x at priority 20; at priority 10 allow y -> x and pass z -> x.
    let deny = admin(
        "AdminNetworkPolicy",
        "deny-x",
        json!({"priority": 20, "subject": ns("x"),
        "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]}),
    );
    let allow = admin(
        "AdminNetworkPolicy",
        "allow-y",
        json!({"priority": 10, "subject": ns("x"),
        "ingress": [{"name": "y", "action": "Allow", "from": [ns("y")]}, {"name": "z", "action": "Pass", "from": [ns("z")]}]}),
    );
    // A NetworkPolicy denies x/a's ingress: y still gets in (admin Allow wins), z passes to it.
    let np_deny = np(
        "deny-a",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": []}),
    );
    // The baseline denies z -> x; it applies only where no NetworkPolicy selects the pod.
    let base = admin(
        "BaselineAdminNetworkPolicy",
        "default",
        json!({"subject": ns("x"),
        "ingress": [{"name": "no-z", "action": "Deny", "from": [ns("z")]}]}),
    );
    let mut want: Vec<String> = all_into("x")
        .into_iter()
        .filter(|c| c.starts_with("x/"))
        .collect();
    want.extend(
        [
            "z/a -> x/a",
            "z/b -> x/a",
            "z/c -> x/a",
            "z/a -> x/b",
            "z/b -> x/b",
            "z/c -> x/b",
            "z/a -> x/c",
            "z/b -> x/c",
            "z/c -> x/c",
        ]
        .map(String::from),
    );
    check(
        "tiers",
        vec![deny.clone(), allow.clone(), np_deny.clone(), base.clone()],
        80,
        "TCP",
        &refs(&want),
    );
    // Explained: z -> x/a passes the admin tier and meets the NetworkPolicy.
    let out = handle(
        &json!({"op": "explain", "objects": yaml_free(vec![deny, allow, np_deny, base]),
        "from": "z/a", "to": "x/a", "port": 80}),
    )
    .unwrap();
    let j: Value = serde_json::from_str(&field(out.last().unwrap(), "json")).unwrap();
    assert_eq!(j["allowed"], false);
    assert_eq!(j["ingress"]["decided_by"], "NetworkPolicy");
    assert_eq!(j["ingress"]["steps"][0]["effect"], "Pass");
    assert_eq!(j["ingress"]["steps"][1]["policy"], "NetworkPolicy x/deny-a");
    assert_eq!(j["ingress"]["steps"][1]["effect"], "isolates");
    assert_eq!(j["egress"]["decided_by"], "default");
}

#[test]
fn bad_objects_are_problems_naming_the_field_and_the_rest_is_evaluated() {
    let bad_cidr = np(
        "bad",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
    );
    let bad_op = np(
        "bad-op",
        json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Maybe"}]}}),
    );
    let unknown = json!({"kind": "Gateway", "metadata": {"name": "g"}});
    let good = np("deny-ingress", json!({"podSelector": {}, "ingress": []}));
    let mut objects = cluster();
    let base = objects.len();
    objects.extend([bad_cidr, bad_op, unknown, good]);
    let out = handle(&json!({"op": "table", "objects": objects, "ports": [{"port": 80}]})).unwrap();
    let problems: Vec<(String, String, String)> = out
        .iter()
        .filter(|d| field(d, "kind") == "problem")
        .map(|d| (field(d, "object"), field(d, "field"), field(d, "message")))
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert_eq!(problems[0].0, base.to_string());
    assert_eq!(problems[0].1, "spec.ingress[0].from[0].ipBlock.cidr");
    assert!(problems[0].2.contains("prefix length"), "{problems:?}");
    assert_eq!(
        problems[1].1,
        "spec.podSelector.matchExpressions[0].operator"
    );
    assert_eq!(problems[2].1, "kind");
    // The good policy was still applied.
    let rows: Vec<String> = out
        .iter()
        .filter(|d| field(d, "kind") == "row")
        .map(|d| field(d, "cells"))
        .collect();
    assert!(
        rows[3].starts_with("XXX"),
        "y/a cannot reach x: {:?}",
        rows[3]
    );
}

#[test]
fn verdicts_use_the_labels_captured_with_the_connection() {
    let p = np(
        "only-web",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let out = handle(
        &json!({"op": "verdicts", "objects": yaml_free(vec![p.clone()]),
        "endpoints": [
            {"namespace": "x", "name": "gone", "labels": {"app": "web"}, "ip": "10.10.9.9"},
            {"namespace": "x", "name": "gone", "labels": {"app": "db"}, "ip": "10.10.9.9"},
            {"namespace": "x", "name": "a", "labels": {"pod": "a"}, "ip": "10.10.0.2"},
            {"ip": "192.0.2.1"}],
        "connections": [[0, 2, 80, "TCP"], [1, 2, 80, "TCP"], [3, 2, 80, "TCP"]]}),
    )
    .unwrap();
    // Without explanations: the same verdicts, one character each.
    let fast = handle(&json!({"op": "verdicts", "objects": yaml_free(vec![p]), "explain": false,
        "endpoints": [
            {"namespace": "x", "name": "gone", "labels": {"app": "web"}},
            {"namespace": "x", "name": "gone", "labels": {"app": "db"}},
            {"namespace": "x", "name": "a", "labels": {"pod": "a"}},
            {"ip": "192.0.2.1"}],
        "connections": [[0, 2, 80, "TCP"], [1, 2, 80, "TCP"], [3, 2, 80, "TCP"], [2, 3, 80, "UDP"]]})).unwrap();
    assert_eq!(field(&fast[0], "allowed"), "1001");
    let v: Vec<String> = out.iter().map(|d| field(d, "allowed")).collect();
    assert_eq!(v, ["true", "false", "false"]);
    assert!(
        field(&out[1], "ingress").contains("NetworkPolicy x/only-web"),
        "{:?}",
        out[1].fields
    );
}

// Cases transcribed from cyclonus (github.com/mattfenwick/cyclonus) at revision
// 12f646fbd7d348dedb538e4bb7f076e4d927d7a6: pkg/matcher/policy_tests.go (each asserts
// `IsTrafficAllowed(traffic).IsAllowed()`, ingress at the destination and egress at the source)
// and pkg/kube/ipaddress_tests.go (ipBlock with except).

/// One verdict over `objects` for endpoints given as the traffic in the test.
fn allowed(objects: Vec<Value>, src: Value, dst: Value, port: u16, proto: &str) -> bool {
    let out = handle(
        &json!({"op": "verdicts", "objects": objects, "endpoints": [src, dst],
        "connections": [[0, 1, port, proto]]}),
    )
    .expect("verdicts");
    let problems: Vec<String> = out
        .iter()
        .filter(|d| field(d, "kind") == "problem")
        .map(|d| field(d, "message"))
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    field(out.last().expect("a verdict"), "allowed") == "true"
}

#[test]
fn cyclonus_allowing_a_protocol_denies_the_others_policy_tests_go_30_to_103() {
    // policy-207: every peer, SCTP only, into every pod of x.
    let p = np(
        "policy-207",
        json!({"podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"protocol": "SCTP"}]}]}),
    );
    let pod_y = json!({"namespace": "y", "name": "p", "ip": "1.2.3.4"});
    let ext = json!({"ip": "1.2.3.4"});
    let dst = json!({"namespace": "x", "name": "q", "ip": "1.2.3.5"});
    // Lines 30 and 55: from pods.
    assert!(!allowed(
        vec![p.clone()],
        pod_y.clone(),
        dst.clone(),
        103,
        "TCP"
    ));
    assert!(allowed(vec![p.clone()], pod_y, dst.clone(), 103, "SCTP"));
    // Lines 82 and 103: from addresses.
    assert!(!allowed(
        vec![p.clone()],
        ext.clone(),
        dst.clone(),
        103,
        "TCP"
    ));
    assert!(allowed(vec![p], ext, dst, 103, "SCTP"));
}

#[test]
fn cyclonus_egress_to_ips_in_a_cidr_policy_tests_go_154() {
    // The destination pod is allowed because its address is in the ipBlock (host bits set in
    // the CIDR are ignored), not by the podSelector (namespace x only).
    let p = np(
        "vary-egress-37-0-0-0-19",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": 80, "protocol": "TCP"}],
                    "to": [{"podSelector": {}}, {"ipBlock": {"cidr": "192.168.242.213/24"}}]},
                   {"ports": [{"port": 53, "protocol": "UDP"}]}]}),
    );
    let src = json!({"namespace": "x", "name": "a", "labels": {"pod": "a"}, "namespace_labels": {"ns": "x"}, "ip": "1.2.3.4"});
    let dst = json!({"namespace": "y", "name": "b", "labels": {"pod": "b"}, "namespace_labels": {"ns": "y"}, "ip": "192.168.242.249"});
    assert!(allowed(
        vec![p.clone()],
        src.clone(),
        dst.clone(),
        80,
        "TCP"
    ));
    // Not in the test, same policy: another port is not allowed, DNS is to anyone.
    assert!(!allowed(
        vec![p.clone()],
        src.clone(),
        dst.clone(),
        81,
        "TCP"
    ));
    assert!(allowed(vec![p], src, dst, 53, "UDP"));
}

#[test]
fn cyclonus_ingress_to_a_named_port_policy_tests_go_200() {
    let p = np(
        "abc",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": "port-hello", "protocol": "TCP"}]}]}),
    );
    // The destination declares port-hello (the test leaves its number open: 8080 here).
    let pod = json!({"kind": "Pod", "metadata": {"name": "a", "namespace": "x", "labels": {"pod": "a"}},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "port-hello", "containerPort": 8080}]}]},
        "status": {"podIP": "192.168.242.249"}});
    let src = json!({"ip": "1.2.3.4"});
    let dst = json!({"namespace": "x", "name": "a", "labels": {"pod": "a"}, "namespace_labels": {"ns": "x"}, "ip": "192.168.242.249"});
    assert!(allowed(
        vec![p.clone(), pod.clone()],
        src.clone(),
        dst.clone(),
        8080,
        "TCP"
    ));
    assert!(!allowed(vec![p, pod], src, dst, 8081, "TCP"));
}

#[test]
fn cyclonus_ip_blocks_with_exceptions_ipaddress_tests_go_154() {
    let block = |cidr: &str, except: &[&str]| {
        np(
            "b",
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr, "except": except}}]}]}),
        )
    };
    let dst = json!({"namespace": "x", "name": "q", "ip": "10.0.0.1"});
    for (ip, except, want) in [
        ("1.2.3.3", "1.2.3.0/30", false),
        ("1.2.3.4", "1.2.3.4/30", false),
        ("1.2.3.3", "1.2.3.4/30", true),
    ] {
        let got = allowed(
            vec![block("1.2.3.0/28", &[except])],
            json!({"ip": ip}),
            dst.clone(),
            80,
            "TCP",
        );
        assert_eq!(got, want, "{ip} in 1.2.3.0/28 except {except}");
    }
    // Line 107: no exceptions, /31 leaves .3 out.
    for (cidr, want) in [
        ("1.2.3.0/24", true),
        ("1.2.3.0/28", true),
        ("1.2.3.0/30", true),
        ("1.2.3.0/31", false),
    ] {
        assert_eq!(
            allowed(
                vec![block(cidr, &[])],
                json!({"ip": "1.2.3.3"}),
                dst.clone(),
                80,
                "TCP"
            ),
            want,
            "{cidr}"
        );
    }
    // Lines 21 and 52: IPv6 membership.
    for (ip, cidr, want) in [
        (
            "fd00:10:244:a8:96fd:be93:52d8:6b85",
            "fd00:10:244:a8:96fd:be93:52d8:6b00/120",
            true,
        ),
        (
            "fd00:10:244:a8:96fd:be93:52d8:6b85",
            "fd00:10:244:a8:96fd:be93:52d8:6b80/124",
            true,
        ),
        (
            "fd00:10:244:a8:96fd:be93:52d8:6b90",
            "fd00:10:244:a8:96fd:be93:52d8:6b80/124",
            false,
        ),
        ("2001:db8::1.2.3.4", "2001:db8::/32", true),
        ("2001:db9::", "2001:db8::/32", false),
    ] {
        assert_eq!(
            allowed(
                vec![block(cidr, &[])],
                json!({"ip": ip}),
                dst.clone(),
                80,
                "TCP"
            ),
            want,
            "{ip} in {cidr}"
        );
    }
}

/// The (object index, field, message) of every record of `kind` in an answer.
fn notes_of(out: &[Decoded], kind: &str) -> Vec<(String, String, String)> {
    out.iter()
        .filter(|d| field(d, "kind") == kind)
        .map(|d| (field(d, "object"), field(d, "field"), field(d, "message")))
        .collect()
}

/// A named port no pod declares (by name, and by protocol for a NetworkPolicy) is a warning
/// naming the policy's field, never a problem; declared names, numeric strings and rules
/// their policyTypes leave out are not; input without pods is not checked; the policy still
/// applies.
#[test]
fn a_named_port_no_pod_declares_is_a_warning_naming_the_field() {
    let p = np(
        "named",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [
            {"port": "serve-80-tcp"},
            {"port": "metrics"},
            {"port": "serve-81-tcp", "protocol": "UDP"},
            {"port": "8080"},
        ]}]}),
    );
    // Egress rules its policyTypes leave out are never evaluated: not looked at.
    let ignored = np(
        "ingress-only",
        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}],
               "egress": [{"ports": [{"port": "nowhere"}]}]}),
    );
    let a = admin(
        "AdminNetworkPolicy",
        "named-admin",
        json!({"priority": 5, "subject": {"namespaces": {}}, "egress": [
            {"name": "dns", "action": "Allow", "to": [{"namespaces": {}}],
             "ports": [{"namedPort": "serve-80-udp"}, {"namedPort": "dns"}]}]}),
    );
    let mut objects = cluster();
    let base = objects.len();
    objects.extend([p.clone(), ignored, a]);
    let out = handle(&json!({"op": "table", "objects": objects, "ports": [{"port": 80}]})).unwrap();
    assert_eq!(notes_of(&out, "problem"), []);
    let warnings = notes_of(&out, "warning");
    let fields: Vec<(&str, &str)> = warnings
        .iter()
        .map(|(o, f, _)| (o.as_str(), f.as_str()))
        .collect();
    let (np_at, admin_at) = (base.to_string(), (base + 2).to_string());
    assert_eq!(
        fields,
        [
            (np_at.as_str(), "spec.ingress[0].ports[1].port"),
            (np_at.as_str(), "spec.ingress[0].ports[2].port"),
            (admin_at.as_str(), "spec.egress[0].ports[1].namedPort"),
        ],
        "{warnings:?}"
    );
    assert_eq!(
        warnings[0].2,
        "named port \"metrics\" (TCP) is declared by no pod in the input: the rule allows nothing on it until a pod declares it"
    );
    assert!(
        warnings[1].2.contains("\"serve-81-tcp\" (UDP)"),
        "{warnings:?}"
    );
    // The policies still apply: x/a takes port 80 (its declared name) from everyone.
    let rows: Vec<String> = out
        .iter()
        .filter(|d| field(d, "kind") == "row")
        .map(|d| field(d, "cells"))
        .collect();
    assert_eq!(rows.len(), 9);
    assert!(
        rows.iter()
            .all(|r| r.starts_with('.') || r.starts_with('#')),
        "{rows:?}"
    );
    // Policies alone (no pods to check against): no warning.
    let out = handle(&json!({"op": "describe", "objects": [p]})).unwrap();
    assert_eq!(notes_of(&out, "warning"), []);
}
