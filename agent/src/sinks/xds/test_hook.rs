//! TEST-ONLY hook: makes the xDS server send a cluster that Envoy refuses, so that NACK
//! handling can be proven against a real Envoy (`tests/e2e/tests/xds_ack.rs`).
//!
//! No real input was found that the agent accepts and Envoy 1.40 refuses: registrations are
//! checked (id alphabet and length, address, port, allowed networks) before they become
//! clusters, and the odd endpoints tried in a static cluster (0.0.0.0, broadcast, multicast,
//! IPv6 loopback, port 0, the same endpoint twice) are all accepted by `envoy --mode
//! validate`. So
//! with `COLYSEUS_ENVOY_TEST_XDS_REFUSE_PORT=PORT` in its environment, the agent sends every
//! per-process cluster (default prefix `colyseus-process-`) with an endpoint on `PORT` with
//! a zero `connect_timeout`, which Envoy's validation refuses (it must be above 0 s). The
//! version stays that of the real cluster. Unset (always, outside that test), it does
//! nothing; set, the agent says so at start.

use std::sync::OnceLock;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use envoy_types::pb::google::protobuf::Duration;
use prost::Message;

/// The variable that arms the hook.
pub const REFUSE_PORT_ENV: &str = "COLYSEUS_ENVOY_TEST_XDS_REFUSE_PORT";

/// The port set in [`REFUSE_PORT_ENV`], read once.
fn refused_port() -> Option<u32> {
    static PORT: OnceLock<Option<u32>> = OnceLock::new();
    *PORT.get_or_init(|| {
        let port = std::env::var(REFUSE_PORT_ENV).ok()?.parse().ok()?;
        tracing::warn!(
            port,
            "TEST-ONLY {REFUSE_PORT_ENV} is set: process clusters on this port are sent in a form Envoy refuses."
        );
        Some(port)
    })
}

/// Arms the hook's warning at start (it is read lazily otherwise).
pub fn announce() {
    let _ = refused_port();
}

fn on_port(cluster: &Cluster, port: u32) -> bool {
    let endpoints = cluster.load_assignment.iter().flat_map(|l| &l.endpoints);
    endpoints.flat_map(|e| &e.lb_endpoints).any(|lb| {
        let Some(HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
            return false;
        };
        let addr = ep.address.as_ref().and_then(|a| a.address.as_ref());
        matches!(addr, Some(address::Address::SocketAddress(s))
            if s.port_specifier == Some(socket_address::PortSpecifier::PortValue(port)))
    })
}

/// Spoils the refused clusters of `response` (see the module doc).
pub fn apply(response: &mut DeltaDiscoveryResponse) {
    let Some(port) = refused_port() else { return };
    if response.type_url != super::snapshot::CLUSTER_TYPE {
        return;
    }
    for r in &mut response.resources {
        let Some(any) = r.resource.as_mut() else {
            continue;
        };
        let Ok(mut cluster) = Cluster::decode(any.value.as_slice()) else {
            continue;
        };
        if cluster.name.starts_with("colyseus-process-") && on_port(&cluster, port) {
            cluster.connect_timeout = Some(Duration::default());
            any.value = cluster.encode_to_vec();
        }
    }
}
