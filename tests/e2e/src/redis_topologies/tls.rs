//! Redis over TLS only, with ACL users.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::{free_port, wait_for, Redis};

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
