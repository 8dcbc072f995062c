//! `weir summary NAME [QUERY]`: a summarizer's answer (the bundled `edge-summary`: top-N,
//! cardinalities, quantiles) over every kept window merged, or one window; its snapshot
//! saved to a file; another node's snapshot merged in.

use crate::client::{BadRequest, Server, get_bytes, post_bytes, post_json};
use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Queries of the bundled edge-summary:
  overview                      flows, bytes, distinct counts, p50/p99, the top item of each
  top DIMENSION METRIC [N]      DIMENSION: talkers, conversations, ports, workloads, dns;
                                METRIC: bytes, packets, flows (estimate with its bounds)
  distinct                      distinct sources, destinations, conversations, ports (95 %)
  spread peers|ports [N]        sources by distinct peers, destinations by distinct ports
  quantiles METRIC [GROUP]      rtt_us, dns_latency_us, flow_bytes, duration_ms; GROUP from
                                `groups` (if=eth0, wl=namespace/owner)
  groups, sketches              the per-group sketches; every sketch with its size

Examples:
  weir summary edge-summary top talkers bytes 20
  weir summary edge-summary quantiles rtt_us --windows     (one table per kept window)
  weir summary edge-summary --save node1.wsk               (the snapshot, DataSketches images)
  weir summary edge-summary --merge node2.wsk              (another node's, into this agent's)")]
pub struct SummaryArgs {
    /// The summarizer (installed, kind `summarizer`), e.g. edge-summary.
    name: String,
    /// The query (words; default `overview`).
    query: Vec<String>,
    /// Only the kept window starting at this time (ms, from --windows or --json).
    #[arg(long)]
    window: Option<u64>,
    /// Answer the query once per kept window, oldest first, then over all of them merged.
    #[arg(long, conflicts_with = "window")]
    windows: bool,
    /// Write the snapshot (every kept window merged) to this file instead of querying.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["merge", "query"])]
    save: Option<PathBuf>,
    /// Merge this snapshot file (another node's `--save`) into the current window.
    #[arg(long, value_name = "FILE", conflicts_with = "query")]
    merge: Option<PathBuf>,
    /// Print the answer as JSON (the view, the kept windows).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

/// Most bytes of a snapshot `--save` takes.
const MAX_SNAPSHOT: u64 = 256 << 20;

pub fn run(a: SummaryArgs) -> Result<()> {
    let path = format!("/api/v1/plugins/{}", a.name);
    let mut out = std::io::stdout().lock();
    if let Some(file) = &a.save {
        let bytes = get_bytes(
            &a.server,
            &format!("{path}/snapshot"),
            &[],
            None,
            MAX_SNAPSHOT,
        )?;
        std::fs::write(file, &bytes).with_context(|| format!("writing {}", file.display()))?;
        if a.json {
            writeln!(out, "{}", json!({"file": file, "bytes": bytes.len()}))?;
        } else {
            writeln!(out, "saved {} bytes to {}", bytes.len(), file.display())?;
        }
        return Ok(());
    }
    if let Some(file) = &a.merge {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let v = post_bytes(&a.server, &format!("{path}/merge"), &bytes)
            .with_context(|| format!("merging {}", file.display()))?;
        if a.json {
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "merged {} bytes from {}", bytes.len(), file.display())?;
        }
        return Ok(());
    }
    let query = a.query.join(" ");
    let ask = |window: Option<u64>| -> Result<Value> {
        let mut body = json!({"query": query});
        if let Some(w) = window {
            body["window_start_ms"] = json!(w);
        }
        let v = post_json(&a.server, &format!("{path}/run"), &body)?;
        if v["kind"] != "summarizer" {
            return Err(BadRequest(format!(
                "{} is not a summarizer (its kind: {})",
                a.name,
                v["kind"].as_str().unwrap_or("unknown")
            ))
            .into());
        }
        Ok(v["result"].clone())
    };
    let all = ask(a.window)?;
    if !a.windows {
        if a.json {
            serde_json::to_writer_pretty(&mut out, &all)?;
            writeln!(out)?;
        } else {
            print_view(&mut out, &all["view"])?;
        }
        return Ok(());
    }
    let starts: Vec<u64> = all["window_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["bytes"].as_u64().unwrap_or(0) > 0)
        .filter_map(|w| w["start_ms"].as_u64())
        .collect();
    let mut per = Vec::new();
    for s in starts {
        per.push((s, ask(Some(s))?));
    }
    if a.json {
        let windows: Vec<Value> = per
            .iter()
            .map(|(s, v)| json!({"start_ms": s, "view": v["view"]}))
            .collect();
        serde_json::to_writer_pretty(&mut out, &json!({"windows": windows, "all": all}))?;
        writeln!(out)?;
        return Ok(());
    }
    for (s, v) in &per {
        writeln!(out, "# window from {}", weir_core::query::format_ms(*s))?;
        print_view(&mut out, &v["view"])?;
        writeln!(out)?;
    }
    writeln!(out, "# all kept windows")?;
    print_view(&mut out, &all["view"])?;
    Ok(())
}

/// A table view as aligned columns; any other view as JSON.
fn print_view(out: &mut impl Write, view: &Value) -> Result<()> {
    if view["type"] != "table" {
        serde_json::to_writer_pretty(&mut *out, view)?;
        writeln!(out)?;
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("").escape_debug().to_string();
    let columns: Vec<String> = view["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let rows: Vec<Vec<String>> = view["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.as_array().into_iter().flatten().map(text).collect())
        .collect();
    let mut width: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(&columns))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    if rows.is_empty() {
        writeln!(out, "(no data yet)")?;
    }
    Ok(())
}
