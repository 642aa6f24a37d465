//! The proxy as separate processes (bootstrap, then sync, then Envoy), for the tests that
//! stop, kill or replace the agent on purpose. `colyseus-envoy run` cannot serve them: it
//! restarts a sync that exits (within a second), and it starts sync with one set of flags and
//! one `REDIS_URL` for its whole life, so an agent kept down, or brought back with other
//! flags or on another Redis, needs a process of its own.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::http::http_get;
use crate::process::{append_log, free_port, log_file, wait_for, Proc};
use crate::proxy::{
    agent_bin, edge_path_args, envoy_bin, filter_wasm, Parts, Proxy, HOT_RESTART_DRAIN_S,
    HOT_RESTART_PARENT_SHUTDOWN_S,
};

impl Proxy {
    /// bootstrap, sync (with `agent_args`) and Envoy as three processes; returns once Envoy
    /// is live on the agent's first file. Only for tests that stop, kill or restart the
    /// agent with other flags or another Redis (see the module doc); the rest use
    /// [`Proxy::start_full`], which goes through `run`.
    pub fn start_apart(
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
            .args(["bootstrap", "--ip", "127.0.0.1"])
            .args(["--port", &port.to_string()])
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
        let agent = spawn_agent(dir, redis_url, api_port, &admin, agent_args);
        let proxy_api = format!("127.0.0.1:{api_port}");
        wait_for("agent /ready", Duration::from_secs(20), || {
            (http_get(&proxy_api, "/ready").ok()?.0 == 200).then_some(())
        });
        let envoy = Proc::spawn(
            "envoy",
            Command::new(envoy_bin())
                .arg("-c")
                .arg(dir.join("envoy.json"))
                .args(["--use-dynamic-base-id", "--log-level", "warn"])
                .args(["--concurrency", "2"])
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
            parts: Parts::Apart {
                agent,
                envoy,
                retired_envoys: Vec::new(),
            },
            redis_url: redis_url.to_owned(),
            agent_args: agent_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        wait_for("envoy ready", Duration::from_secs(30), || {
            if let Parts::Apart { envoy, .. } = &mut proxy.parts {
                if !envoy.is_running() {
                    let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
                    panic!("envoy exited at start:\n{log}");
                }
            }
            let (status, _, body) = http_get(&proxy.admin(), "/ready").ok()?;
            (status == 200 && body.starts_with("LIVE")).then_some(())
        });
        // Clusters are loaded from the agent's file before Envoy goes LIVE.
        proxy
    }

    /// Restarts the agent following another Redis from now on (Envoy keeps running on the
    /// agent's last file; the state file stays). Only for [`Self::start_apart`].
    pub fn restart_agent_on(&mut self, redis_url: &str, extra: &[&str]) {
        redis_url.clone_into(&mut self.redis_url);
        self.restart_apart_agent(extra);
    }

    pub(crate) fn restart_apart_agent(&mut self, extra: &[&str]) {
        let admin = self.admin.clone();
        let (dir, url, api_port) = (self.dir.clone(), self.redis_url.clone(), self.api_port);
        let Parts::Apart { agent, .. } = &mut self.parts else {
            panic!("an agent on another Redis needs Proxy::start_apart");
        };
        agent.stop(Duration::from_secs(5));
        *agent = spawn_agent(&dir, &url, api_port, &admin, extra);
    }

    /// The next Envoy epoch beside the serving one (same base id), as `run` does it.
    pub(crate) fn spawn_next_epoch(&mut self, epoch: u32) {
        let base_id = std::fs::read_to_string(self.dir.join("envoy-base-id")).unwrap();
        let new = Proc::spawn(
            "envoy",
            Command::new(envoy_bin())
                .arg("-c")
                .arg(self.dir.join("envoy.json"))
                .args(["--base-id", base_id.trim()])
                .args(["--restart-epoch", &epoch.to_string()])
                .args(["--drain-time-s", &HOT_RESTART_DRAIN_S.to_string()])
                .args([
                    "--parent-shutdown-time-s",
                    &HOT_RESTART_PARENT_SHUTDOWN_S.to_string(),
                ])
                .args(["--log-level", "warn", "--concurrency", "2"])
                .stdout(Stdio::null())
                .stderr(log_file(&self.dir, &format!("envoy-epoch{epoch}"))),
        );
        if let Parts::Apart {
            envoy,
            retired_envoys,
            ..
        } = &mut self.parts
        {
            retired_envoys.push(std::mem::replace(envoy, new));
        }
    }
}

/// The agent reads Envoy's admin (`--admin-addr`, unless `extra` names it) to advertise a
/// new process only once Envoy routes to it and to end idle drains.
fn spawn_agent(dir: &Path, redis_url: &str, api_port: u16, admin: &str, extra: &[&str]) -> Proc {
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
