//! What one collection holds (raw dump texts) and what decoding makes of it.

use super::{DecodedFields, OvsError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The raw dumps of one moment, as the switch printed them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    /// When the dumps were taken (Unix ms): `used:` ages count back from here.
    pub time_ms: u64,
    /// `live` (collected by this agent) or `import` (a dump taken elsewhere).
    pub origin: String,
    /// `dpctl/dump-flows -m` per datapath.
    pub datapaths: Vec<DatapathDump>,
    /// Datapath port numbers and names (`dpctl/show`).
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Per bridge: `ovs-ofctl dump-flows`, `dump-groups`, `dump-meters`.
    #[serde(default)]
    pub bridges: Vec<BridgeDump>,
    /// Connection-tracking entries counted by zone and protocol (`dpctl/dump-conntrack`).
    #[serde(default)]
    pub conntrack: Vec<ConntrackCount>,
    /// Commands that failed, with their error (the rest is still kept).
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatapathDump {
    /// `netdev@ovs-netdev`, `system@ovs-system`, or the name the importer gave.
    pub name: String,
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BridgeDump {
    pub name: String,
    pub flows: String,
    #[serde(default)]
    pub groups: String,
    #[serde(default)]
    pub meters: String,
}

/// A datapath port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub datapath: String,
    pub number: u32,
    pub name: String,
    /// `tap`, `internal`, `geneve`... (empty for a plain device).
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackCount {
    pub zone: u32,
    pub proto: String,
    pub count: u64,
}

/// One datapath flow, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DpFlow {
    pub datapath: String,
    /// Its line in the dump (1-based).
    pub line: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ufid: Option<String>,
    pub recirc_id: u64,
    /// As printed: a port name with `-m`, else a number.
    pub in_port: String,
    pub packets: u64,
    pub bytes: u64,
    /// Seconds since it last matched a packet, at collection time; `None` for never.
    pub used_s: Option<f64>,
    /// When it last matched (Unix ms), set once the collection time is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_ms: Option<u64>,
    /// Every key as printed, masks as value/mask pairs (see the ovs-decoder plugin).
    #[serde(rename = "match")]
    pub matched: Value,
    pub info: Value,
    pub actions: Value,
    /// Recirculation ids it sends to (also from clone, check_pkt_len, sample).
    pub recircs: Vec<u64>,
    /// Ports it outputs to.
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The line as printed.
    pub text: String,
}

/// One OpenFlow flow, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OfFlow {
    pub bridge: String,
    pub line: u64,
    pub table: u64,
    pub priority: u64,
    pub n_packets: u64,
    pub n_bytes: u64,
    #[serde(rename = "match")]
    pub matched: Value,
    pub info: Value,
    pub actions: Value,
    /// Tables it resubmits or goes to.
    pub next_tables: Vec<u64>,
    pub text: String,
}

/// A line the decoder could not read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    /// Which dump: a datapath or `bridge NAME`.
    pub dump: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// The line (at most 200 bytes of it).
    pub text: String,
}

/// What decoding gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decoded {
    pub flows: Vec<DpFlow>,
    pub openflow: Vec<OfFlow>,
    pub errors: Vec<LineError>,
}

fn field<'a>(fields: &'a DecodedFields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn num(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) => parse_num(s),
        _ => None,
    }
}

/// The strings of a JSON array (none for anything else).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// A number as OVS prints it: decimal or `0x` hex.
pub fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}…", crate::records::cut(s, max))
}

impl Decoded {
    /// Adds one decoder record; `lines` is the dump it came from (for the raw text). A record
    /// that cannot be used is an error of its line, never of the whole dump.
    pub(super) fn add(&mut self, fields: DecodedFields, lines: &[&str], dump: &str) {
        let line: u64 = field(&fields, "line")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if let Err(e) = self.try_add(&fields, line, lines, dump) {
            let text = lines
                .get(line.saturating_sub(1) as usize)
                .copied()
                .unwrap_or("")
                .trim();
            self.errors.push(LineError {
                dump: dump.to_string(),
                line,
                column: 0,
                message: e.to_string(),
                text: cut(text, 200),
            });
        }
    }

    fn try_add(
        &mut self,
        fields: &DecodedFields,
        line: u64,
        lines: &[&str],
        dump: &str,
    ) -> Result<(), OvsError> {
        if line == 0 {
            return Err(OvsError::Decoder("a record without a usable line".into()));
        }
        let text = lines
            .get(line.saturating_sub(1) as usize)
            .copied()
            .unwrap_or("")
            .trim();
        match field(fields, "kind") {
            Some("error") => self.errors.push(LineError {
                dump: dump.to_string(),
                line,
                column: field(fields, "column")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
                message: field(fields, "message").unwrap_or("").to_string(),
                text: cut(text, 200),
            }),
            Some(kind @ ("dp-flow" | "of-flow")) => {
                let json: Value = serde_json::from_str(field(fields, "json").unwrap_or(""))
                    .map_err(|e| OvsError::Decoder(format!("line {line}: bad JSON: {e}")))?;
                let get = |k: &str| json.get(k).cloned().unwrap_or(Value::Null);
                if kind == "dp-flow" {
                    let m = get("match");
                    let info = get("info");
                    let value = |k: &str| {
                        m.get(k)
                            .and_then(|v| v.get("value"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    };
                    self.flows.push(DpFlow {
                        datapath: dump.to_string(),
                        line,
                        ufid: json.get("ufid").and_then(Value::as_str).map(str::to_string),
                        recirc_id: value("recirc_id").and_then(|v| parse_num(&v)).unwrap_or(0),
                        in_port: value("in_port").unwrap_or_else(|| "0".into()),
                        packets: info.get("packets").and_then(num).unwrap_or(0),
                        bytes: info.get("bytes").and_then(num).unwrap_or(0),
                        used_s: info.get("used").and_then(Value::as_f64),
                        used_ms: None,
                        recircs: get("recircs")
                            .as_array()
                            .map(|a| a.iter().filter_map(num).collect())
                            .unwrap_or_default(),
                        outputs: strings(&get("outputs")),
                        warnings: strings(&get("warnings")),
                        matched: m,
                        info,
                        actions: get("actions"),
                        text: text.to_string(),
                    });
                } else {
                    let m = get("match");
                    let info = get("info");
                    self.openflow.push(OfFlow {
                        bridge: dump.to_string(),
                        line,
                        table: info.get("table").and_then(num).unwrap_or(0),
                        priority: m
                            .get("priority")
                            .and_then(|p| p.get("value"))
                            .and_then(num)
                            .unwrap_or(32768),
                        n_packets: info.get("n_packets").and_then(num).unwrap_or(0),
                        n_bytes: info.get("n_bytes").and_then(num).unwrap_or(0),
                        next_tables: get("next_tables")
                            .as_array()
                            .map(|a| a.iter().filter_map(num).collect())
                            .unwrap_or_default(),
                        matched: m,
                        info,
                        actions: get("actions"),
                        text: text.to_string(),
                    });
                }
            }
            other => {
                return Err(OvsError::Decoder(format!(
                    "line {line}: unknown record kind {other:?}"
                )));
            }
        }
        Ok(())
    }

    /// Sets each flow's `used_ms` from the collection time.
    pub fn set_time(&mut self, time_ms: u64) {
        for f in &mut self.flows {
            f.used_ms = f
                .used_s
                .map(|s| time_ms.saturating_sub((s * 1000.0).round() as u64));
        }
    }
}

/// Ports from `ovs-appctl dpctl/show`: a `type@name:` line per datapath, then `port N: NAME
/// (TYPE...)` lines.
pub fn parse_dpctl_show(text: &str) -> Vec<Port> {
    let mut dp = String::new();
    let mut ports = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if !line.starts_with(char::is_whitespace) && t.ends_with(':') {
            dp = t.trim_end_matches(':').to_string();
        } else if let Some(rest) = t.strip_prefix("port ")
            && let Some((n, name)) = rest.split_once(':')
            && let Ok(number) = n.trim().parse()
        {
            let name = name.trim();
            let (name, kind) = match name.split_once(' ') {
                Some((n, k)) => (
                    n,
                    k.trim_matches(|c| c == '(' || c == ')')
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .trim(),
                ),
                None => (name, ""),
            };
            ports.push(Port {
                datapath: dp.clone(),
                number,
                name: name.to_string(),
                kind: kind.to_string(),
            });
        }
    }
    ports
}

/// Connection-tracking entries counted by zone and protocol, from `dpctl/dump-conntrack`
/// lines such as `icmp,orig=(...),reply=(...),id=1,zone=5`.
pub fn count_conntrack(text: &str) -> Vec<ConntrackCount> {
    let mut counts: std::collections::BTreeMap<(u32, String), u64> = Default::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let proto = line.split(',').next().unwrap_or("").to_string();
        let zone = line
            .rsplit(',')
            .find_map(|kv| kv.strip_prefix("zone="))
            .and_then(|z| z.trim_end_matches(')').parse().ok())
            .unwrap_or(0);
        *counts.entry((zone, proto)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((zone, proto), count)| ConntrackCount { zone, proto, count })
        .collect()
}

impl DpFlow {
    /// The flow under the names OVS prints (`ufid`, `recirc_id`, `in_port`, `packets`,
    /// `bytes`, `used`, `match`, `actions`, `dp`...), plus where it came from and what it links
    /// to: what `weir ovs flows --json` and the API answer.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "datapath": self.datapath,
            "line": self.line,
            "recirc_id": self.recirc_id,
            "in_port": self.in_port,
            "packets": self.packets,
            "bytes": self.bytes,
            "used": self.used_s.map(Value::from).unwrap_or_else(|| Value::from("never")),
            "match": self.matched,
            "actions": self.actions,
            "recircs": self.recircs,
            "outputs": self.outputs,
            "text": self.text,
        });
        if let Some(u) = &self.ufid {
            v["ufid"] = Value::from(u.as_str());
        }
        if let Some(ms) = self.used_ms {
            v["used_ms"] = Value::from(ms);
        }
        for (k, x) in self.info.as_object().into_iter().flatten() {
            if !matches!(k.as_str(), "packets" | "bytes" | "used") {
                v[k] = x.clone();
            }
        }
        if !self.warnings.is_empty() {
            v["warnings"] = Value::from(self.warnings.clone());
        }
        v
    }
}
