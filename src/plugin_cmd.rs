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
    /// A .wasm component (manifest embedded, or plugin.toml beside it), a directory with
    /// plugin.toml and one .wasm, oci://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST], or
    /// bundled:NAME (a plugin shipped inside this binary, see `weir plugin list`).
    source: PathBuf,
    /// Refuse the file unless its sha256 is this (hex).
    #[arg(long)]
    sha256: Option<String>,
    /// Capabilities to grant, comma-separated (log, metrics, kv, flows, flow-stats,
    /// flow-fields, records, outbound-http, clock, config). Default: what the plugin asks for.
    /// `--grant ''` grants none.
    #[arg(long)]
    grant: Option<String>,
    /// What a scoped capability may reach, CAPABILITY=ENTRY (repeatable), replacing what the
    /// plugin asks for it: `--scope outbound-http=prometheus.monitoring:9090`
    /// (`host:port`, or `host:*` for any port).
    #[arg(long = "scope", value_name = "CAPABILITY=ENTRY")]
    scope: Vec<String>,
    /// Plugin configuration, KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Summarizers: the length of a window (30s, 5m, 1h; 0 for one window that never
    /// closes), in place of the plugin's own `[summarizer] window_secs`. Kept on upgrades.
    #[arg(long, value_name = "DURATION")]
    window: Option<String>,
    /// Summarizers: how many windows are kept (1-1440), in place of the plugin's own
    /// `[summarizer] windows`. Queries and snapshots cover every kept window.
    #[arg(long, value_name = "N")]
    windows: Option<u32>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    name: String,
    /// Window start: -15m, 2h, now, Unix time, or 2026-01-31T12:00:00Z.
    #[arg(long, default_value = "-5m", allow_hyphen_values = true)]
    from: String,
    /// Window end (default: now).
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Flows the plugin gets (flow-processor, correlator, summarizer) or is asked to draw
    /// (visualization), in the query language.
    #[arg(long, default_value = "")]
    filter: String,
    /// Visualization parameter KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Decoder input file ('-' for standard input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Decoder content type.
    #[arg(long, default_value = "text/plain")]
    content_type: String,
    /// Correlator event as JSON: {"time_ms":..,"source":..,"text":..,"labels":{..}} (repeatable).
    #[arg(long = "event", value_name = "JSON")]
    events: Vec<String>,
    /// Summarizer query.
    #[arg(long, default_value = "")]
    query: String,
    /// Summarizer: fold the window's flows in before querying.
    #[arg(long)]
    update: bool,
    /// Flow-processor, correlator: also keep the annotations in the agent's records store
    /// (on the timeline, `weir records --kind annotation`), as a background run does.
    #[arg(long)]
    keep: bool,
    /// Print the raw JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: crate::client::Server,
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
    /// Grant a capability to an installed plugin without reinstalling (a running agent
    /// reloads it): `weir plugin grant my-corr outbound-http --scope prom.monitoring:9090`.
    Grant {
        name: String,
        capability: String,
        /// What it may reach (scoped capabilities; repeatable), replacing the current scope.
        #[arg(long = "scope", value_name = "ENTRY")]
        scope: Vec<String>,
    },
    /// Revoke a capability (and its scope) from an installed plugin; one that imports it
    /// then stays installed but does not load, saying which capability it misses.
    Revoke { name: String, capability: String },
    /// Disable a plugin without removing it.
    Disable { name: String },
    /// Remove a plugin.
    Remove { name: String },
    /// Run a loaded plugin once in the running agent and print what it returns: an alert
    /// rule's alerts, a visualization's view, a flow-processor's samples over stored flows, a
    /// decoder's records, a correlator's annotations, a summarizer's view.
    Run(RunArgs),
    /// Make an ed25519 key pair for signing plugins: NAME.key (secret, mode 0600) and
    /// NAME.pub.
    Keygen {
        name: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a plugin: embeds its manifest (plugin.toml beside or above the file) when it has
    /// none, then an ed25519 signature, so one file travels.
    Sign {
        file: PathBuf,
        /// Secret key file (from `weir plugin keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Output file (default: FILE with `.signed.wasm`).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Trust a public key: from now on every install must be signed by a trusted key.
    Trust {
        /// Public key file (PEM, DER or raw 32 bytes).
        key: PathBuf,
        /// Name to keep it under (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Push a plugin to an OCI registry as a wasm artifact: `weir plugin push f.wasm
    /// oci://127.0.0.1:5000/weir/my-plugin:0.1.0`. The manifest is embedded first if needed.
    Push { file: PathBuf, reference: String },
    /// Scaffold a buildable plugin: `weir plugin new flow-processor my-plugin` (Rust), or an
    /// alert rule in Python or JavaScript: `weir plugin new alert-rule my-rule --lang python`.
    /// Then `weir plugin build my-rule --install`.
    New {
        /// flow-processor, visualization, alert-rule, correlator, decoder, summarizer, check or
        /// exporter.
        kind: String,
        /// Plugin name (a-z, 0-9, '-'); also the directory created.
        name: String,
        /// The language: rust, python (componentize-py) or javascript (jco); scripts are
        /// alert rules.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::plugin_build::Lang,
        /// Where the guest SDK is (Rust; default: the one in the weir source tree this binary
        /// was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// Parent directory for the new plugin.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build a plugin project into an installable directory, DIR/dist (plugin.toml + one
    /// component): Rust with cargo for wasm32-wasip2, Python (app.py) with componentize-py,
    /// JavaScript (package.json) with jco (installed with npm when the project has none).
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Install the result into the agent's data directory too (upgrading an installed
        /// plugin of the same name); a running agent picks it up within two seconds.
        #[arg(long)]
        install: bool,
        /// With --install: capabilities to grant (default: what plugin.toml asks for).
        #[arg(long)]
        grant: Option<String>,
        /// With --install: plugin configuration, KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
}

fn registry(dir: Option<PathBuf>) -> Result<Registry> {
    let data = dir.unwrap_or_else(crate::agent::default_data_dir);
    crate::private::data_dir(&data)?;
    let rt = weir_host::Runtime::new(Some(data.join("plugin-cache")))
        .context("starting the plugin runtime")?
        .with_policy(crate::agent::SandboxArgs::from_env()?.policy());
    Registry::open(&data.join("plugins"), Arc::new(rt), None)
        .map(|r| r.with_bundled(crate::bundled::BUNDLED))
        .with_context(|| format!("opening the plugin registry in {}", data.display()))
}

fn parse_capability(s: &str) -> Result<Capability> {
    Capability::parse(s.trim())
        .with_context(|| format!("unknown capability '{s}' (known: {})", Capability::known()))
}

/// `--scope CAPABILITY=ENTRY` flags, gathered per capability.
fn parse_scopes(flags: &[String]) -> Result<weir_host::scope::Scopes> {
    let mut out = weir_host::scope::Scopes::new();
    for f in flags {
        let Some((cap, entry)) = f.split_once('=') else {
            bail!("--scope takes CAPABILITY=ENTRY (e.g. outbound-http=prom:9090), got '{f}'");
        };
        out.entry(parse_capability(cap)?)
            .or_default()
            .push(entry.trim().to_string());
    }
    Ok(out)
}

/// What an installed plugin holds: `granted a,b; scopes: ...`.
fn holds(m: &weir_host::registry::Installed) -> String {
    format!("granted {}{}", caps(&m.granted), scopes_line(&m.scopes))
}

/// `; scopes: outbound-http: a:80` after a capability list, or nothing.
fn scopes_line(s: &weir_host::scope::Scopes) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; scopes: {}", weir_host::scope::describe(s))
    }
}

fn parse_grants(g: &Option<String>) -> Result<Option<Vec<Capability>>> {
    let Some(g) = g else { return Ok(None) };
    let mut out = Vec::new();
    for s in g.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match Capability::parse(s) {
            Some(c) => out.push(c),
            None => {
                bail!("unknown capability '{s}' (known: {})", Capability::known())
            }
        }
    }
    Ok(Some(out))
}

/// `--window`: whole seconds (`0`: one window).
fn window_secs(s: &str) -> Result<u64> {
    if s == "0" {
        return Ok(0);
    }
    let d = crate::units::duration(s).map_err(|e| anyhow::anyhow!("--window: {e}"))?;
    if d.subsec_millis() != 0 {
        anyhow::bail!("--window: '{s}' is not a whole number of seconds");
    }
    Ok(d.as_secs())
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
        lang,
        sdk,
        dir,
    } = &a.command
    {
        return scaffold(kind, name, *lang, sdk.clone(), dir);
    }
    if let PluginCommand::Build {
        dir,
        install: and_install,
        grant,
        config,
    } = &a.command
    {
        let dist = crate::plugin_build::build(dir)?;
        if !and_install {
            println!(
                "{}
  install: weir plugin install {}",
                dist.display(),
                dist.display()
            );
            return Ok(());
        }
        let reg = registry(a.data_dir.clone())?;
        let (_, given) = weir_host::registry::read_source(&dist)?;
        let installed = given
            .map(|(m, _)| {
                reg.list()
                    .iter()
                    .any(|l| l.installed.manifest.name == m.name)
            })
            .unwrap_or(false);
        let args = InstallArgs {
            source: dist,
            sha256: None,
            grant: grant.clone(),
            scope: Vec::new(),
            config: config.clone(),
            window: None,
            windows: None,
        };
        return install(&reg, args, installed, &mut std::io::stdout().lock());
    }
    match a.command {
        PluginCommand::Run(r) => return run_plugin(r),
        PluginCommand::Keygen { name, dir } => return keygen(&name, &dir),
        PluginCommand::Sign { file, key, output } => return sign(&file, &key, output),
        PluginCommand::Push { file, reference } => return push(&file, &reference),
        _ => {}
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
                let available: Vec<&str> = reg
                    .bundled()
                    .iter()
                    .map(|b| b.name)
                    .filter(|n| !list.iter().any(|l| l.installed.manifest.name == *n))
                    .collect();
                if !available.is_empty() {
                    writeln!(
                        out,
                        "bundled, not installed: {} (weir plugin install bundled:NAME)",
                        available.join(", ")
                    )?;
                }
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
        PluginCommand::Grant {
            name,
            capability,
            scope,
        } => {
            let cap = parse_capability(&capability)?;
            let scope = (cap.scoped() || !scope.is_empty()).then_some(scope);
            let m = reg.set_grant(&name, cap, true, scope)?;
            writeln!(out, "{name}: {}", holds(&m))?;
        }
        PluginCommand::Revoke { name, capability } => {
            let m = reg.set_grant(&name, parse_capability(&capability)?, false, None)?;
            writeln!(out, "{name}: {}", holds(&m))?;
        }
        PluginCommand::Disable { name } => {
            reg.set_enabled(&name, false)?;
            writeln!(out, "disabled {name}")?;
        }
        PluginCommand::Remove { name } => {
            reg.remove(&name)?;
            writeln!(out, "removed {name}")?;
        }
        PluginCommand::Trust { key, name } => {
            let data = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
            let pk = weir_host::signing::parse_public(&data, &key.display().to_string())?;
            let name = match name {
                Some(n) => n,
                None => key
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "key".into()),
            };
            let dir = reg.trusted_keys_dir();
            std::fs::create_dir_all(&dir)?;
            let dest = dir.join(format!("{name}.pub"));
            std::fs::write(&dest, &data)?;
            writeln!(
                out,
                "trusted {name} (key id {}) in {}\ninstalls now need a signature by a trusted key",
                weir_host::signing::key_id(&pk),
                dest.display()
            )?;
        }
        PluginCommand::New { .. }
        | PluginCommand::Build { .. }
        | PluginCommand::Run(_)
        | PluginCommand::Keygen { .. }
        | PluginCommand::Sign { .. }
        | PluginCommand::Push { .. } => {}
    }
    Ok(())
}

fn keygen(name: &str, dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let (secret, public) = weir_host::signing::generate();
    std::fs::create_dir_all(dir)?;
    let sk = dir.join(format!("{name}.key"));
    let pk = dir.join(format!("{name}.pub"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&sk)
        .with_context(|| format!("creating {} (it must not exist yet)", sk.display()))?;
    f.write_all(secret.as_bytes())?;
    std::fs::write(&pk, public.as_bytes())?;
    let key = weir_host::signing::parse_public(public.as_bytes(), "new key")?;
    println!(
        "secret key {}\npublic key {} (key id {})\nsign with:  weir plugin sign FILE.wasm --key {}\ntrust with: weir plugin trust {}",
        sk.display(),
        pk.display(),
        weir_host::signing::key_id(&key),
        sk.display(),
        pk.display()
    );
    Ok(())
}

/// The component with its manifest embedded (from plugin.toml when it had none).
fn with_manifest(file: &std::path::Path) -> Result<(Vec<u8>, weir_host::Manifest)> {
    let (mut wasm, given) = weir_host::registry::read_source(file)?;
    let manifest = weir_host::registry::embed_manifest(&mut wasm, given, file)?;
    Ok((wasm, manifest))
}

fn sign(file: &std::path::Path, key: &std::path::Path, output: Option<PathBuf>) -> Result<()> {
    let (wasm, m) = with_manifest(file)?;
    let secret = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let signed = weir_host::signing::sign(&wasm, &secret)?;
    let out = output.unwrap_or_else(|| file.with_extension("signed.wasm"));
    std::fs::write(&out, &signed).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "signed {} {} -> {}\n  sha256 {}",
        m.name,
        m.version,
        out.display(),
        weir_host::plugin::sha256_hex(&signed)
    );
    Ok(())
}

fn push(file: &std::path::Path, reference: &str) -> Result<()> {
    let r = weir_host::oci::Reference::parse(reference)?;
    let (wasm, m) = with_manifest(file)?;
    let digest = weir_host::oci::push(&r, &wasm, &m.name, &m.version)?;
    println!(
        "pushed {} {} to {r}\n  manifest {digest}\n  layer    sha256:{}",
        m.name,
        m.version,
        weir_host::plugin::sha256_hex(&wasm)
    );
    Ok(())
}

/// `weir plugin run`: through the agent, which holds the flow store.
fn run_plugin(r: RunArgs) -> Result<()> {
    use weir_core::query::{now_ms, parse_time};
    let now = now_ms();
    let from = parse_time(&r.from, now).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = match &r.to {
        Some(t) => parse_time(t, now).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
        None => now,
    };
    let params = parse_config(&r.params)?;
    let mut events = Vec::new();
    for (i, e) in r.events.iter().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(e).with_context(|| format!("--event #{}: not JSON", i + 1))?;
        events.push(v);
    }
    let mut body = serde_json::json!({
        "from_ms": from,
        "to_ms": to,
        "filter": r.filter,
        "params": params,
        "events": events,
        "query": r.query,
        "update": r.update,
        "keep": r.keep,
    });
    if let Some(path) = &r.input {
        let input = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        body["input"] = input.into();
        body["content_type"] = r.content_type.clone().into();
    }
    let v = crate::client::post_json(&r.server, &format!("/api/v1/plugins/{}/run", r.name), &body)?;
    let mut out = std::io::stdout().lock();
    if r.json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let res = &v["result"];
    if let Some(alerts) = res["alerts"].as_array() {
        if alerts.is_empty() {
            writeln!(out, "no alerts")?;
        }
        for a in alerts {
            writeln!(
                out,
                "{:<8} {}: {}",
                a["severity"].as_str().unwrap_or(""),
                a["name"].as_str().unwrap_or(""),
                a["summary"].as_str().unwrap_or("")
            )?;
        }
    } else if let Some(samples) = res["samples"].as_array() {
        for s in samples {
            writeln!(
                out,
                "{} {} {}",
                s["name"].as_str().unwrap_or(""),
                s["labels"],
                s["value"]
            )?;
        }
    } else {
        serde_json::to_writer_pretty(&mut out, res)?;
        writeln!(out)?;
    }
    Ok(())
}

fn install(reg: &Registry, i: InstallArgs, upgrade: bool, out: &mut impl Write) -> Result<()> {
    let req = InstallRequest {
        source: i.source.clone(),
        sha256: i.sha256.clone(),
        grants: parse_grants(&i.grant)?,
        scopes: parse_scopes(&i.scope)?,
        config: parse_config(&i.config)?,
        upgrade,
        window_secs: i.window.as_deref().map(window_secs).transpose()?,
        windows: i.windows,
    };
    let m = reg.install(&req)?;
    writeln!(
        out,
        "{} {} ({}) {}\n  sha256    {}\n  requested {}{}\n  granted   {}{}",
        m.manifest.name,
        m.manifest.version,
        m.manifest.kind.world(),
        if upgrade { "upgraded" } else { "installed" },
        m.sha256,
        caps(&m.manifest.capabilities),
        scopes_line(&m.manifest.scopes),
        caps(&m.granted),
        scopes_line(&m.scopes)
    )?;
    let asked = m.manifest.limits;
    let got = m.granted_limits.unwrap_or(asked);
    writeln!(
        out,
        "  limits    asked {} MiB, {} ms per call; granted {} MiB, {} ms{}",
        asked.memory_mb,
        asked.timeout_ms,
        got.memory_mb,
        got.timeout_ms,
        if got != asked {
            " (lowered to the agent's ceilings)"
        } else {
            ""
        }
    )?;
    if m.manifest.kind == weir_host::manifest::Kind::Summarizer {
        let w = m.windowing.unwrap_or(m.manifest.summarizer);
        writeln!(
            out,
            "  windows   {} of {}{}",
            w.windows,
            match w.window_secs {
                0 => "one window (never closed)".to_string(),
                s => format!("{s} s"),
            },
            if m.windowing.is_some() {
                " (set at install)"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

const FLOW_PROCESSOR: &str = r#"//! A weir flow-processor: gets every stored batch of flows, returns metric samples.

use weir_plugin_sdk::flow_processor::{self, Batch, FlowBatch, Guest, MetricKind, MetricSample, PluginError, Processed};

struct Plugin;

impl Guest for Plugin {
    fn process(batch: &FlowBatch) -> Result<Processed, PluginError> {
        // Columns cross the boundary when first read; read only what you need.
        let batch = Batch::new(batch);
        let bytes: u64 = batch.bytes().iter().enumerate().map(|(i, b)| b * batch.scale(i)).sum();
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

const CORRELATOR: &str = r#"//! A weir correlator: annotates a batch of flows with the external events that fall in its
//! time span.

use weir_plugin_sdk::correlator::{self, Annotation, Batch, Event, FlowBatch, Guest, PluginError};

struct Plugin;

impl Guest for Plugin {
    fn correlate(batch: &FlowBatch, events: Vec<Event>) -> Result<Vec<Annotation>, PluginError> {
        let batch = Batch::new(batch);
        let (Some(from), Some(to)) = (batch.time_flow_start_ms().iter().min(), batch.time_flow_end_ms().iter().max()) else {
            return Ok(Vec::new());
        };
        Ok(events
            .into_iter()
            .filter(|e| e.time_ms >= *from && e.time_ms <= *to)
            .map(|e| Annotation {
                time_ms: e.time_ms,
                text: format!("{}: {}", e.source, e.text),
                labels: e.labels,
                flow_filter: None,
            })
            .collect())
    }
}

correlator::export!(Plugin);
"#;

const DECODER: &str = r#"//! A weir decoder: turns `key=value` text, one record per line, into records.

use weir_plugin_sdk::decoder::{self, Decoded, Guest, PluginError};

struct Plugin;

impl Guest for Plugin {
    fn decode(input: Vec<u8>, content_type: String) -> Result<Vec<Decoded>, PluginError> {
        if !content_type.starts_with("text/") {
            return Err(PluginError::InvalidInput(format!("expected text, got {content_type}")));
        }
        let text = String::from_utf8(input).map_err(|e| PluginError::InvalidInput(format!("not UTF-8: {e}")))?;
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let mut fields = Vec::new();
            for word in line.split_whitespace() {
                let Some((k, v)) = word.split_once('=') else {
                    return Err(PluginError::InvalidInput(format!("line {}: '{word}' is not key=value", n + 1)));
                };
                fields.push((k.to_string(), v.to_string()));
            }
            out.push(Decoded { fields });
        }
        Ok(out)
    }
}

decoder::export!(Plugin);
"#;

/// The check scaffold is the `port-allowlist` check itself, so the tests build and run it.
const CHECK: &str = include_str!("../plugins/port-allowlist/src/lib.rs");

/// The exporter scaffold is the bundled `ndjson-export` itself.
const EXPORTER: &str = include_str!("../plugins/ndjson-export/src/lib.rs");

/// The summarizer scaffold is the `src-bytes` fixture itself, so the tests build and run it.
const SUMMARIZER: &str = include_str!("../plugins/src-bytes/src/lib.rs");

const VISUALIZATION: &str = r#"//! A weir visualization: draws a table of the top talkers.

use weir_plugin_sdk::visualization::{self, flows, Guest, Metric, PluginError, RenderRequest, Table, Value, View};

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

/// The alert-rule scaffold is the example of docs/ALERTS.md (bytes per destination port).
const ALERT_RULE: &str = include_str!("../plugins/examples/rust-alert/src/lib.rs");

fn scaffold(
    kind: &str,
    name: &str,
    lang: crate::plugin_build::Lang,
    sdk: Option<PathBuf>,
    parent: &std::path::Path,
) -> Result<()> {
    let (template, caps) = match kind {
        "flow-processor" => (FLOW_PROCESSOR, "[]"),
        "visualization" => (VISUALIZATION, "[\"flows\"]"),
        "alert-rule" => (ALERT_RULE, "[\"flows\", \"config\"]"),
        "correlator" => (CORRELATOR, "[]"),
        "decoder" => (DECODER, "[]"),
        "summarizer" => (SUMMARIZER, "[]"),
        "check" => (CHECK, "[\"flows\", \"timeline\", \"config\"]"),
        "exporter" => (
            EXPORTER,
            "[\"sink\", \"flow-fields\", \"config\"]\n\n[scopes]\nsink = [\"*\"]",
        ),
        other => bail!(
            "unknown plugin kind '{other}': use flow-processor, visualization, alert-rule, correlator, decoder, summarizer, check or exporter"
        ),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("plugin name '{name}' must be a-z, 0-9 and '-'");
    }
    if lang != crate::plugin_build::Lang::Rust {
        let root = parent.join(name);
        if root.exists() {
            bail!("{} already exists", root.display());
        }
        crate::plugin_build::scaffold_script(kind, name, lang, &root)?;
        println!(
            "created {}\n  build and install: weir plugin build {} --install",
            root.display(),
            root.display()
        );
        return Ok(());
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
        "created {}\n  build and install: weir plugin build {} --install",
        root.display(),
        root.display()
    );
    Ok(())
}
