source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
for m in "$@"; do $PY "$root"/bench/experiments/idle.py $SP $SA 2000 $m $STATIC_PID; sleep 1; done
