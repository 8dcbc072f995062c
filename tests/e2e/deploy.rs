//! The deployment files, checked without a cluster: every Kubernetes manifest in
//! deploy/kubernetes/ parses into the typed API objects (k8s-openapi), and holds what it
//! must: the ClusterRole grants exactly what the agent's watchers read; the DaemonSet has the
//! host network and PID namespace, the capabilities eBPF capture needs (and not privileged),
//! requests and limits, the data dir on a hostPath and the token where its arguments say; every
//! `--flag` in a container's or the systemd unit's command line is one `weir` accepts;
//! Services select the pods they front and name ports that exist; the ServiceMonitor selects
//! the metrics Service. The systemd unit's capabilities are the DaemonSet's.

use crate::util::WEIR;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

#[derive(Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    daemonsets: Vec<DaemonSet>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    monitors: Vec<serde_yaml::Value>,
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_yaml::Value, file: &str, i: usize) -> T {
    serde_yaml::from_value(v).unwrap_or_else(|e| panic!("{file} document {i}: {e}"))
}

fn load() -> Objects {
    let mut o = Objects::default();
    let mut files: Vec<_> = std::fs::read_dir(format!("{DIR}/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for path in files {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).expect("read");
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let v = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{file} document {i}: {e}"));
            let kind = v["kind"].as_str().unwrap_or("").to_string();
            match kind.as_str() {
                "Namespace" => o.namespaces.push(typed(v, &file, i)),
                "ServiceAccount" => o.accounts.push(typed(v, &file, i)),
                "ClusterRole" => o.roles.push(typed(v, &file, i)),
                "ClusterRoleBinding" => o.bindings.push(typed(v, &file, i)),
                "DaemonSet" => o.daemonsets.push(typed(v, &file, i)),
                "Deployment" => o.deployments.push(typed(v, &file, i)),
                "Service" => o.services.push(typed(v, &file, i)),
                // A CRD (Prometheus Operator): no type in k8s-openapi.
                "ServiceMonitor" => o.monitors.push(v),
                other => panic!("{file} document {i}: unexpected kind {other:?}"),
            }
        }
    }
    o
}

/// The `--flags` `weir SUB --help` lists.
fn flags_of(sub: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(WEIR)
        .args([sub, "--help"])
        .output()
        .expect("weir --help");
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_alphanumeric())
                .to_string()
        })
        .collect()
}

/// Checks that `args` is a weir command line: a known subcommand, known flags only.
fn check_args(args: &[String], what: &str) {
    let sub = args
        .first()
        .unwrap_or_else(|| panic!("{what}: no subcommand"));
    let known = flags_of(sub);
    assert!(known.contains("--data-dir"), "{sub} --help: {known:?}");
    for a in args.iter().skip(1).filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap_or(a);
        assert!(known.contains(flag), "{what}: weir {sub} has no {flag}");
    }
}

fn arg_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("{flag}=")).or_else(|| {
            (a == flag)
                .then(|| args.get(i + 1).map(String::as_str))
                .flatten()
        })
    })
}

fn labels(m: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    m.clone().unwrap_or_default()
}

/// Whether a selector's labels are all on the pods.
fn selects(selector: &BTreeMap<String, String>, pods: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pods.get(k) == Some(v))
}

fn mounted_at<'a>(spec: &'a PodSpec, c: &Container, path: &str) -> Option<&'a str> {
    let m = c
        .volume_mounts
        .as_ref()?
        .iter()
        .find(|m| path.starts_with(&m.mount_path))?;
    spec.volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == m.name)
        .map(|v| v.name.as_str())
}

/// The Service selecting pods with `pod_labels`, and its first port, which must target a
/// port of `c` by name.
fn fronting<'a>(
    o: &'a Objects,
    pod_labels: &BTreeMap<String, String>,
    c: &Container,
    what: &str,
) -> (&'a Service, &'a k8s_openapi::api::core::v1::ServicePort) {
    let svc = o
        .services
        .iter()
        .find(|s| {
            selects(
                &labels(&s.spec.as_ref().and_then(|s| s.selector.clone())),
                pod_labels,
            )
        })
        .unwrap_or_else(|| panic!("a Service for {what}"));
    let port = &svc
        .spec
        .as_ref()
        .expect("spec")
        .ports
        .as_ref()
        .expect("ports")[0];
    let names: BTreeSet<String> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    match &port.target_port {
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
            assert!(names.contains(s), "{what}: {s} in {names:?}")
        }
        other => panic!("{what}: target port by name: {other:?}"),
    }
    (svc, port)
}

#[test]
fn kubernetes_manifests_parse_and_hold_what_the_agent_and_server_need() {
    let o = load();
    assert_eq!(o.namespaces.len(), 1);
    // RBAC: exactly what the watchers read, read-only.
    let role = &o.roles[0];
    let mut granted = BTreeSet::new();
    for r in role.rules.as_ref().expect("rules") {
        assert_eq!(
            r.verbs.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            ["get", "list", "watch"].into_iter().collect(),
            "read-only: {r:?}"
        );
        for g in r.api_groups.as_ref().expect("groups") {
            for res in r.resources.as_ref().expect("resources") {
                granted.insert((g.clone(), res.clone()));
            }
        }
    }
    let watched: BTreeSet<(String, String)> = weir_k8s::watched_resources()
        .into_iter()
        .map(|(g, r)| (g.to_string(), r.to_string()))
        .collect();
    assert_eq!(
        granted, watched,
        "the ClusterRole grants what the agent watches"
    );
    let b = &o.bindings[0];
    assert_eq!(b.role_ref.name, role.metadata.name.clone().expect("name"));
    let sa = &o.accounts[0];
    let subject = &b.subjects.as_ref().expect("subjects")[0];
    assert_eq!(Some(&subject.name), sa.metadata.name.as_ref());
    assert_eq!(subject.namespace, sa.metadata.namespace);

    // The agent's DaemonSet.
    let ds = &o.daemonsets[0];
    let ds_spec = ds.spec.as_ref().expect("spec");
    let tmpl = &ds_spec.template;
    let pod_labels = labels(&tmpl.metadata.as_ref().expect("meta").labels);
    assert!(selects(
        &labels(&ds_spec.selector.match_labels),
        &pod_labels
    ));
    let pod = tmpl.spec.as_ref().expect("pod spec");
    assert_eq!(
        pod.host_network,
        Some(true),
        "capture attaches to the host's interfaces"
    );
    assert_eq!(pod.host_pid, Some(true));
    assert_eq!(pod.service_account_name, sa.metadata.name);
    let c = &pod.containers[0];
    let args = c.args.clone().expect("args");
    check_args(&args, "DaemonSet");
    assert_eq!(args[0], "agent");
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_ne!(sc.privileged, Some(true), "capabilities, not privileged");
    let caps: BTreeSet<String> = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.clone())
        .expect("capabilities")
        .into_iter()
        .collect();
    for need in ["BPF", "PERFMON", "NET_ADMIN"] {
        assert!(caps.contains(need), "{need}: {caps:?}");
    }
    let res = c.resources.as_ref().expect("resources");
    for (what, m) in [("requests", &res.requests), ("limits", &res.limits)] {
        let m = m.as_ref().unwrap_or_else(|| panic!("{what}"));
        assert!(
            m.contains_key("cpu") && m.contains_key("memory"),
            "{what}: {m:?}"
        );
    }
    // The benchmark's peak RSS (docs/PERFORMANCE.md: 143 MiB) fits the limit.
    let limit = &res.limits.as_ref().expect("limits")["memory"].0;
    let mib: u64 = limit.trim_end_matches("Mi").parse().expect("a limit in Mi");
    assert!(
        mib >= 192,
        "memory limit {limit} below the measured peak with headroom"
    );
    let data = arg_value(&args, "--data-dir").expect("--data-dir");
    let vol = mounted_at(pod, c, data).expect("the data dir is a volume");
    let hp = pod
        .volumes
        .as_ref()
        .expect("volumes")
        .iter()
        .find(|v| v.name == vol)
        .expect("vol");
    assert!(
        hp.host_path.is_some(),
        "the data dir survives the pod: a hostPath"
    );
    let token = arg_value(&args, "--token-file").expect("beyond loopback a token is required");
    let tv = mounted_at(pod, c, token).expect("the token file is mounted");
    let tv = pod
        .volumes
        .as_ref()
        .expect("volumes")
        .iter()
        .find(|v| v.name == tv)
        .expect("vol");
    let secret = tv
        .secret
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .expect("a Secret");
    let env = c.env.clone().unwrap_or_default();
    assert!(
        env.iter().any(|e| e.name == "NODE_NAME"
            && e.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str())
                == Some("spec.nodeName")),
        "NODE_NAME from the downward API (the agent's --node: Node on every flow)"
    );

    // Services select their pods and name ports that exist; the ServiceMonitor selects the
    // agents' metrics Service.
    let (metrics, mport) = fronting(&o, &pod_labels, c, "the agents");
    let sm = &o.monitors[0];
    let sm_sel: BTreeMap<String, String> =
        serde_yaml::from_value(sm["spec"]["selector"]["matchLabels"].clone()).expect("selector");
    assert!(selects(&sm_sel, &labels(&metrics.metadata.labels)));
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"].as_str(), mport.name.as_deref());
    assert_eq!(ep["path"].as_str(), Some("/metrics"));
    assert_eq!(
        ep["bearerTokenSecret"]["name"].as_str(),
        Some(secret.as_str())
    );

    // The server's Deployment and Service.
    let d = &o.deployments[0];
    let dspec = d.spec.as_ref().expect("spec");
    let dlabels = labels(&dspec.template.metadata.as_ref().expect("meta").labels);
    assert!(selects(&labels(&dspec.selector.match_labels), &dlabels));
    let sc = &dspec.template.spec.as_ref().expect("pod").containers[0];
    let sargs = sc.args.clone().expect("args");
    check_args(&sargs, "Deployment");
    assert_eq!(sargs[0], "server");
    assert!(
        sc.env.iter().flatten().any(|e| e.name == "WEIR_CLICKHOUSE"),
        "the ClickHouse URL (weir server --clickhouse reads WEIR_CLICKHOUSE)"
    );
    assert!(flags_of("server").contains("--clickhouse"));
    fronting(&o, &dlabels, sc, "the server");

    // The systemd unit: a weir command line, and the DaemonSet's capabilities.
    let unit = std::fs::read_to_string(format!("{DIR}/systemd/weir-agent.service")).expect("unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let words: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    check_args(&words, "weir-agent.service");
    let unit_caps: BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    assert_eq!(
        unit_caps, caps,
        "the unit and the DaemonSet grant the same capabilities"
    );
    // systemd's own checks, offline (no systemd runs as PID 1 here): the unit is valid with
    // the binary in place, and its exposure score stays at or below 5.5 (7.0 before hardening).
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("weir-agent.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/weir", crate::util::WEIR),
    )
    .expect("write");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("systemd-analyze")
            .args(args)
            .arg(&copy)
            .output()
            .expect("systemd-analyze (Debian's systemd package)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = run(&["verify"]);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
    let (_, text) = run(&["security", "--offline=true"]);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for weir-agent.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(score <= 5.5, "exposure {score}: {text}");
}
