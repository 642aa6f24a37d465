//! Production Redis shapes for the end-to-end tests, from Debian's `redis-server`: a
//! Sentinel set (master, replica, three sentinels), a Redis Cluster of three masters, and a
//! TLS server with ACL users. Every process binds 127.0.0.1 on free ports and is stopped by
//! PID when dropped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::redis_server::spawn_redis;
use crate::{free_port, wait_for, Proc, Redis};

fn plain_conn(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()
}

/// Runs one command on the plain server at `port`.
pub fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
    cmd.query(&mut plain_conn(port)?).ok()
}

fn wait_ping(port: u16) {
    wait_for(&format!("redis on {port}"), Duration::from_secs(10), || {
        query::<String>(port, &redis::cmd("PING"))
    });
}

fn data_node(dir: &Path, name: &str, port: u16, extra: &[&str]) -> Redis {
    let port_s = port.to_string();
    // Its own working directory: Redis loads any `dump.rdb` it finds there.
    let work = dir.join(name);
    std::fs::create_dir_all(&work).unwrap();
    let mut args = vec![
        "--dir",
        work.to_str().unwrap(),
        "--port",
        &port_s,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    args.extend_from_slice(extra);
    let proc = spawn_redis(dir, name, &args);
    wait_ping(port);
    Redis {
        port,
        proc,
        dir: dir.to_owned(),
    }
}

// === Sentinel ===

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

// === MONITOR: which client wrote what ===

/// `redis-cli MONITOR` on a server, appended to a file, and started again at once when the
/// server drops it (Sentinel kills every normal client of a replica it promotes).
pub struct Monitor {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Proc>>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the Proc kills it; the loop then sees `stop`.
        self.current.lock().unwrap().take();
    }
}

impl Monitor {
    pub fn start(dir: &Path, port: u16, name: &str) -> Monitor {
        let path = dir.join(format!("{name}.monitor"));
        std::fs::File::create(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<Proc>>> = Arc::default();
        {
            let (path, stop, current) = (path.clone(), stop.clone(), current.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let out = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    let proc = Proc::spawn(
                        "redis-cli monitor",
                        Command::new("redis-cli")
                            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "monitor"])
                            .stdout(out)
                            .stderr(Stdio::null()),
                    );
                    let pid = proc.pid();
                    *current.lock().unwrap() = Some(proc);
                    // Wait for this redis-cli to end, polling so `stop` is seen.
                    loop {
                        let running = current
                            .lock()
                            .unwrap()
                            .as_mut()
                            .is_some_and(|p| p.pid() == pid && p.is_running());
                        if !running {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
        }
        wait_for("MONITOR started", Duration::from_secs(5), || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|s| s.starts_with("OK"))
        });
        Monitor {
            path,
            stop,
            current,
        }
    }

    /// The commands (lowercased words) sent from these local ports of 127.0.0.1.
    pub fn commands_from(&self, ports: &BTreeSet<u16>) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        commands_from(&text, ports)
    }
}

/// Commands that change data, as MONITOR prints them (lowercased). Not PUBLISH: the
/// liveness ping is one.
pub const WRITES: &[&str] = &[
    "sadd", "srem", "hset", "hdel", "hincrby", "set", "del", "unlink", "expire", "pexpire",
    "multi", "exec", "incr", "lpush", "rpush", "zadd", "zrem", "flushall", "flushdb",
];

/// See [`Monitor::commands_from`]. A MONITOR line is
/// `1700000000.123456 [0 127.0.0.1:50000] "SADD" "key" "member"`.
pub fn commands_from(monitor: &str, ports: &BTreeSet<u16>) -> Vec<Vec<String>> {
    monitor
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(" [")?;
            let (who, args) = rest.split_once("] ")?;
            let port: u16 = who
                .split_whitespace()
                .nth(1)?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            ports.contains(&port).then(|| {
                args.split("\" \"")
                    .map(|w| w.trim_matches('"').to_lowercase())
                    .collect()
            })
        })
        .collect()
}

/// Local ports of `pid`'s TCP connections to 127.0.0.1:`remote` (from /proc: which
/// sockets the process holds, and where they go).
pub fn tcp_ports_of(pid: u32, remote: u16) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let link = std::fs::read_link(e.ok()?.path()).ok()?;
                let l = link.to_str()?;
                Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
            })
            .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote_hex = format!("0100007F:{remote:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, rem, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
            (*rem == remote_hex && inodes.contains(*inode))
                .then(|| u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok())
                .flatten()
        })
        .collect()
}

// === Cluster ===

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

// === TLS and ACL ===

/// A Redis served over TLS only, with the ACL users of `acl` (ACL file lines; it must
/// define `admin` with password `admin-pw`, which the harness uses).
pub struct TlsRedis {
    pub port: u16,
    pub ca: PathBuf,
    /// The process, as a [`Redis`] to hand to [`crate::GameServer::start`] (whose
    /// `REDIS_URL` the caller overrides: this server speaks TLS only).
    pub redis: Redis,
}

impl TlsRedis {
    pub fn start(dir: &Path, acl: &str) -> TlsRedis {
        crate::tls::make_ca_and_cert(dir, "redis");
        let acl_file = dir.join("users.acl");
        std::fs::write(&acl_file, acl).unwrap();
        let port = free_port();
        let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
        let proc = spawn_redis(
            dir,
            "redis-tls",
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                &path("redis.pem"),
                "--tls-key-file",
                &path("redis.key"),
                "--tls-ca-cert-file",
                &path("ca.pem"),
                "--tls-auth-clients",
                "no",
                "--aclfile",
                acl_file.to_str().unwrap(),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        );
        let ca = dir.join("ca.pem");
        wait_for("redis over TLS", Duration::from_secs(10), || {
            let out = Command::new("redis-cli")
                .args(["--tls", "--cacert", ca.to_str().unwrap()])
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args([
                    "--user",
                    "admin",
                    "--pass",
                    "admin-pw",
                    "--no-auth-warning",
                    "PING",
                ])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("PONG")
                .then_some(())
        });
        TlsRedis {
            port,
            ca,
            redis: Redis {
                port,
                proc,
                dir: dir.to_owned(),
            },
        }
    }

    /// `redis-cli` against this server as `user`.
    pub fn cli_as(&self, user: &str, pass: &str, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", self.ca.to_str().unwrap()])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--user", user, "--pass", pass, "--no-auth-warning"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_are_attributed_to_their_client() {
        let log = "OK\n\
            1.2 [0 127.0.0.1:6000] \"SADD\" \"colyseus:nodes\" \"p/127.0.0.1:1\"\n\
            1.3 [0 127.0.0.1:5000] \"PUBLISH\" \"p:x\" \"[]\"\n\
            1.4 [0 127.0.0.1:5000] \"SREM\" \"colyseus:nodes\" \"q\"\n";
        let ours = commands_from(log, &BTreeSet::from([5000]));
        assert_eq!(
            ours,
            [
                vec!["publish", "p:x", "[]"],
                vec!["srem", "colyseus:nodes", "q"]
            ]
        );
    }
}
