//! The ingest stage: batches of flows from a source (the eBPF capture, or a generator) are
//! appended to the store as they come, flushed every interval, and retention runs beside it.
//!
//! The pipeline, as named stages:
//!
//! ```text
//! source (capture, import) ─► enrich (Enricher) ─► sample (weir_core::sampling::StorageSampler:
//!                                                  │  which flows the store keeps; off until a
//!                                                  │  plugin sets rules)
//!                                                  ▼
//!                                                  store (append, flush, retention)
//!                                                     │ every stored batch, in order
//!                                                     ├─► metrics     (weir_core::metrics::FlowMetrics)
//!                                                     ├─► live tail   (weir_ui::LiveTail)
//!                                                     └─► plugins     (weir_host::workers::PluginQueues:
//!                                                                      one worker per flow-processor,
//!                                                                      fed the stored flows, and per
//!                                                                      summarizer, fed every flow
//!                                                                      offered, sampled out or not)
//!                        store ─► exporters (weir_host::export: each reads the store by
//!                                 sequence number from its own cursor; not a stage)
//! ```
//!
//! A [`StoredStage`] runs on the ingest thread and must not block: one with real work hands
//! the batch to its own queue (and drops it when the queue is full, counting).

use crate::enrich::Enricher;
use crate::flow::Flow;
use crate::store::Store;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Ingest settings.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// How often appended flows are made durable and visible (the most a crash can lose).
    pub flush_interval: Duration,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// With imports waiting for their acknowledgement, the flush comes this long after the
    /// previous one instead of at `flush_interval`: every import that arrived meanwhile
    /// shares it (group commit), so acknowledged still means durable and concurrent imports
    /// are not held for a whole interval.
    pub commit_delay: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            flush_interval: Duration::from_secs(1),
            retention_interval: Duration::from_secs(30),
            commit_delay: Duration::from_millis(50),
        }
    }
}

/// Counters of the ingest stage.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Flows stored.
    pub flows: AtomicU64,
    /// Flows offered to the store (before storage sampling).
    pub offered: AtomicU64,
    pub batches: AtomicU64,
    pub flushes: AtomicU64,
    pub errors: AtomicU64,
    /// Flows offered with an acknowledgement to send (imports over the API, not capture),
    /// for policies that tell a stream of imports from capture.
    pub imported: AtomicU64,
}

/// A snapshot of [`IngestStats`].
#[derive(Debug, Clone, Serialize)]
pub struct IngestSnapshot {
    pub flows: u64,
    pub offered: u64,
    pub batches: u64,
    pub flushes: u64,
    pub errors: u64,
}

impl IngestStats {
    pub fn snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            flows: self.flows.load(Ordering::Relaxed),
            offered: self.offered.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A batch just stored, as the stages after the store see it: the flows, and one shared
/// copy made only if a stage asks for it (to keep it beyond the call). When storage sampling
/// kept only some of the batch, the whole batch as offered is there too (summarizers see
/// every flow).
pub struct Stored<'a> {
    flows: &'a [Flow],
    shared: std::cell::OnceCell<Arc<Vec<Flow>>>,
    offered: Option<&'a [Flow]>,
}

impl<'a> Stored<'a> {
    pub fn new(flows: &'a [Flow]) -> Self {
        Stored {
            flows,
            shared: std::cell::OnceCell::new(),
            offered: None,
        }
    }

    /// A batch of which storage sampling kept `flows` out of `offered`.
    pub fn sampled(flows: &'a [Flow], offered: &'a [Flow]) -> Self {
        Stored {
            offered: Some(offered),
            ..Stored::new(flows)
        }
    }

    pub fn flows(&self) -> &'a [Flow] {
        self.flows
    }

    /// The batch to keep: copied once for every stage that asks.
    pub fn shared(&self) -> Arc<Vec<Flow>> {
        self.shared
            .get_or_init(|| Arc::new(self.flows.to_vec()))
            .clone()
    }

    /// Every flow offered to the store when storage sampling dropped some (None: the stored
    /// flows are all of them).
    pub fn offered(&self) -> Option<&'a [Flow]> {
        self.offered
    }
}

/// A stage after the store: sees every stored batch, in order, on the ingest thread. It must
/// not block; real work goes to a queue of its own.
pub trait StoredStage: Send + Sync {
    /// Its name, for logs and the pipeline map.
    fn name(&self) -> &'static str;
    /// Takes one stored batch.
    fn accept(&self, batch: &Stored<'_>);
}

/// A batch of flows on its way to the store. With `ack`, the sender is told once the flows
/// are durable and queryable (after the next flush), or why they are not.
pub struct Batch {
    pub flows: Vec<Flow>,
    pub ack: Option<std::sync::mpsc::Sender<Result<(), String>>>,
}

impl From<Vec<Flow>> for Batch {
    fn from(flows: Vec<Flow>) -> Self {
        Batch { flows, ack: None }
    }
}

type Ack = std::sync::mpsc::Sender<Result<(), String>>;

/// The stages a batch goes through besides the store: enrichment before, the stored-batch
/// stages after (in this order).
#[derive(Default)]
pub struct Stages {
    /// Fills identity fields (inventory, Kubernetes) before flows are stored.
    pub enricher: Option<Arc<dyn Enricher>>,
    /// Storage sampling: which of the enriched flows the store keeps.
    pub sampler: Option<Arc<crate::sampling::StorageSampler>>,
    /// Each sees every appended batch (metrics, live tail, plugin queues).
    pub after: Vec<Arc<dyn StoredStage>>,
}

/// Runs the ingest loop on its own thread until every sender is gone, then flushes.
pub fn spawn(
    store: Arc<Store>,
    rx: Receiver<Batch>,
    cfg: IngestConfig,
    stats: Arc<IngestStats>,
    stages: Stages,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weir-ingest".into())
        .spawn(move || run(&store, &rx, cfg, &stats, &stages))
}

/// When the next flush is due: at the interval, or — while someone waits for durability —
/// `commit_delay` after the previous flush (group commit).
fn due(acks: &[Ack], next_flush: Instant, last_flush: Instant, cfg: &IngestConfig) -> Instant {
    if acks.is_empty() {
        next_flush
    } else {
        next_flush.min(last_flush + cfg.commit_delay)
    }
}

fn run(
    store: &Store,
    rx: &Receiver<Batch>,
    cfg: IngestConfig,
    stats: &IngestStats,
    stages: &Stages,
) {
    if !stages.after.is_empty() {
        let names: Vec<&str> = stages.after.iter().map(|s| s.name()).collect();
        tracing::info!(stages = ?names, "stages after the store");
    }
    let mut next_flush = Instant::now() + cfg.flush_interval;
    let mut last_flush = Instant::now();
    let mut next_retention = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    loop {
        let wait =
            due(&acks, next_flush, last_flush, &cfg).saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(batch) => {
                take(store, stats, stages, batch, &mut acks);
                // What queued meanwhile goes into the same flush (bounded, so the flush
                // still comes under a steady stream).
                for batch in rx.try_iter().take(64) {
                    take(store, stats, stages, batch, &mut acks);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                flush(store, stats, &mut acks);
                return;
            }
        }
        let now = Instant::now();
        if now >= due(&acks, next_flush, last_flush, &cfg) {
            flush(store, stats, &mut acks);
            last_flush = Instant::now();
            next_flush = last_flush + cfg.flush_interval;
        }
        if now >= next_retention {
            if let Err(e) = store.enforce_retention(crate::query::now_ms()) {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "retention failed");
            }
            next_retention = now + cfg.retention_interval;
        }
    }
}

/// Enriches, samples and appends one batch, hands it to the stages after the store, and
/// keeps its acknowledgement for the next flush (or answers its failure now).
fn take(store: &Store, stats: &IngestStats, stages: &Stages, batch: Batch, acks: &mut Vec<Ack>) {
    let Batch { mut flows, ack } = batch;
    stats.batches.fetch_add(1, Ordering::Relaxed);
    if ack.is_some() {
        stats
            .imported
            .fetch_add(flows.len() as u64, Ordering::Relaxed);
    }
    if let Some(e) = &stages.enricher {
        e.enrich(&mut flows);
    }
    stats
        .offered
        .fetch_add(flows.len() as u64, Ordering::Relaxed);
    let kept = stages.sampler.as_ref().and_then(|s| s.sample(&flows));
    let to_store = kept.as_deref().unwrap_or(&flows);
    match store.append(to_store) {
        Ok(()) => {
            stats
                .flows
                .fetch_add(to_store.len() as u64, Ordering::Relaxed);
            let stored = match &kept {
                Some(k) => Stored::sampled(k, &flows),
                None => Stored::new(&flows),
            };
            for s in &stages.after {
                s.accept(&stored);
            }
            acks.extend(ack);
        }
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, flows = flows.len(), "append failed");
            if let Some(a) = ack {
                let _ = a.send(Err(e.to_string()));
            }
        }
    }
}

fn flush(store: &Store, stats: &IngestStats, acks: &mut Vec<Ack>) {
    let started = Instant::now();
    let result = store.flush();
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        acks = acks.len(),
        "flushed"
    );
    match &result {
        Ok(()) => {
            stats.flushes.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "flush failed");
        }
    }
    for a in acks.drain(..) {
        let _ = a.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{Expr, TimeRange};
    use crate::store::StoreConfig;

    /// Imports waiting for durability are flushed together soon after the previous flush,
    /// not at the (here one-minute) interval; flows without an acknowledgement wait for it.
    #[test]
    fn waiting_imports_share_a_flush_long_before_the_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(StoreConfig::new(dir.path())).expect("store"));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(64);
        let stats = Arc::new(IngestStats::default());
        let cfg = IngestConfig {
            flush_interval: Duration::from_secs(60),
            commit_delay: Duration::from_millis(50),
            ..IngestConfig::default()
        };
        let h = spawn(store.clone(), rx, cfg, stats.clone(), Stages::default()).expect("spawn");
        let flows = crate::store::tests::synth(100, 1_800_000_000_000, 60_000);
        let count = |s: &Store| {
            s.aggregate(&Expr::All, &TimeRange::ALL, &[], None)
                .expect("aggregate")
                .values()
                .map(|t| t.flows)
                .sum::<u64>()
        };
        // Without an acknowledgement: appended, not yet flushed (the interval is a minute).
        tx.send(flows[..40].to_vec().into()).expect("send");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(stats.flows.load(Ordering::Relaxed), 40);
        assert_eq!(stats.flushes.load(Ordering::Relaxed), 0);
        // Three imports at once: acknowledged together, durable and visible.
        let t = Instant::now();
        let acks: Vec<_> = [&flows[40..60], &flows[60..80], &flows[80..]]
            .iter()
            .map(|part| {
                let (ack, got) = std::sync::mpsc::channel();
                tx.send(Batch {
                    flows: part.to_vec(),
                    ack: Some(ack),
                })
                .expect("send");
                got
            })
            .collect();
        for got in acks {
            assert_eq!(
                got.recv_timeout(Duration::from_secs(30)).expect("ack"),
                Ok(())
            );
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        assert_eq!(count(&store), 100, "every flow visible once acknowledged");
        assert_eq!(
            stats.imported.load(Ordering::Relaxed),
            60,
            "only flows sent with an acknowledgement count as imported"
        );
        let flushes = stats.flushes.load(Ordering::Relaxed);
        assert!((1..=3).contains(&flushes), "{flushes} flushes");
        drop(tx);
        h.join().expect("ingest thread");
    }
}
