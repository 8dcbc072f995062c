//! The one declarative list of flow fields. The tantivy index, the query language, the
//! aggregations and the JSON output all read it, so a field is added in one place.

use crate::flow::Flow;
use std::net::{IpAddr, Ipv6Addr};

/// How a field is stored, indexed and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// An unsigned integer (ports, counters, times, enums).
    U64,
    /// An IPv4 or IPv6 address (IPv4 kept as IPv4-mapped IPv6).
    Ip,
    /// A short string matched exactly (interface, MAC, namespace).
    Str,
}

/// One value of a field, as grouped and compared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    U64(u64),
    Ip(Ipv6Addr),
    Str(String),
}

impl Value {
    /// The value as JSON, IPv4-mapped addresses shown as IPv4.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::U64(n) => serde_json::Value::from(*n),
            Value::Ip(ip) => serde_json::Value::from(display_ip(ip).to_string()),
            Value::Str(s) => serde_json::Value::from(s.clone()),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::U64(n) => write!(f, "{n}"),
            Value::Ip(ip) => write!(f, "{}", display_ip(ip)),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// An address as users write it: IPv4-mapped IPv6 shown as IPv4.
pub fn display_ip(ip: &Ipv6Addr) -> IpAddr {
    match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(*ip),
    }
}

/// An address in the index's form (IPv4 as IPv4-mapped IPv6).
pub fn index_ip(ip: &IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => *v6,
    }
}

/// Parses an address or network (`10.0.0.0/8`, `2001:db8::/32`, `10.0.0.1`) into the index's
/// address space: the network as a 128-bit number (IPv4 as IPv4-mapped IPv6) and its prefix
/// length in those 128 bits. The network part is masked.
pub fn parse_network(text: &str) -> Result<(u128, u32), String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a.trim(), Some(p.trim())),
        None => (text.trim(), None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not an IP address"))?;
    let (base, max) = match ip {
        IpAddr::V4(_) => (96, 32),
        IpAddr::V6(_) => (0, 128),
    };
    let p = match prefix {
        Some(p) => p
            .parse::<u32>()
            .map_err(|_| format!("'{p}' is not a prefix length"))?,
        None => max,
    };
    if p > max {
        return Err(format!("prefix /{p} is longer than {max} bits"));
    }
    let bits = base + p;
    Ok((u128::from(index_ip(&ip)) & prefix_mask(bits), bits))
}

/// The mask of a prefix of `bits` (0-128) in a 128-bit address.
pub fn prefix_mask(bits: u32) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits.min(128))
    }
}

/// One flow field.
pub struct FieldDef {
    /// NetObserv name, as written in queries and JSON.
    pub name: &'static str,
    pub kind: FieldKind,
    /// What the field means (shown by `weir fields` and the API).
    pub doc: &'static str,
    /// Whether the index keeps a term dictionary for it (fast exact lookups); every field is
    /// also a columnar fast field for ranges, sorting and grouping.
    pub indexed: bool,
    /// Reads the field from a flow.
    pub get: fn(&Flow) -> Value,
    /// Reads the field without allocating (columns for plugins, stored record blocks).
    pub read: Reader,
    /// Sets the field (stored record blocks read back).
    pub write: Writer,
}

/// A field's value borrowed from a flow, by kind: what a column reader needs.
#[derive(Clone, Copy)]
pub enum Reader {
    Number(fn(&Flow) -> u64),
    Addr(fn(&Flow) -> IpAddr),
    Text(fn(&Flow) -> &str),
}

/// Sets a field on a flow, by kind: what a column decoder needs.
#[derive(Clone, Copy)]
pub enum Writer {
    /// Sets the number; false (and the flow unchanged) when it does not fit the field.
    Number(fn(&mut Flow, u64) -> bool),
    Addr(fn(&mut Flow, IpAddr)),
    Text(fn(&mut Flow, String)),
}

impl std::fmt::Debug for FieldDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldDef")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

impl PartialEq for FieldDef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for FieldDef {}

macro_rules! u64_field {
    ($name:literal, $doc:literal, $f:ident, $indexed:literal) => {
        FieldDef {
            name: $name,
            kind: FieldKind::U64,
            doc: $doc,
            indexed: $indexed,
            get: |fl: &Flow| Value::U64(u64::from(fl.$f)),
            read: Reader::Number(|fl: &Flow| u64::from(fl.$f)),
            write: Writer::Number(|fl: &mut Flow, v: u64| match v.try_into() {
                Ok(x) => {
                    fl.$f = x;
                    true
                }
                Err(_) => false,
            }),
        }
    };
}

macro_rules! str_field {
    ($name:literal, $doc:literal, $f:ident, $indexed:literal) => {
        FieldDef {
            name: $name,
            kind: FieldKind::Str,
            doc: $doc,
            indexed: $indexed,
            get: |fl: &Flow| Value::Str(fl.$f.clone()),
            read: Reader::Text(|fl: &Flow| fl.$f.as_str()),
            write: Writer::Text(|fl: &mut Flow, v: String| fl.$f = v),
        }
    };
}

macro_rules! ip_field {
    ($name:literal, $doc:literal, $f:ident) => {
        FieldDef {
            name: $name,
            kind: FieldKind::Ip,
            doc: $doc,
            indexed: true,
            get: |fl: &Flow| Value::Ip(index_ip(&fl.$f)),
            read: Reader::Addr(|fl: &Flow| fl.$f),
            write: Writer::Addr(|fl: &mut Flow, v: IpAddr| fl.$f = v),
        }
    };
}

/// Every field of a flow record, in display order.
pub static FIELDS: &[FieldDef] = &[
    u64_field!(
        "TimeFlowStartMs",
        "first packet in this record, Unix ms",
        time_flow_start_ms,
        false
    ),
    u64_field!(
        "TimeFlowEndMs",
        "last packet in this record, Unix ms",
        time_flow_end_ms,
        false
    ),
    u64_field!(
        "TimeReceived",
        "when the agent received the record, Unix s",
        time_received,
        false
    ),
    ip_field!("SrcAddr", "source IP address", src_addr),
    ip_field!("DstAddr", "destination IP address", dst_addr),
    u64_field!("SrcPort", "source port", src_port, true),
    u64_field!("DstPort", "destination port", dst_port, true),
    u64_field!(
        "Proto",
        "IP protocol (tcp, udp, icmp, icmpv6 or a number)",
        proto,
        true
    ),
    u64_field!("IcmpType", "ICMP type", icmp_type, false),
    u64_field!("IcmpCode", "ICMP code", icmp_code, false),
    u64_field!(
        "Bytes",
        "bytes (frame length, as interfaces count)",
        bytes,
        false
    ),
    u64_field!("Packets", "packets, GSO segments counted", packets, false),
    u64_field!(
        "Skbs",
        "socket buffers (packets as interfaces count)",
        skbs,
        false
    ),
    u64_field!(
        "Flags",
        "OR of TCP flags (SYN, ACK, FIN, RST, ...; OPEN 0x1000: the source opened the connection)",
        flags,
        true
    ),
    str_field!("Interface", "interface name", interface, false),
    u64_field!("IfDirection", "0 ingress, 1 egress", if_direction, false),
    u64_field!(
        "Sampling",
        "1-in-N sampling (0 or 1: none)",
        sampling,
        false
    ),
    u64_field!(
        "Etype",
        "Ethernet type (ipv4, ipv6, arp or a number)",
        etype,
        true
    ),
    str_field!("SrcMac", "source MAC address", src_mac, false),
    str_field!("DstMac", "destination MAC address", dst_mac, false),
    str_field!(
        "NetNs",
        "network namespace of the interface (\"\" for the agent's own)",
        netns,
        true
    ),
    str_field!(
        "Node",
        "the node whose agent captured or imported the flow (weir agent --node; \"\" without)",
        node,
        true
    ),
    str_field!(
        "Interfaces",
        "every interface a deduplicated flow was seen on (netns/interface, kept one first)",
        interfaces,
        false
    ),
    str_field!(
        "IfDirections",
        "the direction on each of Interfaces (0 ingress, 1 egress)",
        if_directions,
        false
    ),
    str_field!(
        "Cgroup",
        "cgroup of the sending socket (egress of local traffic)",
        cgroup,
        true
    ),
    str_field!(
        "ContainerId",
        "container id from the cgroup path",
        container_id,
        true
    ),
    u64_field!(
        "PktDropBytes",
        "bytes of the flow the kernel dropped",
        pkt_drop_bytes,
        false
    ),
    u64_field!(
        "PktDropPackets",
        "packets of the flow the kernel dropped",
        pkt_drop_packets,
        false
    ),
    str_field!(
        "PktDropLatestDropCause",
        "latest drop reason (SKB_DROP_REASON_...)",
        pkt_drop_latest_drop_cause,
        true
    ),
    u64_field!(
        "TimeFlowRttNs",
        "smoothed TCP round-trip time, ns (0: none)",
        time_flow_rtt_ns,
        false
    ),
    u64_field!("DnsId", "DNS transaction id", dns_id, false),
    u64_field!("DnsFlags", "DNS header flags", dns_flags, false),
    str_field!(
        "DnsFlagsResponseCode",
        "DNS response code (NoError, NXDomain, ServFail, ...)",
        dns_flags_response_code,
        true
    ),
    u64_field!(
        "DnsLatencyUs",
        "DNS query-to-response time, microseconds",
        dns_latency_us,
        false
    ),
    str_field!("DnsName", "queried DNS name", dns_name, true),
    u64_field!(
        "DnsQType",
        "DNS query type (1 A, 28 AAAA, ...)",
        dns_qtype,
        false
    ),
    str_field!(
        "SrcK8S_Name",
        "source name (pod, host, service)",
        src_k8s_name,
        true
    ),
    str_field!(
        "SrcK8S_Namespace",
        "source namespace",
        src_k8s_namespace,
        true
    ),
    str_field!(
        "SrcK8S_OwnerName",
        "source workload",
        src_k8s_owner_name,
        true
    ),
    str_field!(
        "SrcK8S_OwnerType",
        "source workload kind",
        src_k8s_owner_type,
        false
    ),
    str_field!(
        "SrcK8S_Type",
        "source kind (Pod, Service, Node, ...)",
        src_k8s_type,
        false
    ),
    str_field!("SrcK8S_HostName", "source node", src_k8s_host_name, true),
    str_field!("SrcK8S_Zone", "source zone", src_k8s_zone, false),
    str_field!(
        "SrcK8S_Labels",
        "source labels, k=v sorted, comma-separated",
        src_k8s_labels,
        false
    ),
    str_field!(
        "SrcK8S_NamespaceLabels",
        "labels of the source's namespace, k=v sorted, comma-separated",
        src_k8s_namespace_labels,
        false
    ),
    str_field!(
        "DstK8S_Name",
        "destination name (pod, host, service)",
        dst_k8s_name,
        true
    ),
    str_field!(
        "DstK8S_Namespace",
        "destination namespace",
        dst_k8s_namespace,
        true
    ),
    str_field!(
        "DstK8S_OwnerName",
        "destination workload",
        dst_k8s_owner_name,
        true
    ),
    str_field!(
        "DstK8S_OwnerType",
        "destination workload kind",
        dst_k8s_owner_type,
        false
    ),
    str_field!(
        "DstK8S_Type",
        "destination kind (Pod, Service, Node, ...)",
        dst_k8s_type,
        false
    ),
    str_field!(
        "DstK8S_HostName",
        "destination node",
        dst_k8s_host_name,
        true
    ),
    str_field!("DstK8S_Zone", "destination zone", dst_k8s_zone, false),
    str_field!(
        "DstK8S_Labels",
        "destination labels, k=v sorted, comma-separated",
        dst_k8s_labels,
        false
    ),
    str_field!(
        "DstK8S_NamespaceLabels",
        "labels of the destination's namespace, k=v sorted, comma-separated",
        dst_k8s_namespace_labels,
        false
    ),
];

/// Query-only names that match either side of a flow: `Addr=10.0.0.1` is
/// `SrcAddr=10.0.0.1 or DstAddr=10.0.0.1`.
pub static EITHER_SIDE: &[(&str, &str, &str)] = &[
    ("Addr", "SrcAddr", "DstAddr"),
    ("Port", "SrcPort", "DstPort"),
    ("Mac", "SrcMac", "DstMac"),
    ("K8S_Name", "SrcK8S_Name", "DstK8S_Name"),
    ("K8S_Namespace", "SrcK8S_Namespace", "DstK8S_Namespace"),
    ("K8S_OwnerName", "SrcK8S_OwnerName", "DstK8S_OwnerName"),
];

/// Looks a field up by name, case-insensitively.
pub fn field(name: &str) -> Option<&'static FieldDef> {
    FIELDS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// Why `name` is not a field, with the closest one when there is one.
pub fn unknown_field(name: &str) -> String {
    let shown: String = name.chars().take(64).collect();
    match suggest(name) {
        Some(s) => {
            format!("no field named {shown:?}: did you mean {s}? (`weir fields` lists them)")
        }
        None => format!("no field named {shown:?} (`weir fields` lists them)"),
    }
}

/// The field names a user could have meant by `name` (for "did you mean" hints).
pub fn suggest(name: &str) -> Option<&'static str> {
    let all = FIELDS
        .iter()
        .map(|f| f.name)
        .chain(EITHER_SIDE.iter().map(|e| e.0));
    all.map(|n| {
        (
            edit_distance(&n.to_ascii_lowercase(), &name.to_ascii_lowercase()),
            n,
        )
    })
    .filter(|(d, _)| *d <= 3)
    .min_by_key(|(d, _)| *d)
    .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for f in FIELDS {
            assert_eq!(
                FIELDS.iter().filter(|g| g.name == f.name).count(),
                1,
                "{}",
                f.name
            );
            assert!(std::ptr::eq(field(&f.name.to_lowercase()).unwrap(), f));
        }
    }

    #[test]
    fn read_agrees_with_get_on_every_field() {
        let mut f = Flow::empty();
        f.src_addr = "198.18.0.1".parse().unwrap();
        f.dst_addr = "2001:db8::7".parse().unwrap();
        f.src_port = 40000;
        f.bytes = 1234;
        f.time_flow_rtt_ns = 250_000;
        f.dns_name = "example.test".into();
        f.src_k8s_namespace = "shop".into();
        f.interfaces = "veth0,veth1".into();
        for d in FIELDS {
            let read = match d.read {
                Reader::Number(r) => Value::U64(r(&f)),
                Reader::Addr(r) => Value::Ip(index_ip(&r(&f))),
                Reader::Text(r) => Value::Str(r(&f).to_string()),
            };
            assert_eq!(read, (d.get)(&f), "{}", d.name);
            let kind = match d.read {
                Reader::Number(_) => FieldKind::U64,
                Reader::Addr(_) => FieldKind::Ip,
                Reader::Text(_) => FieldKind::Str,
            };
            assert_eq!(kind, d.kind, "{}", d.name);
        }
        assert!(unknown_field("SrcAdr").contains("did you mean SrcAddr"));
    }

    /// A field added to `Flow` without its line here would be stored but not indexed,
    /// filtered, grouped, exported to ClickHouse or shown to plugins.
    #[test]
    fn every_flow_field_has_its_line_in_the_list() {
        let v = serde_json::to_value(Flow::empty()).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let missing: Vec<&&String> = keys
            .iter()
            .filter(|k| !FIELDS.iter().any(|f| f.name == k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "Flow fields without a FIELDS line (see the checklist in core/src/flow.rs): {missing:?}"
        );
        assert_eq!(FIELDS.len(), keys.len(), "FIELDS names a field Flow lacks");
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(suggest("SrcAdr"), Some("SrcAddr"));
        assert_eq!(suggest("dstprot"), Some("DstPort"));
        assert_eq!(suggest("completelywrong"), None);
    }
}
