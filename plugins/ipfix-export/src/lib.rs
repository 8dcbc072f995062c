//! An exporter: flows as IPFIX (RFC 7011) messages, sent through the sink the operator names
//! (`sink` config; UDP: one message a datagram, TCP: the stream of messages).
//!
//! Two templates: 256 for IPv4 flows, 257 for IPv6. IANA elements: source and destination
//! address (8/12 or 27/28), ports (7, 11), protocol (4), TCP flags (6), octetDeltaCount (1)
//! and packetDeltaCount (2) scaled back by the flow's sampling (the estimate of the real
//! traffic, as weir's own sums), flowStartMilliseconds (152), flowEndMilliseconds (153),
//! flowDirection (61: 0 ingress, 1 egress as weir's IfDirection) and interfaceName (82).
//! Enterprise elements under PEN 32473 (RFC 5612's documentation number; weir has none of
//! its own): 1 the 1-in-N the counters were scaled by (u32), 2 dropped packets, 3 dropped
//! bytes, 4 RTT in ns, 5 DNS latency in µs (u64 each), 6 DNS response code, 7 DNS name, 8-11
//! source namespace and name, destination namespace and name (strings, variable length).
//!
//! The template set opens every call's first message and every `template_every`-th message
//! after (RFC 7011 8.4: over UDP, templates are sent again periodically). The sequence number
//! counts data records sent, kept in kv across calls and restarts; messages stay within
//! `max_bytes` (default 1400, one datagram on any path).

use weir_plugin_sdk::exporter::{
    Batch, Column, FlowBatch, Guest, IpAddr, PluginError, config, config_u64, destination, export,
    kv, sink,
};

const PEN: u32 = 32473;
const V4: u16 = 256;
const V6: u16 = 257;
/// Variable-length element (RFC 7011 7).
const VAR: u16 = 65535;
/// Text fields read by name, in enterprise element order 6-11.
const TEXTS: [&str; 6] = [
    "DnsFlagsResponseCode",
    "DnsName",
    "SrcK8S_Namespace",
    "SrcK8S_Name",
    "DstK8S_Namespace",
    "DstK8S_Name",
];
/// Number fields read by name, in enterprise element order 2-5.
const NUMBERS: [&str; 4] = [
    "PktDropPackets",
    "PktDropBytes",
    "TimeFlowRttNs",
    "DnsLatencyUs",
];

/// (element id, length, enterprise) of a template, IPv4 or IPv6; `basic`: the IANA
/// fixed-length elements only.
fn fields(v6: bool, basic: bool) -> Vec<(u16, u16, bool)> {
    let (src, dst, alen) = if v6 { (27, 28, 16) } else { (8, 12, 4) };
    let mut f = vec![
        (src, alen, false),
        (dst, alen, false),
        (7, 2, false),
        (11, 2, false),
        (4, 1, false),
        (6, 2, false),
        (1, 8, false),
        (2, 8, false),
        (152, 8, false),
        (153, 8, false),
        (61, 1, false),
    ];
    if basic {
        return f;
    }
    f.push((82, VAR, false));
    f.push((1, 4, true));
    for id in 2..=5 {
        f.push((id, 8, true));
    }
    for id in 6..=11 {
        f.push((id, VAR, true));
    }
    f
}

fn template_set(basic: bool) -> Vec<u8> {
    let mut set = Vec::new();
    for (id, v6) in [(V4, false), (V6, true)] {
        let f = fields(v6, basic);
        set.extend_from_slice(&id.to_be_bytes());
        set.extend_from_slice(&(f.len() as u16).to_be_bytes());
        for (ie, len, ent) in f {
            set.extend_from_slice(&(if ent { ie | 0x8000 } else { ie }).to_be_bytes());
            set.extend_from_slice(&len.to_be_bytes());
            if ent {
                set.extend_from_slice(&PEN.to_be_bytes());
            }
        }
    }
    let mut out = Vec::with_capacity(set.len() + 4);
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&((set.len() + 4) as u16).to_be_bytes());
    out.extend_from_slice(&set);
    out
}

/// A variable-length string: one length byte, or 255 and a 2-byte length (RFC 7011 7).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(1024)];
    if b.len() < 255 {
        out.push(b.len() as u8);
    } else {
        out.push(255);
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(b);
}

fn v4_of(a: &IpAddr) -> Option<[u8; 4]> {
    (a.hi == 0 && a.lo >> 32 == 0xffff).then(|| (a.lo as u32).to_be_bytes())
}

fn addr16(a: &IpAddr) -> [u8; 16] {
    ((u128::from(a.hi) << 64) | u128::from(a.lo)).to_be_bytes()
}

/// Builds messages of at most `max` bytes from the records, each (template, bytes).
struct Messages {
    max: usize,
    domain: u32,
    seq: u64,
    template_every: u64,
    basic: bool,
    sent_messages: u64,
    out: Vec<Vec<u8>>,
    cur: Vec<u8>,
    /// The open data set's template and where its header is.
    set: Option<(u16, usize)>,
    records_in_cur: u64,
}

impl Messages {
    fn open(&mut self) {
        self.cur.clear();
        self.cur.resize(16, 0);
        self.set = None;
        self.records_in_cur = 0;
        if self.sent_messages.is_multiple_of(self.template_every) {
            let t = template_set(self.basic);
            self.cur.extend_from_slice(&t);
        }
    }

    fn close_set(&mut self) {
        if let Some((_, at)) = self.set.take() {
            let len = (self.cur.len() - at) as u16;
            self.cur[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    fn seal(&mut self, now_s: u32) {
        self.close_set();
        let len = self.cur.len() as u16;
        let seq = (self.seq as u32).to_be_bytes();
        let h = &mut self.cur[..16];
        h[0..2].copy_from_slice(&10u16.to_be_bytes());
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h[4..8].copy_from_slice(&now_s.to_be_bytes());
        h[8..12].copy_from_slice(&seq);
        h[12..16].copy_from_slice(&self.domain.to_be_bytes());
        self.seq += self.records_in_cur;
        self.sent_messages += 1;
        self.out.push(std::mem::take(&mut self.cur));
    }

    fn push(&mut self, template: u16, record: &[u8], now_s: u32) {
        let need = record.len()
            + if self.set.is_some_and(|s| s.0 == template) {
                0
            } else {
                4
            };
        if self.cur.len() + need > self.max && self.records_in_cur > 0 {
            self.seal(now_s);
            self.open();
        }
        if self.set.is_none_or(|s| s.0 != template) {
            self.close_set();
            self.set = Some((template, self.cur.len()));
            self.cur.extend_from_slice(&template.to_be_bytes());
            self.cur.extend_from_slice(&[0, 0]);
        }
        self.cur.extend_from_slice(record);
        self.records_in_cur += 1;
    }
}

struct IpfixExport;

impl Guest for IpfixExport {
    fn export(batch: &FlowBatch) -> Result<(), PluginError> {
        let b = Batch::new(batch);
        let dest = destination()?;
        let max = config_u64("max_bytes", 1400)?.clamp(512, 65_000) as usize;
        let seq = kv::get("seq")
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let numbers: Vec<Column> = NUMBERS
            .iter()
            .map(|n| b.field(n))
            .collect::<Result<_, _>>()?;
        let texts: Vec<Column> = TEXTS.iter().map(|n| b.field(n)).collect::<Result<_, _>>()?;
        let (src, dst) = (b.src_addr(), b.dst_addr());
        let (sport, dport, proto, flags) = (b.src_port(), b.dst_port(), b.proto(), b.flags());
        let (bytes, packets, sampling) = (b.bytes(), b.packets(), b.sampling());
        let (start, end, dir) = (
            b.time_flow_start_ms(),
            b.time_flow_end_ms(),
            b.if_direction(),
        );
        let now_s = (weir_plugin_sdk::exporter::clock::now_ms() / 1000) as u32;
        let mut m = Messages {
            max,
            domain: config_u64("domain", 1)? as u32,
            seq,
            template_every: config_u64("template_every", 20)?.max(1),
            basic: config::get("elements").is_some_and(|e| e.trim() == "basic"),
            sent_messages: 0,
            out: Vec::new(),
            cur: Vec::new(),
            set: None,
            records_in_cur: 0,
        };
        m.open();
        let mut rec = Vec::with_capacity(256);
        for i in 0..b.len() {
            rec.clear();
            let scale = u64::from(sampling[i].max(1));
            let template = match (v4_of(&src[i]), v4_of(&dst[i])) {
                (Some(s), Some(d)) => {
                    rec.extend_from_slice(&s);
                    rec.extend_from_slice(&d);
                    V4
                }
                _ => {
                    rec.extend_from_slice(&addr16(&src[i]));
                    rec.extend_from_slice(&addr16(&dst[i]));
                    V6
                }
            };
            rec.extend_from_slice(&sport[i].to_be_bytes());
            rec.extend_from_slice(&dport[i].to_be_bytes());
            rec.push(proto[i]);
            rec.extend_from_slice(&flags[i].to_be_bytes());
            rec.extend_from_slice(&(bytes[i] * scale).to_be_bytes());
            rec.extend_from_slice(&(packets[i] * scale).to_be_bytes());
            rec.extend_from_slice(&start[i].to_be_bytes());
            rec.extend_from_slice(&end[i].to_be_bytes());
            rec.push(dir[i]);
            if m.basic {
                m.push(template, &rec, now_s);
                continue;
            }
            put_str(&mut rec, b.interface_name(i));
            rec.extend_from_slice(&(scale as u32).to_be_bytes());
            for c in &numbers {
                let v = c.numbers().and_then(|v| v.get(i)).copied().unwrap_or(0);
                rec.extend_from_slice(&v.to_be_bytes());
            }
            for c in &texts {
                put_str(&mut rec, c.text(i).unwrap_or(""));
            }
            m.push(template, &rec, now_s);
        }
        if m.records_in_cur > 0 {
            m.seal(now_s);
        }
        for msg in &m.out {
            sink::send(&dest, msg).map_err(PluginError::Failed)?;
        }
        // Counted once every message of the batch is out: a retried batch is sent again
        // with the same sequence numbers (at-least-once, as the host promises).
        kv::set("seq", &m.seq.to_be_bytes()).map_err(PluginError::Failed)?;
        Ok(())
    }
}

export!(IpfixExport);
