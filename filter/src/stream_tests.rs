use proxy_wasm::types::Status;
use routing::{EdgePluginConfig, PluginConfig};

use super::*;
use crate::decide::{decide, Decision};
use crate::lookup::KnownProcesses;

#[derive(Default)]
struct MockHost {
    data: Vec<u8>,
    cluster: Option<String>,
    closed: Vec<u32>,
    now: u64,
    fail_replace: bool,
    fail_cluster: bool,
    address: Option<&'static str>,
}

impl StreamHost for MockHost {
    fn downstream_data(&self, size: usize) -> Result<Vec<u8>, Status> {
        Ok(self.data[..size].to_vec())
    }
    fn replace_downstream_data(&mut self, len: usize, bytes: &[u8]) -> Result<(), Status> {
        if self.fail_replace {
            return Err(Status::InternalFailure);
        }
        self.data.splice(..len, bytes.iter().copied());
        Ok(())
    }
    fn set_upstream_cluster(&mut self, cluster: &str) -> Result<(), Status> {
        if self.fail_cluster {
            return Err(Status::NotFound);
        }
        self.cluster = Some(cluster.to_owned());
        Ok(())
    }
    fn client_address(&self) -> Option<String> {
        self.address.map(str::to_owned)
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn close_connection(&mut self, context_id: u32) -> Result<(), Status> {
        self.closed.push(context_id);
        Ok(())
    }
}

fn config() -> Rc<RoutingConfig> {
    let raw = PluginConfig {
        edge: Some(EdgePluginConfig {
            hcm_cluster: "colyseus_hcm".into(),
            scheme: "http".into(),
            head_timeout_ms: 1000,
            max_head_bytes: 4096,
        }),
        ..PluginConfig::default()
    };
    Rc::new(RoutingConfig::try_from(raw).unwrap())
}

fn shared(known: Option<&[&str]>) -> Rc<Shared> {
    let shared = Rc::new(Shared::default());
    if let Some(ids) = known {
        shared
            .known
            .borrow_mut()
            .set(ids.iter().map(|s| (*s).to_owned()).collect());
    }
    shared
}

const ROOM: &[u8] = b"GET /p1/r1?sessionId=s HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";

fn host(data: &[u8]) -> MockHost {
    MockHost {
        data: data.to_vec(),
        address: Some("10.0.0.7:40000"),
        now: 5000,
        ..MockHost::default()
    }
}

#[test]
fn a_live_room_upgrade_goes_raw_with_its_head_rewritten() {
    let shared = shared(Some(&["p1"]));
    let mut r = EdgeRouter::new(3, Some(config()), Rc::clone(&shared));
    let mut h = host(ROOM);
    assert_eq!(r.on_connection(&mut h), Action::Pause);
    assert_eq!(shared.paused.borrow().get(&3), Some(&6000));
    // The head arrives in two pieces.
    assert_eq!(r.on_data(&mut h, 20, false), Action::Pause);
    assert_eq!(h.cluster, None);
    assert_eq!(r.on_data(&mut h, ROOM.len(), false), Action::Continue);
    assert_eq!(h.cluster.as_deref(), Some("colyseus-process-p1"));
    let head = String::from_utf8(h.data.clone()).unwrap();
    assert!(head.contains("x-forwarded-for: 10.0.0.7\r\n"), "{head}");
    assert!(!head.contains("6.6.6.6"), "{head}");
    assert!(shared.paused.borrow().is_empty());
    // Later data (WebSocket frames) is not looked at.
    h.data = b"\x81\x05hello".to_vec();
    assert_eq!(r.on_data(&mut h, 7, false), Action::Continue);
    assert_eq!(h.data, b"\x81\x05hello");
}

#[test]
fn anything_else_goes_to_the_hcm_untouched() {
    // Unknown process, no fetched set yet, matchmaking, no client address, host failures.
    type Case<'a> = (Option<&'a [&'a str]>, &'a [u8], fn(&mut MockHost));
    let cases: [Case<'_>; 6] = [
        (Some(&["p2"]), ROOM, |_| {}),
        (None, ROOM, |_| {}),
        (
            Some(&["p1"]),
            b"POST /matchmake/joinOrCreate/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
            |_| {},
        ),
        (Some(&["p1"]), ROOM, |h| h.address = None),
        (Some(&["p1"]), ROOM, |h| h.fail_replace = true),
        (
            Some(&["p1"]),
            b"GET /p1/r1?sessionId=s HTTP/1.1\nHost: a\n\n",
            |_| {},
        ),
    ];
    for (known, data, tweak) in cases {
        let shared = shared(known);
        let mut r = EdgeRouter::new(1, Some(config()), Rc::clone(&shared));
        let mut h = host(data);
        tweak(&mut h);
        r.on_connection(&mut h);
        assert_eq!(r.on_data(&mut h, data.len(), false), Action::Continue);
        assert_eq!(h.cluster, None);
        assert_eq!(h.data, data, "{:?}", String::from_utf8_lossy(data));
        assert!(shared.paused.borrow().is_empty());
    }
    // The cluster cannot be set: the rewritten head goes to the HCM (which rewrites again).
    let mut r = EdgeRouter::new(1, Some(config()), shared(Some(&["p1"])));
    let mut h = host(ROOM);
    h.fail_cluster = true;
    r.on_connection(&mut h);
    assert_eq!(r.on_data(&mut h, ROOM.len(), false), Action::Continue);
    assert_eq!(h.cluster, None);
    // A client that half-closes mid-head: the HCM answers it.
    let mut r = EdgeRouter::new(1, Some(config()), shared(Some(&["p1"])));
    let mut h = host(&ROOM[..10]);
    r.on_connection(&mut h);
    assert_eq!(r.on_data(&mut h, 10, true), Action::Continue);
}

#[test]
fn slow_and_silent_connections_are_closed_at_the_deadline() {
    let shared = shared(Some(&["p1"]));
    let mut slow = EdgeRouter::new(1, Some(config()), Rc::clone(&shared));
    let mut silent = EdgeRouter::new(2, Some(config()), Rc::clone(&shared));
    let mut h = host(ROOM);
    slow.on_connection(&mut h);
    h.now = 5500;
    silent.on_connection(&mut h);
    assert_eq!(slow.on_data(&mut h, 10, false), Action::Pause);
    // The slow one's next byte comes after its deadline.
    h.now = 6000;
    assert_eq!(slow.on_data(&mut h, 11, false), Action::Pause);
    assert_eq!(h.closed, [1]);
    // The silent one is closed by the tick, once.
    close_expired(&shared, &mut h);
    assert!(h.closed == [1], "not yet: {:?}", h.closed);
    h.now = 6500;
    close_expired(&shared, &mut h);
    close_expired(&shared, &mut h);
    assert_eq!(h.closed, [1, 2]);
    assert!(shared.paused.borrow().is_empty());
    // A connection closed by its client is forgotten.
    let mut gone = EdgeRouter::new(4, Some(config()), Rc::clone(&shared));
    gone.on_connection(&mut h);
    gone.on_close();
    assert!(shared.paused.borrow().is_empty());
}

#[test]
fn unconfigured_goes_on_to_the_default_cluster() {
    let mut r = EdgeRouter::new(1, None, Rc::default());
    let mut h = host(ROOM);
    assert_eq!(r.on_connection(&mut h), Action::Continue);
    assert_eq!(r.on_data(&mut h, ROOM.len(), false), Action::Continue);
    assert_eq!(h.cluster, None);
}

/// The network callbacks `scripts/build-filter.sh` strips are the SDK's defaults here
/// (called from `http`'s `stripped_callbacks_are_sdk_defaults`, which owns the list).
pub(crate) fn upstream_callbacks_are_defaults() {
    let mut r = EdgeRouter::new(1, Some(config()), Rc::default());
    assert_eq!(r.on_upstream_data(64, false), Action::Continue);
    assert_eq!(r.on_upstream_data(0, true), Action::Continue);
    r.on_upstream_close(PeerType::Remote);
    assert!(!r.decided);
}

/// The parity the two paths promise: a head the raw path takes would get `Route` to the
/// same cluster from the HTTP filter, whose path comes from the same head.
#[test]
fn the_raw_path_agrees_with_the_http_filter() {
    let targets = [
        "/p1/r1?sessionId=s",
        "/eu/p1/r1?sessionId=s&reconnectionToken=x",
        "/p2/r1?sessionId=s",
        "/undefined/r1?sessionId=s",
        "/r1?sessionId=s",
        "/matchmake/joinOrCreate/echo",
    ];
    let mut known = KnownProcesses::default();
    known.set(["p1".to_owned()].into());
    let shared = Rc::new(Shared::default());
    shared.known.borrow_mut().set(["p1".to_owned()].into());
    let names = &config().names;
    for target in targets {
        let bytes = format!(
            "GET {target} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        );
        let mut r = EdgeRouter::new(1, Some(config()), Rc::clone(&shared));
        let mut h = host(bytes.as_bytes());
        r.on_connection(&mut h);
        r.on_data(&mut h, bytes.len(), false);
        match (&h.cluster, decide(names, &known, Some(target.as_bytes()))) {
            (Some(raw), Decision::Route(http)) => assert_eq!(raw, &http, "{target}"),
            (Some(raw), other) => panic!("{target}: raw {raw}, HTTP filter {other:?}"),
            (None, _) => assert!(!target.starts_with("/p1/") && !target.starts_with("/eu/")),
        }
    }
}
