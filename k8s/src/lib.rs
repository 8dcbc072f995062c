//! Enrichment from Kubernetes: pods, services and nodes are watched through the API server
//! (kube-rs watchers, with backoff and re-list on errors) and mapped by IP to the fields
//! NetObserv uses (`SrcK8S_Namespace`, `DstK8S_OwnerName`, ...).
//!
//! - a pod's IPs (`status.podIPs`) -> name, namespace, kind `Pod`, owner workload (a
//!   ReplicaSet made by a Deployment is shown as the Deployment), node, the node's zone,
//!   labels; host-network pods are left to their node;
//! - a service's cluster IPs -> name, namespace, kind `Service`, owner `Service`;
//! - a node's internal and external addresses -> name, kind `Node`, zone, labels.
//!
//! Beside those, Namespaces (their labels also enrich flows: `SrcK8S_NamespaceLabels`),
//! NetworkPolicies, AdminNetworkPolicies and BaselineAdminNetworkPolicies (where the API server
//! serves them) and Events are watched. Every watched object is kept as JSON (without
//! `managedFields`) for plugins granted `k8s-objects` ([`ObjectSource`]); Secrets are never
//! watched. A kind the server does not serve (404) or does not let the agent read (403) is
//! reported in the status and not retried; pods, services and nodes always are.
//!
//! The watchers run on their own thread with a small tokio runtime; the lookup table is
//! rebuilt lazily (at most once per batch) after something changed.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event as KubeEvent, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use weir_core::Flow;
use weir_core::enrich::{Enricher, Identity, IdentityTable};
use weir_core::objects::{Object, ObjectSource, ObjectsError, SECRET, Selector};

/// Label that names a node's zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Most objects kept of one kind; beyond it new ones are counted and dropped (Events are the
/// kind that could grow this far; the API server expires them after an hour).
pub const MAX_OBJECTS_PER_KIND: usize = 50_000;

/// One watched kind: its resource (plural, the status key), its Kubernetes kind, and whether
/// a 404/403 ends its watch (optional kinds) instead of being retried.
#[derive(Debug, Clone, Copy)]
struct KindSpec {
    resource: &'static str,
    kind: &'static str,
    optional: bool,
    /// Whether it feeds the identity table (a change rebuilds it).
    identity: bool,
}

const fn spec(resource: &'static str, kind: &'static str, optional: bool) -> KindSpec {
    let r = resource.as_bytes();
    // pods, services, nodes and namespaces name flows; the rest are kept for plugins only.
    let identity = matches!(r, b"pods" | b"services" | b"nodes" | b"namespaces");
    KindSpec {
        resource,
        kind,
        optional,
        identity,
    }
}

const PODS: KindSpec = spec("pods", "Pod", false);
const SERVICES: KindSpec = spec("services", "Service", false);
const NODES: KindSpec = spec("nodes", "Node", false);
const NAMESPACES: KindSpec = spec("namespaces", "Namespace", true);
const NETWORK_POLICIES: KindSpec = spec("networkpolicies", "NetworkPolicy", true);
const ADMIN_POLICIES: KindSpec = spec("adminnetworkpolicies", "AdminNetworkPolicy", true);
const BASELINE_POLICIES: KindSpec = spec(
    "baselineadminnetworkpolicies",
    "BaselineAdminNetworkPolicy",
    true,
);
const EVENTS: KindSpec = spec("events", "Event", true);
const ENDPOINT_SLICES: KindSpec = spec("endpointslices", "EndpointSlice", true);
const ALL_KINDS: [KindSpec; 9] = [
    PODS,
    SERVICES,
    NODES,
    NAMESPACES,
    NETWORK_POLICIES,
    ADMIN_POLICIES,
    BASELINE_POLICIES,
    EVENTS,
    ENDPOINT_SLICES,
];

/// What the watchers read from the API server, as RBAC names it: (API group, resource). The
/// deployment manifests' ClusterRole grants these and nothing more (tests/e2e/deploy.rs).
pub fn watched_resources() -> Vec<(&'static str, &'static str)> {
    ALL_KINDS
        .iter()
        .map(|k| {
            let group = match k.resource {
                "networkpolicies" => "networking.k8s.io",
                "endpointslices" => "discovery.k8s.io",
                "adminnetworkpolicies" | "baselineadminnetworkpolicies" => POLICY_GROUP.0,
                _ => "",
            };
            (group, k.resource)
        })
        .collect()
}

/// The group and version AdminNetworkPolicy and BaselineAdminNetworkPolicy are served at.
const POLICY_GROUP: (&str, &str) = ("policy.networking.k8s.io", "v1alpha1");

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("kubernetes client: {0}")]
    Client(String),
    #[error("starting the kubernetes watcher thread: {0}")]
    Thread(String),
}

/// What one object contributes: its addresses and who they are.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    ips: Vec<IpAddr>,
    identity: Identity,
}

#[derive(Debug, Default)]
struct Objects {
    pods: HashMap<String, Entry>,
    services: HashMap<String, Entry>,
    nodes: HashMap<String, Entry>,
    /// Every watched object by Kubernetes kind, then `namespace/name`.
    raw: HashMap<&'static str, BTreeMap<String, Arc<Object>>>,
}

impl Objects {
    /// The identity entries of one watched resource (only pods, services and nodes have them).
    fn map(&mut self, resource: &str) -> Option<&mut HashMap<String, Entry>> {
        match resource {
            "pods" => Some(&mut self.pods),
            "services" => Some(&mut self.services),
            "nodes" => Some(&mut self.nodes),
            _ => None,
        }
    }

    fn raw(&mut self, kind: &'static str) -> &mut BTreeMap<String, Arc<Object>> {
        self.raw.entry(kind).or_default()
    }
}

#[derive(Debug, Default, Clone)]
struct Status {
    /// Resource -> whether its first full list has arrived.
    synced: BTreeMap<String, bool>,
    /// Optional resources the server does not serve or lets us read, with why.
    unavailable: BTreeMap<String, String>,
    /// The last watch error (the watcher retries with backoff).
    error: Option<String>,
    events: u64,
    /// Objects not kept because their kind held [`MAX_OBJECTS_PER_KIND`].
    dropped: u64,
}

struct Shared {
    objects: Mutex<Objects>,
    table: RwLock<Arc<IdentityTable>>,
    dirty: AtomicBool,
    status: Mutex<Status>,
    server: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Kubernetes enricher: start it once, hand it to the ingest stage.
pub struct KubeEnricher {
    shared: Arc<Shared>,
}

fn parse_ips<'a>(list: impl IntoIterator<Item = &'a str>) -> Vec<IpAddr> {
    list.into_iter().filter_map(|s| s.parse().ok()).collect()
}

/// The workload behind a pod: its controller owner, with a Deployment's ReplicaSet shown as
/// the Deployment (the ReplicaSet's name is the Deployment's plus `-<pod-template-hash>`).
fn owner(pod: &Pod) -> (String, String) {
    weir_core::objects::pod_workload(
        pod.owner_references()
            .iter()
            .map(|o| (o.kind.as_str(), o.name.as_str(), o.controller == Some(true))),
        pod.labels().get("pod-template-hash").map(String::as_str),
    )
    .unwrap_or_else(|| (pod.name_any(), "Pod".into()))
}

fn pod_entry(pod: &Pod) -> Option<Entry> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network) == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    let mut ips = parse_ips(status.pod_ips.iter().flatten().map(|p| p.ip.as_str()));
    if ips.is_empty() {
        ips = parse_ips(status.pod_ip.as_deref());
    }
    if ips.is_empty() {
        return None;
    }
    let (workload, workload_kind) = owner(pod);
    Some(Entry {
        ips,
        identity: Identity {
            name: pod.name_any(),
            namespace: pod.namespace().unwrap_or_default(),
            workload,
            workload_kind,
            kind: "Pod".into(),
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            zone: String::new(), // from the node, when the table is built
            labels: pod.labels().clone(),
            namespace_labels: BTreeMap::new(),
        },
    })
}

fn service_entry(svc: &Service) -> Option<Entry> {
    let spec = svc.spec.as_ref()?;
    let mut ips = parse_ips(spec.cluster_ips.iter().flatten().map(String::as_str));
    if ips.is_empty() {
        ips = parse_ips(spec.cluster_ip.as_deref());
    }
    if ips.is_empty() {
        return None;
    }
    Some(Entry {
        ips,
        identity: Identity {
            name: svc.name_any(),
            namespace: svc.namespace().unwrap_or_default(),
            workload: svc.name_any(),
            workload_kind: "Service".into(),
            kind: "Service".into(),
            node: String::new(),
            zone: String::new(),
            labels: svc.labels().clone(),
            namespace_labels: BTreeMap::new(),
        },
    })
}

fn node_entry(node: &Node) -> Option<Entry> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    let ips = parse_ips(
        addrs
            .iter()
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .map(|a| a.address.as_str()),
    );
    if ips.is_empty() {
        return None;
    }
    Some(Entry {
        ips,
        identity: Identity {
            name: node.name_any(),
            namespace: String::new(),
            workload: node.name_any(),
            workload_kind: "Node".into(),
            kind: "Node".into(),
            node: node.name_any(),
            zone: node.labels().get(ZONE_LABEL).cloned().unwrap_or_default(),
            labels: node.labels().clone(),
            namespace_labels: BTreeMap::new(),
        },
    })
}

fn key_of<K: Resource>(o: &K) -> String {
    let m = o.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

/// Builds the lookup table from the current objects: nodes, then services, then pods, each
/// with its namespace's labels.
fn build_table(o: &Objects) -> IdentityTable {
    let zones: HashMap<&str, &str> = o
        .nodes
        .values()
        .map(|e| (e.identity.name.as_str(), e.identity.zone.as_str()))
        .collect();
    let ns_labels: HashMap<&str, &BTreeMap<String, String>> = o
        .raw
        .get(NAMESPACES.kind)
        .map(|m| m.values().map(|n| (n.name.as_str(), &n.labels)).collect())
        .unwrap_or_default();
    let mut t = IdentityTable::default();
    let mut add = |e: &Entry, mut id: Identity| {
        if let Some(l) = ns_labels.get(id.namespace.as_str()) {
            id.namespace_labels = (*l).clone();
        }
        for ip in &e.ips {
            let (net, bits) = match ip {
                IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 128),
                IpAddr::V6(v6) => (u128::from(*v6), 128),
            };
            t.insert((net, bits), id.clone());
        }
    };
    for e in o.nodes.values() {
        add(e, e.identity.clone());
    }
    for e in o.services.values() {
        add(e, e.identity.clone());
    }
    for e in o.pods.values() {
        let mut id = e.identity.clone();
        id.zone = zones
            .get(id.node.as_str())
            .map(|z| z.to_string())
            .unwrap_or_default();
        add(e, id);
    }
    t
}

/// The annotation kubectl keeps a whole copy of the applied object in (large, and it may
/// hold what the live object no longer shows).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object as kept for plugins: its JSON without `metadata.managedFields` and without
/// kubectl's last-applied copy.
fn object_of<K: Resource + serde::Serialize>(o: &K, kind: &str) -> Option<Object> {
    let mut v = serde_json::to_value(o).ok()?;
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("managedFields");
        if let Some(a) = m.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            a.remove(LAST_APPLIED);
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.entry("kind")
            .or_insert_with(|| serde_json::Value::String(kind.to_string()));
    }
    let m = o.meta();
    Some(Object {
        kind: kind.to_string(),
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        labels: m.labels.clone().unwrap_or_default(),
        json: v.to_string(),
    })
}

impl Shared {
    /// Changes the objects; the lookup table is rebuilt only when `spec` feeds it (pods,
    /// services, nodes, namespaces), not for every Event or policy.
    fn set<F>(&self, spec: KindSpec, f: F)
    where
        F: FnOnce(&mut Objects),
    {
        f(&mut lock(&self.objects));
        if spec.identity {
            self.dirty.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether a watch error says the kind is not served (404) or not ours to read (403).
fn unavailable(e: &watcher::Error) -> Option<u16> {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s,
        watcher::Error::WatchError(s) => s,
        _ => return None,
    };
    matches!(status.code, 403 | 404).then_some(status.code)
}

/// Keeps one kind of object in step with the API server: its identity entries (when `entry`
/// gives them) and its JSON for plugins.
async fn watch<K, F>(shared: Arc<Shared>, api: Api<K>, spec: KindSpec, entry: F)
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K: Send + 'static,
    F: Fn(&K) -> Option<Entry>,
{
    let (resource, kind) = (spec.resource, spec.kind);
    let mut buffer: HashMap<String, Entry> = HashMap::new();
    let mut raw_buffer: BTreeMap<String, Arc<Object>> = BTreeMap::new();
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let ev = match stream.try_next().await {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(e) => {
                if spec.optional
                    && let Some(code) = unavailable(&e)
                {
                    let why = if code == 404 {
                        "not served by the API server"
                    } else {
                        "not readable with these credentials (403)"
                    };
                    tracing::info!(resource, why, "kubernetes kind not watched");
                    let mut st = lock(&shared.status);
                    st.synced.remove(resource);
                    st.unavailable.insert(resource.into(), why.into());
                    return;
                }
                tracing::warn!(resource, error = %e, "kubernetes watch failed, retrying");
                lock(&shared.status).error = Some(format!("{resource}: {e}"));
                continue;
            }
        };
        lock(&shared.status).events += 1;
        match ev {
            Event::Init => {
                buffer.clear();
                raw_buffer.clear();
            }
            Event::InitApply(o) => {
                if let Some(e) = entry(&o) {
                    buffer.insert(key_of(&o), e);
                }
                if raw_buffer.len() < MAX_OBJECTS_PER_KIND
                    && let Some(obj) = object_of(&o, kind)
                {
                    raw_buffer.insert(key_of(&o), Arc::new(obj));
                }
            }
            Event::InitDone => {
                let all = std::mem::take(&mut buffer);
                let raw = std::mem::take(&mut raw_buffer);
                let n = raw.len();
                shared.set(spec, |o| {
                    if let Some(m) = o.map(resource) {
                        *m = all;
                    }
                    *o.raw(kind) = raw;
                });
                let mut st = lock(&shared.status);
                st.synced.insert(resource.into(), true);
                st.error = None;
                tracing::info!(resource, objects = n, "kubernetes objects listed");
            }
            Event::Apply(o) => {
                let k = key_of(&o);
                let e = entry(&o);
                let obj = object_of(&o, kind).map(Arc::new);
                let mut dropped = false;
                shared.set(spec, |objs| {
                    if let Some(m) = objs.map(resource) {
                        match e {
                            Some(e) => {
                                m.insert(k.clone(), e);
                            }
                            None => {
                                m.remove(&k);
                            }
                        }
                    }
                    let raw = objs.raw(kind);
                    match obj {
                        Some(obj) if raw.len() < MAX_OBJECTS_PER_KIND || raw.contains_key(&k) => {
                            raw.insert(k, obj);
                        }
                        Some(_) => dropped = true,
                        None => {
                            raw.remove(&k);
                        }
                    }
                });
                if dropped {
                    lock(&shared.status).dropped += 1;
                }
            }
            Event::Delete(o) => {
                let k = key_of(&o);
                shared.set(spec, |objs| {
                    if let Some(m) = objs.map(resource) {
                        m.remove(&k);
                    }
                    objs.raw(kind).remove(&k);
                });
            }
        }
    }
}

/// The Api of an AdminNetworkPolicy-like kind (served only where the CRDs are installed).
fn policy_api(client: Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(POLICY_GROUP.0, POLICY_GROUP.1, kind);
    Api::all_with(client, &ApiResource::from_gvk(&gvk))
}

fn no_entry<K>(_: &K) -> Option<Entry> {
    None
}

impl KubeEnricher {
    /// Connects with a kubeconfig file (or, without one, `KUBECONFIG`, `~/.kube/config` or
    /// the in-cluster service account) and starts watching. A bad kubeconfig is an error
    /// here; an unreachable API server is not (the watchers retry and `status` says so).
    pub fn start(kubeconfig: Option<PathBuf>) -> Result<Self, K8sError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| K8sError::Thread(e.to_string()))?;
        let config = rt.block_on(async {
            match &kubeconfig {
                Some(path) => {
                    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                        K8sError::Kubeconfig {
                            path: path.display().to_string(),
                            message: e.to_string(),
                        }
                    })?;
                    Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                        .await
                        .map_err(|e| K8sError::Kubeconfig {
                            path: path.display().to_string(),
                            message: e.to_string(),
                        })
                }
                None => Config::infer()
                    .await
                    .map_err(|e| K8sError::Client(e.to_string())),
            }
        })?;
        let server = config.cluster_url.to_string();
        let client = {
            let _guard = rt.enter();
            Client::try_from(config).map_err(|e| K8sError::Client(e.to_string()))?
        };
        let shared = Arc::new(Shared {
            objects: Mutex::new(Objects::default()),
            table: RwLock::new(Arc::new(IdentityTable::default())),
            dirty: AtomicBool::new(false),
            status: Mutex::new(Status::default()),
            server: server.clone(),
        });
        {
            let mut st = lock(&shared.status);
            for k in ALL_KINDS {
                st.synced.insert(k.resource.into(), false);
            }
        }
        let s = shared.clone();
        std::thread::Builder::new()
            .name("weir-k8s".into())
            .spawn(move || {
                rt.block_on(async move {
                    let c = client;
                    futures::join!(
                        watch(s.clone(), Api::<Pod>::all(c.clone()), PODS, pod_entry),
                        watch(
                            s.clone(),
                            Api::<Service>::all(c.clone()),
                            SERVICES,
                            service_entry
                        ),
                        watch(s.clone(), Api::<Node>::all(c.clone()), NODES, node_entry),
                        watch(
                            s.clone(),
                            Api::<Namespace>::all(c.clone()),
                            NAMESPACES,
                            no_entry
                        ),
                        watch(
                            s.clone(),
                            Api::<NetworkPolicy>::all(c.clone()),
                            NETWORK_POLICIES,
                            no_entry
                        ),
                        watch(
                            s.clone(),
                            policy_api(c.clone(), ADMIN_POLICIES.kind),
                            ADMIN_POLICIES,
                            no_entry
                        ),
                        watch(
                            s.clone(),
                            policy_api(c.clone(), BASELINE_POLICIES.kind),
                            BASELINE_POLICIES,
                            no_entry
                        ),
                        watch(
                            s.clone(),
                            Api::<EndpointSlice>::all(c.clone()),
                            ENDPOINT_SLICES,
                            no_entry
                        ),
                        watch(s.clone(), Api::<KubeEvent>::all(c), EVENTS, no_entry),
                    );
                })
            })
            .map_err(|e| K8sError::Thread(e.to_string()))?;
        tracing::info!(server = %server, "watching kubernetes pods, services, nodes, namespaces, network policies, endpoint slices and events");
        Ok(KubeEnricher { shared })
    }

    fn table(&self) -> Arc<IdentityTable> {
        if self.shared.dirty.swap(false, Ordering::SeqCst) {
            let t = Arc::new(build_table(&lock(&self.shared.objects)));
            if let Ok(mut w) = self.shared.table.write() {
                *w = t.clone();
            }
            return t;
        }
        self.shared
            .table
            .read()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Whether every kind watched has been listed once.
    pub fn synced(&self) -> bool {
        lock(&self.shared.status).synced.values().all(|s| *s)
    }
}

impl ObjectSource for KubeEnricher {
    fn kinds(&self) -> Vec<String> {
        let st = lock(&self.shared.status);
        let mut kinds: Vec<String> = ALL_KINDS
            .iter()
            .filter(|k| !st.unavailable.contains_key(k.resource))
            .map(|k| k.kind.to_string())
            .collect();
        kinds.sort();
        kinds
    }

    fn synced(&self, kind: &str) -> bool {
        let st = lock(&self.shared.status);
        ALL_KINDS
            .iter()
            .find(|k| k.kind == kind)
            .is_some_and(|k| st.synced.get(k.resource).copied().unwrap_or(false))
    }

    fn list(
        &self,
        kind: &str,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Result<Vec<Object>, ObjectsError> {
        if kind.eq_ignore_ascii_case(SECRET) {
            return Err(ObjectsError::Secret);
        }
        let watched = self.kinds();
        let Some(spec) = ALL_KINDS
            .iter()
            .find(|k| k.kind == kind && watched.iter().any(|w| w == kind))
        else {
            return Err(ObjectsError::NotWatched {
                kind: kind.to_string(),
                watched: watched.join(", "),
            });
        };
        let objects = lock(&self.shared.objects);
        let Some(all) = objects.raw.get(spec.kind) else {
            return Ok(Vec::new());
        };
        Ok(all
            .values()
            .filter(|o| namespace.is_none_or(|n| o.namespace == n))
            .filter(|o| selector.matches(&o.labels))
            .map(|o| (**o).clone())
            .collect())
    }
}

impl Enricher for KubeEnricher {
    fn enrich(&self, flows: &mut [Flow]) {
        self.table().apply(flows);
    }

    fn status(&self) -> serde_json::Value {
        let st = lock(&self.shared.status).clone();
        let o = lock(&self.shared.objects);
        serde_json::json!({
            "source": "kubernetes",
            "path": self.shared.server,
            "entries": o.pods.len() + o.services.len() + o.nodes.len(),
            "pods": o.pods.len(),
            "services": o.services.len(),
            "nodes": o.nodes.len(),
            "objects": o.raw.iter().map(|(k, m)| (k.to_string(), m.len())).collect::<BTreeMap<_, _>>(),
            "synced": st.synced,
            "unavailable": st.unavailable,
            "dropped": st.dropped,
            "events": st.events,
            "error": st.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn pods_map_to_their_deployment_and_zone() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-7d9f-abcde", "namespace": "shop",
                "labels": {"app": "web", "pod-template-hash": "7d9f"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f", "uid": "1", "controller": true}]},
            "spec": {"nodeName": "node-a", "containers": []},
            "status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}
        }));
        let e = pod_entry(&p).unwrap();
        assert_eq!(e.identity.workload, "web");
        assert_eq!(e.identity.workload_kind, "Deployment");
        assert_eq!(e.ips.len(), 2);
        let host = pod(serde_json::json!({
            "metadata": {"name": "kube-proxy-x", "namespace": "kube-system"},
            "spec": {"hostNetwork": true, "containers": []},
            "status": {"podIP": "192.168.1.10"}
        }));
        assert!(
            pod_entry(&host).is_none(),
            "host-network pods are their node"
        );
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-a", "labels": {ZONE_LABEL: "zone-1"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "node-a"}]}
        }))
        .unwrap();
        let mut o = Objects::default();
        o.pods.insert("shop/web".into(), e);
        o.nodes.insert("/node-a".into(), node_entry(&node).unwrap());
        let t = build_table(&o);
        let id = t.lookup(&"10.0.0.5".parse().unwrap()).unwrap();
        assert_eq!((id.zone.as_str(), id.node.as_str()), ("zone-1", "node-a"));
        assert_eq!(
            t.lookup(&"192.168.1.10".parse().unwrap()).unwrap().kind,
            "Node"
        );
        assert!(t.lookup(&"10.0.0.6".parse().unwrap()).is_none());
    }
}
