//! Processes that crash or stall: a dead one is unrouted within the detection window and
//! joins go on on the others; one stalled for less than the window keeps its players.
#![cfg(feature = "e2e")]

use std::time::{Duration, Instant};

use e2e::*;

/// The agent's defaults: probes every 2 s, dead after 3 failures spanning at least 4 s.
const DETECTION_BOUND: Duration = Duration::from_secs(15);

#[test]
fn killed_processes_are_unrouted_and_joins_go_on() {
    // Colyseus picks the process with the fewest rooms to create a room, from the
    // `roomcount` hash: a dead process left there would be picked forever. The agent removes
    // it from presence (opt-in), as Colyseus's own cleanup would.
    let stack = Stack::new("kill")
        .servers(2)
        .agent_args(&["--evict-dead-from-presence", "true"])
        .start();
    let (dir, redis, proxy) = (&stack.dir, &stack.redis, &stack.proxy);
    let live = stack.process_ids();
    let held = Holding::start(&proxy.endpoint(), 12);

    let mut detections = Vec::new();
    for i in 0..4 {
        let mut victim = GameServer::start(dir, redis, &[]);
        let mut with_victim = live.clone();
        with_victim.push(victim.process_id.clone());
        proxy.wait_routed(with_victim, Duration::from_secs(10));
        // A RedisDriver listing of a room on it, as Colyseus would have written it.
        let room = format!("gone{i}");
        let listing = format!(
            r#"{{"roomId":"{room}","processId":"{}","name":"echo","clients":1,"maxClients":4,"locked":false}}"#,
            victim.process_id
        );
        let _: () = redis::cmd("HSET")
            .arg("roomcaches")
            .arg(&room)
            .arg(&listing)
            .query(&mut redis.conn())
            .unwrap();
        victim.proc.child.kill().unwrap();
        let killed = Instant::now();
        let _ = victim.proc.child.wait();
        wait_for("dead process unrouted", DETECTION_BOUND, || {
            (!proxy.routed().contains(&victim.process_id)).then_some(())
        });
        detections.push(killed.elapsed());
        // Nothing goes to it any more: no cluster of its own, not in matchmaking.
        let path = format!("/{}/someroom?sessionId=x", victim.process_id);
        wait_for(
            "dead process's cluster removed",
            Duration::from_secs(5),
            || (ws_handshake(&proxy.public(), &path).ok()? == 404).then_some(()),
        );
        let victim_addr = format!("127.0.0.1:{}", victim.port);
        wait_for(
            "dead process out of matchmaking",
            Duration::from_secs(5),
            || (!proxy.all_cluster_hosts().contains(&victim_addr)).then_some(()),
        );
        // Evicted from presence too, so Colyseus stops placing rooms on it.
        wait_for(
            "dead process out of Redis presence",
            Duration::from_secs(5),
            || (!redis.members().contains(&victim.member())).then_some(()),
        );
        let listed: Option<String> = redis::cmd("HGET")
            .arg("roomcaches")
            .arg(&room)
            .query(&mut redis.conn())
            .unwrap();
        assert_eq!(listed, None, "the dead process's room is still listed");
        let joins = swarm(&proxy.endpoint(), 16, &["--concurrency", "4"]);
        assert_eq!(joins.ok, 16, "joins after a kill: {:?}", joins.errors);
        assert!(!joins.by_process.contains_key(&victim.process_id));
    }
    let (median, max) = median_max(&mut detections);
    println!(
        "MEASURED kill -9 -> unrouted: median {median:.0} ms, max {max:.0} ms ({} kills)",
        detections.len()
    );
    assert!(proxy.agent_metric("colyseus_envoy_processes_died_total") >= 4);

    // The players on the surviving processes never noticed.
    let result = held.finish();
    assert_eq!(result.ok, 12, "dropped: {:?}", result.errors);
    proxy.assert_no_rejected_config();
}

#[test]
fn stalls_shorter_than_the_window_evict_nobody() {
    let stack = Stack::new("stall").servers(2).start();
    let (proxy, a, b) = (&stack.proxy, &stack.servers[0], &stack.servers[1]);
    let both = stack.process_ids();
    let held = Holding::start(&proxy.endpoint(), 12);

    // Three stalls of 3 s (below the 4 s window), with recovery in between.
    for _ in 0..3 {
        b.proc.signal("STOP");
        let stalled = Instant::now();
        while stalled.elapsed() < Duration::from_secs(3) {
            let mut routed = proxy.routed();
            routed.sort();
            let mut expected = both.clone();
            expected.sort();
            assert_eq!(routed, expected, "a stalled process was unrouted");
            std::thread::sleep(Duration::from_millis(100));
        }
        b.proc.signal("CONT");
        std::thread::sleep(Duration::from_secs(3));
    }
    assert_eq!(proxy.agent_metric("colyseus_envoy_processes_died_total"), 0);
    let result = held.finish();
    println!(
        "held through three 3 s stalls: ok {} of {}",
        result.ok, result.clients
    );
    assert_eq!(result.ok, 12, "dropped: {:?}", result.errors);

    // A longer stall is death; resuming makes it routable again.
    b.proc.signal("STOP");
    wait_for("stalled process declared dead", DETECTION_BOUND, || {
        (proxy.routed() == vec![a.process_id.clone()]).then_some(())
    });
    assert_eq!(proxy.agent_metric("colyseus_envoy_processes_dead"), 1);
    assert_eq!(proxy.agent_metric("colyseus_envoy_processes"), 1);
    b.proc.signal("CONT");
    proxy.wait_routed(both, DETECTION_BOUND);
    assert!(proxy.agent_metric("colyseus_envoy_processes_recovered_total") >= 1);
}
