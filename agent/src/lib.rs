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
//! - [`envoy_admin`]: the one client of Envoy's admin interface (TCP or Unix socket).
//! - [`advertise`], [`warmup`]: a new process is advertised once Envoy routes to it; the
//!   version `/processes?after=` long-polls wait on.
//! - [`probe`], [`state`], [`atomic_file`]: liveness probes, persisted sync state, safe writes.
//! - [`registrar`]: `register`, the sidecar that registers a server that does not
//!   register itself, with a lease ([`lease`]: its Redis keys).
//! - [`upstream_policy`]: pure; which addresses a registration may point Envoy at.
//! - [`supervise`]: `run`, the whole proxy as one command (children, signals, hot restart).
//! - [`config`]: command line and environment.
//!
//! Feature `daemon` (default) builds all of it. Without it only the pure parts are built
//! (`model`, `rooms`, `balance`, `liveness`, `lease`, `bootstrap`, `sinks`, `state`,
//! `metrics`, the traefik parser): what the fuzz targets exercise.

#[cfg(feature = "daemon")]
pub mod advertise;
#[cfg(feature = "daemon")]
pub mod api;
pub mod atomic_file;
pub mod balance;
pub mod bootstrap;
#[cfg(feature = "daemon")]
pub mod cli_env;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod envoy_admin;
#[cfg(feature = "daemon")]
pub mod idle_drains;
#[cfg(feature = "daemon")]
pub mod inspect;
pub mod lease;
pub mod liveness;
pub mod metrics;
pub mod model;
#[cfg(feature = "daemon")]
pub mod probe;
#[cfg(feature = "daemon")]
pub mod redis_call;
#[cfg(feature = "daemon")]
pub mod redis_target;
#[cfg(feature = "daemon")]
pub mod registrar;
#[cfg(feature = "daemon")]
pub mod rejected;
pub mod rooms;
pub mod sinks;
pub mod sources;
pub mod state;
#[cfg(feature = "daemon")]
pub mod status;
#[cfg(feature = "daemon")]
pub mod supervise;
#[cfg(feature = "daemon")]
pub mod sync;
pub mod upstream_policy;
#[cfg(feature = "daemon")]
pub mod upstreams;
#[cfg(feature = "daemon")]
pub mod warmup;
