//! The Open vSwitch adapter: implements [`weir_core::ovs::OvsSource`] by running the switch's
//! own tools, so it works with any datapath (kernel, netdev/DPDK) and needs no OVSDB access.
//!
//! One collection runs, each with a timeout:
//! - `ovs-appctl dpctl/dump-dps`, then `dpctl/dump-flows -m DP` and `dpctl/dump-conntrack DP`
//!   per datapath, and `dpctl/show` (port numbers and names);
//! - `ovs-appctl dpif/show` for the bridges, then per bridge `ovs-ofctl dump-flows`,
//!   `dump-groups` and `dump-meters` (OpenFlow 1.3, through the bridge's management socket).
//!
//! - `ovs-appctl ofproto/trace MATCH` for the busiest datapath flows (at most
//!   [`AppctlConfig::trace_max`] a collection): which OpenFlow rules made each one.
//!
//! A switch that is not running is [`OvsError::Unavailable`] naming the command and what it
//! said; a failing per-bridge command is kept in the collection's `problems` and the rest is
//! still collected.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weir_core::ovs::trace::FlowTrace;
use weir_core::ovs::{
    BridgeDump, Collection, DatapathDump, OvsError, OvsSource, count_conntrack, parse_dpctl_show,
};

/// Where the switch is and how long its tools may take.
#[derive(Debug, Clone)]
pub struct AppctlConfig {
    /// The switch's run directory (`OVS_RUNDIR`: its control socket, `BRIDGE.mgmt` sockets);
    /// `None` for the tools' default (`/var/run/openvswitch`).
    pub rundir: Option<PathBuf>,
    /// Seconds each command may take.
    pub timeout_s: u32,
    /// Datapath flows traced per collection (`ofproto/trace`, one command each), the busiest
    /// by packets first; 0: none.
    pub trace_max: usize,
}

impl Default for AppctlConfig {
    fn default() -> Self {
        AppctlConfig {
            rundir: None,
            timeout_s: 10,
            trace_max: 64,
        }
    }
}

/// Collects by running `ovs-appctl` and `ovs-ofctl`.
pub struct AppctlSource {
    cfg: AppctlConfig,
}

impl AppctlSource {
    pub fn new(cfg: AppctlConfig) -> AppctlSource {
        AppctlSource { cfg }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<String, OvsError> {
        let timeout = format!("--timeout={}", self.cfg.timeout_s);
        let mut cmd = Command::new(tool);
        cmd.arg(&timeout).args(args);
        if let Some(d) = &self.cfg.rundir {
            cmd.env("OVS_RUNDIR", d);
        }
        let shown = format!("{tool} {}", args.join(" "));
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| OvsError::Unavailable(format!("{shown}: cannot run it: {e}")))?;
        if !out.status.success() {
            return Err(OvsError::Unavailable(format!(
                "{shown}: {}",
                tool_error(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        String::from_utf8(out.stdout)
            .map_err(|_| OvsError::Unavailable(format!("{shown}: output is not UTF-8")))
    }

    fn appctl(&self, args: &[&str]) -> Result<String, OvsError> {
        self.run("ovs-appctl", args)
    }

    /// `ovs-ofctl` on a bridge, through its management socket when the run directory is set.
    fn ofctl(&self, what: &str, bridge: &str) -> Result<String, OvsError> {
        let target = match &self.cfg.rundir {
            Some(d) => format!("unix:{}", d.join(format!("{bridge}.mgmt")).display()),
            None => bridge.to_string(),
        };
        self.run("ovs-ofctl", &["-O", "OpenFlow13", what, &target])
    }
}

/// What a tool said on stderr without its log lines (`2026-...Z|00001|daemon_unix|WARN|...`),
/// whose timestamps would make every failure look new.
pub fn tool_error(stderr: &str) -> String {
    let is_log = |l: &str| {
        l.len() > 20 && l.as_bytes()[..4].iter().all(u8::is_ascii_digit) && l.contains('|')
    };
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_log(l))
        .collect();
    if lines.is_empty() {
        "failed".into()
    } else {
        lines.join("; ")
    }
}

/// Bridge names from `dpif/show`: two-space-indented `NAME:` lines under each datapath.
pub fn bridges_of(dpif_show: &str) -> Vec<String> {
    dpif_show
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .filter_map(|l| l.trim().strip_suffix(':'))
        .map(str::to_string)
        .collect()
}

/// The busiest datapath flows of a `dpctl/dump-flows -m` text, at most `max`: each one's ufid
/// and match (the text between `ufid:..., ` and `, packets:`, which `ofproto/trace` takes).
pub fn to_trace(dump: &str, max: usize) -> Vec<(String, String)> {
    let mut v: Vec<(u64, String, String)> = dump
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("ufid:")?;
            let (ufid, rest) = rest.split_once(", ")?;
            let (matched, stats) = rest.split_once(", packets:")?;
            let packets = stats.split(',').next()?.trim().parse().ok()?;
            Some((packets, ufid.to_string(), matched.to_string()))
        })
        .collect();
    // Busiest first; the same order for equal counts on every round.
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    v.into_iter().take(max).map(|(_, u, m)| (u, m)).collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl AppctlSource {
    /// Traces the busiest flows of one datapath's dump into `c.traces`; failures are one
    /// problem line for the datapath (how many, and the first one's error).
    fn trace(&self, dp: &str, dump: &str, max: usize, c: &mut Collection) {
        let wanted = to_trace(dump, max);
        // The datapath's type (`netdev@ovs-netdev` -> `netdev`) names it to the command,
        // which otherwise only works on a switch with a single datapath.
        let dp_type = dp.split('@').next().unwrap_or(dp);
        let (mut failed, mut first) = (0, None);
        for (ufid, matched) in &wanted {
            match self.appctl(&["ofproto/trace", dp_type, matched]) {
                Ok(text) => c.traces.push(FlowTrace {
                    datapath: dp.to_string(),
                    ufid: ufid.clone(),
                    text,
                }),
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(e.to_string());
                }
            }
        }
        if let Some(e) = first {
            c.problems.push(format!(
                "ofproto/trace: {failed} of {} flows of {dp} not traced; first: {e}",
                wanted.len()
            ));
        }
    }
}

impl OvsSource for AppctlSource {
    fn collect(&self) -> Result<Collection, OvsError> {
        // The first command tells whether the switch is there at all.
        let dps: Vec<String> = self
            .appctl(&["dpctl/dump-dps"])?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let mut c = Collection {
            time_ms: now_ms(),
            origin: "live".into(),
            ..Default::default()
        };
        for dp in &dps {
            match self.appctl(&["dpctl/dump-flows", "-m", dp]) {
                Ok(text) => {
                    // One budget for the whole collection, the first datapaths first.
                    let budget = self.cfg.trace_max.saturating_sub(c.traces.len());
                    self.trace(dp, &text, budget, &mut c);
                    c.datapaths.push(DatapathDump {
                        name: dp.clone(),
                        text,
                    })
                }
                Err(e) => c.problems.push(e.to_string()),
            }
            match self.appctl(&["dpctl/dump-conntrack", dp]) {
                Ok(text) => c.conntrack.extend(count_conntrack(&text)),
                Err(e) => c.problems.push(e.to_string()),
            }
        }
        match self.appctl(&["dpctl/show"]) {
            Ok(text) => c.ports = parse_dpctl_show(&text),
            Err(e) => c.problems.push(e.to_string()),
        }
        match self.appctl(&["dpif/show"]) {
            Ok(text) => {
                for br in bridges_of(&text) {
                    let mut b = BridgeDump {
                        name: br.clone(),
                        ..Default::default()
                    };
                    match self.ofctl("dump-flows", &br) {
                        Ok(t) => b.flows = t,
                        Err(e) => c.problems.push(e.to_string()),
                    }
                    match self.ofctl("dump-groups", &br) {
                        Ok(t) => b.groups = t,
                        Err(e) => c.problems.push(e.to_string()),
                    }
                    match self.ofctl("dump-meters", &br) {
                        Ok(t) => b.meters = t,
                        Err(e) => c.problems.push(e.to_string()),
                    }
                    c.bridges.push(b);
                }
            }
            Err(e) => c.problems.push(e.to_string()),
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_errors_drop_log_lines() {
        let e = "2026-12-04T12:27:08Z|00001|daemon_unix|WARN|/x/ovs-vswitchd.pid: open: No such file or directory\novs-appctl: cannot read pidfile \"/x/ovs-vswitchd.pid\" (No such file or directory)\n";
        assert_eq!(
            tool_error(e),
            "ovs-appctl: cannot read pidfile \"/x/ovs-vswitchd.pid\" (No such file or directory)"
        );
        assert_eq!(tool_error(""), "failed");
    }

    #[test]
    fn the_busiest_flows_are_traced_by_their_match() {
        let dump = "flow-dump from the main thread:
ufid:aa, recirc_id(0),in_port(p1),eth_type(0x0800), packets:2, bytes:196, used:0.007s, dp:ovs, actions:ct(zone=5),recirc(0x1)
ufid:bb, recirc_id(0x1),in_port(p1),ct_state(0x22/0x23), packets:70, bytes:9000, used:0.001s, dp:ovs, actions:p2
ufid:cc, recirc_id(0),in_port(p2), packets:0, bytes:0, used:never, dp:ovs, actions:drop
recirc_id(0),in_port(p3), packets:9, bytes:0, used:never, actions:drop
";
        assert_eq!(
            to_trace(dump, 2),
            vec![
                (
                    "bb".to_string(),
                    "recirc_id(0x1),in_port(p1),ct_state(0x22/0x23)".to_string()
                ),
                (
                    "aa".to_string(),
                    "recirc_id(0),in_port(p1),eth_type(0x0800)".to_string()
                ),
            ]
        );
        assert_eq!(
            to_trace(dump, 10).len(),
            3,
            "a line without a ufid is not traced"
        );
        assert!(to_trace(dump, 0).is_empty());
    }

    #[test]
    fn bridges_from_dpif_show() {
        let text = "netdev@ovs-netdev: hit:12 missed:3\n  wbr:\n    ova 2/2: (system)\n    wbr 65534/1: (tap)\n  br2:\n    x 1/3: (system)\n";
        assert_eq!(bridges_of(text), vec!["wbr", "br2"]);
    }

    #[test]
    fn a_switch_that_is_not_running_is_unavailable_naming_the_command() {
        let dir = std::env::temp_dir().join(format!("weir-ovs-none-{}", std::process::id()));
        let s = AppctlSource::new(AppctlConfig {
            rundir: Some(dir),
            timeout_s: 2,
            trace_max: 4,
        });
        match s.collect() {
            Err(OvsError::Unavailable(m)) => assert!(m.contains("dpctl/dump-dps"), "{m}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}
