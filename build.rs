//! Bundles the plugins built from `plugins/` into the binary (see `src/bundled.rs`). They are
//! built first (`cargo build --release --target wasm32-wasip2 --manifest-path
//! plugins/Cargo.toml`, as scripts/run-agent.sh and scripts/test.sh do); a binary built
//! without them says so and carries none.

use std::fmt::Write;
use std::path::PathBuf;

/// Plugins shipped with the binary.
const BUNDLED: &[&str] = &[
    "flow-count",
    "sankey",
    "chord",
    "topology",
    "drops",
    "dns-errors",
    "no-flows",
    "saturation",
    "quiet",
    "latency",
    "ndjson-export",
    "ovs-decoder",
    "policy-engine",
    "what-changed",
    "event-drops",
    "trace-flows",
    "edge-summary",
    "sampling-controller",
    "ipfix-export",
    "otlp-export",
    "clickhouse-export",
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let mut code = String::from("[\n");
    for name in BUNDLED {
        let wasm = root.join(format!(
            "plugins/target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ));
        let toml = root.join(format!("plugins/{name}/plugin.toml"));
        println!("cargo:rerun-if-changed={}", wasm.display());
        println!("cargo:rerun-if-changed={}", toml.display());
        if wasm.exists() && toml.exists() {
            let _ = writeln!(
                code,
                "    Bundled {{ name: {name:?}, wasm: include_bytes!({:?}), manifest: include_str!({:?}) }},",
                wasm.display().to_string(),
                toml.display().to_string()
            );
        } else {
            println!(
                "cargo:warning=bundled plugin {name} is not built ({}); build the plugins first: cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml",
                wasm.display()
            );
        }
    }
    code.push_str("]\n");
    if let Err(e) = std::fs::write(out.join("bundled.rs"), code) {
        panic!("writing bundled.rs: {e}");
    }
}
