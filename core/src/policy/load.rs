//! Kubernetes objects from files (YAML or JSON; several documents separated by `---`; `List`
//! objects such as `kubectl get -o yaml` prints, flattened) or from the live objects the
//! watcher keeps, each with the place it came from so every later error can name it.

use super::{PolicyError, Problem};
use crate::objects::{ObjectSource, Selector};
use serde_json::Value;

/// Where an object came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// A file path, or `live` for the watcher's objects.
    pub file: String,
    /// The line its document starts on (1-based; 0 when not from a file).
    pub line: usize,
    /// Its position in a `List`'s `items`.
    pub item: Option<usize>,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(i) = self.item {
            write!(f, " (items[{i}])")?;
        }
        Ok(())
    }
}

/// Objects and where each came from (same order), plus the documents that could not be read.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub items: Vec<Value>,
    pub sources: Vec<Source>,
    pub problems: Vec<Problem>,
}

/// `Kind ns/name` (or `Kind name`) of an object, for messages.
pub fn identity(o: &Value) -> String {
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(no name)");
    match o.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Splits a YAML stream into documents with the line each starts on (1-based).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = vec![];
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            if !cur.trim().is_empty() {
                docs.push((start, std::mem::take(&mut cur)));
            }
            cur.clear();
            start = i + 2;
            continue;
        }
        if cur.is_empty() && t.trim().is_empty() {
            start = i + 2;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    if !cur.trim().is_empty() {
        docs.push((start, cur));
    }
    docs
}

impl Objects {
    /// Adds the objects of one file's text. A document that does not parse is a problem naming
    /// the file, line and column; the other documents are still read.
    pub fn add_text(&mut self, file: &str, text: &str) {
        for (start, doc) in documents(text) {
            let value: Value = match serde_yaml::from_str(&doc) {
                Ok(v) => v,
                Err(e) => {
                    let (line, col) = e
                        .location()
                        .map(|l| (start + l.line() - 1, l.column()))
                        .unwrap_or((start, 0));
                    let msg = e.to_string();
                    // serde_yaml appends " at line N column M" relative to the document.
                    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                    self.problems.push(Problem {
                        place: format!("{file}:{line}:{col}"),
                        object: "document".into(),
                        field: String::new(),
                        message: format!("invalid YAML: {msg}"),
                    });
                    continue;
                }
            };
            self.add_value(file, start, value);
        }
    }

    fn add_value(&mut self, file: &str, line: usize, value: Value) {
        let place = || Source {
            file: file.to_string(),
            line,
            item: None,
        };
        match &value {
            Value::Null => {}
            Value::Object(m) => {
                let kind = m.get("kind").and_then(Value::as_str).unwrap_or("");
                if kind == "List" || (kind.ends_with("List") && m.contains_key("items")) {
                    match m.get("items") {
                        Some(Value::Array(items)) => {
                            for (i, it) in items.iter().enumerate() {
                                let mut o = it.clone();
                                // `kubectl get networkpolicies -o yaml` items carry their kind;
                                // a typed list's items may not.
                                if o.get("kind").is_none()
                                    && kind != "List"
                                    && let Some(obj) = o.as_object_mut()
                                {
                                    obj.insert(
                                        "kind".into(),
                                        Value::from(kind.trim_end_matches("List")),
                                    );
                                }
                                self.items.push(o);
                                self.sources.push(Source {
                                    file: file.to_string(),
                                    line,
                                    item: Some(i),
                                });
                            }
                        }
                        Some(Value::Null) | None => {}
                        Some(_) => self.problems.push(Problem {
                            place: place().to_string(),
                            object: kind.to_string(),
                            field: "items".into(),
                            message: "must be a list".into(),
                        }),
                    }
                } else {
                    self.items.push(value);
                    self.sources.push(place());
                }
            }
            // A JSON array of objects (what `weir policy` itself accepts on stdin).
            Value::Array(a) => {
                for (i, o) in a.iter().enumerate() {
                    self.items.push(o.clone());
                    self.sources.push(Source {
                        file: file.to_string(),
                        line,
                        item: Some(i),
                    });
                }
            }
            _ => self.problems.push(Problem {
                place: place().to_string(),
                object: "document".into(),
                field: String::new(),
                message: "not a Kubernetes object (expected a map with kind)".into(),
            }),
        }
    }

    /// Reads files (`-` is standard input). A file that cannot be read is an error.
    pub fn from_files(paths: &[String]) -> Result<Objects, PolicyError> {
        let mut o = Objects::default();
        for p in paths {
            let text = if p == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| PolicyError::File(format!("standard input: {e}")))?;
                s
            } else {
                std::fs::read_to_string(p).map_err(|e| PolicyError::File(format!("{p}: {e}")))?
            };
            o.add_text(if p == "-" { "stdin" } else { p }, &text);
        }
        Ok(o)
    }

    /// Appends another set (a cluster file set and a policy file set become one request).
    pub fn extend(&mut self, other: Objects) {
        self.items.extend(other.items);
        self.sources.extend(other.sources);
        self.problems.extend(other.problems);
    }

    /// Drops every policy object (NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy):
    /// the cluster without its policies, to evaluate a proposed set instead.
    pub fn without_policies(&self) -> Objects {
        let keep: Vec<bool> = self
            .items
            .iter()
            .map(|o| !is_policy(o.get("kind").and_then(Value::as_str).unwrap_or("")))
            .collect();
        Objects {
            items: self
                .items
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(o, _)| o.clone())
                .collect(),
            sources: self
                .sources
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(s, _)| s.clone())
                .collect(),
            problems: self.problems.clone(),
        }
    }

    /// Pods as `(ns/name, first address)`, in the order the engine sorts them.
    pub fn pod_addresses(&self) -> Vec<(String, Option<std::net::IpAddr>)> {
        let mut out: Vec<(String, Option<std::net::IpAddr>)> = self
            .items
            .iter()
            .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Pod"))
            .map(|o| {
                let ns = o
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let name = o
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let ip = o
                    .pointer("/status/podIP")
                    .and_then(Value::as_str)
                    .or_else(|| o.pointer("/status/podIPs/0/ip").and_then(Value::as_str))
                    .and_then(|s| s.parse().ok());
                (format!("{ns}/{name}"), ip)
            })
            .collect();
        out.sort();
        out
    }

    /// The live objects of the kinds policies need (Namespaces, Pods, the three policy kinds)
    /// from the watcher. Kinds it does not watch are left out.
    pub fn from_live(source: &dyn ObjectSource) -> Objects {
        let mut o = Objects::default();
        let watched = source.kinds();
        for kind in [
            "Namespace",
            "Pod",
            "NetworkPolicy",
            "AdminNetworkPolicy",
            "BaselineAdminNetworkPolicy",
        ] {
            if !watched.iter().any(|k| k == kind) {
                continue;
            }
            let Ok(list) = source.list(kind, None, &Selector::default()) else {
                continue;
            };
            for obj in list {
                match serde_json::from_str::<Value>(&obj.json) {
                    Ok(mut v) => {
                        if v.get("kind").is_none()
                            && let Some(m) = v.as_object_mut()
                        {
                            m.insert("kind".into(), Value::from(kind));
                        }
                        o.items.push(v);
                        o.sources.push(Source {
                            file: "live".into(),
                            line: 0,
                            item: None,
                        });
                    }
                    Err(e) => o.problems.push(Problem {
                        place: "live".into(),
                        object: format!("{kind} {}/{}", obj.namespace, obj.name),
                        field: String::new(),
                        message: format!("stored JSON: {e}"),
                    }),
                }
            }
        }
        o
    }
}

/// Whether a kind is one of the policy kinds.
pub fn is_policy(kind: &str) -> bool {
    matches!(
        kind,
        "NetworkPolicy" | "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy"
    )
}
