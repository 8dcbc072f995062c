//! The cluster's tables, generated from the one field list (`weir_core::schema::FIELDS`) so a
//! field added there is a column here, created or added by [`crate::ClickHouse::migrate`]:
//!
//! - `flows`: every field (`Node` among them), MergeTree partitioned by day of `TimeFlowEndMs`
//!   (retention drops whole days) and ordered by minute, node and addresses (the fields
//!   filters use first); addresses as `FixedString(16)` (IPv6, IPv4 mapped) so CIDRs are
//!   byte ranges; strings `LowCardinality(String)`.
//! - `flows_ingest`: what agents insert into (RowBinary, addresses as text): a `Null`
//!   table whose materialized views fill `flows` and `flows_1m`.
//! - `flows_1m`: per-minute sums (bytes and packets scaled back by sampling, flow records)
//!   by node, addresses, protocol, destination port and namespaces (SummingMergeTree), for
//!   top-N views over long ranges.
//! - `flows_1h` (version 3): the same sums per hour (of `TimeFlowEndMs`) and the same keys,
//!   plus drops; top-N and totals over whole hours read it instead of `flows` when the filter
//!   and the group-by name only its keys (`weir_rollups` says from which hour it holds every
//!   flow).
//! - `summaries`: summarizer windows agents publish (version 2): the latest copy per node,
//!   plugin and window start (ReplacingMergeTree by `UpdatedMs`), partitioned by day of the
//!   window's start; `weir server` gathers and merges them.
//! - `weir_schema`: the schema versions applied.
//!
//! SQL kept to what ClickHouse 18.16 (Debian's) and current releases both run.

use weir_core::schema::{FIELDS, FieldKind};

/// The version [`ddl`] describes; recorded in `weir_schema` when applied.
pub const VERSION: u32 = 3;

/// The per-minute and per-hour tables' key columns (besides `Minute` or `Hour`).
pub const MINUTE_KEYS: &[&str] = &[
    "Node",
    "SrcAddr",
    "DstAddr",
    "Proto",
    "DstPort",
    "SrcK8S_Namespace",
    "DstK8S_Namespace",
];

/// A column's type in `flows` (`ingest`: in `flows_ingest`, where addresses are text).
pub fn column_type(kind: FieldKind, ingest: bool) -> &'static str {
    match (kind, ingest) {
        (FieldKind::U64, _) => "UInt64",
        (FieldKind::Ip, false) => "FixedString(16)",
        (FieldKind::Ip, true) => "String",
        (FieldKind::Str, _) => "LowCardinality(String)",
    }
}

/// Every column of `flows` (or `flows_ingest`): name and type, one per field (`Node`, the
/// agent's node, among them).
pub fn columns(ingest: bool) -> Vec<(&'static str, &'static str)> {
    FIELDS
        .iter()
        .map(|f| (f.name, column_type(f.kind, ingest)))
        .collect()
}

fn column_list(ingest: bool) -> String {
    columns(ingest)
        .iter()
        .map(|(n, t)| format!("`{n}` {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An ingest column as `flows` takes it (addresses parsed from text).
fn converted(name: &str) -> String {
    match weir_core::schema::field(name).map(|f| f.kind) {
        Some(FieldKind::Ip) => format!("IPv6StringToNum(`{name}`) AS `{name}`"),
        _ => format!("`{name}`"),
    }
}

/// The statements that create the tables (each `IF NOT EXISTS`).
pub fn tables(db: &str) -> Vec<String> {
    let minute_cols: Vec<String> = MINUTE_KEYS
        .iter()
        .map(|k| {
            let kind = weir_core::schema::field(k).map_or(FieldKind::Str, |f| f.kind);
            format!("`{k}` {}", column_type(kind, false))
        })
        .collect();
    let keys = MINUTE_KEYS
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        format!("CREATE DATABASE IF NOT EXISTS `{db}`"),
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.weir_schema (version UInt32, applied_ms UInt64) ENGINE = TinyLog"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.flows ({}) ENGINE = MergeTree \
             PARTITION BY toYYYYMMDD(toDateTime(intDiv(TimeFlowEndMs, 1000))) \
             ORDER BY (intDiv(TimeFlowEndMs, 60000), Node, SrcAddr, DstAddr)",
            column_list(false)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.flows_1m (Minute UInt64, {}, Bytes UInt64, Packets UInt64, Flows UInt64) \
             ENGINE = SummingMergeTree PARTITION BY toYYYYMMDD(toDateTime(intDiv(Minute, 1000))) \
             ORDER BY (Minute, {keys})",
            minute_cols.join(", ")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.flows_1h (Hour UInt64, {}, Bytes UInt64, Packets UInt64, Flows UInt64, \
             DropBytes UInt64, DropPackets UInt64) \
             ENGINE = SummingMergeTree PARTITION BY toYYYYMMDD(toDateTime(intDiv(Hour, 1000))) \
             ORDER BY (Hour, {keys})",
            minute_cols.join(", ")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.weir_rollups (name String, from_ms UInt64) ENGINE = TinyLog"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.summaries (Node String, Plugin String, \
             WindowStartMs UInt64, WindowSecs UInt64, UpdatedMs UInt64, Snapshot String) \
             ENGINE = ReplacingMergeTree(UpdatedMs) \
             PARTITION BY toYYYYMMDD(toDateTime(intDiv(WindowStartMs, 1000))) \
             ORDER BY (Plugin, Node, WindowSecs, WindowStartMs)"
        ),
    ]
}

/// The ingest table and its views: dropped and created again when the columns change (they
/// hold no data).
pub fn ingest(db: &str) -> Vec<String> {
    let select: Vec<String> = columns(true).iter().map(|(n, _)| converted(n)).collect();
    let minute: Vec<String> = MINUTE_KEYS.iter().map(|k| converted(k)).collect();
    vec![
        format!("DROP TABLE IF EXISTS `{db}`.flows_ingest_mv"),
        format!("DROP TABLE IF EXISTS `{db}`.flows_1m_mv"),
        format!("DROP TABLE IF EXISTS `{db}`.flows_1h_mv"),
        format!("DROP TABLE IF EXISTS `{db}`.flows_ingest"),
        format!(
            "CREATE TABLE `{db}`.flows_ingest ({}) ENGINE = Null",
            column_list(true)
        ),
        format!(
            "CREATE MATERIALIZED VIEW `{db}`.flows_ingest_mv TO `{db}`.flows AS SELECT {} FROM `{db}`.flows_ingest",
            select.join(", ")
        ),
        format!(
            "CREATE MATERIALIZED VIEW `{db}`.flows_1m_mv TO `{db}`.flows_1m AS SELECT \
             intDiv(TimeFlowEndMs, 60000) * 60000 AS Minute, {}, \
             Bytes * greatest(Sampling, 1) AS Bytes, Packets * greatest(Sampling, 1) AS Packets, \
             toUInt64(1) AS Flows FROM `{db}`.flows_ingest",
            minute.join(", ")
        ),
        format!(
            "CREATE MATERIALIZED VIEW `{db}`.flows_1h_mv TO `{db}`.flows_1h AS SELECT \
             intDiv(TimeFlowEndMs, 3600000) * 3600000 AS Hour, {}, \
             Bytes * greatest(Sampling, 1) AS Bytes, Packets * greatest(Sampling, 1) AS Packets, \
             toUInt64(1) AS Flows, PktDropBytes * greatest(Sampling, 1) AS DropBytes, \
             PktDropPackets * greatest(Sampling, 1) AS DropPackets FROM `{db}`.flows_ingest",
            minute.join(", ")
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_a_column_of_both_tables() {
        let (stored, ing) = (columns(false), columns(true));
        assert_eq!(stored.len(), FIELDS.len());
        assert!(stored.iter().any(|(n, _)| *n == "Node"));
        for (f, ((n, t), (n2, t2))) in FIELDS.iter().zip(stored.iter().zip(&ing)) {
            assert_eq!((f.name, f.name), (*n, *n2));
            match f.kind {
                FieldKind::Ip => assert_eq!((*t, *t2), ("FixedString(16)", "String")),
                _ => assert_eq!(t, t2),
            }
        }
        for k in MINUTE_KEYS {
            assert!(weir_core::schema::field(k).is_some(), "{k} is a field");
        }
        let sql = ingest("weir").join(";");
        assert!(
            sql.contains("IPv6StringToNum(`SrcAddr`) AS `SrcAddr`"),
            "{sql}"
        );
    }
}
