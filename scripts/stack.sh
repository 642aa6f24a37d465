#!/usr/bin/env bash
# The whole local stack in one command, no Docker: Redis, a few example Colyseus 0.16 game
# servers (example/server.js) and the proxy (`colyseus-envoy run`: Envoy + agent, through
# scripts/proxy.sh). The settings are checked before anything starts; a failure stops what
# was started.
#
#   scripts/stack.sh [up]   install/build (scripts/setup.sh), start everything, print URLs
#   scripts/stack.sh status what runs, and `colyseus-envoy status` (exit 1 if unhealthy)
#   scripts/stack.sh down   stop everything (SIGTERM, then SIGKILL after 10 s)
#
# Environment (defaults):
#   PORT=8080              public port of the proxy       IP=127.0.0.1 its address
#   REDIS_PORT=6390        Redis (127.0.0.1, no persistence)
#   GAME_SERVERS=3         number of game servers         GAME_BASE_PORT=2567 first port
#   ADMIN_ADDR=unix:.run/stack/proxy/envoy-admin.sock   Envoy admin (Unix socket, mode 0600)
#   AGENT_API_ADDR=127.0.0.1:9902   agent API (/live /ready /metrics /processes)
# Everything lives in .run/stack/: logs, pids, the proxy's config (.run/stack/proxy/).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
dir="$root/.run/stack"
pids_file="$dir/pids"
env_file="$dir/stack.env"

say() { echo "stack: $*" >&2; }
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

# `up` records its settings so that `status` and `down` use the same ones.
if [ -f "$env_file" ] && [ "${1:-up}" != up ]; then
  # shellcheck disable=SC1090
  . "$env_file"
fi
PORT="${PORT:-8080}"
IP="${IP:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6390}"
GAME_SERVERS="${GAME_SERVERS:-3}"
GAME_BASE_PORT="${GAME_BASE_PORT:-2567}"
ADMIN_ADDR="${ADMIN_ADDR:-unix:$dir/proxy/envoy-admin.sock}"
AGENT_API_ADDR="${AGENT_API_ADDR:-127.0.0.1:9902}"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

# The recorded processes, one `NAME PID` a line (the proxy is one: `run`, which supervises
# Envoy and the agent itself).
entries() {
  [ -f "$pids_file" ] && cat "$pids_file"
  return 0
}

# Number of recorded processes still running.
running_count() {
  local name pid count=0
  while read -r name pid; do alive "$name" "$pid" && count=$((count + 1)); done < <(entries)
  echo "$count"
}

down() {
  if [ ! -f "$pids_file" ]; then
    say "not running"
    return 0
  fi
  # In reverse order of start: the proxy, then the game servers (they unregister from
  # Redis on SIGTERM, so Redis must still run), then Redis.
  local -a proxy=() games=() redis=()
  local name pid
  while read -r name pid; do
    case "$name" in
      proxy) proxy+=("$name" "$pid") ;;
      game-*) games+=("$name" "$pid") ;;
      redis) redis+=("$name" "$pid") ;;
    esac
  done < <(entries)
  [ ${#proxy[@]} -gt 0 ] && { say "stopping the proxy"; stop_all "${proxy[@]}"; }
  [ ${#games[@]} -gt 0 ] && { say "stopping the game servers"; stop_all "${games[@]}"; }
  [ ${#redis[@]} -gt 0 ] && { say "stopping redis"; stop_all "${redis[@]}"; }
  rm -f "$pids_file"
  say "down"
}

status() {
  local name pid rc=0
  if [ ! -f "$pids_file" ]; then
    echo "stack: not running"
    return 1
  fi
  while read -r name pid; do
    if alive "$name" "$pid"; then echo "$name: running (pid $pid)"; else echo "$name: NOT running (pid $pid)"; rc=1; fi
  done < <(entries)
  echo "public: http://$IP:$PORT"
  echo
  # The operator's table, from the agent, Envoy's admin and Redis.
  REDIS_URL="$REDIS_URL" AGENT_API_ADDR="$AGENT_API_ADDR" ADMIN_ADDR="$ADMIN_ADDR" \
    RUN_DIR="$dir/proxy" "$root/scripts/proxy.sh" status || rc=1
  return "$rc"
}

# `start NAME LOG CMD...`: run detached (own session, survives this script), record the PID.
start() {
  local name="$1" log="$2"
  shift 2
  setsid "$@" </dev/null >"$log" 2>"${log%.out}.log" &
  echo "$name $!" >>"$pids_file"
}

# PING over bash's /dev/tcp, so redis-cli need not be installed.
redis_ping() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 1
    printf 'PING\r\n' >&3
    read -r -t 1 reply <&3 || exit 1
    [[ "$reply" == +PONG* ]]
  ) 2>/dev/null
}

fail() {
  say "FAILED: $*"
  down
  exit 1
}

# `check_number NAME VALUE MIN MAX`: a whole number in range, or a one-line refusal.
check_number() {
  if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
    say "invalid configuration: $1=$2 (expected a whole number from $3 to $4)"
    exit 64
  fi
}

# `port_taken PORT`: something accepts connections on 127.0.0.1:PORT.
port_taken() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Every setting and port, before anything starts.
check_inputs() {
  check_number PORT "$PORT" 1 65535
  check_number REDIS_PORT "$REDIS_PORT" 1 65535
  check_number GAME_SERVERS "$GAME_SERVERS" 1 64
  check_number GAME_BASE_PORT "$GAME_BASE_PORT" 1 $((65535 - GAME_SERVERS))
  if port_taken "$REDIS_PORT"; then
    say "not starting: 127.0.0.1:$REDIS_PORT (REDIS_PORT) is already in use; stop what holds it or set REDIS_PORT"
    exit 69
  fi
  local i
  for ((i = 0; i < GAME_SERVERS; i++)); do
    if port_taken $((GAME_BASE_PORT + i)); then
      say "not starting: 127.0.0.1:$((GAME_BASE_PORT + i)) (game server $i, GAME_BASE_PORT+$i) is already in use; set GAME_BASE_PORT"
      exit 69
    fi
  done
}

up() {
  local count
  count="$(running_count)"
  if [ -f "$pids_file" ] && [ "$count" -gt 0 ]; then
    # shellcheck disable=SC1090
    [ -f "$env_file" ] && . "$env_file"
    if [ "$count" -eq "$(entries | wc -l)" ]; then
      say "already up"
      status || true
      exit 0
    fi
    status || true
    say "partly up; run scripts/stack.sh down first"
    exit 1
  fi
  rm -f "$pids_file"
  check_inputs

  "$root/scripts/setup.sh"
  # A fresh start: this Redis starts empty and the game servers get new processIds, so the
  # agent's saved state of a previous run (--state-file) must not be carried over; it would
  # take the old processIds for registrations lost in a Redis restart and restore them.
  rm -rf "$dir"
  mkdir -p "$dir"
  cat >"$env_file" <<EOF
PORT=$PORT
IP=$IP
REDIS_PORT=$REDIS_PORT
GAME_SERVERS=$GAME_SERVERS
GAME_BASE_PORT=$GAME_BASE_PORT
ADMIN_ADDR=$ADMIN_ADDR
AGENT_API_ADDR=$AGENT_API_ADDR
EOF

  say "redis on 127.0.0.1:$REDIS_PORT"
  start redis "$dir/redis.out" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save '' --appendonly no --daemonize no --dir "$dir"
  local redis_pid n
  redis_pid="$(awk '$1 == "redis" {print $2}' "$pids_file")"
  for ((n = 0; ; n++)); do
    redis_ping && break
    kill -0 "$redis_pid" 2>/dev/null || fail "redis exited: $(tail -n 3 "$dir/redis.out")"
    [ "$n" -lt 100 ] || fail "redis not answering on port $REDIS_PORT after 10 s"
    sleep 0.1
  done

  local i port
  for ((i = 0; i < GAME_SERVERS; i++)); do
    port=$((GAME_BASE_PORT + i))
    say "game server $i on 127.0.0.1:$port"
    PORT="$port" HOST=127.0.0.1 REDIS_URL="$REDIS_URL" \
      start "game-$i" "$dir/game-$i.out" node "$root/example/server.js"
  done
  for ((i = 0; i < GAME_SERVERS; i++)); do
    local pid
    pid="$(awk -v n="game-$i" '$1 == n {print $2}' "$pids_file")"
    for ((n = 0; ; n++)); do
      grep -q '^READY ' "$dir/game-$i.out" 2>/dev/null && break
      kill -0 "$pid" 2>/dev/null || fail "game server $i exited: $(tail -n 5 "$dir/game-$i.log")"
      [ "$n" -lt 300 ] || fail "game server $i not READY after 30 s (see $dir/game-$i.log)"
      sleep 0.1
    done
    say "  $(head -n 1 "$dir/game-$i.out")"
  done

  say "proxy on $IP:$PORT (colyseus-envoy run, log in $dir/proxy.log)"
  PORT="$PORT" IP="$IP" REDIS_URL="$REDIS_URL" ADMIN_ADDR="$ADMIN_ADDR" \
    AGENT_API_ADDR="$AGENT_API_ADDR" RUN_DIR="$dir/proxy" \
    start proxy "$dir/proxy.out" "$root/scripts/proxy.sh"
  local proxy_pid
  proxy_pid="$(awk '$1 == "proxy" {print $2}' "$pids_file")"
  for ((n = 0; ; n++)); do
    grep -q 'Listening on' "$dir/proxy.log" 2>/dev/null && break
    kill -0 "$proxy_pid" 2>/dev/null || fail "the proxy did not start: $(grep -v '^\s*$' "$dir/proxy.log" | tail -n 1)"
    [ "$n" -lt 600 ] || fail "the proxy is not up after 60 s (see $dir/proxy.log)"
    sleep 0.1
  done

  local host="$IP"
  case "$host" in 0.0.0.0 | "::") host=127.0.0.1 ;; *:*) host="[$host]" ;; esac
  cat <<EOF

colyseus-envoy local stack is up:
  public endpoint  http://$host:$PORT   ws://$host:$PORT
  try              node tests/clients/swarm.js --endpoint http://$host:$PORT --clients 20
  agent API        http://$AGENT_API_ADDR/processes  (/live /ready /metrics)
  Envoy admin      $ADMIN_ADDR  (curl --unix-socket PATH http://localhost/stats)
  Redis            $REDIS_URL
  logs             $dir/
  status / stop    scripts/stack.sh status   /   scripts/stack.sh down
EOF
}

case "${1:-up}" in
  up) up ;;
  down | stop) down ;;
  status) status ;;
  -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) say "unknown command: $1 (up, down, status)"; exit 64 ;;
esac
