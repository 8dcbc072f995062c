//! What-if on history: the conversations the store saw in a window, each with the Kubernetes
//! identity its ends had when captured (namespace, name, labels, namespace labels), judged
//! under the proposed policies and under the current ones; reported by workload pair and
//! port: what the change would cut, and what it would newly allow.
//!
//! A conversation is (client address, server address, server port, protocol). The client is
//! the end that opened it: for TCP the flow flagged `OPEN` (a SYN without ACK) or, failing
//! that, the reply side of a SYN+ACK; otherwise (UDP, or a TCP connection older than the
//! capture) the end with the higher port (a port of 0, not recorded, is never the server's;
//! conversations with no port are left out).

use super::{Findings, Objects, PolicyEngine, PolicyError, Protocol, evaluate, field};
use crate::flow::opened_by_source;
use crate::query::{Expr, SortBy, TimeRange};
use crate::schema::{self, Value as FieldValue};
use crate::store::{ListRequest, Store};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Conversations per engine request when only verdicts are asked (one character each).
const CHUNK: usize = 200_000;
/// Conversations per request with explanations: 7 fields each keeps an answer under the
/// sandbox's limit of 200,000 output items.
const EXPLAIN_CHUNK: usize = 20_000;
/// Groups reported per list (the counts cover all).
const MAX_GROUPS: usize = 500;

/// One end as captured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub namespace: String,
    pub name: String,
    /// Owner (Deployment, ...) or the name.
    pub workload: String,
    pub labels: String,
    pub namespace_labels: String,
}

/// A conversation seen in the store.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub client: IpAddr,
    pub server: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub flows: u64,
    pub bytes: u64,
}

/// Conversations in a window with their ends' identities.
#[derive(Debug, Default)]
pub struct Observed {
    pub conversations: Vec<Conversation>,
    pub identities: HashMap<IpAddr, Identity>,
    /// Flows read (after the filter).
    pub flows: u64,
}

fn ip_of(v: &FieldValue) -> Option<IpAddr> {
    match v {
        FieldValue::Ip(ip) => Some(match ip.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(*ip),
        }),
        _ => None,
    }
}

fn num(v: &FieldValue) -> u64 {
    match v {
        FieldValue::U64(n) => *n,
        _ => 0,
    }
}

fn text(v: &FieldValue) -> String {
    match v {
        FieldValue::Str(s) => s.clone(),
        _ => String::new(),
    }
}

fn fields(names: &[&str]) -> Result<Vec<&'static schema::FieldDef>, PolicyError> {
    names
        .iter()
        .map(|n| schema::field(n).ok_or_else(|| PolicyError::Invalid(format!("no field {n}"))))
        .collect()
}

/// The conversation a flow belongs to, from the raw values of (SrcAddr, DstAddr, SrcPort,
/// DstPort, Proto, Flags): (client, server, server port, protocol number), or all zeros for
/// a flow that is no conversation (another protocol, no server port).
fn conversation_key(raw: &[u128], out: &mut [u128]) -> bool {
    let [src, dst, sport, dport, proto, flags] = raw else {
        return false;
    };
    let (sport, dport, proto) = (*sport as u16, *dport as u16, *proto as u8);
    let Some(p) = Protocol::from_number(proto) else {
        out.fill(0);
        return true;
    };
    let from_src = match (p, opened_by_source(*flags as u16)) {
        (Protocol::Tcp, Some(s)) => s,
        // A port not recorded (0) is not the server's.
        _ if sport == 0 => true,
        _ if dport == 0 => false,
        _ => dport <= sport,
    };
    let (client, server, port) = if from_src {
        (*src, *dst, dport)
    } else {
        (*dst, *src, sport)
    };
    if port == 0 {
        out.fill(0);
    } else {
        out.copy_from_slice(&[client, server, u128::from(port), u128::from(proto)]);
    }
    true
}

/// Reads the conversations and identities of a window from the store: each flow folded into
/// its conversation while the store scans (one group per conversation, not per connection).
pub fn observe(store: &Store, filter: &Expr, range: &TimeRange) -> Result<Observed, PolicyError> {
    let read = fields(&["SrcAddr", "DstAddr", "SrcPort", "DstPort", "Proto", "Flags"])?;
    let out = fields(&["SrcAddr", "DstAddr", "DstPort", "Proto"])?;
    let groups = store.aggregate_mapped(filter, range, &read, &out, &conversation_key)?;
    let mut total = 0;
    let mut conversations = Vec::with_capacity(groups.len());
    for ((k, _), t) in groups {
        total += t.flows;
        let (Some(client), Some(server)) = (ip_of(&k[0]), ip_of(&k[1])) else {
            continue;
        };
        let (port, proto) = (num(&k[2]) as u16, num(&k[3]) as u8);
        let Some(protocol) = Protocol::from_number(proto).filter(|_| port != 0) else {
            continue;
        };
        conversations.push(Conversation {
            client,
            server,
            port,
            protocol,
            flows: t.flows,
            bytes: t.bytes,
        });
    }
    let mut identities: HashMap<IpAddr, (u64, Identity)> = HashMap::new();
    for side in ["Src", "Dst"] {
        let f = |s: &str| format!("{side}{s}");
        let names = [
            f("Addr"),
            f("K8S_Namespace"),
            f("K8S_Name"),
            f("K8S_OwnerName"),
            f("K8S_Labels"),
            f("K8S_NamespaceLabels"),
        ];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let keys = fields(&refs)?;
        for ((k, _), t) in store.aggregate(filter, range, &keys, None)? {
            let Some(ip) = ip_of(&k[0]) else { continue };
            let id = Identity {
                namespace: text(&k[1]),
                name: text(&k[2]),
                workload: {
                    let o = text(&k[3]);
                    if o.is_empty() { text(&k[2]) } else { o }
                },
                labels: text(&k[4]),
                namespace_labels: text(&k[5]),
            };
            // An address seen with several identities in the window: the one most flows had.
            let e = identities.entry(ip).or_insert((0, Identity::default()));
            if t.flows > e.0 {
                *e = (t.flows, id);
            }
        }
    }
    conversations.sort_by(|a, b| {
        (a.client, a.server, a.port, a.protocol).cmp(&(b.client, b.server, b.port, b.protocol))
    });
    Ok(Observed {
        conversations,
        identities: identities.into_iter().map(|(k, (_, v))| (k, v)).collect(),
        flows: total,
    })
}

/// `k=v,k2=v2` (the stored form) as a JSON map.
fn labels_json(s: &str) -> Value {
    Value::Object(
        s.split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), Value::from(v.trim())))
            .collect::<Map<_, _>>(),
    )
}

fn endpoint_json(ip: IpAddr, id: Option<&Identity>) -> Value {
    match id.filter(|i| !i.namespace.is_empty()) {
        Some(i) => json!({
            "namespace": i.namespace, "name": i.name, "ip": ip.to_string(),
            "labels": labels_json(&i.labels),
            "namespace_labels": labels_json(&i.namespace_labels),
        }),
        None => json!({"ip": ip.to_string()}),
    }
}

/// The request body of some conversations: each address once with its identity, the
/// conversations as index pairs.
fn request(
    observed: &Observed,
    which: &mut dyn Iterator<Item = &Conversation>,
) -> Map<String, Value> {
    let mut index: HashMap<IpAddr, usize> = HashMap::new();
    let mut endpoints = vec![];
    let mut at = |ip: IpAddr| -> usize {
        *index.entry(ip).or_insert_with(|| {
            endpoints.push(endpoint_json(ip, observed.identities.get(&ip)));
            endpoints.len() - 1
        })
    };
    let conns: Vec<Value> = which
        .map(|c| json!([at(c.client), at(c.server), c.port, c.protocol.name()]))
        .collect();
    let mut extra = Map::new();
    extra.insert("endpoints".into(), Value::Array(endpoints));
    extra.insert("connections".into(), Value::Array(conns));
    extra
}

/// Whether each conversation is allowed under `objects` (its policies, with its Namespaces and
/// Pods for named ports): one bit per conversation from the engine, no explanations.
pub fn judge(
    engine: &dyn PolicyEngine,
    objects: &Objects,
    observed: &Observed,
) -> Result<(Vec<bool>, Findings), PolicyError> {
    let mut out = Vec::with_capacity(observed.conversations.len());
    let mut problems = Findings::default();
    if observed.conversations.is_empty() {
        // Nothing to judge, but the objects' problems and warnings still count.
        let mut extra = request(observed, &mut std::iter::empty());
        extra.insert("explain".into(), Value::Bool(false));
        let (_, p) = evaluate(engine, objects, "verdicts", extra)?;
        return Ok((out, p));
    }
    for (ci, chunk) in observed.conversations.chunks(CHUNK).enumerate() {
        let mut extra = request(observed, &mut chunk.iter());
        extra.insert("explain".into(), Value::Bool(false));
        let (records, p) = evaluate(engine, objects, "verdicts", extra)?;
        if ci == 0 {
            problems = p;
        }
        let bits = records
            .iter()
            .find(|r| field(r, "kind") == "verdicts")
            .map(|r| field(r, "allowed"))
            .unwrap_or("");
        if bits.len() != chunk.len() {
            return Err(PolicyError::Engine(format!(
                "{} verdicts for {} connections",
                bits.len(),
                chunk.len()
            )));
        }
        out.extend(bits.bytes().map(|b| b == b'1'));
    }
    Ok((out, problems))
}

/// Why, under `objects`: for the conversations at `which` (indices into
/// `observed.conversations`), the deciding tier and policies of each direction that denied,
/// or of both when allowed.
pub fn reasons(
    engine: &dyn PolicyEngine,
    objects: &Objects,
    observed: &Observed,
    which: &[usize],
) -> Result<HashMap<usize, String>, PolicyError> {
    let mut out = HashMap::new();
    for chunk in which.chunks(EXPLAIN_CHUNK) {
        let extra = request(
            observed,
            &mut chunk.iter().filter_map(|&i| observed.conversations.get(i)),
        );
        let (records, _) = evaluate(engine, objects, "verdicts", extra)?;
        for r in records.iter().filter(|r| field(r, "kind") == "verdict") {
            let Some(&conv) = field(r, "index")
                .parse::<usize>()
                .ok()
                .and_then(|i| chunk.get(i))
            else {
                continue;
            };
            let mut why = vec![];
            for dir in ["egress", "ingress"] {
                if field(r, &format!("{dir}_allowed")) != "true" {
                    why.push(format!("{dir} denied by {}", field(r, dir)));
                }
            }
            if field(r, "allowed") == "true" {
                why.push(format!(
                    "egress: {}; ingress: {}",
                    field(r, "egress"),
                    field(r, "ingress")
                ));
            }
            out.insert(conv, why.join("; "));
        }
    }
    Ok(out)
}

/// Conversations of one workload pair and port that changed verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// `ns/workload`, or the address for an end outside the cluster.
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: Protocol,
    pub conversations: usize,
    pub flows: u64,
    pub bytes: u64,
    /// Newest flow of these conversations in the window (Unix ms).
    pub last_seen_ms: u64,
    /// Why, under the proposed policies.
    pub reason: String,
    /// Up to five of the address pairs (`client -> server`).
    pub examples: Vec<String>,
    /// The first of its conversations (the one whose explanation is the reason).
    #[serde(skip)]
    pub first: usize,
}

/// The what-if report.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub flows: u64,
    pub conversations: usize,
    /// Allowed now (or observed, with no current set given), denied under the proposal.
    pub cut: Vec<Change>,
    /// Denied now, allowed under the proposal (only with a current set).
    pub newly_allowed: Vec<Change>,
    /// Groups beyond the lists' cap.
    pub cut_groups: usize,
    pub newly_allowed_groups: usize,
    pub problems: Vec<String>,
    /// What the engine warned about (a named port no pod declares): not a failure.
    pub warnings: Vec<String>,
}

fn workload(ip: IpAddr, id: Option<&Identity>) -> String {
    match id.filter(|i| !i.namespace.is_empty()) {
        Some(i) => format!("{}/{}", i.namespace, i.workload),
        None => ip.to_string(),
    }
}

/// Compares the proposal with the current set (or with "everything observed was allowed").
pub fn compare(
    observed: &Observed,
    proposed: &[bool],
    current: Option<&[bool]>,
) -> (Vec<Change>, Vec<Change>) {
    type Key = (String, String, u16, Protocol);
    let mut cut: BTreeMap<Key, Change> = BTreeMap::new();
    let mut newly: BTreeMap<Key, Change> = BTreeMap::new();
    for (i, c) in observed.conversations.iter().enumerate() {
        let now = current.map(|j| j[i]).unwrap_or(true);
        let then = proposed[i];
        let target = match (now, then) {
            (true, false) => &mut cut,
            (false, true) => &mut newly,
            _ => continue,
        };
        let from = workload(c.client, observed.identities.get(&c.client));
        let to = workload(c.server, observed.identities.get(&c.server));
        let e = target
            .entry((from.clone(), to.clone(), c.port, c.protocol))
            .or_insert_with(|| Change {
                from,
                to,
                port: c.port,
                protocol: c.protocol,
                conversations: 0,
                flows: 0,
                bytes: 0,
                last_seen_ms: 0,
                reason: String::new(),
                first: i,
                examples: vec![],
            });
        e.conversations += 1;
        e.flows += c.flows;
        e.bytes += c.bytes;
        if e.examples.len() < 5 {
            e.examples.push(format!("{} -> {}", c.client, c.server));
        }
    }
    let sorted = |m: BTreeMap<Key, Change>| {
        let mut v: Vec<Change> = m.into_values().collect();
        v.sort_by(|a, b| b.flows.cmp(&a.flows).then(a.from.cmp(&b.from)));
        v
    };
    (sorted(cut), sorted(newly))
}

/// Fills `last_seen_ms` of each change from the store (its newest flow between the example
/// address pairs on that port).
pub fn fill_last_seen(
    store: &Store,
    range: &TimeRange,
    changes: &mut [Change],
) -> Result<(), PolicyError> {
    let sort = SortBy::parse("-TimeFlowEndMs").map_err(|e| PolicyError::Invalid(e.to_string()))?;
    for c in changes {
        let mut parts = vec![];
        for ex in &c.examples {
            if let Some((a, b)) = ex.split_once(" -> ") {
                parts.push(format!(
                    "(SrcAddr={a} and DstAddr={b} and DstPort={p}) or (SrcAddr={b} and DstAddr={a} and SrcPort={p})",
                    p = c.port
                ));
            }
        }
        if parts.is_empty() {
            continue;
        }
        let filter = crate::query::parse(&parts.join(" or "))
            .map_err(|e| PolicyError::Invalid(e.to_string()))?;
        let page = store.list(&ListRequest {
            filter,
            range: *range,
            sort,
            limit: 1,
            offset: 0,
        })?;
        c.last_seen_ms = page.flows.first().map(|f| f.time_flow_end_ms).unwrap_or(0);
    }
    Ok(())
}

/// Runs the whole what-if: observe, judge under both sets, compare, fill last-seen times.
pub fn run(
    engine: &dyn PolicyEngine,
    store: &Store,
    filter: &Expr,
    range: &TimeRange,
    proposed: &Objects,
    current: Option<&Objects>,
) -> Result<Report, PolicyError> {
    let observed = observe(store, filter, range)?;
    let (judged_new, mut problems) = judge(engine, proposed, &observed)?;
    let judged_now = match current {
        Some(c) => {
            let (j, p) = judge(engine, c, &observed)?;
            problems.merge(p);
            Some(j)
        }
        None => None,
    };
    let (mut cut, mut newly) = compare(&observed, &judged_new, judged_now.as_deref());
    let (cut_groups, newly_groups) = (cut.len(), newly.len());
    cut.truncate(MAX_GROUPS);
    newly.truncate(MAX_GROUPS);
    // Explained only for what is reported: the first conversation of each group, under the
    // proposal.
    let firsts: Vec<usize> = cut.iter().chain(&newly).map(|c| c.first).collect();
    let why = reasons(engine, proposed, &observed, &firsts)?;
    for c in cut.iter_mut().chain(newly.iter_mut()) {
        c.reason = why.get(&c.first).cloned().unwrap_or_default();
    }
    fill_last_seen(store, range, &mut cut)?;
    fill_last_seen(store, range, &mut newly)?;
    Ok(Report {
        flows: observed.flows,
        conversations: observed.conversations.len(),
        cut,
        newly_allowed: newly,
        cut_groups,
        newly_allowed_groups: newly_groups,
        warnings: problems.warnings.iter().map(|p| p.to_string()).collect(),
        problems: problems.problems.iter().map(|p| p.to_string()).collect(),
    })
}
