#!/usr/bin/env bash
# Benchmark of the edge paths (issue 14), one run, every target side by side on 127.0.0.1:
#   static     Envoy, static per-process routes, no wasm (bench/envoy_static.py)
#   ours-http  colyseus-envoy, `bootstrap --edge-path http` (every connection through the HCM)
#   ours-tcp   colyseus-envoy, `bootstrap --edge-path tcp` (room WebSockets raw through tcp_proxy)
#   colyseus   @colyseus/proxy 0.12.11 from npm (bench/colyseus-proxy)
# With the harness's parts (loadgen, bench-echo upstreams, bench/flow.js, scripts/lib/wait.sh)
# and its pinning (proxies on CPU 0, load on CPU 1). Per round and target: memory per idle
# WebSocket with 2,000 held (RSS delta / connections), CPU per connection and connections/s
# (the same 2,000 handshakes, 64 at a time), CPU per message with 1 and 4 in flight (200
# connections, 64 B); once per target after the rounds: memory per idle WebSocket with
# 10,000 held; then real colyseus.js joins (joinOrCreate + room WebSocket against Colyseus
# 0.16 game servers) through both of our paths: proxy CPU per join. Prints the medians and
# the issue's ratios, writes bench/results/edge-path.md and .run/bench-edge/raw.jsonl.
#
# Usage: scripts/bench-edge.sh [--rounds R]   (default 3; about 4 minutes on 2 cores)
# Settings: EDGE_HOLD (2000), EDGE_HOLD_BIG (10000), EDGE_ECHO_C (200), EDGE_ECHO_T (5 s),
# EDGE_FLOW_N (300 joins per path; 0 skips), EDGE_NOTE.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-edge: unknown argument $1" >&2; exit 64 ;;
  esac
  shift
done
: "${EDGE_HOLD:=2000}" "${EDGE_HOLD_BIG:=10000}" "${EDGE_ECHO_C:=200}" "${EDGE_ECHO_T:=5}"
: "${EDGE_FLOW_N:=300}" "${EDGE_NOTE:=}"

say() { echo "bench-edge: $*" >&2; }
run_dir="$root/.run/bench-edge"
rm -rf "$run_dir"
mkdir -p "$run_dir" "$root/bench/results"
raw="$run_dir/raw.jsonl"
: >"$raw"

# N held WebSockets are N downstream plus N upstream sockets in the proxy process. Where the
# hard limit is below 2N + 500 (20,000 on the machine of the published run, and raising it
# needs privileges), the big hold is lowered to fit, and the report says so.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fit=$((($(ulimit -n) - 500) / 2))
if [ "$EDGE_HOLD_BIG" -gt "$fit" ]; then
  say "ulimit -n is $(ulimit -n): holding $fit instead of $EDGE_HOLD_BIG WebSockets"
  EDGE_NOTE="${EDGE_NOTE:+$EDGE_NOTE }The big hold is $fit, not $EDGE_HOLD_BIG: the file-descriptor hard limit here is $(ulimit -n) (two sockets per held WebSocket in the proxy)."
  EDGE_HOLD_BIG=$fit
fi

. "$root/scripts/lib/bins.sh"

say "building the filter, the agent, loadgen and bench-echo"
"$root/scripts/build-filter.sh" >/dev/null
cargo build --release -q -p colyseus-envoy-agent -p colyseus-envoy-bench
if [ ! -f bench/colyseus-proxy/node_modules/@colyseus/proxy/proxy.js ]; then
  (cd bench/colyseus-proxy && npm ci --no-audit --no-fund >/dev/null)
fi

pin_proxy=()
pin_load=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_proxy=(taskset -c 0)
  pin_load=(taskset -c 1)
fi

# start, stop_started: everything started is stopped by PID, even on failure.
. "$root/scripts/lib/children.sh"
. "$root/scripts/lib/wait.sh"

# `start_ours NAME REDIS_URL PATH`: agent + Envoy with the filter on edge path PATH.
start_ours() {
  local name="$1" redis="$2" path="$3" api agent_pid
  px_port="$(free_port)"
  px_admin="$(free_port)"
  api="$(free_port)"
  mkdir -p "$run_dir/$name/envoy-config"
  "$agent" bootstrap --ip 127.0.0.1 --port "$px_port" --admin-addr "127.0.0.1:$px_admin" \
    --agent-api-addr "127.0.0.1:$api" --config-dir "$run_dir/$name/envoy-config" \
    --filter-wasm "$wasm" --edge-path "$path" --max-downstream-connections 100000 \
    >"$run_dir/$name/envoy.json"
  start "$name-agent" "${pin_proxy[@]}" "$agent" sync --redis-url "$redis" \
    --config-dir "$run_dir/$name/envoy-config" --state-file "$run_dir/$name/agent-state.json" \
    --api-addr "127.0.0.1:$api" --admin-addr "127.0.0.1:$px_admin"
  agent_pid=$spid
  wait_http "http://127.0.0.1:$api/ready"
  start "$name" "${pin_proxy[@]}" "$envoy" -c "$run_dir/$name/envoy.json" --log-level warn \
    --disable-hot-restart --concurrency 1
  px_watch="$spid,$agent_pid"
  px_envoy="$spid"
  wait_http "http://127.0.0.1:$px_admin/ready" LIVE
}

# --- Redis and three echo upstreams registered as Colyseus processes ---
redis_port="$(free_port)"
start redis "${pin_load[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
wait_port "$redis_port"
redis_url="redis://127.0.0.1:$redis_port"
pids=()
ports=()
for i in 1 2 3; do
  p="$(free_port)"
  start "upstream-$i" "${pin_load[@]}" "$echo_bin" --port "$p"
  wait_port "$p"
  redis-cli -p "$redis_port" SADD colyseus:nodes "benchpid$i/127.0.0.1:$p" >/dev/null
  pids+=("benchpid$i")
  ports+=("$p")
done

declare -A url watch mem_pid admin_of
urls_for() {
  local i out=()
  for i in "${!pids[@]}"; do out+=("ws://127.0.0.1:$1/${pids[$i]}/room$i?sessionId=s$i"); done
  local IFS=,
  echo "${out[*]}"
}
static_args=()
for i in "${!pids[@]}"; do static_args+=("${pids[$i]}=127.0.0.1:${ports[$i]}"); done
sp="$(free_port)"
sa="$(free_port)"
"$py" bench/envoy_static.py "$sp" "$sa" "${static_args[@]}" >"$run_dir/static.json"
start static "${pin_proxy[@]}" "$envoy" -c "$run_dir/static.json" --log-level warn \
  --disable-hot-restart --concurrency 1
url[static]="$(urls_for "$sp")"; watch[static]="$spid"; mem_pid[static]="$spid"; admin_of[static]="$sa"
wait_http "http://127.0.0.1:$sa/ready" LIVE
for path in http tcp; do
  start_ours "ours-$path" "$redis_url" "$path"
  url[ours-$path]="$(urls_for "$px_port")"; watch[ours-$path]="$px_watch"
  mem_pid[ours-$path]="$px_envoy"; admin_of[ours-$path]="$px_admin"
done
tcp_admin="$px_admin"
cp="$(free_port)"
PORT="$cp" IP=127.0.0.1 REDIS_URL="$redis_url" SOCKET_TIMEOUT=3600000 \
  start colyseus "${pin_proxy[@]}" node bench/colyseus-proxy/node_modules/@colyseus/proxy/bin/proxy
wait_port "$cp"
url[colyseus]="$(urls_for "$cp")"; watch[colyseus]="$spid"; mem_pid[colyseus]="$spid"
targets=(static ours-http ours-tcp colyseus)

field() { "$py" -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
for t in "${targets[@]}"; do
  # The filter's live set arrives by the agent's long-poll: wait until every path routes.
  for ((n = 0; n < 50; n++)); do
    ok="$("$loadgen" connect --url "${url[$t]}" --n 30 --concurrency 3 --settle-ms 0 | field '["ok"]')"
    [ "$ok" = 30 ] && break
    sleep 0.2
  done
  [ "$ok" = 30 ] || { say "smoke test through $t failed"; exit 1; }
done
hcm_upgrades() {
  curl -s "127.0.0.1:$tcp_admin/stats?filter=^http\.public\.downstream_cx_upgrades_total$" | awk '{print $2+0}'
}
sleep 2 # the filter's live set (the agent's long-poll), before anything is measured
upgrades_before="$(hcm_upgrades)"
say "all targets answer; load $(cut -d' ' -f1-3 /proc/loadavg)"

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# tcmalloc's bytes in use (Envoy's admin /memory): exact, unlike RSS, after earlier rounds.
allocated() { [ -n "${admin_of[$1]:-}" ] && curl -s "127.0.0.1:${admin_of[$1]}/memory" | field '["allocated"]' || echo 0; }
# Memory per held WebSocket is RSS while they are held minus the process's RSS before any
# was opened (an allocator keeps what earlier rounds freed, so a delta within a round
# would miss it).
declare -A base_rss
for t in "${targets[@]}"; do base_rss[$t]="$(rss_kb "${mem_pid[$t]}")"; done
hold() { # TARGET N: connect N and hold them; prints the connect JSON with the RSS delta of the
  # proxy process itself (Envoy, not the agent) per held connection
  local t="$1" n="$2" before after out alloc0 alloc1
  sleep 1
  before="${base_rss[$t]}"
  after="$before"
  alloc0="$(allocated "$t")"
  alloc1="$alloc0"
  "${pin_load[@]}" "$loadgen" connect --url "${url[$t]}" --n "$n" --concurrency 64 \
    --settle-ms 3000 --watch-pid "${watch[$t]}" --label "$t" >"$run_dir/hold.json" &
  local lg=$! i
  # Sample the RSS while all are held (the settle window), not after they close.
  sleep 1
  for ((i = 0; i < 600; i++)); do
    kill -0 "$lg" 2>/dev/null || break
    if [ ! -s "$run_dir/hold.json" ]; then
      after="$(rss_kb "${mem_pid[$t]}")"
      [ "$i" -lt 5 ] || [ "$((i % 5))" -ne 0 ] || alloc1="$(allocated "$t")"
    fi
    sleep 0.2
  done
  wait "$lg"
  out="$(cat "$run_dir/hold.json")"
  echo "$out" | "$py" -c "
import json,sys; d=json.load(sys.stdin); ok=max(d['ok'],1)
d['proxy_rss_kb_per_ws']=($after-$before)/ok
d['proxy_allocated_kb_per_ws']=($alloc1-$alloc0)/1024/ok if $alloc0 else None
print(json.dumps(d))"
}

for ((r = 1; r <= rounds; r++)); do
  for t in "${targets[@]}"; do
    lb="$(cut -d' ' -f1-3 /proc/loadavg)"
    c="$(hold "$t" "$EDGE_HOLD")"
    sleep 1
    e1="$("${pin_load[@]}" "$loadgen" echo --url "${url[$t]}" --connections "$EDGE_ECHO_C" \
      --inflight 1 --size 64 --warmup-s 1 --duration-s "$EDGE_ECHO_T" --watch-pid "${watch[$t]}" --label "$t")"
    e4="$("${pin_load[@]}" "$loadgen" echo --url "${url[$t]}" --connections "$EDGE_ECHO_C" \
      --inflight 4 --size 64 --warmup-s 1 --duration-s "$EDGE_ECHO_T" --watch-pid "${watch[$t]}" --label "$t")"
    printf '{"round":%d,"target":"%s","load":"%s","hold":%s,"echo1":%s,"echo4":%s}\n' \
      "$r" "$t" "$lb" "$c" "$e1" "$e4" >>"$raw"
    say "round $r $t done (load $lb)"
  done
done
for t in "${targets[@]}"; do
  c="$(hold "$t" "$EDGE_HOLD_BIG")"
  printf '{"round":0,"target":"%s","load":"%s","hold_big":%s}\n' "$t" "$(cut -d' ' -f1-3 /proc/loadavg)" "$c" >>"$raw"
  say "$EDGE_HOLD_BIG held through $t"
done
upgrades=$(($(hcm_upgrades) - upgrades_before))
say "ours-tcp: room WebSockets through the HCM while measuring: $upgrades (0: every one was raw)"
echo "{\"tcp_hcm_upgrades\":${upgrades:-0}}" >>"$raw"

if [ "$EDGE_FLOW_N" -gt 0 ]; then
  # Real Colyseus joins through each of our paths, on their own Redis and game servers.
  flow_redis="$(free_port)"
  start redis-flow "${pin_load[@]}" redis-server --port "$flow_redis" --bind 127.0.0.1 --save "" --appendonly no
  wait_port "$flow_redis"
  servers=()
  for i in 1 2 3; do
    gp="$(free_port)"
    PORT="$gp" HOST=127.0.0.1 REDIS_URL="redis://127.0.0.1:$flow_redis" MAX_CLIENTS=4 FILTER_BY=lane \
      start "game-$i" "${pin_load[@]}" node example/server.js
    servers+=("$spid")
    for ((n = 0; n < 300; n++)); do grep -q '^READY' "$run_dir/game-$i.log" 2>/dev/null && break; sleep 0.1; done
  done
  server_pids="$(IFS=,; echo "${servers[*]}")"
  declare -A flow_ep flow_watch
  for path in http tcp; do
    start_ours "flow-$path" "redis://127.0.0.1:$flow_redis" "$path"
    flow_ep[$path]="http://127.0.0.1:$px_port"; flow_watch[$path]="$px_watch"
  done
  for path in http tcp; do
    "${pin_load[@]}" node bench/flow.js --endpoint "${flow_ep[$path]}" --n 30 --concurrency 3 \
      --watch-pid "${flow_watch[$path]}" --server-pid "$server_pids" --label "smoke" >/dev/null
  done
  for ((r = 1; r <= rounds; r++)); do
    for path in http tcp; do
      f="$("${pin_load[@]}" node bench/flow.js --endpoint "${flow_ep[$path]}" --n "$EDGE_FLOW_N" \
        --concurrency 10 --watch-pid "${flow_watch[$path]}" --server-pid "$server_pids" --label "ours-$path")"
      printf '{"round":%d,"target":"ours-%s","load":"%s","flow":%s}\n' "$r" "$path" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$f" >>"$raw"
    done
  done
fi
stop_started
"$py" bench/edge_report.py "$raw" --note "$EDGE_NOTE" --rounds "$rounds" \
  --hold "$EDGE_HOLD" --hold-big "$EDGE_HOLD_BIG" --echo-c "$EDGE_ECHO_C" >"$root/bench/results/edge-path.md"
cat "$root/bench/results/edge-path.md"
