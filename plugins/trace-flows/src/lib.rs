//! Bundled correlator "trace-flows": spans joined to the connections they used. For the spans
//! the agent kept in the window (OTLP records `span` that name a peer), slowest and failed
//! first, the stored flows of the span's connection ([`join`]: exact, opened during the span,
//! or active during it) become an annotation at the span's start: "GET /pay (client span of
//! shop, 2.5 s, error) opened 10.0.0.1:43210 -> 10.0.0.2:80 tcp: 14 packets, 3.1 kB, RTT
//! 40.2 ms, 3 packets dropped (SKB_DROP_REASON_NETFILTER_DROP)", with labels naming the trace,
//! the span and the connection, and a flow filter that selects exactly its flows.
//!
//! The spans looked at are those the OTLP receiver kept that start in the run's window (its
//! flows' first start, less a minute, to their last end; a run's batch holds at most the
//! newest 100,000 flows of the range asked), as for every correlator run (`weir plugin run
//! trace-flows --from -1h`). Sums are scaled back by sampling, as the agent's join does.
//!
//! Config: `top` (annotations, default 20), `min_duration_ms` (spans shorter than this and
//! not failed are left out, default 0), `service` (only this service's spans), `max_spans`
//! (spans joined, the slowest and failed first, default 1000).

pub mod join;

use join::{CLOCK_SLACK_MS, Conv, Joined, LOOKBACK_MS, Rec, Span, filter_of};
use weir_plugin_sdk::correlator::{
    self, Annotation, Batch, Event, FlowBatch, Guest, PluginError, TimeRange, config, config_u64,
    flow_fields, log, query_records, records,
};

/// Most flow records read for one span.
const MAX_RECORDS: u32 = 10_000;
/// Most pages of span records read (10,000 each).
const MAX_PAGES: usize = 50;
/// Conversations named in one annotation's filter.
const MAX_FILTER_CONVS: usize = 10;
/// Characters of a span's name (and its status message) put in an annotation's text, which
/// the records store caps.
const MAX_NAME_CHARS: usize = 300;

/// The order spans are looked at: failed first, then the slowest, then the earliest.
fn rank(a: &Span, b: &Span) -> std::cmp::Ordering {
    b.failed()
        .cmp(&a.failed())
        .then(b.duration_us.cmp(&a.duration_us))
        .then(a.start_ms.cmp(&b.start_ms))
        .then(a.seq.cmp(&b.seq))
}

/// A span record's fields, or None when it names no peer (nothing to join).
pub fn span_of(
    seq: u64,
    time_ms: u64,
    end_ms: Option<u64>,
    text: &str,
    labels: &[(String, String)],
) -> Option<Span> {
    let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let peer = (
        label("peer_addr")?.parse().ok()?,
        label("peer_port")?.parse().ok()?,
    );
    let end_ms = end_ms.unwrap_or(time_ms).max(time_ms);
    Some(Span {
        seq,
        name: text.to_string(),
        kind: label("span_kind").unwrap_or("internal").to_string(),
        service: label("service").unwrap_or("").to_string(),
        trace_id: label("trace_id").unwrap_or("").to_string(),
        span_id: label("span_id").unwrap_or("").to_string(),
        status: label("status").unwrap_or("unset").to_string(),
        status_message: label("status_message").unwrap_or("").to_string(),
        start_ms: time_ms,
        end_ms,
        duration_us: label("duration_us")
            .and_then(|d| d.parse().ok())
            .unwrap_or((end_ms - time_ms) * 1000),
        peer: Some(peer),
        local_port: label("local_port").and_then(|p| p.parse().ok()),
    })
}

/// `2.5 s`, `340 ms`, `12 us`.
fn duration(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{} ms", us / 1000)
    } else {
        format!("{us} us")
    }
}

/// `3.1 kB`.
fn bytes(n: u64) -> String {
    let v = n as f64;
    if v >= 1e9 {
        format!("{:.1} GB", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} MB", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kB", v / 1e3)
    } else {
        format!("{n} B")
    }
}

/// What the connection did, in words.
fn conv_text(c: &Conv) -> String {
    let mut out = format!(
        "{} -> {} {}: {} packets, {}",
        c.client,
        c.server,
        weir_plugin_sdk::proto_name(c.proto),
        c.packets,
        bytes(c.bytes)
    );
    if c.rtt_ns > 0 {
        out.push_str(&format!(", RTT {:.1} ms", c.rtt_ns as f64 / 1e6));
    }
    if c.drop_packets > 0 {
        out.push_str(&format!(", {} packets dropped", c.drop_packets));
        if !c.drop_cause.is_empty() {
            out.push_str(&format!(" ({})", c.drop_cause));
        }
    }
    out
}

/// A joined span as an annotation: None when no conversation was found.
pub fn annotate(s: &Span, j: &Joined) -> Option<Annotation> {
    // The conversation that carried the most is the one named.
    let main = j.convs.iter().max_by(|a, b| {
        a.bytes
            .cmp(&b.bytes)
            .then(b.client.cmp(&a.client))
            .then(b.server.cmp(&a.server))
    })?;
    let mut what = format!(
        "{} ({} span{}, {}",
        s.name.chars().take(MAX_NAME_CHARS).collect::<String>(),
        s.kind,
        if s.service.is_empty() {
            String::new()
        } else {
            format!(" of {}", s.service)
        },
        duration(s.duration_us)
    );
    if s.failed() {
        what.push_str(", error");
        if !s.status_message.is_empty() {
            what.push_str(&format!(
                ": {}",
                s.status_message
                    .chars()
                    .take(MAX_NAME_CHARS)
                    .collect::<String>()
            ));
        }
    }
    what.push(')');
    let text = if j.convs.len() == 1 {
        format!("{what} {} {}", j.matched, conv_text(main))
    } else {
        format!(
            "{what} {} {} connections, the largest {}",
            j.matched,
            j.convs.len(),
            conv_text(main)
        )
    };
    let drops: u64 = j.convs.iter().map(|c| c.drop_packets).sum();
    let mut labels: Vec<(String, String)> = vec![
        ("trace_id".into(), s.trace_id.clone()),
        ("span_id".into(), s.span_id.clone()),
        ("span_kind".into(), s.kind.clone()),
        ("span_seq".into(), s.seq.to_string()),
        ("duration_us".into(), s.duration_us.to_string()),
        ("status".into(), s.status.clone()),
        ("matched".into(), j.matched.into()),
        ("connections".into(), j.convs.len().to_string()),
        ("client".into(), main.client.to_string()),
        ("server".into(), main.server.to_string()),
        ("bytes".into(), main.bytes.to_string()),
        ("packets".into(), main.packets.to_string()),
        ("rtt_ns".into(), main.rtt_ns.to_string()),
        ("drop_packets".into(), drops.to_string()),
    ];
    if !s.service.is_empty() {
        labels.push(("service".into(), s.service.clone()));
    }
    if !main.drop_cause.is_empty() {
        labels.push(("drop_cause".into(), main.drop_cause.clone()));
    }
    // The filter names the connections that carried the most (the largest among them).
    let mut shown: Vec<Conv> = j.convs.clone();
    shown.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.client.cmp(&b.client)));
    shown.truncate(MAX_FILTER_CONVS);
    Some(Annotation {
        time_ms: s.start_ms,
        text,
        labels,
        flow_filter: Some(filter_of(&shown)),
    })
}

/// The spans kept in `window` that name a peer, the `max_spans` first by [`rank`] (held while
/// paging), with how many spans named no peer.
fn kept_spans(
    window: TimeRange,
    service: Option<&str>,
    min_duration_us: u64,
    max_spans: usize,
) -> Result<(Vec<Span>, usize), PluginError> {
    let mut out: Vec<Span> = vec![];
    let mut no_peer = 0usize;
    let q = records::RecordQuery {
        range: window,
        kinds: vec!["span".into()],
        // The agent's OTLP receiver's (the spans the trace API joins).
        source: Some("otlp".into()),
        labels: service
            .map(|s| vec![("service".to_string(), s.to_string())])
            .unwrap_or_default(),
        after_seq: 0,
        limit: 10_000,
    };
    let cut = query_records(q, MAX_PAGES, |page| {
        for r in page {
            let e = &r.entry;
            match span_of(r.seq, e.time_ms, e.end_ms, &e.text, &e.labels) {
                Some(s) if s.failed() || s.duration_us >= min_duration_us => out.push(s),
                Some(_) => {}
                None => no_peer += 1,
            }
        }
        if out.len() > 2 * max_spans.max(1) {
            out.sort_by(rank);
            out.truncate(max_spans);
        }
    })
    .map_err(PluginError::InvalidInput)?;
    if cut {
        log::log(
            log::Level::Warn,
            &format!(
                "more than {} spans in the window: the first {} read",
                MAX_PAGES * 10_000,
                MAX_PAGES * 10_000
            ),
        );
    }
    out.sort_by(rank);
    out.truncate(max_spans);
    Ok((out, no_peer))
}

/// The stored flow records to and from the span's peer around it.
fn records_of(s: &Span) -> Result<Vec<Rec>, String> {
    let Some((addr, port)) = s.peer else {
        return Ok(vec![]);
    };
    let fields: Vec<String> = [
        "SrcAddr",
        "SrcPort",
        "DstAddr",
        "DstPort",
        "Proto",
        "TimeFlowStartMs",
        "TimeFlowEndMs",
        "Bytes",
        "Packets",
        "TimeFlowRttNs",
        "PktDropPackets",
        "PktDropLatestDropCause",
        "Flags",
        "Sampling",
    ]
    .iter()
    .map(|f| f.to_string())
    .collect();
    let sel = flow_fields::select(
        &format!("(SrcAddr={addr} and SrcPort={port}) or (DstAddr={addr} and DstPort={port})"),
        TimeRange {
            from_ms: s.start_ms.saturating_sub(LOOKBACK_MS),
            to_ms: s.end_ms.saturating_add(CLOCK_SLACK_MS + 1),
        },
        &fields,
        MAX_RECORDS,
        0,
    )?;
    let col = |i: usize| sel.columns.get(i);
    let num = |i: usize| col(i).and_then(|c| c.numbers());
    let addrs = |i: usize| col(i).and_then(|c| c.addrs());
    let (Some(src), Some(dst)) = (addrs(0), addrs(2)) else {
        return Err("the store answered address columns of another kind".into());
    };
    let mut nums = Vec::new();
    for i in [1, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13] {
        nums.push(num(i).ok_or("the store answered number columns of another kind")?);
    }
    let [
        sport,
        dport,
        proto,
        start,
        end,
        b,
        p,
        rtt,
        drops,
        flags,
        sampling,
    ] = nums[..]
    else {
        return Err("the store answered fewer columns than asked".into());
    };
    let mut out = Vec::with_capacity(sel.seqs.len());
    for i in 0..sel.seqs.len() {
        let get = |c: &[u64]| c.get(i).copied().unwrap_or(0);
        let scale = get(sampling).max(1);
        out.push(Rec {
            src: src.get(i).map(|a| weir_plugin_sdk::ip(a.hi, a.lo)),
            src_port: get(sport) as u16,
            dst: dst.get(i).map(|a| weir_plugin_sdk::ip(a.hi, a.lo)),
            dst_port: get(dport) as u16,
            proto: get(proto) as u8,
            start_ms: get(start),
            end_ms: get(end),
            bytes: get(b).saturating_mul(scale),
            packets: get(p).saturating_mul(scale),
            rtt_ns: get(rtt),
            drop_packets: get(drops).saturating_mul(scale),
            drop_cause: col(11).and_then(|c| c.text(i)).unwrap_or("").to_string(),
            flags: get(flags),
        });
    }
    if sel.seqs.len() >= MAX_RECORDS as usize {
        log::log(
            log::Level::Warn,
            &format!(
                "span {} ({}): more than {MAX_RECORDS} flow records to and from {addr}:{port}; the first read",
                s.span_id, s.name
            ),
        );
    }
    Ok(out)
}

struct Plugin;

impl Guest for Plugin {
    fn correlate(batch: &FlowBatch, _events: Vec<Event>) -> Result<Vec<Annotation>, PluginError> {
        let Some((from_ms, to_ms)) = Batch::new(batch).window_ms() else {
            return Ok(vec![]);
        };
        let top = config_u64("top", 20)? as usize;
        let service = config::get("service").filter(|s| !s.trim().is_empty());
        // Spans start before their connection's first packet: those that began up to a
        // minute before the window's first flow are looked at too.
        let (spans, no_peer) = kept_spans(
            TimeRange {
                from_ms: from_ms.saturating_sub(LOOKBACK_MS),
                to_ms,
            },
            service.as_deref(),
            config_u64("min_duration_ms", 0)?.saturating_mul(1000),
            config_u64("max_spans", 1000)? as usize,
        )?;
        let mut out = Vec::new();
        let mut unjoined = 0usize;
        for s in &spans {
            if out.len() >= top {
                break;
            }
            let recs = records_of(s).map_err(PluginError::InvalidInput)?;
            match annotate(s, &join::join(s, &recs)) {
                Some(a) => out.push(a),
                None => unjoined += 1,
            }
        }
        log::log(
            log::Level::Info,
            &format!(
                "window {from_ms}..{to_ms}: {} spans with a peer looked at, {} joined, {unjoined} without flows, {no_peer} naming no peer",
                out.len() + unjoined,
                out.len()
            ),
        );
        Ok(out)
    }
}

correlator::export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_span_record_reads_its_peer_and_ports() {
        let l = labels(&[
            ("span_kind", "client"),
            ("trace_id", "4bf9"),
            ("span_id", "00f0"),
            ("service", "shop"),
            ("status", "error"),
            ("status_message", "timeout"),
            ("duration_us", "2500000"),
            ("peer_addr", "10.9.1.1"),
            ("peer_port", "80"),
            ("local_port", "43210"),
        ]);
        let s = span_of(7, 1000, Some(3500), "GET /pay", &l).expect("span");
        assert_eq!(s.peer, Some(("10.9.1.1".parse().expect("ip"), 80)));
        assert_eq!(
            (s.local_port, s.duration_us, s.failed()),
            (Some(43210), 2_500_000, true)
        );
        // No peer: nothing to join.
        assert!(span_of(7, 1000, None, "work", &labels(&[("span_kind", "internal")])).is_none());
        // A peer port that is not a port.
        let bad = labels(&[("peer_addr", "10.9.1.1"), ("peer_port", "http")]);
        assert!(span_of(7, 1000, None, "x", &bad).is_none());
    }

    #[test]
    fn failed_then_slowest_spans_come_first() {
        let mk = |seq: u64, d: u64, status: &str| Span {
            seq,
            duration_us: d,
            status: status.into(),
            ..span_of(
                seq,
                1000,
                None,
                "x",
                &labels(&[("peer_addr", "10.0.0.1"), ("peer_port", "1")]),
            )
            .expect("span")
        };
        let mut v = [
            mk(1, 10, "ok"),
            mk(2, 500, "ok"),
            mk(3, 5, "error"),
            mk(4, 500, "ok"),
        ];
        v.sort_by(rank);
        let order: Vec<u64> = v.iter().map(|s| s.seq).collect();
        assert_eq!(order, [3, 2, 4, 1]);
    }

    #[test]
    fn an_annotation_names_the_span_and_its_connection() {
        let l = labels(&[
            ("span_kind", "client"),
            ("trace_id", "4bf9"),
            ("service", "shop"),
            ("status", "error"),
            ("status_message", "timeout"),
            ("duration_us", "2500000"),
            ("peer_addr", "10.9.1.1"),
            ("peer_port", "80"),
        ]);
        let s = span_of(7, 1000, Some(3500), "GET /pay", &l).expect("span");
        let r = |from: (&str, u16), to: (&str, u16), flags: u64, drops: u64| Rec {
            src: from.0.parse().ok(),
            src_port: from.1,
            dst: to.0.parse().ok(),
            dst_port: to.1,
            proto: 6,
            start_ms: 1000,
            end_ms: 3400,
            bytes: 1550,
            packets: 7,
            rtt_ns: 40_200_000,
            drop_packets: drops,
            drop_cause: if drops > 0 {
                "SKB_DROP_REASON_NETFILTER_DROP".into()
            } else {
                String::new()
            },
            flags,
        };
        let recs = [
            r(
                ("10.9.0.3", 43210),
                ("10.9.1.1", 80),
                join::FLAG_SYN_NO_ACK,
                3,
            ),
            r(("10.9.1.1", 80), ("10.9.0.3", 43210), 0, 0),
        ];
        let j = join::join(&s, &recs);
        let a = annotate(&s, &j).expect("joined");
        assert_eq!(
            a.text,
            "GET /pay (client span of shop, 2.5 s, error: timeout) opened \
             10.9.0.3:43210 -> 10.9.1.1:80 tcp: 14 packets, 3.1 kB, RTT 40.2 ms, \
             3 packets dropped (SKB_DROP_REASON_NETFILTER_DROP)"
        );
        assert_eq!(a.time_ms, 1000);
        let get = |k: &str| {
            a.labels
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("client"), Some("10.9.0.3:43210"));
        assert_eq!(get("matched"), Some("opened"));
        assert_eq!(get("drop_packets"), Some("3"));
        assert_eq!(get("trace_id"), Some("4bf9"));
        assert!(
            a.flow_filter
                .as_deref()
                .is_some_and(|f| f.contains("SrcPort=43210"))
        );
        // No flows: no annotation.
        assert!(annotate(&s, &join::join(&s, &[])).is_none());
    }
}
