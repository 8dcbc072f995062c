//! Reading a namespace's maps: flipping the active flow map, draining the idle one, the
//! DNS ring buffer, and turning a kernel record into a flow.

use super::*;

impl Instance {
    /// Flips the active map; returns the one now idle (None when the flip failed). New rules
    /// and sampling waiting in `pending` are written right after the flip, so the map made
    /// active, empty, counts under them (but for packets in the microseconds between); one
    /// that cannot be written stays pending, for the next flip or the waiting caller.
    pub(super) fn flip(&self) -> Option<u32> {
        let mut m = lock(&self.maps);
        let old = m.cfg.active_map;
        let mut pending = lock(&self.pending);
        let sampling = pending.sampling;
        match m.set_config(|c| {
            c.active_map = 1 - old;
            if let Some(s) = sampling {
                c.sampling = s;
            }
        }) {
            Ok(()) => {
                pending.sampling = None;
                if let Some(rules) = &pending.filters {
                    match m.set_filters(rules) {
                        Ok(()) => pending.filters = None,
                        Err(e) => {
                            self.counters.drain_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(netns = %self.netns, error = %e, "cannot write the filter rules at a flip")
                        }
                    }
                }
                Some(old)
            }
            Err(e) => {
                self.counters.drain_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(netns = %self.netns, error = %e, "cannot flip the active flow map");
                None
            }
        }
    }

    /// Whether a change waits for the next flip.
    pub(super) fn has_pending(&self) -> bool {
        lock(&self.pending).is_some()
    }

    /// Writes what no flip took, now; the error of a write that fails (it is dropped: the
    /// caller says so, and the settings in force are whatever the kernel now holds).
    pub(super) fn write_pending(&self) -> Result<(), CaptureError> {
        let mut m = lock(&self.maps);
        let p = std::mem::take(&mut *lock(&self.pending));
        if let Some(s) = p.sampling {
            m.set_config(|c| c.sampling = s)?;
        }
        if let Some(rules) = &p.filters {
            m.set_filters(rules)?;
        }
        Ok(())
    }

    /// The keys in the idle map `old` (no program writes to it any more).
    pub(super) fn idle_keys(&self, old: u32) -> Vec<FlowKey> {
        let m = lock(&self.maps);
        let map = if old == 0 { &m.a } else { &m.b };
        map.keys().filter_map(Result::ok).collect()
    }

    /// Drains `keys` of the idle map `old` into `out`.
    pub(super) fn drain(&self, old: u32, inst: usize, keys: Vec<FlowKey>, out: &mut Vec<Raw>) {
        // DNS payloads of packets counted in the idle map are all in the ring by now.
        self.drain_dns();
        let mut m = lock(&self.maps);
        let map = if old == 0 { &mut m.a } else { &mut m.b };
        let (mut flows, mut skbs) = (0u64, 0u64);
        for k in keys {
            match map.get(&k, 0) {
                Ok(per_cpu) => {
                    let mut v = FlowValue::default();
                    for slot in per_cpu.iter() {
                        v.merge(slot);
                    }
                    if v.touched() {
                        flows += 1;
                        skbs += v.skbs;
                        out.push(Raw {
                            key: k,
                            value: v,
                            inst,
                        });
                    }
                }
                Err(e) => {
                    self.counters.drain_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "reading a flow failed");
                }
            }
            if let Err(e) = map.remove(&k) {
                self.counters.drain_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "removing a flow failed");
            }
        }
        self.counters
            .flows_evicted
            .fetch_add(flows, Ordering::Relaxed);
        self.counters
            .skbs_evicted
            .fetch_add(skbs, Ordering::Relaxed);
    }

    /// Reads every pending DNS payload into the tracker.
    pub(super) fn drain_dns(&self) {
        let mut ring = lock(&self.dns_ring);
        let Some(ring) = ring.as_mut() else {
            return;
        };
        let mut dns = lock(&self.dns);
        while let Some(item) = ring.next() {
            if let Some(e) = records::read::<DnsEvent>(&item) {
                dns.add(&e);
            }
        }
    }

    /// Runs on its own thread: keeps the DNS ring buffer from filling between evictions.
    pub(super) fn dns_loop(&self, stop: &AtomicBool) {
        let fd = match lock(&self.dns_ring).as_ref() {
            Some(r) => r.as_raw_fd(),
            None => return,
        };
        let mut last_expiry = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            wait_readable(fd, 200);
            self.drain_dns();
            if last_expiry.elapsed() > Duration::from_secs(5) {
                last_expiry = Instant::now();
                let now = records::clock_ns(libc::CLOCK_MONOTONIC);
                lock(&self.dns).expire(now);
            }
        }
    }

    pub(super) fn flow(
        &self,
        k: &FlowKey,
        v: &FlowValue,
        names: &HashMap<u32, String>,
        clock: &Clock,
        received: u64,
    ) -> Flow {
        let name = if_name(names, k.ifindex);
        let reasons = &self.reasons;
        records::to_flow(k, v, clock, name, &self.netns, received, &|n| {
            reasons
                .name(u64::from(n))
                .map(str::to_string)
                .unwrap_or_else(|| format!("SKB_DROP_REASON_{n}"))
        })
    }
}

/// Waits up to `ms` for `fd` to become readable (a ring buffer with records).
pub(super) fn wait_readable(fd: std::os::fd::RawFd, ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Unix seconds now (a record's TimeReceived).
pub(super) fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
