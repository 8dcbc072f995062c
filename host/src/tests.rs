//! The sandbox against real components built from `plugins/` (build them first:
//! `cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml`).

use crate::plugin::{LoadRequest, MAX_CONSECUTIVE_FAILURES, Plugin, PluginState};
use crate::{Capability, FlowBatch, HostError, Manifest, Runtime};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::Flow;

fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

fn wasm(name: &str) -> Vec<u8> {
    let p = plugins_dir().join(format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ));
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first: cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml",
            p.display()
        )
    })
}

fn manifest(name: &str) -> Manifest {
    let p = plugins_dir().join(name).join("plugin.toml");
    Manifest::parse(
        &std::fs::read_to_string(&p).expect("plugin.toml"),
        "plugin.toml",
    )
    .expect("manifest")
}

fn runtime() -> Arc<Runtime> {
    static RT: std::sync::OnceLock<Arc<Runtime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| Arc::new(Runtime::new(None).expect("runtime")))
        .clone()
}

fn load(name: &str, grants: &[Capability], config: &[(&str, &str)]) -> Result<Plugin, HostError> {
    load_in(&runtime(), name, grants, config)
}

fn load_in(
    rt: &Runtime,
    name: &str,
    grants: &[Capability],
    config: &[(&str, &str)],
) -> Result<Plugin, HostError> {
    load_wasm(rt, &wasm(name), manifest(name), grants, config, None)
}

/// Loads `bytes` as the plugin `manifest` describes, with these grants, config and store.
fn load_wasm(
    rt: &Runtime,
    bytes: &[u8],
    manifest: Manifest,
    grants: &[Capability],
    config: &[(&str, &str)],
    flows: Option<Arc<weir_core::Store>>,
) -> Result<Plugin, HostError> {
    load_served(
        rt,
        bytes,
        manifest,
        grants,
        config,
        flows,
        Default::default(),
    )
}

/// [`load_wasm`] with agent services (the records store...).
fn load_served(
    rt: &Runtime,
    bytes: &[u8],
    manifest: Manifest,
    grants: &[Capability],
    config: &[(&str, &str)],
    flows: Option<Arc<weir_core::Store>>,
    services: crate::state::Services,
) -> Result<Plugin, HostError> {
    // Scopes as an install grants them by default: what the manifest asks.
    let scopes = manifest.scopes.clone();
    Plugin::load(
        rt,
        LoadRequest {
            wasm: bytes,
            manifest: Some(manifest),
            grants,
            limits: None,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            flows,
            services,
            scopes,
        },
    )
}

fn hostile(mode: &str) -> Plugin {
    load(
        "hostile",
        &[Capability::Config, Capability::Kv, Capability::Log],
        &[("mode", mode)],
    )
    .expect("load hostile")
}

/// A plugin loaded in a runtime of its own, under `policy`.
fn load_with(
    policy: crate::SandboxPolicy,
    name: &str,
    grants: &[Capability],
    config: &[(&str, &str)],
) -> Plugin {
    let rt = Runtime::new(None).expect("runtime").with_policy(policy);
    load_in(&rt, name, grants, config).expect("load")
}

const RULE_GRANTS: &[Capability] = &[Capability::Config, Capability::Flows, Capability::FlowStats];

fn window() -> crate::bindings::types::TimeRange {
    crate::bindings::types::TimeRange {
        from_ms: 0,
        to_ms: 1000,
    }
}

#[test]
fn a_plugin_asleep_in_wasi_ends_at_its_deadline() {
    // std::thread::sleep(20 s) in a 300 ms processor.
    let p = hostile("sleep");
    let t = Instant::now();
    let e = p.process(&flows(1)).expect_err("sleep");
    let took = t.elapsed();
    assert!(
        matches!(
            e,
            HostError::Timeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        took < Duration::from_millis(800),
        "300 ms deadline, took {took:?}"
    );
    // A rule asking 600 s and sleeping 60 s, under a 400 ms ceiling.
    let policy = crate::SandboxPolicy {
        max_timeout_ms: 400,
        ..Default::default()
    };
    let r = load_with(policy, "hostile-rule", RULE_GRANTS, &[("mode", "sleep")]);
    let t = Instant::now();
    let e = r.evaluate(window()).expect_err("sleep");
    assert!(
        matches!(
            e,
            HostError::Timeout {
                timeout_ms: 400,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn operator_ceilings_win_over_the_manifest() {
    let r = load_with(Default::default(), "hostile-rule", RULE_GRANTS, &[]);
    let info = r.info();
    assert_eq!(info.asked_limits.memory_mb, 4096);
    assert_eq!(info.asked_limits.timeout_ms, 600_000);
    assert_eq!(info.limits.memory_mb, 256, "default ceiling");
    assert_eq!(info.limits.timeout_ms, 10_000, "default ceiling");
    // A memory bomb stops at the ceiling, not at the 4 GiB the manifest asked for.
    let policy = crate::SandboxPolicy {
        max_memory_mb: 32,
        ..Default::default()
    };
    let bomb = load_with(
        policy,
        "hostile",
        &[Capability::Config, Capability::Kv, Capability::Log],
        &[("mode", "bomb")],
    );
    let e = bomb.process(&flows(1)).expect_err("bomb");
    assert!(matches!(e, HostError::Memory { memory_mb: 32, .. }), "{e}");
}

/// `n` evaluations started at once: their results and how long each took.
fn evaluate_at_once(r: &Arc<Plugin>, n: usize) -> Vec<(Result<usize, HostError>, Duration)> {
    (0..n)
        .map(|_| {
            let r = r.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (r.evaluate(window()).map(|a| a.len()), t.elapsed())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

#[test]
fn concurrent_calls_are_bounded_per_plugin_and_by_the_memory_budget() {
    // Four at once per plugin: the rest are refused at once, not queued.
    let policy = crate::SandboxPolicy {
        max_timeout_ms: 300,
        max_memory_mb: 16,
        ..Default::default()
    };
    let r = Arc::new(load_with(
        policy,
        "hostile-rule",
        RULE_GRANTS,
        &[("mode", "sleep")],
    ));
    let results = evaluate_at_once(&r, 10);
    let busy: Vec<_> = results
        .iter()
        .filter(|(r, _)| matches!(r, Err(HostError::Busy { .. })))
        .collect();
    assert!(busy.len() >= 6, "at most 4 run at once: {results:?}");
    assert!(
        busy.iter().all(|(_, t)| *t < Duration::from_millis(50)),
        "{busy:?}"
    );
    assert!(r.info().busy_refusals >= 6);
    // The agent-wide budget: each call reserves its 16 MiB and 32 MiB to lift its result,
    // so 100 MiB holds two calls, not three.
    let policy = crate::SandboxPolicy {
        max_timeout_ms: 300,
        max_memory_mb: 16,
        total_memory_mb: 100,
        ..Default::default()
    };
    let r = Arc::new(load_with(
        policy,
        "hostile-rule",
        RULE_GRANTS,
        &[("mode", "sleep")],
    ));
    let results: Vec<_> = evaluate_at_once(&r, 3)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(HostError::Busy { reason, .. }) if reason.contains("memory budget")))
        .count();
    assert_eq!(refused, 1, "{results:?}");
}

#[test]
fn calls_are_cancelled_at_once_asleep_or_spinning() {
    // A 10 s deadline (the default ceiling): only cancelling ends these early.
    for mode in ["sleep", "hostcall"] {
        let r = Arc::new(load_with(
            Default::default(),
            "hostile-rule",
            RULE_GRANTS,
            &[("mode", mode)],
        ));
        let call = {
            let r = r.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (r.evaluate(window()), t.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        r.cancel_calls();
        let (out, took) = call.join().expect("thread");
        let after = t.elapsed();
        assert!(
            matches!(out, Err(HostError::Cancelled { .. })),
            "{mode}: {out:?}"
        );
        assert!(
            after < Duration::from_millis(200),
            "{mode}: ended {after:?} after cancel"
        );
        assert!(took < Duration::from_secs(1), "{mode}: {took:?}");
        // Not a failure, and the next call runs normally (here: to its own end).
        assert_eq!(r.info().failures, 0, "{mode}");
        assert_eq!(r.info().state, PluginState::Enabled);
    }
}

#[test]
fn too_many_alerts_in_one_evaluation_are_refused() {
    let r = load_with(
        Default::default(),
        "hostile-rule",
        RULE_GRANTS,
        &[("mode", "alerts")],
    );
    let e = r.evaluate(window()).expect_err("6000 alerts");
    assert!(
        matches!(e, HostError::Output { ref message, .. } if message.contains("6000 alerts")),
        "{e}"
    );
    let r = load_with(
        Default::default(),
        "hostile-rule",
        RULE_GRANTS,
        &[("mode", "labels")],
    );
    let e = r.evaluate(window()).expect_err("600 labels");
    assert!(
        matches!(e, HostError::Output { ref message, .. } if message.contains("alert Wide has 600 labels")),
        "{e}"
    );
}

#[test]
fn failing_every_other_call_disables_a_plugin() {
    let p = hostile("flaky");
    let mut calls = 0;
    while !matches!(p.info().state, PluginState::Disabled(_)) {
        let _ = p.process(&flows(1));
        calls += 1;
        assert!(calls <= 20, "never disabled: {:?}", p.info());
    }
    let info = p.info();
    assert!(
        matches!(info.state, PluginState::Disabled(ref r) if r.contains("of its last")),
        "{info:?}"
    );
    assert_eq!(calls, 10, "disabled once half of ten calls failed");
}

#[test]
fn plugin_log_text_is_escaped_and_rate_limited() {
    let t = crate::state::plugin_text(
        "ok\n2026-12-03T00:00:00Z ERROR weir_host: plugin disabled\x1b[31m \"q\"",
    );
    assert!(!t.contains('\n') && !t.contains('\x1b'), "{t}");
    assert!(
        t.starts_with('"') && t.contains("ok\\n2026") && t.contains("\\u{1b}"),
        "{t}"
    );
    let long = crate::state::plugin_text(&"x".repeat(5000));
    assert!(long.ends_with("(+3976 characters cut)"), "{long}");
    let p = hostile("forge");
    p.process(&flows(1)).expect("forge mode returns");
    let dropped = p.info().log_dropped;
    // 10,001 lines in well under a second: the burst passes, the rest is counted.
    assert!((9_800..=9_901).contains(&dropped), "{dropped}");
}

fn flows(n: usize) -> FlowBatch {
    let flows: Vec<Flow> = (0..n)
        .map(|i| {
            let mut f = Flow::empty();
            f.proto = if i % 4 == 0 { 17 } else { 6 };
            f.bytes = 100;
            f.packets = 2;
            f.src_addr = "198.18.0.1".parse().expect("ip");
            f.interface = "eth0".into();
            f
        })
        .collect();
    FlowBatch::new(&flows)
}

fn sample(out: &crate::bindings::flow_processor::Processed, name: &str, proto: &str) -> f64 {
    out.samples
        .iter()
        .find(|s| s.name == name && s.labels.iter().any(|(k, v)| k == "proto" && v == proto))
        .map(|s| s.value)
        .unwrap_or(-1.0)
}

#[test]
fn bundled_flow_processor_sums_a_batch() {
    let p = load("flow-count", &[], &[]).expect("load");
    let out = p.process(&flows(10_000)).expect("process");
    assert_eq!(sample(&out, "flow_count_flows", "6"), 7500.0);
    assert_eq!(sample(&out, "flow_count_flows", "17"), 2500.0);
    assert_eq!(sample(&out, "flow_count_bytes", "6"), 750_000.0);
    assert_eq!(sample(&out, "flow_count_packets", "17"), 5000.0);
    let info = p.info();
    assert_eq!(info.calls, 1);
    assert_eq!(info.state, PluginState::Enabled);
}

#[test]
fn hostile_plugins_are_contained_with_clear_errors() {
    let good = load("flow-count", &[], &[]).expect("load");
    type Check = fn(&HostError) -> bool;
    let cases: [(&str, Check); 9] = [
        ("loop", |e| {
            matches!(
                e,
                HostError::Timeout {
                    timeout_ms: 300,
                    ..
                }
            )
        }),
        ("bomb", |e| {
            matches!(e, HostError::Memory { memory_mb: 64, .. })
        }),
        (
            "recurse",
            |e| matches!(e, HostError::Trap { message, .. } if message.contains("stack overflow")),
        ),
        (
            "panic",
            |e| matches!(e, HostError::Trap { message, .. } if message.contains("panicked") && message.contains("on purpose")),
        ),
        ("huge", |e| matches!(e, HostError::Output { .. })),
        (
            "alias",
            |e| matches!(e, HostError::Output { message, .. } if message.contains("more than 32 MiB to copy")),
        ),
        (
            "labels",
            |e| matches!(e, HostError::Output { message, .. } if message.contains("bytes of text")),
        ),
        (
            "file",
            |e| matches!(e, HostError::Plugin { message, .. } if message.starts_with("file denied")),
        ),
        (
            "socket",
            |e| matches!(e, HostError::Plugin { message, .. } if message.starts_with("socket denied")),
        ),
    ];
    for (mode, ok) in cases {
        let p = hostile(mode);
        let t = Instant::now();
        let mut e = p.process(&flows(10)).expect_err(mode);
        // On a machine busy compiling every test's plugins at once (the first run after a
        // build), the 300 ms deadline can pass before a fast failure shows: once more then.
        if mode != "loop" && matches!(e, HostError::Timeout { .. }) {
            e = p.process(&flows(10)).expect_err(mode);
        }
        assert!(ok(&e), "{mode}: unexpected error {e}");
        assert!(
            e.to_string().contains("hostile"),
            "{mode}: error names the plugin: {e}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{mode} took {:?}",
            t.elapsed()
        );
        // Others keep their results.
        let out = good.process(&flows(100)).expect("good plugin still works");
        assert_eq!(sample(&out, "flow_count_flows", "6"), 75.0);
    }
}

#[test]
fn a_stuck_plugin_does_not_block_others() {
    let stuck = Arc::new(hostile("loop"));
    let good = load("flow-count", &[], &[]).expect("load");
    let h = {
        let stuck = stuck.clone();
        std::thread::spawn(move || stuck.process(&flows(1)))
    };
    let t = Instant::now();
    for _ in 0..20 {
        good.process(&flows(100)).expect("good plugin");
    }
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "others ran while one spun: {:?}",
        t.elapsed()
    );
    assert!(matches!(
        h.join().expect("thread"),
        Err(HostError::Timeout { .. })
    ));
}

#[test]
fn repeated_failures_disable_a_plugin_and_reset_enables_it() {
    let p = hostile("panic");
    for _ in 0..MAX_CONSECUTIVE_FAILURES {
        assert!(matches!(p.process(&flows(1)), Err(HostError::Trap { .. })));
    }
    let e = p.process(&flows(1)).expect_err("disabled");
    assert!(matches!(e, HostError::Disabled { .. }), "{e}");
    let info = p.info();
    assert!(
        matches!(info.state, PluginState::Disabled(ref r) if r.contains("3 consecutive failures")),
        "{info:?}"
    );
    assert_eq!(info.recent_errors.len(), 3);
    p.reset();
    assert!(matches!(p.process(&flows(1)), Err(HostError::Trap { .. })));
}

#[test]
fn state_survives_calls_through_the_kv_capability() {
    let p = hostile("kv");
    for want in 1..=3 {
        let out = p.process(&flows(1)).expect("kv mode");
        assert_eq!(out.samples[0].value, f64::from(want));
    }
}

#[test]
fn ungranted_imports_fail_at_load() {
    let e = load("hostile", &[Capability::Config, Capability::Log], &[])
        .err()
        .expect("must not load");
    assert!(matches!(e, HostError::Denied(_)), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("weir:plugin/kv@0.1.3")
            && m.contains("kv capability is not granted")
            && m.contains("granted: log, config"),
        "{m}"
    );
}

#[test]
fn malformed_files_are_refused() {
    let rt = runtime();
    let try_load = |bytes: &[u8]| {
        Plugin::load(
            &rt,
            LoadRequest {
                wasm: bytes,
                manifest: Some(manifest("flow-count")),
                grants: &[],
                limits: None,
                config: BTreeMap::new(),
                flows: None,
                services: Default::default(),
                scopes: Default::default(),
            },
        )
        .err()
        .expect("must fail")
    };
    let e = try_load(b"this is not wasm at all");
    assert!(
        matches!(e, HostError::Malformed(ref m) if m.contains("bad magic")),
        "{e}"
    );
    let e = try_load(b"\0asm\x01\0\0\0");
    assert!(
        matches!(e, HostError::Malformed(ref m) if m.contains("core WebAssembly module")),
        "{e}"
    );
    let good = wasm("flow-count");
    let e = try_load(&good[..good.len() / 2]);
    assert!(matches!(e, HostError::Malformed(_)), "{e}");
    // No manifest at all.
    let e = Plugin::load(
        &rt,
        LoadRequest {
            wasm: &good,
            manifest: None,
            grants: &[],
            limits: None,
            config: BTreeMap::new(),
            flows: None,
            services: Default::default(),
            scopes: Default::default(),
        },
    )
    .err()
    .expect("no manifest");
    assert!(e.to_string().contains("no plugin.toml given"), "{e}");
}

#[test]
fn a_newer_wit_major_is_refused_with_the_supported_version() {
    let bytes = wasm("future-major");
    let mut m = manifest("flow-count");
    m.name = "future-major".into();
    m.capabilities = vec![Capability::Log];
    // Even with a manifest that claims 0.1, the imports tell the truth.
    let e = Plugin::load(
        &runtime(),
        LoadRequest {
            wasm: &bytes,
            manifest: Some(m),
            grants: &[Capability::Log],
            limits: None,
            config: BTreeMap::new(),
            flows: None,
            services: Default::default(),
            scopes: Default::default(),
        },
    )
    .err()
    .expect("refused");
    assert!(matches!(e, HostError::Incompatible(_)), "{e}");
    assert!(
        e.to_string().contains("@1.0.0") && e.to_string().contains("supports weir:plugin 0.1"),
        "{e}"
    );
    let e = Manifest::parse(
        "name = \"x\"\nversion = \"1\"\nkind = \"decoder\"\nwit = \"1.0\"\n",
        "plugin.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("this host supports 0.1"), "{e}");
}

#[test]
fn embedded_manifest_and_compiled_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(Some(dir.path().to_path_buf())).expect("runtime");
    let mut bytes = wasm("flow-count");
    let text = std::fs::read_to_string(plugins_dir().join("flow-count/plugin.toml")).expect("toml");
    crate::manifest::append_custom_section(&mut bytes, crate::manifest::SECTION, text.as_bytes());
    let req = || LoadRequest {
        wasm: &bytes,
        manifest: None,
        grants: &[],
        limits: None,
        config: BTreeMap::new(),
        flows: None,
        services: Default::default(),
        scopes: Default::default(),
    };
    let t = Instant::now();
    let p = Plugin::load(&rt, req()).expect("cold load");
    let cold = t.elapsed();
    assert_eq!(p.name(), "flow-count");
    assert_eq!(
        cache_files(dir.path()),
        ["cwasm", "cwasm.sha256"],
        "one compiled file and its digest"
    );
    let t = Instant::now();
    let p2 = Plugin::load(&rt, req()).expect("cached load");
    let warm = t.elapsed();
    assert!(warm < cold, "cache hit {warm:?} vs cold {cold:?}");
    assert!(p2.process(&flows(4)).is_ok());
}

/// The cache directory's files by what follows the entry's name (`cwasm`, `cwasm.sha256`,
/// `cwasm.corrupt-<ms>` shown as `cwasm.corrupt`), sorted.
fn cache_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("cache")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_str()?.to_string();
            let tail = name.split_once('.')?.1.to_string();
            Some(match tail.split_once("corrupt-") {
                Some((head, _)) => format!("{head}corrupt"),
                None => tail,
            })
        })
        .collect();
    v.sort();
    v
}

/// Compiled code runs outside the sandbox: a cache entry changed on disk (a flipped byte, a
/// cut, a missing digest) is never loaded; it is set aside and the plugin compiled again.
#[test]
fn a_compiled_plugin_changed_on_disk_is_set_aside_and_compiled_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = wasm("flow-count");
    let m = manifest("flow-count");
    let load = || {
        // A fresh runtime each time, as after a restart.
        let rt = Runtime::new(Some(dir.path().to_path_buf())).expect("runtime");
        let p = load_wasm(&rt, &bytes, m.clone(), &[], &[], None).expect("load");
        assert!(p.process(&flows(4)).is_ok(), "the plugin works");
    };
    load();
    let entry = std::fs::read_dir(dir.path())
        .expect("cache")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a compiled entry");
    type Harm<'a> = &'a dyn Fn(&std::path::Path);
    let damage: [(&str, Harm); 3] = [
        ("a flipped byte", &|p| {
            let mut b = std::fs::read(p).expect("read");
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
            std::fs::write(p, b).expect("write");
        }),
        ("cut short", &|p| {
            let b = std::fs::read(p).expect("read");
            std::fs::write(p, &b[..b.len() / 3]).expect("write");
        }),
        ("its digest gone", &|p| {
            let mut d = p.as_os_str().to_owned();
            d.push(".sha256");
            std::fs::remove_file(d).expect("remove digest");
        }),
    ];
    for (n, (what, harm)) in damage.iter().enumerate() {
        harm(&entry);
        load();
        let files = cache_files(dir.path());
        let aside = files.iter().filter(|f| *f == "cwasm.corrupt").count();
        assert_eq!(aside, n + 1, "{what}: set aside: {files:?}");
        assert!(
            files.contains(&"cwasm".to_string()) && files.contains(&"cwasm.sha256".to_string()),
            "{what}: compiled again: {files:?}"
        );
        // Distinct names for the next one set aside.
        std::thread::sleep(Duration::from_millis(2));
    }
}

mod registry {
    use super::*;
    use crate::plugin::sha256_hex;
    use crate::registry::{InstallRequest, Registry};

    fn staged(dir: &std::path::Path, name: &str) -> PathBuf {
        let d = dir.join(format!("src-{name}"));
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("plugin.wasm"), wasm(name)).expect("wasm");
        std::fs::copy(
            plugins_dir().join(name).join("plugin.toml"),
            d.join("plugin.toml"),
        )
        .expect("toml");
        d
    }

    fn entries(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().to_str().map(String::from))
            .collect();
        v.sort();
        v
    }

    /// The `calls` sample of hostile's kv mode: its counter kept in kv.
    fn kv_count(reg: &Registry) -> f64 {
        let p = reg.get("hostile").expect("loaded");
        p.process(&flows(1)).expect("kv mode").samples[0].value
    }

    /// A plugin installed from `bundled:NAME` by an earlier release's binary (another file
    /// under the same name) is named stale, so the agent can say how to take this one's.
    #[test]
    fn an_earlier_releases_bundled_install_is_named_stale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
        let toml: &'static str = Box::leak(
            std::fs::read_to_string(plugins_dir().join("flow-count/plugin.toml"))
                .expect("plugin.toml")
                .into_boxed_str(),
        );
        let bundled = |w: &'static [u8]| crate::registry::Bundled {
            name: "flow-count",
            wasm: w,
            manifest: toml,
        };
        let dir = tmp.path().join("plugins");
        let before = Registry::open(&dir, runtime(), None)
            .expect("registry")
            .with_bundled(&[bundled(leak(wasm("flow-count")))]);
        before
            .install(&InstallRequest {
                source: "bundled:flow-count".into(),
                ..Default::default()
            })
            .expect("install");
        assert!(before.stale_bundled().is_empty(), "this binary's own build");
        drop(before);
        // The next release carries another build under the name.
        let after = Registry::open(&dir, runtime(), None)
            .expect("registry")
            .with_bundled(&[bundled(leak(wasm("quiet")))]);
        let stale = after.stale_bundled();
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0].0, "flow-count");
    }

    /// An incident carries a plugin's outbound-http tape; restored, it is the replay's tape
    /// (an empty one when there was none), the recording file never; a replay exported anew
    /// carries the tape it replays, and an empty one not at all.
    #[test]
    fn incidents_carry_the_tape_and_a_replay_answers_from_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(&tmp.path().join("plugins"), runtime(), None).expect("registry");
        reg.install(&InstallRequest {
            source: staged(tmp.path(), "flow-count"),
            ..Default::default()
        })
        .expect("install");
        let dir = tmp.path().join("plugins/flow-count");
        std::fs::write(dir.join(crate::tape::TAPE_FILE), b"taped").expect("tape");
        let exported = reg.export_plugins().expect("export");
        let p = exported
            .iter()
            .find(|p| p.name == "flow-count")
            .expect("listed");
        assert_eq!(
            p.state.get(crate::tape::TAPE_FILE).map(Vec::as_slice),
            Some(&b"taped"[..])
        );
        // Restored: the tape is the replay's.
        let into = tmp.path().join("replay-plugins");
        Registry::restore_plugin(&into, p).expect("restore");
        let r = into.join("flow-count");
        assert_eq!(
            std::fs::read(r.join(crate::tape::REPLAY_FILE)).expect("replay"),
            b"taped"
        );
        assert!(!r.join(crate::tape::TAPE_FILE).exists());
        // Without one: an empty replay tape, so the plugin still answers from it only.
        let mut bare = p.clone();
        bare.state.remove(crate::tape::TAPE_FILE);
        let into2 = tmp.path().join("replay2");
        Registry::restore_plugin(&into2, &bare).expect("restore");
        assert_eq!(
            std::fs::read(into2.join("flow-count").join(crate::tape::REPLAY_FILE)).expect("replay"),
            b""
        );
        // A replay's registry exports what it replays; an empty tape is left out.
        let replay = Registry::open_replay(&into, runtime(), None).expect("replay registry");
        let again = replay.export_plugins().expect("export");
        assert_eq!(
            again[0]
                .state
                .get(crate::tape::TAPE_FILE)
                .map(Vec::as_slice),
            Some(&b"taped"[..])
        );
        let replay2 = Registry::open_replay(&into2, runtime(), None).expect("replay registry");
        assert!(
            replay2.export_plugins().expect("export")[0]
                .state
                .is_empty()
        );
        // A state file the host does not know: refused, nothing written.
        let mut odd = p.clone();
        odd.state.insert("notes.txt".into(), b"x".to_vec());
        let into3 = tmp.path().join("replay3");
        let e = Registry::restore_plugin(&into3, &odd).expect_err("unknown state file");
        assert!(
            e.to_string().contains("unknown state file \"notes.txt\""),
            "{e}"
        );
    }

    /// The operator's windows for a summarizer: set at install in place of the manifest's,
    /// used by the loaded plugin (a window closes at its length), kept by an upgrade that
    /// gives none and through a restart; bad values and non-summarizers refused by name.
    #[test]
    fn summarizer_windows_set_at_install_are_used_and_kept_across_upgrades() {
        use crate::manifest::Windowing;
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg_dir = tmp.path().join("plugins");
        let reg = Registry::open(&reg_dir, runtime(), None).expect("registry");
        let source = staged(tmp.path(), "src-bytes");
        assert_eq!(
            manifest("src-bytes").summarizer,
            Windowing {
                window_secs: 60,
                windows: 60
            }
        );
        for (secs, n, want) in [
            (
                Some(5),
                None,
                "window_secs must be 0 (one window) or 10-604800, got 5",
            ),
            (None, Some(0), "windows must be 1-1440, got 0"),
            (Some(700_000), Some(3), "got 700000"),
        ] {
            let e = reg
                .install(&InstallRequest {
                    source: source.clone(),
                    window_secs: secs,
                    windows: n,
                    ..Default::default()
                })
                .expect_err("out of bounds");
            assert!(e.to_string().contains("--window/--windows"), "{e}");
            assert!(e.to_string().contains(want), "{e}");
        }
        assert!(
            reg.list().is_empty(),
            "nothing installed by a refused request"
        );
        let m = reg
            .install(&InstallRequest {
                source: source.clone(),
                window_secs: Some(10),
                ..Default::default()
            })
            .expect("install");
        // Only the length given: the count stays the manifest's.
        let set = Windowing {
            window_secs: 10,
            windows: 60,
        };
        assert_eq!(m.windowing, Some(set));
        let p = reg.get("src-bytes").expect("loaded");
        assert_eq!(p.manifest().summarizer, set);
        // Windows close at 10 s, not 60: two updates 10 s apart are two windows.
        let t0 = 1_800_000_000_000u64;
        p.summarize_at(&flows(10), t0).expect("first");
        p.summarize_at(&flows(10), t0 + 10_000).expect("second");
        assert_eq!(p.summary_windows().len(), 2, "{:?}", p.summary_windows());
        // An upgrade without the flags keeps them; one with a count changes only that.
        let m = reg
            .install(&InstallRequest {
                source: source.clone(),
                upgrade: true,
                ..Default::default()
            })
            .expect("upgrade");
        assert_eq!(m.windowing, Some(set));
        let m = reg
            .install(&InstallRequest {
                source: source.clone(),
                upgrade: true,
                windows: Some(3),
                ..Default::default()
            })
            .expect("upgrade");
        let three = Windowing {
            window_secs: 10,
            windows: 3,
        };
        assert_eq!(m.windowing, Some(three));
        drop(reg);
        let reg = Registry::open(&reg_dir, runtime(), None).expect("reopen");
        assert_eq!(
            reg.get("src-bytes").expect("loaded").manifest().summarizer,
            three,
            "after a restart"
        );
        // Not a summarizer: the flags are refused, naming the kind.
        let e = reg
            .install(&InstallRequest {
                source: staged(tmp.path(), "hostile"),
                windows: Some(3),
                ..Default::default()
            })
            .expect_err("not a summarizer");
        assert!(e.to_string().contains("are for summarizers"), "{e}");
    }

    #[test]
    fn kv_survives_restart_disable_enable_and_upgrade_and_no_name_escapes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg_dir = tmp.path().join("plugins");
        let reg = Registry::open(&reg_dir, runtime(), None).expect("registry");
        let mut config = BTreeMap::new();
        config.insert("mode".to_string(), "kv".to_string());
        let req = InstallRequest {
            source: staged(tmp.path(), "hostile"),
            config,
            ..Default::default()
        };
        reg.install(&req).expect("install");
        for want in 1..=3 {
            assert_eq!(kv_count(&reg), f64::from(want));
        }
        // Written by the agent's periodic persist; a new registry (a restart) reads it.
        reg.persist_state();
        assert!(reg_dir.join("hostile/kv.json").exists());
        drop(reg);
        let reg = Registry::open(&reg_dir, runtime(), None).expect("reopen");
        assert_eq!(kv_count(&reg), 4.0, "after a restart");
        // Disable and enable: the reload writes state first, then reads it.
        reg.set_enabled("hostile", false).expect("disable");
        reg.set_enabled("hostile", true).expect("enable");
        assert_eq!(kv_count(&reg), 5.0, "after disable/enable");
        // An upgrade carries it over.
        reg.install(&InstallRequest {
            upgrade: true,
            ..req.clone()
        })
        .expect("upgrade");
        assert_eq!(kv_count(&reg), 6.0, "after an upgrade");
        // An unreadable kv file is set aside, not overwritten.
        reg.persist_state();
        drop(reg);
        std::fs::write(reg_dir.join("hostile/kv.json"), b"{not json").expect("corrupt");
        let reg = Registry::open(&reg_dir, runtime(), None).expect("reopen");
        assert_eq!(kv_count(&reg), 1.0);
        assert!(
            entries(&reg_dir.join("hostile"))
                .iter()
                .any(|f| f.starts_with("kv.json.corrupt-")),
            "{:?}",
            entries(&reg_dir.join("hostile"))
        );
        // Names that would be paths never reach the file system.
        let victim = tmp.path().join("victim");
        std::fs::create_dir_all(&victim).expect("victim");
        std::fs::write(victim.join("installed.json"), "{}").expect("victim");
        for bad in ["../victim", victim.to_str().expect("p"), "..", ""] {
            let e = reg.remove(bad).expect_err(bad);
            assert!(matches!(e, HostError::Name(_)), "{bad}: {e}");
            assert!(reg.set_enabled(bad, false).is_err());
        }
        assert!(victim.join("installed.json").exists());
    }

    #[test]
    fn scopes_are_granted_at_install_and_changed_without_reinstalling() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(&tmp.path().join("plugins"), runtime(), None).expect("registry");
        let src = staged(tmp.path(), "contract-probe");
        // A scope for a capability not granted: refused, naming it.
        let e = reg
            .install(&InstallRequest {
                source: src.clone(),
                grants: Some(vec![Capability::Config]),
                scopes: [(Capability::OutboundHttp, vec!["a:80".to_string()])].into(),
                ..Default::default()
            })
            .expect_err("scope without grant");
        assert!(
            e.to_string().contains("outbound-http is not granted"),
            "{e}"
        );
        // Default: what the manifest asks; an explicit scope replaces it.
        let m = reg
            .install(&InstallRequest {
                source: src.clone(),
                scopes: [(
                    Capability::OutboundHttp,
                    vec!["prom.example:9090".to_string()],
                )]
                .into(),
                ..Default::default()
            })
            .expect("install");
        assert_eq!(
            m.manifest.scopes[&Capability::OutboundHttp],
            vec!["127.0.0.1:*"]
        );
        assert_eq!(
            m.scopes[&Capability::OutboundHttp],
            vec!["prom.example:9090"]
        );
        assert!(reg.get("contract-probe").is_some());
        // Revoked: stays installed, does not load, and says why.
        let m = reg
            .set_grant("contract-probe", Capability::OutboundHttp, false, None)
            .expect("revoke");
        assert!(!m.granted.contains(&Capability::OutboundHttp));
        assert!(
            !m.scopes.contains_key(&Capability::OutboundHttp),
            "{:?}",
            m.scopes
        );
        assert!(reg.get("contract-probe").is_none());
        let listed = reg.list();
        let err = listed[0].load_error.clone().unwrap_or_default();
        assert!(
            err.contains("outbound-http capability is not granted"),
            "{err}"
        );
        // Granted again with a new scope: loads, with that scope.
        let m = reg
            .set_grant(
                "contract-probe",
                Capability::OutboundHttp,
                true,
                Some(vec!["127.0.0.1:8080".into()]),
            )
            .expect("grant");
        assert_eq!(m.scopes[&Capability::OutboundHttp], vec!["127.0.0.1:8080"]);
        assert!(reg.get("contract-probe").is_some());
        // A bad scope entry, or a scope on an unscoped capability: refused, nothing changed.
        let e = reg
            .set_grant(
                "contract-probe",
                Capability::OutboundHttp,
                true,
                Some(vec!["a/b".into()]),
            )
            .expect_err("bad entry");
        assert!(e.to_string().contains("a/b"), "{e}");
        let e = reg
            .set_grant(
                "contract-probe",
                Capability::Kv,
                true,
                Some(vec!["x:1".into()]),
            )
            .expect_err("kv takes none");
        assert!(e.to_string().contains("kv takes no scope"), "{e}");
        let e = reg
            .set_grant("../x", Capability::Kv, true, None)
            .expect_err("bad name");
        assert!(matches!(e, HostError::Name(_)), "{e}");
    }

    #[test]
    fn install_verify_enable_disable_remove() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg_dir = tmp.path().join("plugins");
        let reg = Registry::open(&reg_dir, runtime(), None).expect("registry");
        let src = staged(tmp.path(), "flow-count");

        // A pinned sha256 that does not match: refused, nothing written.
        let e = reg
            .install(&InstallRequest {
                source: src.clone(),
                sha256: Some("00".repeat(32)),
                ..Default::default()
            })
            .expect_err("tampered");
        assert!(e.to_string().contains("sha256 mismatch"), "{e}");
        assert!(entries(&reg_dir).is_empty());

        let sha = sha256_hex(&wasm("flow-count"));
        let meta = reg
            .install(&InstallRequest {
                source: src.clone(),
                sha256: Some(sha),
                ..Default::default()
            })
            .expect("install");
        assert_eq!(meta.manifest.name, "flow-count");
        assert_eq!(entries(&reg_dir), vec!["flow-count"]);
        let p = reg.get("flow-count").expect("loaded");
        assert!(p.process(&flows(3)).is_ok());
        // The installed file carries its manifest.
        let installed = std::fs::read(reg_dir.join("flow-count/plugin.wasm")).expect("file");
        assert!(
            crate::manifest::custom_section(&installed, crate::manifest::SECTION)
                .expect("parse")
                .is_some()
        );

        // Installing again needs upgrade.
        let e = reg
            .install(&InstallRequest {
                source: src.clone(),
                ..Default::default()
            })
            .expect_err("dup");
        assert!(e.to_string().contains("use `weir plugin upgrade`"), "{e}");
        reg.install(&InstallRequest {
            source: src,
            upgrade: true,
            ..Default::default()
        })
        .expect("upgrade");

        reg.set_enabled("flow-count", false).expect("disable");
        assert!(reg.get("flow-count").is_none());
        assert!(!reg.list()[0].installed.enabled);
        reg.set_enabled("flow-count", true).expect("enable");
        assert!(reg.get("flow-count").is_some());

        // A second registry on the same directory (a restarted agent) sees the same.
        let again = Registry::open(&reg_dir, runtime(), None).expect("reopen");
        assert!(again.get("flow-count").is_some());

        reg.remove("flow-count").expect("remove");
        assert!(entries(&reg_dir).is_empty());
        assert!(reg.remove("flow-count").is_err());
    }

    #[test]
    fn refused_installs_leave_nothing_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reg_dir = tmp.path().join("plugins");
        let reg = Registry::open(&reg_dir, runtime(), None).expect("registry");
        let src = staged(tmp.path(), "hostile");
        let e = reg
            .install(&InstallRequest {
                source: src.clone(),
                grants: Some(vec![Capability::Config]),
                ..Default::default()
            })
            .expect_err("kv not granted");
        assert!(matches!(e, HostError::Denied(_)), "{e}");
        std::fs::write(src.join("plugin.wasm"), b"\0asm\x0d\0\x01\0garbage").expect("write");
        let e = reg
            .install(&InstallRequest {
                source: src,
                ..Default::default()
            })
            .expect_err("garbage");
        assert!(matches!(e, HostError::Malformed(_)), "{e}");
        assert!(entries(&reg_dir).is_empty(), "{:?}", entries(&reg_dir));
        assert!(reg.list().is_empty());
    }
}

/// Alert rules against a real store: the bundled rules, and a rule built against 0.1.0.
mod rules {
    use super::*;
    use crate::bindings::types::{Alert, Severity, TimeRange};

    pub(super) const MIN: u64 = 60_000;

    pub(super) fn store(flows: &[Flow]) -> (tempfile::TempDir, Arc<weir_core::Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s =
            weir_core::Store::open(weir_core::store::StoreConfig::new(dir.path())).expect("store");
        s.append(flows).expect("append");
        s.flush().expect("flush");
        (dir, Arc::new(s))
    }

    pub(super) fn rule_from(
        wasm: &[u8],
        manifest: Manifest,
        store: &Arc<weir_core::Store>,
        config: &[(&str, &str)],
    ) -> Plugin {
        let grants = manifest.capabilities.clone();
        load_wasm(
            &runtime(),
            wasm,
            manifest,
            &grants,
            config,
            Some(store.clone()),
        )
        .expect("load rule")
    }

    fn rule(name: &str, store: &Arc<weir_core::Store>, config: &[(&str, &str)]) -> Plugin {
        rule_from(&wasm(name), manifest(name), store, config)
    }

    /// A flow on an interface of namespace `ns1`, ending inside the minute starting at `t`.
    pub(super) fn flow(t: u64, iface: &str, bytes: u64) -> Flow {
        let mut f = Flow::empty();
        f.time_flow_start_ms = t + 1000;
        f.time_flow_end_ms = t + 2000;
        f.src_addr = "10.0.0.1".parse().expect("addr");
        f.dst_addr = "10.0.0.2".parse().expect("addr");
        f.proto = 6;
        f.bytes = bytes;
        f.packets = 1 + bytes / 1000;
        f.interface = iface.into();
        f.netns = "ns1".into();
        f.if_direction = 1;
        f
    }

    fn label<'a>(a: &'a Alert, k: &str) -> &'a str {
        a.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn named<'a>(alerts: &'a [Alert], name: &str, iface: &str) -> Vec<&'a Alert> {
        alerts
            .iter()
            .filter(|a| a.name == name && label(a, "interface") == iface)
            .collect()
    }

    #[test]
    fn bundled_rules_fire_on_what_they_watch_and_nothing_else() {
        let t = weir_core::query::now_ms() / MIN * MIN - 10 * MIN;
        let window = TimeRange {
            from_ms: t,
            to_ms: t + MIN,
        };
        let mut flows = Vec::new();
        // 90 % of a configured 1 Mb/s over the minute; an idle link beside it.
        flows.push(flow(t, "veth-sat", 6_750_000));
        flows.push(flow(t, "veth-idle", 1000));
        // 150 dropped packets, one reason.
        for _ in 0..3 {
            let mut f = flow(t, "veth-drop", 5000);
            f.pkt_drop_packets = 50;
            f.pkt_drop_bytes = 50 * 1500;
            f.pkt_drop_latest_drop_cause = "SKB_DROP_REASON_NETFILTER_DROP".into();
            flows.push(f);
        }
        // Slow and fast TCP, slow DNS.
        for i in 0..10 {
            let mut f = flow(t, "veth-slow", 1000);
            f.time_flow_rtt_ns = 300_000_000 + i;
            flows.push(f);
            let mut f = flow(t, "veth-fast", 1000);
            f.time_flow_rtt_ns = 1_000_000;
            flows.push(f);
        }
        for _ in 0..6 {
            let mut f = flow(t, "veth-dns", 100);
            f.proto = 17;
            f.dns_latency_us = 600_000;
            flows.push(f);
        }
        // Outside the window: ignored.
        let mut late = flow(t + 5 * MIN, "veth-drop", 1);
        late.pkt_drop_packets = 10_000;
        flows.push(late);
        let (_dir, s) = store(&flows);

        let sat = rule("saturation", &s, &[("capacity_bps.veth-sat", "1_000_000")])
            .evaluate(window)
            .expect("saturation");
        assert_eq!(sat.len(), 1, "{sat:?}");
        assert_eq!(sat[0].name, "LinkSaturation");
        assert_eq!(sat[0].severity, Severity::Warning, "{sat:?}");
        assert_eq!(label(&sat[0], "netns"), "ns1");
        assert_eq!(label(&sat[0], "direction"), "egress");
        assert!(sat[0].summary.contains("90%"), "{}", sat[0].summary);
        // A capacity for every link: the idle one is far below.
        let all = rule("saturation", &s, &[("capacity_bps", "1000000")])
            .evaluate(window)
            .expect("saturation");
        assert_eq!(named(&all, "LinkSaturation", "veth-sat").len(), 1);
        assert!(named(&all, "LinkSaturation", "veth-idle").is_empty());

        let drops = rule("drops", &s, &[]).evaluate(window).expect("drops");
        assert_eq!(drops.len(), 1, "{drops:?}");
        assert_eq!(drops[0].severity, Severity::Warning);
        assert_eq!(label(&drops[0], "reason"), "SKB_DROP_REASON_NETFILTER_DROP");
        assert!(
            drops[0].summary.starts_with("150 packets"),
            "{}",
            drops[0].summary
        );

        let lat = rule("latency", &s, &[]).evaluate(window).expect("latency");
        let rtt = named(&lat, "HighRtt", "veth-slow");
        assert_eq!(rtt.len(), 1, "{lat:?}");
        assert_eq!(rtt[0].severity, Severity::Warning);
        assert_eq!(label(rtt[0], "quantile"), "p95");
        assert!(named(&lat, "HighRtt", "veth-fast").is_empty(), "{lat:?}");
        let dns = named(&lat, "SlowDns", "veth-dns");
        assert_eq!(dns.len(), 1, "{lat:?}");
        assert_eq!(dns[0].severity, Severity::Warning);
        // Too few samples: not judged.
        let few = rule("latency", &s, &[("min_samples", "11")])
            .evaluate(window)
            .expect("latency");
        assert!(few.is_empty(), "{few:?}");

        // Bad config names the key.
        for (name, cfg) in [
            ("saturation", ("percent_info", "90x")),
            ("latency", ("quantile", "1.5")),
            ("latency", ("check", "jitter")),
            ("drops", ("packets_warning", "0")),
            ("quiet", ("seasonality", "monthly")),
        ] {
            let e = rule(name, &s, &[cfg]).evaluate(window).unwrap_err();
            assert!(e.to_string().contains(cfg.0), "{name}: {e}");
        }
    }

    #[test]
    fn quiet_learns_a_baseline_and_fires_when_traffic_falls_or_stops() {
        let t0 = weir_core::query::now_ms() / MIN * MIN - 20 * MIN;
        // Minutes 0-2: 10 kB; 3: 1 kB (10 %); 4: nothing; 5: 10 kB again.
        let per_minute = [10_000, 10_000, 10_000, 1_000, 0, 10_000];
        let mut flows = Vec::new();
        for (i, b) in per_minute.iter().enumerate() {
            if *b > 0 {
                flows.push(flow(t0 + i as u64 * MIN, "veth-q", *b));
            }
        }
        let (_dir, s) = store(&flows);
        let quiet = rule(
            "quiet",
            &s,
            &[
                ("seasonality", "none"),
                ("learn_windows", "3"),
                ("min_baseline_bytes", "100"),
            ],
        );
        let mut got = Vec::new();
        for i in 0..per_minute.len() as u64 {
            let w = TimeRange {
                from_ms: t0 + i * MIN,
                to_ms: t0 + (i + 1) * MIN - 1,
            };
            got.push(quiet.evaluate(w).expect("quiet"));
        }
        for a in &got[..3] {
            assert!(a.is_empty(), "learning: {a:?}");
        }
        assert_eq!(got[3].len(), 1, "{got:?}");
        assert_eq!(got[3][0].name, "TrafficQuiet");
        assert_eq!(
            got[3][0].severity,
            Severity::Warning,
            "10 % of the baseline"
        );
        assert_eq!(label(&got[3][0], "interface"), "veth-q");
        assert_eq!(got[4].len(), 1, "zero traffic is still judged: {got:?}");
        assert_eq!(got[4][0].severity, Severity::Critical);
        assert!(got[4][0].summary.contains("0%"), "{}", got[4][0].summary);
        // The quiet minutes did not lower the baseline: back to normal, no alert.
        assert!(got[5].is_empty(), "{:?}", got[5]);
    }

    #[test]
    fn a_rule_built_against_wit_0_1_0_keeps_loading() {
        let wasm = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/no-flows-0.1.0.wasm"),
        )
        .expect("fixture");
        let m = Manifest::parse(
            "name = \"no-flows\"\nversion = \"0.1.0\"\nkind = \"alert-rule\"\nwit = \"0.1\"\ncapabilities = [\"flows\", \"config\"]\n",
            "fixture",
        )
        .expect("manifest");
        let t = weir_core::query::now_ms() / MIN * MIN - 10 * MIN;
        let (_dir, s) = store(&[flow(t, "veth0", 100)]);
        let p = rule_from(&wasm, m, &s, &[]);
        let busy = TimeRange {
            from_ms: t,
            to_ms: t + MIN,
        };
        assert!(p.evaluate(busy).expect("evaluate").is_empty());
        let empty = TimeRange {
            from_ms: t + 2 * MIN,
            to_ms: t + 3 * MIN,
        };
        let fired = p.evaluate(empty).expect("evaluate");
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].name, "NoFlows");
    }
}

/// Plugin contract 0.1.2: fields by name, selects over history, and plugins built against
/// older versions giving the same results.
mod contract {
    use super::rules::{MIN, flow, rule_from, store};
    use super::*;
    use crate::bindings::flow_processor::Processed;
    use crate::bindings::types::TimeRange;

    const PROBE_GRANTS: &[Capability] = &[
        Capability::Config,
        Capability::FlowFields,
        Capability::Records,
        Capability::OutboundHttp,
        Capability::K8sObjects,
        Capability::Probe,
        Capability::CaptureControl,
        Capability::Kv,
    ];

    fn probe(
        policy: crate::SandboxPolicy,
        store: Option<&Arc<weir_core::Store>>,
        config: &[(&str, &str)],
    ) -> Plugin {
        let rt = Runtime::new(None).expect("runtime").with_policy(policy);
        let m = manifest("contract-probe");
        load_wasm(
            &rt,
            &wasm("contract-probe"),
            m,
            PROBE_GRANTS,
            config,
            store.cloned(),
        )
        .expect("load contract-probe")
    }

    fn value(out: &Processed, name: &str, field: &str) -> f64 {
        out.samples
            .iter()
            .find(|s| s.name == name && s.labels.iter().any(|(k, v)| k == "field" && v == field))
            .map(|s| s.value)
            .unwrap_or_else(|| panic!("no {name} for {field}: {:?}", out.samples))
    }

    /// Flows carrying the fields a 0.1.1 plugin could not see.
    fn rich(n: usize, t: u64) -> Vec<Flow> {
        (0..n)
            .map(|i| {
                let mut f = flow(t, "veth0", 100);
                f.time_flow_rtt_ns = 1000 * (i as u64 % 10);
                f.dns_latency_us = if i % 4 == 0 { 250 } else { 0 };
                f.pkt_drop_packets = u64::from(i % 3 == 0);
                f.src_k8s_namespace = ["shop", "db", "web"][i % 3].into();
                f.dst_k8s_namespace = "kube-system".into();
                f.dst_port = if i % 2 == 0 { 443 } else { 53 };
                f
            })
            .collect()
    }

    #[test]
    fn fields_by_name_reach_a_plugin_and_unknown_names_are_refused() {
        let flows = rich(1000, 1_800_000_000_000);
        let p = probe(Default::default(), None, &[]);
        let out = p.process(&FlowBatch::new(&flows)).expect("process");
        let rtt: u64 = flows.iter().map(|f| f.time_flow_rtt_ns).sum();
        assert_eq!(value(&out, "field_sum", "TimeFlowRttNs"), rtt as f64);
        assert_eq!(value(&out, "field_sum", "DnsLatencyUs"), 250.0 * 250.0);
        assert_eq!(value(&out, "field_sum", "PktDropPackets"), 334.0);
        assert_eq!(value(&out, "field_distinct", "SrcK8S_Namespace"), 3.0);
        assert_eq!(value(&out, "field_distinct", "DstK8S_Namespace"), 1.0);
        // An address field, and the schema listed whole.
        let p = probe(Default::default(), None, &[("fields", "DstAddr")]);
        let out = p.process(&FlowBatch::new(&flows)).expect("process");
        assert_eq!(value(&out, "field_count", "DstAddr"), 1000.0);
        let p = probe(Default::default(), None, &[("mode", "schema")]);
        let out = p.process(&FlowBatch::new(&flows)).expect("schema");
        assert_eq!(
            value(&out, "schema_fields", ""),
            weir_core::schema::FIELDS.len() as f64
        );
        // A field that does not exist: refused, naming the closest one.
        let p = probe(Default::default(), None, &[("fields", "SrcK8S_Namspace")]);
        let e = p
            .process(&FlowBatch::new(&flows))
            .expect_err("unknown field");
        assert!(
            matches!(&e, HostError::Plugin { message, .. } if message.contains("no field named \"SrcK8S_Namspace\"") && message.contains("did you mean SrcK8S_Namespace")),
            "{e}"
        );
        // Not granted: the plugin does not load, and the message names the import.
        let m = manifest("contract-probe");
        let e = load_wasm(
            &runtime(),
            &wasm("contract-probe"),
            m,
            &[
                Capability::Config,
                Capability::Records,
                Capability::OutboundHttp,
                Capability::K8sObjects,
                Capability::Probe,
                Capability::CaptureControl,
                Capability::Kv,
            ],
            &[],
            None,
        )
        .err()
        .expect("refused without the grant");
        assert!(e.to_string().contains("flow-fields"), "{e}");
    }

    #[test]
    fn select_pages_through_stored_history_and_refuses_bad_asks() {
        let t = weir_core::query::now_ms() / MIN * MIN - 10 * MIN;
        let flows = rich(2500, t);
        let (_dir, s) = store(&flows);
        let p = probe(
            Default::default(),
            Some(&s),
            &[
                ("mode", "select"),
                ("filter", "DstPort=443"),
                ("page", "97"),
                ("fields", "TimeFlowRttNs,SrcK8S_Namespace"),
            ],
        );
        let out = p.process(&FlowBatch::new(&[])).expect("select");
        let want: Vec<&Flow> = flows.iter().filter(|f| f.dst_port == 443).collect();
        assert_eq!(
            value(&out, "select_rows", "TimeFlowRttNs"),
            want.len() as f64
        );
        assert_eq!(
            value(&out, "select_pages", "TimeFlowRttNs"),
            want.len().div_ceil(97) as f64
        );
        let rtt: u64 = want.iter().map(|f| f.time_flow_rtt_ns).sum();
        assert_eq!(value(&out, "select_sum", "TimeFlowRttNs"), rtt as f64);
        for (config, says) in [
            (("filter", "DstPrt=443"), "DstPort"),
            (("fields", "Nope"), "no field named"),
            (("page", "20000"), "limit"),
        ] {
            let mut c = vec![("mode", "select")];
            c.push(config);
            let p = probe(Default::default(), Some(&s), &c);
            let e = p.process(&FlowBatch::new(&[])).expect_err("refused");
            assert!(e.to_string().contains(says), "{config:?}: {e}");
        }
    }

    #[test]
    fn a_plugin_looping_on_selects_is_stopped_at_its_deadline() {
        let t = weir_core::query::now_ms() / MIN * MIN - 10 * MIN;
        let (_dir, s) = store(&rich(20_000, t));
        let policy = crate::SandboxPolicy {
            max_timeout_ms: 300,
            ..Default::default()
        };
        let p = probe(
            policy,
            Some(&s),
            &[("mode", "select-loop"), ("page", "10000")],
        );
        let started = Instant::now();
        let e = p.process(&FlowBatch::new(&[])).expect_err("deadline");
        let took = started.elapsed();
        assert!(matches!(e, HostError::Timeout { .. }), "{e}");
        assert!(took < Duration::from_millis(900), "{took:?}");
    }

    #[test]
    fn records_written_by_a_plugin_are_kept_paged_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = Arc::new(
            weir_core::records::RecordStore::open(&dir.path().join("records")).expect("records"),
        );
        let services = crate::state::Services::default();
        let _ = services.records.set(records.clone());
        let load = |config: &[(&str, &str)]| {
            let m = manifest("contract-probe");
            let bytes = wasm("contract-probe");
            load_served(
                &runtime(),
                &bytes,
                m,
                PROBE_GRANTS,
                config,
                None,
                services.clone(),
            )
            .expect("load")
        };
        let p = load(&[("mode", "records"), ("count", "2500"), ("page", "300")]);
        let out = p.process(&FlowBatch::new(&[])).expect("records");
        assert_eq!(value(&out, "records_written", "probe"), 2500.0);
        assert_eq!(value(&out, "records_read", "probe"), 2500.0);
        let kept = records
            .query(&weir_core::records::RecordQuery {
                to_ms: u64::MAX,
                limit: 10,
                ..Default::default()
            })
            .expect("query");
        assert_eq!(
            kept[0].source, "contract-probe",
            "written under the plugin's name"
        );
        assert_eq!(kept[0].entry.end_ms, Some(kept[0].entry.time_ms + 5));
        // A bad kind: refused naming it, nothing of that write kept.
        let p = load(&[("mode", "records"), ("kind", "Bad Kind")]);
        let e = p.process(&FlowBatch::new(&[])).expect_err("bad kind");
        assert!(e.to_string().contains("kind \"Bad Kind\""), "{e}");
        assert_eq!(records.len(), 2500);
        // Annotations a processor returns are kept as records; a bad filter is dropped.
        let p = load(&[
            ("mode", "annotate"),
            ("text", "deploy"),
            ("filter", "DstPort=80"),
        ]);
        let out = p.process(&super::flows(7)).expect("annotate");
        // With the labels of what asked for the run added.
        p.keep_annotations(&out.annotations, &[("trigger".into(), "spike".into())])
            .expect("a records store");
        let p = load(&[("mode", "annotate"), ("filter", "DstPrt=80")]);
        let out = p.process(&super::flows(7)).expect("annotate");
        p.keep_annotations(&out.annotations, &[])
            .expect("a records store");
        let ann = records
            .query(&weir_core::records::RecordQuery {
                to_ms: u64::MAX,
                kinds: vec!["annotation".into()],
                limit: 10,
                ..Default::default()
            })
            .expect("query");
        assert_eq!(ann.len(), 1, "{ann:?}");
        assert_eq!(ann[0].entry.text, "deploy");
        assert_eq!(ann[0].entry.flow_filter.as_deref(), Some("DstPort=80"));
        assert_eq!(
            ann[0].entry.labels,
            vec![
                ("flows".to_string(), "7".to_string()),
                ("trigger".to_string(), "spike".to_string())
            ]
        );
        // Without a store in the host, a clear refusal.
        let m = manifest("contract-probe");
        let p = load_wasm(
            &runtime(),
            &wasm("contract-probe"),
            m,
            PROBE_GRANTS,
            &[("mode", "records")],
            None,
        )
        .expect("load");
        let e = p.process(&FlowBatch::new(&[])).expect_err("no store");
        assert!(e.to_string().contains("no records store"), "{e}");
    }

    fn talkers(n: usize, seed: u64) -> Vec<Flow> {
        (0..n)
            .map(|i| {
                let mut f = Flow::empty();
                let x = (i as u64).wrapping_mul(2_654_435_761).wrapping_add(seed);
                f.src_addr = format!("10.0.{}.{}", x % 3, (x >> 8) % 40)
                    .parse()
                    .expect("ip");
                f.bytes = 100 + x % 9000;
                f.sampling = if i % 5 == 0 { 10 } else { 0 };
                f
            })
            .collect()
    }

    fn table(v: &crate::bindings::types::View) -> Vec<Vec<String>> {
        match v {
            crate::bindings::types::View::Table(t) => t.rows.clone(),
            other => panic!("not a table: {other:?}"),
        }
    }

    #[test]
    fn summarizer_snapshots_merge_like_one_agent_persist_and_keep_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let summarizer = |state: &str, windowing: Option<crate::manifest::Windowing>| {
            let mut m = manifest("src-bytes");
            if let Some(w) = windowing {
                m.summarizer = w;
            }
            let p = load_wasm(&runtime(), &wasm("src-bytes"), m, &[], &[], None).expect("load");
            let d = dir.path().join(state);
            std::fs::create_dir_all(&d).expect("dir");
            p.with_state_dir(&d)
        };
        let (one, two) = (talkers(3000, 1), talkers(2000, 7));
        let (a, b, all) = (
            summarizer("a", None),
            summarizer("b", None),
            summarizer("all", None),
        );
        for batch in one.chunks(500) {
            a.summarize(&FlowBatch::new(batch)).expect("a");
            all.summarize(&FlowBatch::new(batch)).expect("all");
        }
        for batch in two.chunks(500) {
            b.summarize(&FlowBatch::new(batch)).expect("b");
            all.summarize(&FlowBatch::new(batch)).expect("all");
        }
        let snapshot = b.summary_snapshot().expect("snapshot");
        assert!(!snapshot.is_empty());
        a.merge_summary(&snapshot).expect("merge");
        let merged = table(&a.query_summary("").expect("query a"));
        assert!(merged.len() > 50, "{}", merged.len());
        assert_eq!(merged, table(&all.query_summary("").expect("query all")));
        // A snapshot the plugin cannot read: refused, the state unchanged.
        let e = a.merge_summary(b"not a snapshot").expect_err("garbage");
        assert!(matches!(e, HostError::Plugin { .. }), "{e}");
        assert_eq!(merged, table(&a.query_summary("").expect("query a")));
        // Another node's bad snapshots are the caller's fault: they never disable the plugin.
        for _ in 0..5 {
            let _ = a.merge_summary(b"garbage");
        }
        assert_eq!(a.info().state, PluginState::Enabled, "{:?}", a.info());
        // Durable: written by persist_state, read back by a new load of the same directory.
        assert!(a.persist_state().expect("persist"));
        drop(a);
        let again = summarizer("a", None);
        assert_eq!(merged, table(&again.query_summary("").expect("query")));
        // Windows: a new one a minute, three kept; queries cover what is kept.
        let w = crate::manifest::Windowing {
            window_secs: 60,
            windows: 3,
        };
        let windowed = summarizer("w", Some(w));
        let t0 = 1_800_000_000_000u64;
        for minute in 0..5u64 {
            let batch = talkers(100, minute);
            windowed
                .summarize_at(&FlowBatch::new(&batch), t0 + minute * 60_000)
                .expect("update");
        }
        assert_eq!(windowed.summary_windows().len(), 3);
        let last3 = summarizer("last3", None);
        for minute in 2..5u64 {
            last3
                .summarize(&FlowBatch::new(&talkers(100, minute)))
                .expect("update");
        }
        assert_eq!(
            table(&windowed.query_summary("").expect("windowed")),
            table(&last3.query_summary("").expect("last3")),
            "the kept windows and nothing older"
        );
        // Its exported snapshot is every kept window merged.
        let fresh = summarizer("fresh", None);
        fresh
            .merge_summary(&windowed.summary_snapshot().expect("snapshot"))
            .expect("merge");
        assert_eq!(
            table(&fresh.query_summary("").expect("fresh")),
            table(&last3.query_summary("").expect("last3"))
        );
        // A cluster view's windows (weir_host::exchange): each window the merge of every
        // node's copy of it; a copy the plugin cannot read is left out and named, the rest
        // still merge.
        let ws = windowed.summary_window_snapshots().expect("windows");
        let starts: Vec<u64> = ws.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts.len(), 3);
        let central = summarizer("central", Some(w));
        let refused = central
            .replace_summary_windows(
                ws.iter()
                    .map(|(start, s)| (*start, vec![s.clone(), b"garbage".to_vec()]))
                    .collect(),
            )
            .expect("replace");
        assert_eq!(
            refused.iter().map(|(s, i, _)| (*s, *i)).collect::<Vec<_>>(),
            starts.iter().map(|s| (*s, 1)).collect::<Vec<_>>()
        );
        for _ in 0..5 {
            let _ = central.replace_summary_windows(vec![(starts[0], vec![b"junk".to_vec()])]);
        }
        assert_eq!(
            central.info().state,
            PluginState::Enabled,
            "{:?}",
            central.info()
        );
        // (every copy of a window refused: the window is left out)
        assert!(central.summary_windows().is_empty() || central.summary_windows()[0].1 == 0);
        central
            .replace_summary_windows(
                ws.iter()
                    .map(|(start, s)| (*start, vec![s.clone()]))
                    .collect(),
            )
            .expect("replace");
        assert_eq!(
            central
                .summary_windows()
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>(),
            starts
        );
        assert_eq!(
            table(&central.query_summary("").expect("central")),
            table(&last3.query_summary("").expect("last3"))
        );
        // Two nodes' copies of each window: both counted.
        central
            .replace_summary_windows(
                ws.iter()
                    .map(|(start, s)| (*start, vec![s.clone(), s.clone()]))
                    .collect(),
            )
            .expect("replace");
        let twice = summarizer("twice", None);
        let snap = windowed.summary_snapshot().expect("snapshot");
        twice.merge_summary(&snap).expect("merge");
        twice.merge_summary(&snap).expect("merge");
        assert_eq!(
            table(&central.query_summary("").expect("central")),
            table(&twice.query_summary("").expect("twice"))
        );
        assert_ne!(
            table(&twice.query_summary("").expect("twice")),
            table(&last3.query_summary("").expect("last3"))
        );
    }

    /// A loopback HTTP server answering every request with `answer(request text)` after
    /// `delay`; returns its port. Lives as long as the test process.
    fn serve(delay: Duration, answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> u16 {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = vec![0u8; 65536];
                    let n = conn.read(&mut buf).unwrap_or(0);
                    std::thread::sleep(delay);
                    let _ = conn.write_all(&answer(&String::from_utf8_lossy(&buf[..n])));
                });
            }
        });
        port
    }

    fn http_ok(body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn outbound_http_reaches_only_the_granted_hosts_within_the_deadline() {
        let seen = Arc::new(std::sync::Mutex::new(String::new()));
        let s2 = seen.clone();
        let port = serve(Duration::ZERO, move |req| {
            *s2.lock().expect("lock") = req.to_string();
            http_ok(b"hello from loopback")
        });
        let url = format!("http://127.0.0.1:{port}/api/v1/query?q=up");
        let load = |scope: Option<&str>, config: &[(&str, &str)], policy: crate::SandboxPolicy| {
            let mut m = manifest("contract-probe");
            if let Some(s) = scope {
                m.scopes
                    .insert(Capability::OutboundHttp, vec![s.to_string()]);
            }
            let rt = Runtime::new(None).expect("runtime").with_policy(policy);
            load_wasm(&rt, &wasm("contract-probe"), m, PROBE_GRANTS, config, None).expect("load")
        };
        // In scope (the manifest asks 127.0.0.1:*): the request reaches the server.
        let p = load(None, &[("mode", "http"), ("url", &url)], Default::default());
        let out = p.process(&FlowBatch::new(&[])).expect("http");
        assert_eq!(value(&out, "http_status", &url), 200.0);
        assert_eq!(value(&out, "http_body_bytes", &url), 19.0);
        let req = seen.lock().expect("lock").clone();
        assert!(req.starts_with("GET /api/v1/query?q=up HTTP/1.1"), "{req}");
        assert!(req.to_ascii_lowercase().contains("x-probe: 1"), "{req}");
        // Outside the scope: refused before any connection, naming the scope.
        let p = load(
            Some("127.0.0.1:1"),
            &[("mode", "http"), ("url", &url)],
            Default::default(),
        );
        let e = p.process(&FlowBatch::new(&[])).expect_err("out of scope");
        assert!(
            e.to_string().contains(&format!(
                "127.0.0.1:{port} is outside this plugin's scope (granted hosts: 127.0.0.1:1)"
            )),
            "{e}"
        );
        for bad in ["file:///etc/passwd", "ftp://127.0.0.1/", "not a url"] {
            let p = load(None, &[("mode", "http"), ("url", bad)], Default::default());
            let e = p.process(&FlowBatch::new(&[])).expect_err(bad);
            assert!(e.to_string().contains("url"), "{bad}: {e}");
        }
        // Redirects are answers, not followed (a redirect could leave the scope).
        let redirect = serve(Duration::ZERO, |_| {
            b"HTTP/1.1 302 Found\r\nlocation: http://192.0.2.1/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
        });
        let r = format!("http://127.0.0.1:{redirect}/");
        let out = load(None, &[("mode", "http"), ("url", &r)], Default::default())
            .process(&FlowBatch::new(&[]))
            .expect("302");
        assert_eq!(value(&out, "http_status", &r), 302.0);
        // Bodies are capped.
        let big = serve(Duration::ZERO, |_| http_ok(&vec![b'x'; 5 << 20]));
        let b = format!("http://127.0.0.1:{big}/");
        let e = load(None, &[("mode", "http"), ("url", &b)], Default::default())
            .process(&FlowBatch::new(&[]))
            .expect_err("too big");
        assert!(e.to_string().contains("at most 4194304 bytes"), "{e}");
        // The deadline bounds the time spent: one request to a server that answers after
        // 30 s, and a loop of requests to one that answers after 50 ms, under 300 ms.
        let policy = crate::SandboxPolicy {
            max_timeout_ms: 300,
            ..Default::default()
        };
        let stuck = serve(Duration::from_secs(30), |_| http_ok(b"late"));
        let slow = serve(Duration::from_millis(50), |_| http_ok(b"ok"));
        for (mode, port) in [("http", stuck), ("http-loop", slow)] {
            let u = format!("http://127.0.0.1:{port}/");
            let p = load(
                None,
                &[("mode", mode), ("url", &u), ("timeout_ms", "60000")],
                policy,
            );
            let t = Instant::now();
            let e = p.process(&FlowBatch::new(&[])).expect_err("deadline");
            assert!(matches!(e, HostError::Timeout { .. }), "{mode}: {e}");
            assert!(
                t.elapsed() < Duration::from_millis(900),
                "{mode}: {:?}",
                t.elapsed()
            );
        }
    }

    #[test]
    fn outbound_http_answers_are_recorded_and_a_replay_answers_from_them_only() {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a2 = asked.clone();
        let port = serve(Duration::ZERO, move |_| {
            let n = a2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            http_ok(format!("answer {n}").as_bytes())
        });
        let url = format!("http://127.0.0.1:{port}/api/v1/query_range?q=up");
        let load = |dir: &std::path::Path, url: &str| {
            let rt = runtime();
            load_wasm(
                &rt,
                &wasm("contract-probe"),
                manifest("contract-probe"),
                PROBE_GRANTS,
                &[("mode", "http"), ("url", url)],
                None,
            )
            .expect("load")
            .with_state_dir(dir)
        };
        let live = tempfile::tempdir().expect("tempdir");
        let p = load(live.path(), &url);
        let first = p.process(&FlowBatch::new(&[])).expect("live");
        assert_eq!(value(&first, "http_body_bytes", &url), 8.0);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The incident carries the tape; the replay answers from it without the network.
        let replay = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            live.path().join(crate::tape::TAPE_FILE),
            replay.path().join(crate::tape::REPLAY_FILE),
        )
        .expect("copy");
        let r = load(replay.path(), &url);
        let again = r.process(&FlowBatch::new(&[])).expect("replayed");
        assert_eq!(
            format!("{:?}", again.samples),
            format!("{:?}", first.samples)
        );
        assert_eq!(
            asked.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "no request made"
        );
        assert!(!replay.path().join(crate::tape::TAPE_FILE).exists());
        // A request the original never made: refused, naming it, still without the network.
        let other = format!("http://127.0.0.1:{port}/other");
        let e = load(replay.path(), &other)
            .process(&FlowBatch::new(&[]))
            .expect_err("not recorded");
        assert!(
            e.to_string().contains(&format!(
                "GET {other} has no answer recorded on the original node"
            )),
            "{e}"
        );
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The scope still holds in a replay.
        let mut m = manifest("contract-probe");
        m.scopes
            .insert(Capability::OutboundHttp, vec!["127.0.0.1:1".to_string()]);
        let e = load_wasm(
            &runtime(),
            &wasm("contract-probe"),
            m,
            PROBE_GRANTS,
            &[("mode", "http"), ("url", &url)],
            None,
        )
        .expect("load")
        .with_state_dir(replay.path())
        .process(&FlowBatch::new(&[]))
        .expect_err("out of scope");
        assert!(e.to_string().contains("outside this plugin's scope"), "{e}");
    }

    #[test]
    fn plugins_built_against_0_1_1_load_and_give_the_same_results() {
        let fixture = |name: &str| {
            std::fs::read(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("tests/fixtures/{name}-0.1.1.wasm")),
            )
            .expect("fixture")
        };
        // A flow-processor (the batch resource).
        let batch = super::flows(5000);
        let now = load("flow-count", &[], &[]).expect("load").process(&batch);
        let m = manifest("flow-count");
        let old = load_wasm(&runtime(), &fixture("flow-count"), m, &[], &[], None)
            .expect("0.1.1 flow-count loads")
            .process(&batch);
        let (now, old) = (now.expect("now"), old.expect("0.1.1"));
        assert!(!old.samples.is_empty());
        assert_eq!(format!("{:?}", old.samples), format!("{:?}", now.samples));
        // An alert rule (flow-stats, since 0.1.1).
        let t = weir_core::query::now_ms() / MIN * MIN - 10 * MIN;
        let mut flows = Vec::new();
        for _ in 0..3 {
            let mut f = flow(t, "veth-drop", 5000);
            f.pkt_drop_packets = 50;
            f.pkt_drop_latest_drop_cause = "SKB_DROP_REASON_NETFILTER_DROP".into();
            flows.push(f);
        }
        let (_dir, s) = store(&flows);
        let window = TimeRange {
            from_ms: t,
            to_ms: t + MIN,
        };
        let old = rule_from(&fixture("drops"), manifest("drops"), &s, &[])
            .evaluate(window)
            .expect("0.1.1 drops");
        let now = rule_from(&wasm("drops"), manifest("drops"), &s, &[])
            .evaluate(window)
            .expect("drops");
        assert_eq!(old.len(), 1, "{old:?}");
        assert_eq!(format!("{old:?}"), format!("{now:?}"));
    }
}

mod feed {
    use super::*;
    use crate::registry::{InstallRequest, Registry};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// An HTTP destination on loopback for ndjson-export's `SrcPort` lines. It holds each
    /// request until two are held at once (at most 2 s), then 20 ms more; answers 503 to the
    /// first batch starting at port `fail` and 200 to the rest; keeps every body with its
    /// answer, the most requests held at once, and each request whose batch the exporter's
    /// cursor (read from `cursor` as the request arrives) had already passed.
    struct Destination {
        fail: u64,
        cursor: PathBuf,
        bodies: Mutex<Vec<(bool, String)>>,
        failed: AtomicBool,
        arrived: AtomicUsize,
        held: AtomicUsize,
        most: AtomicUsize,
        passed: Mutex<Vec<(u64, u64)>>,
    }

    impl Destination {
        fn start(fail: u64, cursor: PathBuf) -> (Arc<Destination>, u16) {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = l.local_addr().expect("addr").port();
            let d = Arc::new(Destination {
                fail,
                cursor,
                bodies: Mutex::default(),
                failed: AtomicBool::new(false),
                arrived: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
                passed: Mutex::default(),
            });
            let server = d.clone();
            std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    let d = server.clone();
                    std::thread::spawn(move || d.serve(conn));
                }
            });
            (d, port)
        }

        /// One connection's requests (kept alive), until the client closes it.
        fn serve(&self, conn: std::net::TcpStream) {
            let mut out = conn.try_clone().expect("clone");
            let mut r = BufReader::new(conn);
            loop {
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().expect("content-length");
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).expect("body");
                let body = String::from_utf8(body).expect("utf-8");
                let first = ports(&body).first().copied().unwrap_or(0);
                let cursor: u64 = std::fs::read_to_string(&self.cursor)
                    .ok()
                    .and_then(|c| c.trim().parse().ok())
                    .unwrap_or(0);
                if cursor >= first {
                    self.passed.lock().expect("passed").push((cursor, first));
                }
                self.arrived.fetch_add(1, Ordering::SeqCst);
                let now = self.held.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                let t = Instant::now();
                while self.most.load(Ordering::SeqCst) < 2 && t.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(20));
                self.held.fetch_sub(1, Ordering::SeqCst);
                let ok = first != self.fail || self.failed.swap(true, Ordering::SeqCst);
                self.bodies.lock().expect("bodies").push((ok, body));
                let status = if ok {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                if out.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }

    fn ports(body: &str) -> Vec<u64> {
        body.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["SrcPort"]
                    .as_u64()
                    .expect("SrcPort")
            })
            .collect()
    }

    fn flow(i: u64, t: u64) -> Flow {
        let mut f = Flow::empty();
        f.src_port = i as u16;
        f.time_flow_start_ms = t;
        f.time_flow_end_ms = t + i;
        f
    }

    /// ndjson-export, 100 flows a batch, 3 in flight, over 250 stored flows (the third batch
    /// short); 750 more are stored while the first batches are held, and the second batch is
    /// refused once. Its own runtime: no other test's calls take its memory budget.
    #[test]
    fn batches_in_flight_overlap_yet_the_cursor_moves_in_order_and_failed_ones_go_again_as_they_were()
     {
        const N: u64 = 1000;
        let t = weir_core::query::now_ms() - 60_000;
        let first: Vec<Flow> = (1..=250).map(|i| flow(i, t)).collect();
        let (_store_dir, store) = super::rules::store(&first);
        let dir = tempfile::tempdir().expect("tempdir");
        let cursor = dir.path().join("plugins/ndjson-export/export-cursor");
        let (d, port) = Destination::start(101, cursor.clone());
        let rt = Arc::new(Runtime::new(None).expect("runtime"));
        let reg = Arc::new(
            Registry::open(&dir.path().join("plugins"), rt, Some(store.clone())).expect("registry"),
        );
        let mut sinks = weir_core::sink::Sinks::default();
        let dest = weir_core::sink::Destination::parse(&format!("out=http://127.0.0.1:{port}/in"))
            .expect("destination");
        let transport = weir_sinks::open(&dest);
        sinks.insert(dest, transport);
        reg.set_sinks(sinks);
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("src");
        std::fs::write(src.join("plugin.wasm"), wasm("ndjson-export")).expect("wasm");
        let toml = std::fs::read_to_string(plugins_dir().join("ndjson-export/plugin.toml"))
            .expect("toml")
            .replace("start = \"now\"", "start = \"oldest\"")
            .replace("batch_flows = 1000", "batch_flows = 100\nin_flight = 3");
        std::fs::write(src.join("plugin.toml"), toml).expect("toml");
        reg.install(&InstallRequest {
            source: src,
            config: [("sink", "out"), ("fields", "SrcPort")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .expect("install");
        let stop = Arc::new(AtomicBool::new(false));
        let supervisor = crate::export::spawn(reg.clone(), stop.clone()).expect("supervisor");
        let status = || {
            reg.list()
                .into_iter()
                .find_map(|l| l.export)
                .unwrap_or_default()
        };
        // The rest arrives while the first three batches are out.
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.arrived.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let rest: Vec<Flow> = (251..=N).map(|i| flow(i, t)).collect();
        store.append(&rest).expect("append");
        store.flush().expect("flush");
        let end = store.durable_seq();
        assert_eq!(end, N);
        while status().cursor < end && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        supervisor.join().expect("supervisor");
        let s = status();
        assert_eq!(s.cursor, end, "{s:?}");
        assert_eq!(s.exported_flows, N, "each batch counted once: {s:?}");
        assert_eq!(s.failures, 1, "{s:?}");
        let on_disk = std::fs::read_to_string(&cursor).expect("cursor file");
        assert_eq!(on_disk.trim(), end.to_string());
        let bodies = d.bodies.lock().expect("bodies").clone();
        // Batches overlapped, never more than in_flight.
        let most = d.most.load(Ordering::SeqCst);
        assert!((2..=3).contains(&most), "at most {most} requests at once");
        // The cursor never passed a batch before it was delivered.
        let passed = d.passed.lock().expect("passed").clone();
        assert!(passed.is_empty(), "(cursor, batch start) {passed:?}");
        // Nothing lost: every flow in a body answered 200.
        let delivered: std::collections::BTreeSet<u64> = bodies
            .iter()
            .filter(|(ok, _)| *ok)
            .flat_map(|(_, b)| ports(b))
            .collect();
        assert_eq!(delivered, (1..=N).collect(), "every flow delivered");
        // The refused batch, and the short one in flight behind it, were sent again exactly
        // as they were (not grown by the flows stored meanwhile); so was every batch sent
        // more than once.
        let refused: Vec<&String> = bodies
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(refused.len(), 1);
        assert_eq!(ports(refused[0]), (101..=200).collect::<Vec<_>>());
        let mut first_sent: BTreeMap<u64, &String> = BTreeMap::new();
        for (_, b) in &bodies {
            let at = ports(b)[0];
            let was = *first_sent.entry(at).or_insert(b);
            assert_eq!(was, b, "the batch from {at} sent again as it was");
        }
        let short = first_sent.get(&201).expect("the third batch");
        assert_eq!(ports(short).len(), 50, "the third batch was short");
        let sent_twice = bodies.iter().filter(|(_, b)| ports(b)[0] == 201).count();
        assert_eq!(
            sent_twice, 2,
            "the short batch behind the refused one went again"
        );
    }
}
