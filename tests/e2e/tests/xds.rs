//! The xDS control plane with real parts: two agents serving xDS from one Redis, three
//! Envoys, each agent and Envoy on a host of its own (a network namespace on a bridge;
//! Redis, the game servers and the players on the machine's bridge address), real
//! Colyseus servers and colyseus.js players.
//! Matchmaking goes through one Envoy and the room connection through another; the agent
//! an Envoy streams from is killed with SIGKILL and the Envoy moves to the other agent
//! with no WebSocket dropped; a process registered meanwhile becomes routable through
//! every Envoy; and an Envoy fed from the CDS file holds the very same clusters.
//! Cost: about 30-40 s on 2 cores (three Envoys, two agents, a file-sink proxy).
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::netns::Network;
use e2e::xds::{dynamic_clusters, effective_clusters, Ads, XdsAgent, XdsEnvoy};
use e2e::*;

#[test]
fn xds_fleet_fails_over_without_drops_and_matches_the_file_sink() {
    let dir = scratch("xds");
    // Declared first, so dropped last: after every process on its hosts.
    let mut net = Network::new();
    let gateway = net.gateway();
    let redis = Redis::start_bound(&dir, free_port(), &format!("127.0.0.1 {gateway}"));
    // Even balance: the clusters are compared with the file sink's, and weights follow
    // room counts each agent reads at its own moment. The agents accept game servers on
    // the fleet's subnet only, and serve xDS only (no Envoy on their hosts reads a CDS
    // file), as a fleet would configure them.
    let cidr = net.cidr();
    let flags = [
        "--balance",
        "even",
        "--upstream-allow-cidrs",
        &cidr,
        "--no-cds-file",
    ];
    let agents = ["agent-a", "agent-b"].map(|name| {
        let host = net.host(name);
        XdsAgent::start_on(&dir, name, &host, &redis.url_at(&gateway), &flags)
    });
    for name in ["agent-a", "agent-b"] {
        let cds = dir.join(name).join("envoy-config").join("cds.json");
        assert!(!cds.exists(), "--no-cds-file wrote {}", cds.display());
    }
    // edge-3 streams state-of-the-world ADS, the others delta: both services are held to
    // the same clusters, failover and routing below.
    let envoys: Vec<XdsEnvoy> = (1..=3)
        .map(|i| {
            let agents: Vec<&XdsAgent> = agents.iter().collect();
            let name = format!("edge-{i}");
            let ads = if i == 3 {
                Ads::StateOfTheWorld
            } else {
                Ads::Delta
            };
            XdsEnvoy::start_full(
                &dir,
                &name,
                &net.host(&name),
                &agents,
                ads,
                &serde_json::json!({}),
            )
        })
        .collect();
    let even = ["--balance", "even"];
    let file_dir = dir.join("file-sink");
    std::fs::create_dir_all(&file_dir).unwrap();
    let file = Proxy::start_with(&file_dir, &redis.url(), &even);

    // The servers advertise edge-2 as their public address: colyseus.js matchmakes through
    // edge-1 and opens its room connection on edge-2.
    let public2 = envoys[1].public();
    let on_gateway = [
        ("PUBLIC_ADDRESS", public2.as_str()),
        ("HOST", gateway.as_str()),
        ("SELF_HOSTNAME", gateway.as_str()),
    ];
    let mut servers: Vec<GameServer> = (0..2)
        .map(|_| GameServer::start(&dir, &redis, &on_gateway))
        .collect();
    let pids = |s: &[GameServer]| s.iter().map(|g| g.process_id.clone()).collect::<Vec<_>>();
    for e in &envoys {
        e.wait_clusters(pids(&servers), Duration::from_secs(15));
    }
    file.wait_routed(pids(&servers), Duration::from_secs(15));

    // Both sinks give Envoy the same clusters: the protos as Envoy holds them, with the
    // hosts Envoy holds (`/config_dump?include_eds`). The xDS sink's all-processes cluster
    // is `type: EDS` with its hosts served apart, the file's carries them inline: compared
    // as the inline cluster it stands for (see `effective_clusters`).
    let deadline = Instant::now() + Duration::from_secs(10);
    let from_file = loop {
        let from_file = effective_clusters(&file.admin());
        let differing: Vec<_> = envoys
            .iter()
            .map(|e| effective_clusters(&e.admin))
            .filter(|c| *c != from_file)
            .collect();
        if differing.is_empty() {
            break from_file;
        }
        assert!(
            Instant::now() < deadline,
            "an xDS Envoy's clusters differ from the file sink's: {:#?} vs {from_file:#?}",
            differing[0]
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(from_file.len(), 3, "{:?}", from_file.keys());
    // The hosts really were compared: two processes in the all cluster, by EDS on xDS.
    let all = &from_file["colyseus-all"]["hosts"][0]["lb_endpoints"];
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    let all_type = |admin: &str| dynamic_clusters(admin)["colyseus-all"]["type"].clone();
    for e in &envoys {
        assert_eq!(all_type(&e.admin), "EDS", "{}", e.node_id);
    }
    assert_eq!(all_type(&file.admin()), "STATIC");
    // Every Envoy streams from one of the agents, by its own node id.
    wait_for(
        "three Envoys on the agents",
        Duration::from_secs(10),
        || {
            let mut all: Vec<String> = agents.iter().flat_map(XdsAgent::node_ids).collect();
            all.sort();
            (all == ["edge-1", "edge-2", "edge-3"]).then_some(())
        },
    );

    let result = swarm(
        &envoys[0].endpoint(),
        10,
        &["--concurrency", "5", "--messages", "2"],
    );
    assert_eq!(result.ok, 10, "{:?}", result.errors);
    let upgrades = |e: &XdsEnvoy| e.stat("http.public.downstream_cx_upgrades_total");
    assert_eq!((upgrades(&envoys[0]), upgrades(&envoys[1])), (0, 10));

    // Players hold room connections through edge-2 while its agent is killed.
    let players = Holding::start(&envoys[0].endpoint(), 6);
    let victim = agents
        .iter()
        .position(|a| a.node_ids().contains(&"edge-2".to_owned()))
        .expect("edge-2 streams from an agent");
    let [a, b] = agents;
    let (dead, survivor) = if victim == 0 { (a, b) } else { (b, a) };
    let moving = dead.node_ids();
    dead.proc.signal("KILL");
    let killed = Instant::now();
    wait_for(
        "every Envoy on the surviving agent",
        Duration::from_secs(15),
        || (survivor.node_ids() == ["edge-1", "edge-2", "edge-3"]).then_some(()),
    );
    let protocols: Vec<String> = survivor.streams().into_iter().map(|(_, p)| p).collect();
    assert_eq!(protocols, ["delta", "delta", "sotw"], "edge-3 streams SotW");
    println!(
        "{moving:?} moved to the other agent in {:.0} ms",
        killed.elapsed().as_secs_f64() * 1e3
    );

    // A process registered after the kill is routable through every Envoy.
    servers.push(GameServer::start(&dir, &redis, &on_gateway));
    let newcomer = servers[2].process_id.clone();
    for e in &envoys {
        e.wait_clusters(pids(&servers), Duration::from_secs(10));
    }
    for e in &envoys {
        let seat = wait_for("a room on the newcomer", Duration::from_secs(10), || {
            let seat = matchmake(&e.public(), "create", "echo");
            (seat.process_id == newcomer).then_some(seat)
        });
        let path = format!(
            "/{}/{}?sessionId={}",
            seat.process_id, seat.room_id, seat.session_id
        );
        let (status, _, first) = ws_first_frame(&e.public(), &path);
        assert_eq!(
            (status, first),
            (101, Some(10)),
            "seat {path} through {}",
            e.node_id
        );
    }
    let result = players.finish();
    assert_eq!(
        result.ok, 6,
        "players held through the kill: {:?}",
        result.errors
    );
    for e in &envoys {
        assert_eq!(
            e.stat("cluster_manager.cds.update_rejected"),
            0,
            "{}",
            e.node_id
        );
    }
    assert_eq!(survivor.metric("colyseus_envoy_xds_nacks_total"), 0);
    // `agent status` lists the Envoys streaming from the survivor, each current.
    let status = std::process::Command::new(agent_bin())
        .args([
            "status",
            "--api-addr",
            &survivor.api(),
            "--admin-addr",
            &envoys[0].admin,
        ])
        .args(["--redis-url", &redis.url()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&status.stdout);
    for e in &envoys {
        let line = report.lines().find(|l| l.starts_with(&e.node_id));
        assert!(
            line.is_some_and(|l| l.contains(" yes ")),
            "{}: {report}",
            e.node_id
        );
    }
    assert!(survivor.metric("colyseus_envoy_xds_acks_total") >= 3);
    // The filters' process lists followed the newcomer by delta, not by the whole set.
    assert!(
        survivor.metric("colyseus_envoy_processes_answers_total{kind=\"delta\"}") >= 1,
        "no /processes delta answered"
    );
    drop(dead);
}

/// The state-of-the-world stream (`api_type: GRPC`), which the bootstrap does not write but
/// the agent serves: clusters and the all-processes cluster's EDS hosts arrive, a
/// registration adds a cluster and a host, an unregistration takes the host out of the all
/// cluster (the process drains: its own cluster stays). Registrations are written to Redis
/// directly with liveness and health checks off: the stream is tested, not the processes.
/// Cost: about 3 s (one Redis, one agent, one Envoy).
#[test]
fn a_state_of_the_world_stream_gets_clusters_and_eds_hosts() {
    let dir = scratch("xds-sotw");
    let redis = Redis::start(&dir);
    let mut conn = redis.conn();
    register(&mut conn, "a1/127.0.0.1:20001");
    register(&mut conn, "b1/127.0.0.1:20002");
    let quiet = ["--liveness", "off", "--health-check", "off"];
    let agent = XdsAgent::start(&dir, "agent", "127.0.0.1", &redis.url(), &quiet);
    let envoy = XdsEnvoy::start_sotw(&dir, "edge-sotw", "127.0.0.1", &[&agent]);
    let hosts = || {
        let all = &effective_clusters(&envoy.admin)["colyseus-all"];
        let mut ports: Vec<u64> = all["hosts"][0]["lb_endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["endpoint"]["address"]["socket_address"]["port_value"].as_u64())
            .collect();
        ports.sort_unstable();
        ports
    };
    let wait_hosts = |expected: &[u64]| {
        wait_for("the all cluster's hosts", Duration::from_secs(10), || {
            (hosts() == expected).then_some(())
        });
    };
    envoy.wait_clusters(vec!["a1".into(), "b1".into()], Duration::from_secs(15));
    wait_hosts(&[20001, 20002]);
    assert_eq!(
        dynamic_clusters(&envoy.admin)["colyseus-all"]["type"],
        "EDS"
    );
    register(&mut conn, "c1/127.0.0.1:20003");
    envoy.wait_clusters(
        vec!["a1".into(), "b1".into(), "c1".into()],
        Duration::from_secs(10),
    );
    wait_hosts(&[20001, 20002, 20003]);
    unregister(&mut conn, "b1/127.0.0.1:20002");
    wait_hosts(&[20001, 20003]);
    assert_eq!(envoy.process_clusters(), ["a1", "b1", "c1"]);
    // The agent counts the stream as state-of-the-world, current, nothing refused.
    wait_for("the sotw Envoy current", Duration::from_secs(10), || {
        let status = agent.xds_status()?;
        let client = &status["clients"][0];
        (client["protocol"] == "sotw"
            && client["acked_snapshot"] == status["snapshot"]
            && client["acked_endpoints"] == 1)
            .then_some(())
    });
    assert_eq!(agent.metric("colyseus_envoy_xds_nacks_total"), 0);
    assert_eq!(envoy.stat("cluster_manager.cds.update_rejected"), 0);
}
