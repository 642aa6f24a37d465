//! `loadgen converge`: how fast a proxy follows Colyseus's Redis presence.
//!
//! Each trial registers a fresh processId for an upstream that is already running, exactly
//! as a Colyseus 0.11-0.16 process does (`SADD colyseus:nodes {pid}/{host:port}`, then
//! `PUBLISH colyseus:nodes:discovery` of the JSON string `"add,{member}"`), and opens
//! WebSocket upgrades to `/{pid}/r{pid}?sessionId=x` about every millisecond until that upstream
//! answers one with `101` (it is recognized by its `x-bench-echo` tag: @colyseus/proxy sends
//! an unknown processId to any process, so "some 101" would prove nothing). Then it
//! unregisters it the same way (`SREM`, `"remove,{member}"`) and polls until the proxy stops
//! sending new work there, by one of two definitions (`--removal`):
//! - `route`: an upgrade to `/{pid}/...` no longer reaches the upstream (@colyseus/proxy
//!   forgets the process: room paths and matchmaking alike);
//! - `all-cluster`: Envoy's matchmaking cluster `colyseus-all` no longer lists it (admin
//!   `/clusters`). Our agent drains a removed process: its own cluster stays while it accepts
//!   TCP, so room paths keep routing on purpose; each trial checks that they still do.
//!
//! Redis is spoken with a minimal RESP client: the benchmark needs four commands.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use colyseus_envoy_bench::{status_of, Reader};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NODES_SET: &str = "colyseus:nodes";
const DISCOVERY_CHANNEL: &str = "colyseus:nodes:discovery";

#[derive(Args)]
pub struct Converge {
    /// The proxy's public address, `host:port`.
    #[arg(long)]
    proxy: String,
    /// The Redis the proxy follows, `host:port`.
    #[arg(long)]
    redis: String,
    /// `host:port` every fresh processId is registered with: an upstream that is already
    /// running (`bench-echo --tag`), so only the proxy's reaction is timed.
    #[arg(long)]
    upstream: String,
    /// The upstream's `--tag`: an upgrade counts as routed only when that upstream answered.
    #[arg(long)]
    tag: String,
    /// What "unroutable" means after the removal (see the module documentation).
    #[arg(long, value_enum, default_value_t = Removal::Route)]
    removal: Removal,
    /// Envoy admin `host:port`, for `--removal all-cluster`.
    #[arg(long, required_if_eq("removal", "all-cluster"))]
    admin: Option<String>,
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Least time between the starts of two probes.
    #[arg(long, default_value_t = 1)]
    interval_ms: u64,
    /// Give up on one step of a trial after this long.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Free-form label copied into the result.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Removal {
    /// Until an upgrade to the processId's path no longer reaches its upstream.
    Route,
    /// Until Envoy's `colyseus-all` cluster no longer lists the upstream.
    AllCluster,
}

// === RESP ===

/// Appends one command as a RESP array of bulk strings.
pub(crate) fn resp_command(out: &mut Vec<u8>, args: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes one simple, integer or bulk reply at the start of `buf`, with the bytes it used;
/// `Ok(None)` while it is incomplete. A Redis error reply is an `Err`.
pub(crate) fn resp_reply(buf: &[u8]) -> anyhow::Result<Option<(String, usize)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = buf
        .get(1..end)
        .map(String::from_utf8_lossy)
        .context("empty redis reply line")?;
    match buf[0] {
        b'+' | b':' => Ok(Some((line.into_owned(), end + 2))),
        b'-' => anyhow::bail!("redis: {line}"),
        b'$' => {
            let Ok(n) = usize::try_from(line.parse::<i64>()?) else {
                return Ok(Some((String::new(), end + 2))); // nil
            };
            let total = end + 2 + n + 2;
            Ok(buf.get(end + 2..end + 2 + n).and_then(|data| {
                (buf.len() >= total).then(|| (String::from_utf8_lossy(data).into_owned(), total))
            }))
        }
        other => anyhow::bail!("unexpected redis reply type {:?}", char::from(other)),
    }
}

struct Redis {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Redis {
    async fn connect(addr: &str) -> anyhow::Result<Self> {
        let sock = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to redis at {addr}"))?;
        sock.set_nodelay(true)?;
        Ok(Redis {
            sock,
            buf: Vec::new(),
        })
    }

    /// Sends the commands in one write and reads their replies.
    async fn pipeline(&mut self, cmds: &[&[&str]]) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for c in cmds {
            resp_command(&mut out, c);
        }
        self.sock.write_all(&out).await?;
        let mut replies = Vec::with_capacity(cmds.len());
        while replies.len() < cmds.len() {
            match resp_reply(&self.buf)? {
                Some((r, used)) => {
                    self.buf.drain(..used);
                    replies.push(r);
                }
                None => {
                    let mut chunk = [0u8; 1024];
                    let n = self.sock.read(&mut chunk).await?;
                    anyhow::ensure!(n > 0, "redis closed the connection");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        Ok(replies)
    }

    /// Registers (`add`) or unregisters (`remove`) `member` as Colyseus does.
    async fn announce(&mut self, add: bool, member: &str) -> anyhow::Result<()> {
        let (cmd, verb) = if add {
            ("SADD", "add")
        } else {
            ("SREM", "remove")
        };
        let payload = format!("\"{verb},{member}\"");
        self.pipeline(&[
            &[cmd, NODES_SET, member],
            &["PUBLISH", DISCOVERY_CHANNEL, &payload],
        ])
        .await?;
        Ok(())
    }
}

// === probes ===

/// One WebSocket upgrade to `path` through `addr`: the status and the `x-bench-echo` tag of
/// whoever answered (status 0: no HTTP answer, e.g. refused or closed).
async fn probe(addr: &str, path: &str) -> (u16, Option<String>) {
    probe_tagged(addr, path, "x-bench-echo").await
}

/// [`probe`], reading the tag from response header `tag_header`.
pub(crate) async fn probe_tagged(
    addr: &str,
    path: &str,
    tag_header: &str,
) -> (u16, Option<String>) {
    let attempt = async {
        let mut sock = TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await?;
        let head = Reader::new(sock).read_head().await?;
        let tag = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(tag_header)
                .then(|| v.trim().to_owned())
        });
        anyhow::Ok((status_of(&head), tag))
    };
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(Ok(r)) => r,
        _ => (0, None),
    }
}

/// Whether Envoy's admin `/clusters` lists `upstream` as a host of `colyseus-all`.
async fn in_all_cluster(admin: &str, upstream: &str) -> anyhow::Result<bool> {
    let mut sock = TcpStream::connect(admin).await?;
    let req = format!("GET /clusters HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), sock.read_to_end(&mut body)).await??;
    let prefix = format!("colyseus-all::{upstream}::");
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .any(|l| l.starts_with(&prefix)))
}

/// Polls `check` every `interval` until it holds; the time since `since`, or `None` after
/// `timeout`.
pub(crate) async fn wait_until<F, Fut>(
    since: Instant,
    interval: Duration,
    timeout: Duration,
    mut check: F,
) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        let started = Instant::now();
        if check().await {
            return Some(since.elapsed());
        }
        if since.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep_until((started + interval).into()).await;
    }
}

pub(crate) fn summary(samples: &mut [f64]) -> Value {
    samples.sort_by(f64::total_cmp);
    let pick = |p: f64| {
        let n = samples.len();
        let i = ((p * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
        samples.get(i).copied()
    };
    json!({"p50": pick(0.5), "p99": pick(0.99), "max": samples.last()})
}

impl Converge {
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Runs the trials; the result as one JSON object.
///
/// # Errors
/// When Redis cannot be reached or refuses a command; a step that times out is recorded
/// in `failures` instead.
pub async fn run(cfg: &Converge) -> anyhow::Result<Value> {
    let mut redis = Redis::connect(&cfg.redis).await?;
    let interval = Duration::from_millis(cfg.interval_ms);
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let admin = cfg.admin.as_deref().unwrap_or_default();
    let (mut routable, mut unroutable) = (Vec::new(), Vec::new());
    let mut failures: Vec<String> = Vec::new();
    let mut drained_but_routed = 0usize;
    for i in 0..cfg.trials {
        // Unique per run and trial, in Colyseus's id alphabet.
        let pid = format!("cv{}x{i}", std::process::id());
        let member = format!("{pid}/{}", cfg.upstream);
        // A roomId of its own too: the filter caches a room's cluster by roomId for 2 s.
        let path = format!("/{pid}/r{pid}?sessionId=x");
        let routed = || async {
            let (status, tag) = probe(&cfg.proxy, &path).await;
            status == 101 && tag.as_deref() == Some(cfg.tag.as_str())
        };
        if routed().await {
            failures.push(format!("trial {i}: routed before its registration"));
            continue;
        }

        let t0 = Instant::now();
        redis.announce(true, &member).await?;
        match wait_until(t0, interval, timeout, routed).await {
            Some(d) => routable.push(d.as_secs_f64() * 1e3),
            None => failures.push(format!("trial {i}: not routable after {timeout:?}")),
        }
        let listed = || async { in_all_cluster(admin, &cfg.upstream).await.unwrap_or(false) };
        if cfg.removal == Removal::AllCluster
            && wait_until(Instant::now(), interval, timeout, listed)
                .await
                .is_none()
        {
            failures.push(format!("trial {i}: never listed in colyseus-all"));
        }

        let t1 = Instant::now();
        redis.announce(false, &member).await?;
        let gone = match cfg.removal {
            Removal::Route => wait_until(t1, interval, timeout, || async { !routed().await }).await,
            Removal::AllCluster => {
                let d = wait_until(t1, interval, timeout, || async { !listed().await }).await;
                drained_but_routed += usize::from(routed().await);
                d
            }
        };
        match gone {
            Some(d) => unroutable.push(d.as_secs_f64() * 1e3),
            None => failures.push(format!("trial {i}: still routed after {timeout:?}")),
        }
        // Lets the proxy settle before the next registration.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(json!({
        "mode": "converge",
        "label": cfg.label,
        "removal": match cfg.removal { Removal::Route => "route", Removal::AllCluster => "all-cluster" },
        "trials": cfg.trials,
        "interval_ms": cfg.interval_ms,
        "routable_ms": summary(&mut routable),
        "unroutable_ms": summary(&mut unroutable),
        "routable_samples_ms": routable,
        "unroutable_samples_ms": unroutable,
        // all-cluster: trials whose room path still reached the upstream once it had left
        // matchmaking (the drain keeps it; expected: every trial).
        "still_routed_after_removal": (cfg.removal == Removal::AllCluster).then_some(drained_but_routed),
        "failures": failures,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_encodes_bulk_strings() {
        let mut out = Vec::new();
        resp_command(&mut out, &["SADD", "colyseus:nodes", "p/h:1"]);
        assert_eq!(
            out,
            b"*3\r\n$4\r\nSADD\r\n$14\r\ncolyseus:nodes\r\n$5\r\np/h:1\r\n"
        );
    }

    #[test]
    fn resp_decodes_replies() {
        assert_eq!(resp_reply(b":1\r\n+OK").unwrap(), Some(("1".to_owned(), 4)));
        assert_eq!(
            resp_reply(b"$3\r\nabc\r\n").unwrap(),
            Some(("abc".to_owned(), 9))
        );
        assert_eq!(resp_reply(b"$3\r\nab").unwrap(), None);
        assert_eq!(resp_reply(b"$-1\r\n").unwrap(), Some((String::new(), 5)));
        assert_eq!(resp_reply(b":1").unwrap(), None);
        assert!(resp_reply(b"-ERR wrong type\r\n").is_err());
        assert!(resp_reply(b"\r\n").is_err());
    }
}
