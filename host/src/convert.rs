//! Conversions between weir-core values and the WIT types.

use crate::bindings::types as wit;
use std::net::{IpAddr, Ipv6Addr};
use weir_core::Flow;
use weir_core::schema::{Value, index_ip};

pub fn ip_to_wit(ip: &IpAddr) -> wit::IpAddr {
    let v = u128::from(index_ip(ip));
    wit::IpAddr {
        hi: (v >> 64) as u64,
        lo: v as u64,
    }
}

pub fn ip_from_wit(ip: &wit::IpAddr) -> Ipv6Addr {
    Ipv6Addr::from((u128::from(ip.hi) << 64) | u128::from(ip.lo))
}

/// A MAC as stored (`aa:bb:cc:dd:ee:ff`) as 48 bits; the canonical form is read byte by byte
/// (this runs for every flow of every batch), anything else the slow way, skipping bad parts.
pub fn mac_to_u64(mac: &str) -> u64 {
    fn hex(c: u8) -> Option<u64> {
        match c {
            b'0'..=b'9' => Some(u64::from(c - b'0')),
            b'a'..=b'f' => Some(u64::from(c - b'a' + 10)),
            b'A'..=b'F' => Some(u64::from(c - b'A' + 10)),
            _ => None,
        }
    }
    let b = mac.as_bytes();
    if b.len() == 17 {
        let mut v = 0u64;
        let mut ok = true;
        for chunk in b.chunks(3) {
            match (hex(chunk[0]), hex(chunk[1]), chunk.get(2)) {
                (Some(h), Some(l), Some(b':') | None) => v = (v << 8) | (h << 4) | l,
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return v;
        }
    }
    mac.split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .fold(0u64, |acc, b| (acc << 8) | u64::from(b))
}

pub fn flow_to_wit(f: &Flow) -> wit::Flow {
    wit::Flow {
        time_flow_start_ms: f.time_flow_start_ms,
        time_flow_end_ms: f.time_flow_end_ms,
        time_received: f.time_received,
        etype: f.etype,
        src_mac: mac_to_u64(&f.src_mac),
        dst_mac: mac_to_u64(&f.dst_mac),
        src_addr: ip_to_wit(&f.src_addr),
        dst_addr: ip_to_wit(&f.dst_addr),
        src_port: f.src_port,
        dst_port: f.dst_port,
        proto: f.proto,
        icmp_type: f.icmp_type,
        icmp_code: f.icmp_code,
        bytes: f.bytes,
        packets: f.packets,
        skbs: f.skbs,
        flags: f.flags,
        interface: f.interface.clone(),
        if_direction: f.if_direction,
        sampling: f.sampling,
        netns: f.netns.clone(),
    }
}

pub fn value_to_wit(v: &Value) -> wit::Value {
    match v {
        Value::U64(n) => wit::Value::Number(*n),
        Value::Ip(ip) => wit::Value::Ip(ip_to_wit(&IpAddr::V6(*ip))),
        Value::Str(s) => wit::Value::Text(s.clone()),
    }
}

/// Metric samples as the agent's /metrics records them.
pub fn samples_of(v: &[wit::MetricSample]) -> Vec<weir_core::metrics::PluginSample> {
    use weir_core::metrics::UserKind;
    v.iter()
        .map(|s| weir_core::metrics::PluginSample {
            name: s.name.clone(),
            kind: match s.kind {
                wit::MetricKind::Counter => UserKind::Counter,
                wit::MetricKind::Gauge => UserKind::Gauge,
                wit::MetricKind::Histogram => UserKind::Histogram,
            },
            labels: s.labels.clone(),
            value: s.value,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_macs() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let w = ip_to_wit(&v4);
        assert_eq!(
            ip_from_wit(&w).to_ipv4_mapped(),
            Some("198.18.0.1".parse().unwrap())
        );
        assert_eq!(mac_to_u64("02:00:00:00:00:ff"), 0x0200_0000_00ff);
        assert_eq!(mac_to_u64("DE:AD:be:ef:00:01"), 0xdead_beef_0001);
        assert_eq!(mac_to_u64(""), 0);
        // Not the canonical form: parsed part by part, bad parts skipped (as before).
        assert_eq!(mac_to_u64("2:0:0:0:0:1"), 0x0200_0000_0001);
        assert_eq!(mac_to_u64("02:00:00:00:00:zz"), 0x02_0000_0000);
        assert_eq!(mac_to_u64("02-00-00-00-00-01x"), 0);
    }
}
