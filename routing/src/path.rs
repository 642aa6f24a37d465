//! The request path grammar.
//!
//! A Colyseus room connection is `[/{prefix}]/{processId}/{roomId}?sessionId=...` (the `?` is
//! always there, reconnects and 0.16+ add more parameters). Colyseus servers match the **last
//! two** path segments, so any prefix is tolerated here too. Everything else (matchmaking
//! `POST /matchmake/...`, `/__healthcheck`, a WebSocket to `/`, a monitor page) names no
//! process and may go to any live one.
//!
//! The marker of a room connection is a `sessionId` query parameter: matchmaking URLs have
//! no query string, so `/matchmake/joinOrCreate/my_room` is never mistaken for
//! `/{processId}/{roomId}`.

use crate::id::{check_id, IdError};

/// Where a request must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A room connection: only `process_id` holds `room_id`.
    Room {
        process_id: &'a str,
        room_id: &'a str,
    },
    /// No process named: any live process may answer.
    AnyProcess,
}

/// Why a request that claims to be a room connection cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("a room connection path must end with /{{processId}}/{{roomId}}")]
    MissingSegments,
    #[error("invalid processId in path: {0}")]
    ProcessId(IdError),
    #[error("invalid roomId in path: {0}")]
    RoomId(IdError),
}

/// Classifies a request by its `:path` (path and query string).
///
/// # Errors
/// A path whose query carries `sessionId` but whose last two segments are not valid ids.
pub fn classify(path: &str) -> Result<Target<'_>, PathError> {
    let Some((path, query)) = path.split_once('?') else {
        return Ok(Target::AnyProcess);
    };
    if !has_session_id(query) {
        return Ok(Target::AnyProcess);
    }
    let mut segments = path.rsplit('/');
    let room_id = segments.next().unwrap_or_default();
    let process_id = match segments.next() {
        // `None`: no slash at all; `Some("")` with nothing before it: "/{roomId}" only.
        Some(p) if segments.next().is_some() => p,
        _ => return Err(PathError::MissingSegments),
    };
    check_id(process_id).map_err(PathError::ProcessId)?;
    check_id(room_id).map_err(PathError::RoomId)?;
    Ok(Target::Room {
        process_id,
        room_id,
    })
}

/// Whether the query string has a `sessionId` parameter (with or without a value).
fn has_session_id(query: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv.split_once('=').map_or(kv, |(k, _)| k) == "sessionId")
}

/// Builds the path a Colyseus client uses to connect to a room; the inverse of [`classify`].
pub fn room_path(prefix: &str, process_id: &str, room_id: &str, session_id: &str) -> String {
    format!("{prefix}/{process_id}/{room_id}?sessionId={session_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room<'a>(process_id: &'a str, room_id: &'a str) -> Result<Target<'a>, PathError> {
        Ok(Target::Room {
            process_id,
            room_id,
        })
    }

    #[test]
    fn room_connections() {
        assert_eq!(
            classify("/abc123xyz/r00m_-ID?sessionId=s1"),
            room("abc123xyz", "r00m_-ID")
        );
        // Any prefix is tolerated, as Colyseus matches the last two segments.
        assert_eq!(classify("/game/eu/p1/r1?sessionId=s"), room("p1", "r1"));
        // Reconnects and auth tokens add parameters, in any order.
        assert_eq!(
            classify("/p1/r1?reconnectionToken=t&sessionId=s&_authToken=x"),
            room("p1", "r1")
        );
        assert_eq!(classify("/p1/r1?sessionId"), room("p1", "r1"));
        // Colyseus clients sent this when the driver hid the processId (colyseus#546): it is
        // a well-formed path; whether "undefined" is a live process is not the grammar's call.
        assert_eq!(
            classify("/undefined/r1?sessionId=s"),
            room("undefined", "r1")
        );
    }

    #[test]
    fn requests_that_name_no_process() {
        for path in [
            "/",
            "/?",
            "/matchmake/joinOrCreate/my_room",
            "/matchmake/joinById/abc123xyz",
            "/matchmake/my_room",
            "/__healthcheck",
            "/colyseus/monitor?tab=rooms",
            "/p1/r1",
            "/p1/r1?session=1&xsessionId=2",
            "",
        ] {
            assert_eq!(classify(path), Ok(Target::AnyProcess), "{path}");
        }
    }

    #[test]
    fn malformed_room_connections() {
        assert_eq!(classify("/r1?sessionId=s"), Err(PathError::MissingSegments));
        assert_eq!(classify("r1?sessionId=s"), Err(PathError::MissingSegments));
        assert_eq!(classify("?sessionId=s"), Err(PathError::MissingSegments));
        assert_eq!(classify("/?sessionId=s"), Err(PathError::MissingSegments));
        assert_eq!(
            classify("p1/r1?sessionId=s"),
            Err(PathError::MissingSegments)
        );
        assert_eq!(
            classify("//r1?sessionId=s"),
            Err(PathError::ProcessId(IdError::Empty))
        );
        assert_eq!(
            classify("/p1/r1/?sessionId=s"),
            Err(PathError::RoomId(IdError::Empty))
        );
        assert_eq!(
            classify("/p%2e/r1?sessionId=s"),
            Err(PathError::ProcessId(IdError::BadChar('%')))
        );
        assert_eq!(
            classify("/p1/r.1?sessionId=s"),
            Err(PathError::RoomId(IdError::BadChar('.')))
        );
        let long = "x".repeat(65);
        assert_eq!(
            classify(&format!("/p1/{long}?sessionId=s")),
            Err(PathError::RoomId(IdError::TooLong(65)))
        );
    }

    #[test]
    fn room_path_round_trips() {
        for (prefix, pid, rid) in [("", "abc123xyz", "r_1-Z"), ("/a/b", "P", "R")] {
            let path = room_path(prefix, pid, rid, "sess");
            assert_eq!(classify(&path), room(pid, rid));
        }
    }
}
