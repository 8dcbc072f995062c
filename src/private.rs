//! The data directory is the operator's alone: flows, plugin files and state, alert history
//! and records are created 0600 (directories 0700) by every command that writes there (the
//! agent, `weir server`, `weir plugin` on a data dir), and the directory itself is made 0700.

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Sets this process's file-creation mask to 077, creates `dir` if needed and takes group and
/// other access away from it (saying so when it had any).
pub fn data_dir(dir: &Path) -> Result<()> {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (mode 700)", dir.display()))?;
        tracing::warn!(
            data_dir = %dir.display(),
            was = format!("{:o}", mode & 0o777),
            "data directory was readable by others; set to 700"
        );
    }
    Ok(())
}
