//! Restarting the proxy's own parts drops no player: the agent (Envoy keeps its config),
//! and Envoy itself through its hot restart (open WebSockets stay within the drain window).
#![cfg(feature = "e2e")]

use std::time::Duration;

use e2e::*;

#[test]
fn agent_restart_and_envoy_hot_restart_keep_60_players() {
    // Even balance: the players joining in this test change the processes' loads, and with
    // load weights a rewrite for that reason could not be told from one caused by the restart.
    let even = ["--balance", "even"];
    let mut stack = Stack::new("restarts").servers(3).agent_args(&even).start();
    let ids = stack.process_ids();
    let proxy = &mut stack.proxy;

    // 1. The agent restarts: Envoy keeps routing on the last file; nothing is rewritten.
    let held = Holding::start(&proxy.endpoint(), 60);
    // The operator's view shows the 60 players' connections per process.
    let report = wait_for(
        "status shows 60 connections",
        Duration::from_secs(10),
        || {
            let (healthy, text) = proxy.status();
            let connections: u64 = text
                .lines()
                .filter(|l| ids.iter().any(|id| l.starts_with(id.as_str())))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
            (healthy && connections == 60).then_some(text)
        },
    );
    println!("{report}");
    assert!(
        report.starts_with("agent: ready, redis: up, envoy: live"),
        "{report}"
    );
    let writes = proxy.envoy_stat("cluster_manager.cds.update_success");
    proxy.restart_agent(&even);
    proxy.wait_routed(ids.clone(), Duration::from_secs(10));
    let during = swarm(&proxy.endpoint(), 10, &["--concurrency", "5"]);
    assert_eq!(during.ok, 10, "{:?}", during.errors);
    assert_eq!(
        proxy.envoy_stat("cluster_manager.cds.update_success"),
        writes,
        "an agent restart with unchanged registrations must not rewrite Envoy's config"
    );
    let result = held.finish();
    println!(
        "players held across an agent restart: ok {} of {}",
        result.ok, result.clients
    );
    assert_eq!(result.ok, 60, "dropped: {:?}", result.errors);

    // 2. Envoy hot restart: the new epoch takes new players, the old one keeps the 60 open
    //    WebSockets until its parent-shutdown time (here 60 s).
    let held = Holding::start(&proxy.endpoint(), 60);
    proxy.hot_restart_envoy(1);
    let fresh = swarm(&proxy.endpoint(), 10, &["--concurrency", "5"]);
    assert_eq!(
        fresh.ok, 10,
        "new players after the hot restart: {:?}",
        fresh.errors
    );
    std::thread::sleep(Duration::from_secs(3));
    let result = held.finish();
    println!(
        "players held across an Envoy hot restart: ok {} of {}",
        result.ok, result.clients
    );
    assert_eq!(result.ok, 60, "dropped: {:?}", result.errors);
}
