//! `weir incident`: export a window of a running agent as one file, check a file, and open
//! one as a read-only agent with its UI (`weir_core::incident` has the format).

use crate::client::{self, Server};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use weir_core::incident::{Incident, Signature};

#[derive(Args, Debug)]
pub struct IncidentArgs {
    #[command(subcommand)]
    command: IncidentCommand,
}

#[derive(Subcommand, Debug)]
enum IncidentCommand {
    /// Write a window of the agent's history to one file: flows (matching --filter), records
    /// (spans, logs, events, annotations...), alerts and silences, the installed plugins
    /// (components, grants, config, state) and the agent's settings, with a manifest of
    /// sha256 hashes, optionally signed.
    Export(ExportArgs),
    /// Check a file: every member against the manifest, and the signature against trusted
    /// keys. Exit 0 when sound, 2 when not.
    Verify(VerifyArgs),
    /// Serve an incident file as a read-only agent with its UI (no capture, changes refused,
    /// the clock of the agent and its plugins stopped at the incident's end), so every view
    /// shows what the exporting node showed. Ctrl-C stops it.
    Open(OpenArgs),
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Start of the window: -15m, 2h, Unix time, or 2026-01-31T12:00:00Z.
    #[arg(long, allow_hyphen_values = true)]
    from: String,
    /// End of the window (default: now).
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Only the flows matching this filter (records, alerts and plugins are all kept).
    #[arg(long, default_value = "")]
    filter: String,
    /// The file to write (`-` for standard output).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Refuse windows holding more flows than this.
    #[arg(long, default_value_t = weir_core::incident::DEFAULT_MAX_FLOWS)]
    max_flows: usize,
    /// Sign the manifest with this ed25519 secret key (as made by `weir plugin keygen`).
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    file: PathBuf,
    #[command(flatten)]
    trust: Trust,
    /// Print the manifest and the signer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Clone)]
struct Trust {
    /// Public keys (`*.pub`): the file must be signed by one of them.
    #[arg(long, value_name = "DIR")]
    trusted_keys: Option<PathBuf>,
    /// Refuse a file that is not signed (given --trusted-keys, a signature by one of them is
    /// always required).
    #[arg(long)]
    require_signature: bool,
}

#[derive(Args, Debug)]
struct OpenArgs {
    file: PathBuf,
    /// Where the replay keeps its stores: a new or empty directory (default: a temporary one,
    /// removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the replay's web UI and API.
    #[arg(long, default_value = "127.0.0.1:9978")]
    listen: SocketAddr,
    /// Access token file, needed to listen beyond loopback.
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    trust: Trust,
}

pub fn run(a: IncidentArgs) -> Result<u8> {
    match a.command {
        IncidentCommand::Export(e) => export(e).map(|_| 0),
        IncidentCommand::Verify(v) => verify_cmd(v),
        IncidentCommand::Open(o) => open(o).map(|_| 0),
    }
}

/// Largest incident file the CLI downloads.
const MAX_FILE: u64 = 4 << 30;

fn export(a: ExportArgs) -> Result<()> {
    let max = a.max_flows.to_string();
    let mut q = vec![
        ("from", a.from.as_str()),
        ("filter", a.filter.as_str()),
        ("max_flows", max.as_str()),
    ];
    if let Some(t) = &a.to {
        q.push(("to", t));
    }
    eprintln!("weir: exporting the incident from {}...", a.from);
    let bytes = client::get_bytes(&a.server, "/api/v1/incident", &q, Some(&a.filter), MAX_FILE)?;
    let mut inc = Incident::from_bytes(&bytes).context("the agent's answer")?;
    let bytes = match &a.sign_key {
        Some(k) => {
            let secret =
                std::fs::read(k).with_context(|| format!("reading the key {}", k.display()))?;
            let (key_id, sig) = weir_host::signing::sign_detached(inc.manifest_bytes(), &secret)
                .with_context(|| k.display().to_string())?;
            inc.signature = Some(Signature {
                key_id,
                ed25519: sig,
            });
            inc.to_bytes()?
        }
        None => bytes,
    };
    if a.output.as_os_str() == "-" {
        std::io::stdout().lock().write_all(&bytes)?;
    } else {
        write_atomic(&a.output, &bytes)?;
    }
    let m = &inc.manifest;
    let summary = serde_json::json!({
        "file": a.output,
        "bytes": bytes.len(),
        "sha256": weir_core::incident::sha256_hex(&bytes),
        "from_ms": m.from_ms,
        "to_ms": m.to_ms,
        "filter": m.filter,
        "node": m.node,
        "counts": m.counts,
        "signed_by_key": inc.signature.as_ref().map(|s| s.key_id.clone()),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!(
            "weir: wrote {} ({} bytes): {}{}",
            a.output.display(),
            bytes.len(),
            counts_line(m),
            match &inc.signature {
                Some(s) => format!(", signed by key {}", s.key_id),
                None => String::new(),
            }
        );
    }
    Ok(())
}

fn counts_line(m: &weir_core::incident::Manifest) -> String {
    m.counts
        .iter()
        .map(|(k, v)| format!("{v} {}", k.escape_debug()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads and checks a file: every member, then the signature. Returns the incident and who
/// signed it (None: unsigned, or signed with no trusted keys given).
fn read_checked(file: &Path, trust: &Trust) -> Result<(Incident, Option<String>)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let inc = Incident::from_bytes(&bytes).with_context(|| file.display().to_string())?;
    // Trusted keys given: the file must be signed by one of them.
    let trusted = match &trust.trusted_keys {
        Some(d) => {
            if !d.is_dir() {
                bail!("--trusted-keys {}: not a directory", d.display());
            }
            let keys = weir_host::signing::load_trusted(d)?;
            if keys.is_empty() {
                bail!("--trusted-keys {}: holds no *.pub keys", d.display());
            }
            Some(keys)
        }
        None => None,
    };
    let signer = match (&inc.signature, &trusted) {
        (Some(s), Some(keys)) => Some(
            weir_host::signing::verify_detached(inc.manifest_bytes(), &s.key_id, &s.ed25519, keys)
                .with_context(|| format!("{}: incident.sig", file.display()))?,
        ),
        (None, Some(_)) => bail!(
            "{}: not signed, and --trusted-keys asks for a signature by one of them",
            file.display()
        ),
        (None, None) if trust.require_signature => bail!(
            "{}: not signed, and --require-signature was given",
            file.display()
        ),
        (Some(s), None) if trust.require_signature => bail!(
            "{}: signed by key {}, but no --trusted-keys were given to check it",
            file.display(),
            s.key_id.escape_debug()
        ),
        _ => None,
    };
    Ok((inc, signer))
}

fn verify_cmd(a: VerifyArgs) -> Result<u8> {
    let (inc, signer) = match read_checked(&a.file, &a.trust) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("weir: {e:#}");
            return Ok(2);
        }
    };
    let m = &inc.manifest;
    if a.json {
        let v = serde_json::json!({
            "manifest": m,
            "signature": inc.signature,
            "signed_by": signer,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: sound; {} to {} from {}{}: {}; {}",
            a.file.display(),
            weir_core::query::format_ms(m.from_ms),
            weir_core::query::format_ms(m.to_ms),
            m.node.escape_debug(),
            if m.filter.is_empty() {
                String::new()
            } else {
                format!(" (flows matching {})", m.filter.escape_debug())
            },
            counts_line(m),
            match (&inc.signature, &signer) {
                (_, Some(name)) => format!("signed by {name}"),
                (Some(s), None) => format!(
                    "signed by key {} (not checked: no --trusted-keys)",
                    s.key_id
                ),
                (None, None) => "not signed".to_string(),
            }
        );
    }
    Ok(0)
}

fn open(a: OpenArgs) -> Result<()> {
    let (inc, signer) = read_checked(&a.file, &a.trust)?;
    let m = inc.manifest.clone();
    let (dir, _temp) = match &a.data_dir {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(d)
                    .with_context(|| d.display().to_string())?
                    .next()
                    .is_some()
            {
                bail!(
                    "--data-dir {}: not empty; an incident opens into a new or empty directory",
                    d.display()
                );
            }
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("weir-incident-")
                .tempdir()
                .context("making a temporary data directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    restore(&inc, &dir)?;
    let what = format!(
        "{} ({} to {} from {})",
        a.file.display(),
        weir_core::query::format_ms(m.from_ms),
        weir_core::query::format_ms(m.to_ms),
        m.node.escape_debug()
    );
    eprintln!(
        "weir: opened {}: {}; {}; serving it read-only on http://{}",
        a.file.display(),
        counts_line(&m),
        match (&inc.signature, signer) {
            (_, Some(name)) => format!("signed by {name}"),
            (Some(s), None) => format!("signed by key {} (not checked)", s.key_id.escape_debug()),
            (None, None) => "not signed".to_string(),
        },
        a.listen
    );
    drop(inc);
    let args = crate::agent::AgentArgs::replay(dir, a.listen, a.token_file, what, m.to_ms)?;
    crate::agent::run(args)
}

/// Writes the incident into `dir` the way an agent keeps it: flows in the store, records,
/// alerts, and the plugins as installed.
fn restore(inc: &Incident, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let plugins_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugins_dir)?;
    for p in inc.plugins()? {
        weir_host::registry::Registry::restore_plugin(&plugins_dir, &p)
            .with_context(|| format!("restoring plugin {}", p.name))?;
    }
    let mut cfg = weir_core::StoreConfig::new(dir);
    // Partitions as the exporting agent cut them would not change any answer; the default
    // hour is kept. Nothing is dropped by age or size in a replay.
    cfg.retention_age_ms = 0;
    cfg.retention_bytes = 0;
    let store = weir_core::Store::open(cfg).context("opening the replay's store")?;
    let records = weir_core::records::RecordStore::open(&dir.join("records"))?;
    let alerts = weir_core::alerts::AlertStore::open(&dir.join("alerts"), Vec::new())?;
    weir_core::incident::restore(inc, &store, &records, &alerts)?;
    Ok(())
}
