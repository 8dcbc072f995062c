//! The web UI in a real browser (Debian's chromium, driven by playwright-core from npm) against
//! a real agent capturing real traffic between two network namespaces. The browser side is
//! ui/web/test/browser.mjs; screenshots of every page stay in target/ui-screenshots/.

use crate::capture::agent_for;
use crate::plugins::{staged, weir};
use crate::util::{Pair, now_ms, require, sh};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn every_page_loads_and_the_sankey_agrees_with_the_api() {
    require(&["node", "chromium", "curl", "ping", "python3"]);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("ui/web/node_modules/playwright-core").exists(),
        "run `npm ci` in ui/web first (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new(5);
    let a = agent_for(&pair, dir.path());
    // A traffic mix: pings both ways, a few HTTP fetches, and a UDP burst.
    let from = now_ms() - 1000;
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("page"), vec![b'x'; 50_000]).expect("page");
    sh(&format!(
        "ip netns exec {} sh -c 'cd {} && exec python3 -m http.server 8080 --bind {} >/dev/null 2>&1' & echo $! > {}",
        pair.ns_b,
        www.display(),
        pair.b4,
        dir.path().join("http.pid").display()
    ));
    std::thread::sleep(std::time::Duration::from_millis(800));
    sh(&format!(
        "ip netns exec {} ping -q -c 5 -i 0.05 {}",
        pair.ns_a, pair.b4
    ));
    sh(&format!(
        "ip netns exec {} ping -q -c 3 -i 0.05 {}",
        pair.ns_b, pair.a4
    ));
    for _ in 0..3 {
        sh(&format!(
            "ip netns exec {} curl -s -o /dev/null http://{}:8080/page",
            pair.ns_a, pair.b4
        ));
    }
    let _ = sh(&format!(
        "kill $(cat {}) 2>/dev/null; true",
        dir.path().join("http.pid").display()
    ));
    a.flush();
    // A live alert for the Alerts page and the overview marks: the no-flows self-alert on a
    // port nothing talks to fires (critical) at the first evaluation after it loads.
    let (code, _, err) = weir(
        &dir.path().join("data"),
        &[
            "install",
            "bundled:no-flows",
            "--config",
            "filter=DstPort=7777",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, v) = a.post("/api/v1/alerts/evaluate", "");
        let active = a.ok("/api/v1/alerts", &[]);
        if active["active"].as_array().is_some_and(|l| {
            l.iter()
                .any(|x| x["name"] == "NoFlows" && x["state"] == "firing")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "NoFlows never fired: {v} {active}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let to = now_ms() + 1000;

    // A visualization that returns views as big as asked (the page must cope).
    let big = staged(dir.path(), "big_view", "big-view");
    let (code, _, err) = weir(
        &dir.path().join("data"),
        &["install", big.to_str().expect("p")],
    );
    assert_eq!(code, 0, "{err}");

    // A visualization to install through the UI: signed, so its manifest is embedded.
    let src = staged(dir.path(), "top_ports", "top-ports");
    let keys = dir.path().join("keys");
    let (code, _, err) = weir(&keys, &["keygen", "ui", "--dir", keys.to_str().expect("p")]);
    assert_eq!(code, 0, "{err}");
    let signed = dir.path().join("top-ports.wasm");
    let (code, _, err) = weir(
        &keys,
        &[
            "sign",
            src.join("plugin.wasm").to_str().expect("p"),
            "--key",
            keys.join("ui.key").to_str().expect("p"),
            "-o",
            signed.to_str().expect("p"),
        ],
    );
    assert_eq!(code, 0, "{err}");

    // A second agent that wants an access token (API only; the page asks for it).
    let token_dir = dir.path().join("token-agent");
    std::fs::create_dir_all(&token_dir).expect("dir");
    let token_file = token_dir.join("token");
    std::fs::write(&token_file, "s3cret-token-for-the-ui-test\n").expect("token");
    let guarded = crate::util::Agent::start(
        &token_dir,
        &[
            "--no-capture",
            "--token-file",
            token_file.to_str().expect("p"),
        ],
    );

    let out = Command::new("node")
        .arg(root.join("ui/web/test/browser.mjs"))
        .current_dir(root.join("ui/web"))
        .env("WEIR_URL", a.url(""))
        .env("WEIR_FROM_MS", from.to_string())
        .env("WEIR_TO_MS", to.to_string())
        .env("WEIR_PLUGIN", &signed)
        .env("WEIR_TOKEN_URL", guarded.url(""))
        .env("WEIR_TOKEN", "s3cret-token-for-the-ui-test")
        .env("WEIR_SHOTS", root.join("target/ui-screenshots"))
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        a.log_text()
            .chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ui browser test: ok"));
}

#[test]
fn an_access_token_is_required_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = Command::new(crate::util::WEIR)
            .args(args)
            .output()
            .expect("weir");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let data = dir.path().join("refused");
    let data = data.to_str().expect("p");
    // Refused before anything is bound.
    let (ok, _, err) = run(&[
        "agent",
        "--no-capture",
        "--data-dir",
        data,
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(!ok);
    assert!(err.contains("without an access token"), "{err}");
    let short = dir.path().join("short");
    std::fs::write(&short, "abc").expect("token");
    let (ok, _, err) = run(&[
        "agent",
        "--no-capture",
        "--data-dir",
        data,
        "--token-file",
        short.to_str().expect("p"),
    ]);
    assert!(!ok);
    assert!(err.contains("at least 16 characters"), "{err}");

    // With a token, the CLI must send it.
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef-cli\n").expect("token");
    let a = crate::util::Agent::start(
        dir.path(),
        &["--no-capture", "--token-file", token.to_str().expect("p")],
    );
    let server = a.url("");
    let (ok, _, err) = run(&["status", "--server", &server]);
    assert!(!ok);
    assert!(err.contains("needs an access token"), "{err}");
    let (ok, _, err) = run(&["status", "--server", &server, "--token", "nope"]);
    assert!(!ok);
    assert!(err.contains("the access token is wrong"), "{err}");
    let (ok, out, err) = run(&[
        "status",
        "--server",
        &server,
        "--token",
        "0123456789abcdef-cli",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("storage"), "{out}");
}

#[test]
fn demo_fills_every_view_and_cleans_up_on_ctrl_c() {
    require(&["ip", "python3", "curl", "iperf3", "nft"]);
    let port = crate::util::free_port();
    let mut child = Command::new(crate::util::WEIR)
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--duration",
            "5m",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("weir demo");
    let prefix = format!("wd{}-", child.id() % 100_000);
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| -> Option<serde_json::Value> {
        let mut r = ureq::get(&format!("{base}{path}")).call().ok()?;
        r.body_mut().read_json().ok()
    };
    // Within a minute: web, DNS, bulk, the dropped port and a scan's spread of ports.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ports = loop {
        let v =
            get("/api/v1/flows/aggregate?group_by=DstPort&top=1000&from=-5m").unwrap_or_default();
        let ports: Vec<u64> = v["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|x| x["key"]["DstPort"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        if [80, 53, 5201, 8443].iter().all(|p| ports.contains(p)) && ports.len() > 100 {
            break ports;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo traffic incomplete after a minute: ports {ports:?}");
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    assert!(ports.len() > 100);
    // The dropped port shows the firewall's drops; DNS lookups carry names and codes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let drops = get("/api/v1/flows/aggregate?group_by=DstPort,PktDropLatestDropCause&metric=drop_packets&filter=DstPort%3D8443&from=-5m")
            .unwrap_or_default();
        let nx = get("/api/v1/flows?filter=DnsFlagsResponseCode%3DNXDomain&from=-5m&limit=5")
            .unwrap_or_default();
        let dropped = drops["groups"].as_array().is_some_and(|g| {
            g.iter().any(|x| {
                x["key"]["PktDropLatestDropCause"] == "SKB_DROP_REASON_NETFILTER_DROP"
                    && x["drop_packets"].as_u64() > Some(0)
            })
        });
        let named = nx["flows"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["DnsName"] == "nope.demo"));
        if dropped && named {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo: no drops or DNS names: {drops}\n{nx}");
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    // The bundled views are installed and draw the demo's traffic.
    let run = ureq::post(&format!("{base}/api/v1/plugins/sankey/run"))
        .send(r#"{"from_ms": 0}"#)
        .expect("sankey run")
        .body_mut()
        .read_json::<serde_json::Value>()
        .expect("json");
    assert!(
        run["result"]["view"]["links"].as_array().map(Vec::len) > Some(3),
        "{run}"
    );
    assert!(sh("ip netns list").contains(&prefix));
    // Ctrl-C: the demo stops and removes everything it made.
    sh(&format!("kill -INT {}", child.id()));
    let status = child.wait().expect("wait");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(status.success(), "demo exit {status}: {err}");
    assert!(err.contains("removed its namespaces and data"), "{err}");
    let left = sh("ip netns list");
    assert!(!left.contains(&prefix), "namespaces left behind: {left}");
}
