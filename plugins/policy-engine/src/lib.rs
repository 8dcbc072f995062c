//! The bundled network-policy engine: Kubernetes NetworkPolicy v1, AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1) evaluated over a cluster
//! given as objects. Built against the decoder world: a JSON request in, records out.
//!
//! Request (content type `application/vnd.weir.policy+json`):
//! `{"op": ..., "objects": [Kubernetes objects as JSON], ...}` with, per op:
//! - `table`: `ports` (`[{"port": 80, "protocol": "TCP"}]`), optional `naive` (evaluate every
//!   selector per cell, the benchmark's baseline). Records: one `pods` (`json`: the names,
//!   `ns/pod`), then a `row` per port and source pod: `port`, `protocol`, `from`, `cells`
//!   (`.` allowed, `X` blocked, `#` the pod itself, one per destination in `pods` order).
//! - `explain`: `from`, `to` (`ns/pod` or an address), `port`, `protocol`. One `explain`
//!   record whose `json` has the verdict and, per direction, the tier that decided and every
//!   policy and rule that took part.
//! - `verdicts`: `endpoints`, each `{"namespace", "name", "labels", "namespace_labels", "ip"}`
//!   (no namespace: outside the cluster), and `connections`, each `[src, dst, port,
//!   protocol]` with `src` and `dst` indices into `endpoints`. One `verdict` record each:
//!   `index`, `allowed`, and per direction the deciding tier and policies; with `"explain":
//!   false`, one `verdicts` record whose `allowed` has a `1` or `0` per connection.
//! - `describe`: a `policy` record per policy (the pods it selects, each rule's peers with the
//!   pods they match, its ports) and a `pod` record per pod (its workload, the policies that
//!   apply to it). With `pod` (`ns/name`), only that pod's record, with its effective peers:
//!   `allowed_from` (per container port of its own, the pods that may connect) and
//!   `allowed_to` (per container port of theirs, the pods it may connect to).
//!
//! Every op first reports each object it could not read as a `problem` record (`object`: the
//! index in `objects`, `field`, `message`); the others are still evaluated. Then each object
//! that was read but most likely does not mean what it says (a named port no pod of the input
//! declares) as a `warning` record with the same fields: the verdicts stand.

pub mod eval;
pub mod model;

use eval::{Conn, DirVerdict, Endpoint};
use model::{Cluster, Labels, Proto};
use serde_json::{Value, json};
use weir_plugin_sdk::decoder::{Decoded, Guest, PluginError, export};

struct PolicyEngine;

fn rec(fields: Vec<(&str, String)>) -> Decoded {
    Decoded {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

fn invalid(msg: impl Into<String>) -> PluginError {
    PluginError::InvalidInput(msg.into())
}

fn conn_of(port: Option<&Value>, proto: Option<&Value>, at: &str) -> Result<Conn, PluginError> {
    let port = port
        .and_then(Value::as_u64)
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| invalid(format!("{at}: port must be 1 to 65535")))? as u16;
    let proto = match proto.and_then(Value::as_str) {
        None => Proto::Tcp,
        Some(s) => Proto::parse(&s.to_ascii_uppercase())
            .ok_or_else(|| invalid(format!("{at}: protocol {s:?} is not TCP, UDP or SCTP")))?,
    };
    Ok(Conn { port, proto })
}

/// The whole request, evaluated.
pub fn handle(req: &Value) -> Result<Vec<Decoded>, PluginError> {
    let op = req.get("op").and_then(Value::as_str).unwrap_or("");
    let objects = match req.get("objects") {
        Some(Value::Array(a)) => a.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err(invalid("objects must be a list")),
    };
    let cluster = Cluster::load(objects);
    let mut out: Vec<Decoded> = cluster
        .problems
        .iter()
        .map(|p| ("problem", p))
        .chain(cluster.warnings.iter().map(|w| ("warning", w)))
        .map(|(kind, p)| {
            rec(vec![
                ("kind", kind.into()),
                ("object", p.object.to_string()),
                ("field", p.field.clone()),
                ("message", p.message.clone()),
            ])
        })
        .collect();
    match op {
        "table" => table(&cluster, req, &mut out)?,
        "explain" => out.push(explain(&cluster, req)?),
        "verdicts" => verdicts(&cluster, req, &mut out)?,
        "describe" => describe(&cluster, req.get("pod").and_then(Value::as_str), &mut out)?,
        other => {
            return Err(invalid(format!(
                "op {other:?} is not table, explain, verdicts or describe"
            )));
        }
    }
    Ok(out)
}

fn pod_name(c: &Cluster, i: usize) -> String {
    format!("{}/{}", c.pods[i].ns, c.pods[i].name)
}

fn table(c: &Cluster, req: &Value, out: &mut Vec<Decoded>) -> Result<(), PluginError> {
    let mut ports = vec![];
    for (i, p) in req
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        ports.push(conn_of(
            p.get("port"),
            p.get("protocol"),
            &format!("ports[{i}]"),
        )?);
    }
    if ports.is_empty() {
        return Err(invalid("a table needs at least one port"));
    }
    let naive = req.get("naive").and_then(Value::as_bool).unwrap_or(false);
    let nsl = c.pod_ns_labels();
    let ix = (!naive).then(|| c.index(&nsl));
    let n = c.pods.len();
    let names: Vec<String> = (0..n).map(|i| pod_name(c, i)).collect();
    out.push(rec(vec![
        ("kind", "pods".into()),
        ("json", Value::from(names.clone()).to_string()),
    ]));
    let eps: Vec<Endpoint> = (0..n).map(|i| c.pod_endpoint(i, &nsl[i])).collect();
    for conn in ports {
        for (s, src) in eps.iter().enumerate() {
            let mut cells = String::with_capacity(n);
            for (d, dst) in eps.iter().enumerate() {
                cells.push(if s == d {
                    '#'
                } else if c.allowed(ix.as_ref(), src, dst, conn) {
                    '.'
                } else {
                    'X'
                });
            }
            out.push(rec(vec![
                ("kind", "row".into()),
                ("port", conn.port.to_string()),
                ("protocol", conn.proto.name().into()),
                ("from", names[s].clone()),
                ("cells", cells),
            ]));
        }
    }
    Ok(())
}

fn dir_json(v: &DirVerdict) -> Value {
    json!({
        "allowed": v.allowed,
        "decided_by": v.tier.name(),
        "steps": v.steps.iter().map(|s| json!({"policy": s.policy, "rule": s.rule, "effect": s.effect})).collect::<Vec<_>>(),
    })
}

/// An endpoint named `ns/pod` or by address (a pod's address is that pod).
fn find(c: &Cluster, s: &str, at: &str) -> Result<Result<usize, std::net::IpAddr>, PluginError> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(c.pods.iter().position(|p| p.ips.contains(&ip)).ok_or(ip));
    }
    let (ns, name) = s
        .split_once('/')
        .ok_or_else(|| invalid(format!("{at}: {s:?} is neither ns/pod nor an address")))?;
    c.pods
        .iter()
        .position(|p| p.ns == ns && p.name == name)
        .map(Ok)
        .ok_or_else(|| invalid(format!("{at}: no pod {s} in the cluster given")))
}

fn explain(c: &Cluster, req: &Value) -> Result<Decoded, PluginError> {
    let get = |k: &str| {
        req.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("explain needs {k:?} (ns/pod or an address)")))
    };
    let (from, to) = (get("from")?, get("to")?);
    let conn = conn_of(req.get("port"), req.get("protocol"), "explain")?;
    let nsl = c.pod_ns_labels();
    let empty = Labels::new();
    let ep = |r: Result<usize, std::net::IpAddr>| match r {
        Ok(i) => c.pod_endpoint(i, &nsl[i]),
        Err(ip) => Endpoint {
            pod: None,
            ns: None,
            labels: &empty,
            ns_labels: &empty,
            ip: Some(ip),
            ports: &[],
        },
    };
    let (src, dst) = (ep(find(c, from, "from")?), ep(find(c, to, "to")?));
    let (eg, ing) = c.verdict(None, &src, &dst, conn, true);
    let j = json!({
        "from": from, "to": to, "port": conn.port, "protocol": conn.proto.name(),
        "allowed": eg.allowed && ing.allowed,
        "egress": dir_json(&eg),
        "ingress": dir_json(&ing),
    });
    Ok(rec(vec![
        ("kind", "explain".into()),
        ("json", j.to_string()),
    ]))
}

/// An endpoint described in a `verdicts` request, owned.
struct Given {
    ns: Option<String>,
    labels: Labels,
    ns_labels: Labels,
    ip: Option<std::net::IpAddr>,
    pod: Option<usize>,
}

fn labels_in(v: Option<&Value>) -> Labels {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn given(c: &Cluster, v: &Value) -> Given {
    let s = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let ns = s("namespace").map(str::to_string);
    let name = s("name");
    let ip = s("ip").and_then(|s| s.parse().ok());
    let pod = ns.as_ref().and_then(|ns| {
        c.pods
            .iter()
            .position(|p| &p.ns == ns && Some(p.name.as_str()) == name)
    });
    let mut ns_labels = labels_in(v.get("namespace_labels"));
    if let Some(ns) = &ns {
        if ns_labels.is_empty() {
            ns_labels = c.ns_labels(ns);
        }
        ns_labels
            .entry(model::NS_NAME_LABEL.into())
            .or_insert_with(|| ns.clone());
    }
    Given {
        ns,
        labels: labels_in(v.get("labels")),
        ns_labels,
        ip,
        pod,
    }
}

fn brief(v: &DirVerdict) -> String {
    let mut s = v.tier.name().to_string();
    let names: Vec<&str> = v.steps.iter().map(|s| s.policy.as_str()).collect();
    if !names.is_empty() {
        s.push_str(": ");
        s.push_str(&names.join("; "));
    }
    s
}

/// `endpoints` (each as captured: labels, namespace labels, address) and `connections` as
/// `[src index, dst index, port, protocol]`: an endpoint used by many connections is
/// selected once (the same index a truth table uses).
fn verdicts(c: &Cluster, req: &Value, out: &mut Vec<Decoded>) -> Result<(), PluginError> {
    let given_eps: Vec<Given> = req
        .get("endpoints")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("verdicts needs endpoints"))?
        .iter()
        .map(|v| given(c, v))
        .collect();
    let conns = req
        .get("connections")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("verdicts needs connections"))?;
    let eps: Vec<Endpoint> = given_eps
        .iter()
        .enumerate()
        .map(|(i, g)| Endpoint {
            pod: Some(i),
            ns: g.ns.as_deref(),
            labels: &g.labels,
            ns_labels: &g.ns_labels,
            ip: g.ip,
            ports: g.pod.map(|p| c.pods[p].ports.as_slice()).unwrap_or(&[]),
        })
        .collect();
    let ix = c.index_of(&eps);
    // Without explanations, one record for the whole request: a `1` or `0` per connection.
    let explain = req.get("explain").and_then(Value::as_bool).unwrap_or(true);
    let mut bits = String::with_capacity(if explain { 0 } else { conns.len() });
    for (i, k) in conns.iter().enumerate() {
        let at = format!("connections[{i}]");
        let a = k
            .as_array()
            .filter(|a| a.len() == 4)
            .ok_or_else(|| invalid(format!("{at}: [src, dst, port, protocol]")))?;
        let ep = |v: &Value| {
            v.as_u64()
                .and_then(|i| eps.get(i as usize))
                .ok_or_else(|| invalid(format!("{at}: no such endpoint {v}")))
        };
        let (src, dst) = (ep(&a[0])?, ep(&a[1])?);
        let conn = conn_of(Some(&a[2]), Some(&a[3]), &at)?;
        if !explain {
            bits.push(if c.allowed(Some(&ix), src, dst, conn) {
                '1'
            } else {
                '0'
            });
            continue;
        }
        let (eg, ing) = c.verdict(Some(&ix), src, dst, conn, true);
        out.push(rec(vec![
            ("kind", "verdict".into()),
            ("index", i.to_string()),
            ("allowed", (eg.allowed && ing.allowed).to_string()),
            ("egress_allowed", eg.allowed.to_string()),
            ("egress", brief(&eg)),
            ("ingress_allowed", ing.allowed.to_string()),
            ("ingress", brief(&ing)),
        ]));
    }
    if !explain {
        out.push(rec(vec![("kind", "verdicts".into()), ("allowed", bits)]));
    }
    Ok(())
}

fn describe(c: &Cluster, only: Option<&str>, out: &mut Vec<Decoded>) -> Result<(), PluginError> {
    let nsl = c.pod_ns_labels();
    let eps: Vec<Endpoint> = (0..c.pods.len())
        .map(|i| c.pod_endpoint(i, &nsl[i]))
        .collect();
    let names = |f: &dyn Fn(&Endpoint) -> bool| -> Vec<String> {
        eps.iter()
            .enumerate()
            .filter(|(_, e)| f(e))
            .map(|(i, _)| pod_name(c, i))
            .collect()
    };
    let ports_json = |ports: &[model::PortSpec]| -> Vec<String> {
        ports
            .iter()
            .map(|p| match (&p.port, p.end) {
                (None, _) => format!("all/{}", p.proto.name()),
                (Some(model::PortRef::Num(s)), Some(e)) => format!("{s}-{e}/{}", p.proto.name()),
                (Some(model::PortRef::Num(s)), None) => format!("{s}/{}", p.proto.name()),
                (Some(model::PortRef::Name(n)), _) => format!("{n}/{}", p.proto.name()),
            })
            .collect()
    };
    let mut applies: Vec<(Vec<String>, Vec<String>)> = vec![(vec![], vec![]); eps.len()];
    for p in &c.netpols {
        let label = format!("NetworkPolicy {}/{}", p.ns, p.name);
        for (i, e) in eps.iter().enumerate() {
            if e.ns == Some(p.ns.as_str()) && p.selector.matches(e.labels) {
                if p.ingress.is_some() {
                    applies[i].0.push(label.clone());
                }
                if p.egress.is_some() {
                    applies[i].1.push(label.clone());
                }
            }
        }
        let rules = |rs: &Option<Vec<model::Rule>>| -> Value {
            match rs {
                None => Value::Null,
                Some(rs) => rs
                    .iter()
                    .map(|r| {
                        let peers: Vec<Value> = if r.peers.is_empty() {
                            vec![json!({"peer": "any", "pods": names(&|_| true)})]
                        } else {
                            r.peers
                                .iter()
                                .map(|peer| {
                                    json!({
                                        "peer": peer_text(peer),
                                        "pods": names(&|e| eval::rule_peers_match(&p.ns, std::slice::from_ref(peer), e)),
                                    })
                                })
                                .collect()
                        };
                        json!({"peers": peers, "ports": if r.ports.is_empty() { vec!["all".to_string()] } else { ports_json(&r.ports) }})
                    })
                    .collect(),
            }
        };
        let j = json!({
            "kind": "NetworkPolicy", "namespace": p.ns, "name": p.name,
            "selector": selector_text(&p.selector),
            "selects": names(&|e| e.ns == Some(p.ns.as_str()) && p.selector.matches(e.labels)),
            "ingress": rules(&p.ingress),
            "egress": rules(&p.egress),
        });
        out.push(rec(vec![
            ("kind", "policy".into()),
            ("json", j.to_string()),
        ]));
    }
    for a in c.admins.iter().chain(c.baseline.iter()) {
        for (i, e) in eps.iter().enumerate() {
            if eval::subject_matches(&a.subject, e) {
                applies[i].0.push(a.label());
                applies[i].1.push(a.label());
            }
        }
        let rules = |rs: &[model::ARule]| -> Vec<Value> {
            rs.iter()
                .map(|r| {
                    json!({
                        "name": r.name, "action": r.action.name(),
                        "pods": names(&|e| r.peers.iter().any(|s| eval::subject_matches(s, e))),
                    })
                })
                .collect()
        };
        let j = json!({
            "kind": if a.baseline { "BaselineAdminNetworkPolicy" } else { "AdminNetworkPolicy" },
            "name": a.name, "priority": if a.baseline { Value::Null } else { Value::from(a.priority) },
            "selects": names(&|e| eval::subject_matches(&a.subject, e)),
            "ingress": rules(&a.ingress), "egress": rules(&a.egress),
        });
        out.push(rec(vec![
            ("kind", "policy".into()),
            ("json", j.to_string()),
        ]));
    }
    let one = match only {
        Some(name) => Some(
            (0..c.pods.len())
                .find(|&i| pod_name(c, i) == name)
                .ok_or_else(|| invalid(format!("pod: no pod {name} in the cluster given")))?,
        ),
        None => None,
    };
    let ix = one.map(|_| c.index(&nsl));
    for (i, (ing, eg)) in applies.into_iter().enumerate() {
        let p = &c.pods[i];
        let mut j = json!({
            "pod": pod_name(c, i), "workload": format!("{}/{}", p.ns, p.workload), "labels": p.labels,
            "ips": p.ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            "ingress": ing, "egress": eg,
            "isolated_ingress": c.netpols.iter().any(|n| n.ingress.is_some() && eps[i].ns == Some(n.ns.as_str()) && n.selector.matches(&p.labels)),
            "isolated_egress": c.netpols.iter().any(|n| n.egress.is_some() && eps[i].ns == Some(n.ns.as_str()) && n.selector.matches(&p.labels)),
        });
        // For the one pod asked about: the effective peers, per declared container port.
        if one == Some(i) {
            let mut from = serde_json::Map::new();
            let mut to = serde_json::Map::new();
            for (k, other) in eps.iter().enumerate() {
                if k == i {
                    continue;
                }
                for cp in &p.ports {
                    let conn = Conn {
                        port: cp.port,
                        proto: cp.proto,
                    };
                    if c.allowed(ix.as_ref(), other, &eps[i], conn) {
                        let e = from
                            .entry(format!("{}/{}", cp.port, cp.proto.name()))
                            .or_insert_with(|| json!([]));
                        if let Some(a) = e.as_array_mut() {
                            a.push(Value::from(pod_name(c, k)));
                        }
                    }
                }
                for cp in &c.pods[k].ports {
                    let conn = Conn {
                        port: cp.port,
                        proto: cp.proto,
                    };
                    if c.allowed(ix.as_ref(), &eps[i], other, conn) {
                        let e = to
                            .entry(format!("{}/{}", cp.port, cp.proto.name()))
                            .or_insert_with(|| json!([]));
                        if let Some(a) = e.as_array_mut() {
                            a.push(Value::from(pod_name(c, k)));
                        }
                    }
                }
            }
            j["allowed_from"] = Value::Object(from);
            j["allowed_to"] = Value::Object(to);
        }
        if only.is_none() || one == Some(i) {
            out.push(rec(vec![("kind", "pod".into()), ("json", j.to_string())]));
        }
    }
    Ok(())
}

fn selector_text(s: &model::Selector) -> String {
    if s.is_empty() {
        return "(all)".into();
    }
    let mut parts: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in &s.exprs {
        parts.push(match e {
            model::Expr::In(k, v) => format!("{k} in ({})", v.join(",")),
            model::Expr::NotIn(k, v) => format!("{k} notin ({})", v.join(",")),
            model::Expr::Exists(k) => k.clone(),
            model::Expr::DoesNotExist(k) => format!("!{k}"),
        });
    }
    parts.join(",")
}

fn peer_text(p: &model::Peer) -> String {
    match p {
        model::Peer::Pods { ns, pods } => {
            let ns = ns.as_ref().map_or("same namespace".to_string(), |s| {
                format!("namespaces {}", selector_text(s))
            });
            let pods = pods.as_ref().map_or("all pods".to_string(), |s| {
                format!("pods {}", selector_text(s))
            });
            format!("{pods} in {ns}")
        }
        model::Peer::Block { cidr, except } => {
            let mut s = format!("ipBlock {cidr}");
            if !except.is_empty() {
                let ex: Vec<String> = except.iter().map(|e| e.to_string()).collect();
                s.push_str(&format!(" except {}", ex.join(", ")));
            }
            s
        }
    }
}

impl Guest for PolicyEngine {
    fn decode(input: Vec<u8>, content_type: String) -> Result<Vec<Decoded>, PluginError> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        if ct != "application/vnd.weir.policy+json" && ct != "application/json" {
            return Err(invalid(format!(
                "content type {ct:?}: this decoder takes application/vnd.weir.policy+json"
            )));
        }
        let req: Value = serde_json::from_slice(&input).map_err(|e| {
            invalid(format!(
                "request JSON, line {} column {}: {e}",
                e.line(),
                e.column()
            ))
        })?;
        handle(&req)
    }
}

export!(PolicyEngine);

#[cfg(test)]
mod tests;
