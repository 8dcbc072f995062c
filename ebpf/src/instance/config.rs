//! What the operator sets ([`CaptureConfig`]) and what the kernel programs read at run time:
//! the config map (active map, sampling, features) and the filter rules (`FlowMaps`).

use super::*;

/// Capture settings.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Flows are evicted to user space at least this often.
    pub active_timeout: Duration,
    /// Flows each of the two per-CPU maps holds before new flows go through the ring buffer.
    pub max_flows: u32,
    /// 1-in-N packet sampling; 0 or 1 = every packet.
    pub sampling: u32,
    /// Capture in the agent's own network namespace.
    pub root_netns: bool,
    /// Other namespaces: names under /var/run/netns or paths like /proc/PID/ns/net.
    pub netns: Vec<String>,
    /// Interfaces to leave alone (exact names or `prefix*`); loopback is always left alone.
    pub exclude: Vec<String>,
    /// Attach dropped packets and their reason to flows (kfree_skb tracepoint).
    pub drops: bool,
    /// Attach the smoothed TCP RTT of local sockets to flows (read as they send).
    pub rtt: bool,
    /// Parse DNS (port 53) for names, response codes and latency.
    pub dns: bool,
    /// In-kernel filter rules in force at start (changeable at run time).
    pub filters: Vec<FilterRule>,
    /// Merge the sightings of one flow on several interfaces (both ends of a veth, a path
    /// through a bridge) into one record that lists them.
    pub dedup: bool,
    /// Records an eviction round drains and finishes at a time (0: the whole round at once).
    /// A round's records are held while it finishes them: slices bound that memory, each the
    /// flows whose identity hashes to it, so that a flow's sightings still meet.
    pub eviction_slice: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            active_timeout: Duration::from_secs(5),
            max_flows: 65_536,
            sampling: 0,
            root_netns: true,
            netns: Vec::new(),
            exclude: Vec::new(),
            drops: true,
            rtt: true,
            dns: true,
            filters: Vec::new(),
            dedup: true,
            eviction_slice: 8_192,
        }
    }
}

pub(super) struct FlowMaps {
    pub(super) a: PerCpuHashMap<MapData, FlowKey, FlowValue>,
    pub(super) b: PerCpuHashMap<MapData, FlowKey, FlowValue>,
    pub(super) config: Array<MapData, WeirConfig>,
    pub(super) filters: Array<MapData, FilterRuleRecord>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    /// What `config` holds: every change goes through [`FlowMaps::set_config`].
    pub(super) cfg: WeirConfig,
}

impl FlowMaps {
    /// Writes a changed configuration to the kernel; on error the old one stays in force.
    pub(super) fn set_config(
        &mut self,
        change: impl FnOnce(&mut WeirConfig),
    ) -> Result<(), CaptureError> {
        let mut next = self.cfg;
        change(&mut next);
        // Any change may change a filter decision (rules, their count, the sampling): the
        // flows' cached ones lapse. Its low 16 bits (what a flow keeps) are never 0.
        next.filter_gen = next.filter_gen.wrapping_add(1);
        if next.filter_gen & 0xffff == 0 {
            next.filter_gen = next.filter_gen.wrapping_add(1);
        }
        self.config
            .set(0, next, 0)
            .map_err(setup("writing config"))?;
        self.cfg = next;
        Ok(())
    }

    /// Writes filter rules, then the rule count: the kernel never reads a rule half written
    /// beyond the count in force.
    pub(super) fn set_filters(&mut self, rules: &[CompiledRule]) -> Result<(), CaptureError> {
        // An allow-list (any accept rule) leaves out what matches no rule; sample rules
        // decide nothing.
        let default = if rules.iter().any(|r| r.action == FilterAction::Accept) {
            u32::from(FILTER_REJECT)
        } else {
            u32::from(FILTER_ACCEPT)
        };
        let flags = rules
            .iter()
            .take(MAX_FILTERS)
            .fold(0u32, |f, r| f | u32::from(r.tcp_flags));
        // The default and the flags go in with the count at 0 (no filtering meanwhile), so
        // the write that restores the count changes only it and the generation: a program
        // reading the configuration as it is written never pairs a new generation with old
        // flags.
        self.set_config(|c| {
            c.filter_count = 0;
            c.filter_default = default;
            c.filter_flags = flags;
        })?;
        for (i, r) in rules.iter().enumerate().take(MAX_FILTERS) {
            let rec = FilterRuleRecord {
                cidr: r.cidr.0,
                cidr_mask: r.cidr.1,
                peer: r.peer.0,
                peer_mask: r.peer.1,
                port_min: r.port_min,
                port_max: r.port_max,
                tcp_flags: r.tcp_flags,
                proto: r.proto,
                direction: r.direction,
                action: match r.action {
                    FilterAction::Accept => FILTER_ACCEPT,
                    FilterAction::Reject => FILTER_REJECT,
                    FilterAction::Sample => FILTER_SAMPLE,
                },
                drops_only: u8::from(r.drops_only),
                _pad: 0,
                sampling: r.sampling,
            };
            self.filters
                .set(i as u32, rec, 0)
                .map_err(setup("writing a filter rule"))?;
        }
        let n = rules.len().min(MAX_FILTERS) as u32;
        self.set_config(|c| c.filter_count = n)
    }
}
