//! What one client may hold of the agent: connections, requests in flight, live tails, wrong
//! tokens, and how long a request may take. The numbers ([`Limits`]) are the operator's
//! (`weir run --help`, "HTTP limits"); [`Clients`] counts per client address and is shared by
//! the listener ([`crate::serve`]) and the request middleware.
//!
//! Behind a reverse proxy every client has the proxy's address: raise the per-client limits
//! there, or let the proxy enforce its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The HTTP limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a request's head (request line and headers) once it starts
    /// one; a connection that trickles its head is closed.
    pub header_timeout: Duration,
    /// Time a request may take, its body's upload included, until the response starts
    /// (answered 408 beyond). Streamed responses (live tails) are not cut by it.
    pub request_timeout: Duration,
    /// Open connections in all (beyond: answered 503 and closed).
    pub connections: usize,
    /// Open connections from one client address (beyond: answered 429 and closed).
    pub connections_per_client: usize,
    /// Requests one client address may have in progress at once (beyond: 429).
    pub requests_per_client: usize,
    /// Live tails (`/flows/follow`) one client address may hold open.
    pub follows_per_client: usize,
    /// Wrong access tokens one client address may send per [`Limits::lockout`]; beyond,
    /// every request from it is answered 429 until the period ends.
    pub wrong_tokens: u32,
    /// The period wrong tokens are counted over, and the lockout after too many.
    pub lockout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            connections: 1024,
            connections_per_client: 128,
            requests_per_client: 64,
            follows_per_client: 8,
            wrong_tokens: 10,
            lockout: Duration::from_secs(60),
        }
    }
}

/// Per-address counts kept before old entries are swept.
const SWEEP_AT: usize = 4096;

/// What a limit refused, counted since start (in `/api/v1/status` under `http`).
#[derive(Debug, Default)]
pub struct Refusals {
    /// Connections answered 429 (one client's cap) or 503 (the agent's cap).
    pub connections: AtomicU64,
    /// Requests answered 429: too many in progress from one client.
    pub requests: AtomicU64,
    /// Requests answered 408: slower than the request timeout.
    pub timeouts: AtomicU64,
    /// Requests answered 429 because their client sent too many wrong tokens.
    pub locked_out: AtomicU64,
    /// Wrong tokens received.
    pub wrong_tokens: AtomicU64,
}

/// The counts the limits are checked against.
#[derive(Debug)]
pub struct Clients {
    pub limits: Limits,
    open: AtomicUsize,
    connections: Mutex<HashMap<IpAddr, usize>>,
    requests: Mutex<HashMap<IpAddr, usize>>,
    follows: Mutex<HashMap<IpAddr, usize>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    pub refused: Refusals,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// Why a connection or request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The agent's connection cap.
    AgentFull,
    /// This client's cap (connections, requests or live tails).
    ClientFull,
}

/// Which per-address count a [`Slot`] holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Request,
    Follow,
}

/// One connection, request or live tail counted against its client; released when dropped.
#[derive(Debug)]
pub struct Slot {
    clients: Arc<Clients>,
    ip: IpAddr,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.clients.map(self.kind);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        if matches!(self.kind, Kind::Connection) {
            self.clients.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while counting leaves counts that are still numbers: keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Clients {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Clients {
            limits,
            open: AtomicUsize::new(0),
            connections: Mutex::default(),
            requests: Mutex::default(),
            follows: Mutex::default(),
            failures: Mutex::default(),
            refused: Refusals::default(),
        })
    }

    fn map(&self, kind: Kind) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        match kind {
            Kind::Connection => lock(&self.connections),
            Kind::Request => lock(&self.requests),
            Kind::Follow => lock(&self.follows),
        }
    }

    fn take(self: &Arc<Self>, ip: IpAddr, kind: Kind, cap: usize) -> Result<Slot, Refusal> {
        let mut map = self.map(kind);
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            return Err(Refusal::ClientFull);
        }
        *n += 1;
        Ok(Slot {
            clients: self.clone(),
            ip,
            kind,
        })
    }

    /// A new connection from `ip`, or why not.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.limits.connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused.connections.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::AgentFull);
        }
        self.take(ip, Kind::Connection, self.limits.connections_per_client)
            .inspect_err(|_| {
                self.open.fetch_sub(1, Ordering::Relaxed);
                self.refused.connections.fetch_add(1, Ordering::Relaxed);
            })
    }

    /// A request from `ip` starting, or why not.
    pub fn request(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        self.take(ip, Kind::Request, self.limits.requests_per_client)
            .inspect_err(|_| {
                self.refused.requests.fetch_add(1, Ordering::Relaxed);
            })
    }

    /// A live tail from `ip` opening, or why not.
    pub fn follow(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        self.take(ip, Kind::Follow, self.limits.follows_per_client)
            .inspect_err(|_| {
                self.refused.requests.fetch_add(1, Ordering::Relaxed);
            })
    }

    /// Open connections now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// When `ip` sent too many wrong tokens: how long until it may try again.
    pub fn locked_out(&self, ip: IpAddr) -> Option<Duration> {
        let map = lock(&self.failures);
        let f = map.get(&ip)?;
        let left = self.limits.lockout.checked_sub(f.since.elapsed())?;
        (f.count >= self.limits.wrong_tokens).then_some(left)
    }

    /// Counts a wrong token from `ip`.
    pub fn wrong_token(&self, ip: IpAddr) {
        self.refused.wrong_tokens.fetch_add(1, Ordering::Relaxed);
        let mut map = lock(&self.failures);
        if map.len() >= SWEEP_AT {
            let period = self.limits.lockout;
            map.retain(|_, f| f.since.elapsed() < period);
        }
        let now = Instant::now();
        let f = map.entry(ip).or_insert(Failures {
            since: now,
            count: 0,
        });
        if f.since.elapsed() >= self.limits.lockout {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
    }

    /// The counts for the status API.
    pub fn status(&self) -> serde_json::Value {
        let r = &self.refused;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "connections_open": self.open_connections(),
            "refused_connections": get(&r.connections),
            "refused_requests": get(&r.requests),
            "timed_out_requests": get(&r.timeouts),
            "wrong_tokens": get(&r.wrong_tokens),
            "locked_out_requests": get(&r.locked_out),
            "limits": {
                "header_timeout_ms": self.limits.header_timeout.as_millis() as u64,
                "request_timeout_ms": self.limits.request_timeout.as_millis() as u64,
                "connections": self.limits.connections,
                "connections_per_client": self.limits.connections_per_client,
                "requests_per_client": self.limits.requests_per_client,
                "follows_per_client": self.limits.follows_per_client,
                "wrong_tokens": self.limits.wrong_tokens,
                "lockout_ms": self.limits.lockout.as_millis() as u64,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn per_client_caps_hold_and_slots_come_back() {
        let c = Clients::new(Limits {
            connections: 3,
            connections_per_client: 2,
            requests_per_client: 1,
            ..Limits::default()
        });
        let a1 = c.connect(ip(1)).expect("first");
        let _a2 = c.connect(ip(1)).expect("second");
        assert_eq!(c.connect(ip(1)).err(), Some(Refusal::ClientFull));
        let _b1 = c.connect(ip(2)).expect("another client");
        assert_eq!(c.connect(ip(3)).err(), Some(Refusal::AgentFull));
        assert_eq!(c.open_connections(), 3);
        drop(a1);
        assert_eq!(c.open_connections(), 2);
        let _a3 = c.connect(ip(1)).expect("a slot came back");
        let r = c.request(ip(1)).expect("request");
        assert_eq!(c.request(ip(1)).err(), Some(Refusal::ClientFull));
        assert!(c.request(ip(2)).is_ok(), "other clients are not held back");
        drop(r);
        assert!(c.request(ip(1)).is_ok());
        assert_eq!(c.refused.connections.load(Ordering::Relaxed), 2);
        assert_eq!(c.refused.requests.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn too_many_wrong_tokens_lock_one_client_out_for_the_period() {
        let c = Clients::new(Limits {
            wrong_tokens: 3,
            lockout: Duration::from_millis(300),
            ..Limits::default()
        });
        for _ in 0..2 {
            c.wrong_token(ip(1));
        }
        assert!(c.locked_out(ip(1)).is_none(), "under the limit");
        c.wrong_token(ip(1));
        let left = c.locked_out(ip(1)).expect("locked out");
        assert!(left <= Duration::from_millis(300));
        assert!(c.locked_out(ip(2)).is_none(), "only that client");
        std::thread::sleep(Duration::from_millis(350));
        assert!(c.locked_out(ip(1)).is_none(), "the period ended");
        c.wrong_token(ip(1));
        assert!(c.locked_out(ip(1)).is_none(), "counting starts again");
    }
}
