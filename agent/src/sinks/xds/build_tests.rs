use super::*;
use crate::sinks::envoy_files::{render_clusters, HealthCheck};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use routing::ClusterNames;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(crate) fn options() -> ClusterOptions {
    ClusterOptions {
        names: ClusterNames::default(),
        connect_timeout: Duration::from_millis(250),
        max_connections: 100_000,
        health_check: HealthCheck::Http {
            path: "/health".into(),
            interval: Duration::from_secs(2),
        },
    }
}

pub(crate) fn registry(members: &[&str]) -> Registry {
    Registry::default()
        .from_members(members.iter().copied(), 2567, Instant::now())
        .0
}

/// A fresh EDS build of `members`, the first of them weighted 3.
pub(crate) fn snapshot(members: &[&str]) -> Snapshot {
    let reg = registry(members);
    let weights: Weights = reg
        .iter()
        .map(|(pid, _)| (pid.clone(), 3))
        .take(1)
        .collect();
    let (snap, errors) = Builder::new(options(), AllEndpoints::Eds).build(&reg, &weights);
    assert_eq!(errors, Vec::<String>::new());
    snap
}

fn decode_cluster(r: &Resource) -> Cluster {
    Cluster::decode(r.any.value.as_slice()).unwrap()
}

/// Same resources, same versions.
fn assert_same(a: &Snapshot, b: &Snapshot) {
    assert_eq!(a.clusters, b.clusters);
    assert_eq!(a.endpoints, b.endpoints);
    assert_eq!(
        (&a.version, &a.clusters_version, &a.endpoints_version),
        (&b.version, &b.clusters_version, &b.endpoints_version)
    );
}

#[test]
fn every_rendered_cluster_converts_with_every_option() {
    // IP and DNS endpoints, weights, HTTP checks: nothing left out.
    let snap = snapshot(&["a/127.0.0.1:1", "b/game-2:2", "c/[::1]:3"]);
    let names: Vec<&str> = snap.clusters.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "colyseus-all",
            "colyseus-process-a",
            "colyseus-process-b",
            "colyseus-process-c"
        ]
    );
    for hc in [
        HealthCheck::Off,
        HealthCheck::Tcp {
            interval: Duration::from_secs(1),
        },
    ] {
        let mut o = options();
        o.health_check = hc;
        let (_, errors) = Builder::new(o, AllEndpoints::Eds)
            .build(&registry(&["a/127.0.0.1:1"]), &Weights::new());
        assert!(errors.is_empty(), "{errors:?}");
    }
}

#[test]
fn versions_come_from_content() {
    let a = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
    let b = snapshot(&["b/127.0.0.1:2", "a/127.0.0.1:1"]);
    assert_same(&a, &b);
    let c = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:3"]);
    assert_eq!(
        a.clusters["colyseus-process-a"].version,
        c.clusters["colyseus-process-a"].version
    );
    assert_ne!(
        a.clusters["colyseus-process-b"].version,
        c.clusters["colyseus-process-b"].version
    );
    // The EDS cluster itself does not change with its hosts.
    assert_eq!(a.clusters["colyseus-all"], c.clusters["colyseus-all"]);
    assert_ne!(a.endpoints["colyseus-all"], c.endpoints["colyseus-all"]);
    assert_ne!(a.version, c.version);
    assert_eq!(a.clusters_version, b.clusters_version);
    assert_ne!(a.endpoints_version, c.endpoints_version);
}

#[test]
fn an_incremental_build_is_a_full_build_and_renders_only_what_changed() {
    let now = Instant::now();
    let w = |pairs: &[(&str, u32)]| -> Weights {
        pairs
            .iter()
            .map(|(p, n)| (ProcessId::parse(p).unwrap(), *n))
            .collect()
    };
    // Adds, a move, removals (drains), a death, weights, a DNS name and back.
    let steps: Vec<(Vec<&str>, Weights, Option<&str>)> = vec![
        (vec!["a/127.0.0.1:1", "b/127.0.0.1:2"], w(&[]), None),
        (
            vec!["a/127.0.0.1:1", "b/127.0.0.1:2", "c/127.0.0.1:3"],
            w(&[]),
            None,
        ),
        (
            vec!["a/127.0.0.1:1", "b/127.0.0.1:9", "c/127.0.0.1:3"],
            w(&[]),
            None,
        ),
        (
            vec!["a/127.0.0.1:1", "c/127.0.0.1:3"],
            w(&[("a", 10), ("c", 1)]),
            None,
        ),
        (
            vec!["a/127.0.0.1:1", "c/127.0.0.1:3"],
            w(&[("a", 10), ("c", 1)]),
            Some("c"),
        ),
        (
            vec!["a/127.0.0.1:1", "c/127.0.0.1:3", "d/game-4:4"],
            w(&[]),
            None,
        ),
        (vec!["a/127.0.0.1:1"], w(&[]), None),
        (vec![], w(&[]), None),
        (vec!["e/[::1]:5"], w(&[("e", 2)]), None),
    ];
    for mode in [AllEndpoints::Eds, AllEndpoints::Inline] {
        let mut incremental = Builder::new(options(), mode);
        let mut reg = Registry::default();
        let mut previous: Option<Snapshot> = None;
        for (members, weights, dead) in &steps {
            reg = reg.from_members(members.iter().copied(), 2567, now).0;
            if let Some(d) = dead {
                assert!(reg.mark_dead(&ProcessId::parse(d).unwrap(), now));
            }
            let (inc, e1) = incremental.build(&reg, weights);
            let (full, e2) = Builder::new(options(), mode).build(&reg, weights);
            assert!(e1.is_empty() && e2.is_empty(), "{e1:?} {e2:?}");
            assert_same(&inc, &full);
            // What did not change is the very same allocation: not re-rendered.
            if let Some(prev) = &previous {
                for (name, r) in &inc.clusters {
                    if let Some(old) = prev.clusters.get(name) {
                        assert_eq!(Arc::ptr_eq(r, old), r == old, "{name} in {members:?}");
                    }
                }
            }
            previous = Some(inc);
        }
    }
}

#[test]
fn the_eds_cluster_is_the_file_sinks_cluster_with_its_hosts_apart() {
    let reg = registry(&["a/127.0.0.1:1", "b/127.0.0.2:2"]);
    let weights: Weights = [(ProcessId::parse("a").unwrap(), 4)].into_iter().collect();
    let (snap, _) = Builder::new(options(), AllEndpoints::Eds).build(&reg, &weights);
    let mut eds = decode_cluster(&snap.clusters["colyseus-all"]);
    let config = eds.eds_cluster_config.take().unwrap().eds_config.unwrap();
    assert!(matches!(
        config.config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(
        eds.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    assert_eq!(eds.load_assignment, None);
    let hosts = &snap.endpoints["colyseus-all"];
    assert_eq!(hosts.any.type_url, ENDPOINT_TYPE);
    let hosts = ClusterLoadAssignment::decode(hosts.any.value.as_slice()).unwrap();
    assert_eq!(hosts.endpoints[0].lb_endpoints.len(), 2);
    // Put back together, it is the file sink's cluster exactly.
    eds.load_assignment = Some(hosts);
    eds.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
    let file = render_clusters(&reg, &weights, &options());
    let file_all = file.iter().find(|c| c["name"] == "colyseus-all").unwrap();
    assert_eq!(eds, convert::cluster(file_all).unwrap());
    // Inline mode serves exactly the file's cluster and no hosts apart.
    let (inline, _) = Builder::new(options(), AllEndpoints::Inline).build(&reg, &weights);
    assert_eq!(
        decode_cluster(&inline.clusters["colyseus-all"]),
        convert::cluster(file_all).unwrap()
    );
    assert!(inline.endpoints.is_empty());
    assert_eq!(inline.version, inline.clusters_version);
}

#[test]
fn a_dns_name_among_the_active_keeps_the_all_cluster_inline() {
    let snap = snapshot(&["a/127.0.0.1:1", "b/game-2:2"]);
    assert!(snap.endpoints.is_empty());
    let all = decode_cluster(&snap.clusters["colyseus-all"]);
    assert_eq!(
        all.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
    );
    assert_eq!(
        all.load_assignment.unwrap().endpoints[0].lb_endpoints.len(),
        2
    );
}

fn sharded(shards: u32) -> ClusterOptions {
    let mut o = options();
    o.names = ClusterNames::default().with_all_shards(shards).unwrap();
    o
}

/// Ports of each shard's EDS hosts.
fn shard_hosts(snap: &Snapshot) -> BTreeMap<String, Vec<u32>> {
    snap.endpoints
        .iter()
        .map(|(name, r)| {
            let a = ClusterLoadAssignment::decode(r.any.value.as_slice()).unwrap();
            let ports = a
                .endpoints
                .iter()
                .flat_map(|l| &l.lb_endpoints)
                .map(|e| {
                    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
                    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint;
                    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                        panic!("no endpoint")
                    };
                    let Some(address::Address::SocketAddress(sa)) =
                        ep.address.as_ref().unwrap().address.as_ref()
                    else {
                        panic!("no socket address")
                    };
                    let Some(socket_address::PortSpecifier::PortValue(p)) = sa.port_specifier
                    else {
                        panic!("no port")
                    };
                    p
                })
                .collect();
            (name.clone(), ports)
        })
        .collect()
}

#[test]
fn shards_are_eds_clusters_holding_exactly_their_processes() {
    let members: Vec<String> = (1..=20).map(|i| format!("p{i}/127.0.0.1:{i}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let o = sharded(3);
    let reg = registry(&refs);
    let (snap, errors) = Builder::new(o.clone(), AllEndpoints::Eds).build(&reg, &Weights::new());
    assert!(errors.is_empty(), "{errors:?}");
    let hosts = shard_hosts(&snap);
    assert_eq!(
        hosts.keys().collect::<Vec<_>>(),
        ["colyseus-all", "colyseus-all-1", "colyseus-all-2"]
    );
    for name in hosts.keys() {
        let c = decode_cluster(&snap.clusters[name]);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
    }
    for (pid, e) in reg.iter() {
        let shard = o.names.all_shard(o.names.shard_of(pid));
        assert!(hosts[&shard].contains(&u32::from(e.endpoint.port)), "{pid}");
    }
    assert_eq!(hosts.values().map(Vec::len).sum::<usize>(), 20);
    // Each shard is the file sink's shard cluster with its hosts apart.
    let file = render_clusters(&reg, &Weights::new(), &o);
    for name in hosts.keys() {
        let mut eds = decode_cluster(&snap.clusters[name]);
        eds.eds_cluster_config = None;
        let a = ClusterLoadAssignment::decode(snap.endpoints[name].any.value.as_slice()).unwrap();
        eds.load_assignment = Some(a);
        eds.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
        let f = file.iter().find(|c| c["name"] == name.as_str()).unwrap();
        assert_eq!(eds, convert::cluster(f).unwrap(), "{name}");
    }
    // No process: every shard still exists, with no hosts.
    let (empty, _) =
        Builder::new(o, AllEndpoints::Eds).build(&Registry::default(), &Weights::new());
    assert_eq!(empty.clusters.len(), 3);
    assert!(shard_hosts(&empty).values().all(Vec::is_empty));
}

#[test]
fn a_change_re_renders_only_its_shard() {
    let o = sharded(3);
    let now = Instant::now();
    let base: Vec<String> = (1..=12).map(|i| format!("p{i}/127.0.0.1:{i}")).collect();
    let with_new: Vec<String> = base
        .iter()
        .cloned()
        .chain(["new/127.0.0.1:99".to_owned()])
        .collect();
    let new_shard = o
        .names
        .all_shard(o.names.shard_of(&ProcessId::parse("new").unwrap()));
    let mut builder = Builder::new(o.clone(), AllEndpoints::Eds);
    let mut reg = Registry::default()
        .from_members(base.iter().map(String::as_str), 2567, now)
        .0;
    let (before, _) = builder.build(&reg, &Weights::new());
    // A registration, then its drain: each time only its shard is new.
    for step in [&with_new, &base] {
        reg = reg
            .from_members(step.iter().map(String::as_str), 2567, now)
            .0;
        let (after, _) = builder.build(&reg, &Weights::new());
        let (full, _) = Builder::new(o.clone(), AllEndpoints::Eds).build(&reg, &Weights::new());
        assert_same(&after, &full);
        for k in 0..3 {
            let name = o.names.all_shard(k);
            let same = Arc::ptr_eq(&after.endpoints[&name], &before.endpoints[&name]);
            assert_eq!(same, name != new_shard, "{name}");
            assert!(Arc::ptr_eq(&after.clusters[&name], &before.clusters[&name]));
        }
    }
}

#[test]
fn one_shard_builds_what_it_built_before() {
    let reg = registry(&["a/127.0.0.1:1", "b/127.0.0.2:2"]);
    let (one, _) = Builder::new(sharded(1), AllEndpoints::Eds).build(&reg, &Weights::new());
    let (plain, _) = Builder::new(options(), AllEndpoints::Eds).build(&reg, &Weights::new());
    assert_same(&one, &plain);
    assert_eq!(one.endpoints.keys().collect::<Vec<_>>(), ["colyseus-all"]);
}
