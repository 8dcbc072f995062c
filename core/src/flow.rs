//! The flow record: one aggregated flow as captured on one interface in one direction.
//!
//! Field names follow NetObserv's flow format (`SrcAddr`, `Bytes`, `TimeFlowStartMs`, ...) so
//! that existing filters and tooling carry over. Fields weir adds are marked as such.
//!
//! # Adding a field
//! Two places are required; tests fail until both are done:
//! 1. here: the field (NetObserv's name in `rename` where one exists, `weir:` in the doc
//!    otherwise) and its empty value in [`Flow::empty`];
//! 2. `schema.rs`: its line in `FIELDS` (name, kind, reader). The index, the filter
//!    language, aggregations, JSON, the ClickHouse columns (`weir server` adds them when it
//!    migrates) and plugins' `flow-fields` all read that list
//!    (`schema::tests::every_flow_field_has_its_line_in_the_list`).
//!
//! Stored records need nothing more: record blocks keep one column per `FIELDS` name
//! (`store/columns.rs`), so blocks written before the field read back with its empty value.
//! Renaming a field is different: its stored column keeps the old name (see there).
//!
//! And whoever fills it: the kernel record (`ebpf/src/bpf/flow.h`, mirrored by
//! `ebpf/src/records.rs` with its size asserts, finished in `ebpf/src/instance/evict.rs`),
//! an enricher (`enrich.rs`), or imports only. Filters by the field work at once; a flow
//! metric label, an IPFIX element (`plugins/ipfix-export`) or a UI column are choices made
//! where those live. Document it in README's list of what a flow carries ("Querying").

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

/// Packet direction relative to the interface (NetObserv `IfDirection`).
pub const DIR_INGRESS: u8 = 0;
/// Packet direction relative to the interface (NetObserv `IfDirection`).
pub const DIR_EGRESS: u8 = 1;

/// One flow record. In JSON, missing fields take their empty value and unknown fields are
/// refused (a misspelt field should not vanish silently).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Flow {
    /// First packet of the flow in this record, Unix milliseconds.
    #[serde(rename = "TimeFlowStartMs")]
    pub time_flow_start_ms: u64,
    /// Last packet of the flow in this record, Unix milliseconds.
    #[serde(rename = "TimeFlowEndMs")]
    pub time_flow_end_ms: u64,
    /// When user space received the record, Unix seconds (NetObserv `TimeReceived`).
    #[serde(rename = "TimeReceived")]
    pub time_received: u64,
    /// Ethernet type (0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP, ...).
    #[serde(rename = "Etype")]
    pub etype: u16,
    #[serde(rename = "SrcMac")]
    pub src_mac: String,
    #[serde(rename = "DstMac")]
    pub dst_mac: String,
    /// Source address; `0.0.0.0` for non-IP frames.
    #[serde(rename = "SrcAddr")]
    pub src_addr: IpAddr,
    #[serde(rename = "DstAddr")]
    pub dst_addr: IpAddr,
    #[serde(rename = "SrcPort")]
    pub src_port: u16,
    #[serde(rename = "DstPort")]
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6); 0 for non-IP frames.
    #[serde(rename = "Proto")]
    pub proto: u8,
    #[serde(rename = "IcmpType")]
    pub icmp_type: u8,
    #[serde(rename = "IcmpCode")]
    pub icmp_code: u8,
    /// Bytes as the interface counts them (the frame length, L2 header included).
    #[serde(rename = "Bytes")]
    pub bytes: u64,
    /// Packets, GSO-segment aware (a 58 KB TCP super-packet counts as its segments).
    #[serde(rename = "Packets")]
    pub packets: u64,
    /// weir: socket buffers, i.e. packets as the interface statistics count them.
    #[serde(rename = "Skbs")]
    pub skbs: u64,
    /// OR of the TCP flags seen (FIN 0x1, SYN 0x2, RST 0x4, PSH 0x8, ACK 0x10, URG 0x20,
    /// ECE 0x40, CWR 0x80, NS 0x100), plus [`FLAG_SYN_NO_ACK`] (0x1000, shown `OPEN`) when a
    /// SYN without ACK was seen: this flow's source opened the connection.
    #[serde(rename = "Flags")]
    pub flags: u16,
    /// Interface name.
    #[serde(rename = "Interface")]
    pub interface: String,
    /// 0 ingress, 1 egress.
    #[serde(rename = "IfDirection")]
    pub if_direction: u8,
    /// 1-in-N packet sampling in force; 0 or 1 means every packet was seen.
    #[serde(rename = "Sampling")]
    pub sampling: u32,
    /// weir: the network namespace the interface lives in ("" for the agent's own).
    #[serde(rename = "NetNs")]
    pub netns: String,
    /// weir: the node whose agent captured or imported the flow (`weir agent --node`, by
    /// default `$NODE_NAME`); "" when the agent has none. A cluster's flows are told apart
    /// by it (`weir server`: `Node=node-a`, group by `Node`).
    #[serde(rename = "Node")]
    pub node: String,
    /// weir: every interface the flow was seen on when sightings were deduplicated, as
    /// `netns/interface` (or `interface` in the agent's namespace), the kept one first,
    /// comma-separated; "" when it was seen once.
    #[serde(rename = "Interfaces")]
    pub interfaces: String,
    /// weir: the direction on each of `Interfaces` (0 ingress, 1 egress), comma-separated.
    #[serde(rename = "IfDirections")]
    pub if_directions: String,
    /// weir: cgroup (v2, path below the cgroup root) of the socket that sent the flow, where
    /// the kernel gives it (egress of locally sent traffic); "" otherwise.
    #[serde(rename = "Cgroup")]
    pub cgroup: String,
    /// weir: container id (64 hex digits) found in the cgroup path (docker, containerd,
    /// CRI-O, podman, Kubernetes pods); "" when none.
    #[serde(rename = "ContainerId")]
    pub container_id: String,
    /// Bytes of this flow's packets the kernel dropped (kfree_skb with a reason).
    #[serde(rename = "PktDropBytes")]
    pub pkt_drop_bytes: u64,
    /// Packets of this flow the kernel dropped.
    #[serde(rename = "PktDropPackets")]
    pub pkt_drop_packets: u64,
    /// Reason of the latest drop, as the running kernel names it (`SKB_DROP_REASON_...`).
    #[serde(rename = "PktDropLatestDropCause")]
    pub pkt_drop_latest_drop_cause: String,
    /// Smoothed round-trip time of the TCP connection, nanoseconds (0: not measured).
    #[serde(rename = "TimeFlowRttNs")]
    pub time_flow_rtt_ns: u64,
    /// DNS transaction id of the latest DNS message in this flow.
    #[serde(rename = "DnsId")]
    pub dns_id: u16,
    /// DNS header flags (QR, opcode, AA, TC, RD, RA, rcode) of the latest DNS message.
    #[serde(rename = "DnsFlags")]
    pub dns_flags: u16,
    /// Response code by name (`NoError`, `NXDomain`, `ServFail`, ...); "" for queries.
    #[serde(rename = "DnsFlagsResponseCode")]
    pub dns_flags_response_code: String,
    /// weir: time from the query to this response, microseconds (0: no matching query).
    #[serde(rename = "DnsLatencyUs")]
    pub dns_latency_us: u64,
    /// weir: the queried name.
    #[serde(rename = "DnsName")]
    pub dns_name: String,
    /// weir: the query type (1 A, 28 AAAA, 5 CNAME, 15 MX, 16 TXT, 33 SRV, ...).
    #[serde(rename = "DnsQType")]
    pub dns_qtype: u16,
    /// Who the source is (inventory file or Kubernetes): name of the pod, host or service.
    #[serde(rename = "SrcK8S_Name")]
    pub src_k8s_name: String,
    #[serde(rename = "SrcK8S_Namespace")]
    pub src_k8s_namespace: String,
    /// Owner workload (Deployment, StatefulSet, DaemonSet, ...) or the inventory's workload.
    #[serde(rename = "SrcK8S_OwnerName")]
    pub src_k8s_owner_name: String,
    #[serde(rename = "SrcK8S_OwnerType")]
    pub src_k8s_owner_type: String,
    /// Kind of the named object (Pod, Service, Node, or the inventory's kind).
    #[serde(rename = "SrcK8S_Type")]
    pub src_k8s_type: String,
    /// Node the source runs on.
    #[serde(rename = "SrcK8S_HostName")]
    pub src_k8s_host_name: String,
    #[serde(rename = "SrcK8S_Zone")]
    pub src_k8s_zone: String,
    /// weir: labels as `key=value` pairs, sorted, comma-separated.
    #[serde(rename = "SrcK8S_Labels")]
    pub src_k8s_labels: String,
    #[serde(rename = "DstK8S_Name")]
    pub dst_k8s_name: String,
    #[serde(rename = "DstK8S_Namespace")]
    pub dst_k8s_namespace: String,
    #[serde(rename = "DstK8S_OwnerName")]
    pub dst_k8s_owner_name: String,
    #[serde(rename = "DstK8S_OwnerType")]
    pub dst_k8s_owner_type: String,
    #[serde(rename = "DstK8S_Type")]
    pub dst_k8s_type: String,
    #[serde(rename = "DstK8S_HostName")]
    pub dst_k8s_host_name: String,
    #[serde(rename = "DstK8S_Zone")]
    pub dst_k8s_zone: String,
    #[serde(rename = "DstK8S_Labels")]
    pub dst_k8s_labels: String,
    /// weir: labels of the source's namespace, `key=value` sorted, comma-separated.
    #[serde(rename = "SrcK8S_NamespaceLabels")]
    pub src_k8s_namespace_labels: String,
    /// weir: labels of the destination's namespace, `key=value` sorted, comma-separated.
    #[serde(rename = "DstK8S_NamespaceLabels")]
    pub dst_k8s_namespace_labels: String,
}

impl Default for Flow {
    fn default() -> Self {
        Flow::empty()
    }
}

impl Flow {
    /// The factor that scales sampled sums back to estimates of the real traffic.
    pub fn scale(&self) -> u64 {
        u64::from(self.sampling.max(1))
    }

    /// An empty record, handy as a base for tests and synthetic data.
    pub fn empty() -> Self {
        Flow {
            time_flow_start_ms: 0,
            time_flow_end_ms: 0,
            time_received: 0,
            etype: 0x0800,
            src_mac: String::new(),
            dst_mac: String::new(),
            src_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            src_port: 0,
            dst_port: 0,
            proto: 0,
            icmp_type: 0,
            icmp_code: 0,
            bytes: 0,
            packets: 0,
            skbs: 0,
            flags: 0,
            interface: String::new(),
            if_direction: DIR_INGRESS,
            sampling: 0,
            netns: String::new(),
            node: String::new(),
            interfaces: String::new(),
            if_directions: String::new(),
            cgroup: String::new(),
            container_id: String::new(),
            pkt_drop_bytes: 0,
            pkt_drop_packets: 0,
            pkt_drop_latest_drop_cause: String::new(),
            time_flow_rtt_ns: 0,
            dns_id: 0,
            dns_flags: 0,
            dns_flags_response_code: String::new(),
            dns_latency_us: 0,
            dns_name: String::new(),
            dns_qtype: 0,
            src_k8s_name: String::new(),
            src_k8s_namespace: String::new(),
            src_k8s_owner_name: String::new(),
            src_k8s_owner_type: String::new(),
            src_k8s_type: String::new(),
            src_k8s_host_name: String::new(),
            src_k8s_zone: String::new(),
            src_k8s_labels: String::new(),
            src_k8s_namespace_labels: String::new(),
            dst_k8s_name: String::new(),
            dst_k8s_namespace: String::new(),
            dst_k8s_owner_name: String::new(),
            dst_k8s_owner_type: String::new(),
            dst_k8s_type: String::new(),
            dst_k8s_host_name: String::new(),
            dst_k8s_zone: String::new(),
            dst_k8s_labels: String::new(),
            dst_k8s_namespace_labels: String::new(),
        }
    }
}

/// Name of a DNS response code (RFC 1035, 2136), or its number.
pub fn dns_rcode_name(rcode: u16) -> String {
    match rcode {
        0 => "NoError".into(),
        1 => "FormErr".into(),
        2 => "ServFail".into(),
        3 => "NXDomain".into(),
        4 => "NotImp".into(),
        5 => "Refused".into(),
        6 => "YXDomain".into(),
        7 => "YXRRSet".into(),
        8 => "NXRRSet".into(),
        9 => "NotAuth".into(),
        10 => "NotZone".into(),
        n => format!("RCode{n}"),
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// Name of an IP protocol number, or its number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        0 => "-".into(),
        n => n.to_string(),
    }
}

/// The capture sets this in [`Flow::flags`] when it saw a SYN without ACK: the flow's source
/// opened the TCP connection (the kernel side mirrors it as `FLAG_SYN_NO_ACK` in flow.h).
pub const FLAG_SYN_NO_ACK: u16 = 0x1000;

/// The TCP flags' names, bit 0 first.
const FLAG_NAMES: [&str; 9] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"];

/// Short text for a set of TCP flags, e.g. `SYN,ACK` (`OPEN` for [`FLAG_SYN_NO_ACK`]).
pub fn flags_text(flags: u16) -> String {
    let mut parts: Vec<&str> = FLAG_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| flags & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    if flags & FLAG_SYN_NO_ACK != 0 {
        parts.push("OPEN");
    }
    parts.join(",")
}

/// Which end opened a TCP connection, from a flow's flags: `Some(true)` its source (a SYN
/// without ACK was seen), `Some(false)` its destination (only SYN+ACK), `None` unknown (the
/// handshake was not seen, or not TCP).
pub fn opened_by_source(flags: u16) -> Option<bool> {
    if flags & FLAG_SYN_NO_ACK != 0 {
        Some(true)
    } else if flags & 0x12 == 0x12 {
        Some(false)
    } else {
        None
    }
}

/// The bit of a TCP flag name (case-insensitive).
pub fn flag_bit(name: &str) -> Option<u16> {
    if name.eq_ignore_ascii_case("OPEN") {
        return Some(FLAG_SYN_NO_ACK);
    }
    FLAG_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|i| 1u16 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_netobserv_names() {
        let mut f = Flow::empty();
        f.src_addr = "10.0.0.1".parse().unwrap();
        f.bytes = 42;
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["SrcAddr"], "10.0.0.1");
        assert_eq!(v["Bytes"], 42);
        assert!(v.get("TimeFlowStartMs").is_some());
        assert!(v.get("IfDirection").is_some());
    }

    #[test]
    fn flags_round_trip() {
        assert_eq!(flags_text(0x12), "SYN,ACK");
        assert_eq!(flag_bit("ack"), Some(0x10));
        assert_eq!(flag_bit("nope"), None);
    }
}
