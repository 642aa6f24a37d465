//! `--edge-path tcp`: the public listener runs the filter as a network filter in front of
//! `tcp_proxy` (see `routing::edge`). A room WebSocket to a live process goes straight to
//! its process's cluster as raw TCP; everything else goes to the usual HTTP connection
//! manager (HCM), which now listens on an internal listener reached through `tcp_proxy`,
//! with PROXY protocol on that hop so the HCM still sees the client's address. TLS ends on
//! the public listener, before the filter, with the same SDS secret as the HTTP path. Pure.
//!
//! Envoy 1.40 has no `upstream_connect_trigger`: `tcp_proxy` is held back by the filter
//! pausing the connection, and `max_early_data_bytes` lets it take the bytes already read.

use serde_json::{json, Value};

use std::net::SocketAddr;

use super::{
    http_connection_manager, redirect_manager, seconds, socket, tls_socket, BootstrapSpec, TlsSpec,
};

/// The internal listener of the HCM, and the cluster that reaches it (`tcp_proxy`'s
/// default). Neither passes the route guard (checked with the plugin configuration).
pub const HCM_INTERNAL: &str = "colyseus_hcm";

/// Longest request head the filter reads before handing the connection to the HCM (which
/// allows 32 KiB, and answers 431 past it). Below the connection buffer limit (32 KiB),
/// past which Envoy stops reading.
pub const MAX_HEAD_BYTES: u64 = 16_384;

/// Bytes `tcp_proxy` takes before its upstream connects: the head and anything after it.
const MAX_EARLY_DATA_BYTES: u64 = 32_768;

/// Which path the public listener's connections take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "daemon", derive(clap::ValueEnum))]
pub enum EdgePath {
    /// Every connection through the HTTP connection manager (as before).
    #[default]
    Http,
    /// Room WebSockets to a live process as raw TCP, the rest through the HCM.
    Tcp,
}

/// `--edge-path tcp`: the public listener (TLS, then the filter and `tcp_proxy`), the HCM
/// on an internal listener, and with TLS the same redirect listener as the HTTP path.
pub fn listeners(spec: &BootstrapSpec<'_>) -> Value {
    let public = |name: &str, addr: SocketAddr, tls: Option<&TlsSpec<'_>>| {
        let mut chain = json!({ "filters": public_filters(spec, tls.is_some()) });
        if let Some(tls) = tls {
            chain["transport_socket"] = tls_socket(tls);
        }
        json!({
            "name": name,
            "address": socket(addr),
            "per_connection_buffer_limit_bytes": 32768,
            "filter_chains": [chain],
        })
    };
    let hcm =
        |prefix: &str, tls: bool| internal_listener(http_connection_manager(spec, prefix), tls);
    match &spec.tls {
        None => json!([
            public("public_http", spec.listen, None),
            hcm("public", false)
        ]),
        Some(tls) => json!([
            public("public_https", tls.listen, Some(tls)),
            hcm("public_https", true),
            {
                "name": "public_http",
                "address": socket(spec.listen),
                "per_connection_buffer_limit_bytes": 32768,
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": redirect_manager(spec, tls.listen.port()),
                }] }],
            },
        ]),
    }
}

/// The bootstrap extension internal listeners need.
pub fn bootstrap_extension() -> Value {
    json!({
        "name": "envoy.bootstrap.internal_listener",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener" },
    })
}

/// Envoy 1.40 ends an internal-listener connection closed by its server side (the HCM after
/// `Connection: close`) with a reset, and `tcp_proxy` passes a reset on as a reset, dropping
/// the response it had not yet written: every `Connection: close` request through the HCM
/// then fails with ECONNRESET (seen with colyseus.js matchmaking). With this runtime flag
/// off, the close is a plain close and the response is flushed first.
pub fn runtime() -> Value {
    json!({ "layers": [{ "name": "tcp_edge", "static_layer": {
        "envoy.reloadable_features.enable_send_rst_on_user_space_socket": false,
    } }] })
}

/// The cluster `tcp_proxy` hands non-room connections to: the HCM's internal listener,
/// with a PROXY protocol header carrying the client's address and port.
pub fn hcm_cluster() -> Value {
    json!({
        "name": HCM_INTERNAL,
        "type": "STATIC",
        "connect_timeout": "1s",
        "per_connection_buffer_limit_bytes": 32768,
        // Every non-room connection passes here: Envoy's default of 1,024 connections per
        // cluster would refuse clients beyond it (the downstream limit bounds them anyway).
        "circuit_breakers": { "thresholds": [{
            "max_connections": 1_000_000, "max_pending_requests": 1_000_000,
            "max_requests": 1_000_000,
        }] },
        "load_assignment": {
            "cluster_name": HCM_INTERNAL,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "envoy_internal_address": { "server_listener_name": HCM_INTERNAL } } } }] }],
        },
        "transport_socket": {
            "name": "envoy.transport_sockets.upstream_proxy_protocol",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
                "config": { "version": "V2" },
                "transport_socket": {
                    "name": "envoy.transport_sockets.raw_buffer",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" },
                },
            },
        },
    })
}

/// The HCM's internal listener. `tls`: the public listener ended TLS, so the HCM (which
/// sees a plain internal connection) is told the scheme was `https`.
pub fn internal_listener(mut hcm: Value, tls: bool) -> Value {
    if tls {
        if let Some(add) =
            hcm["route_config"]["virtual_hosts"][0]["request_headers_to_add"].as_array_mut()
        {
            add.push(json!({
                "header": { "key": "x-forwarded-proto", "value": "https" },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }));
        }
    }
    json!({
        "name": HCM_INTERNAL,
        "internal_listener": {},
        "per_connection_buffer_limit_bytes": 32768,
        "listener_filters": [{
            "name": "envoy.filters.listener.proxy_protocol",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol" },
        }],
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }] }],
    })
}

/// The public listener's filters: the routing filter as a network filter, then `tcp_proxy`.
pub fn public_filters(spec: &BootstrapSpec<'_>, tls: bool) -> Value {
    let mut routing = spec.routing.clone();
    routing.edge = Some(routing::EdgeSettings {
        hcm_cluster: HCM_INTERNAL.to_owned(),
        scheme: if tls { "https" } else { "http" }.to_owned(),
        // A silent or slow client is held no longer than the HCM would hold it.
        head_timeout: spec.silent_connection_timeout.clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(60),
        ),
        max_head_len: usize::try_from(MAX_HEAD_BYTES).unwrap_or(usize::MAX),
    });
    let plugin = serde_json::to_string(&routing::PluginConfig::from(&routing)).unwrap_or_default();
    json!([
        {
            "name": "envoy.filters.network.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                "config": {
                    "name": "colyseus_edge",
                    "vm_config": super::vm_config(spec),
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": plugin,
                    },
                    "fail_open": false,
                },
            },
        },
        {
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "edge",
                "cluster": HCM_INTERNAL,
                "max_early_data_bytes": MAX_EARLY_DATA_BYTES,
                // As the HCM's stream idle timeout (`SOCKET_TIMEOUT`) for a WebSocket.
                "idle_timeout": seconds(spec.stream_idle_timeout),
            },
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_hcm_is_told_about_tls() {
        let hcm =
            json!({ "route_config": { "virtual_hosts": [{ "request_headers_to_add": [] }] } });
        let l = internal_listener(hcm.clone(), true);
        let add = &l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
            ["virtual_hosts"][0]["request_headers_to_add"];
        assert_eq!(add[0]["header"]["value"], "https");
        let l = internal_listener(hcm, false);
        assert_eq!(
            l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
                ["request_headers_to_add"],
            json!([])
        );
        assert_eq!(
            l["listener_filters"][0]["name"],
            "envoy.filters.listener.proxy_protocol"
        );
    }
}
