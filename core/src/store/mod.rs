//! Flow storage: time partitions of sled records indexed by tantivy. Ingest (append + flush)
//! and query (list, aggregate) are kept apart; retention drops whole partitions.

pub mod codec;
pub mod collect;
pub mod columns;
mod index;
mod partition;

pub use collect::{Buckets, GroupKey, Totals};
pub use partition::{WriterConfig, dir_size};

use crate::aggregate::Ranked;
use crate::flow::Flow;
use crate::query::{Expr, Metric, QueryError, SortBy, TimeRange, now_ms};
use crate::schema::FieldDef;
use index::IndexFields;
use partition::Partition;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tantivy::collector::{Count, TopDocs};
use tantivy::{DocAddress, Order};

/// What went wrong in the store, with the kind that decides the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid query {0}")]
    Query(#[from] QueryError),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("record store: {0}")]
    Sled(#[from] sled::Error),
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("record encoding: {0}")]
    Codec(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A query engine elsewhere (ClickHouse) did not answer, or answered with an error.
    #[error("{0}")]
    Backend(String),
}

impl StoreError {
    /// The data itself is damaged (checksums, decoding), as opposed to the system failing to
    /// give access to it.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::Sled(sled::Error::Corruption { .. })
                | StoreError::Codec(_)
                | StoreError::Corrupt(_)
                | StoreError::Index(tantivy::TantivyError::DataCorruption(_))
        )
    }
}

/// Broad classes of errors, for mapping to HTTP statuses and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (400).
    BadRequest,
    /// Something failed on the server side (500).
    Internal,
    /// The query engine the flows live in is unreachable or failing (503).
    Unavailable,
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Query(_) | StoreError::BadRequest(_) => ErrorKind::BadRequest,
            StoreError::Backend(_) => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

/// Refuses more group-by fields than a group key holds.
pub fn check_group_by(group_by: &[&'static FieldDef]) -> Result<(), StoreError> {
    if group_by.len() > crate::query::MAX_GROUP_FIELDS {
        return Err(StoreError::BadRequest(format!(
            "at most {} group-by fields",
            crate::query::MAX_GROUP_FIELDS
        )));
    }
    Ok(())
}

/// Refuses a field whose values are not numbers where values are collected for quantiles.
pub fn check_number_field(value: &FieldDef) -> Result<(), StoreError> {
    if value.kind != crate::schema::FieldKind::U64 {
        return Err(StoreError::BadRequest(format!(
            "{} is not a number field",
            value.name
        )));
    }
    Ok(())
}

impl From<tantivy::directory::error::OpenReadError> for StoreError {
    fn from(e: tantivy::directory::error::OpenReadError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Orders listing hits (sort value, partition, address) as a page shows them.
fn rank(hits: &mut [(u64, usize, DocAddress)], descending: bool) {
    hits.sort_by(|a, b| {
        let c = a.0.cmp(&b.0);
        let c = if descending { c.reverse() } else { c };
        c.then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    });
}

/// The stored records of `seqs` (partition index into `parts`, sequence number), in that
/// order, read from sled a partition at a time; one indexed but not stored is corruption.
fn fetch(parts: &[Arc<Partition>], seqs: &[(usize, u64)]) -> Result<Vec<Flow>, StoreError> {
    // Each partition's records in sequence order, found by binary search and taken once (no
    // hashing and moving of whole records through maps: this is every exporter's read).
    let mut found: Vec<Vec<(u64, Option<Flow>)>> = Vec::with_capacity(parts.len());
    for (pi, p) in parts.iter().enumerate() {
        let mine: Vec<u64> = seqs
            .iter()
            .filter(|(i, _)| *i == pi)
            .map(|(_, s)| *s)
            .collect();
        found.push(if mine.is_empty() {
            Vec::new()
        } else {
            p.get_many(&mine)?
                .into_iter()
                .map(|(s, f)| (s, Some(f)))
                .collect()
        });
    }
    seqs.iter()
        .map(|&(pi, seq)| {
            found
                .get_mut(pi)
                .and_then(|v| {
                    let at = v.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
                    v.get_mut(at)?.1.take()
                })
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "flow {seq} is indexed but not stored in {}",
                        parts
                            .get(pi)
                            .map_or_else(|| "?".into(), |p| p.dir().display().to_string())
                    ))
                })
        })
        .collect()
}

/// Storage settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Data directory; created if missing.
    pub dir: PathBuf,
    /// Length of one time partition in ms.
    pub partition_ms: u64,
    /// Partitions whose newest possible flow is older than this are dropped (0: keep).
    pub retention_age_ms: u64,
    /// Oldest partitions are dropped while the store is larger than this (0: no limit).
    pub retention_bytes: u64,
    /// Partitions not written for this long release their index writer.
    pub writer_idle_ms: u64,
    pub writer: WriterConfig,
}

impl StoreConfig {
    /// Defaults: 1 h partitions, 7 days, 10 GiB, two indexing threads.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            partition_ms: 3_600_000,
            retention_age_ms: 7 * 86_400_000,
            retention_bytes: 10 * 1024 * 1024 * 1024,
            writer_idle_ms: 60_000,
            writer: WriterConfig {
                threads: 2,
                memory_per_thread: 40_000_000,
            },
        }
    }
}

/// A listing request.
#[derive(Debug, Clone)]
pub struct ListRequest {
    pub filter: Expr,
    pub range: TimeRange,
    pub sort: SortBy,
    pub limit: usize,
    pub offset: usize,
}

/// A page of flows and how many matched in all.
#[derive(Debug, Clone, Serialize)]
pub struct ListResult {
    pub total: u64,
    pub flows: Vec<Flow>,
}

/// One partition as `weir status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub start_ms: u64,
    pub end_ms: u64,
    pub flows: u64,
    pub bytes: u64,
}

/// The store as `weir status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    pub dir: String,
    pub flows: u64,
    pub bytes: u64,
    pub partition_ms: u64,
    pub retention_age_ms: u64,
    pub retention_bytes: u64,
    pub partitions: Vec<PartitionStatus>,
    pub dropped_partitions: u64,
}

pub struct Store {
    cfg: StoreConfig,
    root: PathBuf,
    fields: IndexFields,
    partitions: RwLock<BTreeMap<u64, Arc<Partition>>>,
    next_seq: AtomicU64,
    /// Every flow with a sequence number up to this one is durable and visible (set by
    /// [`Store::flush`]): the point a cursor over the store may safely reach.
    durable_seq: AtomicU64,
    /// Serializes appends so sequence numbers reach sled in order.
    append_lock: Mutex<()>,
    /// Partitions removed from the map whose files wait for their last reader.
    graveyard: Mutex<Vec<Arc<Partition>>>,
    dropped: AtomicU64,
}

impl Store {
    /// Opens the store, repairing every partition's index from its records where needed.
    pub fn open(cfg: StoreConfig) -> Result<Self, StoreError> {
        if cfg.partition_ms == 0 {
            return Err(StoreError::BadRequest(
                "partition length must be above 0".into(),
            ));
        }
        let root = cfg.dir.join("partitions");
        std::fs::create_dir_all(&root)?;
        let fields = IndexFields::new();
        let mut parts = BTreeMap::new();
        let mut max_seq = 0;
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some((start, end)) = name.to_str().and_then(Partition::parse_dir_name) else {
                if crate::aside::is_set_aside(&name.to_string_lossy()) {
                    tracing::warn!(path = %entry.path().display(), "a partition set aside as unreadable is kept here: remove it once inspected");
                    continue;
                }
                tracing::warn!(path = %entry.path().display(), "ignoring unknown entry in data directory");
                continue;
            };
            let p = match Partition::open(&root, start, end, &fields, cfg.writer) {
                Ok(p) => p,
                // Not an IO error: a partition another process holds (sled's lock) or cannot
                // read for now stops the start instead of being moved away.
                Err(e) if e.is_corruption() => {
                    // One unreadable partition (its record store damaged) must not keep the
                    // rest from being served: it is set aside, whole, for inspection.
                    let aside = crate::aside::set_aside(&entry.path())?;
                    tracing::error!(partition = %entry.path().display(), error = %e, moved_to = %aside.display(), "partition unreadable: set aside, the others are served");
                    continue;
                }
                Err(e) => return Err(e),
            };
            max_seq = max_seq.max(p.last_seq());
            parts.insert(start, Arc::new(p));
        }
        tracing::info!(dir = %cfg.dir.display(), partitions = parts.len(), last_seq = max_seq, "store opened");
        Ok(Store {
            cfg,
            root,
            fields,
            partitions: RwLock::new(parts),
            next_seq: AtomicU64::new(max_seq + 1),
            durable_seq: AtomicU64::new(max_seq),
            append_lock: Mutex::new(()),
            graveyard: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    fn read_parts(&self) -> Vec<Arc<Partition>> {
        match self.partitions.read() {
            Ok(g) => g.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        }
    }

    /// The partition that holds flows ending at `end_ms`, created if needed.
    fn partition_for(&self, end_ms: u64) -> Result<Arc<Partition>, StoreError> {
        {
            let g = self
                .partitions
                .read()
                .map_err(|_| StoreError::Corrupt("partition lock poisoned".into()))?;
            if let Some((_, p)) = g.range(..=end_ms).next_back()
                && end_ms < p.end_ms
            {
                return Ok(p.clone());
            }
        }
        let mut g = self
            .partitions
            .write()
            .map_err(|_| StoreError::Corrupt("partition lock poisoned".into()))?;
        if let Some((_, p)) = g.range(..=end_ms).next_back()
            && end_ms < p.end_ms
        {
            return Ok(p.clone());
        }
        let len = self.cfg.partition_ms;
        let mut start = end_ms - end_ms % len;
        let mut end = start.saturating_add(len);
        // Partitions made under another length keep their ranges; fit the new one between.
        if let Some((_, prev)) = g.range(..=end_ms).next_back() {
            start = start.max(prev.end_ms);
        }
        if let Some((next_start, _)) = g.range(end_ms + 1..).next() {
            end = end.min(*next_start);
        }
        let p = Arc::new(Partition::open(
            &self.root,
            start,
            end,
            &self.fields,
            self.cfg.writer,
        )?);
        tracing::debug!(start_ms = start, end_ms = end, "partition created");
        g.insert(start, p.clone());
        Ok(p)
    }

    /// Stores flows: durable and visible after the next [`Store::flush`].
    pub fn append(&self, flows: &[Flow]) -> Result<(), StoreError> {
        let _order = self
            .append_lock
            .lock()
            .map_err(|_| StoreError::Corrupt("append lock poisoned".into()))?;
        let now = now_ms();
        type Items<'a> = (Arc<Partition>, Vec<(u64, &'a Flow)>);
        let mut by_part: HashMap<u64, Items<'_>> = HashMap::new();
        for f in flows {
            let p = self.partition_for(f.time_flow_end_ms)?;
            let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
            by_part
                .entry(p.start_ms)
                .or_insert_with(|| (p.clone(), Vec::new()))
                .1
                .push((seq, f));
        }
        for (p, items) in by_part.values() {
            p.append(items, now)?;
        }
        Ok(())
    }

    /// Makes every appended flow durable, then visible to queries; releases idle writers.
    pub fn flush(&self) -> Result<(), StoreError> {
        // Under the append lock no append is half done: every number below `next_seq` has
        // reached its partition, so this flush makes them all durable.
        let upto = {
            let _order = self
                .append_lock
                .lock()
                .map_err(|_| StoreError::Corrupt("append lock poisoned".into()))?;
            self.next_seq.load(Ordering::SeqCst).saturating_sub(1)
        };
        let now = now_ms();
        let parts = self.read_parts();
        flush_all(&parts)?;
        let newest = parts.len().saturating_sub(2);
        for (i, p) in parts.iter().enumerate() {
            let idle = now.saturating_sub(p.last_write_ms.load(Ordering::Relaxed));
            // Only the two newest partitions keep a writer between bursts (late flows).
            if p.has_writer() && (idle > self.cfg.writer_idle_ms || i < newest) {
                p.close_writer()?;
            }
        }
        self.durable_seq.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// The highest sequence number up to which every flow is durable and visible: a cursor
    /// (an exporter's) that stops here never skips a flow a later flush would reveal.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::SeqCst)
    }

    /// Partitions that may hold flows overlapping the range, oldest first.
    fn parts_for(&self, range: &TimeRange) -> Vec<Arc<Partition>> {
        self.read_parts()
            .into_iter()
            .filter(|p| p.end_ms > range.from_ms)
            .collect()
    }

    /// Lists matching flows, sorted, one page.
    pub fn list(&self, req: &ListRequest) -> Result<ListResult, StoreError> {
        // (The limit is the caller's: the API caps it, plugins' listings take more.)
        if req.offset > crate::query::MAX_OFFSET {
            return Err(StoreError::BadRequest(format!(
                "a page starts at row {} at the deepest; narrow the range or the filter",
                crate::query::MAX_OFFSET
            )));
        }
        let query = self.fields.compile(&req.filter, &req.range);
        let want = req.offset.saturating_add(req.limit);
        let order = if req.sort.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        let mut total = 0u64;
        let mut hits: Vec<(u64, usize, DocAddress)> = Vec::new();
        let parts = self.parts_for(&req.range);
        // One searcher per partition for the whole request: a document address means nothing
        // to another searcher (a commit or a merge in between renumbers segments).
        let searchers: Vec<tantivy::Searcher> = parts.iter().map(|p| p.reader.searcher()).collect();
        for (pi, searcher) in searchers.iter().enumerate() {
            let (n, top) = searcher.search(
                &query,
                &(
                    Count,
                    TopDocs::with_limit(want.max(1)).order_by_u64_field(req.sort.field.name, order),
                ),
            )?;
            total += n as u64;
            hits.extend(top.into_iter().map(|(v, a)| (v.unwrap_or(0), pi, a)));
            // Never more than twice a page's depth held, however many partitions.
            if hits.len() > 2 * want {
                rank(&mut hits, req.sort.descending);
                hits.truncate(want);
            }
        }
        rank(&mut hits, req.sort.descending);
        let page: Vec<(usize, DocAddress)> = hits
            .into_iter()
            .skip(req.offset)
            .take(req.limit)
            .map(|(_, pi, a)| (pi, a))
            .collect();
        // Sequence numbers from the index, then records from sled, a partition at a time.
        let mut seqs: Vec<(usize, u64)> = Vec::with_capacity(page.len());
        for (pi, addr) in &page {
            let seq = searchers[*pi]
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64(parts[*pi].seq_field())?
                .first(addr.doc_id)
                .ok_or_else(|| {
                    StoreError::Corrupt("indexed flow without sequence number".into())
                })?;
            seqs.push((*pi, seq));
        }
        let flows = fetch(&parts, &seqs)?;
        Ok(ListResult { total, flows })
    }

    /// Stored flows matching `filter` in `range` whose sequence number is above `after_seq`,
    /// in ascending sequence order, at most `limit`: a cursor over history that resumes
    /// where it stopped. Returns `(seq, flow)` pairs.
    pub fn select(
        &self,
        filter: &Expr,
        range: &TimeRange,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Flow)>, StoreError> {
        let matching = self.fields.compile(filter, range);
        let parts = self.parts_for(range);
        let newest = self.next_seq.load(Ordering::SeqCst).saturating_sub(1);
        // Sequence numbers are dense, so the next `limit` matches usually lie within the next
        // `limit` numbers: search that window first, widening it (x4) until it holds `limit`
        // matches or reaches the newest flow. Each search ranks only its window, not all
        // history after the cursor (an exporter catching up would otherwise rank everything
        // after its cursor for each batch).
        let mut span = limit.max(1) as u64;
        let hits = loop {
            let upto = after_seq.saturating_add(span);
            let bounded = (upto < newest).then_some(upto);
            let hits = self.seq_hits(matching.box_clone(), &parts, after_seq, bounded, limit)?;
            if hits.len() >= limit || bounded.is_none() {
                break hits;
            }
            span = span.saturating_mul(4);
        };
        let flows = fetch(&parts, &hits)?;
        Ok(hits.into_iter().map(|(_, seq)| seq).zip(flows).collect())
    }

    /// (partition, seq) of the first `limit` flows matching `matching` with a sequence number
    /// above `after` (and at most `upto`), lowest first across partitions.
    fn seq_hits(
        &self,
        matching: Box<dyn tantivy::query::Query>,
        parts: &[Arc<Partition>],
        after: u64,
        upto: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(usize, u64)>, StoreError> {
        use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery};
        let term = |seq| tantivy::Term::from_field_u64(self.fields.seq, seq);
        let window: Box<dyn Query> = Box::new(RangeQuery::new(
            std::ops::Bound::Excluded(term(after)),
            upto.map_or(std::ops::Bound::Unbounded, |u| {
                std::ops::Bound::Included(term(u))
            }),
        ));
        let query = BooleanQuery::new(vec![(Occur::Must, matching), (Occur::Must, window)]);
        let mut hits: Vec<(usize, u64)> = Vec::new();
        for (pi, p) in parts.iter().enumerate() {
            let searcher = p.reader.searcher();
            let top = searcher.search(
                &query,
                &TopDocs::with_limit(limit.max(1)).order_by_u64_field(p.seq_field(), Order::Asc),
            )?;
            hits.extend(top.into_iter().filter_map(|(v, _)| v.map(|seq| (pi, seq))));
        }
        hits.sort_unstable_by_key(|(_, seq)| *seq);
        hits.truncate(limit);
        Ok(hits)
    }

    /// Groups matching flows by the given fields (and time buckets), summing each group.
    pub fn aggregate(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        buckets: Option<Buckets>,
    ) -> Result<HashMap<GroupKey, Totals>, StoreError> {
        let (raw, strings) = self.raw_groups(filter, range, group_by, buckets, None)?;
        Ok(raw.into_groups(group_by, &strings, buckets.is_some()))
    }

    /// Groups matching flows under the keys `map` makes from the raw values of `read`
    /// ([`collect::KeyMap`]), summing each group; `out` names a field of the kind of each
    /// slot of the made key (its values are read back as that kind). One pass that folds
    /// many documents into few groups (connections into conversations) instead of grouping
    /// by every field read and folding the groups afterwards.
    pub fn aggregate_mapped(
        &self,
        filter: &Expr,
        range: &TimeRange,
        read: &[&'static FieldDef],
        out: &[&'static FieldDef],
        map: &collect::KeyMap,
    ) -> Result<HashMap<GroupKey, Totals>, StoreError> {
        check_group_by(out)?;
        let (raw, strings) = self.raw_groups(filter, range, read, None, Some((map, out.len())))?;
        Ok(raw.into_groups(out, &strings, false))
    }

    /// The `k` groups largest by `metric`, with what the rest and all add up to: ranked on
    /// raw keys, values built for the `k` shown only (a group per source and destination
    /// over millions of flows is millions of groups).
    pub fn top(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        metric: Metric,
        k: usize,
    ) -> Result<Ranked, StoreError> {
        let (raw, strings) = self.raw_groups(filter, range, group_by, None, None)?;
        Ok(raw.top(
            group_by,
            &strings,
            |t| crate::aggregate::metric_of(t, metric),
            k,
        ))
    }

    fn raw_groups(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        buckets: Option<Buckets>,
        map: Option<(&collect::KeyMap, usize)>,
    ) -> Result<(collect::RawGroups, collect::Strings), StoreError> {
        check_group_by(group_by)?;
        let query = self.fields.compile(filter, range);
        let strings = Mutex::new(collect::Strings::default());
        let grouper = collect::Grouper {
            fields: group_by,
            buckets,
            strings: &strings,
            map,
        };
        let width = grouper.width();
        let raw = self.each_part(
            range,
            || collect::RawGroups::new(width),
            |acc, p| {
                let searcher = p.reader.searcher();
                let weight = query.weight(
                    tantivy::query::EnableScoring::disabled_from_searcher(&searcher),
                )?;
                for reader in searcher.segment_readers() {
                    grouper.segment(&*weight, reader, acc)?;
                }
                Ok(())
            },
            collect::RawGroups::merge,
        )?;
        Ok((raw, strings.into_inner().unwrap_or_else(|p| p.into_inner())))
    }

    /// One numeric field's non-zero values per group of matching flows (`value` must be a
    /// number field), for quantiles: see [`collect::quantiles`].
    pub fn group_values(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        value: &'static FieldDef,
    ) -> Result<collect::GroupValues, StoreError> {
        check_group_by(group_by)?;
        check_number_field(value)?;
        let query = self.fields.compile(filter, range);
        let collector = collect::ValuesCollector {
            fields: group_by.to_vec(),
            value,
        };
        self.search_parts(range, &*query, &collector, collect::merge_values)
    }

    /// Runs a collector over every partition overlapping `range`, partitions spread over the
    /// cores, and merges the fruits.
    fn search_parts<C, F>(
        &self,
        range: &TimeRange,
        query: &dyn tantivy::query::Query,
        collector: &C,
        merge: F,
    ) -> Result<C::Fruit, StoreError>
    where
        C: tantivy::collector::Collector,
        C::Fruit: Default + Send,
        F: Fn(&mut C::Fruit, C::Fruit) + Sync,
    {
        self.each_part(
            range,
            C::Fruit::default,
            |acc, p| {
                let got = p.reader.searcher().search(query, collector)?;
                merge(acc, got);
                Ok(())
            },
            &merge,
        )
    }

    /// Runs `work` on every partition of `range`, a worker per core, each worker adding
    /// into its own accumulator (from `start`); the workers' accumulators are then merged.
    fn each_part<T, S, W, F>(
        &self,
        range: &TimeRange,
        start: S,
        work: W,
        merge: F,
    ) -> Result<T, StoreError>
    where
        T: Send,
        S: Fn() -> T + Sync,
        W: Fn(&mut T, &Partition) -> tantivy::Result<()> + Sync,
        F: Fn(&mut T, T),
    {
        let parts = self.parts_for(range);
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(parts.len())
            .max(1);
        let next = AtomicU64::new(0);
        let results: Vec<Result<T, StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut acc = start();
                        loop {
                            let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                            let Some(p) = parts.get(i) else { break };
                            work(&mut acc, p)?;
                        }
                        Ok(acc)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Corrupt("aggregation worker panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = start();
        for r in results {
            merge(&mut out, r?);
        }
        Ok(out)
    }

    /// Drops partitions past the age limit, then the oldest while over the size limit.
    /// Returns how many were dropped.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut dropped = 0;
        let doomed = self.retention_candidates(now_ms);
        if doomed.is_empty() {
            self.bury()?;
            return Ok(0);
        }
        {
            let mut g = self
                .partitions
                .write()
                .map_err(|_| StoreError::Corrupt("partition lock poisoned".into()))?;
            let mut grave = self
                .graveyard
                .lock()
                .map_err(|_| StoreError::Corrupt("graveyard lock poisoned".into()))?;
            for start in doomed {
                if let Some(p) = g.remove(&start) {
                    tracing::info!(
                        start_ms = p.start_ms,
                        end_ms = p.end_ms,
                        "retention drops partition"
                    );
                    grave.push(p);
                    dropped += 1;
                }
            }
        }
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        self.bury()?;
        Ok(dropped)
    }

    /// Start times of the partitions retention would drop now.
    fn retention_candidates(&self, now_ms: u64) -> Vec<u64> {
        let parts = self.read_parts();
        let newest = parts.last().map(|p| p.start_ms);
        let mut doomed: Vec<u64> = Vec::new();
        if self.cfg.retention_age_ms > 0 {
            let cutoff = now_ms.saturating_sub(self.cfg.retention_age_ms);
            doomed.extend(
                parts
                    .iter()
                    .filter(|p| p.end_ms <= cutoff)
                    .map(|p| p.start_ms),
            );
        }
        if self.cfg.retention_bytes > 0 {
            let mut sizes: Vec<(u64, u64)> = parts
                .iter()
                .filter(|p| !doomed.contains(&p.start_ms))
                .map(|p| (p.start_ms, p.size_bytes()))
                .collect();
            let mut total: u64 = sizes.iter().map(|s| s.1).sum();
            sizes.reverse();
            while total > self.cfg.retention_bytes && sizes.len() > 1 {
                if let Some((start, size)) = sizes.pop() {
                    if Some(start) == newest {
                        break;
                    }
                    doomed.push(start);
                    total -= size;
                }
            }
        }
        doomed
    }

    /// Deletes the files of dropped partitions nobody reads any more.
    fn bury(&self) -> Result<(), StoreError> {
        let mut grave = self
            .graveyard
            .lock()
            .map_err(|_| StoreError::Corrupt("graveyard lock poisoned".into()))?;
        let pending = std::mem::take(&mut *grave);
        for p in pending {
            match Arc::try_unwrap(p) {
                Ok(p) => {
                    let dir = p.dir().to_path_buf();
                    drop(p);
                    std::fs::remove_dir_all(&dir)?;
                }
                Err(p) => grave.push(p),
            }
        }
        Ok(())
    }

    pub fn status(&self) -> StoreStatus {
        let partitions: Vec<PartitionStatus> = self
            .read_parts()
            .iter()
            .map(|p| PartitionStatus {
                start_ms: p.start_ms,
                end_ms: p.end_ms,
                flows: p.num_flows(),
                bytes: p.size_bytes(),
            })
            .collect();
        StoreStatus {
            dir: self.cfg.dir.display().to_string(),
            flows: partitions.iter().map(|p| p.flows).sum(),
            bytes: partitions.iter().map(|p| p.bytes).sum(),
            partition_ms: self.cfg.partition_ms,
            retention_age_ms: self.cfg.retention_age_ms,
            retention_bytes: self.cfg.retention_bytes,
            partitions,
            dropped_partitions: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }
}

/// Flushes every partition with appended records; several at once (a batch of imports
/// often spans a partition boundary) on up to one thread per core, so their index commits,
/// which wait for each writer's indexing thread to write its segment, run side by side.
fn flush_all(parts: &[Arc<Partition>]) -> Result<(), StoreError> {
    let dirty: Vec<&Arc<Partition>> = parts.iter().filter(|p| p.is_dirty()).collect();
    if dirty.len() <= 1 {
        return dirty.iter().try_for_each(|p| p.flush());
    }
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    flush_side_by_side(&dirty, cores)
}

/// Flushes the partitions on up to `workers` threads (this one among them), each taking the
/// next partition until none is left. Every partition is tried: the first error is returned
/// after all have finished (a failed partition stays dirty); a panic in one goes on to the
/// caller once the others are done, as it did inline.
fn flush_side_by_side(dirty: &[&Arc<Partition>], workers: usize) -> Result<(), StoreError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut first = Ok(());
        while let Some(p) = dirty.get(next.fetch_add(1, Ordering::Relaxed)) {
            let r = p.flush();
            if first.is_ok() {
                first = r;
            }
        }
        first
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..workers.min(dirty.len()))
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("weir-flush".into())
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        // This thread works too (and alone if no thread could be started).
        let mut first = work();
        for h in handles {
            match h.join() {
                Ok(r) => {
                    if first.is_ok() {
                        first = r;
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        first
    })
}

#[cfg(test)]
pub(crate) mod tests;
