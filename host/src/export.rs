//! Exporters' feed: every loaded exporter gets a thread of its own that reads the store by
//! sequence number, after its cursor and up to what the store has made durable, in batches of
//! the manifest's `batch_flows` matching its `filter`, and calls `export` on each. Ok moves
//! the cursor past the batch and writes it to `<plugin dir>/export-cursor` (temporary file,
//! then rename) before the next batch; an error leaves the cursor and retries the same batch
//! (the same flows, not more that arrived since) after a backoff (0.5 s doubling to 30 s). So a restart, a crash or a destination outage
//! loses nothing the store still holds, and repeats at most the batch in flight
//! (at-least-once, as far as the transport confirms delivery: HTTP and NATS do, UDP and TCP
//! only say the kernel took the bytes). A new install starts at the store's durable end (`start = "now"`) or at
//! its beginning (`start = "oldest"`). A slow or failing exporter delays only itself; its
//! thread ends when the plugin is unloaded.

use crate::batch::FlowBatch;
use crate::lock;
use crate::plugin::Plugin;
use crate::registry::Registry;
use crate::{HostError, Kind};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};
use weir_core::query::{self, TimeRange};

/// How often the feed looks for new flows when it has caught up, and for new exporters.
pub const POLL: Duration = Duration::from_millis(250);
/// The first retry after a failure, doubled per failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What `GET /api/v1/plugins` shows of an exporter's feed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FeedStatus {
    /// The last sequence number exported (on disk).
    pub cursor: u64,
    /// Flows stored and durable but not yet exported (matching or not).
    pub behind: u64,
    pub exported_flows: u64,
    pub exported_batches: u64,
    /// Failed `export` calls in a row (0 when the last one succeeded), and in all.
    pub failing: u32,
    pub failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The feeds' status, by plugin name.
pub type Feeds = Arc<Mutex<BTreeMap<String, FeedStatus>>>;

fn cursor_path(dir: &Path) -> PathBuf {
    dir.join("export-cursor")
}

/// The cursor on disk: None before the first one is written; an error when the file exists
/// but cannot be read or parsed (the feed then waits: guessing could skip or repeat flows).
fn read_cursor(dir: &Path) -> Result<Option<u64>, String> {
    let path = cursor_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map(Some).map_err(|_| {
            format!(
                "{}: not a sequence number ({:?}); fix it or remove it to start at the store's end",
                path.display(),
                s.chars().take(40).collect::<String>()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the cursor durably: a temporary file, synced, renamed over the old one.
fn write_cursor(dir: &Path, seq: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join("export-cursor.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(seq.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, cursor_path(dir))
}

struct Feed {
    plugin: Weak<Plugin>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts the supervisor: a thread that gives each loaded exporter its feed thread and
/// stops the feeds of unloaded ones. Ends when `stop` is set.
pub fn spawn(
    reg: Arc<Registry>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weir-exporters".into())
        .spawn(move || {
            let mut feeds: HashMap<String, Feed> = HashMap::new();
            while !stop.load(Ordering::SeqCst) {
                let loaded = reg.of_kind(Kind::Exporter);
                // Feeds of unloaded or replaced plugins stop, and are waited for (an export in
                // flight ends at its deadline) before a new feed of the same plugin starts:
                // one feed per cursor file.
                let gone: Vec<String> = feeds
                    .iter()
                    .filter(|(name, f)| {
                        !loaded.iter().any(|p| {
                            p.name() == name.as_str()
                                && f.plugin.upgrade().is_some_and(|q| Arc::ptr_eq(p, &q))
                        })
                    })
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in gone {
                    if let Some(f) = feeds.remove(&name) {
                        f.stop.store(true, Ordering::SeqCst);
                        let _ = f.thread.join();
                    }
                }
                for p in loaded {
                    if feeds.contains_key(p.name()) {
                        continue;
                    }
                    let feed_stop = Arc::new(AtomicBool::new(false));
                    let (r, s, plugin) = (reg.clone(), feed_stop.clone(), Arc::downgrade(&p));
                    let name = p.name().to_string();
                    let started = std::thread::Builder::new()
                        .name(format!("weir-export-{name}"))
                        .spawn(move || run_feed(&r, plugin, &s));
                    match started {
                        Ok(thread) => {
                            feeds.insert(
                                name,
                                Feed {
                                    plugin: Arc::downgrade(&p),
                                    stop: feed_stop,
                                    thread,
                                },
                            );
                        }
                        Err(e) => {
                            tracing::warn!(plugin = %name, error = %e, "exporter feed not started")
                        }
                    }
                }
                std::thread::sleep(POLL);
            }
            for f in feeds.values() {
                f.stop.store(true, Ordering::SeqCst);
            }
            for (_, f) in feeds.drain() {
                let _ = f.thread.join();
            }
        })
}

/// One exporter's feed, until it is unloaded or stopped.
fn run_feed(reg: &Registry, plugin: Weak<Plugin>, stop: &AtomicBool) {
    let Some(p) = plugin.upgrade() else { return };
    let name = p.name().to_string();
    let feed = p.manifest().exporter.clone();
    // Each batch in flight is one of the plugin's calls at once: never more than the agent
    // lets a plugin have (more would be refused as busy and count as failures).
    let in_flight = feed.in_flight.clamp(1, p.max_calls()) as usize;
    if in_flight < feed.in_flight as usize {
        tracing::warn!(plugin = %name, asked = feed.in_flight, in_flight, "exporter in_flight lowered to the agent's calls per plugin");
    }
    drop(p);
    let (Some(store), Ok(dir)) = (reg.flows().cloned(), reg.dir_of(&name)) else {
        return;
    };
    let filter = match query::parse(&feed.filter) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(plugin = %name, error = %e, "exporter filter does not parse");
            return;
        }
    };
    let set = |f: &dyn Fn(&mut FeedStatus)| {
        let feeds = reg.feeds();
        let mut g = lock(&feeds);
        f(g.entry(name.clone()).or_default());
    };
    let stored = loop {
        match read_cursor(&dir) {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(plugin = %name, error = %e, "exporter cursor unreadable; waiting");
                set(&|s| s.last_error = Some(e.clone()));
                sleep_unless(stop, MAX_BACKOFF);
                if stop.load(Ordering::SeqCst) || plugin.upgrade().is_none() {
                    return;
                }
            }
        }
    };
    let mut cursor = match stored {
        // A cursor past the store's end: the store was emptied (wiped, or everything expired
        // before a restart, and numbering began again). Start at its end, saying so.
        Some(c) if c > store.durable_seq() => {
            let end = store.durable_seq();
            tracing::warn!(plugin = %name, cursor = c, store_end = end, "exporter cursor past the store's end (store emptied?): starting at the end");
            if let Err(e) = write_cursor(&dir, end) {
                tracing::warn!(plugin = %name, error = %e, "exporter cursor not written");
            }
            end
        }
        Some(c) => c,
        None => {
            let start = if feed.start == "oldest" {
                0
            } else {
                store.durable_seq()
            };
            if let Err(e) = write_cursor(&dir, start) {
                tracing::warn!(plugin = %name, error = %e, "exporter cursor not written");
            }
            start
        }
    };
    let all = TimeRange {
        from_ms: 0,
        to_ms: u64::MAX,
    };
    let mut backoff = Duration::ZERO;
    // After a failure, the last sequence number of each batch to send again, in order: each
    // is sent again exactly (not grown by flows stored since), so a destination that
    // deduplicates by content (JetStream's message ids) stores it once.
    let mut again: VecDeque<u64> = VecDeque::new();
    // Batches started and not yet settled, oldest first; `next` is where the next one starts.
    let mut calls: VecDeque<Call> = VecDeque::new();
    let mut next = cursor;
    tracing::info!(plugin = %name, cursor, in_flight, "exporter feed started");
    while !stop.load(Ordering::SeqCst) {
        let Some(p) = plugin.upgrade() else { break };
        let durable = store.durable_seq();
        set(&|s| {
            s.cursor = cursor;
            s.behind = durable.saturating_sub(cursor);
        });
        // Start another batch while there is room, flows to send, and no failure to wait out.
        if calls.len() < in_flight && backoff.is_zero() && next < durable {
            let rows = match store.select(&filter, &all, next, feed.batch_flows as usize) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "exporter: reading the store failed");
                    drop(p);
                    sleep_unless(stop, FIRST_BACKOFF);
                    continue;
                }
            };
            let upto = again.pop_front().unwrap_or(durable).min(durable);
            let rows: Vec<_> = rows.into_iter().filter(|(s, _)| *s <= upto).collect();
            let call = match rows.last().map(|(s, _)| *s) {
                Some(last) => {
                    let flows: Vec<weir_core::Flow> = rows.into_iter().map(|(_, f)| f).collect();
                    Call::start(p, &name, Arc::new(flows), last, in_flight > 1)
                }
                // Nothing matching up to what is durable (or the failed batch aged out of the
                // store): the cursor skips to there once the batches before are settled.
                None => Call::skip(upto),
            };
            next = call.last;
            calls.push_back(call);
            continue;
        }
        // Settle the oldest batch: the cursor moves in order, past a batch only when it and
        // every batch before it are delivered.
        if let Some(call) = calls.pop_front() {
            drop(p);
            let (last, n) = (call.last, call.flows);
            match call.wait(&name) {
                Ok(()) => delivered(&dir, &name, &set, &mut cursor, last, n),
                Err(e) => {
                    // The batches after it are waited for and sent again after it, each as it
                    // was (at least once, as a restart would).
                    let mut bounds: VecDeque<u64> = VecDeque::from([last]);
                    for later in calls.drain(..) {
                        bounds.push_back(later.last);
                        let _ = later.wait(&name);
                    }
                    bounds.extend(again.drain(..));
                    again = bounds;
                    next = cursor;
                    let failing = {
                        let feeds = reg.feeds();
                        let mut g = lock(&feeds);
                        let s = g.entry(name.clone()).or_default();
                        s.failing += 1;
                        s.failures += 1;
                        s.last_error = Some(e.to_string());
                        s.failing
                    };
                    backoff = (FIRST_BACKOFF
                        * 2u32.saturating_pow(failing.saturating_sub(1).min(8)))
                    .min(MAX_BACKOFF);
                    log_failure(&name, &e, failing, backoff);
                }
            }
            continue;
        }
        // Nothing in flight and nothing to start: caught up, or waiting out a failure.
        let wait = if backoff.is_zero() { POLL } else { backoff };
        drop(p);
        sleep_unless(stop, wait);
        backoff = Duration::ZERO;
    }
    // Stopping: every call in flight is waited for (each ends at its deadline); what they
    // delivered in order, up to the first failure, still moves the cursor.
    let mut failed = false;
    for call in calls {
        let (last, n) = (call.last, call.flows);
        let ok = call.wait(&name).is_ok();
        failed |= !ok;
        if !failed {
            delivered(&dir, &name, &set, &mut cursor, last, n);
        }
    }
    tracing::info!(plugin = %name, cursor, "exporter feed stopped");
}

/// A batch delivered in its turn: the cursor moves past it, on disk and in the status.
fn delivered(
    dir: &Path,
    name: &str,
    set: &impl Fn(&dyn Fn(&mut FeedStatus)),
    cursor: &mut u64,
    last: u64,
    n: u64,
) {
    *cursor = last;
    if let Err(e) = write_cursor(dir, last) {
        tracing::warn!(plugin = %name, error = %e, "exporter cursor not written");
    }
    set(&|s| {
        s.cursor = last;
        if n > 0 {
            s.exported_flows += n;
            s.exported_batches += 1;
            s.failing = 0;
        }
    });
}

/// One batch given to an exporter: its last sequence number, its flows (0: a skip over flows
/// that do not match) and its outcome, here or still to come from the thread running it.
struct Call {
    last: u64,
    flows: u64,
    outcome: Outcome,
}

enum Outcome {
    Done(Result<(), HostError>),
    Running(mpsc::Receiver<Result<(), HostError>>),
}

impl Call {
    /// A skip: nothing to send, the cursor moves to `upto` in its turn.
    fn skip(upto: u64) -> Call {
        Call {
            last: upto,
            flows: 0,
            outcome: Outcome::Done(Ok(())),
        }
    }

    /// Calls `export` on the batch: on a thread of its own when `apart` (several in flight),
    /// else here (also when no thread can be had).
    fn start(
        p: Arc<Plugin>,
        name: &str,
        flows: Arc<Vec<weir_core::Flow>>,
        last: u64,
        apart: bool,
    ) -> Call {
        let n = flows.len() as u64;
        let call = |outcome| Call {
            last,
            flows: n,
            outcome,
        };
        if apart {
            let (tx, rx) = mpsc::sync_channel(1);
            let (q, batch) = (p.clone(), flows.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("weir-export-{name}-call"))
                .spawn(move || {
                    let _ = tx.send(q.export(&FlowBatch::shared(batch)));
                });
            match spawned {
                Ok(_) => return call(Outcome::Running(rx)),
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "no thread for an export call; running it in the feed's")
                }
            }
        }
        call(Outcome::Done(p.export(&FlowBatch::shared(flows))))
    }

    fn wait(self, name: &str) -> Result<(), HostError> {
        match self.outcome {
            Outcome::Done(r) => r,
            Outcome::Running(rx) => rx.recv().unwrap_or_else(|_| {
                Err(HostError::Trap {
                    plugin: name.to_string(),
                    message: "the export call's thread ended without an outcome".into(),
                })
            }),
        }
    }
}

fn log_failure(name: &str, e: &HostError, failing: u32, backoff: Duration) {
    if failing <= 3 || failing.is_power_of_two() {
        tracing::warn!(plugin = %name, error = %e, failing, retry_ms = backoff.as_millis() as u64, "export failed; the batch will be retried");
    }
}

/// Sleeps `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
