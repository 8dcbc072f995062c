//! The cluster and its policies, read from Kubernetes objects (JSON, as the API server sends
//! them). Every object that cannot be read is a [`Problem`] naming the object (by its index in
//! the input) and the field; the other objects are still read.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries (the API server sets it).
pub const NS_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Something wrong with one input object.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Index of the object in the input.
    pub object: usize,
    /// The field, as a path (`spec.ingress[0].from[1].ipBlock.cidr`); empty for the whole object.
    pub field: String,
    pub message: String,
}

type Res<T> = Result<T, (String, String)>;

fn bad<T>(field: &str, message: impl Into<String>) -> Res<T> {
    Err((field.to_string(), message.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    fn field(v: Option<&Value>, path: &str) -> Res<Proto> {
        match v {
            None | Some(Value::Null) => Ok(Proto::Tcp),
            Some(Value::String(s)) => Proto::parse(s).map_or_else(
                || bad(path, format!("protocol {s:?} is not TCP, UDP or SCTP")),
                Ok,
            ),
            Some(_) => bad(path, "protocol must be a string"),
        }
    }
}

/// An address block (IPv4 kept as IPv4-mapped IPv6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cidr {
    net: u128,
    len: u8,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (address/length)"))?;
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR: {addr:?} is not an address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?} is not a CIDR: prefix length must be 0 to {max}"))?;
        let len = if ip.is_ipv4() { len + 96 } else { len };
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        Ok(Cidr {
            net: to_u128(ip) & mask,
            len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u128::MAX << (128 - self.len)
        };
        to_u128(ip) & mask == self.net
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.net);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.len >= 96 => write!(f, "{v4}/{}", self.len - 96),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A Kubernetes label selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector {
    pub labels: Vec<(String, String)>,
    pub exprs: Vec<Expr>,
}

impl Selector {
    pub fn matches(&self, l: &Labels) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| l.get(k).is_some_and(|x| x == v))
            && self.exprs.iter().all(|e| match e {
                Expr::In(k, vs) => l.get(k).is_some_and(|x| vs.contains(x)),
                Expr::NotIn(k, vs) => l.get(k).is_none_or(|x| !vs.contains(x)),
                Expr::Exists(k) => l.contains_key(k),
                Expr::DoesNotExist(k) => !l.contains_key(k),
            })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.exprs.is_empty()
    }

    pub fn parse(v: &Value, path: &str) -> Res<Selector> {
        let Value::Object(m) = v else {
            if v.is_null() {
                return Ok(Selector::default());
            }
            return bad(path, "a label selector must be an object");
        };
        let mut s = Selector::default();
        for k in m.keys() {
            if k != "matchLabels" && k != "matchExpressions" {
                return bad(
                    &format!("{path}.{k}"),
                    "unknown field (a selector has matchLabels and matchExpressions)",
                );
            }
        }
        if let Some(ml) = m.get("matchLabels").filter(|v| !v.is_null()) {
            let Value::Object(ml) = ml else {
                return bad(&format!("{path}.matchLabels"), "must be a map");
            };
            for (k, v) in ml {
                let Value::String(v) = v else {
                    return bad(
                        &format!("{path}.matchLabels.{k}"),
                        "label values are strings",
                    );
                };
                s.labels.push((k.clone(), v.clone()));
            }
        }
        if let Some(me) = m.get("matchExpressions").filter(|v| !v.is_null()) {
            let Value::Array(me) = me else {
                return bad(&format!("{path}.matchExpressions"), "must be a list");
            };
            for (i, e) in me.iter().enumerate() {
                let p = format!("{path}.matchExpressions[{i}]");
                let key = str_field(e, "key", &p)?.ok_or_else(|| (p.clone(), "no key".into()))?;
                let op = str_field(e, "operator", &p)?
                    .ok_or_else(|| (p.clone(), "no operator".into()))?;
                let values: Vec<String> = match e.get("values") {
                    None | Some(Value::Null) => vec![],
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<_>>()
                        .ok_or_else(|| (format!("{p}.values"), "values are strings".into()))?,
                    Some(_) => return bad(&format!("{p}.values"), "must be a list"),
                };
                s.exprs.push(match op.as_str() {
                    "In" | "NotIn" if values.is_empty() => {
                        return bad(&format!("{p}.values"), format!("{op} needs values"));
                    }
                    "In" => Expr::In(key, values),
                    "NotIn" => Expr::NotIn(key, values),
                    "Exists" | "DoesNotExist" if !values.is_empty() => {
                        return bad(&format!("{p}.values"), format!("{op} takes no values"));
                    }
                    "Exists" => Expr::Exists(key),
                    "DoesNotExist" => Expr::DoesNotExist(key),
                    _ => {
                        return bad(
                            &format!("{p}.operator"),
                            format!("operator {op:?} is not In, NotIn, Exists or DoesNotExist"),
                        );
                    }
                });
            }
        }
        Ok(s)
    }
}

fn str_field(v: &Value, key: &str, path: &str) -> Res<Option<String>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => bad(&format!("{path}.{key}"), "must be a string"),
    }
}

fn list<'a>(v: &'a Value, key: &str, path: &str) -> Res<Option<&'a Vec<Value>>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => bad(&format!("{path}.{key}"), "must be a list"),
    }
}

fn labels_of(v: &Value, path: &str) -> Res<Labels> {
    match v.pointer("/metadata/labels") {
        None | Some(Value::Null) => Ok(Labels::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => bad(
                    &format!("{path}metadata.labels.{k}"),
                    "label values are strings",
                ),
            })
            .collect(),
        Some(_) => bad(&format!("{path}metadata.labels"), "must be a map"),
    }
}

fn port_number(v: &Value, path: &str) -> Res<u16> {
    v.as_u64()
        .filter(|p| (1..=65535).contains(p))
        .map(|p| p as u16)
        .map_or_else(|| bad(path, format!("{v} is not a port (1-65535)")), Ok)
}

/// A container port a pod declares.
#[derive(Debug, Clone, PartialEq)]
pub struct CPort {
    pub name: String,
    pub port: u16,
    pub proto: Proto,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub ns: String,
    pub name: String,
    /// Its workload: the owner (a ReplicaSet shown as its Deployment), else its own name.
    pub workload: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<CPort>,
}

/// `port` of a NetworkPolicy port entry.
#[derive(Debug, Clone, PartialEq)]
pub enum PortRef {
    Num(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    pub proto: Proto,
    pub port: Option<PortRef>,
    pub end: Option<u16>,
}

/// One peer of a NetworkPolicy rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    /// `None` namespaces: the policy's own; `None` pods: every pod.
    Pods {
        ns: Option<Selector>,
        pods: Option<Selector>,
    },
    Block {
        cidr: Cidr,
        except: Vec<Cidr>,
    },
}

/// One ingress or egress rule: empty `peers` or `ports` means any.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PortSpec>,
    /// Numbering over every rule of the cluster (precomputed peer sets).
    pub slot: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetPol {
    pub ns: String,
    pub name: String,
    pub selector: Selector,
    /// `None`: the policy does not affect that direction; `Some(empty)`: it denies it all.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Pass,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        }
    }
}

/// The pods an (Baseline)AdminNetworkPolicy applies to, or one of its peers.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Namespaces(Selector),
    Pods {
        ns: Selector,
        pods: Selector,
    },
    Networks(Vec<Cidr>),
    /// `nodes` peers: weir's cluster model has no nodes, so they match nothing.
    Nodes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum APort {
    Num(Proto, u16),
    Named(String),
    Range(Proto, u16, u16),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ARule {
    pub name: String,
    pub action: Action,
    pub peers: Vec<Subject>,
    /// `None`: every port.
    pub ports: Option<Vec<APort>>,
    pub slot: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub name: String,
    pub baseline: bool,
    pub priority: i64,
    pub subject: Subject,
    pub ingress: Vec<ARule>,
    pub egress: Vec<ARule>,
}

impl Admin {
    pub fn label(&self) -> String {
        if self.baseline {
            format!("BaselineAdminNetworkPolicy {}", self.name)
        } else {
            format!(
                "AdminNetworkPolicy {} (priority {})",
                self.name, self.priority
            )
        }
    }
}

/// A named port one rule uses, and where.
#[derive(Debug, Clone)]
struct NamedRef {
    object: usize,
    field: String,
    name: String,
    /// The protocol a NetworkPolicy port gives (an admin `namedPort` takes the container's).
    proto: Option<Proto>,
}

/// Everything read from the input objects.
#[derive(Debug, Default)]
pub struct Cluster {
    /// Namespace labels (with `kubernetes.io/metadata.name`), for namespaces given or used.
    pub namespaces: BTreeMap<String, Labels>,
    /// Sorted by namespace and name.
    pub pods: Vec<Pod>,
    pub netpols: Vec<NetPol>,
    /// AdminNetworkPolicies by priority (then name).
    pub admins: Vec<Admin>,
    pub baseline: Option<Admin>,
    pub problems: Vec<Problem>,
    /// Objects that were read but most likely do not say what their author meant (a named
    /// port no pod declares): reported apart, never refused.
    pub warnings: Vec<Problem>,
    /// Every named port the loaded rules use (a NetworkPolicy `port: http` in a direction
    /// its policyTypes evaluate, an admin policy's `namedPort`), checked once all pods are in.
    named: Vec<NamedRef>,
    /// Rules numbered so far (NetworkPolicy and admin rules share the numbering).
    pub slots: usize,
    /// Objects of kinds that take no part (Services, Deployments...): skipped, counted.
    pub ignored: usize,
}

impl Cluster {
    /// Reads every object; each failure is a problem, the rest is still read.
    pub fn load(objects: &[Value]) -> Cluster {
        let mut c = Cluster::default();
        for (i, o) in objects.iter().enumerate() {
            let named = c.named.len();
            match c.add(o) {
                Ok(()) => c.named[named..].iter_mut().for_each(|n| n.object = i),
                Err((field, message)) => {
                    // An object not read uses no port.
                    c.named.truncate(named);
                    c.problems.push(Problem {
                        object: i,
                        field,
                        message,
                    });
                }
            }
        }
        c.check_named_ports();
        c.pods
            .sort_by(|a, b| (&a.ns, &a.name).cmp(&(&b.ns, &b.name)));
        c.admins
            .sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        let used: Vec<String> = c.pods.iter().map(|p| p.ns.clone()).collect();
        for ns in used {
            c.namespaces
                .entry(ns.clone())
                .or_insert_with(|| Labels::from([(NS_NAME_LABEL.to_string(), ns)]));
        }
        c
    }

    /// A named port that no pod of the input declares (with that protocol) allows nothing:
    /// most likely a typo, or the pods are not there yet (scaled to zero, deployed after the
    /// policy). A warning naming the field, never a problem: the policy is valid and the
    /// verdicts stand. Input without pods (policies alone) is not checked.
    fn check_named_ports(&mut self) {
        if self.pods.is_empty() {
            return;
        }
        for n in std::mem::take(&mut self.named) {
            let declared = self.pods.iter().any(|pod| {
                pod.ports
                    .iter()
                    .any(|cp| cp.name == n.name && n.proto.is_none_or(|p| cp.proto == p))
            });
            if !declared {
                self.warnings.push(Problem {
                    object: n.object,
                    field: n.field,
                    message: format!(
                        "named port {:?}{} is declared by no pod in the input: the rule allows nothing on it until a pod declares it",
                        n.name,
                        n.proto.map(|p| format!(" ({})", p.name())).unwrap_or_default()
                    ),
                });
            }
        }
    }

    /// The labels of namespace `ns` (the automatic name label alone when not given).
    pub fn ns_labels(&self, ns: &str) -> Labels {
        self.namespaces
            .get(ns)
            .cloned()
            .unwrap_or_else(|| Labels::from([(NS_NAME_LABEL.to_string(), ns.to_string())]))
    }

    fn slot(&mut self) -> usize {
        self.slots += 1;
        self.slots - 1
    }

    fn add(&mut self, o: &Value) -> Res<()> {
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let ns = o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind.is_empty() {
            return bad("kind", "no kind");
        }
        if name.is_empty()
            && matches!(
                kind,
                "Namespace"
                    | "Pod"
                    | "NetworkPolicy"
                    | "AdminNetworkPolicy"
                    | "BaselineAdminNetworkPolicy"
            )
        {
            return bad("metadata.name", "no name");
        }
        let spec = o.get("spec").unwrap_or(&Value::Null);
        match kind {
            "Namespace" => {
                let mut l = labels_of(o, "")?;
                l.insert(NS_NAME_LABEL.into(), name.into());
                self.namespaces.insert(name.into(), l);
            }
            "Pod" => {
                let labels = labels_of(o, "")?;
                let mut ips = vec![];
                if let Some(a) = list(o.get("status").unwrap_or(&Value::Null), "podIPs", "status")?
                {
                    for (i, e) in a.iter().enumerate() {
                        let p = format!("status.podIPs[{i}].ip");
                        let s = e.get("ip").and_then(Value::as_str).unwrap_or("");
                        ips.push(
                            s.parse()
                                .map_err(|_| (p, format!("{s:?} is not an address")))?,
                        );
                    }
                }
                if let Some(s) = o.pointer("/status/podIP").and_then(Value::as_str)
                    && !s.is_empty()
                {
                    let ip: IpAddr = s.parse().map_err(|_| {
                        (
                            "status.podIP".to_string(),
                            format!("{s:?} is not an address"),
                        )
                    })?;
                    if !ips.contains(&ip) {
                        ips.insert(0, ip);
                    }
                }
                let mut ports = vec![];
                for (ci, c) in list(spec, "containers", "spec")?
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let cp = format!("spec.containers[{ci}]");
                    for (pi, p) in list(c, "ports", &cp)?.into_iter().flatten().enumerate() {
                        let pp = format!("{cp}.ports[{pi}]");
                        let port = port_number(
                            p.get("containerPort").unwrap_or(&Value::Null),
                            &format!("{pp}.containerPort"),
                        )?;
                        ports.push(CPort {
                            name: str_field(p, "name", &pp)?.unwrap_or_default(),
                            port,
                            proto: Proto::field(p.get("protocol"), &format!("{pp}.protocol"))?,
                        });
                    }
                }
                let workload = workload_of(o, &labels).unwrap_or_else(|| name.to_string());
                self.pods.push(Pod {
                    ns: ns.into(),
                    name: name.into(),
                    workload,
                    labels,
                    ips,
                    ports,
                });
            }
            "NetworkPolicy" => {
                let p = self.netpol(ns, name, spec)?;
                self.netpols.push(p);
            }
            "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" => {
                let baseline = kind.starts_with("Baseline");
                let a = self.admin(name, baseline, spec)?;
                if baseline {
                    if name != "default" {
                        return bad(
                            "metadata.name",
                            "a BaselineAdminNetworkPolicy must be named \"default\"",
                        );
                    }
                    if self.baseline.is_some() {
                        return bad(
                            "metadata.name",
                            "a second BaselineAdminNetworkPolicy \"default\" (a cluster has one)",
                        );
                    }
                    self.baseline = Some(a);
                } else {
                    self.admins.push(a);
                }
            }
            "Service" | "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Node"
            | "Endpoints" | "EndpointSlice" | "ConfigMap" | "ServiceAccount" | "Event" => {
                self.ignored += 1;
            }
            other => {
                return bad(
                    "kind",
                    format!(
                        "unknown kind {other:?} (Namespace, Pod, NetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy are evaluated)"
                    ),
                );
            }
        }
        Ok(())
    }

    fn netpol(&mut self, ns: &str, name: &str, spec: &Value) -> Res<NetPol> {
        if !spec.is_object() {
            return bad("spec", "a NetworkPolicy needs a spec");
        }
        let selector = match spec.get("podSelector") {
            None => return bad("spec.podSelector", "required (use {} for every pod)"),
            Some(v) => Selector::parse(v, "spec.podSelector")?,
        };
        let types: Vec<String> = match list(spec, "policyTypes", "spec")? {
            None => {
                let mut t = vec!["Ingress".to_string()];
                if spec.get("egress").is_some_and(|e| !e.is_null()) {
                    t.push("Egress".into());
                }
                t
            }
            Some(a) => a
                .iter()
                .enumerate()
                .map(|(i, t)| match t.as_str() {
                    Some(s @ ("Ingress" | "Egress")) => Ok(s.to_string()),
                    _ => bad(
                        &format!("spec.policyTypes[{i}]"),
                        format!("{t} is not Ingress or Egress"),
                    ),
                })
                .collect::<Res<_>>()?,
        };
        let mut named = vec![];
        let mut rules = |dir: &str, peers_key: &str| -> Res<Option<Vec<Rule>>> {
            let key = dir.to_lowercase();
            if !types.iter().any(|t| t == dir) {
                return Ok(None);
            }
            let mut out = vec![];
            for (ri, r) in list(spec, &key, "spec")?.into_iter().flatten().enumerate() {
                let rp = format!("spec.{key}[{ri}]");
                let mut peers = vec![];
                for (pi, p) in list(r, peers_key, &rp)?.into_iter().flatten().enumerate() {
                    peers.push(np_peer(p, &format!("{rp}.{peers_key}[{pi}]"))?);
                }
                let mut ports = vec![];
                for (pi, p) in list(r, "ports", &rp)?.into_iter().flatten().enumerate() {
                    let pp = format!("{rp}.ports[{pi}]");
                    let port = np_port(p, &pp)?;
                    if let Some(PortRef::Name(name)) = &port.port {
                        named.push(NamedRef {
                            object: 0,
                            field: format!("{pp}.port"),
                            name: name.clone(),
                            proto: Some(port.proto),
                        });
                    }
                    ports.push(port);
                }
                out.push(Rule {
                    peers,
                    ports,
                    slot: 0,
                });
            }
            Ok(Some(out))
        };
        let mut ingress = rules("Ingress", "from")?;
        let mut egress = rules("Egress", "to")?;
        self.named.extend(named);
        for r in ingress.iter_mut().chain(egress.iter_mut()).flatten() {
            r.slot = self.slot();
        }
        Ok(NetPol {
            ns: ns.into(),
            name: name.into(),
            selector,
            ingress,
            egress,
        })
    }

    fn admin(&mut self, name: &str, baseline: bool, spec: &Value) -> Res<Admin> {
        if !spec.is_object() {
            return bad("spec", "needs a spec");
        }
        let priority = if baseline {
            i64::MAX
        } else {
            match spec.get("priority").and_then(Value::as_i64) {
                Some(p) if (0..=1000).contains(&p) => p,
                _ => return bad("spec.priority", "required, 0 to 1000"),
            }
        };
        let subject = admin_subject(
            spec.get("subject").unwrap_or(&Value::Null),
            "spec.subject",
            false,
        )?;
        let mut named = vec![];
        let mut rules = |key: &str, peers_key: &str| -> Res<Vec<ARule>> {
            let mut out = vec![];
            for (ri, r) in list(spec, key, "spec")?.into_iter().flatten().enumerate() {
                let rp = format!("spec.{key}[{ri}]");
                let action = match r.get("action").and_then(Value::as_str) {
                    Some("Allow") => Action::Allow,
                    Some("Deny") => Action::Deny,
                    Some("Pass") if !baseline => Action::Pass,
                    other => {
                        return bad(
                            &format!("{rp}.action"),
                            format!(
                                "{} is not {}",
                                other.unwrap_or("nothing"),
                                if baseline {
                                    "Allow or Deny"
                                } else {
                                    "Allow, Deny or Pass"
                                }
                            ),
                        );
                    }
                };
                let mut peers = vec![];
                let Some(ps) = list(r, peers_key, &rp)? else {
                    return bad(&format!("{rp}.{peers_key}"), "required");
                };
                for (pi, p) in ps.iter().enumerate() {
                    peers.push(admin_subject(
                        p,
                        &format!("{rp}.{peers_key}[{pi}]"),
                        key == "egress",
                    )?);
                }
                let ports = match list(r, "ports", &rp)? {
                    None => None,
                    Some(a) => {
                        let mut ports = vec![];
                        for (pi, p) in a.iter().enumerate() {
                            let pp = format!("{rp}.ports[{pi}]");
                            let port = admin_port(p, &pp)?;
                            if let APort::Named(name) = &port {
                                named.push(NamedRef {
                                    object: 0,
                                    field: format!("{pp}.namedPort"),
                                    name: name.clone(),
                                    proto: None,
                                });
                            }
                            ports.push(port);
                        }
                        Some(ports)
                    }
                };
                out.push(ARule {
                    name: str_field(r, "name", &rp)?.unwrap_or_else(|| format!("{key}[{ri}]")),
                    action,
                    peers,
                    ports,
                    slot: 0,
                });
            }
            Ok(out)
        };
        let mut ingress = rules("ingress", "from")?;
        let mut egress = rules("egress", "to")?;
        self.named.extend(named);
        for r in ingress.iter_mut().chain(egress.iter_mut()) {
            r.slot = self.slot();
        }
        Ok(Admin {
            name: name.into(),
            baseline,
            priority,
            subject,
            ingress,
            egress,
        })
    }
}

/// The owner of a pod: a ReplicaSet of a Deployment (its `pod-template-hash` suffix) is the
/// Deployment.
fn workload_of(o: &Value, labels: &Labels) -> Option<String> {
    let owner = o.pointer("/metadata/ownerReferences/0")?;
    let kind = owner.get("kind")?.as_str()?;
    let name = owner.get("name")?.as_str()?;
    if kind == "ReplicaSet"
        && let Some(hash) = labels.get("pod-template-hash")
        && let Some(d) = name.strip_suffix(&format!("-{hash}"))
    {
        return Some(d.to_string());
    }
    Some(name.to_string())
}

fn np_peer(p: &Value, path: &str) -> Res<Peer> {
    let Value::Object(m) = p else {
        return bad(path, "a peer must be an object");
    };
    for k in m.keys() {
        if !matches!(k.as_str(), "podSelector" | "namespaceSelector" | "ipBlock") {
            return bad(&format!("{path}.{k}"), "unknown peer field");
        }
    }
    if let Some(b) = m.get("ipBlock").filter(|v| !v.is_null()) {
        if m.len() > 1 {
            return bad(
                path,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            );
        }
        let bp = format!("{path}.ipBlock");
        let cidr_s = str_field(b, "cidr", &bp)?
            .ok_or_else(|| (format!("{bp}.cidr"), "required".to_string()))?;
        let cidr = Cidr::parse(&cidr_s).map_err(|e| (format!("{bp}.cidr"), e))?;
        let mut except = vec![];
        for (i, e) in list(b, "except", &bp)?.into_iter().flatten().enumerate() {
            let ep = format!("{bp}.except[{i}]");
            let s = e
                .as_str()
                .ok_or_else(|| (ep.clone(), "must be a string".to_string()))?;
            except.push(Cidr::parse(s).map_err(|e| (ep, e))?);
        }
        return Ok(Peer::Block { cidr, except });
    }
    let sel = |k: &str| -> Res<Option<Selector>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Selector::parse(v, &format!("{path}.{k}")).map(Some),
        }
    };
    let (ns, pods) = (sel("namespaceSelector")?, sel("podSelector")?);
    if ns.is_none() && pods.is_none() {
        return bad(
            path,
            "a peer needs podSelector, namespaceSelector or ipBlock",
        );
    }
    Ok(Peer::Pods { ns, pods })
}

fn np_port(p: &Value, path: &str) -> Res<PortSpec> {
    let proto = Proto::field(p.get("protocol"), &format!("{path}.protocol"))?;
    let port = match p.get("port") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(n) => Some(PortRef::Num(port_number(
                &Value::from(n),
                &format!("{path}.port"),
            )?)),
            Err(_) if s.is_empty() => return bad(&format!("{path}.port"), "empty port name"),
            Err(_) => Some(PortRef::Name(s.clone())),
        },
        Some(v) => Some(PortRef::Num(port_number(v, &format!("{path}.port"))?)),
    };
    let end = match p.get("endPort") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let e = port_number(v, &format!("{path}.endPort"))?;
            match port {
                Some(PortRef::Num(s)) if s <= e => Some(e),
                Some(PortRef::Num(s)) => {
                    return bad(
                        &format!("{path}.endPort"),
                        format!("endPort {e} is below port {s}"),
                    );
                }
                _ => {
                    return bad(&format!("{path}.endPort"), "endPort needs a numeric port");
                }
            }
        }
    };
    Ok(PortSpec { proto, port, end })
}

fn admin_subject(v: &Value, path: &str, egress: bool) -> Res<Subject> {
    let Value::Object(m) = v else {
        return bad(path, "required: namespaces or pods");
    };
    if m.len() != 1 {
        return bad(path, "exactly one of namespaces, pods (, nodes, networks)");
    }
    let (k, inner) = m
        .iter()
        .next()
        .ok_or_else(|| (path.to_string(), "empty".to_string()))?;
    let kp = format!("{path}.{k}");
    Ok(match k.as_str() {
        "namespaces" => Subject::Namespaces(Selector::parse(inner, &kp)?),
        "pods" => Subject::Pods {
            ns: Selector::parse(
                inner.get("namespaceSelector").unwrap_or(&Value::Null),
                &format!("{kp}.namespaceSelector"),
            )?,
            pods: Selector::parse(
                inner.get("podSelector").unwrap_or(&Value::Null),
                &format!("{kp}.podSelector"),
            )?,
        },
        "networks" if egress => {
            let Value::Array(a) = inner else {
                return bad(&kp, "must be a list of CIDRs");
            };
            Subject::Networks(
                a.iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let cp = format!("{kp}[{i}]");
                        c.as_str()
                            .ok_or_else(|| (cp.clone(), "must be a string".to_string()))
                            .and_then(|s| Cidr::parse(s).map_err(|e| (cp, e)))
                    })
                    .collect::<Res<_>>()?,
            )
        }
        "nodes" if egress => Subject::Nodes,
        other => {
            return bad(
                &kp,
                format!(
                    "unknown field {other:?} (namespaces or pods{})",
                    if egress { ", nodes, networks" } else { "" }
                ),
            );
        }
    })
}

fn admin_port(p: &Value, path: &str) -> Res<APort> {
    if let Some(n) = p.get("portNumber") {
        let pp = format!("{path}.portNumber");
        return Ok(APort::Num(
            Proto::field(n.get("protocol"), &format!("{pp}.protocol"))?,
            port_number(n.get("port").unwrap_or(&Value::Null), &format!("{pp}.port"))?,
        ));
    }
    if let Some(n) = p.get("namedPort") {
        return match n.as_str() {
            Some(s) if !s.is_empty() => Ok(APort::Named(s.into())),
            _ => bad(&format!("{path}.namedPort"), "must be a port name"),
        };
    }
    if let Some(r) = p.get("portRange") {
        let rp = format!("{path}.portRange");
        let s = port_number(
            r.get("start").unwrap_or(&Value::Null),
            &format!("{rp}.start"),
        )?;
        let e = port_number(r.get("end").unwrap_or(&Value::Null), &format!("{rp}.end"))?;
        if e < s {
            return bad(&format!("{rp}.end"), format!("end {e} is below start {s}"));
        }
        return Ok(APort::Range(
            Proto::field(r.get("protocol"), &format!("{rp}.protocol"))?,
            s,
            e,
        ));
    }
    bad(path, "one of portNumber, namedPort, portRange")
}
