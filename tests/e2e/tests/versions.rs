//! Real Colyseus servers and clients of other versions than the example's 0.16, each from its
//! own npm project in `tests/colyseus-*/`, through the proxy:
//! - 0.15 registers itself in Redis discovery (`{processId}/{SELF_HOSTNAME}:{port}`);
//! - 0.17 does not: it registers with the repository's helper `@colyseus-envoy/register`
//!   (a leased member), deregisters on SIGTERM, and a killed process's lease expires.
#![cfg(feature = "e2e")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::*;

const LEASED: &str = "colyseus-envoy:leased";
const LEASE_TTL: Duration = Duration::from_secs(3);
const CLIENTS: usize = 20;

fn project(version: &str, file: &str) -> PathBuf {
    root().join(format!("tests/colyseus-{version}/{file}"))
}

fn wait_member(redis: &Redis, member: &str, present: bool, timeout: Duration) -> Duration {
    let start = Instant::now();
    let what = if present { "registered" } else { "gone" };
    wait_for(&format!("{member} {what}"), timeout, || {
        (redis.members().iter().any(|m| m == member) == present).then_some(())
    });
    start.elapsed()
}

/// Two servers of `version` behind the proxy; `CLIENTS` clients of that version reach rooms
/// on both processes.
fn two_servers_serve_clients(
    version: &str,
    dir: &std::path::Path,
    redis: &Redis,
    env: &[(&str, &str)],
) -> (Proxy, GameServer, GameServer) {
    let start = Instant::now();
    let a = GameServer::start_script(dir, redis, &project(version, "server.js"), env);
    let b = GameServer::start_script(dir, redis, &project(version, "server.js"), env);
    println!("{version}: two servers ready in {:?}", start.elapsed());
    let proxy = Proxy::start(dir, redis);
    proxy.wait_routed(
        vec![a.process_id.clone(), b.process_id.clone()],
        Duration::from_secs(10),
    );
    let mut expected = vec![a.member(), b.member()];
    expected.sort();
    assert_eq!(redis.members(), expected, "{version} members");

    let start = Instant::now();
    let result = swarm_script(
        &project(version, "swarm.js"),
        &proxy.endpoint(),
        CLIENTS,
        &["--concurrency", "5", "--messages", "3"],
    );
    println!(
        "{version}: {CLIENTS} clients in {:?}: {result:?}",
        start.elapsed()
    );
    assert_eq!(result.ok, CLIENTS as u64, "errors: {:?}", result.errors);
    assert!(result.errors.is_empty());
    for s in [&a, &b] {
        assert!(
            result.by_process.get(&s.process_id).copied().unwrap_or(0) > 0,
            "{version}: no client on {}: {:?}",
            s.process_id,
            result.by_process
        );
    }
    assert_eq!(result.by_process.values().sum::<u64>(), CLIENTS as u64);
    (proxy, a, b)
}

#[test]
fn colyseus_0_15_registers_itself_and_serves_clients_through_the_proxy() {
    let test_start = Instant::now();
    let dir = scratch("versions-0.15");
    let redis = Redis::start(&dir);
    let (proxy, mut a, b) = two_servers_serve_clients("0.15", &dir, &redis, &[]);
    // Colyseus 0.15 writes no lease: its members are its own.
    assert!(redis.set_members(LEASED).is_empty());

    // Graceful shutdown unregisters natively ("remove" first), and the process leaves routing.
    a.proc.signal("TERM");
    let gone = wait_member(&redis, &a.member(), false, Duration::from_secs(5));
    println!("0.15: SIGTERM -> gone from colyseus:nodes: {gone:?}");
    proxy.wait_routed(vec![b.process_id.clone()], Duration::from_secs(5));
    a.proc.stop(Duration::from_secs(10));
    let result = swarm_script(
        &project("0.15", "swarm.js"),
        &proxy.endpoint(),
        4,
        &["--messages", "1"],
    );
    assert_eq!(result.ok, 4, "errors: {:?}", result.errors);
    assert_eq!(
        result.by_process.keys().collect::<Vec<_>>(),
        vec![&b.process_id]
    );
    proxy.assert_no_rejected_config();
    println!("0.15: test took {:?}", test_start.elapsed());
}

#[test]
fn colyseus_0_17_registers_with_the_helper_deregisters_and_expires() {
    let test_start = Instant::now();
    let dir = scratch("versions-0.17");
    let redis = Redis::start(&dir);
    let ttl_ms = LEASE_TTL.as_millis().to_string();
    let (proxy, mut a, mut b) =
        two_servers_serve_clients("0.17", &dir, &redis, &[("LEASE_TTL_MS", &ttl_ms)]);
    let mut leased = vec![a.member(), b.member()];
    leased.sort();
    assert_eq!(redis.set_members(LEASED), leased, "leased members");

    // SIGTERM: registration.stop() deregisters before Colyseus disposes the rooms; the process
    // leaves the active list and exits 0.
    a.proc.signal("TERM");
    let gone = wait_member(&redis, &a.member(), false, Duration::from_secs(5));
    println!("0.17: SIGTERM -> gone from colyseus:nodes: {gone:?}");
    proxy.wait_routed(vec![b.process_id.clone()], Duration::from_secs(5));
    let status = wait_for("0.17 server exit", Duration::from_secs(10), || {
        a.proc.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert_eq!(redis.set_members(LEASED), vec![b.member()]);
    let result = swarm_script(
        &project("0.17", "swarm.js"),
        &proxy.endpoint(),
        4,
        &["--messages", "1"],
    );
    assert_eq!(result.ok, 4, "errors: {:?}", result.errors);
    assert_eq!(
        result.by_process.keys().collect::<Vec<_>>(),
        vec![&b.process_id]
    );

    // kill -9: nothing deregisters; the agent removes the member when its lease runs out.
    b.proc.signal("KILL");
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        redis.members(),
        vec![b.member()],
        "no deregistration after kill -9"
    );
    wait_member(
        &redis,
        &b.member(),
        false,
        LEASE_TTL + Duration::from_secs(5),
    );
    println!("0.17: kill -9 -> lease expired: {:?}", killed.elapsed());
    assert!(redis.set_members(LEASED).is_empty());
    proxy.wait_routed(vec![], Duration::from_secs(5));
    let _ = b.proc.child.wait();
    proxy.assert_no_rejected_config();
    println!("0.17: test took {:?}", test_start.elapsed());
}
