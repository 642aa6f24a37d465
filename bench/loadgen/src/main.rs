//! `loadgen`: the benchmark's WebSocket load generator. Prints one JSON line of results.
//!
//! - `loadgen connect --url ws://.. --n N --concurrency C`: opens N WebSocket connections
//!   (spread round-robin over the URLs), C handshakes at a time, keeps them all open; reports
//!   setup rate, handshake latency (TCP connect to `101` received) and errors.
//! - `loadgen echo --url ws://.. --connections C --inflight K --duration-s T`: opens C
//!   connections, then a closed loop of K 64-byte messages in flight per connection;
//!   reports messages/s and round-trip latency over T seconds after a warm-up.
//!
//! - `loadgen converge --proxy H:P --redis H:P --upstream H:P --tag T`: registration to first
//!   routed upgrade, and removal to unroutable, over fresh processIds (see `converge.rs`).
//! - `loadgen converge-colyseus --proxy L=H:P... --redis H:P --server example/server.js`:
//!   the same with real Colyseus servers started one per trial (see `converge_colyseus.rs`).
//!
//! `connect` and `echo` report the load generator's own CPU time (from /proc/self/stat) over the measured
//! interval, and for every `--watch-pid` its CPU time and RSS (from /proc/PID) over the same
//! interval, so the proxy's cost is measured exactly where the load is.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use colyseus_envoy_bench::{accept_key, encode_frame, proc_sample, status_of, ProcSample, Reader};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

mod converge;
mod converge_colyseus;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Connection setup rate and handshake latency.
    Connect {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Handshakes in progress at once.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Wait after the last handshake before the CPU/RSS sample (the proxy settles).
        #[arg(long, default_value_t = 500)]
        settle_ms: u64,
    },
    /// Closed-loop message round trips over open connections.
    Echo {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 200)]
        connections: usize,
        /// Messages in flight per connection.
        #[arg(long, default_value_t = 4)]
        inflight: usize,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup_s: f64,
        #[arg(long, default_value_t = 5.0)]
        duration_s: f64,
        /// Handshakes in progress at once while opening the connections.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
    },
    /// Time from a Redis registration to the first routed upgrade, and from the removal to
    /// unroutable.
    Converge(converge::Converge),
    /// Registration to the first routed room connection with real Colyseus game servers
    /// started one by one, through several proxies at once.
    ConvergeColyseus(converge_colyseus::ConvergeColyseus),
}

#[derive(ClapArgs)]
struct Common {
    /// WebSocket URL(s), `ws://host:port/path?query`; repeat or separate with commas.
    #[arg(long = "url", required = true, value_delimiter = ',')]
    urls: Vec<String>,
    /// Runtime worker threads (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Processes whose CPU time and RSS to sample over the measured interval.
    #[arg(long = "watch-pid", value_delimiter = ',')]
    watch_pids: Vec<u32>,
    /// Handshake timeout.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Free-form label copied into the result.
    #[arg(long, default_value = "")]
    label: String,
}

struct Target {
    addr: String,
    request: Vec<u8>,
    key: String,
}

fn parse_url(url: &str, i: usize) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("only ws:// URLs: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, "/"),
    };
    let key = colyseus_envoy_bench::base64(&(i as u128).to_le_bytes());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    Ok(Target {
        addr: host.to_owned(),
        request,
        key,
    })
}

type Conn = (Reader<OwnedReadHalf>, OwnedWriteHalf);

async fn handshake(t: &Target, timeout: Duration) -> Result<Conn, String> {
    let fut = async {
        let sock = TcpStream::connect(&t.addr)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        sock.set_nodelay(true)
            .map_err(|e| format!("io: {}", e.kind()))?;
        let (rd, mut wr) = sock.into_split();
        wr.write_all(&t.request)
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        let mut rd = Reader::new(rd);
        let head = rd.read_head().await.map_err(|e| format!("read: {e}"))?;
        let status = status_of(&head);
        if status != 101 {
            return Err(format!("status {status}"));
        }
        let want = accept_key(&t.key);
        let ok = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == want
            })
        });
        if !ok {
            return Err("bad Sec-WebSocket-Accept".to_owned());
        }
        Ok((rd, wr))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err("timeout".to_owned()),
    }
}

struct Opened {
    conns: Vec<Conn>,
    handshake_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    wall: Duration,
}

/// Opens `n` connections, `concurrency` handshakes at a time, round-robin over `targets`.
async fn open_all(
    targets: Arc<Vec<Target>>,
    n: usize,
    concurrency: usize,
    timeout: Duration,
) -> Opened {
    let next = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (next, targets, conns) = (next.clone(), targets.clone(), conns.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = &targets[i % targets.len()];
                let t0 = Instant::now();
                match handshake(t, timeout).await {
                    Ok(c) => {
                        lat.push(t0.elapsed().as_micros() as u64);
                        if let Ok(mut v) = conns.lock() {
                            v.push(c);
                        }
                    }
                    Err(e) => *errors.entry(e).or_default() += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut handshake_us = Vec::with_capacity(n);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for w in workers {
        match w.await {
            Ok((lat, errs)) => {
                handshake_us.extend(lat);
                for (k, v) in errs {
                    *errors.entry(k).or_default() += v;
                }
            }
            Err(e) => *errors.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let wall = start.elapsed();
    let conns = std::mem::take(&mut *conns.lock().unwrap_or_else(|e| e.into_inner()));
    Opened {
        conns,
        handshake_us,
        errors,
        wall,
    }
}

fn pct(sorted: &[u64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let idx = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    json!(sorted[idx])
}

struct Samples {
    at: Instant,
    me: ProcSample,
    watched: Vec<(u32, Option<ProcSample>)>,
}

fn sample(pids: &[u32]) -> Samples {
    Samples {
        at: Instant::now(),
        me: proc_sample(None).unwrap_or_default(),
        watched: pids.iter().map(|&p| (p, proc_sample(Some(p)))).collect(),
    }
}

/// Loadgen's and the watched processes' CPU and RSS between two samples.
fn usage(before: &Samples, after: &Samples, threads: usize) -> Value {
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let me_cpu = after.me.cpu.saturating_sub(before.me.cpu).as_secs_f64();
    let mut procs = serde_json::Map::new();
    let (mut cpu_sum, mut rss_before, mut rss_after) = (0.0, 0u64, 0u64);
    for ((pid, b), (_, a)) in before.watched.iter().zip(&after.watched) {
        if let (Some(b), Some(a)) = (b, a) {
            let cpu = a.cpu.saturating_sub(b.cpu).as_secs_f64();
            cpu_sum += cpu;
            rss_before += b.rss_kb;
            rss_after += a.rss_kb;
            procs.insert(
                pid.to_string(),
                json!({"cpu_s": cpu, "rss_before_kb": b.rss_kb, "rss_after_kb": a.rss_kb}),
            );
        } else {
            procs.insert(pid.to_string(), json!({"error": "no such process"}));
        }
    }
    json!({
        "wall_s": wall,
        "loadgen_cpu_s": me_cpu,
        "loadgen_threads": threads,
        // Share of its threads' capacity the load generator used: near 1.0 = saturated.
        "loadgen_busy": if wall > 0.0 { me_cpu / (wall * threads as f64) } else { 0.0 },
        "watched": procs,
        "watched_cpu_s": cpu_sum,
        "watched_rss_before_kb": rss_before,
        "watched_rss_after_kb": rss_after,
    })
}

async fn run_connect(common: &Common, n: usize, concurrency: usize, settle_ms: u64) -> Value {
    let targets = match common
        .urls
        .iter()
        .enumerate()
        .map(|(i, u)| parse_url(u, i))
        .collect::<anyhow::Result<Vec<_>>>()
    {
        Ok(t) => Arc::new(t),
        Err(e) => return json!({"error": e.to_string()}),
    };
    let before = sample(&common.watch_pids);
    let mut opened = open_all(
        targets,
        n,
        concurrency,
        Duration::from_millis(common.timeout_ms),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(settle_ms)).await;
    let after = sample(&common.watch_pids);
    opened.handshake_us.sort_unstable();
    let ok = opened.conns.len();
    let u = usage(&before, &after, common.threads);
    let rss_delta = u["watched_rss_after_kb"].as_u64().unwrap_or(0) as f64
        - u["watched_rss_before_kb"].as_u64().unwrap_or(0) as f64;
    let cpu = u["watched_cpu_s"].as_f64().unwrap_or(0.0);
    let result = json!({
        "mode": "connect",
        "label": common.label,
        "n": n,
        "concurrency": concurrency,
        "ok": ok,
        "errors": opened.errors.values().sum::<u64>(),
        "error_kinds": opened.errors,
        "setup_wall_s": opened.wall.as_secs_f64(),
        "conn_per_s": ok as f64 / opened.wall.as_secs_f64().max(1e-9),
        "handshake_us": {
            "p50": pct(&opened.handshake_us, 0.50),
            "p99": pct(&opened.handshake_us, 0.99),
            "max": opened.handshake_us.last(),
        },
        "watched_cpu_us_per_conn": if ok > 0 { json!(cpu * 1e6 / ok as f64) } else { Value::Null },
        "watched_rss_kb_per_conn": if ok > 0 { json!(rss_delta / ok as f64) } else { Value::Null },
        "usage": u,
    });
    drop(opened.conns);
    result
}

struct EchoOut {
    count: u64,
    rtts: Vec<u32>,
    error: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn echo_conn(
    (mut rd, mut wr): Conn,
    frame: Arc<Vec<u8>>,
    size: usize,
    inflight: usize,
    from: Instant,
    until: Instant,
) -> EchoOut {
    let mut out = EchoOut {
        count: 0,
        rtts: Vec::new(),
        error: None,
    };
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(inflight);
    let res: anyhow::Result<()> = async {
        let mut burst = Vec::with_capacity(frame.len() * inflight);
        for _ in 0..inflight {
            burst.extend_from_slice(&frame);
        }
        let now = Instant::now();
        wr.write_all(&burst).await?;
        sent.extend(std::iter::repeat_n(now, inflight));
        loop {
            let f = rd.read_frame().await?;
            let now = Instant::now();
            anyhow::ensure!(f.payload.len() == size, "echo of {} bytes", f.payload.len());
            let t0 = sent.pop_front().context("reply without a message")?;
            if now >= from && now < until {
                out.count += 1;
                out.rtts
                    .push(now.duration_since(t0).as_micros().min(u32::MAX as u128) as u32);
            }
            if now >= until {
                return Ok(());
            }
            wr.write_all(&frame).await?;
            sent.push_back(Instant::now());
        }
    }
    .await;
    if let Err(e) = res {
        out.error = Some(e.to_string());
    }
    out
}

async fn run_echo(
    common: &Common,
    connections: usize,
    inflight: usize,
    size: usize,
    warmup: f64,
    duration: f64,
    concurrency: usize,
) -> Value {
    let targets = match common
        .urls
        .iter()
        .enumerate()
        .map(|(i, u)| parse_url(u, i))
        .collect::<anyhow::Result<Vec<_>>>()
    {
        Ok(t) => Arc::new(t),
        Err(e) => return json!({"error": e.to_string()}),
    };
    let opened = open_all(
        targets,
        connections,
        concurrency,
        Duration::from_millis(common.timeout_ms),
    )
    .await;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut frame = Vec::new();
    encode_frame(&mut frame, 0x2, &payload, Some([0x12, 0x34, 0x56, 0x78]));
    let frame = Arc::new(frame);
    let start = Instant::now();
    let from = start + Duration::from_secs_f64(warmup);
    let until = from + Duration::from_secs_f64(duration);
    let ok_conns = opened.conns.len();
    let tasks: Vec<_> = opened
        .conns
        .into_iter()
        .map(|c| {
            let frame = frame.clone();
            tokio::spawn(async move {
                let deadline = until + Duration::from_secs(5);
                match tokio::time::timeout_at(
                    deadline.into(),
                    echo_conn(c, frame, size, inflight, from, until),
                )
                .await
                {
                    Ok(o) => o,
                    Err(_) => EchoOut {
                        count: 0,
                        rtts: Vec::new(),
                        error: Some("stalled".to_owned()),
                    },
                }
            })
        })
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let before = sample(&common.watch_pids);
    tokio::time::sleep_until(until.into()).await;
    let after = sample(&common.watch_pids);
    let mut rtts: Vec<u64> = Vec::new();
    let mut count = 0u64;
    let mut errors = opened.errors.clone();
    for t in tasks {
        match t.await {
            Ok(o) => {
                count += o.count;
                rtts.extend(o.rtts.into_iter().map(u64::from));
                if let Some(e) = o.error {
                    *errors.entry(e).or_default() += 1;
                }
            }
            Err(e) => *errors.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    rtts.sort_unstable();
    let u = usage(&before, &after, common.threads);
    let cpu = u["watched_cpu_s"].as_f64().unwrap_or(0.0);
    json!({
        "mode": "echo",
        "label": common.label,
        "connections": connections,
        "connected": ok_conns,
        "inflight": inflight,
        "size": size,
        "duration_s": duration,
        "messages": count,
        "msg_per_s": count as f64 / duration,
        "errors": errors.values().sum::<u64>(),
        "error_kinds": errors,
        "rtt_us": {
            "p50": pct(&rtts, 0.50),
            "p99": pct(&rtts, 0.99),
            "p999": pct(&rtts, 0.999),
            "max": rtts.last(),
        },
        "watched_cpu_us_per_msg": if count > 0 { json!(cpu * 1e6 / count as f64) } else { Value::Null },
        "usage": u,
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.mode {
        Mode::Connect { common, .. } | Mode::Echo { common, .. } => common.threads.max(1),
        Mode::Converge(_) | Mode::ConvergeColyseus(_) => 1,
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let result = rt.block_on(async {
        match &cli.mode {
            Mode::Connect {
                common,
                n,
                concurrency,
                settle_ms,
            } => run_connect(common, *n, *concurrency, *settle_ms).await,
            Mode::Echo {
                common,
                connections,
                inflight,
                size,
                warmup_s,
                duration_s,
                concurrency,
            } => {
                run_echo(
                    common,
                    *connections,
                    *inflight,
                    *size,
                    *warmup_s,
                    *duration_s,
                    *concurrency,
                )
                .await
            }
            // An error is a result too: the harness records it and goes on.
            Mode::Converge(cfg) => converge::run(cfg).await.unwrap_or_else(
                |e| json!({"mode": "converge", "label": cfg.label(), "error": format!("{e:#}")}),
            ),
            Mode::ConvergeColyseus(cfg) => converge_colyseus::run(cfg).await.unwrap_or_else(
                |e| json!({"mode": "converge-colyseus", "label": cfg.label(), "error": format!("{e:#}")}),
            ),
        }
    });
    println!("{result}");
    Ok(())
}
