//! Synthetic flows shared by the benchmarks that compare weir with other engines on the same
//! data: 5,000 sources, 2,000 destinations, seven ports, Zipf-like volumes, spread over ten
//! hours ending at [`T0`].

use weir_core::Flow;

/// The newest flow ends here (ms).
pub const T0: u64 = 1_800_000_000_000;
/// The flows span this much time before [`T0`] (ten one-hour partitions).
pub const SPAN_MS: u64 = 10 * 3_600_000;

/// How many flows to generate: `WEIR_BENCH_FLOWS`, or 2,000,000.
pub fn total_flows() -> usize {
    std::env::var("WEIR_BENCH_FLOWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000)
}

/// A realistic-ish mix: 5,000 sources, 2,000 destinations, a few ports, Zipf-like volumes.
pub fn make_batch(start: usize, n: usize, total: usize) -> Vec<Flow> {
    (start..start + n)
        .map(|i| {
            let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 29;
            let mut f = Flow::empty();
            // Time advances with i, as arriving flows do.
            let end = T0 - SPAN_MS + (i as u64 * SPAN_MS) / total as u64;
            f.time_flow_end_ms = end;
            f.time_flow_start_ms = end - x % 5000;
            f.time_received = end / 1000;
            let src = (x % 5000) as u32;
            let dst = ((x >> 16) % 2000) as u32;
            f.src_addr = std::net::Ipv4Addr::from(0x0a00_0000 | src).into();
            f.dst_addr = std::net::Ipv4Addr::from(0x0a10_0000 | dst).into();
            f.src_port = 1024 + (x >> 24) as u16 % 60_000;
            f.dst_port = [80, 443, 53, 5432, 6379, 8080, 9090][(x >> 40) as usize % 7];
            f.proto = if f.dst_port == 53 { 17 } else { 6 };
            f.bytes = 64 + (1_000_000 / (1 + (x >> 44) % 1000));
            f.packets = 1 + f.bytes / 1400;
            f.skbs = f.packets;
            f.flags = 0x18;
            f.interface = format!("eth{}", x % 4);
            f.if_direction = (x % 2) as u8;
            f.etype = 0x0800;
            f
        })
        .collect()
}
