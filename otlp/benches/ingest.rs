//! OTLP ingest benchmark: spans/s through the receiver, in one process:
//!
//! 1. decode only (protobuf to weir's spans: the floor of any receiver);
//! 2. receive: decode + kept in the records store on disk (what `/v1/traces` does);
//! 3. receive + join: 2, then every span's trace read back with each span joined to its
//!    conversation among 100 k stored flows (what `weir trace` does for every span).
//!
//! Batches of 512 spans (the Python and Go SDKs' default batch size) with 10 attributes each.
//! Prints a markdown table; see docs/PERFORMANCE.md. Run: `cargo bench -p weir-otlp --bench
//! ingest` (`WEIR_BENCH_SPANS`, default 100 000).

use prost::Message;
use std::sync::Arc;
use std::time::Instant;
use weir_core::Flow;
use weir_core::records::RecordStore;
use weir_core::store::{Store, StoreConfig};
use weir_core::telemetry::{Encoding, TelemetryCodec, TelemetryService};
use weir_otlp::Otlp;
use weir_otlp::proto::*;

// The allocator the agent runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 512;
const FLOWS: usize = 100_000;
const T0_MS: u64 = 1_700_000_000_000;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
    }
}

/// Span `n`: a client call to 10.1.x.y:8080 at T0 + n ms, lasting 2 ms.
fn batch(first: usize) -> Vec<u8> {
    let spans = (first..first + BATCH)
        .map(|n| {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
            trace_id[8] = 1;
            let start = (T0_MS + n as u64) * 1_000_000;
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (n as u64 + 1).to_be_bytes().to_vec(),
                parent_span_id: vec![],
                name: "GET /api/items".into(),
                kind: 3,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 2_000_000,
                attributes: vec![
                    kv("http.request.method", Value::String("GET".into())),
                    kv(
                        "url.full",
                        Value::String(format!(
                            "http://10.1.{}.{}:8080/api/items",
                            (n / 250) % 250,
                            n % 250
                        )),
                    ),
                    kv(
                        "server.address",
                        Value::String(format!("10.1.{}.{}", (n / 250) % 250, n % 250)),
                    ),
                    kv("server.port", Value::Int(8080)),
                    kv("http.response.status_code", Value::Int(200)),
                    kv("network.protocol.version", Value::String("1.1".into())),
                    kv("user_agent.original", Value::String("bench/1.0".into())),
                    kv("thread.id", Value::Int(n as i64 % 16)),
                    kv("code.function", Value::String("fetch".into())),
                    kv("retry", Value::Bool(false)),
                ],
                status: Some(Status {
                    message: String::new(),
                    code: 1,
                }),
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::String("shop".into()))],
            }),
            scope_spans: vec![ScopeSpans { scope: None, spans }],
        }],
    }
    .encode_to_vec()
}

fn flows() -> Vec<Flow> {
    (0..FLOWS)
        .map(|n| {
            let mut f = Flow::empty();
            f.src_addr = "10.0.0.1".parse().expect("addr");
            f.src_port = 10_000 + (n % 50_000) as u16;
            f.dst_addr = format!("10.1.{}.{}", (n / 250) % 250, n % 250)
                .parse()
                .expect("addr");
            f.dst_port = 8080;
            f.proto = 6;
            f.time_flow_start_ms = T0_MS + n as u64;
            f.time_flow_end_ms = T0_MS + n as u64 + 2;
            f.time_received = f.time_flow_end_ms;
            f.bytes = 1500;
            f.packets = 6;
            f.flags = weir_core::flow::FLAG_SYN_NO_ACK;
            f
        })
        .collect()
}

fn main() {
    let spans: usize = std::env::var("WEIR_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        / BATCH
        * BATCH;
    let bodies: Vec<Vec<u8>> = (0..spans / BATCH).map(|b| batch(b * BATCH)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(StoreConfig::new(dir.path().join("flows"))).expect("store"));
    for chunk in flows().chunks(10_000) {
        store.append(chunk).expect("append");
    }
    store.flush().expect("flush");
    let records = Arc::new(RecordStore::open(&dir.path().join("records")).expect("records"));
    let svc = TelemetryService::new(Box::new(Otlp), records, store);

    let t = Instant::now();
    let mut n = 0;
    for b in &bodies {
        n += Otlp.spans(b, Encoding::Protobuf).expect("decode").len();
    }
    let decode = t.elapsed().as_secs_f64();
    assert_eq!(n, spans);

    let t = Instant::now();
    for b in &bodies {
        svc.receive_spans(b, Encoding::Protobuf).expect("receive");
    }
    let receive = t.elapsed().as_secs_f64();

    // The join: a sample of traces read back (each a records scan + a flow query), scaled.
    let sample = 200.min(spans);
    let t = Instant::now();
    let mut joined = 0;
    for i in 0..sample {
        let n = i * (spans / sample);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
        id[8] = 1;
        let (views, _) = svc.trace(&weir_core::telemetry::hex(&id)).expect("trace");
        joined += views
            .iter()
            .filter(|v| v.flows.matched == "opened" && v.flows.conversations.len() == 1)
            .count();
    }
    let per_trace = t.elapsed().as_secs_f64() / sample as f64;
    assert_eq!(
        joined, sample,
        "every sampled span joined to its one connection"
    );

    let rate = |s: f64| spans as f64 / s;
    println!(
        "OTLP ingest, {spans} spans in batches of {BATCH}, 10 attributes each; {FLOWS} stored flows\n"
    );
    println!("| stage | spans/s | vs decode only |");
    println!("|---|---:|---:|");
    println!("| decode only (protobuf) | {:.0} | 1.00 |", rate(decode));
    println!(
        "| receive: decode + kept on disk | {:.0} | {:.2} |",
        rate(receive),
        decode / receive
    );
    println!(
        "| trace lookup + join (per trace, {sample} sampled) | {:.1} ms | |",
        per_trace * 1e3
    );
}
