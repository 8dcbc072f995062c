//! OpenFlow flows as `ovs-ofctl dump-flows` prints them.
//!
//! The JSON of one flow:
//! ```text
//! {"info": {"cookie": "0x0", "duration": 0.014, "table": 1, "n_packets": 4, "n_bytes": 392, …},
//!  "match": {"priority": {"value": "100"}, "ip": true, "reg0": {"value": "0x1", "mask": "0x1"}, …},
//!  "actions": [{"output": {"port": "2"}}, {"resubmit": {"port": "", "table": "2"}},
//!              {"ct": {"commit": true, "zone": "5", "nat": {"src": "10.0.0.1"}}},
//!              {"check_pkt_larger": {"pkt_len": "200", "dst": "NXM_NX_REG0[0]"}}, …],
//!  "next_tables": [2]}                                 tables it resubmits or goes to
//! ```

use crate::json::J;
use crate::odp::masked;
use crate::syntax::{Node, ParseError, Parser, find_top, generic, number, one};

/// Fields of the statistics part (the rest of the left side is the match).
const INFO: &[&str] = &[
    "cookie",
    "duration",
    "table",
    "n_packets",
    "n_bytes",
    "idle_timeout",
    "hard_timeout",
    "importance",
    "idle_age",
    "hard_age",
    "reset_counts",
    "send_flow_rem",
    "check_overlap",
    "no_packet_counts",
    "no_byte_counts",
    "out_port",
    "out_group",
];

/// Flow flags OVS prints as bare words separated by spaces (`reset_counts in_port=3`).
const FLAGS: &[&str] = &[
    "reset_counts",
    "send_flow_rem",
    "check_overlap",
    "no_packet_counts",
    "no_byte_counts",
];

/// Bare words that name a port.
const PORTS: &[&str] = &[
    "NORMAL",
    "LOCAL",
    "IN_PORT",
    "FLOOD",
    "ALL",
    "CONTROLLER",
    "in_port",
];

fn actions(nodes: &[Node], tables: &mut Vec<u64>) -> J {
    J::Arr(nodes.iter().map(|n| action(n, tables)).collect())
}

fn action(n: &Node, tables: &mut Vec<u64>) -> J {
    match n {
        Node::Atom(a) if PORTS.contains(a) || number(a).is_some() => {
            one("output", one("port", J::s(*a)))
        }
        Node::Atom(a) => one(a, J::Bool(true)),
        Node::Field { name, value } => match *name {
            "output" => one("output", one("port", J::s(*value))),
            "goto_table" => {
                if let Some(t) = number(value) {
                    tables.push(t);
                }
                one(name, J::s(*value))
            }
            _ => one(name, J::s(*value)),
        },
        Node::Call { name, args, tail } => match *name {
            "resubmit" => {
                let mut o = J::obj();
                let port = args.first().map(Node::name).unwrap_or("");
                let table = args.get(1).map(Node::name).unwrap_or("");
                if let Some(t) = number(table) {
                    tables.push(t);
                }
                o.set("port", J::s(port));
                o.set("table", J::s(table));
                one(name, o)
            }
            "clone" => one(name, actions(args, tables)),
            "check_pkt_larger" => {
                let mut o = J::obj();
                o.set("pkt_len", J::s(args.first().map(Node::name).unwrap_or("")));
                o.set("dst", J::s(tail.trim_start_matches("->")));
                one(name, o)
            }
            "ct" => {
                for a in args {
                    if let Node::Field { name, value } = a
                        && *name == "table"
                        && let Some(t) = number(value)
                    {
                        tables.push(t);
                    }
                }
                one(name, generic(args))
            }
            _ => {
                let mut v = generic(args);
                if !tail.is_empty() {
                    let mut o = J::obj();
                    o.set("args", v);
                    o.set("dst", J::s(tail.trim_start_matches("->")));
                    v = o;
                }
                one(name, v)
            }
        },
    }
}

fn info_value(name: &str, value: &str) -> J {
    match name {
        "duration" | "idle_age" | "hard_age" => match value.trim_end_matches('s').parse::<f64>() {
            Ok(s) => J::Num(s),
            Err(_) => J::s(value),
        },
        "table" | "n_packets" | "n_bytes" | "idle_timeout" | "hard_timeout" => {
            match number(value) {
                Some(n) => J::Num(n as f64),
                None => J::s(value),
            }
        }
        _ => J::s(value),
    }
}

/// Decodes one OpenFlow flow line.
pub fn decode(line: &str) -> Result<J, ParseError> {
    let Some(at) = find_top(line, "actions=") else {
        return Err(ParseError {
            at: line.len(),
            message: "an OpenFlow flow needs \"actions=\"; none found".into(),
        });
    };
    // Flags are separated from what follows by a space, not a comma: spaces outside
    // brackets separate items on this side (same length, so columns still hold).
    let mut depth = 0i32;
    let head: String = line[..at]
        .chars()
        .map(|c| {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            }
            if c == ' ' && depth == 0 { ',' } else { c }
        })
        .collect();
    let left = Parser::new(&head, 0).list(None)?;
    let acts_at = at + "actions=".len();
    let acts = Parser::new(&line[acts_at..], acts_at).list(None)?;
    let mut info = J::obj();
    let mut matched = J::obj();
    for item in &left {
        match item {
            Node::Field { name, value } if INFO.contains(name) => {
                info.set(*name, info_value(name, value))
            }
            Node::Field { name, value } => matched.set(*name, masked(value)),
            Node::Atom("") => {}
            Node::Atom(a) if FLAGS.contains(a) => info.set(*a, J::Bool(true)),
            Node::Atom(a) => matched.set(*a, J::Bool(true)),
            Node::Call { name, .. } => {
                return Err(ParseError {
                    at: line.find(name).unwrap_or(0),
                    message: format!("unexpected '{name}(' in an OpenFlow match"),
                });
            }
        }
    }
    let mut tables = Vec::new();
    let mut flow = J::obj();
    flow.set("info", info);
    flow.set("match", matched);
    flow.set("actions", actions(&acts, &mut tables));
    tables.sort_unstable();
    tables.dedup();
    flow.set(
        "next_tables",
        J::Arr(tables.into_iter().map(|t| J::Num(t as f64)).collect()),
    );
    Ok(flow)
}
