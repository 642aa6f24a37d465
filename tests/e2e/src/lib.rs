//! Harness for the end-to-end tests: starts real Redis, Colyseus game servers (the example
//! in `example/`), the agent and Envoy with the built filter, all on 127.0.0.1 with free
//! ports, and stops each by PID when dropped, even when a test fails.
//!
//! Expects `scripts/setup.sh` to have run (Envoy in `.venv`, `node_modules`, release
//! builds of the agent and the filter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub mod redis_topologies;
pub mod xds;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 2 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
        assert!(
            ok.map(|s| s.success()).unwrap_or(false),
            "kill -{sig} {}",
            self.name
        );
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal("TERM");
        let start = Instant::now();
        while start.elapsed() < grace {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()
}

/// `{name}.log` in `dir`, appended to (a restarted process keeps the earlier lines).
fn append_log(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap()
}

/// A scratch directory for one test's logs and config. Removed when the test passes; kept
/// when it fails (its path is printed) or when `E2E_KEEP` is set.
pub fn scratch(test: &str) -> Scratch {
    let dir =
        std::env::temp_dir().join(format!("colyseus-envoy-e2e-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// See [`scratch`]. Declare it first in a test, so it is dropped after the processes.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("E2E_KEEP").is_some() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// === Redis ===

pub struct Redis {
    pub port: u16,
    pub proc: Proc,
    dir: PathBuf,
}

impl Redis {
    /// Without persistence, as Redis often runs next to Colyseus.
    pub fn start(dir: &Path) -> Redis {
        Self::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> Redis {
        let proc = Proc::spawn(
            "redis",
            Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(log_file(dir, &format!("redis-{port}")))
                .stderr(Stdio::null()),
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
        format!("redis://127.0.0.1:{}", self.port)
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
}

// === Colyseus game servers ===

pub struct GameServer {
    pub port: u16,
    pub process_id: String,
    pub proc: Proc,
}

impl GameServer {
    pub fn start(dir: &Path, redis: &Redis, env: &[(&str, &str)]) -> GameServer {
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.arg(root().join("example/server.js"))
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("SELF_HOSTNAME", "127.0.0.1")
            .env("REDIS_URL", redis.url())
            .stdout(Stdio::piped())
            .stderr(log_file(dir, &format!("game-{port}")));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("game server", &mut cmd);
        let stdout = proc.child.stdout.take().unwrap();
        let process_id = read_ready(stdout, Duration::from_secs(30));
        GameServer {
            port,
            process_id,
            proc,
        }
    }

    pub fn member(&self) -> String {
        format!("{}/127.0.0.1:{}", self.process_id, self.port)
    }
}

/// Waits for `READY {"processId":..}`; keeps draining stdout afterwards.
fn read_ready(stdout: ChildStdout, timeout: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(json) = line.strip_prefix("READY ") {
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                let _ = tx.send(v["processId"].as_str().unwrap().to_owned());
                break;
            }
        }
        for _ in lines {}
    });
    rx.recv_timeout(timeout)
        .expect("game server did not print READY")
}

// === The proxy: agent + Envoy ===

pub fn envoy_bin() -> PathBuf {
    root().join(".venv/bin/envoy")
}

pub fn agent_bin() -> PathBuf {
    root().join("target/release/colyseus-envoy-agent")
}

pub fn filter_wasm() -> PathBuf {
    root().join("target/wasm32-wasip1/release/colyseus_envoy_filter.wasm")
}

pub struct Proxy {
    pub port: u16,
    /// Envoy's admin: `unix:{dir}/envoy-admin.sock` (the default, a Unix socket), or the
    /// `ip:port` given to bootstrap with `--admin-addr` (the TCP opt-in).
    admin: String,
    pub api_port: u16,
    pub dir: PathBuf,
    pub agent: Proc,
    pub envoy: Proc,
    /// Envoys replaced by a hot restart, still draining.
    pub retired_envoys: Vec<Proc>,
    redis_url: String,
}

impl Proxy {
    pub fn start(dir: &Path, redis: &Redis) -> Proxy {
        Self::start_with(dir, &redis.url(), &[])
    }

    pub fn start_with(dir: &Path, redis_url: &str, agent_args: &[&str]) -> Proxy {
        Self::start_full(dir, redis_url, agent_args, &[])
    }

    /// With extra flags for `agent sync` and for `agent bootstrap`.
    pub fn start_full(
        dir: &Path,
        redis_url: &str,
        agent_args: &[&str],
        bootstrap_args: &[&str],
    ) -> Proxy {
        let (port, api_port) = (free_port(), free_port());
        let admin = bootstrap_args
            .iter()
            .position(|a| *a == "--admin-addr")
            .and_then(|i| bootstrap_args.get(i + 1))
            .map_or_else(
                || format!("unix:{}", dir.join("envoy-admin.sock").display()),
                |a| (*a).to_owned(),
            );
        let config_dir = dir.join("envoy-config");
        std::fs::create_dir_all(&config_dir).unwrap();
        let bootstrap = Command::new(agent_bin())
            .args([
                "bootstrap",
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args(["--agent-api-addr", &format!("127.0.0.1:{api_port}")])
            .args(bootstrap_args)
            .arg("--config-dir")
            .arg(&config_dir)
            .arg("--filter-wasm")
            .arg(filter_wasm())
            .output()
            .unwrap();
        assert!(
            bootstrap.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&bootstrap.stderr)
        );
        std::fs::write(dir.join("envoy.json"), &bootstrap.stdout).unwrap();
        let agent = Self::spawn_agent(dir, redis_url, api_port, &admin, agent_args);
        let proxy_api = format!("127.0.0.1:{api_port}");
        wait_for("agent /ready", Duration::from_secs(20), || {
            (http_get(&proxy_api, "/ready").ok()?.0 == 200).then_some(())
        });
        let envoy = Proc::spawn(
            "envoy",
            Command::new(envoy_bin())
                .arg("-c")
                .arg(dir.join("envoy.json"))
                .args([
                    "--use-dynamic-base-id",
                    "--log-level",
                    "warn",
                    "--concurrency",
                    "2",
                ])
                .arg("--base-id-path")
                .arg(dir.join("envoy-base-id"))
                .stdout(Stdio::null())
                .stderr(log_file(dir, "envoy")),
        );
        let mut proxy = Proxy {
            port,
            admin,
            api_port,
            dir: dir.to_owned(),
            agent,
            envoy,
            retired_envoys: Vec::new(),
            redis_url: redis_url.to_owned(),
        };
        wait_for("envoy ready", Duration::from_secs(30), || {
            if !proxy.envoy.is_running() {
                let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
                panic!("envoy exited at start:\n{log}");
            }
            let (status, _, body) = http_get(&proxy.admin(), "/ready").ok()?;
            (status == 200 && body.starts_with("LIVE")).then_some(())
        });
        // Clusters are loaded from the agent's file before Envoy goes LIVE.
        proxy
    }

    /// The agent reads Envoy's admin (`--admin-addr`, unless `extra` names it) to advertise
    /// a new process only once Envoy routes to it and to end idle drains, as
    /// `scripts/proxy.sh` runs it.
    fn spawn_agent(
        dir: &Path,
        redis_url: &str,
        api_port: u16,
        admin: &str,
        extra: &[&str],
    ) -> Proc {
        let admin_flag: &[&str] = if extra.contains(&"--admin-addr") {
            &[]
        } else {
            &["--admin-addr", admin]
        };
        Proc::spawn(
            "agent",
            Command::new(agent_bin())
                .args(["sync", "--redis-url", redis_url])
                .arg("--config-dir")
                .arg(dir.join("envoy-config"))
                .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
                .args(admin_flag)
                .args(["--resync-interval", "2s", "--probe-timeout", "300ms"])
                .args(extra)
                .env("LOG", "info,colyseus_envoy_agent=debug")
                .stdout(Stdio::null())
                .stderr(append_log(dir, "agent")),
        )
    }

    /// Envoy's hot restart: a new Envoy (next epoch, same base id) takes the listening sockets
    /// over; the old one stops accepting, keeps its open connections for `parent_shutdown`,
    /// then exits. Returns once the new Envoy is live.
    pub fn hot_restart_envoy(&mut self, epoch: u32, drain: Duration, parent_shutdown: Duration) {
        let base_id = std::fs::read_to_string(self.dir.join("envoy-base-id")).unwrap();
        let new = Proc::spawn(
            "envoy",
            Command::new(envoy_bin())
                .arg("-c")
                .arg(self.dir.join("envoy.json"))
                .args([
                    "--base-id",
                    base_id.trim(),
                    "--restart-epoch",
                    &epoch.to_string(),
                ])
                .args(["--drain-time-s", &drain.as_secs().to_string()])
                .args([
                    "--parent-shutdown-time-s",
                    &parent_shutdown.as_secs().to_string(),
                ])
                .args(["--log-level", "warn", "--concurrency", "2"])
                .stdout(Stdio::null())
                .stderr(log_file(&self.dir, &format!("envoy-epoch{epoch}"))),
        );
        let old = std::mem::replace(&mut self.envoy, new);
        self.retired_envoys.push(old);
        // The admin port is handed over too: it refuses connections for a moment.
        let expected = format!("server.hot_restart_epoch: {epoch}");
        wait_for("the new Envoy epoch live", Duration::from_secs(30), || {
            let (_, _, stats) = http_get(&self.admin(), "/stats?filter=hot_restart_epoch").ok()?;
            let (status, _, body) = http_get(&self.admin(), "/ready").ok()?;
            let live = status == 200 && body.starts_with("LIVE");
            (live && stats.lines().any(|l| l.trim() == expected)).then_some(())
        });
    }

    /// `colyseus-envoy-agent status` against this proxy and its Redis: (exit code 0, stdout).
    pub fn status(&self) -> (bool, String) {
        self.status_with(&["--redis-url", &self.redis_url])
    }

    /// [`Self::status`] with other Redis flags than the proxy's own URL (Sentinel, TLS...).
    pub fn status_with(&self, redis_args: &[&str]) -> (bool, String) {
        let out = Command::new(agent_bin())
            .args([
                "status",
                "--api-addr",
                &self.api(),
                "--admin-addr",
                &self.admin(),
            ])
            .args(redis_args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), text)
    }

    /// Restarts the agent process only (Envoy keeps running on the agent's last file).
    pub fn restart_agent(&mut self, extra: &[&str]) {
        self.agent.stop(Duration::from_secs(5));
        self.agent = Self::spawn_agent(
            &self.dir,
            &self.redis_url,
            self.api_port,
            &self.admin.clone(),
            extra,
        );
    }

    /// Restarts the agent process following another Redis from now on (Envoy keeps running
    /// on the agent's last file; the state file stays).
    pub fn restart_agent_on(&mut self, redis_url: &str, extra: &[&str]) {
        redis_url.clone_into(&mut self.redis_url);
        self.restart_agent(extra);
    }

    pub fn public(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Envoy's admin, as [`http_get`] and `agent status --admin-addr` take it.
    pub fn admin(&self) -> String {
        self.admin.clone()
    }

    pub fn api(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    /// processIds the agent routes as active (matchmaking and rooms) right now.
    pub fn routed(&self) -> Vec<String> {
        self.processes_in("active")
    }

    /// processIds the agent keeps for their rooms only (unregistered, still draining).
    pub fn draining(&self) -> Vec<String> {
        self.processes_in("draining")
    }

    fn processes_in(&self, state: &str) -> Vec<String> {
        let Ok((200, _, body)) = http_get(&self.api(), "/processes") else {
            return Vec::new();
        };
        let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        let mut ids: Vec<String> = v
            .iter()
            .filter(|p| p["state"] == state)
            .filter_map(|p| p["processId"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    /// Addresses (`ip:port`) of the all-processes cluster's hosts, as Envoy's admin reports.
    pub fn all_cluster_hosts(&self) -> Vec<String> {
        let (_, _, body) = http_get(&self.admin(), "/clusters").unwrap();
        let mut hosts: Vec<String> = body
            .lines()
            .filter_map(|l| l.strip_prefix("colyseus-all::"))
            .filter_map(|l| l.split_once("::cx_active::").map(|(h, _)| h.to_owned()))
            .collect();
        hosts.sort();
        hosts
    }

    /// A per-host value (`weight`, `rq_total`...) of the all-processes cluster, by
    /// `ip:port`, from Envoy's admin `/clusters`.
    pub fn all_cluster_host_stat(&self, stat: &str) -> std::collections::BTreeMap<String, u64> {
        let (_, _, body) = http_get(&self.admin(), "/clusters").unwrap();
        let suffix = format!("::{stat}::");
        body.lines()
            .filter_map(|l| l.strip_prefix("colyseus-all::"))
            .filter_map(|l| {
                let (host, value) = l.split_once(&suffix)?;
                Some((host.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    pub fn wait_routed(&self, mut expected: Vec<String>, timeout: Duration) {
        expected.sort();
        wait_for(
            &format!("agent routing exactly {expected:?}"),
            timeout,
            || (self.routed() == expected).then_some(()),
        );
    }

    /// A counter or gauge from Envoy's admin `/stats`.
    pub fn envoy_stat(&self, name: &str) -> u64 {
        let (_, _, body) = http_get(&self.admin(), &format!("/stats?filter=^{name}$")).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map_or(0, |v| v.trim().parse().unwrap_or(0))
    }

    /// A sample of the agent's `/metrics`.
    pub fn agent_metric(&self, series: &str) -> u64 {
        let (_, _, body) = http_get(&self.api(), "/metrics").unwrap();
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0, |v| v.trim().parse().unwrap_or(0))
    }

    /// Envoy's CDS update counters must show no refused file.
    pub fn assert_no_rejected_config(&self) {
        assert!(self.envoy_stat("cluster_manager.cds.update_success") > 0);
        assert_eq!(self.envoy_stat("cluster_manager.cds.update_rejected"), 0);
        assert_eq!(self.envoy_stat("cluster_manager.cds.update_failure"), 0);
    }
}

// === TLS test certificates (openssl) ===

/// A self-signed certificate for 127.0.0.1 and localhost, written as `{name}.pem` and
/// `{name}.key` in `dir`.
pub fn make_cert(dir: &Path, name: &str) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req");
}

/// SHA-256 fingerprint of the certificate a new TLS connection is served.
pub fn served_fingerprint(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn file_fingerprint(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// === HTTP over raw sockets (what a client sends, nothing added) ===

/// One HTTP/1.1 request with `Connection: close`; returns (status, raw headers, body).
/// `addr` is `ip:port`, or `unix:PATH` for a Unix socket (Envoy's admin).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    http_request_within(Duration::from_secs(10), addr, method, path, headers)
}

/// [`http_request`] with a read timeout.
pub fn http_request_within(
    timeout: Duration,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let (mut stream, host): (Box<dyn ReadWrite>, &str) = match addr.strip_prefix("unix:") {
        Some(path) => {
            let s = std::os::unix::net::UnixStream::connect(path)?;
            s.set_read_timeout(Some(timeout))?;
            (Box::new(s), "localhost")
        }
        None => {
            let s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(timeout))?;
            (Box::new(s), addr)
        }
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    } else {
        req.push_str("\r\n");
    }
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, head.to_owned(), body))
}

/// A TCP or Unix stream.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    http_request(addr, "GET", path, &[])
}

/// Sends a WebSocket upgrade for `path` and returns the response status: 101 means Envoy
/// routed it to a live upstream that accepted the upgrade.
pub fn ws_handshake(addr: &str, path: &str) -> std::io::Result<u16> {
    ws_handshake_with(addr, path, &[])
}

/// [`ws_handshake`] with extra request headers.
pub fn ws_handshake_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(req.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

// === colyseus.js clients ===

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwarmResult {
    pub clients: u64,
    pub ok: u64,
    pub errors: Vec<serde_json::Value>,
    pub by_process: std::collections::BTreeMap<String, u64>,
    pub rooms: std::collections::BTreeMap<String, String>,
    pub join_ms: serde_json::Value,
    pub echo_ms: serde_json::Value,
}

fn swarm_cmd(endpoint: &str, clients: usize, extra: &[&str]) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(root().join("tests/clients/swarm.js"))
        .args(["--endpoint", endpoint, "--clients", &clients.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

fn parse_swarm(out: &str) -> SwarmResult {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no swarm result in {out:?}"));
    serde_json::from_str(line).unwrap()
}

/// Runs real colyseus.js clients to completion (joinOrCreate, hello, echoes, leave).
pub fn swarm(endpoint: &str, clients: usize, extra: &[&str]) -> SwarmResult {
    let out = swarm_cmd(endpoint, clients, extra).output().unwrap();
    parse_swarm(&String::from_utf8_lossy(&out.stdout))
}

/// Clients that join and then stay connected until [`Holding::finish`].
pub struct Holding {
    proc: Proc,
    stdout: BufReader<ChildStdout>,
}

impl Holding {
    pub fn start(endpoint: &str, clients: usize) -> Holding {
        let mut proc = Proc::spawn(
            "swarm",
            &mut swarm_cmd(
                endpoint,
                clients,
                &["--hold-ms", "-1", "--concurrency", "5"],
            ),
        );
        let mut stdout = BufReader::new(proc.child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "swarm ended before holding");
            if line.trim() == "HOLDING" {
                break;
            }
            if line.starts_with('{') {
                panic!("swarm failed before holding: {line}");
            }
        }
        Holding { proc, stdout }
    }

    /// Checks every connection is still open, echoes once more on each, and leaves.
    pub fn finish(mut self) -> SwarmResult {
        self.proc.signal("USR2");
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).unwrap();
        let _ = self.proc.child.wait();
        parse_swarm(&out)
    }
}

/// Median and max of durations, in milliseconds.
pub fn median_max(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    )
}

// === The registrar sidecar (`colyseus-envoy-agent register`) ===

/// Starts `colyseus-envoy-agent register` with `args` (after `register`), logging to
/// `registrar.log` in `dir` (appended, so restarts keep the earlier lines).
pub fn start_registrar(dir: &Path, args: &[&str]) -> Proc {
    Proc::spawn(
        "registrar",
        Command::new(agent_bin())
            .arg("register")
            .args(args)
            .env("LOG", "info,colyseus_envoy_agent=debug")
            .stdout(Stdio::null())
            .stderr(append_log(dir, "registrar")),
    )
}

impl Redis {
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
    announce(conn, "SADD", "add", member);
}

/// Unregisters `member` the same way: `SREM`, then `"remove,{member}"`.
pub fn unregister(conn: &mut redis::Connection, member: &str) {
    announce(conn, "SREM", "remove", member);
}

fn announce(conn: &mut redis::Connection, set_cmd: &str, action: &str, member: &str) {
    let _: () = redis::pipe()
        .cmd(set_cmd)
        .arg("colyseus:nodes")
        .arg(member)
        .ignore()
        .cmd("PUBLISH")
        .arg("colyseus:nodes:discovery")
        .arg(format!("\"{action},{member}\""))
        .ignore()
        .query(conn)
        .unwrap();
}

// === Other Colyseus versions (tests/colyseus-*/: their own npm projects) ===

impl GameServer {
    /// Starts the game server `script` (e.g. `tests/colyseus-0.17/server.js`) with the
    /// environment of [`GameServer::start`] (`PORT`, `HOST`, `SELF_HOSTNAME`, `REDIS_URL`) plus
    /// `env`, from the script's directory; waits for its `READY {"processId":..}` line.
    pub fn start_script(
        dir: &Path,
        redis: &Redis,
        script: &Path,
        env: &[(&str, &str)],
    ) -> GameServer {
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .current_dir(script.parent().unwrap())
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("SELF_HOSTNAME", "127.0.0.1")
            .env("REDIS_URL", redis.url())
            .stdout(Stdio::piped())
            .stderr(log_file(dir, &format!("game-{port}")));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn(&format!("game server {}", script.display()), &mut cmd);
        let stdout = proc.child.stdout.take().unwrap();
        let process_id = read_ready(stdout, Duration::from_secs(30));
        GameServer {
            port,
            process_id,
            proc,
        }
    }
}

/// [`swarm`] with another client script (e.g. `tests/colyseus-0.17/swarm.js`, same command line
/// and JSON result as `tests/clients/swarm.js`).
pub fn swarm_script(script: &Path, endpoint: &str, clients: usize, extra: &[&str]) -> SwarmResult {
    let out = Command::new("node")
        .arg(script)
        .current_dir(script.parent().unwrap())
        .args(["--endpoint", endpoint, "--clients", &clients.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    parse_swarm(&String::from_utf8_lossy(&out.stdout))
}

/// The PyPI `secantusdb` MongoDB wire-protocol server (a one-node replica set: change
/// streams work), in memory, on a free port.
pub struct MongoServer {
    pub port: u16,
    pub proc: Proc,
}

impl MongoServer {
    pub fn start(dir: &Path) -> MongoServer {
        Self::start_with(dir, free_port(), &[])
    }

    /// On `port`, with extra flags (`--standalone`: no change streams, like a standalone
    /// mongod).
    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> MongoServer {
        let proc = Proc::spawn(
            "secantusd",
            Command::new(root().join(".venv/bin/secantusd-py"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--storage-path", ":memory:", "--log-level", "WARNING"])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(append_log(dir, "secantusd")),
        );
        wait_for("secantusd", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let server = MongoServer { port, proc };
        server.create_room_collection();
        server
    }

    /// Creates `roomcaches` before any game server starts. secantusdb 0.7.0b3 livelocks
    /// (100 % CPU, the insert never returns) when an implicit-create `insert` races a
    /// `create` of the same new collection, which is what MongooseDriver's `autoCreate` does
    /// on a fresh database (py-spy: `create_collection` against `_insert_chunk` retrying
    /// write conflicts; reproduced with a MongooseDriver inserting as soon as it connects).
    /// A real mongod has no such race.
    fn create_room_collection(&self) {
        let out = Command::new(root().join(".venv/bin/python"))
            .args(["-c", CREATE_ROOMCACHES_PY, &self.uri()])
            .output()
            .expect("run .venv/bin/python");
        assert!(
            out.status.success(),
            "creating roomcaches: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// URI with the database Colyseus's MongooseDriver uses.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/colyseus", self.port)
    }
}

const CREATE_ROOMCACHES_PY: &str = r#"
import sys
from pymongo import MongoClient
from pymongo.errors import CollectionInvalid
try:
    MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000).get_database().create_collection("roomcaches")
except CollectionInvalid:
    pass
"#;

/// A pymongo client (in `.venv`) driven line by line: each JSON command is answered with one
/// JSON line once MongoDB acknowledged it.
pub struct MongoClient {
    proc: Proc,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

const MONGO_CLIENT_PY: &str = r#"
import sys, json, datetime
from pymongo import MongoClient
coll = MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000).get_database()["roomcaches"]
def room(r):
    now = datetime.datetime.now(datetime.timezone.utc)
    d = {"roomId": r["roomId"], "processId": r["processId"], "name": r.get("name", "battle"),
         "clients": r.get("clients", 0), "maxClients": float("inf"), "locked": False,
         "private": False, "unlisted": False, "metadata": {}, "publicAddress": None,
         "createdAt": now, "updatedAt": now, "__v": 0}
    d.update(r.get("extra", {}))
    return d
for line in sys.stdin:
    c = json.loads(line)
    op = c["op"]
    if op == "room":
        coll.insert_one(room(c))
    elif op == "raw":
        coll.insert_one(c["doc"])
    elif op == "delete":
        coll.delete_one({"roomId": c["roomId"]})
    elif op == "many":
        docs = [room({"roomId": "%s%d" % (c["prefix"], i), "processId": c["processIds"][i % len(c["processIds"])], "clients": 1}) for i in range(c["n"])]
        for i in range(0, len(docs), 1000):
            coll.insert_many(docs[i:i + 1000], ordered=False)
    # Every command answers with the number of documents (matching "filter", if given).
    print(json.dumps({"ok": True, "count": coll.count_documents(c.get("filter", {}))}), flush=True)
"#;

impl MongoClient {
    pub fn connect(uri: &str) -> MongoClient {
        let mut proc = Proc::spawn(
            "pymongo client",
            Command::new(root().join(".venv/bin/python"))
                .args(["-u", "-c", MONGO_CLIENT_PY, uri])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let input = proc.child.stdin.take().unwrap();
        let output = BufReader::new(proc.child.stdout.take().unwrap());
        MongoClient {
            proc,
            input,
            output,
        }
    }

    /// Sends one command; returns the collection's document count after it.
    pub fn send(&mut self, command: serde_json::Value) -> u64 {
        writeln!(self.input, "{command}").unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        assert!(
            self.proc.is_running() || !line.is_empty(),
            "pymongo client died on {command}"
        );
        let reply: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("pymongo client answered {line:?} to {command}: {e}"));
        reply["count"].as_u64().unwrap()
    }
}

// === Room lookups (fallback routing) ===

/// A seat reserved through the proxy: `POST /matchmake/joinOrCreate/{room}`.
#[derive(Debug, Clone)]
pub struct Seat {
    pub room_id: String,
    pub process_id: String,
    pub session_id: String,
}

pub fn reserve_seat(addr: &str, room: &str) -> Seat {
    matchmake(addr, "joinOrCreate", room)
}

/// A seat from `POST /matchmake/{method}/{room}` (`create`: always a new room).
pub fn matchmake(addr: &str, method: &str, room: &str) -> Seat {
    let (status, _, body) =
        http_request(addr, "POST", &format!("/matchmake/{method}/{room}"), &[]).unwrap();
    assert_eq!(status, 200, "matchmake: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    Seat {
        room_id: v["room"]["roomId"].as_str().unwrap().to_owned(),
        process_id: v["room"]["processId"].as_str().unwrap().to_owned(),
        session_id: v["sessionId"].as_str().unwrap().to_owned(),
    }
}

/// A WebSocket upgrade, then the first frame from the server: (status, opcode, first
/// payload byte). Colyseus's first message on a seat it accepts is `JOIN_ROOM` (10); on a
/// seat it does not hold, `ERROR` (11) and a close.
pub fn ws_first_frame(addr: &str, path: &str) -> (u16, Option<u8>, Option<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    if status != 101 {
        return (status, None, None);
    }
    let mut head = [0u8; 2];
    if reader.read_exact(&mut head).is_err() {
        return (status, None, None);
    }
    let opcode = head[0] & 0x0f;
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            reader.read_exact(&mut ext).unwrap();
            usize::from(u16::from_be_bytes(ext))
        }
        127 => {
            let mut ext = [0u8; 8];
            reader.read_exact(&mut ext).unwrap();
            usize::try_from(u64::from_be_bytes(ext)).unwrap()
        }
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).unwrap();
    (status, Some(opcode), payload.first().copied())
}

/// User plus system CPU time of a process so far, from `/proc/{pid}/stat`.
/// Resident memory of a process (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at its closing ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the file: 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100u64);
    Duration::from_millis(ticks * 1000 / hz)
}
