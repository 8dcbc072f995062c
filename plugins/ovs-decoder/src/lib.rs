//! A decoder for Open vSwitch dumps, the bundled `ovs-decoder`.
//!
//! Input: the text of `ovs-appctl dpctl/dump-flows -m` (datapath flows in the ODP syntax) or
//! `ovs-ofctl dump-flows` (OpenFlow flows). The content type picks the syntax: `ovs/dpctl`,
//! `ovs/ofctl`, or anything else to tell each line by itself. A `; line=N` parameter numbers
//! the first line N (the agent decodes big dumps in chunks).
//!
//! Output: one record per flow, fields `kind` (`dp-flow`, `of-flow`), `line`, and `json`, the
//! flow's structure (see [`odp`] and [`ofp`] for its shape). A line that cannot be parsed is a
//! record of kind `error` with `line`, `column` and `message`; the rest of the dump is still
//! decoded. Headers (`flow-dump from ...`, `NXST_FLOW reply ...`) and blank lines are skipped.

mod json;
mod odp;
mod ofp;
mod syntax;

use weir_plugin_sdk::decoder::{Decoded, Guest, PluginError, export};

struct OvsDecoder;

/// Which syntax the caller said the dump is in.
#[derive(Clone, Copy, PartialEq)]
enum Syntax {
    Datapath,
    OpenFlow,
    Either,
}

fn record(fields: Vec<(&str, String)>) -> Decoded {
    Decoded {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

/// Lines that carry no flow: dump headers and blanks.
fn is_header(line: &str) -> bool {
    let t = line.trim();
    t.is_empty()
        || t.starts_with("flow-dump from")
        || t.starts_with("NXST_")
        || t.starts_with("OFPST_")
        || t.starts_with("OFPT_")
}

/// Decodes one line: `Ok(None)` for a header.
pub(crate) fn decode_line(
    line: &str,
    syntax: Syntax,
) -> Result<Option<(&'static str, String)>, syntax::ParseError> {
    if is_header(line) {
        return Ok(None);
    }
    let openflow = match syntax {
        Syntax::Datapath => false,
        Syntax::OpenFlow => true,
        Syntax::Either => line.contains(" actions=") || line.trim_start().starts_with("actions="),
    };
    Ok(Some(if openflow {
        ("of-flow", ofp::decode(line)?)
    } else {
        ("dp-flow", odp::decode(line)?)
    }))
}

impl Guest for OvsDecoder {
    fn decode(input: Vec<u8>, content_type: String) -> Result<Vec<Decoded>, PluginError> {
        // Checked whole first (fast for the ASCII a dump is); replaced bytes only when needed.
        let text = match std::str::from_utf8(&input) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(&input),
        };
        let mut parts = content_type.split(';').map(str::trim);
        let syntax = match parts.next().unwrap_or("") {
            "ovs/dpctl" | "text/x-ovs-dpctl" => Syntax::Datapath,
            "ovs/ofctl" | "text/x-ovs-ofctl" => Syntax::OpenFlow,
            _ => Syntax::Either,
        };
        let first = parts
            .filter_map(|p| p.strip_prefix("line="))
            .find_map(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(1);
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = (first + i as u64).to_string();
            match decode_line(line, syntax) {
                Ok(None) => {}
                Ok(Some((kind, json))) => out.push(record(vec![
                    ("kind", kind.into()),
                    ("line", n),
                    ("json", json),
                ])),
                Err(e) => out.push(record(vec![
                    ("kind", "error".into()),
                    ("line", n),
                    ("column", (e.at + 1).to_string()),
                    ("message", e.message),
                ])),
            }
        }
        Ok(out)
    }
}

export!(OvsDecoder);
