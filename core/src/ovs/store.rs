//! Collections on disk: `<id>.json.lz4` (the [`Collection`], lz4-compressed JSON) and
//! `<id>.info.json` (its [`CollectionInfo`], for listings), where the id is the collection
//! time in ms, zero-padded to 20 digits, a dash and a counter: ids sort by time. Files are written to a
//! temporary name and renamed, so a crash never leaves half a collection under a real name.

use super::{Collection, OvsError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A collection as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionInfo {
    pub id: String,
    pub time_ms: u64,
    pub origin: String,
    pub datapaths: Vec<String>,
    /// Lines with `actions:` across the datapath dumps (the decoder gives the exact count).
    pub dp_lines: u64,
    pub bridges: Vec<String>,
    pub problems: Vec<String>,
}

impl CollectionInfo {
    fn of(id: String, c: &Collection) -> CollectionInfo {
        CollectionInfo {
            id,
            time_ms: c.time_ms,
            origin: c.origin.clone(),
            datapaths: c.datapaths.iter().map(|d| d.name.clone()).collect(),
            dp_lines: c
                .datapaths
                .iter()
                .map(|d| d.text.lines().filter(|l| l.contains("actions:")).count() as u64)
                .sum(),
            bridges: c.bridges.iter().map(|b| b.name.clone()).collect(),
            problems: c.problems.clone(),
        }
    }
}

/// The collections kept on this node.
pub struct CollectionStore {
    dir: PathBuf,
    next: Mutex<u64>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_digit() || b == b'-')
}

impl CollectionStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<CollectionStore, OvsError> {
        std::fs::create_dir_all(dir)?;
        Ok(CollectionStore {
            dir: dir.to_path_buf(),
            next: Mutex::new(0),
        })
    }

    /// Keeps a collection; returns its id.
    pub fn put(&self, c: &Collection) -> Result<String, OvsError> {
        let id = {
            let mut n = self.next.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                *n += 1;
                let id = format!("{:020}-{:06}", c.time_ms, *n % 1_000_000);
                if !self.dir.join(format!("{id}.json.lz4")).exists() {
                    break id;
                }
            }
        };
        let json = serde_json::to_vec(c).map_err(|e| OvsError::Corrupt(e.to_string()))?;
        let info = serde_json::to_vec(&CollectionInfo::of(id.clone(), c))
            .map_err(|e| OvsError::Corrupt(e.to_string()))?;
        let data = self.dir.join(format!("{id}.json.lz4"));
        let tmp = self.dir.join(format!(".{id}.tmp"));
        std::fs::write(&tmp, lz4_flex::compress_prepend_size(&json))?;
        std::fs::rename(&tmp, &data)?;
        std::fs::write(&tmp, info)?;
        std::fs::rename(&tmp, self.dir.join(format!("{id}.info.json")))?;
        Ok(id)
    }

    fn ids(&self) -> Result<Vec<String>, OvsError> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json.lz4"))
                    .filter(|id| valid_id(id))
                    .map(str::to_string)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every collection kept, oldest first.
    pub fn list(&self) -> Result<Vec<CollectionInfo>, OvsError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            let path = self.dir.join(format!("{id}.info.json"));
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<CollectionInfo>(&b).ok())
            {
                Some(info) => out.push(info),
                // The info file is only a cache: rebuild it from the collection.
                None => {
                    let c = self.get(&id)?;
                    out.push(CollectionInfo::of(id, &c));
                }
            }
        }
        Ok(out)
    }

    /// One collection by id.
    pub fn get(&self, id: &str) -> Result<Collection, OvsError> {
        if !valid_id(id) {
            return Err(OvsError::Invalid(format!(
                "collection id {id:?}: digits and '-' only"
            )));
        }
        let path = self.dir.join(format!("{id}.json.lz4"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OvsError::NotFound(id.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let json = lz4_flex::decompress_size_prepended(&bytes)
            .map_err(|e| OvsError::Corrupt(format!("{}: {e}", path.display())))?;
        serde_json::from_slice(&json)
            .map_err(|e| OvsError::Corrupt(format!("{}: {e}", path.display())))
    }

    /// The newest collection taken at or before `time_ms` (any time when `None`).
    pub fn at(&self, time_ms: Option<u64>) -> Result<Option<String>, OvsError> {
        let ids = self.ids()?;
        Ok(ids.into_iter().rev().find(|id| match time_ms {
            None => true,
            Some(t) => id
                .split('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|ct| ct <= t),
        }))
    }

    /// Drops collections taken before `before_ms` and the oldest past `max`; returns how many.
    pub fn retain(&self, before_ms: u64, max: usize) -> Result<usize, OvsError> {
        let ids = self.ids()?;
        let over = ids.len().saturating_sub(max);
        let mut dropped = 0;
        for (i, id) in ids.iter().enumerate() {
            let t = id
                .split('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if i < over || t < before_ms {
                std::fs::remove_file(self.dir.join(format!("{id}.json.lz4")))?;
                let _ = std::fs::remove_file(self.dir.join(format!("{id}.info.json")));
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}
