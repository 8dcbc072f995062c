#!/usr/bin/env bash
# One command from a fresh machine to a passing test suite: installs the build and test
# dependencies, builds the WebAssembly plugins, checks formatting and lints, and runs every
# test (unit, the plugin sandbox against real components, and end-to-end with real eBPF on
# veths in network namespaces; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-wasip2 >/dev/null
# Plugins (bundled ones and test fixtures) are WebAssembly components, built first.
cargo build --release --locked --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
# The web front end (npm tooling), embedded into the binary by ui/build.rs.
bash scripts/build-ui.sh
# Alert scripts in Python (componentize-py) and JavaScript (jco), built with pinned tools.
bash scripts/build-guest-plugins.sh
cargo fmt --all -- --check
cargo fmt --all --manifest-path plugins/Cargo.toml -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo test --release --locked --workspace --lib --bins --tests
# The policy engine's evaluation, the what-changed correlation and the OVS decoder's JSON
# writer and scans, natively (the same code the sandbox runs).
cargo test --release --locked --manifest-path plugins/Cargo.toml -p policy-engine -p what-changed -p event-drops -p trace-flows -p ovs-decoder -p sampling-controller -p clickhouse-export -p edge-summary
# The API attacked from its own OpenAPI description by Schemathesis, against a live agent.
bash scripts/api-fuzz.sh "${WEIR_API_FUZZ_EXAMPLES:-30}"
# Every fuzz target for a few seconds over its seeds and past findings (a smoke run; longer
# runs: docs/RELIABILITY.md, "Fuzzing").
bash scripts/fuzz.sh "${WEIR_FUZZ_SECONDS:-5}"
