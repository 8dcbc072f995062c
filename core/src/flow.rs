//! The flow record: one aggregated flow as captured on one interface in one direction.
//!
//! Field names follow NetObserv's flow format (`SrcAddr`, `Bytes`, `TimeFlowStartMs`, ...) so
//! that existing filters and tooling carry over. Fields weir adds are marked as such.

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
    /// ECE 0x40, CWR 0x80, NS 0x100).
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
        }
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

/// Short text for a set of TCP flags, e.g. `SYN,ACK`.
pub fn flags_text(flags: u16) -> String {
    const NAMES: [&str; 9] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"];
    let parts: Vec<&str> = NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| flags & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    parts.join(",")
}

/// The bit of a TCP flag name (case-insensitive).
pub fn flag_bit(name: &str) -> Option<u16> {
    const NAMES: [&str; 9] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"];
    NAMES
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
