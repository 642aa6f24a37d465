//! `bootstrap --config-source xds`: Envoy takes its clusters over delta ADS from one or
//! more agents (`sync --xds-listen`) instead of from the CDS file. Pure.
//!
//! The agents are the endpoints of one static cluster. Envoy's xDS gRPC stream picks one;
//! when that agent dies the stream breaks, the active TCP check marks it down within about
//! a second, and the reconnect (after a jittered 0-50 ms) goes to another agent, which serves the same content-hashed
//! versions (so only what changed meanwhile travels). Envoy keeps every cluster it has
//! while no agent answers. Listeners stay static, as with the file sink.

use routing::ClusterNames;
use serde_json::{json, Value};

use crate::model::{Endpoint, Host};

/// The static cluster of the xDS servers. It must never pass the route guard.
pub const XDS_CLUSTER: &str = "colyseus-envoy-xds";

/// Backoff of Envoy's xDS stream reconnects (Envoy's defaults: 500 ms, 30 s).
const XDS_RETRY_BASE: &str = "0.050s";
const XDS_RETRY_MAX: &str = "5s";

/// Where Envoy's dynamic clusters come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "daemon", derive(clap::ValueEnum))]
pub enum ConfigSource {
    /// The CDS file the agent beside Envoy writes (one host).
    #[default]
    File,
    /// Delta ADS over gRPC from the `--xds-server` agents (several hosts).
    Xds,
}

/// What the xDS bootstrap needs beyond the common spec.
#[derive(Debug, Clone)]
pub struct XdsSpec<'a> {
    /// The agents' `--xds-listen` addresses, in no particular order.
    pub servers: &'a [Endpoint],
    /// This Envoy's node id: what the agents know it by (metrics, ACK-gated lookups).
    pub node_id: &'a str,
    /// Every agent's API (`sync --api-addr`), for the filter's room lookups and process
    /// list: they replace the single `--agent-api-addr` endpoint, with an active check so
    /// a dead agent is skipped. Empty: keep `--agent-api-addr` alone.
    pub agent_apis: &'a [Endpoint],
}

/// Why an xDS bootstrap cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XdsBootstrapError {
    #[error("--config-source xds needs at least one --xds-server HOST:PORT")]
    NoServer,
    #[error("--node-id must be 1-128 printable ASCII characters, got {0:?}")]
    BadNodeId(String),
    #[error("the xDS cluster name {XDS_CLUSTER:?} would pass the route guard of cluster names {0:?}: choose another --cluster-prefix")]
    GuardedName(String),
}

/// Turns a file-sink bootstrap (`bootstrap::render`) into an xDS one: node id, ADS as the
/// CDS source, and the xDS servers' cluster.
///
/// # Errors
/// No server, a bad node id, or a cluster prefix that would let clients name the xDS cluster.
pub fn apply(
    doc: &mut Value,
    spec: &XdsSpec<'_>,
    names: &ClusterNames,
    agent_cluster: &str,
) -> Result<(), XdsBootstrapError> {
    if spec.servers.is_empty() {
        return Err(XdsBootstrapError::NoServer);
    }
    let id = spec.node_id;
    if routing::wire::node_id(id.as_bytes()).is_none() {
        return Err(XdsBootstrapError::BadNodeId(id.to_owned()));
    }
    if names.is_guarded(XDS_CLUSTER) {
        return Err(XdsBootstrapError::GuardedName(names.prefix().to_owned()));
    }
    doc["node"]["id"] = json!(id);
    doc["dynamic_resources"] = json!({
        "ads_config": {
            "api_type": "DELTA_GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{ "envoy_grpc": {
                "cluster_name": XDS_CLUSTER,
                // Envoy's default first retry of a broken xDS stream is a jittered 0-500 ms
                // (500 ms base, 30 s max): that was the whole failover time measured in
                // BENCHMARKS.md. A 50 ms base moves an Envoy in 0-50 ms; the 5 s cap keeps
                // retries cheap while no agent answers.
                "retry_policy": { "retry_back_off": {
                    "base_interval": XDS_RETRY_BASE, "max_interval": XDS_RETRY_MAX } },
            } }],
            "set_node_on_first_message_only": true,
        },
        "cds_config": { "resource_api_version": "V3", "ads": {} },
    });
    if let Some(clusters) = doc["static_resources"]["clusters"].as_array_mut() {
        if !spec.agent_apis.is_empty() {
            let agent = clusters
                .iter_mut()
                .find(|c| c["name"] == json!(agent_cluster));
            if let Some(agent) = agent {
                *agent = servers_cluster(agent_cluster, spec.agent_apis, false);
            }
        }
        clusters.push(servers_cluster(XDS_CLUSTER, spec.servers, true));
    }
    Ok(())
}

/// Agents' endpoints as one cluster with an active TCP check, so a dead agent is skipped
/// (by the xDS reconnect, by lookups) instead of retried with backoff. `http2` for gRPC.
fn servers_cluster(name: &str, servers: &[Endpoint], http2: bool) -> Value {
    let any_name = servers.iter().any(|e| matches!(e.host, Host::Name(_)));
    // One priority per agent, in the order given: every cluster built from the same list
    // (the xDS servers, the agents' APIs) goes to the first healthy agent, so the agent
    // answering this Envoy's lookups is the one it streams from, which knows its ACKs.
    let endpoints: Vec<Value> = servers
        .iter()
        .enumerate()
        .map(|(priority, e)| {
            let address = match &e.host {
                Host::Ip(ip) => ip.to_string(),
                Host::Name(n) => n.clone(),
            };
            json!({ "priority": priority, "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": address, "port_value": e.port } } } }] })
        })
        .collect();
    let mut cluster = json!({
        "name": name,
        "type": if any_name { "STRICT_DNS" } else { "STATIC" },
        "connect_timeout": "0.250s",
        "lb_policy": "ROUND_ROBIN",
        "health_checks": [{
            "timeout": "0.250s",
            "interval": "0.500s",
            "no_traffic_interval": "0.500s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "tcp_health_check": {},
        }],
        // A refused connection takes the agent out at once: with priorities the reconnect
        // would otherwise try the dead first agent again until the health check notices
        // (within 0.5 s). Answers (a 503 `not_acked`) never eject. The ejection is short
        // and capped: Envoy multiplies it by the host's ejection count, so an agent that
        // restarted a few times stayed ejected for seconds after it came back, and when
        // the other agent then died Envoy, with no host left, kept dialling the dead one
        // (failover 1-2 s instead of 50 ms, seen in bench-converge failover).
        "outlier_detection": {
            "split_external_local_origin_errors": true,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "enforcing_local_origin_success_rate": 0,
            "enforcing_failure_percentage": 0,
            "enforcing_failure_percentage_local_origin": 0,
            "max_ejection_percent": 100,
            "base_ejection_time": "0.250s",
            "max_ejection_time": "0.500s",
            "interval": "0.100s",
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": endpoints,
        },
        // Envoy merges health-only changes (the check, an ejection) over a 1 s window by
        // default: an agent that came back less than a second before the other died left
        // the dead one looking healthy to the load balancer, and Envoy redialled it with
        // growing backoff for 1-2 s (bench-converge failover). A few hosts: apply at once.
        "common_lb_config": { "update_merge_window": "0s" },
    });
    if http2 {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {
                    // An agent host that vanishes without a FIN is noticed in seconds.
                    "connection_keepalive": { "interval": "5s", "timeout": "3s" },
                } },
            },
        });
    }
    if any_name {
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    cluster
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Vec<Endpoint> {
        vec![
            Endpoint {
                host: Host::Ip("10.0.0.1".parse().unwrap()),
                port: 18000,
            },
            Endpoint {
                host: Host::Ip("10.0.0.2".parse().unwrap()),
                port: 18000,
            },
        ]
    }

    #[test]
    fn ads_replaces_the_file_source() {
        let mut doc = json!({
            "node": { "id": "colyseus-envoy", "cluster": "colyseus-envoy" },
            "dynamic_resources": { "cds_config": { "path_config_source": {} } },
            "static_resources": { "clusters": [{ "name": "colyseus-agent" }] },
        });
        let servers = servers();
        let spec = XdsSpec {
            servers: &servers,
            node_id: "edge-1",
            agent_apis: &servers[..1],
        };
        apply(&mut doc, &spec, &ClusterNames::default(), "colyseus-agent").unwrap();
        assert_eq!(doc["node"]["id"], "edge-1");
        assert_eq!(doc["node"]["cluster"], "colyseus-envoy");
        let dynamic = &doc["dynamic_resources"];
        assert!(dynamic["cds_config"].get("path_config_source").is_none());
        assert_eq!(dynamic["cds_config"]["ads"], json!({}));
        assert_eq!(dynamic["ads_config"]["api_type"], "DELTA_GRPC");
        let grpc = &dynamic["ads_config"]["grpc_services"][0]["envoy_grpc"];
        assert_eq!(grpc["cluster_name"], XDS_CLUSTER);
        assert_eq!(
            grpc["retry_policy"]["retry_back_off"]["base_interval"],
            XDS_RETRY_BASE
        );
        let clusters = doc["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 2);
        let xds = &clusters[1];
        assert_eq!(xds["name"], XDS_CLUSTER);
        assert_eq!(xds["type"], "STATIC");
        // One priority per agent, in the flags' order (the API cluster's too).
        let eps = xds["load_assignment"]["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 2);
        for (i, ep) in eps.iter().enumerate() {
            assert_eq!(ep["priority"], i);
            let addr = &ep["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
            assert_eq!(addr["address"], format!("10.0.0.{}", i + 1));
        }
        assert_eq!(
            xds["typed_extension_protocol_options"]
                .as_object()
                .map(|o| o.len()),
            Some(1)
        );
        let agent = &clusters[0];
        assert_eq!(agent["name"], "colyseus-agent");
        assert_eq!(agent["health_checks"][0]["tcp_health_check"], json!({}));
        assert!(agent.get("typed_extension_protocol_options").is_none());
        assert_eq!(agent["load_assignment"]["endpoints"][0]["priority"], 0);
        // A refused connection ejects; an answer (even a 503) never does.
        let od = &agent["outlier_detection"];
        assert_eq!(od["consecutive_local_origin_failure"], 1);
        assert_eq!(od["enforcing_consecutive_5xx"], 0);
        assert_eq!(xds["outlier_detection"], *od);
        // Health changes reach the load balancer at once, not merged over a second.
        for c in [agent, xds] {
            assert_eq!(c["common_lb_config"]["update_merge_window"], "0s");
        }
    }

    #[test]
    fn refuses_what_would_not_work_or_would_be_unsafe() {
        let mut doc = json!({ "static_resources": { "clusters": [] } });
        let servers = servers();
        let ok = XdsSpec {
            servers: &servers,
            node_id: "edge-1",
            agent_apis: &[],
        };
        let none = XdsSpec {
            servers: &[],
            ..ok.clone()
        };
        assert_eq!(
            apply(&mut doc, &none, &ClusterNames::default(), "a"),
            Err(XdsBootstrapError::NoServer)
        );
        for bad in ["", "a b", &"x".repeat(129)] {
            let spec = XdsSpec {
                node_id: bad,
                ..ok.clone()
            };
            assert!(apply(&mut doc, &spec, &ClusterNames::default(), "a").is_err());
        }
        // A prefix that the xDS cluster's name starts with would let a path name it.
        let names = ClusterNames::new("colyseus-", "all").unwrap();
        assert!(matches!(
            apply(&mut doc, &ok, &names, "a"),
            Err(XdsBootstrapError::GuardedName(_))
        ));
    }
}
