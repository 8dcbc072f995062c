//! Cluster objects by kind (Kubernetes Pods, Namespaces, NetworkPolicies, Events...): the port
//! through which the `k8s-objects` plugin capability reads what the agent's watcher keeps.
//! Core defines the object, the label selector and the trait; the adapter in `k8s/` fills it.
//!
//! Secrets are never watched, never kept and never handed out: [`SECRET`] is refused by name
//! wherever a kind is given.

use std::collections::BTreeMap;

/// The workload behind a pod, as (name, kind), from its owner references (kind, name, whether
/// controller): the controller owner (else the first), with a ReplicaSet named
/// `<deployment>-<pod-template-hash>` shown as the Deployment. None when it has no owner.
pub fn pod_workload<'a>(
    owners: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
    template_hash: Option<&str>,
) -> Option<(String, String)> {
    let owners: Vec<(&str, &str, bool)> = owners.into_iter().collect();
    let (kind, name, _) = owners.iter().find(|o| o.2).or(owners.first()).copied()?;
    if kind == "ReplicaSet"
        && let Some(hash) = template_hash
        && let Some(dep) = name.strip_suffix(&format!("-{hash}"))
    {
        return Some((dep.to_string(), "Deployment".into()));
    }
    Some((name.to_string(), kind.to_string()))
}

/// The kind that is never readable.
pub const SECRET: &str = "Secret";

/// One object as the API server last described it.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `Pod`, `Namespace`, `NetworkPolicy`, ... (the Kubernetes kind).
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The object as JSON, without `metadata.managedFields`.
    pub json: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectsError {
    /// The kind is Secret (never readable).
    #[error("kind Secret is never readable by plugins")]
    Secret,
    /// The kind is not watched by this agent (or not served by the API server).
    #[error("kind {kind} is not watched here (watched: {watched})")]
    NotWatched { kind: String, watched: String },
    /// A label selector that does not parse.
    #[error("label selector at byte {at}: {message}")]
    Selector { at: usize, message: String },
}

/// What the agent keeps of the cluster.
pub trait ObjectSource: Send + Sync {
    /// The kinds kept and served, sorted.
    fn kinds(&self) -> Vec<String>;
    /// Whether the first full list of `kind` has arrived (a source that is always complete
    /// says yes).
    fn synced(&self, kind: &str) -> bool {
        let _ = kind;
        true
    }
    /// Objects of `kind` (in `namespace` when given) matching `selector`, sorted by namespace
    /// and name.
    fn list(
        &self,
        kind: &str,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Result<Vec<Object>, ObjectsError>;
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A Kubernetes label selector in its text form (`app=web,tier!=db,env in (a,b),!canary`):
/// every requirement must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Selector {
    /// Parses the text form; an error names the byte where it went wrong.
    pub fn parse(text: &str) -> Result<Selector, ObjectsError> {
        let mut out = Vec::new();
        let mut at = 0;
        for part in split_top(text) {
            let start = at;
            at += part.len() + 1;
            let p = part.trim();
            let err = |m: &str| {
                Err(ObjectsError::Selector {
                    at: start,
                    message: format!("{m} in {p:?}"),
                })
            };
            if p.is_empty() {
                if text.trim().is_empty() {
                    break;
                }
                return err("empty requirement");
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = p.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = split_set(p, " notin ") {
                Requirement::NotIn(k, rest)
            } else if let Some((k, rest)) = split_set(p, " in ") {
                Requirement::In(k, rest)
            } else if p.contains(['(', ')', ' ']) {
                return err(
                    "expected key=value, key!=value, key in (a,b), key notin (a,b), key or !key",
                );
            } else {
                Requirement::Exists(p.to_string())
            };
            let (key, values): (&str, Vec<&String>) = match &req {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, vec![v]),
                Requirement::In(k, vs) | Requirement::NotIn(k, vs) => (k, vs.iter().collect()),
                Requirement::Exists(k) | Requirement::NotExists(k) => (k, vec![]),
            };
            if !valid_key(key) {
                return err("not a label key");
            }
            if let Some(v) = values.iter().find(|v| !valid_value(v)) {
                return err(&format!("{v:?} is not a label value"));
            }
            out.push(req);
        }
        Ok(Selector(out))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// Splits on commas outside parentheses (label selectors; OpenFlow group headers).
pub(crate) fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `key in (a, b)` -> (key, [a, b]).
fn split_set(p: &str, op: &str) -> Option<(String, Vec<String>)> {
    let (k, rest) = p.split_once(op)?;
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>();
    (!values.is_empty()).then(|| (k.trim().to_string(), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_parse_and_match_like_kubernetes() {
        let web = labels(&[("app", "web"), ("env", "prod")]);
        let db = labels(&[("app", "db"), ("canary", "")]);
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("env in (prod, staging)", true, false),
            ("env notin (prod)", false, true),
            ("canary", false, true),
            ("!canary", true, false),
            ("app in (web,db),!canary", true, false),
            ("kubernetes.io/metadata.name=shop", false, false),
        ];
        for (text, w, d) in cases {
            let s = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((s.matches(&web), s.matches(&db)), (w, d), "{text}");
        }
        for bad in [
            "app=we b",
            "app in ()",
            "a,,b",
            "app in prod",
            "=x",
            "app=a*b",
        ] {
            let e = Selector::parse(bad).unwrap_err();
            assert!(matches!(e, ObjectsError::Selector { .. }), "{bad}: {e}");
        }
        let e = Selector::parse("app=web,env=a b").unwrap_err();
        assert!(e.to_string().starts_with("label selector at byte 8"), "{e}");
    }
}
