# Process bookkeeping for the benchmark scripts: everything started is stopped by PID, even
# on failure. Sourced after `say` and `run_dir` are defined; installs the EXIT/INT/TERM traps.
#
#   start NAME CMD...   runs CMD in the background, logs to $run_dir/NAME.log, sets $spid
#   stop_started        stops what was started, newest first, then `started_last`
started=()      # stopped first, newest first
started_last=() # stopped once the others are gone (e.g. Redis: game servers unregister on their way out)

stop_pids() { # PID...: TERM, up to 5 s to exit, then KILL
  local pid n left
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((n = 0; n < 50; n++)); do
    left=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ "$left" -eq 0 ] && return 0
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}

stop_started() {
  trap - EXIT INT TERM
  local i newest_first=()
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do newest_first+=("${started[$i]}"); done
  [ ${#newest_first[@]} -eq 0 ] || stop_pids "${newest_first[@]}"
  [ ${#started_last[@]} -eq 0 ] || stop_pids "${started_last[@]}"
  started=()
  started_last=()
}
trap stop_started EXIT
trap 'say "interrupted"; exit 130' INT TERM

start() {
  local name="$1"
  shift
  "$@" </dev/null >"$run_dir/$name.log" 2>&1 &
  spid=$!
  started+=("$spid")
}
