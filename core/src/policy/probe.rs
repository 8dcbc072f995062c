//! The observed truth table: a real connection for every cell, from inside the source pod's
//! network namespace on this node (found by its address) to the destination pod's address.
//! TCP counts as allowed when the handshake completes, UDP when an answer comes back;
//! anything else (refused, unreachable, timed out, silent) is blocked, as cyclonus counts it.

use super::table::{ALLOWED, BLOCKED, SELF, Table, UNKNOWN};
use super::{PortProto, Protocol};
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

/// Probes every cell of `pods` (`(ns/name, address)`, in table order) for each port.
/// Returns the observed table, each cell's outcome name (`connected`, `timed-out`...), and the
/// pods that could not be sources (no address, or no namespace on this node holds it).
pub fn observe(
    prober: &dyn Prober,
    pods: &[(String, Option<IpAddr>)],
    ports: &[PortProto],
    opts: ProbeOptions,
) -> (Table, Vec<Vec<Vec<String>>>, Vec<Unprobed>) {
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
    for (g, port) in ports.iter().enumerate() {
        // The prober speaks TCP and UDP; SCTP cells stay unknown.
        if port.protocol == Protocol::Sctp {
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
                        protocol: match port.protocol {
                            Protocol::Udp => crate::probe::Protocol::Udp,
                            _ => crate::probe::Protocol::Tcp,
                        },
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
    (table, outcomes.into_inner().unwrap_or_default(), unprobed)
}
