//! #[repr(C)] mirrors of the map records in `src/bpf/flow.h`. Sizes are asserted at compile
//! time so a change on one side that is not made on the other fails the build.

use std::net::{IpAddr, Ipv6Addr};
use weir_core::flow::{Flow, format_mac};

/// Mirror of `struct flow_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
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
    /// The kernel's cached filter decision for this CPU (kernel only).
    pub filter_gen: u16,
    pub filter_sampling: u32,
    pub drop_bytes: u64,
    pub drop_ns: u64,
    pub drop_packets: u32,
    pub drop_reason: u32,
    pub rtt_ns_at: u64,
    pub rtt_us: u32,
    /// `now >> 20` when the RTT last went to the connection's arriving flow (kernel only).
    pub rtt_copied: u32,
    pub cgroup_id: u64,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeirConfig {
    pub active_map: u32,
    pub sampling: u32,
    pub netns_ino: u32,
    pub consumed_reason: u32,
    pub filter_count: u32,
    pub filter_default: u32,
    pub dns: u32,
    pub rtt: u32,
    /// Bumped with every configuration written (low 16 bits never 0): flows' cached filter
    /// decisions hold while it stays.
    pub filter_gen: u32,
    /// OR of the filter rules' TCP flags: packets carrying any are never cached.
    pub filter_flags: u32,
    /// The tick clock (see `instance::clock`): CLOCK_MONOTONIC at the start of the current
    /// jiffy is `tick_base_ns + jiffies * tick_ns`; 0 = not calibrated.
    pub tick_ns: u64,
    pub tick_base_ns: u64,
}

/// Mirror of `struct filter_rule`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterRuleRecord {
    pub cidr: [u8; 16],
    pub cidr_mask: [u8; 16],
    pub peer: [u8; 16],
    pub peer_mask: [u8; 16],
    pub port_min: u16,
    pub port_max: u16,
    pub tcp_flags: u16,
    pub proto: u8,
    pub direction: u8,
    pub action: u8,
    pub drops_only: u8,
    pub _pad: u16,
    pub sampling: u32,
}

/// `WEIR_DIR_INGRESS` / `WEIR_DIR_EGRESS` (`FlowKey::direction`).
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;
/// `WEIR_FILTER_ACCEPT` / `WEIR_FILTER_REJECT` / `WEIR_FILTER_SAMPLE`.
pub const FILTER_ACCEPT: u8 = 0;
pub const FILTER_REJECT: u8 = 1;
pub const FILTER_SAMPLE: u8 = 2;
/// `WEIR_MAX_FILTERS`.
pub const MAX_FILTERS: usize = 16;
/// `WEIR_DNS_MAX`.
pub const DNS_MAX: usize = 256;

/// Mirror of `struct dns_event` (ring buffer).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DnsEvent {
    pub key: FlowKey,
    pub ts_ns: u64,
    pub len: u16,
    pub _pad: [u16; 3],
    pub payload: [u8; DNS_MAX],
}

/// Index of each per-CPU counter (`enum weir_counter`).
pub mod counter {
    pub const SAMPLED_OUT: u32 = 1;
    pub const MAP_FULL: u32 = 2;
    pub const RINGBUF_LOST: u32 = 3;
    pub const TRUNCATED: u32 = 4;
    pub const FILTERED: u32 = 5;
    pub const DNS_LOST: u32 = 6;
    pub const DROPS: u32 = 7;
    pub const RTT: u32 = 8;
    pub const COUNT: u32 = 9;
}

const _: () = assert!(std::mem::size_of::<FlowKey>() == 48);
const _: () = assert!(std::mem::size_of::<FlowValue>() == 112);
const _: () = assert!(std::mem::offset_of!(FlowValue, cgroup_id) == 104);
const _: () = assert!(std::mem::offset_of!(FlowValue, src_mac) == 46);
const _: () = assert!(std::mem::offset_of!(FlowValue, drop_bytes) == 64);
const _: () = assert!(std::mem::offset_of!(FlowValue, rtt_us) == 96);
const _: () = assert!(std::mem::size_of::<FlowRecord>() == 160);
const _: () = assert!(std::mem::offset_of!(FlowRecord, value) == 48);
const _: () = assert!(std::mem::size_of::<WeirConfig>() == 56);
const _: () = assert!(std::mem::size_of::<FilterRuleRecord>() == 80);
const _: () = assert!(std::mem::offset_of!(FilterRuleRecord, sampling) == 76);
const _: () = assert!(std::mem::size_of::<DnsEvent>() == 48 + 16 + DNS_MAX);

// SAFETY: plain C structs of integers and byte arrays with explicit padding fields.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowValue {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowRecord {}
// SAFETY: as above.
unsafe impl aya::Pod for WeirConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for FilterRuleRecord {}
// SAFETY: as above.
unsafe impl aya::Pod for DnsEvent {}

/// A record a kernel program wrote into a ring buffer (`struct flow_record`, `struct
/// dns_event`), read unaligned; `None` when the item is shorter than the record.
pub fn read<T: aya::Pod>(item: &[u8]) -> Option<T> {
    if item.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: `T` is Pod (C integers and byte arrays: any bytes are a value of it) and `item`
    // holds at least its size; the read is unaligned.
    Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) })
}

impl FlowValue {
    /// Whether anything was recorded in this slot (packets, drops or an RTT sample).
    pub fn touched(&self) -> bool {
        self.skbs > 0 || self.drop_packets > 0 || self.rtt_ns_at > 0
    }

    /// Folds another CPU's slot into this one. Slots a CPU never touched are all zero; a
    /// slot may hold only drops or only an RTT sample (the drop tracing program, and the
    /// copy of an RTT to an arriving flow, update the slot of the CPU they run on).
    pub fn merge(&mut self, other: &FlowValue) {
        if !other.touched() {
            return;
        }
        if other.skbs > 0 {
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
        } else if self.skbs == 0 && self.src_mac == [0; 6] {
            self.src_mac = other.src_mac;
            self.dst_mac = other.dst_mac;
        }
        self.sampling = self.sampling.max(other.sampling);
        self.merge_facts(other);
    }

    /// Folds in what the tracing programs and the sender's socket add: drops (summed, the
    /// latest reason kept), the latest RTT sample, and the cgroup when this has none. Used
    /// for other CPUs' slots and for other sightings of the same flow (deduplication).
    pub fn merge_facts(&mut self, other: &FlowValue) {
        if other.drop_packets > 0 {
            self.drop_bytes += other.drop_bytes;
            self.drop_packets += other.drop_packets;
            if other.drop_ns >= self.drop_ns {
                self.drop_ns = other.drop_ns;
                self.drop_reason = other.drop_reason;
            }
        }
        if other.rtt_ns_at > self.rtt_ns_at {
            self.rtt_ns_at = other.rtt_ns_at;
            self.rtt_us = other.rtt_us;
        }
        if self.cgroup_id == 0 {
            self.cgroup_id = other.cgroup_id;
        }
    }

    /// First and last time of the record: its packets, or its drops when it has none.
    fn span_ns(&self) -> (u64, u64) {
        if self.skbs > 0 {
            (self.first_seen_ns, self.last_seen_ns)
        } else if self.drop_packets > 0 {
            (self.drop_ns, self.drop_ns)
        } else {
            (self.rtt_ns_at, self.rtt_ns_at)
        }
    }
}

/// Turns kernel monotonic nanoseconds into Unix milliseconds. Measured again for every
/// eviction round, so a step of the wall clock (an NTP correction, a resumed VM) is followed
/// from the next round on instead of skewing every later flow by it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix ns minus monotonic ns, when measured.
    offset_ns: i128,
}

/// How far the wall clock may move against the monotonic one between two measurements before
/// it counts as a step (measuring itself is exact to well under a millisecond).
pub const CLOCK_STEP_NS: i128 = 1_000_000_000;

impl Clock {
    /// Measures the offset between CLOCK_REALTIME and CLOCK_MONOTONIC.
    pub fn new() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock::with_offset(i128::from(real) - i128::from(mono))
    }

    /// A clock with a known offset (Unix ns minus monotonic ns).
    pub fn with_offset(offset_ns: i128) -> Self {
        Clock { offset_ns }
    }

    /// How far the wall clock stepped from `earlier` to this measurement, in milliseconds;
    /// None when it moved less than [`CLOCK_STEP_NS`].
    pub fn step_since(&self, earlier: &Clock) -> Option<i64> {
        let d = self.offset_ns - earlier.offset_ns;
        (d.abs() >= CLOCK_STEP_NS).then(|| i64::try_from(d / 1_000_000).unwrap_or(i64::MAX))
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

/// Nanoseconds of a clock (CLOCK_MONOTONIC is what bpf_ktime_get_ns reads).
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
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

/// Builds the stored record from a kernel key and its merged value; `drop_reason` names a
/// kernel drop reason number.
pub fn to_flow(
    key: &FlowKey,
    value: &FlowValue,
    clock: &Clock,
    interface: String,
    netns: &str,
    received_s: u64,
    drop_reason: &dyn Fn(u32) -> String,
) -> Flow {
    let (first, last) = value.span_ns();
    Flow {
        time_flow_start_ms: clock.to_unix_ms(first),
        time_flow_end_ms: clock.to_unix_ms(last),
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
        pkt_drop_bytes: value.drop_bytes,
        pkt_drop_packets: u64::from(value.drop_packets),
        pkt_drop_latest_drop_cause: if value.drop_packets > 0 {
            drop_reason(value.drop_reason)
        } else {
            String::new()
        },
        time_flow_rtt_ns: u64::from(value.rtt_us) * 1000,
        ..Flow::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_of_the_wall_clock_is_seen_and_followed() {
        let hour_ns = 3_600_000_000_000i128;
        let before = Clock::with_offset(1_700_000_000_000_000_000);
        let mono = 5_000_000_000u64;
        assert_eq!(before.to_unix_ms(mono), 1_700_000_005_000);
        // NTP slewing and measuring noise are not steps.
        let slewed = Clock::with_offset(1_700_000_000_000_000_000 + 999_000_000);
        assert_eq!(slewed.step_since(&before), None);
        // An hour forward (a resumed VM), then back (a corrected clock).
        let after = Clock::with_offset(1_700_000_000_000_000_000 + hour_ns);
        assert_eq!(after.step_since(&before), Some(3_600_000));
        assert_eq!(before.step_since(&after), Some(-3_600_000));
        assert_eq!(
            after.to_unix_ms(mono),
            1_700_003_605_000,
            "the new time is followed"
        );
        // Measured now: real minus monotonic, so it turns now's monotonic into now.
        let now = Clock::new();
        let unix_ms = clock_ns(libc::CLOCK_REALTIME) / 1_000_000;
        let got = now.to_unix_ms(clock_ns(libc::CLOCK_MONOTONIC));
        assert!(got.abs_diff(unix_ms) < 1_000, "{got} vs {unix_ms}");
    }

    #[test]
    fn ring_items_are_read_whole_or_not_at_all() {
        let mut item = vec![0u8; std::mem::size_of::<FlowRecord>() + 1];
        item[1] = 0xab; // unaligned on purpose: the record starts at offset 1
        let key_len = std::mem::size_of::<FlowKey>();
        item[1 + key_len..1 + key_len + 8].copy_from_slice(&42u64.to_ne_bytes());
        let r: FlowRecord = read(&item[1..]).unwrap();
        assert_eq!(r.value.first_seen_ns, 42);
        assert!(read::<FlowRecord>(&item[1..item.len() - 1]).is_none());
        assert!(
            read::<DnsEvent>(&item).is_none(),
            "a flow record is shorter than a DNS event"
        );
    }

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
    fn merge_keeps_drops_and_latest_rtt_from_any_slot() {
        let mut a = FlowValue::default();
        let pkts = FlowValue {
            first_seen_ns: 10,
            last_seen_ns: 20,
            bytes: 100,
            packets: 1,
            skbs: 1,
            rtt_us: 50,
            rtt_ns_at: 15,
            ..Default::default()
        };
        let drops_only = FlowValue {
            drop_bytes: 60,
            drop_packets: 1,
            drop_reason: 7,
            drop_ns: 30,
            rtt_us: 70,
            rtt_ns_at: 25,
            ..Default::default()
        };
        let older_drop = FlowValue {
            drop_bytes: 40,
            drop_packets: 2,
            drop_reason: 3,
            drop_ns: 12,
            ..Default::default()
        };
        a.merge(&drops_only);
        a.merge(&pkts);
        a.merge(&older_drop);
        assert_eq!((a.bytes, a.skbs, a.first_seen_ns), (100, 1, 10));
        assert_eq!((a.drop_bytes, a.drop_packets, a.drop_reason), (100, 3, 7));
        assert_eq!(a.rtt_us, 70, "the latest RTT sample wins");
        let f = to_flow(
            &FlowKey::default(),
            &a,
            &Clock::new(),
            "x".into(),
            "",
            0,
            &|n| format!("R{n}"),
        );
        assert_eq!(f.pkt_drop_latest_drop_cause, "R7");
        assert_eq!(f.time_flow_rtt_ns, 70_000);
    }

    #[test]
    fn v4_mapped_becomes_v4() {
        let mut k = FlowKey::default();
        k.src_addr[10] = 0xff;
        k.src_addr[11] = 0xff;
        k.src_addr[12..].copy_from_slice(&[198, 18, 0, 1]);
        let f = to_flow(
            &k,
            &FlowValue::default(),
            &Clock::new(),
            "x".into(),
            "",
            0,
            &|n| n.to_string(),
        );
        assert_eq!(f.src_addr, "198.18.0.1".parse::<IpAddr>().unwrap());
    }
}
