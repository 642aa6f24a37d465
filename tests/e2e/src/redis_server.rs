//! A plain Redis on a free port, and the Colyseus 0.11-0.16 presence writes tests make by hand.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, log_file, wait_for, Proc};

pub struct Redis {
    pub port: u16,
    pub proc: Proc,
    pub(crate) dir: PathBuf,
}

impl Redis {
    /// Without persistence, as Redis often runs next to Colyseus.
    pub fn start(dir: &Path) -> Redis {
        Self::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> Redis {
        Self::start_bound(dir, port, "127.0.0.1")
    }

    /// Listening on `bind` (space-separated addresses, the first one 127.0.0.1), for hosts
    /// that reach this machine on another address ([`crate::netns`]). Protected mode (no
    /// password: loopback clients only) is off then; the bridge is the test's own.
    pub fn start_bound(dir: &Path, port: u16, bind: &str) -> Redis {
        let protected = if bind == "127.0.0.1" { "yes" } else { "no" };
        let proc = spawn_redis(
            dir,
            &format!("redis-{port}"),
            &[
                "--port",
                &port.to_string(),
                "--bind",
                bind,
                "--protected-mode",
                protected,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        );
        let redis = Redis {
            port,
            proc,
            dir: dir.to_owned(),
        };
        wait_for("redis", Duration::from_secs(10), || {
            redis
                .try_conn()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
        });
        redis
    }

    pub fn url(&self) -> String {
        self.url_at("127.0.0.1")
    }

    /// The URL through another address it listens on ([`Self::start_bound`]).
    pub fn url_at(&self, ip: &str) -> String {
        format!("redis://{ip}:{}", self.port)
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()
    }

    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("redis connection")
    }

    pub fn members(&self) -> Vec<String> {
        let mut m: Vec<String> = redis::cmd("SMEMBERS")
            .arg("colyseus:nodes")
            .query(&mut self.conn())
            .unwrap();
        m.sort();
        m
    }

    /// Kills Redis and starts an empty one on the same port: a restart without persistence.
    pub fn restart_empty(&mut self, down_for: Duration) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        std::thread::sleep(down_for);
        let fresh = Redis::start_on(&self.dir.clone(), self.port);
        *self = fresh;
    }

    pub fn kill(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// Members of any set.
    pub fn set_members(&self, key: &str) -> Vec<String> {
        let mut m: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query(&mut self.conn())
            .unwrap();
        m.sort();
        m
    }

    /// Remaining time to live of `key` in ms (`-2`: no such key, `-1`: no expiry).
    pub fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query(&mut self.conn()).unwrap()
    }
}

/// Registers `member` (`pid/host:port`) as Colyseus 0.11-0.16 does: `SADD colyseus:nodes`,
/// then `PUBLISH colyseus:nodes:discovery` of the JSON string `"add,{member}"`.
pub fn register(conn: &mut redis::Connection, member: &str) {
    announce(conn, "SADD", "add", &[member]);
}

/// Registers `members` at once: one `SADD` and one announcement each, in one pipeline, so
/// the agent reads them as one burst (one change).
pub fn register_all(conn: &mut redis::Connection, members: &[&str]) {
    announce(conn, "SADD", "add", members);
}

/// Unregisters `member` the same way: `SREM`, then `"remove,{member}"`.
pub fn unregister(conn: &mut redis::Connection, member: &str) {
    announce(conn, "SREM", "remove", &[member]);
}

/// `set_cmd` of `members` on the set, then one announcement of each, in one pipeline.
fn announce(conn: &mut redis::Connection, set_cmd: &str, action: &str, members: &[&str]) {
    let mut pipe = redis::pipe();
    pipe.cmd(set_cmd)
        .arg("colyseus:nodes")
        .arg(members)
        .ignore();
    for member in members {
        pipe.cmd("PUBLISH")
            .arg("colyseus:nodes:discovery")
            .arg(format!("\"{action},{member}\""))
            .ignore();
    }
    let _: () = pipe.query(conn).unwrap();
}

/// Starts `redis-server` with `args` (no persistence unless `args` say otherwise), logging
/// to `{name}.log` in `dir`.
pub(crate) fn spawn_redis(dir: &Path, name: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        name,
        Command::new("redis-server")
            .args(args)
            .stdout(log_file(dir, name))
            .stderr(Stdio::null()),
    )
}
