#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz layout, libFuzzer) for a while each and fails
# on any crash (a panic, which includes every broken invariant the targets assert).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]    default 20
#
# Builds with stable Rust: the coverage instrumentation cargo-fuzz adds is made of stable
# codegen flags (below), so neither nightly nor cargo-fuzz is needed, and the test suite
# runs this briefly. Per target it prints the inputs run, libFuzzer's coverage (cov: edges,
# ft: features, from its last status line) and exec/s. Seeds are fuzz/corpus/<target>/
# (committed, read only); what libFuzzer finds goes to fuzz/target/corpus/<target>/ and is
# reused by the next run. A crash leaves its input in fuzz/artifacts/<target>/; replay it
# with `fuzz/target/<host triple>/release/<target> <file>`.
#
# Settings: FUZZ_SANITIZER (default none: every crate of ours forbids unsafe code, so
# AddressSanitizer would mostly cost throughput; `address` turns it on and needs the
# nightly toolchain), FUZZ_TARGETS (space-separated subset).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -d "$HOME/.cargo/bin" ] && ! command -v cargo >/dev/null 2>&1; then
  PATH="$HOME/.cargo/bin:$PATH"
fi

case "${1:-}" in
  -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz.sh: SECONDS_PER_TARGET must be a positive integer, got: $seconds" >&2
  exit 64
fi
[ $# -le 1 ] || { echo "fuzz.sh: one argument at most" >&2; exit 64; }
sanitizer="${FUZZ_SANITIZER:-none}"

toolchain=()
# The flags cargo-fuzz passes (libFuzzer's inline 8-bit counters, PC table, compare
# tracing, stack depth), for our code and every dependency. `--target` keeps them off build
# scripts and proc macros, which are not linked with libFuzzer.
rustflags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
rustflags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
rustflags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
rustflags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
rustflags+=" -Cllvm-args=-sanitizer-coverage-stack-depth --cfg fuzzing -Cdebug-assertions"
if [ "$sanitizer" != none ]; then
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: FUZZ_SANITIZER=$sanitizer needs the nightly toolchain:" >&2
    echo "fuzz.sh: rustup toolchain install nightly" >&2
    exit 2
  fi
  toolchain=(+nightly)
  rustflags+=" -Zsanitizer=$sanitizer"
fi
host=$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')

start=$SECONDS
echo "==== building the fuzz targets (sanitizer: $sanitizer)"
RUSTFLAGS="$rustflags" cargo "${toolchain[@]}" build --release --manifest-path fuzz/Cargo.toml \
  --bins --target "$host" --target-dir fuzz/target
echo "==== built in $((SECONDS - start))s"

all_targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -vx colyseus-envoy-fuzz | tr '\n' ' ')
read -r -a targets <<<"${FUZZ_TARGETS:-$all_targets}"
bins="fuzz/target/$host/release"
logs=fuzz/target/logs
mkdir -p "$logs"
failed=()
printf '\n%-22s %12s %8s %8s %10s  %s\n' target runs cov ft exec/s result
for t in "${targets[@]}"; do
  [ -x "$bins/$t" ] || { echo "fuzz.sh: no fuzz target $t ($bins/$t)" >&2; exit 64; }
  mkdir -p "fuzz/corpus/$t" "fuzz/target/corpus/$t" "fuzz/artifacts/$t"
  log="$logs/$t.log"
  rc=0
  "$bins/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" \
    -print_final_stats=1 -timeout=10 "fuzz/target/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="CRASH (exit $rc)"
    failed+=("$t")
  fi
  printf '%-22s %12s %8s %8s %10s  %s\n' "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" "${speed:-?}" "$result"
done

for t in "${failed[@]}"; do
  echo
  echo "==== $t crashed; log: fuzz/target/logs/$t.log"
  grep -E -A1 "panicked at" "fuzz/target/logs/$t.log" | head -6 || true
  grep -E "Test unit written|Base64" "fuzz/target/logs/$t.log" || true
done
echo
if [ "${#failed[@]}" -gt 0 ]; then
  echo "==== FAILED: ${failed[*]} ($((SECONDS - start))s)"
  exit 1
fi
echo "==== ${#targets[@]} targets, ${seconds}s each, no crash ($((SECONDS - start))s)"
