//! Room connections whose processId is missing, `undefined` or not a live process are routed
//! by roomId: the filter asks the agent (`GET /rooms/{roomId}`) and a known processId makes no
//! call out. Real Envoy, agent, Redis and Colyseus servers (MongooseDriver room listings on the secantusdb server).
#![cfg(feature = "e2e")]

use std::time::{Duration, Instant};

use e2e::*;

/// Colyseus's first message on a seat it accepts.
const JOIN_ROOM: u8 = 10;
/// WebSocket binary frame.
const BINARY: u8 = 2;
const AGENT_CALLS: &str = "cluster.colyseus_agent.upstream_rq_total";
/// The agent's room-lookup metrics (`/metrics`).
const LOOKUPS_FOUND: &str = "colyseus_envoy_lookups_total{outcome=\"found\"}";
const LOOKUPS_UNKNOWN: &str = "colyseus_envoy_lookups_total{outcome=\"unknown\"}";
const LOOKUPS_TIMED: &str = "colyseus_envoy_lookup_duration_seconds_count";
const LOOKUPS_SLOW: &str = "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.25\"}";

/// Everything a test keeps alive.
/// Fields drop in order: the processes first, the scratch directory last.
struct Setup {
    proxy: Proxy,
    servers: Vec<GameServer>,
    mongo: Option<MongoServer>,
    _redis: Redis,
    _dir: Scratch,
}

/// Redis (presence), the MongoDB-protocol server (MongooseDriver room listings, which the
/// agent indexes), two Colyseus servers and the proxy, once each worker's filter has its
/// process list.
fn setup(name: &str) -> Setup {
    setup_with(name, &[])
}

fn setup_with(name: &str, agent_args: &[&str]) -> Setup {
    setup_how(name, agent_args, false)
}

/// `apart`: the agent as its own process ([`Proxy::start_apart`]), for a test that stops it.
fn setup_how(name: &str, agent_args: &[&str], apart: bool) -> Setup {
    let dir = scratch(name);
    let redis = Redis::start(&dir);
    let mongo = MongoServer::start(&dir);
    let uri = mongo.uri();
    let env = [("DRIVER", "mongoose"), ("MONGO_URI", uri.as_str())];
    let servers: Vec<GameServer> = (0..2)
        .map(|_| GameServer::start(&dir, &redis, &env))
        .collect();
    let mut args = vec!["--mongo-uri", uri.as_str()];
    args.extend_from_slice(agent_args);
    let proxy = if apart {
        Proxy::start_apart(&dir, &redis.url(), &args, &[])
    } else {
        Proxy::start_with(&dir, &redis.url(), &args)
    };
    ready(proxy, servers, Some(mongo), redis, dir)
}

fn ready(
    proxy: Proxy,
    servers: Vec<GameServer>,
    mongo: Option<MongoServer>,
    redis: Redis,
    dir: Scratch,
) -> Setup {
    proxy.wait_routed(
        servers.iter().map(|s| s.process_id.clone()).collect(),
        Duration::from_secs(10),
    );
    // Each worker asks for /processes every second; two workers, two rounds each.
    wait_for(
        "filters fetched the process list",
        Duration::from_secs(10),
        || (proxy.envoy_stat(AGENT_CALLS) >= 4).then_some(()),
    );
    Setup {
        proxy,
        servers,
        mongo,
        _redis: redis,
        _dir: dir,
    }
}

/// Joins `seat`'s room through the untrusted path `form` (`{r}` = the roomId): the player
/// must get Colyseus's `JOIN_ROOM`, not "seat reservation expired".
fn join_by(public: &str, form: &str, seat: &Seat, try_no: usize) {
    let path = format!(
        "{}?sessionId={}",
        form.replace("{r}", &seat.room_id),
        seat.session_id
    );
    assert_eq!(
        ws_first_frame(public, &path),
        (101, Some(BINARY), Some(JOIN_ROOM)),
        "try {try_no}: {path} (room on {})",
        seat.process_id
    );
}

fn room_known_to_agent(proxy: &Proxy, room_id: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok((200, _, _)) = http_get(&proxy.api(), &format!("/rooms/{room_id}")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn untrusted_process_ids_are_routed_by_room() {
    // Apart: the agent is stopped below and must stay down (run would restart it).
    let mut setup = setup_how("fallback", &[], true);
    let proxy = &mut setup.proxy;
    let public = proxy.public();

    // A normal join: fast path, the seat is accepted. The room is looked up before the
    // player joins: Colyseus disposes a room (and deletes its listing) when its last client
    // leaves, which this player does right after the first frame.
    let seat = reserve_seat(&public, "echo");
    assert!(
        room_known_to_agent(proxy, &seat.room_id, Duration::from_secs(10)),
        "the agent never listed room {} (GET /rooms/{{roomId}})",
        seat.room_id
    );
    let path = format!(
        "/{}/{}?sessionId={}",
        seat.process_id, seat.room_id, seat.session_id
    );
    assert_eq!(
        ws_first_frame(&public, &path),
        (101, Some(BINARY), Some(JOIN_ROOM))
    );

    // An unknown room: 404 naming the room, whatever the processId (never a random process).
    for path in [
        "/undefined/noSuchRoom1?sessionId=x",
        "/nope12345/noSuchRoom1?sessionId=x",
        "/noSuchRoom1?sessionId=x",
    ] {
        let (status, head, body) = http_get(&public, path).unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(head
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "unknown_room", "{body}");
        assert_eq!(v["roomId"], "noSuchRoom1", "{body}");
        assert_eq!(ws_handshake(&public, path).unwrap(), 404);
    }

    // Missing, `undefined` or dead processId with a valid seat: the player still reaches the
    // room's process (JOIN_ROOM, not "seat reservation expired").
    let found_before = proxy.agent_metric(LOOKUPS_FOUND);
    let mut by_process = std::collections::BTreeMap::<String, u32>::new();
    for (i, form) in ["/undefined/{r}", "/nope12345/{r}", "/{r}"]
        .iter()
        .cycle()
        .take(9)
        .enumerate()
    {
        let seat = reserve_seat(&public, "echo");
        assert!(room_known_to_agent(
            proxy,
            &seat.room_id,
            Duration::from_secs(10)
        ));
        join_by(&public, form, &seat, i);
        *by_process.entry(seat.process_id).or_default() += 1;
    }
    println!("fallback joins by process: {by_process:?}");
    // Each of the 9 seats was found twice: by the test's own GET and by the filter's lookup.
    let found = proxy.agent_metric(LOOKUPS_FOUND) - found_before;
    assert!(
        found >= 18,
        "{found} lookups counted found for 9 fallback joins"
    );

    // The fast path makes no call out: the agent cluster only sees the process-list ticks
    // (2 workers x 1/s). 200 lookups of unknown rooms each make one.
    let path = format!("/{}/{}?sessionId=x", seat.process_id, seat.room_id);
    let (before, start) = (proxy.envoy_stat(AGENT_CALLS), Instant::now());
    for _ in 0..200 {
        assert_eq!(ws_handshake(&public, &path).unwrap(), 101);
    }
    let (calls, secs) = (
        proxy.envoy_stat(AGENT_CALLS) - before,
        start.elapsed().as_secs_f64(),
    );
    let tick_bound = 2 * (secs.ceil() as u64 + 1);
    println!(
        "fast path: 200 upgrades in {secs:.2} s, {calls} agent calls (ticks allow {tick_bound})"
    );
    assert!(
        calls <= tick_bound,
        "{calls} agent calls for 200 fast-path upgrades"
    );
    let before = proxy.envoy_stat(AGENT_CALLS);
    let (unknown_before, timed_before) = (
        proxy.agent_metric(LOOKUPS_UNKNOWN),
        proxy.agent_metric(LOOKUPS_TIMED),
    );
    for i in 0..200 {
        let path = format!("/undefined/gone{i}?sessionId=x");
        assert_eq!(ws_handshake(&public, &path).unwrap(), 404);
    }
    let calls = proxy.envoy_stat(AGENT_CALLS) - before;
    println!("fallback path: 200 unknown rooms made {calls} agent calls");
    assert!(calls >= 200);
    // The agent counted and timed each of those lookups (nothing else asked for rooms), and
    // none of them took anywhere near the filter's 500 ms budget.
    let unknown = proxy.agent_metric(LOOKUPS_UNKNOWN) - unknown_before;
    let timed = proxy.agent_metric(LOOKUPS_TIMED);
    assert_eq!(unknown, 200, "lookups counted unknown");
    assert_eq!(timed - timed_before, 200, "lookups timed");
    assert_eq!(
        proxy.agent_metric(LOOKUPS_SLOW),
        timed,
        "lookups over 250 ms"
    );
    let (_, _, metrics) = http_get(&proxy.api(), "/metrics").unwrap();
    let sum: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("colyseus_envoy_lookup_duration_seconds_sum "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let (_, _, waits) = http_get(
        &proxy.admin(),
        "/stats?filter=^cluster.colyseus_agent.upstream_rq_time$",
    )
    .unwrap();
    println!(
        "agent lookup time: mean {:.1} us over {timed} lookups; filter's wait (Envoy): {}",
        sum / timed as f64 * 1e6,
        waits.trim()
    );

    // Agent gone: lookups fail with a clear 503, and a known processId still works (after a
    // failed refresh every processId counts as known).
    proxy.agent_proc().stop(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(2500));
    let (status, _, body) = http_get(&public, "/undefined/someRoom?sessionId=x").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("room_lookup_failed"), "{body}");
    let path = format!("/{}/{}?sessionId=x", seat.process_id, seat.room_id);
    assert_eq!(ws_handshake(&public, &path).unwrap(), 101);
    proxy.assert_no_rejected_config();
}

/// `--evict-dead-from-presence`: a killed process's MongooseDriver listings are deleted (as
/// Colyseus's `driver.cleanup(processId)` would), so nobody is offered its rooms; the other
/// process's rooms stay.
#[test]
fn a_dead_process_listings_leave_mongodb() {
    let mut setup = setup_with("fallback-evict", &["--evict-dead-from-presence", "true"]);
    let public = setup.proxy.public();
    let uri = setup.mongo.as_ref().unwrap().uri();
    let mut mongo = MongoClient::connect(&uri);
    // Colyseus creates each new room on the process with the fewest rooms: one on each.
    let seats = [
        matchmake(&public, "create", "echo"),
        matchmake(&public, "create", "echo"),
    ];
    assert_ne!(seats[0].process_id, seats[1].process_id);
    let count = |mongo: &mut MongoClient, pid: &str| {
        mongo.send(serde_json::json!({"op": "count", "filter": {"processId": pid}}))
    };
    assert_eq!(count(&mut mongo, &seats[0].process_id), 1);
    let victim = setup
        .servers
        .iter_mut()
        .find(|s| s.process_id == seats[0].process_id)
        .unwrap();
    victim.proc.signal("KILL");
    let start = Instant::now();
    wait_for(
        "the dead process's listings deleted",
        Duration::from_secs(20),
        || (count(&mut mongo, &seats[0].process_id) == 0).then_some(()),
    );
    println!("kill -9 -> listings deleted in {:?}", start.elapsed());
    let (status, _, _) =
        http_get(&setup.proxy.api(), &format!("/rooms/{}", seats[0].room_id)).unwrap();
    assert_eq!(status, 404);
    assert_eq!(count(&mut mongo, &seats[1].process_id), 1);
    let (status, _, _) =
        http_get(&setup.proxy.api(), &format!("/rooms/{}", seats[1].room_id)).unwrap();
    assert_eq!(status, 200);
}

/// RedisDriver listings (`--redis-rooms`), read whole only at start here (the period is an
/// hour): rooms created later are routed by roomId through the agent's read-through (HGET on
/// a lookup miss), the moment matchmaking returns. Garbage in the hash is skipped and
/// counted.
#[test]
fn redis_driver_rooms_are_routed_by_room_at_once() {
    let dir = scratch("fallback-redis-rooms");
    let redis = Redis::start(&dir);
    let servers: Vec<GameServer> = (0..2)
        .map(|_| GameServer::start(&dir, &redis, &[("DRIVER", "redis")]))
        .collect();
    let mut conn = redis.conn();
    for (key, value) in [
        ("garbage1", "not json"),
        ("elsewhere", r#"{"roomId":"other","processId":"p1"}"#),
        ("noPid", r#"{"roomId":"noPid"}"#),
    ] {
        let _: () = redis::cmd("HSET")
            .arg("roomcaches")
            .arg(key)
            .arg(value)
            .query(&mut conn)
            .unwrap();
    }
    let proxy = Proxy::start_with(
        &dir,
        &redis.url(),
        &["--redis-rooms", "--redis-rooms-interval", "1h"],
    );
    let setup = ready(proxy, servers, None, redis, dir);
    let proxy = &setup.proxy;
    let public = proxy.public();
    let rejected = |reason: &str| {
        proxy.agent_metric(&format!(
            "colyseus_envoy_rejected_inputs_total{{source=\"redis-rooms\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(rejected("not_json"), 1);
    assert_eq!(rejected("key_mismatch"), 1);
    assert_eq!(rejected("missing_field"), 1);
    assert_eq!(proxy.agent_metric("colyseus_envoy_redis_rooms_up"), 1);

    let found = r#"colyseus_envoy_room_fetches_total{outcome="found"}"#;
    let mut by_process = std::collections::BTreeMap::<String, u32>::new();
    for (i, form) in ["/undefined/{r}", "/nope12345/{r}", "/{r}"]
        .iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        // A new room each time, joined at once with an untrusted processId.
        let seat = matchmake(&public, "create", "echo");
        join_by(&public, form, &seat, i);
        assert_eq!(proxy.agent_metric(found), i as u64 + 1);
        *by_process.entry(seat.process_id).or_default() += 1;
    }
    println!("read-through joins by process: {by_process:?}");
    assert_eq!(
        http_get(&public, "/undefined/noSuchRoom1?sessionId=x")
            .unwrap()
            .0,
        404
    );
    assert!(proxy.agent_metric(r#"colyseus_envoy_room_fetches_total{outcome="unlisted"}"#) >= 1);
    proxy.assert_no_rejected_config();
}

/// A benchmark series: name, request path for the i-th request, expected status.
type Series<'a> = (&'a str, Box<dyn Fn(usize) -> String + 'a>, u16);

/// Benchmark, not a test: `cargo test -p e2e --features e2e --test fallback -- --ignored
/// --nocapture bench`. Sequential upgrades through the real Envoy (2 workers); median
/// latency and Envoy CPU time per request for each path.
#[test]
#[ignore = "benchmark: prints numbers, asserts nothing about time"]
fn bench_fast_path_vs_fallback() {
    let setup = setup("fallback-bench");
    let proxy = &setup.proxy;
    let public = proxy.public();
    let seat = reserve_seat(&public, "echo");
    assert!(room_known_to_agent(
        proxy,
        &seat.room_id,
        Duration::from_secs(10)
    ));
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let r = &seat.room_id;
    let series: [Series<'_>; 4] = [
        (
            "fast path (known pid) -> 101",
            Box::new(|_| format!("/{}/{r}?sessionId=x", seat.process_id)),
            101,
        ),
        (
            "fallback, cached room (/undefined/) -> 101",
            Box::new(|_| format!("/undefined/{r}?sessionId=x")),
            101,
        ),
        (
            "fallback, agent call each (unknown room) -> 404",
            Box::new(|i| format!("/undefined/none{i}?sessionId=x")),
            404,
        ),
        (
            "local reply, no call (bad pid) -> 400",
            Box::new(|_| "/bad.pid/r?sessionId=x".to_owned()),
            400,
        ),
    ];
    for (name, path, want) in series {
        // Warm-up, then measure.
        for i in 0..50 {
            assert_eq!(ws_handshake(&public, &path(n + i)).unwrap(), want);
        }
        let cpu0 = cpu_time(proxy.envoy_pid());
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            assert_eq!(ws_handshake(&public, &path(i)).unwrap(), want, "{name}");
            samples.push(t.elapsed());
        }
        let cpu = cpu_time(proxy.envoy_pid()) - cpu0;
        let (med, max) = median_max(&mut samples);
        let mut sorted = samples.clone();
        sorted.sort();
        let p99 = sorted[n * 99 / 100].as_secs_f64() * 1000.0;
        println!(
            "BENCH {name}: n={n} median {med:.3} ms, p99 {p99:.3} ms, max {max:.1} ms, Envoy CPU {:.1} us/request",
            cpu.as_secs_f64() * 1e6 / n as f64
        );
    }
}
