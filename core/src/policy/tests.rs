use super::table::{Grid, Table, junit};
use super::*;

#[test]
fn documents_lists_and_lines_are_kept_and_bad_yaml_names_its_line() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n---\n# comment\napiVersion: v1\nkind: List\nitems:\n- kind: Pod\n  metadata: {name: a, namespace: x}\n- kind: Pod\n  metadata: {name: b, namespace: x}\n---\nkind: Pod\nmetadata: [unclosed\n---\nkind: NetworkPolicyList\nitems:\n- metadata: {name: p, namespace: x}\n  spec: {podSelector: {}}\n";
    let mut o = Objects::default();
    o.add_text("c.yaml", text);
    assert_eq!(o.items.len(), 4, "{:?}", o.items);
    assert_eq!(o.sources[0].to_string(), "c.yaml:1");
    assert_eq!(o.sources[2].to_string(), "c.yaml:6 (items[1])");
    assert_eq!(
        o.items[3]["kind"], "NetworkPolicy",
        "a typed list's items get its kind"
    );
    assert_eq!(o.problems.len(), 1, "{:?}", o.problems);
    let p = &o.problems[0];
    // The parser notices the unclosed list where the document ends.
    assert!(p.place.starts_with("c.yaml:17:"), "{p}");
    assert!(p.message.contains("invalid YAML"), "{p}");
    assert_eq!(
        o.pod_addresses()
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>(),
        ["x/a", "x/b"]
    );
    assert_eq!(o.without_policies().items.len(), 3);
}

#[test]
fn ports_parse_with_tcp_by_default_and_refuse_nonsense() {
    assert_eq!(
        "80".parse::<PortProto>().unwrap(),
        PortProto {
            port: 80,
            protocol: Protocol::Tcp
        }
    );
    assert_eq!(
        "53/udp".parse::<PortProto>().unwrap().protocol,
        Protocol::Udp
    );
    assert!(
        "0/TCP"
            .parse::<PortProto>()
            .unwrap_err()
            .contains("1 to 65535")
    );
    assert!("80/ICMP".parse::<PortProto>().unwrap_err().contains("ICMP"));
}

fn t(rows: &[&str]) -> Table {
    Table {
        pods: vec!["x/a".into(), "x/b".into(), "y/a".into()],
        grids: vec![Grid {
            port: "80/TCP".parse().unwrap(),
            rows: rows.iter().map(|r| r.chars().collect()).collect(),
        }],
    }
}

#[test]
fn tables_print_like_cyclonus_and_compare_cell_by_cell() {
    let e = t(&["#.X", ".#X", "..#"]);
    assert_eq!(
        e.render(),
        "probe: 80 TCP\n-\tx/a\tx/b\ty/a\nx/a\t#\t.\tX\nx/b\t.\t#\tX\ny/a\t.\t.\t#\n"
    );
    let o = t(&["#..", ".#X", "??#"]);
    let (cmp, diffs) = e.compare(&o);
    assert_eq!(cmp.grids[0].rows[0], vec!['#', '.', 'X']);
    assert_eq!(cmp.grids[0].rows[2], vec!['?', '?', '#']);
    assert_eq!(diffs.len(), 1);
    assert_eq!(
        (diffs[0].from.as_str(), diffs[0].to.as_str()),
        ("x/a", "y/a")
    );
    assert!(!diffs[0].expected && diffs[0].observed);
    let x = junit("policy", &e, &o, 1.5);
    assert!(
        x.contains("tests=\"6\" failures=\"1\" skipped=\"2\""),
        "{x}"
    );
    assert!(x.contains("name=\"x/a -&gt; y/a 80/TCP\"><failure message=\"expected blocked, observed allowed\"/>"), "{x}");
    let j = e.json();
    assert_eq!(j["tables"][0]["blocked"], 2);
    assert_eq!(j["tables"][0]["rows"][0]["blocked"][0], "y/a");
}

/// A prober on two "nodes": pods at .1 and .2 are here; it connects to .2's port 80 by
/// whatever protocol, refuses everything else, and speaks SCTP only when told.
struct FakeProber {
    sctp: bool,
    asked: std::sync::Mutex<Vec<Protocol>>,
}

impl crate::probe::Prober for FakeProber {
    fn probe(
        &self,
        t: &crate::probe::Target,
    ) -> Result<(crate::probe::Outcome, std::time::Duration), crate::probe::ProbeError> {
        if let Ok(mut a) = self.asked.lock() {
            a.push(t.protocol);
        }
        let ok = t.addr.to_string() == "10.0.0.2" && t.port == 80;
        Ok((
            if ok {
                crate::probe::Outcome::Connected
            } else {
                crate::probe::Outcome::Refused
            },
            std::time::Duration::ZERO,
        ))
    }

    fn supports(&self, p: Protocol) -> Result<(), crate::probe::ProbeError> {
        if p == Protocol::Sctp && !self.sctp {
            return Err(crate::probe::ProbeError::Unsupported {
                protocol: "SCTP",
                reason: "no SCTP in this kernel".into(),
            });
        }
        Ok(())
    }

    fn locate(&self, addr: std::net::IpAddr) -> Option<String> {
        ["10.0.0.1", "10.0.0.2"]
            .contains(&addr.to_string().as_str())
            .then(|| format!("ns-{addr}"))
    }
}

#[test]
fn sctp_ports_are_probed_where_the_prober_speaks_sctp_and_unknown_with_the_reason_elsewhere() {
    use super::probe::{ProbeOptions, observe};
    let pods: Vec<(String, Option<std::net::IpAddr>)> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("x/p{i}"), a.parse().ok()))
        .collect();
    let ports: Vec<PortProto> = ["80/TCP", "80/SCTP"]
        .iter()
        .map(|p| p.parse().expect("port"))
        .collect();
    let opts = ProbeOptions {
        timeout: std::time::Duration::from_millis(10),
        parallel: 2,
    };
    let without = FakeProber {
        sctp: false,
        asked: Default::default(),
    };
    let o = observe(&without, &pods, &ports, opts);
    assert_eq!(o.table.grids[0].rows[0], vec!['#', '.', 'X']);
    assert_eq!(o.table.grids[1].rows[0], vec!['#', '?', '?']);
    assert_eq!(o.table.grids[1].rows[1], vec!['?', '#', '?']);
    assert_eq!(o.unprobed_ports.len(), 1);
    assert_eq!(o.unprobed_ports[0].port, ports[1]);
    assert_eq!(
        o.unprobed_ports[0].reason,
        "SCTP probes cannot be made here: no SCTP in this kernel"
    );
    assert!(
        without
            .asked
            .lock()
            .expect("asked")
            .iter()
            .all(|p| *p == Protocol::Tcp),
        "no SCTP probe was attempted"
    );
    // The third pod is on no namespace here: its row is unknown, and it is listed.
    assert_eq!(o.unprobed.len(), 1);
    assert_eq!(o.table.grids[0].rows[2], vec!['?', '?', '#']);

    let with = FakeProber {
        sctp: true,
        asked: Default::default(),
    };
    let o = observe(&with, &pods, &ports, opts);
    assert!(o.unprobed_ports.is_empty());
    assert_eq!(o.table.grids[1].rows[0], vec!['#', '.', 'X']);
    assert_eq!(o.outcomes[1][0][2], "refused");
    let asked = with.asked.lock().expect("asked");
    // Two sources on this node, two destinations each, per port.
    assert_eq!(asked.iter().filter(|p| **p == Protocol::Sctp).count(), 4);
}

/// The what-if's conversations, folded while the store scans, are the ones grouping every
/// connection first and folding the groups afterwards gives (the way it was read before):
/// TCP by who opened (OPEN, or the SYN+ACK reply), else the higher port as the client, no
/// conversation without a server port or outside TCP/UDP/SCTP; every flow counted.
#[test]
fn conversations_folded_while_scanning_equal_folding_every_connection() {
    use crate::flow::opened_by_source;
    use crate::query::TimeRange;
    use crate::schema::Value as V;
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = crate::store::StoreConfig::new(dir.path());
    cfg.partition_ms = 600_000;
    let store = crate::store::Store::open(cfg).expect("store");
    let t0 = 1_800_000_000_000u64;
    let mut flows = crate::store::tests::synth(4000, t0, 3_000_000);
    for (i, f) in flows.iter_mut().enumerate() {
        match i % 9 {
            0 => f.flags |= crate::flow::FLAG_SYN_NO_ACK,
            1 => f.src_port = 0,
            2 => f.dst_port = 0,
            3 => f.proto = 132,
            // A few connections' ports repeat, so conversations gather several flows.
            4 | 5 => f.src_port = 40_000 + (i % 3) as u16,
            _ => {}
        }
    }
    store.append(&flows).expect("append");
    store.flush().expect("flush");
    let range = TimeRange {
        from_ms: t0 - 4_000_000,
        to_ms: t0 + 1,
    };
    let filter = crate::query::parse("").expect("filter");
    let got = super::whatif::observe(&store, &filter, &range).expect("observe");

    let keys: Vec<_> = ["SrcAddr", "DstAddr", "SrcPort", "DstPort", "Proto", "Flags"]
        .iter()
        .map(|n| crate::schema::field(n).expect("field"))
        .collect();
    let ip = |v: &V| match v {
        V::Ip(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(*a)),
        _ => panic!("not an address"),
    };
    let n = |v: &V| match v {
        V::U64(x) => *x,
        _ => panic!("not a number"),
    };
    let mut want: BTreeMap<(IpAddr, IpAddr, u16, Protocol), (u64, u64)> = BTreeMap::new();
    let mut total = 0;
    for ((k, _), t) in store.aggregate(&filter, &range, &keys, None).expect("agg") {
        total += t.flows;
        let (src, dst, sp, dp) = (ip(&k[0]), ip(&k[1]), n(&k[2]) as u16, n(&k[3]) as u16);
        let Some(p) = Protocol::from_number(n(&k[4]) as u8) else {
            continue;
        };
        let from_src = match (p, opened_by_source(n(&k[5]) as u16)) {
            (Protocol::Tcp, Some(s)) => s,
            _ if sp == 0 => true,
            _ if dp == 0 => false,
            _ => dp <= sp,
        };
        let key = if from_src {
            (src, dst, dp, p)
        } else {
            (dst, src, sp, p)
        };
        if key.2 == 0 {
            continue;
        }
        let e = want.entry(key).or_default();
        e.0 += t.flows;
        e.1 += t.bytes;
    }
    assert_eq!(got.flows, total);
    assert_eq!(total, 4000);
    let got: BTreeMap<_, _> = got
        .conversations
        .iter()
        .map(|c| ((c.client, c.server, c.port, c.protocol), (c.flows, c.bytes)))
        .collect();
    assert!(got.len() > 1000, "{}", got.len());
    assert!(
        got.values().any(|v| v.0 > 1),
        "some conversation has several flows"
    );
    assert!(got.keys().any(|k| k.3 == Protocol::Sctp));
    assert_eq!(got, want);
}
