//! `weir`: the command line. Wiring only; the work lives in the workspace crates.

mod agent;
mod bundled;
mod caps;
mod client;
mod demo;
mod incident_cmd;
mod output;
mod ovs_cmd;
mod plugin_build;
mod plugin_cmd;
mod policy_cmd;
mod private;
mod server_cmd;
mod summary_cmd;
mod units;

use anyhow::Result;

/// glibc malloc serializes tantivy's indexing threads on its arena locks; mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's option setter (linked in with the allocator).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    /// Collects the calling thread's heap; `force` also purges every arena's memory whose
    /// purge is scheduled (only while the purge delay is above 0).
    fn mi_collect(force: bool);
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// `mi_option_purge_delay`: its index in mimalloc's `mi_option_e` (v3 include/mimalloc.h).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// The agent gives freed memory back to the OS at once instead of after mimalloc's default
/// second: the eviction bursts otherwise leave their peak resident (see docs/PERFORMANCE.md,
/// 100 k active flows). `MIMALLOC_PURGE_DELAY` still wins when set (and then
/// [`agent`]'s purge policy leaves the option alone).
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set_purge_delay_ms(0);
    }
}

/// Sets how long mimalloc keeps freed memory before giving it back to the OS. Going down,
/// what is held is given back first (a forced collection runs every purge mimalloc has
/// scheduled, while the delay is still above 0).
pub(crate) fn set_purge_delay_ms(ms: std::ffi::c_long) {
    // SAFETY: an option read, a collection and an option store; mimalloc reads and writes
    // options atomically.
    unsafe {
        if ms < mi_option_get(MI_OPTION_PURGE_DELAY) {
            mi_collect(true);
        }
        mi_option_set(MI_OPTION_PURGE_DELAY, ms);
    }
}
use clap::{Parser, Subcommand};

/// Network flow observability on the node: eBPF capture, local flow history, queries.
#[derive(Parser, Debug)]
#[command(name = "weir", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent: capture flows with eBPF, store them, serve the API (needs root).
    Agent(Box<agent::AgentArgs>),
    /// Query stored flows (table by default, --json for scripts, --follow to tail).
    Flows(client::FlowsArgs),
    /// Top groups of flows: who talks to whom, top ports, top talkers.
    Top(client::TopArgs),
    /// Show capture features, attached interfaces, counters, storage and retention.
    Status(client::StatusArgs),
    /// List the flow fields the filter language and group-by accept.
    Fields(client::FieldsArgs),
    /// Show or change the agent's in-kernel filter rules (on live traffic, no restart).
    Filter(client::FilterArgs),
    /// Alerts: pending and firing, history, silences; run the rules now.
    Alerts(client::AlertsArgs),
    /// Records the agent keeps beside flows: decoded records, events, plugin annotations.
    Records(client::RecordsArgs),
    /// One trace received over OTLP (`weir agent` takes OpenTelemetry spans and logs on
    /// `/v1/traces` and `/v1/logs`): its spans, each joined to the connection that carried it
    /// (bytes, packets, RTT, drops), and its log lines.
    Trace(client::TraceArgs),
    /// Run a check plugin over a window: exit 0 on pass, 1 on fail, 2 when it cannot run
    /// (for CI: `weir check port-allowlist --from -1h || exit 1`).
    Check(client::CheckArgs),
    /// Edge summaries: a summarizer's top-N, cardinalities and quantiles (the bundled
    /// edge-summary: `weir summary edge-summary top talkers bytes`), per window or merged;
    /// save its snapshot (Apache DataSketches images) or merge another node's.
    Summary(summary_cmd::SummaryArgs),
    /// Install, list, enable, disable, upgrade and remove plugins (WebAssembly components).
    Plugin(plugin_cmd::PluginArgs),
    /// Open vSwitch datapath and OpenFlow flows: decode a dump file here (`-i FILE`, no agent
    /// needed) or read the agent's collections; tree, graph, OpenFlow tables; import dumps.
    Ovs(ovs_cmd::OvsArgs),
    /// Kubernetes network policies: truth tables, explanations, what selects what, probes of
    /// real connections (exit 1 on a difference), and what-if on stored history (exit 1 when
    /// a change would cut observed connections). Files need no agent and no cluster.
    Policy(policy_cmd::PolicyArgs),
    /// Incidents: export a window (flows, records, alerts, plugins, settings) as one file,
    /// optionally signed; verify one; open one as a read-only agent and UI that shows the
    /// same views (exit 2 on a bad or tampered file).
    Incident(incident_cmd::IncidentArgs),
    /// A demo for newcomers: network namespaces with web, DNS, bulk, scan and dropped traffic,
    /// an agent on them and its UI; removes everything on exit (needs root).
    Demo(demo::DemoArgs),
    /// The cluster view: the same web UI and flow API over every agent writing into one
    /// ClickHouse (`--clickhouse http://HOST:8123`); creates or migrates weir's schema there
    /// and prints what agents need to write into it.
    Server(server_cmd::ServerArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        // A verdict is an exit code: 0 pass, 1 fail, 2 could not run.
        Command::Check(a) => {
            return match client::check(a) {
                Ok(true) => std::process::ExitCode::SUCCESS,
                Ok(false) => std::process::ExitCode::from(1),
                Err(e) => {
                    eprintln!("weir: {e:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        // Exit codes for CI: 0 as expected, 1 a difference or a cut, 2 bad input or no run.
        Command::Incident(a) => {
            return match incident_cmd::run(a) {
                Ok(code) => std::process::ExitCode::from(code),
                Err(e) => {
                    eprintln!("weir: {e:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        Command::Policy(a) => {
            return match policy_cmd::run(a) {
                Ok(code) => std::process::ExitCode::from(code),
                // Bad input, or a run that could not be made (no agent answering): never
                // a verdict.
                Err(e) => {
                    eprintln!("weir: {e:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        Command::Agent(a) => {
            purge_freed_memory_at_once();
            agent::run(*a)
        }
        Command::Flows(a) => client::flows(a),
        Command::Top(a) => client::top(a),
        Command::Status(a) => client::status(a),
        Command::Fields(a) => client::fields(a),
        Command::Filter(a) => client::filter(a),
        Command::Alerts(a) => client::alerts(a),
        Command::Records(a) => client::records(a),
        Command::Trace(a) => client::trace(a),
        Command::Plugin(a) => plugin_cmd::run(a),
        Command::Summary(a) => summary_cmd::run(a),
        Command::Ovs(a) => ovs_cmd::run(a),
        Command::Demo(a) => demo::run_demo(a),
        Command::Server(a) => server_cmd::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            std::process::ExitCode::from(match e.downcast_ref::<client::BadRequest>() {
                Some(_) => 2,
                None => 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_mimalloc_reads() {
        // SAFETY: option reads and writes.
        unsafe {
            // mimalloc v3's default purge_delay is 1000 (ms, src/options.c): the index is right.
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            }
            purge_freed_memory_at_once();
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), 0);
            }
        }
    }
}
