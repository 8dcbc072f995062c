//! Aggregation over fast fields: group by any set of fields (and optionally a time bucket),
//! summing bytes and packets (scaled back by sampling) and counting flows.

use crate::schema::{FieldDef, FieldKind, Value};
use std::collections::HashMap;
use std::net::Ipv6Addr;
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
}

/// A group key: the grouped values, then the bucket start (ms) when bucketing.
pub type GroupKey = (Vec<Value>, Option<u64>);

/// Time bucketing by TimeFlowEndMs.
#[derive(Debug, Clone, Copy)]
pub struct Buckets {
    pub origin_ms: u64,
    pub step_ms: u64,
}

/// Groups matching flows.
pub struct GroupCollector {
    pub fields: Vec<&'static FieldDef>,
    pub buckets: Option<Buckets>,
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

/// Raw key: per field a u128 (numbers, addresses, or segment-local string ordinals).
type RawKey = [u128; MAX_KEY];

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
        let mut key = [0u128; MAX_KEY];
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

pub struct GroupSegment {
    keys: KeyCols,
    bytes: Column<u64>,
    packets: Column<u64>,
    drop_bytes: Column<u64>,
    drop_packets: Column<u64>,
    sampling: Column<u64>,
    end: Column<u64>,
    buckets: Option<Buckets>,
    groups: HashMap<(RawKey, u64), Totals>,
}

impl Collector for GroupCollector {
    type Fruit = HashMap<GroupKey, Totals>;
    type Child = GroupSegment;

    fn for_segment(
        &self,
        _ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<GroupSegment> {
        let ff = reader.fast_fields();
        Ok(GroupSegment {
            keys: KeyCols::open(&self.fields, reader)?,
            bytes: ff.u64("Bytes")?,
            packets: ff.u64("Packets")?,
            drop_bytes: ff.u64("PktDropBytes")?,
            drop_packets: ff.u64("PktDropPackets")?,
            sampling: ff.u64("Sampling")?,
            end: ff.u64("TimeFlowEndMs")?,
            buckets: self.buckets,
            groups: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HashMap<GroupKey, Totals>>) -> tantivy::Result<Self::Fruit> {
        let mut it = fruits.into_iter();
        let mut out = it.next().unwrap_or_default();
        for f in it {
            merge_into(&mut out, f);
        }
        Ok(out)
    }
}

/// Adds every group of `from` into `into`.
pub fn merge_into(into: &mut HashMap<GroupKey, Totals>, from: HashMap<GroupKey, Totals>) {
    for (k, v) in from {
        into.entry(k).or_default().add(&v);
    }
}

impl SegmentCollector for GroupSegment {
    type Fruit = HashMap<GroupKey, Totals>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let key = self.keys.key(doc);
        let bucket = match self.buckets {
            Some(b) => {
                let end = self.end.first(doc).unwrap_or(0);
                let i = end.saturating_sub(b.origin_ms) / b.step_ms.max(1);
                b.origin_ms + i * b.step_ms
            }
            None => 0,
        };
        let scale = self.sampling.first(doc).unwrap_or(0).max(1);
        let t = self.groups.entry((key, bucket)).or_default();
        t.bytes = t
            .bytes
            .saturating_add(self.bytes.first(doc).unwrap_or(0).saturating_mul(scale));
        t.packets = t
            .packets
            .saturating_add(self.packets.first(doc).unwrap_or(0).saturating_mul(scale));
        t.drop_bytes = t.drop_bytes.saturating_add(
            self.drop_bytes
                .first(doc)
                .unwrap_or(0)
                .saturating_mul(scale),
        );
        t.drop_packets = t.drop_packets.saturating_add(
            self.drop_packets
                .first(doc)
                .unwrap_or(0)
                .saturating_mul(scale),
        );
        t.flows += 1;
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        for &d in docs {
            self.collect(d, 0.0);
        }
    }

    fn harvest(self) -> Self::Fruit {
        let mut out: HashMap<GroupKey, Totals> = HashMap::with_capacity(self.groups.len());
        let mut s = String::new();
        for ((raw, bucket), totals) in self.groups {
            let values = self.keys.values(&raw, &mut s);
            let b = self.buckets.map(|_| bucket);
            out.entry((values, b)).or_default().add(&totals);
        }
        out
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
