//! The filter language people type, and the requests built on it.
//!
//! ```text
//! SrcAddr=10.0.0.0/8 and DstPort=8000-9000 and not Proto=udp
//! Addr=2001:db8::1 or (Interface="veth0" and Flags=SYN)
//! ```
//! Comparisons: `=` `!=` `<` `<=` `>` `>=`. Values: numbers, `a-b` ranges, IP addresses, CIDRs,
//! names (`tcp`, `egress`, `arp`, `SYN,ACK`) and bare or quoted strings. `and` binds tighter
//! than `or`; adjacent comparisons are joined by `and`. `Addr`, `Port` and `Mac` match either
//! side of the flow.

mod eval;
mod parse;
mod print;
mod time;
pub mod trace;

pub use parse::{Cmp, Expr, Op, Operand, parse, parse_ip_or_cidr};
pub use time::{
    TimeRange, format_ms, human_bytes, now_ms, parse_duration_ms, parse_time, pin_now, pinned_ms,
};

use crate::schema::{self, FieldDef};
use serde::{Deserialize, Serialize};

/// A malformed query, with the byte position of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {pos}: {message}")]
pub struct QueryError {
    /// Byte offset in the query text (0-based).
    pub pos: usize,
    pub message: String,
}

impl QueryError {
    pub(crate) fn new(pos: usize, message: impl Into<String>) -> Self {
        QueryError {
            pos,
            message: message.into(),
        }
    }

    /// The query with a caret under the problem, for terminals.
    pub fn render(&self, query: &str) -> String {
        let col = query[..self.pos.min(query.len())].chars().count();
        format!("{query}\n{}^ {}", " ".repeat(col), self.message)
    }
}

/// How flows are ordered in a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortBy {
    pub field: &'static FieldDef,
    pub descending: bool,
}

impl SortBy {
    /// Parses `Bytes`, `-Bytes` (descending), `Bytes:desc` or `Bytes:asc`.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let (name, descending) = if let Some(rest) = text.strip_prefix('-') {
            (rest, true)
        } else if let Some((n, dir)) = text.split_once(':') {
            match dir.to_ascii_lowercase().as_str() {
                "desc" => (n, true),
                "asc" => (n, false),
                other => {
                    return Err(QueryError::new(
                        n.len() + 1,
                        format!("sort direction must be asc or desc, not '{other}'"),
                    ));
                }
            }
        } else {
            (text, false)
        };
        let field = lookup_field(name, 0)?;
        if field.kind != schema::FieldKind::U64 && field.kind != schema::FieldKind::Ip {
            return Err(QueryError::new(
                0,
                format!(
                    "cannot sort by {}: only numeric and address fields sort",
                    field.name
                ),
            ));
        }
        Ok(SortBy { field, descending })
    }
}

/// Resolves a field name or errors with a hint.
pub(crate) fn lookup_field(name: &str, pos: usize) -> Result<&'static FieldDef, QueryError> {
    schema::field(name).ok_or_else(|| unknown_field(name, pos))
}

pub(crate) fn unknown_field(name: &str, pos: usize) -> QueryError {
    let hint = match schema::suggest(name) {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    };
    QueryError::new(pos, format!("unknown field '{name}'{hint}"))
}

/// Which measure an aggregation sums or ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Bytes,
    Packets,
    Flows,
    /// Bytes the kernel dropped (PktDropBytes).
    DropBytes,
    /// Packets the kernel dropped (PktDropPackets).
    DropPackets,
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "bytes" => Ok(Metric::Bytes),
            "packets" => Ok(Metric::Packets),
            "flows" | "count" => Ok(Metric::Flows),
            "drop_bytes" | "dropbytes" => Ok(Metric::DropBytes),
            "drop_packets" | "droppackets" | "drops" => Ok(Metric::DropPackets),
            other => Err(format!(
                "unknown metric '{other}': use bytes, packets, flows, drop_bytes or drop_packets"
            )),
        }
    }
}

/// The most rows one listing may return.
pub const MAX_LIMIT: usize = 10_000;
/// The deepest row a listing may start at. Each partition ranks `offset + limit` rows to find
/// a page, so a deeper page costs memory in proportion: narrow the range (`from`, `to`) or
/// the filter instead. (Schemathesis found `offset=7835365970133182` aborting the agent.)
pub const MAX_OFFSET: usize = 1_000_000;
/// The most groups one aggregation may return.
pub const MAX_GROUPS: usize = 10_000;
/// The most buckets one time series may have.
pub const MAX_BUCKETS: u64 = 10_000;
/// The most fields one aggregation may group by.
pub const MAX_GROUP_FIELDS: usize = 6;

/// Checks a requested limit against `max`, naming the parameter.
pub fn check_limit(name: &str, value: usize, max: usize) -> Result<usize, String> {
    if value == 0 {
        Err(format!("{name} must be at least 1"))
    } else if value > max {
        Err(format!("{name} {value} is above the maximum of {max}"))
    } else {
        Ok(value)
    }
}

/// Parses a comma-separated list of group-by fields.
pub fn parse_group_by(text: &str) -> Result<Vec<&'static FieldDef>, QueryError> {
    let mut out = Vec::new();
    let mut pos = 0;
    for part in text.split(',') {
        let name = part.trim();
        if name.is_empty() {
            return Err(QueryError::new(pos, "empty field name in group-by list"));
        }
        let f = lookup_field(name, pos)?;
        if out.iter().any(|g: &&FieldDef| std::ptr::eq(*g, f)) {
            return Err(QueryError::new(pos, format!("{} is listed twice", f.name)));
        }
        out.push(f);
        pos += part.len() + 1;
    }
    if out.len() > MAX_GROUP_FIELDS {
        return Err(QueryError::new(
            0,
            format!(
                "at most {MAX_GROUP_FIELDS} group-by fields, got {}",
                out.len()
            ),
        ));
    }
    Ok(out)
}
