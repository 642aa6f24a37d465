//! The proxy under test (agent + Envoy with the built filter) and the registrar sidecar.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::http::http_get;
use crate::process::{append_log, free_port, log_file, root, wait_for, Proc};
use crate::redis_server::Redis;

pub fn envoy_bin() -> PathBuf {
    root().join(".venv/bin/envoy")
}

pub fn agent_bin() -> PathBuf {
    root().join("target/release/colyseus-envoy")
}

pub fn filter_wasm() -> PathBuf {
    root().join("target/wasm32-wasip1/release/colyseus_envoy_filter.wasm")
}

/// `E2E_EDGE_PATH` (`http` or `tcp`) as `bootstrap --edge-path`, so the whole suite runs on
/// either path; unset, or named by the test itself: the test's (or the default) path.
pub fn edge_path_args(bootstrap_args: &[&str]) -> Vec<String> {
    match std::env::var("E2E_EDGE_PATH") {
        Ok(path) if !path.is_empty() && !bootstrap_args.contains(&"--edge-path") => {
            vec!["--edge-path".to_owned(), path]
        }
        _ => Vec::new(),
    }
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
            .args(edge_path_args(bootstrap_args))
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

    /// `colyseus-envoy status` against this proxy and its Redis: (exit code 0, stdout).
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

/// Starts `colyseus-envoy register` with `args` (after `register`), logging to
/// `registrar.log` in `dir` (appended, so restarts keep the earlier lines).
/// `--flag value` pairs as `--flag=value`: a random processId may start with `-`
/// (`-5tzH5ot2`), which the command line would otherwise take for a flag.
fn flag_values_joined(args: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        match args.get(i + 1) {
            Some(value)
                if args[i].starts_with("--")
                    && !args[i].contains('=')
                    && !value.starts_with("--") =>
            {
                out.push(format!("{}={value}", args[i]));
                i += 2;
            }
            _ => {
                out.push(args[i].to_owned());
                i += 1;
            }
        }
    }
    out
}

pub fn start_registrar(dir: &Path, args: &[&str]) -> Proc {
    Proc::spawn(
        "registrar",
        Command::new(agent_bin())
            .arg("register")
            .args(flag_values_joined(args))
            .env("LOG", "info,colyseus_envoy_agent=debug")
            .stdout(Stdio::null())
            .stderr(append_log(dir, "registrar")),
    )
}
