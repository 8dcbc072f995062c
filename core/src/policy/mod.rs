//! Network policies: the cluster and its policies read from files or the live objects, the
//! evaluator behind a port, truth tables (simulated and probed), explanations, and the
//! what-if replay of stored flows against a proposed policy set (docs/POLICY.md).
//!
//! - [`load`]: YAML or JSON files (multi-document, `List` objects) into [`Objects`], each with
//!   the file and line it came from.
//! - [`PolicyEngine`] is the port; weir-host serves it with the bundled `policy-engine` plugin
//!   in the sandbox. [`evaluate`] sends one request and maps the engine's problems and warnings (object
//!   index, field) back to files and lines.
//! - [`table`]: truth tables in the format cyclonus and the Kubernetes e2e suite print, their
//!   comparison, JUnit XML; [`probe`]: the observed table from real connections.
//! - [`whatif`]: stored conversations under the current and the proposed policies.
//! - [`observed`]: one pod's observed conversations against its policies, the allowed paths
//!   it never used, and the tightest policy allowing what it did.

pub mod load;
pub mod observed;
pub mod probe;
pub mod table;
pub mod whatif;

pub use load::{Objects, Source};

use serde_json::{Map, Value};

/// What can go wrong with policy work.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file that cannot be read or parsed (the message names file, line and column).
    #[error("{0}")]
    File(String),
    /// A request that cannot be answered (an unknown pod, a bad port...).
    #[error("{0}")]
    Invalid(String),
    /// The evaluator failed.
    #[error("policy engine: {0}")]
    Engine(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// One record the engine answered: ordered name/value pairs.
pub type Record = Vec<(String, String)>;

/// The value of `name` in a record ("" when absent).
pub fn field<'a>(r: &'a Record, name: &str) -> &'a str {
    r.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The evaluator: one JSON request (`{"op": ..., "objects": [...], ...}`, see the plugin's
/// documentation in plugins/policy-engine) in, records out.
pub trait PolicyEngine: Send + Sync {
    fn run(&self, request: &Value) -> Result<Vec<Record>, PolicyError>;
}

/// Loads the engine when it is first needed.
pub type EngineLoader = Box<dyn Fn() -> Result<Box<dyn PolicyEngine>, PolicyError> + Send + Sync>;

/// What the agent serves policies with: the engine (loaded on the first request, so an agent
/// that is never asked about policies never compiles it) and, when it watches Kubernetes, the
/// live objects (the cluster and its current policies).
pub struct PolicyService {
    loader: EngineLoader,
    engine: std::sync::Mutex<Option<std::sync::Arc<dyn PolicyEngine>>>,
    pub live: Option<std::sync::Arc<dyn crate::objects::ObjectSource>>,
}

impl PolicyService {
    pub fn new(
        loader: EngineLoader,
        live: Option<std::sync::Arc<dyn crate::objects::ObjectSource>>,
    ) -> PolicyService {
        PolicyService {
            loader,
            engine: std::sync::Mutex::new(None),
            live,
        }
    }

    /// The engine, loaded now if this is the first time (a failed load is retried next time).
    pub fn engine(&self) -> Result<std::sync::Arc<dyn PolicyEngine>, PolicyError> {
        let mut slot = self
            .engine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let e: std::sync::Arc<dyn PolicyEngine> = std::sync::Arc::from((self.loader)()?);
        *slot = Some(e.clone());
        Ok(e)
    }

    /// The live objects (empty without a watcher).
    pub fn live_objects(&self) -> Objects {
        self.live
            .as_deref()
            .map(Objects::from_live)
            .unwrap_or_default()
    }
}

/// An object the engine could not read, placed in its file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Problem {
    /// `FILE:LINE` (or the live object's kind) and the object: `Kind ns/name`.
    pub place: String,
    pub object: String,
    /// The field path, empty for the whole object.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.object)?;
        if !self.field.is_empty() {
            write!(f, ", field {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What the engine said about the input beside its answer.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Findings {
    /// Objects (or fields) that could not be read: left out of the evaluation. A command
    /// exits 2 when there are any.
    pub problems: Vec<Problem>,
    /// Objects read and evaluated that most likely do not mean what they say (a named port
    /// no pod declares): shown, never a failure.
    pub warnings: Vec<Problem>,
}

impl Findings {
    /// Adds `other`'s findings that are not already here (two evaluations of the same
    /// objects find the same things).
    pub fn merge(&mut self, other: Findings) {
        for p in other.problems {
            if !self.problems.contains(&p) {
                self.problems.push(p);
            }
        }
        for w in other.warnings {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
    }
}

/// Sends `op` with the objects and `extra` fields; returns the answer's records without the
/// problem and warning records, and those (the file's own parse errors first).
pub fn evaluate(
    engine: &dyn PolicyEngine,
    objects: &Objects,
    op: &str,
    extra: Map<String, Value>,
) -> Result<(Vec<Record>, Findings), PolicyError> {
    let mut req = extra;
    req.insert("op".into(), Value::from(op));
    req.insert("objects".into(), Value::Array(objects.items.clone()));
    let records = engine.run(&Value::Object(req))?;
    let mut found = Findings {
        problems: objects.problems.clone(),
        warnings: vec![],
    };
    let mut out = vec![];
    for r in records {
        let kind = field(&r, "kind");
        if kind == "problem" || kind == "warning" {
            let i: usize = field(&r, "object").parse().unwrap_or(usize::MAX);
            let list = if kind == "problem" {
                &mut found.problems
            } else {
                &mut found.warnings
            };
            list.push(Problem {
                place: objects
                    .sources
                    .get(i)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "input".into()),
                object: objects.items.get(i).map(load::identity).unwrap_or_default(),
                field: field(&r, "field").to_string(),
                message: field(&r, "message").to_string(),
            });
        } else {
            out.push(r);
        }
    }
    Ok((out, found))
}

/// `PORT[/PROTOCOL]` (TCP by default): `80`, `53/UDP`, `8080/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct PortProto {
    pub port: u16,
    pub protocol: Protocol,
}

/// A transport protocol policies name (and probes speak: [`crate::probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// From an IP protocol number (6, 17, 132).
    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl std::str::FromStr for PortProto {
    type Err = String;
    fn from_str(s: &str) -> Result<PortProto, String> {
        let (p, proto) = s.split_once('/').unwrap_or((s, "TCP"));
        let port = p
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{s:?}: the port must be 1 to 65535 (PORT[/TCP|UDP|SCTP])"))?;
        let protocol = match proto.trim().to_ascii_uppercase().as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => return Err(format!("{s:?}: protocol {other:?} is not TCP, UDP or SCTP")),
        };
        Ok(PortProto { port, protocol })
    }
}

impl std::fmt::Display for PortProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.name())
    }
}

/// The engine's explanation of one connection (its JSON, see the plugin).
pub fn explain(
    engine: &dyn PolicyEngine,
    objects: &Objects,
    from: &str,
    to: &str,
    port: PortProto,
) -> Result<(Value, Findings), PolicyError> {
    let mut extra = Map::new();
    extra.insert("from".into(), from.into());
    extra.insert("to".into(), to.into());
    extra.insert("port".into(), port.port.into());
    extra.insert("protocol".into(), port.protocol.name().into());
    let (records, problems) = evaluate(engine, objects, "explain", extra)?;
    let j = records
        .iter()
        .find(|r| field(r, "kind") == "explain")
        .ok_or_else(|| PolicyError::Engine("no explanation in the answer".into()))?;
    let v = serde_json::from_str(field(j, "json"))
        .map_err(|e| PolicyError::Engine(format!("explanation JSON: {e}")))?;
    Ok((v, problems))
}

/// The engine's description: every policy (what it selects, its rules' peers and ports) and
/// every pod (its workload, the policies that apply to it); with `pod`, that pod alone with
/// its effective peers (`allowed_from`, `allowed_to`, per port).
pub fn describe(
    engine: &dyn PolicyEngine,
    objects: &Objects,
    pod: Option<&str>,
) -> Result<(Value, Findings), PolicyError> {
    let mut extra = Map::new();
    if let Some(p) = pod {
        extra.insert("pod".into(), Value::from(p));
    }
    let (records, problems) = evaluate(engine, objects, "describe", extra)?;
    let mut policies = vec![];
    let mut pods = vec![];
    for r in &records {
        let v: Value = serde_json::from_str(field(r, "json"))
            .map_err(|e| PolicyError::Engine(format!("description JSON: {e}")))?;
        match field(r, "kind") {
            "policy" => policies.push(v),
            "pod" => pods.push(v),
            _ => {}
        }
    }
    Ok((
        serde_json::json!({"policies": policies, "pods": pods}),
        problems,
    ))
}

#[cfg(test)]
mod tests;
