//! Probes from a network namespace ([`weir_core::probe::Prober`]): each probe runs on a fresh
//! thread that enters the namespace (setns affects only the calling thread, and that thread
//! ends with the probe), makes one TCP connection, one UDP exchange or one SCTP association,
//! and reports what the kernel answered.

use crate::netlink::{enter_netns, open_netns};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use weir_core::probe::{Outcome, ProbeError, Prober, Protocol, Target};

/// The payload of a UDP probe.
const UDP_PAYLOAD: &[u8] = b"weir-probe\n";

/// Probes from network namespaces under /var/run/netns (or the agent's own).
#[derive(Debug, Default, Clone, Copy)]
pub struct NetnsProber;

fn outcome_of(e: &std::io::Error, silent: Outcome) -> Result<Outcome, ProbeError> {
    Ok(match e.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => silent,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
            Outcome::Unreachable(e.to_string())
        }
        _ if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EPERM) => {
            Outcome::Unreachable(e.to_string())
        }
        _ => {
            return Err(ProbeError::Socket(std::io::Error::new(
                e.kind(),
                e.to_string(),
            )));
        }
    })
}

fn try_tcp(addr: SocketAddr, timeout: Duration) -> Result<Outcome, ProbeError> {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Ok(Outcome::Connected),
        Err(e) => outcome_of(&e, Outcome::TimedOut),
    }
}

/// An SCTP one-to-one socket for `addr`'s family, or why the kernel cannot make one.
fn sctp_socket(addr: &SocketAddr) -> Result<socket2::Socket, ProbeError> {
    socket2::Socket::new(
        socket2::Domain::for_address(*addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::from(libc::IPPROTO_SCTP)),
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EPROTONOSUPPORT | libc::ESOCKTNOSUPPORT | libc::EAFNOSUPPORT) => {
            ProbeError::Unsupported {
                protocol: "SCTP",
                reason: format!(
                    "this kernel has no SCTP ({e}; load the sctp module, CONFIG_IP_SCTP)"
                ),
            }
        }
        _ => ProbeError::Socket(e),
    })
}

fn try_sctp(addr: SocketAddr, timeout: Duration) -> Result<Outcome, ProbeError> {
    let sock = sctp_socket(&addr)?;
    match sock.connect_timeout(&addr.into(), timeout.max(Duration::from_millis(1))) {
        Ok(()) => Ok(Outcome::Connected),
        Err(e) => outcome_of(&e, Outcome::TimedOut),
    }
}

fn try_udp(addr: SocketAddr, timeout: Duration) -> Result<Outcome, ProbeError> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(local).map_err(ProbeError::Socket)?;
    sock.connect(addr).map_err(ProbeError::Socket)?;
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(ProbeError::Socket)?;
    if let Err(e) = sock.send(UDP_PAYLOAD) {
        return outcome_of(&e, Outcome::NoAnswer);
    }
    let mut buf = [0u8; 512];
    match sock.recv(&mut buf) {
        Ok(_) => Ok(Outcome::Answered),
        Err(e) => outcome_of(&e, Outcome::NoAnswer),
    }
}

fn try_probe(t: &Target) -> Result<(Outcome, Duration), ProbeError> {
    if !t.netns.is_empty() {
        let (fd, _) = open_netns(&t.netns).map_err(|source| ProbeError::Netns {
            netns: t.netns.clone(),
            source,
        })?;
        enter_netns(&fd).map_err(|source| ProbeError::Netns {
            netns: t.netns.clone(),
            source,
        })?;
    }
    let addr = SocketAddr::new(t.addr, t.port);
    let start = Instant::now();
    let outcome = match t.protocol {
        Protocol::Tcp => try_tcp(addr, t.timeout)?,
        Protocol::Udp => try_udp(addr, t.timeout)?,
        Protocol::Sctp => try_sctp(addr, t.timeout)?,
    };
    Ok((outcome, start.elapsed()))
}

/// Whether `addr` is one of this thread's namespace's own addresses: binding to it succeeds
/// only then.
fn holds(netns: &str, addr: IpAddr) -> bool {
    let Ok((fd, _)) = open_netns(netns) else {
        return false;
    };
    if enter_netns(&fd).is_err() {
        return false;
    }
    UdpSocket::bind(SocketAddr::new(addr, 0)).is_ok()
}

impl Prober for NetnsProber {
    fn supports(&self, protocol: Protocol) -> Result<(), ProbeError> {
        match protocol {
            Protocol::Tcp | Protocol::Udp => Ok(()),
            Protocol::Sctp => sctp_socket(&SocketAddr::new(
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                0,
            ))
            .map(drop),
        }
    }

    fn locate(&self, addr: IpAddr) -> Option<String> {
        let mut names: Vec<String> = std::fs::read_dir("/var/run/netns")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names.into_iter().find(|n| {
            let n = n.clone();
            std::thread::Builder::new()
                .name("weir-locate".into())
                .spawn(move || holds(&n, addr))
                .ok()
                .and_then(|h| h.join().ok())
                .unwrap_or(false)
        })
    }

    fn probe(&self, target: &Target) -> Result<(Outcome, Duration), ProbeError> {
        let t = target.clone();
        std::thread::Builder::new()
            .name("weir-probe".into())
            .spawn(move || try_probe(&t))
            .map_err(ProbeError::Socket)?
            .join()
            .unwrap_or_else(|_| {
                Err(ProbeError::Socket(std::io::Error::other(
                    "the probe thread panicked",
                )))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: u16, protocol: Protocol) -> Target {
        Target {
            netns: String::new(),
            addr: "127.0.0.1".parse().expect("addr"),
            port,
            protocol,
            timeout: Duration::from_millis(500),
        }
    }

    /// What one loopback probe of `port` said.
    fn outcome(port: u16, protocol: Protocol) -> Outcome {
        match NetnsProber.probe(&target(port, protocol)) {
            Ok((o, _)) => o,
            Err(e) => panic!("{protocol:?} probe of {port}: {e}"),
        }
    }

    #[test]
    fn loopback_probes_tell_open_from_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("addr").port();
        let p = NetnsProber;
        assert_eq!(outcome(open, Protocol::Tcp), Outcome::Connected);
        drop(listener);
        assert_eq!(outcome(open, Protocol::Tcp), Outcome::Refused);
        let echo = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = echo.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        assert_eq!(outcome(port, Protocol::Udp), Outcome::Answered);
        server.join().expect("echo");
        assert_eq!(outcome(port, Protocol::Udp), Outcome::Refused);
        let e = p
            .probe(&Target {
                netns: "weir-no-such-netns".into(),
                ..target(open, Protocol::Tcp)
            })
            .expect_err("no namespace");
        assert!(e.to_string().contains("weir-no-such-netns"), "{e}");
    }

    /// SCTP where the kernel has it: an association with a listener, refused without one;
    /// where it has not, every SCTP probe is refused as unsupported, saying so.
    #[test]
    fn sctp_probes_associate_or_say_the_kernel_has_no_sctp() {
        let p = NetnsProber;
        let loopback = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
        match sctp_socket(&loopback) {
            Ok(listener) => {
                p.supports(Protocol::Sctp).expect("supported");
                listener.bind(&loopback.into()).expect("bind");
                listener.listen(8).expect("listen");
                let port = listener
                    .local_addr()
                    .expect("addr")
                    .as_socket()
                    .expect("inet")
                    .port();
                assert_eq!(outcome(port, Protocol::Sctp), Outcome::Connected);
                drop(listener);
                assert_eq!(outcome(port, Protocol::Sctp), Outcome::Refused);
            }
            Err(ProbeError::Unsupported { reason, .. }) => {
                assert!(reason.contains("no SCTP"), "{reason}");
                let e = p.supports(Protocol::Sctp).expect_err("unsupported here");
                assert!(
                    e.to_string().starts_with("SCTP probes cannot be made here"),
                    "{e}"
                );
                let e = p
                    .probe(&target(80, Protocol::Sctp))
                    .expect_err("unsupported");
                assert!(matches!(e, ProbeError::Unsupported { .. }), "{e}");
            }
            Err(e) => panic!("an SCTP socket: {e}"),
        }
    }
}
