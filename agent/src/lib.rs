//! The colyseus-envoy agent: Colyseus presence in, Envoy config out.
//!
//! # Layout (which module owns what)
//! - [`controller`]: owns the registry. Follows the presence source, decides (pure
//!   [`controller::plan`]: Redis restart recovery, failover vs restart, drains and their end,
//!   leases, eviction of dead processes, rejection bookkeeping) and publishes one immutable,
//!   versioned [`controller::DesiredState`]. The only writer back to Redis presence, and
//!   only by executing a plan.
//! - [`sinks`]: subscribers of the desired state: Envoy's CDS files, the API's view, the
//!   state file, and with `--xds-listen` the xDS server for fleets of Envoys; see `sinks` for the
//!   interface.
//! - [`sources`]: read registrations (Redis presence) and room listings, convert them;
//!   decide nothing.
//! - [`model`]: pure; registrations and announcements -> the set of routable processes.
//! - [`rooms`]: pure; the room index (roomId -> process) from the matchmaker's listings.
//! - [`balance`]: pure; matchmaking weights of the processes from the load they report.
//! - [`liveness`], [`probe`]: when a process counts as dead; TCP probes.
//! - [`upstreams`], [`upstream_policy`]: which addresses a registration may point Envoy
//!   at, and the agent's own resolution of DNS names.
//! - [`bootstrap`]: renders Envoy's static bootstrap from the same flags.
//! - [`api`], [`status`], [`metrics`]: the private HTTP API (`/live`, `/ready`, `/metrics`)
//!   and what it shows (fed by the API-view sink and the room sources).
//! - [`envoy_admin`]: the one client of Envoy's admin interface (TCP or Unix socket).
//! - [`advertise`], [`warmup`]: a new process is advertised once Envoy routes to it; the
//!   version `/processes?after=` long-polls wait on.
//! - [`ack_gate`]: pure; with xDS, lookups and `/processes` answer with what the asking
//!   Envoy has ACKed.
//! - [`idle_drains`]: reads Envoy's open requests to end idle drains (for the controller).
//! - [`state`], [`atomic_file`]: the persisted sync state's format, safe writes.
//! - [`layout`]: every Colyseus and lease Redis key, channel and payload, and every write
//!   the agent and the registrars send (pure; the npm helper's copy is pinned by a test).
//! - [`registrar`]: `register`, the sidecar that registers a server that does not
//!   register itself, with a lease.
//! - [`redis_target`], [`redis_call`]: connecting to standalone, Sentinel or Cluster Redis.
//! - [`upstream_policy`]: pure; which addresses a registration may point Envoy at.
//! - [`supervise`]: `run`, the whole proxy as one command (children, signals, hot restart).
//! - [`config`], [`cli_env`], [`inspect`]: command line and environment; `agent status`.
//!
//! Feature `daemon` (default) builds all of it. Without it only the pure parts are built
//! (`model`, `rooms`, `balance`, `liveness`, `layout`, `bootstrap`, `sinks`, `state`,
//! `metrics`): what the fuzz targets exercise.

#[cfg(feature = "daemon")]
pub mod ack_gate;
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
pub mod controller;
#[cfg(feature = "daemon")]
pub mod envoy_admin;
#[cfg(feature = "daemon")]
pub mod idle_drains;
#[cfg(feature = "daemon")]
pub mod inspect;
pub mod layout;
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
pub mod upstream_policy;
#[cfg(feature = "daemon")]
pub mod upstreams;
#[cfg(feature = "daemon")]
pub mod warmup;
