//! Installed plugins on disk, and the loaded ones in memory.
//!
//! Layout: `<dir>/<name>/plugin.wasm` (the manifest embedded as a custom section, so the file
//! alone describes the plugin) and `<dir>/<name>/installed.json` (sha256, grants, enabled,
//! config). Installs are staged in a temporary directory, test-loaded, then renamed into place,
//! so a refused or interrupted install leaves nothing half-installed. The agent calls
//! [`Registry::sync`] periodically: changes made by `weir plugin` take effect without a restart.

use crate::HostError;
use crate::capability::Capability;
use crate::manifest::{self, Manifest};
use crate::plugin::{LoadRequest, Plugin, PluginInfo, sha256_hex};
use crate::runtime::Runtime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What `installed.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installed {
    pub manifest: Manifest,
    pub sha256: String,
    pub granted: Vec<Capability>,
    pub enabled: bool,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub installed_ms: u64,
    /// When it was last enabled: an enable always changes the file, so a running agent
    /// reloads the plugin (clearing a `failing` state) even if it was already enabled.
    #[serde(default)]
    pub enabled_ms: u64,
    pub source: String,
    /// The trusted key that signed the file (when signatures are required).
    #[serde(default)]
    pub signed_by: Option<String>,
    /// The limits granted at install: the manifest's asks (`manifest.limits`) lowered to the
    /// installing host's ceilings. The agent applies its own ceilings again when it loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_limits: Option<crate::Limits>,
    /// What each scoped capability granted may reach (`outbound-http` hosts...); a scoped
    /// capability granted without an entry here reaches nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scopes: crate::scope::Scopes,
    /// A summarizer's windows as the operator set them (`--window`, `--windows`), in place of
    /// the manifest's `[summarizer]`; kept across upgrades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windowing: Option<crate::manifest::Windowing>,
}

/// An install (or upgrade) request.
#[derive(Debug, Clone, Default)]
pub struct InstallRequest {
    /// A `.wasm` file (manifest embedded, or a `plugin.toml` beside it) or a directory with
    /// `plugin.toml` and one `.wasm`.
    pub source: PathBuf,
    /// Refuse the file unless its sha256 is this (hex).
    pub sha256: Option<String>,
    /// Capabilities to grant; None grants what the manifest asks for.
    pub grants: Option<Vec<Capability>>,
    /// Scopes of scoped capabilities granted, replacing what the manifest asks for them.
    pub scopes: crate::scope::Scopes,
    pub config: BTreeMap<String, String>,
    /// Replace an installed plugin of the same name.
    pub upgrade: bool,
    /// A summarizer's window length in seconds (0: one window), in place of its manifest's.
    pub window_secs: Option<u64>,
    /// How many of a summarizer's windows are kept, in place of its manifest's.
    pub windows: Option<u32>,
}

/// One row of `weir plugin list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub installed: Installed,
    /// Present when loaded (enabled and loadable).
    pub loaded: Option<PluginInfo>,
    /// Why an enabled plugin is not loaded.
    pub load_error: Option<String>,
    /// An exporter's feed: its cursor, what it exported, its failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<crate::export::FeedStatus>,
}

struct Entry {
    installed: Installed,
    plugin: Option<Arc<Plugin>>,
    load_error: Option<String>,
}

/// A plugin built into the binary, installed with `bundled:NAME` as the source.
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    pub name: &'static str,
    pub wasm: &'static [u8],
    /// Its plugin.toml.
    pub manifest: &'static str,
}

pub struct Registry {
    dir: PathBuf,
    rt: Arc<Runtime>,
    flows: Option<Arc<weir_core::Store>>,
    services: crate::state::Services,
    entries: RwLock<BTreeMap<String, Entry>>,
    bundled: Vec<Bundled>,
    /// Exporters' feeds (`crate::export`), by plugin name.
    feeds: crate::export::Feeds,
}

/// How often the agent's sync thread runs ([`Registry::start_sync`]).
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

fn now_ms() -> u64 {
    weir_core::query::now_ms()
}

/// A manifest read from a plugin.toml, with its text (embedded into the installed file).
pub type GivenManifest = Option<(Manifest, String)>;

/// Reads a plugin source (a file, a directory, or an `oci://` reference): the component's
/// bytes, and the manifest from a plugin.toml when the component has none embedded.
pub fn read_source(source: &Path) -> Result<(Vec<u8>, GivenManifest), HostError> {
    if let Some(s) = source.to_str()
        && s.starts_with("oci://")
    {
        // An artifact is one file: its manifest is embedded.
        let (wasm, digest) = crate::oci::pull(&crate::oci::Reference::parse(s)?)?;
        tracing::info!(reference = s, digest = %digest, bytes = wasm.len(), "plugin pulled");
        return Ok((wasm, None));
    }
    let (wasm_path, toml_path) = if source.is_dir() {
        let wasms: Vec<PathBuf> = std::fs::read_dir(source)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        match wasms.as_slice() {
            [one] => (one.clone(), source.join("plugin.toml")),
            [] => {
                return Err(HostError::Load(format!(
                    "{}: no .wasm file in the directory",
                    source.display()
                )));
            }
            _ => {
                return Err(HostError::Load(format!(
                    "{}: more than one .wasm file in the directory",
                    source.display()
                )));
            }
        }
    } else {
        // plugin.toml beside the file, or up to four levels above it (a cargo build puts the
        // component in target/wasm32-wasip2/release/ under the crate holding plugin.toml).
        let toml = source
            .ancestors()
            .skip(1)
            .take(5)
            .map(|d| d.join("plugin.toml"))
            .find(|p| p.exists())
            .unwrap_or_else(|| source.with_file_name("plugin.toml"));
        (source.to_path_buf(), toml)
    };
    let wasm = std::fs::read(&wasm_path)
        .map_err(|e| HostError::Load(format!("reading {}: {e}", wasm_path.display())))?;
    let manifest = if manifest::custom_section(&wasm, manifest::SECTION)
        .ok()
        .flatten()
        .is_some()
    {
        None
    } else if toml_path.exists() {
        let text = std::fs::read_to_string(&toml_path)?;
        let m = Manifest::parse(&text, &toml_path.display().to_string())?;
        Some((m, text))
    } else {
        None
    };
    Ok((wasm, manifest))
}

/// The component's manifest: a given plugin.toml is embedded into `wasm` (so the file travels
/// with it), else the embedded one is read.
pub fn embed_manifest(
    wasm: &mut Vec<u8>,
    given: GivenManifest,
    source: &Path,
) -> Result<Manifest, HostError> {
    match given {
        Some((m, text)) => {
            manifest::append_custom_section(wasm, manifest::SECTION, text.as_bytes());
            Ok(m)
        }
        None => {
            let text = manifest::custom_section(wasm, manifest::SECTION)?.ok_or_else(|| {
                HostError::Manifest(format!(
                    "{}: no plugin.toml and no embedded manifest",
                    source.display()
                ))
            })?;
            Manifest::parse(&String::from_utf8_lossy(text), "embedded manifest")
        }
    }
}

impl Registry {
    /// Opens (creating) the registry and loads every enabled plugin. A plugin that fails to
    /// load is kept with its error; it never stops the others.
    pub fn open(
        dir: &Path,
        rt: Arc<Runtime>,
        flows: Option<Arc<weir_core::Store>>,
    ) -> Result<Registry, HostError> {
        Self::open_as(dir, rt, flows, false)
    }

    /// [`Registry::open`] for an agent replaying an incident: every plugin answers
    /// `outbound-http` from its recorded tape only, and none reaches the network
    /// (`crate::tape`).
    pub fn open_replay(
        dir: &Path,
        rt: Arc<Runtime>,
        flows: Option<Arc<weir_core::Store>>,
    ) -> Result<Registry, HostError> {
        Self::open_as(dir, rt, flows, true)
    }

    fn open_as(
        dir: &Path,
        rt: Arc<Runtime>,
        flows: Option<Arc<weir_core::Store>>,
        replay: bool,
    ) -> Result<Registry, HostError> {
        std::fs::create_dir_all(dir)?;
        let reg = Registry {
            dir: dir.to_path_buf(),
            rt,
            flows,
            services: Default::default(),
            entries: RwLock::new(BTreeMap::new()),
            bundled: Vec::new(),
            feeds: Default::default(),
        };
        if replay {
            let _ = reg.services.replay.set(());
        }
        reg.sync();
        Ok(reg)
    }

    /// Gives plugins with the `flow-stats` capability the link speeds of a capture (set once;
    /// plugins loaded before see it too).
    pub fn set_capture(&self, capture: Arc<dyn weir_core::capture::CaptureSource>) {
        let _ = self.services.links.set(capture);
    }

    /// Gives plugins with the `records` capability the agent's records store (set once).
    pub fn set_records(&self, records: Arc<weir_core::records::RecordStore>) {
        let _ = self.services.records.set(records);
    }

    /// Gives plugins with the `sink` capability the operator's named destinations (set once).
    pub fn set_sinks(&self, sinks: weir_core::sink::Sinks) {
        let _ = self.services.sinks.set(sinks);
    }

    /// Gives plugins with the `capture-control` capability the guarded capture (set once);
    /// each sync withdraws the plugins that no longer control it.
    pub fn set_control(&self, control: Arc<weir_core::control::GuardedCapture>) {
        let _ = self.services.control.set(control);
    }

    /// Gives plugins with the `storage-sampling` capability the agent's storage sampler
    /// (set once); each sync withdraws the plugins that no longer control it.
    /// Makes the `flows` capability read `q` instead of the store (set once): `weir server`'s
    /// ClickHouse, so visualizations and rules see the whole cluster.
    pub fn set_flow_query(&self, q: Arc<dyn weir_core::flowquery::FlowQuery>) {
        let _ = self.services.flow_query.set(q);
    }

    pub fn set_sampler(&self, sampler: Arc<weir_core::sampling::StorageSampler>) {
        let _ = self.services.sampler.set(sampler);
    }

    /// Gives plugins with the `probe` capability a prober (set once).
    pub fn set_prober(&self, prober: Arc<dyn weir_core::probe::Prober>) {
        let _ = self.services.prober.set(prober);
    }

    /// Gives plugins with the `k8s-objects` capability the cluster objects the agent watches
    /// (set once).
    pub fn set_objects(&self, objects: Arc<dyn weir_core::objects::ObjectSource>) {
        let _ = self.services.objects.set(objects);
    }

    /// The plugins this binary carries (installable as `bundled:NAME`).
    pub fn with_bundled(mut self, bundled: &[Bundled]) -> Registry {
        self.bundled = bundled.to_vec();
        self
    }

    pub fn bundled(&self) -> &[Bundled] {
        &self.bundled
    }

    fn bundled_source(&self, name: &str) -> Result<(Vec<u8>, GivenManifest), HostError> {
        let b = self
            .bundled
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.bundled.iter().map(|b| b.name).collect();
                HostError::Load(format!(
                    "no bundled plugin named '{name}' (bundled: {})",
                    if names.is_empty() {
                        "none, this binary was built without them".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })?;
        let m = Manifest::parse(b.manifest, &format!("plugin.toml of bundled {name}"))?;
        Ok((b.wasm.to_vec(), Some((m, b.manifest.to_string()))))
    }

    /// Public keys (`*.pub`) whose signatures installs accept; when it holds any, every
    /// install must be signed by one of them. `<data>/trusted-keys`, beside `plugins/`.
    pub fn trusted_keys_dir(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join("trusted-keys")
    }

    /// The directory of the plugin `name`: only names that pass
    /// [`weir_core::plugins::check_plugin_name`] become paths, whoever asks (API, CLI, sync).
    fn plugin_dir(&self, name: &str) -> Result<PathBuf, HostError> {
        weir_core::plugins::check_plugin_name(name)?;
        Ok(self.dir.join(name))
    }

    fn read_installed(&self, name: &str) -> Result<(Installed, Vec<u8>), HostError> {
        let d = self.plugin_dir(name)?;
        let meta: Installed = serde_json::from_slice(&std::fs::read(d.join("installed.json"))?)
            .map_err(|e| HostError::Load(format!("{}/installed.json: {e}", d.display())))?;
        let wasm = std::fs::read(d.join("plugin.wasm"))?;
        if sha256_hex(&wasm) != meta.sha256 {
            return Err(HostError::Load(format!(
                "{}/plugin.wasm does not match its recorded sha256 (changed on disk?)",
                d.display()
            )));
        }
        Ok((meta, wasm))
    }

    /// Loads an installed plugin, its kv kept in its directory.
    fn load(&self, meta: &Installed, wasm: &[u8]) -> Result<Plugin, HostError> {
        let dir = self.plugin_dir(&meta.manifest.name)?;
        self.load_only(meta, wasm).map(|p| p.with_state_dir(&dir))
    }

    /// Loads a plugin with no durable state (the test-load of an install).
    fn load_only(&self, meta: &Installed, wasm: &[u8]) -> Result<Plugin, HostError> {
        Plugin::load(
            &self.rt,
            LoadRequest {
                wasm,
                manifest: None,
                grants: &meta.granted,
                limits: None,
                config: meta.config.clone(),
                flows: self.flows.clone(),
                services: self.services.clone(),
                scopes: meta.scopes.clone(),
            },
        )
        .map(|p| match meta.windowing {
            Some(w) => p.with_windowing(w),
            None => p,
        })
    }

    /// Brings memory in line with the disk: new, changed, enabled, disabled, removed plugins.
    pub fn sync(&self) {
        let on_disk: BTreeMap<String, ()> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("installed.json").exists())
                    .filter_map(|e| e.file_name().to_str().map(|s| (s.to_string(), ())))
                    .filter(|(n, _)| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|name, _| {
            let keep = on_disk.contains_key(name);
            if !keep {
                tracing::info!(plugin = %name, "plugin removed");
            }
            keep
        });
        // Skip plugin directories whose names are not plugin names (nothing to load there).
        let on_disk: BTreeMap<String, ()> = on_disk
            .into_iter()
            .filter(|(n, _)| weir_core::plugins::check_plugin_name(n).is_ok())
            .collect();
        for name in on_disk.keys() {
            let meta = match self.read_installed(name) {
                Ok((meta, wasm)) => (meta, wasm),
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "installed plugin unreadable");
                    continue;
                }
            };
            let (meta, wasm) = meta;
            if let Some(cur) = entries.get(name) {
                if cur.installed == meta {
                    continue;
                }
                // Reloaded (enabled again, reconfigured, upgraded): its state is written
                // before the new instance reads it.
                if let Some(p) = &cur.plugin
                    && let Err(e) = p.persist_state()
                {
                    tracing::warn!(plugin = %name, error = %e, "cannot write plugin state");
                }
            }
            let (plugin, load_error) = if meta.enabled {
                match self.load(&meta, &wasm) {
                    Ok(p) => (Some(Arc::new(p)), None),
                    Err(e) => {
                        tracing::warn!(plugin = %name, error = %e, "plugin not loaded");
                        (None, Some(e.to_string()))
                    }
                }
            } else {
                (None, None)
            };
            entries.insert(
                name.clone(),
                Entry {
                    installed: meta,
                    plugin,
                    load_error,
                },
            );
        }
        if let Some(s) = self.services.sampler.get() {
            s.retain(&|name| {
                entries.get(name).is_some_and(|e| {
                    e.plugin.as_ref().is_some_and(|p| !p.is_disabled())
                        && e.installed.enabled
                        && e.installed.granted.contains(&Capability::StorageSampling)
                })
            });
        }
        if let Some(c) = self.services.control.get() {
            c.retain(&|name| {
                let e = entries.get(name)?;
                let live = e.plugin.as_ref().is_some_and(|p| !p.is_disabled())
                    && e.installed.enabled
                    && e.installed.granted.contains(&Capability::CaptureControl);
                if !live {
                    return None;
                }
                let scope = e
                    .installed
                    .scopes
                    .get(&Capability::CaptureControl)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                Some(weir_core::control::Bounds::parse(scope).unwrap_or_default())
            });
        }
    }

    /// Verifies, test-loads and installs a plugin; returns what was recorded.
    /// Installs from `req.source`: a file, a directory, `oci://...` or `bundled:NAME`.
    pub fn install(&self, req: &InstallRequest) -> Result<Installed, HostError> {
        let (wasm, given) = match req.source.to_str().and_then(|s| s.strip_prefix("bundled:")) {
            Some(name) => self.bundled_source(name)?,
            None => read_source(&req.source)?,
        };
        self.install_bytes(wasm, given, req)
    }

    /// Installs a component already read (`req.source` only labels it).
    pub fn install_bytes(
        &self,
        mut wasm: Vec<u8>,
        given: GivenManifest,
        req: &InstallRequest,
    ) -> Result<Installed, HostError> {
        let sha256 = sha256_hex(&wasm);
        if let Some(want) = &req.sha256
            && !want.eq_ignore_ascii_case(&sha256)
        {
            return Err(HostError::Load(format!(
                "sha256 mismatch for {}: expected {want}, the file has {sha256}",
                req.source.display()
            )));
        }
        // The signature covers the file as given, before a manifest is embedded.
        let signed_by = crate::signing::verify(
            &wasm,
            &crate::signing::load_trusted(&self.trusted_keys_dir())?,
        )?;
        let manifest = embed_manifest(&mut wasm, given, &req.source)?;
        let name = manifest.name.clone();
        let target = self.plugin_dir(&name)?;
        if let Some(over) = self.rt.policy().over_ceiling(manifest.limits)
            && self.rt.policy().refuse_over_ceiling
        {
            return Err(HostError::Load(format!(
                "plugin {name} asks for {over}; this agent refuses plugins over its ceilings"
            )));
        }
        if target.exists() && !req.upgrade {
            return Err(HostError::Load(format!(
                "plugin {name} is already installed; use `weir plugin upgrade` to replace it"
            )));
        }
        if !target.exists() && req.upgrade {
            return Err(HostError::Load(format!(
                "plugin {name} is not installed, nothing to upgrade"
            )));
        }
        let granted = req
            .grants
            .clone()
            .unwrap_or_else(|| manifest.capabilities.clone());
        // Scopes: what the manifest asks for the granted capabilities, unless the operator
        // gave one; a scope for a capability not granted is an error, not silently dropped.
        if let Some(c) = req.scopes.keys().find(|c| !granted.contains(c)) {
            return Err(HostError::Load(format!(
                "a scope for {c} was given, but {c} is not granted"
            )));
        }
        let mut scopes: crate::scope::Scopes = manifest
            .scopes
            .iter()
            .filter(|(c, _)| granted.contains(c))
            .map(|(c, e)| (*c, e.clone()))
            .collect();
        // An upgrade keeps the scopes the operator holds it to (a new version asking for
        // more hosts gets them only by an explicit --scope or grant).
        if req.upgrade
            && let Ok((old, _)) = self.read_installed(&name)
        {
            for (c, e) in old.scopes {
                if granted.contains(&c) {
                    scopes.insert(c, e);
                }
            }
        }
        scopes.extend(req.scopes.clone());
        crate::scope::check(&scopes, "install")?;
        // Windows: the operator's, else what an upgraded install was held to, else the
        // manifest's.
        let held = if req.upgrade {
            self.read_installed(&name)
                .ok()
                .and_then(|(old, _)| old.windowing)
        } else {
            None
        };
        let windowing = match (req.window_secs, req.windows) {
            (None, None) => held,
            (secs, n) => {
                if manifest.kind != crate::manifest::Kind::Summarizer {
                    return Err(HostError::Load(format!(
                        "--window/--windows are for summarizers; {name} is a {}",
                        manifest.kind.world()
                    )));
                }
                let base = held.unwrap_or(manifest.summarizer);
                let w = crate::manifest::Windowing {
                    window_secs: secs.unwrap_or(base.window_secs),
                    windows: n.unwrap_or(base.windows),
                };
                w.check("--window/--windows")?;
                Some(w)
            }
        };
        let manifest_limits = manifest.limits;
        let meta = Installed {
            manifest,
            sha256: sha256_hex(&wasm),
            granted,
            enabled: true,
            config: req.config.clone(),
            installed_ms: now_ms(),
            enabled_ms: now_ms(),
            source: req.source.display().to_string(),
            signed_by,
            granted_limits: Some(self.rt.policy().grant(manifest_limits)),
            scopes,
            windowing,
        };
        // Refuse anything that would not load, before touching the registry.
        self.load_only(&meta, &wasm)?;
        let staging = self
            .dir
            .join(format!(".{name}.staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let result = (|| -> Result<(), HostError> {
            std::fs::create_dir_all(&staging)?;
            std::fs::write(staging.join("plugin.wasm"), &wasm)?;
            let json =
                serde_json::to_vec_pretty(&meta).map_err(|e| HostError::Load(e.to_string()))?;
            std::fs::write(staging.join("installed.json"), json)?;
            if target.exists() {
                // An upgrade keeps the plugin's state: what the running one holds is written
                // first, then carried over.
                if let Some(p) = self.get(&name)
                    && let Err(e) = p.persist_state()
                {
                    tracing::warn!(plugin = %name, error = %e, "cannot write plugin state");
                }
                for file in [
                    crate::plugin::KV_FILE,
                    crate::summary::SUMMARY_FILE,
                    crate::tape::TAPE_FILE,
                    crate::tape::REPLAY_FILE,
                ] {
                    let state = target.join(file);
                    if state.exists() {
                        std::fs::copy(&state, staging.join(file))?;
                    }
                }
                let old = self.dir.join(format!(".{name}.old-{}", std::process::id()));
                std::fs::rename(&target, &old)?;
                std::fs::rename(&staging, &target)?;
                let _ = std::fs::remove_dir_all(&old);
                // The tape copied while the old instance may have been appending.
                crate::tape::forget(&target);
            } else {
                std::fs::rename(&staging, &target)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result?;
        tracing::info!(plugin = %name, sha256 = %meta.sha256, upgrade = req.upgrade, "plugin installed");
        self.sync();
        Ok(meta)
    }

    /// Every installed plugin for an incident file: `installed.json` as on disk, the
    /// component, and its state files (the running plugin's state written out first).
    pub fn export_plugins(&self) -> Result<Vec<weir_core::incident::PluginFile>, HostError> {
        self.persist_state();
        let mut out = Vec::new();
        for l in Registry::list(self) {
            let name = l.installed.manifest.name.clone();
            let (meta, wasm) = self.read_installed(&name)?;
            let dir = self.plugin_dir(&name)?;
            let mut state = BTreeMap::new();
            for file in [crate::plugin::KV_FILE, crate::summary::SUMMARY_FILE] {
                if let Ok(b) = std::fs::read(dir.join(file)) {
                    state.insert(file.to_string(), b);
                }
            }
            // Its outbound-http answers, so a replay answers them again (a replay exported
            // anew carries the tape it replays).
            for file in [crate::tape::TAPE_FILE, crate::tape::REPLAY_FILE] {
                if let Ok(b) = std::fs::read(dir.join(file))
                    && !b.is_empty()
                {
                    state.insert(crate::tape::TAPE_FILE.to_string(), b);
                    break;
                }
            }
            out.push(weir_core::incident::PluginFile {
                name,
                installed: serde_json::to_value(&meta)
                    .map_err(|e| HostError::Load(e.to_string()))?,
                wasm,
                state_files: state.keys().cloned().collect(),
                state,
            });
        }
        Ok(out)
    }

    /// What a replay withholds from the plugins of an incident file: whatever reaches beyond
    /// the replayed history (probes, sinks, the capture, a cluster), since the file (signed
    /// or not) chose their grants. A plugin that imports one does not load. `outbound-http`
    /// stays granted but never reaches the network: it answers from the plugin's recorded
    /// tape (`crate::tape`).
    pub const WITHHELD_IN_REPLAY: [Capability; 4] = [
        Capability::Probe,
        Capability::Sink,
        Capability::CaptureControl,
        Capability::K8sObjects,
    ];

    /// Puts a plugin from an incident file into `plugins_dir` as it was installed (same
    /// `installed.json`, component and state, less [`Self::WITHHELD_IN_REPLAY`] and the
    /// signer it claims), before a registry opens the directory. The component must match
    /// the sha256 its `installed.json` records. Its outbound-http tape becomes the replay's
    /// (an empty one when the file has none), so it answers from the tape only.
    pub fn restore_plugin(
        plugins_dir: &Path,
        p: &weir_core::incident::PluginFile,
    ) -> Result<(), HostError> {
        weir_core::plugins::check_plugin_name(&p.name)?;
        let mut meta: Installed = serde_json::from_value(p.installed.clone())
            .map_err(|e| HostError::Load(format!("plugin {}: installed.json: {e}", p.name)))?;
        meta.granted
            .retain(|c| !Self::WITHHELD_IN_REPLAY.contains(c));
        meta.scopes
            .retain(|c, _| !Self::WITHHELD_IN_REPLAY.contains(c));
        meta.signed_by = None;
        if meta.manifest.name != p.name {
            return Err(HostError::Load(format!(
                "plugin {}: its installed.json names {}",
                p.name, meta.manifest.name
            )));
        }
        if sha256_hex(&p.wasm) != meta.sha256 {
            return Err(HostError::Load(format!(
                "plugin {}: the component does not match the sha256 its installed.json records",
                p.name
            )));
        }
        let dir = plugins_dir.join(&p.name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("plugin.wasm"), &p.wasm)?;
        for file in p.state.keys() {
            if ![
                crate::plugin::KV_FILE,
                crate::summary::SUMMARY_FILE,
                crate::tape::TAPE_FILE,
            ]
            .contains(&file.as_str())
            {
                return Err(HostError::Load(format!(
                    "plugin {}: unknown state file {file:?}",
                    p.name
                )));
            }
        }
        for (file, b) in &p.state {
            if file != crate::tape::TAPE_FILE {
                std::fs::write(dir.join(file), b)?;
            }
        }
        let tape = p
            .state
            .get(crate::tape::TAPE_FILE)
            .map_or(&[][..], Vec::as_slice);
        std::fs::write(dir.join(crate::tape::REPLAY_FILE), tape)?;
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| HostError::Load(e.to_string()))?;
        std::fs::write(dir.join("installed.json"), json)?;
        Ok(())
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Installed)) -> Result<Installed, HostError> {
        let dir = self.plugin_dir(name)?;
        let (mut meta, _) = self
            .read_installed(name)
            .map_err(|_| HostError::Load(format!("no plugin named {name} is installed")))?;
        f(&mut meta);
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| HostError::Load(e.to_string()))?;
        let path = dir.join("installed.json");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path)?;
        self.sync();
        Ok(meta)
    }

    /// Grants `cap` to an installed plugin (with `scope` for a scoped capability, replacing
    /// the one it had), or revokes it. The running agent reloads the plugin with the change;
    /// a plugin importing a capability it no longer has stays installed but fails to load,
    /// saying which.
    pub fn set_grant(
        &self,
        name: &str,
        cap: Capability,
        grant: bool,
        scope: Option<Vec<String>>,
    ) -> Result<Installed, HostError> {
        if let Some(entries) = &scope {
            if !grant {
                return Err(HostError::Load(format!(
                    "a scope is given when granting, not when revoking {cap}"
                )));
            }
            let one: crate::scope::Scopes = [(cap, entries.clone())].into();
            crate::scope::check(&one, "grant")?;
        }
        if let Some(p) = self.get(name) {
            p.cancel_calls();
        }
        self.update(name, |m| {
            if grant {
                if !m.granted.contains(&cap) {
                    m.granted.push(cap);
                }
                if let Some(entries) = scope {
                    m.scopes.insert(cap, entries);
                }
            } else {
                m.granted.retain(|c| *c != cap);
                m.scopes.remove(&cap);
            }
        })
    }

    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<Installed, HostError> {
        // A disabled plugin's calls in progress end now, not at their deadlines.
        if !enabled && let Some(p) = self.get(name) {
            p.cancel_calls();
        }
        let meta = self.update(name, |m| {
            m.enabled = enabled;
            if enabled {
                m.enabled_ms = now_ms();
            }
        })?;
        if enabled && let Some(p) = self.get(name) {
            p.reset();
        }
        Ok(meta)
    }

    pub fn remove(&self, name: &str) -> Result<(), HostError> {
        let d = self.plugin_dir(name)?;
        if let Some(p) = self.get(name) {
            p.cancel_calls();
        }
        if !d.join("installed.json").exists() {
            return Err(HostError::Load(format!(
                "no plugin named {name} is installed"
            )));
        }
        std::fs::remove_dir_all(&d)?;
        crate::tape::forget(&d);
        self.sync();
        Ok(())
    }

    /// Cancels every plugin call running now (the agent stopping).
    pub fn cancel_all(&self) {
        for p in self.loaded() {
            p.cancel_calls();
        }
    }

    /// Writes every loaded plugin's changed state (kv); the agent calls it every sync and at
    /// shutdown, so a crash loses at most the last interval's changes.
    pub fn persist_state(&self) {
        for p in self.loaded() {
            if let Err(e) = p.persist_state() {
                tracing::warn!(plugin = %p.name(), error = %e, "cannot write plugin state");
            }
        }
    }

    /// Plugins installed from `bundled:NAME` whose file is not this binary's `NAME` (an
    /// earlier release's build, kept until the operator upgrades it): name, installed
    /// version, this binary's version.
    pub fn stale_bundled(&self) -> Vec<(String, String, String)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .filter_map(|e| {
                let name = e.installed.source.strip_prefix("bundled:")?;
                // As an install of it would store it: its manifest embedded.
                let (mut wasm, given) = self.bundled_source(name).ok()?;
                let now = embed_manifest(&mut wasm, given, Path::new(&e.installed.source))
                    .ok()?
                    .version;
                if sha256_hex(&wasm) == e.installed.sha256 {
                    return None;
                }
                Some((
                    e.installed.manifest.name.clone(),
                    e.installed.manifest.version.clone(),
                    now,
                ))
            })
            .collect()
    }

    pub fn list(&self) -> Vec<Listed> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let feeds = crate::lock(&self.feeds).clone();
        entries
            .values()
            .map(|e| Listed {
                installed: e.installed.clone(),
                loaded: e.plugin.as_ref().map(|p| p.info()),
                load_error: e.load_error.clone(),
                export: feeds.get(&e.installed.manifest.name).cloned(),
            })
            .collect()
    }

    /// Starts the agent's sync thread: every [`SYNC_INTERVAL`] it loads what changed on disk
    /// (hot load), moves what plugins emitted through `metrics` to the agent's /metrics (and
    /// drops the metrics of plugins no longer loaded), and writes plugins' state (kv,
    /// summaries) to disk, so a crash loses at most one interval. Ends with the registry.
    pub fn start_sync(
        reg: &Arc<Registry>,
        emitted: Arc<weir_core::metrics::FlowMetrics>,
    ) -> std::io::Result<()> {
        let weak = Arc::downgrade(reg);
        std::thread::Builder::new()
            .name("weir-plugin-sync".into())
            .spawn(move || {
                while let Some(reg) = weak.upgrade() {
                    reg.sync();
                    let loaded = reg.loaded();
                    for p in &loaded {
                        emitted.record_plugin(&p.manifest().name, &p.drain_samples());
                    }
                    let names: Vec<&str> = loaded.iter().map(|p| p.name()).collect();
                    emitted.retain_plugins(&names);
                    reg.persist_state();
                    drop(reg);
                    std::thread::sleep(SYNC_INTERVAL);
                }
            })?;
        Ok(())
    }

    /// Exporters' feed status, shared with the feed threads.
    pub(crate) fn feeds(&self) -> crate::export::Feeds {
        self.feeds.clone()
    }

    /// The directory of an installed plugin (its kv, summary and export cursor live there).
    pub(crate) fn dir_of(&self, name: &str) -> Result<PathBuf, HostError> {
        self.plugin_dir(name)
    }

    /// A loaded plugin by name.
    /// The flow store plugins read (None in the CLI, which works without an agent).
    pub fn flows(&self) -> Option<&Arc<weir_core::Store>> {
        self.flows.as_ref()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.get(name).and_then(|e| e.plugin.clone())
    }

    /// Whether any plugin of this kind is loaded (cheap: no plugin is cloned).
    pub fn has_kind(&self, kind: crate::Kind) -> bool {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .any(|e| e.plugin.as_ref().is_some_and(|p| p.manifest().kind == kind))
    }

    /// Loaded plugins of one kind.
    /// Every loaded plugin.
    pub fn loaded(&self) -> Vec<Arc<Plugin>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.values().filter_map(|e| e.plugin.clone()).collect()
    }

    pub fn of_kind(&self, kind: crate::Kind) -> Vec<Arc<Plugin>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .filter_map(|e| e.plugin.clone())
            .filter(|p| p.manifest().kind == kind)
            .collect()
    }
}

impl weir_core::plugins::PluginAdmin for Registry {
    fn incident_plugins(&self) -> Result<Vec<weir_core::incident::PluginFile>, String> {
        self.export_plugins().map_err(|e| e.to_string())
    }

    fn list(&self) -> serde_json::Value {
        serde_json::to_value(Registry::list(self)).unwrap_or(serde_json::Value::Null)
    }

    fn set_grant(
        &self,
        name: &str,
        capability: &str,
        grant: bool,
        scope: Option<Vec<String>>,
    ) -> Result<serde_json::Value, String> {
        let cap = Capability::parse(capability).ok_or_else(|| {
            format!(
                "unknown capability '{capability}' (known: {})",
                Capability::known()
            )
        })?;
        let meta = Registry::set_grant(self, name, cap, grant, scope).map_err(|e| e.to_string())?;
        Ok(serde_json::json!({
            "name": name,
            "granted": meta.granted,
            "scopes": meta.scopes,
        }))
    }

    fn bundled(&self) -> Vec<String> {
        self.bundled.iter().map(|b| b.name.to_string()).collect()
    }

    fn install(
        &self,
        upload: Option<&[u8]>,
        source: Option<&str>,
        sha256: Option<&str>,
        grants: Option<Vec<String>>,
        upgrade: bool,
    ) -> Result<serde_json::Value, String> {
        let grants = match grants {
            Some(g) => Some(
                g.iter()
                    .map(|s| {
                        Capability::parse(s).ok_or_else(|| {
                            format!("unknown capability '{s}' (known: {})", Capability::known())
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let req = |source: &str| InstallRequest {
            source: PathBuf::from(source),
            sha256: sha256.map(String::from),
            grants: grants.clone(),
            scopes: Default::default(),
            config: BTreeMap::new(),
            upgrade,
            // An upgrade keeps the windows the operator set; the API sets none.
            window_secs: None,
            windows: None,
        };
        let r = match (upload, source) {
            (Some(wasm), None) => self.install_bytes(wasm.to_vec(), None, &req("upload")),
            (None, Some(s)) if s.starts_with("oci://") || s.starts_with("bundled:") => {
                self.install(&req(s))
            }
            (None, Some(s)) => {
                return Err(format!(
                    "source '{s}': the API installs from oci://... or bundled:NAME (or an uploaded body); local paths are for `weir plugin install`"
                ));
            }
            (Some(_), Some(_)) => {
                return Err("give either a .wasm body or a source, not both".into());
            }
            (None, None) => {
                return Err(
                    "nothing to install: send the .wasm as the body, or give source=oci://... or source=bundled:NAME".into(),
                );
            }
        };
        r.map(|m| serde_json::to_value(m).unwrap_or(serde_json::Value::Null))
            .map_err(|e| e.to_string())
    }

    fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), String> {
        Registry::set_enabled(self, name, enabled)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn remove(&self, name: &str) -> Result<(), String> {
        Registry::remove(self, name).map_err(|e| e.to_string())
    }
}
