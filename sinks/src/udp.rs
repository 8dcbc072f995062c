//! `udp://host:port`: each payload is one datagram (at most 65,507 bytes), sent from one
//! socket. UDP says nothing about delivery: "sent" is all a send can promise.

use crate::{lock, resolve};
use std::net::UdpSocket;
use std::sync::Mutex;
use std::time::Duration;
use weir_core::sink::{SinkError, Transport};

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

pub struct Udp {
    name: String,
    host: String,
    port: u16,
    sock: Mutex<Option<UdpSocket>>,
}

impl Udp {
    pub fn new(name: String, host: &str, port: u16) -> Udp {
        Udp {
            name,
            host: host.to_string(),
            port,
            sock: Mutex::new(None),
        }
    }

    fn try_send(&self, payload: &[u8]) -> std::io::Result<()> {
        let mut slot = lock(&self.sock);
        if slot.is_none() {
            let addr = resolve(&self.host, self.port)?;
            let local = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(local)?;
            s.connect(addr)?;
            *slot = Some(s);
        }
        let r = slot.as_ref().map_or(Ok(0), |s| s.send(payload));
        if r.is_err() {
            *slot = None;
        }
        r.map(|_| ())
    }
}

impl Transport for Udp {
    fn send(&self, payload: &[u8], _media_type: &str, _timeout: Duration) -> Result<(), SinkError> {
        if payload.len() > MAX_DATAGRAM {
            return Err(SinkError::Rejected {
                name: self.name.clone(),
                message: format!(
                    "{} bytes do not fit one datagram (at most {MAX_DATAGRAM})",
                    payload.len()
                ),
            });
        }
        self.try_send(payload).map_err(|e| SinkError::Send {
            name: self.name.clone(),
            message: format!("udp {}:{}: {e}", self.host, self.port),
        })
    }
}
