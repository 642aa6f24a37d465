//! Harness for the end-to-end tests: starts real Redis, Colyseus game servers (the example
//! in `example/`), the agent and Envoy with the built filter, all on 127.0.0.1 with free
//! ports, and stops each by PID when dropped, even when a test fails.
//!
//! Expects `scripts/setup.sh` to have run (Envoy in `.venv`, `node_modules`, release
//! builds of the agent and the filter).
//!
//! Layout: `process` (children, scratch dirs, waits), `redis_server`, `redis_topologies`,
//! `mongo`, `game` (Colyseus servers), `proxy` (the proxy through `colyseus-envoy run`, as
//! users start it; registrar), `proxy_apart` (its parts as separate processes, for tests
//! that stop or replace the agent), `runner` (`run` itself), `stack` (the shared preamble),
//! `clients` (colyseus.js), `http` (raw HTTP/WebSocket), `tls`, `xds` (xDS agents and Envoys)
//! and `netns` (hosts of their own: network namespaces). Everything is re-exported
//! here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod clients;
pub mod game;
pub mod http;
pub mod mongo;
pub mod netns;
pub mod process;
pub mod proxy;
pub mod proxy_apart;
pub mod redis_server;
pub mod redis_topologies;
pub mod runner;
pub mod stack;
pub mod tls;
pub mod xds;

pub use clients::*;
pub use game::*;
pub use http::*;
pub use mongo::*;
pub use process::*;
pub use proxy::*;
pub use redis_server::*;
pub use runner::*;
pub use stack::*;
pub use tls::*;
