//! A call's deadline covers everything the plugin does, not only its own wasm code.
//!
//! Epoch interruption stops wasm at the deadline, but a plugin can also wait in the host:
//! `std::thread::sleep` in a guest is WASI's `monotonic-clock.subscribe-duration` plus a
//! blocking poll, and needs no capability. [`link_bounded_clock`] shadows the
//! `wasi:clocks/monotonic-clock` subscriptions so that no wait outlives the call's deadline;
//! once it passes, the guest's next wasm instruction traps as interrupted. Host calls that do
//! real work (flow queries and aggregates) run through [`within`], which refuses them once the
//! deadline passed and stops waiting for them when it passes.

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
static HOST_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// The monotonic clock a plugin sees, with its waits cut at the call's deadline.
pub struct BoundedClock<'a> {
    inner: WasiClocksCtxView<'a>,
    deadline: Option<Instant>,
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
        monotonic_clock::Host::subscribe_duration(&mut self.inner, nanos(wait))
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let wait = self.cut(Duration::from_nanos(duration));
        monotonic_clock::Host::subscribe_duration(&mut self.inner, nanos(wait))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
            ..
        } = s;
        BoundedClock {
            inner: WasiClocksCtxView {
                ctx: wasi.clocks(),
                table,
            },
            deadline: *deadline,
            overran,
        }
    });
    linker.allow_shadowing(false);
    r
}

/// Runs host work `f` within what is left of the call's budget: refused when nothing is left
/// or when [`MAX_HOST_WORKERS`] are busy, abandoned (its result dropped) when the deadline
/// passes first. The plugin then gets an error, and its next wasm instruction traps.
pub fn within<T: Send + 'static>(
    deadline: Option<Instant>,
    overran: &std::sync::atomic::AtomicBool,
    what: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let Some(deadline) = deadline else {
        return f();
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        overran.store(true, Ordering::SeqCst);
        return Err(format!("{what} refused: the call's deadline has passed"));
    }
    if HOST_WORKERS.fetch_add(1, Ordering::SeqCst) >= MAX_HOST_WORKERS {
        HOST_WORKERS.fetch_sub(1, Ordering::SeqCst);
        return Err(format!(
            "{what} refused: the host is busy with {MAX_HOST_WORKERS} plugin queries"
        ));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("weir-host-call".into())
        .spawn(move || {
            let r = f();
            HOST_WORKERS.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        HOST_WORKERS.fetch_sub(1, Ordering::SeqCst);
        return Err(format!("{what} refused: cannot start a worker: {e}"));
    }
    match rx.recv_timeout(left) {
        Ok(r) => r,
        Err(_) => {
            overran.store(true, Ordering::SeqCst);
            Err(format!(
                "{what} did not finish within the call's remaining budget ({} ms)",
                left.as_millis()
            ))
        }
    }
}
