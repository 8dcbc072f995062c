//! The observed truth table: a real connection for every cell, from inside the source pod's
//! network namespace on this node (found by its address) to the destination pod's address.
//! TCP counts as allowed when the handshake completes, UDP when an answer comes back, SCTP
//! when the association is set up; anything else (refused, unreachable, timed out, silent) is
//! blocked, as cyclonus counts it. A port whose protocol the prober cannot speak here (SCTP on
//! a kernel without it) stays unknown (`?`), with the reason.

use super::PortProto;
use super::table::{ALLOWED, BLOCKED, SELF, Table, UNKNOWN};
use crate::probe::{Outcome, Prober, Target};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// How to probe.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOptions {
    /// Per connection attempt.
    pub timeout: Duration,
    /// Attempts in flight at once.
    pub parallel: usize,
}

/// A pod that could not be probed from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Unprobed {
    pub pod: String,
    pub reason: String,
}

/// A port that could not be probed at all.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UnprobedPort {
    pub port: PortProto,
    pub reason: String,
}

/// What the probes saw.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The observed table (`?` where nothing was probed).
    pub table: Table,
    /// Each cell's outcome name (`connected`, `timed-out`...; empty when not probed), per
    /// port, source and destination.
    pub outcomes: Vec<Vec<Vec<String>>>,
    /// Pods that could not be sources (no address, or no namespace on this node holds it).
    pub unprobed: Vec<Unprobed>,
    /// Ports whose protocol the prober cannot speak here.
    pub unprobed_ports: Vec<UnprobedPort>,
}

/// Probes every cell of `pods` (`(ns/name, address)`, in table order) for each port.
pub fn observe(
    prober: &dyn Prober,
    pods: &[(String, Option<IpAddr>)],
    ports: &[PortProto],
    opts: ProbeOptions,
) -> Observation {
    let names: Vec<String> = pods.iter().map(|(n, _)| n.clone()).collect();
    let mut table = Table::unknown(names, ports);
    let mut unprobed = vec![];
    let netns: Vec<Option<String>> = pods
        .iter()
        .map(|(name, ip)| {
            let found = ip.and_then(|ip| prober.locate(ip));
            if found.is_none() {
                unprobed.push(Unprobed {
                    pod: name.clone(),
                    reason: match ip {
                        None => "it has no address".into(),
                        Some(ip) => format!("no network namespace on this node holds {ip}"),
                    },
                });
            }
            found
        })
        .collect();
    let n = pods.len();
    let mut jobs = vec![];
    let mut unprobed_ports = vec![];
    for (g, port) in ports.iter().enumerate() {
        if let Err(e) = prober.supports(port.protocol) {
            unprobed_ports.push(UnprobedPort {
                port: *port,
                reason: e.to_string(),
            });
            continue;
        }
        for (i, ns) in netns.iter().enumerate() {
            let Some(ns) = ns else { continue };
            for (j, (_, ip)) in pods.iter().enumerate() {
                if i == j {
                    continue;
                }
                if let Some(ip) = ip {
                    jobs.push((g, i, j, ns.clone(), *ip, *port));
                }
            }
        }
    }
    let outcomes = Mutex::new(vec![vec![vec![String::new(); n]; n]; ports.len()]);
    let cells = Mutex::new(vec![]);
    let next = Mutex::new(jobs.into_iter());
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.max(1) {
            s.spawn(|| {
                loop {
                    let job = next.lock().ok().and_then(|mut it| it.next());
                    let Some((g, i, j, ns, ip, port)) = job else {
                        break;
                    };
                    let target = Target {
                        netns: ns,
                        addr: ip,
                        port: port.port,
                        protocol: port.protocol,
                        timeout: opts.timeout,
                    };
                    let (mark, word) = match prober.probe(&target) {
                        Ok((Outcome::Connected | Outcome::Answered, _)) => {
                            (ALLOWED, "connected".to_string())
                        }
                        Ok((o, _)) => (BLOCKED, o.name().to_string()),
                        Err(e) => (BLOCKED, format!("error: {e}")),
                    };
                    if let Ok(mut c) = cells.lock() {
                        c.push((g, i, j, mark));
                    }
                    if let Ok(mut o) = outcomes.lock() {
                        o[g][i][j] = word;
                    }
                }
            });
        }
    });
    for (g, i, j, mark) in cells.into_inner().unwrap_or_default() {
        table.grids[g].rows[i][j] = mark;
    }
    for grid in &mut table.grids {
        for (i, row) in grid.rows.iter_mut().enumerate() {
            row[i] = SELF;
            if netns[i].is_none() {
                for (j, c) in row.iter_mut().enumerate() {
                    if j != i {
                        *c = UNKNOWN;
                    }
                }
            }
        }
    }
    Observation {
        table,
        outcomes: outcomes.into_inner().unwrap_or_default(),
        unprobed,
        unprobed_ports,
    }
}
