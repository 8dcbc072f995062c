//! "What changed" end to end: a real Prometheus (Debian's 2.42) scrapes the agent's `/metrics`
//! and a workload exporter (`py/workload_exporter.py`: a veth's received bytes, a constant
//! config version, a temperature wobbling on its own) every second; an iperf3 burst runs
//! between two namespaces between quiet stretches; the bundled `what-changed` correlator, run
//! over the window (a ping runs all along, as background traffic would), must name the series that moved with the burst (the veth's byte counter,
//! weir's own flow byte counter) and neither of the others, and be refused a Prometheus it was
//! not granted. An incident of the burst, opened elsewhere with Prometheus stopped, gives
//! what-changed's same findings from the answers it recorded.

use crate::capture::agent_with;
use crate::plugins::weir;
use crate::util::{Agent, KillOnDrop, Pair, Prometheus, free_port, label, now_ms, require, sh};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py");

#[test]
fn what_changed_names_the_series_that_moved_with_a_burst_and_not_the_others() {
    require(&["prometheus", "iperf3", "python3", "ip"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::alone(74);
    // what-changed also runs by itself around each volume spike once it is installed.
    let a = agent_with(
        &pair,
        dir.path(),
        &["--no-dedup", "--on-spike", "what-changed"],
    );

    let eport = free_port();
    let mut exporter = Command::new("python3")
        .arg(format!("{PY}/workload_exporter.py"))
        .args([&eport.to_string(), &pair.ns_b, &pair.b_if])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("exporter");
    let out = exporter.stdout.take().expect("stdout");
    let _exporter = KillOnDrop(exporter);
    let mut ready = String::new();
    BufReader::new(out).read_line(&mut ready).expect("ready");
    assert_eq!(ready.trim(), "ready");

    let prom = Prometheus::start(
        dir.path(),
        &[
            ("weir", format!("127.0.0.1:{}", a.port)),
            ("workload", format!("127.0.0.1:{eport}")),
        ],
    );
    let pport = prom.port;

    // Quiet, a 6 s burst, quiet; Prometheus scrapes throughout.
    sh(&format!(
        "ip netns exec {} iperf3 -s -1 -D --pidfile {}",
        pair.ns_b,
        dir.path().join("iperf.pid").display()
    ));
    // Background traffic all along (a ping every half second), so the window's flows span it.
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &pair.ns_a, "ping", "-q", "-i", "0.5", &pair.b4,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ping");
    let _ping = KillOnDrop(ping);
    std::thread::sleep(Duration::from_secs(8));
    let from = now_ms() - 6000;
    sh(&format!(
        "ip netns exec {} iperf3 -c {} -t 6 -b 300M -J > /dev/null",
        pair.ns_a, pair.b4
    ));
    std::thread::sleep(Duration::from_secs(8));
    a.flush();
    std::thread::sleep(Duration::from_secs(2));
    let to = now_ms() - 1000;

    // The correlator, granted this Prometheus only.
    let data = dir.path().join("data");
    let queries = "workload_rx_bytes_total;workload_config_version;workload_temperature_celsius;sum(weir_flow_bytes_total)";
    let (code, _, err) = weir(
        &data,
        &[
            "install",
            "bundled:what-changed",
            "--scope",
            &format!("outbound-http=127.0.0.1:{pport}"),
            "--config",
            &format!("prometheus=http://127.0.0.1:{pport}"),
            "--config",
            &format!("queries={queries}"),
            "--config",
            "step=2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let run_on = |x: &Agent, extra: &[&str]| -> (i32, String, String) {
        let mut args = vec!["plugin", "run", "what-changed", "--json"];
        let (f, t) = (from.to_string(), to.to_string());
        args.extend(["--from", &f, "--to", &t]);
        args.extend(extra);
        // The agent hot-loads what was installed within two seconds.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = x.cli(&args);
            if r.0 == 0 || !r.2.contains("no loaded plugin") {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "what-changed never loaded: {}\n{}",
                r.2,
                x.ok("/api/v1/plugins", &[])
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let run = |extra: &[&str]| run_on(&a, extra);
    let ns_filter = format!("NetNs={}", pair.ns_a);
    let (code, out, err) = run(&["--filter", &ns_filter]);
    assert_eq!(code, 0, "{err}\n{out}");
    let v: Value = serde_json::from_str(&out).expect("run JSON");
    let notes = v["result"]["annotations"]
        .as_array()
        .unwrap_or_else(|| panic!("no annotations: {v}"));
    let series: Vec<(&str, f64)> = notes
        .iter()
        .filter_map(|n| {
            let labels = n["labels"].as_object()?;
            Some((
                labels.get("series")?.as_str()?,
                labels.get("r")?.as_str()?.parse().ok()?,
            ))
        })
        .collect();
    let moved = |prefix: &str| series.iter().find(|(s, _)| s.starts_with(prefix));
    let rx = moved("workload_rx_bytes_total")
        .unwrap_or_else(|| panic!("the veth's counter did not move: {v}"));
    assert!(rx.1 > 0.8, "{v}");
    // An expression's series is named by its query.
    assert!(
        series
            .iter()
            .any(|(s, r)| *s == "sum(weir_flow_bytes_total)" && *r > 0.8),
        "weir's own byte counter: {v}"
    );
    assert!(moved("workload_config_version").is_none(), "{v}");
    assert!(moved("workload_temperature_celsius").is_none(), "{v}");

    // The timeline finds the burst as a spike on its own (a minute before it too: ten
    // buckets at least are judged)...
    let t = a.ok(
        "/api/v1/timeline",
        &[
            ("from", &(from - 60_000).to_string()),
            ("to", &to.to_string()),
            ("step", "5s"),
        ],
    );
    let spikes = t["lanes"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["id"] == "spikes"))
        .unwrap_or_else(|| panic!("no spikes lane: {t}"));
    assert!(
        spikes["items"].as_array().is_some_and(|i| i
            .iter()
            .any(|i| i["kind"] == "spike" && i["time_ms"].as_u64() >= Some(from))),
        "{spikes}"
    );
    // The page draws it, and its flows are one click away (the burst's first).
    crate::util::browser_test(
        "spikes.mjs",
        &a.url(""),
        &[
            ("WEIR_FROM", crate::util::iso(from - 60_000)),
            ("WEIR_TO", crate::util::iso(to)),
        ],
    );
    // ...and the agent ran what-changed around it with nobody asking: its annotations are
    // kept, labelled with the trigger, and name the veth's counter again.
    let deadline = Instant::now() + Duration::from_secs(90);
    let auto = loop {
        let r = a.ok(
            "/api/v1/records",
            &[
                ("kind", "annotation"),
                ("from", "-1h"),
                ("label", "trigger=spike"),
            ],
        );
        let list = r["records"].as_array().cloned().unwrap_or_default();
        if list
            .iter()
            .any(|n| label(n, "series").is_some_and(|s| s.starts_with("workload_rx_bytes_total")))
        {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "no annotation from the spike run: {r}\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    for n in &auto {
        assert_eq!(n["source"], "what-changed", "{n}");
        let spike_from: u64 = label(n, "spike_from_ms")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{n}"));
        // The spike it ran around is the burst (within a volume bucket of it).
        assert!(
            spike_from + 5_000 >= from && spike_from <= to,
            "{n} {from} {to}"
        );
    }
    assert!(
        !auto
            .iter()
            .any(|n| label(n, "series").is_some_and(|s| s.starts_with("workload_config_version"))),
        "{auto:?}"
    );

    // An incident of the burst carries what Prometheus answered: opened elsewhere with
    // Prometheus gone, what-changed over the same window finds exactly the same. (The ping
    // stopped first, so no flow of the window arrives between the run and the export.)
    drop(_ping);
    a.flush();
    std::thread::sleep(Duration::from_secs(2));
    let (code, out, err) = run(&["--filter", &ns_filter]);
    assert_eq!(code, 0, "{err}\n{out}");
    let original: Value = serde_json::from_str(&out).expect("run JSON");
    let incident = dir.path().join("burst.tar.gz");
    let (code, _, err) = a.cli(&[
        "incident",
        "export",
        "--from",
        &(from - 60_000).to_string(),
        "--to",
        &(now_ms() + 1000).to_string(),
        "-o",
        incident.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{err}");
    drop(prom);
    assert!(
        ureq::get(&format!("http://127.0.0.1:{pport}/-/ready"))
            .call()
            .is_err(),
        "prometheus still up"
    );
    let b = Agent::replay(&incident, &dir.path().join("replay"), &[]);
    let (code, out, err) = run_on(&b, &["--filter", &ns_filter]);
    assert_eq!(code, 0, "{err}\n{out}\n{}", b.log_text());
    let replayed: Value = serde_json::from_str(&out).expect("replayed JSON");
    assert!(
        original["result"]["annotations"]
            .as_array()
            .is_some_and(|l| !l.is_empty()),
        "{original}"
    );
    assert_eq!(replayed["result"], original["result"]);
    // A window the original never asked about: refused, naming the request, no network.
    let other = (from - 30_000).to_string();
    let (code, out, err) = b.cli(&[
        "plugin",
        "run",
        "what-changed",
        "--json",
        "--from",
        &other,
        "--to",
        &to.to_string(),
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("has no answer recorded on the original node") && err.contains("query_range"),
        "{err}"
    );
    drop(b);

    // A Prometheus it was not granted: refused, naming the scope.
    let (code, _, err) = weir(
        &data,
        &[
            "grant",
            "what-changed",
            "outbound-http",
            "--scope",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_secs(3));
    let (code, out, err) = run(&[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("127.0.0.1:1") || err.contains("scope"),
        "{err}"
    );
}
