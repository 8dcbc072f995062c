//! Batch-taking plugins (flow-processors and summarizers) each on a worker of their own, fed
//! by [`PluginQueues`], the "plugins" stage after the store (`weir_core::ingest`).
//!
//! What a processor returns goes on: samples to the agent's /metrics, annotations to the
//! records store (kind `annotation`, under the plugin's name).
//!
//! Every stored batch is offered to each such plugin's bounded queue; a full queue skips that
//! plugin for that batch (counted per plugin: `skipped_batches`), never slowing ingest or any
//! other plugin. A plugin that blocks or runs to its deadline delays only its own queue. A
//! worker ends when its plugin is unloaded (removed, disabled, replaced), after its call in
//! progress.

use crate::batch::FlowBatch;
use crate::plugin::Plugin;
use crate::registry::Registry;
use crate::{HostError, Kind};
use std::collections::HashMap;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use weir_core::Flow;
use weir_core::ingest::{Stored, StoredStage};
use weir_core::metrics::PluginSample;

/// Batches waiting per plugin before the next ones are skipped.
pub const QUEUE_BATCHES: usize = 16;

/// Where a flow-processor's samples go (the agent's /metrics).
pub type SampleSink = Arc<dyn Fn(&str, &[PluginSample]) + Send + Sync>;

struct Worker {
    plugin: Weak<Plugin>,
    tx: SyncSender<FlowBatch>,
}

/// Hands batches to the workers of the loaded batch-taking plugins.
pub struct Workers {
    workers: HashMap<String, Worker>,
    samples: SampleSink,
}

impl Workers {
    pub fn new(samples: SampleSink) -> Workers {
        Workers {
            workers: HashMap::new(),
            samples,
        }
    }

    /// Offers `batch` to every loaded flow-processor and summarizer; summarizers get
    /// `offered` instead when storage sampling kept only some of it.
    pub fn dispatch(&mut self, reg: &Registry, batch: &FlowBatch, offered: Option<&FlowBatch>) {
        let plugins: Vec<Arc<Plugin>> = reg
            .of_kind(Kind::FlowProcessor)
            .into_iter()
            .chain(reg.of_kind(Kind::Summarizer))
            .collect();
        // Workers of unloaded (or replaced) plugins: dropping the sender ends them.
        self.workers.retain(|name, w| {
            plugins
                .iter()
                .any(|p| p.name() == name && w.plugin.upgrade().is_some_and(|q| Arc::ptr_eq(p, &q)))
        });
        for p in plugins {
            let name = p.name().to_string();
            if !self.workers.contains_key(&name) {
                match self.spawn(&p) {
                    Ok(w) => {
                        self.workers.insert(name.clone(), w);
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %name, error = %e, "cannot start the plugin's worker");
                        p.note_skipped();
                        continue;
                    }
                }
            }
            let Some(w) = self.workers.get(&name) else {
                continue;
            };
            let give = match (p.manifest().kind, offered) {
                (Kind::Summarizer, Some(all)) => all,
                _ => batch,
            };
            match w.tx.try_send(give.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => p.note_skipped(),
                Err(TrySendError::Disconnected(_)) => {
                    p.note_skipped();
                    self.workers.remove(&name);
                }
            }
        }
    }

    fn spawn(&self, p: &Arc<Plugin>) -> std::io::Result<Worker> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<FlowBatch>(QUEUE_BATCHES);
        let weak = Arc::downgrade(p);
        let samples = self.samples.clone();
        let kind = p.manifest().kind;
        std::thread::Builder::new()
            .name(format!("weir-plugin-{}", p.name()))
            .spawn(move || {
                for batch in rx {
                    let Some(p) = weak.upgrade() else { return };
                    let result = match kind {
                        Kind::Summarizer => p.summarize(&batch),
                        _ => p.process(&batch).map(|out| {
                            samples(p.name(), &crate::convert::samples_of(&out.samples));
                            // A host without a records store keeps none (nothing to say).
                            let _ = p.keep_annotations(&out.annotations, &[]);
                        }),
                    };
                    // Failures are recorded against the plugin (and may disable it); a busy
                    // plugin did not get the batch.
                    if let Err(HostError::Busy { .. } | HostError::Disabled { .. }) = result {
                        p.note_skipped();
                    }
                }
            })?;
        Ok(Worker {
            plugin: Arc::downgrade(p),
            tx,
        })
    }
}

/// Stored batches waiting for the dispatcher before the next ones are skipped.
pub const DISPATCH_BATCHES: usize = 64;

/// The "plugins" stage after the store: every stored batch, when a flow-processor or
/// summarizer is loaded, goes to a dispatcher thread that builds its columns once and offers
/// it to each such plugin's worker ([`Workers`]). Never blocks ingest: a full queue skips the
/// batch, and the skip is counted against every plugin that would have taken it, so each
/// plugin's `calls + skipped_batches` accounts for every stored batch. The queue holds shared
/// batches (no copies), so its depth covers a burst of concurrent imports cheaply.
pub struct PluginQueues {
    reg: Weak<Registry>,
    tx: SyncSender<Queued>,
}

/// A stored batch and, when storage sampling dropped some of it, every flow offered.
type Queued = (Arc<Vec<Flow>>, Option<Arc<Vec<Flow>>>);

impl PluginQueues {
    /// Starts the dispatcher; it ends when the registry is dropped or this stage is.
    pub fn start(reg: &Arc<Registry>, samples: SampleSink) -> std::io::Result<PluginQueues> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Queued>(DISPATCH_BATCHES);
        let weak = Arc::downgrade(reg);
        std::thread::Builder::new()
            .name("weir-processors".into())
            .spawn(move || {
                let mut workers = Workers::new(samples);
                for (batch, offered) in rx {
                    let Some(reg) = weak.upgrade() else { return };
                    // Columns built once, shared by every plugin that takes the batch; the
                    // offered flows' only when a summarizer takes them.
                    let offered = offered
                        .filter(|_| reg.has_kind(Kind::Summarizer))
                        .map(FlowBatch::shared);
                    workers.dispatch(&reg, &FlowBatch::shared(batch), offered.as_ref());
                }
            })?;
        Ok(PluginQueues {
            reg: Arc::downgrade(reg),
            tx,
        })
    }
}

impl StoredStage for PluginQueues {
    fn name(&self) -> &'static str {
        "plugins"
    }

    fn accept(&self, batch: &Stored<'_>) {
        let Some(reg) = self.reg.upgrade() else {
            return;
        };
        if reg.has_kind(Kind::FlowProcessor) || reg.has_kind(Kind::Summarizer) {
            // Plugins never slow ingest down: a full queue skips them for this batch.
            let offered = batch
                .offered()
                .filter(|_| reg.has_kind(Kind::Summarizer))
                .map(|o| Arc::new(o.to_vec()));
            if self.tx.try_send((batch.shared(), offered)).is_err() {
                for p in reg
                    .of_kind(Kind::FlowProcessor)
                    .into_iter()
                    .chain(reg.of_kind(Kind::Summarizer))
                {
                    p.note_skipped();
                }
            }
        }
    }
}
