//! The routing decision for one request: pure, so it is tested natively.

use std::borrow::Cow;

use routing::{classify, ClusterNames, Target};

/// `content-type` of every reply the filter sends itself.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Set the routing header to this cluster and let the request continue.
    Route(String),
    /// Answer locally; the request goes nowhere.
    Reject(Reply),
}

/// A local reply from the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u32,
    /// JSON body, `{"error":..,"detail":..}`, sent with [`JSON_CONTENT_TYPE`].
    pub body: String,
}

/// Decides where a request goes from its `:path` (`None` when the request has none, as in
/// `CONNECT`).
///
/// A path that is not UTF-8 is read lossily: a replacement character never passes the id
/// check, so such a path is a room connection only if its ids are valid anyway.
pub fn decide(names: &ClusterNames, path: Option<&[u8]>) -> Decision {
    let Some(path) = path else {
        return Decision::Reject(reply(400, "malformed_room_path", "request has no :path"));
    };
    let path: Cow<'_, str> = String::from_utf8_lossy(path);
    match classify(&path) {
        Ok(Target::Room { process_id, .. }) => Decision::Route(names.process_unchecked(process_id)),
        Ok(Target::AnyProcess) => Decision::Route(names.all().to_owned()),
        Err(e) => Decision::Reject(reply(400, "malformed_room_path", &e.to_string())),
    }
}

/// The reply when a request arrives before a configuration was accepted. Envoy does not
/// create HTTP contexts for a plugin whose `on_configure` failed, so this should not happen.
pub fn unconfigured() -> Reply {
    reply(
        500,
        "filter_not_configured",
        "the routing filter has no valid configuration",
    )
}

/// The reply when the host refuses a call the decision depends on.
pub fn host_failure() -> Reply {
    reply(
        500,
        "filter_host_error",
        "the routing filter could not read or set request headers",
    )
}

fn reply(status: u32, error: &str, detail: &str) -> Reply {
    // `json!` would sort the keys; this keeps `error` first. `Value`'s Display escapes.
    let body = format!(
        r#"{{"error":{},"detail":{}}}"#,
        serde_json::Value::from(error),
        serde_json::Value::from(detail)
    );
    Reply { status, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Decision {
        decide(&ClusterNames::default(), Some(path.as_bytes()))
    }

    fn cluster(name: &str) -> Decision {
        Decision::Route(name.to_owned())
    }

    fn body(decision: &Decision) -> serde_json::Value {
        match decision {
            Decision::Reject(reply) => serde_json::from_str(&reply.body).unwrap(),
            Decision::Route(c) => panic!("expected a rejection, got route to {c}"),
        }
    }

    #[test]
    fn room_connections_go_to_their_process() {
        assert_eq!(
            route("/abc123xyz/r1?sessionId=s"),
            cluster("colyseus-process-abc123xyz")
        );
        assert_eq!(
            route("/prefix/p1/r1?reconnectionToken=t&sessionId=s"),
            cluster("colyseus-process-p1")
        );
        let names = ClusterNames::new("gs-", "gs_all").unwrap();
        assert_eq!(decide(&names, Some(b"/p2/r?sessionId=x")), cluster("gs-p2"));
    }

    #[test]
    fn other_requests_go_to_all_processes() {
        for path in [
            "/",
            "/matchmake/joinOrCreate/echo",
            "/__healthcheck",
            "/p1/r1",
        ] {
            assert_eq!(route(path), cluster("colyseus-all"), "{path}");
        }
        let names = ClusterNames::new("gs-", "gs_all").unwrap();
        assert_eq!(decide(&names, Some(b"/matchmake/x")), cluster("gs_all"));
    }

    #[test]
    fn malformed_room_paths_get_400_json() {
        let d = route("/bad.pid/r?sessionId=x");
        assert!(matches!(d, Decision::Reject(Reply { status: 400, .. })));
        assert_eq!(
            body(&d),
            serde_json::json!({
                "error": "malformed_room_path",
                "detail": "invalid processId in path: id contains '.', only [A-Za-z0-9_-] is allowed"
            })
        );
        // `error` comes first, for humans reading the reply.
        let Decision::Reject(Reply { body: text, .. }) = &d else {
            unreachable!()
        };
        assert!(
            text.starts_with(r#"{"error":"malformed_room_path","detail":"#),
            "{text}"
        );
        // Quotes and backslashes in the detail are escaped, not pasted into the JSON.
        let d = route("/p\"\\/r?sessionId=x");
        assert_eq!(body(&d)["error"], "malformed_room_path");
        assert_eq!(
            body(&d)["detail"],
            r#"invalid processId in path: id contains '"', only [A-Za-z0-9_-] is allowed"#
        );
        assert!(matches!(
            route("/r1?sessionId=s"),
            Decision::Reject(Reply { status: 400, .. })
        ));
    }

    #[test]
    fn missing_or_non_utf8_path() {
        let d = decide(&ClusterNames::default(), None);
        assert!(matches!(d, Decision::Reject(Reply { status: 400, .. })));
        assert_eq!(body(&d)["detail"], "request has no :path");
        // Not UTF-8 in a room path: the id check refuses the replacement character.
        let d = decide(&ClusterNames::default(), Some(b"/p\xff/r?sessionId=x"));
        assert!(matches!(d, Decision::Reject(Reply { status: 400, .. })));
        // Not UTF-8 outside a room path: no process named.
        assert_eq!(
            decide(&ClusterNames::default(), Some(b"/caf\xe9")),
            cluster("colyseus-all")
        );
    }

    #[test]
    fn unconfigured_is_500() {
        let reply = unconfigured();
        assert_eq!(reply.status, 500);
        assert_eq!(
            reply.body,
            r#"{"error":"filter_not_configured","detail":"the routing filter has no valid configuration"}"#
        );
    }
}
