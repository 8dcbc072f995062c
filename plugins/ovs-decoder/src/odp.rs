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

use crate::json::W;
use crate::syntax::{Node, ParseError, Parser, find_top, generic, generic_item, number};

/// Match keys OVS 3.x prints (anything else is kept and warned about).
fn is_key(s: &str) -> bool {
    matches!(
        s,
        "skb_priority"
            | "skb_mark"
            | "ct_state"
            | "ct_zone"
            | "ct_mark"
            | "ct_label"
            | "ct_tuple4"
            | "ct_tuple6"
            | "recirc_id"
            | "dp_hash"
            | "in_port"
            | "packet_type"
            | "eth"
            | "eth_type"
            | "vlan"
            | "encap"
            | "mpls"
            | "ipv4"
            | "ipv6"
            | "tcp"
            | "tcp_flags"
            | "udp"
            | "sctp"
            | "icmp"
            | "icmpv6"
            | "arp"
            | "nd"
            | "nd_ext"
            | "nsh"
            | "tunnel"
            | "priority"
    )
}

/// Actions that take arguments (bare words are output ports, besides [`is_flag_action`]).
fn is_action(s: &str) -> bool {
    matches!(
        s,
        "output"
            | "recirc"
            | "ct"
            | "set"
            | "set_masked"
            | "push_vlan"
            | "push_eth"
            | "push_mpls"
            | "add_mpls"
            | "pop_mpls"
            | "push_nsh"
            | "tnl_push"
            | "tnl_pop"
            | "clone"
            | "check_pkt_len"
            | "meter"
            | "sample"
            | "psample"
            | "userspace"
            | "hash"
            | "trunc"
            | "lb_output"
            | "drop"
    )
}

/// Bare words that are actions, not ports.
fn is_flag_action(s: &str) -> bool {
    matches!(
        s,
        "drop" | "pop_vlan" | "ct_clear" | "pop_eth" | "pop_nsh" | "dec_ttl"
    )
}

/// Statistics and identity printed before the actions.
fn is_info(s: &str) -> bool {
    matches!(
        s,
        "packets" | "bytes" | "used" | "flags" | "dp" | "offloaded" | "csum"
    )
}

/// `value/mask` → {"value", "mask"}; braces (geneve options) are kept whole.
pub fn masked(w: &mut W, a: &str) {
    w.open_obj();
    match a.split_once('/') {
        Some((v, m)) if !a.starts_with('{') => {
            w.field("value", v);
            w.field("mask", m);
        }
        _ => w.field("value", a),
    }
    w.close_obj();
}

/// Geneve options `{class=0x102,type=0x80,len=4,0xa/0xffffffff}{...}` → a list of
/// {"class", "type", "len", "data"}, each a value/mask pair.
fn geneve_options(w: &mut W, text: &str) {
    w.open_arr();
    for opt in text
        .split('}')
        .map(|o| o.trim_start_matches(',').trim_start_matches('{'))
    {
        if opt.is_empty() {
            continue;
        }
        w.open_obj();
        for part in opt.split(',') {
            match part.split_once('=') {
                Some((k, v)) => {
                    w.key(k);
                    masked(w, v);
                }
                None => {
                    w.key("data");
                    masked(w, part);
                }
            }
        }
        w.close_obj();
    }
    w.close_arr();
}

/// A match key's parenthesised content.
fn key_value(w: &mut W, args: &[Node]) {
    if let [Node::Atom(a)] = args {
        if a.starts_with('{') {
            return geneve_options(w, a);
        }
        return masked(w, a);
    }
    w.open_obj();
    for a in args {
        match a {
            Node::Field { name, value } => {
                w.key(name);
                masked(w, value);
            }
            Node::Call { name, args, .. } => {
                w.key(name);
                key_value(w, args);
            }
            Node::Atom(a) if !a.is_empty() => {
                w.key(a);
                w.bool(true);
            }
            Node::Atom(_) => {}
        }
    }
    w.close_obj();
}

/// Actions as JSON, warning about names it does not know.
pub fn actions(w: &mut W, nodes: &[Node], warnings: &mut Vec<String>) {
    w.open_arr();
    for n in nodes {
        action(w, n, warnings);
    }
    w.close_arr();
}

fn action(w: &mut W, n: &Node, warnings: &mut Vec<String>) {
    match n {
        Node::Atom(a) if is_flag_action(a) => w.one(a, |w| w.bool(true)),
        Node::Atom(a) => w.one("output", |w| w.one("port", |w| w.str(a))),
        Node::Field { name, value } => {
            warnings.push(format!("unknown action {name}"));
            w.one(name, |w| w.str(value))
        }
        Node::Call { name, args, .. } => {
            if !is_action(name) {
                warnings.push(format!("unknown action {name}"));
            }
            w.one(name, |w| match *name {
                "clone" => actions(w, args, warnings),
                "set" | "set_masked" => key_value(w, args),
                "check_pkt_len" | "sample" => {
                    w.open_obj();
                    for a in args {
                        match a {
                            Node::Call { name, args, .. }
                                if matches!(*name, "gt" | "le" | "actions") =>
                            {
                                w.key(name);
                                actions(w, args, warnings);
                            }
                            other => generic_item(w, other),
                        }
                    }
                    w.close_obj();
                }
                _ => generic(w, args),
            })
        }
    }
}

/// Recirculation ids and output ports, also inside clone, check_pkt_len and sample.
pub fn walk<'a>(nodes: &[Node<'a>], recircs: &mut Vec<u64>, outputs: &mut Vec<&'a str>) {
    for n in nodes {
        match n {
            Node::Atom(a) if !a.is_empty() && !is_flag_action(a) => outputs.push(a),
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

fn info_value(w: &mut W, name: &str, value: &str) {
    match name {
        "packets" | "bytes" => match number(value) {
            Some(n) => w.u64(n),
            None => w.str(value),
        },
        "used" => match value.strip_suffix('s').and_then(|s| s.parse::<f64>().ok()) {
            Some(secs) => w.f64(secs),
            None => w.str(value),
        },
        _ => w.str(value),
    }
}

/// Decodes one datapath flow line into its JSON.
pub fn decode(line: &str) -> Result<String, ParseError> {
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
    let acts_nodes = Parser::new(acts, rest_at).list(None)?;
    if acts_nodes.is_empty() {
        return Err(ParseError {
            at: rest_at,
            message: "\"actions:\" is empty".into(),
        });
    }
    let extra = match extra {
        Some((base, extra)) => Some(Parser::new(extra, base + "dp-extra-info:".len()).list(None)?),
        None => None,
    };
    let mut warnings = Vec::new();
    // The match and the statistics are printed interleaved: each is written apart, then both
    // into the flow.
    let mut flow = W::with_capacity(line.len() * 3);
    let mut matched = W::with_capacity(line.len() * 2);
    let mut info = W::with_capacity(128);
    flow.open_obj();
    matched.open_obj();
    info.open_obj();
    for item in &head {
        match item {
            Node::Field { name, value } if *name == "ufid" => flow.field("ufid", value),
            Node::Field { name, value } => {
                if !is_info(name) {
                    warnings.push(format!("unknown field {name}"));
                }
                info.key(name);
                info_value(&mut info, name, value);
            }
            Node::Call { name, args, .. } => {
                if !is_key(name) {
                    warnings.push(format!("unknown key {name}"));
                }
                matched.key(name);
                key_value(&mut matched, args);
            }
            Node::Atom("") => {}
            Node::Atom(a) => warnings.push(format!("unknown word {a}")),
        }
    }
    matched.close_obj();
    info.close_obj();
    let mut recircs = Vec::new();
    let mut outputs = Vec::new();
    walk(&acts_nodes, &mut recircs, &mut outputs);
    // Each port once, in first-seen order (a set: a line may name thousands).
    let mut seen = std::collections::BTreeSet::new();
    outputs.retain(|o| seen.insert(*o));
    flow.key("match");
    flow.raw(&matched.out);
    flow.key("info");
    flow.raw(&info.out);
    flow.key("actions");
    actions(&mut flow, &acts_nodes, &mut warnings);
    if let Some(nodes) = extra {
        flow.key("dp_extra_info");
        generic_obj(&mut flow, &nodes);
    }
    flow.key("recircs");
    flow.open_arr();
    for r in recircs {
        flow.u64(r);
    }
    flow.close_arr();
    flow.key("outputs");
    flow.open_arr();
    for o in outputs {
        flow.str(o);
    }
    flow.close_arr();
    if !warnings.is_empty() {
        flow.key("warnings");
        flow.open_arr();
        for m in &warnings {
            flow.str(m);
        }
        flow.close_arr();
    }
    flow.close_obj();
    Ok(flow.out)
}

/// `miniflow_bits(4,1)` → {"miniflow_bits": "4,1"}.
fn generic_obj(w: &mut W, nodes: &[Node]) {
    w.open_obj();
    for n in nodes {
        match n {
            Node::Call { name, args, .. } if args.iter().all(|a| matches!(a, Node::Atom(_))) => {
                let text: Vec<&str> = args.iter().map(Node::name).collect();
                w.key(name);
                w.str(&text.join(","));
            }
            other => generic_item(w, other),
        }
    }
    w.close_obj();
}
