//! `nats://host:port/subject`: the NATS client protocol, as much as publishing needs. On
//! connect: read the server's `INFO`, send `CONNECT` (verbose off, pedantic on); per payload:
//! `PUB subject len`, the bytes, then `PING`, and wait for the `PONG` (the server answers in
//! order, so the PONG says it processed the PUB; an `-ERR` before it fails the send).

use crate::{lock, resolve};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weir_core::sink::{SinkError, Transport};

/// Largest payload sent (NATS servers default to 1 MiB).
pub const MAX_PAYLOAD: usize = 1 << 20;

struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

pub struct Nats {
    name: String,
    host: String,
    port: u16,
    subject: String,
    conn: Mutex<Option<Conn>>,
}

pub(crate) fn read_line(
    r: &mut BufReader<TcpStream>,
    deadline: Instant,
) -> std::io::Result<String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer in time",
        ));
    }
    r.get_ref().set_read_timeout(Some(left))?;
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(line.trim_end().to_string())
}

impl Nats {
    pub fn new(name: String, host: &str, port: u16, subject: &str) -> Nats {
        Nats {
            name,
            host: host.to_string(),
            port,
            subject: subject.to_string(),
            conn: Mutex::new(None),
        }
    }

    fn connect(&self, deadline: Instant) -> std::io::Result<Conn> {
        let addr = resolve(&self.host, self.port)?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let s = TcpStream::connect_timeout(&addr, timeout.max(Duration::from_millis(1)))?;
        s.set_nodelay(true)?;
        let mut reader = BufReader::new(s.try_clone()?);
        let info = read_line(&mut reader, deadline)?;
        if !info.starts_with("INFO ") {
            return Err(std::io::Error::other(format!(
                "not a NATS server (it said {:?})",
                info.chars().take(80).collect::<String>()
            )));
        }
        let mut writer = s;
        writer.write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":true,\"name\":\"weir\",\"lang\":\"rust\",\"version\":\"0.1\"}\r\n",
        )?;
        Ok(Conn { writer, reader })
    }

    fn try_send(&self, payload: &[u8], timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout.max(Duration::from_millis(1));
        let mut slot = lock(&self.conn);
        if slot.is_none() {
            *slot = Some(self.connect(deadline)?);
        }
        let Some(c) = slot.as_mut() else {
            return Ok(());
        };
        let r = (|| {
            c.writer.set_write_timeout(Some(timeout))?;
            let mut msg = format!("PUB {} {}\r\n", self.subject, payload.len()).into_bytes();
            msg.extend_from_slice(payload);
            msg.extend_from_slice(b"\r\nPING\r\n");
            c.writer.write_all(&msg)?;
            loop {
                let line = read_line(&mut c.reader, deadline)?;
                match line.as_str() {
                    "PONG" => return Ok(()),
                    "PING" => c.writer.write_all(b"PONG\r\n")?,
                    "+OK" => {}
                    l if l.starts_with("-ERR") => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("server: {l}"),
                        ));
                    }
                    _ => {} // INFO updates and the like
                }
            }
        })();
        if r.is_err() {
            *slot = None;
        }
        r
    }
}

impl Transport for Nats {
    fn send(&self, payload: &[u8], _media_type: &str, timeout: Duration) -> Result<(), SinkError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SinkError::Rejected {
                name: self.name.clone(),
                message: format!("{} bytes, at most {MAX_PAYLOAD} a message", payload.len()),
            });
        }
        self.try_send(payload, timeout).map_err(|e| {
            let message = format!("nats {}:{} {}: {e}", self.host, self.port, self.subject);
            let name = self.name.clone();
            // The server's -ERR (a payload over its limit, a permission violation) is an
            // answer about this message, not an outage.
            if e.kind() == std::io::ErrorKind::InvalidData {
                SinkError::Rejected { name, message }
            } else {
                SinkError::Send { name, message }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real nats-server when the machine has one (CI installs it: scripts/deps.sh).
    #[test]
    fn publishes_to_a_real_nats_server_and_reconnects() {
        let Ok(path) = which("nats-server") else {
            panic!("nats-server is not installed (scripts/deps.sh test installs it)");
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let start = || {
            std::process::Command::new(&path)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("nats-server")
        };
        let mut server = start();
        let wait = || {
            let t = Instant::now();
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(t.elapsed() < Duration::from_secs(10), "nats-server not up");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait();
        // A subscriber on the raw protocol.
        let sub = TcpStream::connect(("127.0.0.1", port)).expect("sub");
        let mut r = BufReader::new(sub.try_clone().expect("clone"));
        let mut w = sub;
        let far = Instant::now() + Duration::from_secs(5);
        read_line(&mut r, far).expect("info");
        w.write_all(b"CONNECT {\"verbose\":false}\r\nSUB weir.test 1\r\nPING\r\n")
            .expect("sub");
        assert_eq!(read_line(&mut r, far).expect("pong"), "PONG");
        let t = Nats::new("bus".into(), "127.0.0.1", port, "weir.test");
        t.send(b"hello", "text/plain", Duration::from_secs(2))
            .expect("send");
        assert_eq!(read_line(&mut r, far).expect("msg"), "MSG weir.test 1 5");
        assert_eq!(read_line(&mut r, far).expect("payload"), "hello");
        // Down: the send fails, naming the sink; back: the next send reconnects.
        let _ = server.kill();
        let _ = server.wait();
        let e = t
            .send(b"lost", "text/plain", Duration::from_millis(500))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("sink bus: nats 127.0.0.1:"),
            "{e}"
        );
        server = start();
        wait();
        t.send(b"again", "text/plain", Duration::from_secs(2))
            .expect("reconnected");
        let _ = server.kill();
        let _ = server.wait();
    }

    fn which(name: &str) -> Result<std::path::PathBuf, ()> {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain(["/usr/sbin".into(), "/usr/bin".into()])
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .ok_or(())
    }
}
