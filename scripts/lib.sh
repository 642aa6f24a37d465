# shellcheck shell=bash
# Process helpers shared by scripts/proxy.sh and scripts/stack.sh (sourced, not run).
# The sourcing script defines `say MESSAGE...` (its own log prefix).

# What a PID must be running for us to signal it (guards against a recycled PID).
expected_cmd() {
  case "$1" in
    redis) echo redis-server ;;
    game-*) echo example/server.js ;;
    agent) echo colyseus-envoy ;;
    envoy | envoy-retiring) echo envoy ;;
    proxy) echo "colyseus-envoy run" ;;
    *) echo "$1" ;;
  esac
}

# `alive NAME PID`: the process runs and, for a PID read back from a pids file, still runs
# what we started. A child just forked by the caller may not have exec'd yet: the caller
# sets verify_cmd=0 while it starts its own children.
verify_cmd=1
alive() {
  kill -0 "$2" 2>/dev/null || return 1
  [ "$verify_cmd" -eq 0 ] && return 0
  tr '\0' ' ' <"/proc/$2/cmdline" 2>/dev/null | grep -q -- "$(expected_cmd "$1")"
}

# `stop_all NAME PID ...`: SIGTERM all, wait up to 10 s, then SIGKILL what is left.
stop_all() {
  local -a names=() pids=()
  while [ $# -ge 2 ]; do
    if alive "$1" "$2"; then
      names+=("$1")
      pids+=("$2")
      kill -TERM "$2" 2>/dev/null || true
    fi
    shift 2
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  local i n left
  for ((n = 0; n < 100; n++)); do
    left=0
    for i in "${!pids[@]}"; do alive "${names[$i]}" "${pids[$i]}" && left=1; done
    [ "$left" -eq 0 ] && return 0
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if alive "${names[$i]}" "${pids[$i]}"; then
      say "${names[$i]} (pid ${pids[$i]}) did not stop in 10 s; SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
}
