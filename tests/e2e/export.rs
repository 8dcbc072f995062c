//! Exporters against a real destination: `ndjson-export` feeds a real nats-server (Debian's
//! 2.9) through `--sink`, resumes after the server stalls and after the agent is killed with
//! -9 without losing a stored flow, and is refused a sink outside its scope or not named; it
//! feeds a three-server JetStream cluster through the loss and return of a server with every
//! flow stored once; `ipfix-export` is read back by nfdump's nfcapd.

use crate::sandbox::install;
use crate::util::{Agent, KillOnDrop, free_port, now_ms};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A nats-server on loopback, up when this returns.
fn nats_server(port: u16) -> KillOnDrop {
    let child = std::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server (scripts/deps.sh test installs it)");
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "nats-server not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    KillOnDrop(child)
}

/// A subscriber on the raw NATS protocol collecting the DstPort of every JSON line received.
fn subscribe(port: u16, subject: &str) -> Arc<Mutex<Vec<u64>>> {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("subscriber");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).expect("INFO");
    write!(
        w,
        "CONNECT {{\"verbose\":false}}\r\nSUB {subject} 1\r\nPING\r\n"
    )
    .expect("SUB");
    line.clear();
    r.read_line(&mut line).expect("PONG");
    assert_eq!(line.trim(), "PONG");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l == "PING" {
                let _ = w.write_all(b"PONG\r\n");
                continue;
            }
            let Some(len) = l
                .strip_prefix("MSG ")
                .and_then(|m| m.rsplit(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let mut payload = vec![0u8; len + 2];
            if std::io::Read::read_exact(&mut r, &mut payload).is_err() {
                return;
            }
            let text = String::from_utf8_lossy(&payload[..len]).to_string();
            let mut got = out.lock().unwrap_or_else(|p| p.into_inner());
            for l in text.lines() {
                let v: Value = serde_json::from_str(l).expect("one JSON object per line");
                got.push(v["DstPort"].as_u64().expect("DstPort"));
            }
        }
    });
    seen
}

fn post_ports(a: &Agent, ports: std::ops::RangeInclusive<u64>) {
    let now = now_ms();
    let flows: Vec<Value> = ports
        .map(|p| {
            json!({"SrcAddr": "198.18.72.1", "DstAddr": "198.18.72.2", "Proto": 17,
                   "SrcPort": 5000, "DstPort": p, "Bytes": 100 + p, "Packets": 1,
                   "TimeFlowStartMs": now - 2000, "TimeFlowEndMs": now - 1000})
        })
        .collect();
    let (s, v) = a.post("/api/v1/flows", &Value::Array(flows).to_string());
    assert_eq!(s, 200, "{v}");
}

/// Waits until every port of `want` was received.
fn wait_received(seen: &Arc<Mutex<Vec<u64>>>, want: &BTreeSet<u64>, a: &Agent, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got: BTreeSet<u64> = seen.lock().expect("lock").iter().copied().collect();
        if want.is_subset(&got) {
            return;
        }
        let missing: Vec<_> = want.difference(&got).take(10).collect();
        assert!(
            Instant::now() < deadline,
            "{what}: missing {missing:?}; exporter: {}\n{}",
            exporter(a),
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn exporter(a: &Agent) -> Value {
    plugin_named(a, "ndjson-export")
}

pub(crate) fn plugin_named(a: &Agent, name: &str) -> Value {
    a.ok("/api/v1/plugins", &[])["plugins"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|p| p["installed"]["manifest"]["name"] == name)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

fn wait_error(a: &Agent, says: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = exporter(a);
        if p["export"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(says))
        {
            return p;
        }
        assert!(Instant::now() < deadline, "no error saying {says:?}: {p}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An agent with `--sink SINK` and ndjson-export installed with `config`, its feed started
/// (it starts at the store's end, so nothing is stored before its cursor exists).
fn ndjson_agent(sink: &str, config: &[&str]) -> (tempfile::TempDir, Agent) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("agent");
    let (data, src) = (root.join("data"), dir.path().join("src"));
    install(&data, &src, "ndjson_export", "ndjson-export", config);
    let a = Agent::start(&root, &["--no-capture", "--sink", sink]);
    wait_feed(&a, "ndjson-export");
    (dir, a)
}

/// Waits until `name`'s feed has its cursor (it starts at the store's end).
pub(crate) fn wait_feed(a: &Agent, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while plugin_named(a, name)["export"].is_null() {
        assert!(
            Instant::now() < deadline,
            "no feed: {}",
            plugin_named(a, name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `name` exported `n` flows with nothing left behind; its status.
pub(crate) fn wait_exported(a: &Agent, name: &str, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = plugin_named(a, name);
        if p["export"]["exported_flows"].as_u64() == Some(n) && p["export"]["behind"] == 0 {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "not exported: {p}\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn exporter_feeds_nats_resumes_after_a_stall_and_kill_9_and_is_refused_other_sinks() {
    let port = free_port();
    let server = nats_server(port);
    let seen = subscribe(port, "weir.flows");
    let sink = format!("bus=nats://127.0.0.1:{port}/weir.flows");
    let (dir, mut a) = ndjson_agent(
        &sink,
        &["sink=bus", "fields=DstPort,SrcAddr,Bytes,SrcK8S_Namespace"],
    );
    let (data, src) = (dir.path().join("agent/data"), dir.path().join("src"));
    post_ports(&a, 1..=30);
    wait_received(&seen, &(1..=30).collect(), &a, "first flows");

    // The server stalls (SIGSTOP): sends time out, the batch is retried, the plugin is not
    // disabled; when it resumes, everything arrives.
    let pid = server.0.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    post_ports(&a, 31..=50);
    let p = wait_error(&a, "sink bus: nats 127.0.0.1");
    assert!(p["export"]["failing"].as_u64().unwrap_or(0) >= 1, "{p}");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_received(&seen, &(1..=50).collect(), &a, "after the stall");
    let p = exporter(&a);
    assert!(
        p["loaded"].is_object(),
        "an outage does not disable the exporter: {p}"
    );
    assert!(p["loaded"]["disabled"].is_null(), "{p}");

    // kill -9 right after storing more: after the restart, every stored flow goes out.
    post_ports(&a, 51..=70);
    a.kill9();
    a.spawn();
    post_ports(&a, 71..=80);
    let stored: BTreeSet<u64> = a.ok(
        "/api/v1/flows",
        &[
            ("filter", "SrcAddr=198.18.72.1"),
            ("from", "-1h"),
            ("limit", "1000"),
        ],
    )["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter_map(|f| f["DstPort"].as_u64())
        .collect();
    assert!(stored.contains(&80) && stored.len() >= 60, "{stored:?}");
    wait_received(&seen, &stored, &a, "after kill -9");
    let got = seen.lock().expect("lock").clone();
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert!(
        distinct.iter().all(|p| stored.contains(p)),
        "only stored flows go out"
    );
    assert!(
        got.len() <= stored.len() + 60,
        "at-least-once repeats at most the batches in flight: {} sent for {} stored",
        got.len(),
        stored.len()
    );

    // A sink outside the scope, then one the operator did not name: refused, saying so.
    let (code, out, err) = crate::plugins::weir(
        &data,
        &["grant", "ndjson-export", "sink", "--scope", "archive"],
    );
    assert_eq!(code, 0, "{out}{err}");
    // The agent hot-loads the grant within two seconds; imports are acknowledged within
    // --commit-delay, so the flow must not be posted (and exported) before that.
    std::thread::sleep(Duration::from_secs(3));
    post_ports(&a, 81..=81);
    wait_error(
        &a,
        "sink: bus is outside this plugin's scope (granted sinks: archive)",
    );
    let (s, v) = a.delete("/api/v1/plugins/ndjson-export");
    assert_eq!(s, 200, "{v}");
    install(
        &data,
        &src,
        "ndjson_export",
        "ndjson-export",
        &["sink=nope"],
    );
    std::thread::sleep(Duration::from_secs(3));
    post_ports(&a, 82..=82);
    wait_error(
        &a,
        "\"nope\" is not a destination the operator named (named: bus)",
    );
}

/// A three-server JetStream cluster on loopback (Debian's nats-server 2.9), each server with
/// its own store directory, so a server stopped and started again comes back with its data.
struct Cluster {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    routes: Vec<u16>,
    servers: Vec<Option<KillOnDrop>>,
}

impl Cluster {
    fn start() -> Cluster {
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            ports: (0..3).map(|_| free_port()).collect(),
            routes: (0..3).map(|_| free_port()).collect(),
            servers: vec![None, None, None],
        };
        for i in 0..3 {
            c.up(i);
        }
        c
    }

    fn up(&mut self, i: usize) {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.ports[i].to_string()])
            .args(["-n", &format!("s{i}"), "--cluster_name", "weir"])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", self.routes[i])])
            .args(["--routes", &routes.join(",")])
            .arg("-sd")
            .arg(self.dir.path().join(format!("s{i}")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (scripts/deps.sh test installs it)");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.ports[i])).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nats-server s{i} not up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.servers[i] = Some(KillOnDrop(child));
    }

    fn down(&mut self, i: usize) {
        self.servers[i] = None;
    }
}

/// Just enough of the NATS client protocol for JetStream API requests from the test.
struct NatsClient {
    r: BufReader<TcpStream>,
    w: TcpStream,
    n: u64,
}

impl NatsClient {
    fn connect(port: u16) -> NatsClient {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut w = s;
        let mut line = String::new();
        r.read_line(&mut line).expect("INFO");
        w.write_all(b"CONNECT {\"verbose\":false}\r\nSUB _INBOX.t.* 1\r\n")
            .expect("CONNECT");
        NatsClient { r, w, n: 0 }
    }

    /// One request and its JSON answer (None when none came in 5 s).
    fn request(&mut self, subject: &str, body: &str) -> Option<Value> {
        self.n += 1;
        let reply = format!("_INBOX.t.{}", self.n);
        write!(self.w, "PUB {subject} {reply} {}\r\n{body}\r\n", body.len()).ok()?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let l = line.trim_end().to_string();
            if l == "PING" {
                self.w.write_all(b"PONG\r\n").ok()?;
                continue;
            }
            let Some(rest) = l.strip_prefix("MSG ") else {
                continue;
            };
            let len: usize = rest.rsplit(' ').next()?.parse().ok()?;
            let mut buf = vec![0u8; len + 2];
            std::io::Read::read_exact(&mut self.r, &mut buf).ok()?;
            if rest.starts_with(&format!("{reply} ")) {
                return serde_json::from_slice(&buf[..len]).ok();
            }
        }
    }
}

/// Every message of the stream WEIR, as the DstPort of each JSON line in it, read with the
/// JetStream API (`STREAM.INFO`, then `STREAM.MSG.GET` per sequence).
fn stream_ports(c: &mut NatsClient) -> Option<(Vec<u64>, Value)> {
    use base64::Engine;
    let info = c.request("$JS.API.STREAM.INFO.WEIR", "")?;
    let last = info["state"]["last_seq"].as_u64()?;
    let mut ports = Vec::new();
    for seq in 1..=last {
        let m = c.request("$JS.API.STREAM.MSG.GET.WEIR", &format!("{{\"seq\":{seq}}}"))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(m["message"]["data"].as_str()?)
            .ok()?;
        for l in String::from_utf8_lossy(&data).lines() {
            let v: Value = serde_json::from_str(l).expect("one JSON object per line");
            ports.push(v["DstPort"].as_u64().expect("DstPort"));
        }
    }
    Some((ports, info))
}

#[test]
fn exporter_feeds_a_jetstream_cluster_through_a_server_lost_and_back_storing_each_flow_once() {
    let mut cluster = Cluster::start();
    let servers: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let sink = format!("js=jetstream://{}/WEIR/weir.flows", servers.join(","));
    let (_dir, a) = ndjson_agent(&sink, &["sink=js", "fields=DstPort,SrcAddr,Bytes"]);
    // Flows before, during and after the loss of the server the agent talks to first (s0):
    // a batch of ten every 100 ms; s0 is killed after the fourth batch and started again
    // (with its store) after the eighth.
    for b in 0..12u64 {
        if b == 4 {
            cluster.down(0);
        }
        if b == 8 {
            cluster.up(0);
        }
        post_ports(&a, b * 10 + 1..=b * 10 + 10);
        std::thread::sleep(Duration::from_millis(if b == 4 { 2000 } else { 100 }));
    }
    let want: BTreeSet<u64> = (1..=120).collect();
    // Read back from s1 until every flow is there and s0 is a current replica again.
    let mut c = NatsClient::connect(cluster.ports[1]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ports, info) = loop {
        let got = stream_ports(&mut c);
        if let Some((ports, info)) = &got {
            let have: BTreeSet<u64> = ports.iter().copied().collect();
            let s0_current = info["cluster"]["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["name"] == "s0" && x["current"] == true))
                || info["cluster"]["leader"] == "s0";
            if want.is_subset(&have) && s0_current {
                break (ports.clone(), info.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "not all flows in the stream, or s0 not current: {:?}\nexporter: {}\n{}",
            got.map(|(p, i)| (p.len(), i)),
            exporter(&a),
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Created by weir with one replica per listed server; every flow stored exactly once
    // (retries after the lost server sent the same batch with the same message id).
    assert_eq!(info["config"]["num_replicas"], 3, "{info}");
    assert_eq!(info["config"]["subjects"], json!(["weir.flows"]), "{info}");
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, want.iter().copied().collect::<Vec<_>>(), "{info}");
    let p = exporter(&a);
    assert!(
        p["export"]["failures"].as_u64().unwrap_or(0) >= 1,
        "losing s0 failed at least one send, then the next server took it: {p}"
    );
    assert_eq!(p["export"]["failing"], 0, "{p}");
}

/// Flows the IPFIX test imports: IPv4 and IPv6, some sampled 1 in 10 (exported scaled back),
/// some with Kubernetes and DNS names.
fn ipfix_flows(n: u64) -> Vec<Value> {
    let now = now_ms();
    (0..n)
        .map(|i| {
            let (src, dst) = if i % 5 == 0 {
                (
                    format!("2001:db8:75::{:x}", i + 1),
                    "2001:db8:75::ffff".to_string(),
                )
            } else {
                (
                    format!("198.18.75.{}", 1 + i % 200),
                    "198.18.76.1".to_string(),
                )
            };
            json!({"SrcAddr": src, "DstAddr": dst, "Proto": if i % 3 == 0 { 17 } else { 6 },
                   "SrcPort": 10000 + i, "DstPort": 443, "Bytes": 100 + i * 7, "Packets": 1 + i % 9,
                   "Flags": 0x12, "IfDirection": i % 2, "Interface": "eth0",
                   "Sampling": if i % 4 == 0 { 10 } else { 1 },
                   "SrcK8S_Namespace": "shop", "SrcK8S_Name": format!("web-{}", i % 3),
                   "DnsName": if i % 7 == 0 { "api.example.com" } else { "" },
                   "TimeFlowStartMs": now - 3000, "TimeFlowEndMs": now - 1000})
        })
        .collect()
}

#[test]
fn ipfix_export_is_read_back_by_nfcapd_with_the_same_totals() {
    crate::util::require(&["nfcapd", "nfdump"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let flows_dir = dir.path().join("nfcapd");
    std::fs::create_dir_all(&flows_dir).expect("dir");
    let port = free_port();
    let nfcapd = std::process::Command::new("nfcapd")
        .args([
            "-w",
            flows_dir.to_str().expect("path"),
            "-p",
            &port.to_string(),
            "-b",
            "127.0.0.1",
            "-t",
            "3600",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nfcapd (scripts/deps.sh test installs nfdump)");
    let mut nfcapd = KillOnDrop(nfcapd);
    let root = dir.path().join("agent");
    let (code, out, err) = crate::plugins::weir(
        &root.join("data"),
        &["install", "bundled:ipfix-export", "--config", "sink=ipfix"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let sink = format!("ipfix=udp://127.0.0.1:{port}");
    let a = Agent::start(&root, &["--no-capture", "--sink", &sink]);
    wait_feed(&a, "ipfix-export");
    let n = 3000u64;
    let flows = ipfix_flows(n);
    for chunk in flows.chunks(1000) {
        let (s, v) = a.post("/api/v1/flows", &Value::Array(chunk.to_vec()).to_string());
        assert_eq!(s, 200, "{v}");
    }
    wait_exported(&a, "ipfix-export", n);
    // The feed on /metrics: what it sent, and no backlog.
    let (code, metrics) = a.get_raw("/metrics").expect("metrics");
    assert_eq!(code, 200);
    for want in [
        format!("weir_export_total{{plugin=\"ipfix-export\",what=\"flows\"}} {n}"),
        "weir_export_behind_flows{plugin=\"ipfix-export\"} 0".to_string(),
        "weir_export_failing_calls{plugin=\"ipfix-export\"} 0".to_string(),
    ] {
        assert!(metrics.contains(&want), "{want} not in\n{metrics}");
    }
    // weir's own totals (scaled back by sampling) over the same flows.
    let ours = a.ok(
        "/api/v1/flows/aggregate",
        &[("group_by", "Proto"), ("from", "-1h"), ("top", "10")],
    );
    // nfcapd writes its file when it stops (SIGTERM), then nfdump reads it back.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(nfcapd.0.id() as i32, libc::SIGTERM) };
    let _ = nfcapd.0.wait();
    let out = std::process::Command::new("nfdump")
        .args([
            "-R",
            flows_dir.to_str().expect("path"),
            "-q",
            "-N",
            "-o",
            "fmt:%pr %ipkt %ibyt %sa %da",
        ])
        .output()
        .expect("nfdump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut records, mut packets, mut bytes, mut v6) = (0u64, 0u64, 0u64, 0u64);
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let w: Vec<&str> = l.split_whitespace().collect();
        assert!(w.len() >= 5, "nfdump line: {l}");
        records += 1;
        packets += w[1]
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("packets in {l}"));
        bytes += w[2]
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("bytes in {l}"));
        if w[3].contains(':') {
            v6 += 1;
        }
    }
    assert_eq!(records, n, "{text}");
    assert_eq!(v6, n / 5, "IPv6 records");
    assert_eq!(
        packets,
        ours["total"]["packets"].as_u64().unwrap_or(0),
        "{ours}"
    );
    assert_eq!(
        bytes,
        ours["total"]["bytes"].as_u64().unwrap_or(0),
        "{ours}"
    );
}

/// The OTLP receiver (tests/e2e/py/otlp_receiver.py, the OpenTelemetry project's protobuf
/// classes), up when this returns.
fn otlp_receiver(port: u16, out: &std::path::Path) -> KillOnDrop {
    let mut c = std::process::Command::new(crate::otlp::OTEL_PY)
        .arg(format!(
            "{}/tests/e2e/py/otlp_receiver.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(port.to_string())
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("otlp_receiver.py (scripts/deps.sh test installs /opt/weir-otel)");
    let mut line = String::new();
    BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    KillOnDrop(c)
}

#[test]
fn otlp_export_is_decoded_by_opentelemetry_proto_as_logs_and_metrics_with_weirs_totals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let received = dir.path().join("otlp.jsonl");
    let _receiver = otlp_receiver(port, &received);
    let root = dir.path().join("agent");
    let (code, out, err) = crate::plugins::weir(
        &root.join("data"),
        &[
            "install",
            "bundled:otlp-export",
            "--config",
            "logs=otel-logs",
            "--config",
            "metrics=otel-metrics",
            "--config",
            "metric_by=Proto,SrcK8S_Namespace",
            "--config",
            "resource=host.name=node-a;k8s.cluster.name=lab",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let logs = format!("otel-logs=http://127.0.0.1:{port}/v1/logs");
    let metrics = format!("otel-metrics=http://127.0.0.1:{port}/v1/metrics");
    let a = Agent::start(
        &root,
        &["--no-capture", "--sink", &logs, "--sink", &metrics],
    );
    wait_feed(&a, "otlp-export");
    let n = 1500u64;
    let flows = ipfix_flows(n);
    for chunk in flows.chunks(500) {
        let (s, v) = a.post("/api/v1/flows", &Value::Array(chunk.to_vec()).to_string());
        assert_eq!(s, 200, "{v}");
    }
    let p = wait_exported(&a, "otlp-export", n);
    assert_eq!(p["export"]["failures"], 0, "no retries, so no repeats: {p}");
    let rows: Vec<Value> = std::fs::read_to_string(&received)
        .expect("received")
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    let refused: Vec<&Value> = rows
        .iter()
        .filter(|r| r["kind"] != "log" && r["kind"] != "metric")
        .collect();
    assert!(
        refused.is_empty(),
        "sent as application/x-protobuf and decoded: {refused:?}"
    );

    // One log record per flow, with the OTel network attributes and the fields by name.
    let logs: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "log").collect();
    assert_eq!(logs.len() as u64, n);
    let by_port: BTreeMap<u64, &Value> = logs
        .iter()
        .map(|r| {
            (
                r["attributes"]["source.port"]
                    .as_u64()
                    .expect("source.port"),
                *r,
            )
        })
        .collect();
    assert_eq!(by_port.len() as u64, n, "each flow once");
    for (i, f) in flows.iter().enumerate() {
        let r = by_port[&f["SrcPort"].as_u64().expect("port")];
        let at = &r["attributes"];
        assert_eq!(at["source.address"], f["SrcAddr"], "{r}");
        assert_eq!(at["destination.address"], f["DstAddr"], "{r}");
        assert_eq!(at["destination.port"], 443, "{r}");
        let transport = if f["Proto"] == 17 { "udp" } else { "tcp" };
        assert_eq!(at["network.transport"], transport, "{r}");
        let net = if i % 5 == 0 { "ipv6" } else { "ipv4" };
        assert_eq!(at["network.type"], net, "{r}");
        for k in [
            "Bytes",
            "Packets",
            "Sampling",
            "SrcK8S_Namespace",
            "SrcK8S_Name",
        ] {
            assert_eq!(at[k], f[k], "{k}: {r}");
        }
        assert_eq!(at["DnsName"].is_null(), f["DnsName"] == "", "{r}");
        assert_eq!(
            r["time_unix_nano"].as_u64(),
            f["TimeFlowEndMs"].as_u64().map(|ms| ms * 1_000_000),
            "{r}"
        );
        assert_eq!(r["event_name"], "weir.flow");
        assert_eq!(r["severity_number"], 9);
        assert_eq!(r["scope"], "weir");
        assert_eq!(
            r["resource"],
            json!({"service.name": "weir", "host.name": "node-a", "k8s.cluster.name": "lab"})
        );
    }

    // Metrics: delta monotonic sums per (Proto, namespace), adding up to weir's own totals
    // (bytes and packets scaled back by sampling).
    let ours = a.ok(
        "/api/v1/flows/aggregate",
        &[("group_by", "Proto"), ("from", "-1h"), ("top", "10")],
    );
    let points: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "metric").collect();
    let sum = |name: &str| -> u64 {
        points
            .iter()
            .filter(|p| p["name"] == name)
            .map(|p| p["value"].as_u64().expect("int value"))
            .sum()
    };
    assert_eq!(
        sum("weir.flow.bytes"),
        ours["total"]["bytes"].as_u64().expect("bytes")
    );
    assert_eq!(
        sum("weir.flow.packets"),
        ours["total"]["packets"].as_u64().expect("packets")
    );
    assert_eq!(sum("weir.flows"), n);
    for p in &points {
        assert_eq!(p["data"], "sum", "{p}");
        assert_eq!(p["temporality"], 1, "delta: {p}");
        assert_eq!(p["monotonic"], true, "{p}");
        assert_eq!(p["attributes"]["SrcK8S_Namespace"], "shop", "{p}");
        assert!(
            p["attributes"]["Proto"] == 6 || p["attributes"]["Proto"] == 17,
            "{p}"
        );
        assert!(
            p["start_time_unix_nano"].as_u64() < p["time_unix_nano"].as_u64(),
            "{p}"
        );
    }
    let udp_bytes: u64 = points
        .iter()
        .filter(|p| p["name"] == "weir.flow.bytes" && p["attributes"]["Proto"] == 17)
        .map(|p| p["value"].as_u64().unwrap_or(0))
        .sum();
    let ours_udp = ours["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["key"]["Proto"] == 17 || g["key"] == 17))
        .map(|g| g["bytes"].as_u64().unwrap_or(0));
    assert_eq!(Some(udp_bytes), ours_udp, "{ours}");
    let units: BTreeSet<&str> = points.iter().filter_map(|p| p["unit"].as_str()).collect();
    assert_eq!(units, ["By", "{flow}", "{packet}"].into_iter().collect());
}

const KAFKA_PY: &str = "/opt/weir-kafka/bin/python";

/// Runs kafka_client.py.
pub(crate) fn kafka_client(args: &[&str]) -> Value {
    let out = std::process::Command::new(KAFKA_PY)
        .arg(format!(
            "{}/tests/e2e/py/kafka_client.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args)
        .output()
        .expect("kafka_client.py (scripts/deps.sh test installs /opt/weir-kafka)");
    assert!(
        out.status.success(),
        "kafka_client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Tansu on loopback, up when this returns.
pub(crate) fn tansu(port: u16) -> KillOnDrop {
    let mut cmd = std::process::Command::new("/opt/weir-kafka/bin/tansu");
    cmd.args([
        "broker",
        "--listener-url",
        &format!("tcp://127.0.0.1:{port}"),
        "--advertised-listener-url",
        &format!("tcp://127.0.0.1:{port}"),
        "--storage-engine",
        "memory://tansu/",
    ]);
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tansu (scripts/deps.sh test installs /opt/weir-kafka/bin/tansu)");
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "tansu not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    KillOnDrop(child)
}

/// weir's flows through `sink` (a kafka:// URL for `bootstrap`) read back by librdkafka.
fn kafka_round_trip(bootstrap: &str, sink: &str) {
    kafka_client(&["topic", bootstrap, "netobserv-flows", "3"]);
    let (_dir, a) = ndjson_agent(sink, &["sink=k", "max_bytes=2048"]);
    post_ports(&a, 1..=200);
    wait_exported(&a, "ndjson-export", 200);
    let got = kafka_client(&["consume", bootstrap, "netobserv-flows", "200", "90"]);
    let rows = got["rows"].as_array().expect("rows");
    let ports: BTreeSet<u64> = rows.iter().filter_map(|r| r["DstPort"].as_u64()).collect();
    assert_eq!(ports, (1..=200).collect(), "every flow: {}", got["records"]);
    assert_eq!(rows.len(), 200, "each once");
    // NetObserv's names, as flowlogs-pipeline reads them.
    let r = &rows[0];
    for k in [
        "SrcAddr",
        "DstAddr",
        "Proto",
        "Bytes",
        "Packets",
        "TimeFlowStartMs",
        "TimeFlowEndMs",
    ] {
        assert!(!r[k].is_null(), "{k} in {r}");
    }
    assert_eq!(r["SrcAddr"], "198.18.72.1");
    assert!(
        got["records"].as_u64().unwrap_or(0) > 3,
        "several records: {}",
        got["records"]
    );
    assert_eq!(
        got["partitions"],
        json!([0, 1, 2]),
        "spread over the partitions"
    );
}

/// Tansu (a Kafka-protocol broker in Rust: no Apache Kafka 2.x+ can be installed on these
/// machines) with a real librdkafka consumer: NetObserv's JSON records produced by weir are
/// read back unchanged, spread over the topic's partitions.
#[test]
fn kafka_sink_produces_netobserv_records_a_librdkafka_consumer_reads() {
    let port = free_port();
    let _broker = tansu(port);
    let bootstrap = format!("127.0.0.1:{port}");
    kafka_round_trip(
        &bootstrap,
        &format!("k=kafka://{bootstrap}/netobserv-flows"),
    );
}
