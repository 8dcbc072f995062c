//! An exporter into the cluster's ClickHouse: each flow as one JSONEachRow row with every
//! field of the schema (by its NetObserv name, as the `flows_ingest` table's columns are
//! named) and `Node` (config `node`, required: the agent's node name), addresses as IPv6 text
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
        let node = config::get("node")
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                PluginError::InvalidInput(
                "config node is required: this agent's node name (e.g. --config node=$NODE_NAME)"
                    .into(),
            )
            })?;
        let mut head = String::from("\"Node\":");
        push_json_str(&mut head, node.trim());
        // Every field the host knows; the table takes the ones it has
        // (`input_format_skip_unknown_fields`), so a newer agent writes into an older schema.
        let names: Vec<String> = flow_fields::fields().into_iter().map(|f| f.name).collect();
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
        let mut row = String::new();
        for i in 0..batch.len() {
            row.clear();
            push_json_line(&mut row, &head, &names, &cols, i, true);
            out.push(&row)?;
        }
        out.flush()
    }
}

export!(ClickHouseExport);
