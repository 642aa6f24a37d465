#!/usr/bin/env bash
# usage: mem.sh N TARGETS...   (targets: static ours ours2)  prints per-connection memory
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
N=$1; shift
memstats() { curl -s "127.0.0.1:$1/memory"; }
for t in "$@"; do
  case $t in static) p=$SP; a=$SA; w=$STATIC_PID;; ours) p=$OP; a=$OA; w=$OURS_PID;; ours2) p=$O2P; a=$O2A; w=$OURS2_PID;; esac
  sleep 1
  curl -s "127.0.0.1:$a/stats" | wc -l > $RUN/nstats-$t; m0=$(memstats $a); r0=$(grep VmRSS /proc/$w/status | awk '{print $2}')
  taskset -c 1 $T/release/loadgen connect --url "$(urls $p)" --n $N --concurrency 50 --settle-ms 5000 > $RUN/conn-$t.json &
  lg=$!
  for i in $(seq 200); do
    act=$(curl -s "127.0.0.1:$a/stats?filter=^listener\.127\.0\.0\.1_$p\.downstream_cx_active$" | awk '{print $2}')
    [ "${act:-0}" -ge $N ] && break; sleep 0.1
  done
  sleep 2
  m1=$(memstats $a); r1=$(grep VmRSS /proc/$w/status | awk '{print $2}')
  nstats=$(curl -s "127.0.0.1:$a/stats" | wc -l); echo "   stats lines with $N open: $nstats (idle: $(cat $RUN/nstats-$t 2>/dev/null))" >&2
  ucx=$(curl -s "127.0.0.1:$a/stats?filter=upstream_cx_active" | grep -v "agent" | awk '{s+=$2} END {print s}')
  wait $lg
  ok=$(python3 -c "import json; print(json.load(open('$RUN/conn-$t.json'))['ok'])")
  python3 - "$t" "$N" "$ok" "$act" "$ucx" "$r0" "$r1" "$m0" "$m1" <<'PY'
import json,sys
t,N,ok,act,ucx,r0,r1,m0,m1=sys.argv[1:]
N=int(ok); a=json.loads(m0); b=json.loads(m1)
d=lambda k:(int(b[k])-int(a[k]))/N/1024
print(f"{t}: ok={ok} down_active={act} up_active={ucx} RSS/conn={(int(r1)-int(r0))/N:.1f}KB allocated/conn={d('allocated'):.2f}KB heap/conn={d('heap_size'):.2f}KB physical/conn={d('total_physical_bytes') if 'total_physical_bytes' in b else float('nan'):.2f}KB thread_cache/conn={d('total_thread_cache'):.2f} pageheap_free/conn={d('pageheap_free'):.2f}")
print("   before:", {k:a[k] for k in a}, "\n   after: ", {k:b[k] for k in b})
PY
done
