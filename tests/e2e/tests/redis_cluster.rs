//! Presence on a Redis Cluster of three masters: Colyseus servers in cluster mode (ioredis
//! Cluster for RedisPresence and RedisDriver), the agent with `--redis-cluster`. The same
//! scenario runs on a standalone Redis, so the core numbers can be read side by side:
//! registration to routed, 120 players, `/undefined/` lookups through RedisDriver listings,
//! a hung process found by the IPC ping (the ping's subscriber may sit on any node), and
//! kill -9 detection with eviction from presence.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::redis_topologies::RedisCluster;
use e2e::*;

const JOIN_ROOM: u8 = 10;
const BINARY: u8 = 2;

enum Shape {
    Standalone(Redis),
    Cluster(RedisCluster),
}

impl Shape {
    fn name(&self) -> &'static str {
        match self {
            Shape::Standalone(_) => "standalone",
            Shape::Cluster(_) => "cluster",
        }
    }

    /// A Redis to hand to [`GameServer::start`] (its URL; overridden by the env for a cluster).
    fn any(&self) -> &Redis {
        match self {
            Shape::Standalone(r) => r,
            Shape::Cluster(c) => &c.nodes[0],
        }
    }

    fn game_env(&self) -> Vec<(&'static str, String)> {
        match self {
            Shape::Standalone(_) => vec![],
            Shape::Cluster(c) => vec![("REDIS_CLUSTER_NODES", c.list())],
        }
    }

    fn agent_args(&self) -> Vec<String> {
        match self {
            Shape::Standalone(_) => vec![],
            Shape::Cluster(c) => vec!["--redis-cluster".into(), c.list()],
        }
    }

    fn members(&self) -> Vec<String> {
        match self {
            Shape::Standalone(r) => r.members(),
            Shape::Cluster(c) => c.members(),
        }
    }
}

fn start_game(dir: &std::path::Path, shape: &Shape) -> GameServer {
    let env = shape.game_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    GameServer::start(dir, shape.any(), &env)
}

fn core_numbers(shape: &Shape, dir: &std::path::Path) {
    let name = shape.name();
    let mut args: Vec<String> = shape.agent_args();
    args.extend(
        ["--redis-rooms", "--evict-dead-from-presence", "true"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let url = shape.any().url();
    let proxy = Proxy::start_with(dir, &url, &args);

    // Registration (the server's READY line comes once it is in colyseus:nodes) to routed.
    let mut servers = Vec::new();
    let mut to_routed = Vec::new();
    for _ in 0..3 {
        let s = start_game(dir, shape);
        let registered = Instant::now();
        wait_for("new process routed", Duration::from_secs(10), || {
            proxy.routed().contains(&s.process_id).then_some(())
        });
        to_routed.push(registered.elapsed());
        servers.push(s);
    }
    let (reg_median, reg_max) = median_max(&mut to_routed);
    let mut ids: Vec<String> = servers.iter().map(|s| s.process_id.clone()).collect();
    ids.sort();
    let mut members: Vec<String> = servers.iter().map(GameServer::member).collect();
    members.sort();
    assert_eq!(shape.members(), members);

    // 120 players, through matchmaking and their rooms' processes.
    let started = Instant::now();
    let result = swarm(
        &proxy.endpoint(),
        120,
        &["--concurrency", "8", "--messages", "5"],
    );
    let swarm_secs = started.elapsed().as_secs_f64();
    assert_eq!(result.ok, 120, "{name}: {:?}", result.errors);
    assert_eq!(result.by_process.values().sum::<u64>(), 120);
    assert!(result.by_process.len() == 3, "{:?}", result.by_process);

    // `/undefined/{roomId}`: the filter asks the agent, which finds the room in RedisDriver's
    // listings (read-through HGET for a room created a moment ago).
    let public = proxy.public();
    for i in 0..3 {
        let seat = matchmake(&public, "create", "echo");
        let path = format!("/undefined/{}?sessionId={}", seat.room_id, seat.session_id);
        assert_eq!(
            ws_first_frame(&public, &path),
            (101, Some(BINARY), Some(JOIN_ROOM)),
            "{name}: lookup {i} of a room on {}",
            seat.process_id
        );
    }

    // A hung process (SIGSTOP: the kernel still accepts its TCP connections) is found only
    // by Colyseus's IPC ping, which must find its subscriber on whichever node it is.
    let hung = &servers[0];
    hung.proc.signal("STOP");
    let stopped = Instant::now();
    wait_for(
        &format!("{name}: hung process unrouted"),
        Duration::from_secs(20),
        || (!proxy.routed().contains(&hung.process_id)).then_some(()),
    );
    let hung_detected = stopped.elapsed();
    // Found dead, it was also evicted from presence, so it drains from now on.
    hung.proc.signal("CONT");

    // kill -9: unrouted and evicted from presence (non-atomic writes on a cluster).
    let mut victim = start_game(dir, shape);
    wait_for("victim routed", Duration::from_secs(10), || {
        proxy.routed().contains(&victim.process_id).then_some(())
    });
    victim.proc.child.kill().unwrap();
    let killed = Instant::now();
    let _ = victim.proc.child.wait();
    wait_for("dead process unrouted", Duration::from_secs(20), || {
        (!proxy.routed().contains(&victim.process_id)).then_some(())
    });
    let kill_detected = killed.elapsed();
    wait_for("dead process evicted", Duration::from_secs(5), || {
        (!shape.members().contains(&victim.member())).then_some(())
    });
    println!(
        "CORE NUMBERS ({name}): registration -> routed median {reg_median:.0} ms max {reg_max:.0} ms; \
         120 players ok {} in {swarm_secs:.1} s (join ms {}); hung (SIGSTOP) -> unrouted {:.1} s; \
         kill -9 -> unrouted {:.1} s",
        result.ok,
        result.join_ms,
        hung_detected.as_secs_f64(),
        kill_detected.as_secs_f64(),
    );
    let status = proxy.agent_metric("colyseus_envoy_redis_up");
    assert_eq!(status, 1);
    assert_eq!(
        proxy.agent_metric("colyseus_envoy_redis_session_failures_total"),
        0
    );
    proxy.assert_no_rejected_config();
}

#[test]
fn cluster_presence_end_to_end() {
    let dir = scratch("redis-cluster");
    let shape = Shape::Cluster(RedisCluster::start(&dir));
    core_numbers(&shape, &dir);
}

/// A cluster node down (the one holding `colyseus:nodes`, no replica to take over): the
/// agent's session fails and it keeps routing what it last knew; nothing is unrouted.
#[test]
fn cluster_node_down_keeps_the_last_config() {
    let dir = scratch("redis-cluster-down");
    let mut cluster = RedisCluster::start(&dir);
    let env = [("REDIS_CLUSTER_NODES", cluster.list())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let servers: Vec<GameServer> = (0..2)
        .map(|_| GameServer::start(&dir, &cluster.nodes[0], &env))
        .collect();
    let list = cluster.list();
    let proxy = Proxy::start_with(&dir, &cluster.nodes[0].url(), &["--redis-cluster", &list]);
    let mut ids: Vec<String> = servers.iter().map(|s| s.process_id.clone()).collect();
    ids.sort();
    proxy.wait_routed(ids.clone(), Duration::from_secs(15));
    let held = Holding::start(&proxy.endpoint(), 8);
    let port = cluster.node_of("colyseus:nodes").port;
    let writes_before = proxy.agent_metric("colyseus_envoy_config_writes_total");
    cluster
        .nodes
        .iter_mut()
        .find(|n| n.port == port)
        .unwrap()
        .kill();
    wait_for("agent notices Redis down", Duration::from_secs(20), || {
        (proxy.agent_metric("colyseus_envoy_redis_up") == 0).then_some(())
    });
    // Liveness rounds and reconnect attempts go on meanwhile: nothing changes.
    for _ in 0..30 {
        assert_eq!(proxy.routed(), ids, "unrouted while Redis is partly down");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Envoy's config was not touched either.
    assert_eq!(
        proxy.agent_metric("colyseus_envoy_config_writes_total"),
        writes_before
    );
    assert_eq!(proxy.agent_metric("colyseus_envoy_processes_died_total"), 0);
    // Not asserted: Colyseus itself fails its players' room calls while its presence
    // cluster is down (CLUSTERDOWN), which is not the proxy's doing.
    let result = held.finish();
    println!(
        "cluster node down: {} session failures, routing and config kept; held players ok {} of 8 (Colyseus: {:?})",
        proxy.agent_metric("colyseus_envoy_redis_session_failures_total"),
        result.ok,
        result.errors.first()
    );
}

#[test]
fn standalone_presence_same_scenario() {
    let dir = scratch("redis-standalone-core");
    let shape = Shape::Standalone(Redis::start(&dir));
    core_numbers(&shape, &dir);
}

/// The registrar sidecar on a cluster: its writes span slots (the set, the leased set, the
/// lease key, the announcement), so they go one by one; heartbeats keep the lease, re-add a
/// lost member, and SIGTERM deregisters.
#[test]
fn registrar_on_a_cluster() {
    use e2e::redis_topologies::query;
    let dir = scratch("redis-cluster-registrar");
    let cluster = RedisCluster::start(&dir);
    let list = cluster.list();
    let game = GameServer::start(&dir, &cluster.nodes[0], &[("PRESENCE", "local")]);
    let proxy = Proxy::start_with(&dir, &cluster.nodes[0].url(), &["--redis-cluster", &list]);
    let (url, port) = (cluster.nodes[0].url(), game.port.to_string());
    let mut sidecar = start_registrar(
        &dir,
        &[
            "--redis-url",
            &url,
            "--redis-cluster",
            &list,
            "--process-id",
            &game.process_id,
            "--advertise-host",
            "127.0.0.1",
            "--port",
            &port,
            "--lease-ttl",
            "3s",
        ],
    );
    proxy.wait_routed(vec![game.process_id.clone()], Duration::from_secs(10));
    let member = game.member();
    assert_eq!(cluster.members(), vec![member.clone()]);
    // Past the lease's ttl: heartbeats kept it, the agent expired nothing.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(cluster.members(), vec![member.clone()]);
    assert_eq!(proxy.agent_metric("colyseus_envoy_leases_expired_total"), 0);
    // The member lost (as by a node restarted empty): the next heartbeat adds it back.
    let owner = cluster.node_of("colyseus:nodes").port;
    let removed: i64 = query(owner, redis::cmd("SREM").arg("colyseus:nodes").arg(&member)).unwrap();
    assert_eq!(removed, 1);
    wait_for(
        "member re-added by a heartbeat",
        Duration::from_secs(5),
        || (cluster.members() == vec![member.clone()]).then_some(()),
    );
    sidecar.stop(Duration::from_secs(5));
    wait_for("deregistered", Duration::from_secs(5), || {
        cluster.members().is_empty().then_some(())
    });
    wait_for("drained", Duration::from_secs(10), || {
        proxy.routed().is_empty().then_some(())
    });
    assert_eq!(
        proxy.agent_metric("colyseus_envoy_redis_session_failures_total"),
        0
    );
}
