//! A proxy-wasm HTTP filter that routes every Colyseus request to the game process that
//! holds its room.
//!
//! The filter does not pick an upstream itself: it writes the chosen cluster's name into a
//! request header (`x-colyseus-cluster` by default) and Envoy's route reads it with
//! `cluster_header`. Room connections (`/{processId}/{roomId}?sessionId=...`) go to that
//! process's cluster; everything else (matchmaking, health checks) goes to the cluster of
//! all live processes, or, when the agent splits it in shards, to one shard picked in
//! proportion to its processes' weights ([`shards`]). A malformed room path gets a 400 from the filter. The path grammar
//! and the cluster names come from the shared `routing` crate, so the agent that writes the
//! clusters can never disagree with the filter.
//!
//! When a room path's processId is missing, `undefined` or not among the live processes
//! the root context last fetched from the agent (`GET /processes` every `knownRefreshMs`),
//! the request is paused and the agent is asked where the room is (`GET /rooms/{roomId}`
//! on the static cluster `agentCluster`): found -> routed there, unknown -> 404
//! `unknown_room`, no answer -> 503 `room_lookup_failed`. A known processId makes no call.
//! Every call to the agent names this Envoy (`node.id` in `routing::wire::NODE_HEADER`), so
//! an agent it streams xDS from answers with what this Envoy has ACKed (its 503 `not_acked`
//! counts as no answer).
//!
//! Changing a request header clears Envoy's route cache for the ABI this SDK declares
//! (0.2.1), so the route is recomputed after the header is set.
//!
//! # Layout
//! - `lib.rs`: registration only.
//! - [`root`]: the root context; parses and checks the plugin configuration once, in
//!   `on_configure`, and refuses a bad one.
//! - [`http`]: the per-request context; applies the decision through [`host::Host`].
//! - [`decide`]: the pure decision (path to cluster, room lookup or rejection), tested
//!   natively.
//! - [`lookup`]: routing by roomId when the path's processId is missing, `undefined` or
//!   not a live process: the known-processes set, the agent's answers, a short cache. Pure.
//! - [`shards`]: which shard of the all-processes cluster a matchmaking request goes to.
//!   Pure.
//! - [`host`]: the only module that makes host calls, behind a trait a test can replace.
//! - [`stream`], [`stream_host`]: the same module as a network filter in front of
//!   `tcp_proxy` (`bootstrap --edge-path tcp`): room WebSockets to a live process go to it
//!   as raw TCP, everything else to the HTTP connection manager (`routing::edge`).

pub mod decide;
pub mod host;
pub mod http;
pub mod lookup;
pub mod root;
pub mod shards;
pub mod stream;
pub mod stream_host;

proxy_wasm::main! {{
    // Until `on_configure` reads the host's level, let Envoy filter the messages.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::<root::Root>::default()
    });
}}
