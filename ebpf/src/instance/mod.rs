//! One loaded copy of the capture programs per network namespace, and the threads that keep
//! it attached and drained.

mod clock;
mod config;
mod drain;
mod evict;
mod features;
mod interfaces;
mod namespace;

pub use config::CaptureConfig;
use config::FlowMaps;
use drain::{unix_now_s, wait_readable};
pub use features::maps_charged_to_memlock;
use features::{optional_features, probe_features};
use interfaces::if_name;
use namespace::{attach, detach};

use crate::btf::EnumNames;
use crate::dedup::Raw;
use crate::dns::DnsTracker;
use crate::netlink::{self, LinkWatch};
use crate::records::{
    self, Clock, DnsEvent, FILTER_ACCEPT, FILTER_REJECT, FILTER_SAMPLE, FilterRuleRecord, FlowKey,
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
    AttachedInterface, CaptureSource, CaptureStatus, CompiledRule, Feature, FilterAction,
    FilterRule, compile_rules,
};
use weir_core::flow::Flow;
use weir_core::ingest::Batch;

static FLOWS_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flows.bpf.o"));

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

/// Optional kernel features, as probed when the programs of a namespace were loaded.
#[derive(Debug, Clone)]
struct Probed {
    drops: Result<(), String>,
    rtt: Result<(), String>,
    /// The tick clock's HZ, or why packets read the coarse clock instead.
    tick_clock: Result<u64, String>,
}

struct Attached {
    name: String,
    mode: &'static str,
    speed_bps: Option<u64>,
    ingress: aya::programs::tc::SchedClassifierLinkId,
    egress: aya::programs::tc::SchedClassifierLinkId,
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
    probed: Probed,
    reasons: Arc<EnumNames>,
    dns_ring: Mutex<Option<RingBuf<MapData>>>,
    dns: Mutex<DnsTracker>,
    /// Rules and sampling to write at the next flip of the flow maps.
    pending: Mutex<Pending>,
}

/// How long a change of rules or sampling waits for the flip that writes it.
const FLIP_WAIT: Duration = Duration::from_millis(500);

/// Capture settings that wait for the next flip of the flow maps (see [`Instance::flip`]).
#[derive(Default)]
struct Pending {
    filters: Option<Vec<CompiledRule>>,
    sampling: Option<u32>,
}

impl Pending {
    fn is_some(&self) -> bool {
        self.filters.is_some() || self.sampling.is_some()
    }
}

/// A running capture in one or more network namespaces.
pub struct Capture {
    instances: Vec<Arc<Instance>>,
    evictor: Arc<evict::Evictor>,
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
        let mut loaded = Vec::new();
        for ns in namespaces {
            let (inst, ring) = Instance::load(&ns, &cfg, reasons.clone(), &compiled)?;
            loaded.push((Arc::new(inst), ring));
        }
        let instances: Vec<Arc<Instance>> = loaded.iter().map(|(i, _)| i.clone()).collect();
        let evictor = Arc::new(evict::Evictor::new(
            instances.clone(),
            cfg.dedup,
            cfg.eviction_slice,
        ));
        let mut threads = Vec::new();
        for (idx, (inst, ring)) in loaded.into_iter().enumerate() {
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
                let (inst, stop, queue) = (inst.clone(), stop.clone(), evictor.ring_reader());
                move || inst.ring_loop(ring, idx, &queue, &stop)
            })?);
            if cfg.dns {
                threads.push(spawn("weir-dns", {
                    let (inst, stop) = (inst.clone(), stop.clone());
                    move || inst.dns_loop(&stop)
                })?);
            }
        }
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
    /// Queues `change` in every namespace, for the evictor to write with its next flip of
    /// the flow maps (it looks every 50 ms), so the flows counted so far leave under the
    /// setting they were counted by: a record carries one 1-in-N, and one that mixed two
    /// would scale some of its packets wrongly. Waits at most [`FLIP_WAIT`]; what no flip
    /// took by then (an evictor busy or stopped) is written at once. So the change is in
    /// force when this returns, or the error says why not.
    fn change_at_flip(&self, change: impl Fn(&mut Pending)) -> Result<(), CaptureError> {
        for inst in &self.instances {
            change(&mut lock(&inst.pending));
        }
        let deadline = Instant::now() + FLIP_WAIT;
        while Instant::now() < deadline && self.instances.iter().any(|i| lock(&i.pending).is_some())
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut first_err = None;
        for inst in &self.instances {
            if let Err(e) = inst.write_pending()
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// 1-in-N sampling at run time, written with the next flip of the flow maps.
    pub fn set_sampling(&self, sampling: u32) -> Result<(), CaptureError> {
        self.change_at_flip(|p| p.sampling = Some(sampling))?;
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
        let mut features = self.features.clone();
        // The tick clock may have been turned off since the start (see `check_tick_clock`).
        if let Some(e) = clock::drifted() {
            for f in features.iter_mut().filter(|f| f.name == "tick-clock") {
                f.enabled = false;
                f.detail = format!("{e}; {}", clock::AFTER_DRIFT);
            }
        }
        let mut st = CaptureStatus {
            features,
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
            ("clock_steps", &e.clock_steps),
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
        self.change_at_flip(|p| p.filters = Some(compiled.clone()))
            .map_err(|e| e.to_string())?;
        tracing::info!(rules = rules.len(), "filter rules replaced");
        *lock(&self.filters) = rules;
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
