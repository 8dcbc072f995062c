//! Sinks: destinations outside the agent that the operator names (`--sink NAME=URL`) and
//! plugins send to through the `sink` capability (exporters above all). Core defines the
//! destination, its URL forms and the [`Transport`] port; the adapters in `sinks/` carry the
//! bytes (UDP, TCP, HTTP(S), NATS, NATS JetStream, Kafka).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where a sink sends, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `udp://host:port`: one datagram per payload.
    Udp { host: String, port: u16 },
    /// `tcp://host:port`: one connection, payloads written back to back.
    Tcp { host: String, port: u16 },
    /// `http://...` or `https://...`: one POST per payload; `http+gzip://` and
    /// `https+gzip://` send it gzip-compressed (`Content-Encoding: gzip`, which ClickHouse,
    /// OTLP receivers and most collectors read), `url` then without the `+gzip`.
    Http { url: String, gzip: bool },
    /// `nats://host:port/subject`: one message per payload, confirmed by a round trip.
    Nats {
        host: String,
        port: u16,
        subject: String,
    },
    /// `jetstream://host:port[,host:port...]/STREAM/subject`: one message per payload into a
    /// JetStream stream, confirmed by the stream's acknowledgement; the servers are tried in
    /// turn, and the stream is created (one replica per listed server, at most 5) if missing.
    JetStream {
        servers: Vec<(String, u16)>,
        stream: String,
        subject: String,
    },
    /// `kafka://host:port[,host:port...]/topic`: one record per payload, produced with
    /// `acks=all` to the partitions in turn; the bootstrap servers are tried in turn.
    Kafka {
        servers: Vec<(String, u16)>,
        topic: String,
        /// SASL credentials (`kafka://USER:PASSWORD@...?sasl=MECHANISM`).
        sasl: Option<Sasl>,
    },
}

/// A SASL mechanism and the credentials for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sasl({} as {})", self.mechanism, self.user)
    }
}

/// Percent-decoding of URL user info (`%40` for `@`, `%3A` for `:`).
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A NATS subject a sink publishes to: non-empty dot-separated tokens, no spaces or wildcards.
fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| !t.is_empty())
        && !s.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
}

/// A JetStream stream name: 1-64 characters, none of whitespace, `.`, `*`, `>`, `/`, `\`.
fn valid_stream(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.contains(|c: char| c.is_whitespace() || ".*>/\\".contains(c))
}

/// A Kafka topic name: 1-249 characters of a-z, A-Z, 0-9, `.`, `_`, `-`.
fn valid_topic(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `host:port[,host:port...]`, at most 16.
fn servers(given: &str, list: &str) -> Result<Vec<(String, u16)>, SinkError> {
    let servers = list
        .split(',')
        .map(|hp| host_port(given, hp.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if servers.len() > 16 {
        return Err(SinkError::Config {
            given: given.to_string(),
            message: "at most 16 servers".into(),
        });
    }
    Ok(servers)
}

/// A destination the operator named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    /// As given, without credentials or query (shown in logs and status).
    pub url: String,
    pub endpoint: Endpoint,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A `--sink` that does not parse; the message names the part.
    #[error("sink {given:?}: {message}")]
    Config { given: String, message: String },
    /// The destination did not take the payload this time (down, refused the connection,
    /// timed out, a 5xx): worth retrying.
    #[error("sink {name}: {message}")]
    Send { name: String, message: String },
    /// The destination (or the transport) refuses this payload for good (too large for a
    /// datagram or a message, a 4xx, a protocol error): retrying it cannot help.
    #[error("sink {name}: {message}")]
    Rejected { name: String, message: String },
}

impl SinkError {
    /// Whether a retry may succeed (the destination is down, not the payload wrong).
    pub fn transient(&self) -> bool {
        matches!(self, SinkError::Send { .. })
    }
}

/// Carries payloads to one destination. Implementations reconnect on their own.
pub trait Transport: Send + Sync {
    /// Sends one payload and returns once the destination has it as far as the protocol can
    /// say (UDP: sent; TCP: written; HTTP: a 2xx answer; NATS: the server's PONG after it;
    /// JetStream: the stream's acknowledgement). `media_type` says what the bytes are (HTTP
    /// sends it as `Content-Type`; the other transports carry bytes only).
    fn send(&self, payload: &[u8], media_type: &str, timeout: Duration) -> Result<(), SinkError>;
}

/// A URL as shown in logs, status and errors: without credentials (`user:pass@`) or a query
/// string (which may carry a token).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let redacted = if authority.contains('@') || url.contains('?') {
        "(redacted)"
    } else {
        ""
    };
    if scheme.is_empty() {
        format!("{host}{path}{redacted}")
    } else {
        format!("{scheme}://{host}{path}{redacted}")
    }
}

/// Parses `host:port` (`[v6]:port` for IPv6).
fn host_port(given: &str, rest: &str) -> Result<(String, u16), SinkError> {
    let bad = |m: &str| SinkError::Config {
        given: given.to_string(),
        message: m.to_string(),
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("port must be 1-65535"))?;
    Ok((host.to_string(), port))
}

impl Destination {
    /// Parses `NAME=URL` as `--sink` takes it.
    pub fn parse(given: &str) -> Result<Destination, SinkError> {
        let bad = |m: &str| SinkError::Config {
            given: given.to_string(),
            message: m.to_string(),
        };
        let (name, url) = given
            .split_once('=')
            .ok_or_else(|| bad("write NAME=URL, e.g. collector=udp://127.0.0.1:9995"))?;
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(bad(
                "the name must be 1-64 characters of a-z, 0-9, '-', '_'",
            ));
        }
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("the URL needs a scheme: udp://, tcp://, http://, https:// (http+gzip://, https+gzip://), nats://, jetstream://, kafka://")
        })?;
        let endpoint = match scheme {
            "udp" => {
                let (host, port) = host_port(given, rest)?;
                Endpoint::Udp { host, port }
            }
            "tcp" => {
                let (host, port) = host_port(given, rest)?;
                Endpoint::Tcp { host, port }
            }
            "http" | "https" => Endpoint::Http {
                url: url.to_string(),
                gzip: false,
            },
            "http+gzip" | "https+gzip" => Endpoint::Http {
                url: format!("{}://{rest}", scheme.trim_end_matches("+gzip")),
                gzip: true,
            },
            "nats" => {
                let (hp, subject) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("nats://host:port/subject: no subject"))?;
                let (host, port) = host_port(given, hp)?;
                if !valid_subject(subject) {
                    return Err(bad(
                        "the NATS subject must be non-empty, without spaces or wildcards",
                    ));
                }
                Endpoint::Nats {
                    host,
                    port,
                    subject: subject.to_string(),
                }
            }
            "jetstream" => {
                let usage = "jetstream://HOST:PORT[,HOST:PORT...]/STREAM/SUBJECT";
                let mut parts = rest.splitn(3, '/');
                let (hosts, stream, subject) = match (parts.next(), parts.next(), parts.next()) {
                    (Some(h), Some(st), Some(su)) => (h, st, su),
                    _ => return Err(bad(&format!("{usage}: needs a stream and a subject"))),
                };
                let servers = servers(given, hosts)?;
                if !valid_stream(stream) {
                    return Err(bad(
                        "the stream name must be 1-64 characters without spaces, '.', '*', '>', '/' or '\\'",
                    ));
                }
                if !valid_subject(subject) {
                    return Err(bad(
                        "the NATS subject must be non-empty, without spaces or wildcards",
                    ));
                }
                Endpoint::JetStream {
                    servers,
                    stream: stream.to_string(),
                    subject: subject.to_string(),
                }
            }
            "kafka" => {
                let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
                let (auth, rest) = match rest.split_once('@') {
                    Some((a, r)) => (Some(a), r),
                    None => (None, rest),
                };
                let (hosts, topic) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("kafka://HOST:PORT[,HOST:PORT...]/TOPIC: no topic"))?;
                if !valid_topic(topic) {
                    return Err(bad(
                        "the Kafka topic must be 1-249 characters of a-z, A-Z, 0-9, '.', '_', '-'",
                    ));
                }
                let mut mechanism = None;
                for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                    match kv.split_once('=') {
                        Some(("sasl", m)) => {
                            let m = m.to_ascii_uppercase();
                            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&m.as_str()) {
                                return Err(bad(
                                    "sasl= takes plain, scram-sha-256 or scram-sha-512",
                                ));
                            }
                            mechanism = Some(m);
                        }
                        _ => return Err(bad(&format!("unknown option {kv:?} (sasl=MECHANISM)"))),
                    }
                }
                let sasl = match (auth, mechanism) {
                    (None, None) => None,
                    (Some(a), m) => {
                        let (u, p) = a
                            .split_once(':')
                            .ok_or_else(|| bad("credentials are USER:PASSWORD@"))?;
                        let (Some(user), Some(password)) = (unescape(u), unescape(p)) else {
                            return Err(bad("credentials: a bad %-escape"));
                        };
                        if user.is_empty() {
                            return Err(bad("credentials: no user"));
                        }
                        Some(Sasl {
                            mechanism: m.unwrap_or_else(|| "SCRAM-SHA-512".into()),
                            user,
                            password,
                        })
                    }
                    (None, Some(_)) => {
                        return Err(bad("sasl= needs USER:PASSWORD@ before the hosts"));
                    }
                };
                Endpoint::Kafka {
                    servers: servers(given, hosts)?,
                    topic: topic.to_string(),
                    sasl,
                }
            }
            other => {
                return Err(bad(&format!(
                    "scheme {other}:// is not a sink (udp, tcp, http, https, http+gzip, https+gzip, nats, jetstream, kafka)"
                )));
            }
        };
        Ok(Destination {
            name: name.to_string(),
            url: redact(url),
            endpoint,
        })
    }
}

/// The operator's named destinations with their transports.
#[derive(Clone, Default)]
pub struct Sinks {
    by_name: BTreeMap<String, (Destination, Arc<dyn Transport>)>,
}

impl Sinks {
    pub fn insert(&mut self, d: Destination, t: Arc<dyn Transport>) {
        self.by_name.insert(d.name.clone(), (d, t));
    }

    pub fn get(&self, name: &str) -> Option<&(Destination, Arc<dyn Transport>)> {
        self.by_name.get(name)
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    pub fn destinations(&self) -> impl Iterator<Item = &Destination> {
        self.by_name.values().map(|(d, _)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_bad_ones_say_why() {
        let d = Destination::parse("bus=nats://127.0.0.1:4222/weir.flows").unwrap();
        assert_eq!(
            d.endpoint,
            Endpoint::Nats {
                host: "127.0.0.1".into(),
                port: 4222,
                subject: "weir.flows".into()
            }
        );
        assert_eq!(
            Destination::parse("js=jetstream://127.0.0.1:4222,[::1]:4223/WEIR/weir.flows")
                .unwrap()
                .endpoint,
            Endpoint::JetStream {
                servers: vec![("127.0.0.1".into(), 4222), ("::1".into(), 4223)],
                stream: "WEIR".into(),
                subject: "weir.flows".into()
            }
        );
        assert_eq!(
            Destination::parse("k=kafka://b1:9092,b2:9092/netobserv-flows")
                .unwrap()
                .endpoint,
            Endpoint::Kafka {
                servers: vec![("b1".into(), 9092), ("b2".into(), 9092)],
                topic: "netobserv-flows".into(),
                sasl: None,
            }
        );
        let d = Destination::parse("k=kafka://weir:p%40ss@b1:9092/t?sasl=scram-sha-256").unwrap();
        assert!(
            !d.url.contains("p%40ss") && !d.url.contains("weir:"),
            "{}",
            d.url
        );
        match d.endpoint {
            Endpoint::Kafka { sasl: Some(s), .. } => {
                assert_eq!(
                    (s.mechanism.as_str(), s.user.as_str(), s.password.as_str()),
                    ("SCRAM-SHA-256", "weir", "p@ss")
                );
                assert!(!format!("{s:?}").contains("p@ss"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Destination::parse("c=udp://[::1]:9995").unwrap().endpoint,
            Endpoint::Udp { ref host, port: 9995 } if host == "::1"
        ));
        assert!(matches!(
            Destination::parse("h=https://collector.example/ingest")
                .unwrap()
                .endpoint,
            Endpoint::Http { .. }
        ));
        match Destination::parse("ch=http+gzip://ch.example:8123/?query=INSERT")
            .unwrap()
            .endpoint
        {
            Endpoint::Http { url, gzip } => {
                assert_eq!(url, "http://ch.example:8123/?query=INSERT");
                assert!(gzip);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            redact("https://user:secret@collector.example:8443/ingest?token=abc"),
            "https://collector.example:8443/ingest(redacted)"
        );
        assert_eq!(redact("udp://127.0.0.1:9995"), "udp://127.0.0.1:9995");
        let d = Destination::parse("h=https://u:p@c.example/x").unwrap();
        assert!(!d.url.contains("u:p"), "{}", d.url);
        for (bad, says) in [
            ("nourl", "NAME=URL"),
            ("a b=udp://h:1", "the name"),
            ("x=udp://h", "no port"),
            ("x=tcp://h:0", "1-65535"),
            ("x=mqtt://h:1883/t", "mqtt:// is not a sink"),
            ("x=kafka://h:9092", "no topic"),
            ("x=kafka://h:9092/a b", "the Kafka topic"),
            ("x=kafka://h:9092/t?sasl=gssapi", "sasl= takes"),
            ("x=kafka://h:9092/t?sasl=plain", "needs USER:PASSWORD@"),
            ("x=kafka://u@h:9092/t", "USER:PASSWORD@"),
            ("x=kafka://h:9092/t?acks=1", "unknown option"),
            ("x=nats://h:4222", "no subject"),
            ("x=nats://h:4222/a.*", "wildcards"),
            ("x=nats://h:4222/a..b", "wildcards"),
            (
                "x=jetstream://h:4222/weir.flows",
                "needs a stream and a subject",
            ),
            ("x=jetstream://h:4222,h/S/s", "no port"),
            ("x=jetstream://h:4222/S.x/s", "the stream name"),
            ("x=jetstream://h:4222/S/s>", "wildcards"),
            ("x=h:1", "scheme"),
        ] {
            let e = Destination::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
