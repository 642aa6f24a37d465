#!/usr/bin/env bash
# Benchmark harness (issue 6): the same load, in one run, against
#   (1) direct    the upstreams themselves (the physical limit)
#   (2) static    Envoy, static per-process routes, no wasm (the Envoy limit)
#   (3) ours      colyseus-envoy run: the sync agent + Envoy with the filter
#   (4) colyseus  @colyseus/proxy 0.12.11 from npm (bench/colyseus-proxy)
# all on 127.0.0.1, free ports, configured from the same Redis registrations. Each round runs,
# per target: WebSocket connects and echo round trips against echo upstreams (loadgen), then
# the full Colyseus flow (bench/flow.js: real colyseus.js joinOrCreate + room WebSocket)
# against real Colyseus 0.16 game servers (example/server.js). After the rounds: convergence
# (registration -> routed, removal -> unroutable) of (3) and (4) (loadgen converge). Writes
# bench/results/latest.json, bench/results/*.png (if matplotlib installs) and BENCHMARKS.md.
#
# Usage: scripts/bench.sh [--quick] [--rounds R] [--no-pin] [--scale|--no-scale]
#   --quick   small settings, one round (about two minutes), no agent-scale run
#   --scale   also run the agent-scale benchmark (tests/e2e/tests/scale.rs; default unless
#             --quick; about 5 minutes: 10/1,000/10,000 processes, 100,000/1,000,000 rooms)
#   default   medians of 3 rounds (about 8 minutes of measuring)
# Settings by environment: BENCH_CONN_N, BENCH_CONN_C, BENCH_ECHO_C, BENCH_ECHO_K,
# BENCH_ECHO_T, BENCH_WARMUP, BENCH_UPSTREAMS, BENCH_ENVOY_CONCURRENCY, BENCH_FLOW_N (joins
# per target and round; 0 skips the flow), BENCH_FLOW_C, BENCH_FLOW_SERVERS,
# BENCH_FLOW_MAX_CLIENTS, BENCH_CONV_TRIALS (0 skips convergence), BENCH_NOTE,
# BENCH_AGENT_ARGS (extra `agent sync` flags for (3), e.g. `--balance even`).
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
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 64 ;;
  esac
  shift
done

if [ "$quick" -eq 1 ]; then
  : "${BENCH_CONN_N:=1000}" "${BENCH_CONN_C:=50}" "${BENCH_ECHO_C:=100}" "${BENCH_ECHO_K:=4}"
  : "${BENCH_ECHO_T:=3}" "${BENCH_WARMUP:=1}" "${BENCH_FLOW_N:=300}"
  rounds="${rounds:-1}"
else
  : "${BENCH_CONN_N:=4000}" "${BENCH_CONN_C:=50}" "${BENCH_ECHO_C:=200}" "${BENCH_ECHO_K:=4}"
  : "${BENCH_ECHO_T:=10}" "${BENCH_WARMUP:=2}" "${BENCH_FLOW_N:=1000}"
  rounds="${rounds:-3}"
fi
: "${BENCH_UPSTREAMS:=3}" "${BENCH_ENVOY_CONCURRENCY:=1}" "${BENCH_NOTE:=}"
: "${BENCH_FLOW_C:=10}" "${BENCH_FLOW_SERVERS:=3}" "${BENCH_FLOW_MAX_CLIENTS:=4}" "${BENCH_CONV_TRIALS:=20}"

say() { echo "bench: $*" >&2; }

run_dir="$root/.run/bench"
rm -rf "$run_dir"
mkdir -p "$run_dir" "$root/bench/results"
raw="$run_dir/raw.jsonl"
conv="$run_dir/converge.jsonl"
: >"$raw"
: >"$conv"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

. "$root/scripts/lib/bins.sh"

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

# --- process bookkeeping: start, stop_started (everything started is stopped by PID) ---
. "$root/scripts/lib/children.sh"

# free_port, wait_http, wait_port
. "$root/scripts/lib/wait.sh"

# --- the proxies under test, each started by one function; each sets px_port, px_admin and
# px_watch (the PIDs whose CPU counts as the proxy's) ---

# `start_static NAME PID=HOST:PORT...`: (2) Envoy with static routes, no wasm.
start_static() {
  local name="$1"
  shift
  px_port="$(free_port)"
  px_admin="$(free_port)"
  mkdir -p "$run_dir/$name"
  "$py" bench/envoy_static.py "$px_port" "$px_admin" "$@" >"$run_dir/$name/envoy.json"
  start "$name" "${pin_proxy[@]}" "$envoy" -c "$run_dir/$name/envoy.json" --log-level warn \
    --disable-hot-restart --concurrency "$BENCH_ENVOY_CONCURRENCY"
  px_watch="$spid"
  wait_http "http://127.0.0.1:$px_admin/ready" LIVE
}

# `start_ours NAME REDIS_URL`: (3) `colyseus-envoy run` (the agent's sync and Envoy with the
# filter, supervised by run), as users start it. Its CPU is that of run and its two children.
start_ours() {
  local name="$1" redis="$2" api n children sync_args=() arg agent_extra
  read -r -a agent_extra <<<"${BENCH_AGENT_ARGS:-}"
  for arg in "${agent_extra[@]}"; do sync_args+=("--sync-arg=$arg"); done
  px_port="$(free_port)"
  px_admin="$(free_port)"
  api="$(free_port)"
  # The admin on TCP (the explicit opt-in; the default is a Unix socket): the loadgen reads
  # it by ip:port; the agent refuses it as an upstream.
  PORT="$px_port" IP=127.0.0.1 REDIS_URL="$redis" ADMIN_ADDR="127.0.0.1:$px_admin" \
    AGENT_API_ADDR="127.0.0.1:$api" RUN_DIR="$run_dir/$name" ENVOY_BIN="$envoy" \
    COLYSEUS_ENVOY_FILTER_WASM="$wasm" ENVOY_HOT_RESTART=false \
    ENVOY_CONCURRENCY="$BENCH_ENVOY_CONCURRENCY" \
    start "$name" "${pin_proxy[@]}" "$agent" run "${sync_args[@]}"
  for ((n = 0; n < 400; n++)); do
    grep -q 'Listening on' "$run_dir/$name.log" 2>/dev/null && break
    kill -0 "$spid" 2>/dev/null || { say "$name did not start: $(tail -n 3 "$run_dir/$name.log")"; return 1; }
    sleep 0.1
  done
  children="$(cat "/proc/$spid/task/$spid/children")"
  children="${children% }"
  px_watch="$spid,${children// /,}"
  wait_http "http://127.0.0.1:$px_admin/ready" LIVE
}

# `start_colyseus NAME REDIS_URL`: (4) @colyseus/proxy 0.12.11 (reads colyseus:nodes at start).
start_colyseus() {
  local name="$1" redis="$2"
  px_port="$(free_port)"
  px_admin=""
  PORT="$px_port" IP=127.0.0.1 REDIS_URL="$redis" SOCKET_TIMEOUT=3600000 \
    start "$name" "${pin_proxy[@]}" node bench/colyseus-proxy/node_modules/@colyseus/proxy/bin/proxy
  px_watch="$spid"
  wait_port "$px_port"
}

# `start_redis NAME`: a Redis on the load side; sets redis_port.
start_redis() {
  redis_port="$(free_port)"
  start "$1" "${pin_load[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
  unset 'started[-1]'
  started_last+=("$spid")
  wait_port "$redis_port"
}

# `start_game NAME REDIS_URL [public]`: one Colyseus 0.16 game server (example/server.js) on the
# load side, registered in that Redis; "public" gives it publicAddress 127.0.0.1:{its port}, so
# clients open room WebSockets on it directly. Sets game_port, game_pid, game_processid.
start_game() {
  local name="$1" redis="$2" public="${3:-}" n
  game_port="$(free_port)"
  PORT="$game_port" HOST=127.0.0.1 REDIS_URL="$redis" MAX_CLIENTS="$BENCH_FLOW_MAX_CLIENTS" \
    FILTER_BY=lane PUBLIC_ADDRESS="${public:+127.0.0.1:$game_port}" \
    start "$name" "${pin_load[@]}" node example/server.js
  game_pid=$spid
  for ((n = 0; n < 300; n++)); do
    game_processid="$(sed -n 's/^READY {"processId":"\([^"]*\)".*/\1/p' "$run_dir/$name.log" 2>/dev/null || true)"
    [ -n "$game_processid" ] && return 0
    kill -0 "$game_pid" 2>/dev/null || break
    sleep 0.1
  done
  say "game server $name did not start (see $run_dir/$name.log)"
  return 1
}

# --- Redis and the echo upstreams, registered as Colyseus 0.11-0.16 processes do ---
start_redis redis
echo_redis_port=$redis_port
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
# Not registered: loadgen converge registers fresh processIds for it; its tag tells its answers apart.
conv_port="$(free_port)"
start upstream-converge "${pin_load[@]}" "$echo_bin" --port "$conv_port" --tag converge
wait_port "$conv_port"
say "redis :$redis_port, upstreams ${pids[*]} on ports ${ports[*]}"

static_args=()
for i in "${!pids[@]}"; do static_args+=("${pids[$i]}=127.0.0.1:${ports[$i]}"); done
start_static envoy-static "${static_args[@]}"
static_port=$px_port static_watch=$px_watch
start_ours envoy-ours "$redis_url"
ours_port=$px_port ours_admin=$px_admin ours_watch=$px_watch
start_colyseus colyseus-proxy "$redis_url"
colyseus_port=$px_port colyseus_watch=$px_watch

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
url[static]="$(urls_for "$static_port")"; watch[static]="$static_watch"
url[ours]="$(urls_for "$ours_port")"; watch[ours]="$ours_watch"
url[colyseus]="$(urls_for "$colyseus_port")"; watch[colyseus]="$colyseus_watch"

# --- the full Colyseus flow: real game servers, each fleet on its own Redis ---
# The proxied fleet registers in one Redis that (2)-(4) are configured from; the direct fleet
# (publicAddress set) in another, so that neither matchmaking ever places a room on the other.
declare -A flow_ep flow_watch flow_servers
if [ "$BENCH_FLOW_N" -gt 0 ]; then
  start_redis redis-flow
  flow_redis_url="redis://127.0.0.1:$redis_port"
  flow_static_args=()
  game_pids=()
  for ((i = 1; i <= BENCH_FLOW_SERVERS; i++)); do
    start_game "game-$i" "$flow_redis_url"
    flow_static_args+=("$game_processid=127.0.0.1:$game_port")
    game_pids+=("$game_pid")
  done
  start_redis redis-direct
  direct_eps=()
  direct_pids=()
  for ((i = 1; i <= BENCH_FLOW_SERVERS; i++)); do
    start_game "game-direct-$i" "redis://127.0.0.1:$redis_port" public
    direct_eps+=("http://127.0.0.1:$game_port")
    direct_pids+=("$game_pid")
  done
  flow_ep[direct]="$(join "${direct_eps[@]}")"; flow_watch[direct]=""
  flow_servers[direct]="$(join "${direct_pids[@]}")"
  start_static envoy-static-flow "${flow_static_args[@]}"
  flow_ep[static]="http://127.0.0.1:$px_port"; flow_watch[static]="$px_watch"
  start_ours envoy-ours-flow "$flow_redis_url"
  flow_ep[ours]="http://127.0.0.1:$px_port"; flow_watch[ours]="$px_watch"
  start_colyseus colyseus-proxy-flow "$flow_redis_url"
  flow_ep[colyseus]="http://127.0.0.1:$px_port"; flow_watch[colyseus]="$px_watch"
  for t in static ours colyseus; do flow_servers[$t]="$(join "${game_pids[@]}")"; done
  say "game servers: ${BENCH_FLOW_SERVERS} proxied ($flow_redis_url), ${BENCH_FLOW_SERVERS} direct"
fi

flow() { # TARGET N CONCURRENCY
  "${pin_load[@]}" node bench/flow.js --endpoint "${flow_ep[$1]}" --n "$2" --concurrency "$3" \
    --watch-pid "${flow_watch[$1]}" --server-pid "${flow_servers[$1]}" --label "$1"
}

# Every target must route every processId before anything is measured.
for t in "${targets[@]}"; do
  smoke="$("$loadgen" connect --url "${url[$t]}" --n 30 --concurrency 3 --settle-ms 0)"
  ok="$(echo "$smoke" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["ok"])')"
  [ "$ok" = 30 ] || { say "smoke test through $t failed: $smoke"; exit 1; }
  if [ "$BENCH_FLOW_N" -gt 0 ]; then
    smoke="$(flow "$t" 30 3)"
    ok="$(echo "$smoke" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["ok"])')"
    [ "$ok" = 30 ] || { say "flow smoke test through $t failed: $smoke"; exit 1; }
  fi
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
    f=null
    if [ "$BENCH_FLOW_N" -gt 0 ]; then
      sleep 1
      f="$(flow "$t" "$BENCH_FLOW_N" "$BENCH_FLOW_C")"
    fi
    la="$(loadavg)"
    printf '{"round":%d,"target":"%s","loadavg_before":"%s","loadavg_after":"%s","connect":%s,"echo":%s,"flow":%s}\n' \
      "$r" "$t" "$lb" "$la" "$c" "$e" "$f" >>"$raw"
    say "round $r $t: load $lb -> $la"
    sleep 1
  done
done
# Convergence, after the rounds: the removed processIds (still draining in ours) must not
# weigh on the rounds' figures.
if [ "$BENCH_CONV_TRIALS" -gt 0 ]; then
  conv_common=(--redis "127.0.0.1:$echo_redis_port" --upstream "127.0.0.1:$conv_port" --tag converge
    --trials "$BENCH_CONV_TRIALS")
  "${pin_load[@]}" "$loadgen" converge "${conv_common[@]}" --proxy "127.0.0.1:$ours_port" \
    --removal all-cluster --admin "127.0.0.1:$ours_admin" --label ours >>"$conv"
  "${pin_load[@]}" "$loadgen" converge "${conv_common[@]}" --proxy "127.0.0.1:$colyseus_port" \
    --removal route --label colyseus >>"$conv"
  say "convergence: $BENCH_CONV_TRIALS trials each for ours and @colyseus/proxy"
fi
t_end=$(date +%s)

pkg_version() { sed -n 's/^  "version": "\(.*\)",$/\1/p' "node_modules/$1/package.json"; }
cpu_model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
"$py" - "$run_dir/meta.json" <<PYEOF
import json, sys
json.dump({
  "quick": $quick == 1, "rounds": $rounds, "measure_s": $t_end - $t_start,
  "note": """$BENCH_NOTE""",
  "settings": {"conn_n": $BENCH_CONN_N, "conn_concurrency": $BENCH_CONN_C,
               "echo_connections": $BENCH_ECHO_C, "echo_inflight": $BENCH_ECHO_K,
               "echo_duration_s": $BENCH_ECHO_T, "echo_warmup_s": $BENCH_WARMUP, "message_bytes": 64,
               "upstreams": $BENCH_UPSTREAMS, "envoy_concurrency": $BENCH_ENVOY_CONCURRENCY,
               "flow_n": $BENCH_FLOW_N, "flow_concurrency": $BENCH_FLOW_C,
               "flow_servers": $BENCH_FLOW_SERVERS, "flow_max_clients": $BENCH_FLOW_MAX_CLIENTS,
               "conv_trials": $BENCH_CONV_TRIALS},
  "pinning": "$pinning",
  "machine": {"cpus": $ncpu, "cpu_model": "$cpu_model", "kernel": "$(uname -r)",
              "mem_total": "$(grep MemTotal /proc/meminfo | awk '{print $2" "$3}')"},
  "versions": {"envoy": "$("$envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1 | cut -d/ -f2)",
               "node": "$(node --version)", "colyseus_proxy": "0.12.11",
               "colyseus": "$(pkg_version @colyseus/core)", "colyseus_js": "$(pkg_version colyseus.js)",
               "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"},
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
}, open(sys.argv[1], "w"), indent=1)
PYEOF
stop_started
: >"$run_dir/scale.txt"
if [ "${scale:-$((1 - quick))}" -eq 1 ]; then
  say "agent scale (tests/e2e/tests/scale.rs)"
  SCALE_PROCESSES="${SCALE_PROCESSES:-10,1000,10000}" SCALE_ROOMS="${SCALE_ROOMS:-100000,1000000}" \
    cargo test -q -p e2e --features e2e --test scale -- --ignored --nocapture --test-threads 1 \
    >"$run_dir/scale.log" 2>&1 || say "WARNING: the agent-scale run failed (see $run_dir/scale.log)"
  # -o: with -q, cargo prints a test's progress dot on the line its output starts on.
  grep -o 'SCALE .*' "$run_dir/scale.log" >"$run_dir/scale.txt" || true
fi
"$py" bench/report.py "$raw" "$run_dir/meta.json" --plots "$plots" --scale "$run_dir/scale.txt" \
  --converge "$conv"
say "done: BENCHMARKS.md, bench/results/latest.json"
