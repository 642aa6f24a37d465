//! A Sentinel set: master, replica, three sentinels.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::{free_port, wait_for, Proc, Redis};

/// A master, one replica and three sentinels (quorum 2) monitoring `MASTER_NAME`.
pub struct SentinelSet {
    pub master: Redis,
    pub replica: Redis,
    pub sentinels: Vec<(u16, Proc)>,
}

pub const MASTER_NAME: &str = "mymaster";

impl SentinelSet {
    /// Returns once every sentinel knows the replica and the two other sentinels, so a
    /// failover can happen.
    pub fn start(dir: &Path) -> SentinelSet {
        let master = data_node(dir, "redis-master", free_port(), &[]);
        let master_port = master.port.to_string();
        let replica = data_node(
            dir,
            "redis-replica",
            free_port(),
            &["--replicaof", "127.0.0.1", &master_port],
        );
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n"
                ),
            )
            .unwrap();
            let proc = spawn_redis(
                dir,
                &format!("sentinel-{i}"),
                &[conf.to_str().unwrap(), "--sentinel"],
            );
            wait_ping(port);
            sentinels.push((port, proc));
        }
        let set = SentinelSet {
            master,
            replica,
            sentinels,
        };
        wait_for(
            "sentinels to know the replica and each other",
            Duration::from_secs(30),
            || {
                set.sentinels
                    .iter()
                    .all(|(port, _)| {
                        let replicas: Vec<redis::Value> = query(
                            *port,
                            redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME),
                        )
                        .unwrap_or_default();
                        let others: Vec<redis::Value> = query(
                            *port,
                            redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME),
                        )
                        .unwrap_or_default();
                        replicas.len() == 1 && others.len() == 2
                    })
                    .then_some(())
            },
        );
        set
    }

    /// `--redis-sentinels` / `REDIS_SENTINELS`.
    pub fn list(&self) -> String {
        self.sentinels
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The environment of a game server using this set.
    pub fn game_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REDIS_SENTINELS", self.list()),
            ("REDIS_SENTINEL_MASTER", MASTER_NAME.to_owned()),
        ]
    }

    /// The master's port according to the first sentinel that answers.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(port, _)| {
            let (_, p): (String, String) = query(
                *port,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER_NAME),
            )?;
            p.parse().ok()
        })
    }

    /// Whether the replica has caught up with the master (same replication offset).
    pub fn replica_in_sync(&self) -> bool {
        let offset = |port: u16, field: &str| -> Option<u64> {
            let info: String = query(port, redis::cmd("INFO").arg("replication"))?;
            info.lines()
                .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
        };
        match (
            offset(self.master.port, "master_repl_offset:"),
            offset(self.replica.port, "slave_repl_offset:"),
        ) {
            (Some(m), Some(r)) => m == r && m > 0,
            _ => false,
        }
    }
}
