//! Observed against allowed, for one pod: the conversations the store saw it take part in
//! (as client or server), each judged under the policies in force; the allowed paths it never
//! used, ingress (cluster pods to its container ports) and egress (it to other pods' container
//! ports); and the tightest NetworkPolicy that still allows everything observed, as YAML (the
//! start of a least-privilege policy).

use super::whatif::{Observed, judge, observe, reasons};
use super::{Objects, PolicyEngine, PolicyError, PortProto, Protocol};
use crate::query::TimeRange;
use crate::store::Store;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// One observed conversation of the pod.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    /// `ingress` (the pod served it) or `egress` (the pod opened it).
    pub direction: &'static str,
    /// The other end: `ns/workload` or an address.
    pub peer: String,
    pub peer_addr: String,
    pub port: u16,
    pub protocol: Protocol,
    pub flows: u64,
    pub bytes: u64,
    pub allowed: bool,
    pub reason: String,
}

/// An allowed path never seen: the peer (`ns/pod`: the source of an ingress path, the
/// destination of an egress one) and the destination's container port.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unused {
    pub peer: String,
    pub port: PortProto,
}

#[derive(Debug, serde::Serialize)]
pub struct PodView {
    pub pod: String,
    pub address: String,
    pub observed: Vec<Seen>,
    /// Cluster pods allowed to reach the pod's container ports that never did.
    pub unused_ingress: Vec<Unused>,
    /// Other pods' container ports the pod may reach and never did.
    pub unused_egress: Vec<Unused>,
    /// A NetworkPolicy allowing exactly what was observed.
    pub suggestion: String,
    pub problems: Vec<String>,
    /// What the engine warned about (a named port no pod declares): not a failure.
    pub warnings: Vec<String>,
}

fn pod_object<'a>(objects: &'a Objects, pod: &str) -> Option<&'a Value> {
    let (ns, name) = pod.split_once('/')?;
    objects.items.iter().find(|o| {
        o.get("kind").and_then(Value::as_str) == Some("Pod")
            && o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
            && o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
    })
}

/// `k=v,k2=v2` into a map.
fn labels_map(s: &str) -> Map<String, Value> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), Value::from(v)))
        .collect()
}

/// The view of `pod` (`ns/name`) over a window.
pub fn pod_view(
    engine: &dyn PolicyEngine,
    objects: &Objects,
    store: &Store,
    range: &TimeRange,
    pod: &str,
) -> Result<PodView, PolicyError> {
    let obj = pod_object(objects, pod)
        .ok_or_else(|| PolicyError::Invalid(format!("no pod {pod} in the cluster")))?;
    let ip: IpAddr = obj
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| PolicyError::Invalid(format!("pod {pod} has no address")))?;
    let filter = crate::query::parse(&format!("SrcAddr={ip} or DstAddr={ip}"))
        .map_err(|e| PolicyError::Invalid(e.to_string()))?;
    let mut seen: Observed = observe(store, &filter, range)?;
    seen.conversations
        .retain(|c| c.client == ip || c.server == ip);
    let (judged, problems) = judge(engine, objects, &seen)?;
    let all: Vec<usize> = (0..seen.conversations.len()).collect();
    let why = reasons(engine, objects, &seen, &all)?;
    let name_of = |a: IpAddr| -> String {
        match seen.identities.get(&a).filter(|i| !i.namespace.is_empty()) {
            Some(i) => format!("{}/{}", i.namespace, i.workload),
            None => a.to_string(),
        }
    };
    let mut observed = vec![];
    for (i, (c, allowed)) in seen.conversations.iter().zip(&judged).enumerate() {
        let (direction, other) = if c.server == ip {
            ("ingress", c.client)
        } else {
            ("egress", c.server)
        };
        observed.push(Seen {
            direction,
            peer: name_of(other),
            peer_addr: other.to_string(),
            port: c.port,
            protocol: c.protocol,
            flows: c.flows,
            bytes: c.bytes,
            allowed: *allowed,
            reason: why.get(&i).cloned().unwrap_or_default(),
        });
    }
    // Allowed paths never used: the pod's effective peers from the engine (ingress: cluster
    // pods to its own container ports; egress: it to every other pod's container ports),
    // minus the conversations observed with that peer's address on that port.
    let (described, problems2) = super::describe(engine, objects, Some(pod))?;
    let mut found = problems;
    found.merge(problems2);
    let addrs: BTreeMap<String, Option<IpAddr>> = objects.pod_addresses().into_iter().collect();
    let unused = |direction: &str, key: &str| -> Vec<Unused> {
        let mut out = vec![];
        let peers = described
            .pointer(&format!("/pods/0/{key}"))
            .and_then(Value::as_object);
        for (port, names) in peers.into_iter().flatten() {
            let Ok(port) = port.parse::<PortProto>() else {
                continue;
            };
            for name in names
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let used = addrs.get(name).copied().flatten().is_some_and(|a| {
                    observed.iter().any(|s| {
                        s.direction == direction
                            && s.peer_addr == a.to_string()
                            && s.port == port.port
                            && s.protocol == port.protocol
                    })
                });
                if !used {
                    out.push(Unused {
                        peer: name.to_string(),
                        port,
                    });
                }
            }
        }
        // A port two containers declare is one path.
        out.sort_by(|a, b| (&a.peer, a.port).cmp(&(&b.peer, b.port)));
        out.dedup_by(|a, b| a.peer == b.peer && a.port == b.port);
        out
    };
    let unused_ingress = unused("ingress", "allowed_from");
    let unused_egress = unused("egress", "allowed_to");
    Ok(PodView {
        pod: pod.to_string(),
        address: ip.to_string(),
        suggestion: suggest(obj, &observed, &seen),
        observed,
        unused_ingress,
        unused_egress,
        problems: found.problems.iter().map(|p| p.to_string()).collect(),
        warnings: found.warnings.iter().map(|p| p.to_string()).collect(),
    })
}

/// A rule's peer (JSON) and its (protocol, port)s.
type PeerPorts = (Value, BTreeSet<(String, u16)>);

/// The tightest NetworkPolicy allowing what was observed (allowed or not): one rule per
/// peer, with the ports seen; pods by their namespace and labels, others by address.
fn suggest(pod: &Value, observed: &[Seen], seen: &Observed) -> String {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let labels = pod
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut rules: BTreeMap<(&str, String), PeerPorts> = BTreeMap::new();
    for s in observed {
        let ip: Option<IpAddr> = s.peer_addr.parse().ok();
        let id = ip
            .and_then(|ip| seen.identities.get(&ip))
            .filter(|i| !i.namespace.is_empty());
        let peer = match id {
            Some(i) => json!({
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": i.namespace}},
                "podSelector": {"matchLabels": labels_map(&i.labels)},
            }),
            None => json!({"ipBlock": {"cidr": match ip {
                Some(IpAddr::V6(a)) => format!("{a}/128"),
                _ => format!("{}/32", s.peer_addr),
            }}}),
        };
        let e = rules
            .entry((s.direction, peer.to_string()))
            .or_insert_with(|| (peer, BTreeSet::new()));
        e.1.insert((s.protocol.name().to_string(), s.port));
    }
    let rule = |dir: &str, key: &str| -> Vec<Value> {
        rules
            .iter()
            .filter(|((d, _), _)| *d == dir)
            .map(|(_, (peer, ports))| {
                json!({key: [peer], "ports": ports.iter().map(|(proto, port)| json!({"protocol": proto, "port": port})).collect::<Vec<_>>()})
            })
            .collect()
    };
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": format!("{name}-observed"), "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": labels},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": rule("ingress", "from"),
            "egress": rule("egress", "to"),
        },
    });
    let body = serde_yaml::to_string(&policy).unwrap_or_default();
    format!(
        "# The tightest policy that still allows what {ns}/{name} was seen doing (generated by weir;\n# review before applying: DNS and traffic outside the window are not in it).\n{body}"
    )
}
