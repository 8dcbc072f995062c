//! An exporter: each flow as one JSON object per line with NetObserv's field names, sent to
//! the sink named by config `sink` (the first destination granted when unset), in payloads of
//! at most `max_bytes` (60000 by default, so one payload fits a UDP datagram) cut at line
//! ends. Config `fields` (comma-separated schema names) picks the fields; any field of the
//! schema works, read by name.

use weir_plugin_sdk::exporter::{
    Batch, Column, FlowBatch, Guest, PluginError, config, destination, export, sink,
};

struct NdjsonExport;

/// The fields written when `fields` is not set.
const DEFAULT_FIELDS: &str = "TimeFlowStartMs,TimeFlowEndMs,SrcAddr,DstAddr,SrcPort,DstPort,Proto,Bytes,Packets,Interface,IfDirection,SrcK8S_Namespace,SrcK8S_Name,DstK8S_Namespace,DstK8S_Name";

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_value(out: &mut String, col: &Column, i: usize) {
    if let Some(v) = col.numbers() {
        out.push_str(&v.get(i).copied().unwrap_or(0).to_string());
    } else if let Some(a) = col.addrs() {
        let text = a
            .get(i)
            .map(|ip| weir_plugin_sdk::ip(ip.hi, ip.lo).to_string())
            .unwrap_or_default();
        push_json_str(out, &text);
    } else {
        push_json_str(out, col.text(i).unwrap_or(""));
    }
}

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
        let mut payload = String::new();
        let mut line = String::new();
        for i in 0..batch.len() {
            line.clear();
            line.push('{');
            for (k, (name, col)) in names.iter().zip(&cols).enumerate() {
                if k > 0 {
                    line.push(',');
                }
                push_json_str(&mut line, name);
                line.push(':');
                push_value(&mut line, col, i);
            }
            line.push_str("}\n");
            if !payload.is_empty() && payload.len() + line.len() > max {
                sink::send(&dest, payload.as_bytes()).map_err(PluginError::Failed)?;
                payload.clear();
            }
            payload.push_str(&line);
        }
        if !payload.is_empty() {
            sink::send(&dest, payload.as_bytes()).map_err(PluginError::Failed)?;
        }
        Ok(())
    }
}

export!(NdjsonExport);
