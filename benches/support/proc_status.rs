//! The /proc reader the bench binaries share (each includes this file with `#[path]`).

/// A `kB` line of /proc/PID/status (`VmRSS:`, `VmHWM:`) for `pid` (a number or `self`), or 0.
pub fn status_kib(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
