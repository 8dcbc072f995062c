//! `weir policy`: Kubernetes network policies. `table`, `explain`, `show` and `probe` evaluate
//! files here with the bundled `policy-engine` plugin in the sandbox (no agent, no cluster);
//! `whatif` asks the agent, which replays its stored flows against the proposed policies.
//! Exit codes for CI: 0 as expected, 1 a difference (probe) or a cut connection (whatif),
//! 2 bad input (a file, object or field the engine could not read, a bad argument) or a run
//! that could not be made (no agent answering, the engine failing).

use crate::client::{BadRequest, Server, post_json};
use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weir_core::policy::probe::{ProbeOptions, observe};
use weir_core::policy::table::{junit, simulate};
use weir_core::policy::{Findings, Objects, PolicyEngine, PolicyError, PortProto, Record};

#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    action: PolicyAction,
    #[command(flatten)]
    server: Server,
}

/// The cluster and its policies, from files.
#[derive(Args, Debug, Clone)]
struct Inputs {
    /// Policy files: NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy (YAML or
    /// JSON, several documents, `kubectl get -o yaml` lists; `-` for stdin).
    #[arg(long = "policies", num_args = 1.., value_name = "FILE")]
    policies: Vec<String>,
    /// Cluster files: Namespaces (with labels) and Pods (labels, IPs, container ports).
    #[arg(long = "cluster", num_args = 1.., value_name = "FILE")]
    cluster: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum PolicyAction {
    /// The truth table: for each port, who can reach whom (`.` allowed, `X` blocked, `#` the
    /// pod itself), tab-separated like cyclonus and the Kubernetes e2e suite print it.
    Table {
        #[command(flatten)]
        inputs: Inputs,
        /// PORT[/PROTOCOL], repeatable (default 80/TCP).
        #[arg(long = "port", value_name = "PORT/PROTO")]
        ports: Vec<PortProto>,
        #[arg(long)]
        json: bool,
        /// Evaluate every selector for every cell (the benchmark's baseline).
        #[arg(long, hide = true)]
        naive: bool,
    },
    /// Why one connection is allowed or blocked: per direction, the tier that decided
    /// (AdminNetworkPolicy, NetworkPolicy, BaselineAdminNetworkPolicy, default) and every
    /// policy and rule that took part.
    Explain {
        #[command(flatten)]
        inputs: Inputs,
        /// Source: ns/pod or an address.
        #[arg(long)]
        from: String,
        /// Destination: ns/pod or an address.
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "80/TCP")]
        port: PortProto,
        #[arg(long)]
        json: bool,
    },
    /// Every policy (the pods it selects, each rule's peers and the pods they match now, its
    /// ports) and every pod (the policies that apply to it, ingress and egress).
    Show {
        #[command(flatten)]
        inputs: Inputs,
        /// Only this pod (ns/pod) and the policies that apply to it.
        #[arg(long)]
        pod: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Real connections between the pods on this node (from inside each pod's network
    /// namespace, found by its address) against the simulated table: expected, observed and
    /// the comparison (`X` where they differ). Exit 0 when equal, 1 when not, 2 on bad input or when it cannot run.
    Probe {
        #[command(flatten)]
        inputs: Inputs,
        /// PORT[/PROTOCOL], repeatable (default 80/TCP). SCTP is probed where the kernel has
        /// it (the sctp module); elsewhere its cells stay `?`, with the reason.
        #[arg(long = "port", value_name = "PORT/PROTO")]
        ports: Vec<PortProto>,
        /// Per connection attempt.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Attempts in flight at once.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// Write JUnit XML here (one test case per cell).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One pod, asked of the agent: its stored conversations judged by the policies (the live
    /// ones, plus files given), the allowed ingress paths it never used, and the tightest
    /// NetworkPolicy that still allows what it did (YAML: `--suggest` prints only that).
    Pod {
        /// The pod: ns/name.
        pod: String,
        /// Extra objects (files) to evaluate with the live ones.
        #[command(flatten)]
        inputs: Inputs,
        /// Leave out the agent's live objects.
        #[arg(long)]
        no_live: bool,
        #[arg(long, allow_hyphen_values = true, default_value = "-7d")]
        from: String,
        #[arg(long, allow_hyphen_values = true)]
        to: Option<String>,
        /// Print only the suggested policy (YAML).
        #[arg(long, conflicts_with = "json")]
        suggest: bool,
        #[arg(long)]
        json: bool,
    },
    /// Replays the agent's stored conversations (with the identities and labels they had when
    /// captured) against proposed policies: what would be cut, what newly allowed, by workload
    /// pair and port. Exit 1 when any observed connection would be cut.
    Whatif {
        /// The proposed policy set (files; `-` for stdin).
        #[arg(long = "policies", num_args = 1.., value_name = "FILE", required = true)]
        policies: Vec<String>,
        /// The current policy set (default: the agent's live objects, when it watches
        /// Kubernetes; else every observed connection counts as allowed now).
        #[arg(long = "current", num_args = 1.., value_name = "FILE")]
        current: Vec<String>,
        /// Cluster files (Namespaces, Pods) for named ports (default: the live objects).
        #[arg(long = "cluster", num_args = 1.., value_name = "FILE")]
        cluster: Vec<String>,
        /// Window start: -7d, Unix time, RFC 3339 (default: the last 7 days).
        #[arg(long, allow_hyphen_values = true, default_value = "-7d")]
        from: String,
        #[arg(long, allow_hyphen_values = true)]
        to: Option<String>,
        /// Only flows matching this filter (the query language).
        #[arg(short, long, default_value = "")]
        filter: String,
        #[arg(long)]
        json: bool,
    },
}

/// The bundled engine, loaded into a sandbox of its own (the runtime kept beside it).
pub struct AgentEngine {
    pub _rt: weir_host::Runtime,
    pub engine: weir_host::policy::SandboxPolicyEngine,
}

type LocalEngine = AgentEngine;

impl PolicyEngine for AgentEngine {
    fn run(&self, request: &Value) -> Result<Vec<Record>, PolicyError> {
        self.engine.run(request)
    }
}

/// Loads the bundled `policy-engine` (compiled components cached in `cache`).
pub fn local_engine(
    cache: Option<PathBuf>,
) -> Result<(weir_host::Runtime, weir_host::policy::SandboxPolicyEngine)> {
    let b = crate::bundled::BUNDLED
        .iter()
        .find(|b| b.name == "policy-engine")
        .context(
            "this binary carries no bundled policy-engine plugin (build plugins/ before the binary)",
        )?;
    let rt = weir_host::Runtime::new(cache).context("starting the plugin runtime")?;
    let engine = weir_host::policy::SandboxPolicyEngine::load(&rt, b.wasm, b.manifest)
        .context("loading the bundled policy-engine")?;
    Ok((rt, engine))
}

fn engine() -> Result<LocalEngine> {
    let (rt, engine) = local_engine(None)?;
    Ok(LocalEngine { _rt: rt, engine })
}

fn bad(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(BadRequest(e.to_string()))
}

fn load(inputs: &Inputs) -> Result<Objects> {
    if inputs.policies.is_empty() && inputs.cluster.is_empty() {
        return Err(bad(
            "give the cluster and its policies: --cluster FILE... --policies FILE...",
        ));
    }
    let mut o = Objects::from_files(&inputs.cluster).map_err(bad)?;
    o.extend(Objects::from_files(&inputs.policies).map_err(bad)?);
    Ok(o)
}

fn policy_err(e: PolicyError) -> anyhow::Error {
    match e {
        PolicyError::Invalid(_) | PolicyError::File(_) => bad(e),
        other => anyhow!(other),
    }
}

/// Prints the problems and warnings to stderr; true when there were problems (the caller
/// exits 2 after its output), warnings alone are not a failure.
fn report(found: &Findings) -> bool {
    for p in &found.problems {
        eprintln!("weir: {p}");
    }
    for w in &found.warnings {
        eprintln!("weir: warning: {w}");
    }
    !found.problems.is_empty()
}

/// Runs `weir policy ...`; returns the exit code.
pub fn run(a: PolicyArgs) -> Result<u8> {
    match a.action {
        PolicyAction::Table {
            inputs,
            mut ports,
            json,
            naive,
        } => {
            if ports.is_empty() {
                ports.push("80/TCP".parse().map_err(bad)?);
            }
            let objects = load(&inputs)?;
            let (table, problems) =
                simulate(&engine()?, &objects, &ports, naive).map_err(policy_err)?;
            if json {
                let mut j = table.json();
                j["problems"] = json!(problems.problems);
                j["warnings"] = json!(problems.warnings);
                println!("{}", serde_json::to_string_pretty(&j)?);
            } else {
                print!("{}", table.render());
            }
            Ok(if report(&problems) { 2 } else { 0 })
        }
        PolicyAction::Explain {
            inputs,
            from,
            to,
            port,
            json,
        } => {
            let objects = load(&inputs)?;
            let (mut v, problems) =
                weir_core::policy::explain(&engine()?, &objects, &from, &to, port)
                    .map_err(policy_err)?;
            if json {
                v["problems"] = json!(problems.problems);
                v["warnings"] = json!(problems.warnings);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_explanation(&v);
            }
            Ok(if report(&problems) { 2 } else { 0 })
        }
        PolicyAction::Show { inputs, pod, json } => {
            let objects = load(&inputs)?;
            let (mut v, problems) =
                weir_core::policy::describe(&engine()?, &objects, pod.as_deref())
                    .map_err(policy_err)?;
            if pod.is_some() {
                let applying: Vec<String> = ["ingress", "egress"]
                    .iter()
                    .flat_map(|d| v["pods"][0][d].as_array().cloned().unwrap_or_default())
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect();
                let policies: Vec<Value> = v["policies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| applying.iter().any(|a| a.contains(&policy_label(p))))
                    .cloned()
                    .collect();
                v["policies"] = Value::Array(policies);
            }
            if json {
                v["problems"] = json!(problems.problems);
                v["warnings"] = json!(problems.warnings);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_description(&v);
            }
            Ok(if report(&problems) { 2 } else { 0 })
        }
        PolicyAction::Probe {
            inputs,
            mut ports,
            timeout_ms,
            parallel,
            junit: junit_path,
            json,
        } => {
            if ports.is_empty() {
                ports.push("80/TCP".parse().map_err(bad)?);
            }
            if timeout_ms == 0 || timeout_ms > 60_000 {
                return Err(bad("--timeout-ms must be 1 to 60000"));
            }
            let objects = load(&inputs)?;
            let (expected, problems) =
                simulate(&engine()?, &objects, &ports, false).map_err(policy_err)?;
            if report(&problems) {
                return Ok(2);
            }
            let pods = objects.pod_addresses();
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                let cells = pods.len() * pods.len().saturating_sub(1) * ports.len();
                eprintln!(
                    "probing {cells} cells ({} pods, {} ports), {parallel} at a time, {timeout_ms} ms each at most...",
                    pods.len(),
                    ports.len()
                );
            }
            let start = Instant::now();
            let seen = observe(
                &weir_ebpf::probe::NetnsProber,
                &pods,
                &ports,
                ProbeOptions {
                    timeout: Duration::from_millis(timeout_ms),
                    parallel,
                },
            );
            let seconds = start.elapsed().as_secs_f64();
            let observed = &seen.table;
            let (comparison, diffs) = expected.compare(observed);
            if let Some(path) = &junit_path {
                std::fs::write(
                    path,
                    junit("weir policy probe", &expected, observed, seconds),
                )
                .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                let j = json!({
                    "pass": diffs.is_empty(),
                    "expected": expected.json(),
                    "observed": observed.json(),
                    "outcomes": seen.outcomes,
                    "differences": diffs,
                    "not_probed": seen.unprobed,
                    "ports_not_probed": seen.unprobed_ports,
                    "seconds": seconds,
                });
                println!("{}", serde_json::to_string_pretty(&j)?);
            } else {
                println!("expected:\n{}", expected.render());
                println!("observed:\n{}", observed.render());
                println!("comparison:\n{}", comparison.render());
                for u in &seen.unprobed {
                    println!("not probed from {}: {}", u.pod, u.reason);
                }
                for u in &seen.unprobed_ports {
                    println!("port {} not probed: {}", u.port, u.reason);
                }
                println!("{} cells differ ({:.1} s)", diffs.len(), seconds);
            }
            Ok(if diffs.is_empty() { 0 } else { 1 })
        }
        PolicyAction::Pod {
            pod,
            inputs,
            no_live,
            from,
            to,
            suggest,
            json,
        } => {
            let mut files = read_files(&inputs.cluster)?;
            files.extend(read_files(&inputs.policies)?);
            let body =
                json!({"pod": pod, "files": files, "live": !no_live, "from": from, "to": to});
            let r = post_json(&a.server, "/api/v1/policy/pod", &body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if suggest {
                print!("{}", r["suggestion"].as_str().unwrap_or(""));
            } else {
                print_pod(&r);
            }
            Ok(if print_findings(&r) { 2 } else { 0 })
        }
        PolicyAction::Whatif {
            policies,
            current,
            cluster,
            from,
            to,
            filter,
            json,
        } => {
            let read = read_files;
            let body = json!({
                "proposed": read(&policies)?,
                "current": if current.is_empty() { Value::Null } else { Value::Array(read(&current)?) },
                "cluster": read(&cluster)?,
                "from": from,
                "to": to,
                "filter": filter,
            });
            let r = post_json(&a.server, "/api/v1/policy/whatif", &body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_whatif(&r);
            }
            let problems = print_findings(&r);
            let cut = r["cut_groups"].as_u64().unwrap_or(0);
            Ok(if problems {
                2
            } else if cut > 0 {
                1
            } else {
                0
            })
        }
    }
}

/// Files as the API takes them: `[{"name", "text"}]` (`-`: stdin).
fn read_files(files: &[String]) -> Result<Vec<Value>> {
    files
        .iter()
        .map(|f| {
            let text = if f == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .context("reading stdin")?;
                s
            } else {
                std::fs::read_to_string(f).map_err(|e| bad(format!("{f}: {e}")))?
            };
            Ok(json!({"name": f, "text": text}))
        })
        .collect()
}

fn print_pod(r: &Value) {
    println!(
        "{} ({})",
        r["pod"].as_str().unwrap_or(""),
        r["address"].as_str().unwrap_or("")
    );
    println!("observed:");
    for s in r["observed"].as_array().into_iter().flatten() {
        println!(
            "  {:7} {} {}/{}: {} flows, {}{}",
            s["direction"].as_str().unwrap_or(""),
            s["peer"].as_str().unwrap_or(""),
            s["port"],
            s["protocol"].as_str().unwrap_or(""),
            s["flows"],
            if s["allowed"] == true {
                "allowed"
            } else {
                "DENIED"
            },
            if s["allowed"] == true {
                String::new()
            } else {
                format!(" ({})", s["reason"].as_str().unwrap_or(""))
            }
        );
    }
    for (key, what) in [("unused_ingress", "ingress"), ("unused_egress", "egress")] {
        let unused = r[key].as_array().cloned().unwrap_or_default();
        println!("allowed {what} never used: {}", unused.len());
        for u in unused.iter().take(50) {
            let peer = u["peer"].as_str().unwrap_or("");
            let port = format!(
                "{}/{}",
                u["port"]["port"],
                u["port"]["protocol"].as_str().unwrap_or("")
            );
            if what == "ingress" {
                println!("  {peer} -> {port}");
            } else {
                println!("  -> {peer} {port}");
            }
        }
    }
    println!(
        "\nsuggested policy:\n{}",
        r["suggestion"].as_str().unwrap_or("")
    );
}

fn policy_label(p: &Value) -> String {
    match p["namespace"].as_str() {
        Some(ns) => format!(
            "{} {ns}/{}",
            p["kind"].as_str().unwrap_or(""),
            p["name"].as_str().unwrap_or("")
        ),
        None => format!(
            "{} {}",
            p["kind"].as_str().unwrap_or(""),
            p["name"].as_str().unwrap_or("")
        ),
    }
}

fn print_explanation(v: &Value) {
    println!(
        "{} -> {} {}/{}: {}",
        v["from"].as_str().unwrap_or(""),
        v["to"].as_str().unwrap_or(""),
        v["port"],
        v["protocol"].as_str().unwrap_or(""),
        if v["allowed"] == true {
            "allowed"
        } else {
            "blocked"
        }
    );
    for dir in ["egress", "ingress"] {
        let d = &v[dir];
        println!(
            "  {dir}: {} (decided by {})",
            if d["allowed"] == true {
                "allowed"
            } else {
                "denied"
            },
            d["decided_by"].as_str().unwrap_or("")
        );
        for s in d["steps"].as_array().into_iter().flatten() {
            let rule = s["rule"].as_str().unwrap_or("");
            println!(
                "    {}{}: {}",
                s["policy"].as_str().unwrap_or(""),
                if rule.is_empty() {
                    String::new()
                } else {
                    format!(" rule {rule}")
                },
                match s["effect"].as_str().unwrap_or("") {
                    "isolates" => "selects the pod; no rule allows this connection",
                    other => other,
                }
            );
        }
    }
}

fn names(v: &Value) -> String {
    let n: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if n.is_empty() {
        "(none)".into()
    } else {
        n.join(", ")
    }
}

fn print_description(v: &Value) {
    for p in v["policies"].as_array().into_iter().flatten() {
        println!("{}", policy_label(p));
        println!("  selects: {}", names(&p["selects"]));
        for dir in ["ingress", "egress"] {
            match &p[dir] {
                Value::Null => {}
                Value::Array(rules) if rules.is_empty() => println!("  {dir}: deny all"),
                Value::Array(rules) => {
                    for (i, r) in rules.iter().enumerate() {
                        if let Some(action) = r["action"].as_str() {
                            println!(
                                "  {dir} {}: {action} {}",
                                r["name"].as_str().unwrap_or(""),
                                names(&r["pods"])
                            );
                            continue;
                        }
                        println!("  {dir}[{i}] ports {}", names(&r["ports"]));
                        for peer in r["peers"].as_array().into_iter().flatten() {
                            println!(
                                "    {}: {}",
                                peer["peer"].as_str().unwrap_or(""),
                                names(&peer["pods"])
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for p in v["pods"].as_array().into_iter().flatten() {
        println!(
            "{} ({}): ingress {} | egress {}",
            p["pod"].as_str().unwrap_or(""),
            p["workload"].as_str().unwrap_or(""),
            names(&p["ingress"]),
            names(&p["egress"])
        );
        for (key, title) in [
            ("allowed_from", "may be reached on"),
            ("allowed_to", "may reach, on"),
        ] {
            for (port, pods) in p[key].as_object().into_iter().flatten() {
                println!("  {title} {port}: {}", names(pods));
            }
        }
    }
}

fn print_whatif(r: &Value) {
    println!(
        "{} flows, {} conversations replayed",
        r["flows"], r["conversations"]
    );
    for (key, title) in [
        ("cut", "would be cut"),
        ("newly_allowed", "would newly be allowed"),
    ] {
        let list = r[key].as_array().cloned().unwrap_or_default();
        println!(
            "\n{title}: {} workload pair(s)",
            r[format!("{key}_groups")]
                .as_u64()
                .unwrap_or(list.len() as u64)
        );
        for c in &list {
            println!(
                "  {} -> {} {}/{}: {} conversation(s), {} flows, last seen {}\n    {}",
                c["from"].as_str().unwrap_or(""),
                c["to"].as_str().unwrap_or(""),
                c["port"],
                c["protocol"].as_str().unwrap_or(""),
                c["conversations"],
                c["flows"],
                weir_core::query::format_ms(c["last_seen_ms"].as_u64().unwrap_or(0)),
                c["reason"].as_str().unwrap_or("")
            );
        }
    }
}

/// The problems and warnings of an agent's answer (`problems`, `warnings`: lists of text), to
/// stderr; true when there were problems.
fn print_findings(r: &Value) -> bool {
    let list = |k: &str| -> Vec<String> {
        r[k].as_array()
            .into_iter()
            .flatten()
            .map(|p| p.as_str().map_or_else(|| p.to_string(), String::from))
            .collect()
    };
    let problems = list("problems");
    for p in &problems {
        eprintln!("weir: {p}");
    }
    for w in list("warnings") {
        eprintln!("weir: warning: {w}");
    }
    !problems.is_empty()
}
