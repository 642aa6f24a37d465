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
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use proxy_wasm::types::Status;
    use routing::cluster::shard_of;
    use routing::ClusterNames;

    use super::*;

    #[test]
    fn parses_defaults_and_refuses_bad_config() {
        assert_eq!(parse_config(b"").unwrap().header, "x-colyseus-cluster");
        assert_eq!(parse_config(b"{}").unwrap().names.all(), "colyseus-all");
        assert!(parse_config(br#"{"header":"X-Bad"}"#).is_err());
        assert!(parse_config(b"{").is_err());
    }

    /// Only the calls the root context makes.
    #[derive(Default)]
    struct TickHost {
        calls: Vec<(String, String)>,
        answer: (Option<u32>, Vec<u8>),
        /// The version header of the answer.
        version: Option<&'static str>,
        /// The digest and delta headers of the answer.
        digest: Option<&'static str>,
        delta: Option<&'static str>,
        /// The shard-count header of the answer.
        shards: Option<&'static str>,
        /// The node id sent with each call.
        nodes: Vec<Option<String>>,
        fail_dispatch: bool,
    }

    impl Host for TickHost {
        fn request_header(&self, _: &str) -> Result<Option<Vec<u8>>, Status> {
            unreachable!()
        }
        fn remove_request_header(&mut self, _: &str) -> Result<(), Status> {
            unreachable!()
        }
        fn set_request_header(&mut self, _: &str, _: &str) -> Result<(), Status> {
            unreachable!()
        }
        fn send_local_reply(
            &mut self,
            _: u32,
            _: Vec<(&str, &str)>,
            _: &[u8],
        ) -> Result<(), Status> {
            unreachable!()
        }
        fn dispatch_get(
            &mut self,
            cluster: &str,
            path: &str,
            node: Option<&str>,
            _: Duration,
        ) -> Result<u32, Status> {
            if self.fail_dispatch {
                return Err(Status::BadArgument);
            }
            self.calls.push((cluster.to_owned(), path.to_owned()));
            self.nodes.push(node.map(str::to_owned));
            Ok(u32::try_from(self.calls.len()).unwrap())
        }
        fn call_response(&self, _: usize, _: usize) -> (Option<u32>, Vec<u8>) {
            self.answer.clone()
        }
        fn call_header(&self, _: usize, name: &str) -> Option<Vec<u8>> {
            let value = match name {
                PROCESSES_VERSION_HEADER => self.version,
                PROCESSES_DIGEST_HEADER => self.digest,
                PROCESSES_DELTA_HEADER => self.delta,
                ALL_SHARDS_HEADER => self.shards,
                other => panic!("unexpected header {other}"),
            };
            value.map(|v| v.as_bytes().to_vec())
        }
        fn resume_request(&mut self) -> Result<(), Status> {
            unreachable!()
        }
        fn now_ms(&self) -> u64 {
            0
        }
        fn set_tick_period(&mut self, _: Duration) -> Result<(), Status> {
            Ok(())
        }
    }

    #[test]
    fn ticks_refresh_the_known_processes() {
        let mut root = Root {
            config: Some(Rc::new(parse_config(b"").unwrap())),
            ..Root::default()
        };
        let mut host = TickHost::default();
        assert!(root.shared.known.borrow().contains("p9"));
        root.tick(&mut host);
        root.tick(&mut host); // one call in flight at a time
        assert_eq!(
            host.calls,
            vec![("colyseus_agent".to_owned(), "/processes".to_owned())]
        );
        host.answer = (
            Some(200),
            br#"[{"processId":"p1","state":"active"},{"processId":"p9","state":"dead"}]"#.to_vec(),
        );
        root.processes_answer(&mut host, 42, 1, 1); // unknown token: ignored
        assert!(root.shared.known.borrow().contains("p9"));
        root.processes_answer(&mut host, 1, 1, 1);
        assert!(root.shared.known.borrow().contains("p1"));
        assert!(!root.shared.known.borrow().contains("p9"));
        // A failed refresh falls back to "every processId is known".
        root.tick(&mut host);
        host.answer = (None, Vec::new());
        root.processes_answer(&mut host, 2, 0, 0);
        assert!(root.shared.known.borrow().contains("p9"));
        host.fail_dispatch = true;
        root.shared.known.borrow_mut().set(HashSet::new());
        root.tick(&mut host);
        assert!(root.shared.known.borrow().contains("p9"));
    }

    #[test]
    fn matchmaking_follows_the_announced_shards() {
        let mut root = Root {
            config: Some(Rc::new(parse_config(b"").unwrap())),
            ..Root::default()
        };
        let mut host = TickHost::default();
        // p0 and p1 are in different shards of 3 (`routing::cluster::shard_of`).
        let (a, b) = ("p0", "p1");
        let (sa, sb) = (shard_of(a, 3), shard_of(b, 3));
        assert_ne!(sa, sb);
        host.answer = (
            Some(200),
            format!(
                r#"[{{"processId":"{a}","state":"active","weight":1}},{{"processId":"{b}","state":"active","weight":3}},{{"processId":"d","state":"draining","weight":null}}]"#
            )
            .into_bytes(),
        );
        host.shards = Some("3");
        root.tick(&mut host);
        root.processes_answer(&mut host, 1, 1, 1);
        let names = ClusterNames::default();
        let mut picks = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..8 {
            let shard = root
                .shared
                .known
                .borrow()
                .matchmaking_shard()
                .map(str::to_owned);
            *picks.entry(shard.unwrap()).or_default() += 1;
        }
        assert_eq!(
            picks,
            [(names.all_shard(sa), 2), (names.all_shard(sb), 6)].into()
        );
        // Without the header (an older agent), or after a failed refresh: shard 0.
        host.shards = None;
        root.tick(&mut host);
        root.processes_answer(&mut host, 2, 1, 1);
        assert_eq!(root.shared.known.borrow().matchmaking_shard(), None);
        host.shards = Some("3");
        root.tick(&mut host);
        root.processes_answer(&mut host, 3, 1, 1);
        assert!(root.shared.known.borrow().matchmaking_shard().is_some());
        root.tick(&mut host);
        host.answer = (None, Vec::new());
        root.processes_answer(&mut host, 4, 0, 0);
        assert_eq!(root.shared.known.borrow().matchmaking_shard(), None);
    }

    #[test]
    fn deltas_move_the_matchmaking_shares() {
        let mut root = Root {
            config: Some(Rc::new(parse_config(b"").unwrap())),
            ..Root::default()
        };
        let mut host = TickHost::default();
        let (a, b) = ("p0", "p1");
        let names = ClusterNames::default();
        let (sa, sb) = (
            names.all_shard(shard_of(a, 3)),
            names.all_shard(shard_of(b, 3)),
        );
        assert_ne!(sa, sb);
        root.tick(&mut host);
        host.answer = (
            Some(200),
            format!(r#"[{{"processId":"{a}","state":"active","weight":1}}]"#).into_bytes(),
        );
        (host.version, host.digest, host.shards) = (Some("1"), Some("10"), Some("3"));
        root.processes_answer(&mut host, 1, 1, 1);
        let pick = |root: &Root| {
            root.shared
                .known
                .borrow()
                .matchmaking_shard()
                .map(str::to_owned)
        };
        assert_eq!(pick(&root), Some(sa.clone()));
        // A delta: `b` joins, `a` drains; matchmaking follows to `b`'s shard alone.
        host.answer.1 = format!(
            r#"{{"changed":[{{"processId":"{b}","state":"active","weight":2}},{{"processId":"{a}","state":"draining","weight":null}}],"removed":[]}}"#
        )
        .into_bytes();
        (host.version, host.digest, host.delta) = (Some("2"), Some("11"), Some("10"));
        root.processes_answer(&mut host, 2, 1, 1);
        for _ in 0..4 {
            assert_eq!(pick(&root), Some(sb.clone()));
        }
    }

    #[test]
    fn every_process_list_call_names_this_envoy() {
        let mut root = Root {
            config: Some(Rc::new(parse_config(b"").unwrap())),
            ..Root::default()
        };
        let mut host = TickHost::default();
        root.set_node(Some(b"edge-1"));
        root.tick(&mut host);
        host.answer = (Some(200), b"[]".to_vec());
        host.version = Some("7");
        root.processes_answer(&mut host, 1, 1, 1);
        assert_eq!(host.calls[1].1, "/processes?after=7");
        assert_eq!(
            host.nodes,
            [Some("edge-1".to_owned()), Some("edge-1".to_owned())]
        );
        // A node id no header can carry is not sent (the agent then answers as for anyone).
        for bad in [None, Some(&b"two words"[..]), Some(b"")] {
            root.set_node(bad);
            assert_eq!(*root.shared.node.borrow(), None);
        }
    }

    #[test]
    fn a_versioned_answer_re_arms_a_long_poll_at_once() {
        let mut root = Root {
            config: Some(Rc::new(parse_config(b"").unwrap())),
            ..Root::default()
        };
        let mut host = TickHost::default();
        root.tick(&mut host);
        host.answer = (
            Some(200),
            br#"[{"processId":"p1","state":"active"}]"#.to_vec(),
        );
        host.version = Some("41");
        root.processes_answer(&mut host, 1, 1, 1);
        assert_eq!(host.calls.len(), 2, "re-armed without waiting for a tick");
        assert_eq!(host.calls[1].1, "/processes?after=41");
        root.tick(&mut host); // the long-poll is in flight: nothing more
        assert_eq!(host.calls.len(), 2);
        // A new process arrives with the next answer.
        host.answer.1 =
            br#"[{"processId":"p1","state":"active"},{"processId":"p2","state":"active"}]"#
                .to_vec();
        host.version = Some("42");
        root.shared
            .cache
            .borrow_mut()
            .insert("r", Some("p3"), "colyseus-process-p3", 0);
        root.shared
            .cache
            .borrow_mut()
            .insert("q", None, "colyseus-process-p1", 0);
        root.processes_answer(&mut host, 2, 1, 1);
        assert!(root.shared.known.borrow().contains("p2"));
        assert_eq!(host.calls[2].1, "/processes?after=42");
        // Cached answers of processes no longer known are gone.
        assert_eq!(root.shared.cache.borrow().get("r", Some("p3"), 1), None);
        assert!(root.shared.cache.borrow().get("q", None, 1).is_some());
        // An answer without a version (an older agent): no re-arm, the tick asks again.
        host.version = None;
        root.processes_answer(&mut host, 3, 1, 1);
        assert_eq!(host.calls.len(), 3);
        root.tick(&mut host);
        assert_eq!(host.calls[3].1, "/processes");
        // A failed long-poll: the set is forgotten and the tick asks plainly.
        host.version = Some("43");
        root.processes_answer(&mut host, 4, 1, 1);
        host.answer = (None, Vec::new());
        root.processes_answer(&mut host, 5, 0, 0);
        assert!(root.shared.known.borrow().contains("p9"));
        root.tick(&mut host);
        assert_eq!(host.calls.last().unwrap().1, "/processes");
    }

    #[test]
    fn a_digested_set_is_kept_fresh_by_deltas() {
        let mut root = Root {
            config: Some(Rc::new(parse_config(b"").unwrap())),
            ..Root::default()
        };
        let mut host = TickHost::default();
        root.tick(&mut host);
        host.answer = (
            Some(200),
            br#"[{"processId":"p1","state":"active"},{"processId":"p2","state":"active"}]"#
                .to_vec(),
        );
        (host.version, host.digest) = (Some("41"), Some("900"));
        root.processes_answer(&mut host, 1, 1, 1);
        assert_eq!(host.calls[1].1, "/processes?after=41&since=900");
        // A delta against the set held: applied, and the next poll names the new set.
        host.answer.1 =
            br#"{"changed":[{"processId":"p3","state":"active"}],"removed":["p1"]}"#.to_vec();
        (host.version, host.digest, host.delta) = (Some("42"), Some("901"), Some("900"));
        root.processes_answer(&mut host, 2, 1, 1);
        let known = root.shared.known.borrow().clone();
        assert!(known.contains("p2") && known.contains("p3") && !known.contains("p1"));
        assert_eq!(host.calls[2].1, "/processes?after=42&since=901");
        // A delta against another set: the set held stays, and the whole set is asked for.
        (host.version, host.digest, host.delta) = (Some("43"), Some("902"), Some("777"));
        root.processes_answer(&mut host, 3, 1, 1);
        assert_eq!(*root.shared.known.borrow(), known);
        assert_eq!(host.calls[3].1, "/processes", "asked at once, not held");
        // An unreadable delta: as any unusable answer, every processId counts as known.
        host.answer.1 = b"{}".to_vec();
        (host.version, host.digest, host.delta) = (Some("44"), Some("903"), None);
        root.processes_answer(&mut host, 4, 1, 1);
        assert!(root.shared.known.borrow().contains("p9"));
        assert_eq!(host.calls.len(), 4, "the tick asks again");
    }
}
