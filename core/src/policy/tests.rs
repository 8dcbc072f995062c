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
