//! What the fuzz targets share: a fixed set of synthetic flows covering every kind of field
//! value the filter language compares (IPv4 and IPv6, zero and empty fields, flags, sampling),
//! and the text of an input split into arguments.

use weir_core::Flow;

/// `n` deterministic flows in the hour before `t0_ms`.
pub fn flows(n: usize, t0_ms: u64) -> Vec<Flow> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut f = Flow::empty();
            f.time_flow_end_ms = t0_ms - x % 3_600_000;
            f.time_flow_start_ms = f.time_flow_end_ms - (x >> 20) % 5000;
            f.src_addr = if i % 7 == 0 {
                std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, (x % 50) as u16])
            } else {
                std::net::IpAddr::from([10, 0, ((x >> 8) % 4) as u8, (x % 50) as u8])
            };
            f.dst_addr = std::net::IpAddr::from([10, 1, 0, ((x >> 16) % 20) as u8]);
            f.src_port = (x >> 24) as u16;
            f.dst_port = [0, 80, 443, 53, 8080, 9000][(x >> 32) as usize % 6];
            f.proto = [6, 17, 1, 0][(x >> 40) as usize % 4];
            f.flags = ((x >> 44) & 0x1ff) as u16 | if i % 5 == 0 { 0x1000 } else { 0 };
            f.bytes = if i % 13 == 0 {
                0
            } else {
                60 + (x >> 48) % 100_000
            };
            f.packets = 1 + (x >> 50) % 100;
            f.interface = if i % 4 == 0 {
                String::new()
            } else {
                format!("veth{}", (x >> 36) % 3)
            };
            f.dns_name = if i % 3 == 0 {
                "a.test".into()
            } else {
                String::new()
            };
            f.pkt_drop_packets = [0, 0, 1, 2, 5][i % 5];
            f.if_direction = (i % 2) as u8;
            f.sampling = if i % 11 == 0 { 10 } else { 0 };
            f
        })
        .collect()
}

/// The input as text split into `n` arguments at newlines (missing ones empty).
pub fn args(data: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let mut v: Vec<String> = text.splitn(n, '\n').map(str::to_string).collect();
    v.resize(n, String::new());
    v
}
