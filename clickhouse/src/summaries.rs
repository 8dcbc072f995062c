//! Core's summary-exchange port over ClickHouse: agents insert their summarizer windows into
//! `summaries` (RowBinary, the snapshot as raw bytes); `weir server` reads the latest copy of
//! each node's windows (`argMax` by `UpdatedMs`, so a copy published twice or not yet merged
//! away by the ReplacingMergeTree counts once).

use crate::{ClickHouse, ClickHouseError, sql, url_encode};
use serde_json::Value as Json;
use weir_core::summaries::{ExchangeError, PublishedWindow, SummaryExchange};

impl From<ClickHouseError> for ExchangeError {
    fn from(e: ClickHouseError) -> ExchangeError {
        match e {
            ClickHouseError::Decode { .. } => ExchangeError::Decode(e.to_string()),
            _ => ExchangeError::Backend(e.to_string()),
        }
    }
}

/// ClickHouse's RowBinary `String`: a LEB128 length, then the bytes.
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let mut n = b.len() as u64;
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    out.extend_from_slice(b);
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl SummaryExchange for ClickHouse {
    fn publish(&self, windows: &[PublishedWindow]) -> Result<(), ExchangeError> {
        if windows.is_empty() {
            return Ok(());
        }
        let now = weir_core::query::now_ms();
        let mut body = Vec::new();
        for w in windows {
            put_bytes(&mut body, w.node.as_bytes());
            put_bytes(&mut body, w.plugin.as_bytes());
            body.extend_from_slice(&w.start_ms.to_le_bytes());
            body.extend_from_slice(&w.window_secs.to_le_bytes());
            body.extend_from_slice(&now.to_le_bytes());
            put_bytes(&mut body, &w.snapshot);
        }
        let q = format!(
            "INSERT INTO `{}`.summaries (Node, Plugin, WindowStartMs, WindowSecs, UpdatedMs, Snapshot) FORMAT RowBinary",
            self.db
        );
        self.send(&format!("{}?query={}", self.base, url_encode(&q)), &body)?;
        Ok(())
    }

    fn gather(
        &self,
        plugin: &str,
        window_secs: u64,
        since_ms: u64,
    ) -> Result<Vec<PublishedWindow>, ExchangeError> {
        let rows = self.rows(&format!(
            "SELECT Node, WindowStartMs, hex(argMax(Snapshot, UpdatedMs)) AS s \
             FROM `{}`.summaries WHERE Plugin = {} AND WindowSecs = {window_secs} \
             AND WindowStartMs >= {since_ms} GROUP BY Node, WindowStartMs \
             ORDER BY WindowStartMs, Node",
            self.db,
            sql::quote(plugin)
        ))?;
        rows.iter()
            .map(|r| {
                let node = r.get("Node").and_then(Json::as_str);
                let start = r.get("WindowStartMs").and_then(Json::as_u64);
                let snapshot = r.get("s").and_then(Json::as_str).and_then(unhex);
                match (node, start, snapshot) {
                    (Some(node), Some(start_ms), Some(snapshot)) => Ok(PublishedWindow {
                        node: node.to_string(),
                        plugin: plugin.to_string(),
                        start_ms,
                        window_secs,
                        snapshot,
                    }),
                    _ => Err(ExchangeError::Decode(format!(
                        "clickhouse {}: a summaries row without node, start or hex snapshot: {}",
                        self.shown,
                        Json::Object(r.clone())
                    ))),
                }
            })
            .collect()
    }

    fn stamp(
        &self,
        plugin: &str,
        window_secs: u64,
        since_ms: u64,
    ) -> Result<(u64, u64), ExchangeError> {
        let rows = self.rows(&format!(
            "SELECT count() AS n, max(UpdatedMs) AS u FROM `{}`.summaries WHERE Plugin = {} \
             AND WindowSecs = {window_secs} AND WindowStartMs >= {since_ms}",
            self.db,
            sql::quote(plugin)
        ))?;
        let r = rows.first();
        let get = |k: &str| r.and_then(|r| r.get(k)).and_then(Json::as_u64);
        match (get("n"), get("u")) {
            (Some(n), Some(u)) => Ok((n, u)),
            _ => Err(ExchangeError::Decode(format!(
                "clickhouse {}: no count and newest update for the summaries of {plugin}",
                self.shown
            ))),
        }
    }

    fn describe(&self) -> String {
        format!("clickhouse {}{}.summaries", self.shown, self.db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_leb128_and_hex_reads_back() {
        let mut out = Vec::new();
        put_bytes(&mut out, &[7u8; 300]);
        assert_eq!(&out[..2], &[0xac, 0x02]);
        assert_eq!(out.len(), 302);
        let mut one = Vec::new();
        put_bytes(&mut one, b"ab");
        assert_eq!(one, vec![2, b'a', b'b']);
        assert_eq!(unhex("00ff7A"), Some(vec![0, 255, 0x7a]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
