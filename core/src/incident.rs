//! Incidents: one file holding a window of the node's history (flows, records, alerts and
//! silences), the plugins that drew it (components with their grants and config) and the
//! agent's settings, so a colleague can open it elsewhere and see the same views.
//!
//! The file is a gzip-compressed tar archive:
//!
//! | member | what |
//! |---|---|
//! | `incident.json` | the [`Manifest`]: window, filter, node, counts, and the sha256 and size of every other member |
//! | `flows.ndjson` | the window's flows matching the filter, one JSON flow a line (the import format) |
//! | `records.ndjson` | every record of the window (spans, logs, events, annotations, OVS collections...), as stored |
//! | `alerts.json` | alert history and active alerts that overlap the window, and the silences |
//! | `plugins.json`, `plugins/<name>.wasm` | installed plugins: what `installed.json` says (sha256, grants, scopes, config, enabled) and the component |
//! | `settings.json` | capture settings and the inventory in force when exported |
//! | `incident.sig` | optional: an ed25519 signature of `incident.json`'s exact bytes ([`Signature`]) |
//!
//! Reading checks every member against the manifest: a member missing, unlisted, of another
//! size or hash, a truncated or corrupt archive, is refused with the member named. The
//! signature itself is checked by the caller (the keys are the plugin-signing keys, which
//! live with the plugin host).

use crate::alerts::{Alert, AlertStore, Silence};
use crate::records::{RecordStore, Stored};
use crate::{Flow, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The format this build writes and reads.
pub const FORMAT: &str = "weir-incident/1";
/// The manifest member.
pub const MANIFEST: &str = "incident.json";
/// The signature member.
pub const SIGNATURE: &str = "incident.sig";
/// The most an incident file may hold once inflated (all members together).
pub const MAX_INFLATED: u64 = 2 << 30;
/// Most flows one incident carries by default.
pub const DEFAULT_MAX_FLOWS: usize = 1_000_000;

/// What can go wrong writing or reading an incident.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    /// The archive ends early (a partial download or copy).
    #[error("the incident file is truncated: {0}")]
    Truncated(String),
    /// Not a gzip-compressed tar archive, or one damaged in transit.
    #[error("the incident file is corrupt: {0}")]
    Corrupt(String),
    /// The manifest is missing or does not parse.
    #[error("{MANIFEST}: {0}")]
    Manifest(String),
    /// A member differs from what the manifest lists (changed after export).
    #[error("{path}: {problem}; the file was changed after it was exported")]
    Tampered { path: String, problem: String },
    /// More than an incident may carry.
    #[error("{0}")]
    TooLarge(String),
    /// A member's content does not parse.
    #[error("{path}: {problem}")]
    Content { path: String, problem: String },
    #[error("reading the node's history: {0}")]
    Store(#[from] crate::StoreError),
    #[error("reading the records: {0}")]
    Records(#[from] crate::records::RecordError),
    #[error("alert store: {0}")]
    Alerts(#[from] crate::alerts::AlertError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One member as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

impl Member {
    /// The manifest's line for a member held in memory.
    fn of(path: &str, bytes: &[u8]) -> Member {
        Member {
            path: path.to_string(),
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
        }
    }
}

/// `incident.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When it was exported, Unix ms.
    pub created_ms: u64,
    /// The node it was exported from.
    pub node: String,
    /// The weir version that exported it.
    pub weir_version: String,
    /// The window, Unix ms, both ends included.
    pub from_ms: u64,
    pub to_ms: u64,
    /// The flow filter applied (empty: every flow).
    pub filter: String,
    /// How many flows, records, alerts, silences and plugins it carries.
    pub counts: BTreeMap<String, u64>,
    /// Every other member, sorted by path.
    pub members: Vec<Member>,
}

/// `incident.sig`: who signed the manifest, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signing key's id (hex), as plugin signatures name it.
    pub key_id: String,
    /// The ed25519 signature of `incident.json`'s bytes, hex.
    pub ed25519: String,
}

/// A plugin as an incident carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginFile {
    pub name: String,
    /// The plugin's `installed.json` (sha256, grants, scopes, config, enabled, source...).
    pub installed: serde_json::Value,
    /// The component, exactly as installed.
    #[serde(skip)]
    pub wasm: Vec<u8>,
    /// The plugin's durable state (its key-value store, a summarizer's windows) by file
    /// name, as written when exported.
    #[serde(default)]
    pub state_files: Vec<String>,
    #[serde(skip)]
    pub state: BTreeMap<String, Vec<u8>>,
}

/// `alerts.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertsPart {
    /// State changes in the window, oldest first.
    pub history: Vec<Alert>,
    /// Alerts pending or firing when exported that began before the window ended.
    pub active: Vec<Alert>,
    /// Silences that overlap the window.
    pub silences: Vec<Silence>,
}

/// An incident in memory: the manifest (with its exact bytes, which a signature covers),
/// the members, and the signature if any.
#[derive(Debug, Clone)]
pub struct Incident {
    pub manifest: Manifest,
    manifest_raw: Vec<u8>,
    members: BTreeMap<String, Vec<u8>>,
    pub signature: Option<Signature>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// One member appended to a tar stream: `size` bytes read from `data`.
fn put<W: Write>(
    tar: &mut tar::Builder<W>,
    mtime_s: u64,
    path: &str,
    size: u64,
    data: impl Read,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime_s);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
}

/// A member written to an unnamed file (gone when closed) while its sha256 and size are
/// counted: an export's flows and records never sit in memory whole.
struct Spool {
    out: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    len: u64,
}

/// A spooled member, read back from its start.
struct Spooled {
    file: std::fs::File,
    len: u64,
    sha256: String,
}

impl Spool {
    fn new(dir: &Path) -> std::io::Result<Spool> {
        Ok(Spool {
            out: std::io::BufWriter::with_capacity(1 << 16, tempfile::tempfile_in(dir)?),
            hash: Sha256::new(),
            len: 0,
        })
    }

    fn finish(self) -> std::io::Result<Spooled> {
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(Spooled {
            file,
            len: self.len,
            sha256: hex(&self.hash.finalize()),
        })
    }
}

impl Write for Spool {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(b)?;
        self.hash.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Member paths are plain relative paths: no `..`, no absolute path, nothing odd.
fn check_path(p: &str) -> Result<(), IncidentError> {
    let ok = !p.is_empty()
        && p.len() <= 200
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IncidentError::Corrupt(format!(
            "member {p:?} is not a plain relative path"
        )))
    }
}

impl Incident {
    /// An incident of `members` (paths to bytes) described by `manifest`, whose `members`
    /// list is filled in here.
    pub fn new(
        mut manifest: Manifest,
        members: BTreeMap<String, Vec<u8>>,
    ) -> Result<Incident, IncidentError> {
        for p in members.keys() {
            check_path(p)?;
            if p == MANIFEST || p == SIGNATURE {
                return Err(IncidentError::Corrupt(format!("{p} is a reserved member")));
            }
        }
        manifest.members = members.iter().map(|(p, b)| Member::of(p, b)).collect();
        let manifest_raw = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| IncidentError::Manifest(e.to_string()))?;
        Ok(Incident {
            manifest,
            manifest_raw,
            members,
            signature: None,
        })
    }

    /// The exact bytes of `incident.json` (what a signature covers).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_raw
    }

    /// A member's bytes.
    pub fn member(&self, path: &str) -> Option<&[u8]> {
        self.members.get(path).map(Vec::as_slice)
    }

    /// The incident as a file: a gzip-compressed tar archive, manifest first.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IncidentError> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let t = self.manifest.created_ms / 1000;
        let raw = &self.manifest_raw;
        put(&mut tar, t, MANIFEST, raw.len() as u64, raw.as_slice())?;
        for (p, b) in &self.members {
            put(&mut tar, t, p, b.len() as u64, b.as_slice())?;
        }
        if let Some(s) = &self.signature {
            let sig =
                serde_json::to_vec_pretty(s).map_err(|e| IncidentError::Manifest(e.to_string()))?;
            put(&mut tar, t, SIGNATURE, sig.len() as u64, sig.as_slice())?;
        }
        Ok(tar.into_inner()?.finish()?)
    }

    /// Reads an incident file, checking every member against the manifest.
    pub fn from_bytes(file: &[u8]) -> Result<Incident, IncidentError> {
        if !file.starts_with(&[0x1f, 0x8b]) {
            return Err(IncidentError::Corrupt(
                "not a gzip-compressed archive (an incident file starts with the gzip magic bytes)"
                    .into(),
            ));
        }
        let gz = flate2::read::GzDecoder::new(file).take(MAX_INFLATED + 1);
        let mut archive = tar::Archive::new(gz);
        let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut total: u64 = 0;
        let entries = archive.entries().map_err(read_error)?;
        for e in entries {
            let mut e = e.map_err(read_error)?;
            if !matches!(e.header().entry_type(), tar::EntryType::Regular) {
                return Err(IncidentError::Corrupt(
                    "the archive holds something other than plain files".into(),
                ));
            }
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            check_path(&path)?;
            let size = e.header().size().map_err(read_error)?;
            total = total.saturating_add(size);
            if total > MAX_INFLATED {
                return Err(IncidentError::TooLarge(format!(
                    "the incident inflates past {} GiB",
                    MAX_INFLATED >> 30
                )));
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 26));
            e.read_to_end(&mut data).map_err(read_error)?;
            if data.len() as u64 != size {
                return Err(IncidentError::Truncated(format!(
                    "{path} ends after {} of its {size} bytes",
                    data.len()
                )));
            }
            if raw.insert(path.clone(), data).is_some() {
                return Err(IncidentError::Corrupt(format!("{path} appears twice")));
            }
        }
        // The rest of the stream (the archive's end blocks, the gzip trailer with its CRC):
        // a file cut short ends without them.
        std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(read_error)?;
        let manifest_raw = raw.remove(MANIFEST).ok_or_else(|| {
            IncidentError::Manifest(
                "missing: this is not an incident file, or it lost its manifest".into(),
            )
        })?;
        let manifest: Manifest = serde_json::from_slice(&manifest_raw).map_err(|e| {
            IncidentError::Manifest(format!("line {} column {}: {e}", e.line(), e.column()))
        })?;
        if manifest.format != FORMAT {
            return Err(IncidentError::Manifest(format!(
                "format {:?}: this weir reads {FORMAT}",
                manifest.format
            )));
        }
        let signature = match raw.remove(SIGNATURE) {
            Some(b) => Some(serde_json::from_slice::<Signature>(&b).map_err(|e| {
                IncidentError::Content {
                    path: SIGNATURE.into(),
                    problem: e.to_string(),
                }
            })?),
            None => None,
        };
        for m in &manifest.members {
            let Some(data) = raw.get(&m.path) else {
                return Err(IncidentError::Tampered {
                    path: m.path.clone(),
                    problem: "listed in the manifest but missing".into(),
                });
            };
            if data.len() as u64 != m.bytes {
                return Err(IncidentError::Tampered {
                    path: m.path.clone(),
                    problem: format!("{} bytes, the manifest says {}", data.len(), m.bytes),
                });
            }
            let h = sha256_hex(data);
            if h != m.sha256 {
                return Err(IncidentError::Tampered {
                    path: m.path.clone(),
                    problem: format!("sha256 {h}, the manifest says {}", m.sha256),
                });
            }
        }
        if let Some(p) = raw
            .keys()
            .find(|p| !manifest.members.iter().any(|m| &m.path == *p))
        {
            return Err(IncidentError::Tampered {
                path: p.clone(),
                problem: "not listed in the manifest".into(),
            });
        }
        Ok(Incident {
            manifest,
            manifest_raw,
            members: raw,
            signature,
        })
    }

    /// The flows (`flows.ndjson`).
    pub fn flows(&self) -> Result<Vec<Flow>, IncidentError> {
        self.ndjson("flows.ndjson")
    }

    /// The records (`records.ndjson`), as stored.
    pub fn records(&self) -> Result<Vec<Stored>, IncidentError> {
        self.ndjson("records.ndjson")
    }

    fn ndjson<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, IncidentError> {
        self.text(path)?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| IncidentError::Content {
                    path: path.into(),
                    problem: format!("line {}: {e}", i + 1),
                })
            })
            .collect()
    }

    /// `alerts.json`.
    pub fn alerts(&self) -> Result<AlertsPart, IncidentError> {
        self.json("alerts.json")
    }

    /// `settings.json`.
    pub fn settings(&self) -> Result<serde_json::Value, IncidentError> {
        self.json("settings.json")
    }

    /// The plugins, each with its component.
    pub fn plugins(&self) -> Result<Vec<PluginFile>, IncidentError> {
        let mut list: Vec<PluginFile> = self.json("plugins.json")?;
        for p in &mut list {
            crate::plugins::check_plugin_name(&p.name).map_err(|e| IncidentError::Content {
                path: "plugins.json".into(),
                problem: e.to_string(),
            })?;
            let path = format!("plugins/{}.wasm", p.name);
            p.wasm = self.listed(&path, &p.name)?.to_vec();
            for f in &p.state_files {
                let path = format!("plugins/{}/{f}", p.name);
                check_path(&path)?;
                let b = self.listed(&path, &p.name)?.to_vec();
                p.state.insert(f.clone(), b);
            }
        }
        Ok(list)
    }

    fn listed(&self, path: &str, name: &str) -> Result<&[u8], IncidentError> {
        self.member(path).ok_or_else(|| IncidentError::Content {
            path: "plugins.json".into(),
            problem: format!("lists {name} but {path} is not in the file"),
        })
    }

    fn text(&self, path: &str) -> Result<&str, IncidentError> {
        let b = self.member(path).ok_or_else(|| IncidentError::Content {
            path: path.into(),
            problem: "missing".into(),
        })?;
        std::str::from_utf8(b).map_err(|e| IncidentError::Content {
            path: path.into(),
            problem: format!("not UTF-8: {e}"),
        })
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, IncidentError> {
        serde_json::from_str(self.text(path)?).map_err(|e| IncidentError::Content {
            path: path.into(),
            problem: format!("line {} column {}: {e}", e.line(), e.column()),
        })
    }
}

fn read_error(e: std::io::Error) -> IncidentError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => IncidentError::Truncated(e.to_string()),
        _ => IncidentError::Corrupt(e.to_string()),
    }
}

/// What an export reads.
pub struct Sources<'a> {
    pub store: &'a Store,
    pub records: Option<&'a RecordStore>,
    pub alerts: Option<&'a AlertStore>,
    pub plugins: Vec<PluginFile>,
    pub settings: serde_json::Value,
    pub node: String,
}

/// What to export.
#[derive(Debug, Clone)]
pub struct Window {
    pub from_ms: u64,
    pub to_ms: u64,
    /// A flow filter in the query language ("" for every flow).
    pub filter: String,
    /// Refuse (naming the figure) beyond this many flows.
    pub max_flows: usize,
}

/// Writes an incident of `w` from the node's stores to `out` (the file's bytes, unsigned)
/// and returns its manifest. The flows and records are spooled to unnamed files in
/// `spool_dir` (gone when done) while their hashes are counted, so memory holds a page of
/// them, not the window.
pub fn export_to<W: Write>(
    src: &Sources<'_>,
    w: &Window,
    spool_dir: &Path,
    out: &mut W,
) -> Result<Manifest, IncidentError> {
    let expr = crate::query::parse(&w.filter).map_err(|e| IncidentError::Content {
        path: "filter".into(),
        problem: e.to_string(),
    })?;
    let range = crate::query::TimeRange {
        from_ms: w.from_ms,
        to_ms: w.to_ms,
    };
    let mut counts = BTreeMap::new();
    let mut spooled: BTreeMap<String, Spooled> = BTreeMap::new();
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();

    let mut flows = Spool::new(spool_dir)?;
    let mut after = 0;
    let mut n = 0usize;
    loop {
        let page = src.store.select(&expr, &range, after, 10_000)?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (_, f) in &page {
            n += 1;
            if n > w.max_flows {
                return Err(IncidentError::TooLarge(format!(
                    "more than {} flows in the window: narrow it with a filter or a shorter window, or raise max_flows",
                    w.max_flows
                )));
            }
            serde_json::to_writer(&mut flows, f).map_err(std::io::Error::other)?;
            flows.write_all(b"\n")?;
        }
        too_large(flows.len)?;
    }
    counts.insert("flows".into(), n as u64);
    let flows_len = flows.len;
    spooled.insert("flows.ndjson".into(), flows.finish()?);

    let mut records = Spool::new(spool_dir)?;
    let mut nrec = 0u64;
    let mut bad: Option<std::io::Error> = None;
    if let Some(r) = src.records {
        r.scan_time(w.from_ms, w.to_ms, usize::MAX, |s| {
            if bad.is_some() {
                return;
            }
            let written = serde_json::to_writer(&mut records, &s)
                .map_err(std::io::Error::other)
                .and_then(|()| records.write_all(b"\n"))
                .and_then(|()| too_large(flows_len + records.len).map_err(std::io::Error::other));
            match written {
                Ok(()) => nrec += 1,
                Err(e) => bad = Some(e),
            }
        })?;
    }
    if let Some(e) = bad {
        // The limit, said as itself.
        return Err(match e.downcast::<IncidentError>() {
            Ok(inc) => inc,
            Err(e) => e.into(),
        });
    }
    counts.insert("records".into(), nrec);
    let records_len = records.len;
    spooled.insert("records.ndjson".into(), records.finish()?);

    let mut alerts = AlertsPart::default();
    if let Some(a) = src.alerts {
        let overlaps =
            |x: &Alert| x.since_ms <= w.to_ms && (x.resolved_ms == 0 || x.resolved_ms >= w.from_ms);
        alerts.history = a
            .history(crate::alerts::HISTORY_MAX)
            .into_iter()
            .rev()
            .filter(overlaps)
            .collect();
        alerts.active = a.active().into_iter().filter(overlaps).collect();
        alerts.silences = a
            .silences()
            .into_iter()
            .filter(|s| s.starts_ms <= w.to_ms && s.ends_ms >= w.from_ms)
            .collect();
    }
    counts.insert("alerts".into(), alerts.history.len() as u64);
    counts.insert("silences".into(), alerts.silences.len() as u64);
    members.insert("alerts.json".into(), pretty(&alerts)?);

    counts.insert("plugins".into(), src.plugins.len() as u64);
    for p in &src.plugins {
        crate::plugins::check_plugin_name(&p.name).map_err(|e| IncidentError::Content {
            path: "plugins.json".into(),
            problem: e.to_string(),
        })?;
        members.insert(format!("plugins/{}.wasm", p.name), p.wasm.clone());
        for (f, b) in &p.state {
            members.insert(format!("plugins/{}/{f}", p.name), b.clone());
        }
    }
    members.insert("plugins.json".into(), pretty(&src.plugins)?);
    members.insert("settings.json".into(), pretty(&src.settings)?);
    for p in members.keys() {
        check_path(p)?;
        if p == MANIFEST || p == SIGNATURE {
            return Err(IncidentError::Corrupt(format!("{p} is a reserved member")));
        }
    }
    too_large(flows_len + records_len + members.values().map(|b| b.len() as u64).sum::<u64>())?;

    let mut listed: Vec<Member> = members
        .iter()
        .map(|(p, b)| Member::of(p, b))
        .chain(spooled.iter().map(|(path, s)| Member {
            path: path.clone(),
            sha256: s.sha256.clone(),
            bytes: s.len,
        }))
        .collect();
    listed.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        format: FORMAT.into(),
        created_ms: crate::query::now_ms(),
        node: src.node.clone(),
        weir_version: env!("CARGO_PKG_VERSION").into(),
        from_ms: w.from_ms,
        to_ms: w.to_ms,
        filter: w.filter.clone(),
        counts,
        members: listed,
    };
    let raw =
        serde_json::to_vec_pretty(&manifest).map_err(|e| IncidentError::Manifest(e.to_string()))?;
    // Manifest first, then every member in path order (as `Incident::to_bytes` writes).
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let t = manifest.created_ms / 1000;
    put(&mut tar, t, MANIFEST, raw.len() as u64, raw.as_slice())?;
    for m in &manifest.members {
        match (members.get(&m.path), spooled.get_mut(&m.path)) {
            (Some(b), _) => put(&mut tar, t, &m.path, m.bytes, b.as_slice())?,
            (None, Some(s)) => put(&mut tar, t, &m.path, s.len, &mut s.file)?,
            (None, None) => {}
        }
    }
    tar.into_inner()?.finish()?.flush()?;
    Ok(manifest)
}

/// Refuses an export past what a reader takes ([`MAX_INFLATED`]), before it fills the disk.
fn too_large(bytes: u64) -> Result<(), IncidentError> {
    if bytes > MAX_INFLATED {
        return Err(IncidentError::TooLarge(format!(
            "the incident would inflate past {} GiB, more than weir reads back: narrow it with a filter or a shorter window",
            MAX_INFLATED >> 30
        )));
    }
    Ok(())
}

/// [`export_to`] an unnamed file in `spool_dir` (gone when closed), rewound: the file, its
/// size and the manifest. What the API streams to the client.
pub fn export_file(
    src: &Sources<'_>,
    w: &Window,
    spool_dir: &Path,
) -> Result<(std::fs::File, u64, Manifest), IncidentError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, tempfile::tempfile_in(spool_dir)?);
    let manifest = export_to(src, w, spool_dir, &mut out)?;
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    let len = file.stream_position()?;
    file.rewind()?;
    Ok((file, len, manifest))
}

fn pretty<T: Serialize>(v: &T) -> Result<Vec<u8>, IncidentError> {
    serde_json::to_vec_pretty(v).map_err(|e| std::io::Error::other(e).into())
}

/// Writes an incident's history into fresh stores: flows appended and flushed, records
/// with their sequence numbers, alerts and silences as they were.
pub fn restore(
    inc: &Incident,
    store: &Store,
    records: &RecordStore,
    alerts: &AlertStore,
) -> Result<(), IncidentError> {
    let flows = inc.flows()?;
    for chunk in flows.chunks(10_000) {
        store.append(chunk)?;
    }
    store.flush()?;
    records.restore(&inc.records()?)?;
    let a = inc.alerts()?;
    alerts.restore(&a.active, &a.history, &a.silences)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Incident {
        let mut members = BTreeMap::new();
        members.insert("flows.ndjson".to_string(), b"{}\n".to_vec());
        members.insert("plugins/a.wasm".to_string(), vec![0, 97, 115, 109]);
        let m = Manifest {
            format: FORMAT.into(),
            created_ms: 1_700_000_000_000,
            node: "n1".into(),
            weir_version: "0".into(),
            from_ms: 1,
            to_ms: 2,
            filter: String::new(),
            counts: BTreeMap::new(),
            members: Vec::new(),
        };
        Incident::new(m, members).expect("incident")
    }

    #[test]
    fn an_export_spools_its_flows_and_records_and_reads_back_whole() {
        use crate::records::{Entry, RecordStore};
        use crate::store::StoreConfig;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreConfig::new(dir.path().join("flows"))).expect("store");
        let t0 = 1_700_000_000_000u64;
        let flows: Vec<Flow> = (0..25_000u64)
            .map(|i| {
                let mut f = Flow::empty();
                f.time_flow_start_ms = t0 + i;
                f.time_flow_end_ms = t0 + i + 5;
                f.time_received = f.time_flow_end_ms;
                f.bytes = 100 + i;
                f.packets = 1;
                f.dst_port = (i % 7) as u16;
                f
            })
            .collect();
        store.append(&flows).expect("append");
        store.flush().expect("flush");
        let records = RecordStore::open(&dir.path().join("records")).expect("records");
        let entries: Vec<Entry> = (0..3u64)
            .map(|i| Entry {
                time_ms: t0 + i * 100,
                end_ms: None,
                kind: "log".into(),
                text: format!("line {i}"),
                labels: vec![],
                flow_filter: None,
            })
            .collect();
        records.write("otlp", entries).expect("write");
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).expect("spool dir");
        let src = Sources {
            store: &store,
            records: Some(&records),
            alerts: None,
            plugins: vec![],
            settings: serde_json::json!({"a": 1}),
            node: "n1".into(),
        };
        let window = |filter: &str, max_flows: usize| Window {
            from_ms: t0,
            to_ms: t0 + 100_000,
            filter: filter.into(),
            max_flows,
        };
        let mut out = Vec::new();
        let m =
            export_to(&src, &window("DstPort!=3", 1_000_000), &spool, &mut out).expect("export");
        let back = Incident::from_bytes(&out).expect("reads back");
        assert_eq!(back.manifest, m);
        let read = back.flows().expect("flows");
        let want: Vec<&Flow> = flows.iter().filter(|f| f.dst_port != 3).collect();
        assert_eq!(read.len(), want.len());
        assert_eq!(m.counts["flows"], want.len() as u64);
        assert!(read.iter().zip(&want).all(|(a, b)| a == *b));
        assert_eq!(back.records().expect("records").len(), 3);
        // The spooled files were unnamed: nothing is left in the spool dir.
        assert_eq!(std::fs::read_dir(&spool).expect("spool").count(), 0);
        // More flows than allowed: refused, naming the figure, nothing written.
        let mut out = Vec::new();
        let e = export_to(&src, &window("", 10_000), &spool, &mut out).expect_err("too many");
        assert!(e.to_string().contains("more than 10000 flows"), "{e}");
        assert!(out.is_empty());
    }

    #[test]
    fn a_file_round_trips_with_its_signature_and_exact_manifest_bytes() {
        let mut inc = sample();
        inc.signature = Some(Signature {
            key_id: "ab".into(),
            ed25519: "cd".into(),
        });
        let back = Incident::from_bytes(&inc.to_bytes().expect("bytes")).expect("read");
        assert_eq!(back.manifest, inc.manifest);
        assert_eq!(back.manifest_bytes(), inc.manifest_bytes());
        assert_eq!(back.signature, inc.signature);
        assert_eq!(
            back.member("plugins/a.wasm"),
            Some(&[0u8, 97, 115, 109][..])
        );
    }

    #[test]
    fn cut_short_or_not_an_archive_is_named() {
        let bytes = sample().to_bytes().expect("bytes");
        for n in [10, bytes.len() / 2, bytes.len() - 4] {
            let e = Incident::from_bytes(&bytes[..n]).expect_err("cut");
            assert!(
                matches!(e, IncidentError::Truncated(_) | IncidentError::Corrupt(_)),
                "{n}: {e}"
            );
        }
        assert!(matches!(
            Incident::from_bytes(b"PK\x03\x04"),
            Err(IncidentError::Corrupt(_))
        ));
    }

    #[test]
    fn reserved_or_escaping_member_paths_are_refused() {
        for p in [
            "../x",
            "/etc/passwd",
            "a//b",
            "incident.json",
            "a/./b",
            "a b",
        ] {
            let mut members = BTreeMap::new();
            members.insert(p.to_string(), Vec::new());
            assert!(
                Incident::new(sample().manifest, members).is_err(),
                "{p} accepted"
            );
        }
    }
}
