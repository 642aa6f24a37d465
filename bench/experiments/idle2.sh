source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
st silent taskset -c 1 $PY "$root"/bench/experiments/silent.py; waitport 24150
for m in "$@"; do $PY "$root"/bench/experiments/idle.py $SP $SA ${NCONN:-2000} $m $STATIC_PID; curl -s 127.0.0.1:$SA/stats | grep -E "upstream_cx_active|downstream_rq_active" | grep -v ": 0" | head -5; sleep 1; done
