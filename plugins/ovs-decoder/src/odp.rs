//! Datapath flows in the ODP syntax, as `ovs-appctl dpctl/dump-flows -m` prints them in OVS 3.x.
//!
//! The JSON of one flow:
//! ```text
//! {"ufid": "…",                                   (when printed)
//!  "match": {"recirc_id": {"value": "0x1"},        every key in the printed order; a masked
//!            "ipv4": {"src": {"value": "10.0.0.1", "mask": "255.255.255.0"}, …},
//!            "encap": {"eth_type": {…}, …}, …},   value is a value/mask pair, nested keys nest
//!  "info": {"packets": 4, "bytes": 1280, "used": 0.011 | "never", "flags": "S.", "dp": "ovs", …},
//!  "actions": [{"ct": {"commit": true, "zone": "5", "nat": {"src": "10.0.0.1"}}},
//!              {"recirc": "0x1"}, {"output": {"port": "ovb"}},
//!              {"check_pkt_len": {"size": "200", "gt": [ … ], "le": [ … ]}}, …],
//!  "dp_extra_info": {"miniflow_bits": "4,1"},
//!  "recircs": [1],                                  recirculation ids it sends to, also from
//!  "outputs": ["ovb"],                              inside clone/check_pkt_len/sample
//!  "warnings": ["unknown key foo"]}                 names it does not know (kept as read)
//! ```

use crate::json::J;
use crate::syntax::{Node, ParseError, Parser, find_top, generic, number, one};

/// Match keys OVS 3.x prints (anything else is kept and warned about).
const KEYS: &[&str] = &[
    "skb_priority",
    "skb_mark",
    "ct_state",
    "ct_zone",
    "ct_mark",
    "ct_label",
    "ct_tuple4",
    "ct_tuple6",
    "recirc_id",
    "dp_hash",
    "in_port",
    "packet_type",
    "eth",
    "eth_type",
    "vlan",
    "encap",
    "mpls",
    "ipv4",
    "ipv6",
    "tcp",
    "tcp_flags",
    "udp",
    "sctp",
    "icmp",
    "icmpv6",
    "arp",
    "nd",
    "nd_ext",
    "nsh",
    "tunnel",
    "priority",
];

/// Actions that take arguments (bare words are output ports, besides [`FLAG_ACTIONS`]).
const ACTIONS: &[&str] = &[
    "output",
    "recirc",
    "ct",
    "set",
    "set_masked",
    "push_vlan",
    "push_eth",
    "push_mpls",
    "add_mpls",
    "pop_mpls",
    "push_nsh",
    "tnl_push",
    "tnl_pop",
    "clone",
    "check_pkt_len",
    "meter",
    "sample",
    "psample",
    "userspace",
    "hash",
    "trunc",
    "lb_output",
    "drop",
];

/// Bare words that are actions, not ports.
const FLAG_ACTIONS: &[&str] = &[
    "drop", "pop_vlan", "ct_clear", "pop_eth", "pop_nsh", "dec_ttl",
];

/// Statistics and identity printed before the actions.
const INFO: &[&str] = &[
    "packets",
    "bytes",
    "used",
    "flags",
    "dp",
    "offloaded",
    "csum",
];

/// `value/mask` → {"value", "mask"}; braces (geneve options) are kept whole.
pub fn masked(a: &str) -> J {
    let mut o = J::obj();
    match a.split_once('/') {
        Some((v, m)) if !a.starts_with('{') => {
            o.set("value", J::s(v));
            o.set("mask", J::s(m));
        }
        _ => o.set("value", J::s(a)),
    }
    o
}

/// Geneve options `{class=0x102,type=0x80,len=4,0xa/0xffffffff}{...}` → a list of
/// {"class", "type", "len", "data"}, each a value/mask pair.
fn geneve_options(text: &str) -> J {
    let mut out = Vec::new();
    for opt in text
        .split('}')
        .map(|o| o.trim_start_matches(',').trim_start_matches('{'))
    {
        if opt.is_empty() {
            continue;
        }
        let mut o = J::obj();
        for part in opt.split(',') {
            match part.split_once('=') {
                Some((k, v)) => o.set(k, masked(v)),
                None => o.set("data", masked(part)),
            }
        }
        out.push(o);
    }
    J::Arr(out)
}

/// A match key's parenthesised content.
fn key_value(args: &[Node]) -> J {
    if let [Node::Atom(a)] = args {
        if a.starts_with('{') {
            return geneve_options(a);
        }
        return masked(a);
    }
    let mut o = J::obj();
    for a in args {
        match a {
            Node::Field { name, value } => o.set(*name, masked(value)),
            Node::Call { name, args, .. } => o.set(*name, key_value(args)),
            Node::Atom(a) if !a.is_empty() => o.set(*a, J::Bool(true)),
            Node::Atom(_) => {}
        }
    }
    o
}

/// Actions as JSON, warning about names it does not know.
pub fn actions(nodes: &[Node], warnings: &mut Vec<String>) -> J {
    J::Arr(nodes.iter().map(|n| action(n, warnings)).collect())
}

fn action(n: &Node, warnings: &mut Vec<String>) -> J {
    match n {
        Node::Atom(a) if FLAG_ACTIONS.contains(a) => one(a, J::Bool(true)),
        Node::Atom(a) => one("output", one("port", J::s(*a))),
        Node::Field { name, value } => {
            warnings.push(format!("unknown action {name}"));
            one(name, J::s(*value))
        }
        Node::Call { name, args, .. } => {
            if !ACTIONS.contains(name) {
                warnings.push(format!("unknown action {name}"));
            }
            let v = match *name {
                "clone" => actions(args, warnings),
                "set" | "set_masked" => key_value(args),
                "check_pkt_len" | "sample" => {
                    let mut o = J::obj();
                    for a in args {
                        match a {
                            Node::Call { name, args, .. }
                                if matches!(*name, "gt" | "le" | "actions") =>
                            {
                                o.set(*name, actions(args, warnings))
                            }
                            Node::Field { name, value } => o.set(*name, J::s(*value)),
                            Node::Call { name, args, .. } => o.set(*name, generic(args)),
                            Node::Atom(a) if !a.is_empty() => o.set(*a, J::Bool(true)),
                            Node::Atom(_) => {}
                        }
                    }
                    o
                }
                _ => generic(args),
            };
            one(name, v)
        }
    }
}

/// Recirculation ids and output ports, also inside clone, check_pkt_len and sample.
pub fn walk(nodes: &[Node], recircs: &mut Vec<u64>, outputs: &mut Vec<String>) {
    for n in nodes {
        match n {
            Node::Atom(a) if !a.is_empty() && !FLAG_ACTIONS.contains(a) => {
                outputs.push(a.to_string())
            }
            Node::Call { name, args, .. } => match *name {
                "recirc" => {
                    if let [Node::Atom(a)] = args.as_slice()
                        && let Some(id) = number(a)
                        && !recircs.contains(&id)
                    {
                        recircs.push(id);
                    }
                }
                "clone" => walk(args, recircs, outputs),
                "check_pkt_len" | "sample" => {
                    for a in args {
                        if let Node::Call { name, args, .. } = a
                            && matches!(*name, "gt" | "le" | "actions")
                        {
                            walk(args, recircs, outputs);
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

fn info_value(name: &str, value: &str) -> J {
    match name {
        "packets" | "bytes" => match number(value) {
            Some(n) => J::Num(n as f64),
            None => J::s(value),
        },
        "used" => match value.strip_suffix('s').and_then(|s| s.parse::<f64>().ok()) {
            Some(secs) => J::Num(secs),
            None => J::s(value),
        },
        _ => J::s(value),
    }
}

/// Decodes one datapath flow line.
pub fn decode(line: &str) -> Result<J, ParseError> {
    let Some(at) = find_top(line, "actions:") else {
        // A truncated line usually breaks a key first: name that place when there is one.
        Parser::new(line, 0).list(None)?;
        return Err(ParseError {
            at: line.len(),
            message: "a datapath flow needs \"actions:\"; none found".into(),
        });
    };
    let rest_at = at + "actions:".len();
    let rest = &line[rest_at..];
    let (acts, extra) = match find_top(rest, "dp-extra-info:") {
        Some(e) => (
            rest[..e].trim_end().trim_end_matches(','),
            Some((rest_at + e, &rest[e + "dp-extra-info:".len()..])),
        ),
        None => (rest, None),
    };
    let head = Parser::new(&line[..at], 0).list(None)?;
    let mut warnings = Vec::new();
    let mut flow = J::obj();
    let mut matched = J::obj();
    let mut info = J::obj();
    for item in &head {
        match item {
            Node::Field { name, value } if *name == "ufid" => flow.set("ufid", J::s(*value)),
            Node::Field { name, value } => {
                if !INFO.contains(name) {
                    warnings.push(format!("unknown field {name}"));
                }
                info.set(*name, info_value(name, value))
            }
            Node::Call { name, args, .. } => {
                if !KEYS.contains(name) {
                    warnings.push(format!("unknown key {name}"));
                }
                matched.set(*name, key_value(args));
            }
            Node::Atom("") => {}
            Node::Atom(a) => warnings.push(format!("unknown word {a}")),
        }
    }
    let acts_nodes = Parser::new(acts, rest_at).list(None)?;
    if acts_nodes.is_empty() {
        return Err(ParseError {
            at: rest_at,
            message: "\"actions:\" is empty".into(),
        });
    }
    let mut recircs = Vec::new();
    let mut outputs = Vec::new();
    walk(&acts_nodes, &mut recircs, &mut outputs);
    // Each port once, in first-seen order (a set: a line may name thousands).
    let mut seen = std::collections::BTreeSet::new();
    outputs.retain(|o| seen.insert(o.clone()));
    flow.set("match", matched);
    flow.set("info", info);
    flow.set("actions", actions(&acts_nodes, &mut warnings));
    if let Some((base, extra)) = extra {
        let nodes = Parser::new(extra, base + "dp-extra-info:".len()).list(None)?;
        flow.set("dp_extra_info", generic_obj(&nodes));
    }
    flow.set(
        "recircs",
        J::Arr(recircs.into_iter().map(|r| J::Num(r as f64)).collect()),
    );
    flow.set("outputs", J::Arr(outputs.into_iter().map(J::Str).collect()));
    if !warnings.is_empty() {
        flow.set(
            "warnings",
            J::Arr(warnings.into_iter().map(J::Str).collect()),
        );
    }
    Ok(flow)
}

/// `miniflow_bits(4,1)` → {"miniflow_bits": "4,1"}.
fn generic_obj(nodes: &[Node]) -> J {
    let mut o = J::obj();
    for n in nodes {
        match n {
            Node::Call { name, args, .. } => {
                let text: Vec<&str> = args.iter().map(Node::name).collect();
                let all_atoms = args.iter().all(|a| matches!(a, Node::Atom(_)));
                if all_atoms {
                    o.set(*name, J::s(text.join(",")));
                } else {
                    o.set(*name, generic(args));
                }
            }
            Node::Field { name, value } => o.set(*name, J::s(*value)),
            Node::Atom(a) if !a.is_empty() => o.set(*a, J::Bool(true)),
            Node::Atom(_) => {}
        }
    }
    o
}
