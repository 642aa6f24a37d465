//! A proxy-wasm HTTP filter that routes every Colyseus request to the game process that
//! holds its room.
//!
//! The filter does not pick an upstream itself: it writes the chosen cluster's name into a
//! request header (`x-colyseus-cluster` by default) and Envoy's route reads it with
//! `cluster_header`. Room connections (`/{processId}/{roomId}?sessionId=...`) go to that
//! process's cluster; everything else (matchmaking, health checks) goes to the cluster of
//! all live processes. A malformed room path gets a 400 from the filter. The path grammar
//! and the cluster names come from the shared `routing` crate, so the agent that writes the
//! clusters can never disagree with the filter.
//!
//! Changing a request header clears Envoy's route cache for the ABI this SDK declares
//! (0.2.1), so the route is recomputed after the header is set.
//!
//! # Layout
//! - `lib.rs`: registration only.
//! - [`root`]: the root context; parses and checks the plugin configuration once, in
//!   `on_configure`, and refuses a bad one.
//! - [`http`]: the per-request context; applies the decision through [`host::Host`].
//! - [`decide`]: the pure decision (path to cluster or rejection), tested natively.
//! - [`host`]: the only module that makes host calls, behind a trait a test can replace.

pub mod decide;
pub mod host;
pub mod http;
pub mod root;

proxy_wasm::main! {{
    // Until `on_configure` reads the host's level, let Envoy filter the messages.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::<root::Root>::default()
    });
}}
