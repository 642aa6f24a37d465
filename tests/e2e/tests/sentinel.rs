//! Presence on a Sentinel set: master, replica, three sentinels; Colyseus servers whose
//! RedisPresence asks the sentinels, real colyseus.js players, and the agent following the
//! same set. The master is killed (-9) mid-run: the sentinels promote the replica, the
//! agent reconnects to it, sees the same data under a new run_id (a failover, not a
//! restart) and so restores nothing and evicts nothing; held players stay connected; a
//! process registered after the failover is routed.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::redis_topologies::{tcp_ports_of, Monitor, SentinelSet, MASTER_NAME, WRITES};
use e2e::*;

#[test]
fn sentinel_failover_keeps_routing_and_writes_nothing() {
    let dir = scratch("sentinel");
    let mut set = SentinelSet::start(&dir);
    let env = set.game_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let servers: Vec<GameServer> = (0..3)
        .map(|_| GameServer::start(&dir, &set.master, &env))
        .collect();
    let list = set.list();
    // The URL's host is not used with --redis-sentinels.
    let proxy = Proxy::start_with(
        &dir,
        "redis://127.0.0.1:1",
        &[
            "--redis-sentinels",
            &list,
            "--redis-sentinel-master",
            MASTER_NAME,
        ],
    );
    let mut everyone: Vec<String> = servers.iter().map(|s| s.process_id.clone()).collect();
    everyone.sort();
    proxy.wait_routed(everyone.clone(), Duration::from_secs(15));
    // `agent status` reads roomcount through the sentinels too.
    let (status_ok, status) = proxy.status_with(&[
        "--redis-url",
        "redis://127.0.0.1:1",
        "--redis-sentinels",
        &list,
        "--redis-sentinel-master",
        MASTER_NAME,
    ]);
    println!("{status}");

    // Every write reaching the replica (the master to be) from here on, by client.
    let monitor = Monitor::start(&dir, set.replica.port, "replica");
    let held = Holding::start(&proxy.endpoint(), 20);

    // Players keep joining through the failover: rounds of 4, each recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds: Arc<Mutex<Vec<(Instant, SwarmResult)>>> = Arc::default();
    let joiner = {
        let (stop, rounds, endpoint) = (stop.clone(), rounds.clone(), proxy.endpoint());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = swarm(
                    &endpoint,
                    4,
                    &["--concurrency", "4", "--timeout-ms", "20000"],
                );
                rounds.lock().unwrap().push((started, r));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    wait_for("replica in sync", Duration::from_secs(10), || {
        set.replica_in_sync().then_some(())
    });
    let failures_before = proxy.agent_metric("colyseus_envoy_redis_session_failures_total");

    // The master dies.
    let killed = Instant::now();
    set.master.kill();
    let mut promoted = None;
    let mut agent_back = None;
    let mut failures_after = 0;
    let mut unrouted = Vec::new();
    while agent_back.is_none() || promoted.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no failover within 60 s (promoted: {promoted:?})"
        );
        if promoted.is_none() && set.master_port() == Some(set.replica.port) {
            promoted = Some(killed.elapsed());
        }
        let failures = proxy.agent_metric("colyseus_envoy_redis_session_failures_total");
        if agent_back.is_none()
            && failures > failures_before
            && proxy.agent_metric("colyseus_envoy_redis_up") == 1
        {
            agent_back = Some(killed.elapsed());
            failures_after = failures;
        }
        let routed = proxy.routed();
        if routed != everyone {
            unrouted.push(routed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (promoted, agent_back) = (promoted.unwrap(), agent_back.unwrap());
    println!("failover: replica promoted after {promoted:?}, agent on the new master after {agent_back:?}");

    // A process registered after the failover is routed.
    let late = GameServer::start(&dir, &set.replica, &env);
    let mut with_late = everyone.clone();
    with_late.push(late.process_id.clone());
    proxy.wait_routed(with_late.clone(), Duration::from_secs(15));
    let routed_late_after = killed.elapsed();
    // More rounds of joins after the failover, then stop.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    joiner.join().unwrap();
    let result = held.finish();

    let rounds = rounds.lock().unwrap();
    let (mut joins, mut failed, mut failed_late) = (0, 0, 0);
    for (started, r) in rounds.iter() {
        joins += r.clients;
        let bad = r.clients - r.ok;
        failed += bad;
        // A round that began once the agent and the servers were back must be clean.
        if bad > 0 && *started > killed + agent_back + Duration::from_secs(5) {
            failed_late += bad;
            println!("late failures: {:?}", r.errors);
        }
    }
    // The agent's connections to the new master (its only session there: no session failed
    // since), and everything MONITOR saw them send.
    assert_eq!(
        proxy.agent_metric("colyseus_envoy_redis_session_failures_total"),
        failures_after
    );
    let agent_ports = tcp_ports_of(proxy.agent_pid(), set.replica.port);
    let sent = monitor.commands_from(&agent_ports);
    let writes: Vec<&Vec<String>> = sent
        .iter()
        .filter(|c| WRITES.contains(&c[0].as_str()))
        .collect();
    let metric = |m: &str| proxy.agent_metric(m);
    println!(
        "SENTINEL FAILOVER: promoted {:.2} s, agent on new master {:.2} s, late process routed {:.2} s after the kill; \
         joins {joins} failed {failed} (after the failover: {failed_late}); held WebSockets {} of 20 kept; \
         agent commands to the new master {} of which writes {}; failovers {} restarts {} restored {} died {}",
        promoted.as_secs_f64(),
        agent_back.as_secs_f64(),
        routed_late_after.as_secs_f64(),
        result.ok,
        sent.len(),
        writes.len(),
        metric("colyseus_envoy_redis_failovers_total"),
        metric("colyseus_envoy_redis_restarts_total"),
        metric("colyseus_envoy_registrations_restored_total"),
        metric("colyseus_envoy_processes_died_total"),
    );
    assert!(status_ok, "agent status before the failover:\n{status}");
    assert_eq!(result.ok, 20, "held players dropped: {:?}", result.errors);
    assert!(
        unrouted.is_empty(),
        "processes unrouted during the failover: {unrouted:?}"
    );
    // The positive control: MONITOR did see the agent (its reads), so "no write" is not
    // "nothing seen".
    assert!(agent_ports.len() >= 2, "agent connections: {agent_ports:?}");
    assert!(
        sent.iter().any(|c| c[0] == "smembers"),
        "MONITOR saw nothing from the agent ({agent_ports:?})"
    );
    assert!(writes.is_empty(), "the agent wrote to Redis: {writes:?}");
    assert_eq!(metric("colyseus_envoy_redis_failovers_total"), 1);
    assert_eq!(metric("colyseus_envoy_redis_restarts_total"), 0);
    assert_eq!(metric("colyseus_envoy_registrations_restored_total"), 0);
    assert_eq!(metric("colyseus_envoy_processes_died_total"), 0);
    assert_eq!(failed_late, 0, "joins failed after the failover");
    assert!(
        joins > 0 && rounds.len() > 2,
        "the joiner did not run: {joins}"
    );
    proxy.assert_no_rejected_config();
}
