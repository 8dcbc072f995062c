#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each with cargo fuzz (libFuzzer), then
# prints a table: target, seconds, executions, executions per second, corpus size, result.
#
#   bash scripts/fuzz.sh                # 30 s per target
#   bash scripts/fuzz.sh 5              # the smoke run CI makes on every change
#   bash scripts/fuzz.sh 3600 filter    # an hour on one target
#   WEIR_FUZZ_PREBUILT=1 nice bash scripts/fuzz.sh 300
#                                       # long runs beside other work: the targets built
#                                       # before are run as they are, no cargo at all
#
# Seeds are fuzz/corpus/TARGET and the inputs of past findings fuzz/regressions/TARGET (both
# committed); what a run learns goes to fuzz/corpus-run/TARGET
# (not committed) and is read again by the next run. A crash, a failed property or a leak stops
# that target and leaves its input in fuzz/artifacts/TARGET/; the script exits non-zero. Fix it
# with a regression test that replays the input (see docs/RELIABILITY.md, "Fuzzing").
# Needs a nightly toolchain and cargo-fuzz; both are installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ] && [ "${WEIR_FUZZ_PREBUILT:-0}" = 1 ]; then
  mapfile -t targets < <(for f in fuzz_targets/*.rs; do basename "$f" .rs; done)
elif [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
bin=target/x86_64-unknown-linux-gnu/release
if [ "${WEIR_FUZZ_PREBUILT:-0}" = 1 ]; then
  echo "running the ${#targets[@]} fuzz targets built before (WEIR_FUZZ_PREBUILT=1)" >&2
else
  echo "building ${#targets[@]} fuzz targets (nightly, sanitizer coverage)..." >&2
  cargo +nightly fuzz build -O >&2
fi
mkdir -p logs
status=0
rows=()
for t in "${targets[@]}"; do
  mkdir -p "corpus-run/$t" "corpus/$t"
  dict=()
  [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
  [ "$t" = filter_store ] && [ -f dict/filter.dict ] && dict=("-dict=dict/filter.dict")
  echo "fuzzing $t for ${secs}s..." >&2
  result=ok
  # -rss_limit_mb: an input that makes a parser allocate gigabytes is a finding too.
  seeds=("corpus/$t")
  [ -d "regressions/$t" ] && seeds+=("regressions/$t")
  run=(cargo +nightly fuzz run -O "$t" "corpus-run/$t" "${seeds[@]}" --)
  if [ "${WEIR_FUZZ_PREBUILT:-0}" = 1 ]; then
    mkdir -p "artifacts/$t"
    run=("$bin/$t" "corpus-run/$t" "${seeds[@]}" -artifact_prefix="artifacts/$t/")
  fi
  if ! "${run[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "${dict[@]}" \
      >"logs/$t.log" 2>&1; then
    result="FAILED (fuzz/logs/$t.log, input in fuzz/artifacts/$t/)"
    status=1
    grep -E "panicked|ERROR: libFuzzer|SUMMARY" "logs/$t.log" | head -5 >&2 || true
  fi
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "logs/$t.log" | grep -oE '[0-9]+$' | tail -1)
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "logs/$t.log" | grep -oE '[0-9]+$' | tail -1)
  corpus=$(find "corpus-run/$t" -type f | wc -l)
  rows+=("$(printf '| %s | %s | %s | %s | %s | %s |' "$t" "$secs" "${execs:-?}" "${rate:-?}" "$corpus" "$result")")
done
echo
echo "| target | seconds | executions | per second | corpus (run) | result |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $status
