//! #[repr(C)] mirrors of the map records in `src/bpf/flow.h`. Sizes are asserted at compile
//! time so a change on one side that is not made on the other fails the build.

use std::net::{IpAddr, Ipv6Addr};
use weir_core::flow::{Flow, format_mac};

/// Mirror of `struct flow_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub ifindex: u32,
    pub eth_type: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub direction: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: u16,
}

/// Mirror of `struct flow_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub bytes: u64,
    pub packets: u64,
    pub skbs: u64,
    pub sampling: u32,
    pub tcp_flags: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub _pad: u16,
    pub _pad2: u32,
}

/// Mirror of `struct flow_record` (ring buffer).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowRecord {
    pub key: FlowKey,
    pub value: FlowValue,
}

/// Mirror of `struct weir_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct WeirConfig {
    pub active_map: u32,
    pub sampling: u32,
}

/// Index of each per-CPU counter (`enum weir_counter`).
pub mod counter {
    pub const SAMPLED_OUT: u32 = 1;
    pub const MAP_FULL: u32 = 2;
    pub const RINGBUF_LOST: u32 = 3;
    pub const TRUNCATED: u32 = 4;
    pub const COUNT: u32 = 5;
}

const _: () = assert!(std::mem::size_of::<FlowKey>() == 48);
const _: () = assert!(std::mem::size_of::<FlowValue>() == 64);
const _: () = assert!(std::mem::offset_of!(FlowValue, src_mac) == 46);
const _: () = assert!(std::mem::size_of::<FlowRecord>() == 112);
const _: () = assert!(std::mem::offset_of!(FlowRecord, value) == 48);
const _: () = assert!(std::mem::size_of::<WeirConfig>() == 8);

// SAFETY: plain C structs of integers and byte arrays with explicit padding fields.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowValue {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowRecord {}
// SAFETY: as above.
unsafe impl aya::Pod for WeirConfig {}

impl FlowValue {
    /// Folds another CPU's slot into this one. Slots a CPU never touched are all zero.
    pub fn merge(&mut self, other: &FlowValue) {
        if other.skbs == 0 {
            return;
        }
        if self.skbs == 0 || other.first_seen_ns < self.first_seen_ns {
            self.first_seen_ns = other.first_seen_ns;
            self.src_mac = other.src_mac;
            self.dst_mac = other.dst_mac;
        }
        self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
        self.bytes += other.bytes;
        self.packets += other.packets;
        self.skbs += other.skbs;
        self.tcp_flags |= other.tcp_flags;
        self.sampling = self.sampling.max(other.sampling);
    }
}

/// Turns kernel monotonic nanoseconds into Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix ns minus monotonic ns, measured at start.
    offset_ns: i128,
}

impl Clock {
    /// Measures the offset between CLOCK_REALTIME and CLOCK_MONOTONIC.
    pub fn new() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: i128::from(real) - i128::from(mono),
        }
    }

    pub fn to_unix_ms(&self, mono_ns: u64) -> u64 {
        let ns = i128::from(mono_ns) + self.offset_ns;
        u64::try_from(ns / 1_000_000).unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

fn addr(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Builds the stored record from a kernel key and its merged value.
pub fn to_flow(
    key: &FlowKey,
    value: &FlowValue,
    clock: &Clock,
    interface: String,
    netns: &str,
    received_s: u64,
) -> Flow {
    Flow {
        time_flow_start_ms: clock.to_unix_ms(value.first_seen_ns),
        time_flow_end_ms: clock.to_unix_ms(value.last_seen_ns),
        time_received: received_s,
        etype: key.eth_type,
        src_mac: format_mac(&value.src_mac),
        dst_mac: format_mac(&value.dst_mac),
        src_addr: addr(key.src_addr),
        dst_addr: addr(key.dst_addr),
        src_port: key.src_port,
        dst_port: key.dst_port,
        proto: key.proto,
        icmp_type: key.icmp_type,
        icmp_code: key.icmp_code,
        bytes: value.bytes,
        packets: value.packets,
        skbs: value.skbs,
        flags: value.tcp_flags,
        interface,
        if_direction: key.direction,
        sampling: value.sampling,
        netns: netns.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_ignores_untouched_slots() {
        let mut a = FlowValue::default();
        let b = FlowValue {
            first_seen_ns: 10,
            last_seen_ns: 20,
            bytes: 100,
            packets: 2,
            skbs: 1,
            sampling: 0,
            tcp_flags: 0x2,
            src_mac: [1; 6],
            ..Default::default()
        };
        let c = FlowValue {
            first_seen_ns: 5,
            last_seen_ns: 15,
            bytes: 50,
            packets: 1,
            skbs: 1,
            sampling: 0,
            tcp_flags: 0x10,
            src_mac: [2; 6],
            ..Default::default()
        };
        a.merge(&FlowValue::default());
        a.merge(&b);
        a.merge(&FlowValue::default());
        a.merge(&c);
        assert_eq!((a.first_seen_ns, a.last_seen_ns), (5, 20));
        assert_eq!((a.bytes, a.packets, a.skbs, a.tcp_flags), (150, 3, 2, 0x12));
        assert_eq!(a.src_mac, [2; 6], "MACs of the earliest packet");
    }

    #[test]
    fn v4_mapped_becomes_v4() {
        let mut k = FlowKey::default();
        k.src_addr[10] = 0xff;
        k.src_addr[11] = 0xff;
        k.src_addr[12..].copy_from_slice(&[198, 18, 0, 1]);
        let f = to_flow(&k, &FlowValue::default(), &Clock::new(), "x".into(), "", 0);
        assert_eq!(f.src_addr, "198.18.0.1".parse::<IpAddr>().unwrap());
    }
}
