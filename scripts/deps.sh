#!/usr/bin/env bash
# Installs what building and testing weir needs on a fresh Debian 12 machine (run as root).
#   deps.sh build   clang-19 + libbpf-dev (the kernel programs are C built by build.rs)
#   deps.sh test    the above + the real peers the tests use (iperf3, ping, curl, docker-registry,
#                   nats-server, pip for the Python plugin; node comes with the machine, ...)
#   deps.sh bench   the above + the tools the benchmarks compare against
set -euo pipefail
what="${1:-build}"
pkgs=(clang-19 libbpf-dev)
case "$what" in
  build) ;;
  test) pkgs+=(iproute2 iperf3 iputils-ping curl python3 python3-pip python3-cryptography procps docker-registry apache2-utils openssl chromium nftables prometheus prometheus-alertmanager nats-server) ;;
  bench) pkgs+=(iproute2 iperf3 iputils-ping curl python3 python3-pip python3-cryptography procps docker-registry apache2-utils openssl bpftool softflowd pmacct) ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
