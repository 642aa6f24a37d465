//! The per-request context: applies [`crate::decide`] to the request headers, and when the
//! path's processId cannot be trusted, asks the agent where the room is (request paused,
//! then resumed or answered locally).

use std::rc::Rc;

use log::{debug, warn};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use routing::RoutingConfig;

use crate::decide::{self, Decision, Reply, JSON_CONTENT_TYPE};
use crate::host::{Host, ProxyHost};
use crate::lookup::{parse_room_answer, RoomAnswer};
use crate::root::Shared;

/// Path of the agent's room lookup; `named`: the processId the client's path named, which
/// the agent answers with when the room is not listed but that process is live.
pub fn room_lookup_path(room_id: &str, named: Option<&str>) -> String {
    // Ids passed the id check: [A-Za-z0-9_-] only, nothing to escape.
    match named {
        Some(pid) => format!("/rooms/{room_id}?processId={pid}"),
        None => format!("/rooms/{room_id}"),
    }
}

/// A room lookup this request is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub token: u32,
    pub room_id: String,
    /// The request's path when it named no processId (see [`Decision::Lookup`]).
    pub path_without_process: Option<String>,
    /// The processId the path named (see [`Decision::Lookup`]).
    pub named_process: Option<String>,
}

/// One request's context.
pub struct RoomRouter {
    /// Envoy's id for this stream, prefixed to every log line as `#{id}`.
    context_id: u32,
    /// The root context's checked configuration; `None` only if no configuration was ever
    /// accepted, and then every request gets a 500.
    config: Option<Rc<RoutingConfig>>,
    /// This worker's known processes and room cache, owned by the root context.
    shared: Rc<Shared>,
    /// The room lookup in flight, if the request is paused on one.
    pending: Option<Pending>,
}

impl RoomRouter {
    pub fn new(context_id: u32, config: Option<Rc<RoutingConfig>>, shared: Rc<Shared>) -> Self {
        Self {
            context_id,
            config,
            shared,
            pending: None,
        }
    }

    /// Sets the routing header from the request's `:path`, starts a room lookup, or
    /// answers the request locally.
    ///
    /// Any copy of the routing header sent by the client is removed first, so a client can
    /// never choose its cluster. Setting the header clears Envoy's route cache, so the route
    /// is chosen again with the header in place.
    pub fn on_headers(&mut self, host: &mut impl Host) -> Action {
        let id = self.context_id;
        let Some(config) = self.config.clone() else {
            return reply(host, id, decide::unconfigured());
        };
        if let Err(status) = host.remove_request_header(&config.header) {
            // The header is replaced below anyway, or the request is answered locally.
            warn!(
                "#{id} removing header {}: host returned {status:?}",
                config.header
            );
        }
        let path = match host.request_header(":path") {
            Ok(path) => path,
            Err(status) => {
                warn!("#{id} reading :path: host returned {status:?}");
                return reply(host, id, decide::host_failure());
            }
        };
        let decision = decide::decide(&config.names, &self.shared.known.borrow(), path.as_deref());
        match decision {
            Decision::Route(cluster) => route(host, id, &config, &cluster),
            Decision::Reject(rejection) => reply(host, id, rejection),
            Decision::Lookup {
                room_id,
                path_without_process,
                named_process,
            } => {
                let path_without_process = path_without_process.then(|| {
                    String::from_utf8_lossy(path.as_deref().unwrap_or_default()).into_owned()
                });
                let cached = self
                    .shared
                    .cache
                    .borrow()
                    .get(&room_id, named_process.as_deref(), host.now_ms())
                    .map(str::to_owned);
                if let Some(cluster) = cached {
                    debug!("#{id} room {room_id} found in the cache");
                    return route_to_room(
                        host,
                        id,
                        &config,
                        &cluster,
                        path_without_process.as_deref(),
                    );
                }
                let path = room_lookup_path(&room_id, named_process.as_deref());
                let node = self.shared.node.borrow().clone();
                let call = host.dispatch_get(
                    &config.agent_cluster,
                    &path,
                    node.as_deref(),
                    config.lookup_timeout,
                );
                match call {
                    Ok(token) => {
                        debug!("#{id} looking up room {room_id} (call {token})");
                        self.pending = Some(Pending {
                            token,
                            room_id,
                            path_without_process,
                            named_process,
                        });
                        Action::Pause
                    }
                    Err(status) => {
                        warn!(
                            "#{id} calling {} for room {room_id}: host returned {status:?}",
                            config.agent_cluster
                        );
                        match named_process {
                            Some(pid) => {
                                route(host, id, &config, &config.names.process_unchecked(&pid))
                            }
                            None => reply(host, id, decide::lookup_failed()),
                        }
                    }
                }
            }
        }
    }

    /// Finishes a paused request with the agent's answer.
    pub fn on_call_response(
        &mut self,
        host: &mut impl Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let id = self.context_id;
        let pending = match self.pending.take() {
            Some(p) if p.token == token => p,
            other => {
                warn!("#{id} ignoring the answer to unknown call {token}");
                self.pending = other;
                return;
            }
        };
        let Some(config) = self.config.clone() else {
            reply(host, id, decide::unconfigured());
            return;
        };
        let (status, body) = host.call_response(num_headers, body_size);
        let action = match parse_room_answer(&config.names, status, &body) {
            RoomAnswer::Found(cluster) => {
                let now = host.now_ms();
                self.shared.cache.borrow_mut().insert(
                    &pending.room_id,
                    pending.named_process.as_deref(),
                    &cluster,
                    now,
                );
                debug!("#{id} room {} is on {cluster}", pending.room_id);
                route_to_room(
                    host,
                    id,
                    &config,
                    &cluster,
                    pending.path_without_process.as_deref(),
                )
            }
            RoomAnswer::Unknown => reply(host, id, decide::unknown_room(&pending.room_id)),
            // The agent could not be asked: go to the named process as if there were no
            // lookup (Envoy routes there if it is live, answers 404 unknown_process if not).
            RoomAnswer::Failed(why) if pending.named_process.is_some() => {
                let pid = pending.named_process.as_deref().unwrap_or_default();
                warn!(
                    "#{id} room lookup for {} failed ({why}); trying process {pid}",
                    pending.room_id
                );
                route(host, id, &config, &config.names.process_unchecked(pid))
            }
            RoomAnswer::Failed(why) => {
                warn!("#{id} room lookup for {} failed: {why}", pending.room_id);
                reply(host, id, decide::lookup_failed())
            }
        };
        // `Continue`: routed, or a local reply the host refused (the route's fallback then
        // answers). Either way the paused request must go on.
        if action == Action::Continue {
            if let Err(status) = host.resume_request() {
                warn!("#{id} resuming the request: host returned {status:?}");
            }
        }
    }
}

impl Context for RoomRouter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.on_call_response(&mut ProxyHost, token_id, num_headers, body_size);
    }
}

/// Only the request headers (and the agent's answer) are handled. The callbacks left at the
/// SDK's no-op defaults (request and response bodies, response headers, trailers, `on_log`,
/// `on_done`) are removed from the `.wasm` exports by `scripts/build-filter.sh`
/// (`strip_callbacks::UNUSED_CALLBACKS`), so Envoy does not enter the VM for every WebSocket
/// frame. Implementing one of them means taking it off that list.
impl HttpContext for RoomRouter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.on_headers(&mut ProxyHost)
    }
}

/// Routes to a room's process cluster; a path without a processId gets the process's id
/// in front (`/{roomId}?..` becomes `/{processId}/{roomId}?..`), as Colyseus expects.
fn route_to_room(
    host: &mut impl Host,
    id: u32,
    config: &RoutingConfig,
    cluster: &str,
    path_without_process: Option<&str>,
) -> Action {
    if let Some(path) = path_without_process {
        let process_id = config.names.process_of(cluster).unwrap_or_default();
        if let Err(status) = host.set_request_header(":path", &format!("/{process_id}{path}")) {
            warn!("#{id} setting :path: host returned {status:?}");
            return reply(host, id, decide::host_failure());
        }
    }
    route(host, id, config, cluster)
}

/// Sets the routing header.
fn route(host: &mut impl Host, id: u32, config: &RoutingConfig, cluster: &str) -> Action {
    if let Err(status) = host.set_request_header(&config.header, cluster) {
        warn!(
            "#{id} setting header {}: host returned {status:?}",
            config.header
        );
        return reply(host, id, decide::host_failure());
    }
    debug!("#{id} routed to cluster {cluster}");
    Action::Continue
}

/// Sends a local JSON reply and stops the request.
fn reply(host: &mut impl Host, id: u32, Reply { status, body }: Reply) -> Action {
    debug!("#{id} rejected with {status}: {body}");
    match host.send_local_reply(
        status,
        vec![("content-type", JSON_CONTENT_TYPE)],
        body.as_bytes(),
    ) {
        Ok(()) => Action::Pause,
        Err(host_status) => {
            // Without the routing header the route's fallback answers 500.
            warn!("#{id} sending local reply {status}: host returned {host_status:?}");
            Action::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use proxy_wasm::types::Status;
    use routing::PluginConfig;

    use super::*;

    /// A local reply as sent: status, headers, body.
    type Reply = (u32, Vec<(String, String)>, String);

    /// Records what the filter does to one request.
    #[derive(Default)]
    struct MockHost {
        headers: BTreeMap<String, Vec<u8>>,
        reply: Option<Reply>,
        fail_set: bool,
        fail_reply: bool,
        fail_dispatch: bool,
        /// (cluster, path, timeout) of each call out.
        calls: Vec<(String, String, Duration)>,
        /// The node id sent with each call.
        nodes: Vec<Option<String>>,
        /// The answer the next `call_response` returns.
        answer: (Option<u32>, Vec<u8>),
        resumed: usize,
        now: u64,
    }

    impl MockHost {
        fn with(headers: &[(&str, &str)]) -> Self {
            Self {
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                    .collect(),
                ..Self::default()
            }
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .get(name)
                .map(|v| std::str::from_utf8(v).unwrap())
        }
    }

    impl Host for MockHost {
        fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status> {
            Ok(self.headers.get(name).cloned())
        }

        fn remove_request_header(&mut self, name: &str) -> Result<(), Status> {
            self.headers.remove(name);
            Ok(())
        }

        fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), Status> {
            if self.fail_set {
                return Err(Status::InternalFailure);
            }
            self.headers
                .insert(name.to_owned(), value.as_bytes().to_vec());
            Ok(())
        }

        fn send_local_reply(
            &mut self,
            status: u32,
            headers: Vec<(&str, &str)>,
            body: &[u8],
        ) -> Result<(), Status> {
            if self.fail_reply {
                return Err(Status::InternalFailure);
            }
            let headers = headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let body = String::from_utf8(body.to_vec()).unwrap();
            self.reply = Some((status, headers, body));
            Ok(())
        }

        fn dispatch_get(
            &mut self,
            cluster: &str,
            path: &str,
            node: Option<&str>,
            timeout: Duration,
        ) -> Result<u32, Status> {
            if self.fail_dispatch {
                return Err(Status::BadArgument);
            }
            self.nodes.push(node.map(str::to_owned));
            self.calls
                .push((cluster.to_owned(), path.to_owned(), timeout));
            Ok(100 + u32::try_from(self.calls.len()).unwrap())
        }

        fn call_response(&self, _num_headers: usize, _body_size: usize) -> (Option<u32>, Vec<u8>) {
            self.answer.clone()
        }
        fn call_header(&self, _: usize, _: &str) -> Option<Vec<u8>> {
            unreachable!("requests read no answer headers")
        }

        fn resume_request(&mut self) -> Result<(), Status> {
            self.resumed += 1;
            Ok(())
        }

        fn now_ms(&self) -> u64 {
            self.now
        }

        fn set_tick_period(&mut self, _period: Duration) -> Result<(), Status> {
            Ok(())
        }
    }

    /// The filter as Envoy runs it for one request, with a fresh worker state.
    fn route_request(host: &mut MockHost, id: u32, config: Option<&RoutingConfig>) -> Action {
        RoomRouter::new(id, config.cloned().map(Rc::new), Rc::default()).on_headers(host)
    }

    fn router(config: Option<&RoutingConfig>, shared: Rc<Shared>) -> RoomRouter {
        RoomRouter::new(1, config.cloned().map(Rc::new), shared)
    }

    fn known(ids: &[&str]) -> Rc<Shared> {
        let shared = Rc::new(Shared::default());
        shared
            .known
            .borrow_mut()
            .set(ids.iter().map(|s| (*s).to_owned()).collect());
        shared
    }

    const ROOM_P2: &str = r#"{"roomId":"r1","processId":"p2","cluster":"colyseus-process-p2","name":"echo","clients":1,"maxClients":null,"locked":false}"#;

    fn config() -> RoutingConfig {
        RoutingConfig::try_from(PluginConfig::default()).unwrap()
    }

    const HEADER: &str = "x-colyseus-cluster";

    #[test]
    fn room_path_sets_process_cluster() {
        let mut host = MockHost::with(&[(":path", "/p1/r1?sessionId=x")]);
        assert_eq!(
            route_request(&mut host, 1, Some(&config())),
            Action::Continue
        );
        assert_eq!(host.header(HEADER), Some("colyseus-process-p1"));
        assert!(host.reply.is_none());
    }

    #[test]
    fn forged_header_is_replaced() {
        let mut host = MockHost::with(&[
            (":path", "/p1/r?sessionId=x"),
            (HEADER, "colyseus-process-p2"),
        ]);
        assert_eq!(
            route_request(&mut host, 1, Some(&config())),
            Action::Continue
        );
        assert_eq!(host.header(HEADER), Some("colyseus-process-p1"));

        let mut host =
            MockHost::with(&[(":path", "/matchmake/joinOrCreate/echo"), (HEADER, "admin")]);
        assert_eq!(
            route_request(&mut host, 1, Some(&config())),
            Action::Continue
        );
        assert_eq!(host.header(HEADER), Some("colyseus-all"));
    }

    #[test]
    fn malformed_path_is_rejected_and_header_removed() {
        let mut host = MockHost::with(&[
            (":path", "/bad.pid/r?sessionId=x"),
            (HEADER, "colyseus-all"),
        ]);
        assert_eq!(route_request(&mut host, 1, Some(&config())), Action::Pause);
        assert_eq!(host.header(HEADER), None);
        let (status, headers, body) = host.reply.unwrap();
        assert_eq!(status, 400);
        assert_eq!(
            headers,
            vec![("content-type".to_owned(), "application/json".to_owned())]
        );
        assert!(body.starts_with(r#"{"#), "{body}");
        assert!(body.contains(r#""error":"malformed_room_path""#), "{body}");
    }

    #[test]
    fn missing_path_is_rejected() {
        let mut host = MockHost::with(&[]);
        assert_eq!(route_request(&mut host, 1, Some(&config())), Action::Pause);
        assert_eq!(host.reply.unwrap().0, 400);
    }

    #[test]
    fn custom_header_name() {
        let raw = PluginConfig {
            header: "x-route".into(),
            ..PluginConfig::default()
        };
        let config = RoutingConfig::try_from(raw).unwrap();
        let mut host = MockHost::with(&[(":path", "/"), ("x-route", "evil")]);
        assert_eq!(route_request(&mut host, 1, Some(&config)), Action::Continue);
        assert_eq!(host.header("x-route"), Some("colyseus-all"));
        assert_eq!(host.header(HEADER), None);
    }

    #[test]
    fn host_failures_never_forward_a_chosen_cluster() {
        let mut host = MockHost::with(&[(":path", "/p1/r?sessionId=x")]);
        host.fail_set = true;
        assert_eq!(route_request(&mut host, 1, Some(&config())), Action::Pause);
        assert_eq!(host.reply.unwrap().0, 500);

        // A failed local reply continues without the header: the fallback route answers.
        let mut host = MockHost::with(&[(":path", "/bad.pid/r?sessionId=x"), (HEADER, "x")]);
        host.fail_reply = true;
        assert_eq!(
            route_request(&mut host, 1, Some(&config())),
            Action::Continue
        );
        assert_eq!(host.header(HEADER), None);
    }

    #[test]
    fn unconfigured_answers_500() {
        let mut host = MockHost::with(&[(":path", "/")]);
        assert_eq!(route_request(&mut host, 1, None), Action::Pause);
        assert_eq!(host.reply.unwrap().0, 500);
    }

    #[test]
    fn known_process_makes_no_call() {
        let mut host = MockHost::with(&[(":path", "/p1/r1?sessionId=x")]);
        let mut r = router(Some(&config()), known(&["p1"]));
        assert_eq!(r.on_headers(&mut host), Action::Continue);
        assert_eq!(host.header(HEADER), Some("colyseus-process-p1"));
        assert!(host.calls.is_empty());
    }

    #[test]
    fn unknown_process_is_looked_up_then_resumed() {
        for (path, lookup) in [
            ("/p9/r1?sessionId=x", "/rooms/r1?processId=p9"),
            ("/undefined/r1?sessionId=x", "/rooms/r1"),
            ("/r1?sessionId=x", "/rooms/r1"),
        ] {
            let shared = known(&["p1", "p2"]);
            let mut host = MockHost::with(&[(":path", path), (HEADER, "colyseus-process-p1")]);
            host.now = 1000;
            let mut r = router(Some(&config()), Rc::clone(&shared));
            assert_eq!(r.on_headers(&mut host), Action::Pause, "{path}");
            assert_eq!(
                host.calls,
                vec![(
                    "colyseus_agent".to_owned(),
                    lookup.to_owned(),
                    Duration::from_millis(500)
                )]
            );
            // The forged header is gone while the request waits.
            assert_eq!(host.header(HEADER), None);
            // An answer to another call is ignored.
            host.answer = (Some(200), ROOM_P2.as_bytes().to_vec());
            r.on_call_response(&mut host, 7, 1, 10);
            assert_eq!((host.resumed, host.header(HEADER)), (0, None));
            r.on_call_response(&mut host, 101, 1, 10);
            assert_eq!(host.header(HEADER), Some("colyseus-process-p2"));
            assert_eq!(host.resumed, 1);
            assert!(host.reply.is_none());
            let want_path = if path.starts_with("/r1") {
                "/p2/r1?sessionId=x"
            } else {
                path
            };
            assert_eq!(host.header(":path"), Some(want_path));

            // A second request for the room within the TTL is served from the cache.
            let mut again = MockHost::with(&[(":path", path)]);
            again.now = 2999;
            let mut r = router(Some(&config()), Rc::clone(&shared));
            assert_eq!(r.on_headers(&mut again), Action::Continue);
            assert_eq!(again.header(HEADER), Some("colyseus-process-p2"));
            assert_eq!(again.header(":path"), Some(want_path));
            assert!(again.calls.is_empty());
            // After it, the agent is asked again.
            let mut later = MockHost::with(&[(":path", path)]);
            later.now = 3000;
            let mut r = router(Some(&config()), shared);
            assert_eq!(r.on_headers(&mut later), Action::Pause);
            assert_eq!(later.calls.len(), 1);
        }
    }

    #[test]
    fn a_room_lookup_names_this_envoy() {
        let shared = known(&["p1"]);
        *shared.node.borrow_mut() = Some("edge-2".to_owned());
        let mut host = MockHost::with(&[(":path", "/p9/r1?sessionId=x")]);
        let mut r = router(Some(&config()), shared);
        assert_eq!(r.on_headers(&mut host), Action::Pause);
        assert_eq!(host.nodes, [Some("edge-2".to_owned())]);
        // Without a node id the call carries none.
        let mut host = MockHost::with(&[(":path", "/p9/r1?sessionId=x")]);
        let mut r = router(Some(&config()), known(&["p1"]));
        r.on_headers(&mut host);
        assert_eq!(host.nodes, [None]);
    }

    /// The agent's 503 `not_acked` (this Envoy lacks the room's cluster after the agent's
    /// bound): no cluster is trusted from it; a named process is still tried, as for any
    /// agent failure, and an unnamed one gets 503.
    #[test]
    fn not_acked_is_no_answer() {
        let body = br#"{"error":"not_acked","roomId":"r1","processId":"p2"}"#;
        let mut host = MockHost::with(&[(":path", "/undefined/r1?sessionId=x")]);
        let mut r = router(Some(&config()), Rc::default());
        r.on_headers(&mut host);
        host.answer = (Some(503), body.to_vec());
        r.on_call_response(&mut host, 101, 1, 1);
        assert_eq!(host.reply.as_ref().map(|r| r.0), Some(503));
        assert_eq!(host.header(HEADER), None);
    }

    #[test]
    fn unknown_room_gets_404_and_failures_503() {
        let cases: [(Option<u32>, &[u8], u32, &str); 5] = [
            (
                Some(404),
                br#"{"error":"unknown_room","roomId":"r1"}"#,
                404,
                "unknown_room",
            ),
            (None, b"", 503, "room_lookup_failed"),
            (Some(500), b"", 503, "room_lookup_failed"),
            (Some(404), b"Not Found", 503, "room_lookup_failed"),
            // An answer naming a cluster that is not a game process is not trusted.
            (
                Some(200),
                br#"{"roomId":"r1","processId":"p2","cluster":"colyseus_agent","name":"","clients":0,"maxClients":null,"locked":false}"#,
                503,
                "room_lookup_failed",
            ),
        ];
        for (status, body, want, error) in cases {
            let mut host = MockHost::with(&[(":path", "/undefined/r1?sessionId=x")]);
            let mut r = router(Some(&config()), Rc::default());
            assert_eq!(r.on_headers(&mut host), Action::Pause);
            host.answer = (status, body.to_vec());
            r.on_call_response(&mut host, 101, 0, 0);
            let (got, _, text) = host.reply.clone().unwrap();
            assert_eq!(got, want, "{text}");
            assert!(text.contains(error), "{text}");
            assert_eq!(host.header(HEADER), None);
            assert_eq!(host.resumed, 0);
        }
        let mut host = MockHost::with(&[(":path", "/undefined/r1?sessionId=x")]);
        let mut r = router(Some(&config()), Rc::default());
        r.on_headers(&mut host);
        host.answer = (
            Some(404),
            br#"{"error":"unknown_room","roomId":"r1"}"#.to_vec(),
        );
        r.on_call_response(&mut host, 101, 1, 1);
        let body: serde_json::Value = serde_json::from_str(&host.reply.unwrap().2).unwrap();
        assert_eq!(body["roomId"], "r1");
    }

    #[test]
    fn a_named_process_is_tried_when_the_agent_cannot_be_asked() {
        let answers: [(Option<u32>, &[u8]); 2] = [(None, b""), (Some(500), b"")];
        for (status, body) in answers {
            let mut host = MockHost::with(&[(":path", "/newpid/r1?sessionId=x")]);
            let mut r = router(Some(&config()), known(&["p1"]));
            assert_eq!(r.on_headers(&mut host), Action::Pause);
            assert_eq!(host.calls[0].1, "/rooms/r1?processId=newpid");
            host.answer = (status, body.to_vec());
            r.on_call_response(&mut host, 101, 0, 0);
            assert_eq!(host.reply, None);
            assert_eq!(host.header(HEADER), Some("colyseus-process-newpid"));
            assert_eq!(host.resumed, 1);
        }
        // The agent knows neither the room nor the process: 404 naming the room.
        let mut host = MockHost::with(&[(":path", "/newpid/r1?sessionId=x")]);
        let mut r = router(Some(&config()), known(&["p1"]));
        r.on_headers(&mut host);
        host.answer = (
            Some(404),
            br#"{"error":"unknown_room","roomId":"r1"}"#.to_vec(),
        );
        r.on_call_response(&mut host, 101, 0, 0);
        assert_eq!(host.reply.clone().map(|r| r.0), Some(404));
        let mut host = MockHost::with(&[(":path", "/newpid/r1?sessionId=x")]);
        host.fail_dispatch = true;
        let mut r = router(Some(&config()), known(&["p1"]));
        assert_eq!(r.on_headers(&mut host), Action::Continue);
        assert_eq!(host.header(HEADER), Some("colyseus-process-newpid"));
    }

    #[test]
    fn failed_dispatch_is_503_and_failed_reply_resumes() {
        let mut host = MockHost::with(&[(":path", "/undefined/r1?sessionId=x")]);
        host.fail_dispatch = true;
        assert_eq!(route_request(&mut host, 1, Some(&config())), Action::Pause);
        assert_eq!(host.reply.unwrap().0, 503);

        // The local reply after the call fails: the request goes on without the header
        // (the route's fallback answers), never stays paused.
        let mut host = MockHost::with(&[(":path", "/undefined/r1?sessionId=x")]);
        let mut r = router(Some(&config()), Rc::default());
        r.on_headers(&mut host);
        host.fail_reply = true;
        r.on_call_response(&mut host, 101, 0, 0);
        assert_eq!(host.resumed, 1);
        assert_eq!(host.header(HEADER), None);
    }

    /// Each callback `scripts/build-filter.sh` strips from the module must be the SDK's
    /// no-op default here, for the request context and the root context, because Envoy
    /// then behaves as if it returned `Continue` (or `true`, or nothing). A name added to
    /// the strip list without a case here fails this test.
    #[test]
    fn stripped_callbacks_are_sdk_defaults() {
        use proxy_wasm::traits::RootContext;

        let mut r = router(Some(&config()), Rc::default());
        let mut root = crate::root::Root::default();
        for name in strip_callbacks::UNUSED_CALLBACKS {
            match *name {
                "proxy_on_request_body" => {
                    assert_eq!(r.on_http_request_body(64, false), Action::Continue);
                    assert_eq!(r.on_http_request_body(0, true), Action::Continue);
                }
                "proxy_on_response_body" => {
                    assert_eq!(r.on_http_response_body(64, false), Action::Continue);
                    assert_eq!(r.on_http_response_body(0, true), Action::Continue);
                }
                "proxy_on_response_headers" => {
                    assert_eq!(r.on_http_response_headers(3, false), Action::Continue);
                }
                "proxy_on_request_trailers" => {
                    assert_eq!(r.on_http_request_trailers(1), Action::Continue);
                }
                "proxy_on_response_trailers" => {
                    assert_eq!(r.on_http_response_trailers(1), Action::Continue);
                }
                "proxy_on_log" => {
                    r.on_log();
                    root.on_log();
                }
                "proxy_on_done" => {
                    assert!(r.on_done());
                    assert!(root.on_done());
                }
                "proxy_on_upstream_data" | "proxy_on_upstream_connection_close" => {
                    crate::stream::tests::upstream_callbacks_are_defaults();
                }
                other => panic!("no check for stripped callback {other}"),
            }
        }
        assert!(r.pending.is_none());
    }
}
