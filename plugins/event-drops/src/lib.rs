//! Bundled correlator: Kubernetes events followed by dropped packets. For each Kubernetes
//! event or change the agent kept in the window (records `k8s-event` and `k8s-change`, each
//! with the flow filter of the object it is about), the packets the kernel dropped on those
//! flows in the `after` seconds after it, against as long before it. An event after which drops
//! rose becomes an annotation naming the event, both counts and the drop causes, with a flow
//! filter selecting the dropped flows; the most drops first.
//!
//! The window is the batch's (its first flow start to its last flow end), as for every
//! correlator run (`weir plugin run event-drops --from -1h`; a run's batch holds at most the
//! newest 100,000 flows of the range asked, so on a busy node the window can be shorter: the
//! plugin logs the one it used). The events looked at are those whose `after` seconds reach
//! into it: from `after` before its start to its end (an event stamped to the second, as
//! Kubernetes does, can fall just before the first flow it caused). One from before the
//! window is reported only when the drops after it include some in the window (a run over
//! the hour before reported the rest). Events given with the run are used too when they
//! carry a `flow_filter` label. A flow counts on the side of the event its end falls on, so
//! a flow spanning the event is not counted before and after it.
//!
//! Config: `after` (seconds, default 300), `min_packets` (dropped packets after an event to
//! report it, default 1), `top` (annotations, default 20), `max_events` (events looked at,
//! the most severe and latest first, default 200).

use std::collections::BTreeMap;
use weir_plugin_sdk::correlator::{
    self, Annotation, Batch, Event, FlowBatch, Guest, PluginError, TimeRange, config_u64,
    flow_fields, log, query_records, records,
};

/// Record kinds that are Kubernetes events and changes.
const KINDS: [&str; 2] = ["k8s-event", "k8s-change"];
/// Most stored flows with drops read per event and side.
const MAX_DROPPED_FLOWS: usize = 100_000;

/// One event to look behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Happened {
    pub time_ms: u64,
    pub text: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    pub flow_filter: String,
    /// Labels carried into the annotation (namespace, name, workload, reason...).
    pub labels: Vec<(String, String)>,
}

/// Packets dropped on some flows over some time, with their causes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Drops {
    pub packets: u64,
    pub flows: u64,
    /// Dropped packets by the kernel's latest drop cause.
    pub causes: BTreeMap<String, u64>,
    /// More flows with drops than were read.
    pub cut: bool,
}

fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

/// `12,345`.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The most severe events first, the latest among equals; at most `max_events` kept.
fn keep_first(events: &mut Vec<Happened>, max_events: usize) {
    events.sort_by(|a, b| {
        rank(&b.severity)
            .cmp(&rank(&a.severity))
            .then(b.time_ms.cmp(&a.time_ms))
    });
    events.truncate(max_events);
}

/// The events after which drops rose, as annotations, most drops first, and the events that
/// could not be judged (their filter refused), each with why: `drops(filter, from, to)`
/// counts what was dropped on the flows `filter` selects that end between `from` and `to`
/// (ms, inclusive). An event before `window_from_ms` is reported only when at least
/// `min_packets` of the drops after it end from `window_from_ms` on.
#[allow(clippy::too_many_arguments)]
pub fn correlate_events(
    mut events: Vec<Happened>,
    window_from_ms: u64,
    after_ms: u64,
    min_packets: u64,
    top: usize,
    max_events: usize,
    mut drops: impl FnMut(&str, u64, u64) -> Result<Drops, String>,
) -> (Vec<Annotation>, Vec<String>) {
    keep_first(&mut events, max_events);
    let mut found: Vec<(u64, Annotation)> = vec![];
    let mut skipped = vec![];
    for e in &events {
        let judged = drops(
            &e.flow_filter,
            e.time_ms,
            e.time_ms.saturating_add(after_ms),
        )
        .and_then(|then| {
            if then.packets < min_packets.max(1) {
                return Ok(None);
            }
            if e.time_ms < window_from_ms {
                let inside = drops(
                    &e.flow_filter,
                    window_from_ms,
                    e.time_ms.saturating_add(after_ms),
                )?;
                if inside.packets < min_packets.max(1) {
                    return Ok(None);
                }
            }
            let before = drops(
                &e.flow_filter,
                e.time_ms.saturating_sub(after_ms),
                e.time_ms.saturating_sub(1),
            )?;
            Ok(Some((then, before)))
        });
        let (then, before) = match judged {
            Ok(Some(pair)) => pair,
            Ok(None) => continue,
            Err(why) => {
                skipped.push(format!("event at {} ({}): {why}", e.time_ms, e.text));
                continue;
            }
        };
        if then.packets <= before.packets {
            continue;
        }
        let mut causes: Vec<(&String, &u64)> = then.causes.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let causes_text = causes
            .iter()
            .take(3)
            .map(|(c, n)| {
                let c = if c.is_empty() {
                    "cause not recorded"
                } else {
                    c
                };
                format!("{c} {}", grouped(**n))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let secs = after_ms / 1000;
        let mut labels = e.labels.clone();
        labels.push(("drop_packets_after".into(), then.packets.to_string()));
        labels.push(("drop_packets_before".into(), before.packets.to_string()));
        labels.push(("window_s".into(), secs.to_string()));
        if let Some((c, _)) = causes.first() {
            labels.push(("drop_cause".into(), c.to_string()));
        }
        found.push((
            then.packets,
            Annotation {
                time_ms: e.time_ms,
                text: format!(
                    "{} packets dropped over {} flows in the {secs} s after this event ({} in the {secs} s before){}{}: {}",
                    grouped(then.packets),
                    grouped(then.flows),
                    grouped(before.packets),
                    if causes_text.is_empty() {
                        String::new()
                    } else {
                        format!("; {causes_text}")
                    },
                    if then.cut { " (more flows than read)" } else { "" },
                    e.text
                ),
                labels,
                flow_filter: Some(format!("({}) and PktDropPackets>0", e.flow_filter)),
            },
        ));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.time_ms.cmp(&b.1.time_ms)));
    (
        found.into_iter().take(top).map(|(_, a)| a).collect(),
        skipped,
    )
}

/// What the store says was dropped on the flows `filter` selects that end in `[from, to]`,
/// scaled back by sampling.
fn stored_drops(filter: &str, from_ms: u64, to_ms: u64) -> Result<Drops, String> {
    let mut d = Drops::default();
    let mut read = 0usize;
    let filter = format!(
        "({filter}) and PktDropPackets>0 and TimeFlowEndMs>={from_ms} and TimeFlowEndMs<={to_ms}"
    );
    let mut after = 0;
    loop {
        let page = flow_fields::select(
            &filter,
            TimeRange { from_ms, to_ms },
            &[
                "PktDropPackets".to_string(),
                "PktDropLatestDropCause".to_string(),
                "Sampling".to_string(),
            ],
            10_000,
            after,
        )?;
        let Some(&last) = page.seqs.last() else {
            break;
        };
        let (Some(packets), Some(sampling)) = (
            page.columns.first().and_then(|c| c.numbers()),
            page.columns.get(2).and_then(|c| c.numbers()),
        ) else {
            return Err("the store answered columns of another kind".into());
        };
        for (i, (p, s)) in packets.iter().zip(sampling).enumerate() {
            let n = p.saturating_mul((*s).max(1));
            d.packets = d.packets.saturating_add(n);
            d.flows += 1;
            let cause = page
                .columns
                .get(1)
                .and_then(|c| c.text(i))
                .unwrap_or("")
                .to_string();
            let c = d.causes.entry(cause).or_insert(0);
            *c = c.saturating_add(n);
        }
        read += page.seqs.len();
        after = last;
        if read >= MAX_DROPPED_FLOWS {
            d.cut = true;
            break;
        }
    }
    Ok(d)
}

/// Most pages of records read (10,000 each).
const MAX_PAGES: usize = 50;

/// The Kubernetes events and changes kept in the window, with a flow filter: the `max_events`
/// most severe and latest, held while paging.
fn kept_events(window: TimeRange, max_events: usize) -> Result<Vec<Happened>, PluginError> {
    let mut out = vec![];
    let q = records::RecordQuery {
        range: window,
        kinds: KINDS.iter().map(|k| k.to_string()).collect(),
        source: None,
        labels: Vec::new(),
        after_seq: 0,
        limit: 10_000,
    };
    let cut = query_records(q, MAX_PAGES, |page| {
        for s in page {
            let Some(f) = s.entry.flow_filter.filter(|f| !f.trim().is_empty()) else {
                continue;
            };
            let label = |k: &str| {
                s.entry
                    .labels
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
            };
            out.push(Happened {
                time_ms: s.entry.time_ms,
                text: s.entry.text.clone(),
                severity: label("severity").unwrap_or_else(|| "info".into()),
                flow_filter: f,
                labels: ["reason", "namespace", "name", "workload", "object_kind"]
                    .iter()
                    .filter_map(|k| label(k).map(|v| (k.to_string(), v)))
                    .chain([("event_seq".to_string(), s.seq.to_string())])
                    .collect(),
            });
        }
        if out.len() > 2 * max_events.max(1) {
            keep_first(&mut out, max_events);
        }
    })
    .map_err(PluginError::InvalidInput)?;
    if cut {
        log::log(
            log::Level::Warn,
            &format!(
                "more than {} Kubernetes events in the window: the first {} read",
                MAX_PAGES * 10_000,
                MAX_PAGES * 10_000
            ),
        );
    }
    Ok(out)
}

/// The events that can be followed by drops in the batch's window `[from_ms, to_ms]`: those
/// from `after_ms` before it to its end.
pub fn events_window(from_ms: u64, to_ms: u64, after_ms: u64) -> TimeRange {
    TimeRange {
        from_ms: from_ms.saturating_sub(after_ms),
        to_ms,
    }
}

struct Plugin;

impl Guest for Plugin {
    fn correlate(batch: &FlowBatch, events: Vec<Event>) -> Result<Vec<Annotation>, PluginError> {
        let Some((from_ms, to_ms)) = Batch::new(batch).window_ms() else {
            return Ok(vec![]);
        };
        let after_ms = config_u64("after", 300)?.clamp(1, 86_400) * 1000;
        let max_events = config_u64("max_events", 200)? as usize;
        log::log(
            log::Level::Info,
            &format!(
                "window {from_ms}..{to_ms} (the run's flows); events from {}",
                events_window(from_ms, to_ms, after_ms).from_ms
            ),
        );
        let mut happened = kept_events(events_window(from_ms, to_ms, after_ms), max_events)?;
        // Events given with the run, when they say which flows they are about.
        for e in events {
            let Some((_, f)) = e
                .labels
                .iter()
                .find(|(k, v)| k == "flow_filter" && !v.trim().is_empty())
            else {
                continue;
            };
            let severity = e
                .labels
                .iter()
                .find(|(k, _)| k == "severity")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "info".into());
            happened.push(Happened {
                time_ms: e.time_ms,
                text: e.text.clone(),
                severity,
                flow_filter: f.clone(),
                labels: vec![("source".into(), e.source.clone())],
            });
        }
        let (found, skipped) = correlate_events(
            happened,
            from_ms,
            after_ms,
            config_u64("min_packets", 1)?,
            config_u64("top", 20)? as usize,
            max_events,
            stored_drops,
        );
        for why in skipped.iter().take(20) {
            log::log(log::Level::Warn, &format!("not judged: {why}"));
        }
        Ok(found)
    }
}

correlator::export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, severity: &str, filter: &str) -> Happened {
        Happened {
            time_ms: t,
            text: format!("OOMKilling: Pod shop/{filter}"),
            severity: severity.into(),
            flow_filter: filter.into(),
            labels: vec![("namespace".into(), "shop".into())],
        }
    }

    /// Drops per filter at given times: (filter, time, packets, cause).
    fn fake(
        drops: &'static [(&'static str, u64, u64, &'static str)],
    ) -> impl FnMut(&str, u64, u64) -> Result<Drops, String> {
        move |f, from, to| {
            let mut d = Drops::default();
            for (g, t, n, c) in drops {
                if *g == f && *t >= from && *t <= to {
                    d.packets += n;
                    d.flows += 1;
                    *d.causes.entry(c.to_string()).or_insert(0) += n;
                }
            }
            Ok(d)
        }
    }

    /// The batch's flows start at 1,000,400 ms. An event stamped to the second just before
    /// (1,000,000) whose drops are in the batch is looked at and reported; so is one `after`
    /// before the batch whose drops reach into it; one whose drops all ended before the batch
    /// is looked at but left to the run that covered them; one earlier than `after` before
    /// the batch is not looked at. Near zero the events' window starts at zero.
    #[test]
    fn events_just_before_the_batch_are_judged_on_the_drops_inside_it() {
        let first = 1_000_400;
        let w = events_window(first, 1_005_000, 300_000);
        assert_eq!((w.from_ms, w.to_ms), (700_400, 1_005_000));
        assert_eq!(events_window(100, 200, 300_000).from_ms, 0);
        let drops: &'static [(&str, u64, u64, &str)] = &[
            // web: ten pings dropped in the batch.
            ("web", 1_002_000, 10, "NETFILTER_DROP"),
            // db: dropped after its event, but all before the batch.
            ("db", 800_000, 40, "NETFILTER_DROP"),
            // api: its event is `after` before the batch, a drop at the batch's start.
            ("api", 1_000_400, 3, "NO_SOCKET"),
        ];
        let events = vec![
            ev(1_000_000, "critical", "web"),
            ev(750_000, "warning", "db"),
            ev(700_400, "warning", "api"),
        ];
        // What the plugin looks at: the events inside the events' window.
        let looked: Vec<Happened> = events
            .into_iter()
            .filter(|e| e.time_ms >= w.from_ms && e.time_ms <= w.to_ms)
            .collect();
        assert_eq!(looked.len(), 3);
        let (out, skipped) =
            correlate_events(looked.clone(), first, 300_000, 1, 20, 200, fake(drops));
        assert!(skipped.is_empty());
        assert_eq!(
            filters(&out),
            ["(web) and PktDropPackets>0", "(api) and PktDropPackets>0"]
        );
        // Inside the window alone (as before), the web event is not reported.
        let (out, _) = correlate_events(
            looked.into_iter().filter(|e| e.time_ms >= first).collect(),
            first,
            300_000,
            1,
            20,
            200,
            fake(drops),
        );
        assert!(out.is_empty());
        // An event just before an older window's start is still one run's: the run from 0
        // reports the db event.
        let (out, _) = correlate_events(
            vec![ev(750_000, "warning", "db")],
            0,
            300_000,
            1,
            20,
            200,
            fake(drops),
        );
        assert_eq!(filters(&out), ["(db) and PktDropPackets>0"]);
    }

    fn filters(out: &[Annotation]) -> Vec<&str> {
        out.iter()
            .map(|a| a.flow_filter.as_deref().unwrap_or(""))
            .collect()
    }

    #[test]
    fn events_followed_by_more_drops_than_before_are_reported_most_drops_first() {
        let drops: &'static [(&str, u64, u64, &str)] = &[
            // web: 0 before, 1,500 after (two causes).
            ("web", 1_000_500, 1000, "NETFILTER_DROP"),
            ("web", 1_200_000, 500, "TCP_INVALID_SEQUENCE"),
            // db: as many before as after: not a rise.
            ("db", 700_000, 40, "NETFILTER_DROP"),
            ("db", 1_100_000, 40, "NETFILTER_DROP"),
            // cache: a rise, but only 3 packets.
            ("cache", 1_050_000, 3, ""),
            // api: drops long after the window.
            ("api", 2_000_000, 9000, "NETFILTER_DROP"),
        ];
        let events = vec![
            ev(1_000_000, "critical", "web"),
            ev(1_000_000, "warning", "db"),
            ev(1_000_000, "info", "cache"),
            ev(1_000_000, "warning", "api"),
        ];
        let (out, skipped) = correlate_events(events.clone(), 0, 300_000, 1, 20, 200, fake(drops));
        assert!(skipped.is_empty());
        assert_eq!(
            filters(&out),
            ["(web) and PktDropPackets>0", "(cache) and PktDropPackets>0"]
        );
        let web = &out[0];
        assert!(
            web.text.starts_with(
                "1,500 packets dropped over 2 flows in the 300 s after this event (0 in the 300 s before); NETFILTER_DROP 1,000, TCP_INVALID_SEQUENCE 500: OOMKilling"
            ),
            "{}",
            web.text
        );
        assert!(
            web.labels
                .contains(&("drop_cause".into(), "NETFILTER_DROP".into()))
        );
        assert!(
            web.labels
                .contains(&("drop_packets_after".into(), "1500".into()))
        );
        assert!(
            out[1].text.contains("cause not recorded 3"),
            "{}",
            out[1].text
        );
        // A floor of 10 packets leaves the cache event out.
        let (out, _) = correlate_events(events.clone(), 0, 300_000, 10, 20, 200, fake(drops));
        assert_eq!(filters(&out), ["(web) and PktDropPackets>0"]);
        // top 1 keeps the most drops.
        let (out, _) = correlate_events(events.clone(), 0, 300_000, 1, 1, 200, fake(drops));
        assert_eq!(filters(&out), ["(web) and PktDropPackets>0"]);
        // max_events looks at the most severe first: with the critical one first in line
        // last, only it is judged.
        let mut reversed = events;
        reversed.reverse();
        let (out, _) = correlate_events(reversed, 0, 300_000, 1, 20, 1, fake(drops));
        assert_eq!(filters(&out), ["(web) and PktDropPackets>0"]);
    }

    #[test]
    fn an_event_whose_filter_is_refused_is_skipped_with_why_and_the_rest_judged() {
        let drops: &'static [(&str, u64, u64, &str)] = &[("web", 1_000_500, 7, "X")];
        let mut store = fake(drops);
        let (out, skipped) = correlate_events(
            vec![
                ev(1_000_000, "critical", "bad"),
                ev(1_000_000, "info", "web"),
            ],
            0,
            1000,
            1,
            5,
            5,
            |f, a, b| {
                if f == "bad" {
                    Err("filter: unknown field".into())
                } else {
                    store(f, a, b)
                }
            },
        );
        assert_eq!(filters(&out), ["(web) and PktDropPackets>0"]);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("unknown field"), "{skipped:?}");
    }

    #[test]
    fn counts_read_with_separators() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
    }
}
