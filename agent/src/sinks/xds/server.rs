//! The gRPC side: `AggregatedDiscoveryService`, delta and state-of-the-world, for clusters
//! and the EDS clusters' hosts, each type with its own subscription, nonces and ACKs on the
//! one stream.
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
use super::snapshot::{DeltaChanges, DeltaSubscription, Snapshot, CLUSTER_TYPE, ENDPOINT_TYPE};

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
            endpoints: current.endpoints.len(),
            ready: current.ready,
            clients: self.clients.views(),
            gate: crate::ack_gate::GateView::default(),
        }
    }
}

/// Body of `/xds/clients`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct XdsStatus {
    /// Hash of the clusters served now (what an up-to-date Envoy has ACKed).
    pub snapshot: String,
    pub clusters: usize,
    /// EDS clusters whose hosts are served apart (`ClusterLoadAssignment`s).
    #[serde(default)]
    pub endpoints: usize,
    /// False until the agent's first Redis read.
    pub ready: bool,
    pub clients: Vec<super::clients::ClientView>,
    /// What the ACK gate held back (filled by the API; see [`crate::ack_gate`]).
    #[serde(default)]
    pub gate: crate::ack_gate::GateView,
}

impl XdsStatus {
    /// The `agent status` lines: the snapshot, then one line per connected Envoy.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "xds: serving {} clusters, {} by EDS (snapshot {}{}), {} Envoy stream(s)",
            self.clusters,
            self.endpoints,
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
                // Envoy's detail holds the refused proto over many lines: one line here.
                let nack = nack.split_whitespace().collect::<Vec<_>>().join(" ");
                let _ = writeln!(out, "  last NACK: {nack}");
            }
        }
        let g = &self.gate;
        let _ = writeln!(
            out,
            "ack gate: {} room lookup(s) waited for their Envoy's ACK (mean {}, max {:.1} ms), {} answered not_acked at the bound; {} process row(s) withheld from /processes",
            g.lookups_waited,
            g.wait_mean_ms.map_or("-".to_owned(), |ms| format!("{ms:.1} ms")),
            g.wait_max_ms,
            g.lookups_timed_out,
            g.processes_withheld,
        );
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
        tokio::spawn(super::sotw::stream(request.into_inner(), self.clone(), tx));
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
pub(super) struct Registration<'a> {
    pub(super) clients: &'a Clients,
    pub(super) id: Option<u64>,
    pub(super) node: String,
}

/// What both ADS request types carry that a stream reads alike.
pub(super) trait AdsRequest {
    fn type_url(&self) -> &str;
    fn node_id(&self) -> String;
}

impl AdsRequest for DeltaDiscoveryRequest {
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn node_id(&self) -> String {
        self.node.as_ref().map(|n| n.id.clone()).unwrap_or_default()
    }
}

impl AdsRequest for DiscoveryRequest {
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn node_id(&self) -> String {
        self.node.as_ref().map(|n| n.id.clone()).unwrap_or_default()
    }
}

/// A stream's next message, as [`Registration::read`] sees it.
pub(super) enum Read<T> {
    /// A request of a served type: its index in [`TYPES`], the stream's id among the
    /// clients, and whether it was the stream's first (which registered it).
    Request {
        req: T,
        t: usize,
        id: u64,
        opened: bool,
    },
    /// A request of a type this agent does not serve: ignored.
    Skip,
    /// The stream ended or failed.
    End,
}

impl Registration<'_> {
    /// Reads the stream's next message; the first request of a served type registers the
    /// stream under its Envoy's node id as `protocol`.
    pub(super) fn read<T: AdsRequest>(
        &mut self,
        message: Result<Option<T>, Status>,
        protocol: &'static str,
    ) -> Read<T> {
        let req = match message {
            Ok(Some(r)) => r,
            Ok(None) => return Read::End,
            Err(e) => {
                debug!(node = %self.node, error = %e, "xDS stream read failed.");
                return Read::End;
            }
        };
        let Some(t) = TYPES.iter().position(|t| *t == req.type_url()) else {
            debug!(node = %self.node, type_url = %req.type_url(), "Ignoring a subscription to a type this agent does not serve.");
            return Read::Skip;
        };
        let opened = self.id.is_none();
        if opened {
            self.node = req.node_id();
            self.id = Some(self.clients.connect(&self.node, protocol));
        }
        Read::Request {
            req,
            t,
            id: self.id.unwrap_or_default(),
            opened,
        }
    }

    /// Envoy refused the response `nonce` of `type_url`: logged with its detail and counted.
    /// (A delta stream resends alone what was refused with others: see
    /// `DeltaSubscription::nacked`.)
    pub(super) fn nacked(
        &self,
        id: u64,
        nonce: &str,
        type_url: &str,
        status: &envoy_types::pb::google::rpc::Status,
    ) {
        warn!(node = %self.node, nonce = %nonce, type_url = %type_url, code = status.code, detail = ?status.message, "Envoy refused (NACKed) resources; a resource refused alone is not resent until it changes.");
        self.clients.nack(id, &status.message);
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.clients.disconnect(id);
            info!(node = %self.node, "An Envoy's xDS stream ended.");
        }
    }
}

/// The resource types served, in the order a change is sent: a new EDS cluster before its
/// hosts (Envoy asks for them once it has the cluster).
pub(super) const TYPES: [&str; 2] = [CLUSTER_TYPE, ENDPOINT_TYPE];

/// What a delta stream tracks per resource type.
#[derive(Debug, Default)]
struct DeltaType {
    sub: DeltaSubscription,
    /// The type's first request was seen.
    subscribed: bool,
    /// A response of this type went out (the first goes out even when empty).
    answered: bool,
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
    let mut types: [DeltaType; 2] = Default::default();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    // The snapshot whose every change this stream has sent.
    let mut synced = String::new();
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            message = requests.message() => {
                let (req, t, id) = match reg.read(message, "delta") {
                    Read::Request { req, t, id, opened } => {
                        if opened {
                            info!(node = %reg.node, known = req.initial_resource_versions.len(), "An Envoy opened a delta xDS stream.");
                        }
                        (req, t, id)
                    }
                    Read::Skip => continue,
                    Read::End => break,
                };
                let state = &mut types[t];
                let first = !state.subscribed;
                if first {
                    ads.clients.assume_acked(id, TYPES[t], &req.initial_resource_versions);
                }
                if !req.response_nonce.is_empty() {
                    if let Some(p) = pending.remove(&req.response_nonce) {
                        match &req.error_detail {
                            Some(status) => {
                                reg.nacked(id, &req.response_nonce, &req.type_url, status);
                                if p.type_url == TYPES[t] {
                                    state.sub.nacked(&p.changes);
                                }
                            }
                            None => {
                                let current = snapshots.borrow().version.clone();
                                let whole = pending.is_empty() && synced == current;
                                ads.clients.ack(id, &p, if whole { &current } else { "" });
                            }
                        }
                    }
                }
                state.sub.update(
                    first,
                    &req.resource_names_subscribe,
                    &req.resource_names_unsubscribe,
                    &req.initial_resource_versions,
                );
                state.subscribed = true;
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
        for (t, state) in types.iter_mut().enumerate() {
            if !state.subscribed {
                continue;
            }
            let changes = state.sub.diff(&snapshot, TYPES[t]);
            state.sub.sent(&changes, &snapshot.version);
            // The first answer goes out even when empty: Envoy's initialization waits for it.
            if changes.is_empty() && state.answered {
                continue;
            }
            state.answered = true;
            for changes in state.sub.batches(changes) {
                nonce += 1;
                let mut response = delta_response(TYPES[t], &changes, &snapshot, nonce);
                super::test_hook::apply(&mut response);
                pending.insert(
                    response.nonce.clone(),
                    Pending {
                        type_url: TYPES[t],
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
                debug!(node = %reg.node, type_url = TYPES[t], changed = changes.resources.len(), removed = changes.removed.len(), "Sending resources.");
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        }
        synced.clone_from(&snapshot.version);
    }
}

fn delta_response(
    type_url: &str,
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
        type_url: type_url.to_owned(),
        removed_resources: changes.removed.clone(),
        nonce: nonce.to_string(),
        ..Default::default()
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
            acked_endpoints: 1,
            acked_snapshot: Some(acked.into()),
            nacks: u64::from(nack.is_some()),
            last_nack: nack.map(str::to_owned),
            last_ack_latency_ms: Some(1.25),
        };
        let status = XdsStatus {
            snapshot: "s2".into(),
            clusters: 3,
            endpoints: 1,
            ready: true,
            clients: vec![
                client("edge-1", "s2", None),
                client("edge-2", "s1", Some("bad\n  cluster")),
            ],
            gate: crate::ack_gate::GateView {
                lookups_waited: 2,
                lookups_timed_out: 1,
                wait_mean_ms: Some(150.0),
                wait_max_ms: 300.0,
                processes_withheld: 4,
            },
        };
        let mut out = String::new();
        status.render(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].contains("3 clusters, 1 by EDS") && lines[0].contains("2 Envoy"),
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
        assert_eq!(lines[4], "  last NACK: bad cluster");
        assert!(
            lines[5].starts_with("ack gate: 2 room lookup(s) waited")
                && lines[5].contains("max 300.0 ms), 1 answered not_acked")
                && lines[5].contains("4 process row(s) withheld"),
            "{out}"
        );
    }
}
