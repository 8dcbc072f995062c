use super::*;
use crate::query::{Metric, SortBy, parse};
use crate::schema::field;

/// Deterministic synthetic flows spread over `span_ms` before `t0`.
pub(crate) fn synth(n: usize, t0: u64, span_ms: u64) -> Vec<Flow> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut f = Flow::empty();
            let end = t0 - (x % span_ms);
            f.time_flow_end_ms = end;
            f.time_flow_start_ms = end - (x >> 20) % 5000;
            f.src_addr = if i % 7 == 0 {
                format!("2001:db8::{:x}", x % 50).parse().unwrap()
            } else {
                format!("10.0.{}.{}", (x >> 8) % 4, x % 50).parse().unwrap()
            };
            f.dst_addr = format!("10.1.0.{}", (x >> 16) % 20).parse().unwrap();
            f.src_port = (x >> 24) as u16;
            f.dst_port = [80, 443, 53, 8080, 9000][(x >> 32) as usize % 5];
            f.proto = [6, 17, 1][(x >> 40) as usize % 3];
            f.flags = ((x >> 44) & 0x1ff) as u16;
            f.bytes = 60 + (x >> 48) % 100_000;
            f.packets = 1 + (x >> 50) % 100;
            f.skbs = f.packets;
            f.interface = format!("veth{}", (x >> 36) % 3);
            f.if_direction = (i % 2) as u8;
            f.sampling = if i % 11 == 0 { 10 } else { 0 };
            f
        })
        .collect()
}

fn store(dir: &Path) -> Store {
    let mut cfg = StoreConfig::new(dir);
    cfg.partition_ms = 600_000;
    Store::open(cfg).unwrap()
}

const T0: u64 = 1_800_000_000_000;

fn list_all(s: &Store, q: &str, range: TimeRange) -> ListResult {
    s.list(&ListRequest {
        filter: parse(q).unwrap(),
        range,
        sort: SortBy::parse("-TimeFlowEndMs").unwrap(),
        limit: crate::query::MAX_LIMIT,
        offset: 0,
    })
    .unwrap()
}

#[test]
fn filters_agree_with_in_memory_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut flows = synth(3000, T0, 3_600_000);
    // Zeros and empty strings are left out of the index: filters that 0 or "" satisfies must
    // still find those flows.
    for (i, f) in flows.iter_mut().enumerate() {
        if i % 4 == 0 {
            f.interface.clear();
        }
        f.pkt_drop_packets = [0, 0, 1, 2, 5][i % 5];
        if i % 5 == 0 {
            f.flags |= crate::flow::FLAG_SYN_NO_ACK;
        }
        f.dns_name = if i % 3 == 0 {
            "a.test".into()
        } else {
            String::new()
        };
    }
    s.append(&flows).unwrap();
    s.flush().unwrap();
    assert!(s.status().partitions.len() >= 6, "partitioned by time");
    let queries = [
        "",
        "SrcAddr=10.0.0.0/16",
        "Addr=10.1.0.3",
        "SrcAddr=2001:db8::/64 and Proto=tcp",
        "DstPort=80-443 and not Proto=udp",
        "Port=53 or Interface=veth1",
        "Flags=SYN,ACK",
        "Bytes>50000 and Packets<=10",
        "SrcAddr!=10.0.1.0/24 and IfDirection=egress",
        "(DstPort=9000 or DstPort=8080) and Sampling>1",
        "Sampling=0",
        "Sampling<=1",
        "PktDropPackets=0",
        "PktDropPackets<2",
        "PktDropPackets<=0",
        "PktDropPackets>=0",
        "PktDropPackets>0",
        "PktDropPackets=0-1",
        "PktDropPackets=1-2",
        "not PktDropPackets=0",
        "PktDropPackets!=0",
        "Interface=\"\"",
        "Interface!=\"\" and DnsName=a.test",
        "DnsName=\"\" or PktDropPackets=5",
        "Flags=0",
        "Flags=OPEN",
        "Flags=SYN,OPEN",
        "PktDropPackets!=0 && DnsName='a.test' || Flags=OPEN",
    ];
    let range = TimeRange {
        from_ms: T0 - 1_800_000,
        to_ms: T0 - 600_000,
    };
    for q in queries {
        let e = parse(q).unwrap();
        let want: Vec<&Flow> = flows
            .iter()
            .filter(|f| range.overlaps(f.time_flow_start_ms, f.time_flow_end_ms) && e.matches(f))
            .collect();
        let got = list_all(&s, q, range);
        assert_eq!(got.total as usize, want.len(), "count for {q:?}");
        assert_eq!(got.flows.len(), want.len(), "rows for {q:?}");
        assert!(
            got.flows
                .windows(2)
                .all(|w| w[0].time_flow_end_ms >= w[1].time_flow_end_ms),
            "sorted for {q:?}"
        );
        for f in &got.flows {
            assert!(e.matches(f), "{q:?} returned a flow that does not match");
        }
    }
}

#[test]
fn paging_and_aggregation_scale_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let flows = synth(2000, T0, 3_600_000);
    s.append(&flows).unwrap();
    s.flush().unwrap();
    let sort = SortBy::parse("Bytes:desc").unwrap();
    let page = |offset| {
        s.list(&ListRequest {
            filter: Expr::All,
            range: TimeRange::ALL,
            sort,
            limit: 10,
            offset,
        })
        .unwrap()
    };
    let (a, b) = (page(0), page(10));
    assert_eq!(a.total, 2000);
    let mut by_bytes: Vec<u64> = flows.iter().map(|f| f.bytes).collect();
    by_bytes.sort_unstable_by(|x, y| y.cmp(x));
    let got: Vec<u64> = a.flows.iter().chain(&b.flows).map(|f| f.bytes).collect();
    assert_eq!(got, by_bytes[..20]);
    // Too deep a page is refused, not ranked (every partition would rank offset + limit rows).
    let deep = s.list(&ListRequest {
        filter: Expr::All,
        range: TimeRange::ALL,
        sort,
        limit: 10,
        offset: crate::query::MAX_OFFSET + 1,
    });
    assert!(matches!(deep, Err(StoreError::BadRequest(_))), "{deep:?}");

    let g = [field("SrcAddr").unwrap(), field("DstPort").unwrap()];
    let groups = s.aggregate(&Expr::All, &TimeRange::ALL, &g, None).unwrap();
    let mut want: HashMap<(String, u16), (u64, u64, u64)> = HashMap::new();
    for f in &flows {
        let e = want
            .entry((f.src_addr.to_string(), f.dst_port))
            .or_default();
        e.0 += f.bytes * f.scale();
        e.1 += f.packets * f.scale();
        e.2 += 1;
    }
    assert_eq!(groups.len(), want.len());
    let top = crate::aggregate::top_groups(groups, &g, Metric::Bytes, 5);
    let mut ranked: Vec<_> = want.values().map(|v| v.0).collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    let top_bytes: Vec<u64> = top.groups.iter().map(|g| g.bytes).collect();
    assert_eq!(top_bytes, ranked[..5]);
    let total: u64 = want.values().map(|v| v.0).sum();
    assert_eq!(top.total.bytes, total);
    assert_eq!(top.others.bytes + top_bytes.iter().sum::<u64>(), total);
    let k = &top.groups[0].key;
    let (ip, port) = (
        k["SrcAddr"].as_str().unwrap().to_string(),
        k["DstPort"].as_u64().unwrap() as u16,
    );
    assert_eq!(want[&(ip, port)].0, top.groups[0].bytes);

    // Time series: buckets add up to the total.
    let step = 600_000;
    let from = T0 - 3_600_000;
    let groups = s
        .aggregate(
            &Expr::All,
            &TimeRange::ALL,
            &[],
            Some(Buckets {
                origin_ms: from,
                step_ms: step,
            }),
        )
        .unwrap();
    let ts = crate::aggregate::time_series(groups, &[], Metric::Packets, 10, from, step, 7);
    assert_eq!(ts.series.len(), 1);
    let sum: u64 = ts.series[0].points.iter().map(|p| p.1).sum();
    assert_eq!(sum, want.values().map(|v| v.1).sum::<u64>());
}

#[test]
fn index_is_repaired_from_records_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let flows = synth(500, T0, 60_000);
    {
        let s = store(dir.path());
        s.append(&flows[..300]).unwrap();
        s.flush().unwrap();
        // Durable in sled, never committed to the index: as if killed between the two.
        s.append(&flows[300..]).unwrap();
        for p in s.read_parts() {
            p.db().unwrap().flush().unwrap();
        }
        drop(s); // an index writer dropped without commit loses its documents
    }
    let s = store(dir.path());
    assert_eq!(list_all(&s, "", TimeRange::ALL).total, 500);
    // And an index lost altogether is rebuilt.
    let part_dir = s.read_parts()[0].dir().to_path_buf();
    drop(s);
    std::fs::remove_dir_all(part_dir.join("index")).unwrap();
    std::fs::create_dir_all(part_dir.join("index")).unwrap();
    std::fs::write(part_dir.join("index/meta.json"), b"{ not json").unwrap();
    let s = store(dir.path());
    assert_eq!(list_all(&s, "", TimeRange::ALL).total, 500);
    // New records continue the sequence instead of overwriting old ones.
    s.append(&flows[..10]).unwrap();
    s.flush().unwrap();
    assert_eq!(list_all(&s, "", TimeRange::ALL).total, 510);
}

#[test]
fn an_index_from_before_a_new_field_is_rebuilt_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut flows = synth(400, T0, 60_000);
    for f in flows.iter_mut().step_by(2) {
        f.node = "node-1".into();
    }
    let part_dir = {
        let s = store(dir.path());
        s.append(&flows).unwrap();
        s.flush().unwrap();
        s.read_parts()[0].dir().to_path_buf()
    };
    // The index as a build without `Node` wrote it (empty here: what matters is its schema).
    let mut b = tantivy::schema::Schema::builder();
    for (_, e) in index::IndexFields::new().schema.fields() {
        if e.name() != "Node" {
            b.add_field(e.clone());
        }
    }
    let index_dir = part_dir.join("index");
    std::fs::remove_dir_all(&index_dir).unwrap();
    std::fs::create_dir_all(&index_dir).unwrap();
    tantivy::Index::create_in_dir(&index_dir, b.build()).unwrap();
    let s = store(dir.path());
    assert_eq!(list_all(&s, "", TimeRange::ALL).total, 400);
    assert_eq!(list_all(&s, "Node=node-1", TimeRange::ALL).total, 200);
    // Made again in place: nothing set aside as if it were damaged.
    let beside: Vec<String> = std::fs::read_dir(&part_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("index") && n != "index")
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
}

#[test]
fn retention_drops_whole_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.partition_ms = 600_000;
    cfg.retention_age_ms = 1_800_000;
    let s = Store::open(cfg).unwrap();
    let flows = synth(1000, T0, 3_600_000);
    s.append(&flows).unwrap();
    s.flush().unwrap();
    let before = s.status().partitions.len();
    let dropped = s.enforce_retention(T0).unwrap();
    assert!(dropped >= 2, "dropped {dropped} of {before}");
    let left = list_all(&s, "", TimeRange::ALL);
    let cutoff = T0 - 1_800_000;
    assert!(
        left.flows
            .iter()
            .all(|f| f.time_flow_end_ms >= cutoff - 600_000)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("partitions"))
            .unwrap()
            .count(),
        before - dropped,
        "files removed"
    );
    // Size limit: keeps only the newest partition when the limit is tiny.
    let mut cfg = StoreConfig::new(dir.path());
    cfg.partition_ms = 600_000;
    cfg.retention_age_ms = 0;
    cfg.retention_bytes = 1;
    drop(s);
    let s = Store::open(cfg).unwrap();
    s.enforce_retention(T0).unwrap();
    assert_eq!(s.status().partitions.len(), 1);
}

#[test]
fn group_values_give_exact_quantiles_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut flows = synth(3000, T0, 3_600_000);
    for (i, f) in flows.iter_mut().enumerate() {
        // Every third flow has no RTT (0): left out of the quantiles.
        f.time_flow_rtt_ns = if i % 3 == 0 {
            0
        } else {
            1000 * (i as u64 % 997)
        };
    }
    s.append(&flows).unwrap();
    s.flush().unwrap();
    let g = [field("Interface").unwrap()];
    let rtt = field("TimeFlowRttNs").unwrap();
    let filter = parse("Proto=tcp").unwrap();
    let mut got = s.group_values(&filter, &TimeRange::ALL, &g, rtt).unwrap();
    let mut want: HashMap<String, Vec<u64>> = HashMap::new();
    for f in flows
        .iter()
        .filter(|f| f.proto == 6 && f.time_flow_rtt_ns > 0)
    {
        want.entry(f.interface.clone())
            .or_default()
            .push(f.time_flow_rtt_ns);
    }
    assert_eq!(got.len(), want.len());
    for (iface, mut w) in want {
        let v = got
            .get_mut(&vec![crate::schema::Value::Str(iface.clone())])
            .unwrap();
        assert_eq!(v.len(), w.len(), "{iface}");
        w.sort_unstable();
        let q = collect::quantiles(v, &[0.5, 0.9, 1.0]);
        let nearest = |p: f64| w[((p * w.len() as f64).ceil() as usize).max(1) - 1];
        assert_eq!(q, vec![nearest(0.5), nearest(0.9), nearest(1.0)], "{iface}");
    }
    assert!(collect::quantiles(&mut [], &[0.5]).is_empty());
    let e = s
        .group_values(&filter, &TimeRange::ALL, &g, field("Interface").unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("not a number field"), "{e}");
}

#[test]
fn select_pages_through_history_by_sequence_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    // Three partitions' worth, appended in two batches.
    let mut flows = synth(3000, T0, 1_500_000);
    flows[1000].dst_port = 9999;
    s.append(&flows[..1700]).unwrap();
    s.append(&flows[1700..]).unwrap();
    s.flush().unwrap();
    let range = TimeRange {
        from_ms: 0,
        to_ms: u64::MAX,
    };
    let filter = parse("DstPort=443").unwrap();
    let want: u64 = flows.iter().filter(|f| f.dst_port == 443).count() as u64;
    let (mut after, mut seen, mut pages, mut sizes) = (0u64, Vec::new(), 0, Vec::new());
    loop {
        let page = s.select(&filter, &range, after, 97).unwrap();
        if page.is_empty() {
            break;
        }
        pages += 1;
        assert!(page.len() <= 97);
        sizes.push(page.len());
        assert!(page.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
        assert!(page.iter().all(|(_, f)| f.dst_port == 443));
        after = page.last().unwrap().0;
        seen.extend(page.into_iter().map(|(seq, _)| seq));
    }
    assert_eq!(seen.len() as u64, want, "every match once");
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "no repeats");
    assert!(pages > 1);
    // Every page but the last is full: a window short of matches is widened, not returned.
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&n| n == 97),
        "{sizes:?}"
    );
    // New flows arrive: the cursor picks up only them.
    let mut more = synth(50, T0 + 10, 5);
    more[49].dst_port = 9999;
    s.append(&more).unwrap();
    s.flush().unwrap();
    let next = s.select(&Expr::All, &range, after.max(3000), 1000).unwrap();
    assert_eq!(next.len(), 50, "only the new flows after the last sequence");
    // Two rare matches, 1,001 numbers after the cursor and the newest flow: the first is
    // found in a widened window (not the open-ended search), then the second after it.
    let rare = parse("DstPort=9999").unwrap();
    let seqs = |after| -> Vec<u64> {
        s.select(&rare, &range, after, 1)
            .unwrap()
            .into_iter()
            .map(|(q, f)| {
                assert_eq!(f.dst_port, 9999);
                q
            })
            .collect()
    };
    assert_eq!(seqs(0), [1001]);
    assert_eq!(seqs(1001), [3050]);
    assert!(seqs(3050).is_empty());
}

/// Found by the API load test (scripts/load.py): a listing took a partition's searcher twice,
/// once to search and once to read the hits' sequence numbers; a flush or a merge in between
/// renumbered the segments and the second lookup panicked ("index out of bounds"), answered 503.
#[test]
fn listing_while_flushes_and_merges_renumber_segments_never_fails() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path()));
    s.append(&synth(2_000, T0, 60_000)).unwrap();
    s.flush().unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, done) = (s.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..150u64 {
                s.append(&synth(50, T0 - i, 60_000)).unwrap();
                s.flush().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (s, done) = (s.clone(), done.clone());
            std::thread::spawn(move || {
                let mut listed = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let r = s
                        .list(&ListRequest {
                            filter: Expr::All,
                            range: TimeRange {
                                from_ms: T0 - 120_000,
                                to_ms: T0 + 1,
                            },
                            sort: SortBy::parse("-TimeFlowEndMs").unwrap(),
                            limit: 100,
                            offset: 0,
                        })
                        .expect("a listing during flushes");
                    assert_eq!(r.flows.len(), 100);
                    listed += 1;
                }
                listed
            })
        })
        .collect();
    writer.join().expect("writer");
    for r in readers {
        assert!(r.join().expect("a listing panicked") > 0);
    }
}

#[test]
fn top_on_raw_keys_agrees_with_ranking_every_group_with_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    // Three hours (partitions), three appends (segments) whose strings differ: each
    // segment numbers its strings its own way; some flows have none.
    let mut flows = synth(3000, T0, 3 * 3_600_000);
    for (i, f) in flows.iter_mut().enumerate().skip(1000) {
        f.interface = match i % 17 {
            0 => String::new(),
            n if i < 2000 => format!("eth{n}"),
            n => format!("br-{}", 17 - n),
        };
    }
    for part in flows.chunks(1000) {
        s.append(part).unwrap();
        s.flush().unwrap();
    }
    let by_flow_time = crate::query::parse("Proto=6").unwrap();
    for group_by in [
        "SrcAddr,DstAddr",
        "Interface",
        "Interface,DstPort",
        "SrcAddr,Interface,Proto",
        "DstPort",
    ] {
        let g = crate::query::parse_group_by(group_by).unwrap();
        for filter in [&Expr::All, &by_flow_time] {
            for metric in [Metric::Bytes, Metric::Packets, Metric::Flows] {
                for k in [0, 1, 5, 100_000] {
                    let all = s.aggregate(filter, &TimeRange::ALL, &g, None).unwrap();
                    let want = crate::aggregate::rank(all, metric, k);
                    let got = s.top(filter, &TimeRange::ALL, &g, metric, k).unwrap();
                    let at = format!("{group_by} {metric:?} top {k}");
                    assert_eq!(got.top, want.top, "{at}");
                    assert_eq!(got.others, want.others, "{at}");
                    assert_eq!(got.total, want.total, "{at}");
                    assert_eq!(got.group_count, want.group_count, "{at}");
                }
            }
        }
    }
    // Flows counted as groups with ties: every interface, empty included, once.
    let g = crate::query::parse_group_by("Interface").unwrap();
    let got = s
        .top(&Expr::All, &TimeRange::ALL, &g, Metric::Flows, 100)
        .unwrap();
    let mut names: Vec<String> = got
        .top
        .iter()
        .map(|(v, _)| v[0].to_json().as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(got.total.flows, 3000);
    assert!(names.contains(&String::new()), "{names:?}");
    names.dedup();
    assert_eq!(names.len(), got.top.len());
    assert_eq!(got.group_count, 3 + 16 + 16 + 1, "{names:?}");
}

/// One flush makes flows appended to many partitions durable and visible, and moves the
/// durable point past all of them; the partitions commit side by side, fewer threads than
/// partitions taking them in turn (two here, whatever the machine's cores).
#[test]
fn one_flush_commits_many_partitions_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let flows = synth(4000, T0, 6 * 3_600_000);
    s.append(&flows).unwrap();
    let parts = s.read_parts();
    let dirty: Vec<&Arc<Partition>> = parts.iter().filter(|p| p.is_dirty()).collect();
    assert!(dirty.len() > 2, "{} partitions written", dirty.len());
    assert_eq!(
        list_all(&s, "", TimeRange::ALL).flows.len(),
        0,
        "nothing flushed yet"
    );
    super::flush_side_by_side(&dirty, 2).unwrap();
    assert!(
        parts.iter().all(|p| !p.is_dirty()),
        "every partition flushed"
    );
    assert_eq!(list_all(&s, "", TimeRange::ALL).flows.len(), 4000);
    // Through the store: appended again to a few of them, only those flushed, the durable
    // point past every flow.
    s.append(&synth(10, T0, 60_000)).unwrap();
    s.flush().unwrap();
    assert_eq!(list_all(&s, "", TimeRange::ALL).flows.len(), 4010);
    assert_eq!(s.durable_seq(), 4010);
}
