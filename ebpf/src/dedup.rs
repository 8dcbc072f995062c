//! Deduplication of one eviction round: a packet crossing a veth pair is counted at the
//! egress of one end and the ingress of the other, and a packet crossing a node (bridge,
//! routing between namespaces) on every interface it passes. Records of the same flow
//! (addresses, ports, protocol, ICMP type/code, Ethernet type) from every watched namespace
//! become one: the first sighting (earliest first packet) keeps its interface, direction and
//! counters; drops, RTT and DNS facts of the others are folded in; every interface it was seen
//! on is listed.

use crate::records::{FlowKey, FlowValue};
use std::collections::HashMap;

/// A drained record and where it came from.
#[derive(Debug, Clone)]
pub struct Raw {
    pub key: FlowKey,
    pub value: FlowValue,
    /// Index of the namespace instance that drained it.
    pub inst: usize,
}

/// One flow after deduplication: the primary record, with the drops and RTT of all, and
/// the other sightings in `others` (the primary is `members[0]`).
#[derive(Debug, Clone)]
pub struct Merged {
    pub key: FlowKey,
    pub value: FlowValue,
    pub inst: usize,
    /// Every sighting (instance, key), primary first; one entry when not duplicated.
    pub members: Vec<(usize, FlowKey)>,
}

fn flow_id(k: &FlowKey) -> FlowKey {
    FlowKey {
        ifindex: 0,
        direction: 0,
        ..*k
    }
}

/// Whether `a` is seen before `b`: records with packets before records with only drops or
/// an RTT, then the earliest first packet, then ingress before egress.
fn earlier(a: &Raw, b: &Raw) -> bool {
    let rank = |r: &Raw| {
        (
            r.value.skbs == 0,
            r.value.first_seen_ns,
            r.key.direction,
            r.inst,
        )
    };
    rank(a) < rank(b)
}

/// Merges the records of one round; the order of first appearance is kept.
pub fn dedup(records: Vec<Raw>) -> Vec<Merged> {
    let mut index: HashMap<FlowKey, usize> = HashMap::with_capacity(records.len());
    let mut groups: Vec<Vec<Raw>> = Vec::new();
    for r in records {
        let id = flow_id(&r.key);
        match index.get(&id) {
            Some(&i) => groups[i].push(r),
            None => {
                index.insert(id, groups.len());
                groups.push(vec![r]);
            }
        }
    }
    groups
        .into_iter()
        .filter_map(|mut g| {
            let p =
                (0..g.len()).reduce(|best, i| if earlier(&g[i], &g[best]) { i } else { best })?;
            g.swap(0, p);
            // The primary has packets whenever any sighting has (see `earlier`); the others
            // add only their drops, RTT and cgroup.
            let mut value = g[0].value;
            for other in &g[1..] {
                value.merge_facts(&other.value);
            }
            Some(Merged {
                key: g[0].key,
                value,
                inst: g[0].inst,
                members: g.iter().map(|r| (r.inst, r.key)).collect(),
            })
        })
        .collect()
}

/// Keeps every record as its own flow (deduplication off).
pub fn keep_all(records: Vec<Raw>) -> Vec<Merged> {
    records
        .into_iter()
        .map(|r| Merged {
            key: r.key,
            value: r.value,
            inst: r.inst,
            members: vec![(r.inst, r.key)],
        })
        .collect()
}

/// Sums the records of each (namespace, flow key): the ring buffer carries one per packet.
pub fn sum_per_flow(records: Vec<Raw>) -> Vec<Raw> {
    let mut index: HashMap<(usize, FlowKey), usize> = HashMap::with_capacity(records.len());
    let mut out: Vec<Raw> = Vec::new();
    for r in records {
        match index.get(&(r.inst, r.key)) {
            Some(&i) => out[i].value.merge(&r.value),
            None => {
                index.insert((r.inst, r.key), out.len());
                let mut value = FlowValue::default();
                value.merge(&r.value);
                out.push(Raw { value, ..r });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ifindex: u32, direction: u8, inst: usize, first: u64, skbs: u64) -> Raw {
        let mut key = FlowKey {
            ifindex,
            direction,
            proto: 17,
            src_port: 1000,
            dst_port: 53,
            ..Default::default()
        };
        key.src_addr[15] = 1;
        key.dst_addr[15] = 2;
        Raw {
            key,
            value: FlowValue {
                first_seen_ns: first,
                last_seen_ns: first + 10,
                bytes: skbs * 100,
                packets: skbs,
                skbs,
                ..Default::default()
            },
            inst,
        }
    }

    #[test]
    fn both_ends_of_a_veth_become_one_flow() {
        let egress_a = raw(5, 1, 0, 100, 3);
        let ingress_b = raw(7, 0, 1, 105, 3);
        let mut dropped = raw(7, 0, 1, 0, 0);
        dropped.value.drop_packets = 2;
        dropped.value.drop_bytes = 200;
        dropped.value.drop_reason = 9;
        dropped.value.drop_ns = 106;
        let mut other = raw(5, 1, 0, 50, 1);
        other.key.dst_port = 54;
        let out = dedup(vec![ingress_b, egress_a, other]);
        assert_eq!(out.len(), 2);
        let f = &out[0];
        assert_eq!(
            (f.key.ifindex, f.inst),
            (5, 0),
            "the first sighting is primary"
        );
        assert_eq!(f.value.bytes, 300, "counted once");
        assert_eq!(f.members.len(), 2);
        assert_eq!(f.members[1].1.ifindex, 7);
        let out = dedup(vec![raw(5, 1, 0, 100, 3), dropped]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].value.drop_packets, 2,
            "drops of the other end are kept"
        );
        assert_eq!(out[0].value.drop_reason, 9);
        assert_eq!(out[0].value.skbs, 3);
        assert_eq!(
            keep_all(vec![raw(5, 1, 0, 1, 1), raw(7, 0, 1, 2, 1)]).len(),
            2
        );
    }

    fn packet(inst: usize, port: u16, bytes: u64, seen: u64) -> Raw {
        let key = FlowKey {
            dst_port: port,
            ..FlowKey::default()
        };
        let value = FlowValue {
            bytes,
            packets: 1,
            skbs: 1,
            first_seen_ns: seen,
            last_seen_ns: seen,
            ..FlowValue::default()
        };
        Raw { key, value, inst }
    }

    #[test]
    fn ring_records_of_one_flow_are_summed_per_namespace() {
        let got = sum_per_flow(vec![
            packet(0, 53, 100, 30),
            packet(0, 53, 50, 10),
            packet(1, 53, 100, 20),
            packet(0, 80, 7, 5),
            packet(0, 53, 1, 40),
        ]);
        assert_eq!(got.len(), 3, "{got:?}");
        let a = &got[0];
        assert_eq!((a.inst, a.key.dst_port), (0, 53));
        assert_eq!((a.value.bytes, a.value.packets, a.value.skbs), (151, 3, 3));
        assert_eq!((a.value.first_seen_ns, a.value.last_seen_ns), (10, 40));
        assert_eq!(
            (got[1].inst, got[1].value.bytes),
            (1, 100),
            "another namespace"
        );
        assert_eq!((got[2].key.dst_port, got[2].value.bytes), (80, 7));
    }
}
