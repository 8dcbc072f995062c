//! A clickhouse-server on loopback with its config, data and logs in a directory of the
//! caller's: for tests and benchmarks (Debian's package installs the server and the config
//! this copies; nothing is started as a service).

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; stopped when dropped.
pub struct LocalServer {
    child: Child,
    /// Its HTTP interface's port on 127.0.0.1.
    pub port: u16,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl LocalServer {
    /// Starts one in `dir` (created) and waits until it answers `/ping` (at most 30 s).
    pub fn start(dir: &Path) -> std::io::Result<LocalServer> {
        Self::start_with(dir, None)
    }

    /// As [`LocalServer::start`], for the Kafka engine: `librdkafka` is a directory holding a
    /// `librdkafka.so.1` put first on the server's library path (Debian's 18.16 links an old
    /// one), and a new consumer group reads its topic from the start.
    pub fn start_for_kafka(dir: &Path, librdkafka: &Path) -> std::io::Result<LocalServer> {
        Self::start_with(dir, Some(librdkafka))
    }

    fn start_with(dir: &Path, librdkafka: Option<&Path>) -> std::io::Result<LocalServer> {
        std::fs::create_dir_all(dir)?;
        let (http, tcp, inter) = (free_port()?, free_port()?, free_port()?);
        let mut cfg = String::new();
        std::fs::File::open("/etc/clickhouse-server/config.xml")
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "/etc/clickhouse-server/config.xml: {e} (is clickhouse-server installed? scripts/deps.sh test installs it)"
                    ),
                )
            })?
            .read_to_string(&mut cfg)?;
        let d = dir.display().to_string();
        let cfg = cfg
            .replace("/var/lib/clickhouse/", &format!("{d}/data/"))
            .replace("/var/log/clickhouse-server/", &format!("{d}/log/"))
            .replace(
                "<http_port>8123</http_port>",
                &format!("<http_port>{http}</http_port>"),
            )
            .replace(
                "<tcp_port>9000</tcp_port>",
                &format!("<tcp_port>{tcp}</tcp_port>"),
            )
            .replace(
                "<interserver_http_port>9009</interserver_http_port>",
                &format!("<interserver_http_port>{inter}</interserver_http_port>"),
            )
            .replace("<listen_host>::1</listen_host>", "");
        let cfg = match librdkafka {
            Some(_) => cfg.replace(
                "</yandex>",
                "<kafka><auto_offset_reset>smallest</auto_offset_reset></kafka>\n</yandex>",
            ),
            None => cfg,
        };
        std::fs::write(dir.join("config.xml"), cfg)?;
        std::fs::copy("/etc/clickhouse-server/users.xml", dir.join("users.xml"))?;
        let mut cmd = Command::new("clickhouse-server");
        cmd.arg(format!("--config-file={d}/config.xml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(lib) = librdkafka {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        let child = cmd.spawn()?;
        let mut server = LocalServer { child, port: http };
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = server.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "clickhouse-server exited ({st}); see {d}/log"
                )));
            }
            if TcpStream::connect(("127.0.0.1", http)).is_ok()
                && ureq::get(&format!("http://127.0.0.1:{http}/ping"))
                    .call()
                    .is_ok()
            {
                return Ok(server);
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err(std::io::Error::other(format!(
                    "clickhouse-server did not answer in 30 s; see {d}/log"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
