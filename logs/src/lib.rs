//! Log files the agent follows (`weir agent --log-file PATH`), each implementing
//! `weir_core::telemetry::logfile::LogSource`:
//!
//! - [`SyslogFile`]: a text file read from a saved inode and offset; complete lines only (a
//!   line being written waits for its newline); a file replaced (logrotate's rename, then a new
//!   file) has the rest of the old one read from `PATH.1` when that is it, then the new file
//!   from its start; a file truncated in place (copytruncate) is read from its start.
//! - [`Journal`]: a systemd journal file or directory, read with `journalctl -o json` after
//!   the saved cursor (the journal's own resumable position), so systemd's code reads its
//!   format.
//!
//! [`open`] picks by what the path is: a directory, a `.journal` file or a file starting with
//! the journal's magic bytes is a journal; anything else is syslog text.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use weir_core::query::now_ms;
use weir_core::telemetry::LogLine;
use weir_core::telemetry::logfile::{LogSource, LogSourceError, parse_journal, parse_syslog};

/// Most bytes one poll reads from a text file.
const READ_MAX: u64 = 8 << 20;
/// A line longer than this without a newline is cut there.
const LINE_MAX: usize = 64 << 10;

/// The source for `path`, resuming at `position` (what [`LogSource::position`] saved).
pub fn open(path: &Path, position: Option<&serde_json::Value>) -> Box<dyn LogSource> {
    let is_journal = path.is_dir()
        || path.extension().is_some_and(|e| e == "journal")
        || std::fs::File::open(path)
            .and_then(|mut f| {
                let mut magic = [0u8; 8];
                f.read_exact(&mut magic).map(|_| magic == *b"LPKSHHRH")
            })
            .unwrap_or(false);
    if is_journal {
        Box::new(Journal {
            path: path.to_path_buf(),
            name: path.display().to_string(),
            cursor: position
                .and_then(|p| p["cursor"].as_str())
                .map(str::to_string),
        })
    } else {
        let at = position.and_then(|p| Some((p["inode"].as_u64()?, p["offset"].as_u64()?)));
        Box::new(SyslogFile {
            path: path.to_path_buf(),
            name: path.display().to_string(),
            catching_up: at.is_none(),
            at,
        })
    }
}

/// A syslog text file followed by inode and offset.
pub struct SyslogFile {
    path: PathBuf,
    name: String,
    /// Inode and offset of the next line; None before the first read.
    at: Option<(u64, u64)>,
    /// Reading a file for the first time, until its end: lines before `since` are skipped.
    catching_up: bool,
}

impl SyslogFile {
    fn error(&self, message: String) -> LogSourceError {
        LogSourceError {
            source_name: self.name.clone(),
            message,
        }
    }

    /// Complete lines of `file` from `offset` (at most `max`, and READ_MAX bytes): the lines,
    /// the offset after the last one taken, and whether it stopped before the end.
    fn read_lines(
        &self,
        file: &Path,
        offset: u64,
        max: usize,
    ) -> Result<(Vec<String>, u64, bool), LogSourceError> {
        let mut f = std::fs::File::open(file)
            .map_err(|e| self.error(format!("cannot open {}: {e}", file.display())))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.error(format!("cannot seek: {e}")))?;
        let mut buf = Vec::new();
        let read = f
            .take(READ_MAX)
            .read_to_end(&mut buf)
            .map_err(|e| self.error(format!("cannot read: {e}")))?;
        let mut lines = Vec::new();
        let mut used = 0usize;
        let mut stopped = read as u64 == READ_MAX;
        loop {
            if lines.len() >= max {
                stopped = true;
                break;
            }
            let rest = &buf[used..];
            let end = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if rest.len() >= LINE_MAX => LINE_MAX,
                None => break,
            };
            let text = String::from_utf8_lossy(&rest[..end]);
            let text = text.trim_end_matches(['\n', '\r']);
            if !text.is_empty() {
                lines.push(text.to_string());
            }
            used += end;
        }
        Ok((lines, offset + used as u64, stopped))
    }
}

impl LogSource for SyslogFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "syslog"
    }

    fn poll(&mut self, max: usize, since_ms: u64) -> Result<Vec<LogLine>, LogSourceError> {
        let meta =
            std::fs::metadata(&self.path).map_err(|e| self.error(format!("cannot read: {e}")))?;
        let (inode, len) = (meta.ino(), meta.len());
        let now = now_ms();
        let first = self.catching_up;
        let parse = |lines: Vec<String>| -> Vec<LogLine> {
            lines
                .iter()
                .map(|l| parse_syslog(l, &self.name, now))
                .filter(|l| !first || l.time_ns / 1_000_000 >= since_ms)
                .collect()
        };
        let mut out = Vec::new();
        let offset = match self.at {
            None => 0,
            Some((old, mut offset)) if old != inode => {
                // Replaced: finish the old file when it was renamed to PATH.1 (all of what
                // is left: it will not be found again).
                let mut rotated = self.path.clone().into_os_string();
                rotated.push(".1");
                let rotated = PathBuf::from(rotated);
                if std::fs::metadata(&rotated).is_ok_and(|m| m.ino() == old) {
                    loop {
                        let (lines, next, more) = self.read_lines(&rotated, offset, usize::MAX)?;
                        out.extend(parse(lines));
                        offset = next;
                        if !more {
                            break;
                        }
                    }
                }
                tracing::info!(file = %self.name, "log file replaced: reading the new one from its start");
                0
            }
            Some((_, offset)) if len < offset => {
                tracing::info!(file = %self.name, "log file truncated: reading it from its start");
                0
            }
            Some((_, offset)) => offset,
        };
        let (lines, next, more) =
            self.read_lines(&self.path, offset, max.saturating_sub(out.len()).max(1))?;
        self.at = Some((inode, next));
        if !more {
            self.catching_up = false;
        }
        out.extend(parse(lines));
        Ok(out)
    }

    fn position(&self) -> serde_json::Value {
        match self.at {
            Some((inode, offset)) => serde_json::json!({"inode": inode, "offset": offset}),
            None => serde_json::Value::Null,
        }
    }
}

/// A systemd journal (file or directory) read through `journalctl`.
pub struct Journal {
    path: PathBuf,
    name: String,
    cursor: Option<String>,
}

impl LogSource for Journal {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "journald"
    }

    fn poll(&mut self, max: usize, since_ms: u64) -> Result<Vec<LogLine>, LogSourceError> {
        let err = |message: String| LogSourceError {
            source_name: self.name.clone(),
            message,
        };
        let mut cmd = std::process::Command::new("journalctl");
        if self.path.is_dir() {
            cmd.arg("--directory").arg(&self.path);
        } else {
            cmd.arg("--file").arg(&self.path);
        }
        cmd.args(["-o", "json", "--no-pager", "-q"]);
        match &self.cursor {
            Some(c) => cmd.arg(format!("--after-cursor={c}")),
            None => cmd.arg(format!("--since=@{}", since_ms / 1000)),
        };
        let out = cmd.output().map_err(|e| {
            err(if e.kind() == std::io::ErrorKind::NotFound {
                "journalctl is not installed (it comes with systemd)".to_string()
            } else {
                format!("cannot run journalctl: {e}")
            })
        })?;
        if !out.status.success() {
            return Err(err(format!(
                "journalctl failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut lines = Vec::new();
        for (i, text) in String::from_utf8_lossy(&out.stdout).lines().enumerate() {
            if lines.len() >= max {
                break;
            }
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| err(format!("journalctl entry {}: {e}", i + 1)))?;
            let cursor = v["__CURSOR"].as_str().map(str::to_string);
            match parse_journal(&v, &self.name) {
                Ok(l) => lines.push(l),
                Err(e) => tracing::warn!(journal = %self.name, error = %e, "journal entry skipped"),
            }
            if cursor.is_some() {
                self.cursor = cursor;
            }
        }
        Ok(lines)
    }

    fn position(&self) -> serde_json::Value {
        match &self.cursor {
            Some(c) => serde_json::json!({"cursor": c}),
            None => serde_json::Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn bodies(src: &mut Box<dyn LogSource>, since: u64) -> Vec<String> {
        src.poll(100, since)
            .expect("poll")
            .into_iter()
            .map(|l| l.body)
            .collect()
    }

    #[test]
    fn a_text_file_is_followed_across_partial_lines_rotation_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("syslog");
        let append = |s: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open");
            f.write_all(s.as_bytes()).expect("write");
        };
        append("<11>1 2026-12-04T10:00:00Z h a 1 - - old\n");
        let mut src = open(&path, None);
        // A first read keeps lines since `since`: the 2026 line is before it.
        let since = 1_796_500_000_000;
        assert!(src.poll(100, since).expect("poll").is_empty());
        append("<11>1 2026-12-05T10:00:00Z h a 1 - - one\n<11>1 2026-12-05T10:00:01Z h a 1 - - tw");
        assert_eq!(bodies(&mut src, since), ["one"]);
        append("o\n");
        assert_eq!(bodies(&mut src, since), ["two"]);
        // Resumes from its position in a new process.
        let pos = src.position();
        append("<11>1 2026-12-05T10:00:02Z h a 1 - - three\n");
        let mut again = open(&path, Some(&pos));
        assert_eq!(bodies(&mut again, since), ["three"]);
        // Rotated: the old file's last line, then the new file.
        append("<11>1 2026-12-05T10:00:03Z h a 1 - - four\n");
        std::fs::rename(&path, dir.path().join("syslog.1")).expect("rename");
        append("<11>1 2026-12-05T10:00:04Z h a 1 - - five\n");
        assert_eq!(bodies(&mut again, since), ["four", "five"]);
        // Truncated in place.
        std::fs::write(&path, "<11>1 2026-12-05T10:00:05Z h a 1 - - six\n").expect("write");
        assert_eq!(bodies(&mut again, since), ["six"]);
        // A first read of a long file, a few lines a poll: old lines are skipped until its
        // end, not only in the first poll.
        let long = dir.path().join("long");
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!("<11>1 2026-12-04T10:00:0{i}Z h a 1 - - old {i}\n"));
        }
        text.push_str("<11>1 2026-12-06T10:00:00Z h a 1 - - new\n");
        std::fs::write(&long, text).expect("write");
        let mut l = open(&long, None);
        let mut got = Vec::new();
        for _ in 0..6 {
            got.extend(l.poll(3, since).expect("poll").into_iter().map(|x| x.body));
        }
        assert_eq!(got, ["new"]);
        // Gone: an error naming it, not a panic.
        std::fs::remove_file(&path).expect("rm");
        let e = again.poll(100, since).expect_err("gone");
        assert!(e.to_string().contains("syslog"), "{e}");
    }
}
