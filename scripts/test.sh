#!/usr/bin/env bash
# One command from a fresh machine to a passing test suite: installs the build and test
# dependencies, checks formatting and lints, and runs every test (unit, and end-to-end with
# real eBPF on veths in network namespaces; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo test --release --locked --workspace --lib --bins --tests
