//! An exporter into the cluster's ClickHouse: each flow one RowBinary row of the
//! `flows_ingest` table (columns named as the fields, NetObserv's names), only the columns some
//! flow of the insert fills (the table gives the rest their defaults), `Node` being the flow's
//! own (the agent's `--node`) or else config `node` (one of the two is required), addresses as
//! IPv6 text (IPv4 as `::ffff:a.b.c.d`, which the table's view turns into 16 bytes). Sent
//! through the HTTP sink the operator names (config `sink`) on the insert URL `weir server`
//! prints (`INSERT INTO ... flows_ingest`: each insert starts with its own column list and
//! format, see [`rowbinary`]), in inserts of at most `max_bytes` (default 8000000) cut at
//! rows. A column the table lacks (a newer agent, an older schema) is left out, with a
//! warning. The host's feed makes it resumable from the store and at-least-once.

mod rowbinary;

use rowbinary::{Cells, encode_text};
use std::borrow::Cow;
use std::collections::BTreeSet;
use weir_plugin_sdk::exporter::{
    Batch, Column, FlowBatch, Guest, PluginError, config, config_u64, destination, export,
    flow_fields, log, sink,
};

struct ClickHouseExport;

/// A field's values as RowBinary cells.
fn cells(col: &Column) -> Cells<'_> {
    match col {
        Column::Numbers(v) => Cells::Numbers(v),
        Column::Addrs(v) => Cells::Addrs(
            v.iter()
                .map(|a| (u128::from(a.hi) << 64) | u128::from(a.lo))
                .collect(),
        ),
        Column::Texts(t) => Cells::Texts {
            encoded: t.values.iter().map(|v| encode_text(v)).collect(),
            index: Cow::Borrowed(&t.index),
        },
    }
}

impl Guest for ClickHouseExport {
    fn export(batch: &FlowBatch) -> Result<(), PluginError> {
        let batch = Batch::new(batch);
        let fallback = config::get("node")
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty());
        let all: Vec<String> = flow_fields::fields().into_iter().map(|f| f.name).collect();
        // `Node`: the flow's own, else the fallback. An agent from before `Node` was a field
        // has no such column; then every flow takes the fallback.
        let node = if all.iter().any(|n| n == "Node") {
            match batch.field("Node")? {
                Column::Texts(t) => {
                    let encoded = t
                        .values
                        .iter()
                        .map(|v| match (v.is_empty(), &fallback) {
                            (false, _) => Some(encode_text(v)),
                            (true, Some(f)) => Some(encode_text(f)),
                            (true, None) => None,
                        })
                        .collect::<Vec<_>>();
                    // Refused whole, before anything is sent: a flow with no node anywhere.
                    if t.index
                        .iter()
                        .any(|&k| encoded.get(k as usize).is_none_or(Option::is_none))
                    {
                        return Err(no_node());
                    }
                    Cells::Texts {
                        encoded: encoded.into_iter().map(Option::unwrap_or_default).collect(),
                        index: Cow::Owned(t.index),
                    }
                }
                _ => return Err(PluginError::Failed("the Node field is not text".into())),
            }
        } else {
            match &fallback {
                Some(f) => Cells::Same(encode_text(f)),
                None if batch.is_empty() => return Ok(()),
                None => return Err(no_node()),
            }
        };
        let names: Vec<String> = all.into_iter().filter(|n| n != "Node").collect();
        let cols = names
            .iter()
            .map(|n| batch.field(n))
            .collect::<Result<Vec<_>, _>>()?;
        let dest = destination()?;
        let max = config_u64("max_bytes", 8_000_000)?.clamp(4096, 8_000_000) as usize;

        let mut all_names: Vec<&str> = vec!["Node"];
        all_names.extend(names.iter().map(String::as_str));
        let mut all_cells = vec![node];
        all_cells.extend(cols.iter().map(cells));
        // Columns ClickHouse said its table lacks, left out of this batch's resends (each
        // batch runs in an instance of its own, so each learns them again: one refused insert
        // per missing column, until `weir server --migrate-only` adds them).
        let mut missing: BTreeSet<&str> = BTreeSet::new();
        loop {
            let (names, cells): (Vec<&str>, Vec<&Cells>) = all_names
                .iter()
                .zip(&all_cells)
                .filter(|(n, _)| !missing.contains(*n))
                .map(|(n, c)| (*n, c))
                .unzip();
            if !batch.is_empty() && !cells.iter().any(|c| c.filled(0..batch.len())) {
                return Err(PluginError::Failed(
                    "ClickHouse's flows_ingest has none of the columns these flows fill: is the sink's URL weir's insert URL?".into(),
                ));
            }
            let mut sent_any = false;
            let result = rowbinary::payloads(&names, &cells, 0..batch.len(), max, |p| {
                sink::send(&dest, p)?;
                sent_any = true;
                Ok::<(), String>(())
            });
            let Err(e) = result else { return Ok(()) };
            // A column the table lacks, refused before anything of this batch went in: leave
            // it out and send the batch again.
            if !sent_any
                && let Some(col) = rowbinary::unknown_column(&e)
                && let Some(&col) = names.iter().find(|n| **n == col)
            {
                // Not among `names` once missing: each turn leaves out one more column.
                missing.insert(col);
                log::log(
                    log::Level::Warn,
                    &format!(
                        "ClickHouse's flows_ingest has no column {col} (its schema is older than this agent's fields): sending the flows without it; run weir server --migrate-only against it to add it"
                    ),
                );
                continue;
            }
            if rowbinary::json_url(&e) {
                return Err(PluginError::Failed(format!(
                    "{e} (the sink's URL names FORMAT JSONEachRow, as for clickhouse-export before 0.3.0: point the sink at the insert URL weir server --migrate-only prints, which ends in flows_ingest; each insert names its own columns and format)"
                )));
            }
            return Err(PluginError::Failed(e));
        }
    }
}

fn no_node() -> PluginError {
    PluginError::InvalidInput(
        "no node name: start the agent with --node NAME (or NODE_NAME), or install with --config node=NAME"
            .into(),
    )
}

export!(ClickHouseExport);
