//! One loaded copy of the capture programs per network namespace, and the threads that keep
//! it attached and drained.

use crate::btf::EnumNames;
use crate::dedup::{self, Merged, Raw};
use crate::dns::DnsTracker;
use crate::netlink::{self, LinkWatch};
use crate::records::{
    self, Clock, DnsEvent, FILTER_ACCEPT, FILTER_REJECT, FilterRuleRecord, FlowKey, FlowRecord,
    FlowValue, MAX_FILTERS, WeirConfig, counter,
};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::tc::{self, NlOptions, TcAttachOptions};
use aya::programs::{BtfTracePoint, LinkOrder, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;
use aya::{Btf, Ebpf, EbpfLoader};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weir_core::capture::{
    AttachedInterface, CaptureSource, CaptureStatus, CompiledRule, Feature, FilterRule,
    compile_rules,
};
use weir_core::flow::Flow;
use weir_core::ingest::Batch;

static FLOWS_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flows.bpf.o"));

/// How long user space waits after flipping the active map before draining the idle one, so
/// that programs that read the old index have finished their update (they run in well under a
/// microsecond, with preemption off).
const FLIP_GRACE: Duration = Duration::from_millis(20);

/// Flows handed to the ingest stage at a time while draining.
const EVICT_CHUNK: usize = 8192;

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
    /// Attach the smoothed TCP RTT to flows (tcp_probe tracepoint).
    pub rtt: bool,
    /// Parse DNS (port 53) for names, response codes and latency.
    pub dns: bool,
    /// In-kernel filter rules in force at start (changeable at run time).
    pub filters: Vec<FilterRule>,
    /// Merge the sightings of one flow on several interfaces (both ends of a veth, a path
    /// through a bridge) into one record that lists them.
    pub dedup: bool,
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "loading the capture programs failed (weir needs root or CAP_BPF + CAP_NET_ADMIN): {0}"
    )]
    Load(String),
    #[error("capture setup: {0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> CaptureError + '_ {
    move |e| CaptureError::Setup(format!("{what}: {e}"))
}

struct FlowMaps {
    a: PerCpuHashMap<MapData, FlowKey, FlowValue>,
    b: PerCpuHashMap<MapData, FlowKey, FlowValue>,
    config: Array<MapData, WeirConfig>,
    filters: Array<MapData, FilterRuleRecord>,
    counters: PerCpuArray<MapData, u64>,
    /// What `config` holds: every change goes through [`FlowMaps::set_config`].
    cfg: WeirConfig,
}

impl FlowMaps {
    /// Writes a changed configuration to the kernel; on error the old one stays in force.
    fn set_config(&mut self, change: impl FnOnce(&mut WeirConfig)) -> Result<(), CaptureError> {
        let mut next = self.cfg;
        change(&mut next);
        self.config
            .set(0, next, 0)
            .map_err(setup("writing config"))?;
        self.cfg = next;
        Ok(())
    }

    /// Writes filter rules, then the rule count: the kernel never reads a rule half written
    /// beyond the count in force.
    fn set_filters(&mut self, rules: &[CompiledRule]) -> Result<(), CaptureError> {
        self.set_config(|c| c.filter_count = 0)?;
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
                action: if r.reject {
                    FILTER_REJECT
                } else {
                    FILTER_ACCEPT
                },
                drops_only: u8::from(r.drops_only),
                _pad: 0,
                sampling: r.sampling,
            };
            self.filters
                .set(i as u32, rec, 0)
                .map_err(setup("writing a filter rule"))?;
        }
        // An allow-list (any accept rule) leaves out what matches no rule.
        let default = if rules.iter().any(|r| !r.reject) {
            u32::from(FILTER_REJECT)
        } else {
            u32::from(FILTER_ACCEPT)
        };
        let n = rules.len().min(MAX_FILTERS) as u32;
        self.set_config(|c| {
            c.filter_default = default;
            c.filter_count = n;
        })
    }
}

/// Optional kernel features, as probed when the programs of a namespace were loaded.
#[derive(Debug, Clone)]
struct Probed {
    drops: Result<(), String>,
    rtt: Result<(), String>,
}

struct Attached {
    name: String,
    mode: &'static str,
    speed_bps: Option<u64>,
    ingress: aya::programs::tc::SchedClassifierLinkId,
    egress: aya::programs::tc::SchedClassifierLinkId,
}

/// Counters of the evictor (one for every namespace).
#[derive(Default)]
struct EvictStats {
    evictions_timer: AtomicU64,
    evictions_full: AtomicU64,
    evictions_requested: AtomicU64,
    /// Records folded into another sighting of the same flow.
    duplicates_merged: AtomicU64,
}

#[derive(Default)]
struct Counters {
    flows_evicted: AtomicU64,
    skbs_evicted: AtomicU64,
    ringbuf_flows: AtomicU64,
    drain_errors: AtomicU64,
}

struct Instance {
    netns: String,
    ebpf: Mutex<Ebpf>,
    maps: Mutex<FlowMaps>,
    names: Mutex<HashMap<u32, String>>,
    attached: Mutex<BTreeMap<u32, Attached>>,
    errors: Mutex<BTreeMap<String, String>>,
    counters: Counters,
    clock: Clock,
    probed: Probed,
    reasons: Arc<EnumNames>,
    dns_ring: Mutex<Option<RingBuf<MapData>>>,
    dns: Mutex<DnsTracker>,
}

/// A running capture in one or more network namespaces.
pub struct Capture {
    instances: Vec<Arc<Instance>>,
    evictor: Arc<Evictor>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    features: Vec<Feature>,
    cfg: CaptureConfig,
    filters: Mutex<Vec<FilterRule>>,
    /// 1-in-N sampling in force (set at start, changed by `set_sampling`).
    sampling: std::sync::atomic::AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn probe_features() -> (Vec<Feature>, bool) {
    let kv = KernelVersion::current().ok();
    let tcx = kv.is_some_and(|k| k >= KernelVersion::new(6, 6, 0));
    let tc_ok = aya::sys::is_program_supported(aya::programs::ProgramType::SchedClassifier)
        .unwrap_or(false);
    let rb_ok = aya::sys::is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(false);
    let kernel = kv
        .map(|k| k.to_string())
        .unwrap_or_else(|| "unknown".into());
    let features = vec![
        Feature {
            name: "flows".into(),
            enabled: tc_ok,
            detail: if tc_ok {
                format!("tc classifier on ingress and egress (kernel {kernel})")
            } else {
                "the kernel refuses tc classifier programs".into()
            },
        },
        Feature {
            name: "tcx".into(),
            enabled: tcx,
            detail: if tcx {
                "tcx links (falls back to clsact per interface on error)".into()
            } else {
                "kernel older than 6.6: legacy clsact qdisc".into()
            },
        },
        Feature {
            name: "ringbuf-fallback".into(),
            enabled: rb_ok,
            detail: "flows that do not fit in the map are sent through a ring buffer".into(),
        },
    ];
    (features, tcx)
}

impl Capture {
    /// Loads the programs (one copy per namespace) and starts attaching and draining.
    pub fn start(cfg: CaptureConfig, tx: SyncSender<Batch>) -> Result<Capture, CaptureError> {
        if cfg.active_timeout < Duration::from_millis(100) {
            return Err(CaptureError::Setup(
                "active timeout must be at least 100ms".into(),
            ));
        }
        if cfg.max_flows == 0 {
            return Err(CaptureError::Setup("max flows must be above 0".into()));
        }
        let compiled = compile_rules(&cfg.filters)
            .map_err(|e| CaptureError::Setup(format!("filter rules: {e}")))?;
        let (mut features, tcx) = probe_features();
        let (reasons, reasons_error) = match crate::btf::drop_reasons() {
            Ok(r) => (Arc::new(r), None),
            Err(e) => (Arc::new(EnumNames::default()), Some(e)),
        };
        let own_ns = std::fs::File::open("/proc/self/ns/net")
            .map(OwnedFd::from)
            .map_err(setup("opening the agent's network namespace"))?;
        let own_ns = Arc::new(own_ns);
        let stop = Arc::new(AtomicBool::new(false));
        let mut namespaces: Vec<String> = Vec::new();
        if cfg.root_netns {
            namespaces.push(String::new());
        }
        namespaces.extend(cfg.netns.iter().cloned());
        let mut instances = Vec::new();
        let mut threads = Vec::new();
        for ns in namespaces {
            let (inst, ring) = Instance::load(&ns, &cfg, reasons.clone(), &compiled)?;
            let inst = Arc::new(inst);
            threads.push(spawn("weir-attach", {
                let (inst, stop, own_ns, exclude) = (
                    inst.clone(),
                    stop.clone(),
                    own_ns.clone(),
                    cfg.exclude.clone(),
                );
                move || inst.watch_interfaces(&stop, &own_ns, &exclude, tcx)
            })?);
            threads.push(spawn("weir-ringbuf", {
                let (inst, stop, tx) = (inst.clone(), stop.clone(), tx.clone());
                move || inst.ring_loop(ring, &stop, &tx)
            })?);
            if cfg.dns {
                threads.push(spawn("weir-dns", {
                    let (inst, stop) = (inst.clone(), stop.clone());
                    move || inst.dns_loop(&stop)
                })?);
            }
            instances.push(inst);
        }
        let evictor = Arc::new(Evictor {
            instances: instances.clone(),
            stats: EvictStats::default(),
            dedup: cfg.dedup,
            flush_requested: AtomicBool::new(false),
            cgroups: Mutex::new(crate::cgroup::CgroupNames::new()),
        });
        threads.push(spawn("weir-evict", {
            let (ev, stop, tx, timeout) = (
                evictor.clone(),
                stop.clone(),
                tx.clone(),
                cfg.active_timeout,
            );
            move || ev.run(&stop, &tx, timeout)
        })?);
        features.extend(optional_features(
            &cfg,
            instances.first().map(|i| &i.probed),
            reasons_error,
            reasons.len(),
        ));
        tracing::info!(
            namespaces = instances.len(),
            active_timeout_ms = cfg.active_timeout.as_millis() as u64,
            max_flows = cfg.max_flows,
            sampling = cfg.sampling,
            "capture started"
        );
        Ok(Capture {
            instances,
            evictor,
            stop,
            threads: Mutex::new(threads),
            features,
            filters: Mutex::new(cfg.filters.clone()),
            sampling: std::sync::atomic::AtomicU32::new(cfg.sampling),
            cfg,
        })
    }

    /// Detaches everything, drains what is left, and waits for the threads.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in lock(&self.threads).drain(..) {
            let _ = h.join();
        }
    }

    /// Sets 1-in-N sampling at run time, without reloading the programs.
    pub fn set_sampling(&self, sampling: u32) -> Result<(), CaptureError> {
        for inst in &self.instances {
            lock(&inst.maps).set_config(|c| c.sampling = sampling)?;
        }
        self.sampling.store(sampling, Ordering::SeqCst);
        tracing::info!(sampling, "sampling changed");
        Ok(())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, CaptureError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(setup("spawning a capture thread"))
}

impl CaptureSource for Capture {
    fn status(&self) -> CaptureStatus {
        let mut st = CaptureStatus {
            features: self.features.clone(),
            active_timeout_ms: self.cfg.active_timeout.as_millis() as u64,
            sampling: self.sampling.load(Ordering::SeqCst),
            max_flows: self.cfg.max_flows,
            filters: self.filters(),
            ..Default::default()
        };
        for inst in &self.instances {
            for (ifindex, a) in lock(&inst.attached).iter() {
                st.interfaces.push(AttachedInterface {
                    netns: inst.netns.clone(),
                    name: a.name.clone(),
                    ifindex: *ifindex,
                    mode: a.mode.into(),
                    speed_bps: a.speed_bps,
                });
            }
            for (k, v) in lock(&inst.errors).iter() {
                st.attach_errors.insert(k.clone(), v.clone());
            }
            let kernel = inst.kernel_counters();
            let c = &inst.counters;
            let user = [
                ("flows_evicted", c.flows_evicted.load(Ordering::Relaxed)),
                ("skbs_evicted", c.skbs_evicted.load(Ordering::Relaxed)),
                ("ringbuf_flows", c.ringbuf_flows.load(Ordering::Relaxed)),
                ("drain_errors", c.drain_errors.load(Ordering::Relaxed)),
            ];
            let dns = {
                let d = lock(&inst.dns);
                [
                    ("dns_malformed", d.malformed),
                    ("dns_matched", d.matched),
                    ("dns_overflow", d.overflow),
                ]
            };
            let user = user.into_iter().chain(dns);
            for (k, v) in kernel.into_iter().chain(user) {
                *st.counters.entry(k.to_string()).or_default() += v;
            }
        }
        let e = &self.evictor.stats;
        for (k, v) in [
            ("evictions_timer", &e.evictions_timer),
            ("evictions_map_full", &e.evictions_full),
            ("evictions_requested", &e.evictions_requested),
            ("duplicates_merged", &e.duplicates_merged),
        ] {
            st.counters.insert(k.into(), v.load(Ordering::Relaxed));
        }
        for ns in &self.cfg.netns {
            let attached = st.interfaces.iter().any(|i| &i.netns == ns);
            st.features.push(Feature {
                name: format!("netns:{ns}"),
                enabled: attached,
                detail: if attached {
                    "attached".into()
                } else {
                    "waiting for the namespace or its interfaces".into()
                },
            });
        }
        st
    }

    fn filters(&self) -> Vec<FilterRule> {
        lock(&self.filters).clone()
    }

    fn set_filters(&self, rules: Vec<FilterRule>) -> Result<(), String> {
        let compiled = compile_rules(&rules)?;
        let mut current = lock(&self.filters);
        for inst in &self.instances {
            lock(&inst.maps)
                .set_filters(&compiled)
                .map_err(|e| e.to_string())?;
        }
        tracing::info!(rules = rules.len(), "filter rules replaced");
        *current = rules;
        Ok(())
    }

    fn set_sampling(&self, one_in: u32) -> Result<(), String> {
        Capture::set_sampling(self, one_in).map_err(|e| e.to_string())
    }

    fn flush(&self) {
        self.evictor.flush_requested.store(true, Ordering::SeqCst);
        // Wait (bounded) until every namespace has been drained.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.evictor.flush_requested.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn excluded(name: &str, exclude: &[String]) -> bool {
    name == "lo"
        || exclude.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
}

impl Instance {
    fn load(
        netns: &str,
        cfg: &CaptureConfig,
        reasons: Arc<EnumNames>,
        filters: &[CompiledRule],
    ) -> Result<(Instance, RingBuf<MapData>), CaptureError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("flows_a", cfg.max_flows)
            .map_max_entries("flows_b", cfg.max_flows)
            .load(FLOWS_OBJ)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        for prog in ["weir_ingress", "weir_egress"] {
            let p: &mut SchedClassifier = ebpf
                .program_mut(prog)
                .ok_or_else(|| CaptureError::Load(format!("program {prog} missing")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| CaptureError::Load(e.to_string()))?;
            p.load()
                .map_err(|e| CaptureError::Load(format!("{prog}: {e}")))?;
        }
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| CaptureError::Load(format!("map {name} missing")))
        };
        let a = PerCpuHashMap::try_from(take(&mut ebpf, "flows_a")?).map_err(setup("flows_a"))?;
        let b = PerCpuHashMap::try_from(take(&mut ebpf, "flows_b")?).map_err(setup("flows_b"))?;
        let config: Array<MapData, WeirConfig> =
            Array::try_from(take(&mut ebpf, "config")?).map_err(setup("config"))?;
        let filter_map: Array<MapData, FilterRuleRecord> =
            Array::try_from(take(&mut ebpf, "filters")?).map_err(setup("filters"))?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, "counters")?).map_err(setup("counters"))?;
        let ring =
            RingBuf::try_from(take(&mut ebpf, "direct_flows")?).map_err(setup("direct_flows"))?;
        let dns_ring =
            RingBuf::try_from(take(&mut ebpf, "dns_events")?).map_err(setup("dns_events"))?;
        let mut maps = FlowMaps {
            a,
            b,
            config,
            filters: filter_map,
            counters,
            cfg: WeirConfig::default(),
        };
        let consumed = reasons.value("SKB_CONSUMED").unwrap_or(1) as u32;
        let netns_ino = if netns.is_empty() {
            netlink::own_netns_inode().unwrap_or(0)
        } else {
            0 // set when the watcher enters the namespace
        };
        maps.set_config(|c| {
            c.sampling = cfg.sampling;
            c.netns_ino = netns_ino;
            c.consumed_reason = consumed;
            c.dns = u32::from(cfg.dns);
        })?;
        maps.set_filters(filters)?;
        // The tracing programs are optional: a kernel without the hook (or without BTF)
        // loses only that feature.
        let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"));
        let mut trace = |prog: &str, hook: &str, wanted: bool| -> Result<(), String> {
            if !wanted {
                return Err("turned off".into());
            }
            let btf = btf.as_ref().map_err(Clone::clone)?;
            let p: &mut BtfTracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            p.load(hook, btf)
                .map_err(|e| format!("loading tp_btf/{hook}: {e}"))?;
            p.attach()
                .map_err(|e| format!("attaching tp_btf/{hook}: {e}"))?;
            Ok(())
        };
        let probed = Probed {
            drops: trace("weir_kfree_skb", "kfree_skb", cfg.drops),
            rtt: trace("weir_tcp_probe", "tcp_probe", cfg.rtt),
        };
        for (what, r) in [("drops", &probed.drops), ("tcp-rtt", &probed.rtt)] {
            if let Err(e) = r {
                tracing::warn!(netns = %netns, feature = what, error = %e, "capture feature off");
            }
        }
        Ok((
            Instance {
                netns: netns.to_string(),
                ebpf: Mutex::new(ebpf),
                maps: Mutex::new(maps),
                names: Mutex::new(HashMap::new()),
                attached: Mutex::new(BTreeMap::new()),
                errors: Mutex::new(BTreeMap::new()),
                counters: Counters::default(),
                clock: Clock::new(),
                probed,
                reasons,
                dns_ring: Mutex::new(Some(dns_ring)),
                dns: Mutex::new(DnsTracker::default()),
            },
            ring,
        ))
    }

    fn kernel_counter(&self, idx: u32) -> u64 {
        lock(&self.maps)
            .counters
            .get(&idx, 0)
            .map(|per| per.iter().sum())
            .unwrap_or(0)
    }

    fn kernel_counters(&self) -> Vec<(&'static str, u64)> {
        [
            (counter::SAMPLED_OUT, "kernel_sampled_out"),
            (counter::MAP_FULL, "kernel_map_full"),
            (counter::RINGBUF_LOST, "kernel_ringbuf_lost"),
            (counter::TRUNCATED, "kernel_truncated"),
            (counter::FILTERED, "kernel_filtered"),
            (counter::DNS_LOST, "kernel_dns_lost"),
            (counter::DROPS, "kernel_drops"),
            (counter::RTT, "kernel_rtt_samples"),
        ]
        .iter()
        .map(|(i, n)| (*n, self.kernel_counter(*i)))
        .collect()
    }

    // ---- attaching -------------------------------------------------------------------------

    /// Runs on its own thread: enters the namespace (if any), then keeps every interface
    /// attached, following netlink link notifications.
    fn watch_interfaces(&self, stop: &AtomicBool, own_ns: &OwnedFd, exclude: &[String], tcx: bool) {
        let mut warned = false;
        while !stop.load(Ordering::SeqCst) {
            let entered = if self.netns.is_empty() {
                None
            } else {
                match netlink::open_netns(&self.netns) {
                    Ok((fd, ino)) => match netlink::enter_netns(&fd) {
                        Ok(()) => {
                            // The tracing programs keep to this namespace from now on.
                            if let Err(e) = lock(&self.maps)
                                .set_config(|c| c.netns_ino = u32::try_from(ino).unwrap_or(0))
                            {
                                tracing::warn!(netns = %self.netns, error = %e, "cannot set the namespace of the tracing programs");
                            }
                            Some(ino)
                        }
                        Err(e) => {
                            tracing::error!(netns = %self.netns, error = %e, "cannot enter network namespace");
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    },
                    Err(e) => {
                        if !warned {
                            tracing::warn!(netns = %self.netns, error = %e, "network namespace not there yet, waiting");
                            warned = true;
                        }
                        std::thread::sleep(Duration::from_millis(250));
                        continue;
                    }
                }
            };
            warned = false;
            let watch = match LinkWatch::new() {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(netns = %self.netns, error = %e, "no netlink link notifications, polling instead");
                    None
                }
            };
            tracing::info!(netns = %self.netns, "watching interfaces");
            loop {
                self.sync_interfaces(exclude, tcx);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(ino) = entered
                    && netlink::netns_inode(&self.netns) != Some(ino)
                {
                    tracing::info!(netns = %self.netns, "network namespace removed, releasing it");
                    break;
                }
                match &watch {
                    Some(w) => {
                        w.wait(Duration::from_millis(500));
                    }
                    None => std::thread::sleep(Duration::from_millis(500)),
                }
            }
            self.detach_all();
            if entered.is_some() {
                // Leave the namespace so that holding it does not keep it alive.
                drop(watch);
                if let Err(e) = netlink::enter_netns(own_ns) {
                    tracing::error!(error = %e, fd = own_ns.as_raw_fd(), "cannot return to the agent's namespace");
                    return;
                }
            }
        }
    }

    fn sync_interfaces(&self, exclude: &[String], tcx: bool) {
        let present = match netlink::interfaces() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(netns = %self.netns, error = %e, "cannot list interfaces");
                return;
            }
        };
        {
            let mut names = lock(&self.names);
            for (i, n) in &present {
                names.insert(*i, n.clone());
            }
        }
        let mut attached = lock(&self.attached);
        let mut ebpf = lock(&self.ebpf);
        // Interfaces gone (or renamed/replaced under the same index): drop their links.
        let stale: Vec<u32> = attached
            .iter()
            .filter(|(i, a)| !present.iter().any(|(pi, pn)| pi == *i && *pn == a.name))
            .map(|(i, _)| *i)
            .collect();
        for i in stale {
            if let Some(a) = attached.remove(&i) {
                detach(&mut ebpf, a);
            }
        }
        for (ifindex, name) in present {
            if excluded(&name, exclude) || attached.contains_key(&ifindex) {
                continue;
            }
            let key = format!("{}/{}", self.netns, name);
            match attach(&mut ebpf, &name, tcx) {
                Ok((mode, ingress, egress)) => {
                    tracing::info!(netns = %self.netns, interface = %name, ifindex, mode, "attached");
                    lock(&self.errors).remove(&key);
                    attached.insert(
                        ifindex,
                        Attached {
                            speed_bps: crate::netlink::link_speed_bps(&name),
                            name,
                            mode,
                            ingress,
                            egress,
                        },
                    );
                }
                Err(e) => {
                    let mut errors = lock(&self.errors);
                    if errors.get(&key) != Some(&e) {
                        tracing::warn!(netns = %self.netns, interface = %name, error = %e, "attach failed");
                        errors.insert(key, e);
                    }
                }
            }
        }
    }

    fn detach_all(&self) {
        let mut attached = lock(&self.attached);
        let mut ebpf = lock(&self.ebpf);
        for (_, a) in std::mem::take(&mut *attached) {
            detach(&mut ebpf, a);
        }
    }

    // ---- draining --------------------------------------------------------------------------

    /// Flips the active map; returns the one now idle (None when the flip failed).
    fn flip(&self) -> Option<u32> {
        let mut m = lock(&self.maps);
        let old = m.cfg.active_map;
        match m.set_config(|c| c.active_map = 1 - old) {
            Ok(()) => Some(old),
            Err(e) => {
                self.counters.drain_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(netns = %self.netns, error = %e, "cannot flip the active flow map");
                None
            }
        }
    }

    /// Drains the idle map `old` (no program writes to it any more) into `out`.
    fn drain(&self, old: u32, inst: usize, out: &mut Vec<Raw>) {
        // DNS payloads of packets counted in the idle map are all in the ring by now.
        self.drain_dns();
        let mut m = lock(&self.maps);
        let map = if old == 0 { &mut m.a } else { &mut m.b };
        let keys: Vec<FlowKey> = map.keys().filter_map(Result::ok).collect();
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
    fn drain_dns(&self) {
        let mut ring = lock(&self.dns_ring);
        let Some(ring) = ring.as_mut() else {
            return;
        };
        let mut dns = lock(&self.dns);
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<DnsEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a struct dns_event; read it unaligned.
            let e: DnsEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            dns.add(&e);
        }
    }

    /// Runs on its own thread: keeps the DNS ring buffer from filling between evictions.
    fn dns_loop(&self, stop: &AtomicBool) {
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

    fn flow(
        &self,
        k: &FlowKey,
        v: &FlowValue,
        names: &HashMap<u32, String>,
        received: u64,
    ) -> Flow {
        let name = if_name(names, k.ifindex);
        let reasons = &self.reasons;
        records::to_flow(k, v, &self.clock, name, &self.netns, received, &|n| {
            reasons
                .name(u64::from(n))
                .map(str::to_string)
                .unwrap_or_else(|| format!("SKB_DROP_REASON_{n}"))
        })
    }

    fn ring_loop(&self, mut ring: RingBuf<MapData>, stop: &AtomicBool, tx: &SyncSender<Batch>) {
        let fd = ring.as_raw_fd();
        while !stop.load(Ordering::SeqCst) {
            wait_readable(fd, 200);
            let names = lock(&self.names).clone();
            let received = unix_now_s();
            let mut batch = Vec::new();
            while let Some(item) = ring.next() {
                if item.len() < std::mem::size_of::<FlowRecord>() {
                    continue;
                }
                // SAFETY: the kernel wrote a struct flow_record; read it unaligned.
                let r: FlowRecord = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                batch.push(self.flow(&r.key, &r.value, &names, received));
            }
            if !batch.is_empty() {
                self.counters
                    .ringbuf_flows
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if tx.send(Batch::from(batch)).is_err() {
                    return;
                }
            }
        }
    }
}

/// Drains every namespace in the same rounds, so that the sightings of a flow on several
/// interfaces (in one namespace or across them) meet and can be merged.
struct Evictor {
    instances: Vec<Arc<Instance>>,
    stats: EvictStats,
    dedup: bool,
    flush_requested: AtomicBool,
    cgroups: Mutex<crate::cgroup::CgroupNames>,
}

impl Evictor {
    fn run(&self, stop: &AtomicBool, tx: &SyncSender<Batch>, timeout: Duration) {
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
            let why = if stopping || requested {
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
                if requested {
                    self.flush_requested.store(false, Ordering::SeqCst);
                }
            }
            if stopping {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One round: flip every namespace's map, wait for programs in flight, drain them all,
    /// merge duplicates, and send the flows on in chunks. False when the receiver is gone.
    fn round(&self, tx: &SyncSender<Batch>) -> bool {
        // DNS facts from events after this moment may belong to flows of the maps that become
        // active now: the clean-up at the end of the round keeps them (a little margin for
        // programs that read the map index just before the flip).
        let flipped_at =
            records::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(FLIP_GRACE.as_nanos() as u64);
        let flipped: Vec<Option<u32>> = self.instances.iter().map(|i| i.flip()).collect();
        std::thread::sleep(FLIP_GRACE);
        let mut raw = Vec::new();
        for (idx, (inst, old)) in self.instances.iter().zip(&flipped).enumerate() {
            if let Some(old) = old {
                inst.drain(*old, idx, &mut raw);
            }
        }
        let n = raw.len();
        let merged = if self.dedup {
            dedup::dedup(raw)
        } else {
            dedup::keep_all(raw)
        };
        self.stats
            .duplicates_merged
            .fetch_add((n - merged.len()) as u64, Ordering::Relaxed);
        let received = unix_now_s();
        let names: Vec<HashMap<u32, String>> = self
            .instances
            .iter()
            .map(|i| lock(&i.names).clone())
            .collect();
        let mut dns: Vec<_> = self.instances.iter().map(|i| lock(&i.dns)).collect();
        let mut out = Vec::with_capacity(merged.len().min(EVICT_CHUNK));
        let mut ok = true;
        for m in merged {
            let f = self.to_flow(&m, &names, &mut dns, received);
            out.push(f);
            if out.len() >= EVICT_CHUNK && tx.send(Batch::from(std::mem::take(&mut out))).is_err() {
                ok = false;
                break;
            }
        }
        // Facts of flows that were not in the drained maps (their packets went through the
        // ring buffer when a map was full) are not kept; facts of packets counted in the maps
        // active now are.
        for d in dns.iter_mut() {
            d.clear_flows(flipped_at);
        }
        drop(dns);
        ok && (out.is_empty() || tx.send(Batch::from(out)).is_ok())
    }

    fn to_flow(
        &self,
        m: &Merged,
        names: &[HashMap<u32, String>],
        dns: &mut [std::sync::MutexGuard<'_, DnsTracker>],
        received: u64,
    ) -> Flow {
        let inst = &self.instances[m.inst];
        let mut f = inst.flow(&m.key, &m.value, &names[m.inst], received);
        // DNS facts: the kept record's, else those of another sighting.
        let mut info = None;
        for (i, k) in &m.members {
            if let Some(d) = dns.get_mut(*i).and_then(|d| d.take(k))
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

/// Waits up to `ms` for `fd` to become readable (a ring buffer with records).
fn wait_readable(fd: std::os::fd::RawFd, ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Unix seconds now (a record's TimeReceived).
fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An interface's name, or `if<index>` when it is gone.
fn if_name(names: &HashMap<u32, String>, ifindex: u32) -> String {
    names
        .get(&ifindex)
        .cloned()
        .unwrap_or_else(|| format!("if{ifindex}"))
}

type LinkId = aya::programs::tc::SchedClassifierLinkId;

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())
}

/// Attaches both programs to an interface of the calling thread's namespace: tcx where the
/// kernel has it, else (or when tcx fails) a clsact qdisc.
fn attach(
    ebpf: &mut Ebpf,
    ifname: &str,
    tcx: bool,
) -> Result<(&'static str, LinkId, LinkId), String> {
    if tcx {
        let r = (|| -> Result<(LinkId, LinkId), String> {
            let i = program(ebpf, "weir_ingress")?
                .attach_with_options(
                    ifname,
                    TcAttachType::Ingress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|e| e.to_string())?;
            let e = match program(ebpf, "weir_egress")?.attach_with_options(
                ifname,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            ) {
                Ok(e) => e,
                Err(err) => {
                    let _ = program(ebpf, "weir_ingress").map(|p| p.detach(i));
                    return Err(err.to_string());
                }
            };
            Ok((i, e))
        })();
        match r {
            Ok((i, e)) => return Ok(("tcx", i, e)),
            Err(e) => {
                tracing::debug!(interface = ifname, error = %e, "tcx attach failed, trying clsact")
            }
        }
    }
    match tc::qdisc_add_clsact(ifname) {
        Ok(()) => {}
        Err(tc::TcError::NetlinkError(n)) if n.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(format!("adding clsact qdisc: {e}")),
    }
    let i = program(ebpf, "weir_ingress")?
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .map_err(|e| e.to_string())?;
    let e = match program(ebpf, "weir_egress")?.attach_with_options(
        ifname,
        TcAttachType::Egress,
        TcAttachOptions::Netlink(NlOptions::default()),
    ) {
        Ok(e) => e,
        Err(err) => {
            let _ = program(ebpf, "weir_ingress").map(|p| p.detach(i));
            return Err(err.to_string());
        }
    };
    Ok(("clsact", i, e))
}

fn detach(ebpf: &mut Ebpf, a: Attached) {
    // Errors are expected when the interface is already gone (the kernel dropped the links).
    if let Ok(p) = program(ebpf, "weir_ingress") {
        let _ = p.detach(a.ingress);
    }
    if let Ok(p) = program(ebpf, "weir_egress") {
        let _ = p.detach(a.egress);
    }
    tracing::info!(interface = %a.name, "detached");
}

/// The status lines of the optional features.
fn optional_features(
    cfg: &CaptureConfig,
    probed: Option<&Probed>,
    reasons_error: Option<String>,
    reasons: usize,
) -> Vec<Feature> {
    let state = |r: Option<&Result<(), String>>, on: String| match r {
        Some(Ok(())) => (true, on),
        Some(Err(e)) => (false, e.clone()),
        None => (false, "no namespace loaded".into()),
    };
    let (drops_on, mut drops_detail) = state(
        probed.map(|p| &p.drops),
        format!("tp_btf/kfree_skb; {reasons} drop reasons read from the kernel's BTF"),
    );
    if let Some(e) = reasons_error {
        drops_detail.push_str(&format!(" (reasons shown as numbers: {e})"));
    }
    let (rtt_on, rtt_detail) = state(
        probed.map(|p| &p.rtt),
        "tp_btf/tcp_probe (smoothed RTT of the socket)".into(),
    );
    vec![
        Feature {
            name: "drops".into(),
            enabled: drops_on,
            detail: drops_detail,
        },
        Feature {
            name: "tcp-rtt".into(),
            enabled: rtt_on,
            detail: rtt_detail,
        },
        Feature {
            name: "dns".into(),
            enabled: cfg.dns,
            detail: if cfg.dns {
                "port 53 (UDP and TCP) parsed: name, type, response code, latency".into()
            } else {
                "turned off".into()
            },
        },
        Feature {
            name: "filters".into(),
            enabled: true,
            detail: format!("in-kernel filter rules, up to {MAX_FILTERS}, changeable at run time"),
        },
    ]
}
