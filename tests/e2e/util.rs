//! Harness: an agent process, network namespaces, commands.

use serde_json::Value;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// A short name unique to this process and call, for namespaces and interfaces (<= 15 chars).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}{}",
        std::process::id() % 10_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn require(tools: &[&str]) {
    for t in tools {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "prerequisite missing: {t} (CI installs it in .ci/run)");
    }
}

/// The value of label `name` of a record as the API returns it (labels as `[name, value]`).
pub fn label<'a>(r: &'a Value, name: &str) -> Option<&'a str> {
    r["labels"]
        .as_array()?
        .iter()
        .find(|p| p[0] == name)
        .and_then(|p| p[1].as_str())
}

/// An answer's status and body (up to 256 MiB).
fn answer(mut r: ureq::http::Response<ureq::Body>) -> (u16, String) {
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .expect("body");
    (status, body)
}

/// A running agent with its own data directory and port; killed on drop.
pub struct Agent {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub args: Vec<String>,
    /// Environment variables the agent is started with, beside `WEIR_LOG`.
    pub env: Vec<(String, String)>,
    log: PathBuf,
    /// The agent's own description (`GET /api/v1/openapi.json`), read at its first answer to
    /// check; `Null` when it cannot be read (an agent with a token).
    described: std::sync::OnceLock<Value>,
}

impl Agent {
    pub fn start(dir: &Path, args: &[&str]) -> Agent {
        Agent::start_with_env(dir, args, &[])
    }

    /// Like [`Agent::start`], with more environment variables.
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut a = Agent {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: dir.join("agent.log"),
            described: std::sync::OnceLock::new(),
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(WEIR)
            .arg("agent")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            .env("WEIR_LOG", "info")
            // A runner that sets NODE_NAME would name every flow: tests ask with --node.
            .env_remove("NODE_NAME")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn weir agent");
        self.child = Some(child);
        self.described = std::sync::OnceLock::new();
        self.wait_up();
    }

    /// Checks an /api/v1 answer against the agent's own description, so that every end-to-end
    /// test checks what it is answered: the status must be one the operation lists, and a JSON
    /// answer must hold to that status's schema (`weir_ui::schema_check`). Paths the
    /// description does not have (tests of unknown routes) are left alone.
    fn conform(&self, method: &str, path: &str, status: u16, body: &Value) {
        let Some(rest) = path.strip_prefix("/api/v1") else {
            return;
        };
        let rest = rest.split('?').next().unwrap_or(rest);
        if rest == "/openapi.json" || body.is_null() {
            return;
        }
        if self.described.get().is_none() {
            match self.get_raw("/api/v1/openapi.json") {
                Ok((200, b)) => {
                    let d: Value = serde_json::from_str(&b)
                        .unwrap_or_else(|e| panic!("the agent's description is not JSON: {e}"));
                    let _ = self.described.set(d);
                }
                // An agent with a token: its description needs the token this client lacks.
                Ok((401, _)) => {
                    let _ = self.described.set(Value::Null);
                }
                // Busy (429, 503) or unreachable for now: read at the next answer.
                _ => return,
            }
        }
        let Some(doc) = self.described.get() else {
            return;
        };
        let Some(paths) = doc["paths"].as_object() else {
            return;
        };
        let same = |t: &str| {
            let (a, b): (Vec<_>, Vec<_>) = (t.split('/').collect(), rest.split('/').collect());
            a.len() == b.len()
                && a.iter()
                    .zip(&b)
                    .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
        };
        let Some(ops) = paths
            .get(rest)
            .or_else(|| paths.iter().find(|(t, _)| same(t)).map(|(_, o)| o))
        else {
            return;
        };
        let op = &ops[method];
        if !op.is_object() {
            assert!(
                matches!(status, 404 | 405),
                "{method} {path}: answered {status}, but the description has no such operation: {body}"
            );
            return;
        }
        let Some(resp) = op["responses"].get(status.to_string()) else {
            panic!("{method} {path}: status {status} is not in the agent's description: {body}");
        };
        let Some(schema) = resp["content"]["application/json"].get("schema") else {
            return;
        };
        let broken = weir_ui::schema_check::violations(doc, schema, body);
        assert!(
            broken.is_empty(),
            "{method} {path} {status}: the answer breaks the agent's description: {broken:?}\n{body}"
        );
    }

    /// An agent started some other way (`weir incident open`), serving on `port` and logging
    /// to `log`; waits until it answers.
    /// `weir incident open FILE` on a fresh data dir under `dir` (`dir/data`, its log in
    /// `dir/replay.log`), with `extra` arguments; up when this returns.
    pub fn replay(file: &Path, dir: &Path, extra: &[&str]) -> Agent {
        let port = free_port();
        let log = dir.join("replay.log");
        std::fs::create_dir_all(dir).expect("replay dir");
        let child = Command::new(WEIR)
            .arg("incident")
            .arg("open")
            .arg(file)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("weir incident open");
        Agent::adopt(child, port, dir, log)
    }

    pub fn adopt(child: Child, port: u16, dir: &Path, log: PathBuf) -> Agent {
        let mut a = Agent {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            log,
            described: std::sync::OnceLock::new(),
        };
        a.wait_up();
        a
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("agent exited early ({st}):\n{}", self.log_text());
            }
            if self
                .get_raw("/healthz")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not come up:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Runs `weir ARGS` against this agent (through `WEIR_SERVER`): exit code, stdout,
    /// stderr.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(WEIR)
            .args(args)
            .env("WEIR_SERVER", self.url(""))
            .output()
            .expect("weir");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `weir plugin run ARGS` against this agent, asked again while the agent has not yet
    /// loaded a plugin just installed (it hot-loads within two seconds); the run's stdout.
    pub fn plugin_run(&self, args: &[&str]) -> String {
        let mut all = vec!["plugin", "run"];
        all.extend(args);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (code, out, err) = self.cli(&all);
            if code == 0 {
                return out;
            }
            assert!(
                err.contains("no loaded plugin") && Instant::now() < deadline,
                "weir {all:?}: {err}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    pub fn get_raw(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let mut r = Self::agent().get(&self.url(path)).call()?;
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()?;
        Ok((status, body))
    }

    /// GET with query parameters; returns status and JSON.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let mut req = Self::agent().get(&self.url(path));
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        let (status, body) = answer(req.call().expect("request"));
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        self.conform("get", path, status, &v);
        (status, v)
    }

    /// Every record of `kind` the agent keeps (at most 1000), oldest first.
    pub fn records(&self, kind: &str) -> Vec<Value> {
        self.ok(
            "/api/v1/records",
            &[("kind", kind), ("from", "0"), ("limit", "1000")],
        )["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The interfaces capture is attached to, as (namespace, name), sorted.
    pub fn interfaces(&self) -> Vec<(String, String)> {
        let st = self.ok("/api/v1/status", &[]);
        let mut v: Vec<(String, String)> = st["capture"]["interfaces"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|i| {
                        let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
                        (s("netns"), s("name"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// GET that must succeed.
    pub fn ok(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let (s, v) = self.get(path, query);
        assert_eq!(s, 200, "{path} {query:?}: {v}");
        v
    }

    /// The capture feature `name` from the status (`enabled`, `detail`; Null when absent),
    /// with the whole status for messages.
    pub fn capture_feature(&self, name: &str) -> (Value, Value) {
        let st = self.ok("/api/v1/status", &[]);
        let f = st["capture"]["features"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == name))
            .cloned()
            .unwrap_or_default();
        (f, st)
    }

    /// DELETE; returns status and JSON (Null when the body is not JSON).
    pub fn delete(&self, path: &str) -> (u16, Value) {
        let mut r = Self::agent()
            .delete(&self.url(path))
            .call()
            .expect("request");
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().expect("body");
        let v = serde_json::from_str(&body).unwrap_or(Value::Null);
        self.conform("delete", path, status, &v);
        (status, v)
    }

    /// POST; returns status and the body as sent (for byte-for-byte comparisons).
    pub fn post_raw(&self, path: &str, body: &str) -> (u16, String) {
        answer(
            Self::agent()
                .post(&self.url(path))
                .send(body.as_bytes())
                .expect("request"),
        )
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, body) = self.post_raw(path, body);
        let v = serde_json::from_str(&body).unwrap_or(Value::Null);
        self.conform("post", path, status, &v);
        (status, v)
    }

    /// Sends an OTLP/HTTP JSON request (`/v1/traces` or `/v1/logs`), which must be taken.
    pub fn send_otlp(&self, path: &str, body: &Value) {
        let (s, _, answer) = Agent::post_bytes(
            &self.url(path),
            "application/json",
            None,
            body.to_string().as_bytes(),
        );
        assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&answer));
    }

    /// POST raw bytes with a content type (and optional content encoding) to a full URL;
    /// returns the status, the response's content type and its body.
    pub fn post_bytes(
        url: &str,
        content_type: &str,
        encoding: Option<&str>,
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let mut req = Self::agent().post(url).header("content-type", content_type);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        let mut r = req.send(body).expect("request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .expect("body");
        (status, ct, body)
    }

    /// Evicts every flow from the kernel now and waits until it is queryable.
    pub fn flush(&self) {
        let (s, v) = self.post("/api/v1/capture/flush", "");
        assert_eq!(s, 200, "{v}");
        // Ingest flushes every second (default flush interval).
        std::thread::sleep(Duration::from_millis(1300));
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending SIGTERM to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("agent did not stop on SIGTERM:\n{}", self.log_text());
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Two network namespaces joined by a veth pair, removed on drop.
///
/// A: 198.18.<n>.1/24 and 2001:db8:<n>::1/64 on `a_if`; B: .2 and ::2 on `b_if`. Neighbours
/// are static and IPv6 DAD and router solicitations are off, so the link stays quiet except
/// for the traffic a test makes.
/// Tests that measure real traffic (every [`Pair`]) share this lock; tests that load the
/// machine on purpose (hostile plugins spinning, bombing memory, flooding) take it alone, so
/// their load never makes a capture test lose packets to a starved ring reader.
static LOAD: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// How a [`Pair`] holds [`LOAD`]: shared with other traffic tests, or alone.
#[allow(dead_code)]
enum Quiet {
    Shared(std::sync::RwLockReadGuard<'static, ()>),
    Alone(std::sync::RwLockWriteGuard<'static, ()>),
}

/// Held by a test that loads the machine on purpose: no real-traffic test runs meanwhile.
pub fn heavy() -> std::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write().unwrap_or_else(|p| p.into_inner())
}

pub struct Pair {
    /// Real traffic is counted exactly: no CPU-heavy hostile-plugin test runs meanwhile.
    _quiet: Quiet,
    pub ns_a: String,
    pub ns_b: String,
    pub a_if: String,
    pub b_if: String,
    pub a4: String,
    pub b4: String,
    pub a6: String,
    pub b6: String,
}

impl Pair {
    pub fn new(subnet: u8) -> Pair {
        Pair::with(
            subnet,
            Quiet::Shared(LOAD.read().unwrap_or_else(|p| p.into_inner())),
        )
    }

    /// A pair for a test whose counts or timings (line-rate TCP against iperf3's own, DNS
    /// latency and facts matched within an eviction round) need the machine to itself.
    pub fn alone(subnet: u8) -> Pair {
        Pair::with(subnet, Quiet::Alone(heavy()))
    }

    fn with(subnet: u8, quiet: Quiet) -> Pair {
        require(&["ip"]);
        let ns_a = unique("wa");
        let ns_b = unique("wb");
        let a_if = unique("va");
        let b_if = unique("vb");
        let p = Pair {
            _quiet: quiet,
            a4: format!("198.18.{subnet}.1"),
            b4: format!("198.18.{subnet}.2"),
            a6: format!("2001:db8:{subnet:x}::1"),
            b6: format!("2001:db8:{subnet:x}::2"),
            ns_a,
            ns_b,
            a_if,
            b_if,
        };
        sh(&format!("ip netns add {}", p.ns_a));
        sh(&format!("ip netns add {}", p.ns_b));
        for (ns, ifname) in [(&p.ns_a, &p.a_if), (&p.ns_b, &p.b_if)] {
            // Before the interface exists, so that it starts quiet.
            sh(&format!(
                "ip netns exec {ns} sh -c 'sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.default.accept_ra=0 net.ipv6.conf.all.accept_dad=0' && ip -n {ns} link set lo up"
            ));
            let _ = ifname;
        }
        sh(&format!(
            "ip link add {} netns {} type veth peer name {} netns {}",
            p.a_if, p.ns_a, p.b_if, p.ns_b
        ));
        let mac = |ns: &str, ifname: &str| -> String {
            sh(&format!(
                "ip netns exec {ns} cat /sys/class/net/{ifname}/address"
            ))
            .trim()
            .to_string()
        };
        let (mac_a, mac_b) = (mac(&p.ns_a, &p.a_if), mac(&p.ns_b, &p.b_if));
        for (ns, ifname, v4, v6, peer4, peer6, peer_mac) in [
            (&p.ns_a, &p.a_if, &p.a4, &p.a6, &p.b4, &p.b6, &mac_b),
            (&p.ns_b, &p.b_if, &p.b4, &p.b6, &p.a4, &p.a6, &mac_a),
        ] {
            sh(&format!(
                "ip -n {ns} addr add {v4}/24 dev {ifname} && ip -n {ns} addr add {v6}/64 dev {ifname} nodad && ip -n {ns} link set {ifname} up && ip -n {ns} neigh replace {peer4} lladdr {peer_mac} dev {ifname} nud permanent && ip -n {ns} neigh replace {peer6} lladdr {peer_mac} dev {ifname} nud permanent"
            ));
        }
        p
    }

    /// Interface counters (rx/tx bytes and packets) of an interface in a namespace.
    pub fn stats(ns: &str, ifname: &str) -> IfStats {
        let read = |k: &str| -> u64 {
            sh(&format!(
                "ip netns exec {ns} cat /sys/class/net/{ifname}/statistics/{k}"
            ))
            .trim()
            .parse()
            .expect("counter")
        };
        IfStats {
            rx_bytes: read("rx_bytes"),
            rx_packets: read("rx_packets"),
            tx_bytes: read("tx_bytes"),
            tx_packets: read("tx_packets"),
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_a])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_b])
            .status();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

impl IfStats {
    pub fn delta(&self, before: &IfStats) -> IfStats {
        IfStats {
            rx_bytes: self.rx_bytes - before.rx_bytes,
            rx_packets: self.rx_packets - before.rx_packets,
            tx_bytes: self.tx_bytes - before.tx_bytes,
            tx_packets: self.tx_packets - before.tx_packets,
        }
    }
}

/// `ms` as an ISO time in whole seconds (`2026-12-06T09:30:00Z`), as the UI's URLs take.
pub fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let out = sh(&format!("date -u -d @{secs} +%Y-%m-%dT%H:%M:%SZ"));
    out.trim().to_string()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A helper process (a server the test talks to), killed and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the browser test `ui/web/test/SCRIPT` (node, playwright-core, Debian's chromium) on
/// the agent at `url` with `env` beside `WEIR_URL` and `WEIR_SHOTS`; it must pass. Prints and
/// returns what it printed.
pub fn browser_test(script: &str, url: &str, env: &[(&str, String)]) -> String {
    require(&["node", "chromium"]);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .arg(root.join("ui/web/test").join(script))
        .current_dir(root.join("ui/web"))
        .env("WEIR_URL", url)
        .env("WEIR_SHOTS", root.join("target/ui-screenshots"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "browser test {script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{printed}");
    printed
}

/// A real Prometheus (Debian's package) scraping `targets` (job name, `host:port`) every
/// second, its data in `dir`; ready when this returns, stopped on drop.
pub struct Prometheus {
    _server: KillOnDrop,
    pub port: u16,
}

impl Prometheus {
    pub fn start(dir: &Path, targets: &[(&str, String)]) -> Prometheus {
        let port = free_port();
        let cfg = dir.join("prometheus.yml");
        let mut text = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
        for (job, target) in targets {
            text.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        std::fs::write(&cfg, text).expect("prometheus config");
        let server = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus");
        let server = KillOnDrop(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("http://127.0.0.1:{port}/-/ready"))
            .call()
            .is_err()
        {
            assert!(Instant::now() < deadline, "prometheus did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        Prometheus {
            _server: server,
            port,
        }
    }
}

/// The recorded Kubernetes API (`py/kube_api.py`, a stand-in: no API server runs on the test
/// machines) serving the lists and watch files in `dir`, and a kubeconfig that points at it.
pub struct KubeApi {
    _server: KillOnDrop,
    pub kubeconfig: PathBuf,
}

impl KubeApi {
    /// A list as the API server answers one (`kind` is the list's, e.g. `PodList`).
    pub fn list(kind: &str, items: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "10"}, "items": items})
    }

    /// Writes each (resource, list) as `dir/RESOURCE.json`, served by the recorded API.
    pub fn write_lists<const N: usize>(dir: &Path, lists: [(&str, serde_json::Value); N]) {
        for (resource, v) in lists {
            std::fs::write(dir.join(format!("{resource}.json")), v.to_string()).expect("write");
        }
    }

    pub fn start(dir: &Path) -> KubeApi {
        use std::io::BufRead;
        let port = free_port().to_string();
        let mut server = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/e2e/py/kube_api.py"
            ))
            .arg(&port)
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("kube_api.py");
        let mut ready = String::new();
        std::io::BufReader::new(server.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("ready");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: recorded\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: recorded\n  context:\n    cluster: recorded\n    user: recorded\ncurrent-context: recorded\nusers:\n- name: recorded\n  user:\n    token: recorded-token\n"
            ),
        )
        .expect("kubeconfig");
        KubeApi {
            _server: KillOnDrop(server),
            kubeconfig,
        }
    }
}
