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

use crate::json::W;
use crate::odp::masked;
use crate::syntax::{Node, ParseError, Parser, find_top, generic, number};

/// Fields of the statistics part (the rest of the left side is the match).
fn is_info(s: &str) -> bool {
    matches!(
        s,
        "cookie"
            | "duration"
            | "table"
            | "n_packets"
            | "n_bytes"
            | "idle_timeout"
            | "hard_timeout"
            | "importance"
            | "idle_age"
            | "hard_age"
            | "reset_counts"
            | "send_flow_rem"
            | "check_overlap"
            | "no_packet_counts"
            | "no_byte_counts"
            | "out_port"
            | "out_group"
    )
}

/// Flow flags OVS prints as bare words separated by spaces (`reset_counts in_port=3`).
fn is_flag(s: &str) -> bool {
    matches!(
        s,
        "reset_counts" | "send_flow_rem" | "check_overlap" | "no_packet_counts" | "no_byte_counts"
    )
}

/// Bare words that name a port.
fn is_port(s: &str) -> bool {
    matches!(
        s,
        "NORMAL" | "LOCAL" | "IN_PORT" | "FLOOD" | "ALL" | "CONTROLLER" | "in_port"
    )
}

fn actions(w: &mut W, nodes: &[Node], tables: &mut Vec<u64>) {
    w.open_arr();
    for n in nodes {
        action(w, n, tables);
    }
    w.close_arr();
}

fn action(w: &mut W, n: &Node, tables: &mut Vec<u64>) {
    match n {
        Node::Atom(a) if is_port(a) || number(a).is_some() => {
            w.one("output", |w| w.one("port", |w| w.str(a)))
        }
        Node::Atom(a) => w.one(a, |w| w.bool(true)),
        Node::Field { name, value } => match *name {
            "output" => w.one("output", |w| w.one("port", |w| w.str(value))),
            "goto_table" => {
                if let Some(t) = number(value) {
                    tables.push(t);
                }
                w.one(name, |w| w.str(value))
            }
            _ => w.one(name, |w| w.str(value)),
        },
        Node::Call { name, args, tail } => match *name {
            "resubmit" => {
                let port = args.first().map(Node::name).unwrap_or("");
                let table = args.get(1).map(Node::name).unwrap_or("");
                if let Some(t) = number(table) {
                    tables.push(t);
                }
                w.one(name, |w| {
                    w.open_obj();
                    w.field("port", port);
                    w.field("table", table);
                    w.close_obj();
                })
            }
            "clone" => w.one(name, |w| actions(w, args, tables)),
            "check_pkt_larger" => w.one(name, |w| {
                w.open_obj();
                w.field("pkt_len", args.first().map(Node::name).unwrap_or(""));
                w.field("dst", tail.trim_start_matches("->"));
                w.close_obj();
            }),
            "ct" => {
                for a in args {
                    if let Node::Field { name, value } = a
                        && *name == "table"
                        && let Some(t) = number(value)
                    {
                        tables.push(t);
                    }
                }
                w.one(name, |w| generic(w, args))
            }
            _ => w.one(name, |w| {
                if tail.is_empty() {
                    generic(w, args);
                } else {
                    w.open_obj();
                    w.key("args");
                    generic(w, args);
                    w.field("dst", tail.trim_start_matches("->"));
                    w.close_obj();
                }
            }),
        },
    }
}

fn info_value(w: &mut W, name: &str, value: &str) {
    match name {
        "duration" | "idle_age" | "hard_age" => match value.trim_end_matches('s').parse::<f64>() {
            Ok(s) => w.f64(s),
            Err(_) => w.str(value),
        },
        "table" | "n_packets" | "n_bytes" | "idle_timeout" | "hard_timeout" => {
            match number(value) {
                Some(n) => w.u64(n),
                None => w.str(value),
            }
        }
        _ => w.str(value),
    }
}

/// Decodes one OpenFlow flow line into its JSON.
pub fn decode(line: &str) -> Result<String, ParseError> {
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
    let mut info = W::with_capacity(256);
    let mut matched = W::with_capacity(line.len() * 2);
    info.open_obj();
    matched.open_obj();
    for item in &left {
        match item {
            Node::Field { name, value } if is_info(name) => {
                info.key(name);
                info_value(&mut info, name, value);
            }
            Node::Field { name, value } => {
                matched.key(name);
                masked(&mut matched, value);
            }
            Node::Atom("") => {}
            Node::Atom(a) if is_flag(a) => {
                info.key(a);
                info.bool(true);
            }
            Node::Atom(a) => {
                matched.key(a);
                matched.bool(true);
            }
            Node::Call { name, .. } => {
                return Err(ParseError {
                    at: line.find(name).unwrap_or(0),
                    message: format!("unexpected '{name}(' in an OpenFlow match"),
                });
            }
        }
    }
    info.close_obj();
    matched.close_obj();
    let mut tables = Vec::new();
    let mut flow = W::with_capacity(line.len() * 3);
    flow.open_obj();
    flow.key("info");
    flow.raw(&info.out);
    flow.key("match");
    flow.raw(&matched.out);
    flow.key("actions");
    actions(&mut flow, &acts, &mut tables);
    tables.sort_unstable();
    tables.dedup();
    flow.key("next_tables");
    flow.open_arr();
    for t in tables {
        flow.u64(t);
    }
    flow.close_arr();
    flow.close_obj();
    Ok(flow.out)
}
