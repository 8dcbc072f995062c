//! A span to the conversations of its connection, from the span's labels and the flow records
//! around it: the same rules as the agent's own join (`core/src/telemetry/join.rs`, which the
//! trace API and `TraceId=` use), written against the plugin contract.
//!
//! The flows to and from the span's peer (address and port) are grouped into conversations
//! (one per client end and server end); the span gets `exact` (the one its attributes pin
//! down: a server span names its client, a client span may name its local port), else
//! `opened` (conversations whose client opened the connection, a pure SYN, during the span),
//! else `active` (conversations with traffic during it), else `none`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Slack between the application's and the kernel's timestamps, ms.
pub const CLOCK_SLACK_MS: u64 = 100;
/// How far before a span a reused connection's records are looked for, ms.
pub const LOOKBACK_MS: u64 = 60_000;
/// `Flags` bit set when the flow's first packet opened a TCP connection (a pure SYN).
pub const FLAG_SYN_NO_ACK: u64 = 0x1000;

/// What a span record says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub seq: u64,
    pub name: String,
    /// `client`, `server`, `producer`, `consumer`, `internal`.
    pub kind: String,
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// `ok`, `error` or `unset`.
    pub status: String,
    pub status_message: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub duration_us: u64,
    /// The other end the span names.
    pub peer: Option<(IpAddr, u16)>,
    /// The span's own port, when it says.
    pub local_port: Option<u16>,
}

impl Span {
    /// A server or consumer span: its peer is the client.
    pub fn serving(&self) -> bool {
        matches!(self.kind.as_str(), "server" | "consumer")
    }

    pub fn failed(&self) -> bool {
        self.status == "error"
    }
}

/// One flow record, as the join reads it (sums already scaled back by sampling).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rec {
    pub src: Option<IpAddr>,
    pub src_port: u16,
    pub dst: Option<IpAddr>,
    pub dst_port: u16,
    pub proto: u8,
    pub start_ms: u64,
    pub end_ms: u64,
    pub bytes: u64,
    pub packets: u64,
    pub rtt_ns: u64,
    pub drop_packets: u64,
    pub drop_cause: String,
    pub flags: u64,
}

/// One conversation (both directions) as a span sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub proto: u8,
    pub opened_ms: Option<u64>,
    pub first_ms: u64,
    pub last_ms: u64,
    pub bytes: u64,
    pub packets: u64,
    /// Largest smoothed RTT the kernel reported, ns (0: not measured).
    pub rtt_ns: u64,
    pub drop_packets: u64,
    /// Latest drop reason seen, "" when none.
    pub drop_cause: String,
    pub records: usize,
}

/// How a span was joined, and to what.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// `exact`, `opened`, `active` or `none`.
    pub matched: &'static str,
    pub convs: Vec<Conv>,
}

/// The conversations of `span` among `recs` (the flows to and from its peer around it).
pub fn join(span: &Span, recs: &[Rec]) -> Joined {
    let Some((r, p)) = span.peer else {
        return Joined {
            matched: "none",
            convs: vec![],
        };
    };
    let serving = span.serving();
    let mut by_ends: BTreeMap<(SocketAddr, SocketAddr), Conv> = BTreeMap::new();
    for f in recs {
        let (Some(src), Some(dst)) = (f.src, f.dst) else {
            continue;
        };
        let to_remote = dst == r && f.dst_port == p;
        let from_remote = src == r && f.src_port == p;
        if !to_remote && !from_remote {
            continue;
        }
        let other = if to_remote {
            SocketAddr::new(src, f.src_port)
        } else {
            SocketAddr::new(dst, f.dst_port)
        };
        let remote = SocketAddr::new(r, p);
        // A client span's remote is the server; a server span's remote is the client.
        let (client, server, from_client) = if serving {
            (remote, other, !to_remote)
        } else {
            (other, remote, to_remote)
        };
        let c = by_ends.entry((client, server)).or_insert_with(|| Conv {
            client,
            server,
            proto: f.proto,
            opened_ms: None,
            first_ms: f.start_ms,
            last_ms: f.end_ms,
            bytes: 0,
            packets: 0,
            rtt_ns: 0,
            drop_packets: 0,
            drop_cause: String::new(),
            records: 0,
        });
        if from_client && f.flags & FLAG_SYN_NO_ACK != 0 {
            c.opened_ms = Some(c.opened_ms.map_or(f.start_ms, |o| o.min(f.start_ms)));
        }
        c.first_ms = c.first_ms.min(f.start_ms);
        c.last_ms = c.last_ms.max(f.end_ms);
        c.bytes = c.bytes.saturating_add(f.bytes);
        c.packets = c.packets.saturating_add(f.packets);
        c.rtt_ns = c.rtt_ns.max(f.rtt_ns);
        c.drop_packets = c.drop_packets.saturating_add(f.drop_packets);
        if !f.drop_cause.is_empty() {
            c.drop_cause = f.drop_cause.clone();
        }
        c.records += 1;
    }
    // In order of their ends.
    let convs: Vec<Conv> = by_ends.into_values().collect();
    let (lo, hi) = (
        span.start_ms.saturating_sub(CLOCK_SLACK_MS),
        span.end_ms.saturating_add(CLOCK_SLACK_MS),
    );
    let during = |c: &Conv| c.first_ms <= hi && c.last_ms >= lo;
    let exact_client_port = if serving { Some(p) } else { span.local_port };
    if let Some(cp) = exact_client_port {
        let found: Vec<Conv> = convs
            .iter()
            .filter(|c| {
                c.client.port() == cp
                    && (!serving || span.local_port.is_none_or(|lp| c.server.port() == lp))
                    && during(c)
            })
            .cloned()
            .collect();
        if !found.is_empty() {
            return Joined {
                matched: "exact",
                convs: found,
            };
        }
    }
    let opened: Vec<Conv> = convs
        .iter()
        .filter(|c| c.opened_ms.is_some_and(|o| o >= lo && o <= hi))
        .cloned()
        .collect();
    if !opened.is_empty() {
        // Several opened around it: those opened inside the span proper, when any.
        let inside: Vec<Conv> = opened
            .iter()
            .filter(|c| {
                c.opened_ms
                    .is_some_and(|o| o >= span.start_ms && o <= span.end_ms)
            })
            .cloned()
            .collect();
        return Joined {
            matched: "opened",
            convs: if inside.is_empty() { opened } else { inside },
        };
    }
    let active: Vec<Conv> = convs.into_iter().filter(during).collect();
    Joined {
        matched: if active.is_empty() { "none" } else { "active" },
        convs: active,
    }
}

/// The flow filter selecting exactly these conversations, both directions.
pub fn filter_of(convs: &[Conv]) -> String {
    convs
        .iter()
        .map(|c| {
            let (a, ap, b, bp) = (
                c.client.ip(),
                c.client.port(),
                c.server.ip(),
                c.server.port(),
            );
            format!(
                "(SrcAddr={a} and SrcPort={ap} and DstAddr={b} and DstPort={bp}) or \
                 (SrcAddr={b} and SrcPort={bp} and DstAddr={a} and DstPort={ap})"
            )
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "10.0.0.1";
    const S: &str = "10.0.0.2";

    fn span(kind: &str, start: u64, end: u64, peer: (&str, u16), local: Option<u16>) -> Span {
        Span {
            seq: 1,
            name: "GET /pay".into(),
            kind: kind.into(),
            service: "shop".into(),
            trace_id: "t".into(),
            span_id: "s".into(),
            status: "ok".into(),
            status_message: String::new(),
            start_ms: start,
            end_ms: end,
            duration_us: (end - start) * 1000,
            peer: Some((peer.0.parse().expect("ip"), peer.1)),
            local_port: local,
        }
    }

    /// A record from `from` to `to` (`addr:port`).
    fn rec(from: (&str, u16), to: (&str, u16), start: u64, end: u64, flags: u64) -> Rec {
        Rec {
            src: from.0.parse().ok(),
            src_port: from.1,
            dst: to.0.parse().ok(),
            dst_port: to.1,
            proto: 6,
            start_ms: start,
            end_ms: end,
            bytes: 100,
            packets: 2,
            rtt_ns: start * 10,
            flags,
            ..Default::default()
        }
    }

    fn clients(j: &Joined) -> Vec<String> {
        j.convs.iter().map(|c| c.client.to_string()).collect()
    }

    #[test]
    fn a_client_span_takes_the_connection_opened_during_it() {
        let recs = vec![
            // A kept-alive connection with traffic all along.
            rec((C, 40000), (S, 80), 500, 5000, 0),
            rec((S, 80), (C, 40000), 500, 5000, 0),
            // The one opened during the span, both directions.
            rec((C, 40001), (S, 80), 1000, 1200, FLAG_SYN_NO_ACK | 0x02),
            rec((S, 80), (C, 40001), 1000, 1200, 0x12),
            // Another peer entirely.
            rec((C, 40002), (S, 443), 1000, 1200, FLAG_SYN_NO_ACK),
        ];
        let j = join(&span("client", 990, 1300, (S, 80), None), &recs);
        assert_eq!(j.matched, "opened");
        assert_eq!(clients(&j), ["10.0.0.1:40001"]);
        let c = &j.convs[0];
        assert_eq!((c.bytes, c.packets, c.records), (200, 4, 2));
        assert_eq!(c.rtt_ns, 10_000);
        assert_eq!(c.opened_ms, Some(1000));
        // Its own port named: exact, even with another connection opened then.
        let j = join(&span("client", 990, 1300, (S, 80), Some(40000)), &recs);
        assert_eq!(
            (j.matched, clients(&j)),
            ("exact", vec!["10.0.0.1:40000".to_string()])
        );
        // No connection opened during it: the ones active then.
        let j = join(&span("client", 3000, 3100, (S, 80), None), &recs);
        assert_eq!(j.matched, "active");
        assert_eq!(clients(&j), ["10.0.0.1:40000"]);
        // Nothing around it.
        let j = join(&span("client", 9000, 9100, (S, 80), None), &recs);
        assert_eq!((j.matched, j.convs.len()), ("none", 0));
    }

    #[test]
    fn a_server_span_takes_its_clients_exact_connection() {
        let recs = vec![
            rec((C, 40000), (S, 80), 1000, 1200, 0),
            rec((C, 40001), (S, 80), 1000, 1200, FLAG_SYN_NO_ACK),
        ];
        // The server's peer is the client end.
        let j = join(&span("server", 1000, 1100, (C, 40000), Some(80)), &recs);
        assert_eq!(j.matched, "exact");
        assert_eq!(clients(&j), ["10.0.0.1:40000"]);
        assert_eq!(j.convs[0].server.to_string(), "10.0.0.2:80");
        // Its own port says 81: not this connection, and the client's did not open one.
        let j = join(&span("server", 1000, 1100, (C, 40000), Some(81)), &recs);
        assert_eq!(j.matched, "active");
    }

    #[test]
    fn the_filter_selects_both_directions_of_each_conversation() {
        let recs = vec![rec((C, 40001), (S, 80), 1000, 1200, FLAG_SYN_NO_ACK)];
        let j = join(&span("client", 990, 1300, (S, 80), None), &recs);
        assert_eq!(
            filter_of(&j.convs),
            "(SrcAddr=10.0.0.1 and SrcPort=40001 and DstAddr=10.0.0.2 and DstPort=80) or \
             (SrcAddr=10.0.0.2 and SrcPort=80 and DstAddr=10.0.0.1 and DstPort=40001)"
        );
    }
}
