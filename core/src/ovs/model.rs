//! What one collection holds (raw dump texts) and what decoding makes of it.

use super::{DecodedFields, OvsError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

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
    /// `ofproto/trace` of the busiest datapath flows: the OpenFlow rules that made them.
    #[serde(default)]
    pub traces: Vec<super::trace::FlowTrace>,
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

/// A JSON value kept as the decoder wrote it, parsed the first time it is read (then kept).
/// A dump's match, statistics and actions are most of its decoded size; most of a 100 k flow
/// dump is only ever counted, drawn by its scalar fields or listed a page at a time, so
/// parsing all of it up front was most of decoding's time and memory.
pub struct Json {
    text: Box<str>,
    parsed: std::sync::OnceLock<Value>,
}

impl Json {
    /// Wraps JSON text the caller has checked is one valid value.
    fn checked(text: &str) -> Json {
        Json {
            text: text.into(),
            parsed: std::sync::OnceLock::new(),
        }
    }

    /// The value (parsed now if this is its first read).
    pub fn value(&self) -> &Value {
        self.parsed
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or(Value::Null))
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Default for Json {
    fn default() -> Json {
        Json::from(Value::Null)
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Json {
        let parsed = std::sync::OnceLock::new();
        let text = v.to_string().into();
        let _ = parsed.set(v);
        Json { text, parsed }
    }
}

impl Clone for Json {
    fn clone(&self) -> Json {
        Json {
            text: self.text.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

impl std::ops::Deref for Json {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.value()
    }
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.text == other.text || self.value() == other.value()
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        Value::deserialize(d).map(Json::from)
    }
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
    pub matched: Json,
    pub info: Json,
    pub actions: Json,
    /// Recirculation ids it sends to (also from clone, check_pkt_len, sample).
    pub recircs: Vec<u64>,
    /// Ports it outputs to.
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The OpenFlow rules that made it, in the order it went through them, when the agent
    /// traced it (`None`: not traced, so that cannot be told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<super::trace::RuleHit>>,
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
    /// The datapath flows (their places in the collection) traced through this rule.
    #[serde(default)]
    pub dp_flows: Vec<usize>,
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

/// The decoder's document of one datapath flow, its parts borrowed as text.
#[derive(Deserialize)]
struct DpDoc<'a> {
    #[serde(default, borrow)]
    ufid: Option<Cow<'a, str>>,
    #[serde(rename = "match", borrow)]
    matched: Option<&'a RawValue>,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    #[serde(borrow)]
    actions: Option<&'a RawValue>,
    #[serde(default)]
    recircs: Vec<u64>,
    #[serde(default)]
    outputs: Vec<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

/// The two match keys a flow is indexed by.
#[derive(Deserialize)]
struct DpKeys<'a> {
    #[serde(borrow)]
    recirc_id: Option<Masked<'a>>,
    #[serde(borrow)]
    in_port: Option<Masked<'a>>,
}

#[derive(Deserialize)]
struct Masked<'a> {
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DpInfo<'a> {
    #[serde(borrow)]
    packets: Option<&'a RawValue>,
    #[serde(borrow)]
    bytes: Option<&'a RawValue>,
    #[serde(borrow)]
    used: Option<&'a RawValue>,
}

/// A datapath flow from the decoder's JSON without building its tree: the document is checked
/// and its scalar fields read, `match`/`info`/`actions` kept as text ([`Json`]). `None` for a
/// document of another shape (a duplicate key, a field of an unexpected type): the caller
/// reads that one through a full parse, so both give the same flow.
fn dp_flow_fast(json: &str, dump: &str, line: u64, text: &str) -> Option<DpFlow> {
    let doc: DpDoc = serde_json::from_str(json).ok()?;
    // Derived structs also read arrays; the full parse reads only objects there.
    let is_object = |r: Option<&RawValue>| r.is_none_or(|r| r.get().starts_with('{'));
    if !is_object(doc.matched) || !is_object(doc.info) {
        return None;
    }
    let keys: Option<DpKeys> = match doc.matched {
        Some(m) => Some(serde_json::from_str(m.get()).ok()?),
        None => None,
    };
    let info: Option<DpInfo> = match doc.info {
        Some(i) => Some(serde_json::from_str(i.get()).ok()?),
        None => None,
    };
    let scalar = |r: Option<&RawValue>| -> Option<Value> {
        r.and_then(|r| serde_json::from_str(r.get()).ok())
    };
    let key = |k: Option<&Masked>| k.and_then(|m| m.value.as_deref().map(str::to_string));
    let (packets, bytes, used) = info
        .map(|i| (i.packets, i.bytes, i.used))
        .unwrap_or_default();
    let part = |r: Option<&RawValue>| r.map(|r| Json::checked(r.get())).unwrap_or_default();
    Some(DpFlow {
        datapath: dump.to_string(),
        line,
        ufid: doc.ufid.map(Cow::into_owned),
        recirc_id: key(keys.as_ref().and_then(|k| k.recirc_id.as_ref()))
            .and_then(|v| parse_num(&v))
            .unwrap_or(0),
        in_port: key(keys.as_ref().and_then(|k| k.in_port.as_ref())).unwrap_or_else(|| "0".into()),
        packets: scalar(packets).as_ref().and_then(num).unwrap_or(0),
        bytes: scalar(bytes).as_ref().and_then(num).unwrap_or(0),
        used_s: scalar(used).as_ref().and_then(Value::as_f64),
        used_ms: None,
        matched: part(doc.matched),
        info: part(doc.info),
        actions: part(doc.actions),
        recircs: doc.recircs,
        outputs: doc.outputs,
        warnings: doc.warnings,
        rules: None,
        text: text.to_string(),
    })
}

/// Moves a part out of a decoded document (`null` when it has none): no copy of its tree.
fn take(json: &mut Value, k: &str) -> Value {
    json.get_mut(k).map(Value::take).unwrap_or(Value::Null)
}

/// A datapath flow from the decoder's whole document parsed (what [`dp_flow_fast`] gives
/// for every document it reads).
fn dp_flow_full(mut json: Value, dump: &str, line: u64, text: &str) -> DpFlow {
    // Each part is moved out of the document, not copied.
    let mut get = |k: &str| take(&mut json, k);
    let m = get("match");
    let info = get("info");
    let value = |k: &str| {
        m.get(k)
            .and_then(|v| v.get("value"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    DpFlow {
        datapath: dump.to_string(),
        line,
        ufid: get("ufid").as_str().map(str::to_string),
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
        matched: m.into(),
        info: info.into(),
        actions: get("actions").into(),
        rules: None,
        text: text.to_string(),
    }
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
            Some("dp-flow")
                if let Some(flow) =
                    dp_flow_fast(field(fields, "json").unwrap_or(""), dump, line, text) =>
            {
                self.flows.push(flow)
            }
            Some(kind @ ("dp-flow" | "of-flow")) => {
                let mut json: Value = serde_json::from_str(field(fields, "json").unwrap_or(""))
                    .map_err(|e| OvsError::Decoder(format!("line {line}: bad JSON: {e}")))?;
                if kind == "dp-flow" {
                    self.flows.push(dp_flow_full(json, dump, line, text));
                } else {
                    // Each part is moved out of the decoded document, not copied.
                    let mut get = |k: &str| take(&mut json, k);
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
                        dp_flows: Vec::new(),
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
    /// The members [`DpFlow::to_json`] may write, and those the API adds (`index`,
    /// `packets_between`): a name printed on the line that is one of these is kept apart,
    /// under `info`.
    pub const MEMBERS: [&'static str; 19] = [
        "datapath",
        "line",
        "recirc_id",
        "in_port",
        "packets",
        "bytes",
        "used",
        "match",
        "actions",
        "recircs",
        "outputs",
        "text",
        "ufid",
        "used_ms",
        "warnings",
        "rules",
        "index",
        "packets_between",
        "info",
    ];

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
        // The rest of what the line printed before its actions (`flags`, `dp`, `offloaded`,
        // unknown names), as texts beside the flow's own members; a name that is one of those
        // members (`line:x`) never overwrites it: it is kept under `info`.
        let mut clashing = serde_json::Map::new();
        for (k, x) in self.info.as_object().into_iter().flatten() {
            if matches!(k.as_str(), "packets" | "bytes" | "used") {
                continue;
            }
            if v.get(k).is_some() || DpFlow::MEMBERS.contains(&k.as_str()) {
                clashing.insert(k.clone(), x.clone());
            } else {
                v[k] = x.clone();
            }
        }
        if !clashing.is_empty() {
            v["info"] = Value::Object(clashing);
        }
        if !self.warnings.is_empty() {
            v["warnings"] = Value::from(self.warnings.clone());
        }
        if let Some(r) = &self.rules {
            v["rules"] = serde_json::to_value(r).unwrap_or(Value::Null);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Documents as the ovs-decoder writes them, and odd ones a hostile line could make.
    const DOCS: &[&str] = &[
        r#"{"ufid":"11111111-0000-0000-0000-000000000001","match":{"skb_priority":{"value":"0","mask":"0"},"recirc_id":{"value":"0x10"},"in_port":{"value":"p\"0"},"eth_type":{"value":"0x8100"},"encap":{"eth_type":{"value":"0x0800"},"ipv4":{"src":{"value":"10.0.0.1"},"frag":{"value":"no"}}}},"info":{"packets":10,"bytes":1000,"used":1.5,"flags":"S","dp":"ovs"},"actions":[{"pop_vlan":true},{"ct":{"zone":"10","commit":true,"nat":{"src":"192.168.0.1-192.168.0.10:1000-2000"}}},{"recirc":"0x10"}],"dp_extra_info":{"miniflow_bits":"5,2"},"recircs":[16],"outputs":[]}"#,
        r#"{"match":{"in_port":{"value":"1"}},"info":{"packets":"0x20","bytes":"n/a","used":"never"},"actions":[{"drop":true}],"recircs":[],"outputs":["p2","p3"],"warnings":["unknown key foo"]}"#,
        r#"{"actions":[]}"#,
        // Another shape: each one is read through the full parse.
        r#"{"ufid":"a","ufid":"b","match":{},"info":{},"actions":[]}"#,
        r#"{"match":{"in_port":{"value":1}},"info":{"packets":1},"actions":[],"recircs":["0x2",3]}"#,
        r#"{"match":[],"info":null,"actions":{},"outputs":[1,"p1"]}"#,
    ];

    /// Found writing the API's description: `line:x` on a dump line made the flow's `line` the
    /// text "x" (every name before the actions was copied over the flow's own members).
    #[test]
    fn a_printed_name_never_overwrites_the_flows_own_members() {
        let f = DpFlow {
            line: 7,
            recirc_id: 2,
            info: serde_json::json!({ "line": "x", "flags": "S", "info": "y", "recirc_id": "z",
                                      "packets": 3, "used": "never" })
            .into(),
            ..DpFlow::default()
        };
        let v = f.to_json();
        assert_eq!(v["line"], 7, "{v}");
        assert_eq!(v["recirc_id"], 2, "{v}");
        assert_eq!(v["flags"], "S", "{v}");
        assert_eq!(
            v["info"],
            serde_json::json!({ "line": "x", "info": "y", "recirc_id": "z" }),
            "kept apart, not lost: {v}"
        );
        assert_eq!(v["packets"], 0, "the counters are the flow's own: {v}");
        let plain = DpFlow {
            info: serde_json::json!({ "dp": "tc" }).into(),
            ..DpFlow::default()
        };
        assert!(plain.to_json().get("info").is_none(), "nothing clashed");
    }

    #[test]
    fn a_flow_read_without_its_tree_equals_the_flow_read_through_it() {
        let mut fast = 0;
        for (i, doc) in DOCS.iter().enumerate() {
            let full = dp_flow_full(serde_json::from_str(doc).expect("doc"), "dp", 7, "text");
            match dp_flow_fast(doc, "dp", 7, "text") {
                Some(f) => {
                    fast += 1;
                    assert_eq!(f, full, "document {i}");
                    // The parts read back as the full parse's values.
                    assert_eq!(f.matched.value(), full.matched.value(), "document {i}");
                }
                None => assert!(i >= 3, "document {i} should be read without its tree"),
            }
            let mut d = Decoded::default();
            let fields = vec![
                ("kind".to_string(), "dp-flow".to_string()),
                ("line".to_string(), "1".to_string()),
                ("json".to_string(), doc.to_string()),
            ];
            d.add(fields, &["text"], "dp");
            assert_eq!(d.flows.len(), 1, "document {i}: {:?}", d.errors);
            assert_eq!(d.flows[0].ufid, full.ufid);
            assert_eq!(d.flows[0].recircs, full.recircs);
            assert_eq!(d.flows[0].outputs, full.outputs);
        }
        assert_eq!(fast, 3);
        let f = dp_flow_fast(DOCS[0], "dp", 1, "t").expect("fast");
        assert_eq!((f.recirc_id, f.in_port.as_str()), (16, "p\"0"));
        assert_eq!((f.packets, f.bytes, f.used_s), (10, 1000, Some(1.5)));
        // The text keeps the keys in the order the dump printed them.
        assert!(
            f.actions
                .to_string()
                .contains(r#"{"ct":{"zone":"10","commit""#)
        );
        let g = dp_flow_fast(DOCS[1], "dp", 1, "t").expect("fast");
        assert_eq!((g.packets, g.bytes, g.used_s), (32, 0, None));
    }

    #[test]
    fn json_parts_parse_once_compare_by_value_and_serialize_as_values() {
        let a = Json::checked(r#"{"b":1,"a":[true]}"#);
        let b = Json::from(serde_json::json!({"a": [true], "b": 1}));
        assert_eq!(a, b);
        assert_eq!(a["a"][0], Value::Bool(true));
        assert_eq!(
            serde_json::to_string(&a).expect("json"),
            r#"{"a":[true],"b":1}"#
        );
        assert_eq!(a.to_string(), r#"{"b":1,"a":[true]}"#);
        assert_eq!(*Json::default(), Value::Null);
        let back: Json = serde_json::from_str(r#"{"x":"y"}"#).expect("json");
        assert_eq!(back["x"], "y");
    }
}
