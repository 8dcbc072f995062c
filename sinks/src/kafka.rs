//! `kafka://host:port[,host:port...]/topic`: the Kafka protocol, as much as producing needs,
//! over plain TCP. The bootstrap servers are tried in turn for `ApiVersions` (the broker must
//! take Metadata v4 and Produce v3) and `Metadata` of the topic; each payload is one record
//! (no key, the send's time as its timestamp) in a v2 record batch (CRC-32C), produced with
//! `acks=all` to the leader of the next partition in turn. Answered errors are sorted as the
//! protocol means them: leadership moving, a topic or broker not ready, timeouts are outages
//! (metadata is read again, the send retried); a record too large, corrupt or refused by
//! authorization is refused for good. With credentials (`kafka://USER:PASSWORD@...?sasl=`),
//! every connection authenticates first: SASL PLAIN, or SCRAM-SHA-256/512 (the server's
//! signature checked too).

use crate::{Fail, lock, resolve};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_core::sink::{Sasl, SinkError, Transport};

const API_PRODUCE: i16 = 0;
const API_METADATA: i16 = 3;
const API_VERSIONS: i16 = 18;
const API_SASL_HANDSHAKE: i16 = 17;
const API_SASL_AUTHENTICATE: i16 = 36;
const PRODUCE_VERSION: i16 = 3;
const METADATA_VERSION: i16 = 4;
/// Largest answer read (a metadata answer of a big cluster stays far below).
const MAX_ANSWER: usize = 16 << 20;
/// Largest payload sent (brokers default to about 1 MB per message).
pub const MAX_PAYLOAD: usize = 1 << 20;

fn bad(m: impl Into<String>) -> Fail {
    Fail::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        m.into(),
    ))
}

/// Big-endian writer of the protocol's primitive types.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn i8(&mut self, v: i8) {
        self.0.push(v as u8);
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn str(&mut self, s: &str) {
        self.i16(s.len() as i16);
        self.0.extend_from_slice(s.as_bytes());
    }
    /// Zig-zag varint (record fields).
    fn varint(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }
}

/// Reader of an answer; every read checks the bounds.
struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Fail> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let Some(end) = end else {
            return Err(bad(format!("answer cut short at byte {}", self.at)));
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16, Fail> {
        let s = self.take(2)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }
    fn i32(&mut self) -> Result<i32, Fail> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i64(&mut self) -> Result<i64, Fail> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(i64::from_be_bytes(a))
    }
    fn bool(&mut self) -> Result<bool, Fail> {
        Ok(self.take(1)?[0] != 0)
    }
    /// A string (nullable: -1 is None).
    fn str(&mut self) -> Result<Option<String>, Fail> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        let s = self.take(n as usize)?;
        Ok(Some(String::from_utf8_lossy(s).into_owned()))
    }
    /// An array's length (-1, null, as 0), bounded by what is left.
    fn len(&mut self) -> Result<usize, Fail> {
        let n = self.i32()?;
        let n = n.max(0) as usize;
        if n > self.b.len() - self.at {
            return Err(bad(format!(
                "array of {n} at byte {}: longer than the answer",
                self.at
            )));
        }
        Ok(n)
    }
}

/// CRC-32C (Castagnoli), as record batches carry it.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for b in data {
        c = t[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// One record (no key, no headers) in a v2 record batch.
fn record_batch(value: &[u8], now_ms: i64) -> Vec<u8> {
    let mut rec = W::default();
    rec.i8(0); // attributes
    rec.varint(0); // timestamp delta
    rec.varint(0); // offset delta
    rec.varint(-1); // key: null
    rec.varint(value.len() as i64);
    rec.0.extend_from_slice(value);
    rec.varint(0); // headers
    let mut records = W::default();
    records.varint(rec.0.len() as i64);
    records.0.extend_from_slice(&rec.0);
    // From attributes to the end: what the CRC covers.
    let mut tail = W::default();
    tail.i16(0); // attributes: no compression, create time
    tail.i32(0); // last offset delta
    tail.i64(now_ms); // base timestamp
    tail.i64(now_ms); // max timestamp
    tail.i64(-1); // producer id
    tail.i16(-1); // producer epoch
    tail.i32(-1); // base sequence
    tail.i32(1); // records
    tail.0.extend_from_slice(&records.0);
    let mut b = W::default();
    b.i64(0); // base offset
    b.i32((4 + 1 + 4 + tail.0.len()) as i32); // batch length: from the leader epoch on
    b.i32(-1); // partition leader epoch
    b.i8(2); // magic
    b.0.extend_from_slice(&crc32c(&tail.0).to_be_bytes());
    b.0.extend_from_slice(&tail.0);
    b.0
}

/// What an error code means for the send (Kafka's protocol error codes).
fn classify(code: i16, what: &str) -> Fail {
    let m = format!("{what}: error {code} ({})", error_name(code));
    match code {
        // Retriable: leadership moving, not ready, timeouts, throttling, not enough replicas.
        3 | 5 | 6 | 7 | 8 | 9 | 13 | 14 | 15 | 16 | 19 | 20 => Fail::Unavailable(m),
        _ => Fail::Refused(m),
    }
}

fn error_name(code: i16) -> &'static str {
    match code {
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        8 => "BROKER_NOT_AVAILABLE",
        9 => "REPLICA_NOT_AVAILABLE",
        10 => "MESSAGE_TOO_LARGE",
        13 => "NETWORK_EXCEPTION",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        18 => "RECORD_LIST_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        35 => "UNSUPPORTED_VERSION",
        87 => "INVALID_RECORD",
        _ => "see the Kafka protocol's error codes",
    }
}

struct Conn {
    s: TcpStream,
}

impl Conn {
    fn open(host: &str, port: u16, deadline: Instant) -> std::io::Result<Conn> {
        let addr = resolve(host, port)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let s = TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1)))?;
        s.set_nodelay(true)?;
        Ok(Conn { s })
    }

    /// One request and its answer's body (after the correlation id).
    fn call(
        &mut self,
        key: i16,
        version: i16,
        correlation: i32,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, Fail> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.s.set_write_timeout(Some(left))?;
        self.s.set_read_timeout(Some(left))?;
        let mut h = W::default();
        h.i16(key);
        h.i16(version);
        h.i32(correlation);
        h.str("weir");
        let mut msg = Vec::with_capacity(4 + h.0.len() + body.len());
        msg.extend_from_slice(&((h.0.len() + body.len()) as i32).to_be_bytes());
        msg.extend_from_slice(&h.0);
        msg.extend_from_slice(body);
        self.s.write_all(&msg)?;
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > MAX_ANSWER {
            return Err(bad(format!("an answer of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.s.read_exact(&mut buf)?;
        let got = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if got != correlation {
            return Err(bad(format!(
                "answer to request {got}, expected {correlation}"
            )));
        }
        buf.drain(..4);
        Ok(buf)
    }
}

/// The topic's partitions and their leaders, and the brokers' addresses.
struct Meta {
    brokers: HashMap<i32, (String, u16)>,
    /// (partition, leader node)
    partitions: Vec<(i32, i32)>,
}

struct State {
    meta: Option<Meta>,
    conns: HashMap<i32, Conn>,
    next_bootstrap: usize,
    next_partition: usize,
    correlation: i32,
}

pub struct Kafka {
    name: String,
    servers: Vec<(String, u16)>,
    topic: String,
    sasl: Option<Sasl>,
    state: Mutex<State>,
}

/// 18 random bytes as base64: a SCRAM nonce.
fn nonce() -> std::io::Result<String> {
    use base64::Engine;
    let mut b = [0u8; 18];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(b))
}

impl Kafka {
    pub fn new(name: String, servers: &[(String, u16)], topic: &str, sasl: Option<Sasl>) -> Kafka {
        Kafka {
            name,
            servers: servers.to_vec(),
            topic: topic.to_string(),
            sasl,
            state: Mutex::new(State {
                meta: None,
                conns: HashMap::new(),
                next_bootstrap: 0,
                next_partition: 0,
                correlation: 0,
            }),
        }
    }

    /// A connection to `host:port`, authenticated when the sink has credentials.
    fn open(&self, host: &str, port: u16, st: &mut State, deadline: Instant) -> Result<Conn, Fail> {
        let mut c = Conn::open(host, port, deadline)?;
        if let Some(s) = &self.sasl {
            // Refused credentials are the operator's to fix, not this payload's fault: an
            // outage, retried, its message in the exporter's status.
            self.authenticate(&mut c, s, st, deadline)
                .map_err(|f| match f {
                    Fail::Refused(m) => Fail::Unavailable(format!("{host}:{port}: {m}")),
                    other => other,
                })?;
        }
        Ok(c)
    }

    fn authenticate(
        &self,
        c: &mut Conn,
        s: &Sasl,
        st: &mut State,
        deadline: Instant,
    ) -> Result<(), Fail> {
        let mut b = W::default();
        b.str(&s.mechanism);
        st.correlation = st.correlation.wrapping_add(1);
        let a = c.call(API_SASL_HANDSHAKE, 1, st.correlation, &b.0, deadline)?;
        let mut r = R { b: &a, at: 0 };
        let code = r.i16()?;
        if code != 0 {
            let mut mechs = Vec::new();
            for _ in 0..r.len()? {
                mechs.push(r.str()?.unwrap_or_default());
            }
            return Err(Fail::Refused(format!(
                "SASL {}: the broker takes {}",
                s.mechanism,
                if mechs.is_empty() {
                    "none".to_string()
                } else {
                    mechs.join(", ")
                }
            )));
        }
        let hash = match s.mechanism.as_str() {
            "PLAIN" => {
                let msg = format!("\0{}\0{}", s.user, s.password);
                self.sasl_step(c, st, msg.as_bytes(), deadline)?;
                return Ok(());
            }
            "SCRAM-SHA-256" => crate::scram::Hash::Sha256,
            _ => crate::scram::Hash::Sha512,
        };
        let mut client = crate::scram::Client::new(hash, &s.user, &s.password, &nonce()?);
        let first = self.sasl_step(c, st, client.first().as_bytes(), deadline)?;
        let fin = client
            .finish(&String::from_utf8_lossy(&first))
            .map_err(|m| Fail::Refused(format!("SASL {}: {m}", s.mechanism)))?;
        let last = self.sasl_step(c, st, fin.as_bytes(), deadline)?;
        client
            .verify(&String::from_utf8_lossy(&last))
            .map_err(|m| Fail::Refused(format!("SASL {}: {m}", s.mechanism)))
    }

    /// One SaslAuthenticate (v0) exchange: our bytes, the broker's.
    fn sasl_step(
        &self,
        c: &mut Conn,
        st: &mut State,
        bytes: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, Fail> {
        let mut b = W::default();
        b.i32(bytes.len() as i32);
        b.0.extend_from_slice(bytes);
        st.correlation = st.correlation.wrapping_add(1);
        let a = c.call(API_SASL_AUTHENTICATE, 0, st.correlation, &b.0, deadline)?;
        let mut r = R { b: &a, at: 0 };
        let code = r.i16()?;
        let message = r.str()?;
        if code != 0 {
            return Err(Fail::Refused(format!(
                "SASL authentication failed: {} (error {code})",
                message.unwrap_or_default()
            )));
        }
        let n = r.i32()?.max(0) as usize;
        Ok(r.take(n)?.to_vec())
    }

    /// Checks the versions and reads the topic's metadata from the first bootstrap server
    /// that answers.
    fn refresh(&self, st: &mut State, deadline: Instant) -> Result<Meta, Fail> {
        let mut errors = Vec::new();
        for k in 0..self.servers.len() {
            let i = (st.next_bootstrap + k) % self.servers.len();
            let (host, port) = &self.servers[i];
            match self.metadata_from(host, *port, st, deadline) {
                Ok(m) => {
                    st.next_bootstrap = i;
                    return Ok(m);
                }
                Err(Fail::Io(e)) => errors.push(format!("{host}:{port}: {e}")),
                Err(other) => return Err(other),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        st.next_bootstrap += 1;
        Err(Fail::Io(std::io::Error::other(format!(
            "no bootstrap server answered ({})",
            errors.join("; ")
        ))))
    }

    fn metadata_from(
        &self,
        host: &str,
        port: u16,
        st: &mut State,
        deadline: Instant,
    ) -> Result<Meta, Fail> {
        let mut c = self.open(host, port, st, deadline)?;
        st.correlation = st.correlation.wrapping_add(1);
        let v = c.call(API_VERSIONS, 0, st.correlation, &[], deadline)?;
        let mut r = R { b: &v, at: 0 };
        let code = r.i16()?;
        if code != 0 {
            return Err(classify(code, "ApiVersions"));
        }
        let mut versions = HashMap::new();
        for _ in 0..r.len()? {
            let (key, min, max) = (r.i16()?, r.i16()?, r.i16()?);
            versions.insert(key, (min, max));
        }
        for (key, want, what) in [
            (API_PRODUCE, PRODUCE_VERSION, "Produce"),
            (API_METADATA, METADATA_VERSION, "Metadata"),
        ] {
            match versions.get(&key) {
                Some((min, max)) if (*min..=*max).contains(&want) => {}
                got => {
                    return Err(Fail::Refused(format!(
                        "{host}:{port} does not take {what} v{want} (it takes {got:?})"
                    )));
                }
            }
        }
        let mut body = W::default();
        body.i32(1);
        body.str(&self.topic);
        body.i8(0); // allow_auto_topic_creation: the operator creates topics
        st.correlation = st.correlation.wrapping_add(1);
        let m = c.call(
            API_METADATA,
            METADATA_VERSION,
            st.correlation,
            &body.0,
            deadline,
        )?;
        let mut r = R { b: &m, at: 0 };
        r.i32()?; // throttle
        let mut brokers = HashMap::new();
        for _ in 0..r.len()? {
            let (node, host, port) = (r.i32()?, r.str()?, r.i32()?);
            r.str()?; // rack
            let port = u16::try_from(port).map_err(|_| bad(format!("broker port {port}")))?;
            brokers.insert(node, (host.unwrap_or_default(), port));
        }
        r.str()?; // cluster id
        r.i32()?; // controller
        let mut partitions = Vec::new();
        for _ in 0..r.len()? {
            let (code, name) = (r.i16()?, r.str()?.unwrap_or_default());
            r.bool()?;
            let n = r.len()?;
            if name != self.topic {
                return Err(bad(format!("metadata for topic {name:?}")));
            }
            if code != 0 {
                return Err(classify(code, &format!("topic {name}")));
            }
            for _ in 0..n {
                let (pcode, index, leader) = (r.i16()?, r.i32()?, r.i32()?);
                for _ in 0..r.len()? {
                    r.i32()?;
                }
                for _ in 0..r.len()? {
                    r.i32()?;
                }
                if pcode == 0 && leader >= 0 {
                    partitions.push((index, leader));
                }
            }
        }
        if partitions.is_empty() {
            return Err(Fail::Unavailable(format!(
                "topic {}: no partition with a leader",
                self.topic
            )));
        }
        // The bootstrap connection serves its own node's partitions too.
        if let Some((&id, _)) = brokers.iter().find(|(_, (h, p))| h == host && *p == port) {
            st.conns.insert(id, c);
        }
        Ok(Meta {
            brokers,
            partitions,
        })
    }

    fn try_send(&self, payload: &[u8], deadline: Instant) -> Result<(i32, i64), Fail> {
        let mut st = lock(&self.state);
        if st.meta.is_none() {
            let m = self.refresh(&mut st, deadline)?;
            st.meta = Some(m);
        }
        let Some(meta) = st.meta.as_ref() else {
            return Err(Fail::Unavailable("no metadata".into()));
        };
        let (partition, leader) = meta.partitions[st.next_partition % meta.partitions.len()];
        let addr = meta.brokers.get(&leader).cloned();
        st.next_partition = st.next_partition.wrapping_add(1);
        let Some((host, port)) = addr else {
            return Err(Fail::Unavailable(format!(
                "partition {partition}: leader {leader} is not among the brokers"
            )));
        };
        // Not the entry API: opening needs the whole state (correlation ids).
        #[allow(clippy::map_entry)]
        if !st.conns.contains_key(&leader) {
            let c = self.open(&host, port, &mut st, deadline)?;
            st.conns.insert(leader, c);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let batch = record_batch(payload, now);
        let mut body = W::default();
        body.i16(-1); // transactional id: null
        body.i16(-1); // acks: all in-sync replicas
        let timeout = deadline.saturating_duration_since(Instant::now());
        body.i32(timeout.as_millis().min(i32::MAX as u128) as i32);
        body.i32(1);
        body.str(&self.topic);
        body.i32(1);
        body.i32(partition);
        body.i32(batch.len() as i32);
        body.0.extend_from_slice(&batch);
        st.correlation = st.correlation.wrapping_add(1);
        let correlation = st.correlation;
        let Some(c) = st.conns.get_mut(&leader) else {
            return Err(Fail::Unavailable("no connection".into()));
        };
        let answer = c.call(API_PRODUCE, PRODUCE_VERSION, correlation, &body.0, deadline);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                st.conns.remove(&leader);
                st.meta = None;
                return Err(e);
            }
        };
        let mut r = R { b: &answer, at: 0 };
        for _ in 0..r.len()? {
            r.str()?;
            for _ in 0..r.len()? {
                let (index, code, offset) = (r.i32()?, r.i16()?, r.i64()?);
                r.i64()?; // log append time
                if index != partition {
                    continue;
                }
                if code != 0 {
                    let f = classify(code, &format!("{}/{partition}", self.topic));
                    if matches!(f, Fail::Unavailable(_)) {
                        st.meta = None;
                    }
                    return Err(f);
                }
                return Ok((partition, offset));
            }
        }
        Err(bad(format!(
            "no answer for partition {partition} in the produce answer"
        )))
    }
}

impl Transport for Kafka {
    fn send(&self, payload: &[u8], _media_type: &str, timeout: Duration) -> Result<(), SinkError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SinkError::Rejected {
                name: self.name.clone(),
                message: format!("{} bytes, at most {MAX_PAYLOAD} a record", payload.len()),
            });
        }
        let deadline = Instant::now() + timeout.max(Duration::from_millis(1));
        let at = format!("kafka {}", self.topic);
        self.try_send(payload, deadline).map(|_| ()).map_err(|f| {
            if matches!(f, Fail::Io(_)) {
                // Start over: metadata and connections.
                let mut st = lock(&self.state);
                st.meta = None;
                st.conns.clear();
            }
            f.into_sink_error(&self.name, &at)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_varints_are_kafkas() {
        // RFC 3720's check value for CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let mut w = W::default();
        for v in [0i64, -1, 1, 300, -300] {
            w.varint(v);
        }
        assert_eq!(w.0, [0x00, 0x01, 0x02, 0xd8, 0x04, 0xd7, 0x04]);
        let b = record_batch(b"hello", 1000);
        // base offset 8 + length 4 + the length's bytes.
        let len = i32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
        assert_eq!(b.len(), 12 + len);
        assert_eq!(b[16], 2, "magic");
        let crc = u32::from_be_bytes([b[17], b[18], b[19], b[20]]);
        assert_eq!(crc, crc32c(&b[21..]));
        assert!(b.windows(5).any(|w| w == b"hello"));
    }

    #[test]
    fn answers_cut_short_are_errors_not_panics() {
        let mut r = R { b: &[0, 1], at: 0 };
        assert!(r.i32().is_err());
        let mut r = R {
            b: &[0, 0, 0, 9],
            at: 0,
        };
        assert!(r.len().is_err());
    }
}
