//! Scoped grants: what a granted capability may reach. A scope is a list of entries whose
//! meaning depends on the capability (for `outbound-http`: `host:port` or `host:*`; for
//! `k8s-objects`: a Kubernetes kind such as `NetworkPolicy`, or `*`, never `Secret`; for
//! `probe`: `from:NETNS` / `from:host` / `from:*` and `to:CIDR` / `to:*`; for `capture-control`:
//! bounds, `rules=N`, `action=accept|reject|sample`, `cidr=NET`, `sampling=MIN-MAX`; for `sink`:
//! destination names the operator gave with `--sink`, or `*`). A scoped
//! capability granted with an empty scope reaches nothing; anything outside the scope is
//! refused with a message naming it.

use crate::{Capability, HostError};
use std::collections::BTreeMap;

/// The scope of each scoped capability granted (or asked for, in a manifest).
pub type Scopes = BTreeMap<Capability, Vec<String>>;

/// Most entries one scope may have.
pub const MAX_SCOPE_ENTRIES: usize = 64;

/// One `outbound-http` scope entry: a host (lowercase) and a port (None: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    /// Parses `host:port`, `host:*` or `[v6]:port`.
    pub fn parse(entry: &str) -> Result<HostPort, String> {
        let bad = |why: &str| {
            Err(format!(
                "scope entry {:?}: {why} (write host:port or host:*)",
                entry.chars().take(100).collect::<String>()
            ))
        };
        let Some((host, port)) = entry.trim().rsplit_once(':') else {
            return bad("no port");
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || host.len() > 253
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
        {
            return bad("not a host name or address");
        }
        let port = match port {
            "*" => None,
            p => match p.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => return bad("port must be 1-65535 or *"),
            },
        };
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.host == host && self.port.is_none_or(|p| p == port)
    }
}

/// Checks every entry of `scopes`: only scoped capabilities, each entry valid for its
/// capability. `origin` names where they came from in the message.
pub fn check(scopes: &Scopes, origin: &str) -> Result<(), HostError> {
    for (cap, entries) in scopes {
        if !cap.scoped() {
            return Err(HostError::Manifest(format!(
                "{origin}: capability {cap} takes no scope"
            )));
        }
        if entries.len() > MAX_SCOPE_ENTRIES {
            return Err(HostError::Manifest(format!(
                "{origin}: {} scope entries for {cap}, at most {MAX_SCOPE_ENTRIES}",
                entries.len()
            )));
        }
        for e in entries {
            let checked = match cap {
                Capability::OutboundHttp => HostPort::parse(e).map(|_| ()),
                Capability::K8sObjects => check_kind(e),
                Capability::Probe => weir_core::probe::ScopeEntry::parse(e).map(|_| ()),
                Capability::CaptureControl => weir_core::control::Bounds::check_entry(e),
                Capability::Sink => check_sink_name(e),
                _ => Ok(()),
            };
            checked.map_err(|m| HostError::Manifest(format!("{origin}: {cap}: {m}")))?;
        }
    }
    Ok(())
}

/// Whether `outbound-http` granted with `scope` may reach `host:port`; the refusal names the
/// scope.
pub fn allow_http(scope: &[String], host: &str, port: u16) -> Result<(), String> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if scope
        .iter()
        .filter_map(|e| HostPort::parse(e).ok())
        .any(|hp| hp.allows(&host, port))
    {
        return Ok(());
    }
    let granted = granted(scope);
    Err(format!(
        "outbound-http: {host}:{port} is outside this plugin's scope (granted hosts: {granted}); the operator can widen it with `weir plugin grant NAME outbound-http --scope {host}:{port}`"
    ))
}

/// One `k8s-objects` scope entry: `*` or a kind name (`NetworkPolicy`), never `Secret`.
pub fn check_kind(entry: &str) -> Result<(), String> {
    if entry == "*" {
        return Ok(());
    }
    if entry.eq_ignore_ascii_case(weir_core::objects::SECRET) {
        return Err("Secrets are never readable by plugins; the scope cannot name them".into());
    }
    let ok = entry.len() <= 63
        && entry.starts_with(|c: char| c.is_ascii_uppercase())
        && entry.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "scope entry {:?}: not a Kubernetes kind (write it as the API does: Pod, Namespace, NetworkPolicy, or *)",
            entry.chars().take(100).collect::<String>()
        ))
    }
}

/// Whether `k8s-objects` granted with `scope` may read `kind`; the refusal names the scope.
pub fn allow_kind(scope: &[String], kind: &str) -> Result<(), String> {
    if kind.eq_ignore_ascii_case(weir_core::objects::SECRET) {
        return Err("k8s-objects: kind Secret is never readable by plugins".into());
    }
    if scope.iter().any(|e| e == "*" || e == kind) {
        return Ok(());
    }
    let granted = granted(scope);
    Err(format!(
        "k8s-objects: kind {kind} is outside this plugin's scope (granted kinds: {granted}); the operator can widen it with `weir plugin grant NAME k8s-objects --scope {kind}`"
    ))
}

/// One `sink` scope entry: a destination name (`--sink NAME=...`) or `*`.
pub fn check_sink_name(entry: &str) -> Result<(), String> {
    let ok = entry == "*"
        || (!entry.is_empty()
            && entry.len() <= 64
            && entry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "scope entry {:?}: not a sink name (the NAME of a --sink NAME=URL, or *)",
            entry.chars().take(100).collect::<String>()
        ))
    }
}

/// Whether `sink` granted with `scope` may send to `name`, which the operator must have
/// named; the refusal names the scope or the destinations there are.
pub fn allow_sink(scope: &[String], name: &str, named: &[String]) -> Result<(), String> {
    if !named.iter().any(|n| n == name) {
        let there = if named.is_empty() {
            "none; the operator names them with `weir agent --sink NAME=URL`".to_string()
        } else {
            named.join(", ")
        };
        return Err(format!(
            "sink: {name:?} is not a destination the operator named (named: {there})"
        ));
    }
    if scope.iter().any(|e| e == "*" || e == name) {
        return Ok(());
    }
    Err(format!(
        "sink: {name} is outside this plugin's scope (granted sinks: {}); the operator can widen it with `weir plugin grant NAME sink --scope {name}`",
        granted(scope)
    ))
}

/// What a scope grants, for a refusal: its entries, or `none`.
fn granted(scope: &[String]) -> String {
    if scope.is_empty() {
        "none".to_string()
    } else {
        scope.join(", ")
    }
}

/// A scope as one line for people (`outbound-http: a:80, b:*`).
pub fn describe(scopes: &Scopes) -> String {
    scopes
        .iter()
        .map(|(c, e)| {
            if e.is_empty() {
                format!("{c}: (nothing)")
            } else {
                format!("{c}: {}", e.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_scoped_and_secrets_never_granted() {
        let scope = vec!["NetworkPolicy".to_string(), "Namespace".to_string()];
        assert!(allow_kind(&scope, "NetworkPolicy").is_ok());
        let e = allow_kind(&scope, "Pod").unwrap_err();
        assert!(
            e.contains("kind Pod is outside")
                && e.contains("granted kinds: NetworkPolicy, Namespace"),
            "{e}"
        );
        assert!(allow_kind(&["*".into()], "Event").is_ok());
        assert!(
            allow_kind(&["*".into()], "Secret")
                .unwrap_err()
                .contains("never")
        );
        for bad in ["Secret", "secret", "pods", "Net-Policy", ""] {
            assert!(check_kind(bad).is_err(), "{bad}");
        }
        let mut s = Scopes::new();
        s.insert(Capability::K8sObjects, vec!["Secret".into()]);
        let e = check(&s, "manifest").unwrap_err().to_string();
        assert!(e.contains("k8s-objects") && e.contains("never"), "{e}");
    }

    #[test]
    fn entries_parse_match_and_refuse_with_the_scope_named() {
        let scope = vec!["127.0.0.1:9090".to_string(), "Prom.Example:*".to_string()];
        assert!(allow_http(&scope, "127.0.0.1", 9090).is_ok());
        assert!(allow_http(&scope, "prom.example", 443).is_ok());
        let e = allow_http(&scope, "127.0.0.1", 9091).unwrap_err();
        assert!(e.contains("127.0.0.1:9091 is outside"), "{e}");
        assert!(
            e.contains("granted hosts: 127.0.0.1:9090, Prom.Example:*"),
            "{e}"
        );
        assert!(
            allow_http(&[], "a", 80)
                .unwrap_err()
                .contains("granted hosts: none")
        );
        assert!(allow_http(&["[::1]:80".into()], "[::1]", 80).is_ok());
        for bad in ["nohost", "a:0", "a:x", ":80", "a/b:80", "user@a:80"] {
            assert!(HostPort::parse(bad).is_err(), "{bad}");
        }
        let mut s = Scopes::new();
        s.insert(Capability::Kv, vec!["x".into()]);
        assert!(
            check(&s, "t")
                .unwrap_err()
                .to_string()
                .contains("kv takes no scope")
        );
        s.clear();
        s.insert(Capability::OutboundHttp, vec!["a/b:80".into()]);
        assert!(check(&s, "t").unwrap_err().to_string().contains("a/b:80"));
    }
}
