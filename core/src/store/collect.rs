//! Aggregation over fast fields: group by any set of fields (and optionally a time bucket),
//! summing bytes and packets (scaled back by sampling) and counting flows.

use crate::schema::{FieldDef, FieldKind, Value};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv6Addr;
use std::sync::Mutex;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

/// Sums of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
    /// Dropped bytes and packets (PktDropBytes, PktDropPackets), scaled like the others.
    pub drop_bytes: u64,
    pub drop_packets: u64,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.packets = self.packets.saturating_add(o.packets);
        self.flows = self.flows.saturating_add(o.flows);
        self.drop_bytes = self.drop_bytes.saturating_add(o.drop_bytes);
        self.drop_packets = self.drop_packets.saturating_add(o.drop_packets);
    }

    /// What is left of `self` once `o` is taken out (the "others" beside a top-N), never
    /// below zero.
    pub fn saturating_sub(&self, o: &Totals) -> Totals {
        Totals {
            bytes: self.bytes.saturating_sub(o.bytes),
            packets: self.packets.saturating_sub(o.packets),
            flows: self.flows.saturating_sub(o.flows),
            drop_bytes: self.drop_bytes.saturating_sub(o.drop_bytes),
            drop_packets: self.drop_packets.saturating_sub(o.drop_packets),
        }
    }
}

/// A group key: the grouped values, then the bucket start (ms) when bucketing.
pub type GroupKey = (Vec<Value>, Option<u64>);

/// Time bucketing by TimeFlowEndMs.
#[derive(Debug, Clone, Copy)]
pub struct Buckets {
    pub origin_ms: u64,
    pub step_ms: u64,
}

enum Col {
    U64(Column<u64>),
    Ip(Column<Ipv6Addr>),
    Str(Option<StrColumn>),
}

const MAX_KEY: usize = crate::query::MAX_GROUP_FIELDS;

/// The group-by columns of one segment: raw keys per document, and values back from them.
struct KeyCols {
    cols: Vec<Col>,
}

/// Raw key: per field a u128 (numbers, addresses, or segment-local string ordinals), and a
/// slot for the bucket.
type RawKey = [u128; MAX_KEY + 1];

impl KeyCols {
    fn open(fields: &[&'static FieldDef], reader: &SegmentReader) -> tantivy::Result<KeyCols> {
        let ff = reader.fast_fields();
        let cols = fields
            .iter()
            .map(|f| {
                Ok(match f.kind {
                    FieldKind::U64 => Col::U64(ff.u64(f.name)?),
                    FieldKind::Ip => Col::Ip(ff.ip_addr(f.name)?),
                    FieldKind::Str => Col::Str(ff.str(f.name)?),
                })
            })
            .collect::<tantivy::Result<Vec<_>>>()?;
        Ok(KeyCols { cols })
    }

    fn key(&self, doc: DocId) -> RawKey {
        let mut key = [0u128; MAX_KEY + 1];
        for (slot, col) in key.iter_mut().zip(&self.cols) {
            *slot = match col {
                Col::U64(c) => u128::from(c.first(doc).unwrap_or(0)),
                Col::Ip(c) => c.first(doc).map(u128::from).unwrap_or(0),
                Col::Str(Some(c)) => c
                    .term_ords(doc)
                    .next()
                    .map(|o| u128::from(o) + 1)
                    .unwrap_or(0),
                Col::Str(None) => 0,
            };
        }
        key
    }

    fn values(&self, raw: &RawKey, s: &mut String) -> Vec<Value> {
        self.cols
            .iter()
            .zip(raw.iter())
            .map(|(col, r)| match col {
                Col::U64(_) => Value::U64(*r as u64),
                Col::Ip(_) => Value::Ip(Ipv6Addr::from(*r)),
                Col::Str(Some(c)) if *r > 0 => {
                    s.clear();
                    match c.ord_to_str((*r - 1) as u64, s) {
                        Ok(true) => Value::Str(s.clone()),
                        _ => Value::Str(String::new()),
                    }
                }
                Col::Str(_) => Value::Str(String::new()),
            })
            .collect()
    }
}

/// Strings met as group keys, each once, by id (`id - 1` indexes `list`; 0 is the empty
/// string): segments' ordinals are local, ids are shared by every segment of an aggregation,
/// so groups merge across segments and partitions without turning keys into strings.
#[derive(Debug, Default)]
pub struct Strings {
    list: Vec<String>,
    ids: HashMap<String, u128>,
}

impl Strings {
    fn id(&mut self, s: &str) -> u128 {
        if s.is_empty() {
            return 0;
        }
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        self.list.push(s.to_string());
        let id = self.list.len() as u128;
        self.ids.insert(s.to_string(), id);
        id
    }

    fn get(&self, id: u128) -> &str {
        match id.checked_sub(1) {
            Some(i) => self.list.get(i as usize).map(String::as_str).unwrap_or(""),
            None => "",
        }
    }
}

/// Groups with raw keys (numbers and addresses as themselves, strings as [`Strings`] ids,
/// then the bucket start when bucketing), `width` slots each, kept flat: the keys in one
/// vector, the sums in another, a table of indexes over them. A group over two addresses
/// takes ~80 bytes, not a map entry sized for six fields and a heap key.
#[derive(Debug, Default)]
pub struct RawGroups {
    width: usize,
    keys: Vec<u128>,
    totals: Vec<Totals>,
    table: hashbrown::HashTable<u32>,
    /// Seeded per table: keys are addresses and ports senders choose.
    hasher: foldhash::fast::RandomState,
}

impl RawGroups {
    /// No groups yet, keys of `width` slots.
    pub fn new(width: usize) -> RawGroups {
        RawGroups {
            width,
            ..RawGroups::default()
        }
    }

    /// Adds `t` to the group `key` (`width` slots).
    pub fn add(&mut self, key: &[u128], t: &Totals) {
        let (w, keys, hasher) = (self.width, &self.keys, &self.hasher);
        let at = |i: u32| &keys[i as usize * w..][..w];
        let h = hash(hasher, key);
        match self
            .table
            .entry(h, |&i| same(at(i), key), |&i| hash(hasher, at(i)))
        {
            hashbrown::hash_table::Entry::Occupied(e) => {
                if let Some(sums) = self.totals.get_mut(*e.get() as usize) {
                    sums.add(t);
                }
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(self.totals.len() as u32);
                self.keys.extend_from_slice(key);
                self.totals.push(*t);
            }
        }
    }

    /// Adds every group of `from` (the larger table kept, the smaller added to it).
    pub fn merge(&mut self, mut from: RawGroups) {
        if from.len() > self.len() {
            std::mem::swap(self, &mut from);
        }
        if from.is_empty() {
            return;
        }
        debug_assert_eq!(from.width, self.width, "groups of one aggregation");
        for (key, t) in from.iter() {
            self.add(key, t);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&[u128], &Totals)> {
        let w = self.width;
        self.totals
            .iter()
            .enumerate()
            .map(move |(i, t)| (&self.keys[i * w..(i + 1) * w], t))
    }

    /// How many groups.
    pub fn len(&self) -> usize {
        self.totals.len()
    }

    /// No group at all.
    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }

    /// Every group with its values (the bucket, the last slot, only when `bucketed`).
    pub fn into_groups(
        self,
        fields: &[&'static FieldDef],
        strings: &Strings,
        bucketed: bool,
    ) -> HashMap<GroupKey, Totals> {
        let mut out = HashMap::with_capacity(self.len());
        for (raw, t) in self.iter() {
            let bucket = bucketed.then(|| raw.last().copied().unwrap_or(0) as u64);
            out.insert((values(fields, strings, raw), bucket), *t);
        }
        out
    }

    /// The `k` groups largest by `metric` (ties by their values, as
    /// [`crate::aggregate::rank`] orders them), with the sums of the rest and of all,
    /// values built for those `k` only.
    pub fn top(
        &self,
        fields: &[&'static FieldDef],
        strings: &Strings,
        metric: impl Fn(&Totals) -> u64,
        k: usize,
    ) -> crate::aggregate::Ranked {
        let mut total = Totals::default();
        let mut rows: Vec<(u64, &[u128], &Totals)> = self
            .iter()
            .map(|(raw, t)| {
                total.add(t);
                (metric(t), raw, t)
            })
            .collect();
        let order = |a: &(u64, &[u128], &Totals), b: &(u64, &[u128], &Totals)| {
            b.0.cmp(&a.0)
                .then_with(|| raw_cmp(fields, strings, a.1, b.1))
        };
        if k < rows.len() {
            rows.select_nth_unstable_by(k, order);
        }
        let mut others = Totals::default();
        for (_, _, t) in rows.iter().skip(k) {
            others.add(t);
        }
        rows.truncate(k);
        rows.sort_unstable_by(order);
        crate::aggregate::Ranked {
            top: rows
                .into_iter()
                .map(|(_, raw, t)| (values(fields, strings, raw), *t))
                .collect(),
            others,
            total,
            group_count: self.len(),
        }
    }
}

/// A key's hash, slot by slot (foldhash's folded multiply per u128, no byte loop).
#[inline]
fn hash(state: &foldhash::fast::RandomState, key: &[u128]) -> u64 {
    let mut h = state.build_hasher();
    for x in key {
        h.write_u128(*x);
    }
    h.finish()
}

/// Equal keys, slot by slot (a few slots: inlined, where `==` on slices calls memcmp).
#[inline]
fn same(a: &[u128], b: &[u128]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Orders raw keys as their values order (numbers and addresses as numbers, strings as text).
fn raw_cmp(
    fields: &[&'static FieldDef],
    strings: &Strings,
    a: &[u128],
    b: &[u128],
) -> std::cmp::Ordering {
    for ((f, x), y) in fields.iter().zip(a).zip(b) {
        let o = match f.kind {
            FieldKind::Str => strings.get(*x).cmp(strings.get(*y)),
            FieldKind::U64 | FieldKind::Ip => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// A raw key's values.
fn values(fields: &[&'static FieldDef], strings: &Strings, raw: &[u128]) -> Vec<Value> {
    fields
        .iter()
        .zip(raw)
        .map(|(f, r)| match f.kind {
            FieldKind::U64 => Value::U64(*r as u64),
            FieldKind::Ip => Value::Ip(Ipv6Addr::from(*r)),
            FieldKind::Str => Value::Str(strings.get(*r).to_string()),
        })
        .collect()
}

/// Makes the key a document is grouped under from the raw values of the fields read (numbers
/// and addresses as they are, strings as [`Strings`] ids), writing every slot of `out`;
/// `false` leaves the document out.
pub type KeyMap = dyn Fn(&[u128], &mut [u128]) -> bool + Sync;

/// Groups matching flows, segment by segment, into one [`RawGroups`] per worker (no table
/// per segment merged afterwards).
pub struct Grouper<'a> {
    pub fields: &'a [&'static FieldDef],
    pub buckets: Option<Buckets>,
    pub strings: &'a Mutex<Strings>,
    /// Groups under keys this makes (of the given width) instead of the fields' values (no
    /// bucket slot then): many documents' keys folded into fewer groups while scanning.
    pub map: Option<(&'a KeyMap, usize)>,
}

impl Grouper<'_> {
    /// Key slots: the fields, then the bucket when bucketing; or the mapped key's.
    pub fn width(&self) -> usize {
        match self.map {
            Some((_, w)) => w,
            None => self.fields.len() + usize::from(self.buckets.is_some()),
        }
    }

    /// Adds the documents of `reader` that `weight` matches to `into`.
    pub fn segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        reader: &SegmentReader,
        into: &mut RawGroups,
    ) -> tantivy::Result<()> {
        let ff = reader.fast_fields();
        let keys = KeyCols::open(self.fields, reader)?;
        let (bytes, packets, drop_bytes, drop_packets, sampling, end) = (
            ff.u64("Bytes")?,
            ff.u64("Packets")?,
            ff.u64("PktDropBytes")?,
            ff.u64("PktDropPackets")?,
            ff.u64("Sampling")?,
            ff.u64("TimeFlowEndMs")?,
        );
        // Segment-local string ordinals to shared ids, each looked up once: per string column
        // a table by ordinal (id + 1; 0 not looked up yet), made when first needed.
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); keys.cols.len()];
        let mut text = String::new();
        let width = self.width();
        let n = self.fields.len();
        let alive = reader.alive_bitset();
        let mut failed = None;
        weight.for_each_no_score(reader, &mut |docs| {
            for &doc in docs {
                if alive.is_some_and(|a| !a.is_alive(doc)) {
                    continue;
                }
                let mut key = keys.key(doc);
                for ((slot, col), cache) in key.iter_mut().zip(&keys.cols).zip(ids.iter_mut()) {
                    let Col::Str(Some(col)) = col else { continue };
                    let Some(ord) = slot.checked_sub(1) else {
                        continue;
                    };
                    if cache.is_empty() {
                        *cache = vec![0; col.dictionary().num_terms()];
                    }
                    *slot = match cache.get(ord as usize).copied().filter(|v| *v > 0) {
                        Some(v) => u128::from(v - 1),
                        None => {
                            text.clear();
                            let id = match col.ord_to_str(ord as u64, &mut text) {
                                Ok(true) => self
                                    .strings
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .id(&text),
                                Ok(false) => 0,
                                Err(e) => {
                                    failed.get_or_insert(e);
                                    0
                                }
                            };
                            if let (Some(c), Ok(v)) =
                                (cache.get_mut(ord as usize), u32::try_from(id + 1))
                            {
                                *c = v;
                            }
                            id
                        }
                    };
                }
                if let Some(b) = self.buckets {
                    let end = end.first(doc).unwrap_or(0);
                    let i = end.saturating_sub(b.origin_ms) / b.step_ms.max(1);
                    key[n] = u128::from(b.origin_ms + i * b.step_ms);
                }
                let mut mapped = [0u128; MAX_KEY + 1];
                let key = match self.map {
                    Some((map, w)) => {
                        if !map(&key[..n], &mut mapped[..w]) {
                            continue;
                        }
                        &mapped
                    }
                    None => &key,
                };
                let scale = sampling.first(doc).unwrap_or(0).max(1);
                let scaled = |c: &Column<u64>| c.first(doc).unwrap_or(0).saturating_mul(scale);
                into.add(
                    &key[..width],
                    &Totals {
                        bytes: scaled(&bytes),
                        packets: scaled(&packets),
                        flows: 1,
                        drop_bytes: scaled(&drop_bytes),
                        drop_packets: scaled(&drop_packets),
                    },
                );
            }
        })?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// Collects one numeric field's non-zero values per group (for quantiles such as RTT or DNS
/// latency percentiles): flows without the measurement carry 0 and are left out.
pub struct ValuesCollector {
    pub fields: Vec<&'static FieldDef>,
    pub value: &'static FieldDef,
}

pub struct ValuesSegment {
    keys: KeyCols,
    value: Column<u64>,
    groups: HashMap<RawKey, Vec<u64>>,
}

/// Values per group key.
pub type GroupValues = HashMap<Vec<Value>, Vec<u64>>;

impl Collector for ValuesCollector {
    type Fruit = GroupValues;
    type Child = ValuesSegment;

    fn for_segment(
        &self,
        _ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<ValuesSegment> {
        Ok(ValuesSegment {
            keys: KeyCols::open(&self.fields, reader)?,
            value: reader.fast_fields().u64(self.value.name)?,
            groups: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<GroupValues>) -> tantivy::Result<GroupValues> {
        let mut out = GroupValues::new();
        for f in fruits {
            merge_values(&mut out, f);
        }
        Ok(out)
    }
}

/// Appends every group of `from` to `into`.
pub fn merge_values(into: &mut GroupValues, from: GroupValues) {
    for (k, mut v) in from {
        into.entry(k).or_default().append(&mut v);
    }
}

impl SegmentCollector for ValuesSegment {
    type Fruit = GroupValues;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let v = self.value.first(doc).unwrap_or(0);
        if v > 0 {
            self.groups.entry(self.keys.key(doc)).or_default().push(v);
        }
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        for &d in docs {
            self.collect(d, 0.0);
        }
    }

    fn harvest(self) -> GroupValues {
        let mut out = GroupValues::with_capacity(self.groups.len());
        let mut s = String::new();
        for (raw, v) in self.groups {
            out.entry(self.keys.values(&raw, &mut s))
                .or_default()
                .extend(v);
        }
        out
    }
}

/// The `q` quantiles (each in 0..=1) of `values`, nearest-rank, reordering `values`; empty
/// when there are no values.
pub fn quantiles(values: &mut [u64], q: &[f64]) -> Vec<u64> {
    if values.is_empty() {
        return Vec::new();
    }
    q.iter()
        .map(|&q| {
            let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
            let i = rank.saturating_sub(1).min(values.len() - 1);
            *values.select_nth_unstable(i).1
        })
        .collect()
}
