//! `weir plugin ...`: manage installed plugins. Works on the data directory directly; a
//! running agent picks changes up within two seconds (no restart).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use weir_host::Capability;
use weir_host::registry::{InstallRequest, Registry};

#[derive(Args, Debug)]
pub struct PluginArgs {
    /// The agent's data directory (plugins live in its `plugins/`).
    #[arg(long, env = "WEIR_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// A .wasm component (manifest embedded, or plugin.toml beside it) or a directory with
    /// plugin.toml and one .wasm.
    source: PathBuf,
    /// Refuse the file unless its sha256 is this (hex).
    #[arg(long)]
    sha256: Option<String>,
    /// Capabilities to grant, comma-separated (log, metrics, kv, flows, clock, config).
    /// Default: what the plugin asks for. `--grant ''` grants none.
    #[arg(long)]
    grant: Option<String>,
    /// Plugin configuration, KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Verify and install a plugin (test-loaded in the sandbox first; nothing is left behind
    /// when it is refused).
    Install(InstallArgs),
    /// Replace an installed plugin with a new file.
    Upgrade(InstallArgs),
    /// Installed plugins: kind, version, state, capabilities asked for and granted.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Everything about one plugin, with its limits and recent errors.
    Info {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable a plugin (also clears a disable caused by repeated failures).
    Enable { name: String },
    /// Disable a plugin without removing it.
    Disable { name: String },
    /// Remove a plugin.
    Remove { name: String },
    /// Scaffold a buildable Rust plugin: `weir plugin new flow-processor my-plugin`.
    New {
        /// flow-processor, visualization or alert-rule.
        kind: String,
        /// Plugin name (a-z, 0-9, '-'); also the directory created.
        name: String,
        /// Where the guest SDK is (default: the one in the weir source tree this binary was
        /// built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// Parent directory for the new plugin.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

fn registry(dir: Option<PathBuf>) -> Result<Registry> {
    let data = dir.unwrap_or_else(crate::agent::default_data_dir);
    let rt = weir_host::Runtime::new(Some(data.join("plugin-cache")))
        .context("starting the plugin runtime")?;
    Registry::open(&data.join("plugins"), Arc::new(rt), None)
        .with_context(|| format!("opening the plugin registry in {}", data.display()))
}

fn parse_grants(g: &Option<String>) -> Result<Option<Vec<Capability>>> {
    let Some(g) = g else { return Ok(None) };
    let mut out = Vec::new();
    for s in g.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match Capability::parse(s) {
            Some(c) => out.push(c),
            None => {
                bail!("unknown capability '{s}' (known: log, metrics, kv, flows, clock, config)")
            }
        }
    }
    Ok(Some(out))
}

fn parse_config(kv: &[String]) -> Result<BTreeMap<String, String>> {
    kv.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--config takes KEY=VALUE, got '{s}'"),
        })
        .collect()
}

fn caps(c: &[Capability]) -> String {
    if c.is_empty() {
        "-".into()
    } else {
        c.iter().map(|c| c.name()).collect::<Vec<_>>().join(",")
    }
}

pub fn run(a: PluginArgs) -> Result<()> {
    if let PluginCommand::New {
        kind,
        name,
        sdk,
        dir,
    } = &a.command
    {
        return scaffold(kind, name, sdk.clone(), dir);
    }
    let reg = registry(a.data_dir)?;
    let mut out = std::io::stdout().lock();
    match a.command {
        PluginCommand::Install(i) => install(&reg, i, false, &mut out)?,
        PluginCommand::Upgrade(i) => install(&reg, i, true, &mut out)?,
        PluginCommand::List { json } => {
            let list = reg.list();
            if json {
                serde_json::to_writer_pretty(&mut out, &list)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<20} {:<10} {:<15} {:<10} {:<24} {:<24}",
                    "NAME", "VERSION", "KIND", "STATE", "REQUESTED", "GRANTED"
                )?;
                for l in &list {
                    let state = match (&l.installed.enabled, &l.loaded, &l.load_error) {
                        (false, _, _) => "disabled".to_string(),
                        (true, Some(info), _) => match &info.state {
                            weir_host::PluginState::Enabled => "enabled".into(),
                            weir_host::PluginState::Disabled(_) => "failing".into(),
                        },
                        (true, None, Some(_)) => "error".into(),
                        (true, None, None) => "-".into(),
                    };
                    let m = &l.installed.manifest;
                    writeln!(
                        out,
                        "{:<20} {:<10} {:<15} {:<10} {:<24} {:<24}",
                        m.name,
                        m.version,
                        m.kind.world(),
                        state,
                        caps(&m.capabilities),
                        caps(&l.installed.granted)
                    )?;
                }
                writeln!(out, "{} plugins", list.len())?;
            }
        }
        PluginCommand::Info { name, json } => {
            let Some(l) = reg
                .list()
                .into_iter()
                .find(|l| l.installed.manifest.name == name)
            else {
                bail!("no plugin named {name} is installed (see `weir plugin list`)");
            };
            if json {
                serde_json::to_writer_pretty(&mut out, &l)?;
                writeln!(out)?;
            } else {
                let m = &l.installed.manifest;
                writeln!(
                    out,
                    "{} {} ({})\n  {}",
                    m.name,
                    m.version,
                    m.kind.world(),
                    m.description
                )?;
                writeln!(out, "  sha256      {}", l.installed.sha256)?;
                writeln!(out, "  requested   {}", caps(&m.capabilities))?;
                writeln!(out, "  granted     {}", caps(&l.installed.granted))?;
                writeln!(
                    out,
                    "  limits      {} MiB memory, {} ms per call",
                    m.limits.memory_mb, m.limits.timeout_ms
                )?;
                writeln!(out, "  enabled     {}", l.installed.enabled)?;
                if let Some(e) = &l.load_error {
                    writeln!(out, "  load error  {e}")?;
                }
                if let Some(i) = &l.loaded {
                    writeln!(out, "  calls       {} ({} failed)", i.calls, i.failures)?;
                    for e in &i.recent_errors {
                        writeln!(out, "  error       {e}")?;
                    }
                }
            }
        }
        PluginCommand::Enable { name } => {
            reg.set_enabled(&name, true)?;
            writeln!(out, "enabled {name}")?;
        }
        PluginCommand::Disable { name } => {
            reg.set_enabled(&name, false)?;
            writeln!(out, "disabled {name}")?;
        }
        PluginCommand::Remove { name } => {
            reg.remove(&name)?;
            writeln!(out, "removed {name}")?;
        }
        PluginCommand::New { .. } => {}
    }
    Ok(())
}

fn install(reg: &Registry, i: InstallArgs, upgrade: bool, out: &mut impl Write) -> Result<()> {
    let req = InstallRequest {
        source: i.source.clone(),
        sha256: i.sha256.clone(),
        grants: parse_grants(&i.grant)?,
        config: parse_config(&i.config)?,
        upgrade,
    };
    let m = reg.install(&req)?;
    writeln!(
        out,
        "{} {} ({}) {}\n  sha256    {}\n  requested {}\n  granted   {}",
        m.manifest.name,
        m.manifest.version,
        m.manifest.kind.world(),
        if upgrade { "upgraded" } else { "installed" },
        m.sha256,
        caps(&m.manifest.capabilities),
        caps(&m.granted)
    )?;
    Ok(())
}

const FLOW_PROCESSOR: &str = r#"//! A weir flow-processor: gets every stored batch of flows, returns metric samples.

use weir_plugin_sdk::flow_processor::{self, Flow, Guest, MetricKind, MetricSample, PluginError, Processed};

struct Plugin;

impl Guest for Plugin {
    fn process(batch: Vec<Flow>) -> Result<Processed, PluginError> {
        let bytes: u64 = batch.iter().map(|f| f.bytes * u64::from(f.sampling.max(1))).sum();
        Ok(Processed {
            samples: vec![MetricSample {
                name: "NAME_bytes".into(),
                kind: MetricKind::Counter,
                labels: Vec::new(),
                value: bytes as f64,
            }],
            annotations: Vec::new(),
        })
    }
}

flow_processor::export!(Plugin);
"#;

const VISUALIZATION: &str = r#"//! A weir visualization: draws a table of the top talkers.

use weir_plugin_sdk::visualization::weir::plugin::flows;
use weir_plugin_sdk::visualization::{self, Guest, Metric, PluginError, RenderRequest, Table, Value, View};

struct Plugin;

fn text(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Ip(ip) => weir_plugin_sdk::ip(ip.hi, ip.lo).to_string(),
        Value::Text(t) => t.clone(),
    }
}

impl Guest for Plugin {
    fn render(req: RenderRequest) -> Result<View, PluginError> {
        let groups = flows::aggregate(&req.filter, req.range, &["SrcAddr".to_string()], Metric::Bytes, 10)
            .map_err(PluginError::InvalidInput)?;
        let rows = groups.iter().map(|g| vec![g.key.iter().map(text).collect::<Vec<_>>().join(" "), g.bytes.to_string()]).collect();
        Ok(View::Table(Table { columns: vec!["SrcAddr".into(), "Bytes".into()], rows }))
    }
}

visualization::export!(Plugin);
"#;

const ALERT_RULE: &str = r#"//! A weir alert rule: fires when the window carries more bytes than `threshold` (config).

use weir_plugin_sdk::alert_rule::weir::plugin::{config, flows};
use weir_plugin_sdk::alert_rule::{self, Alert, Guest, Metric, PluginError, Severity, TimeRange};

struct Plugin;

impl Guest for Plugin {
    fn evaluate(window: TimeRange) -> Result<Vec<Alert>, PluginError> {
        let threshold: u64 = config::get("threshold").and_then(|t| t.parse().ok()).unwrap_or(1_000_000_000);
        let total: u64 = flows::aggregate("", window, &["Proto".to_string()], Metric::Bytes, 100)
            .map_err(PluginError::Failed)?
            .iter()
            .map(|g| g.bytes)
            .sum();
        if total <= threshold {
            return Ok(Vec::new());
        }
        Ok(vec![Alert {
            name: "NAME".into(),
            severity: Severity::Warning,
            summary: format!("{total} bytes in the window, above {threshold}"),
            labels: Vec::new(),
            time_ms: window.to_ms,
        }])
    }
}

alert_rule::export!(Plugin);
"#;

fn scaffold(kind: &str, name: &str, sdk: Option<PathBuf>, parent: &std::path::Path) -> Result<()> {
    let (template, caps) = match kind {
        "flow-processor" => (FLOW_PROCESSOR, "[]"),
        "visualization" => (VISUALIZATION, "[\"flows\"]"),
        "alert-rule" => (ALERT_RULE, "[\"flows\", \"config\"]"),
        other => bail!(
            "cannot scaffold a '{other}' plugin yet: use flow-processor, visualization or alert-rule"
        ),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("plugin name '{name}' must be a-z, 0-9 and '-'");
    }
    let sdk = match sdk {
        Some(p) => p,
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/sdk"),
    };
    if !sdk.join("Cargo.toml").exists() {
        bail!(
            "no guest SDK at {} (give --sdk PATH to weir's plugins/sdk)",
            sdk.display()
        );
    }
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("resolving {}", sdk.display()))?;
    let root = parent.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nweir-plugin-sdk = {{ path = \"{}\" }}\n\n[profile.release]\nopt-level = \"s\"\nlto = true\npanic = \"abort\"\n\n[workspace]\n",
            sdk.display()
        ),
    )?;
    std::fs::write(
        root.join("plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"0.1.0\"\nkind = \"{kind}\"\nwit = \"0.1\"\ndescription = \"\"\ncapabilities = {caps}\n\n[limits]\nmemory_mb = 16\ntimeout_ms = 1000\n"
        ),
    )?;
    std::fs::write(
        root.join("src/lib.rs"),
        template.replace("NAME", &name.replace('-', "_")),
    )?;
    println!(
        "created {}\n  build:   cargo build --release --target wasm32-wasip2 --manifest-path {}/Cargo.toml\n  install: weir plugin install {}/target/wasm32-wasip2/release/{}.wasm",
        root.display(),
        root.display(),
        root.display(),
        name.replace('-', "_")
    );
    Ok(())
}
