//! `jetstream://host:port[,host:port...]/STREAM/subject`: publishing into a NATS JetStream
//! stream over the NATS client protocol, confirmed by the stream's acknowledgement (a
//! `PubAck` naming the stream and the message's sequence), not just by the server's PONG.
//!
//! - **Servers** are tried in the order given, starting after the last one that failed, so a
//!   stopped or stalled server is left for the next one of the cluster.
//! - **The stream** is looked up once per connection (`$JS.API.STREAM.INFO`); when missing it
//!   is created with the subject, file storage, and one replica per listed server (at most 5),
//!   so a three-server cluster keeps every acknowledged message through the loss of one
//!   server. An existing stream is used as it is, but must take the subject.
//! - **Duplicates**: every message carries `Nats-Msg-Id`, a hash of its bytes under a nonce
//!   of this transport, so a payload sent again after a lost acknowledgement (the exporter
//!   retries the same batch) is stored once within the stream's duplicate window.
//! - **Errors**: no answer in time, a connection lost, "no responders" (JetStream not enabled
//!   or the stream without a leader yet) and the API's 5xx are outages, retried; the API's
//!   4xx (a message over the stream's limits, a stream not taking the subject) refuse the
//!   payload for good.

use crate::nats::{MAX_PAYLOAD, read_line};
use crate::{Fail, lock};
use std::hash::{Hash, Hasher};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weir_core::sink::{SinkError, Transport};

/// Most replicas JetStream allows for a stream.
const MAX_REPLICAS: usize = 5;

struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// Index of the server this connection is to.
    server: usize,
    /// Whether the stream was found or created on this connection.
    ensured: bool,
}

struct State {
    conn: Option<Conn>,
    /// The server to try first on the next connect.
    next: usize,
    /// Request counter: the last token of each reply subject.
    requests: u64,
}

pub struct JetStream {
    name: String,
    servers: Vec<(String, u16)>,
    stream: String,
    subject: String,
    /// Unique to this transport: the inbox prefix and the message ids' prefix.
    nonce: String,
    state: Mutex<State>,
}

/// A message received on the inbox: its subject, the status of its header line if it had
/// headers (`NATS/1.0 503`), and its body.
struct Msg {
    subject: String,
    status: Option<u16>,
    body: Vec<u8>,
}

fn nonce() -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::process::id().hash(&mut h);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .hash(&mut h);
    std::thread::current().id().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// 128 bits of SipHash over the payload: the message id's body.
fn digest(payload: &[u8]) -> String {
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        payload.hash(&mut h);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// The JetStream API's error in an answer, if it is one: (HTTP-like code, description).
fn api_error(v: &serde_json::Value) -> Option<(u64, String)> {
    let e = v.get("error")?;
    Some((
        e["code"].as_u64().unwrap_or(500),
        format!(
            "{} (code {}, err_code {})",
            e["description"].as_str().unwrap_or("no description"),
            e["code"],
            e["err_code"]
        ),
    ))
}

/// Whether a stream's subject filter takes `subject` (NATS wildcards `*` and `>`).
fn takes(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl JetStream {
    pub fn new(name: String, servers: &[(String, u16)], stream: &str, subject: &str) -> Self {
        JetStream {
            name,
            servers: servers.to_vec(),
            stream: stream.to_string(),
            subject: subject.to_string(),
            nonce: nonce(),
            state: Mutex::new(State {
                conn: None,
                next: 0,
                requests: 0,
            }),
        }
    }

    fn inbox(&self) -> String {
        format!("_INBOX.weir{}", self.nonce)
    }

    fn server(&self, i: usize) -> String {
        let (h, p) = &self.servers[i % self.servers.len()];
        if h.contains(':') {
            format!("[{h}]:{p}")
        } else {
            format!("{h}:{p}")
        }
    }

    /// Connects to the first server that answers, starting at `next`.
    fn connect(&self, next: usize, deadline: Instant) -> Result<Conn, Fail> {
        let mut errors = Vec::new();
        for k in 0..self.servers.len() {
            let i = (next + k) % self.servers.len();
            match self.connect_one(i, deadline) {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(format!("{}: {e}", self.server(i))),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(Fail::Io(std::io::Error::other(format!(
            "no server answered ({})",
            errors.join("; ")
        ))))
    }

    fn connect_one(&self, i: usize, deadline: Instant) -> std::io::Result<Conn> {
        let (host, port) = &self.servers[i];
        let addr = crate::resolve(host, *port)?;
        // Leave time for the other servers when this one does not answer.
        let share = deadline
            .saturating_duration_since(Instant::now())
            .div_f64(self.servers.len() as f64);
        let s = TcpStream::connect_timeout(&addr, share.max(Duration::from_millis(1)))?;
        s.set_nodelay(true)?;
        let mut reader = BufReader::new(s.try_clone()?);
        let info = read_line(&mut reader, (Instant::now() + share).min(deadline))?;
        if !info.starts_with("INFO ") {
            return Err(std::io::Error::other(format!(
                "not a NATS server (it said {:?})",
                info.chars().take(80).collect::<String>()
            )));
        }
        let mut writer = s;
        let connect = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"name\":\"weir\",\"lang\":\"rust\",\"version\":\"0.1\"}}\r\nSUB {}.* 1\r\n",
            self.inbox()
        );
        writer.write_all(connect.as_bytes())?;
        Ok(Conn {
            writer,
            reader,
            server: i,
            ensured: false,
        })
    }

    /// Reads until a message arrives on the inbox (answering PINGs on the way).
    fn read_msg(c: &mut Conn, deadline: Instant) -> Result<Msg, Fail> {
        loop {
            let line = read_line(&mut c.reader, deadline)?;
            let mut words = line.split(' ');
            let (headers, rest): (bool, Vec<&str>) = match words.next() {
                Some("PING") => {
                    c.writer.write_all(b"PONG\r\n")?;
                    continue;
                }
                Some("MSG") => (false, words.collect()),
                Some("HMSG") => (true, words.collect()),
                Some(w) if w.starts_with("-ERR") => {
                    // A permission or size violation is about this message; anything else
                    // (a stale connection, the server going away) ends the connection.
                    let l = line.to_ascii_lowercase();
                    let m = format!("server: {line}");
                    return Err(if l.contains("permission") || l.contains("payload") {
                        Fail::Refused(m)
                    } else {
                        Fail::Io(std::io::Error::other(m))
                    });
                }
                _ => continue, // +OK, PONG, INFO updates
            };
            let bad = || Fail::Io(std::io::Error::other(format!("malformed {line:?}")));
            let num = |s: Option<&&str>| s.and_then(|n| n.parse::<usize>().ok());
            let (hlen, total) = if headers {
                (num(rest.iter().rev().nth(1)), num(rest.last()))
            } else {
                (Some(0), num(rest.last()))
            };
            let (Some(hlen), Some(total)) = (hlen, total) else {
                return Err(bad());
            };
            if hlen > total || total > 64 << 20 {
                return Err(bad());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            c.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut buf = vec![0u8; total + 2];
            c.reader.read_exact(&mut buf)?;
            buf.truncate(total);
            let status = if headers {
                let head = String::from_utf8_lossy(&buf[..hlen]);
                head.lines()
                    .next()
                    .and_then(|l| l.strip_prefix("NATS/1.0"))
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse::<u16>().ok())
            } else {
                None
            };
            return Ok(Msg {
                subject: rest.first().map(|s| s.to_string()).unwrap_or_default(),
                status,
                body: buf[hlen..].to_vec(),
            });
        }
    }

    /// Publishes `payload` to `subject` with a reply inbox (and `Nats-Msg-Id` if given) and
    /// waits for the answer on that inbox; stale answers to earlier requests are skipped.
    fn request(
        &self,
        c: &mut Conn,
        requests: &mut u64,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<serde_json::Value, Fail> {
        *requests += 1;
        let reply = format!("{}.{}", self.inbox(), requests);
        let left = deadline.saturating_duration_since(Instant::now());
        c.writer
            .set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut out = match msg_id {
            Some(id) => {
                let head = format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n");
                let mut m = format!(
                    "HPUB {subject} {reply} {} {}\r\n{head}",
                    head.len(),
                    head.len() + payload.len()
                )
                .into_bytes();
                m.extend_from_slice(payload);
                m
            }
            None => {
                let mut m = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
                m.extend_from_slice(payload);
                m
            }
        };
        out.extend_from_slice(b"\r\n");
        c.writer.write_all(&out)?;
        loop {
            let m = Self::read_msg(c, deadline)?;
            if m.subject != reply {
                continue;
            }
            if m.status == Some(503) {
                return Err(Fail::Unavailable(format!(
                    "{}: no responders on {subject} (JetStream not enabled, or no leader yet)",
                    self.server(c.server)
                )));
            }
            return serde_json::from_slice(&m.body).map_err(|e| {
                Fail::Io(std::io::Error::other(format!(
                    "{subject}: the answer is not JSON: {e}"
                )))
            });
        }
    }

    /// Finds the stream, or creates it; checks that it takes the subject.
    fn ensure(&self, c: &mut Conn, requests: &mut u64, deadline: Instant) -> Result<(), Fail> {
        let info = format!("$JS.API.STREAM.INFO.{}", self.stream);
        let v = self.request(c, requests, &info, None, b"", deadline)?;
        let config = match api_error(&v) {
            None => v["config"].clone(),
            Some((404, _)) => {
                let replicas = self.servers.len().clamp(1, MAX_REPLICAS);
                let config = serde_json::json!({
                    "name": self.stream,
                    "subjects": [self.subject],
                    "retention": "limits",
                    "storage": "file",
                    "num_replicas": replicas,
                    "discard": "old",
                });
                let create = format!("$JS.API.STREAM.CREATE.{}", self.stream);
                let body = config.to_string();
                let v = self.request(c, requests, &create, None, body.as_bytes(), deadline)?;
                if let Some((code, e)) = api_error(&v) {
                    let m = format!("creating stream {}: {e}", self.stream);
                    return Err(if code >= 500 {
                        Fail::Unavailable(m)
                    } else {
                        Fail::Refused(m)
                    });
                }
                tracing::info!(sink = %self.name, stream = %self.stream, replicas, "JetStream stream created");
                v["config"].clone()
            }
            Some((code, e)) => {
                let m = format!("stream {}: {e}", self.stream);
                return Err(if code >= 500 {
                    Fail::Unavailable(m)
                } else {
                    Fail::Refused(m)
                });
            }
        };
        let subjects: Vec<&str> = config["subjects"]
            .as_array()
            .map(|l| l.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        if !subjects.iter().any(|f| takes(f, &self.subject)) {
            return Err(Fail::Refused(format!(
                "stream {} exists and does not take subject {} (its subjects: {})",
                self.stream,
                self.subject,
                subjects.join(", ")
            )));
        }
        c.ensured = true;
        Ok(())
    }

    fn try_send(&self, payload: &[u8], deadline: Instant) -> Result<u64, Fail> {
        let mut st = lock(&self.state);
        let State {
            conn,
            next,
            requests,
        } = &mut *st;
        if conn.is_none() {
            *conn = Some(self.connect(*next, deadline)?);
        }
        let Some(c) = conn.as_mut() else {
            return Err(Fail::Unavailable("not connected".into()));
        };
        let server = c.server;
        let r = (|| {
            if !c.ensured {
                self.ensure(c, requests, deadline)?;
            }
            let id = format!("{}-{}", self.nonce, digest(payload));
            let v = self.request(c, requests, &self.subject, Some(&id), payload, deadline)?;
            if let Some((code, e)) = api_error(&v) {
                return Err(if code >= 500 {
                    Fail::Unavailable(e)
                } else {
                    Fail::Refused(e)
                });
            }
            if v["stream"].as_str() != Some(self.stream.as_str()) {
                return Err(Fail::Refused(format!(
                    "acknowledged by stream {} instead of {}",
                    v["stream"], self.stream
                )));
            }
            Ok(v["seq"].as_u64().unwrap_or(0))
        })();
        if matches!(r, Err(Fail::Io(_) | Fail::Unavailable(_))) {
            // Drop the connection and start with the next server: this one may be the one
            // that stopped, stalled or lost its leader.
            *conn = None;
            *next = server + 1;
        }
        r
    }
}

impl Transport for JetStream {
    fn send(&self, payload: &[u8], _media_type: &str, timeout: Duration) -> Result<(), SinkError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SinkError::Rejected {
                name: self.name.clone(),
                message: format!("{} bytes, at most {MAX_PAYLOAD} a message", payload.len()),
            });
        }
        let deadline = Instant::now() + timeout.max(Duration::from_millis(1));
        let at = format!("jetstream {}/{}", self.stream, self.subject);
        self.try_send(payload, deadline)
            .map(|_| ())
            .map_err(|f| f.into_sink_error(&self.name, &at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads message `seq` of `stream` back through the JetStream API on a plain connection.
    fn get(js: &JetStream, seq: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = js.connect(0, deadline).ok().expect("connect");
        let mut n = 1000;
        let subject = format!("$JS.API.STREAM.MSG.GET.{}", js.stream);
        let body = format!("{{\"seq\":{seq}}}");
        js.request(&mut c, &mut n, &subject, None, body.as_bytes(), deadline)
            .ok()
            .expect("answer")
    }

    /// A real nats-server with JetStream (CI installs it: scripts/deps.sh).
    #[test]
    fn publishes_into_a_stream_once_per_payload_and_refuses_a_foreign_stream() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let dir = std::env::temp_dir().join(format!("weir-js-{}-{port}", std::process::id()));
        let mut server = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (scripts/deps.sh test installs it)");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "nats-server not up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let servers = vec![("127.0.0.1".to_string(), port)];
        let js = JetStream::new("bus".into(), &servers, "WEIR", "weir.flows");
        let timeout = Duration::from_secs(5);
        // The stream is created on the first send; the same bytes again are one message.
        js.send(b"one", "text/plain", timeout).expect("first");
        js.send(b"one", "text/plain", timeout).expect("again");
        js.send(b"two", "text/plain", timeout).expect("second");
        let m = get(&js, 2);
        assert_eq!(m["message"]["subject"], "weir.flows", "{m}");
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD
            .decode(m["message"]["data"].as_str().expect("data"))
            .expect("base64");
        assert_eq!(data, b"two");
        let none = get(&js, 3);
        assert_eq!(none["error"]["code"], 404, "only two messages: {none}");
        // A second sink naming the same stream with a subject it does not take: refused.
        let other = JetStream::new("other".into(), &servers, "WEIR", "elsewhere");
        let e = other.send(b"x", "text/plain", timeout).unwrap_err();
        assert!(!e.transient(), "{e}");
        assert!(
            e.to_string().contains(
                "stream WEIR exists and does not take subject elsewhere (its subjects: weir.flows)"
            ),
            "{e}"
        );
        // Nothing listening: a transient error naming every server tried.
        let _ = server.kill();
        let _ = server.wait();
        // (the first send finds its connection closed; the next one finds no server)
        let e = js
            .send(b"three", "text/plain", Duration::from_millis(500))
            .unwrap_err();
        assert!(e.transient(), "{e}");
        let e = js
            .send(b"three", "text/plain", Duration::from_millis(500))
            .unwrap_err();
        assert!(e.transient(), "{e}");
        assert!(
            e.to_string().contains(&format!(
                "jetstream WEIR/weir.flows: no server answered (127.0.0.1:{port}: "
            )),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn subject_filters_and_ids() {
        assert!(takes("weir.flows", "weir.flows"));
        assert!(takes("weir.*", "weir.flows"));
        assert!(takes("weir.>", "weir.flows.a"));
        assert!(takes(">", "weir"));
        assert!(!takes("weir.*", "weir.flows.a"));
        assert!(!takes("weir.flows", "weir"));
        assert!(!takes("weir", "weir.flows"));
        assert_eq!(digest(b"a"), digest(b"a"));
        assert_ne!(digest(b"a"), digest(b"b"));
        assert_eq!(digest(b"a").len(), 32);
    }
}
