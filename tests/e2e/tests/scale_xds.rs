//! xDS sink at scale beside the CDS file sink, a benchmark (issue 15), not a test: prints
//! numbers, asserts only that everything arrived. Run with `scripts/bench-xds.sh`, or
//! `cargo test -p e2e --features e2e --release --test scale_xds -- --ignored --nocapture`.
//! `SCALE_PROCESSES` (default `1000,10000`).
//!
//! For each N, in one run, file sink then xDS sink, each on its own Redis holding N
//! registrations (liveness and Envoy health checks off, so only the config path is
//! measured, as in `scale.rs`). File: agent start to all N clusters active in a running
//! Envoy (as `scale.rs`). xDS: Envoy start (agent synced) to all N active, and an agent
//! restart to the Envoy being current again. Both: RSS, then 20 single registrations one
//! after another: time for each to be active in Envoy (its cluster listed by `/clusters`),
//! agent and Envoy CPU per update; then 20 unregistrations (a drain: the process keeps its
//! cluster and leaves the all-processes cluster, an EDS update alone on xDS); Envoy's CPU
//! per admin query the waits make; Envoy's own `update_duration` histograms.
//!
//! Experiments: `SCALE_SINKS=xds` skips the file sink; `SCALE_XDS_BOOTSTRAP='{"cluster_manager":
//! {...}}'` sets top-level fields of the xDS Envoy's bootstrap; `SCALE_XDS_CDS_FILE=on` has
//! the xDS agent write the CDS file too (by default it runs `--no-cds-file`);
//! `SCALE_ALL_SHARDS=10` gives every agent `--all-shards 10`.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::xds::{envoy_stat, XdsAgent, XdsEnvoy};
use e2e::*;

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
const UPDATES: usize = 20;

fn sizes() -> Vec<usize> {
    std::env::var("SCALE_PROCESSES")
        .unwrap_or_else(|_| "1000,10000".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn member(i: usize) -> String {
    format!(
        "scale{i}/127.0.{}.{}:{}",
        (i / 250) % 250 + 1,
        i % 250 + 1,
        20000 + i % 40000
    )
}

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

/// Waits for Envoy's count of active clusters. Polled every 20 ms: at 10,000 clusters a
/// stats query scans every cluster's stats on Envoy's main thread, which also applies xDS.
fn wait_active(admin: &str, at_least: u64) {
    let start = Instant::now();
    while envoy_stat(admin, "cluster_manager.active_clusters") < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "Envoy has every cluster"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether Envoy has `cluster` active: `/clusters` filtered to its name (a scan of the
/// cluster names only, not of every stat), non-empty once the cluster left warming.
fn has_cluster(admin: &str, cluster: &str) -> bool {
    let path = format!("/clusters?filter=%5E{cluster}%24");
    http_get(admin, &path).is_ok_and(|(status, _, body)| status == 200 && !body.trim().is_empty())
}

/// Hosts Envoy has in the all-processes cluster (its `membership_total` gauge), summed
/// over its shards.
fn all_hosts(admin: &str) -> u64 {
    let path = "/stats?filter=%5Ecluster%5C.colyseus-all(-%5B0-9%5D%2B)%3F%5C.membership_total%24";
    let Ok((_, _, body)) = http_get(admin, path) else {
        return 0;
    };
    body.lines()
        .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
        .sum()
}

/// `SCALE_ALL_SHARDS`: `--all-shards` of every agent here (default 1).
fn all_shards() -> usize {
    std::env::var("SCALE_ALL_SHARDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
}

/// The agents' flags: [`QUIET`] and `--all-shards`.
fn agent_flags() -> Vec<String> {
    let mut flags: Vec<String> = QUIET.iter().map(|s| (*s).to_owned()).collect();
    flags.extend(["--all-shards".to_owned(), all_shards().to_string()]);
    flags
}

/// 20 single registrations on top of `n`; prints median/max and CPU per update.
fn updates(
    label: &str,
    n: usize,
    next: &mut usize,
    conn: &mut redis::Connection,
    admin: &str,
    pids: (u32, u32),
) {
    let (cpu_a, cpu_e) = (cpu_time(pids.0), cpu_time(pids.1));
    let mut samples = Vec::new();
    for _ in 0..UPDATES {
        let cluster = format!("colyseus-process-scale{next}");
        let t = Instant::now();
        register(conn, &member(*next));
        *next += 1;
        wait_for("the new cluster active", Duration::from_secs(300), || {
            has_cluster(admin, &cluster).then_some(())
        });
        samples.push(t.elapsed());
    }
    let (cpu_a, cpu_e) = (cpu_time(pids.0) - cpu_a, cpu_time(pids.1) - cpu_e);
    let (median, max) = median_max(&mut samples);
    println!(
        "SCALE-XDS {label} processes={n}: one more registration -> active in Envoy median {median:.1} ms, \
         max {max:.1} ms; CPU per update: agent {:.2} ms, Envoy {:.2} ms ({UPDATES} updates)",
        cpu_a.as_secs_f64() * 1e3 / UPDATES as f64,
        cpu_e.as_secs_f64() * 1e3 / UPDATES as f64,
    );
}

/// 20 unregistrations: each drains a process, which keeps its cluster (until the idle
/// drain removes it) and leaves the all-processes cluster (for xDS, an EDS update alone).
/// `active`: processes registered, all active; the all cluster has them all first.
fn drains(
    label: &str,
    n: usize,
    active: usize,
    conn: &mut redis::Connection,
    admin: &str,
    pids: (u32, u32),
) {
    let hosts = active as u64;
    wait_for(
        "every host in the all cluster",
        Duration::from_secs(300),
        || (all_hosts(admin) == hosts).then_some(()),
    );
    let (cpu_a, cpu_e) = (cpu_time(pids.0), cpu_time(pids.1));
    let mut samples = Vec::new();
    for k in 0..UPDATES {
        let t = Instant::now();
        unregister(conn, &member(k));
        wait_for(
            "a host out of the all cluster",
            Duration::from_secs(300),
            || (all_hosts(admin) < hosts - k as u64).then_some(()),
        );
        samples.push(t.elapsed());
    }
    let (cpu_a, cpu_e) = (cpu_time(pids.0) - cpu_a, cpu_time(pids.1) - cpu_e);
    let (median, max) = median_max(&mut samples);
    println!(
        "SCALE-XDS {label} processes={n}: one unregistration (drain: out of the all cluster only) -> applied median {median:.1} ms, \
         max {max:.1} ms; CPU per update: agent {:.2} ms, Envoy {:.2} ms ({UPDATES} updates)",
        cpu_a.as_secs_f64() * 1e3 / UPDATES as f64,
        cpu_e.as_secs_f64() * 1e3 / UPDATES as f64,
    );
}

/// 20 single registrations timed by the agent: until the Envoy's ACK of the new cluster
/// (the agent's `/xds/clients`), which costs Envoy nothing, where a `/clusters` poll at
/// 10,000 clusters costs it tens of ms each. Envoy ACKs a delta CDS response once applied
/// (a `STATIC` cluster without health checks is active then). Envoy's CPU per update here
/// is its own work, with no admin query in it.
fn acked_updates(
    n: usize,
    next: &mut usize,
    conn: &mut redis::Connection,
    agent: &XdsAgent,
    pids: (u32, u32),
) {
    let acked = || {
        agent.xds_status().map_or(0, |s| {
            s["clients"][0]["acked_clusters"].as_u64().unwrap_or(0)
        })
    };
    let base = acked();
    let threads = thread_cpu_times(pids.1);
    let (cpu_a, cpu_e) = (cpu_time(pids.0), cpu_time(pids.1));
    let mut samples = Vec::new();
    for k in 0..UPDATES {
        let t = Instant::now();
        register(conn, &member(*next));
        *next += 1;
        wait_for("the Envoy's ACK", Duration::from_secs(300), || {
            (acked() > base + k as u64).then_some(())
        });
        samples.push(t.elapsed());
    }
    let (cpu_a, cpu_e) = (cpu_time(pids.0) - cpu_a, cpu_time(pids.1) - cpu_e);
    let (median, max) = median_max(&mut samples);
    println!(
        "SCALE-XDS xds processes={n}: one more registration -> ACKed by Envoy (no admin polling) median {median:.1} ms, \
         max {max:.1} ms; CPU per update: agent {:.2} ms, Envoy {:.2} ms ({UPDATES} updates)",
        cpu_a.as_secs_f64() * 1e3 / UPDATES as f64,
        cpu_e.as_secs_f64() * 1e3 / UPDATES as f64,
    );
    // The main thread applies xDS; the workers run the filter (its process-list refresh).
    let per_thread: Vec<String> = thread_cpu_times(pids.1)
        .into_iter()
        .map(|(name, t)| {
            let spent = t.saturating_sub(threads.get(&name).copied().unwrap_or_default());
            format!(
                "{name} {:.2} ms",
                spent.as_secs_f64() * 1e3 / UPDATES as f64
            )
        })
        .collect();
    println!(
        "SCALE-XDS xds processes={n}: Envoy CPU per update by thread: {}",
        per_thread.join(", ")
    );
}

/// Envoy's CPU for one admin query, over 20: what the waits above add to "Envoy CPU".
fn admin_cost(label: &str, n: usize, admin: &str, envoy: u32) {
    let cost = |f: &dyn Fn()| {
        let before = cpu_time(envoy);
        for _ in 0..UPDATES {
            f();
        }
        (cpu_time(envoy) - before).as_secs_f64() * 1e3 / UPDATES as f64
    };
    let stat = cost(&|| {
        envoy_stat(admin, "cluster_manager.active_clusters");
    });
    let clusters = cost(&|| {
        has_cluster(admin, "colyseus-all");
    });
    println!(
        "SCALE-XDS {label} processes={n}: Envoy CPU per admin query: one stat {stat:.2} ms, /clusters of one cluster {clusters:.2} ms"
    );
}

/// Prints Envoy's own update-duration histograms (ms): CDS, and the all cluster's EDS.
fn update_durations(label: &str, n: usize, admin: &str) {
    let Ok((_, _, body)) = http_get(
        admin,
        "/stats?filter=update_duration&histogram_buckets=none",
    ) else {
        return;
    };
    for line in body.lines().filter(|l| {
        l.contains("cds.update_duration")
            || (l.contains("cluster.colyseus-all") && l.contains(".update_duration"))
    }) {
        println!("SCALE-XDS {label} processes={n}: Envoy {line}");
    }
}

fn sinks() -> Vec<String> {
    std::env::var("SCALE_SINKS")
        .unwrap_or_else(|_| "file,xds".to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}

#[test]
#[ignore = "benchmark: prints numbers, asserts nothing about time"]
fn xds_and_file_sinks_at_scale() {
    let sinks = sinks();
    // Top-level bootstrap fields set in the xDS Envoy's bootstrap, to try Envoy settings.
    let patch: serde_json::Value = std::env::var("SCALE_XDS_BOOTSTRAP")
        .map_or(serde_json::json!({}), |s| serde_json::from_str(&s).unwrap());
    if patch != serde_json::json!({}) {
        println!("SCALE-XDS xDS Envoy bootstrap patched with {patch}");
    }
    for n in sizes() {
        let dir = scratch(&format!("scale-xds-{n}"));
        if sinks.iter().any(|s| s == "file") {
            file_sink(&dir, n);
        }
        if sinks.iter().any(|s| s == "xds") {
            xds_sink(&dir, n, &patch);
        }
    }
}

/// The CDS file sink, as scale.rs measures it.
fn file_sink(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir.join("file")).unwrap();
    let redis = Redis::start(&dir.join("file"));
    let mut conn = redis.conn();
    // Apart, as in scale.rs: the agent restart below is timed, and run would add its backoff.
    let flags = agent_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut proxy = Proxy::start_apart(&dir.join("file"), &redis.url(), &flags, &[]);
    let base = proxy.envoy_stat("cluster_manager.active_clusters");
    add_members(&mut conn, 0..n);
    let started = Instant::now();
    proxy.restart_agent(&flags);
    wait_active(&proxy.admin(), base + n as u64);
    println!(
        "SCALE-XDS file processes={n}: agent start -> all clusters active {:.0} ms; RSS agent {} MB, Envoy {} MB",
        started.elapsed().as_secs_f64() * 1e3,
        rss_kib(proxy.agent_pid()) / 1024,
        rss_kib(proxy.envoy_pid()) / 1024,
    );
    let mut next = n;
    let pids = (proxy.agent_pid(), proxy.envoy_pid());
    updates("file", n, &mut next, &mut conn, &proxy.admin(), pids);
    drains("file", n, next, &mut conn, &proxy.admin(), pids);
    admin_cost("file", n, &proxy.admin(), proxy.envoy_pid());
}

/// Waits until edge-1 has ACKed more than the `n` process clusters on `agent` (read on the
/// agent: costs Envoy nothing).
fn wait_acked(agent: &XdsAgent, n: usize, what: &str, timeout: Duration) {
    wait_for(what, timeout, || {
        (agent.metric("colyseus_envoy_xds_client_acked_clusters{node=\"edge-1\"}") > n as u64)
            .then_some(())
    });
}

/// The xDS sink: Envoy start, agent restart, updates.
fn xds_sink(dir: &std::path::Path, n: usize, patch: &serde_json::Value) {
    let redis = Redis::start(dir);
    let mut conn = redis.conn();
    add_members(&mut conn, 0..n);
    let mut next = n;
    // An xDS-only agent, as on a fleet's control-plane host (`SCALE_XDS_CDS_FILE=on`: it
    // also writes the CDS file, as an agent beside a file-fed Envoy does).
    let mut args = agent_flags();
    if std::env::var("SCALE_XDS_CDS_FILE").as_deref() != Ok("on") {
        args.push("--no-cds-file".to_owned());
    }
    println!(
        "SCALE-XDS xds processes={n}: agent flags {}",
        args[QUIET.len()..].join(" ")
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = XdsAgent::start(dir, "agent", "127.0.0.1", &redis.url(), &args);
    let started = Instant::now();
    let envoy = XdsEnvoy::start_patched(dir, "edge-1", "127.0.0.1", &[&agent], patch);
    // First by the agent's count of the Envoy's ACKed clusters (costs Envoy nothing: a
    // stats query at 10,000 clusters blocks its main thread for 0.3 s), then by Envoy.
    wait_acked(
        &agent,
        n,
        "Envoy's ACK of every cluster",
        Duration::from_secs(300),
    );
    let envoy_acked = started.elapsed();
    // Static: the agent API and xDS clusters; dynamic: n processes and the all cluster's
    // shards.
    wait_active(&envoy.admin, (n + 2 + all_shards()) as u64);
    let envoy_start = started.elapsed();
    let started = Instant::now();
    agent.restart();
    agent.wait_ready();
    // The restarted agent serves the same versions: the Envoy is sent nothing new, so
    // it is current once it streams from the agent again with every cluster known.
    wait_acked(
        &agent,
        n,
        "Envoy current on the restarted agent",
        Duration::from_secs(120),
    );
    let agent_restart = started.elapsed();
    println!(
        "SCALE-XDS xds processes={n}: Envoy start -> all clusters ACKed {:.0} ms, active {:.0} ms; agent restart -> Envoy current {:.0} ms; \
         RSS agent {} MB, Envoy {} MB",
        envoy_acked.as_secs_f64() * 1e3,
        envoy_start.as_secs_f64() * 1e3,
        agent_restart.as_secs_f64() * 1e3,
        rss_kib(agent.proc.pid()) / 1024,
        rss_kib(envoy.proc.pid()) / 1024,
    );
    let pids = (agent.proc.pid(), envoy.proc.pid());
    updates("xds", n, &mut next, &mut conn, &envoy.admin, pids);
    acked_updates(n, &mut next, &mut conn, &agent, pids);
    drains("xds", n, next, &mut conn, &envoy.admin, pids);
    admin_cost("xds", n, &envoy.admin, envoy.proc.pid());
    update_durations("xds", n, &envoy.admin);
}
