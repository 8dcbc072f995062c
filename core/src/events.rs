//! Kubernetes events and changes into the records store, so they outlive the API server's one
//! hour and stand on the timeline next to the flows: the "events" stage after the watcher.
//!
//! Each poll lists the watcher's `Event` objects ([`ObjectSource`]) and writes every event not
//! seen before (by uid and count, so a repeated event is one record per repetition) as kind
//! `k8s-event`: its reason and message as text, labels `reason`, `type`, `severity`,
//! `object_kind`, `namespace`, `name`, `workload` (a Pod's owner; a ReplicaSet made by a
//! Deployment is shown as the Deployment), `count`, `uid`; and a flow filter selecting the
//! flows of the pod, node or namespace it is about. NetworkPolicy objects are compared between
//! polls: one created, changed or deleted is a `k8s-change` record. So are EndpointSlices,
//! by their ready addresses: a service's endpoints added or removed is a `k8s-change` record
//! naming the service and the addresses, its flow filter selecting those addresses' flows (a
//! warning when none is left ready). On start the seen set is
//! read back from the records of the last [`SEEN_WINDOW_MS`], so a restart writes nothing twice.

use crate::objects::{ObjectSource, Selector};
use crate::records::{Entry, RecordError, RecordQuery, RecordStore};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The records' source name.
pub const SOURCE: &str = "k8s";
/// How far back a restarted recorder looks for what it already wrote.
pub const SEEN_WINDOW_MS: u64 = 3 * 3600 * 1000;
/// Reasons drawn as critical (the pod or node lost work).
const CRITICAL: &[&str] = &[
    "OOMKilling",
    "OOMKilled",
    "Evicted",
    "SystemOOM",
    "NodeNotReady",
    "FailedKillPod",
];

/// Writes new Kubernetes events and policy changes as records.
pub struct EventRecorder {
    objects: Arc<dyn ObjectSource>,
    records: Arc<RecordStore>,
    /// `uid/count` of every event written.
    seen: HashSet<String>,
    /// NetworkPolicy `namespace/name` -> resourceVersion at the last poll (None: not primed).
    policies: Option<HashMap<String, String>>,
    /// Service `namespace/name` (a slice's own name when it has no service) -> (service,
    /// ready addresses of all its EndpointSlices) at the last poll (None: not primed).
    endpoints: Option<HashMap<String, (String, BTreeSet<String>)>>,
    /// Event `namespace/name` -> hash of its JSON at the last poll: an event that did not
    /// change is not read again.
    events: HashMap<String, u64>,
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or("")
}

/// RFC 3339 with any fraction (Kubernetes' eventTime carries microseconds) to Unix ms.
fn time_ms(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let (head, frac) = match text.split_once('.') {
        Some((h, rest)) => {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            (
                h.to_string(),
                format!("{:0<3}", &digits[..digits.len().min(3)]),
            )
        }
        None => (text.trim_end_matches('Z').to_string(), "000".to_string()),
    };
    let head = head.trim_end_matches('Z');
    crate::query::parse_time(&format!("{head}.{frac}Z"), 0).ok()
}

/// A Pod's workload from its JSON: its controller owner, a ReplicaSet named
/// `<deployment>-<pod-template-hash>` shown as the Deployment.
pub fn workload_of(pod: &Value) -> String {
    let owners = pod["metadata"]["ownerReferences"].as_array();
    let hash = s(pod, &["metadata", "labels", "pod-template-hash"]);
    crate::objects::pod_workload(
        owners.into_iter().flatten().map(|o| {
            (
                s(o, &["kind"]),
                s(o, &["name"]),
                o["controller"].as_bool() == Some(true),
            )
        }),
        (!hash.is_empty()).then_some(hash),
    )
    .map(|(name, _)| name)
    .unwrap_or_default()
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn cut(text: &mut String, max: usize) {
    let keep = crate::records::cut(text, max).len();
    text.truncate(keep);
}

fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The flows an object is about, as a filter.
fn flow_filter(kind: &str, namespace: &str, name: &str) -> Option<String> {
    match kind {
        "Pod" | "Service" => Some(format!(
            "(SrcK8S_Namespace={ns} and SrcK8S_Name={n}) or (DstK8S_Namespace={ns} and DstK8S_Name={n})",
            ns = quote(namespace),
            n = quote(name)
        )),
        "Node" => Some(format!(
            "SrcK8S_HostName={n} or DstK8S_HostName={n}",
            n = quote(name)
        )),
        "Namespace" => Some(format!("K8S_Namespace={}", quote(name))),
        _ if !namespace.is_empty() => Some(format!("K8S_Namespace={}", quote(namespace))),
        _ => None,
    }
}

/// The object an Event is about (`involvedObject` in core/v1, `regarding` in
/// events.k8s.io/v1).
fn about(ev: &Value) -> &Value {
    if ev["involvedObject"].is_object() {
        &ev["involvedObject"]
    } else {
        &ev["regarding"]
    }
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// One Event object (core/v1 or events.k8s.io/v1) as a record, with its dedup key.
pub fn event_entry(
    ev: &Value,
    workloads: &HashMap<(String, String), String>,
) -> Option<(String, Entry)> {
    let uid = s(ev, &["metadata", "uid"]);
    let uid = if uid.is_empty() {
        format!(
            "{}/{}",
            s(ev, &["metadata", "namespace"]),
            s(ev, &["metadata", "name"])
        )
    } else {
        uid.to_string()
    };
    let count = ev["count"]
        .as_u64()
        .or_else(|| ev["series"]["count"].as_u64())
        .or_else(|| ev["deprecatedCount"].as_u64())
        .unwrap_or(1);
    let about = about(ev);
    let (kind, namespace, name) = (
        s(about, &["kind"]),
        s(about, &["namespace"]),
        s(about, &["name"]),
    );
    let time = [
        s(ev, &["lastTimestamp"]),
        s(ev, &["series", "lastObservedTime"]),
        s(ev, &["eventTime"]),
        s(ev, &["firstTimestamp"]),
        s(ev, &["deprecatedLastTimestamp"]),
        s(ev, &["metadata", "creationTimestamp"]),
    ]
    .into_iter()
    .find_map(time_ms)?;
    let reason = s(ev, &["reason"]);
    let message = [s(ev, &["message"]), s(ev, &["note"])]
        .into_iter()
        .find(|m| !m.is_empty())
        .unwrap_or("");
    let etype = s(ev, &["type"]);
    let severity = if CRITICAL.contains(&reason) {
        "critical"
    } else if etype == "Warning" {
        "warning"
    } else {
        "info"
    };
    let mut labels = vec![
        ("reason".to_string(), reason.to_string()),
        ("type".to_string(), etype.to_string()),
        ("severity".to_string(), severity.to_string()),
        ("object_kind".to_string(), kind.to_string()),
        ("namespace".to_string(), namespace.to_string()),
        ("name".to_string(), name.to_string()),
        ("count".to_string(), count.to_string()),
        ("uid".to_string(), uid.clone()),
    ];
    if kind == "Pod"
        && let Some(w) = workloads.get(&(namespace.to_string(), name.to_string()))
        && !w.is_empty()
    {
        labels.push(("workload".into(), w.clone()));
    }
    for l in labels.iter_mut() {
        cut(&mut l.1, crate::records::MAX_LABEL_BYTES);
    }
    let mut text = format!("{reason}: {kind} {namespace}/{name}: {message}");
    cut(&mut text, crate::records::MAX_TEXT);
    Some((
        format!("{uid}/{count}"),
        Entry {
            time_ms: time,
            end_ms: None,
            kind: "k8s-event".into(),
            text,
            labels,
            flow_filter: flow_filter(kind, namespace, name),
        },
    ))
}

/// NetworkPolicies created, changed (another resourceVersion) or deleted between two lists.
fn policy_changes(
    before: &HashMap<String, String>,
    now: &HashMap<String, String>,
) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = now
        .iter()
        .filter_map(|(k, rv)| match before.get(k) {
            None => Some((k.clone(), "created")),
            Some(old) if old != rv => Some((k.clone(), "changed")),
            _ => None,
        })
        .collect();
    out.extend(
        before
            .keys()
            .filter(|k| !now.contains_key(*k))
            .map(|k| (k.clone(), "deleted")),
    );
    out.sort();
    out
}

fn change_entry(key: &str, what: &str, now_ms: u64) -> Entry {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    Entry {
        time_ms: now_ms,
        end_ms: None,
        kind: "k8s-change".into(),
        text: format!("NetworkPolicy {key} {what}"),
        labels: vec![
            ("object_kind".into(), "NetworkPolicy".into()),
            ("namespace".into(), ns.into()),
            ("name".into(), name.into()),
            ("change".into(), what.into()),
            ("severity".into(), "info".into()),
        ],
        flow_filter: flow_filter("NetworkPolicy", ns, name),
    }
}

/// An EndpointSlice's service and ready addresses.
fn slice_endpoints(v: &Value) -> (String, BTreeSet<String>) {
    let service = s(v, &["metadata", "labels", "kubernetes.io/service-name"]).to_string();
    let ready = v["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        // A missing `ready` condition means ready (the API's rule).
        .filter(|e| e["conditions"]["ready"].as_bool() != Some(false))
        .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
        // IP addresses only: an FQDN slice names hosts no flow carries.
        .filter_map(|a| a.as_str()?.parse::<std::net::IpAddr>().ok())
        .map(|a| a.to_string())
        .collect();
    (service, ready)
}

/// Endpoint changes between two polls: one record per service whose ready addresses changed
/// (its first and its last slice included).
fn endpoint_changes(
    before: &HashMap<String, (String, BTreeSet<String>)>,
    now: &HashMap<String, (String, BTreeSet<String>)>,
    now_ms: u64,
) -> Vec<Entry> {
    let empty = (String::new(), BTreeSet::new());
    let mut keys: BTreeSet<&String> = before.keys().collect();
    keys.extend(now.keys());
    let mut out = Vec::new();
    for key in keys {
        let (old, new) = (before.get(key), now.get(key));
        let service = &new.or(old).unwrap_or(&empty).0;
        let old_ready = old.map(|o| &o.1).unwrap_or(&empty.1);
        let new_ready = new.map(|n| &n.1).unwrap_or(&empty.1);
        let added: Vec<&String> = new_ready.difference(old_ready).collect();
        let removed: Vec<&String> = old_ready.difference(new_ready).collect();
        let change = match (old, new) {
            (None, Some(_)) => "created",
            (Some(_), None) => "deleted",
            _ if added.is_empty() && removed.is_empty() => continue,
            _ => "changed",
        };
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let list = |v: &[&String]| v.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(",");
        let mut what = Vec::new();
        if !added.is_empty() {
            what.push(format!("{} added", list(&added)));
        }
        if !removed.is_empty() {
            what.push(format!("{} removed", list(&removed)));
        }
        // The service lost its last ready endpoint here.
        let gone = !old_ready.is_empty() && new_ready.is_empty();
        let owner = if service.is_empty() {
            format!("EndpointSlice {key}")
        } else {
            format!("service {ns}/{service}")
        };
        let mut text = format!(
            "Endpoints of {owner} {change}{}{}{}",
            if what.is_empty() { "" } else { ": " },
            what.join(", "),
            if gone { "; none ready" } else { "" }
        );
        cut(&mut text, crate::records::MAX_TEXT);
        let touched: Vec<&&String> = added.iter().chain(removed.iter()).take(32).collect();
        let flow_filter = (!touched.is_empty()).then(|| {
            touched
                .iter()
                .map(|a| format!("Addr={a}"))
                .collect::<Vec<_>>()
                .join(" or ")
        });
        let mut labels = vec![
            ("object_kind".to_string(), "EndpointSlice".to_string()),
            ("namespace".into(), ns.into()),
            ("name".into(), name.into()),
            ("service".into(), service.clone()),
            ("change".into(), change.into()),
            ("added".into(), list(&added)),
            ("removed".into(), list(&removed)),
            (
                "severity".into(),
                if gone { "warning" } else { "info" }.into(),
            ),
        ];
        for l in labels.iter_mut() {
            cut(&mut l.1, crate::records::MAX_LABEL_BYTES);
        }
        out.push(Entry {
            time_ms: now_ms,
            end_ms: None,
            kind: "k8s-change".into(),
            text,
            labels,
            flow_filter,
        });
    }
    out
}

impl EventRecorder {
    /// A recorder that knows what the records of the last [`SEEN_WINDOW_MS`] already hold.
    pub fn new(
        objects: Arc<dyn ObjectSource>,
        records: Arc<RecordStore>,
        now_ms: u64,
    ) -> Result<EventRecorder, RecordError> {
        let mut seen = HashSet::new();
        let mut after = 0;
        loop {
            let page = records.query(&RecordQuery {
                from_ms: now_ms.saturating_sub(SEEN_WINDOW_MS),
                to_ms: u64::MAX,
                kinds: vec!["k8s-event".into()],
                source: Some(SOURCE.into()),
                after_seq: after,
                limit: crate::records::MAX_QUERY,
                ..Default::default()
            })?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                let get = |n: &str| r.label(n).unwrap_or("");
                seen.insert(format!("{}/{}", get("uid"), get("count")));
            }
        }
        Ok(EventRecorder {
            objects,
            records,
            seen,
            policies: None,
            endpoints: None,
            events: HashMap::new(),
        })
    }

    /// Writes what is new since the last poll; returns how many records.
    pub fn poll(&mut self, now_ms: u64) -> Result<usize, RecordError> {
        let all = Selector::default();
        let list = |kind: &str, namespace: Option<&str>| {
            self.objects.list(kind, namespace, &all).unwrap_or_default()
        };
        // Only events new or changed since the last poll are read.
        let mut hashes = HashMap::new();
        let mut fresh = Vec::new();
        for e in list("Event", None) {
            let (key, h) = (format!("{}/{}", e.namespace, e.name), hash(&e.json));
            if self.events.get(&key) != Some(&h)
                && let Ok(v) = serde_json::from_str::<Value>(&e.json)
            {
                fresh.push(v);
            }
            hashes.insert(key, h);
        }
        // The workloads of the pods those are about, a namespace at a time.
        let namespaces: BTreeSet<&str> = fresh
            .iter()
            .map(about)
            .filter(|a| s(a, &["kind"]) == "Pod")
            .map(|a| s(a, &["namespace"]))
            .collect();
        let mut workloads = HashMap::new();
        for ns in namespaces {
            for p in list("Pod", Some(ns)) {
                if let Ok(v) = serde_json::from_str::<Value>(&p.json) {
                    workloads.insert((p.namespace.clone(), p.name.clone()), workload_of(&v));
                }
            }
        }
        let mut out = Vec::new();
        let mut keys = Vec::new();
        for v in &fresh {
            if let Some((key, entry)) = event_entry(v, &workloads)
                && !self.seen.contains(&key)
            {
                keys.push(key);
                out.push(entry);
            }
        }
        // Changes are only known against a full first list.
        if self.objects.synced("NetworkPolicy") {
            let policies: HashMap<String, String> = list("NetworkPolicy", None)
                .into_iter()
                .map(|p| {
                    let rv = serde_json::from_str::<Value>(&p.json)
                        .map(|v| s(&v, &["metadata", "resourceVersion"]).to_string())
                        .unwrap_or_default();
                    (format!("{}/{}", p.namespace, p.name), rv)
                })
                .collect();
            if let Some(before) = &self.policies {
                for (key, what) in policy_changes(before, &policies) {
                    out.push(change_entry(&key, what, now_ms));
                }
            }
            self.policies = Some(policies);
        }
        if self.objects.synced("EndpointSlice") {
            // Per service: the union of its slices (a service has one per address family and
            // more past 100 endpoints; the controller replaces them), so a change is the
            // service's, not a slice's.
            let mut slices: HashMap<String, (String, BTreeSet<String>)> = HashMap::new();
            for o in list("EndpointSlice", None) {
                let Ok(v) = serde_json::from_str::<Value>(&o.json) else {
                    continue;
                };
                let (service, ready) = slice_endpoints(&v);
                let key = if service.is_empty() {
                    format!("{}/{}", o.namespace, o.name)
                } else {
                    format!("{}/{service}", o.namespace)
                };
                slices
                    .entry(key)
                    .or_insert((service, BTreeSet::new()))
                    .1
                    .extend(ready);
            }
            if let Some(before) = &self.endpoints {
                out.extend(endpoint_changes(before, &slices, now_ms));
            }
            self.endpoints = Some(slices);
        }
        let n = out.len();
        for chunk in out.chunks(crate::records::MAX_WRITE) {
            self.records.write(SOURCE, chunk.to_vec())?;
        }
        self.seen.extend(keys);
        self.events = hashes;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_become_records_with_workload_severity_time_and_filter() {
        let pod = json!({"metadata": {"name": "web-5d9f-x", "namespace": "shop",
            "labels": {"pod-template-hash": "5d9f"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d9f", "controller": true}]}});
        assert_eq!(workload_of(&pod), "web");
        let mut w = HashMap::new();
        w.insert(
            ("shop".to_string(), "web-5d9f-x".to_string()),
            workload_of(&pod),
        );
        let ev = json!({"metadata": {"uid": "u1", "namespace": "shop", "name": "web.1"},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-5d9f-x"},
            "reason": "OOMKilling", "message": "Memory cgroup out of memory", "type": "Warning",
            "count": 3, "lastTimestamp": "2026-12-04T10:00:01Z"});
        let (key, e) = event_entry(&ev, &w).expect("entry");
        assert_eq!(key, "u1/3");
        assert_eq!(e.time_ms, 1_796_378_401_000);
        assert!(e.labels.contains(&("severity".into(), "critical".into())));
        assert!(e.labels.contains(&("workload".into(), "web".into())));
        assert_eq!(
            e.text,
            "OOMKilling: Pod shop/web-5d9f-x: Memory cgroup out of memory"
        );
        let f = e.flow_filter.expect("filter");
        assert!(crate::query::parse(&f).is_ok(), "{f}");
        // events.k8s.io/v1 shape, microsecond eventTime.
        let ev = json!({"metadata": {"uid": "u2"}, "regarding": {"kind": "Node", "name": "n1"},
            "reason": "Rebooted", "note": "node rebooted", "type": "Normal",
            "eventTime": "2026-12-04T10:00:01.250999Z"});
        let (key, e) = event_entry(&ev, &w).expect("entry");
        assert_eq!((key.as_str(), e.time_ms), ("u2/1", 1_796_378_401_250));
        assert!(e.labels.contains(&("severity".into(), "info".into())));
        // No time at all: not recorded.
        assert!(event_entry(&json!({"reason": "X"}), &w).is_none());
    }

    struct Fake(std::sync::Mutex<(bool, Vec<crate::objects::Object>)>);

    impl ObjectSource for Fake {
        fn kinds(&self) -> Vec<String> {
            vec!["Event".into(), "NetworkPolicy".into(), "Pod".into()]
        }
        fn synced(&self, _: &str) -> bool {
            self.0.lock().unwrap().0
        }
        fn list(
            &self,
            kind: &str,
            _: Option<&str>,
            _: &Selector,
        ) -> Result<Vec<crate::objects::Object>, crate::objects::ObjectsError> {
            let g = self.0.lock().unwrap();
            Ok(g.1.iter().filter(|o| o.kind == kind).cloned().collect())
        }
    }

    fn obj(kind: &str, name: &str, json: Value) -> crate::objects::Object {
        crate::objects::Object {
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
            labels: Default::default(),
            json: json.to_string(),
        }
    }

    #[test]
    fn each_event_is_recorded_once_across_restarts_and_policy_changes_follow_a_full_list() {
        let dir = tempfile::tempdir().unwrap();
        let records = Arc::new(RecordStore::open(dir.path()).unwrap());
        let ev = |uid: &str, count: u64| {
            obj(
                "Event",
                uid,
                json!({"metadata": {"uid": uid}, "reason": "BackOff", "type": "Warning",
                "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-0"},
                "count": count, "lastTimestamp": "2026-12-04T10:00:01Z"}),
            )
        };
        let np = |rv: &str| {
            obj(
                "NetworkPolicy",
                "deny",
                json!({"metadata": {"resourceVersion": rv}}),
            )
        };
        let src = Arc::new(Fake(std::sync::Mutex::new((false, vec![ev("a", 1)]))));
        let t = 1_796_378_500_000;
        let mut r = EventRecorder::new(src.clone(), records.clone(), t).unwrap();
        assert_eq!(r.poll(t).unwrap(), 1);
        assert_eq!(r.poll(t).unwrap(), 0, "seen");
        // Policies listed in full: the first list primes, a new version is a change.
        src.0.lock().unwrap().0 = true;
        src.0.lock().unwrap().1.push(np("1"));
        assert_eq!(r.poll(t).unwrap(), 0);
        {
            let mut g = src.0.lock().unwrap();
            g.1.retain(|o| o.kind != "NetworkPolicy");
            g.1.push(np("2"));
            g.1.push(ev("a", 2));
        }
        assert_eq!(r.poll(t).unwrap(), 2, "the repeat and the change");
        // A new recorder (a restart) knows what was written.
        let mut again = EventRecorder::new(src.clone(), records.clone(), t).unwrap();
        assert_eq!(again.poll(t).unwrap(), 0, "primes on its first full list");
        src.0
            .lock()
            .unwrap()
            .1
            .retain(|o| o.kind != "NetworkPolicy");
        assert_eq!(again.poll(t).unwrap(), 1, "deleted");
        src.0.lock().unwrap().1.push(np("3"));
        assert_eq!(again.poll(t).unwrap(), 1, "created");
        let kinds: Vec<String> = records
            .query(&RecordQuery {
                from_ms: 0,
                to_ms: u64::MAX,
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|s| s.entry.text)
            .collect();
        assert_eq!(
            kinds,
            vec![
                "BackOff: Pod shop/web-0: ",
                "BackOff: Pod shop/web-0: ",
                "NetworkPolicy shop/deny changed",
                "NetworkPolicy shop/deny deleted",
                "NetworkPolicy shop/deny created"
            ]
        );
    }

    #[test]
    fn endpoint_changes_name_the_service_and_the_addresses() {
        let slice = |ready: &[(&str, Option<bool>)]| {
            let eps: Vec<Value> = ready
                .iter()
                .map(|(a, r)| match r {
                    Some(r) => json!({"addresses": [a], "conditions": {"ready": r}}),
                    None => json!({"addresses": [a]}),
                })
                .collect();
            slice_endpoints(
                &json!({"metadata": {"labels": {"kubernetes.io/service-name": "web"}},
                "endpoints": eps}),
            )
        };
        let map = |v: (String, BTreeSet<String>)| HashMap::from([("shop/web".to_string(), v)]);
        let t = 1_796_378_500_000;
        let one = map(slice(&[
            ("10.0.0.5", Some(true)),
            ("10.0.0.9", Some(false)),
        ]));
        let moved = map(slice(&[("10.0.0.6", None), ("10.0.0.9", Some(false))]));
        let none = map(slice(&[("10.0.0.6", Some(false))]));
        let c = endpoint_changes(&HashMap::new(), &one, t);
        assert_eq!(
            c[0].text,
            "Endpoints of service shop/web created: 10.0.0.5 added"
        );
        let c = endpoint_changes(&one, &moved, t);
        assert_eq!(
            c[0].text,
            "Endpoints of service shop/web changed: 10.0.0.6 added, 10.0.0.5 removed"
        );
        let f = c[0].flow_filter.clone().expect("filter");
        assert_eq!(f, "Addr=10.0.0.6 or Addr=10.0.0.5");
        assert!(crate::query::parse(&f).is_ok());
        assert!(c[0].labels.contains(&("severity".into(), "info".into())));
        assert!(endpoint_changes(&moved, &moved, t).is_empty(), "no change");
        let c = endpoint_changes(&moved, &none, t);
        assert_eq!(
            c[0].text,
            "Endpoints of service shop/web changed: 10.0.0.6 removed; none ready"
        );
        assert!(c[0].labels.contains(&("severity".into(), "warning".into())));
        let c = endpoint_changes(&moved, &HashMap::new(), t);
        assert!(
            c[0].text
                .starts_with("Endpoints of service shop/web deleted: 10.0.0.6 removed")
        );
    }
}
