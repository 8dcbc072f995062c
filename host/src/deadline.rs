//! A call's deadline covers everything the plugin does, not only its own wasm code.
//!
//! Epoch interruption stops wasm at the deadline, but a plugin can also wait in the host:
//! `std::thread::sleep` in a guest is WASI's `monotonic-clock.subscribe-duration` plus a
//! blocking poll, and needs no capability. [`link_bounded_clock`] shadows the
//! `wasi:clocks/monotonic-clock` subscriptions so that no wait outlives the call's deadline;
//! once it passes, the guest's next wasm instruction traps as interrupted. Host calls that do
//! real work (flow queries and aggregates) run through [`within`], which refuses them once the
//! deadline passed and stops waiting for them when it passes.
//!
//! Calls can also be cancelled (the plugin disabled or removed, the agent shutting down):
//! each plugin has a cancel generation ([`Cancel`]); a call remembers the one it started
//! under, and its wasm (at the next epoch tick), its waits and its host calls end as soon as
//! the generation moves on.

use crate::state::HostState;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;

/// Host-call workers running at once, across every plugin: an abandoned query keeps its
/// worker until it finishes, so this bounds what deadline-passing plugins can leave behind.
pub const MAX_HOST_WORKERS: usize = 4;
static HOST_WORKERS: Pool = Pool::new(MAX_HOST_WORKERS);
/// Outbound HTTP requests running at once, agent-wide: a pool of their own, so a plugin
/// waiting on a slow (granted) server never holds up other plugins' store queries.
pub const MAX_HTTP_WORKERS: usize = 8;
pub(crate) static HTTP_WORKERS: Pool = Pool::new(MAX_HTTP_WORKERS);

/// A bounded set of host-call workers: a call waits (in ticks, within its deadline) for a
/// free one rather than being refused.
pub(crate) struct Pool {
    busy: AtomicUsize,
    max: usize,
}

impl Pool {
    const fn new(max: usize) -> Pool {
        Pool {
            busy: AtomicUsize::new(0),
            max,
        }
    }

    fn try_take(&self) -> bool {
        if self.busy.fetch_add(1, Ordering::SeqCst) >= self.max {
            self.busy.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn give_back(&self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A plugin's cancel generation (bumping it cancels every call started before), and the
/// running call's own flag, when its caller can give up (an HTTP client going away).
#[derive(Debug, Default, Clone)]
pub struct Cancel(
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
);

thread_local! {
    /// The flag of the call this thread is making on someone's behalf (see [`on_behalf`]).
    static CALLER: std::cell::RefCell<Option<std::sync::Arc<std::sync::atomic::AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` (plugin calls made on this thread) so that setting `flag` cancels them.
pub fn on_behalf<R>(
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    f: impl FnOnce() -> R,
) -> R {
    let before = CALLER.with(|c| c.replace(Some(flag)));
    let r = f();
    CALLER.with(|c| *c.borrow_mut() = before);
    r
}

impl Cancel {
    /// This plugin's generation, with the current thread's caller flag (for a new call).
    pub fn for_call(&self) -> Cancel {
        Cancel(self.0.clone(), CALLER.with(|c| c.borrow().clone()))
    }

    pub fn generation(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Cancels every call running now.
    pub fn cancel(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether calls started under `generation` are cancelled.
    pub fn cancelled(&self, generation: u64) -> bool {
        self.generation() != generation || self.1.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// The error a cancelled call ends with.
#[derive(Debug, thiserror::Error)]
#[error("the call was cancelled (plugin disabled or removed, or the agent stopping)")]
pub struct Cancelled;

/// A wait that ends at its time or when its call is cancelled, whichever comes first.
struct CancellableSleep {
    until: tokio::time::Instant,
    cancel: Cancel,
    generation: u64,
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for CancellableSleep {
    async fn ready(&mut self) {
        const SLICE: Duration = Duration::from_millis(crate::runtime::TICK_MS);
        loop {
            let now = tokio::time::Instant::now();
            if now >= self.until || self.cancel.cancelled(self.generation) {
                return;
            }
            tokio::time::sleep((self.until - now).min(SLICE)).await;
        }
    }
}

/// The monotonic clock a plugin sees, with its waits cut at the call's deadline.
pub struct BoundedClock<'a> {
    inner: WasiClocksCtxView<'a>,
    deadline: Option<Instant>,
    cancel: Cancel,
    generation: u64,
    /// Set when a wait was cut: the call then ends as timed out whatever it returns.
    overran: &'a std::sync::atomic::AtomicBool,
}

struct BoundedClockData;

impl HasData for BoundedClockData {
    type Data<'a> = BoundedClock<'a>;
}

impl BoundedClock<'_> {
    /// `wait`, or what is left of the call's budget (plus one tick, so the deadline has
    /// passed when the guest wakes), whichever is shorter.
    fn cut(&self, wait: Duration) -> Duration {
        match self.deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now())
                    + Duration::from_millis(crate::runtime::TICK_MS);
                if wait >= left {
                    self.overran.store(true, Ordering::SeqCst);
                    left
                } else {
                    wait
                }
            }
            None => wait,
        }
    }
}

impl monotonic_clock::Host for BoundedClock<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        monotonic_clock::Host::now(&mut self.inner)
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        monotonic_clock::Host::resolution(&mut self.inner)
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let now = monotonic_clock::Host::now(&mut self.inner)?;
        let wait = self.cut(Duration::from_nanos(when.saturating_sub(now)));
        self.sleep(wait)
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let wait = self.cut(Duration::from_nanos(duration));
        self.sleep(wait)
    }
}

impl BoundedClock<'_> {
    /// A pollable ready after `wait`, or at once when the call is cancelled.
    fn sleep(&mut self, wait: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        let until = tokio::time::Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        let r = self.inner.table.push(CancellableSleep {
            until,
            cancel: self.cancel.clone(),
            generation: self.generation,
        })?;
        wasmtime_wasi::p2::subscribe(self.inner.table, r)
    }
}

/// Replaces WASI's monotonic clock (already linked) with the deadline-bounded one.
pub fn link_bounded_clock(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let r = monotonic_clock::add_to_linker::<HostState, BoundedClockData>(linker, |s| {
        let HostState {
            wasi,
            table,
            deadline,
            overran,
            cancel,
            generation,
            ..
        } = s;
        BoundedClock {
            inner: WasiClocksCtxView {
                ctx: wasi.clocks(),
                table,
            },
            deadline: *deadline,
            overran,
            cancel: cancel.clone(),
            generation: *generation,
        }
    });
    linker.allow_shadowing(false);
    r
}

/// Runs host work `f` within what is left of the call's budget on one of the
/// [`MAX_HOST_WORKERS`] store workers: refused when nothing is left, waiting (within the
/// deadline) while every worker is busy, abandoned (its result dropped) when the deadline
/// passes first. The plugin then gets an error, and its next wasm instruction traps.
pub fn within<T: Send + 'static>(
    st: &HostState,
    what: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    within_pool(st, what, &HOST_WORKERS, f)
}

/// [`within`] on the workers of `pool`.
pub(crate) fn within_pool<T: Send + 'static>(
    st: &HostState,
    what: &str,
    pool: &'static Pool,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (overran, cancel, generation) = (&st.overran, &st.cancel, st.generation);
    if cancel.cancelled(generation) {
        return Err(format!("{what} refused: {Cancelled}"));
    }
    let Some(deadline) = st.deadline else {
        return f();
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        overran.store(true, Ordering::SeqCst);
        return Err(format!("{what} refused: the call's deadline has passed"));
    }
    // A free worker, waited for in ticks: the deadline or a cancel ends the wait.
    while !pool.try_take() {
        let now = Instant::now();
        if now >= deadline {
            overran.store(true, Ordering::SeqCst);
            return Err(format!(
                "{what} waited its whole budget for one of the host's {} workers",
                pool.max
            ));
        }
        if cancel.cancelled(generation) {
            return Err(format!("{what} abandoned: {Cancelled}"));
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(crate::runtime::TICK_MS)));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("weir-host-call".into())
        .spawn(move || {
            let r = f();
            pool.give_back();
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        pool.give_back();
        return Err(format!("{what} refused: cannot start a worker: {e}"));
    }
    // Waited for in ticks, so a cancelled call stops waiting at once.
    loop {
        let now = Instant::now();
        if now >= deadline {
            overran.store(true, Ordering::SeqCst);
            return Err(format!(
                "{what} did not finish within the call's remaining budget ({} ms)",
                left.as_millis()
            ));
        }
        if cancel.cancelled(generation) {
            return Err(format!("{what} abandoned: {Cancelled}"));
        }
        let slice = (deadline - now).min(Duration::from_millis(crate::runtime::TICK_MS));
        match rx.recv_timeout(slice) {
            Ok(r) => return r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("{what} failed: its worker stopped"));
            }
        }
    }
}
