//! Production Redis shapes for the end-to-end tests, from Debian's `redis-server`: a
//! Sentinel set (master, replica, three sentinels), a Redis Cluster of three masters, and a
//! TLS server with ACL users. Every process binds 127.0.0.1 on free ports and is stopped by
//! PID when dropped.
//!
//! Layout: [`sentinel`], [`cluster`], [`tls`], [`monitor`] (`MONITOR`: which client wrote
//! what), and the data nodes they share, here.

mod cluster;
mod monitor;
mod sentinel;
mod tls;

pub use cluster::RedisCluster;
pub use monitor::{commands_from, tcp_ports_of, Monitor, WRITES};
pub use sentinel::{SentinelSet, MASTER_NAME};
pub use tls::TlsRedis;

use std::path::Path;
use std::time::Duration;

use crate::redis_server::spawn_redis;
use crate::{wait_for, Redis};

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
