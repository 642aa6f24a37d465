//! Colyseus game servers: the example in `example/` and the per-version ones in `tests/colyseus-*/`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, log_file, root, Proc};
use crate::redis_server::Redis;

pub struct GameServer {
    pub port: u16,
    pub process_id: String,
    pub proc: Proc,
}

impl GameServer {
    pub fn start(dir: &Path, redis: &Redis, env: &[(&str, &str)]) -> GameServer {
        let mut cmd = Command::new("node");
        cmd.arg(root().join("example/server.js"));
        Self::spawn("game server", cmd, dir, redis, env)
    }

    pub fn member(&self) -> String {
        format!("{}/127.0.0.1:{}", self.process_id, self.port)
    }

    /// Starts the game server `script` (e.g. `tests/colyseus-0.17/server.js`) with the
    /// environment of [`GameServer::start`] (`PORT`, `HOST`, `SELF_HOSTNAME`, `REDIS_URL`) plus
    /// `env`, from the script's directory; waits for its `READY {"processId":..}` line.
    pub fn start_script(
        dir: &Path,
        redis: &Redis,
        script: &Path,
        env: &[(&str, &str)],
    ) -> GameServer {
        let mut cmd = Command::new("node");
        cmd.arg(script).current_dir(script.parent().unwrap());
        Self::spawn(
            &format!("game server {}", script.display()),
            cmd,
            dir,
            redis,
            env,
        )
    }

    /// `cmd` with the game server's environment (`PORT` free, `HOST` and `SELF_HOSTNAME`
    /// 127.0.0.1, `REDIS_URL`) plus `env`; waits for its `READY {"processId":..}` line.
    fn spawn(
        name: &str,
        mut cmd: Command,
        dir: &Path,
        redis: &Redis,
        env: &[(&str, &str)],
    ) -> GameServer {
        let port = free_port();
        cmd.env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("SELF_HOSTNAME", "127.0.0.1")
            .env("REDIS_URL", redis.url())
            .stdout(Stdio::piped())
            .stderr(log_file(dir, &format!("game-{port}")));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn(name, &mut cmd);
        let stdout = proc.child.stdout.take().unwrap();
        let process_id = read_ready(stdout, Duration::from_secs(30));
        GameServer {
            port,
            process_id,
            proc,
        }
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
