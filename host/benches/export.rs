//! Export benchmark: flows per second each bundled exporter sends, against ingest alone
//! (store append + flush of the same flows) in the same run. Two parts:
//!
//! 1. Encoding in the sandbox, the host's sink discarding the bytes: what each exporter
//!    costs the agent per flow, whatever the destination.
//! 2. To a real destination on loopback: `ipfix-export` over UDP to a socket that reads every
//!    datagram, `ndjson-export` into a NATS JetStream stream (Debian's nats-server, each
//!    message acknowledged by the stream), `clickhouse-export` into ClickHouse (Debian's
//!    clickhouse-server 18.16, weir's schema, through the HTTP sink), against the JSONEachRow
//!    rows clickhouse-export sent before 0.3.0, posted by the host in the same run; last
//!    through the agent's own exporter feed (a store holding the flows, the plugin installed
//!    in a registry, `batch_flows` and `in_flight` varied), also to a discarding sink to
//!    show the agent's side alone.
//!
//! Prints markdown tables; see docs/PERFORMANCE.md. Needs the plugins built
//! (`cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`), then
//! `cargo bench -p weir-host --bench export` (`WEIR_BENCH_FLOWS` flows, default 200 000;
//! `WEIR_BENCH_CH_DIR=/dev/shm` keeps ClickHouse's data in memory, taking the disk out).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_core::Flow;
use weir_core::sink::{Destination, SinkError, Sinks, Transport};
use weir_host::plugin::{LoadRequest, Plugin};
use weir_host::{Capability, FlowBatch, Manifest, Runtime};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

/// A transport that counts and drops.
#[derive(Default)]
struct Discard {
    bytes: AtomicU64,
    sends: AtomicU64,
    /// The payloads' size once gzip-compressed as `http+gzip://` sends them (the first
    /// send's, kept to price compression without slowing every send).
    gzip_first: AtomicU64,
    first_len: AtomicU64,
}

impl Transport for Discard {
    fn send(&self, payload: &[u8], _: &str, _: Duration) -> Result<(), SinkError> {
        if self.sends.load(Ordering::Relaxed) == 0 {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let n = std::io::Write::write_all(&mut gz, payload)
                .and_then(|()| gz.finish())
                .map_or(0, |b| b.len());
            self.gzip_first.store(n as u64, Ordering::Relaxed);
            self.first_len
                .store(payload.len() as u64, Ordering::Relaxed);
        }
        self.bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        self.sends.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn load(rt: &Runtime, name: &str, config: &[(&str, &str)], sink: Arc<dyn Transport>) -> Plugin {
    let file = name.replace('-', "_");
    let wasm = std::fs::read(dir().join(format!("target/wasm32-wasip2/release/{file}.wasm")))
        .expect("build the plugins first (see the header of this file)");
    let manifest = Manifest::parse(
        &std::fs::read_to_string(dir().join(format!("{name}/plugin.toml"))).expect("toml"),
        "plugin.toml",
    )
    .expect("manifest");
    let services = weir_host::Services::default();
    let mut sinks = Sinks::default();
    let d = Destination::parse("out=udp://127.0.0.1:9").expect("destination");
    sinks.insert(d, sink);
    let _ = services.sinks.set(sinks);
    let mut grants = vec![
        Capability::Sink,
        Capability::FlowFields,
        Capability::Config,
        Capability::Log,
    ];
    grants.extend(
        manifest
            .capabilities
            .iter()
            .filter(|c| matches!(c, Capability::Kv | Capability::Clock))
            .copied(),
    );
    let mut scopes = BTreeMap::new();
    scopes.insert(Capability::Sink, vec!["*".to_string()]);
    Plugin::load(
        rt,
        LoadRequest {
            wasm: &wasm,
            manifest: Some(manifest),
            grants: &grants,
            limits: None,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flows: None,
            services,
            scopes,
        },
    )
    .expect("load")
}

fn flows(n: usize) -> Vec<Flow> {
    let mut x = 7u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    let t0 = 1_764_900_000_000u64;
    (0..n)
        .map(|i| {
            let mut f = Flow::empty();
            let s = next() % 20_000;
            f.src_addr = format!("10.{}.{}.{}", s / 65536, (s / 256) % 256, s % 256)
                .parse()
                .expect("ip");
            f.dst_addr = format!("10.200.{}.{}", next() % 4, next() % 250)
                .parse()
                .expect("ip");
            f.proto = if next() % 5 == 0 { 17 } else { 6 };
            f.dst_port = [443, 80, 53, 8080][(next() % 4) as usize];
            f.src_port = 30000 + (next() % 30000) as u16;
            f.bytes = 100 + next() % 20_000;
            f.packets = 1 + f.bytes / 1200;
            f.time_flow_end_ms = t0 + i as u64;
            f.time_flow_start_ms = f.time_flow_end_ms - next() % 10_000;
            f.interface = "eth0".into();
            f.src_k8s_namespace = format!("ns-{}", s % 20);
            f.src_k8s_name = format!("pod-{}", s % 500);
            f
        })
        .collect()
}

/// An exporter, its config and its batch size.
type Case = (&'static str, &'static [(&'static str, &'static str)], usize);

/// Flows per second of `export` over every batch.
fn run(p: &Plugin, batches: &[FlowBatch], n: usize) -> f64 {
    let t = Instant::now();
    for b in batches {
        p.export(b).expect("export");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Flows per second the agent's exporter feed sends `fl` through `transport` with
/// clickhouse-export:
/// the flows stored first, the plugin installed (its manifest starting at the oldest flow,
/// `batch` flows a batch, `in_flight` at once), timed from the feed's first status to every
/// flow exported; and flows per second of the store's reads alone, as the feed makes them.
fn through_feed(
    rt: &Arc<Runtime>,
    fl: &[Flow],
    transport: Arc<dyn Transport>,
    batch: usize,
    in_flight: u32,
) -> (f64, f64) {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Arc::new(
        weir_core::Store::open(weir_core::store::StoreConfig::new(tmp.path().join("s")))
            .expect("store"),
    );
    for c in fl.chunks(5000) {
        store.append(c).expect("append");
    }
    store.flush().expect("flush");
    // What the feed's reads alone take (and the host's columns of each batch): every flow,
    // `batch` at a time.
    let (all, every) = (
        weir_core::query::TimeRange {
            from_ms: 0,
            to_ms: u64::MAX,
        },
        weir_core::query::parse("").expect("filter"),
    );
    let t = Instant::now();
    let (mut after, mut read) = (0, 0);
    loop {
        let rows = store.select(&every, &all, after, batch).expect("select");
        let Some((last, _)) = rows.last() else { break };
        after = *last;
        read += rows.len();
        let _ = FlowBatch::shared(Arc::new(rows.into_iter().map(|(_, f)| f).collect()));
    }
    let reads = read as f64 / t.elapsed().as_secs_f64();
    let reg = Arc::new(
        weir_host::registry::Registry::open(&tmp.path().join("plugins"), rt.clone(), Some(store))
            .expect("registry"),
    );
    let mut sinks = Sinks::default();
    let d = Destination::parse("out=udp://127.0.0.1:9").expect("destination");
    sinks.insert(d, transport);
    reg.set_sinks(sinks);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    let toml = std::fs::read_to_string(dir().join("clickhouse-export/plugin.toml")).expect("toml");
    let toml = toml
        .replace("start = \"now\"", "start = \"oldest\"")
        .replace("batch_flows = 50000", &format!("batch_flows = {batch}"));
    let toml = match toml.find("in_flight = ") {
        Some(at) => {
            let end = toml[at..].find('\n').map_or(toml.len(), |e| at + e);
            format!("{}in_flight = {in_flight}{}", &toml[..at], &toml[end..])
        }
        None => toml.replace(
            "[exporter]\n",
            &format!("[exporter]\nin_flight = {in_flight}\n"),
        ),
    };
    std::fs::write(src.join("plugin.toml"), toml).expect("write toml");
    std::fs::copy(
        dir().join("target/wasm32-wasip2/release/clickhouse_export.wasm"),
        src.join("clickhouse_export.wasm"),
    )
    .expect("build the plugins first (see the header of this file)");
    reg.install(&weir_host::registry::InstallRequest {
        source: src,
        config: [
            ("sink", "out"),
            ("node", "node-a"),
            ("max_bytes", "8000000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    })
    .expect("install");
    let feed = |r: &weir_host::registry::Registry| {
        r.list()
            .into_iter()
            .find_map(|l| l.export)
            .unwrap_or_default()
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let supervisor = weir_host::export::spawn(reg.clone(), stop.clone()).expect("feed");
    let deadline = Instant::now() + Duration::from_secs(300);
    while reg.list().iter().all(|l| l.export.is_none()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    let mut s = feed(&reg);
    while s.exported_flows < fl.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        s = feed(&reg);
    }
    let rate = s.exported_flows as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let _ = supervisor.join();
    assert_eq!(s.exported_flows, fl.len() as u64, "feed: {s:?}");
    (rate, reads)
}

fn batches(fl: &[Flow], size: usize) -> Vec<FlowBatch> {
    fl.chunks(size).map(FlowBatch::new).collect()
}

fn main() {
    let n: usize = std::env::var("WEIR_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let fl = flows(n);
    let rt = Arc::new(Runtime::new(None).expect("runtime"));

    // Baseline: ingest alone.
    let tmp = tempfile::tempdir().expect("tmp");
    let store = weir_core::Store::open(weir_core::store::StoreConfig::new(tmp.path().join("s")))
        .expect("store");
    let t = Instant::now();
    for c in fl.chunks(5000) {
        store.append(c).expect("append");
    }
    store.flush().expect("flush");
    let ingest = n as f64 / t.elapsed().as_secs_f64();
    drop(store);

    println!("### Encoding in the sandbox (sink discards), {n} flows\n");
    println!("| exporter | batch | flows/s | bytes/flow | ratio to ingest |");
    println!("|---|---|---|---|---|");
    println!("| ingest alone (store append + flush, baseline) | 5000 | {ingest:.0} | | 1.00 |");
    let encoders: [Case; 5] = [
        (
            "ndjson-export",
            &[("sink", "out"), ("max_bytes", "1000000")],
            1000,
        ),
        ("ipfix-export", &[("sink", "out")], 2000),
        ("otlp-export", &[("logs", "out")], 1000),
        ("otlp-export", &[("metrics", "out")], 1000),
        (
            "clickhouse-export",
            &[("sink", "out"), ("node", "node-a")],
            10_000,
        ),
    ];
    let mut gzip_line = String::new();
    for (name, config, size) in encoders {
        let sink = Arc::new(Discard::default());
        let p = load(&rt, name, config, sink.clone());
        let b = batches(&fl, size);
        // Warm: instantiation and the first call's compilation are not the steady cost.
        p.export(&b[0]).expect("warm");
        let before = sink.bytes.load(Ordering::Relaxed);
        let rate = run(&p, &b, n);
        let per = (sink.bytes.load(Ordering::Relaxed) - before) as f64 / n as f64;
        let what = if name == "otlp-export" {
            format!("{name} ({})", config[0].0)
        } else {
            name.to_string()
        };
        println!(
            "| {what} | {size} | {rate:.0} | {per:.0} | {:.2} |",
            rate / ingest
        );
        if name == "clickhouse-export" {
            let (gz, raw) = (
                sink.gzip_first.load(Ordering::Relaxed) as f64,
                sink.first_len.load(Ordering::Relaxed) as f64,
            );
            gzip_line = format!(
                "clickhouse-export payload gzip-compressed (fastest level, as `http+gzip://` sends it): {:.0} bytes/flow, {:.3} of the RowBinary\n",
                per * gz / raw.max(1.0),
                gz / raw.max(1.0)
            );
        }
    }
    print!("\n{gzip_line}");
    // The agent's side of a ClickHouse insert: its feed reading the store and encoding, the
    // sink discarding (so no ClickHouse shares the two cores).
    for (batch, in_flight) in [(10_000, 1), (50_000, 2)] {
        let (rate, reads) = through_feed(&rt, &fl, Arc::new(Discard::default()), batch, in_flight);
        println!(
            "the agent's feed: store -> clickhouse-export -> sink discarding, batch_flows = {batch}, in_flight = {in_flight}: {rate:.0} flows/s, {:.2} of ingest (the store's reads alone: {reads:.0} flows/s)",
            rate / ingest
        );
    }

    println!("\n### To a real destination on loopback, {n} flows\n");
    println!("| exporter -> destination | flows/s | ratio to ingest |");
    println!("|---|---|---|");
    // IPFIX over UDP to a socket reading every datagram.
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let port = rx.local_addr().expect("addr").port();
    let got = Arc::new(AtomicU64::new(0));
    let count = got.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let mut idle = 0;
        while idle < 10 {
            match rx.recv(&mut buf) {
                Ok(_) => {
                    idle = 0;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => idle += 1,
            }
        }
    });
    let udp =
        weir_sinks::open(&Destination::parse(&format!("out=udp://127.0.0.1:{port}")).expect("d"));
    let p = load(&rt, "ipfix-export", &[("sink", "out")], udp);
    let rate = run(&p, &batches(&fl, 2000), n);
    println!(
        "| ipfix-export -> UDP socket | {rate:.0} | {:.2} |",
        rate / ingest
    );
    let _ = reader.join();
    eprintln!("(udp: {} datagrams read)", got.load(Ordering::Relaxed));

    // ndjson-export into JetStream.
    let nats_dir = tempfile::tempdir().expect("tmp");
    let nport = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    match std::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &nport.to_string(), "-sd"])
        .arg(nats_dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut nats) => {
            let t = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", nport)).is_err()
                && t.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let js = weir_sinks::open(
                &Destination::parse(&format!(
                    "out=jetstream://127.0.0.1:{nport}/BENCH/bench.flows"
                ))
                .expect("d"),
            );
            let p = load(
                &rt,
                "ndjson-export",
                &[("sink", "out"), ("max_bytes", "1000000")],
                js,
            );
            let rate = run(&p, &batches(&fl, 1000), n);
            println!(
                "| ndjson-export -> JetStream (file storage, acknowledged) | {rate:.0} | {:.2} |",
                rate / ingest
            );
            let _ = nats.kill();
            let _ = nats.wait();
        }
        Err(e) => eprintln!("nats-server not run: {e}"),
    }

    // clickhouse-export into ClickHouse.
    // Where ClickHouse keeps its data: the system's temporary directory, or
    // `WEIR_BENCH_CH_DIR` (e.g. /dev/shm, to take the disk out of the measure).
    let ch_dir = match std::env::var_os("WEIR_BENCH_CH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("tmp");
    match weir_clickhouse::local::LocalServer::start(ch_dir.path()) {
        Ok(server) => {
            let ch = weir_clickhouse::ClickHouse::new(&server.url(), "weir").expect("ch");
            ch.migrate().expect("migrate");
            // Baseline: what clickhouse-export sent before 0.3.0, every field of every flow
            // as JSONEachRow in inserts of up to 4 MB, posted from here one after another
            // (no sandbox, so only ClickHouse's side of the cost).
            let t = Instant::now();
            let mut body = String::from(" FORMAT JSONEachRow\n");
            let post = |body: &mut String| {
                let resp = ureq::post(ch.insert_url())
                    .send(body.as_bytes())
                    .expect("insert");
                assert_eq!(resp.status().as_u16(), 200, "JSON insert");
                body.truncate(" FORMAT JSONEachRow\n".len());
            };
            for f in &fl {
                let mut row = serde_json::Map::new();
                for d in weir_core::schema::FIELDS {
                    let v = match (d.get)(f) {
                        weir_core::schema::Value::Ip(ip) => serde_json::Value::from(ip.to_string()),
                        v => v.to_json(),
                    };
                    row.insert(d.name.to_string(), v);
                }
                row.insert("Node".into(), "node-a".into());
                body.push_str(&serde_json::Value::Object(row).to_string());
                body.push('\n');
                if body.len() > 4_000_000 {
                    post(&mut body);
                }
            }
            post(&mut body);
            let json_rate = n as f64 / t.elapsed().as_secs_f64();
            // Each step starts from merged tables, not with the last step's parts still being
            // merged on the same two cores.
            let settle = || {
                // (`flows_addr` is not there while the schema is without it.)
                for t in ["flows", "flows_1m", "flows_addr"] {
                    let _ = ch.query(&format!("OPTIMIZE TABLE weir.{t} FINAL"));
                }
            };
            settle();
            println!(
                "| baseline: every field as JSONEachRow (clickhouse-export before 0.3.0), posted by the host -> ClickHouse 18.16 | {json_rate:.0} | {:.2} |",
                json_rate / ingest
            );
            // clickhouse-export called one batch after another (no store: batches made
            // beforehand), plain and gzip-compressed (`http+gzip://`, what `weir server`
            // tells agents to use).
            for (what, url) in [("", ch.insert_url()), (", gzip", ch.sink_url())] {
                let http = weir_sinks::open(&Destination::parse(&format!("out={url}")).expect("d"));
                let p = load(
                    &rt,
                    "clickhouse-export",
                    &[("sink", "out"), ("node", "node-a")],
                    http,
                );
                let rate = run(&p, &batches(&fl, 10_000), n);
                println!(
                    "| clickhouse-export -> ClickHouse 18.16 (HTTP{what}, RowBinary, filled columns), one batch after another | {rate:.0} | {:.2} (x{:.1} the JSON baseline) |",
                    rate / ingest,
                    rate / json_rate
                );
                settle();
            }
            // The agent's own feed: a store holding the flows, the exporter installed in a
            // registry, its feed reading the store and exporting `in_flight` batches at once.
            for (batch, in_flight) in [(10_000, 1), (50_000, 1), (50_000, 2), (50_000, 3)] {
                let http = weir_sinks::open(
                    &Destination::parse(&format!("out={}", ch.sink_url())).expect("d"),
                );
                let (rate, _) = through_feed(&rt, &fl, http, batch, in_flight);
                let rows = ch
                    .query("SELECT count() FROM weir.flows")
                    .unwrap_or_default();
                println!(
                    "| the agent's feed: store -> clickhouse-export -> ClickHouse 18.16 (HTTP, gzip), batch_flows = {batch}, in_flight = {in_flight} | {rate:.0} | {:.2} (x{:.1} the JSON baseline) |",
                    rate / ingest,
                    rate / json_rate
                );
                eprintln!("(clickhouse: {} rows)", rows.trim());
                settle();
            }
            // What `flows_addr` (each flow again by its addresses) costs the feed as 0.3.1's
            // manifest runs it: the schema migrated without it, then with it again, twice.
            for round in 0..4 {
                let with = round % 2 == 1;
                let c = weir_clickhouse::ClickHouse::new(&server.url(), "weir")
                    .expect("ch")
                    .address_table(with);
                c.migrate().expect("migrate");
                let http = weir_sinks::open(
                    &Destination::parse(&format!("out={}", ch.sink_url())).expect("d"),
                );
                let (rate, _) = through_feed(&rt, &fl, http, 50_000, 2);
                println!(
                    "| the agent's feed as above, 50 000 a batch, 2 in flight, {} flows_addr | {rate:.0} | {:.2} (x{:.1} the JSON baseline) |",
                    if with { "with" } else { "without" },
                    rate / ingest,
                    rate / json_rate
                );
                settle();
            }
        }
        Err(e) => eprintln!("clickhouse-server not run: {e}"),
    }
}
