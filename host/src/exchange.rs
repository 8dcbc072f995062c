//! Summaries across a cluster, over core's summary-exchange port: an agent's publisher
//! thread sends every summarizer window that changed since it last sent it (under the agent's
//! node name); `weir server`'s gatherer thread reads every node's copies of the windows its
//! own summarizers keep and makes each window the merge of them (the same plugin's `merge`),
//! so its Summary page, `weir summary` and snapshot answer for the whole cluster.
//!
//! Failures are retried at the next tick (a window stays unsent until the exchange takes
//! it); each thread's state is in `GET /api/v1/status` (`summary_exchange`).

use crate::Kind;
use crate::registry::Registry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use weir_core::summaries::{ExchangeStatus, PublishedWindow, SummaryExchange};

fn digest(b: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Sleeps `every` in short steps; false once `stop` is set.
fn pause(every: Duration, stop: &AtomicBool) -> bool {
    let end = std::time::Instant::now() + every;
    while std::time::Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100).min(every));
    }
    !stop.load(Ordering::SeqCst)
}

fn failed(status: &ExchangeStatus, what: &str, e: &dyn std::fmt::Display) {
    let mut first = false;
    status.update(|s| {
        first = s.failures == 0;
        s.failures += 1;
        s.last_error = Some(e.to_string());
    });
    // Once per run of failures; the status keeps the latest.
    if first {
        tracing::warn!(error = %e, "summary exchange: {what} failed (retried; see status summary_exchange)");
    }
}

fn succeeded(status: &ExchangeStatus, f: impl FnOnce(&mut weir_core::summaries::ExchangeState)) {
    let mut recovered = false;
    status.update(|s| {
        recovered = s.failures > 0;
        s.failures = 0;
        s.last_error = None;
        s.last_ok_ms = Some(weir_core::query::now_ms());
        f(s);
    });
    if recovered {
        tracing::info!("summary exchange: working again");
    }
}

/// One publishing pass: the windows of every enabled summarizer that changed since `sent`
/// records them, sent in one call; `sent` updated when the exchange took them.
pub fn publish_once(
    reg: &Registry,
    exchange: &dyn SummaryExchange,
    node: &str,
    sent: &mut HashMap<(String, u64), u64>,
    status: &ExchangeStatus,
) {
    let mut batch = Vec::new();
    let mut digests = Vec::new();
    let mut kept = HashSet::new();
    for p in reg.of_kind(Kind::Summarizer) {
        if p.is_disabled() {
            continue;
        }
        let windows = match p.summary_window_snapshots() {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(plugin = %p.name(), error = %e, "summary exchange: windows not read");
                continue;
            }
        };
        let secs = p.manifest().summarizer.window_secs;
        for (start_ms, snapshot) in windows {
            let key = (p.name().to_string(), start_ms);
            let d = digest(&snapshot);
            kept.insert(key.clone());
            if sent.get(&key) != Some(&d) {
                digests.push((key, d));
                batch.push(PublishedWindow {
                    node: node.to_string(),
                    plugin: p.name().to_string(),
                    start_ms,
                    window_secs: secs,
                    snapshot,
                });
            }
        }
    }
    sent.retain(|k, _| kept.contains(k));
    if batch.is_empty() {
        return;
    }
    match exchange.publish(&batch) {
        Ok(()) => {
            tracing::debug!(windows = batch.len(), "summary windows published");
            sent.extend(digests);
            succeeded(status, |s| s.windows += batch.len() as u64);
        }
        Err(e) => failed(status, "publishing", &e),
    }
}

/// Publishes this agent's summarizer windows every `every` until `stop`.
pub fn spawn_publisher(
    reg: Arc<Registry>,
    exchange: Arc<dyn SummaryExchange>,
    node: String,
    every: Duration,
    status: Arc<ExchangeStatus>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weir-summaries-publish".into())
        .spawn(move || {
            let mut sent = HashMap::new();
            while pause(every, &stop) {
                publish_once(&reg, exchange.as_ref(), &node, &mut sent, &status);
            }
        })
}

/// What a gatherer saw last, per plugin: the exchange's stamp (with the window start it was
/// asked from) and a digest of the copies it merged.
#[derive(Default)]
pub struct Gathered {
    stamps: HashMap<String, (u64, (u64, u64))>,
    digests: HashMap<String, u64>,
    /// Windows and nodes of the last gather, for status.
    counts: HashMap<String, (u64, HashSet<String>)>,
}

/// One gathering pass: every summarizer's kept windows replaced by the merge of every
/// node's copies, when they changed since `seen` (downloaded only when the exchange's stamp
/// changed).
pub fn gather_once(
    reg: &Registry,
    exchange: &dyn SummaryExchange,
    seen: &mut Gathered,
    status: &ExchangeStatus,
) {
    let now = weir_core::query::now_ms();
    let mut ok = true;
    let active: Vec<_> = reg
        .of_kind(Kind::Summarizer)
        .into_iter()
        .filter(|p| !p.is_disabled())
        .collect();
    // Removed or disabled summarizers leave the status.
    let names: HashSet<&str> = active.iter().map(|p| p.name()).collect();
    seen.stamps.retain(|n, _| names.contains(n.as_str()));
    seen.digests.retain(|n, _| names.contains(n.as_str()));
    seen.counts.retain(|n, _| names.contains(n.as_str()));
    for p in &active {
        let w = p.manifest().summarizer;
        let since = match w.window_secs {
            0 => 0,
            s => {
                let len = s.saturating_mul(1000);
                (now / len * len)
                    .saturating_sub(len.saturating_mul(u64::from(w.windows.max(1)) - 1))
            }
        };
        let stamp = match exchange.stamp(p.name(), w.window_secs, since) {
            Ok(s) => s,
            Err(e) => {
                ok = false;
                failed(status, "gathering", &e);
                continue;
            }
        };
        if seen.stamps.get(p.name()) == Some(&(since, stamp)) {
            continue;
        }
        let got = match exchange.gather(p.name(), w.window_secs, since) {
            Ok(g) => g,
            Err(e) => {
                ok = false;
                failed(status, "gathering", &e);
                continue;
            }
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut by_start: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        let mut names: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut nodes = HashSet::new();
        for g in got {
            (&g.node, g.start_ms, &g.snapshot).hash(&mut h);
            nodes.insert(g.node.clone());
            names.entry(g.start_ms).or_default().push(g.node);
            by_start.entry(g.start_ms).or_default().push(g.snapshot);
        }
        seen.counts
            .insert(p.name().to_string(), (by_start.len() as u64, nodes));
        let d = h.finish();
        if seen.digests.get(p.name()) == Some(&d) {
            seen.stamps.insert(p.name().to_string(), (since, stamp));
            continue;
        }
        match p.replace_summary_windows(by_start.into_iter().collect()) {
            Ok(refused) => {
                for (start, i, e) in refused {
                    let node = names.get(&start).and_then(|n| n.get(i)).cloned();
                    tracing::warn!(plugin = %p.name(), node = ?node, window_start_ms = start, error = %e,
                        "summary exchange: a node's window the plugin cannot read is left out");
                }
                seen.digests.insert(p.name().to_string(), d);
                seen.stamps.insert(p.name().to_string(), (since, stamp));
            }
            Err(e) => {
                ok = false;
                failed(status, "merging", &e);
            }
        }
    }
    if ok {
        let windows = seen.counts.values().map(|(w, _)| w).sum();
        let nodes: HashSet<&String> = seen.counts.values().flat_map(|(_, n)| n).collect();
        succeeded(status, |s| {
            s.windows = windows;
            s.nodes = nodes.len() as u64;
        });
    }
}

/// Gathers the cluster's summarizer windows every `every` until `stop` (`weir server`).
pub fn spawn_gatherer(
    reg: Arc<Registry>,
    exchange: Arc<dyn SummaryExchange>,
    every: Duration,
    status: Arc<ExchangeStatus>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weir-summaries-gather".into())
        .spawn(move || {
            let mut seen = Gathered::default();
            loop {
                gather_once(&reg, exchange.as_ref(), &mut seen, &status);
                if !pause(every, &stop) {
                    break;
                }
            }
        })
}
