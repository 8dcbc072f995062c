//! `weir ovs`: Open vSwitch datapath and OpenFlow dumps. With `-i FILE` the bundled
//! `ovs-decoder` plugin decodes the file here, in the sandbox, with no agent; without it the
//! agent's collections are read through the API. Also the agent's side: [`start`].

use crate::client::{Server, get_json, post_json};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weir_core::ovs::views::{FlowFilter, graph, tree};
use weir_core::ovs::{Decoded, DumpDecoder, OvsService, Syntax, decode_dump};

#[derive(Args, Debug)]
pub struct OvsArgs {
    #[command(subcommand)]
    action: OvsAction,
    #[command(flatten)]
    server: Server,
}

#[derive(clap::Subcommand, Debug)]
enum OvsAction {
    /// Datapath flows, one per line (`--json`: one document with a `flows` array whose
    /// objects keep OVS's names: ufid, recirc_id, in_port, packets, bytes, used, match,
    /// actions...).
    Flows(ViewArgs),
    /// The datapath tree: flows grouped by in_port, chained through recirculation, with
    /// packets per flow and per subtree (like `ovs-flowviz datapath tree`).
    Tree(ViewArgs),
    /// The recirculation graph: (recirc_id, in_port) nodes, output ports and conntrack zones,
    /// edges weighted by packets (`--dot` for Graphviz).
    Graph {
        #[command(flatten)]
        view: ViewArgs,
        /// Print Graphviz DOT.
        #[arg(long, conflicts_with = "json")]
        dot: bool,
    },
    /// OpenFlow tables with their flows and counters (`ovs-ofctl dump-flows`).
    Openflow(ViewArgs),
    /// Store dumps taken elsewhere in the running agent (FILE `-` or none: stdin).
    Import {
        files: Vec<PathBuf>,
        /// When the dumps were taken: -5m, Unix time, 2026-01-31T12:00:00Z (default: now).
        #[arg(long, allow_hyphen_values = true)]
        time: Option<String>,
        /// The datapath or bridge name to keep them under (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// `dpctl` or `ofctl` (default: told from the text).
        #[arg(long, value_parser = parse_syntax)]
        syntax: Option<Syntax>,
        #[arg(long)]
        json: bool,
    },
    /// The collections the agent keeps, and how live collection is going.
    Collections {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct ViewArgs {
    /// Decode this dump file here (`-` for stdin) instead of asking the agent.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    input: Option<PathBuf>,
    /// `dpctl` or `ofctl` (default: told from the text).
    #[arg(long, value_parser = parse_syntax)]
    syntax: Option<Syntax>,
    /// Keep flows matching all of: recirc_id=0x1 in_port=NAME ct_state=0x21/0x21 addr=IP
    /// action=ct output=PORT ufid=U text=SUBSTRING (space-separated).
    #[arg(short, long, default_value = "")]
    filter: String,
    /// The agent's collection to show (default: the newest).
    #[arg(long, conflicts_with = "input")]
    collection: Option<String>,
    /// The agent's newest collection taken at or before this time.
    #[arg(long, conflicts_with_all = ["input", "collection"], allow_hyphen_values = true)]
    at: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_syntax(s: &str) -> Result<Syntax, String> {
    match s {
        "dpctl" => Ok(Syntax::Dpctl),
        "ofctl" => Ok(Syntax::Ofctl),
        _ => Err(format!("{s:?}: write dpctl or ofctl")),
    }
}

/// The bundled decoder, loaded into a sandbox of its own.
pub struct LocalDecoder {
    _rt: weir_host::Runtime,
    decoder: weir_host::ovs::SandboxDecoder,
}

impl DumpDecoder for LocalDecoder {
    fn decode(
        &self,
        text: &str,
        syntax: Syntax,
        first_line: u64,
    ) -> Result<Vec<weir_core::ovs::DecodedFields>, weir_core::ovs::OvsError> {
        self.decoder.decode(text, syntax, first_line)
    }
}

/// Loads the bundled `ovs-decoder` (compiled components cached in `cache`).
pub fn local_decoder(cache: Option<PathBuf>) -> Result<LocalDecoder> {
    let b = crate::bundled::BUNDLED
        .iter()
        .find(|b| b.name == "ovs-decoder")
        .context(
            "this binary carries no bundled ovs-decoder plugin (build plugins/ before the binary)",
        )?;
    let rt = weir_host::Runtime::new(cache).context("starting the plugin runtime")?;
    let decoder = weir_host::ovs::SandboxDecoder::load(&rt, b.wasm, b.manifest)
        .context("loading the bundled ovs-decoder")?;
    Ok(LocalDecoder { _rt: rt, decoder })
}

fn read_input(path: &Path) -> Result<(String, String)> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the dump from stdin")?;
        return Ok((text, "stdin".into()));
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dump".into());
    Ok((text, name))
}

/// Decodes a file here; progress on stderr when it is a terminal and the dump is big.
fn decode_file(v: &ViewArgs, path: &Path) -> Result<Decoded> {
    let (text, name) = read_input(path)?;
    let syntax = v.syntax.unwrap_or_else(|| Syntax::detect(&text));
    let dec = local_decoder(None)?;
    let tty = std::io::stderr().is_terminal();
    let mut d = decode_dump(&dec, &text, syntax, &name, |done, total| {
        if tty && total > weir_core::ovs::CHUNK_LINES {
            eprint!("\rdecoding: {done}/{total} lines");
            if done == total {
                eprintln!();
            }
        }
    })?;
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or_else(weir_core::query::now_ms);
    d.set_time(mtime);
    for e in &d.errors {
        eprintln!(
            "weir: {}: line {} column {}: {}",
            name, e.line, e.column, e.message
        );
    }
    if d.flows.is_empty() && d.openflow.is_empty() && !d.errors.is_empty() {
        bail!("{name}: no line decodes ({} errors)", d.errors.len());
    }
    Ok(d)
}

fn view_query(v: &ViewArgs) -> Vec<(&'static str, String)> {
    let mut q = vec![("filter", v.filter.clone())];
    if let Some(c) = &v.collection {
        q.push(("collection", c.clone()));
    }
    if let Some(a) = &v.at {
        q.push(("at", a.clone()));
    }
    q
}

fn get(server: &Server, path: &str, q: &[(&'static str, String)]) -> Result<Value> {
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    get_json(server, path, &q, None)
}

fn actions_of(text: &str) -> &str {
    text.split_once("actions:")
        .map(|(_, a)| a.split(", dp-extra-info:").next().unwrap_or(a).trim())
        .unwrap_or("")
}

fn print_json(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn flows_table(rows: &[Value]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>6} {:>8} {:<12} {:>10} {:>12} {:>9}  actions",
        "line", "recirc", "in_port", "packets", "bytes", "used"
    )?;
    for f in rows {
        let used = match &f["used"] {
            Value::Number(n) => format!("{:.3}s", n.as_f64().unwrap_or(0.0)),
            other => other.as_str().unwrap_or("").to_string(),
        };
        writeln!(
            out,
            "{:>6} {:>8} {:<12} {:>10} {:>12} {:>9}  {}",
            f["line"].to_string(),
            format!("{:#x}", f["recirc_id"].as_u64().unwrap_or(0)),
            f["in_port"].as_str().unwrap_or(""),
            f["packets"].to_string(),
            f["bytes"].to_string(),
            used,
            f["actions_text"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

fn tree_text(
    out: &mut impl Write,
    nodes: &Value,
    flows: &Value,
    depth: usize,
) -> std::io::Result<()> {
    for n in nodes.as_array().into_iter().flatten() {
        let pad = "  ".repeat(depth * 2);
        writeln!(
            out,
            "{pad}[recirc_id {:#x} in_port {}] {} packets ({} with what follows)",
            n["recirc_id"].as_u64().unwrap_or(0),
            n["in_port"].as_str().unwrap_or(""),
            n["packets"],
            n["subtree_packets"]
        )?;
        for f in n["flows"].as_array().into_iter().flatten() {
            let i = f["index"].as_u64().unwrap_or(0) as usize;
            let ufid = f["ufid"].as_str().unwrap_or("-");
            writeln!(
                out,
                "{pad}  {}{} packets:{} bytes:{} actions:{}",
                if f["matches"].as_bool() == Some(false) {
                    "(path) "
                } else {
                    ""
                },
                ufid,
                f["packets"],
                f["bytes"],
                flows[i]["actions"].as_str().unwrap_or("")
            )?;
            tree_text(out, &f["children"], flows, depth + 1)?;
        }
    }
    Ok(())
}

fn dot(g: &Value) -> String {
    let mut s = String::from("digraph \"datapath flows\" {\n  rankdir=LR;\n");
    for n in g["nodes"].as_array().into_iter().flatten() {
        let shape = match n["kind"].as_str() {
            Some("output") => "ellipse",
            Some("ct") => "diamond",
            _ => "box",
        };
        s.push_str(&format!(
            "  {:?} [label={:?}, shape={shape}];\n",
            n["id"].as_str().unwrap_or(""),
            format!(
                "{}\\n{} packets",
                n["label"].as_str().unwrap_or(""),
                n["packets"]
            )
        ));
    }
    for e in g["edges"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  {:?} -> {:?} [label=\"{}\"{}];\n",
            e["from"].as_str().unwrap_or(""),
            e["to"].as_str().unwrap_or(""),
            e["packets"],
            if e["kind"] == "ct" {
                ", style=dashed"
            } else {
                ""
            }
        ));
    }
    s.push_str("}\n");
    s
}

pub fn run(a: OvsArgs) -> Result<()> {
    match a.action {
        OvsAction::Flows(v) => {
            let filter = FlowFilter::parse(&v.filter)?;
            let doc = match &v.input {
                Some(p) => {
                    let d = decode_file(&v, p)?;
                    let flows: Vec<Value> = d
                        .flows
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| filter.matches(f))
                        .map(|(i, f)| {
                            let mut j = f.to_json();
                            j["index"] = json!(i);
                            j
                        })
                        .collect();
                    json!({"flows": flows, "openflow": d.openflow, "errors": d.errors})
                }
                None => get(&a.server, "/api/v1/ovs/flows", &view_query(&v))?,
            };
            if v.json {
                return print_json(&doc);
            }
            let mut rows = doc["flows"].as_array().cloned().unwrap_or_default();
            for r in &mut rows {
                let text = r["text"].as_str().unwrap_or("").to_string();
                r["actions_text"] = json!(actions_of(&text));
            }
            flows_table(&rows)?;
            let of = doc["openflow"].as_array().map(Vec::len).unwrap_or(0);
            if of > 0 {
                eprintln!("({of} OpenFlow flows: weir ovs openflow -i FILE)");
            }
            Ok(())
        }
        OvsAction::Tree(v) => {
            let doc = match &v.input {
                Some(p) => {
                    let d = decode_file(&v, p)?;
                    let t = tree(&d.flows, &FlowFilter::parse(&v.filter)?);
                    let flows: Vec<Value> = d
                        .flows
                        .iter()
                        .map(|f| json!({"ufid": f.ufid, "text": f.text, "actions": actions_of(&f.text)}))
                        .collect();
                    json!({"tree": t, "flows": flows})
                }
                None => get(&a.server, "/api/v1/ovs/tree", &view_query(&v))?,
            };
            if v.json {
                return print_json(&doc);
            }
            let mut out = std::io::stdout().lock();
            tree_text(&mut out, &doc["tree"]["roots"], &doc["flows"], 0)?;
            for m in doc["tree"]["missing"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "missing [recirc_id {:#x} in_port {}]: no flows; the tree is incomplete there",
                    m[0].as_u64().unwrap_or(0),
                    m[1].as_str().unwrap_or("")
                )?;
            }
            Ok(())
        }
        OvsAction::Graph {
            view: v,
            dot: as_dot,
        } => {
            let g = match &v.input {
                Some(p) => {
                    let d = decode_file(&v, p)?;
                    serde_json::to_value(graph(&d.flows, &FlowFilter::parse(&v.filter)?))?
                }
                None => get(&a.server, "/api/v1/ovs/graph", &view_query(&v))?["graph"].clone(),
            };
            if v.json {
                return print_json(&json!({"graph": g}));
            }
            if as_dot {
                print!("{}", dot(&g));
                return Ok(());
            }
            let mut out = std::io::stdout().lock();
            for e in g["edges"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{} -> {}  {} packets, {} flows",
                    e["from"].as_str().unwrap_or(""),
                    e["to"].as_str().unwrap_or(""),
                    e["packets"],
                    e["flows"]
                )?;
            }
            Ok(())
        }
        OvsAction::Openflow(v) => {
            let doc = match &v.input {
                Some(p) => {
                    let d = decode_file(&v, p)?;
                    json!({"tables": weir_core::ovs::views::tables(&d.openflow), "flows": d.openflow})
                }
                None => {
                    // Filters are of datapath flows; the OpenFlow view takes none.
                    if !v.filter.trim().is_empty() {
                        bail!(
                            "--filter selects datapath flows: `weir ovs openflow` shows every OpenFlow rule"
                        );
                    }
                    let mut q = view_query(&v);
                    q.retain(|(k, _)| *k != "filter");
                    get(&a.server, "/api/v1/ovs/openflow", &q)?
                }
            };
            if v.json {
                return print_json(&doc);
            }
            let mut out = std::io::stdout().lock();
            for t in doc["tables"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{} table {}: {} packets, {} bytes{}",
                    t["bridge"].as_str().unwrap_or(""),
                    t["table"],
                    t["n_packets"],
                    t["n_bytes"],
                    match t["next_tables"].as_array() {
                        Some(n) if !n.is_empty() => format!(
                            " -> tables {}",
                            n.iter()
                                .map(|x| x.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        _ => String::new(),
                    }
                )?;
                for i in t["flows"].as_array().into_iter().flatten() {
                    let f = &doc["flows"][i.as_u64().unwrap_or(0) as usize];
                    // Datapath flows traced through the rule (a live switch's collection).
                    let made = match f["dp_flows"].as_array() {
                        Some(d) if !d.is_empty() => format!("  [{} datapath flows]", d.len()),
                        _ => String::new(),
                    };
                    writeln!(out, "  {}{made}", f["text"].as_str().unwrap_or(""))?;
                }
            }
            let used = |g: &Value| match g["rules"].as_array().map(Vec::len) {
                Some(0) | None => "unused".to_string(),
                Some(n) => format!("used by {n} rules"),
            };
            for g in doc["groups"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{} group {} ({}, {}): {}",
                    g["bridge"].as_str().unwrap_or(""),
                    g["group_id"],
                    g["type"].as_str().unwrap_or(""),
                    used(g),
                    g["buckets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|b| match b["weight"].as_u64() {
                            Some(w) =>
                                format!("[weight {w}] {}", b["actions"].as_str().unwrap_or("")),
                            None => b["actions"].as_str().unwrap_or("").to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(" | ")
                )?;
            }
            for m in doc["meters"].as_array().into_iter().flatten() {
                let unit = m["unit"].as_str().unwrap_or("");
                writeln!(
                    out,
                    "{} meter {} ({}): {}",
                    m["bridge"].as_str().unwrap_or(""),
                    m["meter_id"],
                    used(m),
                    m["bands"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|b| format!(
                            "{} over {} {unit}",
                            b["type"].as_str().unwrap_or(""),
                            b["rate"]
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
            }
            if let Some(n) = doc["traced"].as_u64() {
                writeln!(
                    out,
                    "{n} of {} datapath flows traced to their rules (weir agent --ovs-trace)",
                    doc["datapath_flows"]
                )?;
            }
            Ok(())
        }
        OvsAction::Import {
            files,
            time,
            name,
            syntax,
            json: as_json,
        } => {
            let files = if files.is_empty() {
                vec![PathBuf::from("-")]
            } else {
                files
            };
            let mut answers = Vec::new();
            for f in &files {
                let (text, file_name) = read_input(f)?;
                let mut body = json!({"text": text, "name": name.clone().unwrap_or(file_name)});
                if let Some(t) = &time {
                    body["time"] = json!(t);
                }
                if let Some(s) = syntax {
                    body["syntax"] = serde_json::to_value(s)?;
                }
                let v = post_json(&a.server, "/api/v1/ovs/import", &body)
                    .with_context(|| format!("importing {}", f.display()))?;
                if !as_json {
                    println!(
                        "{}: collection {}: {} datapath flows, {} OpenFlow flows, {} lines not decoded",
                        f.display(),
                        v["id"].as_str().unwrap_or("?"),
                        v["flows"],
                        v["openflow"],
                        v["errors"].as_array().map(Vec::len).unwrap_or(0)
                    );
                    for e in v["errors"].as_array().into_iter().flatten() {
                        eprintln!(
                            "weir: {}: line {} column {}: {}",
                            f.display(),
                            e["line"],
                            e["column"],
                            e["message"].as_str().unwrap_or("")
                        );
                    }
                }
                answers.push(v);
            }
            if as_json {
                print_json(&json!({"imported": answers}))?;
            }
            Ok(())
        }
        OvsAction::Collections { json: as_json } => {
            let v = get(&a.server, "/api/v1/ovs", &[])?;
            if as_json {
                return print_json(&v);
            }
            let st = &v["status"];
            println!(
                "live collection: {}{}",
                st["state"].as_str().unwrap_or("?"),
                st["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            for c in v["collections"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}  {:<6}  {} datapath flow lines, bridges: {}",
                    c["id"].as_str().unwrap_or(""),
                    weir_core::query::format_ms(c["time_ms"].as_u64().unwrap_or(0)),
                    c["origin"].as_str().unwrap_or(""),
                    c["dp_lines"],
                    c["bridges"]
                        .as_array()
                        .map(|b| b
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

/// The agent's OVS service: collections kept under `dir/ovs`, decoded by the bundled decoder
/// in its own sandbox; with `every`, a collector thread on the local switch.
pub fn start(
    dir: &Path,
    records: Arc<weir_core::records::RecordStore>,
    every: Option<Duration>,
    rundir: Option<PathBuf>,
    keep: usize,
    trace_max: usize,
    max_age: Duration,
) -> Result<Option<Arc<OvsService>>> {
    let dec = match local_decoder(Some(dir.join("plugin-cache"))) {
        Ok(d) => d,
        Err(e) if every.is_none() => {
            tracing::warn!(error = %format!("{e:#}"), "OVS support off");
            return Ok(None);
        }
        Err(e) => return Err(e.context("--ovs needs the bundled ovs-decoder")),
    };
    let store = weir_core::ovs::CollectionStore::open(&dir.join("ovs"))
        .with_context(|| format!("opening the OVS collections in {}", dir.display()))?;
    let svc = Arc::new(OvsService::new(store, Arc::new(dec), Some(records)));
    if let Some(every) = every {
        let src = weir_ovs::AppctlSource::new(weir_ovs::AppctlConfig {
            rundir,
            trace_max,
            ..Default::default()
        });
        svc.clone()
            .spawn_collector(
                Box::new(src),
                every,
                keep.max(1),
                max_age.as_millis() as u64,
            )
            .context("starting the OVS collector")?;
        tracing::info!(every_s = every.as_secs(), "OVS collection on");
    }
    Ok(Some(svc))
}
