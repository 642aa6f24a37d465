#!/usr/bin/env bash
# The proxy alone, from this checkout: `colyseus-envoy run` (Envoy with the filter, plus
# the sync agent, supervised by one process) with this checkout's builds. Configured like
# @colyseus/proxy, by environment (`colyseus-envoy run --help` lists all):
#
#   REDIS_URL       Redis of the game servers' RedisPresence  (default redis://127.0.0.1:6379)
#   PORT, IP        public listener                           (default 80, 0.0.0.0)
#   ADMIN_ADDR      Envoy admin: unix:PATH (default unix:$RUN_DIR/envoy-admin.sock, mode
#                   0600) or a loopback ip:port
#   AGENT_API_ADDR  agent API: /live /ready /metrics /processes (default 127.0.0.1:9902)
#   RUN_DIR         bootstrap, watched config dir, state, control socket (default .run/proxy)
#   ENVOY_LOG_LEVEL, ENVOY_CONCURRENCY, ENVOY_HOT_RESTART, ENVOY_DRAIN_TIME,
#   ENVOY_PARENT_SHUTDOWN_TIME: as for `colyseus-envoy run`
#   Any other sync or bootstrap setting by its own variable (children inherit them).
#
# Usage:
#   scripts/proxy.sh [RUN ARGS]             run in the foreground; Ctrl-C (or SIGTERM)
#                                           stops Envoy, then the agent
#   scripts/proxy.sh hot-restart [--force]  a new Envoy takes the listeners over (the same
#                                           as `kill -HUP` of the run process); same RUN_DIR
#   scripts/proxy.sh status                 `colyseus-envoy status` against it
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="$target_dir/release/colyseus-envoy"
export ENVOY_BIN="${ENVOY_BIN:-$root/.venv/bin/envoy}"
export COLYSEUS_ENVOY_FILTER_WASM="${COLYSEUS_ENVOY_FILTER_WASM:-$target_dir/wasm32-wasip1/release/colyseus_envoy_filter.wasm}"

case "${1:-}" in
  -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
if [ ! -x "$bin" ] || [ ! -f "$COLYSEUS_ENVOY_FILTER_WASM" ] || [ ! -x "$ENVOY_BIN" ]; then
  echo "proxy: not built yet; running scripts/setup.sh" >&2
  "$root/scripts/setup.sh"
fi
case "${1:-}" in
  hot-restart) shift; exec "$bin" run hot-restart "$@" ;;
  status) shift; exec "$bin" status "$@" ;;
esac
exec "$bin" run "$@"
