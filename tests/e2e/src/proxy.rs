//! The proxy under test (agent + Envoy with the built filter), started through
//! `colyseus-envoy run` as users start it (or apart, see `proxy_apart`), and the registrar
//! sidecar.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::http::http_get;
use crate::process::{append_log, free_port, root, wait_for, Proc};
use crate::redis_server::Redis;
use crate::runner::RunProxy;

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

/// How a [`Proxy`]'s processes were started.
pub enum Parts {
    /// One `colyseus-envoy run` (as users start it), which supervises sync and Envoy.
    Run(RunProxy),
    /// bootstrap, sync and Envoy as separate processes ([`Proxy::start_apart`]).
    Apart {
        agent: Proc,
        envoy: Proc,
        /// Envoys replaced by a hot restart, still draining.
        retired_envoys: Vec<Proc>,
    },
}

/// Seconds the old Envoy drains after [`Proxy::hot_restart_envoy`], and until it exits.
pub const HOT_RESTART_DRAIN_S: u32 = 30;
pub const HOT_RESTART_PARENT_SHUTDOWN_S: u32 = 60;

pub struct Proxy {
    pub port: u16,
    /// Envoy's admin: `unix:{dir}/envoy-admin.sock` (the default, a Unix socket), or the
    /// `ip:port` given to bootstrap with `--admin-addr` (the TCP opt-in).
    pub(crate) admin: String,
    pub api_port: u16,
    pub dir: PathBuf,
    pub parts: Parts,
    pub(crate) redis_url: String,
    /// The `sync` flags it was started with (a run-started agent restarts with these only).
    pub(crate) agent_args: Vec<String>,
}

/// `--admin-addr V` taken out of `args`: (V, the rest).
fn take_admin(args: &[&str]) -> (Option<String>, Vec<String>) {
    let mut admin = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == "--admin-addr" {
            admin = it.next().map(|v| (*v).to_owned());
        } else {
            rest.push((*a).to_owned());
        }
    }
    (admin, rest)
}

impl Proxy {
    pub fn start(dir: &Path, redis: &Redis) -> Proxy {
        Self::start_with(dir, &redis.url(), &[])
    }

    pub fn start_with(dir: &Path, redis_url: &str, agent_args: &[&str]) -> Proxy {
        Self::start_full(dir, redis_url, agent_args, &[])
    }

    /// Through `colyseus-envoy run` with `RUN_DIR` = `dir`, as users start the proxy: the
    /// extra `sync` and `bootstrap` flags go as `--sync-arg` / `--bootstrap-arg`, an
    /// `--admin-addr` among them as run's own (it gives it to both children). Returns once
    /// `run` says both children are ready ("Listening on").
    pub fn start_full(
        dir: &Path,
        redis_url: &str,
        agent_args: &[&str],
        bootstrap_args: &[&str],
    ) -> Proxy {
        // Its log goes in `dir`, which `run` would create only once started.
        std::fs::create_dir_all(dir).unwrap();
        let (port, api_port) = (free_port(), free_port());
        let (admin_a, sync_rest) = take_admin(agent_args);
        let (admin_b, boot_rest) = take_admin(bootstrap_args);
        let admin_tcp = admin_b.or(admin_a);
        let mut args: Vec<String> = Vec::new();
        if let Some(a) = &admin_tcp {
            args.extend(["--admin-addr".to_owned(), a.clone()]);
        }
        args.extend(sync_rest.iter().map(|a| format!("--sync-arg={a}")));
        let boot_refs: Vec<&str> = bootstrap_args.to_vec();
        let boot = edge_path_args(&boot_refs).into_iter().chain(boot_rest);
        args.extend(boot.map(|a| format!("--bootstrap-arg={a}")));
        let drain = HOT_RESTART_DRAIN_S.to_string();
        let parent = HOT_RESTART_PARENT_SHUTDOWN_S.to_string();
        let env = [
            ("LOG", "info,colyseus_envoy_agent=debug"),
            ("ENVOY_DRAIN_TIME", drain.as_str()),
            ("ENVOY_PARENT_SHUTDOWN_TIME", parent.as_str()),
        ];
        let run = RunProxy::start_in(dir, dir, redis_url, (port, api_port), &env, &args);
        Proxy {
            port,
            admin: admin_tcp.unwrap_or_else(|| run.admin()),
            api_port,
            dir: dir.to_owned(),
            parts: Parts::Run(run),
            redis_url: redis_url.to_owned(),
            agent_args: agent_args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// The sync agent's pid (run's child, or the separate process).
    pub fn agent_pid(&self) -> u32 {
        match &self.parts {
            Parts::Run(run) => run.sync_pid().expect("run has no sync agent now"),
            Parts::Apart { agent, .. } => agent.pid(),
        }
    }

    /// The serving Envoy's pid (the newest one).
    pub fn envoy_pid(&self) -> u32 {
        match &self.parts {
            Parts::Run(run) => *run.envoy_pids().last().expect("run has no Envoy now"),
            Parts::Apart { envoy, .. } => envoy.pid(),
        }
    }

    /// The agent as a process of its own, to stop or kill: only for [`Self::start_apart`].
    pub fn agent_proc(&mut self) -> &mut Proc {
        match &mut self.parts {
            Parts::Run(_) => panic!("run restarts its sync agent: use Proxy::start_apart"),
            Parts::Apart { agent, .. } => agent,
        }
    }

    /// Restarts the agent only (Envoy keeps running on the agent's last file). Through
    /// `run`: its sync is stopped and `run` starts it again (with the flags it was started
    /// with: other `extra` need [`Self::start_apart`]). Returns once the new one is ready.
    pub fn restart_agent(&mut self, extra: &[&str]) {
        let Parts::Run(run) = &self.parts else {
            return self.restart_apart_agent(extra);
        };
        assert_eq!(
            extra.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
            self.agent_args,
            "run restarts sync with its own flags: use Proxy::start_apart for others"
        );
        let old = run.sync_pid().expect("run has no sync agent now");
        let ok = Command::new("kill")
            .args(["-TERM", &old.to_string()])
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -TERM sync {old}");
        wait_for(
            "run restarts its sync agent",
            Duration::from_secs(20),
            || {
                let new = run.sync_pid().filter(|p| *p != old)?;
                let ready = http_get(&self.api(), "/ready").ok()?.0 == 200;
                ready.then_some(new)
            },
        );
    }

    /// Envoy's hot restart: a new Envoy (next epoch, same base id) takes the listening sockets
    /// over; the old one stops accepting, keeps its open connections for
    /// [`HOT_RESTART_DRAIN_S`] / [`HOT_RESTART_PARENT_SHUTDOWN_S`], then exits. Through `run`:
    /// `colyseus-envoy run hot-restart`. Returns once the new Envoy (`epoch`) is live.
    pub fn hot_restart_envoy(&mut self, epoch: u32) {
        match &self.parts {
            Parts::Run(run) => {
                let out = run.hot_restart(false);
                assert!(
                    out.status.success(),
                    "run hot-restart: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Parts::Apart { .. } => self.spawn_next_epoch(epoch),
        }
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
