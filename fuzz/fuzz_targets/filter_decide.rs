//! The filter's `decide` on any path bytes, for two naming schemes and two known-process
//! sets (none fetched yet: every processId counts as known; and a fetched set).
//!
//! Invariants: a routed request carries a cluster name the route guard accepts; a room
//! connection goes to its own process's cluster only if that processId is known and not
//! `undefined`, and is otherwise looked up by its roomId, a valid id taken from the path
//! (with the named processId, valid and never `undefined`, as the fallback); a request
//! naming no process goes to the all-processes cluster; every rejection is a 400 with a
//! JSON body.
#![no_main]

use std::sync::OnceLock;

use colyseus_envoy_filter::decide::{decide, Decision, UNDEFINED_PROCESS};
use colyseus_envoy_filter::lookup::{KnownProcesses, ProcessesAnswer};
use libfuzzer_sys::fuzz_target;
use regex_lite::Regex;
use routing::id::check_id;
use routing::{classify, ClusterNames, PathError, Target};

struct Scheme {
    names: ClusterNames,
    guard: Regex,
}

/// Naming schemes tried, each with its route guard compiled once.
fn schemes() -> &'static [Scheme] {
    static SCHEMES: OnceLock<Vec<Scheme>> = OnceLock::new();
    SCHEMES.get_or_init(|| {
        [
            ClusterNames::default(),
            ClusterNames::new("gs-", "gs_all").unwrap(),
        ]
        .into_iter()
        .map(|names| Scheme {
            guard: Regex::new(&names.route_guard_regex()).unwrap(),
            names,
        })
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut fetched = KnownProcesses::default();
    fetched.set(
        ["abc123xyz", "p1", UNDEFINED_PROCESS]
            .map(str::to_owned)
            .into(),
    );
    for scheme in schemes() {
        // The same set with the all-processes cluster in 3 shards, one of them weighted.
        let mut sharded = fetched.clone();
        let answer = ProcessesAnswer {
            ids: ["abc123xyz".to_owned(), "p1".to_owned()].into(),
            active: vec![("abc123xyz".to_owned(), 2), ("p1".to_owned(), 1)],
        };
        sharded.set_answer(answer, &scheme.names, 3);
        for known in [&KnownProcesses::default(), &fetched, &sharded] {
            check(scheme, known, data);
        }
    }
    let none = decide(&schemes()[0].names, &fetched, None);
    assert!(matches!(none, Decision::Reject(ref r) if r.status == 400));
});

fn check(scheme: &Scheme, known: &KnownProcesses, data: &[u8]) {
    let names = &scheme.names;
    let lossy = String::from_utf8_lossy(data);
    let before_query = lossy.split_once('?').map(|(p, _)| p);
    match (decide(names, known, Some(data)), classify(&lossy)) {
        (Decision::Route(cluster), Ok(target)) => {
            assert!(scheme.guard.is_match(&cluster), "guard refuses {cluster:?}");
            match target {
                Target::Room { process_id, .. } => {
                    assert!(process_id != UNDEFINED_PROCESS && known.contains(process_id));
                    assert_eq!(names.process_of(&cluster), Some(process_id));
                    assert_ne!(cluster, names.all());
                }
                Target::AnyProcess => {
                    assert!(names.is_all_shard(&cluster), "{cluster:?}");
                    assert_eq!(names.process_of(&cluster), None);
                }
            }
        }
        (
            Decision::Lookup {
                room_id,
                path_without_process,
                named_process,
            },
            classified,
        ) => {
            assert_eq!(check_id(&room_id), Ok(()), "{lossy:?}");
            // The fallback when the agent cannot be asked: a real process cluster.
            if let Some(p) = &named_process {
                assert_eq!(check_id(p), Ok(()));
                assert_ne!(p, UNDEFINED_PROCESS);
                assert!(scheme.guard.is_match(&names.process_unchecked(p)));
            }
            let before_query = before_query.unwrap();
            match classified {
                Ok(Target::Room {
                    process_id,
                    room_id: r,
                }) => {
                    assert_eq!(room_id, r);
                    assert!(!path_without_process);
                    let named = (process_id != UNDEFINED_PROCESS).then_some(process_id);
                    assert_eq!(named_process.as_deref(), named);
                    assert!(process_id == UNDEFINED_PROCESS || !known.contains(process_id));
                }
                // A room path without its processId: `/{roomId}?...`.
                Err(PathError::MissingSegments) => {
                    assert!(path_without_process && named_process.is_none());
                    assert_eq!(before_query, format!("/{room_id}"));
                }
                other => panic!("lookup of {room_id:?} but classify {other:?}"),
            }
        }
        (Decision::Reject(reply), Err(e)) => {
            assert_eq!(reply.status, 400);
            let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(body["error"], "malformed_room_path");
            assert_eq!(body["detail"], e.to_string());
        }
        (decision, classified) => panic!("decide {decision:?} but classify {classified:?}"),
    }
}
