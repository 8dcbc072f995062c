//! Enrichment: who is behind an address. A source of identities (the static inventory file,
//! Kubernetes) fills the `SrcK8S_*` / `DstK8S_*` fields of flows before they are stored.
//! Fields a flow already has (an import that carries them) are left alone.

use crate::flow::Flow;
use crate::schema::{parse_network, prefix_mask};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// What is known about one address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Identity {
    /// Pod, host or service name.
    pub name: String,
    pub namespace: String,
    /// Owner workload (a Deployment's name, a service group, ...).
    pub workload: String,
    /// Kind of the owner (Deployment, StatefulSet, DaemonSet, ...).
    pub workload_kind: String,
    /// Kind of the named object (Pod, Service, Node, VM, ...).
    pub kind: String,
    pub node: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    /// Labels of its namespace (Kubernetes: the Namespace object's).
    pub namespace_labels: BTreeMap<String, String>,
}

/// Labels as `k=v` pairs, sorted, comma-separated.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

impl Identity {
    fn labels_text(&self) -> String {
        labels_text(&self.labels)
    }

    fn apply_src(&self, f: &mut Flow) {
        if !f.src_k8s_name.is_empty() || !f.src_k8s_namespace.is_empty() {
            return;
        }
        f.src_k8s_name = self.name.clone();
        f.src_k8s_namespace = self.namespace.clone();
        f.src_k8s_owner_name = self.workload.clone();
        f.src_k8s_owner_type = self.workload_kind.clone();
        f.src_k8s_type = self.kind.clone();
        f.src_k8s_host_name = self.node.clone();
        f.src_k8s_zone = self.zone.clone();
        f.src_k8s_labels = self.labels_text();
        f.src_k8s_namespace_labels = labels_text(&self.namespace_labels);
    }

    fn apply_dst(&self, f: &mut Flow) {
        if !f.dst_k8s_name.is_empty() || !f.dst_k8s_namespace.is_empty() {
            return;
        }
        f.dst_k8s_name = self.name.clone();
        f.dst_k8s_namespace = self.namespace.clone();
        f.dst_k8s_owner_name = self.workload.clone();
        f.dst_k8s_owner_type = self.workload_kind.clone();
        f.dst_k8s_type = self.kind.clone();
        f.dst_k8s_host_name = self.node.clone();
        f.dst_k8s_zone = self.zone.clone();
        f.dst_k8s_labels = self.labels_text();
        f.dst_k8s_namespace_labels = labels_text(&self.namespace_labels);
    }
}

/// Fills identity fields of flows.
pub trait Enricher: Send + Sync {
    fn enrich(&self, flows: &mut [Flow]);
    /// A line for `weir status`: what is loaded, and the last error if any.
    fn status(&self) -> serde_json::Value;
}

/// Several sources tried in order (Kubernetes, then the inventory): an identity an earlier
/// source set is kept.
pub struct Chain(pub Vec<Arc<dyn Enricher>>);

impl Enricher for Chain {
    fn enrich(&self, flows: &mut [Flow]) {
        for e in &self.0 {
            e.enrich(flows);
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::Value::Array(self.0.iter().map(|e| e.status()).collect())
    }
}

/// The agent's node name on every flow that has none (`weir agent --node`): captured flows,
/// and imported ones that did not say where they came from.
pub struct NodeName(pub String);

impl Enricher for NodeName {
    fn enrich(&self, flows: &mut [Flow]) {
        for f in flows.iter_mut().filter(|f| f.node.is_empty()) {
            f.node.clone_from(&self.0);
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "source": "node", "node": self.0 })
    }
}

/// Identities by network, longest prefix first.
#[derive(Debug, Default, Clone)]
pub struct IdentityTable {
    /// (prefix length in IPv6 bits, network masked to it) -> identity index.
    by_len: Vec<(u32, HashMap<u128, usize>)>,
    identities: Vec<Identity>,
}

fn as_u128(ip: &IpAddr) -> u128 {
    u128::from(crate::schema::index_ip(ip))
}

impl IdentityTable {
    /// Adds an identity for a network; a later entry for the same network replaces it.
    pub fn insert(&mut self, network: (u128, u32), identity: Identity) {
        let idx = self.identities.len();
        self.identities.push(identity);
        let (net, bits) = network;
        match self.by_len.iter_mut().find(|(b, _)| *b == bits) {
            Some((_, m)) => {
                m.insert(net, idx);
            }
            None => {
                self.by_len.push((bits, HashMap::from([(net, idx)])));
                self.by_len.sort_by_key(|e| std::cmp::Reverse(e.0));
            }
        }
    }

    /// The identity of the longest network holding `ip`.
    pub fn lookup(&self, ip: &IpAddr) -> Option<&Identity> {
        let a = as_u128(ip);
        self.by_len.iter().find_map(|(bits, m)| {
            m.get(&(a & prefix_mask(*bits)))
                .and_then(|i| self.identities.get(*i))
        })
    }

    pub fn len(&self) -> usize {
        self.identities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// Fills both ends of each flow.
    pub fn apply(&self, flows: &mut [Flow]) {
        if self.is_empty() {
            return;
        }
        for f in flows {
            if let Some(id) = self.lookup(&f.src_addr) {
                id.apply_src(f);
            }
            if let Some(id) = self.lookup(&f.dst_addr) {
                id.apply_dst(f);
            }
        }
    }
}

/// One entry of the inventory file: the networks, then the identity they have.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryEntry {
    #[serde(default)]
    cidrs: Vec<String>,
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    workload: String,
    #[serde(default)]
    workload_kind: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    namespace_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryDoc {
    #[serde(default)]
    host: Vec<InventoryEntry>,
}

/// Parses an inventory (TOML: `[[host]]` tables with `cidr` or `cidrs` and identity keys).
/// Errors name the line or the entry.
pub fn parse_inventory(text: &str) -> Result<IdentityTable, String> {
    let file: InventoryDoc = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut t = IdentityTable::default();
    for (i, e) in file.host.into_iter().enumerate() {
        let mut nets: Vec<String> = e.cidrs;
        nets.extend(e.cidr);
        if nets.is_empty() {
            return Err(format!("host {}: give `cidr` or `cidrs`", i + 1));
        }
        let id = Identity {
            name: e.name,
            namespace: e.namespace,
            workload: e.workload,
            workload_kind: e.workload_kind,
            kind: e.kind,
            node: e.node,
            zone: e.zone,
            labels: e.labels,
            namespace_labels: e.namespace_labels,
        };
        for n in nets {
            let net = parse_network(&n).map_err(|e| format!("host {}: cidr: {e}", i + 1))?;
            t.insert(net, id.clone());
        }
    }
    Ok(t)
}

struct Loaded {
    table: Arc<IdentityTable>,
    stamp: Option<(SystemTime, u64)>,
    error: Option<String>,
    loaded_at: Option<SystemTime>,
}

/// The static inventory file, reloaded when it changes (checked at most once a second). A
/// file that fails to parse keeps the last good inventory in force; the error is reported.
pub struct Inventory {
    path: PathBuf,
    state: RwLock<Loaded>,
    last_check: Mutex<Instant>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Inventory {
    /// Loads the file; an unreadable or malformed file at start is an error.
    pub fn open(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading inventory {}: {e}", path.display()))?;
        let table =
            parse_inventory(&text).map_err(|e| format!("inventory {}: {e}", path.display()))?;
        tracing::info!(path = %path.display(), entries = table.len(), "inventory loaded");
        Ok(Inventory {
            path: path.to_path_buf(),
            state: RwLock::new(Loaded {
                table: Arc::new(table),
                stamp: stamp(path),
                error: None,
                loaded_at: Some(SystemTime::now()),
            }),
            last_check: Mutex::new(Instant::now()),
        })
    }

    /// Reloads the file if it changed since the last look.
    pub fn reload_if_changed(&self) {
        let now_stamp = stamp(&self.path);
        let unchanged = self
            .state
            .read()
            .map(|s| s.stamp == now_stamp)
            .unwrap_or(true);
        if unchanged {
            return;
        }
        let result = std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_inventory(&t));
        let Ok(mut s) = self.state.write() else {
            return;
        };
        s.stamp = now_stamp;
        match result {
            Ok(t) => {
                tracing::info!(path = %self.path.display(), entries = t.len(), "inventory reloaded");
                s.table = Arc::new(t);
                s.error = None;
                s.loaded_at = Some(SystemTime::now());
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "inventory not reloaded, the previous one stays");
                s.error = Some(e);
            }
        }
    }

    fn table(&self) -> Arc<IdentityTable> {
        let due = match self.last_check.lock() {
            Ok(mut t) if t.elapsed() >= Duration::from_secs(1) => {
                *t = Instant::now();
                true
            }
            _ => false,
        };
        if due {
            self.reload_if_changed();
        }
        self.state
            .read()
            .map(|s| s.table.clone())
            .unwrap_or_default()
    }
}

impl Enricher for Inventory {
    fn enrich(&self, flows: &mut [Flow]) {
        self.table().apply(flows);
    }

    fn status(&self) -> serde_json::Value {
        let s = self.state.read();
        match s {
            Ok(s) => serde_json::json!({
                "source": "inventory",
                "path": self.path.display().to_string(),
                "entries": s.table.len(),
                "loaded_at_ms": s.loaded_at.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64),
                "error": s.error,
            }),
            Err(_) => serde_json::json!({ "source": "inventory", "error": "lock poisoned" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
[[host]]
cidr = "10.1.0.0/16"
name = "cluster-a"
kind = "Network"

[[host]]
cidrs = ["10.1.2.3", "2001:db8::5"]
name = "web-1"
namespace = "shop"
workload = "web"
workload_kind = "Deployment"
kind = "Pod"
node = "node-a"
zone = "eu-1a"
labels = { tier = "front", app = "web" }
"#;

    fn flow(src: &str, dst: &str) -> Flow {
        let mut f = Flow::empty();
        f.src_addr = src.parse().unwrap();
        f.dst_addr = dst.parse().unwrap();
        f
    }

    #[test]
    fn longest_prefix_wins_and_unmatched_stay_empty() {
        let t = parse_inventory(INV).unwrap();
        let mut flows = vec![
            flow("10.1.2.3", "10.1.9.9"),
            flow("2001:db8::5", "192.0.2.1"),
        ];
        t.apply(&mut flows);
        let f = &flows[0];
        assert_eq!(f.src_k8s_name, "web-1");
        assert_eq!(f.src_k8s_namespace, "shop");
        assert_eq!(f.src_k8s_owner_name, "web");
        assert_eq!(f.src_k8s_owner_type, "Deployment");
        assert_eq!(f.src_k8s_type, "Pod");
        assert_eq!(f.src_k8s_host_name, "node-a");
        assert_eq!(f.src_k8s_zone, "eu-1a");
        assert_eq!(f.src_k8s_labels, "app=web,tier=front");
        assert_eq!(f.dst_k8s_name, "cluster-a", "the /16 covers it");
        assert_eq!(flows[1].src_k8s_name, "web-1");
        assert_eq!(flows[1].dst_k8s_name, "", "192.0.2.1 matches nothing");
    }

    #[test]
    fn existing_identity_is_kept() {
        let t = parse_inventory(INV).unwrap();
        let mut f = flow("10.1.2.3", "10.1.2.3");
        f.src_k8s_name = "from-import".into();
        t.apply(std::slice::from_mut(&mut f));
        assert_eq!(f.src_k8s_name, "from-import");
        assert_eq!(f.src_k8s_namespace, "");
        assert_eq!(f.dst_k8s_name, "web-1");
    }

    #[test]
    fn bad_inventories_name_the_place() {
        let e = parse_inventory("[[host]]\ncidr = \"10.0.0.0/33\"\n").unwrap_err();
        assert!(e.contains("host 1: cidr: prefix /33"), "{e}");
        let e = parse_inventory("[[host]]\nname = \"x\"\n").unwrap_err();
        assert!(e.contains("host 1: give `cidr`"), "{e}");
        let e = parse_inventory("[[host]]\ncidr = \"10.0.0.1\"\ncolour = \"red\"\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = parse_inventory("[[host]\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn reloads_when_changed_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inv.toml");
        std::fs::write(&p, "[[host]]\ncidr = \"10.0.0.1\"\nname = \"a\"\n").unwrap();
        let inv = Inventory::open(&p).unwrap();
        let mut f = flow("10.0.0.1", "10.0.0.2");
        inv.enrich(std::slice::from_mut(&mut f));
        assert_eq!(f.src_k8s_name, "a");
        std::fs::write(&p, "[[host]]\ncidr = \"10.0.0.1\"\nname = \"bb\"\n").unwrap();
        inv.reload_if_changed();
        let mut f = flow("10.0.0.1", "10.0.0.2");
        inv.enrich(std::slice::from_mut(&mut f));
        assert_eq!(f.src_k8s_name, "bb");
        std::fs::write(&p, "[[host]]\ncidr = \"nope\"\nname = \"ccc\"\n").unwrap();
        inv.reload_if_changed();
        let mut f = flow("10.0.0.1", "10.0.0.2");
        inv.enrich(std::slice::from_mut(&mut f));
        assert_eq!(
            f.src_k8s_name, "bb",
            "a bad file keeps the last good inventory"
        );
        assert!(
            inv.status()["error"]
                .as_str()
                .unwrap()
                .contains("not an IP")
        );
    }
}
