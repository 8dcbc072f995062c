//! Eviction, and the one finishing step every captured flow goes through.
//!
//! Flows reach user space two ways: drained from the idle flow map of every namespace in a
//! round (the timer, a full map, or a flush), or, while a map is full, one record per packet
//! through the `direct_flows` ring buffer. Both end in [`Evictor::finish`]: records of one
//! flow summed (the per-packet ring records), the sightings of a flow on several interfaces
//! merged (deduplication), then DNS facts, the sender's cgroup and container, and interface
//! names added. A flow that went through the ring buffer therefore carries the same facts as
//! one drained from the map.

use super::{Instance, if_name, lock, unix_now_s, wait_readable};
use crate::dedup::{self, Merged, Raw, sum_per_flow};
use crate::dns::DnsTracker;
use crate::records::{self, Clock, FlowKey, FlowRecord, counter};
use aya::maps::{MapData, RingBuf};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_core::flow::Flow;
use weir_core::ingest::Batch;

/// How long user space waits after flipping the active map before draining the idle one, so
/// that programs that read the old index have finished their update (they run in well under a
/// microsecond, with preemption off).
const FLIP_GRACE: Duration = Duration::from_millis(20);
/// How often the tick clock is checked against CLOCK_MONOTONIC (see `check_tick_clock`), and
/// how many checks in a row must find it off.
const TICK_CHECK: Duration = Duration::from_secs(10);
const TICK_MISSES: u64 = 3;

/// Flows handed to the ingest stage at a time while draining: a chunk is ~2 MB in memory,
/// and the ingest queue is short, so an eviction waits for the store rather than holding
/// every flow of the round at once.
const EVICT_CHUNK: usize = 2048;
/// The fewest records of a slice of an eviction round (`--eviction-slice` below it is raised).
const MIN_SLICE: usize = 1024;

/// Ring-buffer records waiting for the evictor beyond which readers wait (backpressure, as
/// when they handed flows to the ingest stage themselves).
const RING_PENDING_MAX: usize = 1 << 18;

/// Counters of the evictor (one for every namespace).
#[derive(Default)]
pub(super) struct EvictStats {
    pub evictions_timer: AtomicU64,
    pub evictions_full: AtomicU64,
    pub evictions_requested: AtomicU64,
    /// Records folded into another sighting of the same flow.
    pub duplicates_merged: AtomicU64,
    /// Rounds that found the wall clock stepped against the monotonic one.
    pub clock_steps: AtomicU64,
}

/// Ring-buffer records read by each namespace's reader, waiting for the evictor's finishing
/// step.
#[derive(Default)]
pub(super) struct RingQueue {
    records: Mutex<Vec<Raw>>,
    /// Readers still running: the evictor's last pass waits for them.
    readers: AtomicUsize,
}

impl RingQueue {
    fn push(&self, mut got: Vec<Raw>, stop: &AtomicBool) {
        loop {
            let mut q = lock(&self.records);
            if q.len() < RING_PENDING_MAX || stop.load(Ordering::SeqCst) {
                q.append(&mut got);
                return;
            }
            drop(q);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn take(&self) -> Vec<Raw> {
        std::mem::take(&mut *lock(&self.records))
    }
}

impl Instance {
    /// Runs on its own thread: reads the ring buffer that takes packets when a flow map is
    /// full and queues them for the evictor's finishing step.
    pub(super) fn ring_loop(
        &self,
        mut ring: RingBuf<MapData>,
        inst: usize,
        queue: &RingQueue,
        stop: &AtomicBool,
    ) {
        let fd = ring.as_raw_fd();
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if !stopping {
                wait_readable(fd, 200);
            }
            let mut got = Vec::new();
            while let Some(item) = ring.next() {
                let Some(r) = records::read::<FlowRecord>(&item) else {
                    continue;
                };
                got.push(Raw {
                    key: r.key,
                    value: r.value,
                    inst,
                });
            }
            if !got.is_empty() {
                self.counters
                    .ringbuf_flows
                    .fetch_add(got.len() as u64, Ordering::Relaxed);
                queue.push(got, stop);
            }
            if stopping {
                queue.readers.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// Drains every namespace in the same rounds, so that the sightings of a flow on several
/// interfaces (in one namespace or across them) meet and can be merged.
pub(super) struct Evictor {
    pub instances: Vec<Arc<Instance>>,
    pub stats: EvictStats,
    pub dedup: bool,
    /// Records a round drains and finishes at a time (0: all at once); see `round`.
    pub slice: usize,
    pub flush_requested: AtomicBool,
    pub cgroups: Mutex<crate::cgroup::CgroupNames>,
    pub ring: Arc<RingQueue>,
    /// The clock of the last round (kernel times to Unix times), to notice steps.
    clock: Mutex<Clock>,
    /// When the tick clock was last checked against CLOCK_MONOTONIC (ns, 0: never).
    tick_checked_ns: AtomicU64,
    /// Checks in a row that found the tick clock off.
    tick_misses: AtomicU64,
}

impl Evictor {
    pub fn new(instances: Vec<Arc<Instance>>, dedup: bool, slice: usize) -> Evictor {
        Evictor {
            instances,
            stats: EvictStats::default(),
            dedup,
            slice,
            flush_requested: AtomicBool::new(false),
            cgroups: Mutex::new(crate::cgroup::CgroupNames::new()),
            ring: Arc::new(RingQueue::default()),
            clock: Mutex::new(Clock::new()),
            tick_checked_ns: AtomicU64::new(0),
            tick_misses: AtomicU64::new(0),
        }
    }

    /// At most every 10 s (at rounds), checks the tick clock the programs stamp packets with
    /// against CLOCK_MONOTONIC (one namespace's `weir_clock`); found off at three checks in
    /// a row, every namespace's programs go back to the coarse clock for good.
    fn check_tick_clock(&self) {
        let now = records::clock_ns(libc::CLOCK_MONOTONIC);
        let last = self.tick_checked_ns.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < TICK_CHECK.as_nanos() as u64 {
            return;
        }
        self.tick_checked_ns.store(now, Ordering::Relaxed);
        let Some(Ok(t)) = super::clock::calibrated() else {
            return;
        };
        let Some(off) = self.instances.iter().find_map(|i| i.tick_clock_off(&t)) else {
            return;
        };
        if off == 0 {
            self.tick_misses.store(0, Ordering::Relaxed);
            return;
        }
        let misses = self.tick_misses.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(off_ns = off, misses, "tick clock stamp off CLOCK_MONOTONIC");
        if misses < TICK_MISSES {
            return;
        }
        let why = super::clock::mark_drifted(off);
        tracing::warn!(error = %why, "tick clock off from now on: {}", super::clock::AFTER_DRIFT);
        for inst in &self.instances {
            if let Err(e) = lock(&inst.maps).set_config(|c| c.tick_ns = 0) {
                tracing::warn!(netns = %inst.netns, error = %e, "cannot turn the tick clock off");
            }
        }
    }

    /// A ring-buffer reader for namespace `inst` starts (counted, so that the last pass
    /// waits for it).
    pub fn ring_reader(&self) -> Arc<RingQueue> {
        self.ring.readers.fetch_add(1, Ordering::SeqCst);
        self.ring.clone()
    }

    pub fn run(&self, stop: &AtomicBool, tx: &SyncSender<Batch>, timeout: Duration) {
        let mut last = Instant::now();
        let mut seen_full = 0u64;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let requested = self.flush_requested.load(Ordering::SeqCst);
            let full: u64 = self
                .instances
                .iter()
                .map(|i| i.kernel_counter(counter::MAP_FULL))
                .sum();
            // New rules or sampling wait for a flip (`Capture::change_at_flip`).
            let changing = self.instances.iter().any(|i| i.has_pending());
            let why = if stopping || requested || changing {
                Some(&self.stats.evictions_requested)
            } else if full > seen_full {
                Some(&self.stats.evictions_full)
            } else if last.elapsed() >= timeout {
                Some(&self.stats.evictions_timer)
            } else {
                None
            };
            seen_full = full;
            if let Some(c) = why {
                c.fetch_add(1, Ordering::Relaxed);
                last = Instant::now();
                // Two rounds when asked to flush, so both maps are empty afterwards.
                let rounds = if stopping || requested { 2 } else { 1 };
                for _ in 0..rounds {
                    if !self.round(tx) {
                        return;
                    }
                }
            }
            if stopping {
                // The readers' last records, once they have stopped (at most a poll's wait).
                let deadline = Instant::now() + Duration::from_secs(1);
                while self.ring.readers.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                self.finish_ring(tx);
                return;
            }
            if !self.finish_ring(tx) {
                return;
            }
            // After the ring's records: a flush has handed on everything counted before it.
            if requested {
                self.flush_requested.store(false, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Finishes the ring-buffer records queued so far. False when the receiver is gone.
    fn finish_ring(&self, tx: &SyncSender<Batch>) -> bool {
        let records = self.ring.take();
        if records.is_empty() {
            return true;
        }
        // DNS payloads of those packets are in the DNS ring by now.
        for inst in &self.instances {
            inst.drain_dns();
        }
        self.finish(
            sum_per_flow(records),
            tx,
            records::clock_ns(libc::CLOCK_MONOTONIC),
        )
    }

    /// One round: flip every namespace's map, wait for programs in flight, drain them all,
    /// and finish the flows. False when the receiver is gone.
    fn round(&self, tx: &SyncSender<Batch>) -> bool {
        // DNS facts from events after this moment may belong to flows of the maps that become
        // active now: the clean-up at the end of the round keeps them (a little margin for
        // programs that read the map index just before the flip).
        let flipped_at =
            records::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(FLIP_GRACE.as_nanos() as u64);
        let flipped: Vec<Option<u32>> = self.instances.iter().map(|i| i.flip()).collect();
        self.check_tick_clock();
        std::thread::sleep(FLIP_GRACE);
        // DNS facts of events from here on belong to packets of the maps active now, however
        // long the round's slices take to finish.
        let dns_before = records::clock_ns(libc::CLOCK_MONOTONIC);
        // Every idle map's keys first, so the records of the round fill one vector sized
        // once (growing it by doubling held up to three times the records at its peak).
        let keys: Vec<(usize, u32, Vec<FlowKey>)> = self
            .instances
            .iter()
            .zip(&flipped)
            .enumerate()
            .filter_map(|(idx, (inst, old))| old.map(|old| (idx, old, inst.idle_keys(old))))
            .collect();
        // The ring's records too (their packets were read during the grace): finished in
        // this round, before the clean-up below drops the DNS facts of packets from before
        // the flip. A flow with packets in both is summed into one record, not taken for a
        // duplicate.
        let ring = self.ring.take();
        // The round in slices of about `self.slice` records, each slice the flows whose
        // identity hashes to it, so every sighting of a flow (both ends of a veth, the ring's
        // records) is in the same slice and merged there: a round holds one slice's records
        // at a time, not all of them (100 k records are 17 MB).
        let total = keys.iter().map(|k| k.2.len()).sum::<usize>() + ring.len();
        let slices = match self.slice {
            0 => 1,
            // Not below MIN_SLICE records: each slice reads every namespace's DNS ring and
            // copies its interface names.
            n => total.div_ceil(n.max(MIN_SLICE)).max(1),
        };
        // Each key and ring record put in its slice once, moved, not copied.
        let mut keys: Vec<(usize, u32, Vec<Vec<FlowKey>>)> = keys
            .into_iter()
            .map(|(idx, old, ks)| (idx, old, dedup::split_by_flow(ks, slices, |k| k)))
            .collect();
        let mut ring = dedup::split_by_flow(ring, slices, |r| &r.key);
        let mut ok = true;
        for slice in 0..slices {
            // Sized from the slice's own keys and ring records (at most one record each).
            let size = keys
                .iter()
                .map(|(_, _, parts)| parts.get(slice).map_or(0, Vec::len))
                .sum::<usize>()
                + ring.get(slice).map_or(0, Vec::len);
            let mut raw = Vec::with_capacity(size);
            for (idx, old, parts) in &mut keys {
                let part = parts.get_mut(slice).map(std::mem::take).unwrap_or_default();
                self.instances[*idx].drain(*old, *idx, part, &mut raw);
            }
            let here = ring.get_mut(slice).map(std::mem::take).unwrap_or_default();
            if !here.is_empty() {
                raw.extend(here);
                raw = sum_per_flow(raw);
            }
            if !self.finish(raw, tx, dns_before) {
                ok = false;
                break;
            }
        }
        // Facts of flows that were in no drained map and no ring record (sampled out,
        // filtered) are not kept; facts of packets counted in the maps active now are.
        for inst in &self.instances {
            lock(&inst.dns).clear_flows(flipped_at);
        }
        ok
    }

    /// The finishing step: merges the sightings of each flow, adds what user space knows, and
    /// hands the flows on in chunks. DNS facts of events at or after `dns_before` (monotonic
    /// ns) belong to packets these records did not count. False when the receiver is gone.
    fn finish(&self, raw: Vec<Raw>, tx: &SyncSender<Batch>, dns_before: u64) -> bool {
        let n = raw.len();
        let mut merged = if self.dedup {
            dedup::dedup(raw)
        } else {
            dedup::keep_all(raw)
        };
        self.stats
            .duplicates_merged
            .fetch_add(n.saturating_sub(merged.len()) as u64, Ordering::Relaxed);
        let received = unix_now_s();
        let clock = self.measure_clock();
        // The trackers are unlocked between chunks, and their readers keep adding: facts from
        // `dns_before` on are left for the next round.
        let names: Vec<HashMap<u32, String>> = self
            .instances
            .iter()
            .map(|i| lock(&i.names).clone())
            .collect();
        loop {
            // The DNS trackers are held while a chunk is built, not while it waits in the
            // ingest queue: their readers keep the DNS ring buffer from filling meanwhile.
            let mut out = Vec::with_capacity(merged.len().min(EVICT_CHUNK));
            {
                let mut dns: Vec<_> = self.instances.iter().map(|i| lock(&i.dns)).collect();
                for m in merged.by_ref().take(EVICT_CHUNK) {
                    out.push(self.to_flow(&m, &names, &mut dns, dns_before, &clock, received));
                }
            }
            if out.is_empty() {
                return true;
            }
            if tx.send(Batch::from(out)).is_err() {
                return false;
            }
        }
    }

    /// The clock for this round's flows, measured now; a step of the wall clock since the
    /// last round is counted and logged (flows from here on follow the new time).
    fn measure_clock(&self) -> Clock {
        let now = Clock::new();
        let mut last = lock(&self.clock);
        if let Some(step_ms) = now.step_since(&last) {
            self.stats.clock_steps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                step_ms,
                "the wall clock stepped: flow times follow it from this eviction on"
            );
        }
        *last = now;
        now
    }

    fn to_flow(
        &self,
        m: &Merged,
        names: &[HashMap<u32, String>],
        dns: &mut [std::sync::MutexGuard<'_, DnsTracker>],
        dns_before: u64,
        clock: &Clock,
        received: u64,
    ) -> Flow {
        let inst = &self.instances[m.inst];
        let mut f = inst.flow(&m.key, &m.value, &names[m.inst], clock, received);
        // DNS facts: the kept record's, else those of another sighting.
        let mut info = None;
        for (i, k) in &m.members {
            if let Some(d) = dns.get_mut(*i).and_then(|d| d.take(k, dns_before))
                && info.is_none()
            {
                info = Some(d);
            }
        }
        if let Some(d) = info {
            d.apply(&mut f);
        }
        if m.value.cgroup_id != 0 {
            (f.cgroup, f.container_id) = lock(&self.cgroups).lookup(m.value.cgroup_id);
        }
        if m.members.len() > 1 {
            let mut ifs = Vec::with_capacity(m.members.len());
            let mut dirs = Vec::with_capacity(m.members.len());
            for (i, k) in &m.members {
                let ns = &self.instances[*i].netns;
                let name = if_name(&names[*i], k.ifindex);
                ifs.push(if ns.is_empty() {
                    name
                } else {
                    format!("{ns}/{name}")
                });
                dirs.push(k.direction.to_string());
            }
            f.interfaces = ifs.join(",");
            f.if_directions = dirs.join(",");
        }
        f
    }
}
