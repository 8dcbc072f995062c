#!/usr/bin/env bash
# One command from a fresh machine to a running agent: installs the build dependencies,
# builds weir and runs `weir agent` (API on http://127.0.0.1:9977). Extra arguments go to
# `weir agent`, e.g. `scripts/run-agent.sh --netns myns`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
rustup target add wasm32-wasip2 >/dev/null
# Bundled plugins first: the binary carries them (`weir plugin install bundled:NAME`).
cargo build --release --locked --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
# The web front end (npm tooling), embedded into the binary by ui/build.rs.
bash scripts/build-ui.sh
cargo build --release --locked
exec ./target/release/weir agent "$@"
