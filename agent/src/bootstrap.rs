//! Envoy's bootstrap, rendered from the same flags the agent syncs with, so the filter, the
//! routes and the generated clusters always agree on names. Pure.
//!
//! The listeners are static on purpose: a listener change would close every open WebSocket.
//! Only clusters (the agent's CDS file) and the TLS certificate (a file SDS secret, reloaded
//! when the certificate files are replaced) are dynamic.
//!
//! The edge settings follow Envoy's "Configuring Envoy as an edge proxy" guidance; each is
//! commented where it is set.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use routing::RoutingConfig;
use serde_json::{json, Value};

use crate::model::{Endpoint, Host};
use crate::sinks::envoy_files::CDS_FILE;

mod edge;
mod tcp_edge;
pub mod xds;
pub use edge::{AdminListen, PublicHost};
pub use tcp_edge::{EdgePath, HCM_INTERNAL};

/// Name of the SDS secret holding the public certificate.
pub const TLS_SECRET: &str = "public_tls";

/// Everything the bootstrap depends on.
#[derive(Debug, Clone)]
pub struct BootstrapSpec<'a> {
    /// The plain-HTTP listener; with TLS it only redirects to HTTPS (and answers the health
    /// path), as `@colyseus/proxy` does with `SSL_KEY`/`SSL_CERT`.
    pub listen: SocketAddr,
    pub tls: Option<TlsSpec<'a>>,
    pub admin: AdminListen,
    /// Longest a connection may stay without an active request: a silent new connection
    /// is closed after it (see `http_connection_manager`).
    pub silent_connection_timeout: Duration,
    /// Where the HTTP listener redirects to with TLS on; `None`: the request's valid Host.
    pub public_host: Option<PublicHost>,
    pub config_dir: &'a Path,
    pub filter_wasm: &'a Path,
    pub routing: &'a RoutingConfig,
    pub request_timeout: Duration,
    /// Idle timeout of a stream, WebSockets included (`SOCKET_TIMEOUT`).
    pub stream_idle_timeout: Duration,
    /// Path answered 200 by Envoy itself (`HEALTH_CHECK_PATH`).
    pub health_path: Option<HealthPath>,
    /// Limit of open downstream connections, over all listeners.
    pub max_downstream_connections: u64,
    /// Proxies in front of Envoy whose x-forwarded-for entries are trusted (0: Envoy is the
    /// edge, the TCP peer is the client).
    pub trusted_hops: u32,
    /// The agent's API, reached by the filter through the bootstrap cluster
    /// `routing.agent_cluster` (room lookups, the live process list): an IP literal, or a
    /// DNS name where the agent has no fixed address (docker compose, Kubernetes).
    pub agent_api: Endpoint,
    /// Which path public connections take (`--edge-path`; see `tcp_edge`).
    pub edge_path: EdgePath,
}

/// TLS termination.
#[derive(Debug, Clone)]
pub struct TlsSpec<'a> {
    pub listen: SocketAddr,
    /// The SDS file naming the certificate and key files (see [`tls_secret`]).
    pub secret_file: &'a Path,
    /// Directory of the certificate files: a file moved into it reloads the certificate.
    pub cert_dir: &'a Path,
}

/// `@colyseus/proxy`'s `HEALTH_CHECK_PATH`: an exact path, or with a leading `*` a suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthPath {
    Exact(String),
    Suffix(String),
}

impl HealthPath {
    /// # Errors
    /// An empty path, or one that is neither `/...` nor `*...`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        match spec.strip_prefix('*') {
            // Envoy refuses regexes over RE2's default program size (100): a 101-character
            // suffix was refused, 91 accepted; escaped characters count twice.
            Some(suffix) if re2_escape(suffix).len() > 80 => Err(format!(
                "health check suffix {suffix:?} is too long for Envoy's regex limit (80 at most)"
            )),
            Some(suffix) if !suffix.is_empty() => Ok(Self::Suffix(suffix.to_owned())),
            None if spec.starts_with('/') => Ok(Self::Exact(spec.to_owned())),
            _ => Err(format!(
                "health check path {spec:?} must start with / (exact) or * (suffix)"
            )),
        }
    }

    fn route_match(&self) -> Value {
        match self {
            Self::Exact(path) => json!({ "path": path }),
            Self::Suffix(suffix) => {
                json!({ "safe_regex": { "regex": format!(".*{}", re2_escape(suffix)) } })
            }
        }
    }
}

fn re2_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The SDS file content for the public certificate. Envoy watches the files it names.
pub fn tls_secret(cert: &Path, key: &Path) -> Value {
    json!({ "resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": TLS_SECRET,
        "tls_certificate": {
            "certificate_chain": { "filename": cert },
            "private_key": { "filename": key },
        },
    }] })
}

/// Renders the bootstrap as JSON (which Envoy reads as YAML too).
pub fn render(spec: &BootstrapSpec<'_>) -> Value {
    let mut bootstrap = json!({
        "node": { "id": "colyseus-envoy", "cluster": "colyseus-envoy" },
        "admin": { "address": edge::admin_address(&spec.admin) },
        "dynamic_resources": {
            "cds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": spec.config_dir.join(CDS_FILE),
                    "watched_directory": { "path": spec.config_dir },
                },
            },
        },
        "static_resources": {
            "listeners": listeners(spec),
            "clusters": clusters(spec),
        },

        // A cluster's traffic stats (`upstream_rq_*`, `upstream_cx_*`) are created on its
        // first use: with 10,000 process clusters, creating them all up front made Envoy's
        // start to every cluster ACKed 5.2 s instead of 2.7 s, and cost 200 MB of memory
        // (bench-xds). Nothing of the agent's reads them for an unused cluster.
        "deferred_stat_options": { "enable_deferred_creation_stats": true },

        // Edge guidance: bound the downstream connections Envoy accepts in total.
        "overload_manager": { "resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": spec.max_downstream_connections,
            },
        }] },
    });
    if spec.edge_path == EdgePath::Tcp {
        bootstrap["bootstrap_extensions"] = json!([tcp_edge::bootstrap_extension()]);
        bootstrap["layered_runtime"] = tcp_edge::runtime();
    }
    bootstrap
}

/// The agent's API for the filter's `dispatch_http_call`. Its name never passes the route
/// guard (checked with the plugin configuration), so clients cannot reach it.
///
/// An IP literal makes a STATIC cluster (warm at once). A name makes a STRICT_DNS one:
/// Envoy re-resolves it (every 5 s by default), so an agent container restarted with a new
/// address is found again, and every address a name returns is used (agents are alike:
/// each answers from the same Redis and MongoDB).
fn agent_cluster(spec: &BootstrapSpec<'_>) -> Value {
    let name = &spec.routing.agent_cluster;
    let (kind, address) = match &spec.agent_api.host {
        Host::Ip(ip) => ("STATIC", ip.to_string()),
        Host::Name(host) => ("STRICT_DNS", host.clone()),
    };
    let mut cluster = json!({
        "name": name,
        "type": kind,
        "connect_timeout": "0.250s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": { "socket_address": {
                "address": address, "port_value": spec.agent_api.port } } } }] }],
        },
    });
    if matches!(spec.agent_api.host, Host::Name(_)) {
        // As for the game processes' clusters (sinks::envoy_files).
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    cluster
}

fn clusters(spec: &BootstrapSpec<'_>) -> Value {
    match spec.edge_path {
        EdgePath::Http => json!([agent_cluster(spec)]),
        EdgePath::Tcp => json!([agent_cluster(spec), tcp_edge::hcm_cluster()]),
    }
}

fn listeners(spec: &BootstrapSpec<'_>) -> Value {
    if spec.edge_path == EdgePath::Tcp {
        return tcp_edge::listeners(spec);
    }
    let listener = |name: &str, addr: SocketAddr, hcm: Value, tls: Option<Value>| {
        let mut chain = json!({ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }] });
        if let Some(tls) = tls {
            chain["transport_socket"] = tls;
        }
        json!({
            "name": name,
            "address": socket(addr),
            // Edge guidance: small per-connection buffers bound memory per client.
            "per_connection_buffer_limit_bytes": 32768,
            "filter_chains": [chain],
        })
    };
    match &spec.tls {
        None => json!([listener(
            "public_http",
            spec.listen,
            http_connection_manager(spec, "public"),
            None
        )]),
        Some(tls) => json!([
            listener(
                "public_https",
                tls.listen,
                http_connection_manager(spec, "public_https"),
                Some(tls_socket(tls))
            ),
            listener(
                "public_http",
                spec.listen,
                redirect_manager(spec, tls.listen.port()),
                None
            ),
        ]),
    }
}

fn tls_socket(tls: &TlsSpec<'_>) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                // WebSockets ride HTTP/1.1 upgrades.
                "alpn_protocols": ["http/1.1"],
                "tls_certificate_sds_secret_configs": [{
                    "name": TLS_SECRET,
                    "sds_config": {
                        "resource_api_version": "V3",
                        "path_config_source": {
                            "path": tls.secret_file,
                            "watched_directory": { "path": tls.cert_dir },
                        },
                    },
                }],
            },
        },
    })
}

/// The plain-HTTP listener next to TLS: the health path, and a redirect for the rest.
fn redirect_manager(spec: &BootstrapSpec<'_>, https_port: u16) -> Value {
    let mut routes: Vec<Value> = spec.health_path.iter().map(health_route).collect();
    routes.extend(edge::redirect_routes(https_port, spec.public_host.as_ref()));
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "public_http_redirect",
        "codec_type": "HTTP1",
        "server_header_transformation": "PASS_THROUGH",
        "request_headers_timeout": "10s",
        "common_http_protocol_options": { "idle_timeout": seconds(spec.silent_connection_timeout) },
        "route_config": { "name": "redirect", "virtual_hosts": [{ "name": "redirect", "domains": ["*"], "routes": routes }] },
        "http_filters": [router_filter()],
    })
}

fn client_address_header(name: &str) -> Value {
    json!({
        "header": { "key": name, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" },
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    })
}

fn health_route(path: &HealthPath) -> Value {
    json!({
        "match": path.route_match(),
        "direct_response": { "status": 200, "body": { "inline_string": "ok\n" } },
    })
}

/// The router, adding no `x-envoy-*` header to responses (`x-envoy-upstream-service-time`
/// told clients about the upstream).
fn router_filter() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "suppress_envoy_headers": true,
        },
    })
}

fn http_connection_manager(spec: &BootstrapSpec<'_>, stat_prefix: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        // Colyseus clients speak HTTP/1.1 and upgrades; h2c (and h2 over TLS without ALPN,
        // which AUTO sniffs) let one connection open 100 upstream requests at once.
        "codec_type": "HTTP1",
        // No `server: envoy` (upstream `server` headers pass as they are).
        "server_header_transformation": "PASS_THROUGH",
        "upgrade_configs": [{ "upgrade_type": "websocket" }],
        // Edge guidance: paths are normalized before the filter and routes see them.
        "normalize_path": true,
        "merge_slashes": true,
        // Edge guidance: Envoy computes the client's address itself, trusting only the
        // configured number of hops in front of it (none by default).
        "use_remote_address": true,
        "xff_num_trusted_hops": spec.trusted_hops,
        // No `x-request-id`: nothing reads it (no tracing, no access log; Colyseus ignores
        // it, and @colyseus/proxy sends none), yet Envoy would make a UUID for every request
        // and keep the header in the request for as long as a WebSocket stays open:
        // 0.36 KB of the ~50 KB each idle WebSocket costs (measured with 2,000 open).
        // A client-sent `x-request-id` is passed on as any other header.
        "generate_request_id": false,
        // Edge guidance: timeouts for slow or idle clients. The stream idle timeout also
        // closes an idle WebSocket (`SOCKET_TIMEOUT`); Colyseus pings every few seconds.
        "request_headers_timeout": "10s",
        "stream_idle_timeout": seconds(spec.stream_idle_timeout),
        // `request_headers_timeout` starts at the first byte: a connection that sends
        // nothing is closed by the connection idle timeout only, which counts from the
        // accept while no request is active (an open WebSocket is one, so it is not cut).
        // Short: a client then reconnects for a second matchmaking call at most.
        "common_http_protocol_options": {
            "idle_timeout": seconds(spec.silent_connection_timeout),
            "headers_with_underscores_action": "REJECT_REQUEST",
            "max_requests_per_connection": MAX_REQUESTS_PER_CONNECTION,
        },
        // Edge guidance: bounded headers and HTTP/2 windows.
        "max_request_headers_kb": 32,
        "http2_protocol_options": {
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
        },
        "route_config": {
            "name": "colyseus",
            "virtual_hosts": [{
                "name": "colyseus",
                "domains": ["*"],
                "routes": routes(spec),
                // Colyseus takes the first x-forwarded-for entry as the client's IP, so a
                // client-sent one would be believed: replace it (and x-real-ip) with the
                // address Envoy computed, as @colyseus/proxy overwrites it.
                "request_headers_to_add": [
                    client_address_header("x-forwarded-for"),
                    client_address_header("x-real-ip"),
                ],
                "request_headers_to_remove": edge::request_headers_to_remove(spec.trusted_hops),
            }],
        },
        "local_reply_config": { "mappers": [
            local_reply("NC", 404, "unknown_process", "no live game process has the processId in this path"),
            local_reply("UH", 503, "no_process_available", "no live game process can take this request"),
        ] },
        "http_filters": [wasm_filter(spec), router_filter()],
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
    let mut routes: Vec<Value> = spec.health_path.iter().map(health_route).collect();
    routes.extend([
        // WebSockets live as long as the player: no request timeout.
        json!({ "match": { "prefix": "/", "headers": [guard.clone(), websocket] },
          "route": route_to(Duration::ZERO),
          "request_headers_to_remove": [header] }),
        json!({ "match": { "prefix": "/", "headers": [guard] },
          "route": with_retries(route_to(spec.request_timeout)),
          "request_headers_to_remove": [header] }),
        json!({ "match": { "prefix": "/" },
          "direct_response": { "status": 500, "body": { "inline_string": "{\"error\":\"routing_failed\"}\n" } } }),
    ]);
    json!(routes)
}

/// Plain HTTP requests (matchmaking) that never reached a game process are retried on
/// another one, so nothing runs twice: a failed connect, a refused stream, and
/// `reset-before-request` (Envoy 1.31+): a reset before any of the request was sent, as when
/// a pooled connection to a process killed a moment ago turns out closed (the 503 seen
/// right after a `kill -9`). A request reset after it was sent is never replayed.
fn with_retries(mut action: Value) -> Value {
    action["retry_policy"] = json!({
        "retry_on": "connect-failure,refused-stream,reset-before-request",
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
    let plugin =
        serde_json::to_string(&routing::PluginConfig::from(spec.routing)).unwrap_or_default();
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "colyseus_router",
                "vm_config": vm_config(spec),
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin,
                },
                "fail_open": false,
            },
        },
    })
}

/// The filter's VM, shared by the HTTP and the network filter (one VM per worker).
fn vm_config(spec: &BootstrapSpec<'_>) -> Value {
    json!({
        "vm_id": "colyseus_router",
        "runtime": "envoy.wasm.runtime.v8",
        "code": { "local": { "filename": spec.filter_wasm } },
    })
}

/// Requests one client connection may carry (keep-alive matchmaking); then it reconnects.
const MAX_REQUESTS_PER_CONNECTION: u32 = 100;

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
            tls: None,
            admin: AdminListen::Tcp("127.0.0.1:9901".parse().unwrap()),
            silent_connection_timeout: Duration::from_secs(10),
            public_host: None,
            config_dir: Path::new("/var/lib/colyseus-envoy/envoy"),
            filter_wasm: Path::new("/opt/filter.wasm"),
            routing: &routing,
            request_timeout: Duration::from_secs(15),
            stream_idle_timeout: Duration::from_secs(30),
            health_path: None,
            max_downstream_connections: 1000,
            trusted_hops: 0,
            agent_api: crate::model::parse_host_port("127.0.0.1:9902").unwrap(),
            edge_path: EdgePath::Http,
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
        assert_eq!(hcm["generate_request_id"], false);
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
        let agent = &b["static_resources"]["clusters"][0];
        assert_eq!(agent["name"], "colyseus_agent");
        assert_eq!(agent["name"], parsed.agent_cluster);
        assert_eq!(
            agent["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"],
            9902
        );
        // The route guard refuses the agent's cluster.
        assert!(!routing
            .names
            .route_guard_regex()
            .contains(agent["name"].as_str().unwrap()));
    }

    fn spec_with<'a>(
        routing: &'a RoutingConfig,
        tls: Option<TlsSpec<'a>>,
        health_path: Option<HealthPath>,
    ) -> BootstrapSpec<'a> {
        BootstrapSpec {
            listen: "0.0.0.0:80".parse().unwrap(),
            tls,
            admin: AdminListen::Tcp("127.0.0.1:9901".parse().unwrap()),
            silent_connection_timeout: Duration::from_secs(10),
            public_host: None,
            config_dir: Path::new("/d"),
            filter_wasm: Path::new("/f.wasm"),
            routing,
            request_timeout: Duration::from_secs(15),
            stream_idle_timeout: Duration::from_secs(300),
            health_path,
            max_downstream_connections: 1000,
            trusted_hops: 0,
            agent_api: crate::model::parse_host_port("127.0.0.1:9902").unwrap(),
            edge_path: EdgePath::Http,
        }
    }

    #[test]
    fn tcp_edge_path() {
        let routing = RoutingConfig::try_from(PluginConfig::default()).unwrap();
        let mut spec = spec_with(&routing, None, None);
        assert!(render(&spec).get("bootstrap_extensions").is_none());
        spec.edge_path = EdgePath::Tcp;
        let b = render(&spec);
        assert_eq!(
            b["bootstrap_extensions"][0]["name"],
            "envoy.bootstrap.internal_listener"
        );
        assert_eq!(
            b["layered_runtime"]["layers"][0]["static_layer"]
                ["envoy.reloadable_features.enable_send_rst_on_user_space_socket"],
            false
        );
        let listeners = &b["static_resources"]["listeners"];
        let public = &listeners[0]["filter_chains"][0]["filters"];
        assert_eq!(public[1]["typed_config"]["cluster"], HCM_INTERNAL);
        let plugin = public[0]["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap();
        let parsed =
            RoutingConfig::try_from(PluginConfig::from_json(plugin.as_bytes()).unwrap()).unwrap();
        let edge = parsed.edge.unwrap();
        assert_eq!(
            (edge.hcm_cluster.as_str(), edge.scheme.as_str()),
            (HCM_INTERNAL, "http")
        );
        assert_eq!(edge.head_timeout, Duration::from_secs(10));
        // The HCM, unchanged, on the internal listener; the route guard refuses its cluster.
        assert_eq!(listeners[1]["name"], HCM_INTERNAL);
        assert!(listeners[1].get("address").is_none());
        let hcm = &listeners[1]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["http_filters"][0]["name"], "envoy.filters.http.wasm");
        assert!(routing.names.process_of(HCM_INTERNAL).is_none());
        assert_ne!(routing.names.all(), HCM_INTERNAL);
        assert_eq!(b["static_resources"]["clusters"][1]["name"], HCM_INTERNAL);
    }

    #[test]
    fn tls_listener_and_redirect() {
        let routing = RoutingConfig::try_from(PluginConfig::default()).unwrap();
        let tls = TlsSpec {
            listen: "0.0.0.0:8443".parse().unwrap(),
            secret_file: Path::new("/etc/tls-secret.json"),
            cert_dir: Path::new("/etc/certs"),
        };
        let health = HealthPath::parse("/health").ok();
        let b = render(&spec_with(&routing, Some(tls), health));
        let listeners = b["static_resources"]["listeners"].as_array().unwrap();
        assert_eq!(listeners[0]["name"], "public_https");
        assert_eq!(
            listeners[0]["address"]["socket_address"]["port_value"],
            8443
        );
        let sds = &listeners[0]["filter_chains"][0]["transport_socket"]["typed_config"]
            ["common_tls_context"]["tls_certificate_sds_secret_configs"][0];
        assert_eq!(sds["name"], TLS_SECRET);
        assert_eq!(
            sds["sds_config"]["path_config_source"]["watched_directory"]["path"],
            "/etc/certs"
        );
        let redirect = &listeners[1]["filter_chains"][0]["filters"][0]["typed_config"]
            ["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(redirect[0]["match"]["path"], "/health");
        assert_eq!(redirect[1]["redirect"]["https_redirect"], true);
        assert_eq!(redirect[1]["redirect"]["port_redirect"], 8443);
        let secret = tls_secret(Path::new("/c.pem"), Path::new("/k.pem"));
        assert_eq!(secret["resources"][0]["name"], TLS_SECRET);
        assert_eq!(
            secret["resources"][0]["tls_certificate"]["private_key"]["filename"],
            "/k.pem"
        );
    }

    #[test]
    fn health_paths() {
        assert_eq!(HealthPath::parse("/h"), Ok(HealthPath::Exact("/h".into())));
        assert_eq!(
            HealthPath::parse("*/h.z"),
            Ok(HealthPath::Suffix("/h.z".into()))
        );
        assert!(HealthPath::parse("*").is_err());
        assert!(HealthPath::parse(&format!("*/{}", "h".repeat(79))).is_ok());
        assert!(HealthPath::parse(&format!("*/{}", "h".repeat(80))).is_err());
        assert!(HealthPath::parse(&format!("*/{}", ".".repeat(40))).is_err());
        assert!(HealthPath::parse("h").is_err());
        assert_eq!(
            HealthPath::Suffix("/a.b(c)".into()).route_match()["safe_regex"]["regex"],
            ".*/a\\.b\\(c\\)"
        );
        let routing = RoutingConfig::try_from(PluginConfig::default()).unwrap();
        let b = render(&spec_with(
            &routing,
            None,
            HealthPath::parse("*/healthz").ok(),
        ));
        let routes = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[0]["direct_response"]["status"], 200);
        assert_eq!(routes.as_array().unwrap().len(), 4);
    }

    #[test]
    fn agent_cluster_is_static_for_ip_literals_and_dns_for_names() {
        let routing = RoutingConfig::try_from(PluginConfig::default()).unwrap();
        let agent_cluster_for = |addr: &str| {
            let mut spec = spec_with(&routing, None, None);
            spec.agent_api = crate::model::parse_host_port(addr).unwrap();
            render(&spec)["static_resources"]["clusters"][0].clone()
        };
        let address = |c: &Value| {
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]
                .clone()
        };
        for (addr, host) in [("10.1.2.3:9902", "10.1.2.3"), ("[fd00::2]:9902", "fd00::2")] {
            let c = agent_cluster_for(addr);
            assert_eq!(c["type"], "STATIC", "{addr}");
            assert_eq!(address(&c)["address"], host, "{addr}");
            assert_eq!(address(&c)["port_value"], 9902, "{addr}");
            assert!(c.get("dns_lookup_family").is_none(), "{addr}");
        }
        let c = agent_cluster_for("agent:9903");
        assert_eq!(c["name"], routing.agent_cluster);
        assert_eq!(c["type"], "STRICT_DNS");
        assert_eq!(address(&c)["address"], "agent");
        assert_eq!(address(&c)["port_value"], 9903);
        assert_eq!(c["dns_lookup_family"], "V4_PREFERRED");
        assert_eq!(c["load_assignment"]["cluster_name"], routing.agent_cluster);
    }
}
