//! `weir agent`: store + ingest + capture + HTTP API in one process.

use crate::units;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::alerts::AlertStore;
use weir_core::capture::CaptureSource;
use weir_core::ingest::{self, IngestConfig, IngestStats};
use weir_core::notify::{AlertingConfig, Sink};
use weir_core::{Store, StoreConfig};
use weir_ebpf::{Capture, CaptureConfig};

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Set by `weir server`: the flow API reads this ClickHouse instead of the local store.
    #[arg(skip)]
    pub(crate) cluster: Option<crate::server_cmd::Cluster>,
    /// Where flows are kept. Default: /var/lib/weir as root, else ~/.local/share/weir.
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the web UI and API. Beyond loopback an access token is required.
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:9977")]
    listen: SocketAddr,
    /// File holding the access token (at least 16 characters) that API clients must send as
    /// `Authorization: Bearer <token>` and the web UI asks for in a login form.
    #[arg(long, env = "WEIR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Flows are evicted from the kernel to storage at least this often.
    #[arg(long, default_value = "5s", value_parser = units::duration)]
    active_timeout: Duration,
    /// Appended flows are made durable and queryable this often (the most a crash loses).
    #[arg(long, default_value = "1s", value_parser = units::duration)]
    flush_interval: Duration,
    /// With imports (`POST /api/v1/flows`) waiting for their acknowledgement, flush this long
    /// after the previous flush instead of at --flush-interval; every import that arrived
    /// meanwhile shares that flush (group commit). Acknowledged still means durable.
    #[arg(long, default_value = "50ms", value_parser = units::duration)]
    commit_delay: Duration,
    /// Flows each kernel flow map holds; beyond it flows go through a ring buffer (counted).
    #[arg(long, default_value_t = 65_536)]
    max_flows: u32,
    /// Keep 1 packet in N (0 or 1: every packet). Sums are scaled back in queries.
    #[arg(long, default_value_t = 0)]
    sampling: u32,
    /// Flow records an eviction round holds at a time (0: the whole round; at least 1024).
    /// Lower bounds the agent's memory at each eviction when many flows are active (100 k
    /// records are ~17 MB); each slice is the flows whose identity hashes to it, so sightings
    /// still merge.
    #[arg(long, default_value_t = 8_192, value_name = "RECORDS")]
    eviction_slice: usize,
    /// Also capture inside this network namespace (a name under /var/run/netns, or a path such
    /// as /proc/PID/ns/net). Repeatable. The namespace may appear later.
    #[arg(long = "netns", value_name = "NAME")]
    netns: Vec<String>,
    /// Do not capture in the agent's own network namespace (only in --netns ones).
    #[arg(long)]
    no_host_netns: bool,
    /// Leave this interface alone (exact name, or prefix*). Repeatable. Loopback is always left alone.
    #[arg(long = "exclude-interface", value_name = "NAME")]
    exclude: Vec<String>,
    /// Run without eBPF capture (serve stored flows only).
    #[arg(long)]
    no_capture: bool,
    /// Run without plugins (none loaded, the plugin API answers 503).
    #[arg(long)]
    no_plugins: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten, next_help_heading = "HTTP limits")]
    http: HttpArgs,
    /// Keep every capability the agent starts with. By default it keeps only what capture
    /// needs (bpf, perfmon, net_admin, sys_admin, sys_resource; net_bind_service for a port
    /// below 1024, sys_ptrace for a `--netns /proc/PID/...`, dac_read_search for
    /// `--log-file`) and drops the rest before starting.
    #[arg(long, env = "WEIR_KEEP_CAPABILITIES")]
    keep_capabilities: bool,
    /// Drop stored flows older than this (0: keep).
    #[arg(long, default_value = "7d", value_parser = retention_duration)]
    retention_age: Duration,
    /// Drop the oldest partitions while the store is larger than this (0: no limit).
    #[arg(long, default_value = "10GiB", value_parser = units::size)]
    retention_size: u64,
    /// Most records (decoded records, events, annotations) kept; the oldest go first (0: no
    /// limit). They are also dropped past --retention-age.
    #[arg(long, default_value_t = 1_000_000)]
    records_max: usize,
    /// Also receive OpenTelemetry spans and logs (OTLP/HTTP, `/v1/traces` and `/v1/logs`) on
    /// this address, OTLP's usual port being 4318 (e.g. `--otlp-listen 127.0.0.1:4318`). They
    /// are always received on the agent's own listener too. Needs --token-file beyond loopback.
    #[arg(long, value_name = "ADDR")]
    otlp_listen: Option<SocketAddr>,
    /// Follow this log and keep its lines as `log` records (on the Timeline, in traces by
    /// time): a syslog text file (RFC 3164, RFC 5424 or ISO-stamped lines; followed across
    /// rotation and truncation), or a systemd journal file or directory (read with
    /// journalctl). Repeatable. A first read keeps the last hour; a restart resumes where it
    /// stopped.
    #[arg(long = "log-file", value_name = "PATH")]
    log_files: Vec<PathBuf>,
    /// Run this installed correlator by itself around every spike or quiet gap in the flow
    /// volume (the timeline's `spikes` lane): once the stretch after it has passed, over twice
    /// its length on each side, with the spike given as an event; its annotations are
    /// kept (labels `trigger=spike`, `spike_from_ms`). Repeatable, e.g. `--on-spike
    /// what-changed --on-spike event-drops`. The last 20 minutes are looked at every 10 s, in
    /// buckets of 5 s or the active timeout if longer.
    #[arg(long = "on-spike", value_name = "PLUGIN")]
    on_spike: Vec<String>,
    /// Collect Open vSwitch datapath and OpenFlow dumps from the local switch this often
    /// (e.g. `--ovs 10s`; off by default). Dumps can also be imported: `weir ovs import`.
    #[arg(long, value_name = "INTERVAL", value_parser = units::duration)]
    ovs: Option<Duration>,
    /// The switch's run directory (OVS_RUNDIR: its control socket and bridge `.mgmt`
    /// sockets), when not the tools' default.
    #[arg(long, value_name = "DIR")]
    ovs_rundir: Option<PathBuf>,
    /// Most OVS collections kept (the oldest go first; also dropped past --retention-age).
    #[arg(long, default_value_t = 360)]
    ovs_keep: usize,
    /// Datapath flows traced per OVS collection to tell which OpenFlow rules made them
    /// (`ovs-appctl ofproto/trace`, one command each, the busiest first); 0: none.
    #[arg(long, value_name = "N", default_value_t = 64)]
    ovs_trace: usize,
    /// Length of one storage partition (the unit retention drops).
    #[arg(long, default_value = "1h", value_parser = units::duration)]
    partition: Duration,
    /// Indexing threads of the store (2 suits ingest-heavy nodes; 1 keeps memory low).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    index_threads: u8,
    /// Memory budget of each indexing thread before it writes a segment out.
    #[arg(long, default_value = "20MB", value_parser = units::size)]
    index_memory: u64,
    /// While imports stream in (`POST /api/v1/flows`), keep freed memory for a second
    /// instead of giving it back to the OS at once: imports ~1.35x faster, for about 3x the
    /// resident memory while they run and 60-70 MiB more after (docs/PERFORMANCE.md, "The API
    /// under load"). For nodes that mostly import; capture alone is never affected.
    #[arg(long)]
    import_hold_memory: bool,
    /// Flows the store always keeps, whatever storage sampling rules a controller sets (the
    /// query language, repeatable): `--keep-flows 'DstPort=22'`. Drops, TCP SYN without an
    /// answer, RSTs, DNS errors, new talkers and new service ports are always kept too.
    #[arg(long = "keep-flows", value_name = "FILTER")]
    keep_flows: Vec<String>,
    /// Static inventory (TOML, `[[host]]` entries: cidr(s), name, namespace, workload, kind,
    /// node, zone, labels) that names the ends of flows; reloaded when the file changes.
    #[arg(long, env = "WEIR_INVENTORY", value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// This node's name, written as `Node` on every flow that has none (captured or
    /// imported), so a cluster's flows tell where they come from (`weir server`: filter and
    /// group by `Node`; `clickhouse-export` then needs no `--config node=`). Kubernetes'
    /// downward API sets NODE_NAME. Empty: flows carry no node.
    #[arg(long, env = "NODE_NAME", value_name = "NAME", value_parser = parse_node)]
    pub(crate) node: Option<String>,
    /// Publish this agent's summarizer windows (the bundled edge-summary's sketches) to the
    /// cluster's ClickHouse (its HTTP interface, as given to `weir server --clickhouse`), where
    /// `weir server` merges every node's into one summary. Needs --node (or NODE_NAME); only
    /// windows that changed are sent, every --summaries-every.
    #[arg(
        long,
        env = "WEIR_PUBLISH_SUMMARIES",
        value_name = "URL",
        hide_env_values = true
    )]
    publish_summaries: Option<String>,
    /// The database of --publish-summaries (`weir server --database`).
    #[arg(long, default_value = "weir", value_name = "NAME")]
    publish_summaries_database: String,
    /// How often summarizer windows are published (an agent with --publish-summaries) or
    /// gathered from the agents and merged (`weir server`). At least 200ms.
    #[arg(long, default_value = "10s", value_parser = units::duration)]
    pub(crate) summaries_every: Duration,
    /// Name the ends of flows from Kubernetes (pods, services, nodes and namespaces watched
    /// through the API; network policies and events are watched too, for plugins granted
    /// `k8s-objects`),
    /// with the kubeconfig from KUBECONFIG, ~/.kube/config or the pod's service account.
    #[arg(long)]
    kubernetes: bool,
    /// Kubeconfig file for --kubernetes (implies it).
    #[arg(long, env = "WEIR_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// In-kernel filter rule, tried in order (repeatable), e.g.
    /// `accept cidr=10.0.0.0/8 proto=tcp ports=80-443`, `reject ports=22`,
    /// `accept drops_only`; keys: cidr, peer_cidr, proto, ports, direction, tcp_flags,
    /// drops_only, sampling. Change them at run time with `weir filter`.
    #[arg(long = "filter", value_name = "RULE", value_parser = parse_rule)]
    filters: Vec<weir_core::capture::FilterRule>,
    /// Do not attach dropped packets and drop reasons to flows (kfree_skb tracepoint).
    #[arg(long)]
    no_drops: bool,
    /// Do not attach TCP round-trip times to flows (the smoothed RTT of local sockets, read by
    /// the TC program as they send).
    #[arg(long)]
    no_rtt: bool,
    /// Do not parse DNS (names, response codes, latency).
    #[arg(long)]
    no_dns: bool,
    /// Keep every sighting of a flow as its own record (by default a flow seen on several
    /// interfaces, such as both ends of a veth, is stored once, listing the interfaces).
    #[arg(long)]
    no_dedup: bool,
    /// Most series each flow metric keeps on /metrics; beyond it new series fold into one
    /// labelled `other` (counted by weir_metrics_folded_series_total).
    #[arg(long, default_value_t = 10_000)]
    metrics_max_series: usize,
    /// User-defined flow metrics (TOML `[[metric]]`: name, type counter|gauge|histogram,
    /// value field, labels, buckets, `[[metric.filter]]` with field, match
    /// equal|not_equal|presence|absence|regex, value), served on /metrics beside the built-in ones.
    #[arg(long, value_name = "FILE")]
    metrics_config: Option<PathBuf>,
    /// Flow-metric series not updated for this long leave /metrics.
    #[arg(long, default_value = "5m", value_parser = units::duration)]
    metrics_stale: Duration,
    /// Most series all the metrics one plugin defines may keep together (metrics plugins,
    /// the metrics capability); beyond it new series fold into `other`.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    metrics_plugin_max_series: usize,
    /// Send alert notifications to this Prometheus Alertmanager (its base URL, e.g.
    /// http://127.0.0.1:9093). Repeatable.
    #[arg(long = "alertmanager", value_name = "URL")]
    alertmanagers: Vec<String>,
    /// POST every alert notification (firing, resolved) as JSON to this URL. Repeatable.
    #[arg(long = "alert-webhook", value_name = "URL")]
    alert_webhooks: Vec<String>,
    /// A destination exporter plugins may send to (capability `sink`), NAME=URL with URL
    /// udp://HOST:PORT, tcp://HOST:PORT, http(s)://... (http+gzip://, https+gzip:// compress
    /// each body, Content-Encoding: gzip), nats://HOST:PORT/SUBJECT, or
    /// jetstream://HOST:PORT[,HOST:PORT...]/STREAM/SUBJECT (a JetStream stream, created with
    /// one replica per listed server if missing; each message acknowledged by the stream), or
    /// kafka://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/TOPIC[?sasl=scram-sha-512|scram-sha-256|plain]
    /// (one record per payload, acks=all).
    /// Repeatable; e.g. `--sink bus=nats://127.0.0.1:4222/weir.flows`.
    #[arg(long = "sink", value_name = "NAME=URL", value_parser = parse_sink)]
    sinks: Vec<weir_core::sink::Destination>,
    /// How often the alert-rule plugins are evaluated.
    #[arg(long, default_value = "30s", value_parser = units::duration)]
    alert_interval: Duration,
    /// The flows a rule looks at: this much before each evaluation (a rule's `window` config
    /// overrides it).
    #[arg(long, default_value = "5m", value_parser = units::duration)]
    alert_window: Duration,
    /// How long a rule must keep reporting an alert before it fires (a rule's `for` config
    /// overrides it; 0: at once).
    #[arg(long, default_value = "0", value_parser = retention_duration)]
    alert_for: Duration,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Set by `weir incident open`: the incident replayed (the API refuses changes, no
    /// alert evaluation, no exporters).
    #[arg(long, hide = true, value_name = "WHAT")]
    replay: Option<String>,
    /// Set by `weir incident open`: the clock of the whole agent, its plugins included,
    /// stopped at this Unix ms (the incident's end).
    #[arg(long, hide = true, value_name = "MS")]
    replay_clock_ms: Option<u64>,
}

impl AgentArgs {
    /// The agent of `weir incident open`: serves `data_dir` read-only with no capture, no
    /// retention and the clock stopped at `clock_ms`.
    pub fn replay(
        data_dir: PathBuf,
        listen: SocketAddr,
        token_file: Option<PathBuf>,
        what: String,
        clock_ms: u64,
    ) -> Result<AgentArgs> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            a: AgentArgs,
        }
        let mut args: Vec<std::ffi::OsString> = vec![
            "weir".into(),
            "--no-capture".into(),
            "--retention-age".into(),
            "0".into(),
            "--retention-size".into(),
            "0".into(),
            "--records-max".into(),
            "0".into(),
            "--data-dir".into(),
            data_dir.into(),
            "--listen".into(),
            listen.to_string().into(),
            "--replay".into(),
            what.into(),
            "--replay-clock-ms".into(),
            clock_ms.to_string().into(),
        ];
        if let Some(t) = token_file {
            args.push("--token-file".into());
            args.push(t.into());
        }
        Ok(Only::try_parse_from(args)?.a)
    }

    /// What an incident file records of this agent's settings.
    fn settings(&self) -> serde_json::Value {
        let inventory = self.inventory.as_ref().map(|p| {
            serde_json::json!({
                "path": p.display().to_string(),
                "text": std::fs::read_to_string(p).ok(),
            })
        });
        serde_json::json!({
            "capture": {
                "enabled": !self.no_capture,
                "active_timeout_ms": self.active_timeout.as_millis() as u64,
                "max_flows": self.max_flows,
                "sampling": self.sampling,
                "netns": self.netns,
                "host_netns": !self.no_host_netns,
                "exclude_interfaces": self.exclude,
                "filters": self.filters,
                "drops": !self.no_drops,
                "rtt": !self.no_rtt,
                "dns": !self.no_dns,
                "dedup": !self.no_dedup,
            },
            "inventory": inventory,
            "log_files": self.log_files,
            "on_spike": self.on_spike,
            "kubernetes": self.kubernetes || self.kubeconfig.is_some(),
            "alerting": {
                "interval_ms": self.alert_interval.as_millis() as u64,
                "window_ms": self.alert_window.as_millis() as u64,
                "for_ms": self.alert_for.as_millis() as u64,
            },
            "retention": {
                "age_ms": self.retention_age.as_millis() as u64,
                "bytes": self.retention_size,
                "records_max": self.records_max,
            },
            "partition_ms": self.partition.as_millis() as u64,
        })
    }
}

/// The cluster objects plugins may read (`k8s-objects`), when Kubernetes is watched.
type Objects = Option<Arc<dyn weir_core::objects::ObjectSource>>;

/// The identity sources asked for: Kubernetes first, then the inventory file; and the
/// Kubernetes watcher's objects.
fn enrichers(a: &AgentArgs) -> Result<(Option<Arc<dyn weir_core::enrich::Enricher>>, Objects)> {
    use weir_core::enrich::{Chain, Enricher, Inventory};
    let mut list: Vec<Arc<dyn Enricher>> = Vec::new();
    let mut objects: Objects = None;
    if a.kubernetes || a.kubeconfig.is_some() {
        let kube = Arc::new(
            weir_k8s::KubeEnricher::start(a.kubeconfig.clone())
                .context("starting kubernetes enrichment")?,
        );
        objects = Some(kube.clone());
        list.push(kube);
    }
    if let Some(p) = &a.inventory {
        list.push(Arc::new(Inventory::open(p).map_err(anyhow::Error::msg)?));
    }
    if let Some(n) = a.node.as_ref().filter(|n| !n.is_empty()) {
        list.push(Arc::new(weir_core::enrich::NodeName(n.clone())));
    }
    let chain: Option<Arc<dyn Enricher>> = match list.len() {
        0 => None,
        1 => list.pop(),
        _ => Some(Arc::new(Chain(list))),
    };
    Ok((chain, objects))
}

/// A node name as Kubernetes spells them (and hosts mostly): 1-253 characters of letters,
/// digits, `-`, `.` and `_`; "" for none.
fn parse_node(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.len() > 253 {
        return Err(format!(
            "{} characters: a node name has at most 253",
            s.len()
        ));
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        Some(c) => Err(format!(
            "{c:?} in {s:?}: a node name takes letters, digits, '-', '.' and '_'"
        )),
        None => Ok(s.to_string()),
    }
}

fn parse_sink(s: &str) -> Result<weir_core::sink::Destination, String> {
    weir_core::sink::Destination::parse(s).map_err(|e| e.to_string())
}

fn parse_rule(s: &str) -> Result<weir_core::capture::FilterRule, String> {
    weir_core::capture::FilterRule::parse(s)
}

fn retention_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        Ok(Duration::ZERO)
    } else {
        units::duration(s)
    }
}

/// What one HTTP client may hold of the agent (`weir_ui::limits`). Behind a reverse proxy
/// every client has the proxy's address: raise the per-client limits there.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Time a client has to send a request's head once it starts one (slower: closed).
    #[arg(long, env = "WEIR_HEADER_TIMEOUT", default_value = "10s", value_parser = units::duration)]
    header_timeout: Duration,
    /// Time a request may take until its response starts, its upload included (slower: 408).
    /// Live tails stream on past it.
    #[arg(long, env = "WEIR_REQUEST_TIMEOUT", default_value = "60s", value_parser = units::duration)]
    request_timeout: Duration,
    /// Open connections in all (more: 503 and closed).
    #[arg(long, env = "WEIR_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Open connections from one client address (more: 429 and closed).
    #[arg(long, env = "WEIR_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 128)]
    max_connections_per_client: usize,
    /// Requests one client address may have in progress (more: 429).
    #[arg(long, env = "WEIR_MAX_REQUESTS_PER_CLIENT", default_value_t = 64)]
    max_requests_per_client: usize,
    /// Live tails (`weir flows --follow`, the UI's Live view) one client address may hold.
    #[arg(long, env = "WEIR_MAX_FOLLOWS_PER_CLIENT", default_value_t = 8)]
    max_follows_per_client: usize,
    /// Wrong access tokens one client address may send per minute; beyond, it is answered 429
    /// until the minute ends.
    #[arg(long, env = "WEIR_MAX_WRONG_TOKENS", default_value_t = 10)]
    max_wrong_tokens: u32,
}

impl AgentArgs {
    /// The capabilities this agent needs while it runs (`crate::caps`).
    fn capabilities_needed(&self) -> Vec<u32> {
        use crate::caps;
        let mut keep = caps::CAPTURE.to_vec();
        let mut ports = std::iter::once(self.listen).chain(self.otlp_listen);
        if ports.any(|a| a.port() != 0 && a.port() < 1024) {
            keep.push(caps::CAP_NET_BIND_SERVICE);
        }
        if self.netns.iter().any(|n| n.starts_with("/proc/")) {
            keep.push(caps::CAP_SYS_PTRACE);
        }
        if !self.log_files.is_empty() {
            keep.push(caps::CAP_DAC_READ_SEARCH);
        }
        keep
    }
}

impl HttpArgs {
    fn limits(&self) -> Result<weir_ui::limits::Limits> {
        for (flag, v) in [
            ("--max-connections", self.max_connections),
            (
                "--max-connections-per-client",
                self.max_connections_per_client,
            ),
            ("--max-requests-per-client", self.max_requests_per_client),
            ("--max-follows-per-client", self.max_follows_per_client),
        ] {
            if v == 0 {
                bail!("{flag} 0 would refuse every client: give at least 1");
            }
        }
        for (flag, v) in [
            ("--header-timeout", self.header_timeout),
            ("--request-timeout", self.request_timeout),
        ] {
            if v.is_zero() {
                bail!("{flag} 0 would time out every request: give a duration such as 10s");
            }
        }
        Ok(weir_ui::limits::Limits {
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            connections: self.max_connections,
            connections_per_client: self.max_connections_per_client,
            requests_per_client: self.max_requests_per_client,
            follows_per_client: self.max_follows_per_client,
            wrong_tokens: self.max_wrong_tokens.max(1),
            lockout: Duration::from_secs(60),
        })
    }
}

/// The operator's ceilings over plugins (the same variables set them for `weir plugin`, so
/// an install shows what the agent will grant).
#[derive(clap::Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Most memory one plugin call may use, MiB; manifests asking more get this.
    #[arg(long, env = "WEIR_PLUGIN_MAX_MEMORY_MB", default_value_t = 256)]
    pub plugin_max_memory_mb: u32,
    /// Longest deadline one plugin call may have, ms; manifests asking more get this.
    #[arg(long, env = "WEIR_PLUGIN_MAX_TIMEOUT_MS", default_value_t = 10_000)]
    pub plugin_max_timeout_ms: u32,
    /// Memory all plugin calls running at once may use together, MiB: each reserves its
    /// memory cap plus 32 MiB for copying its result (a call that does not fit is refused as
    /// busy: 429 on the API, a skipped batch for processors).
    #[arg(long, env = "WEIR_PLUGIN_MEMORY_BUDGET_MB", default_value_t = 1024)]
    pub plugin_memory_budget_mb: u32,
    /// Calls one plugin may have running at once.
    #[arg(long, env = "WEIR_PLUGIN_MAX_CALLS", default_value_t = 4)]
    pub plugin_max_calls: u32,
    /// Refuse to install plugins asking above the ceilings (default: lower their asks).
    #[arg(long, env = "WEIR_PLUGIN_REFUSE_OVER_CEILING")]
    pub plugin_refuse_over_ceiling: bool,
}

impl SandboxArgs {
    /// The ceilings from the environment alone (for `weir plugin`).
    pub fn from_env() -> Result<SandboxArgs> {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            s: SandboxArgs,
        }
        use clap::Parser;
        Ok(Only::try_parse_from(["weir"])?.s)
    }

    pub fn policy(&self) -> weir_host::SandboxPolicy {
        weir_host::SandboxPolicy {
            max_memory_mb: self.plugin_max_memory_mb.max(1),
            max_timeout_ms: self.plugin_max_timeout_ms.max(1),
            total_memory_mb: self.plugin_memory_budget_mb.max(1),
            max_calls_per_plugin: self.plugin_max_calls.max(1),
            refuse_over_ceiling: self.plugin_refuse_over_ceiling,
        }
    }
}

pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/weir");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d).join("weir"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".local/share/weir"),
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a log file or a pipe gets plain text.
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

pub fn run(a: AgentArgs) -> Result<()> {
    init_logging(&a.log_format);
    // Huge pages make a small agent's resident memory jump in 2 MiB steps; it gains nothing
    // from them.
    // SAFETY: prctl with integer arguments only affects this process.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if let Some(ms) = a.replay_clock_ms {
        // A replay: every clock of the agent (default windows, plugins) reads the incident's end.
        weir_core::query::pin_now(ms);
    }
    let token = match &a.token_file {
        Some(path) => {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("reading the access token from {}", path.display()))?;
            let t = t.trim().to_string();
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!(
                    "{}: the access token must be at least 16 characters, without spaces",
                    path.display()
                );
            }
            Some(Arc::<str>::from(t))
        }
        None => None,
    };
    if let Some(o) = a.otlp_listen
        && !o.ip().is_loopback()
        && token.is_none()
    {
        bail!(
            "refusing to receive OTLP on {o} without an access token: give --token-file (exporters then send OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<token>), or listen on 127.0.0.1"
        );
    }
    if !a.listen.ip().is_loopback() && token.is_none() {
        bail!(
            "refusing to listen on {} without an access token: give --token-file (clients then send it as a bearer token), or listen on 127.0.0.1",
            a.listen
        );
    }
    let http_limits = a.http.limits()?;
    let dir = a.data_dir.clone().unwrap_or_else(default_data_dir);
    crate::private::data_dir(&dir)?;
    // Before any thread starts: threads and programs started later inherit what is kept.
    if !a.keep_capabilities {
        crate::caps::keep_only(&a.capabilities_needed())?;
    }
    let mut cfg = StoreConfig::new(&dir);
    cfg.partition_ms = a.partition.as_millis() as u64;
    cfg.retention_age_ms = a.retention_age.as_millis() as u64;
    cfg.retention_bytes = a.retention_size;
    cfg.writer = weir_core::store::WriterConfig {
        threads: usize::from(a.index_threads),
        memory_per_thread: usize::try_from(a.index_memory)
            .unwrap_or(usize::MAX)
            .max(15_000_000),
    };
    if cfg.partition_ms < 60_000 {
        bail!("--partition must be at least 1m");
    }
    let store = Arc::new(
        Store::open(cfg)
            .with_context(|| format!("opening the data directory {}", dir.display()))?,
    );
    let records = Arc::new(
        weir_core::records::RecordStore::open(&dir.join("records"))
            .with_context(|| format!("opening the records store in {}", dir.display()))?,
    );
    spawn_records_retention(records.clone(), a.retention_age, a.records_max)?;
    let (enricher, objects) = enrichers(&a)?;
    if let Some(o) = &objects {
        spawn_event_recorder(o.clone(), records.clone())?;
    }
    let stats = Arc::new(IngestStats::default());
    if a.import_hold_memory {
        spawn_purge_policy(stats.clone())?;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(INGEST_QUEUE);
    // Storage sampling: keeps everything until a plugin granted `storage-sampling` sets rules.
    let sampler = Arc::new(
        weir_core::sampling::StorageSampler::new(&a.keep_flows, Some(records.clone()))
            .context("storage sampling")?,
    );

    let capture = if a.no_capture {
        None
    } else {
        let cc = CaptureConfig {
            active_timeout: a.active_timeout,
            max_flows: a.max_flows,
            sampling: a.sampling,
            root_netns: !a.no_host_netns,
            netns: a.netns.clone(),
            exclude: a.exclude.clone(),
            drops: !a.no_drops,
            rtt: !a.no_rtt,
            dns: !a.no_dns,
            filters: a.filters.clone(),
            dedup: !a.no_dedup,
            eviction_slice: a.eviction_slice,
        };
        Some(Arc::new(
            Capture::start(cc, tx.clone()).context("starting eBPF capture")?,
        ))
    };
    // The API and plugins see the capture through the guard (operator's rules first, plugins'
    // changes bounded, logged, and withdrawn when they stop controlling).
    let guarded = capture.clone().map(|c| {
        Arc::new(weir_core::control::GuardedCapture::new(
            c as Arc<dyn CaptureSource>,
            Some(records.clone()),
        ))
    });
    let mut state = weir_ui::AppState::new(
        store.clone(),
        guarded.clone().map(|c| c as Arc<dyn CaptureSource>),
        stats.clone(),
    );
    state.ingest_tx = Some(tx);
    if let Some(c) = &a.cluster {
        state.flows = c.0.clone();
        // The cluster's flows come from its agents, not from imports here.
        state.ingest_tx = None;
    }
    state.records = Some(records.clone());
    state.sampling = Some(sampler.clone());
    state.telemetry = Some(Arc::new(weir_core::telemetry::TelemetryService::new(
        Box::new(weir_otlp::Otlp),
        records.clone(),
        store.clone(),
    )));
    if let Some(t) = &state.telemetry {
        // `TraceId=` in filters: the connections of the trace's spans.
        let t = Arc::downgrade(t);
        weir_core::query::trace::set_resolver(Arc::new(move |id: &str| {
            let t = t.upgrade().ok_or("the agent is stopping")?;
            t.trace_connections(id).map_err(|e| e.to_string())
        }));
    }
    if !a.log_files.is_empty()
        && let Some(t) = &state.telemetry
    {
        spawn_log_files(&a.log_files, &dir, t.clone())?;
    }
    state.ovs = crate::ovs_cmd::start(
        &dir,
        records.clone(),
        a.ovs,
        a.ovs_rundir.clone(),
        a.ovs_keep,
        a.ovs_trace,
        a.retention_age,
    )?;
    let cache = dir.join("plugin-cache");
    state.policy = Some(Arc::new(weir_core::policy::PolicyService::new(
        Box::new(move || {
            let (rt, engine) = crate::policy_cmd::local_engine(Some(cache.clone()))
                .map_err(|e| weir_core::policy::PolicyError::Engine(format!("{e:#}")))?;
            Ok(Box::new(crate::policy_cmd::AgentEngine { _rt: rt, engine })
                as Box<dyn weir_core::policy::PolicyEngine>)
        }),
        objects.clone(),
    )));
    state.enricher = enricher.clone();
    state.token = token;
    state.clients = weir_ui::limits::Clients::new(http_limits);
    state.settings = Arc::new(a.settings());
    state.read_only = a.replay.as_deref().map(Arc::from);
    let user_metrics = match &a.metrics_config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the metrics config {}", p.display()))?;
            weir_core::metrics::parse_user_metrics(&text)
                .map_err(|e| anyhow::anyhow!("metrics config {}: {e}", p.display()))?
        }
        None => Vec::new(),
    };
    let metrics = Arc::new(
        weir_core::metrics::FlowMetrics::new(weir_core::metrics::MetricsConfig {
            max_series: a.metrics_max_series.max(1),
            stale_after: a.metrics_stale,
            plugin_max_series: a.metrics_plugin_max_series.max(1),
        })
        .with_user(user_metrics),
    );
    state.metrics = Some(metrics.clone());
    let (registry, processors) = if a.no_plugins {
        (None, None)
    } else {
        let (reg, queues) = start_plugins(
            &dir,
            store.clone(),
            metrics.clone(),
            a.sandbox.policy(),
            a.replay.is_some(),
        )?;
        if let Some(g) = &guarded {
            reg.set_capture(g.clone());
            reg.set_control(g.clone());
        }
        reg.set_records(records.clone());
        reg.set_sampler(sampler.clone());
        if let Some(c) = &a.cluster {
            reg.set_flow_query(c.0.clone());
        }
        reg.set_prober(Arc::new(weir_ebpf::probe::NetnsProber));
        let mut sinks = weir_core::sink::Sinks::default();
        for d in &a.sinks {
            if sinks.get(&d.name).is_some() {
                anyhow::bail!("--sink {}: the name is given twice", d.name);
            }
            tracing::info!(sink = %d.name, url = %d.url, "sink named");
            sinks.insert(d.clone(), weir_sinks::open(d));
        }
        reg.set_sinks(sinks);
        if let Some(o) = &objects {
            reg.set_objects(o.clone());
        }
        state.plugins = Some(reg.clone() as Arc<dyn weir_core::plugins::PluginAdmin>);
        (Some(reg), Some(queues))
    };
    let alerts_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Exporters: each loaded one fed from the store by sequence number (weir_host::export).
    if let Some(reg) = registry.as_ref().filter(|_| a.replay.is_none()) {
        weir_host::export::spawn(reg.clone(), alerts_stop.clone())
            .context("starting the exporter feeds")?;
    }
    // Summaries across the cluster: `weir server` gathers and merges its agents' windows; an
    // agent with --publish-summaries sends its own (weir_host::exchange).
    if let Some(reg) = registry.as_ref().filter(|_| a.replay.is_none()) {
        let every = a.summaries_every.max(Duration::from_millis(200));
        let every_ms = every.as_millis() as u64;
        if let Some(c) = &a.cluster {
            let ex: Arc<dyn weir_core::summaries::SummaryExchange> = c.0.clone();
            let status = Arc::new(weir_core::summaries::ExchangeStatus::new(
                "gather",
                ex.describe(),
                every_ms,
            ));
            weir_host::exchange::spawn_gatherer(
                reg.clone(),
                ex,
                every,
                status.clone(),
                alerts_stop.clone(),
            )
            .context("starting the summary gatherer")?;
            state.summary_exchange = Some(status);
        } else if let Some(url) = &a.publish_summaries {
            let node = a.node.clone().filter(|n| !n.is_empty()).context(
                "--publish-summaries needs this node's name: --node NAME (or NODE_NAME)",
            )?;
            let ch = weir_clickhouse::ClickHouse::new(url, &a.publish_summaries_database)
                .context("--publish-summaries")?;
            let ex: Arc<dyn weir_core::summaries::SummaryExchange> = Arc::new(ch);
            let status = Arc::new(weir_core::summaries::ExchangeStatus::new(
                "publish",
                ex.describe(),
                every_ms,
            ));
            tracing::info!(to = %ex.describe(), node = %node, "publishing summarizer windows");
            weir_host::exchange::spawn_publisher(
                reg.clone(),
                ex,
                node,
                every,
                status.clone(),
                alerts_stop.clone(),
            )
            .context("starting the summary publisher")?;
            state.summary_exchange = Some(status);
        }
    } else if a.publish_summaries.is_some() {
        anyhow::bail!("--publish-summaries needs plugins (not --no-plugins, not a replay)");
    }
    let alerts_thread = match &registry {
        Some(reg) => {
            let sinks: Vec<Sink> = a
                .alertmanagers
                .iter()
                .map(|u| Sink::Alertmanager(u.clone()))
                .chain(a.alert_webhooks.iter().map(|u| Sink::Webhook(u.clone())))
                .collect();
            let store = Arc::new(
                AlertStore::open(&dir.join("alerts"), sinks.iter().map(Sink::name).collect())
                    .context("opening the alert store")?,
            );
            let cfg = AlertingConfig {
                interval: a.alert_interval,
                window: a.alert_window,
                for_: a.alert_for,
                sinks,
                generator_url: format!("http://{}/#/alerts", a.listen),
            };
            state.alerts = Some(store.clone());
            state.alerting = Some(cfg.clone());
            if a.replay.is_some() {
                // A replay shows the incident's alerts as they were; no rule runs.
                None
            } else {
                let admin = reg.clone() as Arc<dyn weir_core::plugins::PluginAdmin>;
                let stop = alerts_stop.clone();
                Some(
                    std::thread::Builder::new()
                        .name("weir-alerts".into())
                        .spawn(move || weir_core::notify::run(admin, store, cfg, stop))
                        .context("starting the alert thread")?,
                )
            }
        }
        None => None,
    };
    if !a.on_spike.is_empty() && registry.is_none() {
        bail!("--on-spike runs plugins: it cannot go with --no-plugins");
    }
    if let Some(reg) = registry.as_ref().filter(|_| a.replay.is_none())
        && !a.on_spike.is_empty()
    {
        spawn_spike_watch(
            a.on_spike.clone(),
            a.active_timeout,
            store.clone(),
            reg.clone() as Arc<dyn weir_core::plugins::PluginRunner>,
            alerts_stop.clone(),
        )?;
    }
    // The stages after the store, in order (weir_core::ingest has the map).
    let mut after: Vec<Arc<dyn ingest::StoredStage>> = vec![
        metrics.clone(),
        Arc::new(weir_ui::LiveTail(state.live.clone())),
    ];
    if let Some(q) = processors {
        after.push(Arc::new(q));
    }
    let ingest_cfg = IngestConfig {
        flush_interval: a.flush_interval,
        commit_delay: a.commit_delay,
        ..IngestConfig::default()
    };
    let stages = ingest::Stages {
        enricher: enricher.clone(),
        sampler: Some(sampler.clone()),
        after,
    };
    let ingest_thread = ingest::spawn(store.clone(), rx, ingest_cfg, stats, stages)
        .context("starting the ingest thread")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        tracing::info!(listen = %listener.local_addr()?, data_dir = %dir.display(), "weir agent serving");
        if let Some(addr) = a.otlp_listen {
            let otlp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the OTLP listener {addr}"))?;
            tracing::info!(listen = %otlp.local_addr()?, "receiving OTLP/HTTP");
            let app = weir_ui::otlp_router(state.clone());
            // Ends with the runtime (after the main listener's grace).
            tokio::spawn(weir_ui::serve::serve(
                otlp,
                app,
                state.clients.clone(),
                std::future::pending(),
                SHUTDOWN_GRACE,
            ));
        }
        // Open connections (a live tail, a plugin run) get a short grace after the signal,
        // then are cut: shutdown never waits on a client or a plugin.
        let clients = state.clients.clone();
        weir_ui::serve::serve(
            listener,
            weir_ui::router(state),
            clients,
            shutdown_signal(),
            SHUTDOWN_GRACE,
        )
        .await;
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down: draining kernel maps and flushing storage");
    alerts_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    // Plugin calls in progress end now (a rule asleep in a call included).
    if let Some(reg) = &registry {
        reg.cancel_all();
    }
    // Flows first: the alert thread may be inside a rule's call, which ends at its deadline;
    // nothing it does holds up the flush.
    if let Some(c) = capture {
        c.stop();
    }
    rt.shutdown_timeout(Duration::from_millis(500));
    let _ = ingest_thread.join();
    if let Some(t) = alerts_thread {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!("the alert thread is still in a plugin call: leaving it");
        }
    }
    if let Some(reg) = &registry {
        reg.persist_state();
    }
    drop(registry);
    tracing::info!("stopped");
    Ok(())
}

/// Batches waiting for the ingest stage before their senders wait too. An eviction of 100 k
/// flows hands them on in chunks ([`weir_ebpf`]'s `EVICT_CHUNK`); with a deep queue they all
/// waited in memory at once (~1 KiB a flow) while the store took them at its own pace. Imports
/// each wait for their acknowledgement anyway, so a short queue costs them nothing. A store
/// slower than capture for long holds the evictor: the maps fill, packets go through the
/// ring buffer and, when that is full too, are counted lost (`kernel_ringbuf_lost`).
const INGEST_QUEUE: usize = 4;

/// How long open connections and a running alert pass get after SIGTERM before the agent
/// exits regardless.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long freed memory stays with the agent while imports stream in (mimalloc's default).
const PURGE_DELAY_IMPORTING_MS: std::ffi::c_long = 1000;
/// Imports count as streaming in until this long after the last one.
const IMPORTS_QUIET: Duration = Duration::from_secs(2);

/// Freed memory goes back to the OS at once while the agent only captures (what keeps a
/// node's footprint low between eviction bursts: see `purge_freed_memory_at_once`), and after
/// a second while imports stream in: the index writer gives up its indexing arena at every
/// commit (ten or more a second with group commit), and purging it at once made every next
/// segment fault its pages in again (docs/PERFORMANCE.md, "The API under load"). When imports
/// stop, what is held goes back (`set_purge_delay_ms` collects before lowering the delay),
/// yet 60-70 MiB more than an agent that never held stays resident after a large import: the
/// reason `--import-hold-memory` turns this on and the default leaves it off.
#[derive(Debug, Default)]
struct PurgePolicy {
    /// The import counter at the last look.
    seen: u64,
    last_import: Option<Instant>,
    /// Whether freed memory is held (the delay is [`PURGE_DELAY_IMPORTING_MS`]).
    holding: bool,
}

impl PurgePolicy {
    /// Takes the import counter now; answers the purge delay to set when it changes.
    fn tick(&mut self, imported: u64, now: Instant) -> Option<std::ffi::c_long> {
        if imported != self.seen {
            self.seen = imported;
            self.last_import = Some(now);
        }
        let importing = self
            .last_import
            .is_some_and(|t| now.saturating_duration_since(t) < IMPORTS_QUIET);
        if importing == self.holding {
            return None;
        }
        self.holding = importing;
        Some(if importing {
            PURGE_DELAY_IMPORTING_MS
        } else {
            0
        })
    }
}

/// Runs [`PurgePolicy`] on the ingest stage's import counter, five times a second.
/// `MIMALLOC_PURGE_DELAY`, when set, decides alone.
fn spawn_purge_policy(stats: Arc<IngestStats>) -> Result<()> {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("weir-purge".into())
        .spawn(move || {
            let mut policy = PurgePolicy::default();
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let imported = stats.imported.load(std::sync::atomic::Ordering::Relaxed);
                if let Some(ms) = policy.tick(imported, Instant::now()) {
                    crate::set_purge_delay_ms(ms);
                    tracing::debug!(purge_delay_ms = ms, "freed memory purge delay changed");
                }
            }
        })
        .context("starting the memory purge policy thread")?;
    Ok(())
}

/// Drops records older than the flows' retention age, and the oldest past `max` entries,
/// once a minute.
fn spawn_records_retention(
    records: Arc<weir_core::records::RecordStore>,
    age: Duration,
    max: usize,
) -> Result<()> {
    std::thread::Builder::new()
        .name("weir-records".into())
        .spawn(move || {
            loop {
                let before = if age.is_zero() {
                    0
                } else {
                    weir_core::query::now_ms().saturating_sub(age.as_millis() as u64)
                };
                match records.enforce_retention(before, max) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(dropped = n, "records retention"),
                    Err(e) => tracing::warn!(error = %e, "records retention failed"),
                }
                std::thread::sleep(Duration::from_secs(60));
            }
        })
        .context("starting the records retention thread")?;
    Ok(())
}

/// Runs the `--on-spike` correlators around each spike or gap in the volume
/// (weir_core::spikes), looking every 10 s; a plugin not installed yet is logged once.
fn spawn_spike_watch(
    plugins: Vec<String>,
    active_timeout: Duration,
    store: Arc<Store>,
    runner: Arc<dyn weir_core::plugins::PluginRunner>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    for p in &plugins {
        weir_core::plugins::check_plugin_name(p).map_err(|e| anyhow::anyhow!("--on-spike: {e}"))?;
    }
    tracing::info!(plugins = ?plugins, "running correlators around volume spikes");
    // Buckets no shorter than the active timeout: flows arrive once per timeout.
    let step_ms = (active_timeout.as_millis() as u64)
        .div_ceil(1000)
        .saturating_mul(1000)
        .max(weir_core::spikes::MIN_STEP_MS);
    let mut watch = weir_core::spikes::SpikeWatch::new(weir_core::spikes::SpikeWatchConfig {
        plugins,
        step_ms,
        ..Default::default()
    });
    std::thread::Builder::new()
        .name("weir-spikes".into())
        .spawn(move || {
            let mut missing = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = weir_core::query::now_ms();
                match watch.look(&store, &*runner, now) {
                    Ok(outcomes) => {
                        for o in outcomes {
                            match o {
                                weir_core::spikes::Outcome::Ran {
                                    plugin,
                                    spike,
                                    annotations,
                                } => {
                                    missing.remove(&plugin);
                                    tracing::info!(plugin = %plugin, from_ms = spike.from_ms, to_ms = spike.to_ms, change = ?spike.change, annotations, "ran around a volume spike");
                                }
                                weir_core::spikes::Outcome::NotLoaded { plugin } => {
                                    if missing.insert(plugin.clone()) {
                                        tracing::warn!(plugin = %plugin, "--on-spike: no such plugin loaded (install it: weir plugin install bundled:{plugin}); tried again at each spike");
                                    }
                                }
                                weir_core::spikes::Outcome::Failed {
                                    plugin,
                                    spike,
                                    error,
                                } => {
                                    tracing::warn!(plugin = %plugin, from_ms = spike.from_ms, error = %error, "failed around a volume spike");
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "looking for volume spikes"),
                }
                for _ in 0..20 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        })
        .context("starting the spike watch")?;
    Ok(())
}

/// Follows the operator's log files (`--log-file`) every two seconds, keeping new lines as
/// `log` records and each file's position in `<data>/log-sources.json`, so a restart resumes.
/// A file that cannot be read is logged when its problem changes, and retried.
fn spawn_log_files(
    paths: &[PathBuf],
    dir: &std::path::Path,
    telemetry: Arc<weir_core::telemetry::TelemetryService>,
) -> Result<()> {
    let state_file = dir.join("log-sources.json");
    let saved: serde_json::Map<String, serde_json::Value> = std::fs::read(&state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let paths = paths.to_vec();
    let mut sources: Vec<Box<dyn weir_core::telemetry::logfile::LogSource>> = paths
        .iter()
        .map(|p| weir_logs::open(p, saved.get(&p.display().to_string())))
        .collect();
    for s in &sources {
        tracing::info!(file = s.name(), kind = s.kind(), "following log file");
    }
    std::thread::Builder::new()
        .name("weir-log-files".into())
        .spawn(move || {
            let mut problems: Vec<Option<String>> = vec![None; sources.len()];
            loop {
                let since = weir_core::query::now_ms().saturating_sub(3_600_000);
                let mut moved = false;
                for ((s, problem), path) in sources.iter_mut().zip(problems.iter_mut()).zip(&paths)
                {
                    let before = s.position();
                    let now = match s.poll(10_000, since) {
                        Ok(lines) if lines.is_empty() => None,
                        Ok(lines) => match telemetry.keep_logs(s.kind(), &lines) {
                            Ok(_) => {
                                moved = true;
                                None
                            }
                            Err(e) => {
                                // Not kept: read them again next time.
                                *s = weir_logs::open(path, Some(&before).filter(|b| !b.is_null()));
                                Some(format!("keeping its lines failed: {e}"))
                            }
                        },
                        Err(e) => Some(e.message),
                    };
                    if now != *problem {
                        match &now {
                            Some(p) => {
                                tracing::warn!(file = s.name(), problem = %p, "log file not read")
                            }
                            None => tracing::info!(file = s.name(), "log file read again"),
                        }
                        *problem = now;
                    }
                }
                if moved {
                    let positions: serde_json::Map<String, serde_json::Value> = sources
                        .iter()
                        .map(|s| (s.name().to_string(), s.position()))
                        .collect();
                    if let Err(e) = std::fs::write(
                        &state_file,
                        serde_json::Value::Object(positions).to_string(),
                    ) {
                        tracing::warn!(error = %e, "cannot save the log files' positions");
                    }
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
        .context("starting the log files thread")?;
    Ok(())
}

/// Writes new Kubernetes events and NetworkPolicy changes into the records store every two
/// seconds (`weir_core::events`), so they stay past the API server's hour and reach the
/// timeline.
fn spawn_event_recorder(
    objects: Arc<dyn weir_core::objects::ObjectSource>,
    records: Arc<weir_core::records::RecordStore>,
) -> Result<()> {
    let mut rec =
        weir_core::events::EventRecorder::new(objects, records, weir_core::query::now_ms())
            .context("reading the Kubernetes events already recorded")?;
    std::thread::Builder::new()
        .name("weir-k8s-events".into())
        .spawn(move || {
            loop {
                match rec.poll(weir_core::query::now_ms()) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(records = n, "kubernetes events recorded"),
                    Err(e) => tracing::warn!(error = %e, "recording kubernetes events failed"),
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
        .context("starting the kubernetes events thread")?;
    Ok(())
}

/// Visualizations a new agent installs from the ones bundled in the binary.
const BUNDLED_VIEWS: &[&str] = &["sankey", "chord", "topology"];

/// Opens the plugin registry, keeps it in sync with the disk (installs made by `weir plugin`
/// take effect within two seconds), and runs flow-processor plugins on stored batches.
fn start_plugins(
    dir: &std::path::Path,
    store: Arc<Store>,
    metrics: Arc<weir_core::metrics::FlowMetrics>,
    policy: weir_host::SandboxPolicy,
    replay: bool,
) -> Result<(
    Arc<weir_host::registry::Registry>,
    weir_host::workers::PluginQueues,
)> {
    let rt = weir_host::Runtime::new(Some(dir.join("plugin-cache")))
        .context("starting the plugin runtime")?
        .with_policy(policy);
    tracing::info!(
        max_memory_mb = policy.max_memory_mb,
        max_timeout_ms = policy.max_timeout_ms,
        memory_budget_mb = policy.total_memory_mb,
        max_calls = policy.max_calls_per_plugin,
        "plugin ceilings"
    );
    let fresh = !dir.join("plugins").exists();
    let reg = Arc::new(
        if replay {
            // An incident's plugins answer outbound-http from what they got on its node.
            weir_host::registry::Registry::open_replay(
                &dir.join("plugins"),
                Arc::new(rt),
                Some(store),
            )
        } else {
            weir_host::registry::Registry::open(&dir.join("plugins"), Arc::new(rt), Some(store))
        }
        .context("opening the plugin registry")?
        .with_bundled(crate::bundled::BUNDLED),
    );
    if fresh {
        // A new agent starts with the bundled visualizations, so the UI has views to show;
        // they cost nothing until drawn and are removed like any plugin.
        for name in BUNDLED_VIEWS {
            let req = weir_host::registry::InstallRequest {
                source: format!("bundled:{name}").into(),
                ..Default::default()
            };
            match reg.install(&req) {
                Ok(_) => tracing::info!(plugin = name, "bundled visualization installed"),
                Err(e) => {
                    tracing::warn!(plugin = name, error = %e, "bundled visualization not installed")
                }
            }
        }
    }
    weir_host::registry::Registry::start_sync(&reg, metrics.clone())
        .context("starting the plugin sync thread")?;
    let samples: weir_host::workers::SampleSink = Arc::new(move |name, samples| {
        metrics.record_plugin(name, samples);
    });
    // Each batch-taking plugin on its own worker: one that blocks delays only itself.
    let queues = weir_host::workers::PluginQueues::start(&reg, samples)
        .context("starting the flow-processor thread")?;
    let n = reg.list().len();
    tracing::info!(installed = n, "plugins ready");
    // An upgraded binary keeps the bundled plugins installed before: said, with the command.
    for (name, was, now) in reg.stale_bundled() {
        tracing::warn!(plugin = %name, installed = %was, bundled = %now, "installed from an earlier release's bundled:{name}; `weir plugin upgrade bundled:{name}` (with its --config) takes this release's");
    }
    Ok((reg, queues))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    /// Freed memory is held while imports come and given back at once two seconds after the
    /// last; capture alone (the counter never moving) changes nothing.
    #[test]
    fn freed_memory_is_held_only_while_imports_stream_in() {
        use super::{Duration, Instant, PURGE_DELAY_IMPORTING_MS, PurgePolicy};
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut p = PurgePolicy::default();
        assert_eq!(
            p.tick(0, at(0)),
            None,
            "no import: purge at once, as set at start"
        );
        assert_eq!(p.tick(0, at(5_000)), None);
        assert_eq!(p.tick(5_000, at(5_200)), Some(PURGE_DELAY_IMPORTING_MS));
        assert_eq!(p.tick(10_000, at(5_400)), None, "already held");
        assert_eq!(
            p.tick(10_000, at(7_000)),
            None,
            "1.6 s without one: still streaming"
        );
        assert_eq!(
            p.tick(10_000, at(7_400)),
            Some(0),
            "2 s without one: given back"
        );
        assert_eq!(p.tick(10_000, at(9_000)), None);
        assert_eq!(p.tick(10_001, at(9_200)), Some(PURGE_DELAY_IMPORTING_MS));
    }

    /// `weir agent --help` shows the HTTP limits' defaults as literals; they must be the ones
    /// `weir_ui::limits::Limits::default()` gives (what tests and embedders get).
    #[test]
    fn http_limit_defaults_are_the_ui_crates() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            h: super::HttpArgs,
        }
        let h = Only::try_parse_from(["weir"]).expect("defaults").h;
        assert_eq!(
            h.limits().expect("valid defaults"),
            weir_ui::limits::Limits::default()
        );
    }
}
