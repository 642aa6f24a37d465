//! The colyseus-envoy agent: Colyseus presence in, Envoy config out.
//!
//! # Layout
//! - [`sources`]: read registrations (Redis presence) and convert them; decide nothing.
//! - [`model`]: pure; registrations and announcements -> the set of routable processes.
//! - [`rooms`]: pure; the room index (roomId -> process) from the matchmaker's listings.
//! - [`balance`]: pure; matchmaking weights of the processes from the load they report.
//! - [`sinks`]: desired state -> Envoy (config files in a watched directory today; the sink
//!   is replaceable, e.g. by a delta-xDS server for fleets of Envoys).
//! - [`sync`]: the loop tying them together, with the rules that keep routing safe when a
//!   source fails or Redis restarts empty.
//! - [`bootstrap`]: renders Envoy's static bootstrap from the same flags.
//! - [`api`], [`status`], [`metrics`]: the private HTTP API (`/live`, `/ready`, `/metrics`).
//! - [`probe`], [`state`], [`atomic_file`]: liveness probes, persisted sync state, safe writes.
//! - [`registrar`]: `register`, the sidecar that registers a server that does not
//!   register itself, with a lease ([`lease`]: its Redis keys).
//! - [`config`]: command line and environment.

pub mod api;
pub mod atomic_file;
pub mod balance;
pub mod bootstrap;
pub mod config;
pub mod inspect;
pub mod lease;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod redis_call;
pub mod registrar;
pub mod rooms;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod status;
pub mod sync;
