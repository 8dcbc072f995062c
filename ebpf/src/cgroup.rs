//! Names cgroup ids: the kernel gives the cgroup v2 id of a packet's sending socket; that id
//! is the inode number of the cgroup's directory in the cgroup2 file system. The tree is
//! walked when an id is not known yet (at most once a second), and container ids are read
//! from the path as docker, containerd, CRI-O, podman and Kubernetes name their cgroups.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Deepest cgroup walked below the root.
const MAX_DEPTH: usize = 16;
/// Most cgroups remembered.
const MAX_CGROUPS: usize = 100_000;

/// Where the cgroup2 file system is mounted (from /proc/self/mountinfo).
pub fn cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // ... mount-point ... - fstype source options
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The container id in a cgroup path, if one of its parts is a 64-hex-digit id, alone or
/// wrapped as `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`.
pub fn container_id(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(|part| {
        let p = part.strip_suffix(".scope").unwrap_or(part);
        let p = [
            "docker-",
            "cri-containerd-",
            "crio-",
            "libpod-",
            "containerd-",
        ]
        .iter()
        .find_map(|pre| p.strip_prefix(pre))
        .unwrap_or(p);
        (p.len() == 64 && p.bytes().all(|c| c.is_ascii_hexdigit())).then_some(p)
    })
}

/// Cgroup id -> path below the root, refreshed on demand.
pub struct CgroupNames {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupNames {
    pub fn new() -> Self {
        CgroupNames {
            root: cgroup2_root(),
            paths: HashMap::new(),
            last_scan: None,
        }
    }

    /// (path, container id) of a cgroup id; empty when unknown.
    pub fn lookup(&mut self, id: u64) -> (String, String) {
        if id == 0 {
            return (String::new(), String::new());
        }
        if !self.paths.contains_key(&id)
            && self
                .last_scan
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.scan();
        }
        match self.paths.get(&id) {
            Some(p) => (p.clone(), container_id(p).unwrap_or("").to_string()),
            None => (String::new(), String::new()),
        }
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        self.paths.clear();
        if let Ok(m) = std::fs::metadata(&root) {
            self.paths.insert(m.ino(), "/".into());
        }
        self.walk(&root, &root, 0);
    }

    fn walk(&mut self, root: &Path, dir: &Path, depth: usize) {
        if depth >= MAX_DEPTH {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if self.paths.len() >= MAX_CGROUPS {
                return;
            }
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let path = e.path();
            if let Ok(m) = e.metadata()
                && let Ok(rel) = path.strip_prefix(root)
            {
                self.paths
                    .insert(m.ino(), format!("/{}", rel.to_string_lossy()));
            }
            self.walk(root, &path, depth + 1);
        }
    }
}

impl Default for CgroupNames {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "4f3c2b1a".repeat(8);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            Some(id.as_str())
        );
        assert_eq!(
            container_id(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope"
            )),
            Some(id.as_str())
        );
        assert_eq!(container_id(&format!("/docker/{id}")), Some(id.as_str()));
        assert_eq!(container_id("/user.slice/session-3.scope"), None);
        assert_eq!(container_id("/"), None);
    }

    #[test]
    fn names_this_process_cgroup() {
        // The cgroup2 root of this machine names itself "/".
        let mut n = CgroupNames::new();
        let root = n
            .root
            .clone()
            .expect("cgroup2 is mounted on the machines weir runs on");
        let ino = std::fs::metadata(&root).unwrap().ino();
        assert_eq!(n.lookup(ino).0, "/");
        assert_eq!(n.lookup(0).0, "");
    }
}
