//! The root context: checks the plugin configuration once and hands it to each request,
//! and keeps this worker's set of live processIds fresh from the agent.
//!
//! Freshness comes from one long-poll per worker: `GET /processes?after=VERSION` is held by
//! the agent until the set changes, and re-armed on every answer, so a new process is known
//! here within milliseconds of the agent advertising it, and requests never wait for it.
//! (Alternatives weighed: shared data across a worker's VMs still needs each VM to poll it
//! or a shared queue per VM, and one VM's stall would delay all; per-VM long-polls are
//! independent and cost one idle agent connection per worker.) The `on_tick` period
//! (`knownRefreshMs`) is only the fallback: after a failed call, or with an agent that does
//! not send a version, the next call waits for the tick.

use std::cell::RefCell;
use std::rc::Rc;

use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;
use routing::wire::{
    ALL_SHARDS_HEADER, PROCESSES_DELTA_HEADER, PROCESSES_DIGEST_HEADER, PROCESSES_HOLD_MS,
    PROCESSES_VERSION_HEADER,
};
use routing::{PluginConfig, PluginConfigError, RoutingConfig};

use crate::host::{Host, ProxyHost};
use crate::http::RoomRouter;
use crate::lookup::{parse_delta, parse_processes, KnownProcesses, RoomCache};
use crate::stream::{close_expired, EdgeRouter};
use crate::stream_host::ProxyStreamHost;

/// Path of the agent's process list.
pub const PROCESSES_PATH: &str = "/processes";

/// What the root context shares with this worker's requests (one VM is one thread).
#[derive(Debug, Default)]
pub struct Shared {
    pub known: RefCell<KnownProcesses>,
    pub cache: RefCell<RoomCache>,
    /// This Envoy's node id, sent with every agent call ([`routing::wire::NODE_HEADER`]);
    /// `None` when Envoy has none the header can carry. Set once, in `on_configure`.
    pub node: RefCell<Option<String>>,
    /// TCP edge only: connections waiting for their request head, by context id, with
    /// their deadline (ms since the epoch).
    pub paused: RefCell<std::collections::BTreeMap<u32, u64>>,
}

/// One per VM (so one per Envoy worker thread).
#[derive(Debug, Default)]
pub struct Root {
    /// The last configuration `on_configure` accepted, shared with every request context.
    config: Option<Rc<RoutingConfig>>,
    shared: Rc<Shared>,
    /// The `/processes` call in flight; a tick starts no other meanwhile.
    refresh: Option<u32>,
    /// Version of the set last applied (from the agent's answer); the next call asks for
    /// a change after it.
    version: Option<u64>,
    /// Digest of the set held (from the agent's answer); the next call asks for a delta
    /// against it ([`routing::wire::PROCESSES_SINCE_PARAM`]).
    digest: Option<u64>,
}

/// Margin over the agent's hold before this worker gives up on a long-poll.
const HOLD_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Path of the next process-list call: a long-poll once a version is known, for a delta
/// once the set held has a digest.
pub fn processes_path(version: Option<u64>, digest: Option<u64>) -> String {
    use routing::wire::{PROCESSES_AFTER_PARAM, PROCESSES_SINCE_PARAM};
    match (version, digest) {
        (Some(v), Some(d)) => {
            format!("{PROCESSES_PATH}?{PROCESSES_AFTER_PARAM}={v}&{PROCESSES_SINCE_PARAM}={d}")
        }
        (Some(v), None) => format!("{PROCESSES_PATH}?{PROCESSES_AFTER_PARAM}={v}"),
        (None, _) => PROCESSES_PATH.to_owned(),
    }
}

/// A readable `/processes` answer.
enum ProcessesUpdate {
    Whole(crate::lookup::ProcessesAnswer),
    Delta(routing::wire::ProcessesDelta),
    /// A delta against a set this worker does not hold (digest given): not applicable.
    Stale(u64),
}

impl Root {
    /// Starts a refresh of the known processes, unless one is in flight.
    pub fn tick(&mut self, host: &mut impl Host) {
        let Some(config) = &self.config else { return };
        if self.refresh.is_some() {
            return;
        }
        // A plain call is bounded by the refresh period, so a stuck agent delays one
        // refresh; a long-poll by the agent's hold and a margin.
        let timeout = match self.version {
            Some(_) => std::time::Duration::from_millis(PROCESSES_HOLD_MS) + HOLD_MARGIN,
            None => config.known_refresh,
        };
        let path = processes_path(self.version, self.digest);
        let node = self.shared.node.borrow();
        let call = host.dispatch_get(&config.agent_cluster, &path, node.as_deref(), timeout);
        drop(node);
        match call {
            Ok(token) => self.refresh = Some(token),
            Err(status) => {
                warn!(
                    "refreshing known processes from {}: host returned {status:?}",
                    config.agent_cluster
                );
                self.shared.known.borrow_mut().forget();
            }
        }
    }

    /// Applies the agent's `/processes` answer, and with a version in it, asks again at
    /// once (long-poll). Without a usable one, every processId is treated as known again:
    /// room lookups would fail too, and the fast path still works; the tick asks again.
    pub fn processes_answer(
        &mut self,
        host: &mut impl Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        if self.refresh != Some(token) {
            warn!("ignoring the answer to unknown call {token}");
            return;
        }
        self.refresh = None;
        let (status, body) = host.call_response(num_headers, body_size);
        let number = |name: &str| {
            let raw = host.call_header(num_headers, name)?;
            std::str::from_utf8(&raw).ok()?.trim().parse::<u64>().ok()
        };
        let parsed = match number(PROCESSES_DELTA_HEADER) {
            None => parse_processes(status, &body).map(ProcessesUpdate::Whole),
            Some(base) if Some(base) == self.digest => {
                parse_delta(status, &body).map(ProcessesUpdate::Delta)
            }
            Some(base) => Ok(ProcessesUpdate::Stale(base)),
        };
        let (version, digest) = match parsed {
            Ok(_) => (
                number(PROCESSES_VERSION_HEADER),
                number(PROCESSES_DIGEST_HEADER),
            ),
            Err(_) => (None, None),
        };
        // An agent that does not say (an older one) has one shard.
        let shards = parsed
            .is_ok()
            .then(|| host.call_header(num_headers, ALL_SHARDS_HEADER))
            .flatten()
            .and_then(|raw| routing::wire::all_shards(&raw))
            .unwrap_or(1);
        {
            let mut known = self.shared.known.borrow_mut();
            match parsed {
                Ok(ProcessesUpdate::Stale(base)) => {
                    warn!("the agent sent a delta against set {base}, which this worker does not hold: asking for the whole set");
                    drop(known);
                    self.refetch_whole(host);
                    return;
                }
                Ok(ProcessesUpdate::Delta(delta)) if !known.apply(&delta) => {
                    // Nothing to apply it to (forgotten meanwhile): the whole set, now.
                    drop(known);
                    self.refetch_whole(host);
                    return;
                }
                Ok(update) => {
                    if let ProcessesUpdate::Whole(answer) = update {
                        known.set_whole(answer);
                    }
                    debug!(
                        "{:?} known processes (version {version:?}, {shards} matchmaking shard(s))",
                        known.count()
                    );
                    if let Some(config) = &self.config {
                        known.reshard(&config.names, shards);
                        // A cached room answer must not outlive its process.
                        self.shared.cache.borrow_mut().retain_clusters(|cluster| {
                            config
                                .names
                                .process_of(cluster)
                                .is_some_and(|pid| known.contains(pid))
                        });
                    }
                }
                Err(e) => {
                    if known.count().is_some() {
                        warn!(
                            "refreshing known processes failed ({}): routing every processId as known",
                            e.0
                        );
                    }
                    known.forget();
                }
            }
        }
        self.version = version;
        self.digest = digest;
        if version.is_some() {
            self.tick(host);
        }
    }

    /// Asks for the whole set at once (not held), keeping the set held meanwhile.
    fn refetch_whole(&mut self, host: &mut impl Host) {
        self.version = None;
        self.digest = None;
        self.tick(host);
    }
}

impl Root {
    /// Keeps this Envoy's node id for the agent calls, if it is one the header can carry
    /// (see [`routing::wire::node_id`]); otherwise the calls carry none, and the agent
    /// answers as it does for any Envoy.
    pub fn set_node(&mut self, raw: Option<&[u8]>) {
        let node = raw.and_then(routing::wire::node_id).map(str::to_owned);
        if node.is_none() {
            warn!("this Envoy's node id cannot be sent to the agent: its answers will not wait for this Envoy's xDS ACKs");
        }
        *self.shared.node.borrow_mut() = node;
    }
}

/// Parses and checks the plugin configuration bytes; empty means all defaults.
///
/// # Errors
/// Invalid JSON, an unknown field, or an unsafe header or cluster naming scheme.
pub fn parse_config(bytes: &[u8]) -> Result<RoutingConfig, PluginConfigError> {
    RoutingConfig::try_from(PluginConfig::from_json(bytes)?)
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.processes_answer(&mut ProxyHost, token_id, num_headers, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.set_node(crate::host::node_id().as_deref());
        // Messages below the host's level are then dropped before they cost a host call.
        // Envoy's level is read here only: a change through the admin API applies at the
        // next configuration.
        match hostcalls::get_log_level() {
            Ok(level) => proxy_wasm::set_log_level(level),
            Err(status) => warn!("reading the host log level: host returned {status:?}"),
        }
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match parse_config(&bytes) {
            Ok(config) => {
                info!(
                    "routing by header {} to clusters {}{{processId}} and {}",
                    config.header,
                    config.names.prefix(),
                    config.names.all()
                );
                if let Err(status) = ProxyHost.set_tick_period(config.known_refresh) {
                    warn!("setting the tick period: host returned {status:?}");
                }
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                error!("refusing plugin configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning `None` would make the SDK panic: an unconfigured context answers 500.
        Some(Box::new(RoomRouter::new(
            context_id,
            self.config.clone(),
            Rc::clone(&self.shared),
        )))
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(EdgeRouter::new(
            context_id,
            self.config.clone(),
            Rc::clone(&self.shared),
        )))
    }

    fn on_tick(&mut self) {
        self.tick(&mut ProxyHost);
        if !self.shared.paused.borrow().is_empty() {
            close_expired(&self.shared, &mut ProxyStreamHost);
        }
    }

    /// A configuration with `edge` is the network filter's (`bootstrap --edge-path tcp`).
    fn get_type(&self) -> Option<ContextType> {
        match self.config.as_ref().and_then(|c| c.edge.as_ref()) {
            Some(_) => Some(ContextType::StreamContext),
            None => Some(ContextType::HttpContext),
        }
    }
}

#[cfg(test)]
#[path = "root_tests.rs"]
mod tests;
