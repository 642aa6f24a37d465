#!/usr/bin/env bash
# Benchmark harness (issue 6): the same WebSocket load, in one run, against
#   (1) direct    the upstream echo servers themselves (the physical limit)
#   (2) static    Envoy, static per-process routes, no wasm (the Envoy limit)
#   (3) ours      colyseus-envoy: agent bootstrap + agent sync + Envoy with the filter
#   (4) colyseus  @colyseus/proxy 0.12.11 from npm (bench/colyseus-proxy)
# all on 127.0.0.1, free ports, configured from the same Redis registrations. Writes
# bench/results/latest.json, bench/results/*.png (if matplotlib installs) and BENCHMARKS.md.
#
# Usage: scripts/bench.sh [--quick] [--rounds R] [--no-pin] [--scale|--no-scale]
#   --quick   small settings, one round (about a minute), no agent-scale run
#   --scale   also run the agent-scale benchmark (tests/e2e/tests/scale.rs; default unless
#             --quick; about 5 minutes: 10/1,000/10,000 processes, 100,000/1,000,000 rooms)
#   default   medians of 3 rounds (bounded to about 5 minutes of measuring)
# Settings by environment: BENCH_CONN_N, BENCH_CONN_C, BENCH_ECHO_C, BENCH_ECHO_K,
# BENCH_ECHO_T, BENCH_WARMUP, BENCH_UPSTREAMS, BENCH_ENVOY_CONCURRENCY, BENCH_NOTE.
# Logs and raw results: .run/bench/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

quick=0
scale=""
rounds=""
pin=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --scale) scale=1 ;;
    --no-scale) scale=0 ;;
    --rounds) rounds="$2"; shift ;;
    --no-pin) pin=0 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 64 ;;
  esac
  shift
done

if [ "$quick" -eq 1 ]; then
  : "${BENCH_CONN_N:=1000}" "${BENCH_CONN_C:=50}" "${BENCH_ECHO_C:=100}" "${BENCH_ECHO_K:=4}"
  : "${BENCH_ECHO_T:=3}" "${BENCH_WARMUP:=1}"
  rounds="${rounds:-1}"
else
  : "${BENCH_CONN_N:=4000}" "${BENCH_CONN_C:=50}" "${BENCH_ECHO_C:=200}" "${BENCH_ECHO_K:=4}"
  : "${BENCH_ECHO_T:=10}" "${BENCH_WARMUP:=2}"
  rounds="${rounds:-3}"
fi
: "${BENCH_UPSTREAMS:=3}" "${BENCH_ENVOY_CONCURRENCY:=1}" "${BENCH_NOTE:=}"

say() { echo "bench: $*" >&2; }

run_dir="$root/.run/bench"
rm -rf "$run_dir"
mkdir -p "$run_dir" "$root/bench/results"
raw="$run_dir/raw.jsonl"
: >"$raw"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
agent="$target_dir/release/colyseus-envoy-agent"
wasm="$target_dir/wasm32-wasip1/release/colyseus_envoy_filter.wasm"
envoy="$root/.venv/bin/envoy"
py="$root/.venv/bin/python"
loadgen="$target_dir/release/loadgen"
echo_bin="$target_dir/release/bench-echo"

# --- install / build what is needed ---
if [ ! -x "$agent" ] || [ ! -f "$wasm" ] || [ ! -x "$envoy" ]; then
  "$root/scripts/setup.sh"
fi
# Always through build-filter.sh: a plain cargo build of the filter leaves the .wasm without
# its callbacks stripped, which costs VM calls on every message (see build-filter.sh).
say "building the filter"
"$root/scripts/build-filter.sh" >/dev/null
say "building loadgen and bench-echo"
cargo build --release -q -p colyseus-envoy-bench
if [ ! -f bench/colyseus-proxy/node_modules/@colyseus/proxy/proxy.js ]; then
  say "installing @colyseus/proxy (npm ci in bench/colyseus-proxy)"
  (cd bench/colyseus-proxy && npm ci --no-audit --no-fund >/dev/null)
fi
plots=1
if ! "$py" -c 'import matplotlib' 2>/dev/null; then
  say "installing matplotlib into .venv for the plots"
  "$py" -m pip install -q -r bench/requirements.txt >"$run_dir/pip.log" 2>&1 ||
    { plots=0; say "WARNING: matplotlib did not install; no plots (see $run_dir/pip.log)"; }
fi

# --- pinning: proxy on one core, everything else (load generator, upstreams, Redis) on another ---
pin_proxy=()
pin_load=()
ncpu="$(nproc)"
if [ "$pin" -eq 1 ] && [ "$ncpu" -ge 2 ] && command -v taskset >/dev/null; then
  pin_proxy=(taskset -c 0)
  pin_load=(taskset -c 1)
  pinning="proxy on CPU 0; load generator, upstreams and Redis on CPU 1 (taskset)"
else
  pinning="none"
fi

# --- process bookkeeping: everything started is stopped by PID, even on failure ---
started=()
cleanup() {
  trap - EXIT INT TERM
  local pid i n
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    kill -TERM "${started[$i]}" 2>/dev/null || true
  done
  for ((n = 0; n < 50; n++)); do
    local left=0
    for pid in "${started[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ "$left" -eq 0 ] && return 0
    sleep 0.1
  done
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# `start NAME CMD...`: runs CMD in the background, logs to $run_dir/NAME.log, sets $spid.
start() {
  local name="$1"
  shift
  "$@" </dev/null >"$run_dir/$name.log" 2>&1 &
  spid=$!
  started+=("$spid")
}

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # URL [expect-substring]
  local n
  for ((n = 0; n < 300; n++)); do
    if body="$(curl -fsS --max-time 1 "$1" 2>/dev/null)" && [[ "$body" == *"${2:-}"* ]]; then return 0; fi
    sleep 0.1
  done
  say "timed out waiting for $1"
  return 1
}

wait_port() {
  local n
  for ((n = 0; n < 300; n++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  say "timed out waiting for port $1"
  return 1
}

# --- Redis and the upstreams, registered as Colyseus 0.11-0.16 processes do ---
redis_port="$(free_port)"
start redis "${pin_load[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
wait_port "$redis_port"
redis_url="redis://127.0.0.1:$redis_port"

pids=()
ports=()
upstream_pids=()
for ((i = 1; i <= BENCH_UPSTREAMS; i++)); do
  p="$(free_port)"
  pid="benchpid$i"
  start "upstream-$i" "${pin_load[@]}" "$echo_bin" --port "$p"
  upstream_pids+=("$spid")
  wait_port "$p"
  redis-cli -p "$redis_port" SADD colyseus:nodes "$pid/127.0.0.1:$p" >/dev/null
  redis-cli -p "$redis_port" PUBLISH colyseus:nodes:discovery "\"add,$pid/127.0.0.1:$p\"" >/dev/null
  pids+=("$pid")
  ports+=("$p")
done
say "redis :$redis_port, upstreams ${pids[*]} on ports ${ports[*]}"

# --- (2) Envoy, static routes, no wasm ---
static_port="$(free_port)"
static_admin="$(free_port)"
mkdir -p "$run_dir/static"
static_args=()
for i in "${!pids[@]}"; do static_args+=("${pids[$i]}=127.0.0.1:${ports[$i]}"); done
"$py" bench/envoy_static.py "$static_port" "$static_admin" "${static_args[@]}" >"$run_dir/static/envoy.json"
start envoy-static "${pin_proxy[@]}" "$envoy" -c "$run_dir/static/envoy.json" --log-level warn \
  --disable-hot-restart --concurrency "$BENCH_ENVOY_CONCURRENCY"
static_envoy_pid=$spid
wait_http "http://127.0.0.1:$static_admin/ready" LIVE

# --- (3) ours: agent bootstrap + agent sync + Envoy with the filter ---
ours_port="$(free_port)"
ours_admin="$(free_port)"
ours_api="$(free_port)"
mkdir -p "$run_dir/ours/envoy-config"
"$agent" bootstrap --ip 127.0.0.1 --port "$ours_port" --admin-addr "127.0.0.1:$ours_admin" \
  --config-dir "$run_dir/ours/envoy-config" --filter-wasm "$wasm" >"$run_dir/ours/envoy.json"
start agent "${pin_proxy[@]}" "$agent" sync --redis-url "$redis_url" \
  --config-dir "$run_dir/ours/envoy-config" --state-file "$run_dir/ours/agent-state.json" \
  --api-addr "127.0.0.1:$ours_api"
ours_agent_pid=$spid
wait_http "http://127.0.0.1:$ours_api/ready"
start envoy-ours "${pin_proxy[@]}" "$envoy" -c "$run_dir/ours/envoy.json" --log-level warn \
  --disable-hot-restart --concurrency "$BENCH_ENVOY_CONCURRENCY"
ours_envoy_pid=$spid
wait_http "http://127.0.0.1:$ours_admin/ready" LIVE

# --- (4) @colyseus/proxy 0.12.11 (reads colyseus:nodes at start) ---
colyseus_port="$(free_port)"
PORT="$colyseus_port" IP=127.0.0.1 REDIS_URL="$redis_url" SOCKET_TIMEOUT=3600000 \
  start colyseus-proxy "${pin_proxy[@]}" node bench/colyseus-proxy/node_modules/@colyseus/proxy/bin/proxy
colyseus_pid=$spid
wait_port "$colyseus_port"

urls_for() { # PORT-or-"direct"
  local i out=()
  for i in "${!pids[@]}"; do
    local port="$1"
    [ "$port" = direct ] && port="${ports[$i]}"
    out+=("ws://127.0.0.1:$port/${pids[$i]}/room$i?sessionId=s$i")
  done
  local IFS=,
  echo "${out[*]}"
}
join() { local IFS=,; echo "$*"; }

targets=(direct static ours colyseus)
declare -A url watch
url[direct]="$(urls_for direct)";     watch[direct]="$(join "${upstream_pids[@]}")"
url[static]="$(urls_for "$static_port")"; watch[static]="$static_envoy_pid"
url[ours]="$(urls_for "$ours_port")"; watch[ours]="$ours_envoy_pid,$ours_agent_pid"
url[colyseus]="$(urls_for "$colyseus_port")"; watch[colyseus]="$colyseus_pid"

# Every target must route every processId before anything is measured.
for t in "${targets[@]}"; do
  out="$("$loadgen" connect --url "${url[$t]}" --n 30 --concurrency 3 --settle-ms 0)"
  ok="$(echo "$out" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["ok"])')"
  [ "$ok" = 30 ] || { say "smoke test through $t failed: $out"; exit 1; }
done
say "all targets answer; pinning: $pinning"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
t_start=$(date +%s)
for ((r = 1; r <= rounds; r++)); do
  for t in "${targets[@]}"; do
    lb="$(loadavg)"
    c="$("${pin_load[@]}" "$loadgen" connect --url "${url[$t]}" --n "$BENCH_CONN_N" \
      --concurrency "$BENCH_CONN_C" --watch-pid "${watch[$t]}" --label "$t")"
    sleep 1
    e="$("${pin_load[@]}" "$loadgen" echo --url "${url[$t]}" --connections "$BENCH_ECHO_C" \
      --inflight "$BENCH_ECHO_K" --size 64 --warmup-s "$BENCH_WARMUP" --duration-s "$BENCH_ECHO_T" \
      --watch-pid "${watch[$t]}" --label "$t")"
    la="$(loadavg)"
    printf '{"round":%d,"target":"%s","loadavg_before":"%s","loadavg_after":"%s","connect":%s,"echo":%s}\n' \
      "$r" "$t" "$lb" "$la" "$c" "$e" >>"$raw"
    say "round $r $t: load $lb -> $la"
    sleep 1
  done
done
t_end=$(date +%s)

cpu_model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
"$py" - "$run_dir/meta.json" <<PYEOF
import json, sys
json.dump({
  "quick": $quick == 1, "rounds": $rounds, "measure_s": $t_end - $t_start,
  "note": """$BENCH_NOTE""",
  "settings": {"conn_n": $BENCH_CONN_N, "conn_concurrency": $BENCH_CONN_C,
               "echo_connections": $BENCH_ECHO_C, "echo_inflight": $BENCH_ECHO_K,
               "echo_duration_s": $BENCH_ECHO_T, "echo_warmup_s": $BENCH_WARMUP, "message_bytes": 64,
               "upstreams": $BENCH_UPSTREAMS, "envoy_concurrency": $BENCH_ENVOY_CONCURRENCY},
  "pinning": "$pinning",
  "machine": {"cpus": $ncpu, "cpu_model": "$cpu_model", "kernel": "$(uname -r)",
              "mem_total": "$(grep MemTotal /proc/meminfo | awk '{print $2" "$3}')"},
  "versions": {"envoy": "$("$envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1 | cut -d/ -f2)",
               "node": "$(node --version)", "colyseus_proxy": "0.12.11",
               "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"},
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
}, open(sys.argv[1], "w"), indent=1)
PYEOF
cleanup
: >"$run_dir/scale.txt"
if [ "${scale:-$((1 - quick))}" -eq 1 ]; then
  say "agent scale (tests/e2e/tests/scale.rs)"
  SCALE_PROCESSES="${SCALE_PROCESSES:-10,1000,10000}" SCALE_ROOMS="${SCALE_ROOMS:-100000,1000000}" \
    cargo test -q -p e2e --features e2e --test scale -- --ignored --nocapture --test-threads 1 \
    >"$run_dir/scale.log" 2>&1 || say "WARNING: the agent-scale run failed (see $run_dir/scale.log)"
  grep '^SCALE ' "$run_dir/scale.log" >"$run_dir/scale.txt" || true
fi
"$py" bench/report.py "$raw" "$run_dir/meta.json" --plots "$plots" --scale "$run_dir/scale.txt"
say "done: BENCHMARKS.md, bench/results/latest.json"
