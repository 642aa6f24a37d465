//! Processes come and go while players are connected: new ones become routable, leaving
//! ones stop getting matchmaking, and no config change drops an open WebSocket.
#![cfg(feature = "e2e")]

use std::time::{Duration, Instant};

use e2e::*;

#[test]
fn processes_join_and_leave_while_players_stay_connected() {
    let dir = scratch("membership");
    let redis = Redis::start(&dir);
    // A leaving process keeps its rooms for 60 s after unregistering (drain), so its
    // players' WebSockets must survive its cluster's removal.
    let drain = [("SHUTDOWN_DELAY_MS", "60000")];
    let a = GameServer::start(&dir, &redis, &drain);
    let mut b = GameServer::start(&dir, &redis, &drain);
    let proxy = Proxy::start(&dir, &redis);
    proxy.wait_routed(
        vec![a.process_id.clone(), b.process_id.clone()],
        Duration::from_secs(10),
    );

    let held = Holding::start(&proxy.endpoint(), 24);

    // A process that registers while traffic runs becomes routable and gets rooms.
    let c = GameServer::start(&dir, &redis, &[]);
    proxy.wait_routed(
        vec![
            a.process_id.clone(),
            b.process_id.clone(),
            c.process_id.clone(),
        ],
        Duration::from_secs(5),
    );
    let after_join = swarm(&proxy.endpoint(), 30, &["--concurrency", "5"]);
    println!("after a process joined: {:?}", after_join.by_process);
    assert_eq!(after_join.ok, 30, "{:?}", after_join.errors);
    assert!(
        after_join.by_process.contains_key(&c.process_id),
        "new process got no player: {:?}",
        after_join.by_process
    );

    // A process that unregisters (graceful shutdown) gets no new matchmaking: it leaves the
    // all-processes cluster. Its own cluster stays while it drains, because Colyseus still
    // seats players in its remaining rooms (the matchmaking of the other processes does).
    b.proc.signal("TERM");
    proxy.wait_routed(
        vec![a.process_id.clone(), c.process_id.clone()],
        Duration::from_secs(5),
    );
    assert_eq!(proxy.draining(), vec![b.process_id.clone()]);
    assert_eq!(proxy.agent_metric("colyseus_envoy_processes_draining"), 1);
    let b_addr = format!("127.0.0.1:{}", b.port);
    wait_for(
        "leaving process out of the matchmaking cluster",
        Duration::from_secs(5),
        || (!proxy.all_cluster_hosts().contains(&b_addr)).then_some(()),
    );
    assert_eq!(proxy.all_cluster_hosts().len(), 2);
    let after_leave = swarm(&proxy.endpoint(), 20, &["--concurrency", "5"]);
    println!("after a process left: {:?}", after_leave.by_process);
    assert_eq!(after_leave.ok, 20, "{:?}", after_leave.errors);

    // Garbage and conflicting registrations on top: skipped, everything else routes.
    let mut conn = redis.conn();
    let conflict = format!("{}/127.0.0.1:1", a.process_id);
    for m in ["garbage", "x1/undefined:2567", conflict.as_str()] {
        let _: () = redis::cmd("SADD")
            .arg("colyseus:nodes")
            .arg(m)
            .query(&mut conn)
            .unwrap();
    }
    // bad_message: "not json", "launch"; bad_member: "garbage", "add," with no member;
    // bad_address: "undefined" host, 0.0.0.0; conflict: a's processId at another address.
    for payload in [
        "not json",
        "\"add,\"",
        "\"launch,rockets\"",
        "\"add,p/0.0.0.0:1\"",
    ] {
        let _: () = redis::cmd("PUBLISH")
            .arg("colyseus:nodes:discovery")
            .arg(payload)
            .query(&mut conn)
            .unwrap();
    }
    wait_for("rejections counted", Duration::from_secs(10), || {
        let m = |r: &str| {
            proxy.agent_metric(&format!(
                "colyseus_envoy_rejected_inputs_total{{source=\"redis\",reason=\"{r}\"}}"
            ))
        };
        (m("bad_member") == 2
            && m("bad_address") == 2
            && m("conflict") == 1
            && m("bad_message") == 2)
            .then_some(())
    });
    assert_eq!(proxy.routed(), {
        let mut v = vec![a.process_id.clone(), c.process_id.clone()];
        v.sort();
        v
    });

    // Every held player, including those on the draining process, is still connected.
    let result = held.finish();
    println!("held through join, leave and garbage: {result:?}");
    assert_eq!(result.ok, 24, "dropped: {:?}", result.errors);
    proxy.assert_no_rejected_config();

    // Once the drained process is gone, its cluster goes too.
    b.proc.stop(Duration::from_secs(1));
    wait_for("drained process removed", Duration::from_secs(10), || {
        proxy.draining().is_empty().then_some(())
    });
    assert_eq!(proxy.routed().len(), 2);
}

/// Registration -> first routed WebSocket, and removal -> unroutable, measured 20 times.
#[test]
fn convergence_of_registration_and_removal() {
    let stack = Stack::new("convergence").start();
    let (proxy, server, redis) = (&stack.proxy, &stack.servers[0], &stack.redis);
    let public = proxy.public();
    let mut conn = redis.conn();
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let all_hosts = || proxy.all_cluster_hosts().len();
    let baseline = all_hosts();
    for i in 0..20 {
        // An extra registration for the same live server, as a new process would write it.
        let pid = format!("conv{i}x");
        let member = format!("{pid}/127.0.0.1:{}", server.port);
        let path = format!("/{pid}/room?sessionId=s");
        let start = Instant::now();
        register(&mut conn, &member);
        wait_for("routable", Duration::from_secs(5), || {
            (ws_handshake(&public, &path).ok()? == 101).then_some(())
        });
        added.push(start.elapsed());
        assert_eq!(all_hosts(), baseline + 1);

        let start = Instant::now();
        unregister(&mut conn, &member);
        wait_for(
            "removed from the all-processes cluster",
            Duration::from_secs(5),
            || (all_hosts() == baseline).then_some(()),
        );
        removed.push(start.elapsed());
        // Its own cluster drains while the (shared, live) server accepts connections.
        assert!(proxy.draining().contains(&pid));
    }
    let (add_med, add_max) = median_max(&mut added);
    let (rm_med, rm_max) = median_max(&mut removed);
    println!("MEASURED registration -> first routed WebSocket: median {add_med:.1} ms, max {add_max:.1} ms (20 tries)");
    println!("MEASURED removal -> out of the all-processes cluster: median {rm_med:.1} ms, max {rm_max:.1} ms (20 tries)");
    proxy.assert_no_rejected_config();
}
