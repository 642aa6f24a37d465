#!/usr/bin/env python3
"""Envoy bootstrap for target (2): static per-process routes, no wasm.

usage: envoy_static.py PORT ADMIN_PORT PID=HOST:PORT [PID=HOST:PORT ...] > envoy.json

One STATIC cluster per game process and one route per process matching the path regex
`^/{processId}/`; anything else (matchmaking) round-robin over all processes, as the other
proxies do. Listener settings follow what
`colyseus-envoy bootstrap` renders (buffer limit, timeouts, WebSocket upgrade,
x-forwarded-for), minus the wasm filter, the local-reply mappers and the health checks.
"""
import json
import re
import sys

port, admin = int(sys.argv[1]), int(sys.argv[2])
procs = [a.split("=", 1) for a in sys.argv[3:]]


def cluster(name, addrs):
    hosts = [a.rsplit(":", 1) for a in addrs]
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "per_connection_buffer_limit_bytes": 32768,
        # As the agent writes them: Envoy's default of 1,024 connections per cluster would
        # refuse the connect phase's held WebSockets beyond it (seen: 928 of 4,000 failed).
        "circuit_breakers": {"thresholds": [{"max_connections": 1000000,
                                             "max_pending_requests": 1000000,
                                             "max_requests": 1000000}]},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": h, "port_value": int(p)}}}}
            for h, p in hosts
        ]}]},
    }


clusters, routes = [], []
for pid, addr in procs:
    name = f"colyseus-process-{pid}"
    clusters.append(cluster(name, [addr]))
    routes.append({
        "match": {"safe_regex": {"regex": f"^/{re.escape(pid)}/.*"}},
        "route": {"cluster": name, "timeout": "0s"},
    })
clusters.append(cluster("colyseus-all", [addr for _, addr in procs]))
routes.append({"match": {"prefix": "/"}, "route": {"cluster": "colyseus-all", "timeout": "15s"}})
hcm = {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "public",
    "codec_type": "AUTO",
    "use_remote_address": True,
    "common_http_protocol_options": {"idle_timeout": "900s"},
    "stream_idle_timeout": "300s",
    "request_headers_timeout": "10s",
    "upgrade_configs": [{"upgrade_type": "websocket"}],
    "route_config": {"name": "static", "virtual_hosts": [{
        "name": "static", "domains": ["*"], "routes": routes,
        "request_headers_to_add": [{
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            "header": {"key": "x-forwarded-for", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
        }],
    }]},
    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
}
boot = {
    "node": {"id": "bench-static", "cluster": "bench-static"},
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
    "overload_manager": {"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                         "max_active_downstream_connections": 100000}}]},
    "static_resources": {
        "listeners": [{
            "name": "public_http",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "per_connection_buffer_limit_bytes": 32768,
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
        }],
        "clusters": clusters,
    },
}
json.dump(boot, sys.stdout, indent=1)
