//! Datapath flows joined to captured conversations.
//!
//! A datapath flow covers a stored flow when every key it matches on (under its mask) agrees
//! with the stored flow's fields: MACs, EtherType, addresses, protocol, ports, ICMP type and
//! code, and the in_port (by name) is an interface the capture saw the flow on; and the stored
//! flow was alive between the start of the window and the datapath flow's last use. Keys the
//! capture does not see (conntrack state, recirc_id, marks, tunnel metadata) do not narrow the
//! join: after recirculation a conversation is matched again on its packet fields.

use super::DpFlow;
use crate::Flow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// Milliseconds a stored flow may end before a datapath flow's counted window and still be
/// joined (the capture and OVS stamp packets at different places).
pub const SLACK_MS: u64 = 1000;

fn value_mask(v: &Value) -> Option<(&str, Option<&str>)> {
    Some((
        v.get("value")?.as_str()?,
        v.get("mask").and_then(Value::as_str),
    ))
}

fn num(s: &str) -> Option<u64> {
    super::parse_num(s)
}

/// `value/mask` on integers: holds when `actual & mask == value & mask`.
fn num_ok(v: &Value, actual: u64) -> bool {
    let Some((value, mask)) = value_mask(v) else {
        return true;
    };
    let (Some(value), mask) = (num(value), mask.map(num)) else {
        return true;
    };
    match mask {
        None => value == actual,
        Some(Some(m)) => value & m == actual & m,
        Some(None) => true,
    }
}

fn mac_bytes(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn mac_ok(v: &Value, actual: &str) -> bool {
    let Some((value, mask)) = value_mask(v) else {
        return true;
    };
    let (Some(value), Some(actual)) = (mac_bytes(value), mac_bytes(actual)) else {
        // The capture gives no MAC (an L3 device): the key cannot narrow the join.
        return true;
    };
    let mask = mask.and_then(mac_bytes).unwrap_or([0xff; 6]);
    (0..6).all(|i| value[i] & mask[i] == actual[i] & mask[i])
}

fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn ip_ok(v: &Value, actual: IpAddr) -> bool {
    let Some((value, mask)) = value_mask(v) else {
        return true;
    };
    let Ok(value) = value.parse::<IpAddr>() else {
        return true;
    };
    if value.is_ipv4() != actual.is_ipv4() {
        return false;
    }
    let mask = match mask {
        None => u128::MAX,
        Some(m) => match m.parse::<IpAddr>() {
            Ok(m) => ip_bits(m),
            // A prefix length.
            Err(_) => match m.parse::<u32>() {
                Ok(len) => {
                    let width = if value.is_ipv4() { 32 } else { 128 };
                    let len = len.min(width);
                    if len == 0 {
                        0
                    } else {
                        (u128::MAX << (width - len)) & (u128::MAX >> (128 - width))
                    }
                }
                Err(_) => return true,
            },
        },
    };
    ip_bits(value) & mask == ip_bits(actual) & mask
}

/// Whether every field of a key has a zero mask.
fn all_masked_out(key: &Value) -> bool {
    key.as_object().is_some_and(|o| {
        o.values().all(|v| {
            v.get("mask")
                .and_then(Value::as_str)
                .and_then(num)
                .is_some_and(|m| m == 0)
        })
    })
}

/// Whether the datapath flow's masked keys agree with the stored flow's fields.
pub fn keys_match(dp: &DpFlow, f: &Flow) -> bool {
    let outer: &Value = &dp.matched;
    let eth = &outer["eth"];
    // A VLAN-tagged megaflow matches the inner packet inside `encap(...)`; the capture records
    // the inner EtherType.
    let tagged = ["0x8100", "0x88a8"].contains(&outer["eth_type"]["value"].as_str().unwrap_or(""))
        && outer["encap"].is_object();
    let m = if tagged { &outer["encap"] } else { outer };
    let eth_ok =
        eth.is_null() || (mac_ok(&eth["src"], &f.src_mac) && mac_ok(&eth["dst"], &f.dst_mac));
    if !eth_ok {
        return false;
    }
    if !m["eth_type"].is_null() && f.etype != 0 && !num_ok(&m["eth_type"], f.etype as u64) {
        return false;
    }
    for key in ["ipv4", "ipv6"] {
        let ip = &m[key];
        if ip.is_null() {
            continue;
        }
        if (key == "ipv4") != f.src_addr.is_ipv4() {
            return false;
        }
        if !(ip_ok(&ip["src"], f.src_addr)
            && ip_ok(&ip["dst"], f.dst_addr)
            && num_ok(&ip["proto"], f.proto as u64))
        {
            return false;
        }
    }
    for (key, proto) in [("tcp", 6u8), ("udp", 17), ("sctp", 132)] {
        let l4 = &m[key];
        // OVS prints the L4 key of the packet that made the flow even when every field is
        // masked out (a flow for all of IP): such a key narrows nothing.
        if l4.is_null() || all_masked_out(l4) {
            continue;
        }
        if f.proto != proto
            || !num_ok(&l4["src"], f.src_port as u64)
            || !num_ok(&l4["dst"], f.dst_port as u64)
        {
            return false;
        }
    }
    for (key, proto) in [("icmp", 1u8), ("icmpv6", 58)] {
        let ic = &m[key];
        if ic.is_null() || all_masked_out(ic) {
            continue;
        }
        if f.proto != proto
            || !num_ok(&ic["type"], f.icmp_type as u64)
            || !num_ok(&ic["code"], f.icmp_code as u64)
        {
            return false;
        }
    }
    true
}

/// Whether the capture saw `f` on the interface OVS names `in_port` (a number cannot be told
/// and does not narrow the join).
pub fn port_match(in_port: &str, f: &Flow) -> bool {
    if in_port.parse::<u64>().is_ok() {
        return true;
    }
    if f.interface == in_port {
        return true;
    }
    f.interfaces
        .split(',')
        .any(|i| i == in_port || i.rsplit('/').next() == Some(in_port))
}

/// Whether `f` was alive between `from_ms` and the datapath flow's last use.
pub fn time_match(dp: &DpFlow, f: &Flow, from_ms: u64) -> bool {
    let Some(used) = dp.used_ms else {
        return false;
    };
    f.time_flow_end_ms + SLACK_MS >= from_ms && f.time_flow_start_ms <= used + SLACK_MS
}

/// The stored flows (indexes into `flows`) that `dp` covered since `from_ms`.
pub fn conversations(dp: &DpFlow, flows: &[Flow], from_ms: u64) -> Vec<usize> {
    flows
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            time_match(dp, f, from_ms) && port_match(&dp.in_port, f) && keys_match(dp, f)
        })
        .map(|(i, _)| i)
        .collect()
}

/// One step of a conversation's path through the datapath.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Index into the decoded datapath flows.
    pub flow: usize,
    pub recirc_id: u64,
    pub packets: u64,
    /// The actions, as printed.
    pub actions: String,
}

/// Every path a stored flow took: from a recirc_id 0 flow on its interface, through the
/// recirculations whose flows also match it. Paths end at a flow that does not recirculate
/// (or recirculates to nothing matching).
pub fn paths(f: &Flow, dps: &[DpFlow], from_ms: u64) -> Vec<Vec<Step>> {
    let ok =
        |dp: &DpFlow| time_match(dp, f, from_ms) && port_match(&dp.in_port, f) && keys_match(dp, f);
    let step = |i: usize| Step {
        flow: i,
        recirc_id: dps[i].recirc_id,
        packets: dps[i].packets,
        actions: dps[i]
            .text
            .split_once("actions:")
            .map(|(_, a)| {
                a.split(", dp-extra-info:")
                    .next()
                    .unwrap_or(a)
                    .trim()
                    .to_string()
            })
            .unwrap_or_default(),
    };
    let mut out = Vec::new();
    let mut stack: Vec<Vec<usize>> = dps
        .iter()
        .enumerate()
        .filter(|(_, d)| d.recirc_id == 0 && ok(d))
        .map(|(i, _)| vec![i])
        .collect();
    while let Some(path) = stack.pop() {
        if out.len() >= 64 {
            break;
        }
        let last = &dps[path[path.len() - 1]];
        let next: Vec<usize> = dps
            .iter()
            .enumerate()
            .filter(|(i, d)| {
                last.recircs.contains(&d.recirc_id)
                    && d.in_port == last.in_port
                    && !path.contains(i)
                    && ok(d)
            })
            .map(|(i, _)| i)
            .collect();
        if next.is_empty() || path.len() >= 16 {
            out.push(path.iter().map(|&i| step(i)).collect());
        } else {
            for n in next {
                let mut p = path.clone();
                p.push(n);
                stack.push(p);
            }
        }
    }
    out.sort_by_key(|p: &Vec<Step>| std::cmp::Reverse(p.iter().map(|s| s.packets).sum::<u64>()));
    out
}
