//! Plugin benchmark: boundary cost per flow of 10 k-flow batches through trivial plugins
//! against the same logic natively, load time cold and from the compiled cache, and memory per
//! loaded plugin. Prints a table; see docs/PERFORMANCE.md. Needs the plugins built:
//! `cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`, then
//! `cargo bench -p weir-host --bench plugins`.

#[path = "../../benches/support/proc_status.rs"]
mod proc_status;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use weir_core::Flow;
use weir_host::plugin::{LoadRequest, Plugin};
use weir_host::{Capability, FlowBatch, Manifest, Runtime};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    )))
    .expect("build the plugins first (see the header of this file)")
}

fn manifest(name: &str) -> Manifest {
    Manifest::parse(
        &std::fs::read_to_string(dir().join(name).join("plugin.toml")).expect("toml"),
        "plugin.toml",
    )
    .expect("manifest")
}

fn load(rt: &Runtime, name: &str, grants: &[Capability]) -> Plugin {
    load_with(rt, name, grants, BTreeMap::new())
}

/// Sankey over 1 M stored flows: the store's own aggregation (baseline) against the bundled
/// sankey plugin drawing the same grouping (aggregation through the `flows` capability + the
/// plugin's work), medians of 5. Returns (flows, aggregate ms, sankey ms, nodes, links).
fn sankey_over_stored_flows(rt: &Runtime) -> (usize, f64, f64, usize, usize) {
    use weir_core::query::{TimeRange, parse, parse_group_by};
    use weir_host::plugin::wit_types::{RenderRequest, TimeRange as WitRange, View};
    let n = 1_000_000usize;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(
        weir_core::Store::open(weir_core::store::StoreConfig::new(tmp.path().join("store")))
            .expect("store"),
    );
    let t0 = 1_700_000_000_000u64;
    for start in (0..n).step_by(10_000) {
        let batch: Vec<Flow> = (start..start + 10_000)
            .map(|i| {
                let mut f = Flow::empty();
                f.time_flow_start_ms = t0 + i as u64;
                f.time_flow_end_ms = t0 + i as u64 + 5;
                f.proto = 6;
                f.bytes = 100 + (i % 1500) as u64;
                f.packets = 1 + (i % 20) as u64;
                f.src_addr = format!("10.0.{}.{}", (i / 250) % 8, i % 250)
                    .parse()
                    .expect("ip");
                f.dst_addr = format!("10.1.0.{}", i % 100).parse().expect("ip");
                f.dst_port = [443, 80, 53, 22, 8080, 5432, 6379, 9090][i % 8];
                f
            })
            .collect();
        store.append(&batch).expect("append");
    }
    store.flush().expect("flush");
    let fields = "SrcAddr,DstPort,DstAddr";
    let range = TimeRange {
        from_ms: t0,
        to_ms: t0 + n as u64 + 10,
    };
    let expr = parse("").expect("filter");
    let group_by = parse_group_by(fields).expect("group by");
    let agg = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(
                    store
                        .aggregate(&expr, &range, &group_by, None)
                        .expect("agg"),
                );
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    );
    let bytes = wasm("sankey");
    let sankey = Plugin::load(
        rt,
        LoadRequest {
            wasm: &bytes,
            manifest: Some(manifest("sankey")),
            grants: &[Capability::Flows, Capability::FlowStats],
            limits: None,
            config: BTreeMap::new(),
            flows: Some(store.clone()),
            services: Default::default(),
            scopes: Default::default(),
        },
    )
    .expect("sankey");
    let req = RenderRequest {
        params: vec![("group_by".into(), fields.into())],
        filter: String::new(),
        range: WitRange {
            from_ms: range.from_ms,
            to_ms: range.to_ms,
        },
    };
    let mut shape = (0, 0);
    let drawn = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let v = sankey.render(&req).expect("render");
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if let View::Sankey(s) = v {
                    shape = (s.nodes.len(), s.links.len());
                }
                ms
            })
            .collect(),
    );
    (n, agg, drawn, shape.0, shape.1)
}

fn load_with(
    rt: &Runtime,
    name: &str,
    grants: &[Capability],
    config: BTreeMap<String, String>,
) -> Plugin {
    let bytes = wasm(name);
    Plugin::load(
        rt,
        LoadRequest {
            wasm: &bytes,
            manifest: Some(manifest(name)),
            grants,
            limits: None,
            config,
            flows: None,
            services: Default::default(),
            scopes: Default::default(),
        },
    )
    .expect("load")
}

/// The host-call benchmark: a kv get, a records query of 100 rows and an HTTP GET to a
/// loopback server, each through `contract-probe` (per call: the time of 200 calls less that
/// of none, over 200) against the same work done natively in this process. Returns rows of
/// (what, plugin us per call, native us per call).
fn host_calls() -> Vec<(&'static str, f64, f64)> {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().expect("tempdir");
    let records = std::sync::Arc::new(
        weir_core::records::RecordStore::open(&tmp.path().join("records")).expect("records"),
    );
    let entries: Vec<weir_core::records::Entry> = (0..1000u64)
        .map(|i| weir_core::records::Entry {
            time_ms: 1_800_000_000_000 + i,
            end_ms: None,
            kind: "bench".into(),
            text: format!("entry {i}"),
            labels: vec![("i".into(), i.to_string())],
            flow_filter: None,
        })
        .collect();
    records.write("bench", entries).expect("write");
    // A keep-alive loopback HTTP server answering every request with 2 bytes.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 8192];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if conn.write_all(r).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let url = format!("http://127.0.0.1:{port}/");
    let services = weir_host::Services::default();
    let _ = services.records.set(records.clone());
    let rt = Runtime::new(None).expect("runtime");
    let probe = |mode: &str, repeat: u32| {
        let bytes = wasm("contract-probe");
        let m = manifest("contract-probe");
        let scopes = m.scopes.clone();
        Plugin::load(
            &rt,
            LoadRequest {
                wasm: &bytes,
                manifest: Some(m),
                grants: &[
                    Capability::Config,
                    Capability::FlowFields,
                    Capability::Records,
                    Capability::OutboundHttp,
                    Capability::Kv,
                ],
                limits: None,
                config: BTreeMap::from([
                    ("mode".to_string(), mode.to_string()),
                    ("repeat".to_string(), repeat.to_string()),
                    ("url".to_string(), url.clone()),
                ]),
                flows: None,
                services: services.clone(),
                scopes,
            },
        )
        .expect("load")
    };
    let per_call = |mode: &str| {
        let (none, many) = (probe(mode, 0), probe(mode, 200));
        let empty = FlowBatch::new(&[]);
        let t = |p: &Plugin| {
            median(
                (0..7)
                    .map(|_| {
                        let s = Instant::now();
                        p.process(&empty).expect("probe");
                        s.elapsed().as_secs_f64() * 1e6
                    })
                    .collect(),
            )
        };
        (t(&many) - t(&none)) / 200.0
    };
    let native = |f: &dyn Fn()| {
        median(
            (0..7)
                .map(|_| {
                    let s = Instant::now();
                    for _ in 0..200 {
                        f();
                    }
                    s.elapsed().as_secs_f64() * 1e6 / 200.0
                })
                .collect(),
        )
    };
    let kv: BTreeMap<String, Vec<u8>> = BTreeMap::from([("key".to_string(), vec![1u8; 64])]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .build()
        .into();
    let q = weir_core::records::RecordQuery {
        to_ms: u64::MAX,
        limit: 100,
        ..Default::default()
    };
    vec![
        (
            "kv get (64 bytes)",
            per_call("kv-get"),
            native(&|| {
                std::hint::black_box(kv.get("key").cloned());
            }),
        ),
        (
            "records query, 100 rows",
            per_call("records-query"),
            native(&|| {
                std::hint::black_box(records.query(&q).expect("query"));
            }),
        ),
        (
            "outbound HTTP GET to a loopback server",
            per_call("http-get"),
            native(&|| {
                let mut r = agent.get(&url).call().expect("get");
                std::hint::black_box(r.body_mut().read_to_vec().expect("body"));
            }),
        ),
    ]
}

fn flows(n: usize) -> Vec<Flow> {
    (0..n)
        .map(|i| {
            let mut f = Flow::empty();
            f.proto = [6, 17, 1][i % 3];
            f.bytes = 100 + i as u64;
            f.packets = 1 + (i % 10) as u64;
            f.src_addr = format!("10.0.{}.{}", (i / 250) % 250, i % 250)
                .parse()
                .expect("ip");
            f.dst_addr = "10.1.0.1".parse().expect("ip");
            f.src_mac = "02:00:00:00:00:01".into();
            f.dst_mac = "02:00:00:00:00:02".into();
            f.interface = "eth0".into();
            // Fields only `flow-fields` reaches.
            f.time_flow_rtt_ns = 50_000 + (i % 1000) as u64;
            f.dns_latency_us = if i % 5 == 0 { 300 } else { 0 };
            f.pkt_drop_packets = (i % 7 == 0) as u64;
            f.src_k8s_namespace = ["shop", "db", "web", "auth"][i % 4].into();
            f.dst_k8s_namespace = ["kube-system", "db"][i % 2].into();
            f
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    proc_status::status_kib("self", "VmRSS:")
}

/// The flow-count logic, natively, over the agent's own flow records.
fn native_flow_count(batch: &[Flow]) -> usize {
    let mut per = vec![(0u64, 0u64, 0u64); 256];
    for f in batch {
        let s = u64::from(f.sampling.max(1));
        let e = &mut per[usize::from(f.proto)];
        e.0 += 1;
        e.1 += f.bytes * s;
        e.2 += f.packets * s;
    }
    std::hint::black_box(per).iter().filter(|e| e.0 > 0).count()
}

fn main() {
    let rt = Runtime::new(None).expect("runtime");
    let records = flows(10_000);
    let counter = load(&rt, "flow-count", &[]);
    // hostile's default mode pulls every column of the batch across and counts it.
    let trivial = load(
        &rt,
        "hostile",
        &[Capability::Config, Capability::Kv, Capability::Log],
    );
    let whole = load_with(
        &rt,
        "hostile",
        &[Capability::Config, Capability::Kv, Capability::Log],
        BTreeMap::from([("mode".to_string(), "rows".to_string())]),
    );
    let runs = 30;
    let time = |f: &dyn Fn()| -> f64 {
        for _ in 0..3 {
            f();
        }
        median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_nanos() as f64
                })
                .collect(),
        )
    };
    // Built once per stored batch by the agent and shared by every plugin.
    let shared = std::sync::Arc::new(records.clone());
    let columns = time(&|| {
        std::hint::black_box(FlowBatch::shared(shared.clone()));
    });
    let batch = FlowBatch::new(&records);
    let native_noop = time(&|| {
        std::hint::black_box(records.len());
    });
    let native_count = time(&|| {
        native_flow_count(&records);
    });
    let empty = FlowBatch::new(&[]);
    let per_call = time(&|| {
        counter.process(&empty).expect("empty");
    });
    let plugin_rows = time(&|| {
        whole.process(&batch).expect("rows");
    });
    let plugin_noop = time(&|| {
        trivial.process(&batch).expect("trivial");
    });
    let plugin_count = time(&|| {
        counter.process(&batch).expect("flow-count");
    });
    // Five fields by name (flow-fields) against five built-in columns, same plugin.
    let probe = |mode: &str| {
        load_with(
            &rt,
            "contract-probe",
            &[
                Capability::Config,
                Capability::FlowFields,
                Capability::Records,
                Capability::OutboundHttp,
                Capability::Kv,
            ],
            BTreeMap::from([("mode".to_string(), mode.to_string())]),
        )
    };
    let (by_name, builtin) = (probe("by-name"), probe("columns"));
    let five_by_name = time(&|| {
        by_name.process(&batch).expect("by-name");
    });
    let five_columns = time(&|| {
        builtin.process(&batch).expect("columns");
    });
    let n = records.len() as f64;

    // Load times: cold compile, and from the on-disk cache.
    let cache = tempfile::tempdir().expect("tempdir");
    let crt = Runtime::new(Some(cache.path().to_path_buf())).expect("runtime");
    let t = Instant::now();
    let _ = load(&crt, "flow-count", &[]);
    let cold = t.elapsed().as_secs_f64() * 1000.0;
    let warm = median(
        (0..10)
            .map(|_| {
                let t = Instant::now();
                let _ = load(&crt, "flow-count", &[]);
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    );

    // Memory per loaded plugin (pre-linked, ready to call).
    let before = rss_kib();
    let many: Vec<Plugin> = (0..50).map(|_| load(&crt, "flow-count", &[])).collect();
    let per_plugin = (rss_kib().saturating_sub(before)) as f64 / 50.0;
    drop(many);

    let (stored, agg_ms, sankey_ms, nodes, links) = sankey_over_stored_flows(&rt);

    println!("plugin benchmark: 10,000-flow batches, medians of {runs} calls");
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| host: batch to columns, once per batch for all plugins, per flow | {:.1} ns | |",
        columns / n
    );
    println!(
        "| trivial plugin (pulls all 21 columns, counts), per flow | {:.1} ns | |",
        plugin_noop / n
    );
    println!(
        "| same plugin taking whole records (`rows`), per flow | {:.1} ns | |",
        plugin_rows / n
    );
    println!("| same natively, per flow | {:.2} ns | |", native_noop / n);
    println!(
        "| boundary cost per flow (difference) | {:.1} ns | <= 60 ns |",
        (plugin_noop - native_noop) / n
    );
    println!(
        "| five built-in columns (Bytes, Packets, SrcPort, DstPort, Proto) summed, per flow per field (baseline) | {:.1} ns | |",
        five_columns / n / 5.0
    );
    println!(
        "| five fields by name (TimeFlowRttNs, DnsLatencyUs, PktDropPackets, Src/DstK8S_Namespace) summed, per flow per field | {:.1} ns | <= 30 ns |",
        five_by_name / n / 5.0
    );
    println!(
        "| ratio by name / built-in columns | {:.2} | |",
        five_by_name / five_columns
    );
    println!(
        "| flow-count plugin, per flow | {:.1} ns | |",
        plugin_count / n
    );
    println!(
        "| flow-count natively, per flow | {:.1} ns | |",
        native_count / n
    );
    println!(
        "| ratio flow-count plugin / native | {:.2} | <= 3 |",
        plugin_count / native_count
    );
    println!(
        "| fixed cost of one call (warm instance, empty batch) | {:.1} us | |",
        per_call / 1000.0
    );
    println!("| load, cold (compile) | {cold:.1} ms | report |");
    println!("| load from the compiled cache, median | {warm:.2} ms | <= 5 ms |");
    println!(
        "| memory per loaded plugin (RSS / 50 loaded) | {:.0} KiB | <= 2 MB above its heap |",
        per_plugin
    );
    println!(
        "| store aggregation SrcAddr,DstPort,DstAddr over {stored} stored flows (baseline), median of 5 | {agg_ms:.0} ms | |"
    );
    println!(
        "| sankey plugin, same grouping: aggregation + plugin ({nodes} nodes, {links} links), median of 5 | {sankey_ms:.0} ms | <= 300 ms |"
    );
    println!(
        "| ratio sankey / aggregation alone | {:.2} | |",
        sankey_ms / agg_ms
    );
    println!();
    println!("host calls from a plugin against the same work natively, medians of 7 x 200 calls");
    println!();
    println!("| host call | from the plugin, per call | natively, per call | ratio |");
    println!("|---|---|---|---|");
    for (what, plugin, native) in host_calls() {
        println!(
            "| {what} | {plugin:.1} us | {native:.1} us | {:.2} |",
            plugin / native
        );
    }
}
