#!/usr/bin/env bash
# UI benchmark (docs/PERFORMANCE.md): first render of a 200-node, 2,000-link Sankey, and of
# the OVS tree and graph of 10,000 datapath flows, in
# headless chromium. Needs a built weir (scripts/run-agent.sh or scripts/test.sh builds it),
# the front end's node_modules (scripts/build-ui.sh) and Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || apt-get install -y -qq --no-install-recommends chromium >/dev/null
data="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/weir agent --no-capture --data-dir "$data" --listen "127.0.0.1:$port" 2>"$data/agent.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
WEIR_URL="http://127.0.0.1:$port" node ui/web/bench/sankey.mjs
echo
WEIR_URL="http://127.0.0.1:$port" node ui/web/bench/ovs.mjs
