//! `colyseus-envoy register`: a sidecar registers a game server that does not register
//! itself (the example with `PRESENCE=local` stands for Colyseus 0.17+ or a custom server),
//! with a lease, so players reach it through Envoy; it deregisters on SIGTERM, and a killed
//! sidecar's registration expires with its lease.
#![cfg(feature = "e2e")]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use e2e::*;

const LEASED: &str = "colyseus-envoy:leased";
const TTL: Duration = Duration::from_secs(3);

fn lease_key(member: &str) -> String {
    format!("colyseus-envoy:lease:{member}")
}

fn registrar_args<'a>(redis_url: &'a str, pid: &'a str, port: &'a str) -> Vec<&'a str> {
    vec![
        "--redis-url",
        redis_url,
        "--process-id",
        pid,
        "--advertise-host",
        "127.0.0.1",
        "--port",
        port,
        "--lease-ttl",
        "3s",
    ]
}

fn wait_member(redis: &Redis, member: &str, present: bool, timeout: Duration) -> Duration {
    let start = Instant::now();
    let what = if present { "registered" } else { "gone" };
    wait_for(&format!("{member} {what}"), timeout, || {
        (redis.members().iter().any(|m| m == member) == present).then_some(())
    });
    start.elapsed()
}

#[test]
fn sidecar_registers_a_self_silent_server_and_deregisters_on_sigterm() {
    let dir = scratch("registrar");
    let redis = Redis::start(&dir);
    let game = GameServer::start(&dir, &redis, &[("PRESENCE", "local")]);
    assert!(
        redis.members().is_empty(),
        "PRESENCE=local must not register itself: {:?}",
        redis.members()
    );
    let proxy = Proxy::start(&dir, &redis);
    let member = game.member();
    let (url, port) = (redis.url(), game.port.to_string());
    let args = registrar_args(&url, &game.process_id, &port);

    let start = Instant::now();
    let mut sidecar = start_registrar(&dir, &args);
    proxy.wait_routed(vec![game.process_id.clone()], Duration::from_secs(10));
    println!("registration -> routable: {:?}", start.elapsed());
    assert_eq!(redis.members(), vec![member.clone()]);
    assert_eq!(redis.set_members(LEASED), vec![member.clone()]);
    let ttl = redis.pttl(&lease_key(&member));
    assert!(ttl > 0 && ttl <= 3000, "lease PTTL {ttl}");

    // Players go through Envoy to the process the sidecar registered.
    let result = swarm(&proxy.endpoint(), 10, &[]);
    assert_eq!(result.ok, 10, "{:?}", result.errors);
    assert_eq!(
        result.by_process.keys().collect::<Vec<_>>(),
        vec![&game.process_id]
    );

    // Heartbeats keep the lease alive past its ttl.
    std::thread::sleep(TTL + Duration::from_millis(500));
    assert_eq!(redis.members(), vec![member.clone()]);
    assert!(redis.pttl(&lease_key(&member)) > 0);

    // A registration Redis lost (restart, manual SREM) comes back with the next heartbeat.
    let _: () = redis::cmd("SREM")
        .arg("colyseus:nodes")
        .arg(&member)
        .query(&mut redis.conn())
        .unwrap();
    let back = wait_member(&redis, &member, true, TTL);
    println!("lost registration restored after {back:?}");

    // SIGTERM: deregistered at once, and the sidecar exits 0.
    sidecar.signal("TERM");
    let gone = wait_member(&redis, &member, false, Duration::from_secs(2));
    println!("SIGTERM -> gone from colyseus:nodes: {gone:?}");
    assert!(redis.set_members(LEASED).is_empty());
    assert_eq!(redis.pttl(&lease_key(&member)), -2);
    let status = wait_for("sidecar exit", Duration::from_secs(5), || {
        sidecar.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
    proxy.wait_routed(vec![], Duration::from_secs(5));

    // Restarted, with the HTTP check this time (Colyseus 0.16 without Express answers
    // `GET /matchmake/` with 404, which counts as alive): registered and routed again.
    let mut args = args;
    args.extend(["--health-check", "http:/matchmake/"]);
    let start = Instant::now();
    let mut sidecar = start_registrar(&dir, &args);
    proxy.wait_routed(vec![game.process_id.clone()], Duration::from_secs(10));
    println!("restarted sidecar -> routable: {:?}", start.elapsed());
    let result = swarm(&proxy.endpoint(), 10, &[]);
    assert_eq!(result.ok, 10, "{:?}", result.errors);
    sidecar.stop(Duration::from_secs(5));
    proxy.assert_no_rejected_config();
}

#[test]
fn killed_sidecar_registration_expires_with_its_lease() {
    let dir = scratch("registrar-kill");
    let redis = Redis::start(&dir);
    let game = GameServer::start(&dir, &redis, &[("PRESENCE", "local")]);
    // The agent is what expires leases.
    let proxy = Proxy::start(&dir, &redis);
    let member = game.member();
    let (url, port) = (redis.url(), game.port.to_string());
    let sidecar = start_registrar(&dir, &registrar_args(&url, &game.process_id, &port));
    proxy.wait_routed(vec![game.process_id.clone()], Duration::from_secs(10));

    sidecar.signal("KILL");
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        redis.members(),
        vec![member.clone()],
        "no deregistration after kill -9"
    );
    wait_member(&redis, &member, false, TTL + Duration::from_secs(5));
    println!("kill -9 -> expired: {:?}", killed.elapsed());
    assert!(redis.set_members(LEASED).is_empty());
    proxy.wait_routed(vec![], Duration::from_secs(5));
}

#[test]
fn unhealthy_server_is_deregistered_and_comes_back() {
    let dir = scratch("registrar-health");
    let redis = Redis::start(&dir);
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port().to_string();
    let member = format!("health1/127.0.0.1:{port}");
    let url = redis.url();
    let mut args = registrar_args(&url, "health1", &port);
    args.extend(["--health-interval", "100ms", "--health-timeout", "100ms"]);
    let _sidecar = start_registrar(&dir, &args);
    wait_member(&redis, &member, true, Duration::from_secs(5));

    // 3 failed checks (default threshold) -> deregistered.
    drop(server);
    let gone = wait_member(&redis, &member, false, Duration::from_secs(5));
    println!("server down -> deregistered: {gone:?}");
    assert!(redis.set_members(LEASED).is_empty());

    // 2 passed checks -> registered again.
    let _server = TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    let back = wait_member(&redis, &member, true, Duration::from_secs(5));
    println!("server up -> registered: {back:?}");
    assert_eq!(redis.set_members(LEASED), vec![member.clone()]);
}

#[test]
fn sidecar_waits_for_redis_and_for_the_server() {
    let dir = scratch("registrar-wait");
    let redis_port = free_port();
    let url = format!("redis://127.0.0.1:{redis_port}");
    let port = free_port().to_string();
    let member = format!("wait1/127.0.0.1:{port}");
    let mut sidecar = start_registrar(&dir, &registrar_args(&url, "wait1", &port));
    // Neither Redis nor the server yet: it keeps running.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(sidecar.is_running(), "the registrar must not exit");

    let redis = Redis::start_on(&dir, redis_port);
    std::thread::sleep(Duration::from_millis(500));
    assert!(redis.members().is_empty(), "registered before healthy");

    let _server = TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    let took = wait_member(&redis, &member, true, Duration::from_secs(5));
    println!("server listening -> registered: {took:?}");

    // Redis goes away and comes back empty: retried with backoff, registered again.
    let mut redis = redis;
    redis.restart_empty(Duration::from_millis(1500));
    assert!(sidecar.is_running());
    let took = wait_member(&redis, &member, true, Duration::from_secs(5));
    println!("Redis restarted empty -> registered again: {took:?}");
}

#[test]
fn misconfigured_register_exits_64_with_a_message() {
    let port = free_port().to_string();
    let url = format!("redis://127.0.0.1:{}", free_port());
    let cases: [(&[&str], &str); 5] = [
        (&["--process-id", "bad/id"], "--process-id"),
        (&["--advertise-host", "undefined"], "--advertise-host"),
        (&["--advertise-host", "0.0.0.0"], "--advertise-host"),
        (&["--lease-ttl", "1s"], "--lease-ttl"),
        (&["--redis-url", "not a url"], "--redis-url"),
    ];
    for (bad, flag) in cases {
        let mut args = registrar_args(&url, "abc", &port);
        // The bad value replaces the good one.
        for pair in bad.chunks(2) {
            let i = args.iter().position(|a| *a == pair[0]).unwrap();
            args[i + 1] = pair[1];
        }
        let out = std::process::Command::new(agent_bin())
            .arg("register")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{bad:?} -> {}", stderr.trim());
        assert_eq!(out.status.code(), Some(64), "{bad:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
}
