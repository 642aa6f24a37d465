//! `loadgen converge-colyseus`: registration to first routed room connection with REAL
//! Colyseus game servers being started, through several proxies at once.
//!
//! Each trial starts one game server (`--server`, e.g. `example/server.js`, with `--env`
//! settings such as `DRIVER=mongoose`) on a free port. The clock starts when its own `add`
//! announcement arrives on Redis's discovery channel (loadgen subscribes, as the proxies
//! do). Then, for every proxy at once, WebSocket upgrades to `/{pid}/{a fresh roomId}
//! ?sessionId=x` are opened about every millisecond, as a player would after matchmaking
//! placed a room there, until one is answered `101` by that process (the example server tags
//! every upgrade it accepts with `X-Colyseus-Process-Id`: @colyseus/proxy sends an unknown
//! processId to any process, so "some 101" would prove nothing). Answers other than the
//! right process's 101 are counted by status. The server is then stopped (SIGTERM, it
//! unregisters) before the next trial.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::converge::{probe_tagged, resp_command, resp_reply, summary};

const DISCOVERY_CHANNEL: &str = "colyseus:nodes:discovery";
/// Header the example server sets on every upgrade it accepts.
const PROCESS_HEADER: &str = "x-colyseus-process-id";

#[derive(Args)]
pub struct ConvergeColyseus {
    /// `label=host:port` of each proxy, e.g. `ours=127.0.0.1:8080`.
    #[arg(long = "proxy", required = true)]
    proxies: Vec<String>,
    /// The Redis the servers register in and the proxies follow, `host:port`.
    #[arg(long)]
    redis: String,
    /// The game server script (run with `node`).
    #[arg(long)]
    server: String,
    /// `KEY=VALUE` environment of each game server (besides PORT, HOST, SELF_HOSTNAME,
    /// REDIS_URL).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Where the game servers' stderr goes (appended).
    #[arg(long)]
    log: Option<String>,
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Least time between the starts of two probes of one proxy.
    #[arg(long, default_value_t = 1)]
    interval_ms: u64,
    /// Give up on one step of a trial after this long.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Free-form label copied into the result.
    #[arg(long, default_value = "")]
    label: String,
}

impl ConvergeColyseus {
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// A Redis connection subscribed to the discovery channel.
struct Discovery {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Discovery {
    async fn subscribe(addr: &str) -> anyhow::Result<Self> {
        let mut sock = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to redis at {addr}"))?;
        sock.set_nodelay(true)?;
        let mut out = Vec::new();
        resp_command(&mut out, &["SUBSCRIBE", DISCOVERY_CHANNEL]);
        sock.write_all(&out).await?;
        let mut d = Self {
            sock,
            buf: Vec::new(),
        };
        d.next().await?; // the subscribe confirmation
        Ok(d)
    }

    /// The next push: its last element (a message's payload).
    async fn next(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some((last, used)) = push_of(&self.buf)? {
                self.buf.drain(..used);
                return Ok(last);
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "redis closed the subscription");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for `"add,{pid}/{host}:{port}"` with this port; the processId.
    async fn added_on(&mut self, port: u16) -> anyhow::Result<String> {
        let suffix = format!(":{port}\"");
        loop {
            let payload = self.next().await?;
            if let Some(member) = payload
                .strip_prefix("\"add,")
                .filter(|_| payload.ends_with(&suffix))
            {
                let pid = member.split('/').next().unwrap_or_default();
                return Ok(pid.to_owned());
            }
        }
    }
}

/// One RESP array push at the start of `buf`: its last element and the bytes it used.
fn push_of(buf: &[u8]) -> anyhow::Result<Option<(String, usize)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    anyhow::ensure!(buf.first() == Some(&b'*'), "expected a RESP array push");
    let n: usize = String::from_utf8_lossy(&buf[1..end]).parse()?;
    let (mut at, mut last) = (end + 2, String::new());
    for _ in 0..n {
        match resp_reply(&buf[at..])? {
            Some((value, used)) => {
                at += used;
                last = value;
            }
            None => return Ok(None),
        }
    }
    Ok(Some((last, at)))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Probes one proxy until the process answers: (ms since `t0`, statuses seen before).
async fn until_routed(
    addr: String,
    path: String,
    pid: String,
    t0: Instant,
    interval: Duration,
    timeout: Duration,
) -> (Option<f64>, BTreeMap<u16, u32>) {
    let mut seen = BTreeMap::new();
    loop {
        let started = Instant::now();
        let (status, tag) = probe_tagged(&addr, &path, PROCESS_HEADER).await;
        if status == 101 && tag.as_deref() == Some(pid.as_str()) {
            return (Some(t0.elapsed().as_secs_f64() * 1e3), seen);
        }
        *seen.entry(status).or_default() += 1;
        if t0.elapsed() > timeout {
            return (None, seen);
        }
        tokio::time::sleep_until((started + interval).into()).await;
    }
}

/// Runs the trials; the result as one JSON object.
///
/// # Errors
/// Redis unreachable, or a game server that cannot be started.
pub async fn run(cfg: &ConvergeColyseus) -> anyhow::Result<Value> {
    let proxies: Vec<(String, String)> = cfg
        .proxies
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(l, a)| (l.to_owned(), a.to_owned()))
                .with_context(|| format!("--proxy {p:?} is not label=host:port"))
        })
        .collect::<anyhow::Result<_>>()?;
    let interval = Duration::from_millis(cfg.interval_ms);
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut discovery = Discovery::subscribe(&cfg.redis).await?;
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut before: BTreeMap<String, BTreeMap<u16, u32>> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    // Wall-clock time of each trial's `add`, to line trials up with the proxies' logs.
    let mut added_at: Vec<(String, f64)> = Vec::new();
    for i in 0..cfg.trials {
        let port = free_port()?;
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(&cfg.server)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("SELF_HOSTNAME", "127.0.0.1")
            .env("REDIS_URL", format!("redis://{}", cfg.redis))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for kv in &cfg.env {
            let (k, v) = kv.split_once('=').context("--env is KEY=VALUE")?;
            cmd.env(k, v);
        }
        cmd.stderr(match &cfg.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Stdio::null(),
        });
        let mut child = cmd.spawn().context("starting the game server")?;
        let pid =
            match tokio::time::timeout(Duration::from_secs(30), discovery.added_on(port)).await {
                Ok(r) => r?,
                Err(_) => {
                    failures.push(format!("trial {i}: the server never announced itself"));
                    let _ = child.kill().await;
                    continue;
                }
            };
        let t0 = Instant::now();
        added_at.push((
            pid.clone(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        ));
        let tasks: Vec<_> = proxies
            .iter()
            .map(|(label, addr)| {
                // A roomId of its own per proxy and trial, in Colyseus's id alphabet.
                let path = format!("/{pid}/f{}x{i}{label}?sessionId=x", std::process::id());
                let label = label.clone();
                let task = tokio::spawn(until_routed(
                    addr.clone(),
                    path,
                    pid.clone(),
                    t0,
                    interval,
                    timeout,
                ));
                (label, task)
            })
            .collect();
        for (label, task) in tasks {
            let (ms, seen) = task.await.unwrap_or((None, BTreeMap::new()));
            match ms {
                Some(ms) => samples.entry(label.clone()).or_default().push(ms),
                None => failures.push(format!("trial {i}: {label} never routed to {pid}")),
            }
            let total = before.entry(label).or_default();
            for (status, n) in seen {
                *total.entry(status).or_default() += n;
            }
        }
        // Graceful stop: Colyseus unregisters, as in a rolling deploy.
        if let Some(os_pid) = child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &os_pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let per_proxy: BTreeMap<String, Value> = proxies
        .iter()
        .map(|(label, _)| {
            let mut s = samples.remove(label).unwrap_or_default();
            let statuses: BTreeMap<String, u32> = before
                .remove(label)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let v = json!({
                "routable_ms": summary(&mut s),
                "samples_ms": s,
                // Probes answered otherwise before the first routed one, by status (0: no
                // HTTP answer; 101: another process answered).
                "answers_before_routed": statuses,
            });
            (label.clone(), v)
        })
        .collect();
    Ok(json!({
        "mode": "converge-colyseus",
        "label": cfg.label,
        "trials": cfg.trials,
        "interval_ms": cfg.interval_ms,
        "proxies": per_proxy,
        "failures": failures,
        "added_at_unix_s": added_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pushes() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$24\r\ncolyseus:nodes:discovery\r\n$5\r\n\"a,b\"\r\n";
        assert_eq!(
            push_of(msg).unwrap(),
            Some(("\"a,b\"".to_owned(), msg.len()))
        );
        assert_eq!(push_of(&msg[..20]).unwrap(), None);
        assert!(push_of(b"+OK\r\n").is_err());
    }
}
