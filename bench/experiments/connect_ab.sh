#!/usr/bin/env bash
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
R=${1:-5}
for r in $(seq $R); do
  for t in static ours ${WASM2:+ours2}; do
    case $t in static) p=$SP; w=$STATIC_PID;; ours) p=$OP; w=$OURS_PID;; ours2) p=$O2P; w=$OURS2_PID;; esac
    la=$(cut -d' ' -f1 /proc/loadavg)
    out=$(taskset -c 1 $T/release/loadgen connect --url "$(urls $p)" --n ${CN:-1000} --concurrency 50 --settle-ms 300 --watch-pid $w)
    echo "$out" | $PY -c "
import json,sys; d=json.load(sys.stdin)
print('$r $t load=$la', 'conn/s=%.0f'%d['conn_per_s'], 'cpu_us_per_conn=%.1f'%d['watched_cpu_us_per_conn'], 'errors=%s'%d['errors'])"
    sleep 1.5
  done
done
