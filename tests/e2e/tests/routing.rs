//! Players reach their rooms through Envoy + filter + agent; bad requests get clear answers.
#![cfg(feature = "e2e")]

use std::time::Duration;

use e2e::*;

#[test]
fn real_clients_reach_their_rooms_across_processes() {
    let stack = Stack::new("spread").servers(3).start();
    let (proxy, servers) = (&stack.proxy, &stack.servers);

    let result = swarm(
        &proxy.endpoint(),
        120,
        &["--concurrency", "8", "--messages", "5"],
    );
    println!("120 clients through the proxy: {result:?}");
    assert_eq!(result.ok, 120, "errors: {:?}", result.errors);
    assert!(result.errors.is_empty());
    // Rooms were created on every process, and each client echoed with its room's process.
    for s in servers {
        assert!(
            result.by_process.get(&s.process_id).copied().unwrap_or(0) > 0,
            "no client on {}: {:?}",
            s.process_id,
            result.by_process
        );
    }
    assert_eq!(result.by_process.values().sum::<u64>(), 120);
    proxy.assert_no_rejected_config();
}

/// `--balance rooms` (the default): the process holding the only room gets the lowest
/// matchmaking weight from the load Colyseus reports in `roomcount`, and Envoy's weighted
/// round robin sends it that share of the all-processes requests.
#[test]
fn matchmaking_favours_the_least_loaded_processes() {
    let stack = Stack::new("balance")
        .servers(3)
        .agent_args(&["--balance-interval", "300ms"])
        .start();
    let (proxy, servers, redis) = (&stack.proxy, &stack.servers, &stack.redis);
    // No load anywhere: plain round robin, no weights written.
    let weights = proxy.all_cluster_host_stat("weight");
    assert!(weights.values().all(|w| *w == 1), "{weights:?}");

    // Four players fill one echo room (maxClients 4) on one process.
    let players = Holding::start(&proxy.endpoint(), 4);
    let weights = wait_for("weights follow roomcount", Duration::from_secs(10), || {
        let w = proxy.all_cluster_host_stat("weight");
        (w.values().filter(|v| **v == 10).count() == 2 && w.values().any(|v| *v == 1)).then_some(w)
    });
    println!("weights: {weights:?}");
    let (busy, _) = weights.iter().find(|(_, w)| **w == 1).unwrap();
    let busy = busy.clone();
    // It is the process Colyseus reports the room on.
    let server = servers
        .iter()
        .find(|s| format!("127.0.0.1:{}", s.port) == busy)
        .unwrap();
    let load: String = redis::cmd("HGET")
        .arg("roomcount")
        .arg(&server.process_id)
        .query(&mut redis.conn())
        .unwrap();
    assert!(load.starts_with("1,"), "roomcount of {busy}: {load}");
    assert_eq!(weights[&busy], 1, "{weights:?}");
    // The agent's /processes (what `agent status` shows) tells the same weights.
    let (_, _, body) = http_get(&proxy.api(), "/processes").unwrap();
    let listed: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let listed: std::collections::BTreeMap<String, u64> = listed
        .iter()
        .map(|p| {
            (
                p["address"].as_str().unwrap().to_owned(),
                p["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        weights.iter().map(|(h, w)| (h.clone(), *w)).collect(),
        "/processes: {body}"
    );

    let before = proxy.all_cluster_host_stat("rq_total");
    for _ in 0..105 {
        // A CORS preflight: answered (204) by whichever process gets it, no room created.
        let (status, _, _) = http_request(
            &proxy.public(),
            "OPTIONS",
            "/matchmake/joinOrCreate/echo",
            &[],
        )
        .unwrap();
        assert_eq!(status, 204);
    }
    let after = proxy.all_cluster_host_stat("rq_total");
    let sent: std::collections::BTreeMap<&String, u64> = after
        .iter()
        .map(|(h, n)| (h, n - before.get(h).copied().unwrap_or(0)))
        .collect();
    println!("105 requests by host: {sent:?}");
    // Weights 10:10:1 -> 50:50:5.
    assert!(sent[&busy] <= 10, "{sent:?}");
    assert!(sent.values().filter(|n| **n >= 40).count() == 2, "{sent:?}");
    let result = players.finish();
    assert_eq!(result.ok, 4, "{:?}", result.errors);
    proxy.assert_no_rejected_config();
}

#[test]
fn bad_and_hostile_requests_get_clear_answers() {
    let stack = Stack::new("edges").servers(2).start();
    let (proxy, a, b) = (&stack.proxy, &stack.servers[0], &stack.servers[1]);
    let public = proxy.public();

    // Malformed room path: the filter answers 400 with JSON, nothing reaches a process.
    let (status, head, body) = http_get(&public, "/bad.pid/room?sessionId=x").unwrap();
    assert_eq!(status, 400, "{head}\n{body}");
    assert!(body.contains("malformed_room_path"), "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );

    // Unknown process, and the /undefined/ path of colyseus#546, for a room nobody has:
    // 404 JSON, never a random process. `undefined` names no process, so the filter looks
    // the room up (unknown_room). An unknown processId is looked up too once the filter has
    // the agent's process list (refreshed every second); before that it takes the fast path
    // and Envoy finds no such cluster (unknown_process).
    for (path, errors) in [
        (
            "/nope12345/room1?sessionId=x",
            &["unknown_room", "unknown_process"][..],
        ),
        ("/undefined/room1?sessionId=x", &["unknown_room"][..]),
    ] {
        let (status, _, body) = http_get(&public, path).unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(errors.iter().any(|e| body.contains(e)), "{path}: {body}");
        assert_eq!(ws_handshake(&public, path).unwrap(), 404);
    }

    // A known process: the upgrade reaches it (Colyseus accepts, then rejects the seat).
    let path = format!("/{}/someroom?sessionId=x", a.process_id);
    assert_eq!(ws_handshake(&public, &path).unwrap(), 101);

    // Matchmaking goes to the all-processes cluster and a real process answers.
    let (status, _, body) =
        http_request(&public, "POST", "/matchmake/joinOrCreate/echo", &[]).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sessionId"), "{body}");

    // A forged routing header is overwritten: naming the agent, the admin or another process
    // changes nothing.
    for forged in [
        "colyseus-agent",
        "admin",
        &format!("colyseus-process-{}", b.process_id),
    ] {
        let (status, _, body) = http_request(
            &public,
            "POST",
            "/matchmake/joinOrCreate/echo",
            &[("x-colyseus-cluster", forged)],
        )
        .unwrap();
        assert_eq!(status, 200, "forged {forged}: {body}");
        let status = ws_handshake_with(
            &public,
            "/nope12345/r?sessionId=x",
            &[("x-colyseus-cluster", forged)],
        )
        .unwrap();
        assert_eq!(status, 404, "forged {forged} on an unknown process");
    }
    // Envoy's admin and the agent's API are not reachable through the public listener: their
    // paths go to a game process like any other (Colyseus 0.16 leaves them unanswered).
    for path in ["/stats", "/clusters", "/processes", "/metrics"] {
        if let Ok((_, _, body)) =
            http_request_within(Duration::from_secs(1), &public, "GET", path, &[])
        {
            assert!(
                !body.contains("cluster_manager")
                    && !body.contains("colyseus_envoy_")
                    && !body.contains("processId"),
                "{path}: {body}"
            );
        }
    }
}

#[test]
fn generated_config_passes_envoy_validate() {
    let dir = scratch("validate");
    let config_dir = dir.join("envoy-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let out = std::process::Command::new(agent_bin())
        .args(["bootstrap", "--port", "8080"])
        .arg("--config-dir")
        .arg(&config_dir)
        .arg("--filter-wasm")
        .arg(filter_wasm())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut bootstrap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Let the agent write a CDS file with every kind of address, from real Redis input.
    let redis = Redis::start(&dir);
    let mut conn = redis.conn();
    for m in [
        "ipv4a/10.0.0.5:2567",
        "ipv6b/[::1]:2568",
        // Names are resolved by the agent (issue 11): a STATIC cluster of the checked
        // address; a name that does not resolve gets no cluster until it does.
        "named/localhost:2569",
        "noport/10.0.0.6",
    ] {
        let _: () = redis::cmd("SADD")
            .arg("colyseus:nodes")
            .arg(m)
            .query(&mut conn)
            .unwrap();
    }
    let api = format!("127.0.0.1:{}", free_port());
    let _agent = Proc::spawn(
        "agent",
        std::process::Command::new(agent_bin())
            .args(["sync", "--redis-url", &redis.url(), "--api-addr", &api])
            .arg("--config-dir")
            .arg(&config_dir)
            .stderr(std::process::Stdio::null()),
    );
    wait_for("agent ready", Duration::from_secs(20), || {
        (http_get(&api, "/ready").ok()?.0 == 200).then_some(())
    });
    // The name's cluster follows its resolution by the agent, right after the first write.
    let cds: serde_json::Value = wait_for("every cluster written", Duration::from_secs(5), || {
        let cds: serde_json::Value =
            serde_json::from_slice(&std::fs::read(config_dir.join("cds.json")).ok()?).ok()?;
        (cds["resources"].as_array()?.len() == 5).then_some(cds)
    });

    // `--mode validate` does not read dynamic files: put the generated clusters in
    // static_resources so Envoy checks every one of them too.
    let clusters: Vec<serde_json::Value> = cds["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.as_object_mut().unwrap().remove("@type");
            c
        })
        .collect();
    bootstrap["static_resources"]["clusters"] = serde_json::Value::Array(clusters);
    let file = dir.join("validate.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
    let out = std::process::Command::new(envoy_bin())
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "envoy --mode validate failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ipv6_processes_are_routed() {
    let dir = scratch("ipv6");
    let redis = Redis::start(&dir);
    let v6 = GameServer::start(&dir, &redis, &[("HOST", "::1"), ("SELF_HOSTNAME", "[::1]")]);
    let v4 = GameServer::start(&dir, &redis, &[]);
    let member = format!("{}/[::1]:{}", v6.process_id, v6.port);
    assert!(redis.members().contains(&member), "{:?}", redis.members());
    let proxy = Proxy::start(&dir, &redis);
    proxy.wait_routed(
        vec![v6.process_id.clone(), v4.process_id.clone()],
        Duration::from_secs(10),
    );
    let (_, _, processes) = http_get(&proxy.api(), "/processes").unwrap();
    assert!(
        processes.contains(&format!("\"[::1]:{}\"", v6.port)),
        "{processes}"
    );

    let result = swarm(&proxy.endpoint(), 24, &["--concurrency", "4"]);
    println!("IPv6 + IPv4 processes: {:?}", result.by_process);
    assert_eq!(result.ok, 24, "{:?}", result.errors);
    // Which process Colyseus creates the swarm's rooms on is its own choice (once 24 of 24
    // landed on the IPv4 one), so a seat on the IPv6 process is made explicitly: `create`
    // goes to the process with the fewest rooms. Taken through the proxy, it is joined.
    let seat = wait_for(
        "a room on the IPv6 process",
        Duration::from_secs(10),
        || {
            let seat = matchmake(&proxy.public(), "create", "echo");
            (seat.process_id == v6.process_id).then_some(seat)
        },
    );
    let path = format!(
        "/{}/{}?sessionId={}",
        seat.process_id, seat.room_id, seat.session_id
    );
    let (status, _, first) = ws_first_frame(&proxy.public(), &path);
    assert_eq!(
        (status, first),
        (101, Some(10)),
        "seat {path} on the IPv6 process"
    );
    let path = format!("/{}/someroom?sessionId=x", v6.process_id);
    assert_eq!(ws_handshake(&proxy.public(), &path).unwrap(), 101);
}
