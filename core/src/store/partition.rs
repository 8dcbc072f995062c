//! One time partition: a sled tree of records keyed by sequence number, and the tantivy index
//! over them. Dropped whole for retention.
//!
//! Crash safety: records reach sled first and are flushed to disk before the index commits, and
//! each index commit carries the highest sequence number it covers. On open, records in sled
//! beyond that number are indexed again, and indexed records beyond the last one in sled (which
//! the write order should make impossible) are deleted. So index and store always agree.
//!
//! A full disk: a failed index write drops the writer and the next flush indexes again from
//! sled. A failed sled write (sled refuses every write after an IO error until opened again)
//! drops the index writer too (its documents may name records sled lost) and the next flush
//! opens sled again in place, then indexes from it; nothing acknowledged is in either.

use super::StoreError;
use super::codec;
use super::index::{IndexFields, SEQ_FIELD};
use crate::flow::Flow;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use tantivy::directory::MmapDirectory;
use tantivy::indexer::{IndexWriterOptions, UserOperation};
use tantivy::query::RangeQuery;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Term};

/// Index writer sizing.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub threads: usize,
    pub memory_per_thread: usize,
}

pub struct Partition {
    pub start_ms: u64,
    /// Exclusive.
    pub end_ms: u64,
    dir: PathBuf,
    /// The record store; `None` while it is being opened again after a failed write.
    db: RwLock<Option<sled::Db>>,
    /// sled failed a write: the next flush opens it again (see the module docs).
    sled_failed: AtomicBool,
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
    fields: IndexFields,
    writer_cfg: WriterConfig,
    /// Highest sequence number appended (0: none).
    appended_seq: AtomicU64,
    dirty: AtomicBool,
    /// The index writer failed (a full disk): it was dropped, appends go to sled only, and the
    /// next flush indexes again from sled what the index's last commit does not cover.
    broken: AtomicBool,
    /// Unix ms of the last append, to close idle writers.
    pub(crate) last_write_ms: AtomicU64,
}

fn open_records(dir: &Path) -> Result<sled::Db, StoreError> {
    // sled's default 512 KiB segments: with 64 KiB ones the same blocks took a quarter less
    // disk, but dropping a handle after a failed write (a full disk) then hung in sled's
    // flush every time, where with 512 KiB it returns.
    Ok(sled::Config::new()
        .path(dir.join("records"))
        .cache_capacity(8 * 1024 * 1024)
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .open()?)
}

/// The highest sequence number in a record store (0: none).
fn stored_last_seq(db: &sled::Db) -> Result<u64, StoreError> {
    Ok(match db.last()? {
        Some((_, v)) => codec::decode_block(&v)?
            .last()
            .map(|(s, _)| *s)
            .unwrap_or(0),
        None => 0,
    })
}

fn payload_seq(payload: Option<&str>) -> Option<u64> {
    payload?.strip_prefix("seq=")?.parse().ok()
}

impl Partition {
    pub fn dir_name(start_ms: u64, end_ms: u64) -> String {
        format!("{start_ms}-{end_ms}")
    }

    /// Reads `<start>-<end>` back.
    pub fn parse_dir_name(name: &str) -> Option<(u64, u64)> {
        let (a, b) = name.split_once('-')?;
        let (a, b) = (a.parse().ok()?, b.parse().ok()?);
        (a < b).then_some((a, b))
    }

    /// Opens (or creates) the partition and repairs its index from sled if they disagree.
    pub fn open(
        root: &Path,
        start_ms: u64,
        end_ms: u64,
        fields: &IndexFields,
        writer_cfg: WriterConfig,
    ) -> Result<Self, StoreError> {
        let dir = root.join(Self::dir_name(start_ms, end_ms));
        let db = open_records(&dir)?;
        let index_dir = dir.join("index");
        let (index, reader) = match searchable(&index_dir, fields) {
            Ok(ir) => ir,
            Err(e) => {
                // Set aside, never deleted: the records in sled are the truth, and the repair
                // below indexes them all again.
                let aside = crate::aside::set_aside(&index_dir)?;
                tracing::error!(partition = %dir.display(), error = %e, moved_to = %aside.display(), "index unreadable: set aside, rebuilding it from the record store");
                searchable(&index_dir, fields)?
            }
        };
        let last_seq = stored_last_seq(&db)?;
        let p = Partition {
            start_ms,
            end_ms,
            dir,
            db: RwLock::new(Some(db)),
            sled_failed: AtomicBool::new(false),
            index,
            reader,
            writer: Mutex::new(None),
            fields: fields.clone(),
            writer_cfg,
            appended_seq: AtomicU64::new(last_seq),
            dirty: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            last_write_ms: AtomicU64::new(0),
        };
        p.repair(last_seq)?;
        p.drop_index_before_fields(last_seq)?;
        Ok(p)
    }

    /// Once the index is rebuilt, removes the one from before new fields; unless it reached
    /// further than the record store, which then lost records (as [`Self::repair`] says of
    /// an index of this build's).
    fn drop_index_before_fields(&self, last_seq: u64) -> Result<(), StoreError> {
        let before = self.dir.join(INDEX_BEFORE_FIELDS);
        if !before.exists() {
            return Ok(());
        }
        let reached = MmapDirectory::open(&before)
            .ok()
            .and_then(|d| Index::open(d).ok())
            .and_then(|i| i.load_metas().ok())
            .and_then(|m| payload_seq(m.payload.as_deref()));
        if let Some(s) = reached
            && s > last_seq
        {
            return Err(StoreError::Corrupt(format!(
                "the record store ends at flow {last_seq} but its index (from before new fields, kept in {INDEX_BEFORE_FIELDS}) reaches {s}: records were lost (damaged files)"
            )));
        }
        std::fs::remove_dir_all(&before)?;
        Ok(())
    }

    fn repair(&self, last_seq: u64) -> Result<(), StoreError> {
        let metas = self.index.load_metas()?;
        let docs: u32 = metas.segments.iter().map(|s| s.num_docs()).sum();
        let indexed = match payload_seq(metas.payload.as_deref()) {
            Some(s) => s,
            None if docs == 0 => 0,
            None => u64::MAX, // unknown coverage: drop everything and index again
        };
        if indexed == last_seq {
            return Ok(());
        }
        if indexed > last_seq && indexed != u64::MAX {
            // sled is flushed before every index commit, so its records always reach at least
            // as far as the index: fewer means the record store lost data (damaged files that
            // sled's recovery cut short). Not "repaired" by deleting from the index.
            return Err(StoreError::Corrupt(format!(
                "the record store ends at flow {last_seq} but its index reaches {indexed}: records were lost (damaged files)"
            )));
        }
        let mut guard = self.lock_writer()?;
        let writer = self.writer_in(&mut guard)?;
        let from = if indexed == u64::MAX {
            // Unknown coverage: every document goes and all of sled is indexed again.
            writer.delete_query(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_u64(self.fields.seq, 0)),
                Bound::Unbounded,
            )))?;
            0
        } else {
            indexed
        };
        let mut n = 0u64;
        // Start at the block holding `from + 1` (it may begin earlier).
        let db = self.db()?;
        let start = match db.range(..=codec::key(from.saturating_add(1))).next_back() {
            Some(item) => item?.0.to_vec(),
            None => codec::key(0).to_vec(),
        };
        for item in db.range(start..) {
            let (_, v) = item?;
            for (seq, flow) in codec::decode_block(&v)? {
                if seq > from {
                    writer.add_document(self.fields.document(seq, &flow))?;
                    n += 1;
                }
            }
        }
        commit(writer, last_seq)?;
        self.reader.reload()?;
        tracing::info!(partition = %self.dir.display(), reindexed = n, indexed_before = indexed, stored = last_seq, "repaired index from record store");
        Ok(())
    }

    /// The record store (a handle: cheap to clone).
    pub(crate) fn db(&self) -> Result<sled::Db, StoreError> {
        let g = self
            .db
            .read()
            .map_err(|_| StoreError::Corrupt("record store lock poisoned".into()))?;
        g.clone().ok_or_else(|| {
            StoreError::Sled(sled::Error::Unsupported(
                "being opened again after a failed write (a full disk?); retry shortly".into(),
            ))
        })
    }

    /// Notes a failed sled write: sled is opened again at the next flush, and the index
    /// writer goes now (its uncommitted documents may name records sled did not keep).
    fn sled_error(&self, e: sled::Error, guard: &mut Option<IndexWriter>) -> StoreError {
        if matches!(e, sled::Error::Io(_) | sled::Error::ReportableBug(_)) {
            // Dirty, so the next flush comes here to open sled again.
            self.dirty.store(true, Ordering::SeqCst);
            if !self.sled_failed.swap(true, Ordering::SeqCst) {
                tracing::warn!(partition = %self.dir.display(), error = %e, "record store write failed: it is opened again at the next flush");
            }
            self.break_writer(guard);
        }
        StoreError::Sled(e)
    }

    /// Opens sled again in place after a failed write. Its lock is only free once every handle
    /// is gone (a query in flight holds one): until then this fails and the next flush retries.
    fn reopen_records(&self) -> Result<(), StoreError> {
        let mut g = self
            .db
            .write()
            .map_err(|_| StoreError::Corrupt("record store lock poisoned".into()))?;
        if let Some(old) = g.take() {
            // Dropping the last handle flushes, and sled's flush after a failed write can wait
            // forever: drop it on a thread of its own, and give up (keeping every other
            // partition written) rather than stall the ingest stage behind it.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                drop(old);
                let _ = tx.send(());
            });
            if rx.recv_timeout(std::time::Duration::from_secs(5)).is_err() {
                tracing::error!(partition = %self.dir.display(), "the failed record store did not close: restart the agent to write this partition again");
                return Err(StoreError::Corrupt(
                    "the failed record store did not close (sled is stuck flushing it); restart the agent".into(),
                ));
            }
        }
        let db = open_records(&self.dir)?;
        // What sled kept: records appended since the last good flush may be gone (never
        // acknowledged); the index is brought to this by the repair that follows.
        let last = stored_last_seq(&db)?;
        self.appended_seq.store(last, Ordering::SeqCst);
        *g = Some(db);
        self.sled_failed.store(false, Ordering::SeqCst);
        tracing::info!(partition = %self.dir.display(), last_seq = last, "record store opened again");
        Ok(())
    }

    fn lock_writer(&self) -> Result<std::sync::MutexGuard<'_, Option<IndexWriter>>, StoreError> {
        self.writer
            .lock()
            .map_err(|_| StoreError::Corrupt("index writer lock poisoned".into()))
    }

    fn writer_in<'a>(
        &self,
        guard: &'a mut Option<IndexWriter>,
    ) -> Result<&'a mut IndexWriter, StoreError> {
        if guard.is_none() {
            let opts = IndexWriterOptions::builder()
                .num_worker_threads(self.writer_cfg.threads.max(1))
                .memory_budget_per_thread(self.writer_cfg.memory_per_thread.max(15_000_000))
                .num_merge_threads(1)
                .build();
            *guard = Some(self.index.writer_with_options(opts)?);
        }
        guard
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt("index writer missing".into()))
    }

    /// Writes records to sled and hands them to the index writer (visible after [`flush`]).
    pub fn append(&self, items: &[(u64, &Flow)], now_ms: u64) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, block) in codec::encode_blocks(items)? {
            batch.insert(&key, block);
        }
        if let Err(e) = self.db()?.apply_batch(batch) {
            let mut guard = self.lock_writer()?;
            return Err(self.sled_error(e, &mut guard));
        }
        let max = items.iter().map(|(s, _)| *s).max().unwrap_or(0);
        let mut guard = self.lock_writer()?;
        // Under the writer lock: a flush (which takes it to commit) never records a sequence
        // number whose documents have not reached the writer yet.
        self.appended_seq.fetch_max(max, Ordering::SeqCst);
        self.dirty.store(true, Ordering::SeqCst);
        self.last_write_ms.store(now_ms, Ordering::Relaxed);
        if self.broken.load(Ordering::SeqCst) {
            // In sled: the repair at the next flush indexes them.
            return Ok(());
        }
        let writer = self.writer_in(&mut guard)?;
        // One batch per call: far fewer channel operations than a document at a time.
        let run = writer.run(
            items
                .iter()
                .map(|(seq, flow)| UserOperation::Add(self.fields.document(*seq, flow))),
        );
        if run.is_err() {
            self.break_writer(&mut guard);
        }
        run?;
        Ok(())
    }

    /// Drops a failed index writer: a tantivy writer whose indexing or commit failed (a full
    /// disk) loses documents sent to it afterwards while its commits still succeed, so flows
    /// acknowledged after the disk had room again never became visible. The repair at the
    /// next flush indexes them from sled.
    fn break_writer(&self, guard: &mut Option<IndexWriter>) {
        self.broken.store(true, Ordering::SeqCst);
        // Its threads stopped with the error; whatever they still held is in sled.
        drop(guard.take());
        tracing::warn!(partition = %self.dir.display(), "index writer failed: dropped; the next flush indexes again from the record store");
    }

    /// Whether appended records wait for a flush.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// Makes appended records durable (sled first), then visible (index commit).
    /// A flush that fails leaves the partition dirty, so the next one tries again (and the
    /// store's durable point does not move past what this one did not commit).
    pub fn flush(&self) -> Result<(), StoreError> {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let result = self.try_flush();
        if result.is_err() {
            self.dirty.store(true, Ordering::SeqCst);
        }
        result
    }

    fn try_flush(&self) -> Result<(), StoreError> {
        let mut guard = self.lock_writer()?;
        // (While sled is closed, `sled_failed` stays set: a failed reopen leaves it so.)
        if self.sled_failed.load(Ordering::SeqCst) {
            self.reopen_records()?;
        }
        let started = std::time::Instant::now();
        if let Err(e) = self.db()?.flush() {
            return Err(self.sled_error(e, &mut guard));
        }
        let synced = started.elapsed();
        let seq = self.appended_seq.load(Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            drop(guard);
            if let Err(e) = self.repair(seq) {
                // Still failing: the writer the repair made goes too.
                drop(self.lock_writer()?.take());
                return Err(e);
            }
            self.broken.store(false, Ordering::SeqCst);
            tracing::info!(partition = %self.dir.display(), "index writer recovered");
            return Ok(());
        }
        if let Some(w) = guard.as_mut()
            && let Err(e) = commit(w, seq)
        {
            self.break_writer(&mut guard);
            return Err(e);
        }
        drop(guard);
        let committed = started.elapsed();
        self.reader.reload()?;
        tracing::debug!(
            sled_ms = synced.as_secs_f64() * 1e3,
            commit_ms = (committed - synced).as_secs_f64() * 1e3,
            reload_ms = (started.elapsed() - committed).as_secs_f64() * 1e3,
            "partition flushed"
        );
        Ok(())
    }

    /// Flushes and releases the index writer's memory (for partitions no longer written).
    pub fn close_writer(&self) -> Result<(), StoreError> {
        self.flush()?;
        let mut guard = self.lock_writer()?;
        if let Some(w) = guard.take() {
            w.wait_merging_threads()?;
        }
        Ok(())
    }

    pub fn has_writer(&self) -> bool {
        self.writer.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// The stored records of some sequence numbers (each block decoded once), in sequence
    /// order, each once; a number not stored is left out.
    pub fn get_many(&self, seqs: &[u64]) -> Result<Vec<(u64, Flow)>, StoreError> {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = Vec::with_capacity(sorted.len());
        let db = self.db()?;
        let mut i = 0;
        while i < sorted.len() {
            // The block that would hold sorted[i]; it may hold later ones too.
            let Some(item) = db.range(..=codec::key(sorted[i])).next_back() else {
                i += 1;
                continue;
            };
            let (_, bytes) = item?;
            let wanted = &sorted[i..];
            let mut last = 0;
            let found = codec::decode_block_where(&bytes, &mut |s| {
                last = s;
                wanted.binary_search(&s).is_ok()
            })?;
            out.extend(found);
            // Past every wanted record up to the block's last (at least one step).
            i += wanted.partition_point(|&s| s <= last).max(1);
        }
        // Blocks hold ascending runs in key order, so this is sorted already but for a
        // block written out of order.
        if !out.is_sorted_by_key(|(s, _)| *s) {
            out.sort_by_key(|(s, _)| *s);
        }
        out.dedup_by_key(|(s, _)| *s);
        Ok(out)
    }

    /// Highest sequence number stored.
    pub fn last_seq(&self) -> u64 {
        self.appended_seq.load(Ordering::SeqCst)
    }

    /// Documents visible to queries.
    pub fn num_flows(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Bytes on disk (records and index).
    pub fn size_bytes(&self) -> u64 {
        dir_size(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn seq_field(&self) -> &'static str {
        SEQ_FIELD
    }
}

fn commit(writer: &mut IndexWriter, seq: u64) -> Result<(), StoreError> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&format!("seq={seq}"));
    prepared.commit()?;
    Ok(())
}

/// The index and a reader over it: opening the reader opens every segment, so a truncated or
/// damaged segment file is found here.
fn searchable(dir: &Path, fields: &IndexFields) -> Result<(Index, IndexReader), StoreError> {
    let index = open_index(dir, fields)?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    Ok((index, reader))
}

/// A new index's settings. No field is stored, so tantivy's document store holds only an
/// empty document and its 4-byte offset per flow; zstd (which matches 3-byte runs) keeps
/// those in about a byte where lz4 (4-byte matches) kept all four. Nothing reads the store,
/// so its decompression costs nothing; indexes made before keep lz4 (their meta says so).
fn index_settings() -> tantivy::IndexSettings {
    tantivy::IndexSettings {
        docstore_compression: tantivy::store::Compressor::Zstd(tantivy::store::ZstdCompressor {
            compression_level: Some(3),
        }),
        ..Default::default()
    }
}

fn open_index(dir: &Path, fields: &IndexFields) -> Result<Index, StoreError> {
    std::fs::create_dir_all(dir)?;
    let d = MmapDirectory::open(dir).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if !Index::exists(&d).map_err(|e| StoreError::Corrupt(e.to_string()))? {
        return Ok(Index::create(d, fields.schema.clone(), index_settings())?);
    }
    let index = Index::open(d)?;
    if !same_but_fieldnorms(&index.schema(), &fields.schema) {
        if let Some(added) = fields_added(&index.schema(), &fields.schema) {
            // Written before this build's newer fields: made again from the record store
            // (the partition's repair), not set aside as if damaged. The old one is kept
            // beside until the repair has succeeded (`Partition::open`).
            tracing::info!(index = %dir.display(), added = %added.join(", "), "index from before new fields: rebuilding it from the record store");
            drop(index);
            let before = dir.with_file_name(INDEX_BEFORE_FIELDS);
            if before.exists() {
                std::fs::remove_dir_all(&before)?;
            }
            std::fs::rename(dir, &before)?;
            std::fs::create_dir_all(dir)?;
            let d = MmapDirectory::open(dir).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            return Ok(Index::create(d, fields.schema.clone(), index_settings())?);
        }
        return Err(StoreError::Corrupt(
            "the index's schema is not this build's (fields differ)".into(),
        ));
    }
    Ok(index)
}

/// Where an index from before new fields waits, beside the partition's `index`, until the
/// rebuilt one has every record.
const INDEX_BEFORE_FIELDS: &str = "index.before-new-fields";

/// The fields `new` adds when it is `old` and more (every field of `old` the same, up to
/// fieldnorms); None when they differ otherwise or add nothing.
fn fields_added(
    old: &tantivy::schema::Schema,
    new: &tantivy::schema::Schema,
) -> Option<Vec<String>> {
    let entries = |s: &tantivy::schema::Schema| -> Option<Vec<(String, serde_json::Value)>> {
        let mut v = serde_json::to_value(s).ok()?;
        strip_fieldnorms(&mut v);
        v.as_array()?
            .iter()
            .map(|e| Some((e.get("name")?.as_str()?.to_string(), e.clone())))
            .collect()
    };
    let (old, new) = (entries(old)?, entries(new)?);
    let kept = old
        .iter()
        .all(|(n, e)| new.iter().any(|(m, f)| m == n && f == e));
    let added: Vec<String> = new
        .iter()
        .filter(|(m, _)| !old.iter().any(|(n, _)| n == m))
        .map(|(m, _)| m.clone())
        .collect();
    (kept && !added.is_empty()).then_some(added)
}

fn strip_fieldnorms(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("fieldnorms");
            m.values_mut().for_each(strip_fieldnorms);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_fieldnorms),
        _ => {}
    }
}

/// Whether an existing index's schema is this build's, up to fieldnorms: indexes written
/// before 2026-12 keep a norm byte per document for every indexed text field (weir never
/// scores), and are read as they are rather than rebuilt.
fn same_but_fieldnorms(old: &tantivy::schema::Schema, new: &tantivy::schema::Schema) -> bool {
    match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(mut a), Ok(mut b)) => {
            strip_fieldnorms(&mut a);
            strip_fieldnorms(&mut b);
            a == b
        }
        _ => false,
    }
}

/// Total size of the files below a directory.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::schema::{IndexRecordOption, Schema, TextFieldIndexing, TextOptions};

    /// This build's schema with fieldnorms on every indexed text field, as indexes written
    /// before 2026-12 have it; or without one field.
    fn older(fields: &IndexFields, drop: Option<&str>) -> Schema {
        let mut b = Schema::builder();
        for (_, entry) in fields.schema.fields() {
            if Some(entry.name()) == drop {
                continue;
            }
            let mut entry = entry.clone();
            if let tantivy::schema::FieldType::Str(o) = entry.field_type()
                && o.get_indexing_options().is_some()
            {
                let normed = TextOptions::default()
                    .set_indexing_options(
                        TextFieldIndexing::default()
                            .set_tokenizer("raw")
                            .set_index_option(IndexRecordOption::Basic)
                            .set_fieldnorms(true),
                    )
                    .set_fast("raw");
                entry = tantivy::schema::FieldEntry::new_text(entry.name().to_string(), normed);
            }
            b.add_field(entry);
        }
        b.build()
    }

    #[test]
    fn an_index_with_fieldnorms_opens_as_it_is_one_before_new_fields_is_rebuilt_and_another_is_refused()
     {
        let fields = IndexFields::new();
        let old = older(&fields, None);
        assert_ne!(old, fields.schema, "the older schema differs (fieldnorms)");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("index");
        std::fs::create_dir_all(&dir).unwrap();
        Index::create_in_dir(&dir, old).unwrap();
        let index = open_index(&dir, &fields).unwrap();
        // Opened with its own schema: its text fields keep their norms.
        assert!(index.schema().fields().any(|(_, e)| matches!(
            e.field_type(),
            tantivy::schema::FieldType::Str(o) if o.get_indexing_options().is_some_and(|i| i.fieldnorms())
        )));

        // Written before a field was added: made again, empty, with this build's schema
        // (the partition's repair then indexes its records again).
        let before = tmp.path().join("before");
        std::fs::create_dir_all(&before).unwrap();
        Index::create_in_dir(&before, older(&fields, Some("DnsName"))).unwrap();
        let index = open_index(&before, &fields).unwrap();
        assert_eq!(index.schema(), fields.schema);

        // A field this build does not know: not ours to rebuild silently.
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        let mut b = Schema::builder();
        for (_, entry) in fields.schema.fields() {
            b.add_field(entry.clone());
        }
        b.add_u64_field("Gone", tantivy::schema::FAST);
        Index::create_in_dir(&other, b.build()).unwrap();
        let e = open_index(&other, &fields).unwrap_err().to_string();
        assert!(e.contains("fields differ"), "{e}");
        assert!(fields_added(&fields.schema, &fields.schema).is_none());
    }
}
