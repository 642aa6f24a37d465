//! One state-of-the-world ADS stream: every response carries every resource of its type
//! that Envoy asked for (every cluster; the EDS clusters it names). Per type: the version
//! and names last sent, and the one response awaiting its ACK or NACK.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::info;

use super::clients::Pending;
use super::server::{Ads, Read, Registration, TYPES};
use super::snapshot::{Resource, Snapshot, ENDPOINT_TYPE};

/// What a state-of-the-world stream tracks per resource type.
#[derive(Debug, Default)]
struct SotwType {
    subscribed: bool,
    /// Names asked for (none: every cluster; for EDS, none).
    names: Vec<String>,
    /// Version and names last sent (or that Envoy said it had).
    sent: Option<(String, Vec<String>)>,
    /// The response awaiting an answer, by nonce.
    pending: Option<(String, Pending)>,
}

/// One state-of-the-world stream: every response carries every resource of its type.
pub(super) async fn stream(
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
    let mut types: [SotwType; 2] = Default::default();
    let mut synced = String::new();
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            message = requests.message() => {
                let (req, t, id) = match reg.read(message, "sotw") {
                    Read::Request { req, t, id, opened } => {
                        if opened {
                            info!(node = %reg.node, version = %req.version_info, "An Envoy opened a state-of-the-world xDS stream.");
                        }
                        (req, t, id)
                    }
                    Read::Skip => continue,
                    Read::End => break,
                };
                let state = &mut types[t];
                state.names = req.resource_names.iter().filter(|n| *n != "*").cloned().collect();
                if !state.subscribed && !req.version_info.is_empty() {
                    state.sent = Some((req.version_info.clone(), state.names.clone()));
                    // A reconnecting Envoy that holds the current resources has them all.
                    let snapshot = snapshots.borrow().clone();
                    if snapshot.type_version(TYPES[t]) == req.version_info {
                        let versions = wanted(&snapshot, t, &state.names)
                            .map(|r| (r.name.clone(), r.version.clone()))
                            .collect();
                        ads.clients.assume_acked(id, TYPES[t], &versions);
                    }
                }
                state.subscribed = true;
                let answered = match state.pending.take() {
                    Some((n, p)) if n == req.response_nonce => Some(p),
                    other => {
                        state.pending = other;
                        None
                    }
                };
                match (answered, &req.error_detail) {
                    (None, _) => {}
                    (Some(_), Some(status)) => {
                        reg.nacked(id, &req.response_nonce, &req.type_url, status);
                    }
                    (Some(p), None) => {
                        let current = snapshots.borrow().version.clone();
                        let whole = synced == current && types.iter().all(|s| s.pending.is_none());
                        ads.clients.ack(id, &p, if whole { &current } else { "" });
                    }
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
        if !snapshot.ready {
            continue;
        }
        for (t, state) in types.iter_mut().enumerate() {
            // EDS is never a wildcard: no names, nothing to send.
            if !state.subscribed || (TYPES[t] == ENDPOINT_TYPE && state.names.is_empty()) {
                continue;
            }
            let version = snapshot.type_version(TYPES[t]).to_owned();
            if state.sent.as_ref() == Some(&(version.clone(), state.names.clone())) {
                continue;
            }
            let resources: Vec<&Arc<Resource>> = wanted(&snapshot, t, &state.names).collect();
            nonce += 1;
            let response = DiscoveryResponse {
                version_info: version.clone(),
                resources: resources.iter().map(|r| r.any.clone()).collect(),
                type_url: TYPES[t].to_owned(),
                nonce: nonce.to_string(),
                ..Default::default()
            };
            state.pending = Some((
                response.nonce.clone(),
                Pending {
                    type_url: TYPES[t],
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
            state.sent = Some((version, state.names.clone()));
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
        synced.clone_from(&snapshot.version);
    }
}

/// The resources of type `TYPES[t]` a state-of-the-world request asks for.
fn wanted<'a>(
    snapshot: &'a Snapshot,
    t: usize,
    names: &'a [String],
) -> impl Iterator<Item = &'a Arc<Resource>> + 'a {
    snapshot
        .of_type(TYPES[t])
        .into_iter()
        .flat_map(|m| m.values())
        .filter(move |r| names.is_empty() || names.contains(&r.name))
}
