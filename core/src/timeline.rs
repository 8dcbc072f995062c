//! The timeline: one time axis with the flow volume (bytes, packets, drops per bucket) and a
//! lane per kind of thing that happened: alerts, Kubernetes events and changes, log lines,
//! spans, plugins' timeline entries (one lane each), annotations, and any other record kind.
//! Every lane has a count per bucket and its items (the most severe first when there are more
//! than `max_items`), each with the flow filter that shows the flows behind it.
//!
//! Severities are normalized to `info`, `warning` and `critical` (a log's `warn` is a
//! warning, `error` and `fatal` critical; a span whose status is `error` is critical).

use crate::alerts::Alert;
use crate::query::Expr;
use crate::query::TimeRange;
use crate::records::{MINUTE_MS, RecordError, RecordStore, Stored};
use crate::store::{Buckets, Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;

/// Most buckets one timeline has.
pub const MAX_BUCKETS: u64 = 2000;
/// Most records one timeline reads.
pub const MAX_RECORDS: usize = 1_000_000;

/// What can go wrong building a timeline.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Records(#[from] RecordError),
}

/// What a timeline covers.
#[derive(Debug, Clone)]
pub struct TimelineRequest {
    pub range: TimeRange,
    pub step_ms: u64,
    /// Which flows the volume counts.
    pub filter: Expr,
    /// Most items listed per lane (counts always cover everything).
    pub max_items: usize,
}

/// Flow volume per bucket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Volume {
    pub bytes: Vec<u64>,
    pub packets: Vec<u64>,
    pub flows: Vec<u64>,
    pub drop_packets: Vec<u64>,
}

/// One thing on the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// `info`, `warning` or `critical`.
    pub severity: &'static str,
    pub text: String,
    /// What it is (`k8s-event`, `log`, `span`, `alert`, ...) and who wrote it.
    pub kind: String,
    pub source: String,
    /// The record's sequence number (records only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// One lane.
#[derive(Debug, Clone, Serialize)]
pub struct Lane {
    /// `alerts`, `events`, `logs`, `spans`, `timeline:<lane>`, `annotations` or a record kind.
    pub id: String,
    pub title: String,
    /// Everything in the range, listed or not.
    pub total: u64,
    /// Per bucket, by severity.
    pub counts: BTreeMap<&'static str, Vec<u64>>,
    pub items: Vec<Item>,
    /// Whether items were left out (more than `max_items`).
    pub truncated: bool,
}

/// A timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: u64,
    pub buckets: u64,
    pub volume: Volume,
    pub lanes: Vec<Lane>,
    /// Whether the records read stopped at [`MAX_RECORDS`].
    pub records_truncated: bool,
}

/// A severity word to the three the timeline draws.
pub fn normalize(severity: &str) -> &'static str {
    match severity.to_ascii_lowercase().as_str() {
        "warn" | "warning" => "warning",
        "error" | "fatal" | "critical" | "crit" | "alert" | "emerg" => "critical",
        _ => "info",
    }
}

fn rank(s: &str) -> u8 {
    match s {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

/// The lane a record belongs to: (id, title).
fn lane_of(kind: &str, lane: &str) -> (String, String) {
    match kind {
        "k8s-event" | "k8s-change" => ("events".into(), "Kubernetes events".into()),
        "log" => ("logs".into(), "Logs".into()),
        "span" => ("spans".into(), "Spans".into()),
        "annotation" => ("annotations".into(), "Annotations".into()),
        "timeline" => {
            let l = if lane.is_empty() { "timeline" } else { lane };
            (format!("timeline:{l}"), l.to_string())
        }
        other => (other.to_string(), other.to_string()),
    }
}

/// A record's severity on the timeline: a span's by its status, else its `severity` label.
fn severity_of(kind: &str, severity: &str, status: &str) -> &'static str {
    if kind == "span" {
        if status == "error" {
            "critical"
        } else {
            "info"
        }
    } else {
        normalize(severity)
    }
}

fn item_of(s: &Stored) -> Item {
    let severity = severity_of(
        &s.entry.kind,
        s.label("severity").unwrap_or(""),
        s.label("status").unwrap_or(""),
    );
    let text = if s.entry.kind == "span" {
        let us: u64 = s
            .label("duration_us")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        let svc = s.label("service").unwrap_or("");
        format!(
            "{}{}{} ({:.1} ms)",
            svc,
            if svc.is_empty() { "" } else { ": " },
            s.entry.text,
            us as f64 / 1000.0
        )
    } else {
        s.entry.text.clone()
    };
    Item {
        time_ms: s.entry.time_ms,
        end_ms: s.entry.end_ms,
        severity,
        text,
        kind: s.entry.kind.clone(),
        source: s.source.clone(),
        seq: Some(s.seq),
        flow_filter: s.entry.flow_filter.clone(),
        trace_id: s.label("trace_id").map(str::to_string),
    }
}

/// As [`most_severe_first`], for records not read yet.
fn most_severe_pending(p: &mut [(u8, u64, u64)]) {
    p.sort_by(|a, b| b.cmp(a));
}

/// The most severe first, the latest among equals.
fn most_severe_first(items: &mut [Item]) {
    items.sort_by(|a, b| {
        rank(b.severity)
            .cmp(&rank(a.severity))
            .then(b.time_ms.cmp(&a.time_ms))
    });
}

struct LaneBuilder {
    title: String,
    total: u64,
    counts: BTreeMap<&'static str, Vec<u64>>,
    items: Vec<Item>,
    /// Records that may be listed, as (severity rank, time, seq): read in full only once the
    /// scan has chosen them.
    pending: Vec<(u8, u64, u64)>,
}

impl LaneBuilder {
    /// Lane `id` (made when new) with `k` more items of `severity` counted in `bucket` (of
    /// `n`).
    fn count<'a>(
        lanes: &'a mut BTreeMap<String, LaneBuilder>,
        id: String,
        title: String,
        bucket: Option<usize>,
        severity: &'static str,
        n: usize,
        k: u64,
    ) -> &'a mut LaneBuilder {
        let l = lanes.entry(id).or_insert_with(|| LaneBuilder {
            title,
            total: 0,
            counts: BTreeMap::new(),
            items: vec![],
            pending: vec![],
        });
        l.total += k;
        if let Some(i) = bucket {
            l.counts.entry(severity).or_insert_with(|| vec![0; n])[i] += k;
        }
        l
    }
}

/// The records' lanes. Counts per bucket come from the store's counts per minute; a minute
/// that straddles a bucket's edge or the range's is walked in the time index instead, so
/// counts are exact. Then each lane's items (the most severe first, the latest among equals,
/// `max_items` of them): walking the index back, newest first, over only the minutes that
/// hold what is still wanted. Only the records listed are read. Returns whether the walks
/// stopped at [`MAX_RECORDS`] index keys (the counts, or the items listed, are then short).
fn record_lanes(
    r: &RecordStore,
    lanes: &mut BTreeMap<String, LaneBuilder>,
    req: &TimelineRequest,
    n: usize,
    bucket: &dyn Fn(u64) -> Option<usize>,
) -> Result<bool, TimelineError> {
    let (from, to, keep) = (req.range.from_ms, req.range.to_ms, req.max_items);
    let minute_of = |t: u64| t / MINUTE_MS * MINUTE_MS;
    // (lane id, rank) -> items in range; minute -> the (lane id, rank)s it holds.
    let mut in_range: BTreeMap<(String, u8), u64> = BTreeMap::new();
    let mut holds: BTreeMap<u64, Vec<(String, u8)>> = BTreeMap::new();
    let mut edges = vec![];
    for (minute, b, k) in r.minute_counts(minute_of(from), minute_of(to)) {
        let b = b.brief();
        let severity = severity_of(b.kind, b.severity, b.status);
        let (id, title) = lane_of(b.kind, b.lane);
        let last = minute.saturating_add(MINUTE_MS - 1);
        holds
            .entry(minute)
            .or_default()
            .push((id.clone(), rank(severity)));
        if minute >= from && last <= to && bucket(minute) == bucket(last) {
            *in_range.entry((id.clone(), rank(severity))).or_default() += k;
            LaneBuilder::count(lanes, id, title, bucket(minute), severity, n, k);
        } else if edges.last() != Some(&minute) {
            edges.push(minute);
        }
    }
    let mut walked = 0usize;
    let mut truncated = false;
    for minute in edges {
        let (a, z) = (
            minute.max(from),
            minute.saturating_add(MINUTE_MS - 1).min(to),
        );
        truncated |= r.scan_brief(a, z, MAX_RECORDS.saturating_sub(walked), |t, _, b| {
            walked += 1;
            let severity = severity_of(b.kind, b.severity, b.status);
            let (id, title) = lane_of(b.kind, b.lane);
            *in_range.entry((id.clone(), rank(severity))).or_default() += 1;
            LaneBuilder::count(lanes, id, title, bucket(t), severity, n, 1);
        })?;
    }
    // What each lane lists: of its most severe items first, the latest.
    let mut want: BTreeMap<(String, u8), u64> = BTreeMap::new();
    for (id, _) in lanes.iter() {
        let mut left = keep as u64;
        for rk in [2u8, 1, 0] {
            let have = in_range.get(&(id.clone(), rk)).copied().unwrap_or(0);
            let take = have.min(left);
            if take > 0 {
                want.insert((id.clone(), rk), take);
            }
            left -= take;
        }
    }
    for (minute, wanted) in holds.iter().rev() {
        if want.is_empty() {
            break;
        }
        if !wanted.iter().any(|w| want.contains_key(w)) {
            continue;
        }
        let (a, z) = (
            (*minute).max(from),
            minute.saturating_add(MINUTE_MS - 1).min(to),
        );
        if walked >= MAX_RECORDS {
            truncated = true;
            break;
        }
        r.scan_brief_rev(a, z, |t, seq, b| {
            walked += 1;
            let severity = severity_of(b.kind, b.severity, b.status);
            let (id, _) = lane_of(b.kind, b.lane);
            let key = (id, rank(severity));
            if let Some(w) = want.get_mut(&key) {
                if let Some(l) = lanes.get_mut(&key.0) {
                    l.pending.push((key.1, t, seq));
                }
                *w -= 1;
                if *w == 0 {
                    want.remove(&key);
                }
            }
            !want.is_empty() && walked < MAX_RECORDS
        })?;
    }
    truncated |= walked >= MAX_RECORDS && !want.is_empty();
    Ok(truncated)
}

/// Every lane but the volume: alerts (one item per episode), then the records' lanes.
/// Returns them with whether the records' walks stopped short ([`record_lanes`]).
fn lanes_of(
    records: Option<&RecordStore>,
    alerts: &[Alert],
    req: &TimelineRequest,
    n: usize,
    bucket: &(dyn Fn(u64) -> Option<usize> + Sync),
) -> Result<(BTreeMap<String, LaneBuilder>, bool), TimelineError> {
    let (from, to) = (req.range.from_ms, req.range.to_ms);
    let mut lanes: BTreeMap<String, LaneBuilder> = BTreeMap::new();
    let keep = req.max_items;
    let add = |id: String, title: String, it: Item, lanes: &mut BTreeMap<String, LaneBuilder>| {
        let l = LaneBuilder::count(
            lanes,
            id,
            title,
            bucket(it.time_ms.max(from)),
            it.severity,
            n,
            1,
        );
        l.items.push(it);
        // Bounded memory: past twice the listing, keep the ones that would be listed.
        if l.items.len() > 2 * keep.max(1) {
            most_severe_first(&mut l.items);
            l.items.truncate(keep);
        }
    };
    // Alerts come as state changes and current states: one item per alert episode
    // (fingerprint and since), its latest state.
    let mut episodes: BTreeMap<(&str, u64), &Alert> = BTreeMap::new();
    for a in alerts {
        let e = episodes
            .entry((a.fingerprint.as_str(), a.since_ms))
            .or_insert(a);
        if a.seen_ms > e.seen_ms || (a.seen_ms == e.seen_ms && a.resolved_ms > e.resolved_ms) {
            *e = a;
        }
    }
    for a in episodes.into_values() {
        let start = if a.fired_ms > 0 {
            a.fired_ms
        } else {
            a.since_ms
        };
        let end = (a.resolved_ms > 0).then_some(a.resolved_ms);
        // In range when it overlaps it.
        if start > to || end.is_some_and(|e| e < from) {
            continue;
        }
        add(
            "alerts".into(),
            "Alerts".into(),
            Item {
                time_ms: start,
                end_ms: end,
                severity: normalize(&a.severity),
                text: format!("{}: {}", a.name, a.summary),
                kind: "alert".into(),
                source: a.rule.clone(),
                seq: None,
                flow_filter: None,
                trace_id: None,
            },
            &mut lanes,
        );
    }
    let mut records_truncated = false;
    if let Some(r) = records {
        records_truncated = record_lanes(r, &mut lanes, req, n, &bucket)?;
        for l in lanes.values_mut() {
            most_severe_pending(&mut l.pending);
            l.pending.truncate(keep);
            for (_, _, seq) in std::mem::take(&mut l.pending) {
                if let Some(s) = r.get(seq)? {
                    l.items.push(item_of(&s));
                }
            }
        }
    }
    Ok((lanes, records_truncated))
}

/// The `spikes` lane: the volume's spikes and quiet gaps ([`crate::spikes::find`]); none when
/// there are none or the buckets are shorter than [`crate::spikes::MIN_STEP_MS`].
fn spike_lane(volume: &Volume, from: u64, step: u64, max_items: usize) -> Option<Lane> {
    if step < crate::spikes::MIN_STEP_MS {
        return None;
    }
    let found = crate::spikes::find(
        &volume.bytes,
        from,
        step,
        &crate::spikes::SpikeOptions::default(),
    );
    if found.is_empty() {
        return None;
    }
    let n = volume.bytes.len();
    let mut counts: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    let mut items = vec![];
    for s in &found {
        let k = (((s.from_ms - from) / step) as usize).min(n.saturating_sub(1));
        if let Some(c) = counts
            .entry(s.severity())
            .or_insert_with(|| vec![0; n])
            .get_mut(k)
        {
            *c += 1;
        }
        items.push(Item {
            time_ms: s.from_ms,
            end_ms: Some(s.to_ms),
            severity: s.severity(),
            text: s.text(),
            kind: match s.change {
                crate::spikes::Change::Spike => "spike".into(),
                crate::spikes::Change::Gap => "gap".into(),
            },
            source: "weir".into(),
            seq: None,
            flow_filter: None,
            trace_id: None,
        });
    }
    let total = items.len() as u64;
    // Past `max_items`, the most severe are listed (as in the other lanes), in time order.
    if items.len() > max_items {
        items.sort_by(|a, b| {
            rank(b.severity)
                .cmp(&rank(a.severity))
                .then(a.time_ms.cmp(&b.time_ms))
        });
        items.truncate(max_items);
        items.sort_by_key(|i| i.time_ms);
    }
    Some(Lane {
        id: "spikes".into(),
        title: "Volume spikes and quiet gaps".into(),
        total,
        counts,
        truncated: total > max_items as u64,
        items,
    })
}

/// Builds the timeline from the store, the records and the alerts (active and past).
pub fn build(
    store: &Store,
    records: Option<&RecordStore>,
    alerts: &[Alert],
    req: &TimelineRequest,
) -> Result<Timeline, TimelineError> {
    let (from, to, step) = (req.range.from_ms, req.range.to_ms, req.step_ms.max(1));
    let buckets = to.saturating_sub(from).div_ceil(step).max(1);
    let bucket = |t: u64| -> Option<usize> {
        (t >= from && t <= to).then(|| (((t - from) / step) as usize).min(buckets as usize - 1))
    };
    let n = buckets as usize;
    let mut volume = Volume {
        bytes: vec![0; n],
        packets: vec![0; n],
        flows: vec![0; n],
        drop_packets: vec![0; n],
    };
    // The flow volume on a thread of its own while the lanes are counted here.
    let (groups, (lanes, records_truncated)) = std::thread::scope(|sc| {
        let volume = sc.spawn(|| {
            store.aggregate(
                &req.filter,
                &req.range,
                &[],
                Some(Buckets {
                    origin_ms: from,
                    step_ms: step,
                }),
            )
        });
        let lanes = lanes_of(records, alerts, req, n, &bucket);
        let groups = volume
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        Ok::<_, TimelineError>((groups?, lanes?))
    })?;
    for ((_, b), t) in groups {
        if let Some(i) = b.and_then(bucket) {
            volume.bytes[i] += t.bytes;
            volume.packets[i] += t.packets;
            volume.flows[i] += t.flows;
            volume.drop_packets[i] += t.drop_packets;
        }
    }
    let order = |id: &str| match id {
        "spikes" => 0,
        "alerts" => 0,
        "events" => 1,
        "spans" => 2,
        "logs" => 3,
        i if i.starts_with("timeline:") => 4,
        "annotations" => 5,
        _ => 6,
    };
    let mut out: Vec<Lane> = lanes
        .into_iter()
        .map(|(id, mut l)| {
            let truncated = l.total > req.max_items as u64;
            if l.items.len() > req.max_items {
                most_severe_first(&mut l.items);
                l.items.truncate(req.max_items);
            }
            l.items.sort_by_key(|i| (i.time_ms, i.seq));
            Lane {
                id,
                title: l.title,
                total: l.total,
                counts: l.counts,
                items: l.items,
                truncated,
            }
        })
        .collect();
    if let Some(l) = spike_lane(&volume, from, step, req.max_items) {
        out.push(l);
    }
    out.sort_by(|a, b| {
        order(a.id.as_str())
            .cmp(&order(b.id.as_str()))
            .then(a.id.cmp(&b.id))
    });
    Ok(Timeline {
        from_ms: from,
        to_ms: to,
        step_ms: step,
        buckets,
        volume,
        lanes: out,
        records_truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Flow;
    use crate::records::Entry;
    use crate::store::StoreConfig;

    fn rec(t: u64, kind: &str, labels: &[(&str, &str)]) -> Entry {
        Entry {
            time_ms: t,
            end_ms: None,
            kind: kind.into(),
            text: format!("{kind} at {t}"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flow_filter: Some("DstPort=80".into()),
        }
    }

    #[test]
    fn volume_and_lanes_share_the_buckets_and_items_keep_the_most_severe() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("flows"))).unwrap();
        let t0 = 1_700_000_000_000u64;
        let mut flows = vec![];
        for i in 0..10u64 {
            let mut f = Flow::empty();
            f.time_flow_start_ms = t0 + i * 1000;
            f.time_flow_end_ms = t0 + i * 1000 + 10;
            f.time_received = f.time_flow_end_ms;
            f.bytes = 100 * (i + 1);
            f.packets = 1;
            f.pkt_drop_packets = u64::from(i == 7);
            flows.push(f);
        }
        store.append(&flows).unwrap();
        store.flush().unwrap();
        let records = RecordStore::open(&dir.path().join("records")).unwrap();
        records
            .write(
                "otlp",
                vec![
                    rec(t0 + 500, "log", &[("severity", "info")]),
                    rec(t0 + 1500, "log", &[("severity", "warn")]),
                    rec(t0 + 2500, "log", &[("severity", "error")]),
                    rec(
                        t0 + 3500,
                        "span",
                        &[("status", "error"), ("duration_us", "1500")],
                    ),
                    rec(
                        t0 + 4500,
                        "timeline",
                        &[("lane", "deploys"), ("severity", "info")],
                    ),
                    rec(t0 + 60_000, "log", &[("severity", "error")]),
                ],
            )
            .unwrap();
        records
            .write(
                "k8s",
                vec![rec(t0 + 7000, "k8s-event", &[("severity", "critical")])],
            )
            .unwrap();
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "fingerprint": "f", "rule": "drops", "name": "Drops", "severity": "warning",
            "summary": "packets dropped", "labels": {}, "state": "resolved",
            "since_ms": t0 + 7000, "fired_ms": t0 + 7100, "resolved_ms": t0 + 9000,
            "seen_ms": t0 + 9000, "silenced": false}))
        .unwrap();
        let req = TimelineRequest {
            range: TimeRange {
                from_ms: t0,
                to_ms: t0 + 9999,
            },
            step_ms: 2000,
            filter: crate::query::parse("").unwrap(),
            max_items: 2,
        };
        let t = build(&store, Some(&records), &[alert], &req).unwrap();
        assert_eq!(t.buckets, 5);
        assert_eq!(t.volume.bytes, vec![300, 700, 1100, 1500, 1900]);
        assert_eq!(t.volume.drop_packets, vec![0, 0, 0, 1, 0]);
        let ids: Vec<&str> = t.lanes.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["alerts", "events", "spans", "logs", "timeline:deploys"]
        );
        let logs = &t.lanes[3];
        // Three logs in range (the one a minute later is not), two listed: the most severe.
        assert_eq!((logs.total, logs.truncated), (3, true));
        let sev: Vec<&str> = logs.items.iter().map(|i| i.severity).collect();
        assert_eq!(sev, vec!["warning", "critical"]);
        assert_eq!(logs.counts["info"], vec![1, 0, 0, 0, 0]);
        assert_eq!(logs.counts["critical"], vec![0, 1, 0, 0, 0]);
        assert_eq!(t.lanes[2].items[0].severity, "critical");
        assert!(t.lanes[2].items[0].text.ends_with("(1.5 ms)"));
        assert_eq!(t.lanes[0].items[0].end_ms, Some(t0 + 9000));
        assert_eq!(
            t.lanes[1].items[0].flow_filter.as_deref(),
            Some("DstPort=80")
        );
        assert_eq!(t.lanes[4].title, "deploys");
    }

    /// Lanes counted from the store's minute counts (edge minutes walked) and items found by
    /// walking back equal a brute-force count and pick over every record written: for
    /// ranges and steps that cut minutes anywhere (steps longer and shorter than a minute),
    /// with equal times, after retention drops the oldest and after the store is reopened
    /// (counts rebuilt from the index).
    /// Per lane: total, counts per severity and bucket, and every (rank, time, seq).
    type Want<'a> = BTreeMap<String, (u64, BTreeMap<&'a str, Vec<u64>>, Vec<(u8, u64, u64)>)>;

    #[test]
    fn lanes_from_minute_counts_equal_counting_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("flows"))).unwrap();
        let t0 = 1_700_000_000_000u64;
        let kinds: [(&str, &[(&str, &str)]); 7] = [
            ("log", &[("severity", "info")]),
            ("log", &[("severity", "error")]),
            ("log", &[("severity", "warn")]),
            ("span", &[("status", "ok")]),
            ("span", &[("status", "error")]),
            ("k8s-event", &[("severity", "warning")]),
            ("timeline", &[("lane", "deploys")]),
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut all: Vec<(u64, usize)> = vec![];
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Three hours, with some records at the very same ms.
            let t = t0 + (x % 10_800_000) / 7 * 7;
            let k = ((x >> 32) % 100) as usize;
            let kind = match k {
                0..=49 => 0,
                50..=51 => 1,
                52..=57 => 2,
                58..=84 => 3,
                85..=86 => 4,
                87..=97 => 5,
                _ => 6,
            };
            all.push((t, kind));
        }
        let records_dir = dir.path().join("records");
        let records = RecordStore::open(&records_dir).unwrap();
        let mut seqs = vec![];
        for chunk in all.chunks(500) {
            let written = records
                .write(
                    "test",
                    chunk
                        .iter()
                        .map(|(t, k)| rec(*t, kinds[*k].0, kinds[*k].1))
                        .collect(),
                )
                .unwrap();
            seqs.extend(written);
        }
        let lane_id = |k: usize| match kinds[k].0 {
            "log" => "logs".to_string(),
            "span" => "spans".to_string(),
            "k8s-event" => "events".to_string(),
            _ => "timeline:deploys".to_string(),
        };
        let sev = |k: usize| match k {
            1 | 4 => "critical",
            2 | 5 => "warning",
            _ => "info",
        };
        let check = |records: &RecordStore, kept: &dyn Fn(u64) -> bool, label: &str| {
            for (from, to, step, max_items) in [
                (t0 + 12_345, t0 + 10_000_000, 437_123, 7),
                (t0, t0 + 10_800_000, 600_000, 3),
                (t0 + 3_600_017, t0 + 4_000_000, 29_000, 40),
                (t0 + 61_000, t0 + 61_999, 100, 2),
            ] {
                let req = TimelineRequest {
                    range: TimeRange {
                        from_ms: from,
                        to_ms: to,
                    },
                    step_ms: step,
                    filter: crate::query::parse("").unwrap(),
                    max_items,
                };
                let t = build(&store, Some(records), &[], &req).unwrap();
                let n = t.buckets as usize;
                // Brute force over every record written and still kept.
                let mut want: Want = BTreeMap::new();
                for ((tm, k), seq) in all.iter().zip(&seqs) {
                    if *tm < from || *tm > to || !kept(*seq) {
                        continue;
                    }
                    let e = want.entry(lane_id(*k)).or_default();
                    e.0 += 1;
                    let b = (((tm - from) / step) as usize).min(n - 1);
                    e.1.entry(sev(*k)).or_insert_with(|| vec![0; n])[b] += 1;
                    e.2.push((rank(sev(*k)), *tm, *seq));
                }
                let got: Vec<&str> = t.lanes.iter().map(|l| l.id.as_str()).collect();
                let mut want_ids: Vec<&str> = want.keys().map(String::as_str).collect();
                want_ids.sort_by_key(|id| match *id {
                    "events" => 1,
                    "spans" => 2,
                    "logs" => 3,
                    _ => 4,
                });
                assert_eq!(got, want_ids, "{label} {from}..{to}/{step}");
                for l in &t.lanes {
                    let w = &want[&l.id];
                    assert_eq!(l.total, w.0, "{label} {} total", l.id);
                    assert_eq!(l.counts, w.1, "{label} {} counts", l.id);
                    let mut pick = w.2.clone();
                    pick.sort_by(|a, b| b.cmp(a));
                    pick.truncate(max_items);
                    let mut picked: Vec<(u64, u64)> = pick.iter().map(|p| (p.1, p.2)).collect();
                    picked.sort();
                    let items: Vec<(u64, u64)> = l
                        .items
                        .iter()
                        .map(|i| (i.time_ms, i.seq.unwrap_or(0)))
                        .collect();
                    assert_eq!(items, picked, "{label} {} items", l.id);
                }
            }
        };
        check(&records, &|_| true, "written");
        // Retention: the 600 oldest go; counts follow.
        let oldest: std::collections::BTreeSet<u64> = {
            let mut by_time: Vec<(u64, u64)> =
                all.iter().zip(&seqs).map(|((t, _), s)| (*t, *s)).collect();
            by_time.sort();
            by_time.iter().take(600).map(|(_, s)| *s).collect()
        };
        assert_eq!(records.enforce_retention(0, 2400).unwrap(), 600);
        check(&records, &|s| !oldest.contains(&s), "after retention");
        drop(records);
        let records = RecordStore::open(&records_dir).unwrap();
        check(&records, &|s| !oldest.contains(&s), "reopened");
    }

    /// A reversed range (the API refuses it; a caller might not) is an empty timeline, not a
    /// panic; a record at the last representable minute neither overflows nor is lost.
    #[test]
    fn a_reversed_range_is_empty_and_the_last_minute_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("flows"))).unwrap();
        let records = RecordStore::open(&dir.path().join("records")).unwrap();
        let end = u64::MAX - 10;
        records
            .write("t", vec![rec(5_000, "log", &[]), rec(end, "log", &[])])
            .unwrap();
        let req = |from_ms, to_ms, step_ms| TimelineRequest {
            range: TimeRange { from_ms, to_ms },
            step_ms,
            filter: crate::query::parse("").unwrap(),
            max_items: 5,
        };
        let t = build(&store, Some(&records), &[], &req(10_000, 1_000, 1000)).unwrap();
        assert!(t.lanes.is_empty());
        let t = build(
            &store,
            Some(&records),
            &[],
            &req(u64::MAX - 100_000, u64::MAX - 1, 50_000),
        )
        .unwrap();
        assert_eq!(t.lanes.len(), 1);
        assert_eq!(t.lanes[0].total, 1);
        assert_eq!(t.lanes[0].items[0].time_ms, end);
    }
}
