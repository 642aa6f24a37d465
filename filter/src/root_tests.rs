//! Tests of the root context: the process-list refresh and its long-poll, by answer kind.
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
    fn send_local_reply(&mut self, _: u32, _: Vec<(&str, &str)>, _: &[u8]) -> Result<(), Status> {
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

/// A root with the default configuration, and a host that has seen no call.
fn configured() -> (Root, TickHost) {
    let root = Root {
        config: Some(Rc::new(parse_config(b"").unwrap())),
        ..Root::default()
    };
    (root, TickHost::default())
}

#[test]
fn ticks_refresh_the_known_processes() {
    let (mut root, mut host) = configured();
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
    let (mut root, mut host) = configured();
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
    let (mut root, mut host) = configured();
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
    let (mut root, mut host) = configured();
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
    let (mut root, mut host) = configured();
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
        br#"[{"processId":"p1","state":"active"},{"processId":"p2","state":"active"}]"#.to_vec();
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
    let (mut root, mut host) = configured();
    root.tick(&mut host);
    host.answer = (
        Some(200),
        br#"[{"processId":"p1","state":"active"},{"processId":"p2","state":"active"}]"#.to_vec(),
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
