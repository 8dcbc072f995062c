//! Shapes raw group sums into what users ask for: top-k groups and time series.

use crate::query::Metric;
use crate::schema::{FieldDef, Value};
use crate::store::{GroupKey, Totals};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One group of an aggregation.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Field name -> value.
    pub key: serde_json::Map<String, serde_json::Value>,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
    pub drop_bytes: u64,
    pub drop_packets: u64,
}

/// Top groups, plus what the rest add up to.
#[derive(Debug, Clone, Serialize)]
pub struct TopGroups {
    pub group_by: Vec<String>,
    pub metric: Metric,
    pub groups: Vec<Group>,
    /// Sum of the groups beyond the top k.
    pub others: Totals,
    /// Sum of every matching flow.
    pub total: Totals,
    /// How many groups there were before the cut.
    pub group_count: usize,
}

/// One metric of a group's sums.
pub fn metric_of(t: &Totals, m: Metric) -> u64 {
    match m {
        Metric::Bytes => t.bytes,
        Metric::Packets => t.packets,
        Metric::Flows => t.flows,
        Metric::DropBytes => t.drop_bytes,
        Metric::DropPackets => t.drop_packets,
    }
}

fn key_json(
    fields: &[&'static FieldDef],
    values: &[Value],
) -> serde_json::Map<String, serde_json::Value> {
    fields
        .iter()
        .zip(values)
        .map(|(f, v)| (f.name.to_string(), v.to_json()))
        .collect()
}

/// The `k` largest groups of an aggregation with their values, and what the rest and all
/// add up to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranked {
    /// Largest first, ties by values.
    pub top: Vec<(Vec<Value>, Totals)>,
    /// Sum of the groups beyond the top k.
    pub others: Totals,
    /// Sum of every group.
    pub total: Totals,
    /// How many groups there were before the cut.
    pub group_count: usize,
}

/// Ranks groups by a metric (largest first, ties by key) and keeps the top `k`.
pub fn rank(groups: HashMap<GroupKey, Totals>, metric: Metric, k: usize) -> Ranked {
    let mut total = Totals::default();
    let mut rows: Vec<(Vec<Value>, Totals)> = groups
        .into_iter()
        .map(|((v, _), t)| {
            total.add(&t);
            (v, t)
        })
        .collect();
    let group_count = rows.len();
    rows.sort_by(|a, b| {
        metric_of(&b.1, metric)
            .cmp(&metric_of(&a.1, metric))
            .then_with(|| a.0.cmp(&b.0))
    });
    let mut others = Totals::default();
    for (_, t) in rows.iter().skip(k) {
        others.add(t);
    }
    rows.truncate(k);
    Ranked {
        top: rows,
        others,
        total,
        group_count,
    }
}

/// [`rank`], shaped for the API.
pub fn top_groups(
    groups: HashMap<GroupKey, Totals>,
    fields: &[&'static FieldDef],
    metric: Metric,
    k: usize,
) -> TopGroups {
    TopGroups::new(fields, metric, rank(groups, metric, k))
}

impl TopGroups {
    /// The API's answer for ranked groups.
    pub fn new(fields: &[&'static FieldDef], metric: Metric, r: Ranked) -> TopGroups {
        TopGroups {
            group_by: fields.iter().map(|f| f.name.to_string()).collect(),
            metric,
            groups: r
                .top
                .into_iter()
                .map(|(v, t)| Group {
                    key: key_json(fields, &v),
                    bytes: t.bytes,
                    packets: t.packets,
                    flows: t.flows,
                    drop_bytes: t.drop_bytes,
                    drop_packets: t.drop_packets,
                })
                .collect(),
            others: r.others,
            total: r.total,
            group_count: r.group_count,
        }
    }
}

/// One series of a time series.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub key: serde_json::Map<String, serde_json::Value>,
    /// Sum over the whole range.
    pub total: u64,
    /// `[bucket start ms, value]`, one per bucket, zeros included.
    pub points: Vec<(u64, u64)>,
}

/// Time series of a metric, one series per top group (one series when not grouped).
#[derive(Debug, Clone, Serialize)]
pub struct TimeSeries {
    pub metric: Metric,
    pub from_ms: u64,
    pub step_ms: u64,
    pub buckets: u64,
    pub group_by: Vec<String>,
    pub series: Vec<Series>,
}

/// Builds series from bucketed groups; keeps the `k` groups with the largest totals.
pub fn time_series(
    groups: HashMap<GroupKey, Totals>,
    fields: &[&'static FieldDef],
    metric: Metric,
    k: usize,
    from_ms: u64,
    step_ms: u64,
    buckets: u64,
) -> TimeSeries {
    let mut by_key: BTreeMap<Vec<Value>, BTreeMap<u64, u64>> = BTreeMap::new();
    for ((v, b), t) in groups {
        let Some(b) = b else { continue };
        *by_key.entry(v).or_default().entry(b).or_default() += metric_of(&t, metric);
    }
    let mut ranked: Vec<(Vec<Value>, u64, BTreeMap<u64, u64>)> = by_key
        .into_iter()
        .map(|(k, pts)| {
            let total = pts.values().sum();
            (k, total, pts)
        })
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(k);
    let series = ranked
        .into_iter()
        .map(|(k, total, pts)| Series {
            key: key_json(fields, &k),
            total,
            points: (0..buckets)
                .map(|i| {
                    let t = from_ms + i * step_ms;
                    (t, pts.get(&t).copied().unwrap_or(0))
                })
                .collect(),
        })
        .collect();
    TimeSeries {
        metric,
        from_ms,
        step_ms,
        buckets,
        group_by: fields.iter().map(|f| f.name.to_string()).collect(),
        series,
    }
}
