//! `tcp://host:port`: one connection, payloads written back to back (the plugin frames them,
//! e.g. one JSON document per line). A write that fails drops the connection; the next send
//! connects again.

use crate::{lock, resolve};
use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;
use weir_core::sink::{SinkError, Transport};

pub struct Tcp {
    name: String,
    host: String,
    port: u16,
    conn: Mutex<Option<TcpStream>>,
}

impl Tcp {
    pub fn new(name: String, host: &str, port: u16) -> Tcp {
        Tcp {
            name,
            host: host.to_string(),
            port,
            conn: Mutex::new(None),
        }
    }

    fn try_send(&self, payload: &[u8], timeout: Duration) -> std::io::Result<()> {
        let mut slot = lock(&self.conn);
        if slot.is_none() {
            let addr = resolve(&self.host, self.port)?;
            let s = TcpStream::connect_timeout(&addr, timeout)?;
            s.set_nodelay(true)?;
            *slot = Some(s);
        }
        let r = match slot.as_mut() {
            Some(s) => s
                .set_write_timeout(Some(timeout))
                .and_then(|_| s.write_all(payload))
                .and_then(|_| s.flush()),
            None => Ok(()),
        };
        if r.is_err() {
            *slot = None;
        }
        r
    }
}

impl Transport for Tcp {
    fn send(&self, payload: &[u8], _media_type: &str, timeout: Duration) -> Result<(), SinkError> {
        self.try_send(payload, timeout.max(Duration::from_millis(1)))
            .map_err(|e| SinkError::Send {
                name: self.name.clone(),
                message: format!("tcp {}:{}: {e}", self.host, self.port),
            })
    }
}
