//! Truth tables: who can reach whom, per port and protocol, printed the way cyclonus and the
//! Kubernetes e2e suite print them (tab-separated, `-` then `ns/pod` columns, `.` allowed, `X`
//! blocked, `#` the pod itself), compared cell by cell, and written as JUnit XML for CI.

use super::{Findings, Objects, PolicyEngine, PolicyError, PortProto, evaluate, field};
use serde_json::{Map, Value, json};

/// Cell marks.
pub const ALLOWED: char = '.';
pub const BLOCKED: char = 'X';
pub const SELF: char = '#';
/// A cell that could not be observed (the source pod is not on this node).
pub const UNKNOWN: char = '?';

/// One port's matrix: `rows[i]` has one mark per destination, in `Table::pods` order.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub port: PortProto,
    pub rows: Vec<Vec<char>>,
}

/// Truth tables for some ports over the same pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub pods: Vec<String>,
    pub grids: Vec<Grid>,
}

/// The simulated table: what the policies allow.
pub fn simulate(
    engine: &dyn PolicyEngine,
    objects: &Objects,
    ports: &[PortProto],
    naive: bool,
) -> Result<(Table, Findings), PolicyError> {
    let mut extra = Map::new();
    extra.insert(
        "ports".into(),
        ports
            .iter()
            .map(|p| json!({"port": p.port, "protocol": p.protocol.name()}))
            .collect(),
    );
    if naive {
        extra.insert("naive".into(), Value::Bool(true));
    }
    let (records, problems) = evaluate(engine, objects, "table", extra)?;
    let pods: Vec<String> = records
        .iter()
        .find(|r| field(r, "kind") == "pods")
        .map(|r| serde_json::from_str(field(r, "json")))
        .transpose()
        .map_err(|e| PolicyError::Engine(format!("pod list: {e}")))?
        .unwrap_or_default();
    let mut grids: Vec<Grid> = ports
        .iter()
        .map(|p| Grid {
            port: *p,
            rows: Vec::with_capacity(pods.len()),
        })
        .collect();
    for r in records.iter().filter(|r| field(r, "kind") == "row") {
        let key = format!("{}/{}", field(r, "port"), field(r, "protocol"));
        let g = grids
            .iter_mut()
            .find(|g| g.port.to_string() == key)
            .ok_or_else(|| PolicyError::Engine(format!("a row for port {key} not asked")))?;
        g.rows.push(field(r, "cells").chars().collect());
    }
    for g in &grids {
        if g.rows.len() != pods.len() || g.rows.iter().any(|r| r.len() != pods.len()) {
            return Err(PolicyError::Engine(format!(
                "port {}: the table is not {n} x {n}",
                g.port,
                n = pods.len()
            )));
        }
    }
    Ok((Table { pods, grids }, problems))
}

impl Table {
    /// A table with every cell unknown but the diagonal.
    pub fn unknown(pods: Vec<String>, ports: &[PortProto]) -> Table {
        let n = pods.len();
        let grids = ports
            .iter()
            .map(|p| Grid {
                port: *p,
                rows: (0..n)
                    .map(|i| {
                        (0..n)
                            .map(|j| if i == j { SELF } else { UNKNOWN })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        Table { pods, grids }
    }

    /// The text form, one table per port preceded by `probe: PORT PROTOCOL`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (gi, g) in self.grids.iter().enumerate() {
            if gi > 0 {
                s.push('\n');
            }
            s.push_str(&render_grid(&self.pods, g));
        }
        s
    }

    /// Counts of allowed and blocked cells, per port.
    fn counts(g: &Grid) -> (usize, usize) {
        let all = g.rows.iter().flatten();
        let allowed = all.clone().filter(|c| **c == ALLOWED).count();
        let blocked = all.filter(|c| **c == BLOCKED).count();
        (allowed, blocked)
    }

    /// `{"pods": [...], "tables": [{"port", "protocol", "allowed", "blocked", "rows":
    /// [{"from", "cells", "blocked": [to...]}]}]}`.
    pub fn json(&self) -> Value {
        json!({
            "pods": self.pods,
            "tables": self.grids.iter().map(|g| {
                let (allowed, blocked) = Self::counts(g);
                json!({
                    "port": g.port.port,
                    "protocol": g.port.protocol.name(),
                    "allowed": allowed,
                    "blocked": blocked,
                    "rows": g.rows.iter().zip(&self.pods).map(|(r, from)| json!({
                        "from": from,
                        "cells": r.iter().collect::<String>(),
                        "blocked": r.iter().zip(&self.pods).filter(|(c, _)| **c == BLOCKED).map(|(_, p)| p.clone()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
        })
    }

    /// Cell by cell against `observed` (same pods and ports): `.` same, `X` different, `#`
    /// the diagonal, `?` not observed. Also the differing cells, as (port, from, to, expected,
    /// observed).
    pub fn compare(&self, observed: &Table) -> (Table, Vec<Difference>) {
        let mut diffs = vec![];
        let grids = self
            .grids
            .iter()
            .zip(&observed.grids)
            .map(|(e, o)| Grid {
                port: e.port,
                rows: e
                    .rows
                    .iter()
                    .zip(&o.rows)
                    .enumerate()
                    .map(|(i, (er, or))| {
                        er.iter()
                            .zip(or)
                            .enumerate()
                            .map(|(j, (ec, oc))| {
                                if i == j {
                                    SELF
                                } else if *oc == UNKNOWN {
                                    UNKNOWN
                                } else if ec == oc {
                                    ALLOWED
                                } else {
                                    diffs.push(Difference {
                                        port: e.port,
                                        from: self.pods[i].clone(),
                                        to: self.pods[j].clone(),
                                        expected: *ec == ALLOWED,
                                        observed: *oc == ALLOWED,
                                    });
                                    BLOCKED
                                }
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        (
            Table {
                pods: self.pods.clone(),
                grids,
            },
            diffs,
        )
    }
}

/// A cell where simulation and observation disagree.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Difference {
    pub port: PortProto,
    pub from: String,
    pub to: String,
    /// Whether the policies allow it, and whether the probe got through.
    pub expected: bool,
    pub observed: bool,
}

fn render_grid(pods: &[String], g: &Grid) -> String {
    let mut s = format!("probe: {} {}\n", g.port.port, g.port.protocol.name());
    s.push('-');
    for p in pods {
        s.push('\t');
        s.push_str(p);
    }
    s.push('\n');
    for (from, row) in pods.iter().zip(&g.rows) {
        s.push_str(from);
        for c in row {
            s.push('\t');
            s.push(*c);
        }
        s.push('\n');
    }
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML: one test case per probed cell (`from -> to port/PROTOCOL`), failed when the
/// observation differs from the expectation; unobserved cells are skipped.
pub fn junit(suite: &str, expected: &Table, observed: &Table, seconds: f64) -> String {
    let mut cases = String::new();
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    for (e, o) in expected.grids.iter().zip(&observed.grids) {
        for (i, (er, or)) in e.rows.iter().zip(&o.rows).enumerate() {
            for (j, (ec, oc)) in er.iter().zip(or).enumerate() {
                if i == j {
                    continue;
                }
                tests += 1;
                let name = format!("{} -> {} {}", expected.pods[i], expected.pods[j], e.port);
                let word = |c: char| if c == ALLOWED { "allowed" } else { "blocked" };
                cases.push_str(&format!(
                    "    <testcase classname=\"{}\" name=\"{}\">",
                    xml_escape(suite),
                    xml_escape(&name)
                ));
                if *oc == UNKNOWN {
                    skipped += 1;
                    cases.push_str("<skipped message=\"the source pod is not on this node\"/>");
                } else if ec != oc {
                    failures += 1;
                    cases.push_str(&format!(
                        "<failure message=\"expected {}, observed {}\"/>",
                        word(*ec),
                        word(*oc)
                    ));
                }
                cases.push_str("</testcase>\n");
            }
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" errors=\"0\" time=\"{seconds:.3}\">\n{cases}  </testsuite>\n</testsuites>\n",
        xml_escape(suite)
    )
}
