//! The proxy as users start it: one `colyseus-envoy run` process, which renders the
//! bootstrap and supervises the sync agent and Envoy as its children. Its log (its own
//! lines and its children's, which inherit its stderr) is `run.log` in the test's dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::http::http_get;
use crate::process::{append_log, free_port, wait_for, Proc};
use crate::proxy::{agent_bin, envoy_bin, filter_wasm};

pub struct RunProxy {
    pub port: u16,
    pub api_port: u16,
    /// `RUN_DIR`: bootstrap, config dir, Envoy's admin socket, the control socket.
    pub run_dir: PathBuf,
    pub run: Proc,
    dir: PathBuf,
    redis_url: String,
}

impl RunProxy {
    /// `colyseus-envoy run` (or `args` after `colyseus-envoy`) with the environment a user
    /// sets: `PORT`, `IP`, `REDIS_URL`, `AGENT_API_ADDR`, `RUN_DIR`, plus `env`.
    pub fn command(run_dir: &Path, redis_url: &str, port: u16, api_port: u16) -> Command {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("run")
            .env("PORT", port.to_string())
            .env("IP", "127.0.0.1")
            .env("REDIS_URL", redis_url)
            .env("AGENT_API_ADDR", format!("127.0.0.1:{api_port}"))
            .env("RUN_DIR", run_dir)
            .env("ENVOY_BIN", envoy_bin())
            .env("COLYSEUS_ENVOY_FILTER_WASM", filter_wasm())
            .env("ENVOY_CONCURRENCY", "2")
            .env("COLYSEUS_ENVOY_RESYNC_INTERVAL", "2s")
            .env("COLYSEUS_ENVOY_PROBE_TIMEOUT", "300ms")
            .env("LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts it on free ports and waits for its "Listening on" line (both children ready).
    pub fn start(dir: &Path, redis_url: &str, env: &[(&str, &str)]) -> RunProxy {
        let (port, api_port) = (free_port(), free_port());
        Self::start_in(&dir.join("run"), dir, redis_url, (port, api_port), env, &[])
    }

    /// [`Self::start`] with `RUN_DIR` `run_dir`, the public and API ports `ports`, and `args`
    /// after `run` (e.g. `--sync-arg=...`); logs to `run.log` in `dir`.
    pub fn start_in(
        run_dir: &Path,
        dir: &Path,
        redis_url: &str,
        (port, api_port): (u16, u16),
        env: &[(&str, &str)],
        args: &[String],
    ) -> RunProxy {
        let run_dir = run_dir.to_owned();
        let mut cmd = Self::command(&run_dir, redis_url, port, api_port);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(append_log(dir, "run"));
        let mut proxy = RunProxy {
            port,
            api_port,
            run_dir,
            run: Proc::spawn("colyseus-envoy run", &mut cmd),
            dir: dir.to_owned(),
            redis_url: redis_url.to_owned(),
        };
        wait_for("run: Listening on", Duration::from_secs(40), || {
            assert!(
                proxy.run.is_running(),
                "run exited at start:\n{}",
                proxy.log()
            );
            proxy.log().contains("Listening on").then_some(())
        });
        proxy
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("run.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn api(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    /// Envoy's admin socket (`run`'s default), as [`http_get`] takes it.
    pub fn admin(&self) -> String {
        format!("unix:{}", self.run_dir.join("envoy-admin.sock").display())
    }

    /// The children of `run` now: (pid, command line).
    pub fn children(&self) -> Vec<(u32, String)> {
        let pid = self.run.pid();
        let list =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        list.split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .map(|p| {
                let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                (p, String::from_utf8_lossy(&cmdline).replace('\0', " "))
            })
            .collect()
    }

    /// The sync agent's pid, if it runs.
    pub fn sync_pid(&self) -> Option<u32> {
        self.children()
            .into_iter()
            .find(|(_, c)| c.contains(" sync "))
            .map(|(p, _)| p)
    }

    /// The Envoys' pids (the serving one and any still draining).
    pub fn envoy_pids(&self) -> Vec<u32> {
        self.children()
            .into_iter()
            .filter(|(_, c)| c.starts_with(&envoy_bin().display().to_string()))
            .map(|(p, _)| p)
            .collect()
    }

    /// Envoy's `server.hot_restart_epoch`, once its admin answers LIVE.
    pub fn live_epoch(&self) -> Option<u32> {
        let (_, _, body) = http_get(&self.admin(), "/ready").ok()?;
        if !body.starts_with("LIVE") {
            return None;
        }
        let (_, _, stats) =
            http_get(&self.admin(), "/stats?filter=^server.hot_restart_epoch$").ok()?;
        stats
            .lines()
            .find_map(|l| l.strip_prefix("server.hot_restart_epoch: "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// `colyseus-envoy run hot-restart [--force]` against it.
    pub fn hot_restart(&self, force: bool) -> Output {
        let mut cmd = Command::new(agent_bin());
        cmd.args(["run", "hot-restart"])
            .env("RUN_DIR", &self.run_dir);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    }

    /// `colyseus-envoy status` with the variables the proxy was started with.
    pub fn status(&self) -> Output {
        Command::new(agent_bin())
            .arg("status")
            .env("REDIS_URL", &self.redis_url)
            .env("AGENT_API_ADDR", self.api())
            .env("RUN_DIR", &self.run_dir)
            .output()
            .unwrap()
    }
}

/// The kernel's view of a pid: still there (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

impl Drop for RunProxy {
    /// `run` and, by pid, its children: killed `run` would orphan its sync agent.
    fn drop(&mut self) {
        let children = self.children();
        let _ = self.run.child.kill();
        let _ = self.run.child.wait();
        for (pid, _) in children {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}
