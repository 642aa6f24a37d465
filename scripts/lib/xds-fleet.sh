# An xDS fleet for the benchmark scripts (sourced after bins.sh, children.sh and wait.sh):
# two agents serving `sync --xds-listen` from one Redis and two Envoys bootstrapped with
# `--config-source xds` and both agents, each agent and Envoy on its own loopback address
# as its own "host" (as tests/e2e/src/xds.rs does).
#
#   start_xds_fleet DIR REDIS_URL [AGENT_ARG...]
#     starts agents 127.0.0.2 and .3, Envoys edge-1 (127.0.0.11) and edge-2 (127.0.0.12);
#     sets xds_proxies (--proxy xds-edge-N=ip:port, for loadgen) and xds_admins (ip:port)

start_xds_fleet() {
  local dir="$1" redis_url="$2" i ip xds_port api_port port admin_port
  shift 2
  local servers=()
  xds_proxies=()
  xds_admins=()
  for i in 2 3; do
    ip="127.0.0.$i" xds_port="$(free_port)" api_port="$(free_port)"
    mkdir -p "$dir/xds-agent-$i/envoy-config"
    start "xds-agent-$i" "$agent" sync --redis-url "$redis_url" \
      --config-dir "$dir/xds-agent-$i/envoy-config" --state-file "$dir/xds-agent-$i/state.json" \
      --api-addr "$ip:$api_port" --xds-listen "$ip:$xds_port" "$@"
    wait_http "http://$ip:$api_port/ready"
    servers+=(--xds-server "$ip:$xds_port" --xds-agent-api "$ip:$api_port")
  done
  for i in 1 2; do
    ip="127.0.0.1$i" port="$(free_port)" admin_port="$(free_port)"
    mkdir -p "$dir/edge-$i/envoy-config"
    "$agent" bootstrap --ip "$ip" --port "$port" --admin-addr "$ip:$admin_port" \
      --config-source xds --node-id "edge-$i" --config-dir "$dir/edge-$i/envoy-config" \
      --filter-wasm "$wasm" "${servers[@]}" >"$dir/edge-$i/envoy.json"
    start "xds-envoy-$i" "$envoy" -c "$dir/edge-$i/envoy.json" --log-level warn \
      --disable-hot-restart --concurrency "$BENCH_ENVOY_CONCURRENCY"
    wait_http "http://$ip:$admin_port/ready" LIVE
    xds_proxies+=(--proxy "xds-edge-$i=$ip:$port")
    xds_admins+=("$ip:$admin_port")
  done
}
