//! Cluster queries at scale: a day of flows from fifty nodes in ClickHouse (100 M by default),
//! asked through weir's flow-query port ([`FlowQuery`], what `weir server` answers the UI and
//! plugins with). Prints a table; see docs/PERFORMANCE.md ("Cluster queries at 100 M flows").
//!
//! The flows are made inside ClickHouse (`INSERT INTO flows_ingest ... SELECT ... FROM
//! numbers(...)`, two million a statement, with progress on stderr), so they go through the
//! same ingest table and views as agents' inserts: 50 nodes, 20 000 sources in 20 namespaces,
//! each talking to 4 of 2 000 destinations on the destination's one port, TCP and UDP,
//! spread evenly over one day. Each query's time is the median of five runs, against a
//! baseline in the same run: `count()` of the day's flows through the same HTTP client.
//!
//! `WEIR_BENCH_ROWS` (default 100 000 000) sets the size, `WEIR_BENCH_CH_DIR` where
//! ClickHouse keeps its data (default the system's temporary directory; ~6 GB at 100 M):
//! `cargo bench -p weir-clickhouse --bench cluster_scale`.

use std::time::{Duration, Instant};
use weir_clickhouse::ClickHouse;
use weir_clickhouse::local::LocalServer;
use weir_clickhouse::schema::DAY_MS;
use weir_core::flowquery::FlowQuery;
use weir_core::query::{Metric, SortBy, TimeRange, parse, parse_group_by};
use weir_core::store::ListRequest;

/// The day the flows cover (UTC midnight).
const DAY0: u64 = 1_800_000_000_000 / DAY_MS * DAY_MS;
/// Flows a statement: two million take 15-25 s here, well inside the client's 60 s timeout.
const CHUNK: u64 = 2_000_000;
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` [`RUNS`] times after one warm-up; the median in ms and the last answer.
fn time<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut last = f();
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        last = f();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (median(times), last)
}

/// The statement that makes flows `start..start + n`: every column an agent fills for such a
/// flow, computed from the flow's number.
fn generate(db: &str, start: u64, n: u64, total: u64) -> String {
    format!(
        "INSERT INTO `{db}`.flows_ingest (TimeFlowStartMs, TimeFlowEndMs, SrcAddr, DstAddr, \
         SrcPort, DstPort, Proto, Bytes, Packets, Node, Interface, SrcK8S_Namespace, \
         DstK8S_Namespace) \
         SELECT e - h % 30000, e, \
           concat('::ffff:', IPv4NumToString(toUInt32(167772160 + s))), \
           concat('::ffff:', IPv4NumToString(toUInt32(184549376 + d))), \
           toUInt64(32768 + h % 28000), toUInt64(1024 + d % 40), \
           if(d % 5 = 0, 17, 6), 100 + (h % 20000), 1 + (h % 20000) / 1200, \
           concat('node-', toString(s % 50)), 'eth0', \
           concat('ns-', toString(s % 20)), concat('ns-', toString(d % 20)) \
         FROM (SELECT n, h, s, (s * 7 + (h % 4) * 131) % 2000 AS d, \
                 {DAY0} + intDiv(n * {DAY_MS}, {total}) AS e \
               FROM (SELECT number + {start} AS n, intHash64(number + {start}) AS h, \
                       intHash64(h) % 20000 AS s \
                     FROM numbers({n})))"
    )
}

fn number(ch: &ClickHouse, sql: &str) -> u64 {
    ch.query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn main() {
    let total: u64 = std::env::var("WEIR_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000);
    let tmp = match std::env::var_os("WEIR_BENCH_CH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("tempdir");
    let server = LocalServer::start(&tmp.path().join("clickhouse")).expect("clickhouse-server");
    let ch = ClickHouse::new(&server.url(), "weir").expect("clickhouse");
    ch.migrate().expect("migrate");
    let version = ch.query("SELECT version()").expect("version");
    eprintln!(
        "ClickHouse {}: making {total} flows in {}",
        version.trim(),
        tmp.path().display()
    );

    // What flows_addr costs at ingest: the same flows (one statement's worth) made into a
    // schema with it and into one without, alternately, twice each.
    let mut ingest_cost = Vec::new();
    for round in 0..4 {
        let with = round % 2 == 0;
        let db = if with { "weir_with" } else { "weir_without" };
        let c = ClickHouse::new(&server.url(), db)
            .expect("clickhouse")
            .address_table(with);
        c.migrate().expect("migrate");
        let n = CHUNK.min(total);
        let t = Instant::now();
        c.query(&generate(db, 0, n, total)).expect("generate");
        let rate = n as f64 / t.elapsed().as_secs_f64();
        eprintln!(
            "  ingest {} flows_addr: {rate:.0} flows/s",
            if with { "with" } else { "without" }
        );
        ingest_cost.push((with, rate));
        c.query(&format!("DROP DATABASE `{db}`")).expect("drop");
    }
    let t = Instant::now();
    let mut start = 0;
    while start < total {
        let n = CHUNK.min(total - start);
        ch.query(&generate("weir", start, n, total))
            .expect("generate");
        start += n;
        eprintln!(
            "  {start} of {total} flows ({:.0} s, {:.0} flows/s)",
            t.elapsed().as_secs_f64(),
            start as f64 / t.elapsed().as_secs_f64()
        );
    }
    let load = t.elapsed().as_secs_f64();
    // Queries start once ClickHouse's merges of the inserts have settled (up to 10 minutes).
    let t = Instant::now();
    while number(&ch, "SELECT count() FROM system.merges") > 0
        && t.elapsed() < Duration::from_secs(600)
    {
        std::thread::sleep(Duration::from_secs(2));
    }
    let settle = t.elapsed().as_secs_f64();
    let rows = number(&ch, "SELECT count() FROM weir.flows");
    assert_eq!(rows, total, "every flow made");
    let minute_rows = number(&ch, "SELECT count() FROM weir.flows_1m");
    let hour_rows = number(&ch, "SELECT count() FROM weir.flows_1h");
    let addr_rows = number(&ch, "SELECT count() FROM weir.flows_addr");
    let addr_bytes = number(
        &ch,
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'weir' AND table = 'flows_addr' AND active",
    );
    let parts = number(
        &ch,
        "SELECT count() FROM system.parts WHERE database = 'weir' AND table = 'flows' AND active",
    );
    let bytes = number(
        &ch,
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'weir' AND table = 'flows' AND active",
    );

    let day = TimeRange {
        from_ms: DAY0,
        to_ms: DAY0 + DAY_MS,
    };
    let hour = TimeRange {
        from_ms: DAY0 + 12 * 3_600_000,
        to_ms: DAY0 + 13 * 3_600_000,
    };
    let mut rows_out: Vec<(String, f64, &str)> = Vec::new();
    let (base, counted) = time(|| {
        number(
            &ch,
            &format!(
                "SELECT count() FROM weir.flows WHERE TimeFlowStartMs <= {} AND TimeFlowEndMs >= {}",
                day.to_ms, day.from_ms
            ),
        )
    });
    assert_eq!(counted, total);
    rows_out.push((
        "baseline: count() of the day's flows (one column scanned)".into(),
        base,
        "",
    ));
    let sort = SortBy::parse("-TimeFlowEndMs").expect("sort");
    // Each listing filtered by an address twice: as weir asks it (counted and bounded in
    // flows_addr), and from `flows` alone (`and Bytes>=0`: flows_addr has no Bytes), which
    // must answer the same.
    let mut list = |name: &str, filter: &str, range: TimeRange| {
        let req = |filter: &str| ListRequest {
            filter: parse(filter).expect("filter"),
            range,
            sort,
            limit: 100,
            offset: 0,
        };
        let (ms, got) = time(|| ch.list(&req(filter)).expect("list"));
        assert!(got.total > 0 && !got.flows.is_empty(), "{name}: matches");
        rows_out.push((
            format!("{name}: 100 newest and the count ({} match)", got.total),
            ms,
            "<= 200 ms",
        ));
        let ends = |l: &weir_core::store::ListResult| {
            l.flows
                .iter()
                .map(|f| f.time_flow_end_ms)
                .collect::<Vec<_>>()
        };
        if filter.contains("Addr=") {
            let alone = format!("{filter} and Bytes>=0");
            let (flows_ms, before) = time(|| ch.list(&req(&alone)).expect("list"));
            assert_eq!(
                (got.total, ends(&got)),
                (before.total, ends(&before)),
                "{name}: flows_addr answers as the flows"
            );
            rows_out.push((
                format!("{name}, from the flows table alone (before)"),
                flows_ms,
                "",
            ));
        } else {
            // The same without the end bound: a stand-in Kafka table without its view into
            // flows_span keeps it unread (a fresh client reads the marks again).
            ch.query("CREATE TABLE weir.flows_kafka (x UInt8) ENGINE = Memory")
                .expect("kafka stand-in");
            let unbounded = ClickHouse::new(&server.url(), "weir").expect("clickhouse");
            let (ms, before) = time(|| unbounded.list(&req(filter)).expect("list"));
            ch.query("DROP TABLE weir.flows_kafka").expect("drop");
            assert_eq!(
                (got.total, ends(&got)),
                (before.total, ends(&before)),
                "{name}: the end bound answers as without it"
            );
            rows_out.push((format!("{name}, without the end bound (before)"), ms, ""));
        }
    };
    list("selective: one node, one hour", "Node=node-7", hour);
    list(
        "selective: one source and port over the day",
        "SrcAddr=10.0.7.42 and DstPort=1024-1063",
        day,
    );
    list(
        "selective: one destination address over the day",
        "DstAddr=11.0.3.14",
        day,
    );
    // Each top-N twice: as weir asks it (whole hours from flows_1h), and from `flows` alone
    // (`Bytes>=0` matches every flow but is not a key of the hourly sums), which must answer
    // the same.
    let mut top = |name: &str, group_by: &str, metric: Metric| {
        let g = parse_group_by(group_by).expect("group_by");
        let (ms, got) = time(|| {
            ch.top(&weir_core::query::Expr::All, &day, &g, metric, 10)
                .expect("top")
        });
        let every = parse("Bytes>=0").expect("filter");
        let (flows_ms, alone) = time(|| ch.top(&every, &day, &g, metric, 10).expect("top"));
        assert_eq!(got, alone, "{name}: the hourly sums answer as the flows");
        assert_eq!(got.total.flows, total, "{name}: every flow counted");
        assert_eq!(got.top.len(), 10, "{name}");
        rows_out.push((
            format!("{name} ({} groups)", got.group_count),
            ms,
            "<= 1000 ms",
        ));
        rows_out.push((
            format!("{name}, from the flows table alone (before)"),
            flows_ms,
            "",
        ));
    };
    top("top-10 over the day: nodes by bytes", "Node", Metric::Bytes);
    top(
        "top-10 over the day: destination ports by bytes",
        "DstPort",
        Metric::Bytes,
    );
    top(
        "top-10 over the day: talkers (SrcAddr,DstAddr) by bytes",
        "SrcAddr,DstAddr",
        Metric::Bytes,
    );

    // Time series of bytes per node over the day, each twice as above: hourly buckets on
    // whole hours (from flows_1h), five-minute buckets from an origin off the minute (whole
    // minutes from flows_1m, the minutes a boundary cuts from the flows).
    let mut series = |name: &str, origin_ms: u64, step_ms: u64| {
        let g = parse_group_by("Node").expect("group_by");
        let b = Some(weir_core::store::Buckets { origin_ms, step_ms });
        let range = TimeRange {
            from_ms: origin_ms,
            to_ms: day.to_ms,
        };
        let (ms, got) = time(|| {
            ch.aggregate(&weir_core::query::Expr::All, &range, &g, b)
                .expect("series")
        });
        let every = parse("Bytes>=0").expect("filter");
        let (flows_ms, alone) = time(|| ch.aggregate(&every, &range, &g, b).expect("series"));
        assert_eq!(got, alone, "{name}: the rollups answer as the flows");
        rows_out.push((format!("{name} ({} points)", got.len()), ms, ""));
        rows_out.push((
            format!("{name}, from the flows table alone (before)"),
            flows_ms,
            "",
        ));
    };
    series(
        "time series over the day: bytes per node, hourly",
        DAY0,
        3_600_000,
    );
    series(
        "time series over the day: bytes per node, every 5 minutes from an origin off the minute",
        DAY0 + 17_345,
        300_000,
    );

    println!(
        "### Cluster queries over {total} flows (ClickHouse {}, 2 cores)\n",
        version.trim()
    );
    println!(
        "Made in {load:.0} s ({:.0} flows/s through flows_ingest and its views), merges settled in {settle:.0} s; \
         {parts} parts, {:.1} bytes a flow on disk; flows_1m holds {minute_rows} rows, flows_1h {hour_rows}; \
         flows_addr {addr_rows} rows, {:.1} bytes a flow.\n",
        total as f64 / load,
        bytes as f64 / total as f64,
        addr_bytes as f64 / total as f64
    );
    let columns = ch
        .query(
            "SELECT name, data_compressed_bytes FROM system.columns WHERE database = 'weir' \
             AND table = 'flows_addr' AND data_compressed_bytes > 0 FORMAT TSV",
        )
        .expect("columns");
    let columns: Vec<String> = columns
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, b)| format!("{n} {:.1}", b.parse::<f64>().unwrap_or(0.0) / total as f64))
        .collect();
    println!(
        "flows_addr's columns, compressed bytes a flow: {}.\n",
        columns.join(", ")
    );
    let rates = |w: bool| -> Vec<f64> {
        ingest_cost
            .iter()
            .filter(|(with, _)| *with == w)
            .map(|(_, r)| *r)
            .collect()
    };
    let shown = |w: bool| {
        rates(w)
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mean = |w: bool| {
        let v = rates(w);
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    println!(
        "Ingest of {} flows through flows_ingest, alternated: with flows_addr {} flows/s, without {} flows/s \
         (with / without: {:.2}).\n",
        CHUNK.min(total),
        shown(true),
        shown(false),
        mean(true) / mean(false)
    );
    println!(
        "| query (through weir's FlowQuery) | median of {RUNS} | ratio to baseline | target |"
    );
    println!("|---|---|---|---|");
    for (name, ms, target) in &rows_out {
        println!("| {name} | {ms:.0} ms | {:.2} | {target} |", ms / base);
    }
}
