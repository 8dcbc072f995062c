//! One loaded plugin: checked against its manifest and grants, pre-linked, and called in a
//! fresh sandboxed store each time (a trap never poisons later calls). Repeated failures
//! disable it; other plugins and the agent are never affected.

use crate::batch::FlowBatch;
use crate::bindings::{
    alert_rule, check, correlator, decoder, exporter, flow_processor, summarizer, types as wit,
    visualization,
};
use crate::capability::Capability;
use crate::manifest::{self, Kind, Limits, Manifest, SUPPORTED_WIT};
use crate::runtime::Runtime;
use crate::state::{HostState, PluginCtx};
use crate::{HostError, lock};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// Consecutive failed calls after which a plugin is disabled.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 3;
/// Calls in the failure-rate window: a plugin whose failures reach [`MAX_FAILURE_RATE`] of
/// its last this-many calls is disabled, however it spaces them (failing every other call
/// never trips the consecutive count).
pub const FAILURE_WINDOW: usize = 20;
/// Share of failed calls in the window that disables a plugin.
pub const MAX_FAILURE_RATE: f64 = 0.5;
/// Most items a plugin may return from one call (nodes, links, cells, points, samples,
/// alerts, and every label or attribute of them).
pub const MAX_OUTPUT_ITEMS: usize = 200_000;
/// Most bytes of text one call may return (ids, labels, cells, summaries...).
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// Most alerts one rule evaluation may return.
pub const MAX_ALERTS: usize = 5_000;
/// Most labels one alert may carry, and longest label name, value or alert name (bytes;
/// a summary may be four times this).
pub const MAX_ALERT_LABELS: usize = 32;
pub const MAX_ALERT_TEXT: usize = 512;
/// The file in a plugin's directory that keeps its kv.
pub const KV_FILE: &str = "kv.json";
/// Guest stdout/stderr kept per call; beyond it the stream closes.
pub const STDIO_CAP: usize = 64 * 1024;
/// Most the host copies out of a plugin in one lift (a call's result, or the arguments of
/// one host call), MiB: strings and lists counted as the host holds them. A plugin can make
/// this far larger than its own memory (one string returned many times), so it is capped
/// while lifting (wasmtime's hostcall fuel), not after, and every call reserves it from the
/// agent's memory budget next to the plugin's own memory.
pub const LIFT_MB: u32 = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum PluginState {
    Enabled,
    Disabled(String),
}

/// A plugin as the CLI and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub description: String,
    pub sha256: String,
    pub requested: Vec<Capability>,
    pub granted: Vec<Capability>,
    pub limits: Limits,
    pub state: PluginState,
    pub calls: u64,
    pub failures: u64,
    /// Time spent in calls (seconds) and the longest call (seconds).
    pub busy_seconds: f64,
    pub max_call_seconds: f64,
    pub recent_errors: Vec<String>,
    /// Batches this plugin did not get because its queue was full or it was busy.
    pub skipped_batches: u64,
    /// Calls refused because the plugin (or the agent's plugin budget) was busy.
    pub busy_refusals: u64,
    /// Log lines dropped by the plugin's log rate limit.
    pub log_dropped: u64,
    /// What the manifest asked for (`limits` is what it got).
    pub asked_limits: Limits,
}

enum Pre {
    FlowProcessor(flow_processor::FlowProcessorPre<HostState>),
    Visualization(visualization::VisualizationPre<HostState>),
    AlertRule(alert_rule::AlertRulePre<HostState>),
    Correlator(correlator::CorrelatorPre<HostState>),
    Decoder(decoder::DecoderPre<HostState>),
    Summarizer(summarizer::SummarizerPre<HostState>),
    Check(check::CheckPre<HostState>),
    Exporter(exporter::ExporterPre<HostState>),
}

#[derive(Default)]
struct Health {
    calls: u64,
    failures: u64,
    /// Time spent in calls, microseconds, and the longest call.
    busy_us: u64,
    max_us: u64,
    consecutive: u32,
    /// Outcomes of the last [`FAILURE_WINDOW`] calls (true: failed).
    window: VecDeque<bool>,
    disabled: Option<String>,
    recent: VecDeque<String>,
    busy_refusals: u64,
}

/// Lends `batch` to one call as a resource, removed from the store's table afterwards (a
/// warm instance's table would otherwise keep every batch it was given).
fn lend_batch<R>(
    store: &mut Store<HostState>,
    batch: &FlowBatch,
    call: impl FnOnce(
        &mut Store<HostState>,
        wasmtime::component::Resource<FlowBatch>,
    ) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let b = store.data_mut().table.push(batch.clone())?;
    let rep = b.rep();
    let out = call(&mut *store, b);
    let _ = store
        .data_mut()
        .table
        .delete(wasmtime::component::Resource::<FlowBatch>::new_own(rep));
    out
}

/// Whether a warm instance's stdio is far from full (one that fills it starts fresh).
fn stdio_quiet(store: &Store<HostState>) -> bool {
    let data = store.data();
    data.stdout.contents().len() < STDIO_CAP / 2 && data.stderr.contents().len() < STDIO_CAP / 2
}

/// How long a summarizer's warm state may go without being written into its window.
pub const SUMMARY_SYNC: std::time::Duration = std::time::Duration::from_secs(5);

/// A summarizer's instance holding the current window's sketches between updates.
struct WarmSummary {
    store: Store<HostState>,
    inst: summarizer::Summarizer,
    window_start_ms: u64,
    /// Updated since its state was last written into the window.
    dirty: bool,
    synced_at: std::time::Instant,
}

pub struct Plugin {
    manifest: Manifest,
    sha256: String,
    granted: BTreeSet<Capability>,
    limits: Limits,
    ctx: Arc<PluginCtx>,
    engine: Engine,
    /// Advances the epoch while a call of this plugin runs (`run_in`).
    ticker: Arc<crate::runtime::Ticker>,
    pre: Pre,
    health: Mutex<Health>,
    /// A summarizer's state between calls: a snapshot per time window (`summary.rs`).
    summary: Mutex<crate::summary::Windows>,
    /// Held by a call that updates the summary, so concurrent updates never lose one.
    summary_update: Mutex<()>,
    /// A flow-processor's instance, kept between calls while it behaves.
    warm: Mutex<Option<(Store<HostState>, flow_processor::FlowProcessor)>>,
    /// A summarizer's instance holding the current window's sketches between updates.
    warm_summary: Mutex<Option<WarmSummary>>,
    policy: crate::runtime::SandboxPolicy,
    budget: Arc<crate::runtime::Budget>,
    /// Calls running now.
    inflight: std::sync::atomic::AtomicU32,
    cancel: crate::deadline::Cancel,
    skipped: std::sync::atomic::AtomicU64,
}

/// A call's admission: its slot among the plugin's concurrent calls and its share of the
/// agent's memory budget, both given back when dropped.
struct Admission<'a> {
    inflight: &'a std::sync::atomic::AtomicU32,
    _memory: crate::runtime::Reservation,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.inflight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Everything needed to load a plugin.
pub struct LoadRequest<'a> {
    pub wasm: &'a [u8],
    /// A manifest given beside the file (plugin.toml); else the embedded one is used.
    pub manifest: Option<Manifest>,
    /// What the operator grants; only these interfaces are linked.
    pub grants: &'a [Capability],
    /// Operator limits, at most the ones the plugin asked for.
    pub limits: Option<Limits>,
    pub config: BTreeMap<String, String>,
    pub flows: Option<Arc<weir_core::Store>>,
    /// Agent services (link speeds, the records store) for the capabilities that use them.
    pub services: crate::state::Services,
    /// What each scoped capability granted may reach (`outbound-http` hosts...).
    pub scopes: crate::scope::Scopes,
}

struct FixedWall;
impl HostWallClock for FixedWall {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// The wall clock of a replay (`weir_core::query::pin_now`): stopped at the incident's time.
struct PinnedWall(u64);
impl HostWallClock for PinnedWall {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

struct FixedMono;
impl HostMonotonicClock for FixedMono {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Plugin {
    /// Checks, compiles (or loads from cache) and pre-links a plugin.
    pub fn load(rt: &Runtime, req: LoadRequest<'_>) -> Result<Plugin, HostError> {
        if !manifest::is_component(req.wasm) {
            return Err(HostError::Malformed(if req.wasm.starts_with(b"\0asm") {
                "a core WebAssembly module, not a component: build for wasm32-wasip2 or wrap it with `wasm-tools component new`".into()
            } else {
                "not a WebAssembly component (bad magic)".into()
            }));
        }
        let manifest = match req.manifest {
            Some(m) => m,
            None => {
                let text =
                    manifest::custom_section(req.wasm, manifest::SECTION)?.ok_or_else(|| {
                        HostError::Manifest(format!(
                            "no plugin.toml given and no embedded '{}' section",
                            manifest::SECTION
                        ))
                    })?;
                let text = std::str::from_utf8(text)
                    .map_err(|_| HostError::Manifest("embedded manifest is not UTF-8".into()))?;
                Manifest::parse(text, "embedded manifest")?
            }
        };
        let name = manifest.name.clone();
        let sha256 = sha256_hex(req.wasm);
        let component = rt.compile(req.wasm, &sha256)?;
        let engine = rt.engine().clone();
        let granted: BTreeSet<Capability> = req.grants.iter().copied().collect();

        // Every weir import must be of a supported version and granted; WASI is sandboxed.
        for (import, item) in component.component_type().imports(&engine) {
            // A world's `use` of a resource shows up as a bare type import; the interface that
            // defines it is checked on its own.
            if matches!(
                item.ty,
                wasmtime::component::types::ComponentItem::Resource(_)
                    | wasmtime::component::types::ComponentItem::Type(_)
            ) {
                continue;
            }
            if let Some(rest) = import.strip_prefix("weir:plugin/") {
                let version = rest.split('@').nth(1).unwrap_or("");
                let major_minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
                if !SUPPORTED_WIT.contains(&major_minor.as_str()) {
                    return Err(HostError::Incompatible(format!(
                        "plugin {name} imports {import}; this host supports weir:plugin {}",
                        SUPPORTED_WIT.join(", ")
                    )));
                }
                let iface = rest.split('@').next().unwrap_or("");
                // Shared types and the batch given to batch-taking worlds are not capabilities.
                if iface == "types" || iface == "batch" {
                    continue;
                }
                match Capability::parse(iface) {
                    Some(c) if granted.contains(&c) => {}
                    Some(c) => {
                        return Err(HostError::Denied(format!(
                            "plugin {name} imports {import} but the {c} capability is not granted (granted: {})",
                            list(&granted)
                        )));
                    }
                    None => {
                        return Err(HostError::Load(format!(
                            "plugin {name} imports unknown interface {import}"
                        )));
                    }
                }
            } else if !import.starts_with("wasi:") {
                return Err(HostError::Load(format!(
                    "plugin {name} imports {import}, which this host does not provide"
                )));
            }
        }

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| HostError::Load(format!("{e:#}")))?;
        crate::deadline::link_bounded_clock(&mut linker)
            .map_err(|e| HostError::Load(format!("{e:#}")))?;
        link_granted(&mut linker, &granted).map_err(|e| HostError::Load(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| HostError::Load(format!("plugin {name}: {e:#}")))?;
        let world_err = |e: wasmtime::Error| {
            HostError::Load(format!(
                "plugin {name} does not implement the {} world it declares: {e:#}",
                manifest.kind.world()
            ))
        };
        let pre = match manifest.kind {
            Kind::FlowProcessor => {
                Pre::FlowProcessor(flow_processor::FlowProcessorPre::new(pre).map_err(world_err)?)
            }
            Kind::Visualization => {
                Pre::Visualization(visualization::VisualizationPre::new(pre).map_err(world_err)?)
            }
            Kind::AlertRule => {
                Pre::AlertRule(alert_rule::AlertRulePre::new(pre).map_err(world_err)?)
            }
            Kind::Correlator => {
                Pre::Correlator(correlator::CorrelatorPre::new(pre).map_err(world_err)?)
            }
            Kind::Decoder => Pre::Decoder(decoder::DecoderPre::new(pre).map_err(world_err)?),
            Kind::Check => Pre::Check(check::CheckPre::new(pre).map_err(world_err)?),
            Kind::Exporter => Pre::Exporter(exporter::ExporterPre::new(pre).map_err(world_err)?),
            Kind::Summarizer => {
                Pre::Summarizer(summarizer::SummarizerPre::new(pre).map_err(world_err)?)
            }
        };
        let asked = manifest.limits;
        let policy = rt.policy();
        // The operator's ceilings win over what the manifest asks.
        let limits = policy.grant(match req.limits {
            Some(l) => Limits {
                memory_mb: l.memory_mb.min(asked.memory_mb),
                timeout_ms: l.timeout_ms.min(asked.timeout_ms),
            },
            None => asked,
        });
        crate::scope::check(&req.scopes, &format!("plugin {name}"))?;
        let mut ctx = PluginCtx::new(&name, req.config, req.flows, req.services);
        ctx.media_type = manifest.exporter.media_type.clone();
        ctx.scopes = req
            .scopes
            .into_iter()
            .filter(|(c, _)| granted.contains(c))
            .collect();
        let ctx = Arc::new(ctx);
        let windowing = manifest.summarizer;
        tracing::info!(plugin = %name, kind = manifest.kind.world(), sha256 = %sha256, granted = %list(&granted), "plugin loaded");
        Ok(Plugin {
            manifest,
            sha256,
            granted,
            limits,
            ctx,
            engine,
            ticker: rt.ticker().clone(),
            pre,
            health: Mutex::new(Health::default()),
            summary: Mutex::new(crate::summary::Windows::new(windowing)),
            summary_update: Mutex::new(()),
            warm: Mutex::new(None),
            warm_summary: Mutex::new(None),
            policy,
            budget: rt.budget().clone(),
            inflight: Default::default(),
            skipped: Default::default(),
            cancel: Default::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn info(&self) -> PluginInfo {
        let h = lock(&self.health);
        PluginInfo {
            name: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            kind: self.manifest.kind,
            description: self.manifest.description.clone(),
            sha256: self.sha256.clone(),
            requested: self.manifest.capabilities.clone(),
            granted: self.granted.iter().copied().collect(),
            limits: self.limits,
            state: match &h.disabled {
                Some(r) => PluginState::Disabled(r.clone()),
                None => PluginState::Enabled,
            },
            calls: h.calls,
            failures: h.failures,
            busy_seconds: h.busy_us as f64 / 1e6,
            max_call_seconds: h.max_us as f64 / 1e6,
            recent_errors: h.recent.iter().cloned().collect(),
            skipped_batches: self.skipped.load(std::sync::atomic::Ordering::Relaxed),
            busy_refusals: h.busy_refusals,
            log_dropped: self
                .ctx
                .log_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            asked_limits: self.manifest.limits,
        }
    }

    /// A summarizer cut into the operator's windows instead of its manifest's (the registry
    /// calls it for `--window`/`--windows`). Call right after [`Plugin::load`], before
    /// [`Plugin::with_state_dir`]; windows kept from before keep their own length.
    pub fn with_windowing(mut self, w: crate::manifest::Windowing) -> Plugin {
        self.manifest.summarizer = w;
        self.summary = Mutex::new(crate::summary::Windows::new(w));
        self
    }

    /// Keeps the plugin's kv in `dir/kv.json` (and a summarizer's windows in
    /// `dir/summary.bin`) across restarts, reloads and upgrades (the registry gives each
    /// plugin its own directory), and records its `outbound-http` answers there for replay
    /// (or answers from a replay's tape: `crate::tape`). Call right after [`Plugin::load`].
    pub fn with_state_dir(mut self, dir: &std::path::Path) -> Plugin {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.keep_kv_in(dir.join(KV_FILE));
            let replaying = ctx.services.replay.get().is_some();
            ctx.tape = Some(crate::tape::Tape::in_dir(
                dir,
                &self.manifest.name,
                replaying,
            ));
        }
        if self.manifest.kind == Kind::Summarizer {
            lock(&self.summary)
                .keep_in(dir.join(crate::summary::SUMMARY_FILE), &self.manifest.name);
        }
        self
    }

    /// Cancels every call of this plugin running now: wasm stops at the next tick, waits
    /// and host calls at once. Cancelled calls are not failures.
    pub fn cancel_calls(&self) {
        self.cancel.cancel();
    }

    /// Writes the plugin's durable state (kv, a summarizer's windows) when it changed.
    pub fn persist_state(&self) -> std::io::Result<bool> {
        let kv = self.ctx.persist_kv()?;
        self.sync_summary();
        let summary = lock(&self.summary).persist()?;
        Ok(kv || summary)
    }

    /// Counts a batch this plugin did not get (its queue was full, or it was busy).
    pub fn note_skipped(&self) {
        self.skipped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Most calls this plugin may have running at once.
    pub(crate) fn max_calls(&self) -> u32 {
        self.policy.max_calls_per_plugin.max(1)
    }

    /// Admits one call: at most [`crate::SandboxPolicy::max_calls_per_plugin`] at once, and
    /// the plugin's memory cap reserved from the agent's budget while it runs.
    fn admit(&self) -> Result<Admission<'_>, HostError> {
        use std::sync::atomic::Ordering;
        let busy = |reason: String| {
            lock(&self.health).busy_refusals += 1;
            HostError::Busy {
                plugin: self.manifest.name.clone(),
                reason,
            }
        };
        let max = self.policy.max_calls_per_plugin.max(1);
        if self.inflight.fetch_add(1, Ordering::SeqCst) >= max {
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            return Err(busy(format!(
                "{max} calls are running, the most it may have"
            )));
        }
        match self.budget.reserve(
            self.limits.memory_mb.saturating_add(LIFT_MB),
            self.policy.total_memory_mb,
        ) {
            Ok(r) => Ok(Admission {
                inflight: &self.inflight,
                _memory: r,
            }),
            Err(used) => {
                self.inflight.fetch_sub(1, Ordering::SeqCst);
                Err(busy(format!(
                    "its {} MiB (memory) + {LIFT_MB} MiB (results) do not fit in the agent's plugin memory budget ({used} of {} MiB in use)",
                    self.limits.memory_mb, self.policy.total_memory_mb
                )))
            }
        }
    }

    /// Re-enables a plugin disabled by failures.
    pub fn reset(&self) {
        let mut h = lock(&self.health);
        h.disabled = None;
        h.consecutive = 0;
        h.window.clear();
    }

    /// Samples emitted through the metrics capability since the last drain, in the form the
    /// agent's /metrics records them.
    pub fn drain_samples(&self) -> Vec<weir_core::metrics::PluginSample> {
        crate::convert::samples_of(&self.drain_metrics())
    }

    /// Metric samples emitted through the metrics capability since the last drain.
    pub fn drain_metrics(&self) -> Vec<wit::MetricSample> {
        std::mem::take(&mut *lock(&self.ctx.metrics)).samples
    }

    fn new_store(&self) -> Store<HostState> {
        let stdout = MemoryOutputPipe::new(STDIO_CAP);
        let stderr = MemoryOutputPipe::new(STDIO_CAP);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        if !self.granted.contains(&Capability::Clock) {
            wasi.wall_clock(FixedWall).monotonic_clock(FixedMono);
        } else if let Some(ms) = weir_core::query::pinned_ms() {
            // An incident replay: the plugin's wall clock reads the incident's time.
            wasi.wall_clock(PinnedWall(ms));
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_mb as usize * 1024 * 1024)
            .trap_on_grow_failure(true)
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi: wasi.build(),
                table: wasmtime::component::ResourceTable::new(),
                limits,
                ctx: self.ctx.clone(),
                stdout,
                stderr,
                deadline: None,
                overran: Default::default(),
                cancel: self.cancel.for_call(),
                generation: self.cancel.generation(),
                destination_failed: false,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_hostcall_fuel((LIFT_MB as usize) << 20);
        // Every tick: a cancelled call ends now, one past its deadline is interrupted.
        store.epoch_deadline_callback(|ctx| {
            let d = ctx.data();
            if d.cancel.cancelled(d.generation) {
                return Err(crate::deadline::Cancelled.into());
            }
            Ok(match d.deadline {
                Some(t) if std::time::Instant::now() >= t => wasmtime::UpdateDeadline::Interrupt,
                _ => wasmtime::UpdateDeadline::Continue(1),
            })
        });
        self.arm(&mut store);
        store
    }

    /// Sets the CPU deadline of the next call (it counts from now).
    fn arm(&self, store: &mut Store<HostState>) {
        // Checked every tick by the callback set in `new_store` (cancel, then deadline).
        store.set_epoch_deadline(1);
        store.data_mut().generation = self.cancel.generation();
        store.data_mut().cancel = self.cancel.for_call();
        // The same deadline for time spent outside wasm: WASI waits and host calls.
        store.data_mut().deadline = Some(
            std::time::Instant::now()
                + std::time::Duration::from_millis(u64::from(self.limits.timeout_ms)),
        );
        store
            .data_mut()
            .overran
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether its health checks disabled it (too many failures).
    pub fn is_disabled(&self) -> bool {
        lock(&self.health).disabled.is_some()
    }

    fn check_enabled(&self) -> Result<(), HostError> {
        match &lock(&self.health).disabled {
            Some(reason) => Err(HostError::Disabled {
                plugin: self.manifest.name.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Runs one call in a fresh store, classifying failures and keeping the plugin's health.
    /// `user`: the input is a caller's (a user's parameters, another node's snapshot), so a
    /// plugin calling it invalid is not failing; for input the host makes (batches, windows)
    /// it is.
    fn run<R>(
        &self,
        user: bool,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<Result<R, wit::PluginError>>,
    ) -> Result<R, HostError> {
        self.check_enabled()?;
        let mut store = self.new_store();
        self.run_in(&mut store, user, f)
    }

    /// Runs one call in `store`, classifying failures and keeping the plugin's health. Only
    /// an `Err` other than [`HostError::Plugin`] leaves the store unusable (a trap).
    fn run_in<R>(
        &self,
        store: &mut Store<HostState>,
        user: bool,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<Result<R, wit::PluginError>>,
    ) -> Result<R, HostError> {
        let name = self.manifest.name.clone();
        let _admitted = self.admit()?;
        let mark = store.data().stderr.contents().len();
        store.data_mut().destination_failed = false;
        let started = std::time::Instant::now();
        // Guest code runs only here: the epoch (deadlines, cancelling) advances meanwhile.
        let ticking = self.ticker.ticking();
        let result = f(store);
        drop(ticking);
        let took = started.elapsed().as_micros() as u64;
        // A wait or host call cut at the deadline: the call timed out, whatever the guest
        // made of the error it got.
        let overran = store
            .data()
            .overran
            .load(std::sync::atomic::Ordering::SeqCst);
        let cancelled = store.data().cancel.cancelled(store.data().generation);
        let outcome = match result {
            Err(_) | Ok(Err(_)) if cancelled => Err(HostError::Cancelled {
                plugin: name.clone(),
            }),
            _ if overran => Err(HostError::Timeout {
                plugin: name.clone(),
                timeout_ms: self.limits.timeout_ms,
            }),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(wit::PluginError::InvalidInput(m))) => Err(HostError::Plugin {
                plugin: name.clone(),
                message: m,
                invalid_input: user,
            }),
            Ok(Err(wit::PluginError::Failed(m))) => Err(HostError::Plugin {
                plugin: name.clone(),
                message: m,
                invalid_input: false,
            }),
            Err(e) => {
                let all = store.data().stderr.contents();
                let stderr = String::from_utf8_lossy(all.get(mark..).unwrap_or_default())
                    .trim()
                    .to_string();
                Err(self.classify(&e, &stderr))
            }
        };
        {
            let mut h = lock(&self.health);
            h.calls += 1;
            h.busy_us = h.busy_us.saturating_add(took);
            h.max_us = h.max_us.max(took);
        }
        let destination_failed = std::mem::take(&mut store.data_mut().destination_failed);
        match &outcome {
            // A destination that failed (a sink down) is not the plugin's fault: an exporter
            // is retried, never disabled, for an outage.
            Err(HostError::Plugin { .. }) if destination_failed => {}
            // Neither counts against the plugin: it was stopped, or the caller's input (a
            // user's parameters, another node's snapshot) was wrong.
            Err(HostError::Cancelled { .. })
            | Err(HostError::Plugin {
                invalid_input: true,
                ..
            }) => {}
            Ok(_) => {
                let mut h = lock(&self.health);
                h.consecutive = 0;
                push_outcome(&mut h.window, false);
            }
            Err(e) => self.record_failure(e, false),
        }
        outcome
    }

    /// Counts a failed call against the plugin; enough in a row, or too large a share of
    /// its recent calls, disable it.
    /// `undo_success`: the call was counted as a success and then refused (its output too
    /// large), so it stays one outcome.
    fn record_failure(&self, e: &HostError, undo_success: bool) {
        let name = &self.manifest.name;
        let mut h = lock(&self.health);
        h.failures += 1;
        h.consecutive += 1;
        if undo_success {
            h.window.pop_back();
        }
        push_outcome(&mut h.window, true);
        if h.recent.len() >= 10 {
            h.recent.pop_front();
        }
        h.recent.push_back(e.to_string());
        tracing::warn!(plugin = %name, error = %e, "plugin call failed");
        if h.disabled.is_some() {
            return;
        }
        let failed = h.window.iter().filter(|f| **f).count();
        let reason = if h.consecutive >= MAX_CONSECUTIVE_FAILURES {
            Some(format!("{} consecutive failures, last: {e}", h.consecutive))
        } else if h.window.len() >= FAILURE_WINDOW / 2
            && failed as f64 >= MAX_FAILURE_RATE * h.window.len() as f64
        {
            Some(format!(
                "{failed} of its last {} calls failed, last: {e}",
                h.window.len()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::error!(plugin = %name, reason = %reason, "plugin disabled");
            h.disabled = Some(reason);
        }
    }

    fn classify(&self, e: &wasmtime::Error, stderr: &str) -> HostError {
        let plugin = self.manifest.name.clone();
        let debug = format!("{e:?}");
        let with_stderr = |m: String| {
            if stderr.is_empty() {
                m
            } else {
                format!(
                    "{m} (stderr: {})",
                    stderr.chars().take(500).collect::<String>()
                )
            }
        };
        if debug.contains("fuel allocated for hostcalls has been exhausted") {
            return HostError::Output {
                plugin,
                message: format!(
                    "more than {LIFT_MB} MiB to copy into the agent in one call (refused while copying)"
                ),
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => HostError::Timeout { plugin, timeout_ms: self.limits.timeout_ms },
            Some(Trap::StackOverflow) => HostError::Trap { plugin, message: "stack overflow (recursion too deep)".into() },
            // A Rust guest keeps its own stack in linear memory, below its data: recursing past
            // it walks off the start of memory.
            Some(Trap::MemoryOutOfBounds) => HostError::Trap {
                plugin,
                message: with_stderr("out of bounds memory access (often the guest's own stack overflowing: recursion too deep)".into()),
            },
            _ if debug.contains("forcing trap when growing memory") => {
                HostError::Memory { plugin, memory_mb: self.limits.memory_mb }
            }
            _ if stderr.contains("memory allocation of") => HostError::Memory { plugin, memory_mb: self.limits.memory_mb },
            Some(Trap::UnreachableCodeReached) => HostError::Trap { plugin, message: with_stderr("the plugin panicked or aborted".into()) },
            Some(t) => HostError::Trap { plugin, message: with_stderr(t.to_string()) },
            None => HostError::Trap { plugin, message: with_stderr(format!("{e:#}")) },
        }
    }

    fn wrong_kind(&self, wanted: &'static str) -> HostError {
        HostError::WrongKind {
            plugin: self.manifest.name.clone(),
            kind: self.manifest.kind.world(),
            wanted,
        }
    }

    fn too_big(&self, size: Size) -> Result<(), HostError> {
        let Size { items, bytes } = size;
        let message = if items > MAX_OUTPUT_ITEMS {
            Some(format!("{items} items, the limit is {MAX_OUTPUT_ITEMS}"))
        } else if bytes > MAX_OUTPUT_BYTES {
            Some(format!(
                "{bytes} bytes of text, the limit is {MAX_OUTPUT_BYTES}"
            ))
        } else {
            None
        };
        if let Some(message) = message {
            let e = HostError::Output {
                plugin: self.manifest.name.clone(),
                message,
            };
            // The call itself counted as a success; this undoes that.
            self.record_failure(&e, true);
            return Err(e);
        }
        Ok(())
    }

    /// flow-processor: derive values from a batch of flows (build the batch once with
    /// [`FlowBatch::new`] and give it to every processor). The instance is kept warm between
    /// calls while it behaves; a trap, or output piling up in its stdio, starts a fresh one.
    pub fn process(&self, batch: &FlowBatch) -> Result<flow_processor::Processed, HostError> {
        let Pre::FlowProcessor(pre) = &self.pre else {
            return Err(self.wrong_kind("flow-processor"));
        };
        self.check_enabled()?;
        let mut slot = lock(&self.warm);
        let (mut store, mut inst) = match slot.take() {
            Some((mut store, inst)) => {
                self.arm(&mut store);
                (store, Some(inst))
            }
            None => (self.new_store(), None),
        };
        let out = self.run_in(&mut store, false, |store| {
            let i = match &mut inst {
                Some(i) => i,
                empty => empty.insert(pre.instantiate(&mut *store)?),
            };
            lend_batch(store, batch, |store, b| i.call_process(store, b))
        });
        let quiet = stdio_quiet(&store);
        if let Some(inst) = inst
            && quiet
            && matches!(&out, Ok(_) | Err(HostError::Plugin { .. }))
        {
            *slot = Some((store, inst));
        }
        drop(slot);
        let out = out?;
        self.too_big(
            out.samples
                .iter()
                .map(|s| Size::labels(&s.labels).plus(Size::text(&s.name)))
                .chain(out.annotations.iter().map(annotation_size))
                .fold(Size::default(), Size::plus),
        )?;
        Ok(out)
    }

    /// Keeps a processor's or correlator's annotations in the records store (kind
    /// `annotation`, under the plugin's name) when the host has one; returns how many were
    /// kept. `extra` labels are added to each (a run's `keep_labels`: what asked for it).
    /// Annotations the store refuses (a bad filter, oversized text) are logged with the
    /// reason and dropped; a host without a records store is an error.
    pub fn keep_annotations(
        &self,
        annotations: &[wit::Annotation],
        extra: &[(String, String)],
    ) -> Result<usize, weir_core::records::RecordError> {
        let Some(store) = self.ctx.services.records.get() else {
            return Err(weir_core::records::RecordError::Invalid(
                "this host keeps no records".into(),
            ));
        };
        let mut entries = Vec::with_capacity(annotations.len());
        let mut kept = 0;
        for (i, a) in annotations.iter().enumerate() {
            let e = weir_core::records::Entry {
                time_ms: a.time_ms,
                end_ms: None,
                kind: "annotation".into(),
                text: a.text.clone(),
                labels: a.labels.iter().chain(extra).cloned().collect(),
                flow_filter: a.flow_filter.clone(),
            };
            match e.check(&format!("annotation {i}")) {
                Ok(()) => entries.push(e),
                Err(e) => {
                    tracing::warn!(plugin = %self.manifest.name, error = %e, "annotation not kept")
                }
            }
        }
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(weir_core::records::MAX_WRITE));
            let chunk = std::mem::replace(&mut entries, rest);
            match store.write(&self.manifest.name, chunk) {
                Ok(seqs) => kept += seqs.len(),
                Err(e) => {
                    tracing::warn!(plugin = %self.manifest.name, error = %e, "annotations not kept")
                }
            }
        }
        Ok(kept)
    }

    /// exporter: sends a batch out (through the `sink` capability). Ok means the plugin has
    /// handed every flow of it to its destinations; the caller moves its cursor then.
    pub fn export(&self, batch: &FlowBatch) -> Result<(), HostError> {
        let Pre::Exporter(pre) = &self.pre else {
            return Err(self.wrong_kind("exporter"));
        };
        self.run(false, |store| {
            let inst = pre.instantiate(&mut *store)?;
            let b = store.data_mut().table.push(batch.clone())?;
            inst.call_export(&mut *store, b)
        })
    }

    /// correlator: annotate flows with what external events explain.
    pub fn correlate(
        &self,
        batch: &FlowBatch,
        events: &[wit::Event],
    ) -> Result<Vec<wit::Annotation>, HostError> {
        let Pre::Correlator(pre) = &self.pre else {
            return Err(self.wrong_kind("correlator"));
        };
        let out = self.run(false, |store| {
            let inst = pre.instantiate(&mut *store)?;
            let b = store.data_mut().table.push(batch.clone())?;
            inst.call_correlate(&mut *store, b, events)
        })?;
        self.too_big(
            out.iter()
                .map(annotation_size)
                .fold(Size::default(), Size::plus),
        )?;
        Ok(out)
    }

    /// Loads one of the agent's own tools: a decoder-world component (the bundled OVS decoder,
    /// the policy engine) with its manifest text, its own limits and only the `log`
    /// capability, so the input it is handed meets the same walls as any plugin input.
    /// `what` names it in errors.
    pub fn load_tool(
        rt: &Runtime,
        wasm: &[u8],
        manifest: &str,
        what: &str,
    ) -> Result<Plugin, String> {
        let manifest =
            Manifest::parse(manifest, &format!("{what} plugin.toml")).map_err(|e| e.to_string())?;
        if manifest.kind != Kind::Decoder {
            return Err(format!(
                "{} is a {} plugin, not a decoder",
                manifest.name,
                manifest.kind.world()
            ));
        }
        Plugin::load(
            rt,
            LoadRequest {
                wasm,
                manifest: Some(manifest),
                grants: &[crate::Capability::Log],
                limits: None,
                config: Default::default(),
                flows: None,
                services: Default::default(),
                scopes: Default::default(),
            },
        )
        .map_err(|e| e.to_string())
    }

    /// decoder: turn bytes or text (an OVS datapath dump, ...) into records.
    pub fn decode(&self, input: &[u8], content_type: &str) -> Result<Vec<wit::Decoded>, HostError> {
        let Pre::Decoder(pre) = &self.pre else {
            return Err(self.wrong_kind("decoder"));
        };
        let out = self.run(true, |store| {
            let inst = pre.instantiate(&mut *store)?;
            inst.call_decode(&mut *store, input, content_type)
        })?;
        self.too_big(
            out.iter()
                .map(|d| Size::labels(&d.fields))
                .fold(Size::default(), Size::plus),
        )?;
        Ok(out)
    }

    /// summarizer: runs `f` on a fresh instance restored from `saved` (each merged in
    /// order); when `keep` is set, returns the instance's snapshot afterwards too.
    fn with_restored<R>(
        &self,
        saved: &[Vec<u8>],
        keep: bool,
        user: bool,
        f: impl FnOnce(
            &summarizer::Summarizer,
            &mut Store<HostState>,
        ) -> wasmtime::Result<Result<R, wit::PluginError>>,
    ) -> Result<(R, Option<Vec<u8>>), HostError> {
        let Pre::Summarizer(pre) = &self.pre else {
            return Err(self.wrong_kind("summarizer"));
        };
        self.run(user, |store| {
            let inst = pre.instantiate(&mut *store)?;
            for s in saved {
                if let Err(e) = inst.call_merge(&mut *store, s)? {
                    return Ok(Err(e));
                }
            }
            let out = match f(&inst, store)? {
                Ok(out) => out,
                Err(e) => return Ok(Err(e)),
            };
            let snapshot = if keep {
                Some(inst.call_snapshot(&mut *store)?)
            } else {
                None
            };
            Ok(Ok((out, snapshot)))
        })
    }

    /// summarizer: runs `f` on the current window's state (rotating windows first) and keeps
    /// the snapshot it ends with. One such call at a time, so none loses another's update.
    fn update_summary(
        &self,
        now_ms: u64,
        user: bool,
        f: impl FnOnce(
            &summarizer::Summarizer,
            &mut Store<HostState>,
        ) -> wasmtime::Result<Result<(), wit::PluginError>>,
    ) -> Result<(), HostError> {
        let _one = lock(&self.summary_update);
        {
            // The warm instance's state goes into its window first; the next update starts a
            // new instance from the state this call leaves.
            let mut slot = lock(&self.warm_summary);
            self.sync_warm(&mut slot)?;
            *slot = None;
        }
        let saved = {
            let mut w = lock(&self.summary);
            w.rotate(now_ms);
            w.current()
        };
        let (_, snapshot) = self.with_restored(saved.as_slice(), true, user, f)?;
        if let Some(s) = snapshot {
            // The snapshot is kept between calls: bounded in bytes like any output, and an
            // oversized one leaves the last good state in place.
            self.too_big(Size {
                items: 0,
                bytes: s.len(),
            })?;
            lock(&self.summary).set_current(s);
        }
        Ok(())
    }

    /// summarizer: fold a batch into the sketches.
    pub fn summarize(&self, batch: &FlowBatch) -> Result<(), HostError> {
        self.summarize_at(batch, weir_core::query::now_ms())
    }

    /// [`Plugin::summarize`] as if the time were `now_ms` (windows rotate by it).
    ///
    /// The current window's sketches live in a warm instance between batches (restoring and
    /// snapshotting every sketch per batch cost milliseconds a call); its state is written
    /// into the window when the window ends, before any query, snapshot, merge or persist,
    /// and at least every [`SUMMARY_SYNC`]. A trap drops the instance: the window goes back
    /// to its last written state (at most [`SUMMARY_SYNC`] of updates lost).
    pub fn summarize_at(&self, batch: &FlowBatch, now_ms: u64) -> Result<(), HostError> {
        let Pre::Summarizer(pre) = &self.pre else {
            return Err(self.wrong_kind("summarizer"));
        };
        self.check_enabled()?;
        let _one = lock(&self.summary_update);
        let mut slot = lock(&self.warm_summary);
        let start = lock(&self.summary).start_for(now_ms);
        if slot.as_ref().is_some_and(|w| w.window_start_ms != start) {
            // A new window: the old one is sealed with the warm state.
            self.sync_warm(&mut slot)?;
            *slot = None;
        }
        let saved = {
            let mut w = lock(&self.summary);
            w.rotate(now_ms);
            w.current()
        };
        let (mut store, mut inst, synced_at) = match slot.take() {
            Some(mut w) => {
                self.arm(&mut w.store);
                (w.store, Some(w.inst), w.synced_at)
            }
            None => (self.new_store(), None, std::time::Instant::now()),
        };
        let out = self.run_in(&mut store, false, |store| {
            let i = match &mut inst {
                Some(i) => i,
                empty => {
                    let i = pre.instantiate(&mut *store)?;
                    if let Some(s) = &saved
                        && let Err(e) = i.call_merge(&mut *store, s)?
                    {
                        return Ok(Err(e));
                    }
                    empty.insert(i)
                }
            };
            lend_batch(store, batch, |store, b| i.call_update(store, b))
        });
        let quiet = stdio_quiet(&store);
        // Kept only after a clean update: after an error its sketches may be half-updated.
        if let Some(inst) = inst
            && quiet
            && out.is_ok()
        {
            *slot = Some(WarmSummary {
                store,
                inst,
                window_start_ms: start,
                dirty: true,
                synced_at,
            });
            if synced_at.elapsed() >= SUMMARY_SYNC {
                self.sync_warm(&mut slot)?;
            }
        }
        out
    }

    /// Writes the warm summarizer's state into its window (when it changed since).
    fn sync_warm(&self, slot: &mut Option<WarmSummary>) -> Result<(), HostError> {
        let Some(w) = slot.as_mut() else {
            return Ok(());
        };
        if !w.dirty {
            return Ok(());
        }
        self.arm(&mut w.store);
        let WarmSummary { store, inst, .. } = w;
        let snapshot = self.run_in(store, false, |store| {
            inst.call_snapshot(&mut *store).map(Ok)
        });
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                *slot = None;
                return Err(e);
            }
        };
        // Bounded in bytes like any output; an oversized one leaves the last good state.
        if let Err(e) = self.too_big(Size {
            items: 0,
            bytes: snapshot.len(),
        }) {
            *slot = None;
            return Err(e);
        }
        lock(&self.summary).set_window(w.window_start_ms, snapshot);
        w.dirty = false;
        w.synced_at = std::time::Instant::now();
        Ok(())
    }

    /// Writes the warm summarizer's state into its window before the windows are read.
    fn sync_summary(&self) {
        if self.manifest.kind != Kind::Summarizer {
            return;
        }
        let mut slot = lock(&self.warm_summary);
        if let Err(e) = self.sync_warm(&mut slot) {
            tracing::warn!(plugin = %self.manifest.name, error = %e, "summarizer state not written");
        }
    }

    /// summarizer: merge another node's snapshot into the current window.
    pub fn merge_summary(&self, snapshot: &[u8]) -> Result<(), HostError> {
        self.update_summary(weir_core::query::now_ms(), true, |inst, store| {
            inst.call_merge(&mut *store, snapshot)
        })
    }

    /// summarizer: one snapshot of every kept window merged, to ship to another node (empty
    /// before any update).
    pub fn summary_snapshot(&self) -> Result<Vec<u8>, HostError> {
        if self.manifest.kind != Kind::Summarizer {
            return Err(self.wrong_kind("summarizer"));
        }
        self.sync_summary();
        let all = lock(&self.summary).all();
        match all.len() {
            0 => Ok(Vec::new()),
            1 => Ok(all.into_iter().next().unwrap_or_default()),
            _ => {
                let (_, s) = self.with_restored(&all, true, false, |_, _| Ok(Ok(())))?;
                Ok(s.unwrap_or_default())
            }
        }
    }

    /// summarizer: every kept window's start (ms) and snapshot, oldest first (windows without
    /// an update left out): what an agent publishes for a cluster view.
    pub fn summary_window_snapshots(&self) -> Result<Vec<(u64, Vec<u8>)>, HostError> {
        if self.manifest.kind != Kind::Summarizer {
            return Err(self.wrong_kind("summarizer"));
        }
        self.sync_summary();
        Ok(lock(&self.summary).snapshots())
    }

    /// summarizer: replaces its windows by these (a cluster view's: each window start with
    /// every node's snapshot of it), each window the merge of its snapshots. A snapshot the
    /// plugin cannot read is left out of its window (and named in the answer: node index per
    /// window start); the others still merge.
    pub fn replace_summary_windows(
        &self,
        windows: Vec<(u64, Vec<Vec<u8>>)>,
    ) -> Result<Vec<(u64, usize, HostError)>, HostError> {
        if self.manifest.kind != Kind::Summarizer {
            return Err(self.wrong_kind("summarizer"));
        }
        let _one = lock(&self.summary_update);
        // Other nodes' snapshots are input: one the plugin refuses is their fault, and never
        // counts against the plugin's health (as `merge_summary`).
        let mut refused = Vec::new();
        let mut merged = Vec::with_capacity(windows.len());
        for (start, snapshots) in windows {
            let mut good = snapshots;
            let all = match self.with_restored(&good, true, true, |_, _| Ok(Ok(()))) {
                Ok((_, s)) => s,
                // A snapshot the plugin refuses, traps on, or grows past its memory or output
                // limits with is some node's fault; busy, out of time or disabled are this
                // host's, and end the pass.
                Err(
                    HostError::Plugin { .. }
                    | HostError::Trap { .. }
                    | HostError::Memory { .. }
                    | HostError::Output { .. },
                ) => {
                    // Find the snapshots the plugin refuses; merge the rest.
                    let mut kept = Vec::with_capacity(good.len());
                    for (i, s) in good.into_iter().enumerate() {
                        match self
                            .with_restored(std::slice::from_ref(&s), false, true, |_, _| Ok(Ok(())))
                        {
                            Ok(_) => kept.push(s),
                            Err(
                                e @ (HostError::Plugin { .. }
                                | HostError::Trap { .. }
                                | HostError::Memory { .. }
                                | HostError::Output { .. }),
                            ) => refused.push((start, i, e)),
                            Err(e) => return Err(e),
                        }
                    }
                    good = kept;
                    self.with_restored(&good, true, true, |_, _| Ok(Ok(())))?.1
                }
                Err(e) => return Err(e),
            };
            if let Some(s) = all.filter(|_| !good.is_empty()) {
                merged.push((start, s));
            }
        }
        // A warm instance (none on a server, which updates nothing) would write its state back.
        *lock(&self.warm_summary) = None;
        lock(&self.summary).replace(merged, weir_core::query::now_ms());
        Ok(refused)
    }

    /// summarizer: the kept windows, oldest first: (start ms, snapshot bytes).
    pub fn summary_windows(&self) -> Vec<(u64, usize)> {
        self.sync_summary();
        lock(&self.summary).list()
    }

    /// summarizer: answer a query over every kept window as a view.
    pub fn query_summary(&self, request: &str) -> Result<wit::View, HostError> {
        self.query_summary_window(None, request)
    }

    /// summarizer: answer a query over one kept window (by its start, ms) or, with `None`,
    /// over every kept window merged. A window that is not kept is invalid input naming
    /// the ones that are.
    pub fn query_summary_window(
        &self,
        window_start_ms: Option<u64>,
        request: &str,
    ) -> Result<wit::View, HostError> {
        self.sync_summary();
        let all = match window_start_ms {
            None => lock(&self.summary).all(),
            Some(start) => {
                let w = lock(&self.summary);
                match w.window(start) {
                    Some(s) => s.into_iter().collect(),
                    None => {
                        let kept: Vec<String> =
                            w.list().iter().map(|(s, _)| s.to_string()).collect();
                        return Err(HostError::Plugin {
                            plugin: self.manifest.name.clone(),
                            message: format!(
                                "window {start}: not kept (kept windows start at: {})",
                                kept.join(", ")
                            ),
                            invalid_input: true,
                        });
                    }
                }
            }
        };
        let (view, _) = self.with_restored(&all, false, true, |inst, store| {
            inst.call_query(&mut *store, request)
        })?;
        self.too_big(view_size(&view))?;
        Ok(view)
    }

    /// check: a verdict over a window (pass or fail, a summary, the evidence as a table).
    pub fn check(&self, window: wit::TimeRange) -> Result<check::Verdict, HostError> {
        let Pre::Check(pre) = &self.pre else {
            return Err(self.wrong_kind("check"));
        };
        let verdict = self.run(false, |store| {
            let inst = pre.instantiate(&mut *store)?;
            inst.call_check(&mut *store, window)
        })?;
        self.too_big(
            view_size(&wit::View::Table(verdict.table.clone())).plus(Size::text(&verdict.summary)),
        )?;
        Ok(verdict)
    }

    /// visualization: draw a view.
    pub fn render(&self, req: &wit::RenderRequest) -> Result<wit::View, HostError> {
        let Pre::Visualization(pre) = &self.pre else {
            return Err(self.wrong_kind("visualization"));
        };
        let view = self.run(true, |store| {
            let inst = pre.instantiate(&mut *store)?;
            inst.call_render(&mut *store, req)
        })?;
        self.too_big(view_size(&view))?;
        Ok(view)
    }

    /// alert-rule: evaluate over a window.
    pub fn evaluate(&self, window: wit::TimeRange) -> Result<Vec<wit::Alert>, HostError> {
        let Pre::AlertRule(pre) = &self.pre else {
            return Err(self.wrong_kind("alert-rule"));
        };
        let alerts = self.run(false, |store| {
            let inst = pre.instantiate(&mut *store)?;
            inst.call_evaluate(&mut *store, window)
        })?;
        // Alerts are kept (active, history, outbox): each one bounded, so history is too.
        let oversized = alerts.iter().find_map(|a| {
            let why = if a.labels.len() > MAX_ALERT_LABELS {
                format!("{} labels (at most {MAX_ALERT_LABELS})", a.labels.len())
            } else if let Some((k, _)) = a
                .labels
                .iter()
                .find(|(k, v)| k.len() > MAX_ALERT_TEXT || v.len() > MAX_ALERT_TEXT)
            {
                format!(
                    "label {} longer than {MAX_ALERT_TEXT} bytes",
                    k.chars().take(64).collect::<String>().escape_debug()
                )
            } else if a.name.len() > MAX_ALERT_TEXT || a.summary.len() > 4 * MAX_ALERT_TEXT {
                format!(
                    "name over {MAX_ALERT_TEXT} or summary over {} bytes",
                    4 * MAX_ALERT_TEXT
                )
            } else {
                return None;
            };
            Some(format!(
                "alert {} has {why}",
                a.name.chars().take(64).collect::<String>().escape_debug()
            ))
        });
        if alerts.len() > MAX_ALERTS || oversized.is_some() {
            let e = HostError::Output {
                plugin: self.manifest.name.clone(),
                message: oversized.unwrap_or_else(|| {
                    format!(
                        "{} alerts in one evaluation, the limit is {MAX_ALERTS}",
                        alerts.len()
                    )
                }),
            };
            // The call itself counted as a success; this undoes that.
            self.record_failure(&e, true);
            return Err(e);
        }
        self.too_big(
            alerts
                .iter()
                .map(|a| {
                    Size::labels(&a.labels)
                        .plus(Size::text(&a.name))
                        .plus(Size::text(&a.summary))
                })
                .fold(Size::default(), Size::plus),
        )?;
        Ok(alerts)
    }
}

/// Keeps the last [`FAILURE_WINDOW`] outcomes.
fn push_outcome(window: &mut VecDeque<bool>, failed: bool) {
    if window.len() >= FAILURE_WINDOW {
        window.pop_front();
    }
    window.push_back(failed);
}

/// What one call returned, counted for the output limits: items (every node, link, cell,
/// point, label...) and bytes of text, checked after lifting (which [`LIFT_MB`] bounds).
#[derive(Debug, Default, Clone, Copy)]
struct Size {
    items: usize,
    bytes: usize,
}

impl Size {
    fn text(s: &str) -> Size {
        Size {
            items: 0,
            bytes: s.len(),
        }
    }

    fn items(n: usize) -> Size {
        Size { items: n, bytes: 0 }
    }

    fn labels(l: &[(String, String)]) -> Size {
        Size {
            items: 1 + l.len(),
            bytes: l.iter().map(|(k, v)| k.len() + v.len()).sum(),
        }
    }

    fn plus(self, o: Size) -> Size {
        Size {
            items: self.items.saturating_add(o.items),
            bytes: self.bytes.saturating_add(o.bytes),
        }
    }
}

fn annotation_size(a: &wit::Annotation) -> Size {
    Size::labels(&a.labels)
        .plus(Size::text(&a.text))
        .plus(Size::text(a.flow_filter.as_deref().unwrap_or("")))
}

/// How much a view holds, for the output limits.
fn view_size(view: &wit::View) -> Size {
    let sum = |it: &mut dyn Iterator<Item = Size>| it.fold(Size::default(), Size::plus);
    match view {
        wit::View::Sankey(s) => sum(&mut s
            .nodes
            .iter()
            .map(|n| {
                Size::items(1)
                    .plus(Size::text(&n.id))
                    .plus(Size::text(&n.label))
            })
            .chain(s.links.iter().map(|l| {
                Size::items(1)
                    .plus(Size::text(&l.source))
                    .plus(Size::text(&l.target))
            }))),
        wit::View::Chord(c) => sum(&mut c
            .labels
            .iter()
            .map(|l| Size::items(1).plus(Size::text(l)))
            .chain(c.matrix.iter().map(|r| Size {
                items: r.len(),
                bytes: r.len() * 8,
            }))),
        wit::View::Graph(g) => sum(&mut g
            .nodes
            .iter()
            .map(|n| {
                Size::labels(&n.attributes)
                    .plus(Size::text(&n.id))
                    .plus(Size::text(&n.label))
            })
            .chain(g.edges.iter().map(|e| {
                Size::labels(&e.attributes)
                    .plus(Size::text(&e.source))
                    .plus(Size::text(&e.target))
            }))),
        wit::View::Table(t) => sum(&mut t
            .columns
            .iter()
            .chain(t.rows.iter().flatten())
            .map(|c| Size::items(1).plus(Size::text(c)))),
        wit::View::Timeseries(t) => sum(&mut t.series.iter().map(|s| Size {
            items: 1 + s.points.len(),
            bytes: s.name.len() + s.points.len() * 16,
        })),
        wit::View::Svg(s) => Size {
            items: s.len() / 64,
            bytes: s.len(),
        },
    }
}

fn list(caps: &BTreeSet<Capability>) -> String {
    if caps.is_empty() {
        return "none".into();
    }
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

fn link_granted(
    linker: &mut Linker<HostState>,
    granted: &BTreeSet<Capability>,
) -> wasmtime::Result<()> {
    use crate::bindings::imports::weir::plugin as p;
    p::batch::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    for c in granted {
        match c {
            Capability::Log => {
                p::log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::Metrics => {
                p::metrics::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::Kv => p::kv::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?,
            Capability::Flows => {
                p::flows::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::Timeline => {
                p::timeline::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::OutboundHttp => {
                p::outbound_http::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::Sink => {
                p::sink::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::CaptureControl => {
                p::capture_control::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::StorageSampling => {
                p::storage_sampling::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::Probe => {
                p::probe::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::K8sObjects => {
                p::k8s_objects::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::Records => {
                p::records::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::FlowFields => {
                p::flow_fields::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::FlowStats => {
                p::flow_stats::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::Clock => {
                p::clock::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
            Capability::Config => {
                p::config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?
            }
        }
    }
    Ok(())
}

/// The WIT types plugins exchange with the host.
pub use crate::bindings::types as wit_types;
