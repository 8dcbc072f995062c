//! Human-readable tables.

use crate::units::human_bytes;
use serde_json::Value;
use std::io::Write;
use weir_core::flow::{flags_text, proto_name};
use weir_core::query::format_ms;

fn endpoint(addr: &Value, port: &Value, proto: u64) -> String {
    let a = addr.as_str().unwrap_or("-");
    let has_ports = matches!(proto, 6 | 17 | 132);
    match (has_ports, a.contains(':')) {
        (true, true) => format!("[{a}]:{}", port.as_u64().unwrap_or(0)),
        (true, false) => format!("{a}:{}", port.as_u64().unwrap_or(0)),
        _ => a.to_string(),
    }
}

pub fn flow_table(out: &mut impl Write, flows: &[Value], header: bool) -> std::io::Result<()> {
    if header {
        writeln!(
            out,
            "{:<24} {:<12} {:<4} {:<6} {:<42} {:<42} {:>10} {:>8} FLAGS",
            "END", "INTERFACE", "DIR", "PROTO", "SOURCE", "DESTINATION", "BYTES", "PACKETS"
        )?;
    }
    for f in flows {
        let proto = f["Proto"].as_u64().unwrap_or(0);
        let proto_txt = if proto == 0 {
            format!("0x{:04x}", f["Etype"].as_u64().unwrap_or(0))
        } else {
            proto_name(proto as u8)
        };
        let iface = match f["NetNs"].as_str() {
            Some(ns) if !ns.is_empty() => format!("{ns}/{}", f["Interface"].as_str().unwrap_or("")),
            _ => f["Interface"].as_str().unwrap_or("").to_string(),
        };
        let detail = if matches!(proto, 1 | 58) {
            format!("type {} code {}", f["IcmpType"], f["IcmpCode"])
        } else {
            flags_text(f["Flags"].as_u64().unwrap_or(0) as u16)
        };
        writeln!(
            out,
            "{:<24} {:<12} {:<4} {:<6} {:<42} {:<42} {:>10} {:>8} {}",
            format_ms(f["TimeFlowEndMs"].as_u64().unwrap_or(0)),
            iface,
            if f["IfDirection"].as_u64() == Some(1) {
                "out"
            } else {
                "in"
            },
            proto_txt,
            endpoint(&f["SrcAddr"], &f["SrcPort"], proto),
            endpoint(&f["DstAddr"], &f["DstPort"], proto),
            f["Bytes"].as_u64().unwrap_or(0),
            f["Packets"].as_u64().unwrap_or(0),
            detail
        )?;
    }
    Ok(())
}

pub fn top_table(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    let fields: Vec<String> = v["group_by"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for f in &fields {
        write!(out, "{f:<40} ")?;
    }
    writeln!(out, "{:>14} {:>12} {:>8}", "BYTES", "PACKETS", "FLOWS")?;
    for g in v["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        for f in &fields {
            let val = &g["key"][f];
            let s = val
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| val.to_string());
            write!(out, "{s:<40} ")?;
        }
        writeln!(
            out,
            "{:>14} {:>12} {:>8}",
            g["bytes"].as_u64().unwrap_or(0),
            g["packets"].as_u64().unwrap_or(0),
            g["flows"].as_u64().unwrap_or(0)
        )?;
    }
    let t = &v["total"];
    writeln!(
        out,
        "{} groups; total {} ({} bytes), {} packets, {} flows",
        v["group_count"],
        human_bytes(t["bytes"].as_u64().unwrap_or(0)),
        t["bytes"],
        t["packets"],
        t["flows"]
    )
}

pub fn status(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    writeln!(
        out,
        "weir {}  up {}s",
        v["version"].as_str().unwrap_or("?"),
        v["uptime_s"]
    )?;
    match v.get("capture").filter(|c| !c.is_null()) {
        None => writeln!(out, "\ncapture: off")?,
        Some(c) => {
            writeln!(out, "\ncapture features:")?;
            for f in c["features"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                writeln!(
                    out,
                    "  [{}] {:<18} {}",
                    if f["enabled"].as_bool() == Some(true) {
                        "on "
                    } else {
                        "off"
                    },
                    f["name"].as_str().unwrap_or(""),
                    f["detail"].as_str().unwrap_or("")
                )?;
            }
            writeln!(
                out,
                "  active timeout {} ms, max flows {}, sampling {}",
                c["active_timeout_ms"], c["max_flows"], c["sampling"]
            )?;
            writeln!(out, "\ninterfaces:")?;
            for i in c["interfaces"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let ns = i["netns"].as_str().unwrap_or("");
                writeln!(
                    out,
                    "  {:<28} ifindex {:<5} {}",
                    if ns.is_empty() {
                        i["name"].as_str().unwrap_or("").to_string()
                    } else {
                        format!("{ns}/{}", i["name"].as_str().unwrap_or(""))
                    },
                    i["ifindex"],
                    i["mode"].as_str().unwrap_or("")
                )?;
            }
            if let Some(errs) = c["attach_errors"].as_object().filter(|e| !e.is_empty()) {
                writeln!(out, "\nattach errors:")?;
                for (k, e) in errs {
                    writeln!(out, "  {k}: {}", e.as_str().unwrap_or(""))?;
                }
            }
            if let Some(rules) = c["filters"].as_array().filter(|r| !r.is_empty()) {
                writeln!(
                    out,
                    "\nfilter rules: {} (see `weir filter list`)",
                    rules.len()
                )?;
            }
            if let Some(ctl) = c["control"]
                .as_object()
                .filter(|o| o["controllers"].as_array().is_some_and(|l| !l.is_empty()))
            {
                writeln!(
                    out,
                    "\ncapture control (plugins; the operator's rules come first):"
                )?;
                for p in ctl["controllers"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    writeln!(
                        out,
                        "  {:<20} rules {}, sampling {}, {} changes, {} refused",
                        p["plugin"].as_str().unwrap_or(""),
                        p["rules"].as_array().map_or(0, Vec::len),
                        p["sampling"]
                            .as_u64()
                            .map_or("-".to_string(), |n| format!("1 in {n}")),
                        p["changes"],
                        p["refused"]
                    )?;
                }
                if let Some(last) = ctl["changes"].as_array().and_then(|l| l.last()) {
                    writeln!(
                        out,
                        "  last change by {}: {}",
                        last["by"].as_str().unwrap_or(""),
                        last["what"].as_str().unwrap_or("")
                    )?;
                }
            }
            writeln!(out, "\ncounters:")?;
            for (k, n) in c["counters"].as_object().into_iter().flatten() {
                writeln!(out, "  {k:<24} {n}")?;
            }
        }
    }
    let i = &v["ingest"];
    writeln!(
        out,
        "\ningest: {} flows in {} batches, {} flushes, {} errors",
        i["flows"], i["batches"], i["flushes"], i["errors"]
    )?;
    storage_sampling(out, &v["storage_sampling"])?;
    let sources: Vec<&Value> = match v.get("enrichment") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(e) if !e.is_null() => vec![e],
        _ => Vec::new(),
    };
    if sources.iter().all(|e| e["source"] == "node") {
        writeln!(
            out,
            "\nenrichment: none (give --inventory FILE or --kubernetes)"
        )?;
    }
    for e in sources {
        if e["source"] == "node" {
            writeln!(
                out,
                "\nnode: {} (on every flow that has none)",
                e["node"].as_str().unwrap_or("?")
            )?;
            continue;
        }
        writeln!(
            out,
            "\nenrichment: {} {} ({} entries)",
            e["source"].as_str().unwrap_or("?"),
            e["path"].as_str().unwrap_or(""),
            e["entries"]
        )?;
        if let Some(err) = e["error"].as_str() {
            writeln!(out, "  last error: {err}")?;
        }
    }
    let o = &v["ovs"];
    if o.is_object() {
        let every = o["every_s"].as_u64().unwrap_or(0);
        writeln!(
            out,
            "\novs: {}{}, {} collections kept",
            o["state"].as_str().unwrap_or("?"),
            if every > 0 {
                format!(" (collecting every {every} s)")
            } else {
                " (live collection off: --ovs INTERVAL)".to_string()
            },
            o["collections"]
        )?;
        if let Some(err) = o["error"].as_str() {
            writeln!(out, "  last error: {err}")?;
        }
    }
    let s = &v["storage"];
    let age = s["retention_age_ms"].as_u64().unwrap_or(0);
    let size = s["retention_bytes"].as_u64().unwrap_or(0);
    writeln!(
        out,
        "\nstorage: {}\n  {} flows, {} on disk in {} partitions of {} min ({} dropped)\n  retention: {}, {}",
        s["dir"].as_str().unwrap_or("?"),
        s["flows"],
        human_bytes(s["bytes"].as_u64().unwrap_or(0)),
        s["partitions"].as_array().map(Vec::len).unwrap_or(0),
        s["partition_ms"].as_u64().unwrap_or(0) / 60_000,
        s["dropped_partitions"],
        if age == 0 {
            "no age limit".to_string()
        } else {
            format!("{} h", age / 3_600_000)
        },
        if size == 0 {
            "no size limit".to_string()
        } else {
            human_bytes(size)
        }
    )?;
    let h = &v["http"];
    if h.is_object() {
        let n = |k: &str| h[k].as_u64().unwrap_or(0);
        writeln!(
            out,
            "\nhttp: {} connections open; refused since start: {} connections, {} requests, {} timed out, {} after wrong tokens ({} wrong tokens)",
            n("connections_open"),
            n("refused_connections"),
            n("refused_requests"),
            n("timed_out_requests"),
            n("locked_out_requests"),
            n("wrong_tokens")
        )?;
    }
    Ok(())
}

/// What storage sampling does: off, or each controller's rules and the last changes' reasons,
/// and the flows kept of those offered.
fn storage_sampling(out: &mut impl Write, s: &Value) -> std::io::Result<()> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect()
    };
    let controllers = s["controllers"].as_array().cloned().unwrap_or_default();
    if controllers.is_empty() {
        return writeln!(
            out,
            "\nstorage sampling: off, every flow stored (a plugin granted storage-sampling, e.g. bundled:sampling-controller, turns it on)"
        );
    }
    writeln!(
        out,
        "\nstorage sampling: {} of {} flows offered stored",
        s["kept"], s["offered"]
    )?;
    for c in &controllers {
        let rules = list(&c["rules"]);
        let shadow = list(&c["shadow_rules"]);
        writeln!(
            out,
            "  {}: {} changes, {} refused",
            c["plugin"].as_str().unwrap_or(""),
            c["changes"],
            c["refused"]
        )?;
        for r in &rules {
            writeln!(out, "    rule   {r}")?;
        }
        for r in &shadow {
            writeln!(out, "    shadow {r}")?;
        }
    }
    let changes = s["changes"].as_array().cloned().unwrap_or_default();
    for c in changes.iter().rev().take(3) {
        writeln!(
            out,
            "  change by {}{}: {}",
            c["by"].as_str().unwrap_or(""),
            if c["shadow"] == true { " (shadow)" } else { "" },
            c["reason"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}
