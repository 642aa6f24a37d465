//! `routing::classify` on any path: a room connection names two valid ids that really are
//! the path's last two segments, and only a path with a `sessionId` parameter is one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routing::id::check_id;
use routing::path::room_path;
use routing::{classify, PathError, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let (before_query, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let has_session = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "sessionId" || kv.starts_with("sessionId="))
    });
    match classify(path) {
        Ok(Target::Room {
            process_id,
            room_id,
        }) => {
            assert!(has_session, "room without sessionId: {path:?}");
            assert_eq!(check_id(process_id), Ok(()), "{path:?}");
            assert_eq!(check_id(room_id), Ok(()), "{path:?}");
            // The ids are the last two segments of the path before `?`, verbatim.
            let tail = format!("/{process_id}/{room_id}");
            assert!(before_query.ends_with(&tail), "{path:?} -> {tail}");
            let prefix = &before_query[..before_query.len() - tail.len()];
            // The inverse rebuilds a path naming the same room.
            let rebuilt = room_path(prefix, process_id, room_id, "s");
            assert_eq!(
                classify(&rebuilt),
                Ok(Target::Room {
                    process_id,
                    room_id
                }),
                "{rebuilt:?}"
            );
        }
        Ok(Target::AnyProcess) => assert!(!has_session, "sessionId ignored: {path:?}"),
        Err(e) => {
            assert!(has_session, "rejected without sessionId: {path:?}");
            let segments: Vec<&str> = before_query.rsplit('/').collect();
            match e {
                PathError::MissingSegments => assert!(segments.len() < 3, "{path:?}"),
                PathError::ProcessId(err) => {
                    assert!(segments.len() >= 3);
                    assert_eq!(check_id(segments[1]), Err(err), "{path:?}");
                }
                PathError::RoomId(err) => {
                    assert!(segments.len() >= 3);
                    assert_eq!(check_id(segments[1]), Ok(()), "{path:?}");
                    assert_eq!(check_id(segments[0]), Err(err), "{path:?}");
                }
            }
        }
    }

    // room_path -> classify round trip, with ids and prefix cut from the input.
    let ids: String = path
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if ids.len() >= 2 {
        let cut = (ids.len() / 2).min(64);
        let (pid, rid) = (&ids[..cut], &ids[cut..ids.len().min(cut + 64)]);
        let prefix: String = before_query.chars().filter(|c| *c != '?').collect();
        let session: String = query.unwrap_or("").chars().filter(|c| *c != '&').collect();
        let rebuilt = room_path(&prefix, pid, rid, &session);
        assert_eq!(
            classify(&rebuilt),
            Ok(Target::Room {
                process_id: pid,
                room_id: rid
            }),
            "{rebuilt:?}"
        );
    }
});
