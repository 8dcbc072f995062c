//! Open vSwitch against the real switch: Debian's openvswitch-switch (3.1) with a userspace
//! (netdev) bridge between network namespaces, OpenFlow rules using conntrack, recirculation,
//! NAT, a VLAN push, check_pkt_len and a meter. The agent collects it live; decoding is
//! checked field by field against the OVS project's own parser (PyPI `ovs`, with
//! ovs-flowviz, installed by scripts/deps.sh), and the tree and graph against ovs-flowviz.

use crate::util::{Agent, KillOnDrop, WEIR, browser_test, heavy, now_ms, require, sh, unique};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The reference parser's Python (a venv scripts/deps.sh makes with PyPI `ovs[flowviz]`).
const REFERENCE_PY: &str = "/opt/weir-ovsref/bin/python";

/// A private ovsdb-server + ovs-vswitchd in a run directory of its own, a netdev bridge, and
/// the namespaces and veths of its ports; all removed on drop.
struct Switch {
    rundir: PathBuf,
    bridge: String,
    netns: Vec<String>,
    links: Vec<String>,
}

impl Switch {
    fn start(dir: &Path) -> Switch {
        require(&[
            "ovsdb-tool",
            "ovsdb-server",
            "ovs-vswitchd",
            "ovs-vsctl",
            "ovs-appctl",
            "ovs-ofctl",
        ]);
        let rundir = dir.join("ovs");
        std::fs::create_dir_all(&rundir).expect("ovs dir");
        let s = Switch {
            rundir,
            bridge: unique("wbr"),
            netns: Vec::new(),
            links: Vec::new(),
        };
        let d = s.rundir.display();
        s.sh(&format!(
            "ovsdb-tool create {d}/conf.db /usr/share/openvswitch/vswitch.ovsschema && \
             ovsdb-server {d}/conf.db --remote=punix:{d}/db.sock --pidfile --detach --log-file && \
             ovs-vsctl --db=unix:{d}/db.sock --no-wait init && \
             ovs-vswitchd unix:{d}/db.sock --pidfile --detach --log-file"
        ));
        s.vsctl(&format!(
            "add-br {b} -- set bridge {b} datapath_type=netdev protocols=OpenFlow10,OpenFlow13",
            b = s.bridge
        ));
        s
    }

    /// A shell command with the switch's environment.
    fn sh(&self, cmd: &str) -> String {
        let d = self.rundir.display();
        sh(&format!(
            "export OVS_RUNDIR={d} OVS_DBDIR={d} OVS_LOGDIR={d} OVS_SYSCONFDIR={d}; {cmd}"
        ))
    }

    fn vsctl(&self, args: &str) -> String {
        self.sh(&format!(
            "ovs-vsctl --db=unix:{}/db.sock {args}",
            self.rundir.display()
        ))
    }

    /// `ovs-ofctl CMD` on the bridge (through its management socket), then `rest`.
    fn ofctl(&self, cmd: &str, rest: &str) -> String {
        let mgmt = self.rundir.join(format!("{}.mgmt", self.bridge));
        let t = Instant::now();
        while !mgmt.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no {}",
                mgmt.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.sh(&format!(
            "ovs-ofctl -O OpenFlow13 {cmd} unix:{} {rest}",
            mgmt.display()
        ))
    }

    /// A port: a veth whose other end is in a new namespace, with `addr` there (if any).
    /// Checksum offload is off in the namespace: the userspace datapath's conntrack checks
    /// TCP checksums, and an offloaded one is not filled in yet when OVS reads the packet.
    fn port(&mut self, addr: Option<&str>) -> (String, String) {
        let ns = unique("wo");
        let ifname = unique("wov");
        let peer = format!("{ifname}p");
        sh(&format!(
            "ip netns add {ns} && ip netns exec {ns} sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1 && \
             ip link add {ifname} type veth peer name {peer} netns {ns} && \
             sysctl -qw net.ipv6.conf.{ifname}.disable_ipv6=1 && \
             ip link set {ifname} up && ip -n {ns} link set {peer} up && ip -n {ns} link set lo up && \
             ip netns exec {ns} ethtool -K {peer} tx off >/dev/null"
        ));
        if let Some(a) = addr {
            sh(&format!("ip -n {ns} addr add {a}/24 dev {peer}"));
        }
        self.netns.push(ns.clone());
        self.links.push(ifname.clone());
        self.vsctl(&format!("add-port {} {ifname}", self.bridge));
        (ns, ifname)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        for pid in ["ovs-vswitchd.pid", "ovsdb-server.pid"] {
            if let Ok(p) = std::fs::read_to_string(self.rundir.join(pid)) {
                let _ = Command::new("kill").arg(p.trim()).status();
            }
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // Deleting a namespace removes its veth pairs; links left over go here.
        for l in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", l])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The rules: IPv4 from A goes through conntrack (zone 5) and recirculates; new connections
/// are committed with source NAT and metered; established ones are metered and split by
/// check_pkt_len (large packets also go, VLAN-tagged, to the mirror port C); replies go
/// through conntrack with NAT back. ARP is switched normally.
fn rules(a: &str, b: &str, c: &str) -> String {
    format!(
        "table=0,priority=10,arp,actions=NORMAL\n\
         table=0,priority=100,ip,in_port={a},actions=ct(table=1,zone=5)\n\
         table=0,priority=100,ip,in_port={b},actions=ct(table=1,zone=5,nat)\n\
         table=0,priority=0,actions=drop\n\
         table=1,priority=100,ct_state=+trk+new,ip,in_port={a},actions=meter:1,ct(commit,zone=5,nat(src=198.18.61.1)),output:{b}\n\
         table=1,priority=100,ct_state=+trk+est,ip,in_port={a},actions=meter:1,check_pkt_larger(600)->NXM_NX_REG0[0],resubmit(,2)\n\
         table=1,priority=100,ct_state=+trk+est,ip,in_port={b},actions=output:{a}\n\
         table=1,priority=90,ct_state=+trk+rel,ip,actions=NORMAL\n\
         table=1,priority=0,actions=drop\n\
         table=2,priority=10,reg0=0x1/0x1,actions=output:{b},push_vlan:0x8100,set_field:4106->vlan_vid,output:{c}\n\
         table=2,priority=5,actions=output:{b}\n"
    )
}

fn weir(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(WEIR).args(args).output().expect("weir");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the reference comparison on `dump` against weir's JSON; returns its report.
fn reference(mode: &str, dump: &Path, ours: &str) -> Value {
    assert!(
        Path::new(REFERENCE_PY).exists(),
        "prerequisite missing: {REFERENCE_PY} (scripts/deps.sh test makes it: PyPI ovs[flowviz])"
    );
    let json = dump.with_extension(format!("{mode}.weir.json"));
    std::fs::write(&json, ours).expect("write weir json");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/ovs_reference.py");
    let out = Command::new(REFERENCE_PY)
        .args([script, mode])
        .arg(dump)
        .arg(&json)
        .output()
        .expect("reference script");
    assert!(
        out.status.success(),
        "reference {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reference report")
}

/// weir's view of a dump file, decoded here with no agent.
fn offline(view: &str, dump: &Path) -> String {
    let (code, out, err) = weir(&["ovs", view, "-i", &dump.to_string_lossy(), "--json"]);
    assert_eq!(code, 0, "weir ovs {view}: {err}");
    out
}

fn assert_agrees(mode: &str, dump: &Path, ours: &str, min_compared: u64) -> Value {
    let r = reference(mode, dump, ours);
    assert!(
        r["compared"].as_u64().unwrap_or(0) >= min_compared,
        "{mode}: too few compared: {r}"
    );
    assert_eq!(
        r["mismatches"],
        Value::Array(vec![]),
        "{mode}: weir and the reference differ: {r}"
    );
    r
}

/// Waits for a collection whose datapath flows satisfy `ok`; returns the flows document.
fn wait_collection(agent: &Agent, ok: impl Fn(&[Value]) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let (s, v) = agent.get("/api/v1/ovs/flows", &[]);
        if s == 200 && ok(v["flows"].as_array().map(Vec::as_slice).unwrap_or(&[])) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no collection as expected: {s} {v}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn has_action(f: &Value, name: &str) -> bool {
    f["text"]
        .as_str()
        .and_then(|t| t.split_once("actions:"))
        .is_some_and(|(_, a)| a.contains(name))
}

#[test]
fn ovs_datapath_flows_are_collected_decoded_like_the_reference_and_joined_to_captured_flows() {
    require(&["iperf3", "ping", "ethtool"]);
    let _alone = heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sw = Switch::start(dir.path());
    let (ns_a, a) = sw.port(Some("198.18.61.1"));
    let (ns_b, b) = sw.port(Some("198.18.61.2"));
    let (_ns_c, c) = sw.port(None);
    sw.ofctl("add-meter", "meter=1,kbps,band=type=drop,rate=10000000");
    // A group no rule uses (it would change the traffic), to see groups read.
    sw.ofctl(
        "add-group",
        &format!("'group_id=7,type=select,bucket=weight:60,actions=output:{b},bucket=weight:40,watch_port:{c},actions=output:{c}'"),
    );
    let flows_file = dir.path().join("of.txt");
    std::fs::write(&flows_file, rules(&a, &b, &c)).expect("rules");
    sw.ofctl("add-flows", &flows_file.to_string_lossy());

    let rundir = sw.rundir.to_string_lossy().into_owned();
    let agent = Agent::start(dir.path(), &["--ovs", "1s", "--ovs-rundir", &rundir]);

    // Traffic: pings (small and large: both check_pkt_len branches) and an iperf3 TCP run.
    let start = now_ms();
    let _server = KillOnDrop(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns_b,
                "iperf3",
                "-s",
                "-1",
                "-B",
                "198.18.61.2",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("iperf3 server"),
    );
    std::thread::sleep(Duration::from_millis(500));
    sh(&format!(
        "ip netns exec {ns_a} ping -c 4 -i 0.2 -W 1 198.18.61.2"
    ));
    sh(&format!(
        "ip netns exec {ns_a} ping -c 3 -i 0.2 -s 1000 -W 1 198.18.61.2"
    ));
    sh(&format!(
        "ip netns exec {ns_a} iperf3 -c 198.18.61.2 -t 2 -b 20M -M 1000"
    ));
    // And HTTP: curl from A to a Python server on B (retried while the server starts).
    let _http = KillOnDrop(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns_b,
                "python3",
                "-m",
                "http.server",
                "8080",
            ])
            .args(["--bind", "198.18.61.2", "--directory", "/usr/share/doc"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("http server"),
    );
    sh(&format!(
        "ip netns exec {ns_a} sh -c 'for i in $(seq 20); do curl -sf -o /dev/null --max-time 2 http://198.18.61.2:8080/ && exit 0; sleep 0.2; done; exit 1'"
    ));
    sh(&format!(
        "ip netns exec {ns_a} curl -sf -o /dev/null http://198.18.61.2:8080/"
    ));
    agent.flush();

    // The agent's collection has the conntrack, recirculation, NAT, meter, check_pkt_len and
    // VLAN flows the rules make.
    let doc = wait_collection(&agent, |fl| {
        [
            "ct(",
            "recirc(",
            "nat",
            "meter(",
            "check_pkt_len(",
            "push_vlan(",
        ]
        .iter()
        .all(|n| fl.iter().any(|f| has_action(f, n)))
    });
    let flows = doc["flows"].as_array().expect("flows").clone();
    let coll = doc["collection"]["id"].as_str().expect("id").to_string();
    for f in &flows {
        for k in [
            "ufid",
            "recirc_id",
            "in_port",
            "packets",
            "bytes",
            "used",
            "match",
            "actions",
        ] {
            assert!(f.get(k).is_some(), "flow without {k}: {f}");
        }
    }
    let time_ms = doc["collection"]["time_ms"].as_u64().expect("time");
    assert!(time_ms >= start && time_ms <= now_ms());
    let used = flows
        .iter()
        .filter_map(|f| f["used_ms"].as_u64())
        .max()
        .expect("a used flow");
    assert!(
        used >= start && used <= time_ms,
        "used: became absolute: {used}"
    );

    // Decoding equals the reference parser's, field by field, on a dump of the same switch.
    let dp_dump = dir.path().join("dp.txt");
    std::fs::write(&dp_dump, sw.sh("ovs-appctl dpctl/dump-flows -m")).expect("dump");
    let of_dump = dir.path().join("of-dump.txt");
    std::fs::write(&of_dump, sw.ofctl("dump-flows", "")).expect("dump");
    let r = assert_agrees("dpctl", &dp_dump, &offline("flows", &dp_dump), 6);
    assert!(r["fields"].as_u64().unwrap_or(0) > 150, "{r}");
    assert_agrees("ofctl", &of_dump, &offline("openflow", &of_dump), 10);
    assert_agrees("tree", &dp_dump, &offline("tree", &dp_dump), 6);
    assert_agrees("graph", &dp_dump, &offline("graph", &dp_dump), 5);

    // The join: the recirc_id 0 flow of port A covered the iperf3 conversation, and the
    // megaflow's packets agree with what the capture counted on A.
    let root = flows
        .iter()
        .filter(|f| f["recirc_id"] == 0 && f["in_port"] == a.as_str() && has_action(f, "recirc("))
        .max_by_key(|f| f["packets"].as_u64().unwrap_or(0))
        .expect("the conntrack flow of port A");
    let idx = root["index"].as_u64().expect("index").to_string();
    let j = agent.ok(
        "/api/v1/ovs/conversations",
        &[("collection", &coll), ("flow", &idx)],
    );
    let convs = j["conversations"].as_array().expect("conversations");
    assert!(
        convs
            .iter()
            .any(|c| c["DstPort"] == 5201 && c["Proto"] == 6),
        "iperf3 conversation not joined: {j}"
    );
    assert!(
        convs
            .iter()
            .any(|c| c["DstPort"] == 8080 && c["Proto"] == 6),
        "curl's HTTP conversation not joined: {j}"
    );
    let ovs_packets: u64 = flows
        .iter()
        .filter(|f| f["recirc_id"] == 0 && f["in_port"] == a.as_str() && has_action(f, "ct("))
        .map(|f| f["packets"].as_u64().unwrap_or(0))
        .sum();
    // The capture's records of A's packets that crossed port A (deduplicated sightings list
    // every interface in `Interfaces`; the record's counts are the kept sighting's).
    let captured = agent.ok(
        "/api/v1/flows",
        &[
            ("filter", "SrcAddr=198.18.61.1 and DstAddr=198.18.61.2"),
            ("from", &(start - 1000).to_string()),
            ("limit", "10000"),
        ],
    );
    let on_a: Vec<&Value> = captured["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| {
            f["Interface"] == a.as_str()
                || f["Interfaces"]
                    .as_str()
                    .is_some_and(|l| l.split(',').any(|i| i == a))
        })
        .collect();
    let sum = |k: &str| on_a.iter().map(|f| f[k].as_u64().unwrap_or(0)).sum::<u64>();
    // OVS reads the port's frames (socket buffers, as the interface counters count them);
    // weir's Packets counts the segments of offloaded ones, its Skbs what OVS reads.
    let (ebpf_packets, ebpf_skbs) = (sum("Packets"), sum("Skbs"));
    let megaflows = flows.iter().filter(|f| f["in_port"] == a.as_str()).count() as u64;
    let diff = ovs_packets.abs_diff(ebpf_skbs);
    println!(
        "port A: OVS megaflows {ovs_packets} packets; eBPF at TC {ebpf_skbs} skbs ({ebpf_packets} segments); {megaflows} megaflows"
    );
    assert!(ebpf_skbs > 1000, "iperf3 traffic captured: {ebpf_skbs}");
    // OVS's port counter agrees with the capture: both count the frames that reached port
    // A. The megaflows count fewer: the packets upcalled to install each of them, and those
    // of other megaflows (ARP) are not in these (docs/OVS.md).
    let show = sw.sh("ovs-appctl dpctl/show -s");
    let port_rx: u64 = show
        .split(&format!(": {a}\n"))
        .nth(1)
        .and_then(|rest| rest.split("RX packets:").nth(1))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no RX counter for {a} in:\n{show}"));
    println!("port A: OVS port RX {port_rx} packets; megaflows {ovs_packets}");
    assert!(
        port_rx.abs_diff(ebpf_skbs) <= 10,
        "OVS port RX {port_rx} vs eBPF {ebpf_skbs} skbs on {a}"
    );
    assert!(
        ovs_packets <= port_rx && diff <= ebpf_skbs / 10,
        "megaflows {ovs_packets} vs eBPF {ebpf_skbs} skbs on {a}: more apart than the upcalled packets explain ({diff})"
    );
    // The join reports both counts for the megaflow.
    assert_eq!(j["megaflow_packets"], root["packets"]);
    assert!(
        j["captured_packets"].as_u64().unwrap_or(0) > 1000,
        "{}",
        j["captured_packets"]
    );

    // From a captured conversation to its datapath path: ct -> recirc -> meter/check_pkt_len.
    let p = agent.ok(
        "/api/v1/ovs/path",
        &[
            ("collection", &coll),
            ("SrcAddr", "198.18.61.1"),
            ("DstAddr", "198.18.61.2"),
            ("Proto", "6"),
            ("DstPort", "5201"),
            ("Interface", &a),
        ],
    );
    let paths = p["paths"].as_array().expect("paths");
    assert!(
        paths.iter().any(|path| {
            let steps = path.as_array().map(Vec::as_slice).unwrap_or(&[]);
            steps.len() == 2
                && steps[0]["actions"]
                    .as_str()
                    .is_some_and(|x| x.contains("ct(") && x.contains("recirc("))
                && steps[1]["actions"]
                    .as_str()
                    .is_some_and(|x| x.contains("check_pkt_len") || x.contains(&b))
        }),
        "no ct -> recirc -> output path: {p}"
    );

    // Tree, graph and OpenFlow views through the API.
    let t = agent.ok("/api/v1/ovs/tree", &[("collection", &coll)]);
    let roots = t["tree"]["roots"].as_array().expect("roots");
    assert!(roots.iter().any(
        |n| n["in_port"] == a.as_str() && n["subtree_packets"].as_u64() > n["packets"].as_u64()
    ));
    let g = agent.ok(
        "/api/v1/ovs/graph",
        &[("collection", &coll), ("filter", &format!("in_port={a}"))],
    );
    assert!(
        g["graph"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .any(|e| e["kind"] == "ct")
    );
    let of = agent.ok("/api/v1/ovs/openflow", &[("collection", &coll)]);
    let tables = of["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 3, "{of}");
    assert!(
        tables[0]["next_tables"]
            .as_array()
            .expect("next")
            .contains(&Value::from(1))
    );
    assert!(
        tables
            .iter()
            .map(|t| t["n_packets"].as_u64().unwrap_or(0))
            .sum::<u64>()
            > 1000
    );

    // Which OpenFlow rules made each datapath flow: the agent traced the busiest ones
    // (`ofproto/trace` on each megaflow's match) and every rule lists the flows it made.
    assert!(of["traced"].as_u64().unwrap_or(0) >= 4, "{of}");
    let rules_of = |table: u64, actions: &str| -> usize {
        of["flows"]
            .as_array()
            .expect("flows")
            .iter()
            .position(|f| {
                f["table"] == table
                    && f["text"]
                        .as_str()
                        .and_then(|t| t.split_once(" actions="))
                        .is_some_and(|(_, acts)| acts.contains(actions))
            })
            .unwrap_or_else(|| panic!("no table {table} rule with {actions} in its actions: {of}"))
    };
    let by_index = |i: &Value| -> &Value {
        flows
            .iter()
            .find(|f| f["index"] == *i)
            .unwrap_or_else(|| panic!("no datapath flow {i}"))
    };
    // Table 0's conntrack rule for port A made only recirc_id 0 flows from A that go to
    // conntrack, and those name it as their first rule.
    let ct_a = rules_of(0, "ct(table=1,zone=5)");
    let made = of["flows"][ct_a]["dp_flows"].as_array().expect("dp_flows");
    assert!(
        !made.is_empty(),
        "no datapath flow traced through {}",
        of["flows"][ct_a]
    );
    for i in made {
        let f = by_index(i);
        assert_eq!(f["recirc_id"], 0, "{f}");
        assert_eq!(f["in_port"], a.as_str(), "{f}");
        assert!(has_action(f, "ct(") && has_action(f, "recirc("), "{f}");
        assert_eq!(f["rules"][0]["openflow"], ct_a, "{f}");
        assert_eq!(f["rules"][0]["priority"], 100, "{f}");
    }
    // An established connection from A after recirculation: table 1's +est rule (meter,
    // check_pkt_larger, resubmit), then table 2: the flow that also goes out tagged to C
    // names the +est rule first and the mirror rule after it.
    let est_a = rules_of(1, "check_pkt_larger(600)");
    let mirror = of["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .position(|f| f["table"] == 2 && f["priority"] == 10)
        .expect("table 2's mirror rule");
    let through: Vec<&Value> = of["flows"][est_a]["dp_flows"]
        .as_array()
        .expect("dp_flows")
        .iter()
        .map(by_index)
        .collect();
    assert!(
        through.iter().any(|f| {
            let at: Vec<&Value> = f["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| &r["openflow"])
                .collect();
            f["recirc_id"] != 0
                && has_action(f, "push_vlan(")
                && at.first() == Some(&&json!(est_a))
                && at.contains(&&json!(mirror))
        }),
        "no recirculated flow traced through table 1's +est rule and the mirror: {through:?}"
    );
    // Groups and meters, each with the rules that use it.
    let groups = of["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{of}");
    assert_eq!(
        (&groups[0]["group_id"], &groups[0]["type"]),
        (&json!(7), &json!("select"))
    );
    let weights: Vec<&Value> = groups[0]["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| &b["weight"])
        .collect();
    assert_eq!(weights, [&json!(60), &json!(40)], "{of}");
    assert_eq!(groups[0]["rules"], json!([]), "no rule uses group 7");
    let meters = of["meters"].as_array().expect("meters");
    assert_eq!(meters.len(), 1, "{of}");
    assert_eq!(meters[0]["bands"][0]["rate"], 10_000_000, "{of}");
    // The two rules of table 1 that meter (new connections, established ones from A).
    let metered: Vec<usize> = of["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            f["text"]
                .as_str()
                .is_some_and(|t| t.contains("actions=meter:1,"))
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(metered.len(), 2, "{of}");
    assert_eq!(meters[0]["rules"], json!(metered), "{of}");
    let (code, out, err) = agent.cli(&["ovs", "openflow", "--collection", &coll]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("group 7 (select, unused): [weight 60] output:"),
        "{out}"
    );
    assert!(
        out.contains("meter 1 (used by 2 rules): drop over 10000000 kbps"),
        "{out}"
    );
    assert!(
        out.contains("datapath flows traced to their rules"),
        "{out}"
    );
    assert!(out.contains("datapath flows]"), "{out}");

    // Over time: the churn between two collections, and the status line.
    let first = agent.ok("/api/v1/ovs", &[])["collections"][0]["id"]
        .as_str()
        .expect("first collection")
        .to_string();
    let ch = agent.ok(
        "/api/v1/ovs/churn",
        &[("collection", &coll), ("before", &first)],
    );
    assert!(
        ch["churn"]["added"].as_u64().unwrap_or(0) >= 1,
        "megaflows appeared since the first collection: {ch}"
    );
    assert!(ch["churn"]["after"].as_u64().unwrap_or(0) >= 6, "{ch}");
    assert!(
        ch["top"]
            .as_array()
            .is_some_and(|t| !t.is_empty() && t[0]["packets_between"].as_u64().is_some()),
        "{ch}"
    );
    let st = agent.ok("/api/v1/status", &[]);
    assert_eq!(st["ovs"]["state"], "ok", "{st}");
    let (code, out, err) = agent.cli(&["ovs", "tree", "--collection", &coll]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("[recirc_id 0x0 in_port {a}]")),
        "{out}"
    );

    // The three views and the path in a real browser, against the same API.
    let conv =
        format!("SrcAddr=198.18.61.1&DstAddr=198.18.61.2&Proto=6&DstPort=5201&Interface={a}");
    browser_test(
        "ovs.mjs",
        &agent.url(""),
        &[
            ("WEIR_COLLECTION", coll.to_string()),
            ("WEIR_FLOW", idx.to_string()),
            ("WEIR_CONV", conv),
            (
                "WEIR_UPLOAD",
                std::fs::read_to_string(&dp_dump).expect("dump"),
            ),
        ],
    );
    let _ = ns_b;
}

#[test]
fn the_full_datapath_syntax_decodes_like_the_reference_and_bad_lines_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/data/ovs-odp-syntax.txt"
    ));
    let dump = dir.path().join("syntax.txt");
    std::fs::copy(fixture, &dump).expect("fixture");
    let out = offline("flows", &dump);
    let r = assert_agrees("dpctl", &dump, &out, 8);
    assert_eq!(r["reference_failures"], Value::Array(vec![]));
    let v: Value = serde_json::from_str(&out).expect("json");
    let flows = v["flows"].as_array().expect("flows");
    // Structure is kept: recirculation targets from inside check_pkt_len/sample, and masks.
    assert_eq!(flows[0]["recircs"], serde_json::json!([16]));
    assert_eq!(flows[3]["recircs"], serde_json::json!([32]));
    assert_eq!(flows[1]["outputs"], serde_json::json!(["p2", "p1"]));
    assert_eq!(
        flows[0]["match"]["encap"]["ipv4"]["dst"],
        serde_json::json!({"value": "10.0.0.2", "mask": "255.255.255.0"})
    );
    assert_eq!(
        flows[1]["actions"][0]["check_pkt_len"]["gt"],
        serde_json::json!([{"drop": true}])
    );

    // OpenFlow lines: flags separated by spaces, timeouts, masks, learn, goto_table.
    let of_fixture = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/data/ovs-ofctl-syntax.txt"
    ));
    let of = dir.path().join("of-syntax.txt");
    std::fs::copy(of_fixture, &of).expect("fixture");
    let out = offline("openflow", &of);
    assert_agrees("ofctl", &of, &out, 5);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["flows"][1]["info"]["send_flow_rem"], true);
    assert_eq!(
        v["flows"][1]["match"]["nw_src"],
        serde_json::json!({"value": "10.0.0.0", "mask": "24"})
    );
    assert_eq!(v["tables"][2]["next_tables"], serde_json::json!([3]));

    // Bad lines: truncated, garbage, unknown names, nested past the limit. Each is reported with its line and column;
    // the rest still decodes.
    let good = std::fs::read_to_string(fixture).expect("fixture");
    let lines: Vec<&str> = good.lines().collect();
    let bad = format!(
        "{}\n{}\nthis is not a flow\n{}\n{}\nrecirc_id(0),{}{}, packets:1, bytes:1, used:never, actions:drop\n",
        lines[1],
        &lines[2][..120],
        lines[3]
            .replace("icmpv6(", "frobnicate(")
            .replace("userspace(", "teleport("),
        lines[4],
        "a(".repeat(5000),
        ")".repeat(5000)
    );
    let bad_file = dir.path().join("bad.txt");
    std::fs::write(&bad_file, &bad).expect("bad");
    let (code, out, err) = weir(&["ovs", "flows", "-i", &bad_file.to_string_lossy(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["flows"].as_array().map(Vec::len), Some(3), "{v}");
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 3, "{v}");
    assert_eq!(errors[2]["line"], 6);
    assert!(
        errors[2]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested deeper than 32"),
        "{v}"
    );
    assert_eq!(errors[0]["line"], 2);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("missing ')'"),
        "{v}"
    );
    assert_eq!(errors[0]["column"], 121);
    assert_eq!(errors[1]["line"], 3);
    assert!(err.contains("line 2 column 121"), "{err}");
    let unknown = &v["flows"][1]["warnings"];
    assert_eq!(
        unknown,
        &serde_json::json!(["unknown key frobnicate", "unknown action teleport"]),
        "{v}"
    );

    // Garbage only and an empty dump.
    let g = dir.path().join("garbage.txt");
    std::fs::write(&g, "\u{1}\u{2}garbage\nmore garbage (((\n").expect("garbage");
    let (code, _, err) = weir(&["ovs", "flows", "-i", &g.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(err.contains("no line decodes (2 errors)"), "{err}");
    let e = dir.path().join("empty.txt");
    std::fs::write(&e, "").expect("empty");
    let (code, out, _) = weir(&["ovs", "flows", "-i", &e.to_string_lossy(), "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["flows"],
        serde_json::json!([])
    );

    // A 50 MB dump decodes whole, in chunks, in the sandbox.
    let big = dir.path().join("big.txt");
    let mut text = String::with_capacity(52 << 20);
    let mut n = 0u64;
    while text.len() < 50 << 20 {
        for l in &lines[1..] {
            n += 1;
            text.push_str(&l.replacen(
                "ufid:11111111-0000-0000-0000-",
                &format!("ufid:{:08x}-0000-0000-0000-", n),
                1,
            ));
            text.push('\n');
        }
    }
    std::fs::write(&big, &text).expect("big");
    let t = Instant::now();
    let (code, out, err) = weir(&["ovs", "graph", "-i", &big.to_string_lossy(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let g: Value = serde_json::from_str(&out).expect("json");
    let counted: u64 = g["graph"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|x| x["kind"] == "recirc")
        .map(|x| x["flows"].as_array().map(Vec::len).unwrap_or(0) as u64)
        .sum();
    assert_eq!(counted, n, "every flow of the 50 MB dump decoded");
    println!(
        "50 MB dump, {n} flows: decoded and drawn in {:?}",
        t.elapsed()
    );
}

#[test]
fn dumps_import_into_a_running_agent_and_a_missing_switch_is_a_status_not_a_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-switch");
    let agent = Agent::start(
        dir.path(),
        &[
            "--no-capture",
            "--no-plugins",
            "--ovs",
            "1s",
            "--ovs-rundir",
            &missing.to_string_lossy(),
        ],
    );
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/data/ovs-odp-syntax.txt"
    );
    let (code, out, err) = agent.cli(&[
        "ovs",
        "import",
        fixture,
        "--time",
        "-1h",
        "--name",
        "netdev@remote",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("8 datapath flows, 0 OpenFlow flows, 0 lines not decoded"),
        "{out}"
    );
    let list = agent.ok("/api/v1/ovs", &[]);
    let c = &list["collections"][0];
    assert_eq!(c["origin"], "import");
    let t = c["time_ms"].as_u64().expect("time");
    assert!(
        now_ms() - t >= 3_590_000 && now_ms() - t < 3_700_000,
        "the time the user gave: {c}"
    );
    // The view at a time picks it; its used: times count back from the given time.
    let v = agent.ok("/api/v1/ovs/flows", &[("at", "-30m")]);
    assert_eq!(v["flows"].as_array().map(Vec::len), Some(8));
    assert_eq!(v["flows"][0]["used_ms"], t - 1500);
    assert_eq!(v["flows"][0]["datapath"], "netdev@remote");
    let (s, e) = agent.post("/api/v1/ovs/import", r#"{"text": "recirc_id(0), packets:1, bytes:1, used:never, actions:drop", "time": "99999999999999999"}"#);
    assert_eq!(s, 400, "{e}");
    assert!(e.to_string().contains("in the future"), "{e}");
    let (s, _) = agent.get("/api/v1/ovs/flows", &[("at", "-2h")]);
    assert_eq!(s, 404);
    let (s, e) = agent.get("/api/v1/ovs/tree", &[("filter", "colour=red")]);
    assert_eq!(s, 400);
    assert!(e.to_string().contains("unknown term"), "{e}");

    // Garbage is refused with the line and column, and nothing is stored.
    let (s, e) = agent.post(
        "/api/v1/ovs/import",
        r#"{"text": "recirc_id(0),in_port(1 packets:1, actions:2\n"}"#,
    );
    assert_eq!(s, 400, "{e}");
    assert!(e.to_string().contains("line 1 column"), "{e}");
    let (s, e) = agent.post("/api/v1/ovs/import", r#"{"txt": "x"}"#);
    assert_eq!(s, 400);
    assert!(e.to_string().contains("unknown field `txt`"), "{e}");
    assert_eq!(
        agent.ok("/api/v1/ovs", &[])["collections"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // No switch: a status line naming the command, logged once, not an error per round.
    std::thread::sleep(Duration::from_millis(3500));
    let st = agent.ok("/api/v1/status", &[]);
    assert_eq!(st["ovs"]["state"], "unavailable", "{st}");
    let err = st["ovs"]["error"].as_str().unwrap_or("");
    assert!(
        err.starts_with("ovs-appctl dpctl/dump-dps: ovs-appctl: cannot read pidfile"),
        "{st}"
    );
    let warnings = agent.log_text().matches("OVS collection failed").count();
    assert_eq!(
        warnings,
        1,
        "one warning, not one per round:\n{}",
        agent.log_text()
    );
    let (code, out, _) = agent.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("ovs: unavailable (collecting every 1 s)"),
        "{out}"
    );
}
