//! colyseus.js clients (`tests/clients/swarm.js` and the per-version ones).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};

use serde::Deserialize;

use crate::process::{root, Proc};

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
