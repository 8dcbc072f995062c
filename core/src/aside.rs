//! What cannot be trusted on disk is set aside, never deleted or overwritten: renamed to
//! `<name>.corrupt-<unix ms>` beside where it was, kept for a look. One convention for the
//! store's partitions and indexes, the compiled-plugin cache, plugins' kv and summarizer
//! state.

use std::path::{Path, PathBuf};

/// What a set-aside name carries after the original name.
pub const MARK: &str = ".corrupt-";

/// Where [`set_aside`] moves `path` at `ms`.
pub fn aside_path(path: &Path, ms: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!("{MARK}{ms}"));
    PathBuf::from(name)
}

/// Renames `path` (a file or a directory) to `<path>.corrupt-<now ms>`; where it went.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let aside = aside_path(path, crate::query::now_ms());
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// A directory entry set aside (by this convention, or a store partition's
/// `corrupt-<name>-<ms>` from before it).
pub fn is_set_aside(name: &str) -> bool {
    name.contains(MARK) || name.starts_with("corrupt-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_aside_keeps_the_content_beside_under_a_marked_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kv.json");
        std::fs::write(&f, b"{broken").unwrap();
        let aside = set_aside(&f).unwrap();
        assert!(!f.exists());
        assert_eq!(std::fs::read(&aside).unwrap(), b"{broken");
        let name = aside.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("kv.json.corrupt-"), "{name}");
        assert!(is_set_aside(name));
        assert!(is_set_aside("corrupt-1000-2000-123"));
        assert!(!is_set_aside("1000-2000"));
        assert_eq!(
            aside_path(Path::new("/d/index"), 7),
            PathBuf::from("/d/index.corrupt-7")
        );
        assert!(set_aside(&f).is_err(), "nothing left to move");
    }
}
