#!/usr/bin/env bash
# The proxy alone: Envoy with the colyseus-envoy filter, plus the agent that follows
# Colyseus's Redis presence. Needs a running Redis and Colyseus game servers that register
# in it (SELF_HOSTNAME set). Configured like @colyseus/proxy, by environment:
#
#   REDIS_URL       Redis of the game servers' RedisPresence  (default redis://127.0.0.1:6379)
#   PORT            public listener port                      (default 80)
#   IP              public listener address                   (default 0.0.0.0)
#   ADMIN_ADDR      Envoy admin address, keep it on loopback  (default 127.0.0.1:9901)
#   AGENT_API_ADDR  agent API: /live /ready /metrics /processes (default 127.0.0.1:9902)
#   RUN_DIR         bootstrap, watched config dir, state, logs, pids (default .run/proxy)
#   ENVOY_LOG_LEVEL Envoy's --log-level                       (default warn)
#   ENVOY_CONCURRENCY Envoy worker threads                    (default: one per core)
#   ENVOY_HOT_RESTART 1: Envoy can be hot-restarted (its own base id, found free at start);
#                   0: --disable-hot-restart                 (default 1)
#   ENVOY_DRAIN_TIME  after a hot restart, seconds the old Envoy drains (default 600)
#   ENVOY_PARENT_SHUTDOWN_TIME  ...and seconds until it exits, closing the connections it
#                   still holds, WebSockets included         (default 900)
#   Any other agent setting by its own variable (colyseus-envoy-agent sync --help).
#
# Usage:
#   scripts/proxy.sh               run in the foreground; Ctrl-C stops both processes
#   scripts/proxy.sh --background  start detached; PIDs in $RUN_DIR/pids
#   scripts/proxy.sh stop          stop what --background started
#   scripts/proxy.sh status        show whether it runs
#   scripts/proxy.sh hot-restart [--force]   a new Envoy (new binary, filter or
#                   $RUN_DIR/envoy.json) takes the listeners over; the old one keeps its
#                   open connections until they close or ENVOY_PARENT_SHUTDOWN_TIME
#                   passes. Same RUN_DIR; the Envoy flags are those of the start. Refused
#                   while the Envoy of the previous hot restart still drains, unless --force
#                   (Envoy then terminates that one).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
PORT="${PORT:-80}"
IP="${IP:-0.0.0.0}"
ADMIN_ADDR="${ADMIN_ADDR:-127.0.0.1:9901}"
AGENT_API_ADDR="${AGENT_API_ADDR:-127.0.0.1:9902}"
RUN_DIR="${RUN_DIR:-.run/proxy}"
ENVOY_LOG_LEVEL="${ENVOY_LOG_LEVEL:-warn}"
ENVOY_HOT_RESTART="${ENVOY_HOT_RESTART:-1}"
ENVOY_DRAIN_TIME="${ENVOY_DRAIN_TIME:-600}"
ENVOY_PARENT_SHUTDOWN_TIME="${ENVOY_PARENT_SHUTDOWN_TIME:-900}"
mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"

target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
agent="$target_dir/release/colyseus-envoy-agent"
wasm="$target_dir/wasm32-wasip1/release/colyseus_envoy_filter.wasm"
envoy="$root/.venv/bin/envoy"
pids_file="$RUN_DIR/pids"
# Hot restart: Envoy's command line without its epoch flags (one argument per line), the
# admin address, the base id Envoy chose, the current epoch. Written at start.
envoy_args_file="$RUN_DIR/envoy.args"
envoy_admin_file="$RUN_DIR/envoy.admin"
base_id_file="$RUN_DIR/envoy-base-id"
epoch_file="$RUN_DIR/envoy-epoch"

say() { echo "proxy: $*" >&2; }
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

stop_from_file() {
  if [ ! -f "$pids_file" ]; then
    say "not running (no $pids_file)"
    return 0
  fi
  # Envoy first, so no request reaches an agent-less config change; then the agent.
  local -a args=()
  local name pid
  while read -r name pid; do args+=("$name" "$pid"); done < <(tac "$pids_file")
  stop_all "${args[@]}"
  rm -f "$pids_file"
  say "stopped"
}

show_status() {
  local name pid up=0
  if [ -f "$pids_file" ]; then
    while read -r name pid; do
      if alive "$name" "$pid"; then
        echo "$name: running (pid $pid)"
        up=1
      else
        echo "$name: not running (pid $pid)"
      fi
    done <"$pids_file"
  else
    echo "not running (no $pids_file)"
  fi
  [ "$up" -eq 1 ]
}

http_ok() { curl -fsS -o /dev/null --max-time 1 "http://$1$2" 2>/dev/null; }

# The PID recorded for NAME in the pids file.
recorded_pid() {
  [ -f "$pids_file" ] || return 0
  awk -v n="$1" '$1 == n { print $2 }' "$pids_file" | tail -n 1
}

# `epoch_live ADMIN EPOCH`: the Envoy of that epoch answers LIVE on the admin port (which
# the new Envoy takes over from the old one).
epoch_live() {
  local stats
  stats="$(curl -fsS --max-time 1 "http://$1/stats?filter=^server.hot_restart_epoch\$" 2>/dev/null)" || return 1
  [ "$(tr -d ' \n' <<<"$stats")" = "server.hot_restart_epoch:$2" ] || return 1
  [ "$(curl -fsS --max-time 1 "http://$1/ready" 2>/dev/null)" = LIVE ]
}

# `spawn_envoy LOG ARGS...`: starts Envoy detached and sets $started_pid. An Envoy that
# can be hot-restarted asks the kernel for SIGTERM when its parent process exits
# (PR_SET_PDEATHSIG: it expects one restarter process to be the parent of every epoch). So
# it runs under a shell in a session of its own that only waits for it: the Envoy outlives
# this script, or the hot-restart command that started it, and that shell exits with it.
spawn_envoy() {
  local log="$1" pid_file="$RUN_DIR/.envoy-pid.tmp" n
  shift
  rm -f "$pid_file"
  # shellcheck disable=SC2016  # expanded by the inner shell
  setsid bash -c 'pid_file="$1"; shift; "$@" & echo "$!" >"$pid_file"; wait "$!"' \
    envoy-parent "$pid_file" "$@" </dev/null >>"$log" 2>&1 &
  for ((n = 0; n < 50; n++)); do
    if [ -s "$pid_file" ]; then
      started_pid="$(cat "$pid_file")"
      rm -f "$pid_file"
      return 0
    fi
    sleep 0.1
  done
  say "Envoy did not start; see $log"
  return 1
}

# Envoy's hot restart: the next epoch, same base id, from the command line recorded at
# start. The new Envoy initializes, takes the listening sockets and the admin port, and
# tells the old one to drain; the old one accepts nothing new, keeps its open connections
# (WebSockets included) until they close, and exits after the parent-shutdown time.
hot_restart() {
  local force=0
  case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    *) say "hot-restart: unknown argument: $1"; return 64 ;;
  esac
  local old_pid
  old_pid="$(recorded_pid envoy)"
  if [ -z "$old_pid" ] || ! alive envoy "$old_pid"; then
    say "Envoy is not running (no live envoy in $pids_file)"
    return 1
  fi
  if [ ! -f "$envoy_args_file" ] || [ ! -s "$base_id_file" ]; then
    say "this Envoy was started without hot restart (ENVOY_HOT_RESTART=0); restart it instead"
    return 1
  fi
  # Envoy hands over between two processes, one serving and one draining: a third epoch
  # makes Envoy terminate the draining one, cutting the connections it still holds.
  local name pid
  while read -r name pid; do
    if [ "$name" = envoy-retiring ] && alive "$name" "$pid" && [ "$force" -eq 0 ]; then
      say "the Envoy replaced by the last hot restart (pid $pid) still drains; a hot restart" \
        "now would make Envoy terminate it and cut its connections. Try again once it has" \
        "exited (at most ENVOY_PARENT_SHUTDOWN_TIME after that restart), or use --force."
      return 1
    fi
  done <"$pids_file"
  local -a args
  mapfile -t args <"$envoy_args_file"
  local admin base_id epoch next log="$RUN_DIR/envoy.log"
  admin="$(cat "$envoy_admin_file")"
  base_id="$(cat "$base_id_file")"
  epoch="$(cat "$epoch_file")"
  next=$((epoch + 1))
  # A config or binary the new Envoy would refuse is caught before anything changes.
  if ! "${args[0]}" --mode validate -c "$RUN_DIR/envoy.json" >"$RUN_DIR/envoy-validate.log" 2>&1; then
    say "envoy --mode validate refuses $RUN_DIR/envoy.json; nothing changed:"
    tail -n 20 "$RUN_DIR/envoy-validate.log" >&2
    return 1
  fi
  echo "==== hot restart to epoch $next ($(date -u +%FT%TZ))" >>"$log"
  local started=$SECONDS new_pid n
  spawn_envoy "$log" "${args[@]}" --base-id "$base_id" --restart-epoch "$next"
  new_pid=$started_pid
  verify_cmd=0
  for ((n = 0; ; n++)); do
    if ! alive envoy "$new_pid"; then
      say "the new Envoy (epoch $next) exited; the old one (pid $old_pid) still serves; see $log"
      tail -n 20 "$log" >&2
      return 1
    fi
    epoch_live "$admin" "$next" && break
    if [ "$n" -ge 300 ]; then
      say "the new Envoy (epoch $next, pid $new_pid) is not live after 30 s; see $log." \
        "Both are recorded in $pids_file: scripts/proxy.sh stop stops them."
      break
    fi
    sleep 0.1
  done
  verify_cmd=1
  # The replaced Envoy is recorded as retiring (so stop and status still see it) and the
  # new one as envoy; a retiring one that has exited is forgotten.
  {
    while read -r name pid; do
      case "$name" in
        envoy) echo "envoy-retiring $pid" ;;
        envoy-retiring) ;;
        *) echo "$name $pid" ;;
      esac
    done <"$pids_file"
    echo "envoy $new_pid"
  } >"$pids_file.tmp"
  mv "$pids_file.tmp" "$pids_file"
  echo "$next" >"$epoch_file"
  [ "$n" -lt 300 ] || return 1
  say "hot restart done in $((SECONDS - started)) s: epoch $next (pid $new_pid) serves;" \
    "the old Envoy (pid $old_pid) drains and exits within $(parent_shutdown_of "${args[@]}") s"
}

# The --parent-shutdown-time-s in an Envoy command line.
parent_shutdown_of() {
  while [ $# -gt 1 ]; do
    [ "$1" = --parent-shutdown-time-s ] && { echo "$2"; return; }
    shift
  done
  echo 900
}

public_urls() {
  local host="$IP"
  case "$host" in
    0.0.0.0 | "::" | "[::]") host=127.0.0.1 ;;
    *:*) host="[$host]" ;;
  esac
  echo "http://$host:$PORT ws://$host:$PORT"
}

background=0
case "${1:-}" in
  "") ;;
  --background | -d) background=1 ;;
  stop) stop_from_file; exit 0 ;;
  status) show_status; exit $? ;;
  hot-restart) hot_restart "${2:-}"; exit $? ;;
  -h | --help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) say "unknown argument: $1 (try --help)"; exit 64 ;;
esac

if [ -f "$pids_file" ] && show_status >/dev/null; then
  say "already running (see $pids_file); stop it with: scripts/proxy.sh stop"
  exit 1
fi
rm -f "$pids_file"
verify_cmd=0

if [ ! -x "$agent" ] || [ ! -f "$wasm" ] || [ ! -x "$envoy" ]; then
  say "not built yet; running scripts/setup.sh"
  "$root/scripts/setup.sh"
fi

mkdir -p "$RUN_DIR/envoy-config"
"$agent" bootstrap --ip "$IP" --port "$PORT" --admin-addr "$ADMIN_ADDR" \
  --agent-api-addr "$AGENT_API_ADDR" \
  --config-dir "$RUN_DIR/envoy-config" --filter-wasm "$wasm" >"$RUN_DIR/envoy.json.tmp"
mv "$RUN_DIR/envoy.json.tmp" "$RUN_DIR/envoy.json"
agent_cmd=("$agent" sync --redis-url "$REDIS_URL" --config-dir "$RUN_DIR/envoy-config"
  --state-file "$RUN_DIR/agent-state.json" --api-addr "$AGENT_API_ADDR" --envoy-admin "$ADMIN_ADDR")
envoy_cmd=("$envoy" -c "$RUN_DIR/envoy.json" --log-level "$ENVOY_LOG_LEVEL")
if [ -n "${ENVOY_CONCURRENCY:-}" ]; then envoy_cmd+=(--concurrency "$ENVOY_CONCURRENCY"); fi
rm -f "$envoy_args_file" "$envoy_admin_file" "$base_id_file" "$epoch_file"
if [ "$ENVOY_HOT_RESTART" = 1 ]; then
  # Drain and parent-shutdown times matter when this Envoy is replaced: they are given to
  # every epoch alike.
  envoy_cmd+=(--drain-time-s "$ENVOY_DRAIN_TIME" --parent-shutdown-time-s "$ENVOY_PARENT_SHUTDOWN_TIME")
  printf '%s\n' "${envoy_cmd[@]}" >"$envoy_args_file"
  echo "$ADMIN_ADDR" >"$envoy_admin_file"
  echo 0 >"$epoch_file"
  # A base id of its own, which Envoy picks free and writes down: several proxies can share
  # a machine and each be hot-restarted. Epoch 0 is the only one that may use it.
  envoy_cmd+=(--use-dynamic-base-id --base-id-path "$base_id_file" --restart-epoch 0)
else
  # No shared memory or domain sockets at all.
  envoy_cmd+=(--disable-hot-restart)
fi

# `start NAME CMD...`: sets $started_pid. In the background the child gets its own session
# (it outlives this script and the terminal; Envoy through spawn_envoy) and logs to
# $RUN_DIR/NAME.log; in the foreground its output also goes to stderr, each line prefixed
# with [NAME].
start() {
  local name="$1"
  shift
  local log="$RUN_DIR/$name.log"
  : >"$log"
  if [ "$background" -eq 1 ] && [ "$name" = envoy ]; then
    spawn_envoy "$log" "$@"
  elif [ "$background" -eq 1 ]; then
    setsid "$@" </dev/null >>"$log" 2>&1 &
    started_pid=$!
  else
    "$@" </dev/null > >(tee -a "$log" | sed -u "s/^/[$name] /" >&2) 2>&1 &
    started_pid=$!
  fi
  echo "$name $started_pid" >>"$pids_file"
}

agent_pid=""
envoy_pid=""
# Stops everything in the pids file: what this script started, and in the foreground the
# Envoys a hot restart started since.
# shellcheck disable=SC2317  # called through the traps
cleanup() {
  trap - INT TERM EXIT
  local -a args=()
  local name pid
  if [ -f "$pids_file" ]; then
    while read -r name pid; do args+=("$name" "$pid"); done < <(tac "$pids_file")
  fi
  [ ${#args[@]} -gt 0 ] && stop_all "${args[@]}"
  rm -f "$pids_file"
}
# Until everything is up (and for the whole run in the foreground), a failure or a
# signal stops what was started.
trap cleanup EXIT
trap 'say "stopping"; exit 130' INT TERM

start agent "${agent_cmd[@]}"
agent_pid=$started_pid
ready=0
for ((n = 0; n < 100; n++)); do
  alive agent "$agent_pid" || { say "the agent exited; see $RUN_DIR/agent.log"; tail -n 20 "$RUN_DIR/agent.log" >&2; exit 1; }
  if http_ok "$AGENT_API_ADDR" /ready; then ready=1; break; fi
  sleep 0.1
done
if [ "$ready" -eq 1 ]; then
  say "agent ready (first sync from $REDIS_URL done)"
else
  say "WARNING: the agent is not ready after 10 s (is Redis at $REDIS_URL reachable?)."
  say "WARNING: starting Envoy with the config that exists; the agent keeps retrying."
fi

start envoy "${envoy_cmd[@]}"
envoy_pid=$started_pid
ready=0
for ((n = 0; n < 150; n++)); do
  alive envoy "$envoy_pid" || { say "Envoy exited; see $RUN_DIR/envoy.log"; tail -n 20 "$RUN_DIR/envoy.log" >&2; exit 1; }
  if http_ok "$ADMIN_ADDR" /ready; then ready=1; break; fi
  sleep 0.1
done
[ "$ready" -eq 1 ] || { say "Envoy not ready after 15 s; see $RUN_DIR/envoy.log"; exit 1; }

read -r http_url ws_url < <(public_urls)
say "listening on $IP:$PORT: $http_url  $ws_url"
say "agent API http://$AGENT_API_ADDR/processes   Envoy admin http://$ADMIN_ADDR (loopback only)"

if [ "$background" -eq 1 ]; then
  trap - INT TERM EXIT
  say "running in the background (pids in $pids_file, logs in $RUN_DIR/*.log)"
  say "stop with: RUN_DIR=$RUN_DIR scripts/proxy.sh stop"
  exit 0
fi

say "running; Ctrl-C stops it (logs also in $RUN_DIR/*.log)"
# After a hot restart the Envoy to watch is the one the pids file names now.
while alive agent "$agent_pid" && alive envoy "$envoy_pid"; do
  sleep 1 &
  wait $! || true
  envoy_pid="$(recorded_pid envoy)"
  [ -n "$envoy_pid" ] || break
done
if alive agent "$agent_pid"; then say "Envoy exited; stopping the agent"; else say "the agent exited; stopping Envoy"; fi
exit 1
