//! The wasmtime engine shared by every plugin: component model on, epoch interruption for
//! CPU deadlines (a ticker thread advances the epoch every [`TICK_MS`] while a guest call
//! runs, and sleeps otherwise: see [`Ticker`]), and a compiled-code cache on disk keyed by
//! the plugin's sha256 and the engine's compatibility hash.

use crate::HostError;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// Epoch tick: CPU deadlines are whole ticks.
pub const TICK_MS: u64 = 10;

/// Wasm stack limit per call (deep recursion traps instead of crashing the agent).
pub const MAX_WASM_STACK: usize = 512 * 1024;

/// The operator's ceilings over what any plugin may ask for, and the agent-wide budget all
/// plugin calls share. A manifest's asks above a ceiling are lowered to it (or refused at
/// install when [`SandboxPolicy::refuse_over_ceiling`] is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SandboxPolicy {
    /// Most linear memory one plugin call may use, MiB.
    pub max_memory_mb: u32,
    /// Longest deadline one plugin call may have, ms.
    pub max_timeout_ms: u32,
    /// Memory all plugin calls running at once may reserve together, MiB (each call reserves
    /// its plugin's memory cap while it runs; a call that does not fit is refused as busy).
    pub total_memory_mb: u32,
    /// Calls one plugin may have running at once; more are refused as busy.
    pub max_calls_per_plugin: u32,
    /// Refuse installs whose manifest asks above a ceiling, instead of lowering the asks.
    pub refuse_over_ceiling: bool,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        SandboxPolicy {
            max_memory_mb: 256,
            max_timeout_ms: 10_000,
            total_memory_mb: 1024,
            max_calls_per_plugin: 4,
            refuse_over_ceiling: false,
        }
    }
}

impl SandboxPolicy {
    /// What a plugin asking for `asked` gets.
    pub fn grant(&self, asked: crate::Limits) -> crate::Limits {
        crate::Limits {
            memory_mb: asked.memory_mb.min(self.max_memory_mb),
            timeout_ms: asked.timeout_ms.min(self.max_timeout_ms),
        }
    }

    /// Why `asked` is over a ceiling (None when it fits).
    pub fn over_ceiling(&self, asked: crate::Limits) -> Option<String> {
        let mut over = Vec::new();
        if asked.memory_mb > self.max_memory_mb {
            over.push(format!(
                "memory_mb {} (the agent allows {})",
                asked.memory_mb, self.max_memory_mb
            ));
        }
        if asked.timeout_ms > self.max_timeout_ms {
            over.push(format!(
                "timeout_ms {} (the agent allows {})",
                asked.timeout_ms, self.max_timeout_ms
            ));
        }
        (!over.is_empty()).then(|| over.join(", "))
    }
}

/// Memory reserved by plugin calls running now, against [`SandboxPolicy::total_memory_mb`].
#[derive(Debug, Default)]
pub struct Budget {
    reserved_mb: std::sync::Mutex<u64>,
}

/// A call's share of the budget, given back when dropped.
pub struct Reservation {
    budget: std::sync::Arc<Budget>,
    mb: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut r = crate::lock(&self.budget.reserved_mb);
        *r = r.saturating_sub(self.mb);
    }
}

impl Budget {
    /// Reserves `mb` of `total`, or says how much is in use.
    pub fn reserve(self: &std::sync::Arc<Self>, mb: u32, total: u32) -> Result<Reservation, u64> {
        let mut r = crate::lock(&self.reserved_mb);
        if *r + u64::from(mb) > u64::from(total) {
            return Err(*r);
        }
        *r += u64::from(mb);
        Ok(Reservation {
            budget: self.clone(),
            mb: u64::from(mb),
        })
    }

    /// MiB reserved by calls running now.
    pub fn reserved_mb(&self) -> u64 {
        *crate::lock(&self.reserved_mb)
    }
}

/// Advances the engine's epoch every [`TICK_MS`] while any guest call holds a [`Ticking`],
/// and parks otherwise: an idle agent's ticker woke 100 times a second for nothing. Every
/// guest call runs inside `Plugin::run_in`, which holds one for the call.
pub struct Ticker {
    running: std::sync::Arc<AtomicUsize>,
    thread: std::thread::Thread,
}

/// Keeps the epoch advancing while held (one per guest call running).
pub struct Ticking(std::sync::Arc<Ticker>);

impl Ticker {
    /// Starts the ticker thread of `engine` (it ends once the engine is dropped).
    fn start(engine: &Engine) -> Result<std::sync::Arc<Ticker>, HostError> {
        let weak = engine.weak();
        let running = std::sync::Arc::new(AtomicUsize::new(0));
        let calls = running.clone();
        let handle = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    if calls.load(Ordering::SeqCst) == 0 {
                        drop(engine);
                        // Unparked by the next call; the timeout only notices the engine
                        // going away.
                        std::thread::park_timeout(Duration::from_secs(5));
                        continue;
                    }
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(Duration::from_millis(TICK_MS));
                }
            })?;
        Ok(std::sync::Arc::new(Ticker {
            running,
            thread: handle.thread().clone(),
        }))
    }

    /// Ticks until the returned guard is dropped.
    pub fn ticking(self: &std::sync::Arc<Self>) -> Ticking {
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 {
            self.thread.unpark();
        }
        Ticking(self.clone())
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Runtime {
    engine: Engine,
    ticker: std::sync::Arc<Ticker>,
    cache_dir: Option<PathBuf>,
    policy: SandboxPolicy,
    budget: std::sync::Arc<Budget>,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker. `cache_dir` keeps compiled components.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Runtime, HostError> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .parallel_compilation(false);
        // `WEIR_WASM_PERFMAP=1`: plugins' compiled code named in /tmp/perf-PID.map, so `perf
        // record` / `perf report` show plugin functions (docs/PERFORMANCE.md).
        if std::env::var_os("WEIR_WASM_PERFMAP").is_some() {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine =
            Engine::new(&cfg).map_err(|e| HostError::Load(format!("wasmtime engine: {e}")))?;
        let ticker = Ticker::start(&engine)?;
        if let Some(d) = &cache_dir {
            std::fs::create_dir_all(d)?;
        }
        Ok(Runtime {
            engine,
            ticker,
            cache_dir,
            policy: SandboxPolicy::default(),
            budget: Default::default(),
        })
    }

    /// The same runtime under the operator's ceilings and budget.
    pub fn with_policy(mut self, policy: SandboxPolicy) -> Runtime {
        self.policy = policy;
        self
    }

    pub fn policy(&self) -> SandboxPolicy {
        self.policy
    }

    pub fn budget(&self) -> &std::sync::Arc<Budget> {
        &self.budget
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The epoch ticker: a guest call holds [`Ticker::ticking`] while it runs.
    pub fn ticker(&self) -> &std::sync::Arc<Ticker> {
        &self.ticker
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let dir = self.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", h.finish())))
    }

    /// Compiles a component, or loads it from the cache when this engine compiled it before
    /// and the entry is byte for byte what this host wrote (its sha256 is kept beside it).
    /// Compiled code runs natively outside the sandbox, so an entry changed on disk (a bit
    /// flip, a cut, a write by something else) is set aside as `<entry>.corrupt-<ms>`, said in
    /// the log, and the component compiled again; it is never loaded.
    pub fn compile(&self, wasm: &[u8], sha256: &str) -> Result<Component, HostError> {
        let path = self.cache_path(sha256);
        if let Some(p) = &path
            && p.exists()
        {
            match cache_entry_intact(p) {
                Ok(()) => {
                    // SAFETY: the file is the one this host wrote from a component it
                    // compiled (its sha256 matches the one recorded then), keyed by the
                    // source's sha256 and the engine's compatibility hash.
                    match unsafe { Component::deserialize_file(&self.engine, p) } {
                        Ok(c) => return Ok(c),
                        Err(e) => {
                            tracing::warn!(path = %p.display(), error = %e, "dropping unusable compiled plugin");
                            let _ = std::fs::remove_file(p);
                        }
                    }
                }
                Err(why) => set_aside(p, &why),
            }
        }
        let component = Component::from_binary(&self.engine, wasm)
            .map_err(|e| HostError::Malformed(format!("{e:#}")))?;
        if let Some(p) = &path {
            match component.serialize() {
                Ok(bytes) => {
                    let tmp = p.with_extension("tmp");
                    let digest = digest_path(p);
                    let digest_tmp = digest.with_extension("tmp");
                    // The digest first: an entry without its digest (a crash in between) is
                    // compiled again, never trusted.
                    if std::fs::write(&tmp, &bytes)
                        .and_then(|_| {
                            std::fs::write(&digest_tmp, crate::plugin::sha256_hex(&bytes))
                        })
                        .and_then(|_| std::fs::rename(&digest_tmp, &digest))
                        .and_then(|_| std::fs::rename(&tmp, p))
                        .is_err()
                    {
                        tracing::warn!(path = %p.display(), "cannot write the compiled-plugin cache");
                    } else {
                        // Run it from the file just written: its code is then a file mapping
                        // the kernel can reclaim, not anonymous memory held for the agent's
                        // life (a fresh agent compiling its bundled plugins kept ~26 MiB).
                        // SAFETY: as above, a file this host just wrote from this component.
                        if let Ok(mapped) = unsafe { Component::deserialize_file(&self.engine, p) }
                        {
                            return Ok(mapped);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot serialize a compiled plugin"),
            }
        }
        Ok(component)
    }
}

/// Where a cache entry's sha256 is kept.
fn digest_path(entry: &Path) -> PathBuf {
    let mut name = entry.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// Whether a cache entry is what this host wrote, or why not.
fn cache_entry_intact(entry: &Path) -> Result<(), String> {
    let want = std::fs::read_to_string(digest_path(entry)).map_err(|e| {
        format!("its recorded sha256 cannot be read ({e}); written by an older weir or cut short")
    })?;
    let bytes = std::fs::read(entry).map_err(|e| format!("it cannot be read ({e})"))?;
    let got = crate::plugin::sha256_hex(&bytes);
    if got != want.trim() {
        return Err(format!(
            "its content changed on disk (sha256 {got}, written as {})",
            want.trim()
        ));
    }
    Ok(())
}

/// Moves a cache entry that cannot be trusted out of the way (kept for a look, never loaded).
fn set_aside(entry: &Path, why: &str) {
    let moved = weir_core::aside::set_aside(entry);
    let _ = std::fs::remove_file(digest_path(entry));
    tracing::warn!(
        entry = %entry.display(),
        set_aside = ?moved.as_ref().ok(),
        moved = moved.is_ok(),
        reason = why,
        "a compiled plugin in the cache is not what this host wrote: set aside, compiling the plugin again"
    );
}
