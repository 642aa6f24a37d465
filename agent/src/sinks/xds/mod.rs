//! The xDS sink: an `AggregatedDiscoveryService` (delta and state-of-the-world ADS over
//! gRPC) serving the same clusters the CDS file sink writes, to any number of Envoys.
//!
//! Layout:
//! - [`convert`]: the file sink's JSON clusters as `envoy-types` protobuf messages (pure).
//! - [`build`]: snapshots built incrementally, only changed resources re-rendered (pure).
//! - [`snapshot`]: immutable, content-versioned snapshots and the per-stream delta
//!   bookkeeping (pure).
//! - [`server`]: the gRPC service and its delta streams (nonces, ACK/NACK, pushes); `sotw`:
//!   its state-of-the-world streams.
//! - [`clients`]: the connected Envoys and what each has ACKed (metrics, API, lookups).
//! - [`test_hook`]: TEST-ONLY, off unless its variable is set: a cluster Envoy refuses.
//!
//! Clusters (CDS) and the all-processes cluster's hosts (EDS), over one ADS stream. Each
//! process's cluster is byte-for-byte the file sink's (endpoint inline, `STATIC`). The
//! all-processes cluster, which lists every active process, is the file sink's cluster
//! made `type: EDS`: its hosts travel as a `ClusterLoadAssignment`, so a registration
//! sends one new cluster and updates the all cluster's hosts in place, where a cluster
//! with every host inline would be re-sent and rebuilt whole. The effective clusters are
//! the file sink's, so switching sinks changes nothing in routing. (A fleet with DNS names
//! among its active endpoints keeps the inline `STRICT_DNS` cluster: see [`build`].)

pub mod build;
pub mod clients;
pub mod convert;
pub mod server;
pub mod snapshot;
mod sotw;
pub mod test_hook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio::sync::watch;
use tracing::error;

use crate::balance::Weights;
use crate::model::Registry;
use crate::sinks::envoy_files::ClusterOptions;
use build::{AllEndpoints, Builder};
use clients::Clients;
use snapshot::Snapshot;

/// The sink half, called by the sync loop: builds snapshots and hands them to the server.
#[derive(Debug)]
pub struct XdsSink {
    builder: Builder,
    tx: watch::Sender<Arc<Snapshot>>,
    clients: Arc<Clients>,
    /// Conversion failures (a bug), counted for `/metrics`.
    pub conversion_errors: u64,
}

impl XdsSink {
    /// A sink and the service that serves what it is given (start it with [`serve`]).
    pub fn new(options: ClusterOptions) -> (Self, server::Ads) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty()));
        let clients = Arc::new(Clients::default());
        let ads = server::Ads {
            snapshots: rx,
            clients: clients.clone(),
        };
        (
            Self {
                builder: Builder::new(options, AllEndpoints::Eds),
                tx,
                clients,
                conversion_errors: 0,
            },
            ads,
        )
    }

    pub fn clients(&self) -> Arc<Clients> {
        self.clients.clone()
    }

    /// Makes the served clusters match `routed`. Does not block: the streams pick the new
    /// snapshot up. An unchanged state wakes no stream. Returns whether it changed.
    pub fn apply(&mut self, routed: &Registry, weights: &Weights) -> bool {
        let (snapshot, errors) = self.builder.build(routed, weights);
        for e in &errors {
            error!(error = %e, "Cannot express a cluster for xDS; it is left out.");
        }
        self.conversion_errors += errors.len() as u64;
        if self.tx.borrow().version == snapshot.version {
            return false;
        }
        self.tx.send_replace(Arc::new(snapshot));
        true
    }

    /// The snapshot being served.
    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }
}

/// Subscribes `sink` to the controller's desired state until the controller stops. Only
/// states backed by a full read of Redis are served: a fresh agent restored from its state
/// file never hands a failing-over Envoy a stale or empty fleet.
pub async fn follow(
    mut rx: watch::Receiver<Arc<crate::controller::DesiredState>>,
    mut sink: XdsSink,
) {
    loop {
        let state = rx.borrow_and_update().clone();
        if state.is_synced() {
            sink.apply(&state.routed, &state.weights);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `ads` on `listener` until `shutdown` resolves.
///
/// # Errors
/// The gRPC server failing (not a stream failing: those end alone).
pub async fn serve(
    listener: tokio::net::TcpListener,
    ads: server::Ads,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    test_hook::announce();
    tonic::transport::Server::builder()
        // A dead Envoy (host gone without a FIN) is noticed and its stream dropped.
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(
            AggregatedDiscoveryServiceServer::new(ads)
                .max_encoding_message_size(usize::MAX)
                .max_decoding_message_size(16 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .with_context(|| format!("serving xDS on {addr:?}"))
}
