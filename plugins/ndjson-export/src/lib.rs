//! An exporter: each flow as one JSON object per line with NetObserv's field names, sent to
//! the sink named by config `sink` (the first destination granted when unset), in payloads of
//! at most `max_bytes` (60000 by default, so one payload fits a UDP datagram) cut at line
//! ends. Config `fields` (comma-separated schema names) picks the fields; any field of the
//! schema works, read by name.

use weir_plugin_sdk::exporter::{
    Batch, FlowBatch, Guest, LinePayloads, PluginError, config, destination, export, push_json_line,
};

struct NdjsonExport;

/// The fields written when `fields` is not set.
const DEFAULT_FIELDS: &str = "TimeFlowStartMs,TimeFlowEndMs,SrcAddr,DstAddr,SrcPort,DstPort,Proto,Bytes,Packets,Interface,IfDirection,SrcK8S_Namespace,SrcK8S_Name,DstK8S_Namespace,DstK8S_Name";

impl Guest for NdjsonExport {
    fn export(batch: &FlowBatch) -> Result<(), PluginError> {
        let batch = Batch::new(batch);
        let names: Vec<String> = config::get("fields")
            .unwrap_or_else(|| DEFAULT_FIELDS.into())
            .split(',')
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect();
        let cols = names
            .iter()
            .map(|n| batch.field(n))
            .collect::<Result<Vec<_>, _>>()?;
        let dest = destination()?;
        let max = config::get("max_bytes")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(60_000)
            .max(1024);
        let mut out = LinePayloads::new(dest, max);
        let mut line = String::new();
        for i in 0..batch.len() {
            line.clear();
            push_json_line(&mut line, "", &names, &cols, i, false);
            out.push(&line)?;
        }
        out.flush()
    }
}

export!(NdjsonExport);
