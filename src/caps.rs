//! Least privilege inside the process: the agent keeps the capabilities capture needs and
//! drops every other one (from the bounding, permitted, effective, inheritable and ambient
//! sets) before it starts any thread, so every thread and every program it runs (`ovs-appctl`,
//! `journalctl`) has at most those.
//!
//! Kept always: `CAP_BPF` and `CAP_PERFMON` (programs, maps, tracing hooks), `CAP_NET_ADMIN`
//! (TC attach, netlink), `CAP_SYS_ADMIN` (entering network namespaces; BPF on kernels before
//! 5.8), `CAP_SYS_RESOURCE` (the locked-memory limit on kernels before 5.11). Kept only when
//! needed: `CAP_NET_BIND_SERVICE` for a listener below port 1024, `CAP_SYS_PTRACE` when a
//! `--netns` names `/proc/PID/...` (the kernel checks ptrace access to open another process's
//! namespace), `CAP_DAC_READ_SEARCH` when following `--log-file`s (logs owned by another user
//! such as syslog). `--keep-capabilities` keeps everything the agent started with.

use anyhow::{Context, Result, bail};

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_NET_BIND_SERVICE: u32 = 10;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The capabilities capture needs at any time.
pub const CAPTURE: [u32; 5] = [
    CAP_BPF,
    CAP_PERFMON,
    CAP_NET_ADMIN,
    CAP_SYS_ADMIN,
    CAP_SYS_RESOURCE,
];

/// The kernel's names, for the log.
fn name(cap: u32) -> String {
    match cap {
        CAP_DAC_READ_SEARCH => "dac_read_search".into(),
        CAP_NET_BIND_SERVICE => "net_bind_service".into(),
        CAP_NET_ADMIN => "net_admin".into(),
        CAP_SYS_PTRACE => "sys_ptrace".into(),
        CAP_SYS_ADMIN => "sys_admin".into(),
        CAP_SYS_RESOURCE => "sys_resource".into(),
        CAP_PERFMON => "perfmon".into(),
        CAP_BPF => "bpf".into(),
        n => format!("cap_{n}"),
    }
}

const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// This thread's (effective, permitted, inheritable) sets as 64-bit masks.
fn get() -> Result<(u64, u64, u64)> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget reads the header and writes two Data structs (version 3).
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the capabilities (capget)");
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
        join(d[0].inheritable, d[1].inheritable),
    ))
}

fn set(effective: u64, permitted: u64, inheritable: u64) -> Result<()> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let split = |m: u64| (m as u32, (m >> 32) as u32);
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let d = [
        Data {
            effective: e.0,
            permitted: p.0,
            inheritable: i.0,
        },
        Data {
            effective: e.1,
            permitted: p.1,
            inheritable: i.1,
        },
    ];
    // SAFETY: capset reads the header and two Data structs (version 3).
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("dropping capabilities (capset)");
    }
    Ok(())
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Keeps `keep` (those of them the process has) and drops every other capability. Must run
/// before the process starts threads: capabilities are per thread, and threads started later
/// inherit these.
pub fn keep_only(keep: &[u32]) -> Result<()> {
    let mask = keep
        .iter()
        .filter(|c| **c < 64)
        .fold(0u64, |m, c| m | (1u64 << c));
    let (effective, permitted, _) = get()?;
    // The bounding set first, while CAP_SETPCAP is still ours (without it, e.g. under a
    // systemd unit that already bounds the set, the kernel refuses and the unit's bound holds).
    let mut bounded = 0u32;
    for cap in 0..=last_cap() {
        if mask & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number; no memory is passed.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } == 0 {
            bounded += 1;
        }
    }
    // SAFETY: clearing the ambient set passes no memory.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    set(effective & mask, permitted & mask, 0)?;
    let (e, p, i) = get()?;
    if p & !mask != 0 || i != 0 {
        bail!("capabilities still held after dropping them: permitted {p:#x}, inheritable {i:#x}");
    }
    let kept: Vec<String> = (0..64u32)
        .filter(|c| e & (1u64 << c) != 0)
        .map(name)
        .collect();
    // sys_resource only raises the locked-memory limit, which kernels from 5.11 on do not
    // apply to BPF maps: not missed there.
    let memlock = weir_ebpf::maps_charged_to_memlock();
    let missing: Vec<String> = keep
        .iter()
        .filter(|c| **c < 64 && e & (1u64 << **c) == 0)
        .filter(|c| memlock || **c != CAP_SYS_RESOURCE)
        .map(|c| name(*c))
        .collect();
    tracing::info!(
        kept = %kept.join(","),
        dropped = (permitted & !mask).count_ones(),
        bounding_dropped = bounded,
        "capabilities dropped to what capture needs (--keep-capabilities keeps all)"
    );
    if !missing.is_empty() {
        tracing::warn!(
            missing = %missing.join(","),
            "the agent was started without capabilities capture needs: capture may fail"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in a child process of its own (capabilities are per thread, and a test harness
    /// thread must not lose them for the other tests).
    #[test]
    fn dropping_keeps_only_what_was_asked_in_a_new_thread_too() {
        if std::env::var_os("WEIR_CAPS_CHILD").is_none() {
            let exe = std::env::current_exe().expect("test binary");
            let out = std::process::Command::new(exe)
                .args([
                    "caps::tests::dropping_keeps_only_what_was_asked_in_a_new_thread_too",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("WEIR_CAPS_CHILD", "1")
                .output()
                .expect("run the child");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("caps-child-checked"), "{text}");
            return;
        }
        let (_, before, _) = get().expect("capget");
        if before & (1 << CAP_SYS_ADMIN) == 0 {
            // Not root here: nothing to drop; the e2e tests (root) check the running agent.
            println!("caps-child-checked (no capabilities to drop)");
            return;
        }
        keep_only(&[CAP_NET_ADMIN, CAP_BPF]).expect("drop");
        let check = || {
            let (e, p, i) = get().expect("capget");
            let want = (1u64 << CAP_NET_ADMIN) | (1u64 << CAP_BPF);
            assert_eq!((e, p, i), (want, want, 0));
            let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
            let bnd = status
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
                .expect("CapBnd");
            assert_eq!(bnd, want, "the bounding set");
        };
        check();
        std::thread::spawn(check).join().expect("a new thread");
        // A program run now cannot get more back (root's exec recomputes from the bounding set).
        let out = std::process::Command::new("sh")
            .args(["-c", "grep CapEff /proc/self/status"])
            .output()
            .expect("sh");
        let eff = String::from_utf8_lossy(&out.stdout);
        assert!(eff.contains("0000008000001000"), "{eff}");
        println!("caps-child-checked");
    }
}
