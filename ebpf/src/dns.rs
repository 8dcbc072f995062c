//! DNS in user space: the TC program sends the payload of every port-53 packet; this module
//! parses the header and question, matches responses to queries by transaction id (latency),
//! and keeps the latest DNS facts per flow key until the flow is evicted.

use crate::records::{DnsEvent, FlowKey};
use std::collections::HashMap;
use weir_core::flow::{Flow, dns_rcode_name};

/// The header and first question of a DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub flags: u16,
    pub name: String,
    pub qtype: u16,
}

impl DnsMessage {
    pub fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    pub fn rcode(&self) -> u16 {
        self.flags & 0x000f
    }
}

/// Parses a DNS message (over TCP, without its 2-byte length prefix). Names are read up to
/// 255 bytes; compression pointers are not followed (questions are never compressed).
pub fn parse(payload: &[u8]) -> Option<DnsMessage> {
    if payload.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([payload[0], payload[1]]);
    let flags = u16::from_be_bytes([payload[2], payload[3]]);
    let qdcount = u16::from_be_bytes([payload[4], payload[5]]);
    let mut name = String::new();
    let mut qtype = 0;
    if qdcount > 0 {
        let mut off = 12;
        let mut complete = false;
        while let Some(&len) = payload.get(off) {
            if len == 0 {
                off += 1;
                complete = true;
                break;
            }
            if len & 0xc0 != 0 || name.len() + usize::from(len) > 255 {
                break;
            }
            // A question cut short keeps what was read (the header is still worth having).
            let Some(label) = payload.get(off + 1..off + 1 + usize::from(len)) else {
                break;
            };
            if !name.is_empty() {
                name.push('.');
            }
            for &c in label {
                if c.is_ascii_graphic() {
                    name.push(char::from(c));
                } else {
                    name.push_str(&format!("\\{c:03}"));
                }
            }
            off += 1 + usize::from(len);
        }
        if complete && let Some(t) = payload.get(off..off + 2) {
            qtype = u16::from_be_bytes([t[0], t[1]]);
        }
    }
    Some(DnsMessage {
        id,
        flags,
        name,
        qtype,
    })
}

/// DNS facts kept for one flow key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsInfo {
    pub id: u16,
    pub flags: u16,
    pub name: String,
    pub qtype: u16,
    pub latency_us: u64,
    pub response: bool,
}

impl DnsInfo {
    /// Writes the facts onto a flow record.
    pub fn apply(&self, f: &mut Flow) {
        f.dns_id = self.id;
        f.dns_flags = self.flags;
        f.dns_name = self.name.clone();
        f.dns_qtype = self.qtype;
        f.dns_latency_us = self.latency_us;
        f.dns_flags_response_code = if self.response {
            dns_rcode_name(self.flags & 0x000f)
        } else {
            String::new()
        };
    }
}

/// Identifies a transaction: client, server and id (the interface is not part of it, so a
/// query seen leaving the client and a response seen anywhere on the path match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TxKey {
    client: [u8; 16],
    client_port: u16,
    server: [u8; 16],
    server_port: u16,
    proto: u8,
    id: u16,
}

/// In-flight queries older than this are forgotten.
const QUERY_TTL_NS: u64 = 30_000_000_000;
/// Most in-flight queries and flow entries kept (a flood of queries cannot grow memory
/// without bound).
const MAX_ENTRIES: usize = 65_536;

/// Matches DNS events into per-flow facts.
#[derive(Debug, Default)]
pub struct DnsTracker {
    /// First time each query was seen (kernel monotonic ns).
    queries: HashMap<TxKey, u64>,
    /// Facts per flow key, with the kernel time of the event that last set them.
    per_flow: HashMap<FlowKey, (DnsInfo, u64)>,
    /// Messages that could not be parsed.
    pub malformed: u64,
    /// Responses matched to a query.
    pub matched: u64,
    /// Entries dropped because a table was full.
    pub overflow: u64,
}

impl DnsTracker {
    /// Takes one event from the kernel.
    pub fn add(&mut self, e: &DnsEvent) {
        let len = usize::from(e.len).min(e.payload.len());
        let mut payload = &e.payload[..len];
        if e.key.proto == 6 {
            // DNS over TCP: a 2-byte length, then the message (segments without the start
            // of a message do not parse and are counted as malformed).
            payload = payload.get(2..).unwrap_or(&[]);
        }
        let Some(m) = parse(payload) else {
            self.malformed += 1;
            return;
        };
        let k = &e.key;
        let mut info = DnsInfo {
            id: m.id,
            flags: m.flags,
            name: m.name.clone(),
            qtype: m.qtype,
            latency_us: 0,
            response: m.is_response(),
        };
        if m.is_response() {
            let tx = TxKey {
                client: k.dst_addr,
                client_port: k.dst_port,
                server: k.src_addr,
                server_port: k.src_port,
                proto: k.proto,
                id: m.id,
            };
            if let Some(&sent) = self.queries.get(&tx)
                && e.ts_ns >= sent
            {
                info.latency_us = (e.ts_ns - sent) / 1000;
                self.matched += 1;
            }
        } else {
            let tx = TxKey {
                client: k.src_addr,
                client_port: k.src_port,
                server: k.dst_addr,
                server_port: k.dst_port,
                proto: k.proto,
                id: m.id,
            };
            // The first sighting counts (the query crosses several interfaces).
            if !self.queries.contains_key(&tx) {
                if self.queries.len() >= MAX_ENTRIES {
                    self.expire(e.ts_ns);
                }
                if self.queries.len() < MAX_ENTRIES {
                    self.queries.insert(tx, e.ts_ns);
                } else {
                    self.overflow += 1;
                }
            }
        }
        if self.per_flow.len() >= MAX_ENTRIES && !self.per_flow.contains_key(k) {
            self.overflow += 1;
            return;
        }
        self.per_flow.insert(*k, (info, e.ts_ns));
    }

    /// Forgets queries that never got an answer.
    pub fn expire(&mut self, now_ns: u64) {
        self.queries
            .retain(|_, t| now_ns.saturating_sub(*t) < QUERY_TTL_NS);
    }

    /// Takes the facts for an evicted flow from events before `before_ns` (kernel monotonic):
    /// newer ones belong to packets its round did not count, and stay for the next.
    pub fn take(&mut self, k: &FlowKey, before_ns: u64) -> Option<DnsInfo> {
        if self.per_flow.get(k)?.1 >= before_ns {
            return None;
        }
        self.per_flow.remove(k).map(|(info, _)| info)
    }

    /// Drops per-flow facts from events before `before_ns` (kernel monotonic) whose flow was
    /// not evicted (sampled out or filtered). Later facts stay: their packets were counted in
    /// the map that is active now, and the next round takes them.
    pub fn clear_flows(&mut self, before_ns: u64) {
        self.per_flow.retain(|_, (_, ts)| *ts >= before_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::DNS_MAX;

    fn query(id: u16, flags: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    fn event(key: FlowKey, ts: u64, payload: &[u8]) -> DnsEvent {
        let mut e = DnsEvent {
            key,
            ts_ns: ts,
            len: payload.len() as u16,
            _pad: [0; 3],
            payload: [0; DNS_MAX],
        };
        e.payload[..payload.len()].copy_from_slice(payload);
        e
    }

    #[test]
    fn a_round_keeps_the_facts_of_packets_counted_after_its_flip() {
        let mut t = DnsTracker::default();
        let mut before = FlowKey {
            src_port: 40001,
            dst_port: 53,
            proto: 17,
            ..Default::default()
        };
        before.src_addr[15] = 1;
        let mut after = before;
        after.src_port = 40002;
        t.add(&event(before, 1_000, &query(1, 0x0100, "a.test", 1)));
        t.add(&event(after, 3_000, &query(2, 0x0100, "b.test", 1)));
        // A round flipped at 2_000 and evicted neither flow (the first was filtered out).
        t.clear_flows(2_000);
        assert!(
            t.take(&before, u64::MAX).is_none(),
            "a fact of the drained maps' time goes"
        );
        // A round finishing at 2_500 leaves it; the next one takes it.
        assert!(
            t.take(&after, 2_500).is_none(),
            "a fact from after the round's start"
        );
        assert_eq!(
            t.take(&after, 4_000).map(|i| i.name),
            Some("b.test".to_string()),
            "the next round's fact stays"
        );
    }

    #[test]
    fn parses_header_and_question() {
        let m = parse(&query(0x1234, 0x0100, "www.example.org", 28)).unwrap();
        assert_eq!(m.id, 0x1234);
        assert_eq!(m.name, "www.example.org");
        assert_eq!(m.qtype, 28);
        assert!(!m.is_response());
        assert!(parse(&[1, 2, 3]).is_none());
        // A question cut short: the header and the labels read so far, no type.
        let mut cut = query(1, 0, "abc.def", 1);
        cut.truncate(18);
        let m = parse(&cut).unwrap();
        assert_eq!((m.id, m.name.as_str(), m.qtype), (1, "abc", 0));
    }

    #[test]
    fn matches_responses_to_queries() {
        let mut t = DnsTracker::default();
        let mut q = FlowKey {
            src_port: 40000,
            dst_port: 53,
            proto: 17,
            ifindex: 3,
            ..Default::default()
        };
        q.src_addr[15] = 1;
        q.dst_addr[15] = 2;
        let mut r = q;
        r.src_addr = q.dst_addr;
        r.dst_addr = q.src_addr;
        r.src_port = 53;
        r.dst_port = 40000;
        t.add(&event(q, 1_000_000, &query(7, 0x0100, "nx.test", 1)));
        // The same query on another interface later: the first sighting stays.
        let mut q2 = q;
        q2.ifindex = 4;
        t.add(&event(q2, 1_200_000, &query(7, 0x0100, "nx.test", 1)));
        t.add(&event(r, 6_000_000, &query(7, 0x8183, "nx.test", 1)));
        let info = t.take(&r, u64::MAX).unwrap();
        assert_eq!(info.latency_us, 5000);
        let mut f = Flow::empty();
        info.apply(&mut f);
        assert_eq!(f.dns_flags_response_code, "NXDomain");
        assert_eq!(f.dns_name, "nx.test");
        let qi = t.take(&q, u64::MAX).unwrap();
        assert_eq!((qi.latency_us, qi.response), (0, false));
        assert!(t.take(&q, u64::MAX).is_none());
        t.add(&event(r, 7_000_000, &[0, 1]));
        assert_eq!(t.malformed, 1);
    }
}
