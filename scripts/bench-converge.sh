#!/usr/bin/env bash
# Convergence with real Colyseus (issue 16): registration to the first routed room connection
# while real Colyseus 0.16 game servers (example/server.js) are started one by one, through
# colyseus-envoy (agent + Envoy with the filter, as scripts/proxy.sh runs them) and
# @colyseus/proxy side by side, in the same run, for each room-listing setup:
#   mongoose   MongooseDriver on the secantusdb MongoDB wire server; agent --mongo-uri
#   redis      RedisDriver; agent --redis-rooms
#   none       RedisDriver servers, agent without a room source
#   xds        RedisDriver; the xDS sink (issue 15): two agents serving `sync --xds-listen`
#              and two Envoys bootstrapped `--config-source xds` with both agents, each on its
#              own loopback address, beside the CDS file sink (instead of @colyseus/proxy) as
#              the baseline; the room connection is probed through each xDS Envoy
#   failover   not a convergence setup: the xDS failover benchmark, Envoys moving between
#              agents killed with SIGKILL (tests/e2e/tests/failover_xds.rs, run with cargo)
# Each setup gets its own Redis, BENCH_CONV_SERVERS running game servers, the proxies, then
# `loadgen converge-colyseus` (BENCH_CONV_TRIALS trials). Prints p50 / p99 / max per proxy
# and writes the raw results to .run/bench-converge/results.jsonl.
#
# Usage: scripts/bench-converge.sh [mongoose|redis|none|xds|failover]...   (default: the
# first three)
# Settings: BENCH_CONV_TRIALS (20), BENCH_CONV_SERVERS (2), BENCH_ENVOY_CONCURRENCY (2).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
setups=("$@")
[ ${#setups[@]} -gt 0 ] || setups=(mongoose redis none)
: "${BENCH_CONV_TRIALS:=20}" "${BENCH_CONV_SERVERS:=2}" "${BENCH_ENVOY_CONCURRENCY:=2}"

say() { echo "bench-converge: $*" >&2; }
run_dir="$root/.run/bench-converge"
rm -rf "$run_dir"
mkdir -p "$run_dir"
results="$run_dir/results.jsonl"
: >"$results"

. "$root/scripts/lib/bins.sh"
for f in "$agent" "$wasm" "$loadgen" "$envoy"; do
  [ -e "$f" ] || { say "missing $f: build with cargo build --release -p colyseus-envoy-agent -p colyseus-envoy-bench and scripts/build-filter.sh"; exit 1; }
done
if [ ! -f bench/colyseus-proxy/node_modules/@colyseus/proxy/proxy.js ]; then
  say "installing @colyseus/proxy (npm ci in bench/colyseus-proxy)"
  (cd bench/colyseus-proxy && npm ci --no-audit --no-fund >/dev/null)
fi

# start, stop_started: everything started is stopped by PID, newest first, even on failure.
. "$root/scripts/lib/children.sh"
# free_port, wait_http, wait_port
. "$root/scripts/lib/wait.sh"
# start_xds_fleet
. "$root/scripts/lib/xds-fleet.sh"

for setup in "${setups[@]}"; do
  if [ "$setup" = failover ]; then
    # Its own harness (the e2e helpers for agents, Envoys, servers and players).
    say "failover: load before: $(uptime)"
    cargo test -p e2e --features e2e --release --test failover_xds -- --ignored --nocapture \
      --test-threads=1 | tee "$run_dir/failover.log"
    say "failover: load after: $(uptime)"
    continue
  fi
  dir="$run_dir/$setup"
  mkdir -p "$dir/envoy-config"
  redis_port="$(free_port)"
  start "$setup-redis" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
  # Stopped after the game servers, which unregister from it on their way out.
  unset 'started[-1]'
  started_last+=("$spid")
  wait_port "$redis_port"
  redis_url="redis://127.0.0.1:$redis_port"
  game_env=(DRIVER=redis)
  agent_rooms=()
  case "$setup" in
    mongoose)
      mongo_port="$(free_port)"
      start "$setup-secantusd" "$root/.venv/bin/secantusd-py" --host 127.0.0.1 --port "$mongo_port" \
        --storage-path :memory: --log-level WARNING
      wait_port "$mongo_port"
      game_env=(DRIVER=mongoose "MONGO_URI=mongodb://127.0.0.1:$mongo_port/colyseus")
      agent_rooms=(--mongo-uri "mongodb://127.0.0.1:$mongo_port/colyseus")
      ;;
    redis | xds) agent_rooms=(--redis-rooms) ;;
    none) ;;
    *) say "unknown setup $setup (mongoose, redis, none, xds or failover)"; exit 64 ;;
  esac
  for ((i = 1; i <= BENCH_CONV_SERVERS; i++)); do
    p="$(free_port)"
    start "$setup-game-$i" env "${game_env[@]}" PORT="$p" HOST=127.0.0.1 SELF_HOSTNAME=127.0.0.1 \
      REDIS_URL="$redis_url" node example/server.js
    wait_port "$p"
  done

  # colyseus-envoy, as scripts/proxy.sh runs it.
  ours_port="$(free_port)" admin_port="$(free_port)" api_port="$(free_port)"
  "$agent" bootstrap --ip 127.0.0.1 --port "$ours_port" --admin-addr "127.0.0.1:$admin_port" \
    --agent-api-addr "127.0.0.1:$api_port" --config-dir "$dir/envoy-config" \
    --filter-wasm "$wasm" >"$dir/envoy.json"
  start "$setup-agent" "$agent" sync --redis-url "$redis_url" --config-dir "$dir/envoy-config" \
    --state-file "$dir/agent-state.json" --api-addr "127.0.0.1:$api_port" \
    --admin-addr "127.0.0.1:$admin_port" "${agent_rooms[@]}"
  wait_http "http://127.0.0.1:$api_port/ready"
  start "$setup-envoy" "$envoy" -c "$dir/envoy.json" --log-level warn --disable-hot-restart \
    --concurrency "$BENCH_ENVOY_CONCURRENCY"
  wait_http "http://127.0.0.1:$admin_port/ready" LIVE

  proxies=(--proxy "ours=127.0.0.1:$ours_port")
  if [ "$setup" = xds ]; then
    # Two agents serving xDS and two Envoys streaming from them (xds-fleet.sh).
    start_xds_fleet "$dir" "$redis_url" "${agent_rooms[@]}"
    proxies=(--proxy "file=127.0.0.1:$ours_port" "${xds_proxies[@]}")
  else
    # @colyseus/proxy, as scripts/bench.sh runs it.
    colyseus_port="$(free_port)"
    PORT="$colyseus_port" IP=127.0.0.1 REDIS_URL="$redis_url" SOCKET_TIMEOUT=3600000 \
      start "$setup-colyseus-proxy" node bench/colyseus-proxy/node_modules/@colyseus/proxy/bin/proxy
    wait_port "$colyseus_port"
    proxies+=(--proxy "colyseus-proxy=127.0.0.1:$colyseus_port")
  fi
  sleep 2 # the proxies settled on the running servers

  say "$setup: $BENCH_CONV_TRIALS registrations of real Colyseus servers (load $(cut -d' ' -f1-3 /proc/loadavg))"
  loadgen_env=()
  for kv in "${game_env[@]}"; do loadgen_env+=(--env "$kv"); done
  "$loadgen" converge-colyseus --label "$setup" --redis "127.0.0.1:$redis_port" \
    "${proxies[@]}" \
    --server "$root/example/server.js" "${loadgen_env[@]}" --log "$run_dir/$setup-trials.log" \
    --trials "$BENCH_CONV_TRIALS" >>"$results"
  curl -fsS "http://127.0.0.1:$api_port/metrics" | grep '^colyseus_envoy_warmup_duration' \
    >"$dir/warmup-metrics.txt" || true
  stop_started
done

[ -s "$results" ] || exit 0 # only the failover benchmark ran
# The table on stdout, and as a BENCHMARKS.md section (bench/report.py appends it).
# Only a run of the three room-listing setups replaces the section BENCHMARKS.md keeps; a
# partial run (say `xds` alone) writes its table beside its raw results.
md_out="$run_dir/converge-colyseus.md"
ran=" ${setups[*]} "
if [[ "$ran" == *" mongoose "* && "$ran" == *" redis "* && "$ran" == *" none "* ]]; then
  md_out="$root/bench/results/converge-colyseus.md"
fi
say "markdown table: $md_out"
"$py" - "$results" "$md_out" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, sys, datetime
names = {"ours": "colyseus-envoy", "colyseus-proxy": "@colyseus/proxy 0.12.11",
         "file": "colyseus-envoy, CDS file sink", "xds-edge-1": "colyseus-envoy, xDS, Envoy edge-1",
         "xds-edge-2": "colyseus-envoy, xDS, Envoy edge-2"}
setups = {"mongoose": "MongooseDriver (secantusdb), agent --mongo-uri",
          "redis": "RedisDriver, agent --redis-rooms", "none": "RedisDriver, agent without a room source",
          "xds": "RedisDriver, --redis-rooms; 2 xDS agents, 2 Envoys"}
print(f"{'setup':10} {'proxy':15} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  answers before routed")
md = ["## Convergence with real Colyseus servers (scripts/bench-converge.sh)\n",
      "Registration of a real Colyseus 0.16 server being started (its own `add` announcement) to the "
      "first room connection `/{pid}/{fresh roomId}` answered by that process, probed about every "
      "millisecond through every proxy at once. "
      f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, load average at the end {sys.argv[3]}.\n",
      "| setup | proxy | trials | p50 / p99 / max | answers before the routed one | failures |",
      "| --- | --- | ---: | ---: | --- | ---: |"]
f = lambda v: f"{v:.1f}" if v is not None else "-"
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "error" in r:
        print(r["label"], "ERROR", r["error"]); md.append(f"| {r['label']} | ERROR {r['error']} | | | | |"); continue
    for name, p in r["proxies"].items():
        s = p["routable_ms"]
        print(f"{r['label']:10} {name:15} {f(s['p50']):>8} {f(s['p99']):>8} {f(s['max']):>8}  {p['answers_before_routed']}")
        before = ", ".join(f"{n}x {k}" for k, n in p["answers_before_routed"].items()) or "none"
        md.append(f"| {setups.get(r['label'], r['label'])} | {names.get(name, name)} | {len(p['samples_ms'])} | "
                  f"{f(s['p50'])} / {f(s['p99'])} / {f(s['max'])} ms | {before} | {sum(name in x for x in r['failures'])} |")
    if r["failures"]:
        print("  failures:", r["failures"])
md.append("\n`404` before the routed answer (ours): probes sent before the agent had read the "
          "registration (the room is unknown and its process not live yet); `101` (@colyseus/proxy): "
          "another process answered, as it sends an unknown processId to any process.\n")
open(sys.argv[2], "w").write("\n".join(md) + "\n")
EOF
