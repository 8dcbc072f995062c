//! OpenFlow groups and meters, as `ovs-ofctl -O OpenFlow13 dump-groups` and `dump-meters`
//! print them (the collector runs both per bridge), and the rules that use each one
//! (`group:N`, `meter:N` in a rule's actions).
//!
//! ```text
//!  group_id=7,type=select,bucket=weight:60,actions=output:1,bucket=weight:40,watch_port:2,actions=output:2
//! meter=2 pktps burst stats bands=
//! type=drop rate=100 burst_size=20
//! ```
//!
//! A line that cannot be read is a [`LineError`] of its dump (`bridge NAME groups`/`meters`);
//! the rest is still read.

use super::{LineError, OfFlow};
use serde::{Deserialize, Serialize};

/// One group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub bridge: String,
    pub group_id: u32,
    /// `all`, `select`, `indirect` or `ff` (fast failover).
    #[serde(rename = "type")]
    pub kind: String,
    /// Other header items as printed (`selection_method=hash`, `fields(ip_src)`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
    pub buckets: Vec<Bucket>,
    /// The OpenFlow flows (their places in the collection) whose actions use it.
    #[serde(default)]
    pub rules: Vec<usize>,
    pub text: String,
}

/// One bucket of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_group: Option<String>,
    /// The bucket's actions as printed.
    pub actions: String,
}

/// One meter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub bridge: String,
    pub meter_id: u32,
    /// `kbps` or `pktps`.
    pub unit: String,
    /// `burst`, `stats`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    pub bands: Vec<Band>,
    /// The OpenFlow flows (their places in the collection) whose actions use it.
    #[serde(default)]
    pub rules: Vec<usize>,
}

/// One band of a meter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Band {
    /// `drop` or `dscp_remark`.
    #[serde(rename = "type")]
    pub kind: String,
    pub rate: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prec_level: Option<u32>,
}

fn is_header(t: &str) -> bool {
    t.is_empty() || t.starts_with("OFPST_") || t.starts_with("OFPT_") || t.starts_with("NXST_")
}

fn error(dump: &str, line: usize, message: String, text: &str) -> LineError {
    LineError {
        dump: dump.to_string(),
        line: line as u64 + 1,
        column: 0,
        message,
        text: text.chars().take(200).collect(),
    }
}

/// Groups of one bridge's `dump-groups`.
pub fn parse_groups(bridge: &str, text: &str) -> (Vec<Group>, Vec<LineError>) {
    let dump = format!("bridge {bridge} groups");
    let (mut groups, mut errors) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if is_header(t) {
            continue;
        }
        match group(bridge, t) {
            Ok(g) => groups.push(g),
            Err(m) => errors.push(error(&dump, n, m, t)),
        }
    }
    (groups, errors)
}

fn group(bridge: &str, t: &str) -> Result<Group, String> {
    let mut parts = t.split(",bucket=");
    let head = parts.next().unwrap_or("");
    let mut g = Group {
        bridge: bridge.to_string(),
        text: t.to_string(),
        ..Default::default()
    };
    let mut id = None;
    for item in crate::objects::split_top(head)
        .into_iter()
        .filter(|i| !i.is_empty())
    {
        match item.split_once('=') {
            Some(("group_id", v)) => {
                id = Some(
                    v.parse()
                        .map_err(|_| format!("group_id {v:?} is not a number"))?,
                )
            }
            Some(("type", v)) => g.kind = v.to_string(),
            _ => g.properties.push(item.to_string()),
        }
    }
    g.group_id = id.ok_or("a group line starts with group_id=N")?;
    for b in parts {
        g.buckets.push(bucket(b)?);
    }
    Ok(g)
}

fn bucket(b: &str) -> Result<Bucket, String> {
    // `weight:60,watch_port:2,actions=output:2` (parameters, then the actions).
    let (params, actions) = match b.split_once("actions=") {
        Some((p, a)) => (p, a),
        None => (b, ""),
    };
    let mut out = Bucket {
        actions: actions.to_string(),
        ..Default::default()
    };
    for p in params.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = p
            .split_once(':')
            .ok_or_else(|| format!("bucket parameter {p:?} is not NAME:VALUE"))?;
        let num = || {
            v.parse::<u32>()
                .map_err(|_| format!("bucket {k} {v:?} is not a number"))
        };
        match k {
            "bucket_id" => out.bucket_id = Some(num()?),
            "weight" => out.weight = Some(num()?),
            "watch_port" => out.watch_port = Some(v.to_string()),
            "watch_group" => out.watch_group = Some(v.to_string()),
            _ => return Err(format!("unknown bucket parameter {k:?}")),
        }
    }
    Ok(out)
}

/// Meters of one bridge's `dump-meters`: a `meter=N UNIT [FLAGS] bands=` line, then a line
/// per band.
pub fn parse_meters(bridge: &str, text: &str) -> (Vec<Meter>, Vec<LineError>) {
    let dump = format!("bridge {bridge} meters");
    let (mut meters, mut errors): (Vec<Meter>, Vec<LineError>) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if is_header(t) {
            continue;
        }
        let read = if t.starts_with("meter=") {
            meter(bridge, t).map(|m| meters.push(m))
        } else if t.starts_with("type=") {
            match meters.last_mut() {
                Some(m) => band(t).map(|b| m.bands.push(b)),
                None => Err("a band before any meter=N line".to_string()),
            }
        } else {
            Err("neither a meter=N line nor a band (type=...)".to_string())
        };
        if let Err(m) = read {
            errors.push(error(&dump, n, m, t));
        }
    }
    (meters, errors)
}

fn meter(bridge: &str, t: &str) -> Result<Meter, String> {
    let mut m = Meter {
        bridge: bridge.to_string(),
        ..Default::default()
    };
    for word in t.split_whitespace() {
        match word.split_once('=') {
            Some(("meter", v)) => {
                m.meter_id = v
                    .parse()
                    .map_err(|_| format!("meter {v:?} is not a number"))?
            }
            Some(("bands", _)) => {}
            Some(_) => return Err(format!("unknown meter item {word:?}")),
            None if matches!(word, "kbps" | "pktps") => m.unit = word.to_string(),
            None => m.flags.push(word.to_string()),
        }
    }
    Ok(m)
}

fn band(t: &str) -> Result<Band, String> {
    let mut b = Band::default();
    for word in t.split_whitespace() {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("band item {word:?} is not NAME=VALUE"))?;
        let num = || {
            v.parse::<u64>()
                .map_err(|_| format!("band {k} {v:?} is not a number"))
        };
        match k {
            "type" => b.kind = v.to_string(),
            "rate" => b.rate = num()?,
            "burst_size" => b.burst_size = Some(num()?),
            "prec_level" => {
                b.prec_level = Some(
                    v.parse()
                        .map_err(|_| format!("band prec_level {v:?} is not a number"))?,
                )
            }
            _ => return Err(format!("unknown band item {k:?}")),
        }
    }
    Ok(b)
}

/// The groups and meters a rule's actions (as printed) use: `group:7`, `meter:1`, also inside
/// `clone(...)`.
fn used_by(of: &OfFlow) -> impl Iterator<Item = (&'static str, u32)> + '_ {
    of.text
        .split_once(" actions=")
        .map(|(_, a)| a)
        .unwrap_or("")
        .split([',', '(', ')'])
        .filter_map(|x| {
            let (word, id) = x.trim().split_once(':')?;
            let word = match word {
                "group" => "group",
                "meter" => "meter",
                _ => return None,
            };
            Some((word, id.parse().ok()?))
        })
}

/// Gives each group and meter the rules of its bridge that use it (one pass over the rules).
pub fn link(groups: &mut [Group], meters: &mut [Meter], of: &[OfFlow]) {
    let mut users: std::collections::HashMap<(&str, &str, u32), Vec<usize>> = Default::default();
    for (i, f) in of.iter().enumerate() {
        for (word, id) in used_by(f) {
            let rules = users.entry((f.bridge.as_str(), word, id)).or_default();
            if rules.last() != Some(&i) {
                rules.push(i);
            }
        }
    }
    let take = |bridge: &str, word: &str, id: u32| {
        users.get(&(bridge, word, id)).cloned().unwrap_or_default()
    };
    for g in groups {
        g.rules = take(&g.bridge, "group", g.group_id);
    }
    for m in meters {
        m.rules = take(&m.bridge, "meter", m.meter_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What OVS 3.1 prints (`ovs-ofctl -O OpenFlow13`).
    const GROUPS: &str = "OFPST_GROUP_DESC reply (OF1.3) (xid=0x2):
 group_id=7,type=select,bucket=weight:60,actions=output:1,bucket=weight:40,watch_port:2,actions=output:2
 group_id=8,type=all,bucket=actions=output:1,push_vlan:0x8100,set_field:4101->vlan_vid,output:2
 group_id=9,type=ff,bucket=watch_port:1,actions=output:1
 group_id=x,type=all
 group_id=10,type=select,selection_method=hash,fields(ip_src,nw_proto),bucket=bucket_id:0,actions=drop
";
    const METERS: &str = "OFPST_METER_CONFIG reply (OF1.3) (xid=0x2):
meter=1 kbps bands=
type=drop rate=10000000

meter=2 pktps burst stats bands=
type=drop rate=100 burst_size=20
type=dscp_remark rate=900 prec_level=1
type=drop rate=fast";

    #[test]
    fn groups_are_read_with_their_buckets_and_a_bad_line_is_named() {
        let (g, e) = parse_groups("br0", GROUPS);
        assert_eq!(g.len(), 4);
        assert_eq!((g[0].group_id, g[0].kind.as_str()), (7, "select"));
        assert_eq!(g[0].buckets.len(), 2);
        assert_eq!(g[0].buckets[1].weight, Some(40));
        assert_eq!(g[0].buckets[1].watch_port.as_deref(), Some("2"));
        assert_eq!(g[0].buckets[1].actions, "output:2");
        assert_eq!(
            g[1].buckets[0].actions,
            "output:1,push_vlan:0x8100,set_field:4101->vlan_vid,output:2"
        );
        assert_eq!(g[2].kind, "ff");
        assert_eq!(
            g[3].properties,
            vec!["selection_method=hash", "fields(ip_src,nw_proto)"]
        );
        assert_eq!(g[3].buckets[0].bucket_id, Some(0));
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].line, e[0].dump.as_str()), (5, "bridge br0 groups"));
        assert!(e[0].message.contains("group_id \"x\""), "{}", e[0].message);
    }

    #[test]
    fn meters_are_read_with_their_bands_and_a_bad_band_is_named() {
        let (m, e) = parse_meters("br0", METERS);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].meter_id, m[0].unit.as_str()), (1, "kbps"));
        assert_eq!(m[0].bands[0].rate, 10_000_000);
        assert_eq!(m[1].flags, vec!["burst", "stats"]);
        assert_eq!(m[1].bands.len(), 2);
        assert_eq!(m[1].bands[0].burst_size, Some(20));
        assert_eq!(m[1].bands[1].prec_level, Some(1));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 8);
        assert!(e[0].message.contains("rate \"fast\""), "{}", e[0].message);
        let (_, e) = parse_meters("br0", "type=drop rate=1\nnonsense\n");
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn rules_that_use_a_group_or_meter_are_linked_on_their_bridge() {
        let rule = |bridge: &str, text: &str| OfFlow {
            bridge: bridge.into(),
            text: text.into(),
            ..Default::default()
        };
        let of = vec![
            rule("br0", "priority=1,ip actions=meter:1,group:7"),
            rule("br0", "priority=1,arp actions=clone(group:7),meter:10"),
            rule("br1", "priority=1 actions=group:7"),
            rule("br0", "priority=0 actions=drop"),
        ];
        let (mut g, _) = parse_groups("br0", GROUPS);
        let (mut m, _) = parse_meters("br0", METERS);
        link(&mut g, &mut m, &of);
        assert_eq!(g[0].rules, vec![0, 1]);
        assert!(g[1].rules.is_empty());
        assert_eq!(m[0].rules, vec![0], "meter:10 is not meter:1");
    }
}
