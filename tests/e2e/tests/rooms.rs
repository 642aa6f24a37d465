//! Room listings from MongoDB (MongooseDriver's `roomcaches`, served by `secantusdb`): the
//! agent's `GET /rooms/{roomId}` names the room's process; garbage documents are skipped and
//! counted; 10,000 documents load.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{json, Value};

fn lookup(proxy: &Proxy, room_id: &str) -> (u16, Value) {
    let (status, _, body) = http_get(&proxy.api(), &format!("/rooms/{room_id}")).unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Waits until the room is routable, returning its answer.
fn wait_room(proxy: &Proxy, room_id: &str, timeout: Duration) -> Value {
    wait_for(&format!("room {room_id}"), timeout, || {
        let (status, body) = lookup(proxy, room_id);
        (status == 200).then_some(body)
    })
}

fn rejected(proxy: &Proxy, reason: &str) -> u64 {
    proxy.agent_metric(&format!(
        "colyseus_envoy_rejected_inputs_total{{source=\"mongo\",reason=\"{reason}\"}}"
    ))
}

#[test]
fn mongo_room_listings_route_by_room_id() {
    let dir = scratch("rooms");
    let redis = Redis::start(&dir);
    let mongo_server = MongoServer::start(&dir);
    let mut mongo = MongoClient::connect(&mongo_server.uri());
    // Two registered processes; the address only has to accept connections.
    let mut conn = redis.conn();
    for pid in ["procA", "procB"] {
        let member = format!("{pid}/127.0.0.1:{}", redis.port);
        let _: () = redis::cmd("SADD")
            .arg("colyseus:nodes")
            .arg(&member)
            .query(&mut conn)
            .unwrap();
    }
    let uri = mongo_server.uri();
    let agent_args = [
        "--mongo-uri",
        uri.as_str(),
        "--liveness",
        "off",
        "--max-drain",
        "1s",
        "--drain-check-interval",
        "500ms",
    ];
    let mut proxy = Proxy::start_with(&dir, &redis.url(), &agent_args);
    proxy.wait_routed(
        vec!["procA".into(), "procB".into()],
        Duration::from_secs(10),
    );

    // Garbage first: it must not keep the good documents out.
    mongo.send(json!({"op": "raw", "doc": {"roomId": 42, "processId": "procA"}}));
    mongo.send(json!({"op": "raw", "doc": {"processId": "procA", "name": "no id"}}));
    mongo.send(
        json!({"op": "room", "roomId": "badClients", "processId": "procA",
        "extra": {"clients": "many"}}),
    );
    for (room, pid, clients) in [("r1", "procA", 2), ("r2", "procA", 3), ("r3", "procB", 4)] {
        mongo.send(json!({"op": "room", "roomId": room, "processId": pid, "clients": clients}));
    }
    for (room, pid) in [("r1", "procA"), ("r2", "procA"), ("r3", "procB")] {
        let body = wait_room(&proxy, room, Duration::from_secs(10));
        assert_eq!(body["processId"], pid, "{body}");
        assert_eq!(body["roomId"], room);
        assert_eq!(body["cluster"], format!("colyseus-process-{pid}"), "{body}");
        assert_eq!(body["maxClients"], Value::Null, "Infinity is no limit");
    }
    wait_for("garbage counted", Duration::from_secs(5), || {
        (rejected(&proxy, "wrong_type") == 2 && rejected(&proxy, "missing_field") == 1)
            .then_some(())
    });
    assert_eq!(lookup(&proxy, "badClients").0, 404);

    // Per-process load on /processes.
    let (_, _, body) = http_get(&proxy.api(), "/processes").unwrap();
    let processes: Vec<Value> = serde_json::from_str(&body).unwrap();
    let a = processes
        .iter()
        .find(|p| p["processId"] == "procA")
        .unwrap();
    assert_eq!(
        (a["rooms"].as_u64(), a["ccu"].as_u64()),
        (Some(2), Some(5)),
        "{a}"
    );

    // A room of a process that is not registered is not routable.
    mongo.send(json!({"op": "room", "roomId": "orphan", "processId": "procZ"}));
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = lookup(&proxy, "orphan");
    assert_eq!(status, 404);
    assert_eq!(body, json!({"error": "unknown_room", "roomId": "orphan"}));

    // Insert -> routable latency.
    let mut latencies = Vec::new();
    for i in 0..20 {
        let room = format!("lat{i}");
        let start = Instant::now();
        mongo.send(json!({"op": "room", "roomId": room, "processId": "procB"}));
        wait_room(&proxy, &room, Duration::from_secs(5));
        latencies.push(start.elapsed());
    }
    latencies.sort();
    println!(
        "MEASURED insert->GET /rooms 200: median {:?} max {:?} (20 inserts, change stream)",
        latencies[10], latencies[19]
    );

    // Delete -> 404.
    let start = Instant::now();
    mongo.send(json!({"op": "delete", "roomId": "r1"}));
    wait_for("r1 gone", Duration::from_secs(5), || {
        (lookup(&proxy, "r1").0 == 404).then_some(())
    });
    println!("MEASURED delete->404: {:?}", start.elapsed());

    // 10,000 documents through the change stream...
    let start = Instant::now();
    let total = mongo.send(json!({"op": "many", "n": 10_000, "prefix": "bulk",
        "processIds": ["procA", "procB"]}));
    let inserted = start.elapsed();
    let expected_rooms = total - 3; // all but the three garbage documents (the orphan is kept)
    wait_for("10k rooms indexed", Duration::from_secs(60), || {
        (proxy.agent_metric("colyseus_envoy_rooms") == expected_rooms).then_some(())
    });
    println!(
        "MEASURED 10,000 inserts (pymongo, batches of 1000) {inserted:?}; all indexed via change stream {:?} after the first insert",
        start.elapsed()
    );
    // ... and by a full load when the agent starts.
    let start = Instant::now();
    proxy.restart_agent(&agent_args);
    wait_for("10k rooms loaded", Duration::from_secs(60), || {
        let n = http_get(&proxy.api(), "/metrics")
            .ok()
            .map(|_| proxy.agent_metric("colyseus_envoy_rooms"))?;
        (n == expected_rooms && lookup(&proxy, "bulk9999").0 == 200).then_some(())
    });
    println!(
        "MEASURED agent restart -> {expected_rooms} rooms loaded and routable: {:?}",
        start.elapsed()
    );
    assert_eq!(lookup(&proxy, "r2").1["processId"], "procA");
    assert_eq!(
        rejected(&proxy, "wrong_type"),
        2,
        "garbage counted once per load"
    );
    println!(
        "MEASURED agent VmRSS with {expected_rooms} rooms: {} KiB",
        rss_kib(proxy.agent_pid())
    );

    assert_eq!(proxy.agent_metric("colyseus_envoy_mongo_up"), 1);

    // A process leaving takes its rooms along (after its drain, cut short here).
    let member = format!("procA/127.0.0.1:{}", redis.port);
    let _: () = redis::cmd("SREM")
        .arg("colyseus:nodes")
        .arg(&member)
        .query(&mut conn)
        .unwrap();
    wait_for("procA's rooms gone", Duration::from_secs(15), || {
        (lookup(&proxy, "r2").0 == 404).then_some(())
    });
    let left = proxy.agent_metric("colyseus_envoy_rooms");
    assert!(left < expected_rooms && left >= 5_000, "{left}");
    assert_eq!(lookup(&proxy, "r3").1["processId"], "procB");
}

/// Without change streams the agent polls; a MongoDB restart that loses everything is
/// noticed and the index follows the new server, while known rooms keep routing during the
/// outage.
#[test]
fn standalone_mongo_is_polled_and_restarts_are_survived() {
    let dir = scratch("rooms-standalone");
    let redis = Redis::start(&dir);
    let port = free_port();
    let mut server = MongoServer::start_with(&dir, port, &["--standalone"]);
    let mut mongo = MongoClient::connect(&server.uri());
    let mut conn = redis.conn();
    let member = format!("procA/127.0.0.1:{}", redis.port);
    let _: () = redis::cmd("SADD")
        .arg("colyseus:nodes")
        .arg(&member)
        .query(&mut conn)
        .unwrap();
    let uri = server.uri();
    let proxy = Proxy::start_with(
        &dir,
        &redis.url(),
        &["--mongo-uri", &uri, "--liveness", "off"],
    );
    proxy.wait_routed(vec!["procA".into()], Duration::from_secs(10));
    wait_for("mongo source up", Duration::from_secs(10), || {
        (proxy.agent_metric("colyseus_envoy_mongo_up") == 1).then_some(())
    });
    let (_, report) = proxy.status();
    assert!(report.contains("room listings (mongo): up"), "{report}");

    // Polling (updatedAt) sees inserts within about a poll interval (1 s)...
    let start = Instant::now();
    mongo.send(json!({"op": "room", "roomId": "s1", "processId": "procA"}));
    mongo.send(json!({"op": "raw", "doc": {"roomId": "bad", "processId": 7}}));
    mongo.send(json!({"op": "room", "roomId": "s2", "processId": "procA"}));
    wait_room(&proxy, "s2", Duration::from_secs(5));
    println!(
        "MEASURED standalone (polling) insert->routable: {:?}",
        start.elapsed()
    );
    assert_eq!(lookup(&proxy, "s1").1["processId"], "procA");
    // ... and deletes at the next full reload (10 s).
    let start = Instant::now();
    mongo.send(json!({"op": "delete", "roomId": "s1"}));
    wait_for("s1 gone", Duration::from_secs(20), || {
        (lookup(&proxy, "s1").0 == 404).then_some(())
    });
    println!(
        "MEASURED standalone (polling) delete->404: {:?}",
        start.elapsed()
    );
    assert_eq!(
        rejected(&proxy, "wrong_type"),
        1,
        "counted once across reloads"
    );

    // MongoDB down: known rooms still route.
    drop(mongo);
    server.proc.stop(Duration::from_secs(5));
    wait_for("mongo source down", Duration::from_secs(15), || {
        (proxy.agent_metric("colyseus_envoy_mongo_up") == 0).then_some(())
    });
    assert_eq!(lookup(&proxy, "s2").0, 200);
    // The operator's report says so, and `agent status` exits non-zero.
    let (healthy, report) = proxy.status();
    assert!(report.contains("room listings (mongo): DOWN"), "{report}");
    assert!(!healthy, "{report}");

    // Back, empty, with change streams this time: the agent follows the new server.
    server = MongoServer::start_with(&dir, port, &[]);
    let mut mongo = MongoClient::connect(&server.uri());
    let start = Instant::now();
    mongo.send(json!({"op": "room", "roomId": "after", "processId": "procA"}));
    wait_room(&proxy, "after", Duration::from_secs(20));
    println!(
        "MEASURED MongoDB restart -> new room routable: {:?}",
        start.elapsed()
    );
    wait_for(
        "rooms of the lost data gone",
        Duration::from_secs(10),
        || (lookup(&proxy, "s2").0 == 404).then_some(()),
    );
    drop(server);
}
