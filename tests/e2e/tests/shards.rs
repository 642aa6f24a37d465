//! The all-processes cluster in shards (`sync --all-shards 4`), with real parts: one agent
//! serving xDS and an Envoy streaming from it, beside a proxy fed from the CDS file with the
//! same flag; real Colyseus servers in at least two shards (one shard always empty: three
//! servers, four shards), real colyseus.js players.
//!
//! - Before any server: matchmaking answers 503 `no_process_available` (shard 0 exists,
//!   empty), never a 404 or `no_cluster`.
//! - Every shard exists in both Envoys (EDS on xDS, inline in the file), an empty one too;
//!   the two sinks give Envoy the same clusters, hosts included.
//! - colyseus.js `joinOrCreate` and room connections succeed through both; Envoy's per-cluster
//!   counters show matchmaking reached every shard that has processes and none that has not.
//!
//! Cost: 10-15 s on 2 cores (two Envoys, two agents, three or more game servers).
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::xds::{dynamic_clusters, effective_clusters, envoy_stat, XdsAgent, XdsEnvoy};
use e2e::*;
use routing::cluster::shard_of;
use routing::ClusterNames;

const SHARDS: u16 = 4;

#[test]
fn matchmaking_spreads_over_the_shards_on_both_sinks() {
    let dir = scratch("shards");
    let redis = Redis::start(&dir);
    let shards = SHARDS.to_string();
    let flags = ["--balance", "even", "--all-shards", &shards];
    let agent = XdsAgent::start(&dir, "agent-a", "127.0.0.2", &redis.url(), &flags);
    let envoy = XdsEnvoy::start(&dir, "edge-1", "127.0.0.21", &[&agent]);
    let file_dir = dir.join("file-sink");
    std::fs::create_dir_all(&file_dir).unwrap();
    let file = Proxy::start_with(&file_dir, &redis.url(), &flags);
    let names = ClusterNames::default();
    let shard_names: Vec<String> = (0..SHARDS).map(|k| names.all_shard(k)).collect();

    // No process yet: matchmaking meets the empty shard 0, a clear 503.
    for public in [envoy.public(), file.public()] {
        let body = wait_for("every shard in Envoy", Duration::from_secs(15), || {
            let (status, _, body) =
                http_request(&public, "POST", "/matchmake/joinOrCreate/echo", &[]).ok()?;
            assert_ne!(status, 404, "{public}: {body}");
            (status == 503).then_some(body)
        });
        assert!(body.contains("no_process_available"), "{public}: {body}");
    }

    // Three servers (more if they all fell in one shard), so some shard stays empty.
    let mut servers: Vec<GameServer> = Vec::new();
    let occupied = |s: &[GameServer]| -> BTreeSet<u16> {
        s.iter().map(|g| shard_of(&g.process_id, SHARDS)).collect()
    };
    while servers.len() < 3 || (occupied(&servers).len() < 2 && servers.len() < 8) {
        servers.push(GameServer::start(&dir, &redis, &[]));
    }
    let busy = occupied(&servers);
    assert!(
        busy.len() >= 2,
        "processes in two shards at least: {busy:?}"
    );
    let pids: Vec<String> = servers.iter().map(|g| g.process_id.clone()).collect();
    envoy.wait_clusters(pids.clone(), Duration::from_secs(15));
    file.wait_routed(pids.clone(), Duration::from_secs(15));

    // Both sinks give Envoy the same clusters, every shard among them, with its hosts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let from_file = loop {
        let (x, f) = (
            effective_clusters(&envoy.admin),
            effective_clusters(&file.admin()),
        );
        if x == f {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "the xDS Envoy's clusters differ from the file sink's: {x:#?} vs {f:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(from_file.len(), servers.len() + usize::from(SHARDS));
    let hosts = |name: &str| {
        from_file[name]["hosts"].as_array().map_or(0, |l| {
            l.iter()
                .map(|g| g["lb_endpoints"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        })
    };
    for (k, name) in shard_names.iter().enumerate() {
        let k = u16::try_from(k).unwrap();
        let expected = servers
            .iter()
            .filter(|g| shard_of(&g.process_id, SHARDS) == k)
            .count();
        assert_eq!(hosts(name), expected, "{name}");
        assert_eq!(
            dynamic_clusters(&envoy.admin)[name]["type"],
            "EDS",
            "{name}"
        );
    }

    // A new host takes requests once Envoy's first health check of it passed (and the
    // workers heard of it: at once, the shards have no `update_merge_window`): until
    // then a shard whose only hosts are new answers 503 (see the README, "Large fleets").
    let expected: Vec<u64> = (0..SHARDS)
        .map(|k| {
            let n = servers
                .iter()
                .filter(|g| shard_of(&g.process_id, SHARDS) == k);
            n.count() as u64
        })
        .collect();
    for admin in [envoy.admin.clone(), file.admin()] {
        wait_for(
            "every shard's hosts healthy",
            Duration::from_secs(15),
            || {
                let healthy: Vec<u64> = shard_names
                    .iter()
                    .map(|n| envoy_stat(&admin, &format!("cluster.{n}.membership_healthy")))
                    .collect();
                (healthy == expected).then_some(())
            },
        );
    }
    // colyseus.js players: matchmaking through each Envoy, then their rooms.
    for (label, endpoint, admin) in [
        ("xds", envoy.endpoint(), envoy.admin.clone()),
        ("file", file.endpoint(), file.admin()),
    ] {
        let result = swarm(&endpoint, 16, &["--concurrency", "4", "--messages", "1"]);
        let requests: Vec<u64> = shard_names
            .iter()
            .map(|n| envoy_stat(&admin, &format!("cluster.{n}.upstream_rq_total")))
            .collect();
        let none_healthy: u64 = shard_names
            .iter()
            .map(|n| envoy_stat(&admin, &format!("cluster.{n}.upstream_cx_none_healthy")))
            .sum();
        println!("{label}: matchmaking requests per shard {requests:?}, servers in {busy:?}");
        assert_eq!(result.ok, 16, "{label}: {:?}", result.errors);
        for (k, n) in requests.iter().enumerate() {
            let has_processes = busy.contains(&u16::try_from(k).unwrap());
            assert_eq!(*n > 0, has_processes, "{label}: shard {k}, {requests:?}");
        }
        // Only the 503s asked for before the servers came.
        assert!(none_healthy <= 2, "{label}: {none_healthy}");
    }
    // A seat's room connection goes to its process as without shards.
    let seat = matchmake(&envoy.public(), "create", "echo");
    let path = format!(
        "/{}/{}?sessionId={}",
        seat.process_id, seat.room_id, seat.session_id
    );
    assert_eq!(ws_first_frame(&envoy.public(), &path).0, 101, "{path}");
    assert_eq!(envoy.stat("cluster_manager.cds.update_rejected"), 0);
    assert_eq!(agent.metric("colyseus_envoy_xds_nacks_total"), 0);
    file.assert_no_rejected_config();
}
