//! Capture benchmark (needs root): what the agent costs the traffic it watches, measured on
//! two network namespaces joined by a veth pair, with interleaved runs without and with the
//! agent, and side by side with softflowd and pmacctd (libpcap flow exporters): their CPU and
//! the packets each counted against iperf3's; and weir's programs against a no-op and a
//! counting TC program on the same hooks; and what each exporter costs the machine per packet,
//! kernel and process (`perf record`). Prints tables; see docs/PERFORMANCE.md.
//! `WEIR_BENCH_RUNS` (default 5) sets the number of rounds.
//!
//! `cargo bench --bench capture` (after `bash scripts/deps.sh bench`).
//! `WEIR_BENCH_SECTIONS` (comma-separated: overhead, rss, exporters, counts, kernel, features,
//! sampling, machine; default all) picks the tables.

#[path = "support/proc_status.rs"]
mod proc_status;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const NS_A: &str = "wbench-a";
const NS_B: &str = "wbench-b";
const IF_A: &str = "wbench0";
const IF_B: &str = "wbench1";
const A4: &str = "198.18.200.1";
const B4: &str = "198.18.200.2";

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "failed: {cmd}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn quiet(cmd: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(Stdio::null())
        .status();
}

fn setup() {
    teardown();
    sh(&format!("ip netns add {NS_A} && ip netns add {NS_B}"));
    sh(&format!(
        "ip link add {IF_A} netns {NS_A} type veth peer name {IF_B} netns {NS_B}"
    ));
    sh(&format!(
        "ip -n {NS_A} addr add {A4}/24 dev {IF_A} && ip -n {NS_A} link set {IF_A} up && ip -n {NS_A} link set lo up"
    ));
    sh(&format!(
        "ip -n {NS_B} addr add {B4}/24 dev {IF_B} && ip -n {NS_B} link set {IF_B} up && ip -n {NS_B} link set lo up"
    ));
    sh(&format!(
        "ip netns exec {NS_B} iperf3 -s -D --pidfile /tmp/wbench-iperf.pid --logfile /tmp/wbench-iperf.log"
    ));
    std::thread::sleep(Duration::from_millis(500));
}

fn teardown() {
    quiet("kill $(cat /tmp/wbench-iperf.pid 2>/dev/null) 2>/dev/null");
    quiet(&format!("ip netns del {NS_A}"));
    quiet(&format!("ip netns del {NS_B}"));
}

fn iperf(args: &str) -> Value {
    let out = sh(&format!("ip netns exec {NS_A} iperf3 -c {B4} -J {args}"));
    serde_json::from_str(&out).expect("iperf3 json")
}

/// TCP throughput in Gbit/s.
fn tcp_run() -> f64 {
    let j = iperf("-t 3");
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

/// 64-byte UDP at full speed: (packets/s received, packets sent).
fn udp_run() -> (f64, u64) {
    let j = iperf("-u -l 64 -b 0 -t 3");
    let s = &j["end"]["sum"];
    let pkts = s["packets"].as_u64().unwrap_or(0);
    let lost = s["lost_packets"].as_u64().unwrap_or(0);
    let secs = s["seconds"].as_f64().unwrap_or(3.0);
    ((pkts - lost) as f64 / secs, pkts)
}

/// (user, system) CPU ticks of a process.
fn cpu_ticks2(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based); after ")" they are 12 and 13.
    (
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
        f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
    )
}

/// CPU time of all threads of a process, ns (sum of /proc/PID/task/*/schedstat).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

fn cpu_ticks(pid: u32) -> u64 {
    let (u, s) = cpu_ticks2(pid);
    u + s
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn status_kib(pid: u32, key: &str) -> u64 {
    proc_status::status_kib(&pid.to_string(), key)
}

/// (run time ns, run count) summed over weir's TC programs.
fn bpf_stats() -> (u64, u64) {
    bpf_stats_of(&["weir_ingress", "weir_egress"])
}

/// (run time ns, run count) summed over the named programs.
fn bpf_stats_of(names: &[&str]) -> (u64, u64) {
    let out = sh("bpftool prog show -j");
    let v: Value = serde_json::from_str(&out).expect("bpftool json");
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| names.contains(&n)))
        .fold((0, 0), |acc, p| {
            (
                acc.0 + p["run_time_ns"].as_u64().unwrap_or(0),
                acc.1 + p["run_cnt"].as_u64().unwrap_or(0),
            )
        })
}

/// Flags of the "flows only" agent: every optional capture feature off.
const FLOWS_ONLY: &[&str] = &["--no-drops", "--no-rtt", "--no-dns"];

/// Eight filter rules of which the last accepts everything: each packet walks all of them.
fn eight_rules() -> Vec<String> {
    let mut v: Vec<String> = (1..=7)
        .map(|i| format!("--filter=reject cidr=10.{i}.0.0/16 proto=tcp ports=1-1024"))
        .collect();
    v.push("--filter=accept".into());
    v
}

/// Per-packet program time with every feature on versus flows only (bpf_stats), and the
/// agent's CPU at 400 k packets/s in both setups; and flows only with eight rules that refuse
/// the traffic (the last one refusing everything).
fn features_section(runs: usize) {
    let all_on: Vec<String> = eight_rules();
    let all_on: Vec<&str> = all_on.iter().map(String::as_str).collect();
    let mut refusing: Vec<String> = eight_rules();
    refusing.pop();
    refusing.push("--filter=reject".into());
    let refusing: Vec<&str> = FLOWS_ONLY
        .iter()
        .copied()
        .chain(refusing.iter().map(String::as_str))
        .collect();
    let tracing = ["weir_kfree_skb"];
    // [setup][measure]: per-packet ns for UDP and TCP (TC + tracing), agent CPU at 400 k.
    let mut m: [[Vec<f64>; 5]; 3] = Default::default();
    sh("sysctl -qw kernel.bpf_stats_enabled=1");
    for r in 0..runs {
        let order = if r % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for which in order {
            let args: &[&str] = match which {
                0 => FLOWS_ONLY,
                1 => &all_on,
                _ => &refusing,
            };
            let agent = Agent::start(args);
            // UDP: ns of every weir program per packet sent (each crosses two TC hooks).
            let (t0, r0) = (bpf_stats(), bpf_stats_of(&tracing));
            // CPU time of every agent thread in ns (schedstat), finer than clock ticks.
            let c0 = cpu_ns(agent.child.id());
            let t = Instant::now();
            let (pps, sent) = udp_run();
            let cpu = (cpu_ns(agent.child.id()) - c0) as f64 / 1e9 / t.elapsed().as_secs_f64();
            let (t1, r1) = (bpf_stats(), bpf_stats_of(&tracing));
            let ns = (t1.0 - t0.0 + r1.0 - r0.0) as f64 / ((t1.1 - t0.1).max(1) as f64 / 2.0);
            m[which][0].push(ns);
            m[which][2].push(cpu * 100.0 * 400_000.0 / pps.max(1.0));
            let _ = sent;
            // TCP: per skb crossing both hooks, kfree_skb included.
            let (t0, r0) = (bpf_stats(), bpf_stats_of(&tracing));
            tcp_run();
            let (t1, r1) = (bpf_stats(), bpf_stats_of(&tracing));
            let skbs = (t1.1 - t0.1).max(1) as f64 / 2.0;
            m[which][1].push((t1.0 - t0.0 + r1.0 - r0.0) as f64 / skbs);
            m[which][3].push((r1.0 - r0.0) as f64 / skbs);
            m[which][4].push((r1.1 - r0.1) as f64 / skbs);
        }
    }
    sh("sysctl -qw kernel.bpf_stats_enabled=0");
    let med = |v: &Vec<f64>| median(&mut v.clone());
    println!();
    println!(
        "features: {runs} interleaved rounds, medians; ns of all weir programs per packet crossing the veth (egress + ingress TC, plus kfree_skb when on); bpf_stats on"
    );
    println!();
    println!("| measure | flows only | all features + 8 filter rules | ratio | target |");
    println!("|---|---|---|---|---|");
    for (i, what) in [
        "64-byte UDP packet (both hooks)",
        "TCP skb (both hooks + kfree_skb)",
    ]
    .iter()
    .enumerate()
    {
        let (a, b) = (med(&m[0][i]), med(&m[1][i]));
        println!("| {what} | {a:.0} ns | {b:.0} ns | {:.2} | <= 1.5 |", b / a);
    }
    println!(
        "| of which tracing programs, per TCP skb | {:.0} ns | {:.0} ns ({:.2} runs) | | |",
        med(&m[0][3]),
        med(&m[1][3]),
        med(&m[1][4])
    );
    let (a, b) = (med(&m[0][2]), med(&m[1][2]));
    println!(
        "| agent CPU (all threads) scaled to 400 k pkt/s | {a:.2} % | {b:.2} % | {:.2} | |",
        b / a.max(1e-9)
    );
    println!();
    println!(
        "Refused by the last of eight rules (flows only otherwise): 64-byte UDP {:.0} ns, TCP skb {:.0} ns, per packet crossing both hooks",
        med(&m[2][0]),
        med(&m[2][1])
    );
}

/// Builds a baseline program from benches/support/NAME.bpf.c into `dir` (clang, as the
/// capture programs are built; `WEIR_CLANG` names another).
fn baseline_object(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let clang = std::env::var("WEIR_CLANG").unwrap_or_else(|_| "clang-19".into());
    let src = format!(
        "{}/benches/support/{name}.bpf.c",
        env!("CARGO_MANIFEST_DIR")
    );
    let obj = dir.join(format!("{name}.o"));
    sh(&format!(
        "{clang} -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c {src} -o {}",
        obj.display()
    ));
    obj
}

/// Attaches a baseline object (one `tc` section) where 64-byte UDP from A to B runs
/// programs: A's egress and B's ingress (clsact qdiscs, removed by [`detach_baseline`]).
fn attach_baseline(obj: &std::path::Path) {
    let obj = obj.display();
    sh(&format!(
        "ip netns exec {NS_A} tc qdisc add dev {IF_A} clsact && ip netns exec {NS_A} tc filter add dev {IF_A} egress bpf da obj {obj} sec tc"
    ));
    sh(&format!(
        "ip netns exec {NS_B} tc qdisc add dev {IF_B} clsact && ip netns exec {NS_B} tc filter add dev {IF_B} ingress bpf da obj {obj} sec tc"
    ));
}

fn detach_baseline() {
    quiet(&format!(
        "ip netns exec {NS_A} tc qdisc del dev {IF_A} clsact"
    ));
    quiet(&format!(
        "ip netns exec {NS_B} tc qdisc del dev {IF_B} clsact"
    ));
}

/// weir's TC programs per 64-byte UDP packet against a program that does nothing and one
/// that counts packets in a per-CPU array, on the same hooks in the same session, rounds
/// interleaved, bpf_stats on.
fn kernel_section(runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let noop = baseline_object(dir.path(), "noop");
    let count = baseline_object(dir.path(), "count");
    let labels = [
        "no-op (returns at once)",
        "per-CPU counter (one array lookup and add)",
        "weir, flows only (`--no-drops --no-rtt --no-dns`)",
        "weir as shipped (defaults)",
    ];
    let mut ns: [Vec<f64>; 4] = Default::default();
    detach_baseline();
    sh("sysctl -qw kernel.bpf_stats_enabled=1");
    for r in 0..runs {
        for k in 0..4 {
            let which = (r + k) % 4;
            let (t0, t1) = match which {
                0 | 1 => {
                    let (obj, name) = if which == 0 {
                        (&noop, "wb_noop")
                    } else {
                        (&count, "wb_count")
                    };
                    attach_baseline(obj);
                    let t0 = bpf_stats_of(&[name]);
                    udp_run();
                    let t1 = bpf_stats_of(&[name]);
                    detach_baseline();
                    (t0, t1)
                }
                _ => {
                    let agent = Agent::start(if which == 2 { FLOWS_ONLY } else { &[] });
                    let t0 = bpf_stats();
                    udp_run();
                    let t1 = bpf_stats();
                    drop(agent);
                    (t0, t1)
                }
            };
            // Programs are found by name: one that went away meanwhile must not wrap the sum.
            ns[which]
                .push(t1.0.saturating_sub(t0.0) as f64 / t1.1.saturating_sub(t0.1).max(1) as f64);
        }
    }
    sh("sysctl -qw kernel.bpf_stats_enabled=0");
    let med: Vec<f64> = ns.iter().map(|v| median(&mut v.clone())).collect();
    println!();
    println!(
        "kernel: {runs} interleaved rounds, medians; run time per program run of 64-byte UDP at full speed (each packet runs A's egress and B's ingress program); baselines attached with tc (clsact), weir with tcx; bpf_stats on"
    );
    println!();
    println!("| program on the same hooks | ns per run | above the no-op | target |");
    println!("|---|---|---|---|");
    for (i, label) in labels.iter().enumerate() {
        let target = if i >= 2 { "<= 60 ns" } else { "" };
        println!(
            "| {label} | {:.0} ns | {:.0} ns | {target} |",
            med[i],
            med[i] - med[0]
        );
    }
}

/// What sampling in the kernel saves: per-packet program time and the agent's CPU with a
/// `sample` rule on the traffic (1 in 10), and with the agent's own `--sampling 10` (decided
/// before parsing when no rule is set), against none; same flows-only agent otherwise.
fn sampling_section(runs: usize) {
    let with = |extra: &'static str| -> Vec<&'static str> {
        FLOWS_ONLY.iter().copied().chain([extra]).collect()
    };
    let setups = [
        FLOWS_ONLY.to_vec(),
        with("--filter=sample proto=udp sampling=10"),
        with("--sampling=10"),
    ];
    // [setup][measure]: ns per packet, agent CPU scaled to 400 k pkt/s, share sampled out.
    let mut m: [[Vec<f64>; 3]; 3] = Default::default();
    sh("sysctl -qw kernel.bpf_stats_enabled=1");
    for r in 0..runs {
        let order = if r % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for which in order {
            let agent = Agent::start(&setups[which]);
            let out0 = agent.counter("kernel_sampled_out");
            let t0 = bpf_stats();
            let c0 = cpu_ns(agent.child.id());
            let t = Instant::now();
            let (pps, _) = udp_run();
            let cpu = (cpu_ns(agent.child.id()) - c0) as f64 / 1e9 / t.elapsed().as_secs_f64();
            let t1 = bpf_stats();
            let runs_seen = (t1.1 - t0.1).max(1) as f64;
            m[which][0].push((t1.0 - t0.0) as f64 / (runs_seen / 2.0));
            m[which][1].push(cpu * 100.0 * 400_000.0 / pps.max(1.0));
            m[which][2].push((agent.counter("kernel_sampled_out") - out0) as f64 / runs_seen);
        }
    }
    sh("sysctl -qw kernel.bpf_stats_enabled=0");
    let med = |v: &Vec<f64>| median(&mut v.clone());
    println!();
    println!(
        "sampling: {runs} interleaved rounds, medians; flows-only agents: none, a `sample proto=udp sampling=10` rule, `--sampling 10`; 64-byte UDP, ns of weir's TC programs per packet crossing the veth; bpf_stats on"
    );
    println!();
    println!(
        "| measure | no sampling | sample rule, 1 in 10 | ratio | --sampling 10 (no rules) | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    let (a, b, c) = (med(&m[0][0]), med(&m[1][0]), med(&m[2][0]));
    println!(
        "| 64-byte UDP packet (both hooks) | {a:.0} ns | {b:.0} ns | {:.2} | {c:.0} ns | {:.2} |",
        b / a,
        c / a
    );
    let (a, b, c) = (med(&m[0][1]), med(&m[1][1]), med(&m[2][1]));
    println!(
        "| agent CPU (all threads) scaled to 400 k pkt/s | {a:.2} % | {b:.2} % | {:.2} | {c:.2} % | {:.2} |",
        b / a.max(1e-9),
        c / a.max(1e-9)
    );
    println!(
        "| program runs that sampled the packet out | {:.1} % | {:.1} % | | {:.1} % | |",
        med(&m[0][2]) * 100.0,
        med(&m[1][2]) * 100.0,
        med(&m[2][2]) * 100.0
    );
}

/// Packets the host's input backlogs dropped so far, all CPUs (`/proc/net/softnet_stat`,
/// second column): a veth hands each packet to its peer through this backlog, so a packet
/// dropped there reaches no hook and no capture socket on B.
fn backlog_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum()
}

/// 50 datagrams from A to B's port 9 (discard; not the run's port), for a capture ring to
/// hand over whatever block it still holds.
fn nudge() {
    sh(&format!(
        "ip netns exec {NS_A} python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x', ('{B4}', 9)) for _ in range(50)]\""
    ));
}

/// One full-speed 64-byte UDP run for the counts: (datagrams sent with iperf3's handshake,
/// packets the host's backlogs dropped meanwhile).
fn counted_run() -> (u64, u64) {
    let b0 = backlog_drops();
    let (_, sent) = udp_run();
    (sent + 1, backlog_drops() - b0)
}

/// Lets a libpcap exporter catch up after a run: libpcap hands packets over in ring blocks,
/// the last one when its timeout passes; a few datagrams to another port, after a pause,
/// push out any block still held.
fn settle_capture_ring() {
    std::thread::sleep(Duration::from_secs(2));
    nudge();
    std::thread::sleep(Duration::from_secs(1));
}

/// Whether a process with this text in its command line runs.
fn have_process(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether a command is on the PATH.
fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Sends `sig` to a child and waits for it to end.
fn stop(child: &mut Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
    let _ = child.wait();
}

/// Spawns `cmd` in namespace B (the pid is the command's own: `ip netns exec` execs it),
/// its standard error into `log`.
fn spawn_in_b(cmd: &str, log: &std::path::Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec ip netns exec {NS_B} {cmd} 2>{}",
            log.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn in namespace B")
}

/// What one exporter made of one full-speed 64-byte UDP run.
struct Count {
    /// Datagrams iperf3 sent, plus its one handshake datagram.
    sent: u64,
    /// Packets of the run the exporter reported, from B's interface.
    counted: u64,
    /// Packets the exporter says it could not count (libpcap's drops; weir's flow map or ring
    /// buffer full), if it reports them.
    own_drops: Option<u64>,
    /// Packets the host's backlogs dropped during the run (before any exporter sees them).
    backlog: u64,
}

/// weir as shipped, watching namespace B alone like the others: flushes, runs, flushes, and
/// sums the run's packets at B's ingress.
fn weir_count() -> Count {
    let agent = Agent::start_on(
        std::rc::Rc::new(tempfile::tempdir().expect("tempdir")),
        &[NS_B],
        &[],
    );
    agent.flush();
    // Packets weir could not count: its flow map full, or its ring buffer full.
    let lost = |a: &Agent| a.counter("kernel_map_full") + a.counter("kernel_ringbuf_lost");
    let lost0 = lost(&agent);
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let (sent, backlog) = counted_run();
    agent.flush();
    let groups = ureq::get(&format!(
        "http://127.0.0.1:{}/api/v1/flows/aggregate",
        agent.port
    ))
    .query("filter", "Proto=udp and DstPort=5201")
    .query("group_by", "NetNs,IfDirection")
    .query("from", t0.to_string())
    .query("top", "100")
    .call()
    .ok()
    .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
    .unwrap_or(Value::Null);
    let counted = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["key"]["NetNs"] == NS_B && g["key"]["IfDirection"] == 0)
        .map(|g| g["packets"].as_u64().unwrap_or(0))
        .sum();
    Count {
        sent,
        counted,
        own_drops: Some(lost(&agent) - lost0),
        backlog,
    }
}

/// softflowd on B's interface exporting NetFlow to nfcapd (in B): what the collector got.
fn softflowd_count(dir: &std::path::Path) -> Count {
    let flows = dir.join("nfcapd");
    let _ = std::fs::remove_dir_all(&flows);
    std::fs::create_dir_all(&flows).expect("nfcapd dir");
    let ctl = dir.join("softflowd.ctl");
    let mut nfcapd = spawn_in_b(
        &format!("nfcapd -w {} -p 2055 -b 127.0.0.1", flows.display()),
        &dir.join("nfcapd.log"),
    );
    let mut softflowd = spawn_in_b(
        &format!(
            "softflowd -d -i {IF_B} -n 127.0.0.1:2055 -c {}",
            ctl.display()
        ),
        &dir.join("softflowd.log"),
    );
    std::thread::sleep(Duration::from_millis(800));
    let (sent, backlog) = counted_run();
    settle_capture_ring();
    let ctl = ctl.display();
    let stats = sh(&format!("softflowctl -c {ctl} statistics"));
    let own_drops = stats
        .lines()
        .find_map(|l| l.strip_prefix("Packets dropped by libpcap:"))
        .and_then(|n| n.trim().parse().ok());
    sh(&format!("softflowctl -c {ctl} expire-all"));
    std::thread::sleep(Duration::from_millis(500));
    // A graceful shutdown exports whatever is left.
    sh(&format!("softflowctl -c {ctl} shutdown"));
    let _ = softflowd.wait();
    // nfcapd writes its file out on SIGTERM.
    stop(&mut nfcapd, libc::SIGTERM);
    let counted = sh(&format!(
        "nfdump -R {} -q -N -o 'fmt:%pkt' 'proto udp and dst port 5201'",
        flows.display()
    ))
    .lines()
    .filter_map(|l| l.trim().parse::<u64>().ok())
    .sum();
    Count {
        sent,
        counted,
        own_drops,
        backlog,
    }
}

/// pmacctd on B's interface with its print plugin: the packets in the file it writes when
/// stopped, and the drops its core process reports.
fn pmacctd_count(dir: &std::path::Path) -> Count {
    let csv = dir.join("pmacctd.csv");
    let log = dir.join("pmacctd.log");
    let _ = std::fs::remove_file(&csv);
    // Appending: the print plugin also writes its cache out at each whole minute (its refresh
    // time aligns to the clock), and a plain file would keep only the last part of a run.
    let conf = dir.join("pmacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "pcap_interface: {IF_B}\nplugins: print\naggregate: src_host,dst_host,src_port,dst_port,proto\nprint_output: csv\nprint_output_file: {}\nprint_output_file_append: true\nprint_refresh_time: 60\n",
            csv.display()
        ),
    )
    .expect("pmacctd config");
    let mut pmacctd = spawn_in_b(&format!("pmacctd -f {}", conf.display()), &log);
    std::thread::sleep(Duration::from_millis(1500));
    let (sent, backlog) = counted_run();
    settle_capture_ring();
    // SIGUSR1 logs the capture's counters; SIGINT writes the cache out and stops.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pmacctd.id() as i32, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(500));
    stop(&mut pmacctd, libc::SIGINT);
    // The print plugin (a process of its own) writes the cache out as the core stops: wait
    // for it to end, then read what it wrote.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && have_process("pmacctd: Print Plugin") {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES (the header once per write)
    let counted = std::fs::read_to_string(&csv)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7 && f[3] == "5201" && f[4] == "udp")
        .filter_map(|f| f[5].parse::<u64>().ok())
        .sum();
    let own_drops = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dropped_packets="))
        .and_then(|n| n.parse().ok());
    Count {
        sent,
        counted,
        own_drops,
        backlog,
    }
}

/// Packet-exact counts: each exporter against iperf3 on the same full-speed 64-byte UDP
/// runs, rounds interleaved.
fn counts_section(runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = ["weir", "softflowd", "pmacctd"];
    let present = [
        true,
        have("softflowd") && have("softflowctl") && have("nfcapd") && have("nfdump"),
        have("pmacctd"),
    ];
    let mut got: [Vec<Count>; 3] = Default::default();
    for r in 0..runs {
        for k in 0..3 {
            let which = (r + k) % 3;
            if !present[which] {
                continue;
            }
            got[which].push(match which {
                0 => weir_count(),
                1 => softflowd_count(dir.path()),
                _ => pmacctd_count(dir.path()),
            });
        }
    }
    println!();
    println!(
        "packet-exact counts: {runs} interleaved rounds of a full-speed 64-byte UDP run (iperf3 -u -l 64 -b 0 -t 3), each exporter watching B's interface alone (weir as shipped, on namespace B); sums over the rounds"
    );
    println!();
    println!(
        "| exporter | datagrams sent (iperf3 + handshake) | counted | missed | missed, worst round | its own drop count | dropped by the host's backlog before B |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (which, name) in names.iter().enumerate() {
        if !present[which] {
            println!("| {name} | not installed (bash scripts/deps.sh bench) | | | | | |");
            continue;
        }
        let c = &got[which];
        let sent: u64 = c.iter().map(|c| c.sent).sum();
        let counted: u64 = c.iter().map(|c| c.counted).sum();
        let backlog: u64 = c.iter().map(|c| c.backlog).sum();
        let worst = c
            .iter()
            .map(|c| c.sent.saturating_sub(c.counted) as f64 / c.sent.max(1) as f64)
            .fold(0.0, f64::max);
        let own = if c.iter().all(|c| c.own_drops.is_some()) {
            c.iter()
                .filter_map(|c| c.own_drops)
                .sum::<u64>()
                .to_string()
        } else {
            "none reported".into()
        };
        let missed = sent.saturating_sub(counted);
        println!(
            "| {name} | {sent} | {counted} | {missed} ({:.3} %) | {:.3} % | {own} | {backlog} |",
            missed as f64 * 100.0 / sent.max(1) as f64,
            worst * 100.0
        );
    }
}

struct Agent {
    child: Child,
    port: u16,
    /// Kept while the agent runs (and after, while another holds it).
    _dir: std::rc::Rc<tempfile::TempDir>,
}

impl Agent {
    fn start(extra: &[&str]) -> Agent {
        Agent::start_in(
            std::rc::Rc::new(tempfile::tempdir().expect("tempdir")),
            extra,
        )
    }

    /// An agent on a data dir that outlives it (started again on the same dir).
    fn start_in(dir: std::rc::Rc<tempfile::TempDir>, extra: &[&str]) -> Agent {
        Agent::start_on(dir, &[NS_A, NS_B], extra)
    }

    /// An agent watching the given namespaces only.
    fn start_on(dir: std::rc::Rc<tempfile::TempDir>, netns: &[&str], extra: &[&str]) -> Agent {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new(WEIR)
            .args(["agent", "--no-host-netns"])
            .args(netns.iter().flat_map(|n| ["--netns", n]))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("WEIR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent");
        let a = Agent {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while a.attached() < netns.len() {
            assert!(Instant::now() < deadline, "agent did not attach");
            std::thread::sleep(Duration::from_millis(100));
        }
        a
    }

    fn status(&self) -> Value {
        ureq::get(&format!("http://127.0.0.1:{}/api/v1/status", self.port))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json().ok())
            .unwrap_or(Value::Null)
    }

    /// A capture counter from the status (`kernel_sampled_out`, ...), 0 when absent.
    fn counter(&self, name: &str) -> u64 {
        self.status()["capture"]["counters"][name]
            .as_u64()
            .unwrap_or(0)
    }

    /// Evicts every flow from the kernel now, then waits out the store's flush (1 s).
    fn flush(&self) {
        let _ = ureq::post(&format!(
            "http://127.0.0.1:{}/api/v1/capture/flush",
            self.port
        ))
        .send_empty();
        std::thread::sleep(Duration::from_millis(1300));
    }

    fn attached(&self) -> usize {
        self.status()["capture"]["interfaces"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        stop(&mut self.child, libc::SIGTERM);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Runs a libpcap exporter on B's interface during a UDP run: (pps, cpu seconds, packets sent).
fn exporter_run(cmd: &str) -> (f64, f64, u64) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec ip netns exec {NS_B} {cmd}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("exporter");
    std::thread::sleep(Duration::from_millis(800));
    let pid = child.id();
    let c0 = cpu_ticks(pid);
    let (pps, sent) = udp_run();
    let cpu = (cpu_ticks(pid) - c0) as f64 / clk_tck();
    let _ = child.kill();
    let _ = child.wait();
    (pps, cpu, sent)
}

/// CPU time of a process and its children (pmacctd forks its plugins), ns.
fn tree_cpu_ns(pid: u32) -> u64 {
    let children: u64 = sh(&format!("pgrep -P {pid} || true"))
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .map(tree_cpu_ns)
        .sum();
    cpu_ns(pid) + children
}

/// What a `perf record -a -g` of one full-speed run says about the receive path: the
/// event count (ns of CPU sampled on all CPUs) and the inclusive shares (%) of the symbols
/// asked for.
fn perf_shares(data: &std::path::Path, symbols: &[&str]) -> (f64, Vec<f64>) {
    let out = sh(&format!(
        "perf report -i {} --children --sort sym --stdio -g none 2>/dev/null",
        data.display()
    ));
    let events = out
        .lines()
        .find_map(|l| l.strip_prefix("# Event count (approx.): "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let share = |sym: &str| -> f64 {
        // "     3.44%     1.67%  [k] tpacket_rcv": children, self, kind, symbol. A symbol
        // starting with `*` matches every symbol containing the rest (the JIT names programs
        // bpf_prog_<tag>_<name>), summed.
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (pct, name) = (f.first()?, f.get(3)?);
                let hit = match sym.strip_prefix('*') {
                    Some(part) => name.contains(part),
                    None => *name == sym,
                };
                if hit {
                    pct.trim_end_matches('%').parse::<f64>().ok()
                } else {
                    None
                }
            })
            .sum()
    };
    (events, symbols.iter().map(|s| share(s)).collect())
}

/// What each exporter costs the machine per packet, kernel and process: `perf record -a -g`
/// (cpu-clock) of a full-speed 64-byte UDP run of one million datagrams from A to B, each
/// exporter watching B alone. The kernel time its capture adds is the inclusive time of
/// `__netif_receive_skb_core` above the same run without an exporter (weir's TC program and
/// its dispatch, or the packet socket's `tpacket_rcv` copy into the capture ring and the
/// wake-ups); the process time is the exporter's own CPU (all threads) during the run.
fn machine_section(runs: usize) {
    if !have("perf") {
        println!();
        println!("machine: perf not installed (linux-perf); section skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    const PACKETS: u64 = 1_000_000;
    let names = ["none", "weir (as shipped)", "softflowd", "pmacctd"];
    let cmds = [
        String::new(),
        String::new(),
        format!("softflowd -d -i {IF_B} -n 127.0.0.1:2055"),
        format!("pmacctd -i {IF_B} -P print -c src_host,dst_host,src_port,dst_port,proto -r 60"),
    ];
    // [setup] -> (receive path ns/packet, capture symbols ns/packet, process ns/packet)
    let mut m: [Vec<(f64, f64, f64)>; 4] = Default::default();
    for r in 0..runs {
        for k in 0..4 {
            let which = (r + k) % 4;
            if which >= 2 && !have(cmds[which].split_whitespace().next().unwrap_or("")) {
                continue;
            }
            let mut child = None;
            let mut agent = None;
            let pid = match which {
                0 => None,
                1 => {
                    let a = Agent::start_on(
                        std::rc::Rc::new(tempfile::tempdir().expect("tempdir")),
                        &[NS_B],
                        &[],
                    );
                    // Past the start's own work (plugins compiled, the first eviction).
                    std::thread::sleep(Duration::from_secs(3));
                    let pid = a.child.id();
                    agent = Some(a);
                    Some(pid)
                }
                _ => {
                    let c = spawn_in_b(&cmds[which], &dir.path().join("exporter.log"));
                    std::thread::sleep(Duration::from_secs(1));
                    let pid = c.id();
                    child = Some(c);
                    Some(pid)
                }
            };
            let data = dir.path().join("perf.data");
            let c0 = pid.map(tree_cpu_ns).unwrap_or(0);
            sh(&format!(
                "perf record -q -e cpu-clock -a -g -F 4999 -o {} -- ip netns exec {NS_A} iperf3 -c {B4} -u -l 64 -b 0 -k {PACKETS} >/dev/null 2>&1",
                data.display()
            ));
            let process = pid.map(tree_cpu_ns).unwrap_or(0).saturating_sub(c0) as f64;
            if let Some(mut c) = child {
                stop(&mut c, libc::SIGTERM);
            }
            drop(agent);
            let (events, shares) = perf_shares(
                &data,
                &[
                    // `.constprop.0` or not, as the kernel's compiler made it.
                    "*__netif_receive_skb_core",
                    "*_weir_",
                    "__htab_map_lookup_elem",
                    "tpacket_rcv",
                ],
            );
            let per = |pct: f64| pct / 100.0 * events / PACKETS as f64;
            // perf's unwinder does not get from the hash map's lookup (called by the JITed
            // program) back into the program: the two are counted side by side.
            let capture = if which == 1 {
                shares[1] + shares[2]
            } else {
                shares[3]
            };
            m[which].push((per(shares[0]), per(capture), process / PACKETS as f64));
        }
    }
    let med = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        median(&mut v.iter().map(f).collect::<Vec<_>>())
    };
    let base = med(&m[0], |x| x.0);
    let total = |i: usize| med(&m[i], |x| x.0) - base + med(&m[i], |x| x.2);
    // A perf that recorded nothing leaves every figure 0: say so rather than divide by it.
    let soft = total(2);
    if soft.is_nan() || soft <= 0.0 {
        println!();
        println!(
            "machine: perf recorded no softflowd figure (see `perf record` errors); no ratios"
        );
    }
    println!();
    println!(
        "machine: {runs} interleaved rounds, medians; perf record -a -g (cpu-clock, 4999 Hz) of {PACKETS} 64-byte UDP datagrams at full speed from A to B, each exporter watching B alone; ns per packet"
    );
    println!();
    println!(
        "| exporter | receive path (`__netif_receive_skb_core`, inclusive) | above none | of which its capture code | process CPU | kernel + process | ratio to softflowd |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        if m[i].is_empty() {
            println!("| {name} | not installed (bash scripts/deps.sh bench) | | | | | |");
            continue;
        }
        let rx = med(&m[i], |x| x.0);
        if i == 0 {
            println!("| {name} | {rx:.0} | | | | | |");
            continue;
        }
        let what = if i == 1 {
            "weir's programs and their flow-map lookups"
        } else {
            "tpacket_rcv"
        };
        println!(
            "| {name} | {rx:.0} | {:.0} | {:.0} ({what}) | {:.0} | {:.0} | {:.2} |",
            rx - base,
            med(&m[i], |x| x.1),
            med(&m[i], |x| x.2),
            total(i),
            if soft > 0.0 {
                total(i) / soft
            } else {
                f64::NAN
            }
        );
    }
}

/// 100 k active flows: the agent's resident memory while it evicts and stores them, on a
/// first start (the bundled plugins compiled then, cranelift's code paged in) and on a start
/// that finds them compiled in its cache (every later start).
fn rss_section() {
    // `WEIR_BENCH_AGENT_ARGS` adds agent options (say `--index-memory 15MB`) to compare.
    let extra = std::env::var("WEIR_BENCH_AGENT_ARGS").unwrap_or_default();
    let mut args = vec!["--max-flows", "131072"];
    args.extend(extra.split_whitespace());
    println!();
    println!("| 100 k active flows (50 k UDP ports each way, 12 s) | value | target |");
    println!("|---|---|---|");
    rss_run(Agent::start(&args), "first start");
    let warm = std::rc::Rc::new(tempfile::tempdir().expect("tempdir"));
    {
        let agent = Agent::start_in(warm.clone(), &args);
        let cache = warm.path().join("plugin-cache");
        let deadline = Instant::now() + Duration::from_secs(60);
        while cached_plugins(&cache) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            cached_plugins(&cache) >= 3,
            "plugins were not compiled into {cache:?}"
        );
        drop(agent);
    }
    rss_run(
        Agent::start_in(warm, &args),
        "started again (plugins from the cache)",
    );
}

fn cached_plugins(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .count()
        })
        .unwrap_or(0)
}

fn rss_run(agent: Agent, label: &str) {
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nend=time.time()+12\nwhile time.time()<end:\n    for p in range(1,50001):\n        s.sendto(b'x',('{B4}',p))\n"
    );
    let mut generator = Command::new("ip")
        .args(["netns", "exec", NS_A, "python3", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("generator");
    let mut rss_max = 0u64;
    // (anonymous, file-backed) at the largest sample.
    let mut at_max = (0u64, 0u64);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(14) {
        std::thread::sleep(Duration::from_millis(500));
        let rss = status_kib(agent.child.id(), "VmRSS:");
        if rss > rss_max {
            rss_max = rss;
            at_max = (
                status_kib(agent.child.id(), "RssAnon:"),
                status_kib(agent.child.id(), "RssFile:"),
            );
        }
    }
    let _ = generator.wait();
    let st = agent.status();
    let ev = st["capture"]["counters"]["flows_evicted"]
        .as_u64()
        .unwrap_or(0);
    let timer = st["capture"]["counters"]["evictions_timer"]
        .as_u64()
        .unwrap_or(1)
        .max(1);
    let per_eviction = ev / timer;
    let hwm = status_kib(agent.child.id(), "VmHWM:");
    let (anon, file) = (
        status_kib(agent.child.id(), "RssAnon:"),
        status_kib(agent.child.id(), "RssFile:"),
    );
    drop(agent);
    println!(
        "| {label}: records drained per eviction, both namespaces (mean) | {per_eviction} | ~100000 (50 k flows, each seen on both ends) |"
    );
    println!(
        "| {label}: agent RSS, max sampled / peak (VmHWM) | {} MiB / {} MiB | <= 100 MiB |",
        rss_max / 1024,
        hwm / 1024
    );
    println!(
        "| {label}: at the largest sample, anonymous / file-backed | {} MiB / {} MiB | |",
        at_max.0 / 1024,
        at_max.1 / 1024
    );
    println!(
        "| {label}: at the end, anonymous / file-backed | {} MiB / {} MiB | |",
        anon / 1024,
        file / 1024
    );
}

fn main() {
    let runs: usize = std::env::var("WEIR_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let sections = std::env::var("WEIR_BENCH_SECTIONS").unwrap_or_else(|_| {
        "overhead,rss,exporters,counts,kernel,features,sampling,machine".into()
    });
    let want = |s: &str| sections.split(',').any(|x| x.trim() == s);
    setup();
    if !want("overhead") {
        if want("rss") {
            rss_section();
        }
        if want("counts") {
            counts_section(runs.min(3));
        }
        if want("kernel") {
            kernel_section(runs);
        }
        if want("features") {
            features_section(runs);
        }
        if want("sampling") {
            sampling_section(runs);
        }
        if want("machine") {
            machine_section(runs.min(3));
        }
        teardown();
        return;
    }
    let (mut tcp_off, mut tcp_on, mut udp_off, mut udp_on) = (vec![], vec![], vec![], vec![]);
    let (mut ns_udp, mut ns_tcp, mut agent_cpu) = (vec![], vec![], vec![]);
    for r in 0..runs {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            if !on {
                tcp_off.push(tcp_run());
                udp_off.push(udp_run().0);
                continue;
            }
            let agent = Agent::start(&[]);
            tcp_on.push(tcp_run());
            // User time only: softirq work done while an agent thread happens to be on the CPU
            // is charged to it as system time, whoever's packets they are.
            let c0 = cpu_ticks2(agent.child.id()).0;
            let t = Instant::now();
            let (pps, _) = udp_run();
            let cpu = (cpu_ticks2(agent.child.id()).0 - c0) as f64
                / clk_tck()
                / t.elapsed().as_secs_f64();
            udp_on.push(pps);
            agent_cpu.push((cpu * 100.0, pps));
        }
    }
    // Program run time, measured apart: kernel.bpf_stats_enabled itself slows every run.
    sh("sysctl -qw kernel.bpf_stats_enabled=1");
    {
        let _agent = Agent::start(&[]);
        for _ in 0..runs.min(3) {
            let s0 = bpf_stats();
            tcp_run();
            let s1 = bpf_stats();
            udp_run();
            let s2 = bpf_stats();
            ns_tcp.push((s1.0 - s0.0) as f64 / (s1.1 - s0.1).max(1) as f64);
            ns_udp.push((s2.0 - s1.0) as f64 / (s2.1 - s1.1).max(1) as f64);
        }
    }
    sh("sysctl -qw kernel.bpf_stats_enabled=0");
    let (to, tn, uo, un) = (
        median(&mut tcp_off),
        median(&mut tcp_on),
        median(&mut udp_off),
        median(&mut udp_on),
    );
    let mut cpu_pct: Vec<f64> = agent_cpu.iter().map(|c| c.0).collect();
    let mut cpu_at_400k: Vec<f64> = agent_cpu
        .iter()
        .map(|c| c.0 * 400_000.0 / c.1.max(1.0))
        .collect();
    let (nu, nt) = (median(&mut ns_udp), median(&mut ns_tcp));
    println!(
        "capture benchmark: {runs} interleaved rounds without/with the agent (bpf_stats off), medians; program run time from a separate bpf_stats phase"
    );
    println!();
    println!("| measure | without agent | with agent | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| iperf3 TCP throughput | {to:.2} Gbit/s | {tn:.2} Gbit/s | {:.3} | |",
        tn / to
    );
    println!(
        "| iperf3 64-byte UDP received | {:.0} pkt/s | {:.0} pkt/s | {:.3} | |",
        uo,
        un,
        un / uo
    );
    println!("| program run time per 64-byte UDP packet | | {nu:.0} ns | | <= 150 ns |");
    println!("| program run time per TCP skb (GSO) | | {nt:.0} ns | | |");
    println!(
        "| agent user-space CPU during the UDP run | | {:.2} % of a core | | |",
        median(&mut cpu_pct)
    );
    println!(
        "| agent user-space CPU scaled to 400 k pkt/s | | {:.2} % of a core | | < 2 % |",
        median(&mut cpu_at_400k)
    );

    if want("rss") {
        rss_section();
    }

    // Side by side with libpcap exporters on the same traffic.
    println!();
    println!(
        "| exporter (64-byte UDP, same runs) | received pkt/s | ratio to none | CPU s per M packets (process) |"
    );
    println!("|---|---|---|---|");
    let weir_cpu_per_m = {
        // kernel program time per packet (each packet runs the program twice: A egress and
        // B ingress) plus the agent's own CPU, per million packets.
        let agent_s_per_m = median(
            &mut agent_cpu
                .iter()
                .map(|c| c.0 / 100.0 / c.1 * 1e6)
                .collect::<Vec<_>>(),
        );
        nu * 2.0 / 1e3 + agent_s_per_m
    };
    println!(
        "| weir (kernel programs + agent) | {un:.0} | {:.3} | {weir_cpu_per_m:.3} |",
        un / uo
    );
    for (name, cmd) in [
        (
            "softflowd",
            format!("softflowd -d -i {IF_B} -n 127.0.0.1:2055"),
        ),
        (
            "pmacctd",
            format!(
                "pmacctd -i {IF_B} -P print -c src_host,dst_host,src_port,dst_port,proto -r 60"
            ),
        ),
    ] {
        let bin = cmd.split_whitespace().next().unwrap_or("");
        if !have(bin) {
            println!("| {name} | not installed (bash scripts/deps.sh bench) | | |");
            continue;
        }
        let (mut pps, mut per_m) = (vec![], vec![]);
        for _ in 0..runs.min(3) {
            let (p, cpu, sent) = exporter_run(&cmd);
            pps.push(p);
            per_m.push(cpu / (sent as f64 / 1e6));
        }
        let p = median(&mut pps);
        println!(
            "| {name} | {p:.0} | {:.3} | {:.3} |",
            p / uo,
            median(&mut per_m)
        );
    }
    println!();
    println!(
        "(weir's figure counts its program on both hooks a packet crosses, A egress and B ingress, where the exporters watch one interface; their process CPU leaves out the kernel's copy of each packet into their capture ring.)"
    );
    if want("counts") {
        counts_section(runs.min(3));
    }
    if want("kernel") {
        kernel_section(runs);
    }
    if want("features") {
        features_section(runs);
    }
    if want("sampling") {
        sampling_section(runs);
    }
    if want("machine") {
        machine_section(runs.min(3));
    }
    teardown();
}
