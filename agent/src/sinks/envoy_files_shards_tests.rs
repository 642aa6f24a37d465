//! The CDS file with the all-processes cluster in shards.

use super::*;
use std::time::{Duration, Instant};

fn options(shards: u32) -> ClusterOptions {
    ClusterOptions {
        names: ClusterNames::default().with_all_shards(shards).unwrap(),
        connect_timeout: Duration::from_millis(2500),
        max_connections: 100_000,
        health_check: HealthCheck::Tcp {
            interval: Duration::from_secs(2),
        },
    }
}

fn registry(members: &[String]) -> Registry {
    Registry::default()
        .from_members(members.iter().map(String::as_str), 2567, Instant::now())
        .0
}

fn members(n: u16) -> Vec<String> {
    (1..=n).map(|i| format!("p{i}/127.0.0.1:{i}")).collect()
}

/// Shard name -> the ports of its hosts, from a rendered file.
fn hosts(bytes: &[u8]) -> BTreeMap<String, Vec<u64>> {
    let doc: Value = serde_json::from_slice(bytes).unwrap();
    doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["name"].as_str().unwrap().starts_with("colyseus-process-"))
        .map(|c| {
            let ports = c["load_assignment"]["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|l| l["lb_endpoints"].as_array().unwrap().clone())
                .map(|e| {
                    e["endpoint"]["address"]["socket_address"]["port_value"]
                        .as_u64()
                        .unwrap()
                })
                .collect();
            (c["name"].as_str().unwrap().to_owned(), ports)
        })
        .collect()
}

use std::collections::BTreeMap;

#[test]
fn every_active_process_is_in_exactly_its_shard() {
    let o = options(3);
    let reg = registry(&members(30));
    let by_shard = hosts(&render_cds(&reg, &Weights::new(), &o).unwrap());
    assert_eq!(
        by_shard.keys().collect::<Vec<_>>(),
        ["colyseus-all", "colyseus-all-1", "colyseus-all-2"]
    );
    let mut seen = Vec::new();
    for (pid, entry) in reg.iter() {
        let shard = o.names.all_shard(o.names.shard_of(pid));
        assert!(
            by_shard[&shard].contains(&u64::from(entry.endpoint.port)),
            "{pid}"
        );
        seen.push(entry.endpoint.port);
    }
    let total: usize = by_shard.values().map(Vec::len).sum();
    assert_eq!(total, 30);
    assert!(by_shard.values().all(|h| !h.is_empty()), "{by_shard:?}");
    // Same settings as the unsharded cluster on every shard.
    let doc: Value =
        serde_json::from_slice(&render_cds(&reg, &Weights::new(), &o).unwrap()).unwrap();
    for c in doc["resources"].as_array().unwrap() {
        if o.names.is_all_shard(c["name"].as_str().unwrap()) {
            assert_eq!(c["outlier_detection"]["consecutive_gateway_failure"], 2);
            assert_eq!(
                c["circuit_breakers"]["thresholds"][0]["max_connections"],
                ALL_CLUSTER_LIMIT
            );
        }
    }
}

#[test]
fn a_drain_leaves_its_shard_and_empty_shards_stay() {
    let o = options(3);
    let all = members(2);
    let now = Instant::now();
    let reg = registry(&all);
    // p2 unregisters: it drains, keeps its cluster, leaves its shard.
    let (drained, _) = reg.from_members([all[0].as_str()], 2567, now);
    let bytes = render_cds(&drained, &Weights::new(), &o).unwrap();
    let by_shard = hosts(&bytes);
    assert_eq!(by_shard.len(), 3, "every shard exists, even empty");
    assert_eq!(by_shard.values().map(Vec::len).sum::<usize>(), 1);
    let p1 = o
        .names
        .all_shard(o.names.shard_of(&ProcessId::parse("p1").unwrap()));
    assert_eq!(by_shard[&p1], [1]);
    assert!(String::from_utf8(bytes)
        .unwrap()
        .contains("colyseus-process-p2"));
    // No process at all: three empty shards.
    let empty = hosts(&render_cds(&Registry::default(), &Weights::new(), &o).unwrap());
    assert_eq!(empty.len(), 3);
    assert!(empty.values().all(Vec::is_empty));
}

#[test]
fn weights_follow_their_process_into_its_shard() {
    let o = options(3);
    let reg = registry(&members(6));
    let weights: Weights = reg.iter().map(|(pid, _)| (pid.clone(), 7)).collect();
    let doc: Value = serde_json::from_slice(&render_cds(&reg, &weights, &o).unwrap()).unwrap();
    let mut weighted = 0;
    for c in doc["resources"].as_array().unwrap() {
        if o.names.is_all_shard(c["name"].as_str().unwrap()) {
            for l in c["load_assignment"]["endpoints"].as_array().unwrap() {
                for e in l["lb_endpoints"].as_array().unwrap() {
                    assert_eq!(e["load_balancing_weight"], 7);
                    weighted += 1;
                }
            }
        }
    }
    assert_eq!(weighted, 6);
}

/// One shard is the unsharded file, byte for byte: upgrading an agent rewrites nothing.
#[test]
fn one_shard_is_the_unsharded_file() {
    let reg = registry(&members(3));
    let one = render_cds(&reg, &Weights::new(), &options(1)).unwrap();
    let default = render_cds(&reg, &Weights::new(), &super::tests_options()).unwrap();
    assert_eq!(one, default);
    let doc: Value = serde_json::from_slice(&one).unwrap();
    // Pinned: a change to the one-shard file would make every upgraded agent rewrite it.
    assert_eq!(doc["version_info"], PINNED_ONE_SHARD_VERSION);
    assert_eq!(hosts(&one).keys().collect::<Vec<_>>(), ["colyseus-all"]);
}

const PINNED_ONE_SHARD_VERSION: &str = "a1bea9b98bb72dc6";
