//! xDS failover, a benchmark (issue 15), not a test: prints numbers, asserts only that every
//! step happened. Run with `scripts/bench-converge.sh failover`, or `cargo test -p e2e
//! --features e2e --release --test failover_xds -- --ignored --nocapture`.
//! `FAILOVER_TRIALS` (default 10).
//!
//! Two agents serve xDS from one Redis; Envoys edge-1 and edge-2 stream from either, each on
//! its own loopback address (see `e2e::xds`). Two real Colyseus servers advertise edge-2 as
//! their public address, so colyseus.js players matchmake through edge-1 and hold their
//! room connections through edge-2 for the whole run. Each trial kills with SIGKILL the
//! agent edge-2 streams from and starts a game server right away; it times
//! - the kill to edge-2's ADS stream being up on the other agent: Envoy's own
//!   `control_plane.connected_state` gauge back at 1, and the surviving agent listing
//!   edge-2 in `/xds/clients`;
//! - the new process's registration (its READY line: the member is in Redis) to a real room
//!   join through edge-2: a seat on it matchmade through edge-1 (`create`), then the room
//!   WebSocket through edge-2 answered `101` and Colyseus's `JOIN_ROOM`.
//!
//! Then the killed agent is restarted and the new server stopped. At the end, the held
//! players check that each of their WebSockets is still open and still echoes.
//! Cost: about a minute (10 trials).
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::xds::{XdsAgent, XdsEnvoy};
use e2e::*;

const HELD: usize = 20;
const CONNECTED: &str = "control_plane.connected_state";

fn trials() -> usize {
    std::env::var("FAILOVER_TRIALS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10)
}

/// What one trial measured.
struct Trial {
    /// Kill to edge-2's `control_plane.connected_state` back at 1 (after it fell to 0).
    envoy_connected: Duration,
    /// Whether the gauge was seen at 0 at all (a reconnect faster than the 1-2 ms poll is not).
    saw_disconnected: bool,
    /// Kill to the surviving agent listing edge-2 among its streams.
    on_survivor: Duration,
    /// The new process's registration to its first real join through edge-2.
    routable: Duration,
    /// Kill to the new process's registration (node's start-up, mostly).
    registered_after_kill: Duration,
    /// Seats matchmade before one landed on the new process.
    seats_elsewhere: u32,
}

/// A seat on `pid` (through `matchmaker`), then its room connection through `room_edge`
/// until Colyseus answers `JOIN_ROOM`: the number of seats that landed elsewhere.
fn join_through(matchmaker: &XdsEnvoy, room_edge: &XdsEnvoy, pid: &str) -> u32 {
    let mut elsewhere = 0;
    let seat = wait_for("a seat on the new process", Duration::from_secs(15), || {
        let seat = matchmake(&matchmaker.public(), "create", "echo");
        if seat.process_id == pid {
            return Some(seat);
        }
        elsewhere += 1;
        None
    });
    let path = format!(
        "/{}/{}?sessionId={}",
        seat.process_id, seat.room_id, seat.session_id
    );
    wait_for(
        "the seat's room connection through edge-2",
        Duration::from_secs(10),
        || match ws_first_frame(&room_edge.public(), &path) {
            (101, _, Some(10)) => Some(()),
            (101, op, first) => panic!("seat {path} answered 101 then {op:?}/{first:?}"),
            _ => None, // not routable through edge-2 yet
        },
    );
    elsewhere
}

/// Polls edge-2's gauge and the survivor's streams until edge-2 is on the survivor:
/// (kill to on the survivor, kill to the gauge back at 1, whether the gauge was seen at 0).
fn until_moved(
    edge2: &XdsEnvoy,
    survivor: &XdsAgent,
    killed: Instant,
) -> (Duration, Option<Duration>, bool) {
    let (mut saw_disconnected, mut envoy_connected, mut on_survivor) = (false, None, None);
    wait_for("edge-2 on the other agent", Duration::from_secs(30), || {
        match edge2.stat(CONNECTED) {
            0 => saw_disconnected = true,
            _ if saw_disconnected && envoy_connected.is_none() => {
                envoy_connected = Some(killed.elapsed());
            }
            _ => {}
        }
        if on_survivor.is_none() && survivor.node_ids().contains(&edge2.node_id) {
            on_survivor = Some(killed.elapsed());
        }
        // A reconnect quicker than the poll never shows the 0: the survivor's view decides.
        let done = on_survivor.is_some() && (envoy_connected.is_some() || !saw_disconnected);
        done.then_some(())
    });
    (on_survivor.unwrap(), envoy_connected, saw_disconnected)
}

fn trial(
    agents: &mut [XdsAgent; 2],
    envoys: &[XdsEnvoy; 2],
    dir: &std::path::Path,
    redis: &Redis,
) -> Trial {
    let [edge1, edge2] = envoys;
    let victim = wait_for("edge-2 on an agent", Duration::from_secs(15), || {
        agents
            .iter()
            .position(|a| a.node_ids().contains(&edge2.node_id))
    });
    let survivor = 1 - victim;
    assert_eq!(edge2.stat(CONNECTED), 1);

    agents[victim].proc.signal("KILL");
    let killed = Instant::now();
    // Registered right after the kill: its start-up runs while edge-2 moves.
    let public2 = edge2.public();
    let (mut server, ready, on_survivor, envoy_connected, saw_disconnected) =
        std::thread::scope(|s| {
            let starting = s.spawn(|| {
                let server = GameServer::start(dir, redis, &[("PUBLIC_ADDRESS", public2.as_str())]);
                (server, Instant::now())
            });
            let (on_survivor, envoy_connected, saw_disconnected) =
                until_moved(edge2, &agents[survivor], killed);
            let (server, ready) = starting.join().unwrap();
            (
                server,
                ready,
                on_survivor,
                envoy_connected,
                saw_disconnected,
            )
        });
    let seats_elsewhere = join_through(edge1, edge2, &server.process_id);
    let routable = ready.elapsed();

    server.proc.stop(Duration::from_secs(20));
    agents[victim].restart();
    agents[victim].wait_ready();
    Trial {
        envoy_connected: envoy_connected.unwrap_or(on_survivor),
        saw_disconnected,
        on_survivor,
        routable,
        registered_after_kill: ready.duration_since(killed),
        seats_elsewhere,
    }
}

#[test]
#[ignore = "a benchmark: scripts/bench-converge.sh failover"]
fn xds_failover_benchmark() {
    let dir = scratch("failover-xds");
    let redis = Redis::start(&dir);
    let mut agents = [
        XdsAgent::start(&dir, "agent-a", "127.0.0.2", &redis.url(), &[]),
        XdsAgent::start(&dir, "agent-b", "127.0.0.3", &redis.url(), &[]),
    ];
    let envoys = {
        let both: Vec<&XdsAgent> = agents.iter().collect();
        [
            XdsEnvoy::start(&dir, "edge-1", "127.0.0.11", &both),
            XdsEnvoy::start(&dir, "edge-2", "127.0.0.12", &both),
        ]
    };
    let public2 = envoys[1].public();
    let servers: Vec<GameServer> = (0..2)
        .map(|_| GameServer::start(&dir, &redis, &[("PUBLIC_ADDRESS", public2.as_str())]))
        .collect();
    let pids: Vec<String> = servers.iter().map(|s| s.process_id.clone()).collect();
    for e in &envoys {
        e.wait_clusters(pids.clone(), Duration::from_secs(15));
    }
    let players = Holding::start(&envoys[0].endpoint(), HELD);
    let held_at_edge2 = envoys[1].stat("http.public.downstream_cx_upgrades_active");

    let n = trials();
    let mut done = Vec::with_capacity(n);
    for i in 0..n {
        let t = trial(&mut agents, &envoys, &dir, &redis);
        println!(
            "FAILOVER trial {i}: envoy connected {:.0} ms (0 seen: {}), on the other agent {:.0} ms; \
             registered {:.0} ms after the kill, routable through edge-2 {:.0} ms later \
             ({} seats elsewhere first)",
            ms(t.envoy_connected),
            t.saw_disconnected,
            ms(t.on_survivor),
            ms(t.registered_after_kill),
            ms(t.routable),
            t.seats_elsewhere
        );
        // The old servers' clusters, and only those, before the next kill.
        for e in &envoys {
            e.wait_clusters(pids.clone(), Duration::from_secs(15));
        }
        done.push(t);
    }

    let result = players.finish();
    let pick = |f: fn(&Trial) -> Duration| -> (f64, f64) {
        median_max(&mut done.iter().map(f).collect::<Vec<_>>())
    };
    let (c50, cmax) = pick(|t| t.envoy_connected);
    let (s50, smax) = pick(|t| t.on_survivor);
    let (r50, rmax) = pick(|t| t.routable);
    let (k50, kmax) = pick(|t| t.registered_after_kill + t.routable);
    println!(
        "FAILOVER {n} kills of edge-2's agent: Envoy's ADS stream connected again p50 {c50:.0} ms, \
         max {cmax:.0} ms (gauge seen at 0 in {} trials); on the other agent p50 {s50:.0} ms, \
         max {smax:.0} ms; a process registered right after the kill routable through edge-2 \
         (real join) p50 {r50:.0} ms, max {rmax:.0} ms after its registration (p50 {k50:.0} ms, \
         max {kmax:.0} ms after the kill); WebSockets held \
         through edge-2: {} of {HELD} still open and echoing after every kill ({held_at_edge2} \
         upgrades active at the start)",
        done.iter().filter(|t| t.saw_disconnected).count(),
        result.ok
    );
    for a in &agents {
        assert_eq!(a.metric("colyseus_envoy_xds_nacks_total"), 0, "{}", a.api());
    }
    assert_eq!(result.ok, HELD as u64, "held players: {:?}", result.errors);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
