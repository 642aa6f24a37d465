//! Several proxies (agent + Envoy each, as on several hosts) fed from one Redis: they write
//! the same config, so a player whose matchmaking went through one Envoy and whose room
//! connection goes through another (a load balancer in front of several Envoys) reaches the
//! room; and one agent failing leaves the others routing.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use e2e::*;

/// Every file of a proxy's Envoy config directory, by name.
fn config_files(proxy: &Proxy) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(proxy.dir.join("envoy-config"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect()
}

/// `apart`: B's agent is killed and must stay down for a while, which `run` (restarting its
/// sync) would not allow: that proxy's parts run apart ([`Proxy::start_apart`]).
fn start_proxy(dir: &Path, name: &str, redis: &Redis, apart: bool) -> Proxy {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    // Even balance: the test compares the two configs byte for byte, and weights follow
    // room counts each agent reads at its own moment.
    let even = ["--balance", "even"];
    if apart {
        Proxy::start_apart(&dir, &redis.url(), &even, &[])
    } else {
        Proxy::start_with(&dir, &redis.url(), &even)
    }
}

/// Room WebSockets a proxy carried: upgrades through its HTTP connection manager, plus on
/// the TCP edge path (`E2E_EDGE_PATH=tcp`) the raw ones, the connections `tcp_proxy` did not
/// hand to the HCM (both stats are 0 on the other path).
fn room_connections(p: &Proxy) -> u64 {
    let raw = p
        .envoy_stat("tcp.edge.downstream_cx_total")
        .saturating_sub(p.envoy_stat("cluster.colyseus_hcm.upstream_cx_total"));
    p.envoy_stat("http.public.downstream_cx_upgrades_total") + raw
}

#[test]
fn proxies_sharing_one_redis_route_alike_and_independently() {
    let dir = scratch("fleet");
    let redis = Redis::start(&dir);
    let a = start_proxy(&dir, "a", &redis, false);
    let mut b = start_proxy(&dir, "b", &redis, true);
    // The servers advertise proxy B as their public address: colyseus.js matchmakes through
    // the endpoint it was given (proxy A) and opens the room connection on B.
    let public_b = b.public();
    let mut servers: Vec<GameServer> = (0..3)
        .map(|_| GameServer::start(&dir, &redis, &[("PUBLIC_ADDRESS", public_b.as_str())]))
        .collect();
    let pids = |servers: &[GameServer]| servers.iter().map(|s| s.process_id.clone()).collect();
    a.wait_routed(pids(&servers), Duration::from_secs(10));
    b.wait_routed(pids(&servers), Duration::from_secs(10));
    // Each agent writes on its own schedule (a loaded machine can delay one by seconds).
    let start = std::time::Instant::now();
    loop {
        let (fa, fb) = (config_files(&a), config_files(&b));
        if fa == fb {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let differ: Vec<_> = fa
                .keys()
                .chain(fb.keys())
                .filter(|k| fa.get(*k) != fb.get(*k))
                .collect();
            panic!("the two agents' configs still differ after 15 s: {differ:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let result = swarm(
        &a.endpoint(),
        30,
        &["--concurrency", "5", "--messages", "3"],
    );
    assert_eq!(result.ok, 30, "{:?}", result.errors);
    assert!(result.by_process.len() >= 2, "{:?}", result.by_process);
    let b_upgrades = room_connections(&b);
    let a_upgrades = room_connections(&a);
    println!("room connections: through A {a_upgrades}, through B {b_upgrades}");
    assert_eq!((a_upgrades, b_upgrades), (0, 30));

    // Proxy B's agent dies. B keeps routing on its last config; A follows a new process.
    b.agent_proc().signal("KILL");
    let players = Holding::start(&a.endpoint(), 8);
    servers.push(GameServer::start(
        &dir,
        &redis,
        &[("PUBLIC_ADDRESS", public_b.as_str())],
    ));
    a.wait_routed(pids(&servers), Duration::from_secs(10));
    let newcomer = servers[3].process_id.clone();
    let seat = matchmake(&a.public(), "create", "echo");
    let path = format!(
        "/{}/{}?sessionId={}",
        seat.process_id, seat.room_id, seat.session_id
    );
    // Through A, which knows every process, the seat is taken whichever process holds it.
    let (status, _, first) = ws_first_frame(&a.public(), &path);
    assert_eq!((status, first), (101, Some(10)), "seat {path} through A");
    println!("new room on {} (newcomer {newcomer})", seat.process_id);

    // B's agent comes back: B converges to the same config as A.
    b.restart_agent(&["--balance", "even"]);
    b.wait_routed(pids(&servers), Duration::from_secs(10));
    wait_for("identical configs again", Duration::from_secs(5), || {
        (config_files(&a) == config_files(&b)).then_some(())
    });
    let result = players.finish();
    assert_eq!(
        result.ok, 8,
        "players held through B's agent restart: {:?}",
        result.errors
    );
    // A room on the newcomer, reached through B.
    let seat = wait_for("a room on the newcomer", Duration::from_secs(5), || {
        let seat = matchmake(&a.public(), "create", "echo");
        (seat.process_id == newcomer).then_some(seat)
    });
    let path = format!(
        "/{}/{}?sessionId={}",
        seat.process_id, seat.room_id, seat.session_id
    );
    let (status, _, first) = ws_first_frame(&b.public(), &path);
    assert_eq!((status, first), (101, Some(10)), "seat {path} through B");
    a.assert_no_rejected_config();
    b.assert_no_rejected_config();
}
