//! A Redis Cluster of three masters.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::{free_port, wait_for, Redis};

/// A Redis Cluster of three masters (no replicas).
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start(dir: &Path) -> RedisCluster {
        let mut nodes = Vec::new();
        for i in 0..3 {
            let port = free_port();
            // The bus port is given: port + 10000 may be taken or out of range.
            let bus = free_port().to_string();
            let conf = dir.join(format!("cluster-nodes-{i}.conf"));
            nodes.push(data_node(
                dir,
                &format!("redis-cluster-{i}"),
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                    "--cluster-node-timeout",
                    "2000",
                ],
            ));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .arg("--cluster-yes")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        wait_for(
            "cluster_state:ok on every node",
            Duration::from_secs(30),
            || {
                cluster
                    .nodes
                    .iter()
                    .all(|n| {
                        query::<String>(n.port, redis::cmd("CLUSTER").arg("INFO"))
                            .is_some_and(|i| i.contains("cluster_state:ok"))
                    })
                    .then_some(())
            },
        );
        cluster
    }

    /// `--redis-cluster` / `REDIS_CLUSTER_NODES`.
    pub fn list(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node holding `key`'s slot.
    pub fn node_of(&self, key: &str) -> &Redis {
        let slot: u16 = query(
            self.nodes[0].port,
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
        )
        .unwrap();
        // CLUSTER SLOTS: [[first, last, [ip, port, id, ...], replicas...], ...]
        let slots: Vec<Vec<redis::Value>> = query(
            self.nodes[0].port,
            &redis::cmd("CLUSTER").arg("SLOTS").clone(),
        )
        .unwrap();
        let port = slots
            .iter()
            .find_map(|range| {
                let lo: u16 = redis::from_redis_value(&range[0]).ok()?;
                let hi: u16 = redis::from_redis_value(&range[1]).ok()?;
                let master: Vec<redis::Value> = redis::from_redis_value(&range[2]).ok()?;
                let port: u16 = redis::from_redis_value(&master[1]).ok()?;
                (lo..=hi).contains(&slot).then_some(port)
            })
            .unwrap();
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    /// SMEMBERS of `colyseus:nodes`, from the node that holds it.
    pub fn members(&self) -> Vec<String> {
        let mut m: Vec<String> = query(
            self.node_of("colyseus:nodes").port,
            redis::cmd("SMEMBERS").arg("colyseus:nodes"),
        )
        .unwrap_or_default();
        m.sort();
        m
    }
}
