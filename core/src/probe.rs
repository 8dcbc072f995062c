//! Probes: a real connection attempt from a network namespace to an address and port, to see
//! whether traffic gets through (a policy says it should; does it?). Core defines the target,
//! the outcome and the port; the kernel adapter (`ebpf/`) enters namespaces and connects.

use std::net::IpAddr;
use std::time::Duration;

/// Transport of a probe: TCP (the handshake completes), UDP (an answer comes back) or SCTP
/// (the association is set up; only where the kernel has SCTP, see [`Prober::supports`]).
pub use crate::policy::Protocol;

/// What to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Network namespace to connect from: a name under /var/run/netns, or "" for the agent's
    /// own.
    pub netns: String,
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub timeout: Duration,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// TCP: the handshake completed; SCTP: the association was set up.
    Connected,
    /// UDP: a datagram came back.
    Answered,
    /// TCP reset, or ICMP port unreachable for UDP: the host is there, nothing listens (or a
    /// reject rule answered like it).
    Refused,
    /// ICMP host/network unreachable or administratively prohibited, with the system's words.
    Unreachable(String),
    /// TCP: no answer within the timeout (a drop rule, or nothing there).
    TimedOut,
    /// UDP: no answer within the timeout (open and silent, or dropped: UDP cannot tell).
    NoAnswer,
}

impl Outcome {
    /// The outcome's name (`connected`, `refused`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::Answered => "answered",
            Outcome::Refused => "refused",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::TimedOut => "timed-out",
            Outcome::NoAnswer => "no-answer",
        }
    }
}

/// A probe that could not be made (as opposed to one whose answer was "no").
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("network namespace {netns}: {source}")]
    Netns {
        netns: String,
        source: std::io::Error,
    },
    #[error("probe socket: {0}")]
    Socket(std::io::Error),
    /// The prober cannot make this kind of probe here (a kernel without SCTP).
    #[error("{protocol} probes cannot be made here: {reason}")]
    Unsupported {
        protocol: &'static str,
        reason: String,
    },
}

/// Makes probes.
pub trait Prober: Send + Sync {
    /// Tries `target` once and says what happened, within `target.timeout` (plus the time to
    /// enter the namespace).
    fn probe(&self, target: &Target) -> Result<(Outcome, Duration), ProbeError>;

    /// Whether probes of `protocol` can be made at all (SCTP needs the kernel's `sctp`
    /// module); asked once before probing many cells of it.
    fn supports(&self, _protocol: Protocol) -> Result<(), ProbeError> {
        Ok(())
    }

    /// The named network namespace (under /var/run/netns) holding `addr` on one of its
    /// interfaces, where a pod with that address runs on this node; `None` when no namespace
    /// has it (or the prober cannot tell).
    fn locate(&self, _addr: IpAddr) -> Option<String> {
        None
    }
}

/// One entry of a probe scope: where probes may start (`from:NETNS`, `from:host` for the
/// agent's own namespace, `from:*`) or go (`to:CIDR`, `to:*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeEntry {
    From(Option<String>),
    To(Option<(u128, u32)>),
}

impl ScopeEntry {
    pub fn parse(entry: &str) -> Result<ScopeEntry, String> {
        let bad = |why: String| {
            Err(format!(
                "scope entry {:?}: {why} (write from:NETNS, from:host, from:*, to:CIDR or to:*)",
                entry.chars().take(100).collect::<String>()
            ))
        };
        if let Some(ns) = entry.strip_prefix("from:") {
            return match ns {
                "*" => Ok(ScopeEntry::From(None)),
                "host" => Ok(ScopeEntry::From(Some(String::new()))),
                n if valid_netns(n) => Ok(ScopeEntry::From(Some(n.to_string()))),
                _ => bad("not a network namespace name".into()),
            };
        }
        if let Some(net) = entry.strip_prefix("to:") {
            return match net {
                "*" => Ok(ScopeEntry::To(None)),
                n => match crate::schema::parse_network(n) {
                    Ok(net) => Ok(ScopeEntry::To(Some(net))),
                    Err(e) => bad(e),
                },
            };
        }
        bad("neither from: nor to:".into())
    }
}

/// A namespace name as `ip netns` makes them: no path, no dots only.
pub fn valid_netns(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether a probe scope lets `target` through: its namespace in one `from:` entry and its
/// address in one `to:` entry. The refusal names the scope.
pub fn allowed(scope: &[String], netns: &str, addr: &IpAddr) -> Result<(), String> {
    let entries: Vec<ScopeEntry> = scope
        .iter()
        .filter_map(|e| ScopeEntry::parse(e).ok())
        .collect();
    let from = entries.iter().any(|e| match e {
        ScopeEntry::From(None) => true,
        ScopeEntry::From(Some(n)) => n == netns,
        _ => false,
    });
    let ip = u128::from(crate::schema::index_ip(addr));
    let to = entries.iter().any(|e| match e {
        ScopeEntry::To(None) => true,
        ScopeEntry::To(Some((net, bits))) => ip & crate::schema::prefix_mask(*bits) == *net,
        _ => false,
    });
    if from && to {
        return Ok(());
    }
    let granted = if scope.is_empty() {
        "none".to_string()
    } else {
        scope.join(", ")
    };
    let what = if from {
        format!("address {addr}")
    } else if netns.is_empty() {
        "the agent's own namespace (from:host)".to_string()
    } else {
        format!("namespace {netns}")
    };
    Err(format!(
        "probe: {what} is outside this plugin's scope (granted: {granted})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_bound_where_probes_start_and_go() {
        let scope: Vec<String> = ["from:client-ns", "to:198.18.0.0/15", "to:2001:db8::/32"]
            .map(String::from)
            .to_vec();
        let a: IpAddr = "198.18.3.4".parse().unwrap();
        assert!(allowed(&scope, "client-ns", &a).is_ok());
        assert!(allowed(&scope, "client-ns", &"2001:db8::1".parse().unwrap()).is_ok());
        let e = allowed(&scope, "client-ns", &"10.0.0.1".parse().unwrap()).unwrap_err();
        assert!(e.contains("address 10.0.0.1 is outside"), "{e}");
        let e = allowed(&scope, "", &a).unwrap_err();
        assert!(e.contains("agent's own namespace (from:host)"), "{e}");
        assert!(allowed(&["from:host".into(), "to:*".into()], "", &a).is_ok());
        assert!(
            allowed(&["from:*".into()], "x", &a).is_err(),
            "no to: entry"
        );
        for bad in [
            "from:../etc",
            "from:",
            "to:10.0.0.0/33",
            "to:",
            "x",
            "from:a/b",
        ] {
            assert!(ScopeEntry::parse(bad).is_err(), "{bad}");
        }
    }
}
