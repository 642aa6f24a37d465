//! The gRPC side: `AggregatedDiscoveryService`, delta and state-of-the-world, for clusters.
//!
//! Each stream is one task: it reads Envoy's requests and the latest snapshot, and sends
//! what this Envoy lacks. ACKs and NACKs are matched to the response by nonce. A NACK is
//! logged with Envoy's error detail and counted; what it refused is not sent again until it
//! changes (no retry loop), and later changes go on being sent.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::AggregatedDiscoveryService, DeltaDiscoveryRequest,
    DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource as PbResource,
};
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::clients::{Clients, Pending};
use super::snapshot::{DeltaChanges, DeltaSubscription, Snapshot, CLUSTER_TYPE};

/// The service: the latest snapshot, and the registry of connected Envoys.
#[derive(Debug, Clone)]
pub struct Ads {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub clients: Arc<Clients>,
}

impl Ads {
    /// `/metrics` lines of the xDS server.
    pub fn render_metrics(&self, out: &mut String) {
        let current = self.snapshots.borrow().clone();
        self.clients.render_metrics(out, &current.version);
    }

    /// What `agent status` shows: the served snapshot and the connected Envoys.
    pub fn status(&self) -> XdsStatus {
        let current = self.snapshots.borrow().clone();
        XdsStatus {
            snapshot: current.version.clone(),
            clusters: current.clusters.len(),
            ready: current.ready,
            clients: self.clients.views(),
        }
    }
}

/// Body of `/xds/clients`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct XdsStatus {
    /// Hash of the clusters served now (what an up-to-date Envoy has ACKed).
    pub snapshot: String,
    pub clusters: usize,
    /// False until the agent's first Redis read.
    pub ready: bool,
    pub clients: Vec<super::clients::ClientView>,
}

impl XdsStatus {
    /// The `agent status` lines: the snapshot, then one line per connected Envoy.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "xds: serving {} clusters (snapshot {}{}), {} Envoy stream(s)",
            self.clusters,
            self.snapshot,
            if self.ready {
                ""
            } else {
                ", NOT READY: no Redis read yet"
            },
            self.clients.len()
        );
        let _ = writeln!(
            out,
            "{:<24} {:<6} {:<8} {:>8} {:>6} {:>10}",
            "NODE", "XDS", "CURRENT", "CLUSTERS", "NACKS", "LAST ACK"
        );
        for c in &self.clients {
            let current = c.acked_snapshot.as_deref() == Some(self.snapshot.as_str());
            let _ = writeln!(
                out,
                "{:<24} {:<6} {:<8} {:>8} {:>6} {:>10}",
                c.node_id,
                c.protocol,
                if current { "yes" } else { "NO" },
                c.acked_clusters,
                c.nacks,
                c.last_ack_latency_ms
                    .map_or("-".to_owned(), |ms| format!("{ms:.1} ms")),
            );
            if let Some(nack) = &c.last_nack {
                let _ = writeln!(out, "  last NACK: {nack}");
            }
        }
    }
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Responses queued per stream before the stream task waits for Envoy to read.
const QUEUE: usize = 16;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(sotw(request.into_inner(), self.clone(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(delta(request.into_inner(), self.clone(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Unregisters a stream however its task ends.
struct Registration<'a> {
    clients: &'a Clients,
    id: Option<u64>,
    node: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.clients.disconnect(id);
            info!(node = %self.node, "An Envoy's xDS stream ended.");
        }
    }
}

/// One delta stream.
async fn delta(
    mut requests: Streaming<DeltaDiscoveryRequest>,
    ads: Ads,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let mut snapshots = ads.snapshots.clone();
    let opened = std::time::Instant::now();
    let mut reg = Registration {
        clients: &ads.clients,
        id: None,
        node: String::new(),
    };
    let mut sub = DeltaSubscription::default();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut nonce = 0u64;
    let mut answered = false;
    loop {
        tokio::select! {
            req = requests.message() => {
                let req = match req {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        debug!(node = %reg.node, error = %e, "xDS stream read failed.");
                        break;
                    }
                };
                if req.type_url != CLUSTER_TYPE {
                    debug!(node = %reg.node, type_url = %req.type_url, "Ignoring a subscription to a type this agent does not serve.");
                    continue;
                }
                let first = reg.id.is_none();
                if first {
                    reg.node = req.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
                    let id = ads.clients.connect(&reg.node, "delta");
                    reg.id = Some(id);
                    ads.clients.assume_acked(id, &req.initial_resource_versions);
                    info!(node = %reg.node, known = req.initial_resource_versions.len(), "An Envoy opened a delta xDS stream.");
                }
                let id = reg.id.unwrap_or_default();
                if !req.response_nonce.is_empty() {
                    if let Some(p) = pending.remove(&req.response_nonce) {
                        match &req.error_detail {
                            Some(status) => {
                                warn!(node = %reg.node, nonce = %req.response_nonce, code = status.code, detail = %status.message, "Envoy refused (NACKed) clusters; they are not resent until they change.");
                                ads.clients.nack(id, &status.message);
                            }
                            None => ads.clients.ack(id, &p, &snapshots.borrow().version),
                        }
                    }
                }
                sub.update(
                    first,
                    &req.resource_names_subscribe,
                    &req.resource_names_unsubscribe,
                    &req.initial_resource_versions,
                );
            }
            changed = snapshots.changed(), if reg.id.is_some() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        if reg.id.is_none() {
            continue;
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if !snapshot.ready {
            continue;
        }
        let changes = sub.diff(&snapshot.clusters);
        // The first answer goes out even when empty: Envoy's initialization waits for it.
        if changes.is_empty() && answered {
            continue;
        }
        answered = true;
        nonce += 1;
        let response = delta_response(&changes, &snapshot, nonce);
        sub.sent(&changes);
        pending.insert(
            response.nonce.clone(),
            Pending {
                changes: changes
                    .resources
                    .iter()
                    .map(|r| (r.name.clone(), Some(r.version.clone())))
                    .chain(changes.removed.iter().map(|n| (n.clone(), None)))
                    .collect(),
                snapshot: snapshot.version.clone(),
                // A change older than the stream counts from the stream's start.
                created: snapshot.created.max(opened),
                complete: false,
            },
        );
        debug!(node = %reg.node, changed = changes.resources.len(), removed = changes.removed.len(), "Sending clusters.");
        if tx.send(Ok(response)).await.is_err() {
            break;
        }
    }
}

fn delta_response(
    changes: &DeltaChanges,
    snapshot: &Snapshot,
    nonce: u64,
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: snapshot.version.clone(),
        resources: changes
            .resources
            .iter()
            .map(|r| PbResource {
                name: r.name.clone(),
                version: r.version.clone(),
                resource: Some(r.any.clone()),
                ..Default::default()
            })
            .collect(),
        type_url: CLUSTER_TYPE.to_owned(),
        removed_resources: changes.removed.clone(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// One state-of-the-world stream: every response carries every cluster.
async fn sotw(
    mut requests: Streaming<DiscoveryRequest>,
    ads: Ads,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut snapshots = ads.snapshots.clone();
    let opened = std::time::Instant::now();
    let mut reg = Registration {
        clients: &ads.clients,
        id: None,
        node: String::new(),
    };
    // Version last sent (or that Envoy said it had) and the response awaiting an answer.
    let mut sent_version: Option<String> = None;
    let mut pending: Option<(String, Pending)> = None;
    let mut names: Vec<String> = Vec::new();
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            req = requests.message() => {
                let req = match req {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        debug!(node = %reg.node, error = %e, "xDS stream read failed.");
                        break;
                    }
                };
                if req.type_url != CLUSTER_TYPE {
                    debug!(node = %reg.node, type_url = %req.type_url, "Ignoring a subscription to a type this agent does not serve.");
                    continue;
                }
                if reg.id.is_none() {
                    reg.node = req.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
                    reg.id = Some(ads.clients.connect(&reg.node, "sotw"));
                    info!(node = %reg.node, version = %req.version_info, "An Envoy opened a state-of-the-world xDS stream.");
                    if !req.version_info.is_empty() {
                        sent_version = Some(req.version_info.clone());
                        // A reconnecting Envoy that holds the current clusters has them all.
                        let snapshot = snapshots.borrow().clone();
                        if snapshot.version == req.version_info {
                            let versions = snapshot.clusters.values().map(|r| (r.name.clone(), r.version.clone())).collect();
                            ads.clients.assume_acked(reg.id.unwrap_or_default(), &versions);
                        }
                    }
                }
                let id = reg.id.unwrap_or_default();
                names = req.resource_names.iter().filter(|n| *n != "*").cloned().collect();
                match pending.take() {
                    Some((n, p)) if n == req.response_nonce => match &req.error_detail {
                        Some(status) => {
                            warn!(node = %reg.node, nonce = %n, code = status.code, detail = %status.message, "Envoy refused (NACKed) the clusters; they are not resent until they change.");
                            ads.clients.nack(id, &status.message);
                        }
                        None => ads.clients.ack(id, &p, &snapshots.borrow().version),
                    },
                    other => pending = other,
                }
            }
            changed = snapshots.changed(), if reg.id.is_some() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        if reg.id.is_none() {
            continue;
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if !snapshot.ready || sent_version.as_deref() == Some(snapshot.version.as_str()) {
            continue;
        }
        let resources: Vec<_> = snapshot
            .clusters
            .values()
            .filter(|r| names.is_empty() || names.contains(&r.name))
            .collect();
        nonce += 1;
        let response = DiscoveryResponse {
            version_info: snapshot.version.clone(),
            resources: resources.iter().map(|r| r.any.clone()).collect(),
            type_url: CLUSTER_TYPE.to_owned(),
            nonce: nonce.to_string(),
            ..Default::default()
        };
        pending = Some((
            response.nonce.clone(),
            Pending {
                changes: resources
                    .iter()
                    .map(|r| (r.name.clone(), Some(r.version.clone())))
                    .collect(),
                snapshot: snapshot.version.clone(),
                // A change older than the stream counts from the stream's start.
                created: snapshot.created.max(opened),
                complete: true,
            },
        ));
        sent_version = Some(snapshot.version.clone());
        if tx.send(Ok(response)).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::xds::clients::ClientView;

    #[test]
    fn status_lines_say_which_envoys_are_current() {
        let client = |node: &str, acked: &str, nack: Option<&str>| ClientView {
            node_id: node.into(),
            protocol: "delta".into(),
            connected_unix_ms: 0,
            acked_clusters: 3,
            acked_snapshot: Some(acked.into()),
            nacks: u64::from(nack.is_some()),
            last_nack: nack.map(str::to_owned),
            last_ack_latency_ms: Some(1.25),
        };
        let status = XdsStatus {
            snapshot: "s2".into(),
            clusters: 3,
            ready: true,
            clients: vec![
                client("edge-1", "s2", None),
                client("edge-2", "s1", Some("bad")),
            ],
        };
        let mut out = String::new();
        status.render(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].contains("3 clusters") && lines[0].contains("2 Envoy"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("edge-1") && lines[2].contains(" yes "),
            "{out}"
        );
        assert!(
            lines[3].starts_with("edge-2") && lines[3].contains(" NO "),
            "{out}"
        );
        assert_eq!(lines[4], "  last NACK: bad");
    }
}
