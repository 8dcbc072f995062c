//! Views of decoded dumps: the datapath tree (in_port, then recirculation), the
//! recirculation graph, the OpenFlow tables, and churn between two collections.
//!
//! The tree follows `ovs-flowviz datapath tree`: a node is a (recirc_id, in_port) pair; the
//! roots are the recirc_id 0 nodes; a flow's children are the nodes of the recirculation ids
//! it sends to, on the same in_port (recirculation keeps the port).

use super::{DpFlow, OfFlow, OvsError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Most nodes one tree holds (a node reached from many flows is repeated under each), most
/// flow entries across them, and the deepest chain of recirculations followed.
pub const MAX_TREE_NODES: usize = 200_000;
pub const MAX_TREE_ENTRIES: usize = 500_000;
pub const MAX_TREE_DEPTH: usize = 32;

/// Which flows a view keeps: every term must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowFilter {
    terms: Vec<(Term, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Term {
    RecircId,
    InPort,
    CtState,
    Addr,
    Action,
    Output,
    Ufid,
    Text,
}

impl FlowFilter {
    /// Parses `name=value` terms separated by spaces: `recirc_id=0x1`, `in_port=ova`,
    /// `ct_state=0x21` (as printed, value or value/mask), `addr=10.0.0.1` (any IPv4/IPv6
    /// source or destination), `action=ct` (an action name anywhere, nested too),
    /// `output=ovb`, `ufid=…`, `text=…` (a substring of the line).
    pub fn parse(s: &str) -> Result<FlowFilter, OvsError> {
        let mut terms = Vec::new();
        let mut at = 0;
        for word in s.split(' ') {
            if !word.is_empty() {
                let (name, value) = word.split_once('=').ok_or_else(|| {
                    OvsError::Invalid(format!("filter at byte {at}: {word:?} is not name=value"))
                })?;
                let term = match name {
                    "recirc_id" => Term::RecircId,
                    "in_port" => Term::InPort,
                    "ct_state" => Term::CtState,
                    "addr" => Term::Addr,
                    "action" => Term::Action,
                    "output" => Term::Output,
                    "ufid" => Term::Ufid,
                    "text" => Term::Text,
                    _ => {
                        return Err(OvsError::Invalid(format!(
                            "filter at byte {at}: unknown term {name:?} (recirc_id, in_port, ct_state, addr, action, output, ufid, text)"
                        )));
                    }
                };
                if term == Term::RecircId && super::parse_num(value).is_none() {
                    return Err(OvsError::Invalid(format!(
                        "filter at byte {at}: recirc_id {value:?} is not a number"
                    )));
                }
                terms.push((term, value.to_string()));
            }
            at += word.len() + 1;
        }
        Ok(FlowFilter { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, f: &DpFlow) -> bool {
        self.terms.iter().all(|(t, v)| match t {
            Term::RecircId => super::parse_num(v) == Some(f.recirc_id),
            Term::InPort => f.in_port == *v,
            Term::CtState => {
                masked_text(&f.matched["ct_state"]) == *v
                    || f.matched["ct_state"]["value"].as_str() == Some(v)
            }
            Term::Addr => ["ipv4", "ipv6", "ct_tuple4", "ct_tuple6", "arp"]
                .iter()
                .any(|k| {
                    let key = &f.matched[*k];
                    ["src", "dst", "sip", "tip"]
                        .iter()
                        .any(|a| key[*a]["value"].as_str() == Some(v))
                }),
            Term::Action => action_names(&f.actions).contains(v.as_str()),
            Term::Output => f.outputs.iter().any(|o| o == v),
            Term::Ufid => f.ufid.as_deref() == Some(v),
            Term::Text => f.text.contains(v.as_str()),
        })
    }
}

fn masked_text(v: &Value) -> String {
    match (v["value"].as_str(), v["mask"].as_str()) {
        (Some(a), Some(m)) => format!("{a}/{m}"),
        (Some(a), None) => a.to_string(),
        _ => String::new(),
    }
}

/// Calls `f` with every action (name, arguments) in a list, nested ones too (inside clone,
/// both check_pkt_len branches, sample).
pub fn each_action<'a>(actions: &'a Value, f: &mut impl FnMut(&'a str, &'a Value)) {
    for a in actions.as_array().into_iter().flatten() {
        for (name, args) in a.as_object().into_iter().flatten() {
            f(name, args);
            match name.as_str() {
                "clone" => each_action(args, f),
                "check_pkt_len" => {
                    each_action(&args["gt"], f);
                    each_action(&args["le"], f);
                }
                "sample" => each_action(&args["actions"], f),
                _ => {}
            }
        }
    }
}

/// Every action name in a list, nested ones too.
pub fn action_names(actions: &Value) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    each_action(actions, &mut |name, _| {
        out.insert(name);
    });
    out
}

/// Conntrack zones a flow's actions send to (`ct` without a zone is zone 0).
pub fn ct_zones(actions: &Value) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    each_action(actions, &mut |name, args| {
        if name == "ct" {
            out.insert(
                args["zone"]
                    .as_str()
                    .and_then(super::parse_num)
                    .unwrap_or(0),
            );
        }
    });
    out
}

/// A (recirc_id, in_port) node of the tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    pub recirc_id: u64,
    pub in_port: String,
    /// Packets of this node's own flows.
    pub packets: u64,
    /// Packets of its flows and of every node below.
    pub subtree_packets: u64,
    pub flows: Vec<TreeFlow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeFlow {
    /// Index into the decoded flows.
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ufid: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    /// Whether the flow itself passed the filter (it may be shown only for its children).
    pub matches: bool,
    pub children: Vec<TreeNode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub roots: Vec<TreeNode>,
    /// Nodes in the tree (repeats counted), and whether a limit ([`MAX_TREE_NODES`],
    /// [`MAX_TREE_ENTRIES`], [`MAX_TREE_DEPTH`]) cut it.
    pub nodes: usize,
    pub truncated: bool,
    /// (recirc_id, in_port) pairs some flow sends to that have no flows (the tree is
    /// incomplete there, as ovs-flowviz warns).
    pub missing: Vec<(u64, String)>,
}

/// The datapath tree of `flows`, keeping what `filter` selects (and the paths to it).
pub fn tree(flows: &[DpFlow], filter: &FlowFilter) -> Tree {
    let mut by_node: HashMap<(u64, &str), Vec<usize>> = HashMap::new();
    for (i, f) in flows.iter().enumerate() {
        by_node
            .entry((f.recirc_id, f.in_port.as_str()))
            .or_default()
            .push(i);
    }
    for list in by_node.values_mut() {
        list.sort_by(|a, b| flows[*b].packets.cmp(&flows[*a].packets).then(a.cmp(b)));
    }
    let mut st = Builder {
        flows,
        by_node: &by_node,
        filter,
        nodes: 0,
        entries: 0,
        truncated: false,
        missing: BTreeSet::new(),
    };
    let mut roots: Vec<(u64, &str)> = by_node.keys().filter(|(r, _)| *r == 0).copied().collect();
    roots.sort_by(|a, b| a.1.cmp(b.1));
    let mut out: Vec<TreeNode> = roots
        .into_iter()
        .filter_map(|k| st.node(k, &mut Vec::new()))
        .collect();
    out.sort_by_key(|n| std::cmp::Reverse(n.subtree_packets));
    Tree {
        roots: out,
        nodes: st.nodes,
        truncated: st.truncated,
        missing: st
            .missing
            .into_iter()
            .map(|(r, p)| (r, p.to_string()))
            .collect(),
    }
}

struct Builder<'a> {
    flows: &'a [DpFlow],
    by_node: &'a HashMap<(u64, &'a str), Vec<usize>>,
    filter: &'a FlowFilter,
    nodes: usize,
    entries: usize,
    truncated: bool,
    missing: BTreeSet<(u64, &'a str)>,
}

impl<'a> Builder<'a> {
    /// The node `key`, or `None` when nothing in it (or below) passes the filter. `path`
    /// holds the nodes above, so a recirculation loop stops instead of recursing forever.
    fn node(&mut self, key: (u64, &'a str), path: &mut Vec<(u64, &'a str)>) -> Option<TreeNode> {
        if self.nodes >= MAX_TREE_NODES
            || self.entries >= MAX_TREE_ENTRIES
            || path.len() >= MAX_TREE_DEPTH
        {
            self.truncated = true;
            return None;
        }
        let Some(list) = self.by_node.get(&key) else {
            self.missing.insert(key);
            return None;
        };
        if path.contains(&key) {
            return None;
        }
        self.nodes += 1;
        path.push(key);
        let mut flows = Vec::new();
        for &i in list {
            if self.entries >= MAX_TREE_ENTRIES {
                self.truncated = true;
                break;
            }
            self.entries += 1;
            let f = &self.flows[i];
            let children: Vec<TreeNode> = f
                .recircs
                .iter()
                .filter_map(|r| self.node((*r, key.1), path))
                .collect();
            let matches = self.filter.matches(f);
            if matches || !children.is_empty() {
                flows.push(TreeFlow {
                    index: i,
                    ufid: f.ufid.clone(),
                    packets: f.packets,
                    bytes: f.bytes,
                    matches,
                    children,
                });
            }
        }
        path.pop();
        if flows.is_empty() {
            return None;
        }
        let packets = flows.iter().map(|f| f.packets).sum();
        let below: u64 = flows
            .iter()
            .flat_map(|f| f.children.iter())
            .map(|c| c.subtree_packets)
            .sum();
        Some(TreeNode {
            recirc_id: key.0,
            in_port: key.1.to_string(),
            packets,
            subtree_packets: packets + below,
            flows,
        })
    }
}

/// A node of the recirculation graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    /// `recirc:0x1:ova`, `output:ovb`, `ct:5`, `drop`, `userspace`.
    pub id: String,
    /// `recirc`, `output`, `ct` or `end` (drop, userspace).
    pub kind: String,
    pub label: String,
    /// For recirc nodes: its flows (indexes into the decoded flows) and their packets.
    pub flows: Vec<usize>,
    pub packets: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    /// `recirc`, `output`, `ct` or `end`.
    pub kind: String,
    /// Packets and flows of the flows that take it.
    pub packets: u64,
    pub flows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

fn recirc_id(r: u64, port: &str) -> String {
    format!("recirc:{r:#x}:{port}")
}

/// The recirculation graph: (recirc_id, in_port) nodes as in the tree, plus output ports and
/// conntrack zones; an edge per recirc, output and ct action, weighted by the packets of the
/// flows that take it.
pub fn graph(flows: &[DpFlow], filter: &FlowFilter) -> Graph {
    let mut nodes: BTreeMap<String, GraphNode> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String), GraphEdge> = BTreeMap::new();
    for (i, f) in flows.iter().enumerate().filter(|(_, f)| filter.matches(f)) {
        let from = recirc_id(f.recirc_id, &f.in_port);
        let n = nodes.entry(from.clone()).or_insert_with(|| GraphNode {
            id: from.clone(),
            kind: "recirc".into(),
            label: format!("recirc_id {:#x} in_port {}", f.recirc_id, f.in_port),
            flows: Vec::new(),
            packets: 0,
        });
        n.flows.push(i);
        n.packets += f.packets;
        let mut targets: Vec<(String, &str, String)> = Vec::new();
        for r in &f.recircs {
            let to = recirc_id(*r, &f.in_port);
            targets.push((
                to,
                "recirc",
                format!("recirc_id {r:#x} in_port {}", f.in_port),
            ));
        }
        for o in &f.outputs {
            targets.push((format!("output:{o}"), "output", format!("output {o}")));
        }
        for z in ct_zones(&f.actions) {
            targets.push((format!("ct:{z}"), "ct", format!("ct zone {z}")));
        }
        let names = action_names(&f.actions);
        for end in ["drop", "userspace"] {
            if names.contains(end) {
                targets.push((end.to_string(), "end", end.to_string()));
            }
        }
        for (to, kind, label) in targets {
            nodes.entry(to.clone()).or_insert_with(|| GraphNode {
                id: to.clone(),
                kind: kind.into(),
                label,
                flows: Vec::new(),
                packets: 0,
            });
            let e = edges
                .entry((from.clone(), to.clone()))
                .or_insert_with(|| GraphEdge {
                    from: from.clone(),
                    to,
                    kind: kind.into(),
                    packets: 0,
                    flows: 0,
                });
            e.packets += f.packets;
            e.flows += 1;
        }
    }
    // A recirc target without flows of its own still gets its packets from the edges in.
    for e in edges.values() {
        if let Some(n) = nodes.get_mut(&e.to)
            && (n.kind != "recirc" || n.flows.is_empty())
        {
            n.packets += e.packets;
        }
    }
    Graph {
        nodes: nodes.into_values().collect(),
        edges: edges.into_values().collect(),
    }
}

/// One OpenFlow table of a bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfTable {
    pub bridge: String,
    pub table: u64,
    pub n_packets: u64,
    pub n_bytes: u64,
    /// Indexes into the decoded OpenFlow flows, highest priority first.
    pub flows: Vec<usize>,
    /// Tables its flows resubmit or go to.
    pub next_tables: Vec<u64>,
}

/// OpenFlow flows grouped by bridge and table.
pub fn tables(flows: &[OfFlow]) -> Vec<OfTable> {
    let mut by: BTreeMap<(String, u64), OfTable> = BTreeMap::new();
    for (i, f) in flows.iter().enumerate() {
        let t = by
            .entry((f.bridge.clone(), f.table))
            .or_insert_with(|| OfTable {
                bridge: f.bridge.clone(),
                table: f.table,
                n_packets: 0,
                n_bytes: 0,
                flows: Vec::new(),
                next_tables: Vec::new(),
            });
        t.n_packets += f.n_packets;
        t.n_bytes += f.n_bytes;
        t.flows.push(i);
        for n in &f.next_tables {
            if !t.next_tables.contains(n) {
                t.next_tables.push(*n);
            }
        }
    }
    let mut out: Vec<OfTable> = by.into_values().collect();
    for t in &mut out {
        t.flows
            .sort_by(|a, b| flows[*b].priority.cmp(&flows[*a].priority).then(a.cmp(b)));
        t.next_tables.sort_unstable();
    }
    out
}

/// How the megaflows changed between two collections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Churn {
    pub before: usize,
    pub after: usize,
    /// Flows (by ufid, else by their match text) only in the later collection, and only in
    /// the earlier.
    pub added: usize,
    pub removed: usize,
    /// Seconds between the two collections, and (added + removed) per second.
    pub seconds: f64,
    pub churn_per_s: f64,
    /// The later collection's flows with the most packets since the earlier one: (index,
    /// packets in between).
    pub top: Vec<(usize, u64)>,
}

fn flow_key(f: &DpFlow) -> String {
    match &f.ufid {
        Some(u) => u.clone(),
        None => format!("{}|{}", f.datapath, f.matched.value()),
    }
}

/// Churn from `before` (taken at `t0` ms) to `after` (at `t1`), with the `top` busiest.
pub fn churn(before: &[DpFlow], t0: u64, after: &[DpFlow], t1: u64, top: usize) -> Churn {
    let old: HashMap<String, u64> = before.iter().map(|f| (flow_key(f), f.packets)).collect();
    let new: BTreeSet<String> = after.iter().map(flow_key).collect();
    let added = after
        .iter()
        .filter(|f| !old.contains_key(&flow_key(f)))
        .count();
    let removed = old.keys().filter(|k| !new.contains(*k)).count();
    let seconds = (t1.saturating_sub(t0)) as f64 / 1000.0;
    let mut busy: Vec<(usize, u64)> = after
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let was = old.get(&flow_key(f)).copied().unwrap_or(0);
            // A counter below its old value is a new flow under a reused ufid.
            (
                i,
                if f.packets >= was {
                    f.packets - was
                } else {
                    f.packets
                },
            )
        })
        .filter(|(_, p)| *p > 0)
        .collect();
    busy.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    busy.truncate(top);
    Churn {
        before: before.len(),
        after: after.len(),
        added,
        removed,
        seconds,
        churn_per_s: if seconds > 0.0 {
            (added + removed) as f64 / seconds
        } else {
            0.0
        },
        top: busy,
    }
}
