//! What the capture layer reports to the rest of weir, without depending on it: the API and
//! CLI show this; the eBPF crate fills it in.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One capture feature and whether it is on (probed at start-up).
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    pub name: String,
    pub enabled: bool,
    /// Why it is off, or how it is done.
    pub detail: String,
}

/// One interface the programs are attached to.
#[derive(Debug, Clone, Serialize)]
pub struct AttachedInterface {
    /// Network namespace ("" for the agent's own).
    pub netns: String,
    pub name: String,
    pub ifindex: u32,
    /// `tcx` or `clsact`.
    pub mode: String,
    /// Link speed in bits/s as the driver reports it (absent for loopback and links without
    /// one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_bps: Option<u64>,
}

/// A snapshot of the capture layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureStatus {
    pub features: Vec<Feature>,
    pub interfaces: Vec<AttachedInterface>,
    /// Interfaces that could not be attached, with the reason.
    pub attach_errors: BTreeMap<String, String>,
    /// Counters of what was seen, evicted early, or lost. See docs/ARCHITECTURE.md.
    pub counters: BTreeMap<String, u64>,
    pub active_timeout_ms: u64,
    pub sampling: u32,
    pub max_flows: u32,
    /// In-kernel filter rules in force.
    pub filters: Vec<FilterRule>,
    /// Plugins controlling the capture (`capture-control`) and the last changes they made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<crate::control::ControlStatus>,
}

/// A running capture, as the API sees it.
pub trait CaptureSource: Send + Sync {
    /// The current status.
    fn status(&self) -> CaptureStatus;
    /// Evicts every flow now instead of at the next active timeout.
    fn flush(&self);
    /// The filter rules in force.
    fn filters(&self) -> Vec<FilterRule>;
    /// Replaces the filter rules at run time (no program is reloaded). The error names the
    /// bad rule; on error the rules in force stay.
    fn set_filters(&self, rules: Vec<FilterRule>) -> Result<(), String>;
    /// Sets 1-in-N packet sampling on live traffic (0 or 1: every packet).
    fn set_sampling(&self, one_in: u32) -> Result<(), String>;
    /// The link speed of an attached interface in bits/s, when its driver reports one.
    fn link_speed(&self, netns: &str, name: &str) -> Option<u64> {
        self.status()
            .interfaces
            .into_iter()
            .find(|i| i.netns == netns && i.name == name)
            .and_then(|i| i.speed_bps)
    }
}

/// What a filter rule does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    #[default]
    Accept,
    Reject,
    /// Decides nothing about keeping: the first `sample` rule a packet matches sets its 1-in-N
    /// (`sampling=N`; 0 or 1: no more than the agent's), and the other rules then decide as if
    /// it were not there. A packet kept is sampled at the higher of that and what the deciding
    /// rule (or the agent) says, so a `sample` rule only ever samples more; a `sample` rule
    /// without `sampling` before others exempts what it matches from them.
    Sample,
}

/// Which packets a rule looks at, by direction on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FilterDirection {
    #[default]
    Any,
    Ingress,
    Egress,
}

/// One in-kernel filter rule. Rules are tried in order and the first accept or reject rule that
/// matches decides; when rules exist and none matches, a packet is kept only if no rule accepts
/// (that is, a list of accept rules is an allow-list, a list of reject rules a deny-list).
/// `sample` rules never decide: see [`FilterAction::Sample`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FilterRule {
    pub action: FilterAction,
    /// Matches when either address is in this network (`10.0.0.0/8`, `2001:db8::/32`, or an
    /// address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// With `cidr`: the other address must be in this network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_cidr: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` or a protocol number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// A port or an inclusive range `8000-9000`, matched against either port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    pub direction: FilterDirection,
    /// TCP flags, any of which must be in the packet: `SYN`, `SYN,RST`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    /// Matches dropped packets only (the drop tracepoint), never packets at TC.
    pub drops_only: bool,
    /// 1-in-N sampling for what the rule accepts; 0 = the agent's sampling.
    pub sampling: u32,
}

/// A filter rule checked and turned into numbers, ready for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompiledRule {
    /// Network and mask, IPv4 as IPv4-mapped IPv6; an all-zero mask matches any address.
    pub cidr: ([u8; 16], [u8; 16]),
    pub peer: ([u8; 16], [u8; 16]),
    pub port_min: u16,
    pub port_max: u16,
    pub tcp_flags: u16,
    pub proto: u8,
    /// 0 any, 1 ingress, 2 egress.
    pub direction: u8,
    pub action: FilterAction,
    pub drops_only: bool,
    pub sampling: u32,
}

/// Most rules the kernel holds.
pub const MAX_FILTER_RULES: usize = 16;

fn parse_cidr(text: &str) -> Result<([u8; 16], [u8; 16]), String> {
    let (net, bits) = crate::schema::parse_network(text)?;
    Ok((
        net.to_be_bytes(),
        crate::schema::prefix_mask(bits).to_be_bytes(),
    ))
}

fn parse_proto(text: &str) -> Result<u8, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" => Ok(58),
        "sctp" => Ok(132),
        n => n.parse::<u8>().ok().filter(|p| *p > 0).ok_or_else(|| {
            format!("unknown protocol `{text}` (tcp, udp, icmp, icmpv6, sctp or 1-255)")
        }),
    }
}

fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))
    };
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if a > b {
        return Err(format!("port range `{text}` is reversed"));
    }
    Ok((a, b))
}

impl FilterRule {
    /// Checks the rule and turns it into numbers; the error names the bad part.
    pub fn compile(&self) -> Result<CompiledRule, String> {
        let mut c = CompiledRule {
            action: self.action,
            drops_only: self.drops_only,
            sampling: self.sampling,
            direction: match self.direction {
                FilterDirection::Any => 0,
                FilterDirection::Ingress => 1,
                FilterDirection::Egress => 2,
            },
            ..Default::default()
        };
        if let Some(t) = &self.cidr {
            c.cidr = parse_cidr(t).map_err(|e| format!("cidr: {e}"))?;
        }
        if let Some(t) = &self.peer_cidr {
            c.peer = parse_cidr(t).map_err(|e| format!("peer_cidr: {e}"))?;
        }
        if let Some(t) = &self.proto {
            c.proto = parse_proto(t).map_err(|e| format!("proto: {e}"))?;
        }
        if let Some(t) = &self.ports {
            (c.port_min, c.port_max) = parse_ports(t).map_err(|e| format!("ports: {e}"))?;
        }
        if let Some(t) = &self.tcp_flags {
            for name in t.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                c.tcp_flags |= crate::flow::flag_bit(name).ok_or_else(|| {
                    format!("tcp_flags: unknown flag `{name}` (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS, OPEN)")
                })?;
            }
            if c.tcp_flags == 0 {
                return Err("tcp_flags: empty".into());
            }
        }
        if self.sampling == 1 {
            c.sampling = 0;
        }
        Ok(c)
    }

    /// Parses the command-line form: an action then `key=value` words, e.g.
    /// `accept cidr=10.0.0.0/8 proto=tcp ports=80-90 direction=ingress tcp_flags=SYN sampling=10`
    /// or `reject ports=22`, `accept drops_only`.
    pub fn parse(text: &str) -> Result<FilterRule, String> {
        let mut words = text.split_whitespace();
        let mut r = FilterRule {
            action: match words.next() {
                Some(w) if w.eq_ignore_ascii_case("accept") => FilterAction::Accept,
                Some(w) if w.eq_ignore_ascii_case("reject") => FilterAction::Reject,
                Some(w) if w.eq_ignore_ascii_case("sample") => FilterAction::Sample,
                Some(w) => {
                    return Err(format!(
                        "`{w}`: a rule starts with accept, reject or sample"
                    ));
                }
                None => {
                    return Err("empty rule: a rule starts with accept, reject or sample".into());
                }
            },
            ..Default::default()
        };
        for w in words {
            let (k, v) = match w.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase().replace('-', "_"), v.to_string()),
                None => (w.to_ascii_lowercase().replace('-', "_"), String::new()),
            };
            match k.as_str() {
                "cidr" => r.cidr = Some(v),
                "peer_cidr" | "peer" => r.peer_cidr = Some(v),
                "proto" => r.proto = Some(v),
                "ports" | "port" => r.ports = Some(v),
                "tcp_flags" | "flags" => r.tcp_flags = Some(v),
                "direction" => {
                    r.direction = match v.to_ascii_lowercase().as_str() {
                        "ingress" => FilterDirection::Ingress,
                        "egress" => FilterDirection::Egress,
                        "any" => FilterDirection::Any,
                        _ => return Err(format!("direction `{v}`: ingress, egress or any")),
                    }
                }
                "drops_only" | "drops" => r.drops_only = true,
                "sampling" => {
                    r.sampling = v
                        .parse()
                        .map_err(|_| format!("sampling `{v}` is not a whole number"))?
                }
                _ => {
                    return Err(format!(
                        "unknown rule key `{k}` (cidr, peer_cidr, proto, ports, direction, tcp_flags, drops_only, sampling)"
                    ));
                }
            }
        }
        r.compile()?;
        Ok(r)
    }
}

impl FilterRule {
    /// The command-line form [`FilterRule::parse`] reads back.
    pub fn text(&self) -> String {
        let mut w = vec![match self.action {
            FilterAction::Accept => "accept".to_string(),
            FilterAction::Reject => "reject".to_string(),
            FilterAction::Sample => "sample".to_string(),
        }];
        let pairs = [
            ("cidr", &self.cidr),
            ("peer_cidr", &self.peer_cidr),
            ("proto", &self.proto),
            ("ports", &self.ports),
            ("tcp_flags", &self.tcp_flags),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                w.push(format!("{k}={v}"));
            }
        }
        match self.direction {
            FilterDirection::Any => {}
            FilterDirection::Ingress => w.push("direction=ingress".into()),
            FilterDirection::Egress => w.push("direction=egress".into()),
        }
        if self.drops_only {
            w.push("drops_only".into());
        }
        if self.sampling != 0 {
            w.push(format!("sampling={}", self.sampling));
        }
        w.join(" ")
    }
}

/// Checks a whole rule list; errors name the rule (1-based) and the part.
pub fn compile_rules(rules: &[FilterRule]) -> Result<Vec<CompiledRule>, String> {
    if rules.len() > MAX_FILTER_RULES {
        return Err(format!(
            "{} rules given; the kernel holds at most {MAX_FILTER_RULES}",
            rules.len()
        ));
    }
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| r.compile().map_err(|e| format!("rule {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_print_as_they_parse() {
        for text in [
            "accept cidr=10.1.0.0/16 peer_cidr=10.2.0.1 proto=tcp ports=80-90 tcp_flags=SYN direction=ingress sampling=10",
            "reject ports=22",
            "accept drops_only",
            "sample proto=udp ports=5201 sampling=8",
            "sample proto=tcp ports=5201 tcp_flags=SYN,RST",
        ] {
            let r = FilterRule::parse(text).unwrap();
            assert_eq!(FilterRule::parse(&r.text()).unwrap(), r, "{text}");
        }
    }

    #[test]
    fn parses_and_compiles_rules() {
        let r = FilterRule::parse(
            "accept cidr=10.1.0.0/16 peer=10.2.0.1 proto=tcp ports=80-90 direction=ingress flags=SYN,ACK sampling=10",
        )
        .unwrap();
        let c = r.compile().unwrap();
        assert_eq!(c.proto, 6);
        assert_eq!((c.port_min, c.port_max), (80, 90));
        assert_eq!(c.direction, 1);
        assert_eq!(c.tcp_flags, 0x12);
        assert_eq!(c.sampling, 10);
        assert_eq!(&c.cidr.0[12..], &[10, 1, 0, 0]);
        assert_eq!(
            &c.cidr.1[..],
            &[0xff; 14]
                .iter()
                .chain(&[0, 0])
                .copied()
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(c.peer.1, [0xff; 16]);
        let v6 = parse_cidr("2001:db8::1/33").unwrap();
        assert_eq!(v6.1[4], 0x80);
        assert_eq!(v6.0[4], 0);
        let d = FilterRule::parse("reject drops_only")
            .unwrap()
            .compile()
            .unwrap();
        assert!(d.action == FilterAction::Reject && d.drops_only);
    }

    #[test]
    fn bad_rules_name_the_part() {
        let e = |t: &str| FilterRule::parse(t).unwrap_err();
        assert!(e("allow").contains("accept, reject or sample"));
        assert!(e("accept cidr=10.0.0.0/40").contains("cidr: prefix /40"));
        assert!(e("accept cidr=banana").contains("not an IP"));
        assert!(e("accept ports=90-80").contains("reversed"));
        assert!(e("accept proto=foo").contains("unknown protocol"));
        assert!(e("accept flags=SYNN").contains("unknown flag"));
        assert!(e("accept colour=red").contains("unknown rule key"));
        let many = vec![FilterRule::default(); 17];
        assert!(compile_rules(&many).unwrap_err().contains("at most 16"));
        let rules = vec![
            FilterRule::default(),
            FilterRule {
                ports: Some("0".into()),
                ..Default::default()
            },
        ];
        assert!(
            compile_rules(&rules)
                .unwrap_err()
                .starts_with("rule 2: ports")
        );
    }
}
