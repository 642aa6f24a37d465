//! Issue 14: room WebSockets on Envoy's TCP path (`bootstrap --edge-path tcp`), against the
//! real Envoy, agent, Redis, Colyseus servers and colyseus.js clients: real joins take the
//! raw path and matchmaking the HCM; hostile heads never take the raw path; a silent
//! connection is closed by the head deadline; a removed cluster keeps its raw connections;
//! the same request reaches the same upstream with the same headers on both paths; the
//! generated configurations pass `envoy --mode validate`.
//!
//! Cost: about 40 s on 2 cores (three proxies, two game servers, 60 colyseus.js clients).
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::*;

const TCP: &[&str] = &["--edge-path", "tcp"];

/// An upstream that records every request head it gets; a WebSocket upgrade is accepted
/// (101) and then echoes every byte back, so a test can see a raw connection is alive.
struct Recorder {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let h = h.clone();
                std::thread::spawn(move || record(stream, &h));
            }
        });
        Recorder { port, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn record(mut stream: TcpStream, heads: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    heads.lock().unwrap().push(head.clone());
    if head.to_ascii_lowercase().contains("upgrade: websocket") {
        let accept = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        if stream.write_all(accept.as_bytes()).is_err() {
            return;
        }
        let _ = stream.write_all(&buf[end..]);
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 || stream.write_all(&chunk[..n]).is_err() {
                return;
            }
        }
        return;
    }
    let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    let _ = stream.write_all(reply.as_bytes());
}

/// The headers of a recorded head as a sorted multiset of `name: value` (lowercase names).
fn header_set(head: &str) -> Vec<String> {
    let mut set: Vec<String> = head
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            format!("{}: {}", k.to_ascii_lowercase(), v.trim())
        })
        .collect();
    set.sort();
    set
}

/// A WebSocket upgrade written on a raw socket; returns the stream after the 101 (or the
/// status line if it was not 101).
fn raw_upgrade(addr: &str, path: &str, extra: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    if text.starts_with("HTTP/1.1 101") {
        Ok(s)
    } else {
        Err(text)
    }
}

/// Waits until the filter's live set (the agent's long-poll, per worker) has `process_id`: a
/// room upgrade to it then no longer reaches the HCM. Before that, room upgrades go through
/// the HCM, which routes them as on the HTTP path.
fn wait_raw_path(proxy: &Proxy, process_id: &str) {
    wait_for("the raw path to a process", Duration::from_secs(10), || {
        // Several tries per round: each of Envoy's workers has its own live set.
        let mut raw = 0;
        for _ in 0..4 {
            let before = proxy.envoy_stat("http.public.downstream_cx_total");
            let path = format!("/{process_id}/probe?sessionId=s");
            let _ = raw_upgrade(&proxy.public(), &path, "");
            raw += usize::from(proxy.envoy_stat("http.public.downstream_cx_total") == before);
        }
        (raw == 4).then_some(())
    });
}

/// Writes `msg` and reads it back from an echoing raw connection.
fn echoes(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).is_ok() && back == msg
}

/// Real colyseus.js joins over the TCP path: each room WebSocket is raw (the HCM sees no
/// upgrade), matchmaking went through the HCM's internal listener, every client echoed
/// with its room's process; the same over TLS (`wss://`).
#[test]
fn real_joins_take_the_raw_path_and_matchmaking_the_hcm() {
    let stack = Stack::new("l4-joins")
        .servers(2)
        .bootstrap_args(TCP)
        .start();
    let (proxy, servers) = (&stack.proxy, stack.servers.as_slice());
    for s in servers {
        wait_raw_path(proxy, &s.process_id);
    }
    let upgrades_before = proxy.envoy_stat("http.public.downstream_cx_upgrades_total");
    let result = swarm(
        &proxy.endpoint(),
        60,
        &["--concurrency", "6", "--messages", "5"],
    );
    assert_eq!(result.ok, 60, "errors: {:?}", result.errors);
    for s in servers {
        assert!(result.by_process.get(&s.process_id).copied().unwrap_or(0) > 0);
    }
    // 60 joins, each one matchmaking request through the HCM and one raw WebSocket.
    let upgrades = proxy.envoy_stat("http.public.downstream_cx_upgrades_total") - upgrades_before;
    let via_hcm = proxy.envoy_stat("cluster.colyseus_hcm.upstream_cx_total");
    let raw: u64 = servers
        .iter()
        .map(|s| {
            proxy.envoy_stat(&format!(
                "cluster.colyseus-process-{}.upstream_cx_total",
                s.process_id
            ))
        })
        .sum();
    println!("HCM upgrades {upgrades}, connections to the HCM {via_hcm}, to processes {raw}");
    assert_eq!(upgrades, 0, "a room WebSocket went through the HCM");
    assert!(via_hcm >= 1, "matchmaking did not go through the HCM");
    assert!(raw >= 60, "{raw} process connections for 60 WebSockets");
    proxy.assert_no_rejected_config();
}

/// Hostile heads on the raw path: each reaches the HCM (which answers or refuses it as on
/// the HTTP path), never a process raw; the forwarding headers a client forges on a room
/// upgrade are replaced on the raw path.
#[test]
fn hostile_heads_never_go_raw() {
    let dir = scratch("l4-hostile");
    let redis = Redis::start(&dir);
    let rec = Recorder::start();
    let proxy = Proxy::start_full(&dir, &redis.url(), &[], TCP);
    register(&mut redis.conn(), &format!("rec1/127.0.0.1:{}", rec.port));
    proxy.wait_routed(vec!["rec1".into()], Duration::from_secs(10));
    wait_raw_path(&proxy, "rec1");
    let room = "GET /rec1/r?sessionId=s HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("CL and TE", format!("{room}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes()),
        ("two CL", format!("{room}Content-Length: 0\r\nContent-Length: 5\r\n\r\n").into_bytes()),
        ("obs-fold", format!("{room}X-A: a\r\n b\r\n\r\n").into_bytes()),
        ("bare LF", b"GET /rec1/r?sessionId=s HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: Upgrade\n\n".to_vec()),
        ("body on the upgrade", format!("{room}\r\nGET /rec1/r2?sessionId=s HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes()),
        ("absolute form", b"GET http://127.0.0.1/rec1/r?sessionId=s HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec()),
        ("not GET", b"POST /rec1/r?sessionId=s HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("dot segments", b"GET /x/../rec1/r?sessionId=s HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec()),
        ("routing header", format!("{room}X-Envoy-Original-Path: /\r\n\r\n").into_bytes()),
        ("h2c preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("too large", format!("{room}X-Big: {}\r\n\r\n", "a".repeat(20_000)).into_bytes()),
    ];
    for (what, bytes) in hostile {
        let before = proxy.envoy_stat("http.public.downstream_cx_total");
        let mut s = TcpStream::connect(proxy.public()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        println!("{what}: {:?}", reply.lines().next().unwrap_or(""));
        wait_for(
            &format!("{what} reaching the HCM"),
            Duration::from_secs(5),
            || (proxy.envoy_stat("http.public.downstream_cx_total") > before).then_some(()),
        );
    }
    // Forged forwarding headers on a raw room upgrade are replaced by the client's address.
    let forged = "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Client-IP: 6.6.6.6\r\n\
                  Forwarded: for=6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nX-Forwarded-Proto: gopher\r\n\
                  X-Colyseus-Cluster: colyseus_agent\r\n";
    let before = proxy.envoy_stat("http.public.downstream_cx_total");
    let mut s = raw_upgrade(&proxy.public(), "/rec1/forged?sessionId=s", forged).unwrap();
    assert!(echoes(&mut s, b"ping"));
    assert_eq!(
        proxy.envoy_stat("http.public.downstream_cx_total"),
        before,
        "not raw"
    );
    let head = rec
        .heads()
        .into_iter()
        .find(|h| h.contains("/rec1/forged"))
        .unwrap();
    println!("the process saw on the raw path:\n{head}");
    let lower = head.to_ascii_lowercase();
    for bad in [
        "6.6.6.6",
        "gopher",
        "colyseus_agent",
        "forwarded:",
        "true-client-ip",
    ] {
        assert!(!lower.contains(bad), "{bad} in {head}");
    }
    assert!(lower.contains("x-forwarded-for: 127.0.0.1\r\n"), "{head}");
    assert!(lower.contains("x-real-ip: 127.0.0.1\r\n"), "{head}");
}

/// A connection that sends nothing is closed by the head deadline
/// (`--silent-connection-timeout`, checked at the filter's 1 s tick); a removed cluster keeps
/// its open raw connections until they close.
#[test]
fn silent_connections_close_and_removed_clusters_keep_raw_connections() {
    let dir = scratch("l4-deadline");
    let redis = Redis::start(&dir);
    let rec = Recorder::start();
    let proxy = Proxy::start_full(
        &dir,
        &redis.url(),
        &[],
        &["--edge-path", "tcp", "--silent-connection-timeout", "1s"],
    );
    let member = format!("rec1/127.0.0.1:{}", rec.port);
    register(&mut redis.conn(), &member);
    proxy.wait_routed(vec!["rec1".into()], Duration::from_secs(10));
    let mut silent = TcpStream::connect(proxy.public()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let closed = matches!(silent.read(&mut buf), Ok(0) | Err(_));
    let after = start.elapsed();
    println!("silent connection closed after {after:?}");
    assert!(closed && after >= Duration::from_millis(900) && after < Duration::from_secs(5));

    let mut raw = wait_for("a raw room connection", Duration::from_secs(10), || {
        let before = proxy.envoy_stat("http.public.downstream_cx_total");
        let s = raw_upgrade(&proxy.public(), "/rec1/r?sessionId=s", "").ok()?;
        (proxy.envoy_stat("http.public.downstream_cx_total") == before).then_some(s)
    });
    assert!(echoes(&mut raw, b"before"));
    unregister(&mut redis.conn(), &member);
    proxy.wait_routed(vec![], Duration::from_secs(10));
    // New connections to the process are no longer raw (nor routed); the open one lives.
    std::thread::sleep(Duration::from_secs(1));
    assert!(echoes(&mut raw, b"after the cluster was removed"));
    drop(raw);
}

/// The same room upgrade, sent through a proxy on each path to the same process, reaches
/// it with the same request line and the same headers.
#[test]
fn the_same_request_gets_the_same_cluster_and_headers_on_both_paths() {
    let dir = scratch("l4-parity");
    let redis = Redis::start(&dir);
    let rec = Recorder::start();
    let http = Proxy::start_full(
        &dir.join("http"),
        &redis.url(),
        &[],
        &["--edge-path", "http"],
    );
    let tcp = Proxy::start_full(&dir.join("tcp"), &redis.url(), &[], TCP);
    register(&mut redis.conn(), &format!("rec1/127.0.0.1:{}", rec.port));
    for p in [&http, &tcp] {
        p.wait_routed(vec!["rec1".into()], Duration::from_secs(10));
    }
    wait_raw_path(&tcp, "rec1");
    let upgrades_before = tcp.envoy_stat("http.public.downstream_cx_upgrades_total");
    let extra = "Cookie: a=1\r\nx-custom:  spaced value  \r\nOrigin: http://game.example\r\n\
                 X-Forwarded-For: 6.6.6.6\r\nForwarded: for=x\r\nSec-WebSocket-Protocol: p\r\n";
    let mut heads = BTreeMap::new();
    for (name, proxy) in [("http", &http), ("tcp", &tcp)] {
        let path = "/eu/rec1/r1?sessionId=s&reconnectionToken=t";
        let mut s = wait_for("the upgrade", Duration::from_secs(10), || {
            raw_upgrade(&proxy.public(), path, extra).ok()
        });
        assert!(echoes(&mut s, b"x"));
        let head = rec.heads().into_iter().last().unwrap();
        // The Host each proxy got differs by port only; compare the rest.
        let host = format!("host: {}", proxy.public());
        let set: Vec<String> = header_set(&head)
            .into_iter()
            .filter(|h| *h != host)
            .collect();
        let line = head.lines().next().unwrap().to_owned();
        heads.insert(name, (line, set));
    }
    println!("{heads:#?}");
    assert_eq!(heads["http"], heads["tcp"]);
    // The raw path really was raw.
    assert_eq!(
        tcp.envoy_stat("http.public.downstream_cx_upgrades_total"),
        upgrades_before
    );
}

/// The TCP path's bootstraps, with and without TLS, pass `envoy --mode validate`.
#[test]
fn tcp_bootstraps_pass_envoy_validate() {
    let dir = scratch("l4-validate");
    make_cert(&dir, "cert");
    let config_dir = dir.join("envoy-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("cds.json"), r#"{"resources":[]}"#).unwrap();
    let tls_args = [
        "--tls-cert",
        &dir.join("cert.pem").display().to_string(),
        "--tls-key",
        &dir.join("cert.key").display().to_string(),
    ]
    .map(|s| s.to_owned());
    for tls in [false, true] {
        let mut cmd = std::process::Command::new(agent_bin());
        cmd.args(["bootstrap", "--port", "8080", "--edge-path", "tcp"])
            .arg("--config-dir")
            .arg(&config_dir)
            .arg("--filter-wasm")
            .arg(filter_wasm());
        if tls {
            cmd.args(&tls_args);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = dir.join(format!("tcp-{tls}.json"));
        std::fs::write(&file, &out.stdout).unwrap();
        let out = std::process::Command::new(envoy_bin())
            .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tls {tls}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
