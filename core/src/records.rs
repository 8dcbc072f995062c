//! The records store: time-indexed entries that are not flows, kept on the node beside them
//! and retained like them. Decoded records (OVS datapath dumps), events (Kubernetes events,
//! logs, spans) and annotations from flow-processors and correlators land here; plugins read
//! and write it through the `records` capability, users through `/api/v1/records` and
//! `weir records`.
//!
//! On disk: one sled database with `entries` (seq -> JSON record), `by_time`
//! (time ms ++ seq -> the entry's [`Brief`]: kind, severity, lane, status, so time scans need
//! not read entries) and `by_trace` (trace id ++ seq -> nothing). Sequence numbers only grow
//! (above a restored incident's), so a reader pages with
//! `after_seq` and resumes where it stopped. Every write is flushed before it returns, so a
//! record acknowledged to a plugin survives kill -9.
//!
//! In memory: entries per minute and brief ([`RecordStore::minute_counts`]), built by one walk
//! of the time index at open and kept in step by writes and retention, so the timeline counts
//! its lanes without walking a million index keys.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Most entries one write may carry.
pub const MAX_WRITE: usize = 1000;
/// Longest text of one entry, bytes.
pub const MAX_TEXT: usize = 4096;
/// Most labels one entry may carry, and the longest label name or value, bytes.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_BYTES: usize = 512;
/// Most entries one query returns.
pub const MAX_QUERY: usize = 10_000;

/// What can go wrong with the records store.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The entry or query is wrong (the message names the field).
    #[error("{0}")]
    Invalid(String),
    #[error("records store: {0}")]
    Db(#[from] sled::Error),
    #[error("records store: corrupt entry: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// One entry as written: when, what kind, its text and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When it happened (Unix ms); the start when it spans time.
    pub time_ms: u64,
    /// When it ended, for entries that span time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// What it is: `annotation`, `ovs-flow`, `k8s-event`... (lowercase letters, digits, `-`,
    /// `.`, at most 64 bytes).
    pub kind: String,
    pub text: String,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// A filter in the query language selecting the flows it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_filter: Option<String>,
}

/// An entry as stored: its sequence number and who wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub seq: u64,
    /// The plugin that wrote it (`agent` for the agent's own entries).
    pub source: String,
    #[serde(flatten)]
    pub entry: Entry,
}

impl Stored {
    /// The value of label `name`, if the entry carries it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.entry
            .labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Which entries a query wants; every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    /// Entries with `time_ms` in `[from_ms, to_ms]`.
    pub from_ms: u64,
    pub to_ms: u64,
    /// Any of these kinds (empty: any kind).
    pub kinds: Vec<String>,
    /// Written by this source.
    pub source: Option<String>,
    /// Carrying every one of these labels.
    pub labels: Vec<(String, String)>,
    /// Only entries with a higher sequence number.
    pub after_seq: u64,
    pub limit: usize,
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Checks a kind name.
pub fn check_kind(kind: &str) -> Result<(), RecordError> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(RecordError::Invalid(format!(
            "kind {:?}: lowercase letters, digits, '-' and '.', 1 to 64 bytes",
            kind.chars().take(64).collect::<String>()
        )))
    }
}

impl Entry {
    /// Checks the entry's bounds; `at` names it in the message (`entry 3`).
    pub fn check(&self, at: &str) -> Result<(), RecordError> {
        let bad = |m: String| Err(RecordError::Invalid(format!("{at}: {m}")));
        check_kind(&self.kind).or_else(|e| bad(e.to_string()))?;
        if self.text.len() > MAX_TEXT {
            return bad(format!(
                "text of {} bytes, at most {MAX_TEXT}",
                self.text.len()
            ));
        }
        if self.labels.len() > MAX_LABELS {
            return bad(format!(
                "{} labels, at most {MAX_LABELS}",
                self.labels.len()
            ));
        }
        if let Some((k, _)) = self
            .labels
            .iter()
            .find(|(k, v)| k.is_empty() || k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES)
        {
            return bad(format!(
                "label {:?}: names 1 to {MAX_LABEL_BYTES} bytes, values at most {MAX_LABEL_BYTES}",
                k.chars().take(64).collect::<String>()
            ));
        }
        if let Some(end) = self.end_ms
            && end < self.time_ms
        {
            return bad(format!("ends ({end}) before it starts ({})", self.time_ms));
        }
        if let Some(f) = &self.flow_filter
            && let Err(e) = crate::query::trace::check_syntax(f)
        {
            return bad(format!("flow filter: {e}"));
        }
        Ok(())
    }
}

/// The records store.
pub struct RecordStore {
    db: sled::Db,
    entries: sled::Tree,
    by_time: sled::Tree,
    /// `trace_id` label value ++ seq -> nothing: a trace's spans and logs without a scan.
    by_trace: sled::Tree,
    /// One write at a time: sequence numbers reach the disk in the order they are handed
    /// out, so a reader paging by sequence never skips one written late.
    writing: std::sync::Mutex<()>,
    /// The highest sequence number restored from an incident (0 otherwise): new entries are
    /// numbered above it.
    floor: std::sync::atomic::AtomicU64,
    /// Entries per minute and brief, in memory: built from the time index when the store
    /// opens, kept in step by every write and by retention. What the timeline counts lanes
    /// from instead of walking the index ([`RecordStore::minute_counts`]).
    minutes: std::sync::Mutex<Minutes>,
}

/// A minute's length, ms.
pub const MINUTE_MS: u64 = 60_000;

/// An owned [`Brief`]: what entries are counted by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BriefKey {
    pub kind: String,
    pub severity: String,
    pub lane: String,
    pub status: String,
}

impl BriefKey {
    fn of(b: Brief<'_>) -> BriefKey {
        BriefKey {
            kind: b.kind.to_string(),
            severity: b.severity.to_string(),
            lane: b.lane.to_string(),
            status: b.status.to_string(),
        }
    }

    pub fn brief(&self) -> Brief<'_> {
        Brief {
            kind: &self.kind,
            severity: &self.severity,
            lane: &self.lane,
            status: &self.status,
        }
    }
}

/// Entries per minute start (ms) and brief (a minute holds few briefs: a list, looked up
/// without building a key).
type Minutes = std::collections::BTreeMap<u64, Vec<(BriefKey, u64)>>;

fn count_in(m: &mut Minutes, time_ms: u64, b: Brief<'_>, up: bool) {
    let minute = time_ms / MINUTE_MS * MINUTE_MS;
    let briefs = m.entry(minute).or_default();
    match (briefs.iter().position(|(k, _)| k.brief() == b), up) {
        (Some(i), true) => briefs[i].1 += 1,
        (None, true) => briefs.push((BriefKey::of(b), 1)),
        (Some(i), false) => {
            briefs[i].1 = briefs[i].1.saturating_sub(1);
            if briefs[i].1 == 0 {
                briefs.swap_remove(i);
            }
        }
        (None, false) => {}
    }
    if briefs.is_empty() {
        m.remove(&minute);
    }
}

fn time_key(time_ms: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&time_ms.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// What a time scan sees of an entry without reading it ([`RecordStore::scan_brief`]): its
/// kind and the labels the timeline sorts and groups by. Kept as the value of the time index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Brief<'a> {
    pub kind: &'a str,
    pub severity: &'a str,
    pub lane: &'a str,
    pub status: &'a str,
}

/// Longest label value a brief keeps (longer ones are left out: the scan reads the entry).
const BRIEF_LABEL: usize = 64;

impl Entry {
    /// What the time index keeps of this entry.
    fn brief(&self) -> Brief<'_> {
        let label = |n: &str| {
            self.labels
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        Brief {
            kind: &self.kind,
            severity: label("severity"),
            lane: label("lane"),
            status: label("status"),
        }
    }
}

fn brief_value(e: &Entry) -> Vec<u8> {
    let b = e.brief();
    let parts = [b.kind, b.severity, b.lane, b.status];
    if parts
        .iter()
        .any(|p| p.len() > BRIEF_LABEL || p.contains('\0'))
    {
        // Not briefable: an empty value sends scans to the entry.
        return Vec::new();
    }
    parts.join("\0").into_bytes()
}

fn brief_of(v: &[u8]) -> Option<Brief<'_>> {
    let text = std::str::from_utf8(v).ok()?;
    let mut it = text.split('\0');
    let b = Brief {
        kind: it.next().filter(|k| !k.is_empty())?,
        severity: it.next()?,
        lane: it.next()?,
        status: it.next()?,
    };
    it.next().is_none().then_some(b)
}

/// A time index item as (time, seq, brief value); keys of another length are skipped.
fn time_item(
    item: sled::Result<(sled::IVec, sled::IVec)>,
) -> Option<Result<(u64, u64, sled::IVec), RecordError>> {
    match item {
        Err(e) => Some(Err(e.into())),
        Ok((k, v)) => {
            let t = <[u8; 8]>::try_from(k.get(..8)?).ok()?;
            let seq = <[u8; 8]>::try_from(k.get(8..16)?).ok()?;
            Some(Ok((u64::from_be_bytes(t), u64::from_be_bytes(seq), v)))
        }
    }
}

/// Where a restored store keeps its sequence floor (in the default tree).
const FLOOR_KEY: &[u8] = b"restored-seq-floor";

/// Longest `trace_id` label value indexed.
const MAX_TRACE_KEY: usize = 64;

fn trace_key(trace_id: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(trace_id.len() + 9);
    k.extend_from_slice(trace_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn trace_label(e: &Entry) -> Option<&str> {
    e.labels
        .iter()
        .find(|(k, v)| k == "trace_id" && v.len() <= MAX_TRACE_KEY)
        .map(|(_, v)| v.as_str())
}

impl RecordStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<RecordStore, RecordError> {
        let db = sled::Config::new().path(dir).open()?;
        let floor = db
            .get(FLOOR_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let store = RecordStore {
            floor: floor.into(),
            entries: db.open_tree("entries")?,
            by_time: db.open_tree("by_time")?,
            by_trace: db.open_tree("by_trace")?,
            db,
            writing: std::sync::Mutex::new(()),
            minutes: Default::default(),
        };
        // The counts per minute, from one walk of the time index.
        let mut minutes = Minutes::new();
        store.scan_brief(0, u64::MAX, usize::MAX, |t, _, b| {
            count_in(&mut minutes, t, b, true)
        })?;
        *store.minutes_lock() = minutes;
        Ok(store)
    }

    fn minutes_lock(&self) -> std::sync::MutexGuard<'_, Minutes> {
        self.minutes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries per minute (start ms) and brief for the minutes starting in
    /// `[from_minute_ms, to_minute_ms]`, oldest first: counts without walking the index.
    pub fn minute_counts(
        &self,
        from_minute_ms: u64,
        to_minute_ms: u64,
    ) -> Vec<(u64, BriefKey, u64)> {
        if from_minute_ms > to_minute_ms {
            return Vec::new();
        }
        let m = self.minutes_lock();
        m.range(from_minute_ms..=to_minute_ms)
            .flat_map(|(minute, briefs)| briefs.iter().map(|(b, n)| (*minute, b.clone(), *n)))
            .collect()
    }

    /// Writes entries for `source`, all or none (every entry is checked first), and flushes
    /// them to disk. Returns their sequence numbers.
    pub fn write(&self, source: &str, entries: Vec<Entry>) -> Result<Vec<u64>, RecordError> {
        if entries.len() > MAX_WRITE {
            return Err(RecordError::Invalid(format!(
                "{} entries in one write, at most {MAX_WRITE}",
                entries.len()
            )));
        }
        for (i, e) in entries.iter().enumerate() {
            e.check(&format!("entry {i}"))?;
        }
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut stored = Vec::with_capacity(entries.len());
        for entry in entries {
            // generate_id starts at 0; sequence numbers start at 1 so 0 means "from the start".
            // A store restored from an incident continues above the restored numbers.
            let seq =
                self.db.generate_id()? + 1 + self.floor.load(std::sync::atomic::Ordering::Relaxed);
            stored.push(Stored {
                seq,
                source: source.to_string(),
                entry,
            });
        }
        self.put(&stored)?;
        self.db.flush()?;
        Ok(stored.iter().map(|s| s.seq).collect())
    }

    /// Writes entries that have their sequence numbers, indexes first. The caller holds the
    /// write lock and flushes.
    fn put(&self, stored: &[Stored]) -> Result<(), RecordError> {
        let mut batch = sled::Batch::default();
        let mut times = sled::Batch::default();
        let mut traces = sled::Batch::default();
        for s in stored {
            times.insert(&time_key(s.entry.time_ms, s.seq), brief_value(&s.entry));
            if let Some(t) = trace_label(&s.entry) {
                traces.insert(trace_key(t, s.seq), &[]);
            }
            batch.insert(&s.seq.to_be_bytes(), serde_json::to_vec(s)?);
        }
        // The time index first: a crash between the two leaves index keys without entries
        // (invisible to queries, dropped by retention), never entries retention cannot find.
        self.by_time.apply_batch(times)?;
        // The counts mirror the time index (what a reopen counts from).
        {
            let mut m = self.minutes_lock();
            for s in stored {
                count_in(&mut m, s.entry.time_ms, s.entry.brief(), true);
            }
        }
        self.by_trace.apply_batch(traces)?;
        self.entries.apply_batch(batch)?;
        Ok(())
    }

    /// Puts back entries as an incident carried them, with their sequence numbers and
    /// sources, into an empty store (`weir incident open`); entries written later are
    /// numbered above them once the store is reopened.
    pub fn restore(&self, stored: &[Stored]) -> Result<(), RecordError> {
        if !self.entries.is_empty() {
            return Err(RecordError::Invalid(
                "records can only be restored into an empty store".into(),
            ));
        }
        // All checked before any is written.
        for (i, s) in stored.iter().enumerate() {
            s.entry.check(&format!("record {i} (seq {})", s.seq))?;
            if s.seq == 0 {
                return Err(RecordError::Invalid(format!(
                    "record {i}: sequence number 0"
                )));
            }
        }
        let mut seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
        seqs.sort_unstable();
        if let Some(w) = seqs.windows(2).find(|w| w[0] == w[1]) {
            return Err(RecordError::Invalid(format!(
                "sequence number {} given twice",
                w[0]
            )));
        }
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        for chunk in stored.chunks(10_000) {
            self.put(chunk)?;
        }
        let top = stored.iter().map(|s| s.seq).max().unwrap_or(0);
        self.db.insert(FLOOR_KEY, &top.to_be_bytes())?;
        self.floor.store(top, std::sync::atomic::Ordering::Relaxed);
        self.db.flush()?;
        Ok(())
    }

    /// Entries matching `q`, lowest sequence first.
    pub fn query(&self, q: &RecordQuery) -> Result<Vec<Stored>, RecordError> {
        if q.limit > MAX_QUERY {
            return Err(RecordError::Invalid(format!(
                "limit {} is above the most one query returns ({MAX_QUERY})",
                q.limit
            )));
        }
        for k in &q.kinds {
            check_kind(k)?;
        }
        let keep = |s: &Stored| {
            s.entry.time_ms >= q.from_ms
                && s.entry.time_ms <= q.to_ms
                && (q.kinds.is_empty() || q.kinds.contains(&s.entry.kind))
                && q.source.as_ref().is_none_or(|src| *src == s.source)
                && q.labels.iter().all(|l| s.entry.labels.contains(l))
        };
        let mut out = Vec::new();
        // A trace's entries through its index, in sequence order.
        if let Some((_, t)) = q
            .labels
            .iter()
            .find(|(k, v)| k == "trace_id" && v.len() <= MAX_TRACE_KEY)
        {
            let mut prefix = t.as_bytes().to_vec();
            prefix.push(0);
            for item in self.by_trace.scan_prefix(&prefix) {
                if out.len() >= q.limit {
                    break;
                }
                let (k, _) = item?;
                let seq = k
                    .get(prefix.len()..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                if seq <= q.after_seq {
                    continue;
                }
                // A key whose entry is gone (a crash mid-retention) is skipped.
                if let Some(v) = self.entries.get(seq.to_be_bytes())? {
                    let s: Stored = serde_json::from_slice(&v)?;
                    if keep(&s) {
                        out.push(s);
                    }
                }
            }
            return Ok(out);
        }
        for item in self
            .entries
            .range((q.after_seq.saturating_add(1)).to_be_bytes()..)
        {
            if out.len() >= q.limit {
                break;
            }
            let (_, v) = item?;
            let s: Stored = serde_json::from_slice(&v)?;
            if keep(&s) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The time index over `[from_ms, to_ms]`, in time order: (time, seq, brief value).
    fn times(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> impl Iterator<Item = Result<(u64, u64, sled::IVec), RecordError>> + '_ {
        self.by_time
            .range(time_key(from_ms, 0)..=time_key(to_ms, u64::MAX))
            .filter_map(time_item)
    }

    /// Like [`RecordStore::scan_brief`], newest first (the latest time, the highest sequence
    /// number among equal times), until `visit` says stop (`false`).
    pub fn scan_brief_rev(
        &self,
        from_ms: u64,
        to_ms: u64,
        mut visit: impl FnMut(u64, u64, Brief<'_>) -> bool,
    ) -> Result<(), RecordError> {
        let items = self
            .by_time
            .range(time_key(from_ms, 0)..=time_key(to_ms, u64::MAX))
            .rev()
            .filter_map(time_item);
        for item in items {
            let (t, seq, v) = item?;
            let go_on = match brief_of(&v) {
                Some(b) => visit(t, seq, b),
                None => {
                    let Some(s) = self.get(seq)? else { continue };
                    visit(t, seq, s.entry.brief())
                }
            };
            if !go_on {
                break;
            }
        }
        Ok(())
    }

    /// Visits the entries with `time_ms` in `[from_ms, to_ms]`, in time order, at most
    /// `limit` of them; returns whether more were left.
    pub fn scan_time(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
        mut visit: impl FnMut(Stored),
    ) -> Result<bool, RecordError> {
        let mut n = 0;
        for item in self.times(from_ms, to_ms) {
            let (_, seq, _) = item?;
            // A key whose entry is gone (a crash mid-retention) is skipped.
            let Some(s) = self.get(seq)? else { continue };
            if n >= limit {
                return Ok(true);
            }
            visit(s);
            n += 1;
        }
        Ok(false)
    }

    /// Visits the entries with `time_ms` in `[from_ms, to_ms]` in time order, at most `limit`,
    /// as (time, seq, brief) without reading them; an entry written before briefs existed (or
    /// with labels too long to brief) is read and briefed here. Returns whether more were
    /// left.
    pub fn scan_brief(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
        mut visit: impl FnMut(u64, u64, Brief<'_>),
    ) -> Result<bool, RecordError> {
        let mut n = 0;
        for item in self.times(from_ms, to_ms) {
            let (t, seq, v) = item?;
            if n >= limit {
                return Ok(true);
            }
            match brief_of(&v) {
                Some(b) => visit(t, seq, b),
                None => {
                    // A key whose entry is gone (a crash mid-retention) is skipped.
                    let Some(s) = self.get(seq)? else { continue };
                    visit(t, seq, s.entry.brief());
                }
            }
            n += 1;
        }
        Ok(false)
    }

    /// The entry `seq`, if kept.
    pub fn get(&self, seq: u64) -> Result<Option<Stored>, RecordError> {
        match self.entries.get(seq.to_be_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Drops entries older than `before_ms` and, past `max_entries` (0: no limit), the oldest.
    /// Returns how many went.
    pub fn enforce_retention(
        &self,
        before_ms: u64,
        max_entries: usize,
    ) -> Result<usize, RecordError> {
        // No write in flight: its index keys and its counts arrive together.
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut dropped = 0;
        let mut drop_key = |k: &[u8], brief: &[u8]| -> Result<(), RecordError> {
            let old = match k.get(8..16) {
                Some(seq) => self.entries.remove(seq)?,
                None => None,
            };
            let old = old.and_then(|v| serde_json::from_slice::<Stored>(&v).ok());
            if let Some(s) = &old
                && let Some(t) = trace_label(&s.entry)
            {
                self.by_trace.remove(trace_key(t, s.seq))?;
            }
            self.by_time.remove(k)?;
            // Uncounted as it was counted: by the index's brief, else the entry's.
            if let Some(t) = k.get(..8).and_then(|t| <[u8; 8]>::try_from(t).ok()) {
                let t = u64::from_be_bytes(t);
                let mut m = self.minutes_lock();
                match (brief_of(brief), &old) {
                    (Some(b), _) => count_in(&mut m, t, b, false),
                    (None, Some(s)) => count_in(&mut m, t, s.entry.brief(), false),
                    (None, None) => {}
                }
            }
            dropped += 1;
            Ok(())
        };
        for item in self.by_time.range(..time_key(before_ms, 0)) {
            let (k, v) = item?;
            drop_key(&k, &v)?;
        }
        let over = match max_entries {
            0 => 0,
            max => self.by_time.len().saturating_sub(max),
        };
        let oldest: Vec<(sled::IVec, sled::IVec)> =
            self.by_time.iter().take(over).collect::<Result<_, _>>()?;
        for (k, v) in oldest {
            drop_key(&k, &v)?;
        }
        if dropped > 0 {
            self.db.flush()?;
        }
        Ok(dropped)
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: u64, kind: &str, text: &str) -> Entry {
        Entry {
            time_ms: t,
            end_ms: None,
            kind: kind.into(),
            text: text.into(),
            labels: vec![("node".into(), "n1".into())],
            flow_filter: Some("DstPort=443".into()),
        }
    }

    #[test]
    fn a_trace_is_read_through_its_index_and_retention_drops_the_index_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = RecordStore::open(dir.path()).unwrap();
        let traced = |t: u64, id: &str| {
            let mut e = entry(t, "span", "s");
            e.labels.push(("trace_id".into(), id.into()));
            e
        };
        s.write(
            "otlp",
            vec![
                traced(100, "aa"),
                entry(150, "log", "x"),
                traced(200, "ab"),
                traced(300, "aa"),
            ],
        )
        .unwrap();
        let q = |id: &str, after: u64| RecordQuery {
            from_ms: 0,
            to_ms: u64::MAX,
            labels: vec![("trace_id".into(), id.into())],
            after_seq: after,
            limit: 100,
            ..Default::default()
        };
        let seqs =
            |id: &str| -> Vec<u64> { s.query(&q(id, 0)).unwrap().iter().map(|x| x.seq).collect() };
        assert_eq!(seqs("aa"), vec![1, 4]);
        assert_eq!(s.query(&q("aa", 1)).unwrap().len(), 1);
        // "a" is a prefix of both ids, never a match.
        assert!(s.query(&q("a", 0)).unwrap().is_empty());
        assert_eq!(s.enforce_retention(250, 0).unwrap(), 3);
        assert_eq!(s.by_trace.len(), 1);
        assert_eq!(seqs("aa"), vec![4]);
    }

    #[test]
    fn write_query_page_and_retain() {
        let dir = tempfile::tempdir().unwrap();
        let s = RecordStore::open(dir.path()).unwrap();
        let seqs = s
            .write(
                "ovs",
                (0..50).map(|i| entry(1000 + i, "ovs-flow", "x")).collect(),
            )
            .unwrap();
        assert_eq!(seqs.first(), Some(&1));
        s.write("corr", vec![entry(1010, "annotation", "restart")])
            .unwrap();
        let all = RecordQuery {
            from_ms: 0,
            to_ms: u64::MAX,
            limit: 100,
            ..Default::default()
        };
        assert_eq!(s.query(&all).unwrap().len(), 51);
        let ann = s
            .query(&RecordQuery {
                kinds: vec!["annotation".into()],
                ..all.clone()
            })
            .unwrap();
        assert_eq!(ann.len(), 1);
        assert_eq!(ann[0].source, "corr");
        assert_eq!(ann[0].entry.text, "restart");
        // Paging by sequence: no gaps, no repeats.
        let (mut after, mut n) = (0, 0);
        loop {
            let page = s
                .query(&RecordQuery {
                    after_seq: after,
                    limit: 7,
                    ..all.clone()
                })
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            n += page.len();
        }
        assert_eq!(n, 51);
        // Bad entries: refused whole, naming the entry and the field.
        let mut bad = entry(1, "Bad Kind", "x");
        let e = s
            .write("p", vec![entry(1, "ok", "x"), bad.clone()])
            .unwrap_err();
        assert!(e.to_string().contains("entry 1: kind \"Bad Kind\""), "{e}");
        bad.kind = "ok".into();
        bad.flow_filter = Some("DstPrt=1".into());
        let e = s.write("p", vec![bad]).unwrap_err();
        assert!(e.to_string().contains("flow filter"), "{e}");
        assert_eq!(s.len(), 51, "nothing of a refused write kept");
        // Retention: by age, then by count.
        assert_eq!(s.enforce_retention(1010, usize::MAX).unwrap(), 10);
        assert_eq!(s.enforce_retention(0, 30).unwrap(), 11);
        assert_eq!(s.len(), 30);
        drop(s);
        let s = RecordStore::open(dir.path()).unwrap();
        assert_eq!(s.query(&all).unwrap().len(), 30, "kept across reopen");
        let next = s.write("p", vec![entry(5000, "ok", "y")]).unwrap();
        assert!(next[0] > 51, "sequence numbers keep growing: {next:?}");
    }

    /// An incident restoring one sequence number twice is refused before anything is written
    /// (it would be counted twice against one index key).
    #[test]
    fn a_restore_with_a_sequence_number_twice_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = RecordStore::open(dir.path()).unwrap();
        let stored = |seq| Stored {
            seq,
            source: "x".into(),
            entry: entry(1000, "log", "l"),
        };
        let e = s.restore(&[stored(3), stored(4), stored(3)]).unwrap_err();
        assert!(
            e.to_string().contains("sequence number 3 given twice"),
            "{e}"
        );
        assert!(s.is_empty());
        assert!(s.minute_counts(0, u64::MAX).is_empty());
        s.restore(&[stored(3), stored(4)]).unwrap();
        assert_eq!(s.minute_counts(0, u64::MAX)[0].2, 2);
        // Retention takes them away from the counts too.
        assert_eq!(s.enforce_retention(2000, 0).unwrap(), 2);
        assert!(s.minute_counts(0, u64::MAX).is_empty());
    }
}
