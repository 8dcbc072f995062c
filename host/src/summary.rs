//! A summarizer's state between calls: its snapshots, one per time window, kept on disk.
//!
//! Every call starts a fresh instance from the current window's snapshot (so a trap never
//! leaves half-updated sketches behind) and the snapshot it ends with becomes the window's
//! state. Every `window_secs` the current window is sealed and a new one starts; the last
//! `windows` are kept. Queries and exported snapshots merge every kept window.
//!
//! On disk (`<plugin dir>/summary.bin`, written by [`Windows::persist`] through a temporary
//! file and a rename): `WSUM1`, the window count (u32 LE), then per window its start (u64 LE),
//! its length (u32 LE) and the snapshot bytes, oldest first. A file that does not parse is
//! set aside (`summary.bin.corrupt-<ms>`), never overwritten.

use crate::manifest::Windowing;
use std::collections::VecDeque;
use std::path::PathBuf;

/// The file in a plugin's directory that keeps a summarizer's windows.
pub const SUMMARY_FILE: &str = "summary.bin";
/// Most bytes all of one summarizer's windows may hold together; past it the oldest sealed
/// windows are dropped.
pub const MAX_SUMMARY_BYTES: usize = 64 << 20;
const MAGIC: &[u8; 5] = b"WSUM1";

/// One window: when it started and its snapshot (None before its first update).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub start_ms: u64,
    pub snapshot: Option<Vec<u8>>,
}

/// The windows of one summarizer, oldest first; the last one is current.
#[derive(Debug)]
pub struct Windows {
    cfg: Windowing,
    windows: VecDeque<Window>,
    path: Option<PathBuf>,
    dirty: bool,
}

fn start_of(cfg: Windowing, now_ms: u64) -> u64 {
    match cfg.window_secs {
        0 => 0,
        s => now_ms / (s * 1000) * (s * 1000),
    }
}

impl Windows {
    pub fn new(cfg: Windowing) -> Windows {
        Windows {
            cfg,
            windows: VecDeque::from([Window {
                start_ms: 0,
                snapshot: None,
            }]),
            path: None,
            dirty: false,
        }
    }

    /// Keeps the windows in `path` from now on, starting from what it holds.
    pub fn keep_in(&mut self, path: PathBuf, plugin: &str) {
        match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Some(w) if !w.is_empty() => self.windows = w,
                _ => {
                    let aside = weir_core::aside::set_aside(&path);
                    tracing::warn!(plugin, path = %path.display(), aside = ?aside, "summarizer state unreadable: set aside, starting empty");
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(plugin, path = %path.display(), error = %e, "summarizer state unreadable")
            }
        }
        self.path = Some(path);
    }

    /// Seals the current window when `now_ms` is past it, and drops windows beyond the kept
    /// count.
    pub fn rotate(&mut self, now_ms: u64) {
        let start = start_of(self.cfg, now_ms);
        let current = self.windows.back().map(|w| w.start_ms).unwrap_or(0);
        if self.cfg.window_secs > 0 && start > current {
            if self.windows.back().is_some_and(|w| w.snapshot.is_none()) {
                self.windows.pop_back();
            }
            self.windows.push_back(Window {
                start_ms: start,
                snapshot: None,
            });
            self.dirty = true;
        }
        while self.windows.len() > self.cfg.windows.max(1) as usize {
            self.windows.pop_front();
            self.dirty = true;
        }
    }

    /// The start of the window `now_ms` falls in.
    pub fn start_for(&self, now_ms: u64) -> u64 {
        start_of(self.cfg, now_ms)
    }

    /// Replaces the snapshot of the kept window starting at `start_ms` (ignored when that
    /// window is no longer kept); bounded like [`Windows::set_current`].
    pub fn set_window(&mut self, start_ms: u64, snapshot: Vec<u8>) {
        let Some(w) = self.windows.iter_mut().find(|w| w.start_ms == start_ms) else {
            return;
        };
        w.snapshot = Some(snapshot);
        self.trim_bytes();
        self.dirty = true;
    }

    /// The current window's snapshot.
    pub fn current(&self) -> Option<Vec<u8>> {
        self.windows.back().and_then(|w| w.snapshot.clone())
    }

    /// Replaces the current window's snapshot; drops the oldest sealed windows while all of
    /// them together are over [`MAX_SUMMARY_BYTES`].
    pub fn set_current(&mut self, snapshot: Vec<u8>) {
        if let Some(w) = self.windows.back_mut() {
            w.snapshot = Some(snapshot);
        }
        self.trim_bytes();
        self.dirty = true;
    }

    /// Every kept window's snapshot, oldest first (windows without one left out).
    pub fn all(&self) -> Vec<Vec<u8>> {
        self.windows
            .iter()
            .filter_map(|w| w.snapshot.clone())
            .collect()
    }

    /// The snapshot of the kept window starting at `start_ms` (`Some(None)`: kept, no update
    /// yet), or `None` when no kept window starts there.
    pub fn window(&self, start_ms: u64) -> Option<Option<Vec<u8>>> {
        self.windows
            .iter()
            .find(|w| w.start_ms == start_ms)
            .map(|w| w.snapshot.clone())
    }

    /// The kept windows (start and snapshot size), oldest first.
    pub fn list(&self) -> Vec<(u64, usize)> {
        self.windows
            .iter()
            .map(|w| (w.start_ms, w.snapshot.as_ref().map_or(0, Vec::len)))
            .collect()
    }

    /// Every kept window's start and snapshot, oldest first (windows without one left out).
    pub fn snapshots(&self) -> Vec<(u64, Vec<u8>)> {
        self.windows
            .iter()
            .filter_map(|w| w.snapshot.clone().map(|s| (w.start_ms, s)))
            .collect()
    }

    /// Replaces every window by these (start and snapshot, any order), keeping the newest
    /// `windows` of them within the byte bound; none leaves one empty window starting at
    /// `now_ms`'s.
    pub fn replace(&mut self, mut given: Vec<(u64, Vec<u8>)>, now_ms: u64) {
        given.sort_by_key(|(start, _)| *start);
        given.dedup_by_key(|(start, _)| *start);
        self.windows = given
            .into_iter()
            .map(|(start_ms, s)| Window {
                start_ms,
                snapshot: Some(s),
            })
            .collect();
        if self.windows.is_empty() {
            self.windows.push_back(Window {
                start_ms: start_of(self.cfg, now_ms),
                snapshot: None,
            });
        }
        while self.windows.len() > self.cfg.windows.max(1) as usize {
            self.windows.pop_front();
        }
        self.trim_bytes();
        self.dirty = true;
    }

    /// Drops the oldest windows while all of them hold more than [`MAX_SUMMARY_BYTES`]
    /// (the current one is always kept).
    fn trim_bytes(&mut self) {
        while self.windows.len() > 1 && self.bytes() > MAX_SUMMARY_BYTES {
            self.windows.pop_front();
        }
    }

    fn bytes(&self) -> usize {
        self.windows
            .iter()
            .map(|w| w.snapshot.as_ref().map_or(0, Vec::len))
            .sum()
    }

    /// Writes the windows to their file when they changed. Returns whether it wrote.
    pub fn persist(&mut self) -> std::io::Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        if !self.dirty {
            return Ok(false);
        }
        let tmp = path.with_extension("bin.tmp");
        std::fs::write(&tmp, encode(&self.windows)).and_then(|()| std::fs::rename(&tmp, path))?;
        self.dirty = false;
        Ok(true)
    }
}

fn encode(windows: &VecDeque<Window>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(windows.len() as u32).to_le_bytes());
    for w in windows {
        let snap = w.snapshot.as_deref().unwrap_or_default();
        out.extend_from_slice(&w.start_ms.to_le_bytes());
        // u32::MAX marks a window without a snapshot.
        let len = if w.snapshot.is_some() {
            snap.len() as u32
        } else {
            u32::MAX
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(snap);
    }
    out
}

fn decode(bytes: &[u8]) -> Option<VecDeque<Window>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let take = |rest: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (a, b) = (rest.get(..n)?, rest.get(n..)?);
        *rest = b;
        Some(a.to_vec())
    };
    let mut rest = rest;
    let count = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
    let mut out = VecDeque::new();
    for _ in 0..count.min(crate::manifest::MAX_WINDOWS) {
        let start_ms = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
        let len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
        let snapshot = if len == u32::MAX {
            None
        } else {
            Some(take(&mut rest, len as usize)?)
        };
        out.push_back(Window { start_ms, snapshot });
    }
    rest.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_rotate_keep_their_count_and_survive_reopen_and_bad_files() {
        let cfg = Windowing {
            window_secs: 60,
            windows: 3,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SUMMARY_FILE);
        let mut w = Windows::new(cfg);
        w.keep_in(path.clone(), "t");
        for minute in 0..5u64 {
            w.rotate(minute * 60_000 + 5);
            w.set_current(vec![minute as u8]);
        }
        assert_eq!(
            w.all(),
            vec![vec![2], vec![3], vec![4]],
            "the last three minutes"
        );
        assert_eq!(w.current(), Some(vec![4]));
        assert!(w.persist().unwrap());
        assert!(!w.persist().unwrap(), "unchanged: not written again");
        let mut again = Windows::new(cfg);
        again.keep_in(path.clone(), "t");
        assert_eq!(again.all(), w.all());
        assert_eq!(again.list(), vec![(120_000, 1), (180_000, 1), (240_000, 1)]);
        // A damaged file is set aside, never overwritten, and the state starts empty.
        std::fs::write(&path, b"WSUM1\x09\x00").unwrap();
        let mut bad = Windows::new(cfg);
        bad.keep_in(path.clone(), "t");
        assert!(bad.all().is_empty());
        assert!(!path.exists());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(aside);
        // One window forever when window_secs is 0.
        let mut one = Windows::new(Windowing::default());
        for t in [0, 1_000_000, 9_000_000_000] {
            one.rotate(t);
            one.set_current(vec![1]);
        }
        assert_eq!(one.list().len(), 1);
    }
}
