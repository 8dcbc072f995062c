//! The cluster's tables, generated from the one field list (`weir_core::schema::FIELDS`) so a
//! field added there is a column here, created or added by [`crate::ClickHouse::migrate`]:
//!
//! - `flows`: every field (`Node` among them), MergeTree partitioned by day of `TimeFlowEndMs`
//!   (retention drops whole days) and ordered by minute, node and addresses (the fields
//!   filters use first); addresses as `FixedString(16)` (IPv6, IPv4 mapped) so CIDRs are
//!   byte ranges; strings `LowCardinality(String)`.
//! - `flows_ingest`: what agents insert into (RowBinary, addresses as text): a `Null`
//!   table whose materialized views fill `flows`, `flows_1m`, `flows_1h`, `flows_addr` and
//!   `flows_span`.
//! - `flows_1m`: per-minute sums (bytes and packets scaled back by sampling, flow records,
//!   and from version 4 drops) by node, addresses, protocol, destination port and namespaces
//!   (SummingMergeTree).
//! - `flows_1h` (version 3): the same sums per hour (of `TimeFlowEndMs`) and the same keys.
//!   Aggregations, top-N and time series read whole hours from `flows_1h` and whole minutes
//!   from `flows_1m` instead of `flows` when the filter and the group-by name only their keys
//!   (`crate::rollups` plans it; `weir_rollups` says from when each holds every flow).
//! - `flows_addr` (version 5): each flow twice, once by its source address (`Side` 0) and once
//!   by its destination (`Side` 1), with the few columns selective listings filter and sort
//!   on ([`ADDRESS_COLUMNS`]; its addresses stored as `weir_SrcAddr` and `weir_DstAddr`,
//!   read through ALIAS columns of the usual names), ordered by address, side and end: a
//!   listing whose filter names an address finds its count and its page's bound here
//!   instead of scanning the address columns of every flow in the range (`weir_rollups`
//!   says from when it holds every flow).
//! - `flows_span` (version 6): the longest flow (end less start) per day of its end
//!   (AggregatingMergeTree of `max`), so a range's end also bounds the end times it can hold
//!   from above (a flow starting before the range's end ends before it plus that): a range
//!   in the middle of the data reads its own minutes, not every later one (`weir_rollups`
//!   says from when it holds every flow; flows ending before then end before that mark).
//! - `flows_kafka` (only with `weir server --kafka`): ClickHouse's Kafka engine reading
//!   agents' flows from a topic, with its own views into the five tables above.
//! - `summaries`: summarizer windows agents publish (version 2): the latest copy per node,
//!   plugin and window start (ReplacingMergeTree by `UpdatedMs`), partitioned by day of the
//!   window's start; `weir server` gathers and merges them.
//! - `weir_schema`: the schema versions applied.
//!
//! SQL kept to what ClickHouse 18.16 (Debian's) and current releases both run.

use weir_core::schema::{FIELDS, FieldKind};

/// The version [`ddl`] describes; recorded in `weir_schema` when applied.
pub const VERSION: u32 = 6;

/// `flows`' sort key: the end's minute, the node, the addresses (a listing through
/// `flows_addr` reads `flows` by it, `flows_addr` having each of its columns).
pub const FLOWS_KEY: &str = "intDiv(TimeFlowEndMs, 60000), Node, SrcAddr, DstAddr";

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

/// The columns of `flows` that `flows_addr` repeats beside `Addr` and `Side`: the time range,
/// the node and the 5-tuple (a listing filtered and sorted on these alone is answered from it).
/// In the order of `flows`' sort key, then the rest of the 5-tuple and the start: the order
/// a cursor of `flow-fields`' select pages in begins with them too.
pub const ADDRESS_COLUMNS: &[&str] = &[
    "TimeFlowEndMs",
    "Node",
    "SrcAddr",
    "DstAddr",
    "SrcPort",
    "DstPort",
    "Proto",
    "TimeFlowStartMs",
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

fn field_kind(name: &str) -> FieldKind {
    weir_core::schema::field(name).map_or(FieldKind::Str, |f| f.kind)
}

/// `flows_addr`'s columns after `Addr` and `Side`: those stored, then the ALIAS columns.
fn address_columns() -> String {
    let specs: Vec<Stored> = ADDRESS_COLUMNS
        .iter()
        .map(|k| stored(k, &|c: &str| format!("`{c}`")))
        .collect();
    specs
        .iter()
        .map(|s| format!("`{}` {}", s.name, s.ty))
        .chain(specs.iter().filter_map(|s| s.alias.clone()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns of `flows` by name, with their types in `flows`.
fn typed(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|k| format!("`{k}` {}", column_type(field_kind(k), false)))
        .collect()
}

/// How `flows_addr` stores a column of [`ADDRESS_COLUMNS`]: its stored name and type, the
/// value stored (from `column`, which gives a column as `flows` takes it), and the ALIAS
/// column reading it back under the field's name where the stored name differs.
/// - Addresses as `weir_SrcAddr` and `weir_DstAddr`: the view names the values it selects,
///   and a name equal to a source column's would stand for its expression wherever that
///   column is named again, the view's ARRAY JOIN among them.
/// - The start as its distance to the end (`weir_StartToEnd`, small and compressible; the
///   UInt64 arithmetic wraps both ways, so any start comes back exactly).
/// - Ports as UInt16 and the protocol as UInt8: the flow record's own types, all an agent
///   sends.
struct Stored {
    name: String,
    ty: &'static str,
    value: String,
    alias: Option<String>,
}

fn stored(name: &str, column: &dyn Fn(&str) -> String) -> Stored {
    let same = |ty: &'static str, value: String| Stored {
        name: name.to_string(),
        ty,
        value,
        alias: None,
    };
    match name {
        "TimeFlowStartMs" => Stored {
            name: "weir_StartToEnd".into(),
            ty: "UInt64",
            value: format!("toUInt64({} - {})", column("TimeFlowEndMs"), column(name)),
            alias: Some(format!(
                "`{name}` UInt64 ALIAS TimeFlowEndMs - weir_StartToEnd"
            )),
        },
        "SrcPort" | "DstPort" => same("UInt16", format!("toUInt16({})", column(name))),
        "Proto" => same("UInt8", format!("toUInt8({})", column(name))),
        _ => match field_kind(name) {
            FieldKind::Ip => Stored {
                name: format!("weir_{name}"),
                ty: "FixedString(16)",
                value: column(name),
                alias: Some(format!("`{name}` FixedString(16) ALIAS `weir_{name}`")),
            },
            kind => same(column_type(kind, false), column(name)),
        },
    }
}

/// An ingest column as `flows` takes it (addresses parsed from text), unnamed.
fn converted(name: &str) -> String {
    match weir_core::schema::field(name).map(|f| f.kind) {
        Some(FieldKind::Ip) => format!("IPv6StringToNum(`{name}`)"),
        _ => format!("`{name}`"),
    }
}

/// The statements that create the tables (each `IF NOT EXISTS`).
pub fn tables(db: &str) -> Vec<String> {
    let minute_cols = typed(MINUTE_KEYS);
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
             ORDER BY ({FLOWS_KEY})",
            column_list(false)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.flows_1m (Minute UInt64, {}, Bytes UInt64, Packets UInt64, Flows UInt64, \
             DropBytes UInt64, DropPackets UInt64) \
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
            "CREATE TABLE IF NOT EXISTS `{db}`.flows_addr (Addr FixedString(16), Side UInt8, {}) \
             ENGINE = MergeTree PARTITION BY toYYYYMMDD(toDateTime(intDiv(TimeFlowEndMs, 1000))) \
             ORDER BY (Addr, Side, TimeFlowEndMs)",
            address_columns()
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.flows_span (Day UInt64, Span AggregateFunction(max, UInt64)) \
             ENGINE = AggregatingMergeTree ORDER BY Day"
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

/// The ingest table and its views (the one into `flows_addr` only with `address`): dropped
/// and created again when the columns change (they hold no data).
pub fn ingest(db: &str, address: bool) -> Vec<String> {
    // The table first: while it is gone inserts are refused (and retried by agents) rather
    // than reaching some views and not others. Views into `flows` first, so a row that
    // arrives while they are made reaches `flows` (the migration then uses the rollups only
    // from a later hour and minute); an insert in the instant between the new table and its
    // first view is taken and reaches no table.
    let mut out = vec![format!("DROP TABLE IF EXISTS `{db}`.flows_ingest")];
    out.extend(drops(db, INGEST_VIEWS));
    out.push(format!(
        "CREATE TABLE `{db}`.flows_ingest ({}) ENGINE = Null",
        column_list(true)
    ));
    out.extend(views(db, "flows_ingest", INGEST_VIEWS, address, converted));
    out
}

/// `DROP` of each view named.
fn drops<'a>(db: &'a str, views: [&'a str; 5]) -> impl Iterator<Item = String> + 'a {
    views
        .into_iter()
        .map(move |v| format!("DROP TABLE IF EXISTS `{db}`.{v}"))
}

/// The ingest table's views, into `flows`, `flows_1m`, `flows_1h`, `flows_addr` and
/// `flows_span`.
const INGEST_VIEWS: [&str; 5] = [
    "flows_ingest_mv",
    "flows_1m_mv",
    "flows_1h_mv",
    "flows_addr_mv",
    "flows_span_mv",
];

/// The Kafka table's views, into the same tables.
const KAFKA_VIEWS: [&str; 5] = [
    "flows_kafka_mv",
    "flows_kafka_1m_mv",
    "flows_kafka_1h_mv",
    "flows_kafka_addr_mv",
    "flows_kafka_span_mv",
];

/// A day, the unit of `flows_span` (by the end time's milliseconds: UTC days).
pub const DAY_MS: u64 = 86_400_000;

/// The longest flow ending on each day (a record ending before it starts counts as 0), from
/// `source`'s flows: what `flows_span`'s views write.
fn spans(source: &str) -> String {
    format!(
        "SELECT intDiv(TimeFlowEndMs, {DAY_MS}) AS Day, maxState(toUInt64(if(TimeFlowEndMs >= TimeFlowStartMs, \
         TimeFlowEndMs - TimeFlowStartMs, 0))) AS Span FROM {source} GROUP BY Day"
    )
}

/// Where ClickHouse's Kafka engine reads agents' flows from: brokers, topic, consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    pub brokers: String,
    pub topic: String,
    pub group: String,
}

impl KafkaSource {
    /// `kafka://host:9092[,host2:9092]/topic`, the URL form of an agent's `--sink`, and the
    /// consumer group ClickHouse reads as.
    pub fn parse(url: &str, group: &str) -> Result<KafkaSource, String> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or("write kafka://HOST:PORT[,HOST:PORT]/TOPIC")?;
        let (brokers, topic) = rest
            .split_once('/')
            .ok_or("the topic is missing: kafka://HOST:PORT/TOPIC")?;
        if brokers.contains('@') || topic.contains('?') {
            return Err("credentials and options for ClickHouse's Kafka engine go in ClickHouse's own config (its <kafka> section), not in this URL".into());
        }
        let ok = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b) || extra.contains(&b))
        };
        if !ok(brokers, b":,[]") {
            return Err(format!("brokers {brokers:?}: HOST:PORT, comma-separated"));
        }
        if !ok(topic, b"") || topic.len() > 249 {
            return Err(format!(
                "topic {topic:?}: 1-249 characters of a-z, A-Z, 0-9, '.', '_', '-'"
            ));
        }
        if !ok(group, b"") {
            return Err(format!(
                "consumer group {group:?}: characters of a-z, A-Z, 0-9, '.', '_', '-'"
            ));
        }
        Ok(KafkaSource {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
        })
    }
}

/// ClickHouse's Kafka engine reading `k`'s topic (agents' `ndjson-export` lines, NetObserv's
/// names) into the same tables as the ingest table, each through its own view: 18.16 does not
/// pass rows a Kafka table's view writes on to the views of that view's target. Addresses
/// come as text, IPv4 without the `::ffff:` prefix.
pub fn kafka(db: &str, k: &KafkaSource, address: bool) -> Vec<String> {
    // The Kafka table first, so its consumer stops before any of its views goes; the view
    // into `flows` first, so what it consumes while the others are made reaches `flows`.
    let mut out = vec![format!("DROP TABLE IF EXISTS `{db}`.flows_kafka")];
    out.extend(drops(db, KAFKA_VIEWS));
    out.push(format!(
        "CREATE TABLE `{db}`.flows_kafka ({}) ENGINE = Kafka({}, {}, {}, 'JSONEachRow')",
        column_list(true),
        crate::sql::quote(&k.brokers),
        crate::sql::quote(&k.topic),
        crate::sql::quote(&k.group)
    ));
    out.extend(views(
        db,
        "flows_kafka",
        KAFKA_VIEWS,
        address,
        |name| match weir_core::schema::field(name).map(|f| f.kind) {
            Some(FieldKind::Ip) => format!(
                "IPv6StringToNum(if(position(`{name}`, ':') = 0 AND `{name}` != '', \
                 concat('::ffff:', `{name}`), `{name}`))"
            ),
            _ => format!("`{name}`"),
        },
    ));
    out
}

/// The views from `source` (ingest columns) into `flows`, `flows_1m`, `flows_1h`,
/// `flows_addr` (only with `address`) and `flows_span`, named `names`; `column` converts a
/// column as `flows` takes it (unnamed).
fn views(
    db: &str,
    source: &str,
    names: [&str; 5],
    address: bool,
    column: impl Fn(&str) -> String,
) -> Vec<String> {
    let named = |n: &str| format!("{} AS `{n}`", column(n));
    let select: Vec<String> = columns(true).iter().map(|(n, _)| named(n)).collect();
    let keys: Vec<String> = MINUTE_KEYS.iter().map(|k| named(k)).collect();
    let [to_flows, to_minute, to_hour, to_addr, to_span] = names;
    let mut out = vec![
        format!(
            "CREATE MATERIALIZED VIEW `{db}`.{to_flows} TO `{db}`.flows AS SELECT {} FROM `{db}`.{source}",
            select.join(", ")
        ),
        format!(
            "CREATE MATERIALIZED VIEW `{db}`.{to_minute} TO `{db}`.flows_1m AS SELECT \
             intDiv(TimeFlowEndMs, 60000) * 60000 AS Minute, {}, \
             Bytes * greatest(Sampling, 1) AS Bytes, Packets * greatest(Sampling, 1) AS Packets, \
             toUInt64(1) AS Flows, PktDropBytes * greatest(Sampling, 1) AS DropBytes, \
             PktDropPackets * greatest(Sampling, 1) AS DropPackets FROM `{db}`.{source}",
            keys.join(", ")
        ),
        format!(
            "CREATE MATERIALIZED VIEW `{db}`.{to_hour} TO `{db}`.flows_1h AS SELECT \
             intDiv(TimeFlowEndMs, 3600000) * 3600000 AS Hour, {}, \
             Bytes * greatest(Sampling, 1) AS Bytes, Packets * greatest(Sampling, 1) AS Packets, \
             toUInt64(1) AS Flows, PktDropBytes * greatest(Sampling, 1) AS DropBytes, \
             PktDropPackets * greatest(Sampling, 1) AS DropPackets FROM `{db}`.{source}",
            keys.join(", ")
        ),
        format!(
            "CREATE MATERIALIZED VIEW `{db}`.{to_span} TO `{db}`.flows_span AS {}",
            spans(&format!("`{db}`.{source}"))
        ),
    ];
    if address {
        // Each flow twice (ARRAY JOIN over its two addresses), in one insert block. Its
        // addresses go into `weir_SrcAddr` and `weir_DstAddr` (`SrcAddr` and `DstAddr` are
        // ALIAS columns of those): an alias named as a source column would stand for its
        // expression wherever the column is named again, the ARRAY JOIN among them.
        out.push(format!(
            "CREATE MATERIALIZED VIEW `{db}`.{to_addr} TO `{db}`.flows_addr AS SELECT \
             weir_addr AS Addr, weir_side AS Side, {} FROM `{db}`.{source} \
             ARRAY JOIN [{}, {}] AS weir_addr, [0, 1] AS weir_side",
            ADDRESS_COLUMNS
                .iter()
                .map(|k| {
                    let s = stored(k, &column);
                    format!("{} AS `{}`", s.value, s.name)
                })
                .collect::<Vec<_>>()
                .join(", "),
            column("SrcAddr"),
            column("DstAddr")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_urls_are_checked_and_the_table_reads_the_ingest_columns() {
        let k = KafkaSource::parse("kafka://b1:9092,b2:9092/weir-flows", "weir-clickhouse")
            .expect("ok");
        assert_eq!(
            (k.brokers.as_str(), k.topic.as_str()),
            ("b1:9092,b2:9092", "weir-flows")
        );
        for (url, group, says) in [
            ("b1:9092/t", "g", "write kafka://"),
            ("kafka://b1:9092", "g", "topic is missing"),
            ("kafka://u:p@b1:9092/t", "g", "ClickHouse's own config"),
            (
                "kafka://b1:9092/t?sasl=plain",
                "g",
                "ClickHouse's own config",
            ),
            ("kafka://b1:9092/t'x", "g", "topic"),
            ("kafka://b1 9092/t", "g", "brokers"),
            ("kafka://b1:9092/t", "g'", "consumer group"),
        ] {
            let e = KafkaSource::parse(url, group).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
        }
        let sql = kafka("weir", &k, true).join(";");
        assert!(
            !kafka("weir", &k, false)
                .join(";")
                .contains("TO `weir`.flows_addr")
        );
        assert!(
            sql.contains(
                "ENGINE = Kafka('b1:9092,b2:9092', 'weir-flows', 'weir-clickhouse', 'JSONEachRow')"
            ),
            "{sql}"
        );
        for view in [
            "flows_kafka_mv TO `weir`.flows ",
            "flows_kafka_1m_mv TO `weir`.flows_1m ",
            "flows_kafka_1h_mv TO `weir`.flows_1h ",
            "flows_kafka_addr_mv TO `weir`.flows_addr ",
            "flows_kafka_span_mv TO `weir`.flows_span ",
        ] {
            assert!(sql.contains(view), "{view}: {sql}");
        }
        assert!(sql.contains("concat('::ffff:', `SrcAddr`)"), "{sql}");
    }

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
        assert!(
            !ingest("weir", false)
                .join(";")
                .contains("TO `weir`.flows_addr")
        );
        let sql = ingest("weir", true).join(";");
        assert!(
            sql.contains("IPv6StringToNum(`SrcAddr`) AS `SrcAddr`"),
            "{sql}"
        );
        for k in ADDRESS_COLUMNS {
            assert!(weir_core::schema::field(k).is_some(), "{k} is a field");
        }
        assert!(
            sql.contains("IPv6StringToNum(`SrcAddr`) AS `weir_SrcAddr`"),
            "{sql}"
        );
    }
}
