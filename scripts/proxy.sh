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
#   Any other agent setting by its own variable (colyseus-envoy-agent sync --help).
#
# Usage:
#   scripts/proxy.sh               run in the foreground; Ctrl-C stops both processes
#   scripts/proxy.sh --background  start detached; PIDs in $RUN_DIR/pids
#   scripts/proxy.sh stop          stop what --background started
#   scripts/proxy.sh status        show whether it runs
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
mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"

target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
agent="$target_dir/release/colyseus-envoy-agent"
wasm="$target_dir/wasm32-wasip1/release/colyseus_envoy_filter.wasm"
envoy="$root/.venv/bin/envoy"
pids_file="$RUN_DIR/pids"

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
  -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
  --state-file "$RUN_DIR/agent-state.json" --api-addr "$AGENT_API_ADDR")
# No hot restart: no shared memory, so several Envoys can run on one machine.
envoy_cmd=("$envoy" -c "$RUN_DIR/envoy.json" --log-level "$ENVOY_LOG_LEVEL" --disable-hot-restart)
if [ -n "${ENVOY_CONCURRENCY:-}" ]; then envoy_cmd+=(--concurrency "$ENVOY_CONCURRENCY"); fi

# `start NAME CMD...`: sets $started_pid. In the background the child gets its own session
# (it outlives this script and the terminal) and logs to $RUN_DIR/NAME.log; in the
# foreground its output also goes to stderr, each line prefixed with [NAME].
start() {
  local name="$1"
  shift
  local log="$RUN_DIR/$name.log"
  : >"$log"
  if [ "$background" -eq 1 ]; then
    setsid "$@" </dev/null >>"$log" 2>&1 &
  else
    "$@" </dev/null > >(tee -a "$log" | sed -u "s/^/[$name] /" >&2) 2>&1 &
  fi
  started_pid=$!
  echo "$name $started_pid" >>"$pids_file"
}

agent_pid=""
envoy_pid=""
# shellcheck disable=SC2317  # called through the traps
cleanup() {
  trap - INT TERM EXIT
  local -a args=()
  [ -n "$envoy_pid" ] && args+=(envoy "$envoy_pid")
  [ -n "$agent_pid" ] && args+=(agent "$agent_pid")
  [ ${#args[@]} -gt 0 ] && stop_all "${args[@]}"
  rm -f "$pids_file"
}
# Until everything is up (and for the whole run in the foreground), a failure or a
# signal stops what was started.
trap cleanup EXIT
trap 'say "stopping"; exit 130' INT TERM

http_ok() { curl -fsS -o /dev/null --max-time 1 "http://$1$2" 2>/dev/null; }

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
while alive agent "$agent_pid" && alive envoy "$envoy_pid"; do
  sleep 1 &
  wait $! || true
done
if alive agent "$agent_pid"; then say "Envoy exited; stopping the agent"; else say "the agent exited; stopping Envoy"; fi
exit 1
