//! Envoy's bootstrap, rendered from the same flags the agent syncs with, so the filter, the
//! routes and the generated clusters always agree on names. Pure.
//!
//! The listener is static on purpose: a listener change would close every open WebSocket.
//! Only clusters are dynamic (the agent's CDS file).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use routing::RoutingConfig;
use serde_json::{json, Value};

use crate::sinks::envoy_files::CDS_FILE;

/// Everything the bootstrap depends on.
#[derive(Debug, Clone)]
pub struct BootstrapSpec<'a> {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub config_dir: &'a Path,
    pub filter_wasm: &'a Path,
    pub routing: &'a RoutingConfig,
    pub request_timeout: Duration,
}

/// Renders the bootstrap as JSON (which Envoy reads as YAML too).
pub fn render(spec: &BootstrapSpec<'_>) -> Value {
    json!({
        "node": { "id": "colyseus-envoy", "cluster": "colyseus-envoy" },
        "admin": { "address": socket(spec.admin) },
        "dynamic_resources": {
            "cds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": spec.config_dir.join(CDS_FILE),
                    "watched_directory": { "path": spec.config_dir },
                },
            },
        },
        "static_resources": { "listeners": [{
            "name": "public_http",
            "address": socket(spec.listen),
            "filter_chains": [{ "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": http_connection_manager(spec),
            }] }],
        }] },
    })
}

fn http_connection_manager(spec: &BootstrapSpec<'_>) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "public",
        "codec_type": "AUTO",
        "upgrade_configs": [{ "upgrade_type": "websocket" }],
        "normalize_path": true,
        "merge_slashes": true,
        "use_remote_address": true,
        "route_config": {
            "name": "colyseus",
            "virtual_hosts": [{ "name": "colyseus", "domains": ["*"], "routes": routes(spec) }],
        },
        "local_reply_config": { "mappers": [
            local_reply("NC", 404, "unknown_process", "no live game process has the processId in this path"),
            local_reply("UH", 503, "no_process_available", "no live game process can take this request"),
        ] },
        "http_filters": [
            wasm_filter(spec),
            {
                "name": "envoy.filters.http.router",
                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
            },
        ],
    })
}

/// The filter sets the routing header on every request; the routes also check that it names
/// a game cluster, so no client (and no filter bug) can reach any other cluster.
fn routes(spec: &BootstrapSpec<'_>) -> Value {
    let header = &spec.routing.header;
    let guard = json!({ "name": header, "string_match": { "safe_regex": {
        "regex": spec.routing.names.route_guard_regex() } } });
    let websocket =
        json!({ "name": "upgrade", "string_match": { "exact": "websocket", "ignore_case": true } });
    let route_to = |timeout: Duration| {
        json!({
            "cluster_header": header,
            "cluster_not_found_response_code": "NOT_FOUND",
            "timeout": seconds(timeout),
        })
    };
    json!([
        // WebSockets live as long as the player: no request timeout.
        { "match": { "prefix": "/", "headers": [guard.clone(), websocket] },
          "route": route_to(Duration::ZERO),
          "request_headers_to_remove": [header] },
        { "match": { "prefix": "/", "headers": [guard] },
          "route": with_retries(route_to(spec.request_timeout)),
          "request_headers_to_remove": [header] },
        { "match": { "prefix": "/" },
          "direct_response": { "status": 500, "body": { "inline_string": "{\"error\":\"routing_failed\"}\n" } } },
    ])
}

/// Plain HTTP requests (matchmaking) that could not even connect are retried on another
/// process: the request never reached the first one, so nothing runs twice.
fn with_retries(mut action: Value) -> Value {
    action["retry_policy"] = json!({
        "retry_on": "connect-failure,refused-stream",
        "num_retries": 2,
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate" },
        }],
        "host_selection_retry_max_attempts": 3,
    });
    action
}

fn wasm_filter(spec: &BootstrapSpec<'_>) -> Value {
    let names = &spec.routing.names;
    let plugin = serde_json::to_string(&routing::PluginConfig {
        header: spec.routing.header.clone(),
        cluster_prefix: names.prefix().to_owned(),
        all_cluster: names.all().to_owned(),
    })
    .unwrap_or_default();
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "colyseus_router",
                "vm_config": {
                    "vm_id": "colyseus_router",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": spec.filter_wasm } },
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin,
                },
                "fail_open": false,
            },
        },
    })
}

fn socket(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn local_reply(flag: &str, status: u16, error: &str, detail: &str) -> Value {
    json!({
        "filter": { "response_flag_filter": { "flags": [flag] } },
        "status_code": status,
        "body_format_override": { "json_format": { "error": error, "detail": detail } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use routing::PluginConfig;

    #[test]
    fn renders_names_and_paths_consistently() {
        let routing = RoutingConfig::try_from(PluginConfig::default()).unwrap();
        let spec = BootstrapSpec {
            listen: "0.0.0.0:80".parse().unwrap(),
            admin: "127.0.0.1:9901".parse().unwrap(),
            config_dir: Path::new("/var/lib/colyseus-envoy/envoy"),
            filter_wasm: Path::new("/opt/filter.wasm"),
            routing: &routing,
            request_timeout: Duration::from_secs(15),
        };
        let b = render(&spec);
        assert_eq!(
            b["admin"]["address"]["socket_address"]["address"],
            "127.0.0.1"
        );
        assert_eq!(
            b["dynamic_resources"]["cds_config"]["path_config_source"]["path"],
            "/var/lib/colyseus-envoy/envoy/cds.json"
        );
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let routes = &hcm["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[0]["route"]["timeout"], "0.000s");
        assert_eq!(routes[1]["route"]["timeout"], "15.000s");
        assert!(routes[0]["route"].get("retry_policy").is_none());
        assert_eq!(routes[1]["route"]["retry_policy"]["num_retries"], 2);
        assert_eq!(
            routes[1]["match"]["headers"][0]["string_match"]["safe_regex"]["regex"],
            routing.names.route_guard_regex()
        );
        let plugin = hcm["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap();
        let parsed =
            RoutingConfig::try_from(PluginConfig::from_json(plugin.as_bytes()).unwrap()).unwrap();
        assert_eq!(parsed, routing);
    }
}
