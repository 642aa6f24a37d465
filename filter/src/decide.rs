//! The routing decision for one request: pure, so it is tested natively.

use std::borrow::Cow;

use routing::{classify, ClusterNames, PathError, Target};

use crate::lookup::KnownProcesses;

/// The processId a client sends when it lost it (colyseus#546): never a real process.
pub const UNDEFINED_PROCESS: &str = "undefined";

/// `content-type` of every reply the filter sends itself.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Set the routing header to this cluster and let the request continue.
    Route(String),
    /// Answer locally; the request goes nowhere.
    Reject(Reply),
    /// A room connection whose processId is missing, `undefined` or not a known process:
    /// ask the agent where the room is. `path_without_process`: the path had no processId;
    /// Colyseus finds rooms by the last two segments, so the found processId is put in front.
    /// `named_process`: the processId the path names, if any (not `undefined`). The agent
    /// is told, and answers with it when the room is not listed but that process is live
    /// (RedisDriver listings are not indexed; a process may have registered after this
    /// worker's last refresh). If the agent cannot be asked, the request goes to that process
    /// as it would without the lookup.
    Lookup {
        room_id: String,
        path_without_process: bool,
        named_process: Option<String>,
    },
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
/// A room path whose processId is in `known` takes the fast path (no call out); one whose
/// processId is `undefined` or not known, or that has no processId (`/{roomId}?sessionId=`),
/// is looked up by roomId.
///
/// A path that is not UTF-8 is read lossily: a replacement character never passes the id
/// check, so such a path is a room connection only if its ids are valid anyway.
pub fn decide(names: &ClusterNames, known: &KnownProcesses, path: Option<&[u8]>) -> Decision {
    let Some(path) = path else {
        return Decision::Reject(reply(400, "malformed_room_path", "request has no :path"));
    };
    let path: Cow<'_, str> = String::from_utf8_lossy(path);
    match classify(&path) {
        Ok(Target::Room {
            process_id,
            room_id,
        }) => {
            if process_id != UNDEFINED_PROCESS && known.contains(process_id) {
                Decision::Route(names.process_unchecked(process_id))
            } else {
                Decision::Lookup {
                    room_id: room_id.to_owned(),
                    path_without_process: false,
                    named_process: (process_id != UNDEFINED_PROCESS).then(|| process_id.to_owned()),
                }
            }
        }
        Ok(Target::AnyProcess) => {
            Decision::Route(known.matchmaking_shard().unwrap_or(names.all()).to_owned())
        }
        Err(PathError::MissingSegments) => match room_only(&path) {
            Some(room_id) => Decision::Lookup {
                room_id: room_id.to_owned(),
                path_without_process: true,
                named_process: None,
            },
            None => Decision::Reject(reply(
                400,
                "malformed_room_path",
                &PathError::MissingSegments.to_string(),
            )),
        },
        Err(e) => Decision::Reject(reply(400, "malformed_room_path", &e.to_string())),
    }
}

/// The roomId of `/{roomId}?...`, a room path without its processId.
fn room_only(path: &str) -> Option<&str> {
    let (path, _) = path.split_once('?')?;
    let room_id = path.strip_prefix('/')?;
    routing::id::check_id(room_id).ok().map(|()| room_id)
}

/// 404 when the agent knows no room by this id: no process is guessed.
pub fn unknown_room(room_id: &str) -> Reply {
    let body = format!(
        r#"{{"error":"unknown_room","roomId":{},"detail":"no live game process holds this room"}}"#,
        serde_json::Value::from(room_id)
    );
    Reply { status: 404, body }
}

/// 503 when the agent could not be asked where a room is (or gave no usable answer).
pub fn lookup_failed() -> Reply {
    reply(
        503,
        "room_lookup_failed",
        "the proxy could not find which game process holds this room",
    )
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
        decide(
            &ClusterNames::default(),
            &KnownProcesses::default(),
            Some(path.as_bytes()),
        )
    }

    fn known(ids: &[&str]) -> KnownProcesses {
        let mut k = KnownProcesses::default();
        k.set(ids.iter().map(|s| (*s).to_owned()).collect());
        k
    }

    fn lookup(room_id: &str, named: Option<&str>) -> Decision {
        Decision::Lookup {
            room_id: room_id.to_owned(),
            path_without_process: false,
            named_process: named.map(str::to_owned),
        }
    }

    fn lookup_no_pid(room_id: &str) -> Decision {
        Decision::Lookup {
            room_id: room_id.to_owned(),
            path_without_process: true,
            named_process: None,
        }
    }

    fn cluster(name: &str) -> Decision {
        Decision::Route(name.to_owned())
    }

    fn body(decision: &Decision) -> serde_json::Value {
        match decision {
            Decision::Reject(reply) => serde_json::from_str(&reply.body).unwrap(),
            other => panic!("expected a rejection, got {other:?}"),
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
        assert_eq!(
            decide(
                &names,
                &KnownProcesses::default(),
                Some(b"/p2/r?sessionId=x")
            ),
            cluster("gs-p2")
        );
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
        assert_eq!(
            decide(&names, &KnownProcesses::default(), Some(b"/matchmake/x")),
            cluster("gs_all")
        );
    }

    #[test]
    fn matchmaking_goes_to_the_picked_shard() {
        let names = ClusterNames::default();
        let mut k = KnownProcesses::default();
        let id = (0..)
            .map(|i| format!("p{i}"))
            .find(|p| routing::cluster::shard_of(p, 3) == 2)
            .unwrap();
        let answer = crate::lookup::ProcessesAnswer {
            ids: [id.clone()].into(),
            active: vec![(id, 5)],
        };
        k.set_answer(answer, &names, 3);
        let d = |path: &str| decide(&names, &k, Some(path.as_bytes()));
        assert_eq!(d("/matchmake/joinOrCreate/x"), cluster("colyseus-all-2"));
        assert_eq!(d("/"), cluster("colyseus-all-2"));
        k.forget();
        let d = |path: &str| decide(&names, &k, Some(path.as_bytes()));
        assert_eq!(d("/matchmake/joinOrCreate/x"), cluster("colyseus-all"));
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
            route("/?sessionId=s"),
            Decision::Reject(Reply { status: 400, .. })
        ));
        assert!(matches!(
            route("r1?sessionId=s"),
            Decision::Reject(Reply { status: 400, .. })
        ));
    }

    #[test]
    fn untrusted_process_ids_are_looked_up_by_room() {
        let names = ClusterNames::default();
        let k = known(&["p1"]);
        let d = |path: &str| decide(&names, &k, Some(path.as_bytes()));
        // Fast path: a known process.
        assert_eq!(d("/p1/r1?sessionId=s"), cluster("colyseus-process-p1"));
        // Unknown, `undefined`, or missing processId: by room.
        assert_eq!(d("/p2/r1?sessionId=s"), lookup("r1", Some("p2")));
        assert_eq!(d("/undefined/r1?sessionId=s"), lookup("r1", None));
        assert_eq!(d("/r1?sessionId=s"), lookup_no_pid("r1"));
        // `undefined` is looked up even before the first known set arrives.
        assert_eq!(route("/undefined/r9?sessionId=s"), lookup("r9", None));
        assert_eq!(route("/r9?sessionId=s"), lookup_no_pid("r9"));
        assert_eq!(route("/p2/r9?sessionId=s"), cluster("colyseus-process-p2"));
        // Other requests are untouched.
        assert_eq!(d("/matchmake/joinOrCreate/x"), cluster("colyseus-all"));
        assert!(matches!(
            d("/p2/bad.room?sessionId=s"),
            Decision::Reject(Reply { status: 400, .. })
        ));
    }

    #[test]
    fn lookup_replies() {
        let r = unknown_room("r\"1");
        assert_eq!(r.status, 404);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"], "unknown_room");
        assert_eq!(v["roomId"], "r\"1");
        assert!(r.body.starts_with(r#"{"error":"unknown_room","roomId":"#));
        let r = lookup_failed();
        assert_eq!(r.status, 503);
        assert!(r.body.starts_with(r#"{"error":"room_lookup_failed""#));
    }

    #[test]
    fn missing_or_non_utf8_path() {
        let d = decide(&ClusterNames::default(), &KnownProcesses::default(), None);
        assert!(matches!(d, Decision::Reject(Reply { status: 400, .. })));
        assert_eq!(body(&d)["detail"], "request has no :path");
        // Not UTF-8 in a room path: the id check refuses the replacement character.
        let d = decide(
            &ClusterNames::default(),
            &KnownProcesses::default(),
            Some(b"/p\xff/r?sessionId=x"),
        );
        assert!(matches!(d, Decision::Reject(Reply { status: 400, .. })));
        // Not UTF-8 outside a room path: no process named.
        assert_eq!(
            decide(
                &ClusterNames::default(),
                &KnownProcesses::default(),
                Some(b"/caf\xe9")
            ),
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
