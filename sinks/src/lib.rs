//! weir's sinks: one module per transport, each implementing `weir_core::sink::Transport` for
//! one kind of [`Endpoint`]. [`open`] picks the transport for a destination. Transports hold at
//! most one connection, open it on first use, and open a fresh one after an error, so a
//! destination that comes back is reached again without a restart.

mod http;
mod jetstream;
mod kafka;
mod nats;
mod scram;
mod tcp;
mod udp;

use std::sync::Arc;
use weir_core::sink::{Destination, Endpoint, SinkError, Transport};

/// The transport for `d`. Nothing is connected until the first send.
pub fn open(d: &Destination) -> Arc<dyn Transport> {
    let name = d.name.clone();
    match &d.endpoint {
        Endpoint::Udp { host, port } => Arc::new(udp::Udp::new(name, host, *port)),
        Endpoint::Tcp { host, port } => Arc::new(tcp::Tcp::new(name, host, *port)),
        Endpoint::Http { url, gzip } => Arc::new(http::Http::new(name, url, *gzip)),
        Endpoint::Nats {
            host,
            port,
            subject,
        } => Arc::new(nats::Nats::new(name, host, *port, subject)),
        Endpoint::JetStream {
            servers,
            stream,
            subject,
        } => Arc::new(jetstream::JetStream::new(name, servers, stream, subject)),
        Endpoint::Kafka {
            servers,
            topic,
            sasl,
        } => Arc::new(kafka::Kafka::new(name, servers, topic, sasl.clone())),
    }
}

/// Resolves `host:port` to the first address, with a readable error.
pub(crate) fn resolve(host: &str, port: u16) -> std::io::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    })
}

/// Why a step of a send failed, for transports that tell outages from refusals: the
/// connection is unusable (dropped, the next server tried), the destination is unavailable for
/// now, or it refuses this payload for good.
pub(crate) enum Fail {
    Io(std::io::Error),
    Unavailable(String),
    Refused(String),
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        Fail::Io(e)
    }
}

impl Fail {
    /// The sink's error, naming the sink and `at` (what was sent to).
    pub(crate) fn into_sink_error(self, name: &str, at: &str) -> SinkError {
        let name = name.to_string();
        match self {
            Fail::Io(e) => SinkError::Send {
                name,
                message: format!("{at}: {e}"),
            },
            Fail::Unavailable(m) => SinkError::Send {
                name,
                message: format!("{at}: {m}"),
            },
            Fail::Refused(m) => SinkError::Rejected {
                name,
                message: format!("{at}: {m}"),
            },
        }
    }
}

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::time::Duration;

    fn dest(url: &str) -> Arc<dyn Transport> {
        open(&Destination::parse(&format!("t={url}")).expect("destination"))
    }

    #[test]
    fn udp_tcp_and_http_carry_payloads_and_say_when_they_cannot() {
        let t = Duration::from_secs(2);
        // UDP: one datagram per payload.
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = rx.local_addr().expect("addr").port();
        let udp = dest(&format!("udp://127.0.0.1:{port}"));
        udp.send(b"one", "text/plain", t).expect("udp");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"one");
        let e = udp.send(&vec![0u8; 70_000], "text/plain", t).unwrap_err();
        assert!(e.to_string().contains("do not fit one datagram"), "{e}");
        // TCP: written back to back on one connection; a listener gone is an error, and a
        // new one is reached again.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let tcp = dest(&format!("tcp://127.0.0.1:{port}"));
        tcp.send(b"a\n", "text/plain", t).expect("tcp");
        tcp.send(b"b\n", "text/plain", t).expect("tcp");
        let (c, _) = l.accept().expect("accept");
        let mut r = BufReader::new(c);
        let mut line = String::new();
        r.read_line(&mut line).expect("line");
        r.read_line(&mut line).expect("line");
        assert_eq!(line, "a\nb\n");
        drop((r, l));
        let mut failed = false;
        for _ in 0..5 {
            if tcp.send(b"c\n", "text/plain", t).is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(failed, "a closed peer makes sends fail");
        // HTTP: a 2xx is a send, anything else an error naming the status and what the
        // answer's body said.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for status in [
                "200 OK",
                "503 Service Unavailable",
                "413 Payload Too Large",
                "200 OK",
            ] {
                let (mut c, _) = l.accept().expect("accept");
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut buf).expect("read");
                    req.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&req).to_string();
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let head = text.find("\r\n\r\n").map_or(0, |i| i + 4);
                while req.len() < head + len {
                    let n = c.read(&mut buf).expect("read");
                    req.extend_from_slice(&buf[..n]);
                }
                let ctype = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-type:")
                            .map(|v| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let gzip = text
                    .lines()
                    .any(|l| l.eq_ignore_ascii_case("content-encoding: gzip"));
                let body = if gzip {
                    let mut out = String::new();
                    flate2::read::GzDecoder::new(&req[head..])
                        .read_to_string(&mut out)
                        .expect("gzip body");
                    format!("(gzip {} bytes) {out}", len)
                } else {
                    String::from_utf8_lossy(&req[head..]).into_owned()
                };
                bodies.push(format!("{ctype} {body}"));
                // The refusal says why, over two lines.
                let said = if status.starts_with("413") {
                    "Code: 16, No such column\n  Bogus in table flows_ingest\n"
                } else {
                    ""
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{said}",
                    said.len()
                );
            }
            bodies
        });
        let http = dest(&format!("http://127.0.0.1:{port}/ingest"));
        http.send(b"{\"x\":1}\n", "application/x-ndjson", t)
            .expect("200");
        let e = http.send(b"{\"x\":2}\n", "text/plain", t).unwrap_err();
        assert!(
            e.to_string().contains("answered 503") && e.transient(),
            "{e}"
        );
        let e = http.send(b"{\"x\":3}\n", "text/plain", t).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("answered 413: Code: 16, No such column Bogus in table flows_ingest")
                && !e.transient(),
            "a 4xx is for good: {e}"
        );
        // http+gzip://: the same body, compressed, with its encoding said.
        let big = "{\"x\":4}\n".repeat(1000);
        dest(&format!("http+gzip://127.0.0.1:{port}/ingest"))
            .send(big.as_bytes(), "application/x-ndjson", t)
            .expect("200");
        let got = server.join().expect("server");
        assert_eq!(
            got[..3],
            [
                "application/x-ndjson {\"x\":1}\n",
                "text/plain {\"x\":2}\n",
                "text/plain {\"x\":3}\n"
            ]
        );
        let gz: usize = got[3]
            .strip_prefix("application/x-ndjson (gzip ")
            .and_then(|r| r.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{}", got[3]));
        assert!(gz < big.len() / 20, "{gz} bytes for {}", big.len());
        assert!(got[3].ends_with(&big), "{}", &got[3][..80]);
    }
}
