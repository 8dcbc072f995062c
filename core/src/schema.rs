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
        "OR of TCP flags (SYN, ACK, FIN, RST, ...)",
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
];

/// Query-only names that match either side of a flow: `Addr=10.0.0.1` is
/// `SrcAddr=10.0.0.1 or DstAddr=10.0.0.1`.
pub static EITHER_SIDE: &[(&str, &str, &str)] = &[
    ("Addr", "SrcAddr", "DstAddr"),
    ("Port", "SrcPort", "DstPort"),
    ("Mac", "SrcMac", "DstMac"),
];

/// Looks a field up by name, case-insensitively.
pub fn field(name: &str) -> Option<&'static FieldDef> {
    FIELDS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
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
    fn suggests_close_names() {
        assert_eq!(suggest("SrcAdr"), Some("SrcAddr"));
        assert_eq!(suggest("dstprot"), Some("DstPort"));
        assert_eq!(suggest("completelywrong"), None);
    }
}
