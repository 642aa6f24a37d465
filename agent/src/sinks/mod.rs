//! Where the desired state goes. Every sink subscribes to the controller's
//! [`DesiredState`](crate::controller::DesiredState).
//!
//! # The sink interface
//! A sink is a subscriber of `tokio::sync::watch::Receiver<Arc<DesiredState>>`
//! ([`crate::controller::Controller::subscribe`], any number of times, before or after the
//! controller starts). Why a watch of an immutable value rather than a `Sink` trait called
//! by the controller:
//! - The controller never waits for a sink: publishing is a pointer swap. A slow or
//!   stalled sink (an Envoy on a slow link) cannot hold up Redis or the other sinks.
//! - The state is level-triggered: a sink needs the newest state, not every step to it. A
//!   subscriber slower than the changes skips to the newest version, which is what Envoy
//!   should get anyway (one update instead of a backlog).
//! - Many subscribers come free: an xDS server clones the receiver per Envoy stream, and
//!   each stream sends from the newest `Arc` it sees (one allocation, shared by all).
//! - `version` increases by one per change, so a subscriber can tell what it has sent,
//!   and the controller publishes nothing when a re-read finds nothing new.
//!
//! A subscriber loops: `let state = rx.borrow_and_update().clone();` apply it, then
//! `rx.changed().await` (an error means the controller stopped). It decides for itself
//! what a [`Provenance::Restored`](crate::controller::Provenance) state (from the state
//! file, before Redis answered) means for it; it must not hold the borrow across an
//! `.await`.
//!
//! A sink written against `apply(&Registry, &Weights)` (the CDS files' shape) plugs in as
//! its own task:
//!
//! ```text
//! let mut rx = controller.subscribe();
//! tokio::spawn(async move {
//!     loop {
//!         let state = rx.borrow_and_update().clone();
//!         if state.is_synced() {
//!             sink.apply(&state.routed, &state.weights);
//!         }
//!         if rx.changed().await.is_err() {
//!             break;
//!         }
//!     }
//! });
//! ```
//!
//! # Sinks
//! - [`local`]: the sinks of one host, applied in order by one task: the CDS files Envoy
//!   watches ([`envoy_files`]), then the API's view ([`api_view`]: `/processes`, room
//!   lookups, readiness), then the state file ([`state_file`]). The order keeps today's
//!   promise: the API names a process only once its cluster was written for Envoy.
//! - [`xds`]: with `sync --xds-listen`, an ADS gRPC server serving the same clusters to any
//!   number of Envoys ([`xds::follow`] subscribes it; synced states only).

#[cfg(feature = "daemon")]
pub mod api_view;
pub mod envoy_files;
#[cfg(feature = "daemon")]
pub mod local;
#[cfg(feature = "daemon")]
pub mod state_file;
#[cfg(feature = "daemon")]
pub mod xds;
