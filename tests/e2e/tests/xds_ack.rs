//! Routable exactly when the asking Envoy has it, with real parts: one agent serving xDS,
//! two Envoys streaming from it, real Colyseus servers.
//!
//! - One Envoy is stopped (SIGSTOP) while a process registers: the running Envoy routes to
//!   it at once; a lookup naming the stopped Envoy waits, and is answered only after
//!   SIGCONT and that Envoy's ACK; its `/processes` leaves the process out, and its held
//!   long-poll is answered by the ACK.
//! - A cluster Envoy refuses (NACK, through the agent's TEST-ONLY hook: no real input the
//!   agent accepts is refused by Envoy) is logged with Envoy's detail, counted, not resent;
//!   a process registered after it still reaches both Envoys and routes; the refused one
//!   is never advertised to them. Sent in one response with a valid cluster (Envoy then
//!   refuses the response whole), each is resent alone: the valid one reaches both Envoys
//!   and is advertised and looked up at once, the refused one is refused once more and
//!   never resent.
//!
//! Cost: about 15 s on 2 cores (one agent, two Envoys, four game servers).
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::xds::{XdsAgent, XdsEnvoy};
use e2e::*;

/// `--lookup-wait` of the agent here: long enough that an Envoy resumed within it ACKs in
/// time on a loaded machine (the default, 300 ms, suits the filter's 500 ms timeout).
const LOOKUP_WAIT: Duration = Duration::from_millis(1500);
const NODE: &str = "x-colyseus-envoy-node";

/// A room lookup on the agent's API as the filter of `node` makes it: (status, body, time).
fn lookup(agent: &XdsAgent, room: &str, pid: &str, node: Option<&str>) -> (u16, String, Duration) {
    let started = Instant::now();
    let headers: Vec<(&str, &str)> = node.map(|n| (NODE, n)).into_iter().collect();
    let path = format!("/rooms/{room}?processId={pid}");
    let (status, _, body) = http_request(&agent.api(), "GET", &path, &headers).unwrap();
    (status, body, started.elapsed())
}

/// `/processes` as `node` sees it: (version, routable processIds).
fn processes(agent: &XdsAgent, node: Option<&str>, after: Option<u64>) -> (u64, Vec<String>) {
    let headers: Vec<(&str, &str)> = node.map(|n| (NODE, n)).into_iter().collect();
    let path = match after {
        Some(v) => format!("/processes?after={v}"),
        None => "/processes".to_owned(),
    };
    let (status, head, body) = http_request_within(
        Duration::from_secs(40),
        &agent.api(),
        "GET",
        &path,
        &headers,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let version = head
        .lines()
        .find_map(|l| l.strip_prefix("x-colyseus-envoy-processes-version: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut ids: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] != "dead")
        .map(|r| r["processId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    (version, ids)
}

/// A room of process `pid`, matchmade through `envoy` (retried: Colyseus places rooms on
/// the least loaded process), and its first frame through `envoy`.
fn room_on(envoy: &XdsEnvoy, pid: &str) -> String {
    let seat = wait_for(&format!("a room on {pid}"), Duration::from_secs(10), || {
        let seat = matchmake(&envoy.public(), "create", "echo");
        (seat.process_id == pid).then_some(seat)
    });
    let path = format!("/{pid}/{}?sessionId={}", seat.room_id, seat.session_id);
    let (status, _, first) = ws_first_frame(&envoy.public(), &path);
    assert_eq!(
        (status, first),
        (101, Some(10)),
        "{path} through {}",
        envoy.node_id
    );
    seat.room_id
}

#[test]
fn lookups_wait_for_the_asking_envoys_ack_and_a_nack_stops_nothing() {
    let dir = scratch("xds_ack");
    let redis = Redis::start(&dir);
    let refused_port = free_port();
    // TEST-ONLY hook (agent/src/sinks/xds/test_hook.rs): the cluster of the process on this
    // port is sent in a form Envoy refuses. The agent inherits it; nothing else reads it.
    std::env::set_var(
        "COLYSEUS_ENVOY_TEST_XDS_REFUSE_PORT",
        refused_port.to_string(),
    );
    let wait = format!("{}ms", LOOKUP_WAIT.as_millis());
    let agent = XdsAgent::start(
        &dir,
        "agent-a",
        "127.0.0.2",
        &redis.url(),
        &["--balance", "even", "--lookup-wait", &wait],
    );
    std::env::remove_var("COLYSEUS_ENVOY_TEST_XDS_REFUSE_PORT");
    let envoys: Vec<XdsEnvoy> = (1..=2)
        .map(|i| {
            XdsEnvoy::start(
                &dir,
                &format!("edge-{i}"),
                &format!("127.0.0.{}", 20 + i),
                &[&agent],
            )
        })
        .collect();
    let (edge1, edge2) = (&envoys[0], &envoys[1]);
    let mut servers = vec![GameServer::start(&dir, &redis, &[])];
    let pids = |s: &[GameServer]| s.iter().map(|g| g.process_id.clone()).collect::<Vec<_>>();
    for e in &envoys {
        e.wait_clusters(pids(&servers), Duration::from_secs(15));
    }
    wait_for("both Envoys on the agent", Duration::from_secs(10), || {
        (agent.node_ids() == ["edge-1", "edge-2"]).then_some(())
    });

    // (a) edge-2 stopped while a process registers.
    edge2.proc.signal("STOP");
    servers.push(GameServer::start(&dir, &redis, &[]));
    let newcomer = servers[1].process_id.clone();
    edge1.wait_clusters(pids(&servers), Duration::from_secs(10));
    // Through the running Envoy it routes at once (the filter's known set, then Envoy).
    let room = room_on(edge1, &newcomer);
    let (status, body, _) = lookup(&agent, &room, &newcomer, Some("edge-1"));
    assert_eq!(status, 200, "{body}");
    // edge-2 does not have it: its /processes leaves it out, its lookup waits the bound
    // and never names the cluster.
    let (v2, seen2) = processes(&agent, Some("edge-2"), None);
    assert_eq!(seen2, pids(&servers[..1]));
    assert_eq!(processes(&agent, Some("edge-1"), None).1.len(), 2);
    assert_eq!(processes(&agent, None, None).1.len(), 2);
    let (status, body, took) = lookup(&agent, &room, &newcomer, Some("edge-2"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""error":"not_acked""#), "{body}");
    assert!(took >= LOOKUP_WAIT - Duration::from_millis(50), "{took:?}");
    // A lookup and a long-poll held now are answered once edge-2 resumes and ACKs.
    let held_lookup = {
        let (agent_api, room, pid) = (agent.api(), room.clone(), newcomer.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let path = format!("/rooms/{room}?processId={pid}");
            let (status, _, body) =
                http_request(&agent_api, "GET", &path, &[(NODE, "edge-2")]).unwrap();
            (status, body, started.elapsed())
        })
    };
    let held_poll = {
        let agent_api = agent.api();
        std::thread::spawn(move || {
            let path = format!("/processes?after={v2}");
            http_request_within(
                Duration::from_secs(40),
                &agent_api,
                "GET",
                &path,
                &[(NODE, "edge-2")],
            )
            .unwrap()
        })
    };
    let paused = Duration::from_millis(300);
    std::thread::sleep(paused);
    let resumed = Instant::now();
    edge2.proc.signal("CONT");
    let (status, body, took) = held_lookup.join().unwrap();
    assert_eq!(status, 200, "answered after SIGCONT and the ACK: {body}");
    assert!(took >= paused, "answered before edge-2 resumed ({took:?})");
    let (status, _, rows) = held_poll.join().unwrap();
    println!(
        "edge-2 resumed: held lookup answered {:.0} ms after SIGCONT, held poll {:.0} ms",
        took.saturating_sub(paused).as_secs_f64() * 1e3,
        resumed.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(status, 200);
    assert!(
        rows.contains(&newcomer),
        "the held poll shows the newcomer: {rows}"
    );
    assert!(agent.metric("colyseus_envoy_ack_waits_total{outcome=\"acked\"}") >= 1);
    assert!(agent.metric("colyseus_envoy_ack_waits_total{outcome=\"timeout\"}") >= 1);
    edge2.wait_clusters(pids(&servers), Duration::from_secs(10));
    room_on(edge2, &newcomer);

    // (b) A cluster both Envoys refuse.
    let refused = GameServer::start(&dir, &redis, &[("PORT", &refused_port.to_string())]);
    let refused_pid = refused.process_id.clone();
    wait_for("a NACK from each Envoy", Duration::from_secs(10), || {
        (agent.metric("colyseus_envoy_xds_nacks_total") >= 2).then_some(())
    });
    let log = std::fs::read_to_string(dir.join("agent-a/agent.log")).unwrap();
    let nack = log
        .lines()
        .find(|l| l.contains("NACK") && l.contains(&refused_pid))
        .unwrap_or_else(|| panic!("no NACK naming {refused_pid} in the agent log"));
    let lower = nack.to_ascii_lowercase();
    assert!(
        lower.contains("connecttimeout") || lower.contains("connect_timeout"),
        "Envoy's detail: {nack}"
    );
    // Other updates still reach both Envoys and route.
    servers.push(GameServer::start(&dir, &redis, &[]));
    let third = servers[2].process_id.clone();
    for e in &envoys {
        e.wait_clusters(pids(&servers), Duration::from_secs(10));
        assert!(
            e.stat("cluster_manager.cds.update_rejected") >= 1,
            "{}",
            e.node_id
        );
        room_on(e, &third);
    }
    // Never resent: no NACK after the first one of each Envoy.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.metric("colyseus_envoy_xds_nacks_total"), 2);
    // Never advertised to them: not in their /processes, and a lookup naming it waits
    // the bound and is refused. An asker that names no Envoy still sees it (as before).
    for node in ["edge-1", "edge-2"] {
        let seen = processes(&agent, Some(node), None).1;
        assert!(!seen.contains(&refused_pid), "{node}: {seen:?}");
        assert!(seen.contains(&third), "{node}: {seen:?}");
    }
    assert!(processes(&agent, None, None).1.contains(&refused_pid));
    let (status, body, _) = lookup(&agent, "someroom", &refused_pid, Some("edge-1"));
    assert_eq!(status, 503, "{body}");
    let (status, _, _) = lookup(&agent, "someroom", &refused_pid, None);
    assert_eq!(status, 200);
    // `colyseus-envoy status` shows the NACK and what the gate held back.
    let out = std::process::Command::new(agent_bin())
        .args(["status", "--api-addr", &agent.api()])
        .args(["--admin-addr", &edge1.admin, "--redis-url", &redis.url()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("last NACK:"), "{report}");
    let gate = report.lines().find(|l| l.starts_with("ack gate:"));
    assert!(
        gate.is_some_and(|l| !l.starts_with("ack gate: 0 ")),
        "{report}"
    );

    // (c) A registration Envoy refuses and one it takes, announced together so that they
    // travel in one CDS response. Envoy refuses that response whole (one cluster fails
    // validation): the agent sends each of them again alone, so the valid one reaches both
    // Envoys, is advertised to them and looked up at once, and the refused one is refused
    // once more, alone, and then never resent.
    let refused_twin = std::net::TcpListener::bind(("127.0.0.3", refused_port)).unwrap();
    let fine = std::net::TcpListener::bind("127.0.0.4:0").unwrap();
    let (twin, mate) = ("nacktwin".to_owned(), "nackmate".to_owned());
    register_all(
        &mut redis.conn(),
        &[
            &format!("{twin}/127.0.0.3:{refused_port}"),
            &format!("{mate}/{}", fine.local_addr().unwrap()),
        ],
    );
    wait_for("each Envoy's NACK of both", Duration::from_secs(10), || {
        (agent.metric("colyseus_envoy_xds_nacks_total") >= 4).then_some(())
    });
    for e in &envoys {
        let mut held = pids(&servers);
        held.push(mate.clone());
        e.wait_clusters(held, Duration::from_secs(10));
        let seen = processes(&agent, Some(&e.node_id), None).1;
        assert!(seen.contains(&mate), "{}: {seen:?}", e.node_id);
        assert!(!seen.contains(&twin), "{}: {seen:?}", e.node_id);
        let (status, body, took) = lookup(&agent, "otherroom", &mate, Some(&e.node_id));
        assert_eq!(status, 200, "{body}");
        assert!(
            took < LOOKUP_WAIT,
            "waited {took:?} for a cluster the Envoy has"
        );
    }
    // The refused one went once more, alone, to each Envoy; then never again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.metric("colyseus_envoy_xds_nacks_total"), 6, "no loop");
    drop((refused, refused_twin, fine));
}
