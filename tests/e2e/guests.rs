//! Alert scripts in Python (componentize-py) and JavaScript (jco, QuickJS), built by
//! scripts/build-guest-plugins.sh (CI runs it before the tests), installed and evaluated in a
//! real agent against stored flows.

use crate::plugins::{run_cli, weir};
use crate::util::{Agent, now_ms};
use serde_json::{Value, json};
use std::path::PathBuf;

fn guest(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/target/guests")
        .join(name);
    assert!(
        p.join("plugin.toml").exists(),
        "{} missing: run scripts/build-guest-plugins.sh",
        p.display()
    );
    p
}

fn flow(src: &str, dst: &str, bytes: u64, end_ms: u64) -> weir_core::Flow {
    let mut f = weir_core::Flow::empty();
    f.src_addr = src.parse().expect("ip");
    f.dst_addr = dst.parse().expect("ip");
    f.proto = 6;
    f.bytes = bytes;
    f.packets = bytes / 1000 + 1;
    f.time_flow_start_ms = end_ms - 1000;
    f.time_flow_end_ms = end_ms;
    f
}

fn run(a: &Agent, name: &str, body: Value) -> (u16, Value) {
    a.post(&format!("/api/v1/plugins/{name}/run"), &body.to_string())
}

#[test]
fn python_and_javascript_alert_scripts_evaluate_stored_flows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (code, out, err) = weir(
        &data,
        &[
            "install",
            guest("heavy-talkers").to_str().expect("p"),
            "--config",
            "threshold_bytes=1000000",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("heavy-talkers 0.1.0 (alert-rule) installed"),
        "{out}"
    );
    let (code, out, err) = weir(
        &data,
        &[
            "install",
            guest("quiet-network").to_str().expect("p"),
            "--config",
            "min_bytes=1000",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("quiet-network 0.1.0 (alert-rule) installed"),
        "{out}"
    );

    let a = Agent::start(dir.path(), &["--no-capture"]);
    let now = now_ms();
    let flows = vec![
        flow("198.18.0.1", "198.18.0.2", 3_000_000, now - 5000),
        flow("198.18.0.1", "198.18.0.2", 2_000_000, now - 4000),
        flow("198.18.0.3", "198.18.0.2", 400_000, now - 3000),
        flow("2001:db8::1", "2001:db8::2", 1_500_000, now - 2000),
    ];
    let (s, v) = a.post(
        "/api/v1/flows",
        &serde_json::to_string(&flows).expect("json"),
    );
    assert_eq!(s, 200, "{v}");

    let window = json!({"from_ms": now - 60_000, "to_ms": now});
    // Python: the two pairs over 1 MB, largest first; the 400 kB pair stays quiet.
    let (s, v) = run(&a, "heavy-talkers", window.clone());
    assert_eq!(s, 200, "{v}");
    let alerts = v["result"]["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 2, "{v}");
    assert_eq!(alerts[0]["name"], "heavy-talker");
    assert_eq!(alerts[0]["severity"], "warning");
    assert_eq!(
        alerts[0]["summary"], "198.18.0.1 -> 198.18.0.2 sent 5.0 MB in 60 s",
        "{v}"
    );
    assert_eq!(alerts[0]["labels"]["dst"], "198.18.0.2", "{v}");
    assert!(
        alerts[0]["labels"].get("bytes").is_none(),
        "measured values stay out of labels"
    );
    assert_eq!(alerts[0]["time_ms"], now);
    assert_eq!(alerts[1]["labels"]["src"], "2001:db8::1", "{v}");

    // JavaScript: traffic in the window, so no alert; an empty earlier window is "quiet".
    let (s, v) = run(&a, "quiet-network", window);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["alerts"], json!([]), "{v}");
    let text = run_cli(&a, &["quiet-network", "--from", "-3h", "--to", "-2h"]);
    assert!(text.contains("critical quiet-network:"), "{text}");
    assert!(text.contains("1000"), "{text}");

    // A bad config value is the script's invalid-input: a 400 naming the key (hot-reinstalled).
    let (code, _, err) = weir(&data, &["remove", "heavy-talkers"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = weir(
        &data,
        &[
            "install",
            guest("heavy-talkers").to_str().expect("p"),
            "--config",
            "threshold_bytes=lots",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (s, v) = loop {
        let (s, v) = run(&a, "heavy-talkers", json!({}));
        if s == 400 || std::time::Instant::now() > deadline {
            break (s, v);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("threshold_bytes"),
        "{v}"
    );
    // The agent kept serving throughout.
    assert_eq!(a.get_raw("/healthz").expect("healthz").0, 200);
}

/// The five-minute path of docs/ALERTS.md, as a user walks it: `weir plugin new alert-rule
/// NAME --lang python|javascript`, `weir plugin build DIR --install --config ...`, and the
/// agent's next evaluation fires both rules on the traffic they watch.
#[test]
fn scaffolded_python_and_javascript_rules_build_install_and_fire() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The toolchains scripts/build-guest-plugins.sh installed (jco from the example project,
    // so no download here).
    let jco = root.join("plugins/js/quiet-network/node_modules/.bin/jco");
    assert!(jco.exists(), "run scripts/build-guest-plugins.sh first");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Run where the user stands: in the folder the projects are made in, so the printed
    // build command's relative path is what the build gets.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(crate::util::WEIR)
            .arg("plugin")
            .args(args)
            .current_dir(dir.path())
            .env("WEIR_DATA_DIR", &data)
            .env("WEIR_JCO", &jco)
            .output()
            .expect("weir plugin");
        assert!(
            out.status.success(),
            "weir plugin {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (name, lang) in [("py-hot", "python"), ("js-hot", "javascript")] {
        let out = cli(&["new", "alert-rule", name, "--lang", lang]);
        // The command exactly as printed (`weir plugin build ./NAME --install`), relative
        // path and all, plus the rule's config.
        let printed = out
            .lines()
            .find_map(|l| l.split_once("build and install: weir plugin "))
            .map(|(_, cmd)| cmd.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no build command printed: {out}"));
        assert_eq!(printed, ["build", &format!("./{name}"), "--install"]);
        let project = dir.path().join(name);
        let mut args = printed.clone();
        args.extend(["--config", "bytes_warning=200000"]);
        let out = cli(&args);
        assert!(
            out.contains(&format!("{name} 0.1.0 (alert-rule) installed")),
            "{out}"
        );
        assert!(project.join(format!("dist/{name}.wasm")).exists());
    }
    // Building again upgrades in place.
    let out = cli(&[
        "build",
        "py-hot",
        "--install",
        "--config",
        "bytes_warning=200000",
    ]);
    assert!(out.contains("py-hot 0.1.0 (alert-rule) upgraded"), "{out}");

    let a = Agent::start(dir.path(), &["--no-capture", "--alert-interval", "1h"]);
    let now = now_ms();
    let mut hot = flow("198.18.0.1", "198.18.0.2", 300_000, now - 2000);
    hot.dst_port = 5201;
    let mut cool = flow("198.18.0.1", "198.18.0.2", 1_000, now - 2000);
    cool.dst_port = 22;
    let (s, v) = a.post(
        "/api/v1/flows",
        &serde_json::to_string(&[hot, cool]).expect("json"),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = a.post("/api/v1/alerts/evaluate", "");
    assert_eq!(s, 200, "{v}");
    let active = a.ok("/api/v1/alerts", &[]);
    for rule in ["py-hot", "js-hot"] {
        let fired: Vec<&Value> = active["active"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["rule"] == rule)
            .collect();
        assert_eq!(fired.len(), 1, "{rule}: {active}");
        assert_eq!(fired[0]["name"], "PortHot");
        assert_eq!(fired[0]["state"], "firing");
        assert_eq!(fired[0]["severity"], "warning");
        assert_eq!(fired[0]["labels"]["dst_port"], "5201", "{rule}");
    }
}
