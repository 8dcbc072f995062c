//! Deduplication of one eviction round: a packet crossing a veth pair is counted at the
//! egress of one end and the ingress of the other, and a packet crossing a node (bridge,
//! routing between namespaces) on every interface it passes. Records of the same flow
//! (addresses, ports, protocol, ICMP type/code, Ethernet type) from every watched namespace
//! become one: the first sighting (earliest first packet) keeps its interface, direction and
//! counters; drops, RTT and DNS facts of the others are folded in; every interface it was seen
//! on is listed.

use crate::records::{DIR_EGRESS, FlowKey, FlowValue};
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

/// Which of `slices` parts of a round the flow of `k` falls in: every sighting of one flow
/// (on any interface, ingress or egress) falls in the same part.
fn slice_of(k: &FlowKey, slices: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    flow_id(k).hash(&mut h);
    (h.finish() % slices.max(1) as u64) as usize
}

/// Splits a round's items (keys or records) into `slices` parts by their flow (see
/// [`slice_of`]), keeping their order within each part; one part when `slices` <= 1.
pub fn split_by_flow<T>(items: Vec<T>, slices: usize, key: impl Fn(&T) -> &FlowKey) -> Vec<Vec<T>> {
    if slices <= 1 {
        return vec![items];
    }
    // Each part sized exactly: its items counted first.
    let at: Vec<u32> = items
        .iter()
        .map(|i| slice_of(key(i), slices) as u32)
        .collect();
    let mut sizes = vec![0usize; slices];
    for &a in &at {
        if let Some(n) = sizes.get_mut(a as usize) {
            *n += 1;
        }
    }
    let mut parts: Vec<Vec<T>> = sizes.into_iter().map(Vec::with_capacity).collect();
    for (item, a) in items.into_iter().zip(at) {
        if let Some(p) = parts.get_mut(a as usize) {
            p.push(item);
        }
    }
    parts
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

/// The flows of one round, each the merge of its sightings, in the order of their first
/// appearance; built as they are taken. The round's records are grouped by sorting their
/// numbers, not by moving them: a round costs its records and 24 bytes per record besides,
/// however many are duplicates (100 k records are ~17 MB, and were ~60 MB at their peak when
/// each group was a vector of its own behind a hash map).
pub struct Flows {
    records: Vec<Raw>,
    /// Record numbers, each flow's sightings together, in their order of arrival.
    order: Vec<usize>,
    /// Each flow's sightings: (start, count) in `order`, in order of first appearance.
    groups: std::vec::IntoIter<(usize, usize)>,
}

impl Iterator for Flows {
    type Item = Merged;

    fn next(&mut self) -> Option<Merged> {
        let (start, count) = self.groups.next()?;
        let mut members: Vec<usize> = self.order.get(start..start + count)?.to_vec();
        let at = |i: usize| self.records.get(i);
        let p = (0..members.len()).reduce(|best, i| match (at(members[i]), at(members[best])) {
            (Some(a), Some(b)) if earlier(a, b) => i,
            _ => best,
        })?;
        members.swap(0, p);
        let primary = at(members[0])?;
        // The primary has packets whenever any sighting has (see `earlier`); the others
        // add only their drops, RTT and cgroup.
        let mut value = primary.value;
        for other in members[1..].iter().filter_map(|&i| at(i)) {
            value.merge_facts(&other.value);
        }
        // An RTT on an egress sighting is the sending socket's own; one on an ingress
        // sighting is the receiving socket's, copied (flows.bpf.c, `rtt_to_reverse`), and
        // it is the later of the two whenever a queue holds the packets between the ends.
        // The flow keeps its sender's latest where a sighting has it.
        if let Some(own) = members
            .iter()
            .filter_map(|&i| at(i))
            .filter(|r| r.key.direction == DIR_EGRESS && r.value.rtt_ns_at > 0)
            .max_by_key(|r| r.value.rtt_ns_at)
        {
            value.rtt_ns_at = own.value.rtt_ns_at;
            value.rtt_us = own.value.rtt_us;
        }
        Some(Merged {
            key: primary.key,
            value,
            inst: primary.inst,
            members: members
                .iter()
                .filter_map(|&i| at(i))
                .map(|r| (r.inst, r.key))
                .collect(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.groups.size_hint()
    }
}

impl ExactSizeIterator for Flows {}

/// Merges the records of one round; the order of first appearance is kept.
pub fn dedup(records: Vec<Raw>) -> Flows {
    let mut order: Vec<usize> = (0..records.len()).collect();
    let id = |i: usize| records.get(i).map(|r| flow_id(&r.key));
    // Sightings of one flow next to each other, each group in order of arrival.
    order.sort_unstable_by(|&a, &b| id(a).cmp(&id(b)).then(a.cmp(&b)));
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for end in 1..=order.len() {
        if end == order.len() || id(order[end]) != id(order[start]) {
            groups.push((start, end - start));
            start = end;
        }
    }
    // A group's first record number is its first appearance.
    groups.sort_unstable_by_key(|&(start, _)| order[start]);
    Flows {
        records,
        order,
        groups: groups.into_iter(),
    }
}

/// Keeps every record as its own flow (deduplication off).
pub fn keep_all(records: Vec<Raw>) -> Flows {
    let n = records.len();
    Flows {
        records,
        order: (0..n).collect(),
        groups: (0..n).map(|i| (i, 1)).collect::<Vec<_>>().into_iter(),
    }
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

    /// A round in slices merges what one round did: every sighting of a flow falls in the
    /// same slice, and the slices share the flows out about evenly.
    #[test]
    fn every_sighting_of_a_flow_falls_in_one_slice_and_slices_are_even() {
        let (a, b) = (raw(5, 1, 0, 100, 3), raw(7, 0, 1, 105, 3));
        for slices in [1, 2, 4, 7] {
            assert_eq!(slice_of(&a.key, slices), slice_of(&b.key, slices));
            assert!(slice_of(&a.key, slices) < slices);
        }
        let records: Vec<Raw> = (0..4000u16)
            .map(|port| {
                let mut r = raw(5, 1, 0, 100, 1);
                r.key.src_port = port;
                r
            })
            .chain([a, b])
            .collect();
        let parts = split_by_flow(records, 4, |r| &r.key);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 4002, "none lost");
        assert!(
            parts.iter().all(|p| (800..1200).contains(&p.len())),
            "{:?}",
            parts.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let together = parts
            .iter()
            .filter(|p| p.iter().any(|r| r.key.ifindex == 7))
            .all(|p| {
                p.iter()
                    .any(|r| r.key.ifindex == 5 && r.key.src_port == 1000)
            });
        assert!(together, "both ends of the veth in one part");
        let one = split_by_flow(vec![raw(5, 1, 0, 100, 1), raw(7, 0, 1, 105, 1)], 1, |r| {
            &r.key
        });
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), 2);
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
        let out: Vec<Merged> = dedup(vec![ingress_b, egress_a, other]).collect();
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
        let out: Vec<Merged> = dedup(vec![raw(5, 1, 0, 100, 3), dropped]).collect();
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

    #[test]
    fn the_senders_own_rtt_wins_over_a_later_copy_at_the_receiving_end() {
        // Egress at one end (the sending socket's RTT, 80 ms), ingress at the other (the
        // receiving socket's 11 µs, copied later: the packets sat in a queue between).
        let mut sent = raw(5, DIR_EGRESS, 0, 100, 3);
        sent.value.rtt_us = 80_000;
        sent.value.rtt_ns_at = 150;
        let mut got = raw(7, 0, 1, 90, 3);
        got.value.rtt_us = 11;
        got.value.rtt_ns_at = 400;
        for records in [vec![sent.clone(), got.clone()], vec![got, sent]] {
            let out: Vec<Merged> = dedup(records).collect();
            assert_eq!(out.len(), 1);
            assert_eq!((out[0].value.rtt_us, out[0].value.rtt_ns_at), (80_000, 150));
        }
        // With no egress sighting, the latest RTT stays.
        let mut a = raw(5, 0, 0, 100, 3);
        a.value.rtt_us = 7;
        a.value.rtt_ns_at = 300;
        let mut b = raw(7, 0, 1, 90, 3);
        b.value.rtt_us = 9;
        b.value.rtt_ns_at = 200;
        let out: Vec<Merged> = dedup(vec![a, b]).collect();
        assert_eq!(out[0].value.rtt_us, 7);
    }

    /// The grouping as it was first written (a vector per flow behind a hash map): what
    /// the sorted grouping must give, flow for flow.
    /// What is compared of a flow: key, namespace, bytes, drops, sightings.
    type Seen = (FlowKey, usize, u64, u64, Vec<(usize, FlowKey)>);

    fn by_hash(records: Vec<Raw>) -> Vec<Seen> {
        let mut index: HashMap<FlowKey, usize> = HashMap::new();
        let mut groups: Vec<Vec<Raw>> = Vec::new();
        for r in records {
            match index.get(&flow_id(&r.key)) {
                Some(&i) => groups[i].push(r),
                None => {
                    index.insert(flow_id(&r.key), groups.len());
                    groups.push(vec![r]);
                }
            }
        }
        groups
            .into_iter()
            .map(|mut g| {
                let p = (0..g.len())
                    .reduce(|best, i| if earlier(&g[i], &g[best]) { i } else { best })
                    .unwrap_or(0);
                g.swap(0, p);
                let mut value = g[0].value;
                for other in &g[1..] {
                    value.merge_facts(&other.value);
                }
                let members = g.iter().map(|r| (r.inst, r.key)).collect();
                (
                    g[0].key,
                    g[0].inst,
                    value.bytes,
                    value.drop_packets as u64,
                    members,
                )
            })
            .collect()
    }

    #[test]
    fn sorted_grouping_gives_what_the_hash_grouping_gave() {
        // A round of 5,000 records: 1,500 flows seen once to four times, on two namespaces
        // and two interfaces each, arriving shuffled, some with drops only.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let records: Vec<Raw> = (0..5000)
            .map(|_| {
                let flow = next(1500) as u16;
                let skbs = next(3);
                let mut r = raw(
                    1 + next(2) as u32,
                    next(2) as u8,
                    next(2) as usize,
                    next(50),
                    skbs,
                );
                r.key.src_port = flow;
                r.value.drop_packets = if skbs == 0 { 1 + next(4) as u32 } else { 0 };
                r
            })
            .collect();
        let want = by_hash(records.clone());
        let flows = dedup(records);
        assert_eq!(flows.len(), want.len());
        let got: Vec<_> = flows
            .map(|m| {
                (
                    m.key,
                    m.inst,
                    m.value.bytes,
                    m.value.drop_packets as u64,
                    m.members,
                )
            })
            .collect();
        assert!(want.len() > 1000 && want.iter().any(|w| w.4.len() > 2));
        assert_eq!(got, want);
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
