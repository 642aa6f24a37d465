#!/usr/bin/env bash
# The one test command (CI runs it through .ci/run). Installs and builds what is needed
# (scripts/setup.sh), then: rustfmt, clippy (native and wasm32-wasip1), the unit tests, the
# routing grammar tests compiled to wasm and run under Node's WASI, a short run of every
# fuzz target, and the end-to-end suite (real Redis, Envoy, Colyseus servers and
# colyseus.js clients, started by the tests).
#
#   scripts/test.sh           everything
#   scripts/test.sh --quick   everything but the end-to-end suite
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
if [ -d "$HOME/.cargo/bin" ] && ! command -v cargo >/dev/null 2>&1; then
  PATH="$HOME/.cargo/bin:$PATH"
fi

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument: $arg" >&2; exit 64 ;;
  esac
done

if [ "${CI:-}" = true ]; then export CARGO_TERM_COLOR=never; fi
# The wasm test runner is normally set in .cargo/config.toml; make sure it is set.
if ! grep -qs 'wasm-test-runner' .cargo/config.toml; then
  export CARGO_TARGET_WASM32_WASIP1_RUNNER="node $root/scripts/wasm-test-runner.mjs"
fi
[ -f scripts/wasm-test-runner.mjs ] || { echo "test.sh: scripts/wasm-test-runner.mjs is missing" >&2; exit 1; }

start=$SECONDS
current=""
# Every step's output is also kept here, to add up the test counts at the end.
log="$root/target/test-steps.log"
mkdir -p "$root/target"
: >"$log"
finish() {
  local rc=$?
  local t=$((SECONDS - start))
  echo
  if [ "$rc" -eq 0 ]; then
    echo "==== all steps passed in $((t / 60))m$((t % 60))s"
  else
    echo "==== FAILED at: ${current:-?} (exit $rc) after $((t / 60))m$((t % 60))s"
  fi
  # One closing line over all cargo test runs (unit, wasm, end-to-end).
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
       END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
}
trap finish EXIT

step() {
  current="$*"
  echo
  echo "==== $* ($((SECONDS - start))s)"
  "$@" 2>&1 | tee -a "$log"
}

# A short bounded run of every fuzz target (scripts/fuzz.sh, stable Rust, FUZZ_SECONDS each,
# default 5), counted as one test per target (a `test result:` line, which the closing count
# adds up). The fuzz crate builds the agent without its daemon feature, so the instrumented
# build stays around two minutes cold.
fuzz_run() {
  local seconds="${FUZZ_SECONDS:-5}" n
  n=$(grep -c '^\[\[bin\]\]' fuzz/Cargo.toml)
  if scripts/fuzz.sh "$seconds"; then
    echo "test result: ok. $n passed; 0 failed (fuzz targets, ${seconds}s each, no crash)"
  else
    echo "test result: FAILED. 0 passed; 1 failed (a fuzz target crashed, see above)"
    return 1
  fi
}

step scripts/setup.sh
step cargo fmt --all --check
step cargo fmt --manifest-path fuzz/Cargo.toml --all --check
step cargo clippy --workspace --all-targets -- -D warnings
step cargo clippy -p e2e --features e2e --all-targets -- -D warnings
step cargo clippy -p colyseus-envoy-agent --no-default-features --all-targets -- -D warnings
step cargo clippy -p colyseus-envoy-filter --target wasm32-wasip1 -- -D warnings
step cargo test --workspace
step cargo test -p routing --target wasm32-wasip1
step cargo test -p colyseus-envoy-filter --target wasm32-wasip1
step fuzz_run
if [ "$quick" -eq 0 ]; then
  step cargo test -p e2e --features e2e --no-fail-fast -- --test-threads=1
  # The suite above runs on the default edge path (`bootstrap --edge-path http`; edge_tcp.rs
  # pins both paths itself). The files that exercise the public edge itself run again on
  # the TCP path (issue 14): real joins, hostile and forged headers, WSS and a certificate
  # swap, close codes, hot restart, kill -9 of the agent with players held, room lookups.
  # lifecycle.rs and fleet.rs (liveness, two agents) do not depend on the edge path and
  # run once. About 2 minutes of tests on 2 cores.
  step env E2E_EDGE_PATH=tcp cargo test -p e2e --features e2e --no-fail-fast \
    --test routing --test edge --test security --test restarts --test rooms \
    -- --test-threads=1
else
  echo
  echo "==== end-to-end suite skipped (--quick)"
fi
current=""
