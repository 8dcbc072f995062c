#!/usr/bin/env bash
# Builds the web front end (ui/web, esbuild + d3-sankey/d3-chord/cytoscape from npm) into
# ui/web/dist, which ui/build.rs embeds into the weir binary. Installs node/npm if missing.
set -euo pipefail
cd "$(dirname "$0")/../ui/web"
if ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs and npm" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# npm ci only when the lock file changed since the last install.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
