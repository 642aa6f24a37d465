//! Agent scale, a benchmark (issue 6), not a test: prints numbers, asserts only that
//! everything arrived. Run with `scripts/bench.sh --scale`, or
//! `cargo test -p e2e --features e2e --release --test scale -- --ignored --nocapture`.
//! `SCALE_PROCESSES` (default `10,1000,10000`) and `SCALE_ROOMS` (default `100000,1000000`).
//!
//! Processes: N registrations (liveness and Envoy health checks off, so only the sync is
//! measured) are read by a freshly started agent; measured: agent start to all N in its
//! API, to all N clusters active in Envoy, the CDS file's size, RSS and CPU of both, then
//! 100 single registrations (SADD + `add` announcement) one after another: agent and Envoy
//! CPU per update and the time for each to be active in Envoy.
//! Rooms: R RedisDriver listings (`--redis-rooms`): agent start to all R indexed, RSS, and
//! the CPU of one full read.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::*;

fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

const QUIET: [&str; 8] = [
    "--liveness",
    "off",
    "--health-check",
    "off",
    "--balance",
    "even",
    "--resync-interval",
    "1h",
];

/// An agent metric, 0 while the restarted agent's API is not up yet.
fn metric(proxy: &Proxy, series: &str) -> u64 {
    match http_get(&proxy.api(), "/metrics") {
        Ok(_) => proxy.agent_metric(series),
        Err(_) => 0,
    }
}

/// An Envoy stat, 0 while its admin is too busy to answer (applying thousands of clusters).
fn stat(proxy: &Proxy, name: &str) -> u64 {
    match http_get(&proxy.admin(), &format!("/stats?filter=^{name}$")) {
        Ok((_, _, body)) => body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map_or(0, |v| v.trim().parse().unwrap_or(0)),
        Err(_) => 0,
    }
}

/// `SADD`s the members `ids` in one pipeline, with no announcement (a fleet already there).
fn add_members(conn: &mut redis::Connection, ids: std::ops::Range<usize>) {
    let mut pipe = redis::pipe();
    for i in ids {
        pipe.cmd("SADD")
            .arg("colyseus:nodes")
            .arg(member(i))
            .ignore();
    }
    let _: () = pipe.query(conn).unwrap();
}

fn member(i: usize) -> String {
    format!(
        "scale{i}/127.0.{}.{}:{}",
        (i / 250) % 250 + 1,
        i % 250 + 1,
        20000 + i % 40000
    )
}

#[test]
#[ignore = "benchmark: prints numbers, asserts nothing about time"]
fn agent_scale_processes() {
    for n in sizes("SCALE_PROCESSES", "10,1000,10000") {
        let dir = scratch(&format!("scale-p{n}"));
        let redis = Redis::start(&dir);
        let mut conn = redis.conn();
        // Apart: the timing starts at a fresh agent process (run would add its restart
        // backoff), and the agent restarts with other flags.
        let mut proxy = Proxy::start_apart(&dir, &redis.url(), &QUIET, &[]);
        add_members(&mut conn, 0..n);
        let base_clusters = proxy.envoy_stat("cluster_manager.active_clusters");

        let start = Instant::now();
        proxy.restart_agent(&QUIET);
        wait_for(
            "agent lists every process",
            Duration::from_secs(120),
            || (metric(&proxy, "colyseus_envoy_processes") == n as u64).then_some(()),
        );
        let agent_synced = start.elapsed();
        wait_for("Envoy has every cluster", Duration::from_secs(300), || {
            (stat(&proxy, "cluster_manager.active_clusters") >= base_clusters + n as u64)
                .then_some(())
        });
        let envoy_applied = start.elapsed();
        let cds = std::fs::metadata(dir.join("envoy-config/cds.json"))
            .map(|m| m.len())
            .unwrap_or(0);
        let (agent_pid, envoy_pid) = (proxy.agent_pid(), proxy.envoy_pid());
        println!(
            "SCALE processes={n}: agent start -> synced {:.0} ms, -> all clusters active in Envoy {:.0} ms; \
             CDS {:.1} MB; RSS agent {} MB, Envoy {} MB; CPU agent {:.2} s",
            agent_synced.as_secs_f64() * 1e3,
            envoy_applied.as_secs_f64() * 1e3,
            cds as f64 / 1e6,
            rss_kib(agent_pid) / 1024,
            rss_kib(envoy_pid) / 1024,
            cpu_time(agent_pid).as_secs_f64(),
        );

        // Single updates on top of N: each waits until Envoy has the new cluster.
        let updates = 20;
        let (cpu_a, cpu_e) = (cpu_time(agent_pid), cpu_time(envoy_pid));
        let mut samples = Vec::new();
        for k in 0..updates {
            let m = member(n + k);
            let t = Instant::now();
            register(&mut conn, &m);
            wait_for(
                "Envoy has the new cluster",
                Duration::from_secs(120),
                || {
                    (proxy.envoy_stat("cluster_manager.active_clusters")
                        >= base_clusters + (n + k + 1) as u64)
                        .then_some(())
                },
            );
            samples.push(t.elapsed());
        }
        let (cpu_a, cpu_e) = (cpu_time(agent_pid) - cpu_a, cpu_time(envoy_pid) - cpu_e);
        let (median, max) = median_max(&mut samples);
        println!(
            "SCALE processes={n}: one more registration -> active in Envoy median {median:.0} ms, max {max:.0} ms; \
             CPU per update: agent {:.1} ms, Envoy {:.1} ms ({updates} updates)",
            cpu_a.as_secs_f64() * 1e3 / updates as f64,
            cpu_e.as_secs_f64() * 1e3 / updates as f64,
        );
    }
}

#[test]
#[ignore = "benchmark: prints numbers, asserts nothing about time"]
fn agent_scale_rooms() {
    for r in sizes("SCALE_ROOMS", "100000,1000000") {
        let dir = scratch(&format!("scale-r{r}"));
        let redis = Redis::start(&dir);
        let mut conn = redis.conn();
        let processes = 100;
        add_members(&mut conn, 0..processes);
        for chunk in (0..r).collect::<Vec<_>>().chunks(10_000) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                let json = format!(
                    r#"{{"clients":3,"locked":false,"private":false,"maxClients":8,"unlisted":false,"name":"battle","publicAddress":null,"processId":"scale{}","roomId":"room{i}","createdAt":"2026-11-28T00:00:00.000Z","metadata":{{}}}}"#,
                    i % processes
                );
                pipe.cmd("HSET")
                    .arg("roomcaches")
                    .arg(format!("room{i}"))
                    .arg(json)
                    .ignore();
            }
            let _: () = pipe.query(&mut conn).unwrap();
        }
        // Apart: the timing starts at a fresh agent process (run would add its restart
        // backoff), and the agent restarts with other flags.
        let mut proxy = Proxy::start_apart(&dir, &redis.url(), &QUIET, &[]);
        let mut args = QUIET.to_vec();
        args.extend(["--redis-rooms", "--redis-rooms-interval", "1h"]);
        let start = Instant::now();
        proxy.restart_agent(&args);
        wait_for("agent indexes every room", Duration::from_secs(300), || {
            (metric(&proxy, "colyseus_envoy_rooms") == r as u64).then_some(())
        });
        let indexed = start.elapsed();
        let agent_pid = proxy.agent_pid();
        let cpu = cpu_time(agent_pid);
        let (status, _, _) = http_get(&proxy.api(), &format!("/rooms/room{}", r - 1)).unwrap();
        assert_eq!(status, 200);
        println!(
            "SCALE rooms={r} (RedisDriver): agent start -> all indexed {:.2} s; agent RSS {} MB; agent CPU {:.2} s \
             (start + one full read)",
            indexed.as_secs_f64(),
            rss_kib(agent_pid) / 1024,
            cpu.as_secs_f64(),
        );
    }
}
