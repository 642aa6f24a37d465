#!/usr/bin/env bash
# usage: echo_ab.sh ROUNDS  -> per round: cpu us/msg static, ours (envoy only), ours agent
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
R=${1:-5}
for r in $(seq $R); do
  for t in static ours ${WASM2:+ours2}; do
    case $t in static) p=$SP; w=$STATIC_PID;; ours) p=$OP; w=$OURS_PID;; ours2) p=$O2P; w=$OURS2_PID;; esac
    la=$(cut -d' ' -f1 /proc/loadavg)
    if [ -n "${PRECONNECT:-}" ]; then taskset -c 1 $T/release/loadgen connect --url "$(urls $p)" --n $PRECONNECT --concurrency 50 >/dev/null; sleep 1; fi
    out=$(taskset -c 1 $T/release/loadgen echo --url "$(urls $p)" --connections ${EC:-100} --inflight 4 --size 64 --warmup-s 1 --duration-s ${ED:-4} --watch-pid $w)
    echo "$out" | $PY -c "
import json,sys; d=json.load(sys.stdin); u=d['usage']
print('$r $t load=$la', 'msg/s=%.0f'%d.get('msg_per_s',0), 'cpu_us_per_msg=%.2f'%d.get('watched_cpu_us_per_msg',-1), 'busy=%.2f'%u['loadgen_busy'], 'errors=%s'%d.get('errors'))"
  done
done
