//! `TraceId=<32 hex>` in filters: the flows of the connections a trace's spans were joined to
//! (`weir_core::telemetry::join`), both directions. The filter is expanded when parsed into
//! address, port and protocol comparisons, so the index, the in-memory evaluator and plugins
//! see plain comparisons. The agent installs the lookup ([`set_resolver`]) once it keeps
//! spans; elsewhere `TraceId` is an error saying so.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// The field name in filters.
pub const FIELD: &str = "TraceId";

/// One connection: client, server, IP protocol.
pub type Connection = (SocketAddr, SocketAddr, u8);

/// Looks a trace up: its connections, or why it cannot (the message is shown at the value).
pub type Resolver = dyn Fn(&str) -> Result<Vec<Connection>, String> + Send + Sync;

static RESOLVER: RwLock<Option<Arc<Resolver>>> = RwLock::new(None);

/// Installs the trace lookup for this process (the agent, once it keeps spans).
pub fn set_resolver(r: Arc<Resolver>) {
    *RESOLVER.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
}

thread_local! {
    /// Set while [`check_syntax`] runs: `TraceId` is checked but not looked up.
    static SYNTAX_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Checks a filter's syntax without looking traces up: for filters kept to be run later
/// (records' flow filters, restored incidents), where a lookup would cost a trace join and
/// may not be installed yet.
pub fn check_syntax(filter: &str) -> Result<(), super::QueryError> {
    SYNTAX_ONLY.with(|s| s.set(true));
    let r = super::parse(filter).map(|_| ());
    SYNTAX_ONLY.with(|s| s.set(false));
    r
}

pub(crate) fn syntax_only() -> bool {
    SYNTAX_ONLY.with(|s| s.get())
}

pub(crate) fn connections(trace_id: &str) -> Result<Vec<Connection>, String> {
    let r = RESOLVER
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| {
            "TraceId needs an agent that keeps spans (OTLP traces received by `weir agent`)"
                .to_string()
        })?;
    r(trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Flow;

    #[test]
    fn a_trace_id_selects_its_connections_both_ways_and_nothing_else() {
        set_resolver(Arc::new(|id: &str| {
            if id == "0af7651916cd43dd8448eb211c80319c" {
                Ok(vec![(
                    "10.0.0.1:43210".parse().expect("addr"),
                    "[2001:db8::2]:80".parse().expect("addr"),
                    6,
                )])
            } else {
                Ok(Vec::new())
            }
        }));
        let flow = |src: &str, sport: u16, dst: &str, dport: u16| Flow {
            src_addr: src.parse().expect("ip"),
            src_port: sport,
            dst_addr: dst.parse().expect("ip"),
            dst_port: dport,
            proto: 6,
            ..Flow::default()
        };
        let there = flow("10.0.0.1", 43210, "2001:db8::2", 80);
        let back = flow("2001:db8::2", 80, "10.0.0.1", 43210);
        let other = flow("10.0.0.1", 43211, "2001:db8::2", 80);
        let e = crate::query::parse("TraceId=0AF7651916CD43DD8448EB211C80319C").expect("parse");
        assert!(e.matches(&there) && e.matches(&back) && !e.matches(&other));
        let not = crate::query::parse("TraceId!=0af7651916cd43dd8448eb211c80319c").expect("parse");
        assert!(!not.matches(&there) && not.matches(&other));
        let none = crate::query::parse("TraceId=00000000000000000000000000000001").expect("parse");
        assert!(!none.matches(&there));
        // Syntax only: checked, not looked up.
        assert!(check_syntax("TraceId=0af7651916cd43dd8448eb211c80319c").is_ok());
        assert!(check_syntax("TraceId=0af7").is_err());
        let err = crate::query::parse("TraceId>1").expect_err("ordering");
        assert_eq!(err.pos, 7);
    }
}
