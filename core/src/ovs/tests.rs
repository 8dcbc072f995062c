use super::views::{FlowFilter, churn, graph, tree};
use super::*;
use serde_json::json;

#[allow(clippy::too_many_arguments)]
fn dp(
    line: u64,
    ufid: &str,
    recirc: u64,
    port: &str,
    packets: u64,
    recircs: &[u64],
    outputs: &[&str],
    m: serde_json::Value,
    actions: serde_json::Value,
) -> DpFlow {
    let mut matched = m;
    matched["recirc_id"] = json!({"value": format!("{recirc:#x}")});
    matched["in_port"] = json!({"value": port});
    DpFlow {
        datapath: "netdev@ovs-netdev".into(),
        line,
        ufid: Some(ufid.into()),
        recirc_id: recirc,
        in_port: port.into(),
        packets,
        bytes: packets * 100,
        used_s: Some(0.5),
        used_ms: Some(10_000),
        matched: matched.into(),
        info: json!({"packets": packets}).into(),
        actions: actions.into(),
        recircs: recircs.to_vec(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        warnings: vec![],
        rules: None,
        text: format!(
            "ufid:{ufid}, recirc_id({recirc:#x}),in_port({port}), packets:{packets}, actions:x"
        ),
    }
}

fn sample() -> Vec<DpFlow> {
    let ip = json!({"ipv4": {"src": {"value": "198.18.50.1", "mask": "255.255.255.255"}, "dst": {"value": "198.18.50.2", "mask": "0.0.0.0"}, "proto": {"value": "6", "mask": "0xff"}}, "tcp": {"src": {"value": "0", "mask": "0"}, "dst": {"value": "5201", "mask": "0xffff"}}});
    vec![
        dp(
            1,
            "a",
            0,
            "ova",
            10,
            &[1],
            &[],
            ip.clone(),
            json!([{"ct": {"zone": "5"}}, {"recirc": "0x1"}]),
        ),
        dp(
            2,
            "b",
            1,
            "ova",
            7,
            &[],
            &["ovb"],
            ip.clone(),
            json!([{"output": {"port": "ovb"}}]),
        ),
        dp(
            3,
            "c",
            1,
            "ova",
            3,
            &[2],
            &[],
            ip.clone(),
            json!([{"check_pkt_len": {"size": "200", "gt": [{"recirc": "0x2"}], "le": []}}]),
        ),
        dp(
            4,
            "d",
            0,
            "ovb",
            5,
            &[],
            &["ova"],
            json!({}),
            json!([{"output": {"port": "ova"}}]),
        ),
        // recirc 2 has no flows: the tree says so.
    ]
}

#[test]
fn tree_chains_recirculation_under_in_port_and_sums_packets() {
    let flows = sample();
    let t = tree(&flows, &FlowFilter::default());
    assert_eq!(t.roots.len(), 2);
    let ova = &t.roots[0];
    assert_eq!((ova.recirc_id, ova.in_port.as_str()), (0, "ova"));
    assert_eq!(ova.subtree_packets, 20);
    let child = &ova.flows[0].children[0];
    assert_eq!((child.recirc_id, child.packets), (1, 10));
    assert_eq!(
        child.flows[0].ufid.as_deref(),
        Some("b"),
        "busiest flow first"
    );
    assert_eq!(t.missing, vec![(2, "ova".to_string())]);

    // A filter keeps the path to a matching flow and drops the rest.
    let f = FlowFilter::parse("output=ovb").unwrap();
    let t = tree(&flows, &f);
    assert_eq!(t.roots.len(), 1);
    assert!(!t.roots[0].flows[0].matches, "kept for its child only");
    assert_eq!(t.roots[0].flows[0].children[0].flows.len(), 1);
    assert!(
        FlowFilter::parse("color=red")
            .unwrap_err()
            .to_string()
            .contains("unknown term \"color\"")
    );
    assert!(
        FlowFilter::parse("recirc_id=x")
            .unwrap_err()
            .to_string()
            .contains("byte 0")
    );
}

#[test]
fn graph_has_recirc_output_and_ct_edges_weighted_by_packets() {
    let g = graph(&sample(), &FlowFilter::default());
    let edge = |from: &str, to: &str| {
        g.edges
            .iter()
            .find(|e| e.from == from && e.to == to)
            .map(|e| e.packets)
    };
    assert_eq!(edge("recirc:0x0:ova", "recirc:0x1:ova"), Some(10));
    assert_eq!(edge("recirc:0x0:ova", "ct:5"), Some(10));
    assert_eq!(edge("recirc:0x1:ova", "output:ovb"), Some(7));
    assert_eq!(
        edge("recirc:0x1:ova", "recirc:0x2:ova"),
        Some(3),
        "from inside check_pkt_len"
    );
    let n = g.nodes.iter().find(|n| n.id == "recirc:0x1:ova").unwrap();
    assert_eq!((n.flows.len(), n.packets), (2, 10));
}

#[test]
fn churn_counts_added_removed_and_packets_between() {
    let before = sample();
    let mut after = sample();
    after.remove(3);
    after[0].packets = 25;
    after.push(dp(5, "e", 0, "ovc", 4, &[], &[], json!({}), json!([])));
    let c = churn(&before, 1000, &after, 3000, 2);
    assert_eq!((c.added, c.removed, c.seconds), (1, 1, 2.0));
    assert_eq!(c.churn_per_s, 1.0);
    assert_eq!(
        c.top,
        vec![(0, 15), (3, 4)],
        "unchanged counters are not busy; a new flow counts whole"
    );
}

#[test]
fn join_uses_masks_ports_and_time() {
    let flows = sample();
    let mut f = crate::Flow {
        src_addr: "198.18.50.1".parse().unwrap(),
        dst_addr: "198.18.50.9".parse().unwrap(),
        proto: 6,
        src_port: 40000,
        dst_port: 5201,
        interface: "ova".into(),
        time_flow_start_ms: 9_000,
        time_flow_end_ms: 9_500,
        ..Default::default()
    };
    assert!(join::keys_match(&flows[0], &f), "dst is masked out");
    assert_eq!(
        join::conversations(&flows[0], std::slice::from_ref(&f), 5_000),
        vec![0]
    );
    f.dst_port = 5202;
    assert!(!join::keys_match(&flows[0], &f));
    f.dst_port = 5201;
    f.interface = "ovb".into();
    assert!(join::conversations(&flows[0], std::slice::from_ref(&f), 5_000).is_empty());
    f.interface = "ova".into();
    f.time_flow_end_ms = 2_000;
    f.time_flow_start_ms = 1_000;
    assert!(
        join::conversations(&flows[0], std::slice::from_ref(&f), 5_000).is_empty(),
        "ended before the window"
    );
    f.time_flow_end_ms = 9_500;
    let p = join::paths(&f, &flows, 5_000);
    assert_eq!(
        p.len(),
        2,
        "ct -> recirc -> output, and ct -> recirc -> check_pkt_len"
    );
    assert!(p.iter().all(|path| path[0].flow == 0 && path.len() == 2));
}

#[test]
fn collections_are_kept_listed_found_by_time_and_retained() {
    let dir = tempfile::tempdir().unwrap();
    let s = CollectionStore::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for t in [1000u64, 2000, 3000] {
        ids.push(
            s.put(&Collection {
                time_ms: t,
                origin: "live".into(),
                datapaths: vec![DatapathDump {
                    name: "dp".into(),
                    text: "a actions:1\nb actions:2".into(),
                }],
                ..Default::default()
            })
            .unwrap(),
        );
    }
    let list = s.list().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].dp_lines, 2);
    assert_eq!(s.at(Some(2500)).unwrap().as_deref(), Some(ids[1].as_str()));
    assert_eq!(s.at(None).unwrap().as_deref(), Some(ids[2].as_str()));
    assert_eq!(s.get(&ids[0]).unwrap().time_ms, 1000);
    assert!(matches!(s.get("../x"), Err(OvsError::Invalid(_))));
    assert!(matches!(s.get("123-1"), Err(OvsError::NotFound(_))));
    assert_eq!(s.retain(1500, 10).unwrap(), 1);
    assert_eq!(s.retain(0, 1).unwrap(), 1);
    assert_eq!(s.list().unwrap().len(), 1);
}

#[test]
fn dpctl_show_and_conntrack_parse() {
    let ports = parse_dpctl_show(
        "netdev@ovs-netdev:\n  lookups: hit:0 missed:0 lost:0\n  flows: 0\n  port 0: ovs-netdev (tap)\n  port 2: ova\n  port 4: gnv0 (geneve: packet_type=ptap)\n",
    );
    assert_eq!(ports.len(), 3);
    assert_eq!(
        (
            ports[1].number,
            ports[1].name.as_str(),
            ports[1].datapath.as_str()
        ),
        (2, "ova", "netdev@ovs-netdev")
    );
    assert_eq!(ports[2].kind, "geneve");
    let ct = count_conntrack(
        "icmp,orig=(src=1.1.1.1,dst=2.2.2.2,id=1,type=8,code=0),reply=(src=2.2.2.2,dst=1.1.1.1,id=1,type=0,code=0),zone=5\ntcp,orig=(src=1.1.1.1,dst=2.2.2.2,sport=1,dport=2),reply=(src=2.2.2.2,dst=1.1.1.1,sport=2,dport=1),zone=5,protoinfo=(state=ESTABLISHED)\nicmp,orig=(src=1.1.1.1,dst=2.2.2.3,id=1,type=8,code=0),reply=(src=2.2.2.3,dst=1.1.1.1,id=1,type=0,code=0),zone=5\n",
    );
    assert_eq!(ct.len(), 2);
    assert_eq!(
        (ct[0].proto.as_str(), ct[0].zone, ct[0].count),
        ("icmp", 5, 2)
    );
}

struct Fake;
impl DumpDecoder for Fake {
    fn decode(&self, text: &str, _: Syntax, first: u64) -> Result<Vec<DecodedFields>, OvsError> {
        Ok(text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let line = (first + i as u64).to_string();
                if l == "bad" {
                    vec![("kind".into(), "error".into()), ("line".into(), line), ("column".into(), "1".into()), ("message".into(), "bad line".into())]
                } else {
                    vec![("kind".into(), "dp-flow".into()), ("line".into(), line), ("json".into(), r#"{"match":{"recirc_id":{"value":"0x2"},"in_port":{"value":"p"}},"info":{"packets":3,"bytes":9,"used":1.5},"actions":[],"recircs":[],"outputs":[]}"#.into())]
                }
            })
            .collect())
    }
}

#[test]
fn decode_dump_numbers_lines_across_chunks_and_keeps_errors() {
    let mut text = String::new();
    for i in 0..(CHUNK_LINES + 5) {
        text.push_str(if i == CHUNK_LINES + 1 {
            "bad\n"
        } else {
            "x actions:1\n"
        });
    }
    let mut last = (0, 0);
    let mut d = decode_dump(&Fake, &text, Syntax::Dpctl, "dp", |done, total| {
        last = (done, total)
    })
    .unwrap();
    assert_eq!(
        last,
        (CHUNK_LINES + 5, CHUNK_LINES + 5),
        "progress ends at the total"
    );
    assert_eq!(d.flows.len(), CHUNK_LINES + 4);
    assert_eq!(d.errors.len(), 1);
    assert_eq!(
        (d.errors[0].line, d.errors[0].text.as_str()),
        (CHUNK_LINES as u64 + 2, "bad")
    );
    assert_eq!((d.flows[0].recirc_id, d.flows[0].packets), (2, 3));
    d.set_time(10_000);
    assert_eq!(d.flows[0].used_ms, Some(8_500));
    assert_eq!(
        Syntax::detect(" cookie=0x0, table=0, actions=drop"),
        Syntax::Ofctl
    );
}

#[test]
fn trees_stop_at_a_depth_and_a_number_of_entries() {
    // A chain of 100 recirculations: followed to the depth limit, and said so.
    let chain: Vec<DpFlow> = (0..100u64)
        .map(|r| {
            dp(
                r + 1,
                &format!("u{r}"),
                r,
                "p",
                1,
                &[r + 1],
                &[],
                json!({}),
                json!([]),
            )
        })
        .collect();
    let t = tree(&chain, &FlowFilter::default());
    assert!(t.truncated);
    assert_eq!(t.nodes, views::MAX_TREE_DEPTH);
    // 3 levels of 300 flows each sending to the next: 300 + 300*300 + ... entries, cut.
    let mut wide = Vec::new();
    for level in 0..3u64 {
        for i in 0..300u64 {
            wide.push(dp(
                0,
                &format!("w{level}-{i}"),
                level,
                "p",
                1,
                &[level + 1],
                &[],
                json!({}),
                json!([]),
            ));
        }
    }
    let t = tree(&wide, &FlowFilter::default());
    assert!(t.truncated, "{} nodes", t.nodes);
}

#[test]
fn a_vlan_tagged_megaflow_joins_on_its_inner_packet() {
    let m = json!({"eth_type": {"value": "0x8100"}, "vlan": {"vid": {"value": "100"}},
        "encap": {"eth_type": {"value": "0x0800"}, "ipv4": {"src": {"value": "10.0.0.1"}, "dst": {"value": "10.0.0.2"}, "proto": {"value": "6"}}, "tcp": {"dst": {"value": "80"}}}});
    let d = dp(1, "v", 0, "p", 1, &[], &["q"], m, json!([]));
    let mut f = crate::Flow {
        etype: 0x0800,
        src_addr: "10.0.0.1".parse().unwrap(),
        dst_addr: "10.0.0.2".parse().unwrap(),
        proto: 6,
        dst_port: 80,
        ..Default::default()
    };
    assert!(join::keys_match(&d, &f));
    f.dst_port = 81;
    assert!(!join::keys_match(&d, &f), "the inner TCP port narrows it");
}
