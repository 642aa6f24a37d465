//! Redis restarts empty (no persistence) while Colyseus processes, which register only
//! once, keep running: live processes stay routed and are written back; dead ones go.
#![cfg(feature = "e2e")]

use std::time::Duration;

use e2e::*;

#[test]
fn redis_restart_keeps_live_processes_and_drops_dead_ones() {
    let dir = scratch("redis-restart");
    let mut redis = Redis::start(&dir);
    let a = GameServer::start(&dir, &redis, &[]);
    let b = GameServer::start(&dir, &redis, &[]);
    let mut c = GameServer::start(&dir, &redis, &[]);
    // Apart: step 3 keeps the agent down while Redis restarts (run would restart it).
    let mut proxy = Proxy::start_apart(&dir, &redis.url(), &[], &[]);
    let everyone = vec![
        a.process_id.clone(),
        b.process_id.clone(),
        c.process_id.clone(),
    ];
    proxy.wait_routed(everyone.clone(), Duration::from_secs(10));
    let mut members = vec![a.member(), b.member(), c.member()];
    members.sort();

    // 1. Redis restarts empty while players are connected.
    let held = Holding::start(&proxy.endpoint(), 12);
    redis.restart_empty(Duration::from_millis(500));
    // The agent notices the new run_id, probes, and writes the registrations back.
    wait_for(
        "registrations restored in Redis",
        Duration::from_secs(15),
        || (redis.members() == members).then_some(()),
    );
    assert_eq!(proxy.routed(), {
        let mut e = everyone.clone();
        e.sort();
        e
    });
    assert!(proxy.agent_metric("colyseus_envoy_redis_restarts_total") >= 1);
    assert!(proxy.agent_metric("colyseus_envoy_registrations_restored_total") >= 3);
    let result = held.finish();
    println!("players held across a Redis restart: {result:?}");
    assert_eq!(result.ok, 12, "dropped: {:?}", result.errors);

    // 2. Redis goes down, a process dies meanwhile, Redis comes back empty: the dead
    //    process is dropped, the live ones are kept.
    redis.kill();
    c.proc.child.kill().unwrap();
    let _ = c.proc.child.wait();
    std::thread::sleep(Duration::from_millis(500));
    redis.restart_empty(Duration::ZERO);
    let mut live = vec![a.process_id.clone(), b.process_id.clone()];
    live.sort();
    proxy.wait_routed(live.clone(), Duration::from_secs(15));
    let mut live_members = vec![a.member(), b.member()];
    live_members.sort();
    wait_for(
        "live registrations restored",
        Duration::from_secs(10),
        || (redis.members() == live_members).then_some(()),
    );
    assert!(proxy.agent_metric("colyseus_envoy_registrations_dropped_dead_total") >= 1);

    // 3. The agent itself restarts while Redis is empty again: its state file still lets it
    //    tell a lost registration from a removed one.
    proxy.agent_proc().stop(Duration::from_secs(5));
    redis.restart_empty(Duration::ZERO);
    proxy.restart_agent(&[]);
    wait_for(
        "restored after agent restart",
        Duration::from_secs(15),
        || (redis.members() == live_members).then_some(()),
    );
    proxy.wait_routed(live, Duration::from_secs(5));

    // New players still get in after all of that.
    let result = swarm(&proxy.endpoint(), 20, &["--concurrency", "4"]);
    println!("new players after the restarts: {result:?}");
    assert_eq!(result.ok, 20, "{:?}", result.errors);
    proxy.assert_no_rejected_config();
}

/// Readiness (what a deployment gates traffic on) is false until the agent's first full
/// sync has reached Envoy's config: an agent started before Redis is live but not ready,
/// and becomes ready once it has read the registrations.
#[test]
fn the_agent_is_ready_only_after_its_first_sync() {
    let dir = scratch("first-sync");
    let redis_port = free_port();
    let config_dir = dir.join("envoy-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let _agent = Proc::spawn(
        "agent",
        std::process::Command::new(agent_bin())
            .args([
                "sync",
                "--redis-url",
                &format!("redis://127.0.0.1:{redis_port}"),
            ])
            .args(["--api-addr", &api])
            .arg("--config-dir")
            .arg(&config_dir)
            .stderr(std::process::Stdio::null()),
    );
    wait_for("agent live", Duration::from_secs(10), || {
        (http_get(&api, "/live").ok()?.0 == 200).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let (status, _, body) = http_get(&api, "/ready").unwrap();
    assert_eq!(status, 503, "ready without Redis: {body}");

    // Redis comes up, then a game server registers in it.
    let redis = Redis::start_on(&dir, redis_port);
    let server = GameServer::start(&dir, &redis, &[]);
    wait_for("agent ready", Duration::from_secs(20), || {
        (http_get(&api, "/ready").ok()?.0 == 200).then_some(())
    });
    wait_for(
        "the registration in Envoy's config",
        Duration::from_secs(20),
        || {
            let cds = std::fs::read_to_string(config_dir.join("cds.json")).ok()?;
            cds.contains(&format!("colyseus-process-{}", server.process_id))
                .then_some(())
        },
    );
}
