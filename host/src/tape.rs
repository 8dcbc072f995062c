//! What a plugin's `outbound-http` calls got, recorded so an incident replays them.
//!
//! On a live agent every answer a plugin receives (status, headers, body) is appended to
//! `<plugin dir>/outbound-http.tape`, the newest [`MAX_TAPE_BYTES`] kept. An incident carries
//! the tape as plugin state; a replay restores it as `outbound-http.replay`, and a plugin
//! whose directory holds that file never reaches the network: a request the original node
//! made (same method, URL and body) gets the answer it got then (the newest, when asked more
//! than once), any other is refused naming it. So a correlator that asked Prometheus gives
//! the same output in the replay as on the original node.
//!
//! The file is a run of entries, each a JSON header line (time, method, URL, the request
//! body's sha256, status, headers, body length) followed by the response body's bytes and a
//! newline. A torn last entry (a crash while appending) ends the reading; what precedes it
//! is kept.

use crate::bindings::imports::weir::plugin::outbound_http::{Request, Response};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The tape a live agent records, in the plugin's directory.
pub const TAPE_FILE: &str = "outbound-http.tape";
/// The tape a replay answers from (restored from the incident's `TAPE_FILE`).
pub const REPLAY_FILE: &str = "outbound-http.replay";
/// Most bytes a plugin's tape holds; past it, the oldest entries go, down to half.
pub const MAX_TAPE_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    at_ms: u64,
    method: String,
    url: String,
    request_sha256: String,
    status: u16,
    headers: Vec<(String, String)>,
    body_len: usize,
}

/// One recorded exchange.
#[derive(Debug, Clone)]
pub struct Entry {
    header: Header,
    body: Vec<u8>,
}

/// A request as the tape keys it.
pub struct Key {
    method: String,
    url: String,
    body_sha256: String,
}

impl Key {
    pub fn of(req: &Request) -> Key {
        Key {
            method: req.method.to_ascii_uppercase(),
            url: req.url.clone(),
            body_sha256: crate::plugin::sha256_hex(&req.body),
        }
    }

    fn matches(&self, h: &Header) -> bool {
        h.method == self.method && h.url == self.url && h.request_sha256 == self.body_sha256
    }
}

enum Mode {
    /// Live: answers appended to the file; its size (None until first known), shared by
    /// every tape of the same file in this process (a reload or upgrade briefly has two).
    Record { bytes: SizeCell },
    /// A replay: answers read from the file (loaded at first use), the network never used.
    Replay { entries: OnceLock<Vec<Entry>> },
}

/// A tape file's size, None until first known.
type SizeCell = Arc<Mutex<Option<u64>>>;

/// The size cell of the tape at `path`, one per file in the process: appends and compactions
/// of one file never interleave.
fn shared_size(path: &Path) -> SizeCell {
    static CELLS: OnceLock<Mutex<HashMap<PathBuf, SizeCell>>> = OnceLock::new();
    let mut cells = crate::lock(CELLS.get_or_init(Default::default));
    cells.entry(path.to_path_buf()).or_default().clone()
}

/// Forgets what this process knows of the tape in `dir` (its file was replaced or removed:
/// an upgrade, a removal): the next append reads the file again, cutting a torn tail.
pub fn forget(dir: &Path) {
    let cell = shared_size(&dir.join(TAPE_FILE));
    *crate::lock(&cell) = None;
}

/// A plugin's tape.
pub struct Tape {
    path: PathBuf,
    mode: Mode,
    plugin: String,
}

impl Tape {
    /// The tape of the plugin whose state lives in `dir`: a replay's when `dir` holds
    /// [`REPLAY_FILE`], else one that records into [`TAPE_FILE`].
    pub fn in_dir(dir: &Path, plugin: &str, replaying: bool) -> Tape {
        let replay = dir.join(REPLAY_FILE);
        if replaying || replay.exists() {
            return Tape {
                path: replay,
                mode: Mode::Replay {
                    entries: OnceLock::new(),
                },
                plugin: plugin.to_string(),
            };
        }
        let path = dir.join(TAPE_FILE);
        Tape {
            mode: Mode::Record {
                bytes: shared_size(&path),
            },
            path,
            plugin: plugin.to_string(),
        }
    }

    /// True in a replay: answers come from the tape only.
    pub fn replays(&self) -> bool {
        matches!(self.mode, Mode::Replay { .. })
    }

    /// A replay's answer to `key`: the newest recorded, or an error naming the request.
    pub fn answer(&self, key: &Key) -> Result<Response, String> {
        let Mode::Replay { entries } = &self.mode else {
            return Err("outbound-http: this tape records, it does not answer".into());
        };
        let entries = entries.get_or_init(|| match std::fs::read(&self.path) {
            Ok(b) => {
                let (list, torn) = parse(&b);
                if let Some(at) = torn {
                    tracing::warn!(plugin = %self.plugin, path = %self.path.display(), offset = at, "outbound-http tape cut short: entries after the offset ignored");
                }
                list
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(plugin = %self.plugin, path = %self.path.display(), error = %e, "outbound-http tape unreadable");
                Vec::new()
            }
        });
        let hit = entries.iter().rev().find(|e| key.matches(&e.header));
        match hit {
            // The live limits hold for what a file hands over too.
            Some(e)
                if e.body.len() as u64 > crate::http::MAX_RESPONSE_BYTES
                    || e.header.headers.len() > crate::http::MAX_HEADERS =>
            {
                Err(format!(
                    "outbound-http in a replay: the recorded answer to {} {} is larger than a plugin may get ({} bytes, {} headers at most)",
                    key.method,
                    key.url.chars().take(300).collect::<String>(),
                    crate::http::MAX_RESPONSE_BYTES,
                    crate::http::MAX_HEADERS
                ))
            }
            Some(e) => Ok(Response {
                status: e.header.status,
                headers: e.header.headers.clone(),
                body: e.body.clone(),
            }),
            None => Err(format!(
                "outbound-http in a replay: {} {} has no answer recorded on the original node (never asked there, or it failed; the incident recorded {} answer(s) for this plugin); a replay answers only what was recorded",
                key.method,
                key.url.chars().take(300).collect::<String>(),
                entries.len()
            )),
        }
    }

    /// Appends a live answer. Failing to record is logged; the call goes on.
    pub fn record(&self, key: &Key, resp: &Response) {
        let Mode::Record { bytes } = &self.mode else {
            return;
        };
        let header = Header {
            at_ms: weir_core::query::now_ms(),
            method: key.method.clone(),
            url: key.url.clone(),
            request_sha256: key.body_sha256.clone(),
            status: resp.status,
            headers: resp.headers.clone(),
            body_len: resp.body.len(),
        };
        let mut size = crate::lock(bytes);
        let written = (|| -> std::io::Result<u64> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            // The first write of this file in the process: a torn entry left by a crash is
            // cut off first, so what follows stays readable.
            let before = match *size {
                Some(s) => s,
                None => self.cut_torn_tail(&f)?,
            };
            let appended = write_entry(&mut f, &header, &resp.body);
            let now = match appended {
                Ok(n) => before + n,
                Err(e) => {
                    // Half an entry would hide every later one: put the file back as it was.
                    let _ = f.set_len(before);
                    return Err(e);
                }
            };
            if now > MAX_TAPE_BYTES {
                return self.compact();
            }
            Ok(now)
        })();
        match written {
            Ok(n) => *size = Some(n),
            Err(e) => {
                *size = None;
                tracing::warn!(plugin = %self.plugin, path = %self.path.display(), error = %e, "outbound-http answer not recorded for replay");
            }
        }
    }

    /// Cuts the file after its last whole entry (a crash can leave half of one); its size.
    fn cut_torn_tail(&self, f: &std::fs::File) -> std::io::Result<u64> {
        let b = std::fs::read(&self.path)?;
        match parse(&b).1 {
            Some(at) => {
                tracing::warn!(plugin = %self.plugin, path = %self.path.display(), offset = at, dropped = b.len() - at, "outbound-http tape ended in a torn entry: cut off");
                f.set_len(at as u64)?;
                Ok(at as u64)
            }
            None => Ok(b.len() as u64),
        }
    }

    /// Keeps the newest entries that fit in half of [`MAX_TAPE_BYTES`] (temporary file, then
    /// rename). Returns the new size.
    fn compact(&self) -> std::io::Result<u64> {
        let b = std::fs::read(&self.path)?;
        let (list, _) = parse(&b);
        let mut kept = Vec::new();
        let mut total = 0u64;
        for e in list.iter().rev() {
            let bytes = encode(e)?;
            if total + bytes.len() as u64 > MAX_TAPE_BYTES / 2 {
                break;
            }
            total += bytes.len() as u64;
            kept.push(bytes);
        }
        let tmp = self.path.with_extension("tape.tmp");
        let mut out = Vec::with_capacity(total as usize);
        for bytes in kept.iter().rev() {
            out.extend_from_slice(bytes);
        }
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(total)
    }
}

/// A tape's bytes for `entries` (what [`parse`] reads back).
pub fn to_bytes(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&encode(e)?);
    }
    Ok(out)
}

fn encode(e: &Entry) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(e.body.len() + 256);
    write_entry(&mut out, &e.header, &e.body)?;
    Ok(out)
}

/// One entry as the file holds it (the only place its framing is written): the header's
/// JSON line, the body, a newline. Returns the bytes written.
fn write_entry(w: &mut impl Write, header: &Header, body: &[u8]) -> std::io::Result<u64> {
    let mut line = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.write_all(body)?;
    w.write_all(b"\n")?;
    Ok((line.len() + body.len() + 1) as u64)
}

/// The entries of a tape, and the offset of a torn or unreadable entry that ended it.
pub fn parse(b: &[u8]) -> (Vec<Entry>, Option<usize>) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < b.len() {
        let Some(nl) = b[at..].iter().position(|&c| c == b'\n') else {
            return (out, Some(at));
        };
        let Ok(header) = serde_json::from_slice::<Header>(&b[at..at + nl]) else {
            return (out, Some(at));
        };
        let start = at + nl + 1;
        let Some(end) = start.checked_add(header.body_len) else {
            return (out, Some(at));
        };
        if end >= b.len() || b[end] != b'\n' {
            return (out, Some(at));
        }
        out.push(Entry {
            header,
            body: b[start..end].to_vec(),
        });
        at = end + 1;
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str, body: &[u8]) -> Request {
        Request {
            method: "get".into(),
            url: url.into(),
            headers: Vec::new(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn recorded_answers_replay_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = Tape::in_dir(dir.path(), "p", false);
        assert!(!live.replays());
        for (i, url) in ["http://a/1", "http://a/2", "http://a/1"]
            .iter()
            .enumerate()
        {
            let resp = Response {
                status: 200 + i as u16,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: format!("answer {i}\nwith a newline").into_bytes(),
            };
            live.record(&Key::of(&req(url, b"")), &resp);
        }
        let mut taped = std::fs::read(dir.path().join(TAPE_FILE)).expect("tape");
        // A crash while appending: half an entry at the end.
        taped.extend_from_slice(b"{\"at_ms\":1,\"method\":\"GET\"");
        let replay = tempfile::tempdir().expect("tempdir");
        std::fs::write(replay.path().join(REPLAY_FILE), &taped).expect("write");
        let tape = Tape::in_dir(replay.path(), "p", false);
        assert!(tape.replays());
        // The newest answer to the same request; the method's case does not matter.
        let a = tape.answer(&Key::of(&req("http://a/1", b""))).expect("a/1");
        assert_eq!(
            (a.status, a.body.as_slice()),
            (202, &b"answer 2\nwith a newline"[..])
        );
        assert_eq!(
            a.headers,
            vec![("content-type".to_string(), "text/plain".to_string())]
        );
        assert_eq!(
            tape.answer(&Key::of(&req("http://a/2", b"")))
                .expect("a/2")
                .status,
            201
        );
        // Another URL, or the same with another body: refused, naming it.
        let e = tape
            .answer(&Key::of(&req("http://a/3", b"")))
            .expect_err("a/3");
        assert!(
            e.contains("GET http://a/3 has no answer recorded") && e.contains("3 answer(s)"),
            "{e}"
        );
        assert!(tape.answer(&Key::of(&req("http://a/1", b"x"))).is_err());
    }

    #[test]
    fn answers_recorded_after_a_torn_entry_stay_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = |body: &[u8]| Response {
            status: 200,
            headers: Vec::new(),
            body: body.to_vec(),
        };
        Tape::in_dir(dir.path(), "torn", false)
            .record(&Key::of(&req("http://a/1", b"")), &ok(b"one"));
        // A crash while appending: half an entry at the end.
        let path = dir.path().join(TAPE_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"at_ms\":1,\"method\":\"GE").expect("write");
        drop(f);
        // The next process appends after it (a fresh size cell: a new path's).
        let moved = dir.path().join("after-restart");
        std::fs::create_dir_all(&moved).expect("dir");
        std::fs::rename(&path, moved.join(TAPE_FILE)).expect("move");
        Tape::in_dir(&moved, "torn", false).record(&Key::of(&req("http://a/2", b"")), &ok(b"two"));
        let (list, torn) = parse(&std::fs::read(moved.join(TAPE_FILE)).expect("tape"));
        assert_eq!(torn, None);
        let urls: Vec<&str> = list.iter().map(|e| e.header.url.as_str()).collect();
        assert_eq!(urls, ["http://a/1", "http://a/2"]);
        // A replay of a directory without a recording (replaying said by the agent) answers
        // nothing, rather than reaching out.
        let empty = tempfile::tempdir().expect("tempdir");
        let t = Tape::in_dir(empty.path(), "p", true);
        assert!(t.replays());
        assert!(t.answer(&Key::of(&req("http://a/1", b""))).is_err());
    }

    #[test]
    fn a_full_tape_keeps_its_newest_half() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = Tape::in_dir(dir.path(), "p", false);
        let body = vec![b'x'; 1 << 20];
        for i in 0..40 {
            let resp = Response {
                status: 200,
                headers: Vec::new(),
                body: body.clone(),
            };
            live.record(&Key::of(&req(&format!("http://a/{i}"), b"")), &resp);
        }
        let size = std::fs::metadata(dir.path().join(TAPE_FILE))
            .expect("tape")
            .len();
        assert!(size <= MAX_TAPE_BYTES, "{size}");
        let (list, torn) = parse(&std::fs::read(dir.path().join(TAPE_FILE)).expect("tape"));
        assert_eq!(torn, None);
        assert!(list.len() >= 7, "{}", list.len());
        assert_eq!(
            list.last().map(|e| e.header.url.as_str()),
            Some("http://a/39")
        );
        // Oldest gone, the rest in order.
        assert!(list.first().is_some_and(|e| e.header.url != "http://a/0"));
        let n: Vec<usize> = list
            .iter()
            .filter_map(|e| e.header.url.rsplit('/').next()?.parse().ok())
            .collect();
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{n:?}");
    }
}
