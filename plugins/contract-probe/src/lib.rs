//! Test fixture and benchmark plugin for the contract's newer capabilities (`flow-fields`,
//! `records`). Config `mode`:
//! - `by-name` (default): reads each field of `fields` from the batch by name and emits
//!   `field_sum` (numbers), `field_distinct` (texts) or `field_count` (addresses) per field;
//! - `columns`: reads five built-in columns instead (the benchmark's baseline);
//! - `select`: pages through stored history matching `filter` with `select` (`page` rows a
//!   call) and emits `select_rows`, `select_pages` and `select_sum` of the first field;
//! - `select-loop`: selects the widest range forever (the deadline must stop it);
//! - `annotate`: returns one annotation per batch at its newest flow's end (`text` from
//!   config, the batch's size as a label, `filter` as its flow filter), which the host keeps
//!   as a record;
//! - `http`: sends `method` (GET) to `url` through `outbound-http` and emits `http_status`
//!   and `http_body_bytes`; `http-loop` sends forever (the deadline must stop it);
//! - `kv-get`, `records-query`, `http-get`: `repeat` host calls of one kind (a kv get, a
//!   records query of `page` rows, a GET of `url`), for the host-call benchmark;
//! - `records`: writes `count` entries of kind `kind` through `records`, reads back every
//!   entry of that kind page by page (`page`), and emits `records_written`/`records_read`;
//! - `k8s`: lists each kind of `kinds` through `k8s-objects` (in `namespace`, matching
//!   `selector`, when given) and writes what it got as records: one `k8s-probe` entry per
//!   object (text `Kind namespace/name`, its labels, and `json_has` = whether its JSON contains
//!   the config's `json_has`), one `k8s-probe-error` entry per refused kind (the refusal as
//!   text), and one `k8s-probe-kinds` entry listing `kinds()`;
//! - `probe`: tries each of `targets` (`netns/addr/port/tcp|udp/timeout_ms`, `;`-separated;
//!   netns `-` for the agent's own) through `probe` and writes one `probe-result` record per
//!   target (text: the outcome, or the refusal; labels `target`, `detail`);
//! - `capture`: sets `sampling` when given through `capture-control`, then `repeat` times (1)
//!   sets `rules` (`;`-separated), writing one `capture-result` record per call (text `ok` or
//!   the refusal; label `call`) and one `capture-state` record with `rules()` and `sampling()`.

use weir_plugin_sdk::flow_processor::{
    self, Annotation, Batch, Column, FlowBatch, Guest, MetricKind, MetricSample, PluginError,
    Processed, TimeRange, capture_control, config, flow_fields, k8s_objects, kv, outbound_http,
    probe, records,
};

struct Probe;

fn sample(name: &str, field: &str, value: f64) -> MetricSample {
    MetricSample {
        name: name.into(),
        kind: MetricKind::Gauge,
        labels: vec![("field".into(), field.into())],
        value,
    }
}

fn fields() -> Vec<String> {
    config::get("fields")
        .unwrap_or_else(|| {
            "TimeFlowRttNs,DnsLatencyUs,PktDropPackets,SrcK8S_Namespace,DstK8S_Namespace".into()
        })
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

fn summary(field: &str, c: &Column) -> MetricSample {
    match c {
        Column::Numbers(v) => sample("field_sum", field, v.iter().sum::<u64>() as f64),
        Column::Addrs(v) => sample("field_count", field, v.len() as f64),
        Column::Texts(t) => sample("field_distinct", field, t.values.len() as f64),
    }
}

fn outcome_name(o: probe::Outcome) -> &'static str {
    match o {
        probe::Outcome::Connected => "connected",
        probe::Outcome::Answered => "answered",
        probe::Outcome::Refused => "refused",
        probe::Outcome::Unreachable => "unreachable",
        probe::Outcome::TimedOut => "timed-out",
        probe::Outcome::NoAnswer => "no-answer",
    }
}

/// `netns/addr/port/tcp|udp/timeout_ms` as a probe target.
fn parse_target(spec: &str) -> Result<probe::Target, String> {
    let parts: Vec<&str> = spec.split('/').collect();
    let [netns, addr, port, proto, timeout] = parts[..] else {
        return Err(format!("target {spec:?}: netns/addr/port/proto/timeout_ms"));
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?}: not an address"))?;
    let v = u128::from(match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    });
    Ok(probe::Target {
        netns: if netns == "-" {
            String::new()
        } else {
            netns.into()
        },
        addr: probe::IpAddr {
            hi: (v >> 64) as u64,
            lo: v as u64,
        },
        port: port.parse().map_err(|_| format!("{port:?}: not a port"))?,
        protocol: if proto == "udp" {
            probe::Protocol::Udp
        } else {
            probe::Protocol::Tcp
        },
        timeout_ms: timeout
            .parse()
            .map_err(|_| format!("{timeout:?}: not ms"))?,
    })
}

impl Guest for Probe {
    fn process(batch: &FlowBatch) -> Result<Processed, PluginError> {
        let batch = Batch::new(batch);
        let mode = config::get("mode").unwrap_or_else(|| "by-name".into());
        let mut samples = Vec::new();
        let mut annotations = Vec::new();
        let number = |key: &str, default: u64| {
            config::get(key)
                .and_then(|p| p.parse::<u64>().ok())
                .unwrap_or(default)
        };
        match mode.as_str() {
            "annotate" => annotations.push(Annotation {
                time_ms: batch.time_flow_end_ms().iter().copied().max().unwrap_or(0),
                text: config::get("text").unwrap_or_else(|| "probe".into()),
                labels: vec![("flows".into(), batch.len().to_string())],
                flow_filter: config::get("filter"),
            }),
            "http" | "http-loop" => {
                let url = config::get("url").unwrap_or_default();
                let req = outbound_http::Request {
                    method: config::get("method").unwrap_or_else(|| "GET".into()),
                    url: url.clone(),
                    headers: vec![("x-probe".into(), "1".into())],
                    body: config::get("body").unwrap_or_default().into_bytes(),
                };
                loop {
                    let resp = outbound_http::send(&req, number("timeout_ms", 5000) as u32)
                        .map_err(PluginError::InvalidInput)?;
                    if mode == "http" {
                        samples.push(sample("http_status", &url, f64::from(resp.status)));
                        samples.push(sample("http_body_bytes", &url, resp.body.len() as f64));
                        break;
                    }
                }
            }
            "kv-get" | "records-query" | "http-get" => {
                let (repeat, page) = (number("repeat", 1), number("page", 100) as u32);
                let url = config::get("url").unwrap_or_default();
                let mut got = 0usize;
                for _ in 0..repeat {
                    got += match mode.as_str() {
                        "kv-get" => kv::get("key").map_or(0, |v| v.len()),
                        "records-query" => records::query(&records::RecordQuery {
                            range: TimeRange {
                                from_ms: 0,
                                to_ms: u64::MAX,
                            },
                            kinds: Vec::new(),
                            source: None,
                            labels: Vec::new(),
                            after_seq: 0,
                            limit: page,
                        })
                        .map_err(PluginError::InvalidInput)?
                        .len(),
                        _ => {
                            let req = outbound_http::Request {
                                method: "GET".into(),
                                url: url.clone(),
                                headers: Vec::new(),
                                body: Vec::new(),
                            };
                            outbound_http::send(&req, 5000)
                                .map_err(PluginError::InvalidInput)?
                                .body
                                .len()
                        }
                    };
                }
                samples.push(sample("host_calls", &mode, got as f64));
            }
            "records" => {
                let kind = config::get("kind").unwrap_or_else(|| "probe".into());
                let count = number("count", 10);
                let entries: Vec<records::Entry> = (0..count)
                    .map(|i| records::Entry {
                        time_ms: 1_800_000_000_000 + i,
                        end_ms: Some(1_800_000_000_000 + i + 5),
                        kind: kind.clone(),
                        text: format!("entry {i}"),
                        labels: vec![("i".into(), i.to_string())],
                        flow_filter: Some("DstPort=443".into()),
                    })
                    .collect();
                let mut written = 0usize;
                for chunk in entries.chunks(1000) {
                    written += records::write(chunk)
                        .map_err(PluginError::InvalidInput)?
                        .len();
                }
                let (mut after, mut read) = (0u64, 0usize);
                loop {
                    let page = records::query(&records::RecordQuery {
                        range: TimeRange {
                            from_ms: 0,
                            to_ms: u64::MAX,
                        },
                        kinds: vec![kind.clone()],
                        source: None,
                        labels: Vec::new(),
                        after_seq: after,
                        limit: number("page", 100) as u32,
                    })
                    .map_err(PluginError::InvalidInput)?;
                    let Some(last) = page.last() else { break };
                    after = last.seq;
                    read += page.len();
                }
                samples.push(sample("records_written", &kind, written as f64));
                samples.push(sample("records_read", &kind, read as f64));
            }
            "k8s" => {
                let now = batch.time_flow_end_ms().iter().copied().max().unwrap_or(0);
                let entry =
                    |kind: &str, text: String, labels: Vec<(String, String)>| records::Entry {
                        time_ms: now,
                        end_ms: None,
                        kind: kind.into(),
                        text: text.chars().take(4000).collect(),
                        labels,
                        flow_filter: None,
                    };
                let needle = config::get("json_has").unwrap_or_default();
                let mut out = vec![entry(
                    "k8s-probe-kinds",
                    k8s_objects::kinds().join(","),
                    Vec::new(),
                )];
                let (ns, sel) = (config::get("namespace"), config::get("selector"));
                for kind in config::get("kinds").unwrap_or_default().split(',') {
                    match k8s_objects::list(kind, ns.as_deref(), sel.as_deref()) {
                        Ok(objects) => out.extend(objects.into_iter().take(100).map(|o| {
                            let mut labels = o.labels;
                            labels.truncate(30);
                            labels.push((
                                "json_has".into(),
                                (!needle.is_empty() && o.json.contains(&needle)).to_string(),
                            ));
                            entry(
                                "k8s-probe",
                                format!("{} {}/{}", o.kind, o.namespace, o.name),
                                labels,
                            )
                        })),
                        Err(e) => out.push(entry(
                            "k8s-probe-error",
                            e,
                            vec![("kind".into(), kind.into())],
                        )),
                    }
                }
                records::write(&out).map_err(PluginError::InvalidInput)?;
            }
            "capture" => {
                let now = batch.time_flow_end_ms().iter().copied().max().unwrap_or(0);
                let entry = |kind: &str, text: String, call: String| records::Entry {
                    time_ms: now,
                    end_ms: None,
                    kind: kind.into(),
                    text,
                    labels: vec![("call".into(), call)],
                    flow_filter: None,
                };
                let rules: Vec<String> = config::get("rules")
                    .unwrap_or_default()
                    .split(';')
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .collect();
                let mut out = Vec::new();
                if let Some(n) = config::get("sampling").and_then(|s| s.parse::<u32>().ok()) {
                    let r = capture_control::set_sampling(n);
                    out.push(entry(
                        "capture-result",
                        r.err().unwrap_or("ok".into()),
                        "sampling".into(),
                    ));
                }
                for i in 0..number("repeat", 1) {
                    let r = capture_control::set_rules(&rules);
                    out.push(entry(
                        "capture-result",
                        r.err().unwrap_or("ok".into()),
                        format!("rules-{i}"),
                    ));
                }
                out.push(entry(
                    "capture-state",
                    format!(
                        "rules: [{}] sampling: {}",
                        capture_control::rules().join("; "),
                        capture_control::sampling()
                    ),
                    "state".into(),
                ));
                records::write(&out).map_err(PluginError::InvalidInput)?;
            }
            "probe" => {
                let now = batch.time_flow_end_ms().iter().copied().max().unwrap_or(0);
                let mut out = Vec::new();
                for spec in config::get("targets").unwrap_or_default().split(';') {
                    let (text, detail) = match parse_target(spec) {
                        Ok(t) => match probe::connect(&t) {
                            Ok(r) => (outcome_name(r.outcome).to_string(), r.detail),
                            Err(e) => (format!("error: {e}"), String::new()),
                        },
                        Err(e) => (format!("error: {e}"), String::new()),
                    };
                    out.push(records::Entry {
                        time_ms: now,
                        end_ms: None,
                        kind: "probe-result".into(),
                        text,
                        labels: vec![("target".into(), spec.into()), ("detail".into(), detail)],
                        flow_filter: None,
                    });
                }
                records::write(&out).map_err(PluginError::InvalidInput)?;
            }
            "by-name" => {
                for f in fields() {
                    let c = batch.field(&f)?;
                    if c.len() != batch.len() {
                        return Err(PluginError::Failed(format!(
                            "{f}: {} values for {} flows",
                            c.len(),
                            batch.len()
                        )));
                    }
                    samples.push(summary(&f, &c));
                }
            }
            "columns" => {
                let sums = [
                    ("Bytes", batch.bytes().iter().sum::<u64>()),
                    ("Packets", batch.packets().iter().sum::<u64>()),
                    (
                        "SrcPort",
                        batch.src_port().iter().map(|&p| u64::from(p)).sum(),
                    ),
                    (
                        "DstPort",
                        batch.dst_port().iter().map(|&p| u64::from(p)).sum(),
                    ),
                    ("Proto", batch.proto().iter().map(|&p| u64::from(p)).sum()),
                ];
                for (f, s) in sums {
                    samples.push(sample("field_sum", f, s as f64));
                }
            }
            "select" | "select-loop" => {
                let filter = config::get("filter").unwrap_or_default();
                let page = number("page", 1000) as u32;
                let fields = fields();
                let names: Vec<&str> = fields.iter().map(String::as_str).collect();
                let all = TimeRange {
                    from_ms: 0,
                    to_ms: u64::MAX,
                };
                let (mut rows, mut pages, mut sum) = (0usize, 0usize, 0u64);
                loop {
                    flow_processor::select_all(&filter, all, &names, page, 0, |sel| {
                        pages += 1;
                        rows += sel.seqs.len();
                        if let Some(first) = sel.columns.first().and_then(Column::numbers) {
                            sum += first.iter().sum::<u64>();
                        }
                    })
                    .map_err(PluginError::InvalidInput)?;
                    if mode == "select" {
                        break;
                    }
                }
                let first = names.first().copied().unwrap_or("");
                samples.push(sample("select_rows", first, rows as f64));
                samples.push(sample("select_pages", first, pages as f64));
                samples.push(sample("select_sum", first, sum as f64));
            }
            "schema" => {
                let all = flow_fields::fields();
                samples.push(sample("schema_fields", "", all.len() as f64));
            }
            other => return Err(PluginError::InvalidInput(format!("unknown mode {other}"))),
        }
        Ok(Processed {
            samples,
            annotations,
        })
    }
}

flow_processor::export!(Probe);
