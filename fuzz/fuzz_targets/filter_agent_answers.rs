//! The filter's readers of the agent's answers (`lookup::parse_room_answer` for
//! `GET /rooms/{roomId}`, `lookup::parse_processes` for `GET /processes`) on any body.
//!
//! Invariants: a room answer is trusted only when it names a process cluster of the
//! filter's own naming scheme (one the route guard accepts, never the all-processes
//! cluster, nor any other cluster), and only with status 200; `Unknown` only with a 404;
//! the processes answer is read only with a 200 and keeps only processIds listed in it.
#![no_main]

use std::sync::OnceLock;

use colyseus_envoy_filter::lookup::{parse_processes, parse_room_answer, RoomAnswer};
use libfuzzer_sys::fuzz_target;
use regex_lite::Regex;
use routing::ClusterNames;

fn schemes() -> &'static [(ClusterNames, Regex)] {
    static SCHEMES: OnceLock<Vec<(ClusterNames, Regex)>> = OnceLock::new();
    SCHEMES.get_or_init(|| {
        [
            ClusterNames::default(),
            ClusterNames::new("gs-", "gs_all").unwrap(),
        ]
        .into_iter()
        .map(|n| {
            let guard = Regex::new(&n.route_guard_regex()).unwrap();
            (n, guard)
        })
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    for (names, guard) in schemes() {
        for status in [Some(200), Some(404), Some(503), None] {
            match parse_room_answer(names, status, data) {
                RoomAnswer::Found(cluster) => {
                    assert_eq!(status, Some(200));
                    assert!(guard.is_match(&cluster), "{cluster:?}");
                    assert_ne!(cluster, names.all());
                    let pid = names.process_of(&cluster).unwrap();
                    let body: serde_json::Value = serde_json::from_slice(data).unwrap();
                    assert_eq!(body["processId"], pid);
                    assert_eq!(body["cluster"], cluster.as_str());
                }
                RoomAnswer::Unknown => assert_eq!(status, Some(404)),
                RoomAnswer::Failed(_) => {}
            }
        }
    }
    for status in [Some(200), Some(500), None] {
        if let Ok(answer) = parse_processes(status, data) {
            let ids = &answer.ids;
            // Matchmaking weights only for listed (routable) processes.
            assert!(answer.active.iter().all(|(id, _)| ids.contains(id)));
            assert_eq!(status, Some(200));
            let body: serde_json::Value = serde_json::from_slice(data).unwrap();
            let listed: Vec<&str> = body
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["processId"].as_str())
                .collect();
            assert!(ids.iter().all(|id| listed.contains(&id.as_str())));
        }
    }
});
