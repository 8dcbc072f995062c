//! A span to the conversations of its connection. A span names the other end (address and
//! port, [`super::peer`]); the stored flows to and from that end around the span's time are
//! grouped into conversations (one per client address and port), and the span gets:
//!
//! - `exact`: the one conversation its attributes pin down (a server span names its client's
//!   address and port; a client span may name its local port);
//! - `opened`: the conversations whose client opened the connection (a pure SYN, the `OPEN`
//!   flag) during the span (a new connection per request);
//! - `active`: else the conversations with traffic during the span (a reused connection; when
//!   several are, all are listed);
//! - `none` (no flows) or `no-peer` (the span names no address).
//!
//! Span times come from the application's clock and flow times from the kernel's; both are the
//! node's wall clock, compared with [`CLOCK_SLACK_MS`] of slack.

use super::SpanKind;
use super::peer::Endpoints;
use crate::flow::{FLAG_SYN_NO_ACK, Flow};
use crate::query::{SortBy, TimeRange};
use crate::store::{ListRequest, Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Slack between the application's and the kernel's timestamps, ms.
pub const CLOCK_SLACK_MS: u64 = 100;
/// How far before a span a reused connection's records are looked for, ms.
pub const LOOKBACK_MS: u64 = 60_000;
/// Most flow records read for one span.
pub const MAX_RECORDS: usize = 10_000;

/// One conversation (both directions) as a span sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    /// `addr:port` of the end that opened it (`[v6]:port` for IPv6).
    pub client: String,
    pub server: String,
    pub proto: u8,
    /// When the client opened it (its pure SYN), Unix ms; None when not seen in the window.
    pub opened_ms: Option<u64>,
    pub first_ms: u64,
    pub last_ms: u64,
    pub bytes: u64,
    pub packets: u64,
    /// Largest smoothed RTT the kernel reported for it, ns (0: not measured).
    pub rtt_ns: u64,
    pub drop_packets: u64,
    pub drop_bytes: u64,
    /// Latest drop reason seen, "" when none.
    pub drop_cause: String,
    /// Flow records behind it.
    pub records: usize,
}

/// A span's flows and how they were matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanFlows {
    /// `exact`, `opened`, `active`, `none` or `no-peer`.
    pub matched: &'static str,
    pub conversations: Vec<Conversation>,
}

/// A conversation's key: the client's address and port, then the server's.
type Key = (IpAddr, u16, IpAddr, u16);

fn endpoint(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

/// The conversations of a span that ran from `start_ms` to `end_ms`.
pub fn span_flows(
    store: &Store,
    kind: SpanKind,
    start_ms: u64,
    end_ms: u64,
    ep: &Endpoints,
) -> Result<SpanFlows, StoreError> {
    let Some(remote) = ep.remote else {
        return Ok(SpanFlows {
            matched: "no-peer",
            conversations: vec![],
        });
    };
    let (r, p) = (remote.addr, remote.port);
    let filter = crate::query::parse(&format!(
        "(SrcAddr={r} and SrcPort={p}) or (DstAddr={r} and DstPort={p})"
    ))?;
    let sort = SortBy::parse("TimeFlowStartMs")?;
    let page = store.list(&ListRequest {
        filter,
        range: TimeRange {
            from_ms: start_ms.saturating_sub(LOOKBACK_MS),
            to_ms: end_ms.saturating_add(CLOCK_SLACK_MS + 1),
        },
        sort,
        limit: MAX_RECORDS,
        offset: 0,
    })?;
    let serving = matches!(kind, SpanKind::Server | SpanKind::Consumer);
    // Key: the client end (addr, port) and the server end.
    let mut convs: BTreeMap<Key, Conversation> = BTreeMap::new();
    for f in &page.flows {
        let to_remote = f.dst_addr == r && f.dst_port == p;
        let (other, other_port) = if to_remote {
            (f.src_addr, f.src_port)
        } else {
            (f.dst_addr, f.dst_port)
        };
        // A client span's remote is the server; a server span's remote is the client.
        let (client, server, from_client) = if serving {
            ((r, p), (other, other_port), !to_remote)
        } else {
            ((other, other_port), (r, p), to_remote)
        };
        let c = convs
            .entry((client.0, client.1, server.0, server.1))
            .or_insert_with(|| Conversation {
                client: endpoint(client.0, client.1),
                server: endpoint(server.0, server.1),
                proto: f.proto,
                opened_ms: None,
                first_ms: f.time_flow_start_ms,
                last_ms: f.time_flow_end_ms,
                bytes: 0,
                packets: 0,
                rtt_ns: 0,
                drop_packets: 0,
                drop_bytes: 0,
                drop_cause: String::new(),
                records: 0,
            });
        add(c, f, from_client);
    }
    let (lo, hi) = (
        start_ms.saturating_sub(CLOCK_SLACK_MS),
        end_ms.saturating_add(CLOCK_SLACK_MS),
    );
    let exact_client_port = if serving { Some(p) } else { ep.local_port };
    let all: Vec<(Key, Conversation)> = convs.into_iter().collect();
    let pick = |keep: &dyn Fn(&Key, &Conversation) -> bool| {
        all.iter()
            .filter(|(k, c)| keep(k, c))
            .map(|(_, c)| c.clone())
            .collect::<Vec<_>>()
    };
    if let Some(cp) = exact_client_port {
        let local = ep.local_port;
        let found = pick(&|k, c| {
            k.1 == cp
                && (!serving || local.is_none_or(|lp| k.3 == lp))
                && c.first_ms <= hi
                && c.last_ms >= lo
        });
        if !found.is_empty() {
            return Ok(SpanFlows {
                matched: "exact",
                conversations: found,
            });
        }
    }
    let opened = pick(&|_, c| c.opened_ms.is_some_and(|o| o >= lo && o <= hi));
    if !opened.is_empty() {
        // Several opened around it: keep those opened inside the span proper, when any.
        let inside: Vec<Conversation> = opened
            .iter()
            .filter(|c| c.opened_ms.is_some_and(|o| o >= start_ms && o <= end_ms))
            .cloned()
            .collect();
        return Ok(SpanFlows {
            matched: "opened",
            conversations: if inside.is_empty() { opened } else { inside },
        });
    }
    let active = pick(&|_, c| c.first_ms <= hi && c.last_ms >= lo);
    Ok(SpanFlows {
        matched: if active.is_empty() { "none" } else { "active" },
        conversations: active,
    })
}

fn add(c: &mut Conversation, f: &Flow, from_client: bool) {
    if from_client && f.flags & FLAG_SYN_NO_ACK != 0 {
        c.opened_ms = Some(
            c.opened_ms
                .map_or(f.time_flow_start_ms, |o| o.min(f.time_flow_start_ms)),
        );
    }
    c.first_ms = c.first_ms.min(f.time_flow_start_ms);
    c.last_ms = c.last_ms.max(f.time_flow_end_ms);
    // Sums scaled back by sampling, as everywhere else.
    let k = f.scale();
    c.bytes = c.bytes.saturating_add(f.bytes.saturating_mul(k));
    c.packets = c.packets.saturating_add(f.packets.saturating_mul(k));
    c.rtt_ns = c.rtt_ns.max(f.time_flow_rtt_ns);
    c.drop_packets = c
        .drop_packets
        .saturating_add(f.pkt_drop_packets.saturating_mul(k));
    c.drop_bytes = c
        .drop_bytes
        .saturating_add(f.pkt_drop_bytes.saturating_mul(k));
    if !f.pkt_drop_latest_drop_cause.is_empty() {
        c.drop_cause = f.pkt_drop_latest_drop_cause.clone();
    }
    c.records += 1;
}
