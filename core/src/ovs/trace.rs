//! Which OpenFlow rules made a datapath flow. The switch can say it: `ovs-appctl
//! ofproto/trace` run on a megaflow's own match (as `dpctl/dump-flows` prints it) lists the
//! rules that flow goes through, table by table. The agent traces the busiest megaflows of each
//! collection (see the `weir-ovs` adapter) and keeps the trace texts with the collection; this
//! module reads them and finds each rule among the collection's OpenFlow flows, so a megaflow
//! lists its rules and a rule lists the megaflows it produced. Where no trace was taken (an
//! imported dump, a megaflow past the cap, a recirculation id the switch has forgotten) that
//! cannot be told, and the views say so by leaving `rules` out.

use super::{DpFlow, OfFlow};
use serde::{Deserialize, Serialize};

/// One trace, as the switch printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTrace {
    /// The datapath of the traced flow.
    pub datapath: String,
    /// The traced flow's ufid.
    pub ufid: String,
    /// `ofproto/trace`'s output.
    pub text: String,
}

/// One OpenFlow rule a megaflow goes through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    pub bridge: String,
    pub table: u64,
    pub priority: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The rule's match as the trace prints it (`ip,in_port=1`; empty for a catch-all).
    #[serde(rename = "match")]
    pub matched: String,
    /// Its place among the collection's OpenFlow flows, when it is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openflow: Option<usize>,
}

/// The rules of a trace's first pass: the megaflow itself. (A trace goes on past a
/// recirculation with a conntrack state it assumes; that part is another megaflow's.) A patch
/// port's peer bridge is printed as an indented block inside the first bridge's; the rules
/// after it are the first bridge's again, so bridges are kept by indentation.
pub fn rules(trace: &str) -> Vec<RuleHit> {
    let mut bridges: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    for line in trace.lines() {
        let t = line.trim();
        if t.starts_with("=====") {
            break;
        }
        let indent = line.len() - line.trim_start().len();
        if let Some(b) = t
            .strip_prefix("bridge(\"")
            .and_then(|r| r.strip_suffix("\")"))
        {
            bridges.retain(|(i, _)| *i < indent);
            bridges.push((indent, b.to_string()));
            continue;
        }
        if let Some(mut hit) = rule_line(t) {
            // A rule belongs to the innermost bridge block it is indented under.
            while bridges.last().is_some_and(|(i, _)| *i >= indent) {
                bridges.pop();
            }
            hit.bridge = bridges.last().map(|(_, b)| b.clone()).unwrap_or_default();
            out.push(hit);
        }
    }
    out
}

/// ` 1. ct_state=+est+trk,ip,in_port=1, priority 100, cookie 0x1a` (the match may be absent).
fn rule_line(t: &str) -> Option<RuleHit> {
    let (table, rest) = t.split_once(". ")?;
    let table: u64 = table.parse().ok()?;
    let (rest, cookie) = match rest.rsplit_once(", cookie ") {
        Some((r, c)) => (r, Some(c.trim().to_string())),
        None => (rest, None),
    };
    let (matched, priority) = match rest.rsplit_once(", priority ") {
        Some((m, p)) => (m, p),
        None => ("", rest.strip_prefix("priority ")?),
    };
    Some(RuleHit {
        bridge: String::new(),
        table,
        priority: priority.trim().parse().ok()?,
        cookie,
        matched: matched.to_string(),
        openflow: None,
    })
}

/// A trace's match as items in one order: `ip,in_port=1` and `in_port=1,ip` are one match.
fn items(m: &str) -> Vec<String> {
    let mut v: Vec<String> = m
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    v.sort_unstable();
    v
}

/// The same items from a decoded OpenFlow flow's match (`{"ip": true, "reg0": {"value":
/// "0x1", "mask": "0x1"}}` -> `ip`, `reg0=0x1/0x1`), its priority left out.
fn of_items(f: &OfFlow) -> Vec<String> {
    let mut v: Vec<String> = f
        .matched
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "priority")
        .map(|(k, x)| match (x["value"].as_str(), x["mask"].as_str()) {
            (Some(v), Some(m)) => format!("{k}={v}/{m}"),
            (Some(v), None) => format!("{k}={v}"),
            _ => k.clone(),
        })
        .collect();
    v.sort_unstable();
    v
}

/// The OpenFlow flow a hit is: same bridge, table and priority, and the same match items.
/// None when no flow of the collection is that rule (changed between the dump and the trace).
pub fn find(of: &[OfFlow], hit: &RuleHit) -> Option<usize> {
    let want = items(&hit.matched);
    (0..of.len()).find(|&i| {
        let f = &of[i];
        f.bridge == hit.bridge
            && f.table == hit.table
            && f.priority == hit.priority
            && of_items(f) == want
    })
}

/// Gives each traced megaflow its rules (`rules`) and each rule the megaflows it produced
/// (`dp_flows`). Returns how many megaflows were traced.
pub fn link(flows: &mut [DpFlow], of: &mut [OfFlow], traces: &[FlowTrace]) -> usize {
    let mut traced = 0;
    for t in traces {
        let Some(i) = flows
            .iter()
            .position(|f| f.datapath == t.datapath && f.ufid.as_deref() == Some(t.ufid.as_str()))
        else {
            continue;
        };
        let mut hits = rules(&t.text);
        for h in &mut hits {
            h.openflow = find(of, h);
            if let Some(j) = h.openflow
                && !of[j].dp_flows.contains(&i)
            {
                of[j].dp_flows.push(i);
            }
        }
        flows[i].rules = Some(hits);
        traced += 1;
    }
    traced
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ovs-ofctl -O OpenFlow13 dump-flows` of a switch (OVS 3.1) with conntrack rules.
    const DUMP: &str = " cookie=0x0, duration=99.322s, table=0, n_packets=3, n_bytes=294, priority=100,ip,in_port=1 actions=ct(table=1,zone=5)
 cookie=0x0, duration=99.322s, table=0, n_packets=3, n_bytes=294, priority=100,ip,in_port=2 actions=ct(table=1,zone=5)
 cookie=0x0, duration=99.322s, table=0, n_packets=19, n_bytes=1502, priority=0 actions=drop
 cookie=0x0, duration=99.322s, table=1, n_packets=1, n_bytes=98, priority=100,ct_state=+new+trk,ip,in_port=1 actions=ct(commit,zone=5),output:2
 cookie=0x0, duration=99.322s, table=1, n_packets=2, n_bytes=196, priority=100,ct_state=+est+trk,ip,in_port=1 actions=resubmit(,2)
 cookie=0x0, duration=99.322s, table=1, n_packets=3, n_bytes=294, priority=100,ct_state=+est+trk,ip,in_port=2 actions=output:1
 cookie=0x1a, duration=99.322s, table=2, n_packets=2, n_bytes=196, send_flow_rem reset_counts priority=5 actions=output:2";

    /// `ofproto/trace` of the recirc_id(0) megaflow from port 1: its own pass, then the pass
    /// after recirculation with an assumed conntrack state (another megaflow's).
    const FIRST: &str = "Flow: icmp,in_port=1,vlan_tci=0x0000,dl_src=6a:0c:34:a2:1e:da,dl_dst=22:32:6e:67:ed:3f,nw_src=198.18.62.1,nw_dst=198.18.62.2,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,icmp_type=8,icmp_code=0

bridge(\"tbr\")
-------------
 0. ip,in_port=1, priority 100
    ct(table=1,zone=5)
    drop
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table 1.

Final flow: unchanged
Megaflow: recirc_id=0,eth,ip,in_port=1,nw_frag=no
Datapath actions: ct(zone=5),recirc(0x1)

===============================================================================
recirc(0x1) - resume conntrack with default ct_state=trk|new (use --ct-next to customize)
===============================================================================

bridge(\"tbr\")
-------------
    thaw
        Resuming from table 1
 1. ct_state=+new+trk,ip,in_port=1, priority 100
    ct(commit,zone=5)
";

    /// The recirculated megaflow of an established connection: resumed at table 1, then a
    /// resubmit to table 2 (whose rule has a cookie).
    const SECOND: &str = "Flow: recirc_id=0x1,ct_state=est|trk,ct_zone=5,eth,icmp,in_port=1

bridge(\"tbr\")
-------------
    thaw
        Resuming from table 1
 1. ct_state=+est+trk,ip,in_port=1, priority 100
    resubmit(,2)
 2. priority 5, cookie 0x1a
    output:2

Final flow: unchanged
Megaflow: recirc_id=0x1,ct_state=-new+est+trk,eth,ip,in_port=1,nw_frag=no
Datapath actions: 3
";

    fn openflow() -> Vec<OfFlow> {
        DUMP.lines()
            .enumerate()
            .map(|(i, l)| {
                let num = |k: &str| {
                    l.split([',', ' '])
                        .find_map(|x| x.strip_prefix(k))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                OfFlow {
                    bridge: "tbr".into(),
                    line: i as u64 + 1,
                    table: num("table="),
                    priority: num("priority="),
                    matched: decoded_match(l),
                    text: l.trim().to_string(),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// A dump line's match as the ovs-decoder gives it (`{"ip": true, "in_port": {"value":
    /// "1"}, "reg0": {"value": "0x1", "mask": "0x1"}}`).
    fn decoded_match(line: &str) -> serde_json::Value {
        let head = line.split(" actions=").next().unwrap_or("");
        let m = head.rsplit(", ").next().unwrap_or("");
        let m = m.rsplit(' ').next().unwrap_or("");
        let mut o = serde_json::Map::new();
        for item in m.split(',').filter(|x| !x.is_empty()) {
            let v = match item.split_once('=') {
                Some((k, v)) => {
                    let mut kv = serde_json::Map::new();
                    match v.split_once('/') {
                        Some((v, mask)) => {
                            kv.insert("value".into(), v.into());
                            kv.insert("mask".into(), mask.into());
                        }
                        None => {
                            kv.insert("value".into(), v.into());
                        }
                    }
                    (k, serde_json::Value::Object(kv))
                }
                None => (item, serde_json::Value::Bool(true)),
            };
            o.insert(v.0.to_string(), v.1);
        }
        serde_json::Value::Object(o)
    }

    fn dp(ufid: &str) -> DpFlow {
        DpFlow {
            datapath: "netdev@ovs-netdev".into(),
            ufid: Some(ufid.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_trace_gives_the_rules_of_its_own_pass_only() {
        let r = rules(FIRST);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (
                r[0].bridge.as_str(),
                r[0].table,
                r[0].priority,
                r[0].matched.as_str()
            ),
            ("tbr", 0, 100, "ip,in_port=1")
        );
        let r = rules(SECOND);
        let seen: Vec<_> = r
            .iter()
            .map(|h| (h.table, h.priority, h.matched.as_str(), h.cookie.as_deref()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, 100, "ct_state=+est+trk,ip,in_port=1", None),
                (2, 5, "", Some("0x1a")),
            ]
        );
        assert!(rules("ovs-appctl: something went wrong\n").is_empty());
    }

    #[test]
    fn rules_are_found_among_the_openflow_flows_and_list_their_megaflows() {
        let mut of = openflow();
        let mut flows = vec![dp("u0"), dp("u1"), dp("u2")];
        let traces = vec![
            FlowTrace {
                datapath: "netdev@ovs-netdev".into(),
                ufid: "u0".into(),
                text: FIRST.into(),
            },
            FlowTrace {
                datapath: "netdev@ovs-netdev".into(),
                ufid: "u2".into(),
                text: SECOND.into(),
            },
            // A flow the collection does not hold: ignored.
            FlowTrace {
                datapath: "netdev@ovs-netdev".into(),
                ufid: "gone".into(),
                text: SECOND.into(),
            },
        ];
        assert_eq!(link(&mut flows, &mut of, &traces), 2);
        // Table 0 has two priority-100 rules: the one for in_port=1 (line 1), not line 2.
        let first = flows[0].rules.as_ref().expect("traced");
        assert_eq!(first[0].openflow, Some(0));
        assert!(flows[1].rules.is_none(), "not traced: cannot be told");
        let second = flows[2].rules.as_ref().expect("traced");
        let at: Vec<_> = second.iter().map(|h| h.openflow).collect();
        // ct_state=+est+trk from port 1 (not port 2's), then table 2's only rule.
        assert_eq!(at, vec![Some(4), Some(6)]);
        assert_eq!(of[0].dp_flows, vec![0]);
        assert_eq!(of[4].dp_flows, vec![2]);
        assert_eq!(of[6].dp_flows, vec![2]);
        assert!(of[1].dp_flows.is_empty() && of[5].dp_flows.is_empty());
        // The flows' JSON carries them.
        assert_eq!(flows[2].to_json()["rules"][1]["openflow"], 6);
        assert!(flows[1].to_json().get("rules").is_none());
    }

    /// A rule outputs to a patch port: the peer bridge's rules come as an indented block,
    /// then the first bridge's resubmit goes on (OVS 3.1's output).
    const PATCH: &str = "bridge(\"tbr\")
-------------
 0. udp, priority 200
    output:3

    bridge(\"tbr2\")
    --------------
         0. udp, priority 9
            resubmit(,4)
         4. priority 3
            drop
    resubmit(,3)
 3. priority 7
    drop

Final flow: unchanged
";

    #[test]
    fn rules_after_a_patch_port_belong_to_their_own_bridge() {
        let seen: Vec<_> = rules(PATCH)
            .into_iter()
            .map(|h| (h.bridge, h.table, h.priority))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("tbr".to_string(), 0, 200),
                ("tbr2".to_string(), 0, 9),
                ("tbr2".to_string(), 4, 3),
                ("tbr".to_string(), 3, 7),
            ]
        );
    }

    #[test]
    fn a_rule_is_found_only_with_the_same_match() {
        let of = openflow();
        let hit = |table, priority, m: &str| RuleHit {
            bridge: "tbr".into(),
            table,
            priority,
            matched: m.into(),
            ..Default::default()
        };
        // Items in another order are the same match; a catch-all matches a catch-all.
        assert_eq!(find(&of, &hit(0, 100, "in_port=2,ip")), Some(1));
        assert_eq!(find(&of, &hit(0, 0, "")), Some(2));
        // The only rule of its table and priority, but another match: not it.
        assert_eq!(find(&of, &hit(2, 5, "ip")), None);
        assert_eq!(find(&of, &hit(0, 100, "ip,in_port=3")), None);
    }
}
