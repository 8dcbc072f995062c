//! The few OS calls the loader needs: link-change notifications over netlink, the interface
//! list, and entering a network namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A NETLINK_ROUTE socket subscribed to link changes in the calling thread's namespace.
pub struct LinkWatch {
    fd: OwnedFd,
}

impl LinkWatch {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh valid fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: addr is a properly sized sockaddr_nl.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkWatch { fd })
    }

    /// Waits up to `timeout` for link changes; true if any arrived (messages are discarded:
    /// the caller rescans the interface list).
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if n <= 0 {
            return false;
        }
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: buf is writable for its length.
            let r =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r <= 0 {
                break;
            }
        }
        true
    }
}

/// The interfaces of the calling thread's network namespace: (ifindex, name).
pub fn interfaces() -> io::Result<Vec<(u32, String)>> {
    // SAFETY: if_nameindex returns a list terminated by a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut p = list;
    // SAFETY: walking the array until the terminating entry, as documented.
    unsafe {
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(out)
}

/// The link speed of an interface of the calling thread's network namespace in bits/s, as
/// its driver reports it through ethtool (veth says 10 Gb/s); `None` when the driver has no
/// speed (loopback, a link that is down).
pub fn link_speed_bps(name: &str) -> Option<u64> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GSET: u32 = 1;
    /// `struct ethtool_cmd` (linux/ethtool.h): the legacy query every driver with link
    /// settings answers.
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolCmd {
        cmd: u32,
        supported: u32,
        advertising: u32,
        speed: u16,
        duplex: u8,
        port: u8,
        phy_address: u8,
        transceiver: u8,
        autoneg: u8,
        mdio_support: u8,
        maxtxpkt: u32,
        maxrxpkt: u32,
        speed_hi: u16,
        eth_tp_mdix: u8,
        eth_tp_mdix_ctrl: u8,
        lp_advertising: u32,
        reserved: [u32; 2],
    }
    const _: () = assert!(std::mem::size_of::<EthtoolCmd>() == 44);
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a plain datagram socket, closed by OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut cmd = EthtoolCmd {
        cmd: ETHTOOL_GSET,
        ..Default::default()
    };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut cmd as *mut EthtoolCmd).cast();
    // SAFETY: SIOCETHTOOL reads the name and writes at most size_of::<EthtoolCmd>() bytes
    // through ifru_data, which points at `cmd`, alive for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if r < 0 {
        return None;
    }
    let mbps = (u32::from(cmd.speed_hi) << 16) | u32::from(cmd.speed);
    // SPEED_UNKNOWN is -1; a zero speed says nothing either.
    if mbps == 0 || mbps == u32::MAX || (cmd.speed_hi == 0 && cmd.speed == u16::MAX) {
        return None;
    }
    Some(u64::from(mbps) * 1_000_000)
}

/// Moves the calling thread into the network namespace behind `fd`.
pub fn enter_netns(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: setns on a valid fd affects only the calling thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a network namespace: a name under /var/run/netns, or a path (e.g. /proc/PID/ns/net).
pub fn open_netns(spec: &str) -> io::Result<(OwnedFd, u64)> {
    let path = if spec.starts_with('/') {
        spec.to_string()
    } else {
        format!("/var/run/netns/{spec}")
    };
    let file = std::fs::File::open(&path)?;
    let ino = std::os::unix::fs::MetadataExt::ino(&file.metadata()?);
    Ok((OwnedFd::from(file), ino))
}

/// The inode of a namespace path now, if it still exists.
pub fn netns_inode(spec: &str) -> Option<u64> {
    let path = if spec.starts_with('/') {
        spec.to_string()
    } else {
        format!("/var/run/netns/{spec}")
    };
    std::fs::metadata(path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// Inode of the calling thread's network namespace.
pub fn own_netns_inode() -> Option<u32> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .and_then(|m| u32::try_from(std::os::unix::fs::MetadataExt::ino(&m)).ok())
}
