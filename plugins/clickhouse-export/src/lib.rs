//! An exporter into the cluster's ClickHouse: each flow as one JSONEachRow row with every
//! field of the schema (by its NetObserv name, as the `flows_ingest` table's columns are
//! named), `Node` being the flow's own (the agent's `--node`) or else config `node` (one of
//! the two is required), addresses as IPv6 text
//! (IPv4 as `::ffff:a.b.c.d`, which ClickHouse's `IPv6StringToNum` reads). Sent through the
//! HTTP sink the operator names (config `sink`) on the insert URL `weir server` prints, in
//! inserts of at most `max_bytes` (default 4000000) cut at row ends. The host's feed makes
//! it resumable from the store and at-least-once.

use weir_plugin_sdk::exporter::{
    Batch, FlowBatch, Guest, LinePayloads, PluginError, config, destination, export, flow_fields,
    push_json_line,
};
use weir_plugin_sdk::push_json_str;

struct ClickHouseExport;

impl Guest for ClickHouseExport {
    fn export(batch: &FlowBatch) -> Result<(), PluginError> {
        let batch = Batch::new(batch);
        let fallback = config::get("node").filter(|n| !n.trim().is_empty());
        // Every field the host knows but `Node`, written first; the table takes the ones it
        // has (`input_format_skip_unknown_fields`), so a newer agent writes into an older
        // schema. An agent from before `Node` was a field has no such column.
        let all: Vec<String> = flow_fields::fields().into_iter().map(|f| f.name).collect();
        let node_col = if all.iter().any(|n| n == "Node") {
            Some(batch.field("Node")?)
        } else {
            None
        };
        let names: Vec<String> = all.into_iter().filter(|n| n != "Node").collect();
        let cols = names
            .iter()
            .map(|n| batch.field(n))
            .collect::<Result<Vec<_>, _>>()?;
        let dest = destination()?;
        let max = config::get("max_bytes")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(4_000_000)
            .clamp(4096, 8_000_000);
        let mut out = LinePayloads::new(dest, max);
        let node_of = |i: usize| -> Option<&str> {
            node_col
                .as_ref()
                .and_then(|c| c.text(i))
                .filter(|n| !n.is_empty())
                .or(fallback.as_deref().map(str::trim))
        };
        // Refused whole, before anything is sent: a flow with no node anywhere.
        if (0..batch.len()).any(|i| node_of(i).is_none()) {
            return Err(PluginError::InvalidInput(
                "no node name: start the agent with --node NAME (or NODE_NAME), or install with --config node=NAME"
                    .into(),
            ));
        }
        let mut row = String::new();
        let mut head = String::new();
        for i in 0..batch.len() {
            let node = node_of(i).unwrap_or_default();
            head.clear();
            head.push_str("\"Node\":");
            push_json_str(&mut head, node);
            row.clear();
            push_json_line(&mut row, &head, &names, &cols, i, true);
            out.push(&row)?;
        }
        out.flush()
    }
}

export!(ClickHouseExport);
