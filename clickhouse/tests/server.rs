//! Against a real clickhouse-server (Debian's 18.16; CI installs it: scripts/deps.sh): the
//! schema is created and migrated, flows inserted the way agents insert them come back from
//! the flow-query port with the store's answers (listings, aggregates, top-N, time buckets,
//! values per group for quantiles; checked against a real local store fed the same flows),
//! summarizer windows published by agents are gathered back (the latest copy of each), and a
//! server that is down is an error naming it.

use weir_clickhouse::ClickHouse;
use weir_clickhouse::local::LocalServer;
use weir_core::flowquery::FlowQuery;
use weir_core::query::{Metric, SortBy, TimeRange, parse};
use weir_core::store::ListRequest;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn flows(node: &str, n: u64, base: u64) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            let v6 = i % 5 == 0;
            let dst_port = [53, 80, 443][(i % 3) as usize];
            serde_json::json!({
                "Node": node,
                "SrcAddr": if v6 { format!("2001:db8:9::{:x}", i + 1) } else { format!("::ffff:10.{}.0.{}", i % 3, 1 + i % 200) },
                "DstAddr": if v6 { "2001:db8:9::ffff".to_string() } else { "::ffff:192.168.1.1".to_string() },
                "SrcPort": 10000 + i, "DstPort": dst_port, "Proto": if i % 3 == 0 { 17 } else { 6 },
                "Bytes": 100 + i * 7, "Packets": 1 + i % 9, "Sampling": if i % 4 == 0 { 10 } else { 0 },
                "Flags": if i % 2 == 0 { 0x12 } else { 0x02 },
                "PktDropBytes": i % 11, "PktDropPackets": (i % 11).min(1),
                "SrcK8S_Namespace": if i % 2 == 0 { "shop" } else { "it's" },
                "TimeFlowStartMs": base + i * 1000, "TimeFlowEndMs": base + i * 1000 + 500,
                "Interface": "eth0",
            })
        })
        .collect()
}

#[test]
fn schema_insert_and_queries_agree_with_the_local_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = LocalServer::start(dir.path()).expect("clickhouse-server");
    let ch = ClickHouse::new(&server.url(), "weir").expect("new");
    let m = ch.migrate().expect("migrate");
    assert_eq!((m.from, m.to), (0, weir_clickhouse::schema::VERSION));
    let again = ch.migrate().expect("migrate again");
    assert_eq!((again.from, again.added.len()), (m.to, 0), "idempotent");
    summary_windows_keep_the_latest_copy_per_node(&ch);

    // Insert into flows_ingest, addresses as text, in JSONEachRow (the insert URL takes the
    // format each body names; agents send RowBinary, the cluster e2e test covers that).
    let base = 1_764_900_000_000u64;
    let (a, b) = (
        flows("node-a", 300, base),
        flows("node-b", 200, base + 60_000),
    );
    // node-c's flows last 25 minutes and end every 30 s over more than three hours, so ranges
    // cut hours and flows cross the cuts (the hourly sums serve only whole hours).
    let c: Vec<serde_json::Value> = flows("node-c", 400, 0)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let end = base + 3_000_000 + i as u64 * 30_000;
            r["TimeFlowStartMs"] = (end - 1_500_000).into();
            r["TimeFlowEndMs"] = end.into();
            r
        })
        .collect();
    for rows in [&a, &b, &c] {
        let body: String = std::iter::once(" FORMAT JSONEachRow\n".to_string())
            .chain(rows.iter().map(|r| format!("{r}\n")))
            .collect();
        let resp = ureq::post(&ch.insert_url())
            .send(body.as_bytes())
            .expect("insert");
        assert_eq!(resp.status().as_u16(), 200);
    }
    assert_eq!(
        ch.nodes().expect("nodes"),
        vec![
            ("node-a".to_string(), 300),
            ("node-b".to_string(), 200),
            ("node-c".to_string(), 400)
        ]
    );
    // A new schema fills the hourly and per-minute sums from the start.
    assert_eq!(
        ch.query("SELECT (SELECT max(from_ms) FROM weir.weir_rollups), (SELECT sum(Flows) FROM weir.flows_1h), \
                  (SELECT sum(Flows) FROM weir.flows_1m), (SELECT sum(DropBytes) FROM weir.flows_1m) = \
                  (SELECT sum(DropBytes) FROM weir.flows_1h), (SELECT count() FROM weir.flows_addr) FORMAT TSV")
            .expect("rollups")
            .trim(),
        "0\t900\t900\t1\t1800"
    );
    // The longest flow: node-c's, 25 minutes.
    assert_eq!(
        ch.query("SELECT maxMerge(Span) FROM weir.flows_span FORMAT TSV")
            .expect("spans")
            .trim(),
        "1500000"
    );

    // The same flows in a real local store: every answer must agree.
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store =
        weir_core::Store::open(weir_core::StoreConfig::new(store_dir.path())).expect("store");
    let local: Vec<weir_core::Flow> = a
        .iter()
        .chain(&b)
        .chain(&c)
        .map(|r| {
            let mut r = r.clone();
            // `Node` is a field: the local store keeps it as ClickHouse does.
            let o = r.as_object_mut().expect("object");
            for k in ["SrcAddr", "DstAddr"] {
                let s = o[k]
                    .as_str()
                    .expect("addr")
                    .trim_start_matches("::ffff:")
                    .to_string();
                o.insert(k.into(), s.into());
            }
            serde_json::from_value(r).expect("flow")
        })
        .collect();
    store.append(&local).expect("append");
    store.flush().expect("flush");
    agree(&ch, &store, base);

    // The address table is what counts a listing filtered by an address: a row put into
    // flows_addr alone (an address no flow has) is counted, while the page, read from flows,
    // has nothing; a filter on a column flows_addr lacks counts in flows (nothing).
    ch.query(&format!(
        "INSERT INTO weir.flows_addr (Addr, Side, weir_SrcAddr, TimeFlowEndMs) \
         VALUES (toFixedString(unhex('00000000000000000000FFFF0A090909'), 16), 0, \
         toFixedString(unhex('00000000000000000000FFFF0A090909'), 16), {base})"
    ))
    .expect("marker");
    for (q, total) in [
        ("SrcAddr=10.9.9.9", 1),
        ("SrcAddr=10.9.9.9 and Bytes>=0", 0),
    ] {
        let got = newest(&ch, q, 10);
        assert_eq!((got.total, got.flows.len()), (total, 0), "{q}");
    }
    // A Kafka table without its view into flows_addr (made before version 5) fills flows
    // but not flows_addr: while it is there, flows counts (the marker is not seen).
    let marker = |ch: &ClickHouse| newest(ch, "SrcAddr=10.9.9.9", 10).total;
    ch.query("CREATE TABLE weir.flows_kafka (x UInt8) ENGINE = Memory")
        .expect("kafka stand-in");
    assert_eq!(
        marker(&ClickHouse::new(&server.url(), "weir").expect("new")),
        0
    );
    ch.query("DROP TABLE weir.flows_kafka").expect("drop");
    assert_eq!(
        marker(&ClickHouse::new(&server.url(), "weir").expect("new")),
        1
    );

    // A schema from before the hourly sums, holding flows: migrated, they count only from
    // the next hour on, and every answer over these older flows comes from `flows` alone.
    for t in ["flows_1h_mv", "flows_1h", "weir_rollups"] {
        ch.query(&format!("DROP TABLE weir.{t}")).expect("drop");
    }
    ClickHouse::new(&server.url(), "weir")
        .expect("new")
        .migrate()
        .expect("migrate");
    let from: u64 = ch
        .query("SELECT max(from_ms) FROM weir.weir_rollups FORMAT TSV")
        .expect("rollups")
        .trim()
        .parse()
        .expect("from_ms");
    assert!(from > weir_core::query::now_ms(), "{from}");
    agree(
        &ClickHouse::new(&server.url(), "weir").expect("new"),
        &store,
        base,
    );

    // A version 3 schema (per-minute sums without drops): migrated, the drops are added, the
    // views made again, and the minutes count only from the minute after next.
    // (Its view into flows_1m wrote no drops; a Kafka table's view from then, left by another
    // server, still does not: while it is there the minutes get no mark and are not read.)
    for q in [
        "DROP TABLE weir.flows_1m_mv",
        "ALTER TABLE weir.flows_1m DROP COLUMN DropBytes",
        "ALTER TABLE weir.flows_1m DROP COLUMN DropPackets",
        "DROP TABLE weir.weir_rollups",
        "CREATE TABLE weir.weir_rollups (name String, from_ms UInt64) ENGINE = TinyLog",
        "INSERT INTO weir.weir_rollups VALUES ('flows_1h', 0)",
        "CREATE VIEW weir.flows_kafka_1m_mv AS SELECT 1 AS Minute",
    ] {
        ch.query(q).expect(q);
    }
    ClickHouse::new(&server.url(), "weir")
        .expect("new")
        .migrate()
        .expect("migrate");
    assert_eq!(
        ch.query("SELECT name FROM weir.weir_rollups WHERE from_ms > 0 FORMAT TSV")
            .expect("rollups")
            .trim(),
        "flows_1h\nflows_addr\nflows_span",
        "no mark for the minutes while a view writes them without drops"
    );
    ch.query("DROP TABLE weir.flows_kafka_1m_mv").expect("drop");
    // Dropped with the Kafka table: the next rebuild marks the minutes too.
    ch.query("DROP TABLE weir.flows_1m_mv").expect("drop");
    let m = ClickHouse::new(&server.url(), "weir")
        .expect("new")
        .migrate()
        .expect("migrate");
    assert_eq!(m.to, 6);
    let marks = ch
        .query("SELECT name, max(from_ms) FROM weir.weir_rollups GROUP BY name ORDER BY name FORMAT TSV")
        .expect("rollups");
    let now = weir_core::query::now_ms();
    let mut names = Vec::new();
    for line in marks.lines() {
        let (name, from) = line.split_once('\t').expect("two columns");
        let from: u64 = from.parse().expect("from_ms");
        assert!(from > now && from <= now + 3_600_000, "{line}");
        names.push(name.to_string());
    }
    assert_eq!(names, ["flows_1h", "flows_1m", "flows_addr", "flows_span"]);
    assert!(
        ch.query("SHOW CREATE TABLE weir.flows_1m_mv FORMAT TSVRaw")
            .expect("view")
            .contains("DropPackets")
    );
    let ch = ClickHouse::new(&server.url(), "weir").expect("new");
    agree(&ch, &store, base);

    // Migrated without the address table: it goes with its view, and a listing by an
    // address is counted in flows (the marker row above is gone with it). Migrated with it
    // again, it is made again and read only from the minute after next.
    let tables = |ch: &ClickHouse| {
        ch.query(
            "SELECT count() FROM system.tables WHERE database = 'weir' \
             AND name IN ('flows_addr', 'flows_addr_mv') FORMAT TSV",
        )
        .expect("tables")
        .trim()
        .to_string()
    };
    let expected = newest(&store, "SrcAddr=10.1.0.0/16", 3).total;
    let without = ClickHouse::new(&server.url(), "weir")
        .expect("new")
        .address_table(false);
    without.migrate().expect("migrate");
    assert_eq!(tables(&without), "0");
    assert_eq!(newest(&without, "SrcAddr=10.1.0.0/16", 3).total, expected);
    let with = ClickHouse::new(&server.url(), "weir").expect("new");
    with.migrate().expect("migrate");
    assert_eq!(tables(&with), "2");
    let mark: u64 = with
        .query("SELECT max(from_ms) FROM weir.weir_rollups WHERE name = 'flows_addr' FORMAT TSV")
        .expect("mark")
        .trim()
        .parse()
        .expect("from_ms");
    assert!(mark > weir_core::query::now_ms(), "{mark}");
    assert_eq!(newest(&with, "SrcAddr=10.1.0.0/16", 3).total, expected);

    // The rollups are what answers, not only what could: a row put into flows_1m alone, in a
    // whole minute inside the range outside any whole hour, counts once its minute is
    // usable (the marks back to 0), in totals and in its minute's bucket.
    for q in [
        "DROP TABLE weir.weir_rollups",
        "CREATE TABLE weir.weir_rollups (name String, from_ms UInt64) ENGINE = TinyLog",
        "INSERT INTO weir.weir_rollups VALUES ('flows_1h', 0), ('flows_1m', 0)",
    ] {
        ch.query(q).expect("marks");
    }
    let minute = base + 20 * 60_000;
    ch.query(&format!(
        "INSERT INTO weir.flows_1m (Minute, Node, Bytes, Packets, Flows, DropBytes, DropPackets) \
         VALUES ({minute}, 'node-z', 7, 1, 1000, 3, 1)"
    ))
    .expect("marker");
    let ch = ClickHouse::new(&server.url(), "weir").expect("new");
    let range = TimeRange {
        from_ms: base,
        to_ms: base + 40 * 60_000,
    };
    let node = [weir_core::schema::field("Node").expect("Node")];
    let every = parse("").expect("filter");
    let got = ch
        .aggregate(&every, &range, &node, None)
        .expect("aggregate");
    let z = &got[&(vec![weir_core::schema::Value::Str("node-z".into())], None)];
    assert_eq!((z.flows, z.bytes, z.drop_bytes), (1000, 7, 3));
    let buckets = Some(weir_core::store::Buckets {
        origin_ms: base,
        step_ms: 5 * 60_000,
    });
    let got = ch
        .aggregate(&every, &range, &node, buckets)
        .expect("aggregate");
    let z = &got[&(
        vec![weir_core::schema::Value::Str("node-z".into())],
        Some(minute),
    )];
    assert_eq!(z.flows, 1000);
    // Off the keys of the sums (a filter on Bytes), the flows alone answer: no node-z.
    let got = ch
        .aggregate(&parse("Bytes>=0").expect("filter"), &range, &node, buckets)
        .expect("aggregate");
    assert!(
        got.keys()
            .all(|(k, _)| k[0] != weir_core::schema::Value::Str("node-z".into()))
    );

    // flows_span is what bounds a range's end from above: a ten-hour flow put into `flows`
    // alone, overlapping a range that ends long before it does, is listed while flows_span
    // has no mark, is not once it has one (the longest flow it knows lasts 25 minutes) and
    // every source of flows has its view into it (not with a Kafka table without one), and
    // is again after a migration from version 5 (no flows_span), whose mark is after now.
    ch.query(&format!(
        "INSERT INTO weir.flows (Node, TimeFlowStartMs, TimeFlowEndMs) \
         VALUES ('node-long', {}, {})",
        base + 600_000,
        base + 36_000_000
    ))
    .expect("long flow");
    let long = |ch: &ClickHouse| {
        let req = ListRequest {
            filter: parse("Node=node-long").expect("filter"),
            range: TimeRange {
                from_ms: base,
                to_ms: base + 20 * 60_000,
            },
            sort: SortBy::parse("-TimeFlowEndMs").expect("sort"),
            limit: 10,
            offset: 0,
        };
        let got = ch.list(&req).expect("list");
        let counted = ch
            .aggregate(&req.filter, &req.range, &node, None)
            .expect("aggregate")
            .values()
            .map(|t| t.flows)
            .sum::<u64>();
        (got.total, got.flows.len() as u64, counted)
    };
    let fresh = || ClickHouse::new(&server.url(), "weir").expect("new");
    assert_eq!(long(&fresh()), (1, 1, 1), "no mark: no end bound");
    ch.query("INSERT INTO weir.weir_rollups VALUES ('flows_span', 0)")
        .expect("mark");
    assert_eq!(
        long(&fresh()),
        (0, 0, 0),
        "bounded by the longest flow known"
    );
    ch.query("CREATE TABLE weir.flows_kafka (x UInt8) ENGINE = Memory")
        .expect("kafka stand-in");
    assert_eq!(long(&fresh()), (1, 1, 1), "a source without its view");
    ch.query("DROP TABLE weir.flows_kafka").expect("drop");
    assert_eq!(long(&fresh()), (0, 0, 0));
    for t in ["flows_span_mv", "flows_span"] {
        ch.query(&format!("DROP TABLE weir.{t}")).expect("drop");
    }
    fresh().migrate().expect("migrate");
    let mark: u64 = ch
        .query("SELECT max(from_ms) FROM weir.weir_rollups WHERE name = 'flows_span' FORMAT TSV")
        .expect("mark")
        .trim()
        .parse()
        .expect("from_ms");
    assert!(mark > weir_core::query::now_ms(), "{mark}");
    assert_eq!(long(&fresh()), (1, 1, 1), "flows ending before the mark");
    // Flows inserted since reach it through its view.
    let body = format!(
        " FORMAT JSONEachRow\n{}\n",
        serde_json::json!({"Node": "node-long", "TimeFlowStartMs": base, "TimeFlowEndMs": base + 35_400_000})
    );
    ureq::post(&ch.insert_url())
        .send(body.as_bytes())
        .expect("insert");
    assert_eq!(
        ch.query("SELECT maxMerge(Span) FROM weir.flows_span FORMAT TSV")
            .expect("spans")
            .trim(),
        "35400000"
    );

    // A schema a newer weir made is left as it is, before anything is made (a table this
    // weir makes, gone in the newer schema, stays gone), with an error saying so.
    ch.query("INSERT INTO weir.weir_schema VALUES (99, 0)")
        .expect("newer");
    ch.query("DROP TABLE weir.weir_rollups").expect("drop");
    let e = fresh().migrate().expect_err("newer schema");
    assert!(
        e.to_string()
            .contains("schema version 99, newer than this weir's (6)"),
        "{e}"
    );
    let kafka = weir_clickhouse::schema::KafkaSource {
        brokers: "127.0.0.1:9".into(),
        topic: "weir-flows".into(),
        group: "weir".into(),
    };
    let e = fresh().migrate_kafka(&kafka).expect_err("newer schema");
    assert!(e.to_string().contains("schema version 99"), "{e}");
    for t in ["weir_rollups", "flows_kafka"] {
        assert_eq!(
            ch.query(&format!("EXISTS TABLE weir.{t} FORMAT TSV"))
                .expect("exists")
                .trim(),
            "0",
            "{t}"
        );
    }
    // Nor is a Kafka table made in a database never migrated.
    let other = ClickHouse::new(&server.url(), "weir_none").expect("client");
    let e = other.migrate_kafka(&kafka).expect_err("not migrated");
    assert!(
        e.to_string()
            .contains("schema version 0, not this weir's (6)"),
        "{e}"
    );
}

/// The newest `limit` flows of all time that `q` matches, and their count.
fn newest(q: &dyn FlowQuery, filter: &str, limit: usize) -> weir_core::store::ListResult {
    q.list(&ListRequest {
        filter: parse(filter).expect(filter),
        range: TimeRange {
            from_ms: 0,
            to_ms: u64::MAX,
        },
        sort: SortBy::parse("-TimeFlowEndMs").expect("sort"),
        limit,
        offset: 0,
    })
    .expect("list")
}

/// Every answer of `ch` equals the local store's over the same flows: aggregates, values per
/// group, top-N, time buckets and pages, for filters, group-bys and ranges (whole hours and
/// cut ones).
fn agree(ch: &ClickHouse, store: &weir_core::Store, base: u64) {
    let all = TimeRange {
        from_ms: 0,
        to_ms: u64::MAX,
    };
    let mid = TimeRange {
        from_ms: base + 100_000,
        to_ms: base + 200_000,
    };
    // One whole hour inside, cut hours at both ends; every whole hour up to a cut one.
    let hours = TimeRange {
        from_ms: base + 4_200_000,
        to_ms: base + 12_000_000,
    };
    let upto = TimeRange {
        from_ms: 0,
        to_ms: base + 7_500_000,
    };
    // Four whole hours; two-hour buckets from 10 minutes in cut the first and the third, so
    // minutes answer inside those and hours for the others.
    let long = TimeRange {
        from_ms: base,
        to_ms: base + 15_000_000,
    };
    let filters = [
        "",
        "SrcAddr=10.1.0.0/16",
        "Addr=2001:db8:9::/48",
        "DstPort=53 or Proto=tcp",
        "not DstPort=443 and Bytes>=500",
        "DstPort=50-100",
        "Flags=SYN,ACK",
        "SrcK8S_Namespace=\"it's\"",
        "Port=443",
        "Node=node-b and DstPort=53",
    ];
    let group_bys: [&[&str]; 5] = [
        &[],
        &["DstPort"],
        &["SrcAddr", "Proto"],
        &["SrcK8S_Namespace"],
        &["Node"],
    ];
    for q in filters {
        let filter = parse(q).expect(q);
        for range in [all, mid, hours, upto, long] {
            for g in group_bys {
                let fields: Vec<_> = g
                    .iter()
                    .map(|n| weir_core::schema::field(n).expect("field"))
                    .collect();
                let ours =
                    FlowQuery::aggregate(store, &filter, &range, &fields, None).expect("store");
                let theirs = ch
                    .aggregate(&filter, &range, &fields, None)
                    .expect("clickhouse");
                assert_eq!(theirs, ours, "{q} {g:?} {range:?}");
                // A field's non-zero values per group (flow-stats' quantiles), as multisets.
                for value in ["PktDropBytes", "SrcPort"] {
                    let value = weir_core::schema::field(value).expect("field");
                    let sorted = |mut m: weir_core::store::collect::GroupValues| {
                        m.values_mut().for_each(|v| v.sort_unstable());
                        m
                    };
                    let ours = sorted(
                        FlowQuery::group_values(store, &filter, &range, &fields, value)
                            .expect("store"),
                    );
                    let theirs = sorted(
                        ch.group_values(&filter, &range, &fields, value)
                            .expect("clickhouse"),
                    );
                    assert_eq!(theirs, ours, "{q} {g:?} {range:?} values of {}", value.name);
                }
                // Top-N ranked by ClickHouse (ties by value, sums of the rest and of all,
                // the group count) as the store ranks it.
                for (metric, k) in [
                    (Metric::Bytes, 3),
                    (Metric::Flows, 2),
                    (Metric::Packets, 50),
                ] {
                    assert_eq!(
                        ch.top(&filter, &range, &fields, metric, k)
                            .expect("clickhouse"),
                        FlowQuery::top(store, &filter, &range, &fields, metric, k).expect("store"),
                        "{q} {g:?} {range:?} top {k} by {metric:?}"
                    );
                }
            }
            // `flow-fields`' select: every matching flow once, paged by cursor.
            let page_all =
                |q: &dyn FlowQuery| {
                    let (mut after, mut got) = (0, Vec::new());
                    loop {
                        let page = q.select(&filter, &range, after, 50).expect("select");
                        let Some((last, _)) = page.last() else { break };
                        assert!(*last > after && page.len() <= 50, "{}", q.describe());
                        after = *last;
                        got.extend(page.into_iter().map(|(_, f)| {
                            (f.node.clone(), f.src_port, f.bytes, f.time_flow_end_ms)
                        }));
                    }
                    got.sort_unstable();
                    got
                };
            assert_eq!(page_all(ch), page_all(store), "{q} {range:?} select");
            // Time buckets on and off whole minutes and hours (the rollups serve the units no
            // boundary cuts).
            let f = [weir_core::schema::field("Proto").expect("Proto")];
            for (origin, step) in [
                (base + 30_000, 60_000),
                (base, 60_000),
                (base + 1, 300_000),
                (base, 3_600_000),
                (base + 600_000, 3_600_000),
                (range.from_ms, 7_200_000),
                (base + 600_000, 7_200_000),
            ] {
                let buckets = Some(weir_core::store::Buckets {
                    origin_ms: origin,
                    step_ms: step,
                });
                assert_eq!(
                    ch.aggregate(&filter, &range, &f, buckets)
                        .expect("clickhouse"),
                    FlowQuery::aggregate(store, &filter, &range, &f, buckets).expect("store"),
                    "{q} {range:?} buckets from {origin} by {step}"
                );
            }
            let req = ListRequest {
                filter: filter.clone(),
                range,
                sort: SortBy::parse("-Bytes").expect("sort"),
                limit: 7,
                offset: 2,
            };
            let (ours, theirs) = (
                FlowQuery::list(store, &req).expect("store"),
                ch.list(&req).expect("clickhouse"),
            );
            assert_eq!(theirs.total, ours.total, "{q} total");
            let bytes = |l: &weir_core::store::ListResult| {
                l.flows.iter().map(|f| f.bytes).collect::<Vec<_>>()
            };
            assert_eq!(bytes(&theirs), bytes(&ours), "{q} page");
            for (t, o) in theirs.flows.iter().zip(&ours.flows) {
                if t.bytes != o.bytes {
                    continue;
                }
                assert_eq!(
                    (t.src_addr, t.dst_port, &t.src_k8s_namespace),
                    (o.src_addr, o.dst_port, &o.src_k8s_namespace),
                    "{q}"
                );
            }
        }
    }
    // Listings by time (newest or oldest first, paged), where a filter requiring an address
    // is counted and bounded in flows_addr (while its mark allows) and the page read from
    // flows.
    for q in [
        "SrcAddr=10.1.0.0/16",
        "Addr=2001:db8:9::/48",
        "DstAddr=192.168.1.1 and DstPort=53",
        "SrcAddr=10.2.0.8 and Proto=tcp",
        "Node=node-b",
    ] {
        let filter = parse(q).expect(q);
        for range in [all, mid, hours, upto, long] {
            for (sort, offset) in [
                ("-TimeFlowEndMs", 3),
                ("TimeFlowEndMs", 0),
                ("-TimeFlowStartMs", 1),
                ("TimeFlowStartMs", 2),
                ("-DstPort", 1),
            ] {
                let req = ListRequest {
                    filter: filter.clone(),
                    range,
                    sort: SortBy::parse(sort).expect("sort"),
                    limit: 5,
                    offset,
                };
                let (ours, theirs) = (
                    FlowQuery::list(store, &req).expect("store"),
                    ch.list(&req).expect("clickhouse"),
                );
                assert_eq!(theirs.total, ours.total, "{q} {sort} {range:?} total");
                // The sort values in order (flows tied on them may differ), and every flow
                // listed one the filter and the range take.
                let key = |l: &weir_core::store::ListResult| {
                    l.flows
                        .iter()
                        .map(|f| match sort {
                            "-DstPort" => (u64::from(f.dst_port), 0),
                            _ => (f.time_flow_end_ms, f.time_flow_start_ms),
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(key(&theirs), key(&ours), "{q} {sort} {range:?} page");
                for f in &theirs.flows {
                    assert!(
                        filter.matches(f)
                            && range.overlaps(f.time_flow_start_ms, f.time_flow_end_ms),
                        "{q} {sort} {range:?}: {f:?}"
                    );
                }
            }
        }
    }
}

/// The summary exchange: windows published by two nodes come back once each, the latest copy
/// when one was published again, binary snapshots byte for byte, other plugins, lengths and
/// older windows left out.
fn summary_windows_keep_the_latest_copy_per_node(ch: &ClickHouse) {
    use weir_core::summaries::{PublishedWindow, SummaryExchange};
    let w =
        |node: &str, plugin: &str, start_ms: u64, secs: u64, snapshot: Vec<u8>| PublishedWindow {
            node: node.into(),
            plugin: plugin.into(),
            start_ms,
            window_secs: secs,
            snapshot,
        };
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ch.publish(&[
        w("node-a", "edge-summary", 60_000, 60, b"a1 old".to_vec()),
        w("node-a", "edge-summary", 120_000, 60, binary.clone()),
        w("node-b", "edge-summary", 60_000, 60, vec![0, 1, 2]),
        w("node-b", "edge-summary", 0, 60, b"too old".to_vec()),
        w(
            "node-b",
            "edge-summary",
            60_000,
            30,
            b"other length".to_vec(),
        ),
        w("node-b", "src-bytes", 60_000, 60, b"other plugin".to_vec()),
    ])
    .expect("publish");
    std::thread::sleep(std::time::Duration::from_millis(5));
    ch.publish(&[w("node-a", "edge-summary", 60_000, 60, b"a1 new".to_vec())])
        .expect("publish again");
    let got = ch.gather("edge-summary", 60, 60_000).expect("gather");
    assert_eq!(
        got,
        vec![
            w("node-a", "edge-summary", 60_000, 60, b"a1 new".to_vec()),
            w("node-b", "edge-summary", 60_000, 60, vec![0, 1, 2]),
            w("node-a", "edge-summary", 120_000, 60, binary),
        ]
    );
    assert_eq!(ch.gather("no-such", 60, 0).expect("gather").len(), 0);
    // The stamp changes when a copy is published (a background merge of replaced copies
    // changes its count too, which only costs a gatherer one download).
    let before = ch.stamp("edge-summary", 60, 60_000).expect("stamp");
    assert!(before.0 >= 3 && before.1 > 0, "{before:?}");
    std::thread::sleep(std::time::Duration::from_millis(5));
    ch.publish(&[w("node-b", "edge-summary", 120_000, 60, vec![9])])
        .expect("publish");
    let after = ch.stamp("edge-summary", 60, 60_000).expect("stamp");
    assert!(after.1 > before.1, "{before:?} {after:?}");
    assert_eq!(ch.stamp("no-such", 60, 0).expect("stamp").0, 0);
}

#[test]
fn a_server_that_is_down_is_an_error_naming_it() {
    let port = free_port();
    let ch = ClickHouse::new(&format!("http://127.0.0.1:{port}"), "weir").expect("new");
    let e = ch.migrate().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("clickhouse http://127.0.0.1:{port}/: ")),
        "{e}"
    );
    let e = weir_core::StoreError::from(ch.migrate().unwrap_err());
    assert_eq!(e.kind(), weir_core::store::ErrorKind::Unavailable);
}
