//! The per-request context: applies [`crate::decide`] to the request headers.

use std::rc::Rc;

use log::{debug, warn};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use routing::RoutingConfig;

use crate::decide::{self, Decision, Reply, JSON_CONTENT_TYPE};
use crate::host::{Host, ProxyHost};

/// One request's context.
pub struct RoomRouter {
    /// Envoy's id for this stream, prefixed to every log line as `#{id}`.
    context_id: u32,
    /// The root context's checked configuration; `None` only if no configuration was ever
    /// accepted, and then every request gets a 500.
    config: Option<Rc<RoutingConfig>>,
}

impl RoomRouter {
    pub fn new(context_id: u32, config: Option<Rc<RoutingConfig>>) -> Self {
        Self { context_id, config }
    }
}

impl Context for RoomRouter {}

impl HttpContext for RoomRouter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        route_request(&mut ProxyHost, self.context_id, self.config.as_deref())
    }
}

/// Sets the routing header from the request's `:path`, or answers the request locally.
///
/// Any copy of the routing header sent by the client is removed first, so a client can
/// never choose its cluster. Setting the header clears Envoy's route cache, so the route is
/// chosen again with the header in place.
pub fn route_request(host: &mut impl Host, id: u32, config: Option<&RoutingConfig>) -> Action {
    let Some(config) = config else {
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
    match decide::decide(&config.names, path.as_deref()) {
        Decision::Route(cluster) => {
            if let Err(status) = host.set_request_header(&config.header, &cluster) {
                warn!(
                    "#{id} setting header {}: host returned {status:?}",
                    config.header
                );
                return reply(host, id, decide::host_failure());
            }
            debug!("#{id} routed to cluster {cluster}");
            Action::Continue
        }
        Decision::Reject(rejection) => reply(host, id, rejection),
    }
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
    }

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
}
