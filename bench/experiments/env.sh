# Sourced: starts redis, 3 upstreams, static envoy, ours (agent + envoy). Ports 24000-24999.
# Variables: WASM (filter to load), OURS_PATCH (python expr applied to the bootstrap dict b), STATIC_PATCH
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
T=$root/target
E=$root/.venv/bin/envoy
PY=$root/.venv/bin/python
RUN=$root/.run/experiments
rm -rf $RUN; mkdir -p $RUN/ours/envoy-config
started=()
cleanup() { for p in "${started[@]}"; do kill $p 2>/dev/null || true; done; sleep 0.5; for p in "${started[@]}"; do kill -9 $p 2>/dev/null || true; done; }
trap cleanup EXIT
st() { local name=$1; shift; "$@" </dev/null >$RUN/$name.log 2>&1 & spid=$!; started+=($spid); }
waitport() { local i; for i in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 timeout"; return 1; }
ulimit -n 65536 2>/dev/null || ulimit -n $(ulimit -Hn)
RP=24100
st redis taskset -c 1 redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no
waitport $RP
UPS=(24101 24102 24103)
for i in 0 1 2; do
  st up$i taskset -c 1 $T/release/bench-echo --port ${UPS[$i]}; waitport ${UPS[$i]}
  for k in $(seq 20); do
    redis-cli -p $RP SADD colyseus:nodes "benchpid$((i+1))/127.0.0.1:${UPS[$i]}" >/dev/null 2>&1 || true
    [ "$(redis-cli -p $RP SISMEMBER colyseus:nodes "benchpid$((i+1))/127.0.0.1:${UPS[$i]}" 2>/dev/null)" = 1 ] && break; sleep 0.1
  done
done
SP=24110; SA=24111
$PY $root/bench/envoy_static.py $SP $SA benchpid1=127.0.0.1:24101 benchpid2=127.0.0.1:24102 benchpid3=127.0.0.1:24103 > $RUN/static.json
if [ -n "${STATIC_PATCH:-}" ]; then $PY -c "import json,sys; b=json.load(open('$RUN/static.json')); exec(sys.argv[1]); json.dump(b,open('$RUN/static.json','w'))" "$STATIC_PATCH"; fi
st envoy-static taskset -c 0 $E -c $RUN/static.json --log-level warn --disable-hot-restart --concurrency 1 ${STATIC_ENVOY_ARGS:-}
STATIC_PID=$spid
OP=24120; OA=24121; API=24122
$T/release/colyseus-envoy bootstrap --ip 127.0.0.1 --port $OP --admin-addr 127.0.0.1:$OA --config-dir $RUN/ours/envoy-config --filter-wasm ${WASM:-$T/wasm32-wasip1/release/colyseus_envoy_filter.wasm} > $RUN/ours.json
if [ -n "${OURS_PATCH:-}" ]; then $PY -c "import json,sys; b=json.load(open('$RUN/ours.json')); exec(sys.argv[1]); json.dump(b,open('$RUN/ours.json','w'))" "$OURS_PATCH"; fi
RUST_LOG=${AGENT_LOG:-info} st agent taskset -c 0 $T/release/colyseus-envoy sync --redis-url redis://127.0.0.1:$RP --config-dir $RUN/ours/envoy-config --state-file $RUN/ours/state.json --api-addr 127.0.0.1:$API
AGENT_PID=$spid
for i in $(seq 100); do curl -fs 127.0.0.1:$API/ready >/dev/null && break; sleep 0.1; done
st envoy-ours taskset -c 0 $E -c $RUN/ours.json --log-level warn --disable-hot-restart --concurrency 1 ${OURS_ENVOY_ARGS:-}
OURS_PID=$spid
O2P=24130; O2A=24131; OURS2_PID=
if [ -n "${WASM2:-}" ]; then
  $T/release/colyseus-envoy bootstrap --ip 127.0.0.1 --port $O2P --admin-addr 127.0.0.1:$O2A --config-dir $RUN/ours/envoy-config --filter-wasm $WASM2 > $RUN/ours2.json
  if [ -n "${OURS2_PATCH:-}" ]; then $PY -c "import json,sys; b=json.load(open('$RUN/ours2.json')); exec(sys.argv[1]); json.dump(b,open('$RUN/ours2.json','w'))" "$OURS2_PATCH"; fi
  st envoy-ours2 taskset -c 0 $E -c $RUN/ours2.json --log-level warn --disable-hot-restart --concurrency 1 --base-id 7
  OURS2_PID=$spid
fi
for a in $SA $OA ${WASM2:+$O2A}; do for i in $(seq 300); do curl -fs 127.0.0.1:$a/ready 2>/dev/null | grep -q LIVE && break; sleep 0.1; done; done
urls() { echo "ws://127.0.0.1:$1/benchpid1/room0?sessionId=s0,ws://127.0.0.1:$1/benchpid2/room1?sessionId=s1,ws://127.0.0.1:$1/benchpid3/room2?sessionId=s2"; }
for p in $SP $OP ${WASM2:+$O2P}; do
  for i in $(seq 50); do
    out=$($T/release/loadgen connect --url "$(urls $p)" --n 30 --concurrency 3 --settle-ms 0)
    echo "$out" | grep -q '"ok":30' && break; sleep 0.2
  done
  echo "$out" | grep -q '"ok":30' || { echo "smoke $p failed: $out"; exit 1; }
done
echo "env up: static pid $STATIC_PID ours pid $OURS_PID agent $AGENT_PID" >&2
