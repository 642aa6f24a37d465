//! What the proxy-wasm filter and the agent must agree on, in one pure crate so the two
//! sides can never disagree.
//!
//! # Layout
//! - [`id`]: the Colyseus id alphabet (`[A-Za-z0-9_-]`, bounded length) and [`ProcessId`].
//! - [`path`]: the request path grammar: which requests name a process and room.
//! - [`cluster`]: the only place that builds Envoy cluster names, and the route guard
//!   that keeps clients from naming any other cluster.
//! - [`plugin`]: the filter's JSON plugin configuration, written by the agent's
//!   bootstrap renderer and read by the filter.
//! - [`head`], [`edge`]: the TCP edge: a strict reader of a request head, and which
//!   connections skip the HTTP connection manager (room WebSockets to a live process).
//! - [`wire`]: JSON shapes of the agent's private API the filter reads (room lookup, the
//!   `/processes` rows and their state).
//!
//! No I/O, no tokio, no proxy-wasm: the crate builds for `wasm32-wasip1` and its tests run
//! there too (see `scripts/wasm-test-runner.mjs`).

pub mod cluster;
pub mod edge;
pub mod head;
pub mod id;
pub mod path;
pub mod plugin;
pub mod wire;

pub use cluster::{ClusterNames, NamesError};
pub use id::{IdError, ProcessId, MAX_ID_LEN};
pub use path::{classify, PathError, Target};
pub use plugin::{EdgePluginConfig, EdgeSettings, PluginConfig, PluginConfigError, RoutingConfig};
