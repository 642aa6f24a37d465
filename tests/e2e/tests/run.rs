//! `colyseus-envoy run`, as an operator uses it: one command that refuses a taken address
//! with its reason, stops Envoy before the agent, restarts a crashed sync agent while the
//! players stay, hot-restarts Envoy on SIGHUP holding the players, and refuses a third
//! epoch while the second drains unless forced. Plus the operator-facing errors: bad values
//! named by the variable the user set, one exit code per kind of mistake, plain log files,
//! and `status` naming a refused registration and exiting 1.
//!
//! Cost: about 40 s on 2 cores (four `run` proxies, five game servers, eight swarms).
#![cfg(feature = "e2e")]

use std::process::Command;
use std::time::Duration;

use e2e::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn taken_addresses_and_bad_values_are_refused_before_anything_starts() {
    let dir = scratch("run-refusals");
    let redis = Redis::start(&dir);
    let game = GameServer::start(&dir, &redis, &[]);
    let proxy = RunProxy::start(&dir, &redis.url(), &[]);
    wait_for("the game server routed", Duration::from_secs(10), || {
        (swarm(&proxy.endpoint(), 2, &[]).ok == 2).then_some(())
    });

    // A second proxy on the same public port: refused in one line naming PORT, exit 69,
    // nothing started (before, it started and both Envoys shared the port).
    let second = dir.join("second");
    let out = RunProxy::command(&second, &redis.url(), proxy.port, free_port())
        .output()
        .unwrap();
    let err = stderr(&out);
    println!(
        "second proxy on a taken PORT: exit {:?}: {err}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "the public listener 127.0.0.1:{} is already in use",
            proxy.port
        )) && err.trim_end().ends_with("set PORT"),
        "{err}"
    );
    assert!(!second.join("envoy.json").exists(), "nothing may start");

    // The agent API taken (before: "agent ready" from the other agent, then Envoy failing
    // on a missing cds.json): refused, naming AGENT_API_ADDR.
    let out = RunProxy::command(&second, &redis.url(), free_port(), proxy.api_port)
        .output()
        .unwrap();
    let err = stderr(&out);
    println!("second proxy on a taken AGENT_API_ADDR: {err}");
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("the agent's API") && err.contains("set AGENT_API_ADDR"),
        "{err}"
    );

    // The first proxy still serves, alone.
    let after = swarm(&proxy.endpoint(), 5, &[]);
    assert_eq!(after.ok, 5, "{:?}", after.errors);
    assert_eq!(
        after.by_process.keys().collect::<Vec<_>>(),
        [&game.process_id]
    );

    // Bad values: named by the variable the user set, with the form expected; exit 64.
    let bad = |var: &str, value: &str, cmd: &[&str]| {
        let out = Command::new(agent_bin())
            .args(cmd)
            .env(var, value)
            .env("COLYSEUS_ENVOY_FILTER_WASM", filter_wasm())
            .env("ENVOY_BIN", envoy_bin())
            .env("RUN_DIR", dir.join("bad"))
            .env("COLYSEUS_ENVOY_CONFIG_DIR", dir.join("bad"))
            .output()
            .unwrap();
        let err = stderr(&out);
        println!(
            "{var}={value} {}: exit {:?}: {err}",
            cmd.join(" "),
            out.status.code()
        );
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(err.contains(&format!("{var}={value}")), "{err}");
        err
    };
    let err = bad("PORT", "abc", &["run"]);
    assert!(
        err.contains("(expected a value of the same form as the default, 80)"),
        "{err}"
    );
    let err = bad("COLYSEUS_ENVOY_LIVENESS_INTERVAL", "5x", &["sync"]);
    assert!(err.contains("unknown time unit"), "{err}");
    let err = bad("REDIS_URL", "localhost:6391", &["status"]);
    assert!(err.contains("expected redis://"), "{err}");
    let err = bad("COLYSEUS_ENVOY_BALANCE", "fair", &["sync"]);
    assert!(err.contains("(expected one of even, rooms, ccu)"), "{err}");
    assert!(!dir.join("bad").join("envoy.json").exists());

    // Log files carry no colour codes.
    assert!(!proxy.log().contains('\x1b'), "ANSI codes in run.log");
}

#[test]
fn sync_crash_is_restarted_while_players_stay_and_sigterm_stops_envoy_first() {
    let dir = scratch("run-supervise");
    let redis = Redis::start(&dir);
    let servers: Vec<GameServer> = (0..2)
        .map(|_| GameServer::start(&dir, &redis, &[]))
        .collect();
    let proxy = RunProxy::start(&dir, &redis.url(), &[]);
    let ids: Vec<String> = servers.iter().map(|s| s.process_id.clone()).collect();
    wait_for("both routed", Duration::from_secs(10), || {
        let (_, _, body) = http_get(&proxy.api(), "/processes").ok()?;
        ids.iter()
            .all(|id| body.contains(id.as_str()))
            .then_some(())
    });
    let held = Holding::start(&proxy.endpoint(), 20);

    // The sync agent crashes: run restarts it; Envoy keeps serving its config meanwhile.
    let sync = proxy.sync_pid().expect("a sync child");
    let envoy = proxy.envoy_pids();
    Command::new("kill")
        .args(["-KILL", &sync.to_string()])
        .status()
        .unwrap();
    let during = swarm(&proxy.endpoint(), 5, &["--concurrency", "5"]);
    assert_eq!(
        during.ok, 5,
        "joins while the sync agent is down: {:?}",
        during.errors
    );
    let restarted = wait_for("a new sync agent", Duration::from_secs(10), || {
        proxy.sync_pid().filter(|p| *p != sync)
    });
    wait_for("the new agent ready", Duration::from_secs(10), || {
        (http_get(&proxy.api(), "/ready").ok()?.0 == 200).then_some(())
    });
    assert_eq!(proxy.envoy_pids(), envoy, "Envoy is not restarted");
    wait_for(
        "the new agent lists both processes",
        Duration::from_secs(10),
        || {
            let (_, _, body) = http_get(&proxy.api(), "/processes").ok()?;
            ids.iter()
                .all(|id| body.contains(id.as_str()))
                .then_some(())
        },
    );
    let result = held.finish();
    println!(
        "players held across a sync crash: {} of {}",
        result.ok, result.clients
    );
    assert_eq!(result.ok, 20, "dropped: {:?}", result.errors);
    assert!(proxy
        .log()
        .contains("The sync agent exited (signal: 9 (SIGKILL)); restarting it"));

    // SIGTERM: Envoy stops, then the agent; run exits 0 and leaves nothing running.
    let mut proxy = proxy;
    proxy.run.signal("TERM");
    let code = wait_for("run to exit", Duration::from_secs(20), || {
        proxy.run.child.try_wait().unwrap().map(|s| s.code())
    });
    assert_eq!(code, Some(0));
    let log = proxy.log();
    let at = |needle: &str| {
        log.rfind(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{log}"))
    };
    assert!(at("caught ENVOY_SIGTERM") < at("Envoy stopped; stopping the agent."));
    // The agent's own shutdown line comes only after run saw Envoy gone.
    assert!(
        at("Envoy stopped; stopping the agent.")
            < at("Shutting down; Envoy keeps the last config.")
    );
    assert!(!pid_alive(restarted) && envoy.iter().all(|p| !pid_alive(*p)));
}

#[test]
fn sighup_hot_restarts_envoy_with_players_held_and_a_third_epoch_needs_force() {
    let dir = scratch("run-hot-restart");
    let redis = Redis::start(&dir);
    let _game = GameServer::start(&dir, &redis, &[]);
    let proxy = RunProxy::start(
        &dir,
        &redis.url(),
        &[
            ("ENVOY_DRAIN_TIME", "30"),
            ("ENVOY_PARENT_SHUTDOWN_TIME", "60"),
        ],
    );
    wait_for("the game server routed", Duration::from_secs(10), || {
        (swarm(&proxy.endpoint(), 2, &[]).ok == 2).then_some(())
    });
    assert_eq!(proxy.live_epoch(), Some(0));
    let held = Holding::start(&proxy.endpoint(), 20);

    proxy.run.signal("HUP");
    wait_for("epoch 1 live", Duration::from_secs(30), || {
        (proxy.live_epoch() == Some(1)).then_some(())
    });
    assert_eq!(
        proxy.envoy_pids().len(),
        2,
        "the old epoch drains beside the new one"
    );
    let fresh = swarm(&proxy.endpoint(), 5, &["--concurrency", "5"]);
    assert_eq!(
        fresh.ok, 5,
        "new players after the hot restart: {:?}",
        fresh.errors
    );

    // A third epoch now would make Envoy cut the draining one's players: refused.
    let out = proxy.hot_restart(false);
    let err = stderr(&out);
    println!(
        "hot restart while epoch 0 drains: exit {:?}: {err}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("still drains") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(proxy.live_epoch(), Some(1));

    let result = held.finish();
    println!(
        "players held across a SIGHUP hot restart: {} of {}",
        result.ok, result.clients
    );
    assert_eq!(result.ok, 20, "dropped: {:?}", result.errors);

    let out = proxy.hot_restart(true);
    let said = String::from_utf8_lossy(&out.stdout);
    println!("forced: {said}");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(said.starts_with("hot restart: epoch 2 (pid "), "{said}");
    assert_eq!(proxy.live_epoch(), Some(2));
}

#[test]
fn status_names_a_registration_without_self_hostname_and_exits_1() {
    let dir = scratch("run-status");
    let redis = Redis::start(&dir);
    let game = GameServer::start(&dir, &redis, &[]);
    let proxy = RunProxy::start(&dir, &redis.url(), &[]);
    wait_for("healthy", Duration::from_secs(10), || {
        let out = proxy.status();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains(&game.process_id)).then_some(())
    });
    // What Colyseus 0.16 registers when SELF_HOSTNAME is unset.
    register(&mut redis.conn(), "noHostname1/undefined:2567");
    let text = wait_for("status unhealthy", Duration::from_secs(10), || {
        let out = proxy.status();
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    println!("{text}");
    assert!(
        text.contains("rejected: member \"noHostname1/undefined:2567\" has an unusable address: host is missing (is SELF_HOSTNAME set on the game server?)"),
        "{text}"
    );

    // A SIGKILLed run orphans nothing: Envoy gets its parent-death signal, the sync agent
    // sees its parent gone within a second.
    let children: Vec<u32> = proxy.children().into_iter().map(|(p, _)| p).collect();
    assert_eq!(children.len(), 2, "{children:?}");
    proxy.run.signal("KILL");
    wait_for("run's children gone", Duration::from_secs(10), || {
        children.iter().all(|p| !pid_alive(*p)).then_some(())
    });
}
