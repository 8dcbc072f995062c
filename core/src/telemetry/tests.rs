use super::join::span_flows;
use super::peer::{endpoints, url_peer};
use super::*;
use crate::flow::{FLAG_SYN_NO_ACK, Flow};
use crate::records::RecordStore;
use crate::store::{Store, StoreConfig};
use std::sync::Arc;

fn attrs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn peers_come_from_current_then_older_conventions_then_the_url() {
    let e = endpoints(
        SpanKind::Client,
        &attrs(&[("server.address", "198.18.0.2"), ("server.port", "8080")]),
    );
    let r = e.remote.expect("peer");
    assert_eq!(
        (r.addr.to_string(), r.port, r.from),
        ("198.18.0.2".into(), 8080, "server.address")
    );
    // A host name is not an address: the URL's literal address is used instead.
    let e = endpoints(
        SpanKind::Client,
        &attrs(&[
            ("server.address", "web"),
            ("server.port", "80"),
            ("http.url", "http://[2001:db8::2]:8443/x?y"),
        ]),
    );
    let r = e.remote.expect("peer from url");
    assert_eq!(
        (r.addr.to_string(), r.port, r.from),
        ("2001:db8::2".into(), 8443, "http.url")
    );
    assert_eq!(
        url_peer("https://user@10.0.0.1/a"),
        Some(("10.0.0.1".parse().unwrap(), 443))
    );
    assert_eq!(url_peer("http://name.example/"), None);
    assert_eq!(url_peer("ftp://10.0.0.1/"), None);
    // Server spans name the client; their own port is the local one.
    let e = endpoints(
        SpanKind::Server,
        &attrs(&[
            ("client.address", "198.18.0.1"),
            ("client.port", "40000"),
            ("server.port", "8080"),
        ]),
    );
    assert_eq!(e.remote.map(|p| p.port), Some(40000));
    assert_eq!(e.local_port, Some(8080));
    assert_eq!(
        endpoints(SpanKind::Client, &attrs(&[("server.port", "1")])).remote,
        None
    );
}

#[test]
fn ids_are_checked() {
    assert!(check_trace_id("0af7651916cd43dd8448eb211c80319c").is_ok());
    assert!(check_trace_id("00000000000000000000000000000000").is_err());
    assert!(check_trace_id("0af7651916cd43dd8448eb211c80319").is_err());
    assert_eq!(
        check_span_id("B7AD6B7169203331").as_deref(),
        Ok("b7ad6b7169203331")
    );
}

fn flow(src: (&str, u16), dst: (&str, u16), start: u64, end: u64, bytes: u64, flags: u16) -> Flow {
    let mut f = Flow::empty();
    f.src_addr = src.0.parse().unwrap();
    f.src_port = src.1;
    f.dst_addr = dst.0.parse().unwrap();
    f.dst_port = dst.1;
    f.proto = 6;
    f.time_flow_start_ms = start;
    f.time_flow_end_ms = end;
    f.time_received = end;
    f.bytes = bytes;
    f.packets = 1;
    f.flags = flags;
    f
}

#[test]
fn a_span_gets_the_connection_opened_during_it_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("flows"))).unwrap();
    let t = 1_700_000_000_000u64;
    let srv = ("198.18.0.2", 8080);
    store
        .append(&[
            // Connection 1, opened at t, and its answer.
            flow(("198.18.0.1", 40001), srv, t, t + 5, 300, FLAG_SYN_NO_ACK),
            flow(srv, ("198.18.0.1", 40001), t + 1, t + 5, 900, 0x12),
            // Connection 2, opened 500 ms later.
            flow(
                ("198.18.0.1", 40002),
                srv,
                t + 500,
                t + 505,
                310,
                FLAG_SYN_NO_ACK,
            ),
            // Another server: never the span's.
            flow(
                ("198.18.0.1", 40003),
                ("198.18.0.3", 8080),
                t,
                t + 5,
                1,
                FLAG_SYN_NO_ACK,
            ),
        ])
        .unwrap();
    store.flush().unwrap();
    let ep = endpoints(
        SpanKind::Client,
        &attrs(&[("server.address", "198.18.0.2"), ("server.port", "8080")]),
    );
    let got = span_flows(&store, SpanKind::Client, t, t + 6, &ep).unwrap();
    assert_eq!(got.matched, "opened");
    assert_eq!(got.conversations.len(), 1, "{got:?}");
    let c = &got.conversations[0];
    assert_eq!(
        (c.client.as_str(), c.bytes, c.records),
        ("198.18.0.1:40001", 1200, 2)
    );
    let got = span_flows(&store, SpanKind::Client, t + 499, t + 510, &ep).unwrap();
    assert_eq!(got.conversations[0].client, "198.18.0.1:40002");
    // A server span names its client exactly.
    let ep = endpoints(
        SpanKind::Server,
        &attrs(&[("client.address", "198.18.0.1"), ("client.port", "40002")]),
    );
    let got = span_flows(&store, SpanKind::Server, t, t + 600, &ep).unwrap();
    assert_eq!(got.matched, "exact");
    assert_eq!(got.conversations[0].server, "198.18.0.2:8080");
    // Long after: nothing.
    let ep = endpoints(
        SpanKind::Client,
        &attrs(&[("server.address", "198.18.0.2"), ("server.port", "8080")]),
    );
    let got = span_flows(&store, SpanKind::Client, t + 10_000, t + 10_010, &ep).unwrap();
    assert_eq!(got.matched, "none");
}

struct Fixed(Vec<Span>);

impl TelemetryCodec for Fixed {
    fn spans(&self, _: &[u8], _: Encoding) -> Result<Vec<Span>, DecodeError> {
        Ok(self.0.clone())
    }
    fn logs(&self, _: &[u8], _: Encoding) -> Result<Vec<LogLine>, DecodeError> {
        Err(DecodeError {
            at: "resourceLogs[0]".into(),
            problem: "bad".into(),
        })
    }
}

#[test]
fn spans_are_kept_with_their_endpoints_and_read_back_by_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path().join("flows"))).unwrap());
    let records = Arc::new(RecordStore::open(&dir.path().join("records")).unwrap());
    let mut many = attrs(&[("server.address", "198.18.0.2"), ("server.port", "8080")]);
    for i in 0..50 {
        many.push((format!("a{i}"), "x".repeat(600)));
    }
    let span = Span {
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        span_id: "b7ad6b7169203331".into(),
        parent_span_id: None,
        name: "GET".into(),
        kind: SpanKind::Client,
        start_ns: 1_700_000_000_000_000_000,
        end_ns: 1_700_000_000_002_500_000,
        status: "ok",
        status_message: String::new(),
        service: "shop".into(),
        attributes: many,
    };
    let svc = TelemetryService::new(Box::new(Fixed(vec![span])), records.clone(), store);
    assert_eq!(svc.receive_spans(b"", Encoding::Json).unwrap().stored, 1);
    let e = svc.receive_logs(b"", Encoding::Json).unwrap_err();
    assert_eq!(e.to_string(), "resourceLogs[0]: bad");
    assert_eq!(svc.counts(), (1, 0, 1));
    let (spans, logs) = svc.trace("0AF7651916CD43DD8448EB211C80319C").unwrap();
    assert!(logs.is_empty());
    let s = &spans[0];
    assert_eq!(
        (s.start_ms, s.end_ms, s.duration_us),
        (1_700_000_000_000, 1_700_000_000_003, 2500)
    );
    assert_eq!(s.peer.as_deref(), Some("198.18.0.2:8080"));
    assert_eq!(s.labels.len(), crate::records::MAX_LABELS);
    assert!(
        s.labels
            .values()
            .all(|v| v.len() <= crate::records::MAX_LABEL_BYTES)
    );
    assert_eq!(s.flows.matched, "none");
    assert!(matches!(svc.trace("xyz"), Err(TelemetryError::Invalid(_))));
}
