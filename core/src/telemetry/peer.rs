//! Which address and port a span's attributes name for the other end of its connection, and
//! its own port when they say. Current semantic conventions first (`network.peer.*`,
//! `server.*`, `client.*`), then the older ones (`net.sock.peer.*`, `net.peer.*`,
//! `net.host.port`), then the request URL (`url.full`, `http.url`) when its host is an address.

use super::SpanKind;
use std::net::IpAddr;

/// The other end of a span's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: IpAddr,
    pub port: u16,
    /// The attribute the address came from.
    pub from: &'static str,
}

/// What a span says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Endpoints {
    pub remote: Option<Peer>,
    /// This end's port, when the span names it (a server's own port, a client's local port).
    pub local_port: Option<u16>,
}

fn get<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn ip(text: &str) -> Option<IpAddr> {
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn port(attrs: &[(String, String)], key: &str) -> Option<u16> {
    get(attrs, key)?.parse().ok().filter(|p| *p != 0)
}

fn pair(attrs: &[(String, String)], addr: &'static str, port_key: &str) -> Option<Peer> {
    Some(Peer {
        addr: ip(get(attrs, addr)?)?,
        port: port(attrs, port_key)?,
        from: addr,
    })
}

/// `scheme://host[:port]/...` with an address for host.
pub fn url_peer(url: &str) -> Option<(IpAddr, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => 0,
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6.split_once(']')?;
        (h, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    (port != 0).then_some((ip(host)?, port))
}

/// The endpoints a span's attributes name.
pub fn endpoints(kind: SpanKind, attrs: &[(String, String)]) -> Endpoints {
    let serving = matches!(kind, SpanKind::Server | SpanKind::Consumer);
    let remote = if serving {
        pair(attrs, "client.address", "client.port")
            .or_else(|| pair(attrs, "network.peer.address", "network.peer.port"))
            .or_else(|| pair(attrs, "net.sock.peer.addr", "net.sock.peer.port"))
            .or_else(|| pair(attrs, "net.peer.ip", "net.peer.port"))
    } else {
        pair(attrs, "network.peer.address", "network.peer.port")
            .or_else(|| pair(attrs, "server.address", "server.port"))
            .or_else(|| pair(attrs, "net.sock.peer.addr", "net.sock.peer.port"))
            .or_else(|| pair(attrs, "net.peer.ip", "net.peer.port"))
            .or_else(|| pair(attrs, "net.peer.name", "net.peer.port"))
            .or_else(|| {
                ["url.full", "http.url"].into_iter().find_map(|k| {
                    let (addr, port) = url_peer(get(attrs, k)?)?;
                    Some(Peer {
                        addr,
                        port,
                        from: k,
                    })
                })
            })
    };
    let local_port = if serving {
        port(attrs, "server.port")
            .or_else(|| port(attrs, "network.local.port"))
            .or_else(|| port(attrs, "net.host.port"))
    } else {
        port(attrs, "network.local.port").or_else(|| port(attrs, "net.sock.host.port"))
    };
    Endpoints { remote, local_port }
}
