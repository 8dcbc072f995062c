//! An exporter: flows as OpenTelemetry logs and flow metrics as OTLP metrics, encoded as
//! OTLP/HTTP protobuf (`ExportLogsServiceRequest`, `ExportMetricsServiceRequest` of
//! opentelemetry-proto 1.x) and sent through the sinks the operator names; the manifest's
//! `media_type` makes the host POST them as `application/x-protobuf`.
//!
//! - **Logs** (config `logs=SINK`, a sink whose URL ends in `/v1/logs`): one log record per
//!   flow, `event_name` `weir.flow`, severity INFO, timestamped at the flow's end, its body a
//!   one-line summary. Attributes: OpenTelemetry's network names for the 5-tuple
//!   (`source.address`, `source.port`, `destination.address`, `destination.port`,
//!   `network.transport`, `network.type`), then every field of config `fields` (any schema
//!   field, by its NetObserv name; empty texts left out) as int or string values.
//! - **Metrics** (config `metrics=SINK`, a URL ending in `/v1/metrics`): per batch, delta
//!   monotonic sums grouped by config `metric_by` (schema fields, default `Proto`):
//!   `weir.flow.bytes` (By) and `weir.flow.packets` ({packet}), both scaled back by each
//!   flow's sampling as weir's own sums are, and `weir.flows` ({flow}, records). Each point
//!   spans its group's earliest start to latest end.
//! - **Resource**: `service.name` (config `service_name`, default `weir`) plus config
//!   `resource` (`k=v;k=v`, e.g. `host.name=node-1;k8s.cluster.name=prod`); scope `weir`.
//!
//! Logs go out at most `max_flows` records a request (default 1000).

use std::collections::BTreeMap;
use weir_plugin_sdk::exporter::{
    Batch, Column, FlowBatch, Guest, IpAddr, PluginError, clock, config, destination, export, sink,
};

/// Log attributes written when `fields` is not set.
const DEFAULT_FIELDS: &str = "Bytes,Packets,Sampling,Interface,IfDirection,Flags,TimeFlowStartMs,TimeFlowEndMs,TimeFlowRttNs,PktDropPackets,DnsName,DnsFlagsResponseCode,SrcK8S_Namespace,SrcK8S_Name,DstK8S_Namespace,DstK8S_Name";
/// OTLP's SeverityNumber INFO.
const SEVERITY_INFO: u64 = 9;
/// OTLP's AggregationTemporality DELTA.
const DELTA: u64 = 1;

/// A protobuf writer: just what OTLP's messages need.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn tag(&mut self, field: u32, wire: u64) {
        self.varint((u64::from(field) << 3) | wire);
    }
    /// A varint field (uint32/64, int64 of a non-negative value, enum, bool).
    fn uint(&mut self, field: u32, v: u64) {
        self.tag(field, 0);
        self.varint(v);
    }
    fn fixed64(&mut self, field: u32, v: u64) {
        self.tag(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    /// An embedded message, written by `f`.
    fn msg(&mut self, field: u32, f: impl FnOnce(&mut Pb)) {
        let mut inner = Pb::default();
        f(&mut inner);
        self.bytes(field, &inner.0);
    }
}

/// An attribute value.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Val {
    Int(u64),
    Str(String),
}

/// `KeyValue { key = 1; AnyValue value = 2 }`, AnyValue's `string_value = 1`,
/// `int_value = 3`.
fn key_value(pb: &mut Pb, field: u32, key: &str, v: &Val) {
    pb.msg(field, |kv| {
        kv.string(1, key);
        kv.msg(2, |any| match v {
            Val::Str(s) => any.string(1, s),
            // int64: a value over i64::MAX keeps its bits (two's complement), as prost would.
            Val::Int(n) => any.uint(3, *n),
        });
    });
}

fn resource(pb: &mut Pb, attrs: &[(String, String)]) {
    pb.msg(1, |r| {
        for (k, v) in attrs {
            key_value(r, 1, k, &Val::Str(v.clone()));
        }
    });
}

/// `InstrumentationScope { name = 1; version = 2 }`.
fn scope(pb: &mut Pb) {
    pb.msg(1, |s| {
        s.string(1, "weir");
        s.string(2, env!("CARGO_PKG_VERSION"));
    });
}

fn is_v4(a: &IpAddr) -> bool {
    a.hi == 0 && a.lo >> 32 == 0xffff
}

/// One column's value `i` as an attribute (None: an empty text).
fn value(col: &Column, i: usize) -> Option<Val> {
    if let Some(v) = col.numbers() {
        return Some(Val::Int(v.get(i).copied().unwrap_or(0)));
    }
    if let Some(a) = col.addrs() {
        return a
            .get(i)
            .map(|ip| Val::Str(weir_plugin_sdk::ip(ip.hi, ip.lo).to_string()));
    }
    col.text(i)
        .filter(|t| !t.is_empty())
        .map(|t| Val::Str(t.to_string()))
}

fn list(key: &str, default: &str) -> Vec<String> {
    config::get(key)
        .unwrap_or_else(|| default.into())
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

/// The resource's attributes: `service.name` and config `resource`.
fn resource_attrs() -> Result<Vec<(String, String)>, PluginError> {
    let mut attrs = vec![(
        "service.name".to_string(),
        config::get("service_name").unwrap_or_else(|| "weir".into()),
    )];
    for pair in config::get("resource")
        .unwrap_or_default()
        .split(';')
        .filter(|p| !p.trim().is_empty())
    {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            PluginError::InvalidInput(format!(
                "config resource: {pair:?} is not key=value (write k=v;k=v)"
            ))
        })?;
        attrs.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(attrs)
}

/// The log records of flows `range`, as one `ExportLogsServiceRequest`.
fn logs_request(
    b: &Batch,
    range: std::ops::Range<usize>,
    names: &[String],
    cols: &[Column],
    res: &[(String, String)],
    now_ns: u64,
) -> Vec<u8> {
    let mut req = Pb::default();
    req.msg(1, |rl| {
        resource(rl, res);
        rl.msg(2, |sl| {
            scope(sl);
            for i in range {
                sl.msg(2, |lr| log_record(lr, b, i, names, cols, now_ns));
            }
        });
    });
    req.0
}

fn log_record(lr: &mut Pb, b: &Batch, i: usize, names: &[String], cols: &[Column], now_ns: u64) {
    let (src, dst) = (&b.src_addr()[i], &b.dst_addr()[i]);
    let (sa, da) = (
        weir_plugin_sdk::ip(src.hi, src.lo).to_string(),
        weir_plugin_sdk::ip(dst.hi, dst.lo).to_string(),
    );
    let (sp, dp, proto) = (b.src_port()[i], b.dst_port()[i], b.proto()[i]);
    let transport = weir_plugin_sdk::proto_name(proto);
    lr.fixed64(1, b.time_flow_end_ms()[i].saturating_mul(1_000_000));
    lr.uint(2, SEVERITY_INFO);
    lr.string(3, "INFO");
    let body = format!(
        "{sa}:{sp} -> {da}:{dp} {transport} {} bytes {} packets",
        b.bytes()[i],
        b.packets()[i]
    );
    lr.msg(5, |any| any.string(1, &body));
    let semconv = [
        ("source.address", Val::Str(sa)),
        ("source.port", Val::Int(u64::from(sp))),
        ("destination.address", Val::Str(da)),
        ("destination.port", Val::Int(u64::from(dp))),
        ("network.transport", Val::Str(transport)),
        (
            "network.type",
            Val::Str(if is_v4(src) { "ipv4" } else { "ipv6" }.into()),
        ),
    ];
    for (k, v) in &semconv {
        key_value(lr, 6, k, v);
    }
    for (name, col) in names.iter().zip(cols) {
        if let Some(v) = value(col, i) {
            key_value(lr, 6, name, &v);
        }
    }
    lr.fixed64(11, now_ns);
    lr.string(12, "weir.flow");
}

/// Per group of `metric_by` values: bytes and packets scaled back, records, first start and
/// last end (ms).
#[derive(Default)]
struct Acc {
    bytes: u64,
    packets: u64,
    flows: u64,
    start: u64,
    end: u64,
}

/// A metric: name, description, unit, and its value from a group's sums.
type MetricDef = (&'static str, &'static str, &'static str, fn(&Acc) -> u64);

fn metrics_request(b: &Batch, by: &[String], cols: &[Column], res: &[(String, String)]) -> Vec<u8> {
    let mut groups: BTreeMap<Vec<Option<Val>>, Acc> = BTreeMap::new();
    for i in 0..b.len() {
        let key: Vec<Option<Val>> = cols.iter().map(|c| value(c, i)).collect();
        let a = groups.entry(key).or_insert_with(|| Acc {
            start: u64::MAX,
            ..Acc::default()
        });
        let s = b.scale(i);
        a.bytes = a.bytes.saturating_add(b.bytes()[i].saturating_mul(s));
        a.packets = a.packets.saturating_add(b.packets()[i].saturating_mul(s));
        a.flows += 1;
        a.start = a.start.min(b.time_flow_start_ms()[i]);
        a.end = a.end.max(b.time_flow_end_ms()[i]);
    }
    let metrics: [MetricDef; 3] = [
        (
            "weir.flow.bytes",
            "bytes of the flows exported in this interval, scaled back by sampling",
            "By",
            |a| a.bytes,
        ),
        (
            "weir.flow.packets",
            "packets of the flows exported in this interval, scaled back by sampling",
            "{packet}",
            |a| a.packets,
        ),
        (
            "weir.flows",
            "flow records exported in this interval",
            "{flow}",
            |a| a.flows,
        ),
    ];
    let mut req = Pb::default();
    req.msg(1, |rm| {
        resource(rm, res);
        rm.msg(2, |sm| {
            scope(sm);
            for (name, description, unit, pick) in metrics {
                sm.msg(2, |m| {
                    m.string(1, name);
                    m.string(2, description);
                    m.string(3, unit);
                    // Sum { data_points = 1; aggregation_temporality = 2; is_monotonic = 3 }
                    m.msg(7, |sum| {
                        for (key, a) in &groups {
                            // NumberDataPoint { start = 2; time = 3; as_int = 6 (sfixed64);
                            // attributes = 7 }
                            sum.msg(1, |dp| {
                                dp.fixed64(2, a.start.saturating_mul(1_000_000));
                                dp.fixed64(3, a.end.saturating_mul(1_000_000));
                                dp.fixed64(6, pick(a));
                                for (field, v) in by.iter().zip(key) {
                                    if let Some(v) = v {
                                        key_value(dp, 7, field, v);
                                    }
                                }
                            });
                        }
                        sum.uint(2, DELTA);
                        sum.uint(3, 1);
                    });
                });
            }
        });
    });
    req.0
}

struct OtlpExport;

impl Guest for OtlpExport {
    fn export(batch: &FlowBatch) -> Result<(), PluginError> {
        let b = Batch::new(batch);
        if b.is_empty() {
            return Ok(());
        }
        let metrics_sink = config::get("metrics");
        let logs_sink = match (config::get("logs"), &metrics_sink) {
            (Some(l), _) => Some(l),
            (None, Some(_)) => None,
            (None, None) => Some(destination()?),
        };
        let res = resource_attrs()?;
        let send = |dest: &str, what: &str, body: &[u8]| {
            sink::send(dest, body).map_err(|e| PluginError::Failed(format!("{what}: {e}")))
        };
        if let Some(dest) = &logs_sink {
            let names = list("fields", DEFAULT_FIELDS);
            let cols = names
                .iter()
                .map(|n| b.field(n))
                .collect::<Result<Vec<_>, _>>()?;
            let max = config::get("max_flows")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(1000)
                .clamp(1, 10_000);
            let now_ns = clock::now_ms().saturating_mul(1_000_000);
            let mut at = 0;
            while at < b.len() {
                let end = (at + max).min(b.len());
                let body = logs_request(&b, at..end, &names, &cols, &res, now_ns);
                send(dest, "logs", &body)?;
                at = end;
            }
        }
        if let Some(dest) = &metrics_sink {
            let by = list("metric_by", "Proto");
            let cols = by
                .iter()
                .map(|n| b.field(n))
                .collect::<Result<Vec<_>, _>>()?;
            send(dest, "metrics", &metrics_request(&b, &by, &cols, &res))?;
        }
        Ok(())
    }
}

export!(OtlpExport);
