//! weir's ClickHouse adapter: the cluster tier. Agents write their flows into one ClickHouse
//! (the bundled `clickhouse-export` plugin, RowBinary through an HTTP sink into
//! `flows_ingest`); `weir server --clickhouse URL` answers the same flow API over all of
//! them through [`ClickHouse`], which implements core's [`FlowQuery`] port with SQL (top-N,
//! totals and time series over whole hours and minutes from the rollups, `flows_1h` and
//! `flows_1m`, where the filter and group-by allow: [`rollups`]; listings filtered by an
//! address counted and bounded in `flows_addr`: [`addresses`]), and its summary-exchange
//! port ([`summaries`]).
//!
//! Over ClickHouse's HTTP interface only (no native protocol, no client library); the schema
//! is weir's own ([`schema`]), created and migrated by [`ClickHouse::migrate`].

pub mod addresses;
pub mod local;
pub mod rollups;
pub mod schema;
pub mod sql;
pub mod summaries;

use rollups::{HOUR, MINUTE};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::Duration;
use weir_core::aggregate::Ranked;
use weir_core::flowquery::FlowQuery;
use weir_core::query::{Expr, Metric, TimeRange};
use weir_core::schema::{FIELDS, FieldDef, FieldKind, Value};
use weir_core::store::collect::GroupValues;
use weir_core::store::{Buckets, GroupKey, ListRequest, ListResult, StoreError, Totals};

/// Most groups one aggregation may return (more is refused, naming the limit).
pub const MAX_GROUPS: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// The URL or database name given does not work.
    #[error("clickhouse {given:?}: {message}")]
    Config { given: String, message: String },
    /// No answer (down, refused, timed out).
    #[error("clickhouse {url}: {message}")]
    Unreachable { url: String, message: String },
    /// ClickHouse answered with an error (its own message, `Code: N, ...`).
    #[error("clickhouse {url}: {message}")]
    Server { url: String, message: String },
    /// An answer that is not what the query asks for.
    #[error("clickhouse {url}: unexpected answer: {message}")]
    Decode { url: String, message: String },
    /// The database's schema is newer than this weir's: a newer `weir server` migrated it.
    #[error(
        "clickhouse database {db:?} is at schema version {version}, newer than this weir's \
         ({known}): run a weir of that version or later against it (a migration by this one \
         would undo the newer views)"
    )]
    Newer {
        db: String,
        version: u32,
        known: u32,
    },
    /// The Kafka table asked of a database not migrated to this weir's schema (its views
    /// write into the tables the migration makes).
    #[error(
        "clickhouse database {db:?} is at schema version {version}, not this weir's ({known}): \
         migrate it first (weir server --migrate-only)"
    )]
    NotMigrated {
        db: String,
        version: u32,
        known: u32,
    },
}

impl From<ClickHouseError> for StoreError {
    fn from(e: ClickHouseError) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

/// One ClickHouse server (its HTTP interface) and the database weir's tables are in.
pub struct ClickHouse {
    /// `http(s)://host:port/`, as given (credentials, if any, in the URL's user info).
    base: String,
    /// The same without credentials, for messages.
    shown: String,
    db: String,
    agent: ureq::Agent,
    /// [`ClickHouse::marks`] and when they were read.
    marks: std::sync::Mutex<Option<(std::time::Instant, rollups::Marks)>>,
    /// Whether [`ClickHouse::migrate`] keeps `flows_addr` and its views (the default), or
    /// drops them ([`ClickHouse::address_table`]).
    address_table: bool,
}

/// What [`ClickHouse::migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The schema version found before (0: none).
    pub from: u32,
    pub to: u32,
    /// Columns added to `flows` (fields new since the table was created).
    pub added: Vec<String>,
}

impl ClickHouse {
    /// `url`: ClickHouse's HTTP interface, `http://host:8123`; `db`: the database (created by
    /// [`ClickHouse::migrate`]).
    pub fn new(url: &str, db: &str) -> Result<ClickHouse, ClickHouseError> {
        let bad = |m: &str| ClickHouseError::Config {
            given: weir_core::sink::redact(url),
            message: m.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("write http://HOST:PORT (ClickHouse's HTTP interface)"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http:// or https://"));
        }
        if rest.contains('?') || rest.trim_end_matches('/').contains('/') {
            return Err(bad(
                "give the server only (http://HOST:PORT), without a path or query",
            ));
        }
        if db.is_empty()
            || db.len() > 64
            || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad(
                "the database name must be 1-64 characters of a-z, 0-9, _",
            ));
        }
        let base = format!("{}/", url.trim_end_matches('/'));
        Ok(ClickHouse {
            shown: weir_core::sink::redact(&base),
            base,
            db: db.to_string(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
            marks: std::sync::Mutex::new(None),
            address_table: true,
        })
    }

    /// Whether migrations keep `flows_addr` (each flow again by its two addresses, for
    /// listings filtered by an address; the default) or leave it out and drop it where it
    /// was: inserts cost ClickHouse less, and such listings scan the address columns of
    /// every flow in their range.
    pub fn address_table(mut self, keep: bool) -> ClickHouse {
        self.address_table = keep;
        self
    }

    pub fn database(&self) -> &str {
        &self.db
    }

    /// [`Self::insert_url`] as an agent's `--sink` URL that gzip-compresses each insert
    /// (`http+gzip://`; ClickHouse reads `Content-Encoding: gzip` bodies).
    pub fn sink_url(&self) -> String {
        let url = self.insert_url();
        match url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}+gzip://{rest}"),
            None => url,
        }
    }

    /// The URL agents' HTTP sinks insert into: `INSERT INTO db.flows_ingest`, without columns or
    /// format, which each insert's body begins with (ClickHouse appends the body to the URL's
    /// query): `clickhouse-export` sends ` (`a`, `b`) FORMAT RowBinary` and binary rows; a
    /// body of ` FORMAT JSONEachRow` and JSON lines works too.
    pub fn insert_url(&self) -> String {
        format!(
            "{}?query={}&input_format_skip_unknown_fields=1",
            self.base,
            url_encode(&format!("INSERT INTO `{}`.flows_ingest", self.db))
        )
    }

    /// Runs one statement; the answer's body.
    pub fn query(&self, sql: &str) -> Result<String, ClickHouseError> {
        let url = format!(
            "{}?output_format_json_quote_64bit_integers=0&allow_experimental_low_cardinality_type=1",
            self.base
        );
        self.send(&url, sql.as_bytes())
    }

    /// Posts `body` to `url` (this server's); the answer's body, or ClickHouse's error.
    fn send(&self, url: &str, body: &[u8]) -> Result<String, ClickHouseError> {
        let mut resp =
            self.agent
                .post(url)
                .send(body)
                .map_err(|e| ClickHouseError::Unreachable {
                    url: self.shown.clone(),
                    message: e.to_string(),
                })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_string()
            .map_err(|e| ClickHouseError::Unreachable {
                url: self.shown.clone(),
                message: format!("reading the answer: {e}"),
            })?;
        if status != 200 {
            return Err(ClickHouseError::Server {
                url: self.shown.clone(),
                message: body.trim().chars().take(600).collect(),
            });
        }
        Ok(body)
    }

    /// Runs a `FORMAT JSONEachRow` query; its rows.
    fn rows(&self, sql: &str) -> Result<Vec<serde_json::Map<String, Json>>, ClickHouseError> {
        let body = self.query(&format!("{sql} FORMAT JSONEachRow"))?;
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match serde_json::from_str::<Json>(l) {
                Ok(Json::Object(m)) => Ok(m),
                Ok(other) => Err(self.decode(format!("a row is not an object: {other}"))),
                Err(e) => Err(self.decode(format!("a row is not JSON: {e}"))),
            })
            .collect()
    }

    /// `SELECT select source group` (`source`: `FROM ... WHERE ...`), refused past
    /// [`MAX_GROUPS`] groups.
    fn grouped_rows(
        &self,
        select: &str,
        source: &str,
        group: &str,
    ) -> Result<Vec<serde_json::Map<String, Json>>, StoreError> {
        let rows = self.rows(&format!(
            "SELECT {select} {source}{group} LIMIT {}",
            MAX_GROUPS + 1
        ))?;
        if rows.len() > MAX_GROUPS {
            return Err(StoreError::BadRequest(format!(
                "more than {MAX_GROUPS} groups: narrow the filter or group by fewer fields"
            )));
        }
        Ok(rows)
    }

    /// Answer rows of every field (`weir_Field`, as [`select_col`] names them) as flows, with
    /// addresses back in the store's form (IPv4 as IPv4).
    fn flows_of(
        &self,
        rows: Vec<serde_json::Map<String, Json>>,
    ) -> Result<Vec<weir_core::Flow>, StoreError> {
        let mut flows = Vec::with_capacity(rows.len());
        for r in rows {
            let mut obj = serde_json::Map::with_capacity(FIELDS.len());
            for f in FIELDS {
                let Some(v) = col(&r, f.name) else { continue };
                // Addresses back in the store's form (IPv4 as IPv4).
                let v = match (f.kind, v.as_str().and_then(|s| s.parse::<Ipv6Addr>().ok())) {
                    (FieldKind::Ip, Some(ip)) => {
                        Json::from(weir_core::schema::display_ip(&ip).to_string())
                    }
                    _ => v.clone(),
                };
                obj.insert(f.name.to_string(), v);
            }
            let flow: weir_core::Flow = serde_json::from_value(Json::Object(obj))
                .map_err(|e| self.decode(format!("a flow row: {e}")))?;
            flows.push(flow);
        }
        Ok(flows)
    }

    fn decode(&self, message: String) -> ClickHouseError {
        ClickHouseError::Decode {
            url: self.shown.clone(),
            message,
        }
    }

    /// Creates the database and tables when missing, adds the columns of fields new since
    /// (to `flows`), and rebuilds the ingest table and its views; records the version.
    pub fn migrate(&self) -> Result<Migration, ClickHouseError> {
        let db = &self.db;
        // A newer weir's schema is left as it is, before anything is made: this one would
        // drop the views it does not know of, or leave them writing where this one does not
        // read.
        let from = self.schema_version()?;
        let had_hourly = self.has_table("flows_1h_mv")?;
        for s in schema::tables(db) {
            self.query(&s)?;
        }
        // Version 4: drops in the per-minute sums (its rows from before hold none, so the
        // minutes are used only from the mark the rebuild below writes). Each column on its
        // own, and the rebuild decided by what the view writes, so a migration stopped
        // half-way is finished by the next.
        for c in ["DropBytes", "DropPackets"] {
            if self.column_count("flows_1m", Some(c))? == 0 {
                self.query(&format!(
                    "ALTER TABLE `{db}`.flows_1m ADD COLUMN {c} UInt64"
                ))?;
            }
        }
        let minute_drops = self.view_writes("flows_1m_mv", "DropPackets")?;
        let have: Vec<String> = self
            .rows(&format!(
                "SELECT name FROM system.columns WHERE database = {} AND table = 'flows'",
                sql::quote(db)
            ))?
            .iter()
            .filter_map(|r| r.get("name").and_then(Json::as_str).map(str::to_string))
            .collect();
        let mut added = Vec::new();
        for (name, ty) in schema::columns(false) {
            if !have.iter().any(|h| h == name) {
                self.query(&format!(
                    "ALTER TABLE `{db}`.flows ADD COLUMN `{name}` {ty}"
                ))?;
                added.push(name.to_string());
            }
        }
        let ingest_cols = self.column_count("flows_ingest", None)?;
        if ingest_cols as usize != schema::columns(true).len()
            || !added.is_empty()
            || !had_hourly
            || !minute_drops
            || self.has_table("flows_addr_mv")? != self.address_table
            || !self.has_table("flows_span_mv")?
        {
            for s in schema::ingest(db, self.address_table) {
                self.query(&s)?;
            }
            self.rollups_complete_from_now(false)?;
        }
        if !self.address_table {
            // After the views into it: the ingest table's went with the rebuild above, a
            // Kafka table's goes here (it writes only this table).
            self.query(&format!("DROP TABLE IF EXISTS `{db}`.flows_kafka_addr_mv"))?;
            self.query(&format!("DROP TABLE IF EXISTS `{db}`.flows_addr"))?;
        }
        if from != schema::VERSION {
            self.query(&format!(
                "INSERT INTO `{db}`.weir_schema VALUES ({}, {})",
                schema::VERSION,
                weir_core::query::now_ms()
            ))?;
        }
        Ok(Migration {
            from,
            to: schema::VERSION,
            added,
        })
    }

    /// Makes ClickHouse's Kafka engine read agents' flows from `k`'s topic (`flows_kafka` and
    /// its views), created again when missing, when its columns differ from the ingest
    /// table's (fields added since) or when it reads another topic; call after
    /// [`Self::migrate`]. Whether it (re)created them. The consumer group's offsets are kept
    /// by the brokers, so a new table resumes where the old one stopped.
    pub fn migrate_kafka(&self, k: &schema::KafkaSource) -> Result<bool, ClickHouseError> {
        let db = &self.db;
        let version = self.schema_version()?;
        if version != schema::VERSION {
            return Err(ClickHouseError::NotMigrated {
                db: db.clone(),
                version,
                known: schema::VERSION,
            });
        }
        if self.has_table("flows_kafka")? {
            let shown = self.query(&format!(
                "SHOW CREATE TABLE `{db}`.flows_kafka FORMAT TSVRaw"
            ))?;
            let engine = format!(
                "Kafka({}, {}, {}, 'JSONEachRow')",
                sql::quote(&k.brokers),
                sql::quote(&k.topic),
                sql::quote(&k.group)
            );
            let cols = self.column_count("flows_kafka", None)?;
            if shown.contains(&engine)
                && cols as usize == schema::columns(true).len()
                && self.has_table("flows_kafka_1h_mv")?
                && self.has_table("flows_kafka_addr_mv")? == self.address_table
                && self.has_table("flows_kafka_span_mv")?
                && self.view_writes("flows_kafka_1m_mv", "DropPackets")?
            {
                return Ok(false);
            }
        }
        for s in schema::kafka(db, k, self.address_table) {
            self.query(&s)?;
        }
        self.rollups_complete_from_now(true)?;
        Ok(true)
    }

    /// The schema version weir's database is at (0: none yet), or [`ClickHouseError::Newer`]
    /// when a newer weir migrated it.
    fn schema_version(&self) -> Result<u32, ClickHouseError> {
        if !self.has_table("weir_schema")? {
            return Ok(0);
        }
        let version = self.number(&format!(
            "SELECT max(version) AS n FROM `{}`.weir_schema",
            self.db
        ))?;
        if version > u64::from(schema::VERSION) {
            return Err(ClickHouseError::Newer {
                db: self.db.clone(),
                version: u32::try_from(version).unwrap_or(u32::MAX),
                known: schema::VERSION,
            });
        }
        // At most schema::VERSION, a u32.
        Ok(version as u32)
    }

    /// Records that `flows_1h` holds every flow only from the next hour on, and `flows_1m`,
    /// `flows_addr` and `flows_span` only from the minute after next (a minute's slack for
    /// agents' clocks), after their views were (re)made: an insert running meanwhile may
    /// have reached `flows` but not them. Nothing to record while `flows` is empty (a new
    /// schema), unless `kafka`: after a Kafka table's views were remade, ClickHouse's own
    /// consumer may be writing a block into `flows` while it is counted. The minutes' mark
    /// only while [`Self::minute_views_current`] (a Kafka table's view from before version
    /// 4 lasts until `weir server --kafka` makes it again): with no mark they are not read.
    fn rollups_complete_from_now(&self, kafka: bool) -> Result<(), ClickHouseError> {
        let db = &self.db;
        let any = kafka || self.number(&format!("SELECT count() AS n FROM `{db}`.flows"))? > 0;
        let now = weir_core::query::now_ms();
        let (hour, minute) = if any {
            ((now / HOUR + 1) * HOUR, (now / MINUTE + 2) * MINUTE)
        } else {
            (0, 0)
        };
        let minute = if self.minute_views_current()? {
            format!(", ('flows_1m', {minute})")
        } else {
            String::new()
        };
        let addresses = if any { (now / MINUTE + 2) * MINUTE } else { 0 };
        // The spans' mark only while every source of flows has its view into them (the
        // mark from before then stays, and the views' check keeps them unread).
        let spans = if self.span_views_current()? {
            format!(", ('flows_span', {addresses})")
        } else {
            String::new()
        };
        self.query(&format!(
            "INSERT INTO `{db}`.weir_rollups VALUES ('flows_1h', {hour}), \
             ('flows_addr', {addresses}){spans}{minute}"
        ))?;
        *self.marks.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// The latest a flow of `range` can end: the range's end plus the longest flow ending
    /// on or after the range's first day (`flows_span`), or the spans' mark if later (a
    /// flow ending before the mark may be missing from `flows_span`, but ends before it).
    /// None for a range open at the end, or when that is not known: `flows_span` not in
    /// use or not answering (the range then reads every later minute, as before it). One
    /// small query (a row a day once merged); asked each time, as a longer flow may have
    /// come in since.
    fn ends_by(&self, range: &TimeRange) -> Option<u64> {
        let mark = self.marks().spans;
        if range.to_ms == u64::MAX || mark == u64::MAX {
            return None;
        }
        let span = self
            .rows(&format!(
                "SELECT maxMerge(Span) AS n FROM `{}`.flows_span WHERE Day >= {}",
                self.db,
                range.from_ms / schema::DAY_MS
            ))
            .and_then(|rows| {
                // Exactly one row with a number: anything else bounds nothing (read as 0 it
                // would drop every flow ending after the range).
                match rows.as_slice() {
                    [row] => strict_u64(row.get("n")),
                    _ => None,
                }
                .ok_or_else(|| self.decode(format!("the longest flow: {rows:?}")))
            });
        match span {
            Ok(span) => range.to_ms.checked_add(span).map(|b| b.max(mark)),
            Err(e) => {
                tracing::warn!(error = %e, "the longest flow is not known: no end bound");
                None
            }
        }
    }

    /// [`sql::where_clause`] with the end bound [`Self::ends_by`] gives.
    fn where_sql(&self, filter: &Expr, range: &TimeRange) -> String {
        sql::where_clause(filter, range, self.ends_by(range))
    }

    /// Whether a view of weir's database exists and its definition names `column`.
    fn view_writes(&self, view: &str, column: &str) -> Result<bool, ClickHouseError> {
        Ok(self.has_table(view)?
            && self
                .query(&format!(
                    "SHOW CREATE TABLE `{}`.{view} FORMAT TSVRaw",
                    self.db
                ))?
                .contains(column))
    }

    /// Whether weir's database holds a table (or view) of this name.
    fn has_table(&self, name: &str) -> Result<bool, ClickHouseError> {
        Ok(self.number(&format!(
            "SELECT count() AS n FROM system.tables WHERE database = {} AND name = {}",
            sql::quote(&self.db),
            sql::quote(name)
        ))? > 0)
    }

    /// How many columns a table of weir's database has (0: no such table), or with
    /// `named`, whether it has that column (0 or 1).
    fn column_count(&self, table: &str, named: Option<&str>) -> Result<u64, ClickHouseError> {
        let name = named.map_or(String::new(), |c| format!(" AND name = {}", sql::quote(c)));
        self.number(&format!(
            "SELECT count() AS n FROM system.columns WHERE database = {} AND table = {}{name}",
            sql::quote(&self.db),
            sql::quote(table)
        ))
    }

    /// The `n` of a query answering one row (0 when it answers none).
    fn number(&self, sql: &str) -> Result<u64, ClickHouseError> {
        Ok(u64_of(self.rows(sql)?.first().and_then(|r| r.get("n"))))
    }

    /// From when `flows_1h`, `flows_1m`, `flows_addr` and `flows_span` hold every flow
    /// (`u64::MAX`: not usable, as before the schema has them); read again after a minute
    /// (another `weir server` may have migrated the schema since).
    fn marks(&self) -> rollups::Marks {
        let cached = *self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, v)) = cached
            && at.elapsed() < Duration::from_secs(60)
        {
            return v;
        }
        // Asked without holding the lock: a slow ClickHouse does not queue every query here.
        let Ok(rows) = self.rows(&format!(
            "SELECT name, max(from_ms) AS f FROM `{}`.weir_rollups GROUP BY name",
            self.db
        )) else {
            // Not there (yet): asked again next time.
            return rollups::Marks::NONE;
        };
        let mark = |name: &str| {
            rows.iter()
                .find(|r| r.get("name").and_then(Json::as_str) == Some(name))
                .map_or(u64::MAX, |r| match r.get("f") {
                    None => u64::MAX,
                    f => u64_of(f),
                })
        };
        let v = rollups::Marks {
            hour: mark("flows_1h"),
            minute: if self.minutes_pay() && self.minute_views_current().unwrap_or(false) {
                mark("flows_1m")
            } else {
                u64::MAX
            },
            addresses: if self.address_views_current().unwrap_or(false) {
                mark("flows_addr")
            } else {
                u64::MAX
            },
            spans: if self.span_views_current().unwrap_or(false) {
                mark("flows_span")
            } else {
                u64::MAX
            },
        };
        *self.marks.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), v));
        v
    }

    /// Whether every source of flows has its view into `flows_addr`: the ingest table's
    /// (a migration without the table drops it), and a Kafka table's where there is one (a
    /// Kafka table made before version 5, or left by a migration without the address table,
    /// fills `flows` but not `flows_addr` until `weir server --kafka` makes it again).
    fn address_views_current(&self) -> Result<bool, ClickHouseError> {
        self.views_current("flows_addr_mv", "flows_kafka_addr_mv")
    }

    /// Whether every source of flows has its view into `flows_span`: the ingest table's, and
    /// a Kafka table's where there is one (made before version 6, it fills `flows` but not
    /// `flows_span` until `weir server --kafka` makes it again).
    fn span_views_current(&self) -> Result<bool, ClickHouseError> {
        self.views_current("flows_span_mv", "flows_kafka_span_mv")
    }

    /// Whether the ingest table's view `ingest` exists, and the Kafka table's view `kafka`
    /// too where there is a Kafka table.
    fn views_current(&self, ingest: &str, kafka: &str) -> Result<bool, ClickHouseError> {
        Ok(
            self.has_table(ingest)?
                && (!self.has_table("flows_kafka")? || self.has_table(kafka)?),
        )
    }

    /// Whether every view into `flows_1m` writes drops (a Kafka table's view made by a
    /// server from before version 4 does not): checked with the marks, so such a view
    /// made after the minutes' mark keeps them unread.
    fn minute_views_current(&self) -> Result<bool, ClickHouseError> {
        Ok(self.view_writes("flows_1m_mv", "DropPackets")?
            && (!self.has_table("flows_kafka_1m_mv")?
                || self.view_writes("flows_kafka_1m_mv", "DropPackets")?))
    }

    /// Whether reading minutes from `flows_1m` is cheaper than reading their flows: not when
    /// it holds more than half as many rows as `flows` (conversations that end less than
    /// about twice a minute each: over 100 M such flows, a day's five-minute series took
    /// 3.1 s through it against 2.8 s from `flows` alone), unless `flows` is small (under a
    /// million rows, where either is quick). Counted from the active parts, with the marks.
    fn minutes_pay(&self) -> bool {
        let Ok(rows) = self.rows(&format!(
            "SELECT table, sum(rows) AS n FROM system.parts WHERE database = {} AND active \
             AND table IN ('flows', 'flows_1m') GROUP BY table",
            sql::quote(&self.db)
        )) else {
            return false;
        };
        let count = |t: &str| {
            u64_of(
                rows.iter()
                    .find(|r| r.get("table").and_then(Json::as_str) == Some(t))
                    .and_then(|r| r.get("n")),
            )
        };
        let (flows, minutes) = (count("flows"), count("flows_1m"));
        flows < 1_000_000 || minutes.saturating_mul(2) <= flows
    }

    /// What an aggregation over `filter` by `group_by` reads, and the column of each row's
    /// end time to bucket by: `FROM flows WHERE ...` with [`SUMS`]; or, when the filter and
    /// the group-by name only the rollups' keys, the whole hours and minutes
    /// [`rollups::plan`] gives from `flows_1h` and `flows_1m` and the flows ending anywhere
    /// else from `flows`, with [`PART_SUMS`] (exact: see [`rollups`]).
    fn source(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        buckets: Option<Buckets>,
    ) -> (String, &'static str, &'static str) {
        let db = &self.db;
        let w = self.where_sql(filter, range);
        let key = |name: &str| schema::MINUTE_KEYS.contains(&name);
        let plan =
            if group_by.iter().all(|f| key(f.name)) && filter_fields(filter).into_iter().all(key) {
                rollups::plan(range, buckets, self.marks())
            } else {
                rollups::Plan::default()
            };
        if plan.is_empty() {
            return (
                format!("FROM `{db}`.flows WHERE {w}"),
                SUMS,
                "TimeFlowEndMs",
            );
        }
        let keys: String = group_by.iter().map(|f| format!("`{}`, ", f.name)).collect();
        let time = |c: &str| match buckets {
            Some(_) => format!("{c} AS weir_t, "),
            None => String::new(),
        };
        // The flows ending where no rollup answers.
        let rest: String = [&plan.hours, &plan.minutes]
            .into_iter()
            .flatten()
            .map(|t| format!(" AND {}", t.sql_not("TimeFlowEndMs")))
            .collect();
        let mut parts = vec![format!(
            "SELECT {keys}{}Bytes * greatest(Sampling, 1) AS weir_b, \
             Packets * greatest(Sampling, 1) AS weir_p, toUInt64(1) AS weir_f, \
             PktDropBytes * greatest(Sampling, 1) AS weir_db, \
             PktDropPackets * greatest(Sampling, 1) AS weir_dp \
             FROM `{db}`.flows WHERE {w}{rest}",
            time("TimeFlowEndMs"),
        )];
        // A minute inside an hour the hours answer for is read there.
        for (table, column, tier, outside) in [
            ("flows_1h", "Hour", &plan.hours, None),
            ("flows_1m", "Minute", &plan.minutes, plan.hours.as_ref()),
        ] {
            let Some(tier) = tier else { continue };
            let outside_hours =
                outside.map_or(String::new(), |h| format!(" AND {}", h.sql_not(column)));
            parts.push(format!(
                "SELECT {keys}{}Bytes AS weir_b, Packets AS weir_p, Flows AS weir_f, \
                 DropBytes AS weir_db, DropPackets AS weir_dp FROM `{db}`.{table} \
                 WHERE {}{outside_hours} AND {}",
                time(column),
                tier.sql(column),
                sql::expr(filter)
            ));
        }
        (
            format!("FROM ({})", parts.join(" UNION ALL ")),
            PART_SUMS,
            "weir_t",
        )
    }

    /// A listing counted and bounded in `flows_addr` by `lookup`, or (None) in `flows`.
    fn list_in(
        &self,
        req: &ListRequest,
        lookup: Option<addresses::Lookup>,
    ) -> Result<ListResult, StoreError> {
        let w = self.where_sql(&req.filter, &req.range);
        let db = &self.db;
        let sort = req.sort.field.name;
        let (table, cw) = match &lookup {
            Some(l) => ("flows_addr", format!("{} AND {w}", l.sql())),
            None => ("flows", w.clone()),
        };
        let total = self.number(&format!(
            "SELECT count() AS n FROM `{db}`.{table} WHERE {cw}"
        ))?;
        if total <= req.offset as u64 {
            return Ok(ListResult {
                total,
                flows: Vec::new(),
            });
        }
        let cols: Vec<String> = FIELDS.iter().map(select_col).collect();
        let (order, cut, op) = if req.sort.descending {
            ("DESC", "min", ">=")
        } else {
            ("ASC", "max", "<=")
        };
        let n = req.offset.saturating_add(req.limit);
        // Every column is read only where the page can be: the sort value of the page's last
        // row is found first (one column), and the filter and that bound are a PREWHERE, so
        // a match spread over the whole range does not read all columns of all its granules.
        let bound = format!(
            "(SELECT {cut}(weir_s) FROM (SELECT `{sort}` AS weir_s FROM `{db}`.{table} WHERE {cw} \
             ORDER BY weir_s {order} LIMIT {n}))"
        );
        let (bound, narrow) = match (lookup.is_some(), sort, req.sort.descending) {
            // The page's rows by `flows`' whole sort key, as `flows_addr` lists them: only
            // the granules holding them are read.
            (true, _, _) => (
                bound,
                format!(
                    " AND ({key}) IN (SELECT {key} FROM `{db}`.flows_addr WHERE {cw} \
                     ORDER BY `{sort}` {order} LIMIT {n})",
                    key = schema::FLOWS_KEY
                ),
            ),
            // A bound on the end time is also put on the end's minute, the first column of
            // that key, so only the granules from (or up to) that minute are read (not on
            // the start's: a record may end before it starts).
            (false, "TimeFlowEndMs", _) => {
                let b = self.number(&format!("SELECT {bound} AS n"))?;
                (
                    b.to_string(),
                    format!(" AND intDiv(TimeFlowEndMs, {MINUTE}) {op} {}", b / MINUTE),
                )
            }
            _ => (bound, String::new()),
        };
        let rows = self.rows(&format!(
            "SELECT {} FROM `{db}`.flows PREWHERE ({w}) AND `{sort}` {op} {bound}{narrow} \
             ORDER BY `{sort}` {order} LIMIT {}, {}",
            cols.join(", "),
            req.offset,
            req.limit
        ))?;
        let flows = self.flows_of(rows)?;
        Ok(ListResult { total, flows })
    }

    /// Flows per node (for status and the cluster view).
    pub fn nodes(&self) -> Result<Vec<(String, u64)>, ClickHouseError> {
        Ok(self
            .rows(&format!(
                "SELECT Node, count() AS n FROM `{}`.flows GROUP BY Node ORDER BY Node",
                self.db
            ))?
            .iter()
            .map(|r| {
                (
                    r.get("Node")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_string(),
                    r.get("n").and_then(Json::as_u64).unwrap_or(0),
                )
            })
            .collect())
    }
}

/// `s` for a URL's query string.
fn url_encode(s: &str) -> String {
    let mut enc = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    enc
}

/// A column as selected, under its own name prefixed `weir_` (ClickHouse's aliases are seen
/// by WHERE, so an alias named like its column would shadow it there): addresses as text.
fn select_col(f: &FieldDef) -> String {
    match f.kind {
        FieldKind::Ip => format!("IPv6NumToString(`{0}`) AS `weir_{0}`", f.name),
        _ => format!("`{0}` AS `weir_{0}`", f.name),
    }
}

/// The answer columns a group-by names (`weir_Field`), in order.
fn group_names(group_by: &[&'static FieldDef]) -> Vec<String> {
    group_by
        .iter()
        .map(|f| format!("`weir_{}`", f.name))
        .collect()
}

/// A group's key from its answer row, in `group_by`'s order.
fn key_of(r: &serde_json::Map<String, Json>, group_by: &[&'static FieldDef]) -> Vec<Value> {
    group_by
        .iter()
        .map(|f| value_of(f, col(r, f.name)))
        .collect()
}

/// A column of an answer row, by field name.
fn col<'a>(r: &'a serde_json::Map<String, Json>, name: &str) -> Option<&'a Json> {
    r.get(&format!("weir_{name}"))
}

/// A `UInt64` of an answer row (a JSON number: [`ClickHouse::query`] asks for 64-bit numbers
/// unquoted; a string of digits taken too), None for anything else.
fn strict_u64(v: Option<&Json>) -> Option<u64> {
    match v {
        Some(Json::Number(n)) => n.as_u64(),
        Some(Json::String(s)) => s.parse().ok(),
        _ => None,
    }
}

fn u64_of(v: Option<&Json>) -> u64 {
    match v {
        Some(Json::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Json::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// A group-by value from its column in an answer row.
fn value_of(f: &FieldDef, v: Option<&Json>) -> Value {
    match f.kind {
        FieldKind::U64 => Value::U64(u64_of(v)),
        FieldKind::Ip => Value::Ip(
            v.and_then(Json::as_str)
                .and_then(|s| s.parse::<Ipv6Addr>().ok())
                .unwrap_or(Ipv6Addr::UNSPECIFIED),
        ),
        FieldKind::Str => Value::Str(v.and_then(Json::as_str).unwrap_or("").to_string()),
    }
}

/// The fields a filter names.
fn filter_fields(e: &Expr) -> Vec<&'static str> {
    match e {
        Expr::All => Vec::new(),
        Expr::And(v) | Expr::Or(v) => v.iter().flat_map(filter_fields).collect(),
        Expr::Not(e) => filter_fields(e),
        Expr::Cmp(c) => vec![c.field.name],
    }
}

/// [`SUMS`] over [`ClickHouse::source`]'s union of rollup sums and flows.
const PART_SUMS: &str = "sum(weir_b) AS weir_bytes, sum(weir_p) AS weir_packets, \
     sum(weir_f) AS weir_flows, sum(weir_db) AS weir_drop_bytes, sum(weir_dp) AS weir_drop_packets";

/// Sums scaled back by sampling, as the store's aggregation does.
const SUMS: &str = "sum(Bytes * greatest(Sampling, 1)) AS weir_bytes, \
     sum(Packets * greatest(Sampling, 1)) AS weir_packets, count() AS weir_flows, \
     sum(PktDropBytes * greatest(Sampling, 1)) AS weir_drop_bytes, \
     sum(PktDropPackets * greatest(Sampling, 1)) AS weir_drop_packets";

impl FlowQuery for ClickHouse {
    fn list(&self, req: &ListRequest) -> Result<ListResult, StoreError> {
        // Counted and bounded among the address's rows of `flows_addr` when the filter
        // requires one and the table holds every flow of the range; else in `flows`.
        let lookup = addresses::lookup(&req.filter, req.sort.field.name)
            .filter(|_| req.range.from_ms >= self.marks().addresses);
        if lookup.is_some() {
            match self.list_in(req, lookup) {
                Ok(r) => return Ok(r),
                // Dropped since the marks were read (another server migrated without
                // it): read again, and `flows` answers.
                Err(e) => {
                    tracing::warn!(error = %e, "listing through flows_addr failed: from flows");
                    *self.marks.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
            }
        }
        self.list_in(req, None)
    }

    fn aggregate(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        buckets: Option<Buckets>,
    ) -> Result<HashMap<GroupKey, Totals>, StoreError> {
        weir_core::store::check_group_by(group_by)?;
        let (source, sums, time) = self.source(filter, range, group_by, buckets);
        let mut keys: Vec<String> = group_by.iter().map(|f| select_col(f)).collect();
        let mut names = group_names(group_by);
        if let Some(b) = buckets {
            let (o, s) = (b.origin_ms, b.step_ms.max(1));
            keys.push(format!(
                "{o} + intDiv(if({time} > {o}, {time} - {o}, 0), {s}) * {s} AS weir_bucket"
            ));
            names.push("weir_bucket".into());
        }
        let group = if names.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", names.join(", "))
        };
        let select = if keys.is_empty() {
            sums.to_string()
        } else {
            format!("{}, {sums}", keys.join(", "))
        };
        let rows = self.grouped_rows(&select, &source, &group)?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let t = Totals {
                bytes: u64_of(r.get("weir_bytes")),
                packets: u64_of(r.get("weir_packets")),
                flows: u64_of(r.get("weir_flows")),
                drop_bytes: u64_of(r.get("weir_drop_bytes")),
                drop_packets: u64_of(r.get("weir_drop_packets")),
            };
            // An empty table still answers one row of zeros without GROUP BY.
            if t.flows == 0 {
                continue;
            }
            let key = key_of(&r, group_by);
            let bucket = buckets.map(|_| u64_of(r.get("weir_bucket")));
            out.entry((key, bucket))
                .or_insert_with(Totals::default)
                .add(&t);
        }
        Ok(out)
    }

    /// `groupArray` of the field's non-zero values per group; the quantiles are computed by the
    /// caller as over a local store, so both answer the same.
    fn group_values(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        value: &'static FieldDef,
    ) -> Result<GroupValues, StoreError> {
        weir_core::store::check_group_by(group_by)?;
        weir_core::store::check_number_field(value)?;
        let w = self.where_sql(filter, range);
        let v = format!("`{}`", value.name);
        let mut select: Vec<String> = group_by.iter().map(|f| select_col(f)).collect();
        select.push("groupArray(".to_string() + &v + ") AS weir_values");
        let group = if group_by.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", group_names(group_by).join(", "))
        };
        // Only flows with a value: groups without any are not made at all.
        let rows = self.grouped_rows(
            &select.join(", "),
            &format!("FROM `{}`.flows WHERE ({w}) AND {v} != 0", self.db),
            &group,
        )?;
        let mut out = GroupValues::with_capacity(rows.len());
        for r in rows {
            let values: Vec<u64> = match r.get("weir_values") {
                Some(Json::Array(a)) => a.iter().map(|x| u64_of(Some(x))).collect(),
                _ => return Err(self.decode("weir_values is not an array".into()).into()),
            };
            if values.is_empty() {
                continue;
            }
            let key = key_of(&r, group_by);
            out.entry(key).or_default().extend(values);
        }
        Ok(out)
    }

    /// One query: groups by the raw columns, ranked by ClickHouse (`ORDER BY ... LIMIT k`,
    /// ties by the raw values, which order as the store orders them), the sums of all from
    /// `WITH TOTALS` and the number of groups from `rows_before_limit_at_least`; only `k`
    /// rows cross the network, however many groups there are.
    fn top(
        &self,
        filter: &Expr,
        range: &TimeRange,
        group_by: &[&'static FieldDef],
        metric: Metric,
        k: usize,
    ) -> Result<Ranked, StoreError> {
        weir_core::store::check_group_by(group_by)?;
        if group_by.is_empty() || k == 0 {
            let groups = self.aggregate(filter, range, group_by, None)?;
            return Ok(weir_core::aggregate::rank(groups, metric, k));
        }
        let (source, sums, _) = self.source(filter, range, group_by, None);
        let keys: Vec<String> = group_by.iter().map(|f| select_col(f)).collect();
        let raw: Vec<String> = group_by.iter().map(|f| format!("`{}`", f.name)).collect();
        let by = match metric {
            Metric::Bytes => "weir_bytes",
            Metric::Packets => "weir_packets",
            Metric::Flows => "weir_flows",
            Metric::DropBytes => "weir_drop_bytes",
            Metric::DropPackets => "weir_drop_packets",
        };
        let body = self.query(&format!(
            "SELECT {}, {sums} {source} GROUP BY {} WITH TOTALS \
             ORDER BY {by} DESC, {} LIMIT {k} FORMAT JSON",
            keys.join(", "),
            raw.join(", "),
            raw.join(", "),
        ))?;
        let v: Json = serde_json::from_str(&body)
            .map_err(|e| self.decode(format!("a top-{k} answer is not JSON: {e}")))?;
        let totals = |r: &Json| Totals {
            bytes: u64_of(r.get("weir_bytes")),
            packets: u64_of(r.get("weir_packets")),
            flows: u64_of(r.get("weir_flows")),
            drop_bytes: u64_of(r.get("weir_drop_bytes")),
            drop_packets: u64_of(r.get("weir_drop_packets")),
        };
        let mut top = Vec::new();
        let mut shown = Totals::default();
        for r in v["data"].as_array().into_iter().flatten() {
            let Json::Object(m) = r else {
                return Err(self.decode(format!("a row is not an object: {r}")).into());
            };
            let t = totals(r);
            shown.add(&t);
            let key = key_of(m, group_by);
            top.push((key, t));
        }
        // No matching flow: no data, and totals that count nothing.
        let total = if top.is_empty() {
            Totals::default()
        } else {
            totals(&v["totals"])
        };
        let others = total.saturating_sub(&shown);
        let group_count = match v.get("rows_before_limit_at_least") {
            Some(n) => u64_of(Some(n)) as usize,
            None => top.len(),
        };
        Ok(Ranked {
            top,
            others,
            total,
            group_count,
        })
    }

    /// Cursors are positions in the order of end time, node, addresses, ports, protocol,
    /// start time and then every other field (so rows that differ in any field never swap
    /// places between pages): a page resumes where the last ended while no flow arrives
    /// late into the range.
    fn select(
        &self,
        filter: &Expr,
        range: &TimeRange,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, weir_core::Flow)>, StoreError> {
        let cols: Vec<String> = FIELDS.iter().map(select_col).collect();
        const FIRST: &[&str] = schema::ADDRESS_COLUMNS;
        let order: Vec<String> = FIRST
            .iter()
            .copied()
            .chain(FIELDS.iter().map(|f| f.name).filter(|n| !FIRST.contains(n)))
            .map(|n| format!("`{n}`"))
            .collect();
        let rows = self.rows(&format!(
            "SELECT {} FROM `{}`.flows WHERE {} ORDER BY {} LIMIT {after_seq}, {limit}",
            cols.join(", "),
            self.db,
            self.where_sql(filter, range),
            order.join(", ")
        ))?;
        Ok(self
            .flows_of(rows)?
            .into_iter()
            .zip(1u64..)
            .map(|(f, i)| (after_seq.saturating_add(i), f))
            .collect())
    }

    fn describe(&self) -> String {
        format!("clickhouse {}{}", self.shown, self.db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_names_are_checked() {
        let c = ClickHouse::new("http://127.0.0.1:8123", "weir").expect("ok");
        assert_eq!(
            c.insert_url(),
            "http://127.0.0.1:8123/?query=INSERT%20INTO%20%60weir%60.flows_ingest&input_format_skip_unknown_fields=1"
        );
        assert_eq!(c.describe(), "clickhouse http://127.0.0.1:8123/weir");
        for (url, db, says) in [
            ("127.0.0.1:8123", "weir", "write http://HOST:PORT"),
            ("tcp://h:9000", "weir", "http:// or https://"),
            ("http://h:8123/x", "weir", "without a path"),
            ("http://h:8123", "we ir", "database name"),
            ("http://h:8123", "", "database name"),
        ] {
            let e = ClickHouse::new(url, db).err().expect(url).to_string();
            assert!(e.contains(says), "{url} {db}: {e}");
        }
    }
}
