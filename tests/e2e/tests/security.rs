//! Issue 11's findings, each re-run as an attacker would against the real Envoy, agent and
//! Redis: registrations pointing public traffic at Envoy's admin, the agent's API, the
//! instance-metadata address or a DNS name resolving to a refused address; silent
//! connections; h2c fan-out; forwarded headers, the redirect and Envoy's fingerprints.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;

/// A tiny HTTP upstream that answers every request with the request head it received, so
/// a test sees exactly what Envoy forwarded, and accepts and holds WebSocket upgrades.
/// Counts the requests it got.
struct Echo {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let r = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let r = r.clone();
                std::thread::spawn(move || serve(stream, &r));
            }
        });
        Echo { port, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Answers each request of a keep-alive connection with its head.
fn serve(mut stream: TcpStream, requests: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        requests.fetch_add(1, Ordering::SeqCst);
        if head.to_ascii_lowercase().contains("upgrade: websocket") {
            // Accept the WebSocket (the handshake's fixed test key) and hold it open.
            let accept = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
            if stream.write_all(accept.as_bytes()).is_ok() {
                while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {}
            }
            return;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn metrics(proxy: &Proxy) -> String {
    http_get(&proxy.api(), "/metrics").unwrap().2
}

fn rejected(proxy: &Proxy, reason: &str) -> u64 {
    proxy.agent_metric(&format!(
        "colyseus_envoy_rejected_inputs_total{{source=\"redis\",reason=\"{reason}\"}}"
    ))
}

/// The first finding: members at Envoy's admin (the TCP opt-in), at the agent's API and at
/// the cloud metadata address are refused with their reasons, never routed, and nothing on
/// the public port reaches them; a real upstream registered next to them is routed.
#[test]
fn poisoned_registrations_are_refused_and_unreachable() {
    let dir = scratch("sec-poison");
    let redis = Redis::start(&dir);
    let echo = Echo::start();
    let admin = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::start_full(
        &dir,
        &redis.url(),
        &["--admin-addr", &admin],
        &["--admin-addr", &admin],
    );
    let mut conn = redis.conn();
    let good = format!("echo1/127.0.0.1:{}", echo.port);
    register(&mut conn, &good);
    let poisoned = [
        (format!("stats/{admin}"), "upstream_envoy_admin"),
        (
            format!(
                "admin2/[::ffff:127.0.0.1]:{}",
                admin.rsplit(':').next().unwrap()
            ),
            "upstream_envoy_admin",
        ),
        (format!("metrics/{}", proxy.api()), "upstream_agent_api"),
        ("meta/169.254.169.254:80".to_owned(), "upstream_link_local"),
        (
            "meta6/[::ffff:169.254.169.254]:80".to_owned(),
            "upstream_link_local",
        ),
    ];
    for (member, _) in &poisoned {
        register(&mut conn, member);
    }
    proxy.wait_routed(vec!["echo1".into()], Duration::from_secs(10));
    // A full re-read (every 2 s in the harness) must not count them again.
    std::thread::sleep(Duration::from_secs(3));
    let m = metrics(&proxy);
    for reason in [
        "upstream_envoy_admin",
        "upstream_agent_api",
        "upstream_link_local",
    ] {
        assert_eq!(
            rejected(&proxy, reason),
            2 - u64::from(reason == "upstream_agent_api"),
            "{reason}: {m}"
        );
    }
    let (_, status) = proxy.status();
    println!("{status}");
    assert!(status.contains("upstream_envoy_admin 2"), "{status}");
    assert!(status.contains("upstream_agent_api 1"), "{status}");
    assert!(status.contains("upstream_link_local 2"), "{status}");
    for pid in ["stats", "admin2", "metrics", "meta", "meta6"] {
        assert!(
            !status.contains(&format!("\n{pid} ")),
            "{pid} listed: {status}"
        );
    }
    // The attacks of the finding: nothing reaches the admin or the API, ever.
    let before = echo.requests();
    for _ in 0..20 {
        for path in [
            "/stats/prometheus?sessionId=x",
            "/config_dump",
            "/metrics/x?sessionId=x",
            "/meta/latest?sessionId=x",
        ] {
            let (status, head, body) = http_get(&proxy.public(), path).unwrap();
            assert!(
                !body.contains("envoy_")
                    && !body.contains("colyseus_envoy_")
                    && !body.contains("configs"),
                "{path} reached a protected service: {status} {head}\n{body}"
            );
        }
    }
    // The room paths of the refused processes are unknown processes; the rest went to the
    // one real upstream.
    assert!(echo.requests() > before);
    let (status, _, _) = http_get(&proxy.public(), "/stats/prometheus?sessionId=x").unwrap();
    println!("GET /stats/prometheus?sessionId=x on the public port: {status}");
    let clusters = http_get(&proxy.admin(), "/clusters").unwrap().2;
    for pid in ["stats", "admin2", "metrics", "meta", "meta6"] {
        assert!(
            !clusters.contains(&format!("colyseus-process-{pid}::")),
            "{pid}"
        );
    }
    assert_eq!(
        proxy.all_cluster_hosts(),
        vec![format!("127.0.0.1:{}", echo.port)]
    );
    proxy.assert_no_rejected_config();
}

/// DNS names are resolved by the agent and checked every time: `localhost` at the agent's
/// API port is refused, at a real upstream's port routed (as a STATIC cluster of the
/// checked address); with an allow-list without loopback, `localhost` is refused too.
#[test]
fn dns_names_are_checked_after_resolution() {
    let dir = scratch("sec-dns");
    let redis = Redis::start(&dir);
    let echo = Echo::start();
    let proxy = Proxy::start(&dir, &redis);
    let mut conn = redis.conn();
    register(&mut conn, &format!("named/localhost:{}", echo.port));
    register(&mut conn, &format!("apiname/localhost:{}", proxy.api_port));
    proxy.wait_routed(vec!["named".into()], Duration::from_secs(10));
    wait_for(
        "the name at the API refused",
        Duration::from_secs(10),
        || (rejected(&proxy, "upstream_agent_api") == 1).then_some(()),
    );
    let cds = std::fs::read_to_string(dir.join("envoy-config/cds.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&cds).unwrap();
    let named = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "colyseus-process-named")
        .unwrap();
    assert_eq!(named["type"], "STATIC", "{named}");
    let (status, _, body) = http_get(&proxy.public(), "/named/room1?sessionId=x").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("GET /named/room1?sessionId=x"), "{body}");
    let (status, _, body) = http_get(&proxy.public(), "/apiname/room1?sessionId=x").unwrap();
    assert!(!body.contains("colyseus_envoy_"), "{status} {body}");
    drop(proxy);

    // Production: an allow-list without loopback.
    let dir2 = scratch("sec-dns-allow");
    let proxy = Proxy::start_with(
        &dir2,
        &redis.url(),
        &["--upstream-allow-cidrs", "10.0.0.0/8,fd00::/8"],
    );
    let seen = echo.requests();
    wait_for(
        "localhost refused by the allow-list",
        Duration::from_secs(10),
        || (rejected(&proxy, "upstream_not_allowed") >= 1).then_some(()),
    );
    assert!(proxy.routed().is_empty(), "{:?}", proxy.routed());
    let (_, status) = proxy.status();
    println!("{status}");
    assert!(status.contains("upstream_not_allowed"), "{status}");
    let (status, _, _) = http_get(&proxy.public(), "/named/room1?sessionId=x").unwrap();
    assert_ne!(status, 200);
    assert_eq!(echo.requests(), seen, "a refused name was reached");
}

/// Envoy's admin is a Unix socket of mode 0600 by default: no TCP port to name.
#[test]
fn admin_is_a_private_unix_socket() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = scratch("sec-admin");
    let redis = Redis::start(&dir);
    let proxy = Proxy::start(&dir, &redis);
    let socket = dir.join("envoy-admin.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let (status, _, body) = http_get(&proxy.admin(), "/ready").unwrap();
    assert_eq!((status, body.trim()), (200, "LIVE"));
    let (ok, text) = proxy.status();
    assert!(ok, "{text}");
    // Envoy listens on TCP for the public port only.
    let pid = proxy.envoy_pid();
    let out = std::process::Command::new("ss")
        .args(["-Htlnp"])
        .output()
        .unwrap();
    let mine: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(str::to_owned)
        .collect();
    assert!(!mine.is_empty(), "ss shows no socket of Envoy");
    assert!(
        mine.iter()
            .all(|l| l.contains(&format!(":{} ", proxy.port))),
        "{mine:?}"
    );
}

/// A connection that sends nothing is closed after `--silent-connection-timeout`; a held
/// WebSocket (real Colyseus clients) outlives it.
#[test]
fn silent_connections_are_closed_and_websockets_stay() {
    let dir = scratch("sec-silent");
    let redis = Redis::start(&dir);
    let server = GameServer::start(&dir, &redis, &[]);
    let proxy = Proxy::start_full(
        &dir,
        &redis.url(),
        &[],
        &["--silent-connection-timeout", "2s"],
    );
    proxy.wait_routed(vec![server.process_id.clone()], Duration::from_secs(10));
    let players = Holding::start(&proxy.endpoint(), 4);
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(proxy.public()).unwrap())
        .collect();
    let t0 = Instant::now();
    let mut closed_after = Vec::new();
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 1];
        let n = s.read(&mut b).unwrap_or(0);
        assert_eq!(n, 0, "a silent connection got data");
        closed_after.push(t0.elapsed());
    }
    let last = closed_after.iter().max().unwrap();
    println!("20 silent connections closed after at most {last:?} (timeout 2s)");
    assert!(*last < Duration::from_secs(5), "{last:?}");
    assert!(*closed_after.iter().min().unwrap() >= Duration::from_millis(1500));
    // The players held their WebSockets through it and still talk.
    std::thread::sleep(Duration::from_secs(2));
    let result = players.finish();
    assert_eq!(result.ok, 4, "{:?}", result.errors);
}

/// h2c prior knowledge is not spoken on the plaintext listener, so one connection cannot
/// open a hundred upstream requests; HTTP/1.1 keeps working.
#[test]
fn h2c_prior_knowledge_is_refused() {
    let dir = scratch("sec-h2c");
    let redis = Redis::start(&dir);
    let echo = Echo::start();
    let proxy = Proxy::start(&dir, &redis);
    register(&mut redis.conn(), &format!("echo1/127.0.0.1:{}", echo.port));
    proxy.wait_routed(vec!["echo1".into()], Duration::from_secs(10));
    let before = echo.requests();
    // curl with 100 streams of HTTP/2 prior knowledge over 5 connections.
    let urls: Vec<String> = (0..100)
        .map(|i| format!("http://{}/unknown/{i}", proxy.public()))
        .collect();
    let mut handles = Vec::new();
    for _ in 0..5 {
        let urls = urls.clone();
        handles.push(std::thread::spawn(move || {
            std::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "--http2-prior-knowledge",
                    "--parallel",
                ])
                .args([
                    "--parallel-max",
                    "100",
                    "--max-time",
                    "5",
                    "-w",
                    "%{http_code}\n",
                ])
                .args(&urls)
                .output()
                .unwrap()
        }));
    }
    let codes: Vec<String> = handles
        .into_iter()
        .flat_map(|h| {
            String::from_utf8_lossy(&h.join().unwrap().stdout)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let answered = codes.iter().filter(|c| c.as_str() != "000").count();
    println!(
        "h2c: {} requests, {answered} answered, upstream requests {}",
        codes.len(),
        echo.requests() - before
    );
    assert_eq!(echo.requests(), before, "h2c reached the upstream");
    assert_eq!(answered, 0, "{codes:?}");
    // HTTP/1.1 still works.
    let (status, _, _) = http_get(&proxy.public(), "/unknown/1").unwrap();
    assert_eq!(status, 200);
}

/// Client-sent forwarding headers do not reach the upstream; Envoy's own x-forwarded-for
/// does. Responses, proxied or local, carry no `server` or `x-envoy-*` header.
#[test]
fn forwarded_headers_are_stripped_and_envoy_is_not_fingerprinted() {
    let dir = scratch("sec-headers");
    let redis = Redis::start(&dir);
    let echo = Echo::start();
    let proxy = Proxy::start(&dir, &redis);
    register(&mut redis.conn(), &format!("echo1/127.0.0.1:{}", echo.port));
    proxy.wait_routed(vec!["echo1".into()], Duration::from_secs(10));
    let forged = [
        ("Forwarded", "for=6.6.6.6;host=evil;proto=https"),
        ("True-Client-IP", "6.6.6.6"),
        ("CF-Connecting-IP", "6.6.6.6"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "6666"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Client-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "gopher"),
    ];
    let (status, head, body) =
        http_request(&proxy.public(), "GET", "/echo1/r?sessionId=x", &forged).unwrap();
    assert_eq!(status, 200, "{head}");
    let seen = body.to_ascii_lowercase();
    println!("the upstream saw:\n{body}");
    assert!(!seen.contains("6.6.6.6"), "{body}");
    assert!(!seen.contains("evil"), "{body}");
    assert!(!seen.contains("6666"), "{body}");
    assert!(!seen.contains("gopher"), "{body}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\r\n"), "{body}");
    for (path, expect) in [("/echo1/r?sessionId=x", 200), ("/nope/r?sessionId=x", 404)] {
        let (status, head, _) = http_get(&proxy.public(), path).unwrap();
        assert_eq!(status, expect, "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(!lower.contains("\r\nserver:"), "{path}: {head}");
        assert!(!lower.contains("x-envoy-"), "{path}: {head}");
    }
}

/// The HTTP->HTTPS redirect goes to `--public-host`, whatever `Host` the client sends.
#[test]
fn redirect_goes_to_the_public_host() {
    let dir = scratch("sec-redirect");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_cert(&certs, "server");
    let redis = Redis::start(&dir);
    let tls_port = free_port().to_string();
    let cert = certs.join("server.pem").to_string_lossy().into_owned();
    let key = certs.join("server.key").to_string_lossy().into_owned();
    let proxy = Proxy::start_full(
        &dir,
        &redis.url(),
        &[],
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-port",
            &tls_port,
            "--public-host",
            "play.example.com",
        ],
    );
    let mut s = TcpStream::connect(proxy.public()).unwrap();
    s.write_all(b"GET /matchmake/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let lower = text.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 301"), "{text}");
    assert!(
        lower.contains(&format!(
            "location: https://play.example.com:{tls_port}/matchmake/x\r\n"
        )),
        "{text}"
    );
    assert!(!lower.contains("\r\nserver:"), "{text}");
}

/// A process that unregisters while nothing is open to it stops draining after
/// `--drain-idle` (its port still accepts connections, which used to keep it reachable
/// for `--max-drain`, 10 minutes); one with an open request keeps draining.
#[test]
fn an_idle_unregistered_process_stops_draining_at_once() {
    let dir = scratch("sec-drain");
    let redis = Redis::start(&dir);
    let echo = Echo::start();
    let proxy = Proxy::start_with(&dir, &redis.url(), &["--drain-idle", "2s"]);
    let mut conn = redis.conn();
    let idle = format!("idle1/127.0.0.1:{}", echo.port);
    let busy = format!("busy1/127.0.0.1:{}", echo.port);
    register(&mut conn, &idle);
    register(&mut conn, &busy);
    proxy.wait_routed(
        vec!["busy1".into(), "idle1".into()],
        Duration::from_secs(10),
    );
    // An open WebSocket on busy1 (retried until Envoy and the filter know the process).
    let open = wait_for("a WebSocket open to busy1", Duration::from_secs(10), || {
        let mut s = TcpStream::connect(proxy.public()).ok()?;
        s.write_all(
            b"GET /busy1/r?sessionId=x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        (&head == b"HTTP/1.1 101").then_some(s)
    });
    assert_eq!(
        proxy.envoy_stat("cluster.colyseus-process-busy1.upstream_rq_active"),
        1
    );
    let t0 = Instant::now();
    unregister(&mut conn, &idle);
    unregister(&mut conn, &busy);
    wait_for("both draining", Duration::from_secs(5), || {
        (proxy.draining() == ["busy1", "idle1"]).then_some(())
    });
    wait_for("the idle one gone", Duration::from_secs(15), || {
        (proxy.draining() == ["busy1"]).then_some(())
    });
    let took = t0.elapsed();
    println!("idle unregistered process stopped draining after {took:?} (--drain-idle 2s)");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    wait_for(
        "its cluster gone from Envoy",
        Duration::from_secs(5),
        || {
            let clusters = http_get(&proxy.admin(), "/clusters").ok()?.2;
            (!clusters.contains("colyseus-process-idle1::")).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        proxy.draining(),
        ["busy1"],
        "a process with an open request was dropped"
    );
    drop(open);
}

/// The README's minimal Redis ACL, on a real `redis-server`: the agent, a registrar and
/// Colyseus game servers each run under their own user, players join and play, liveness
/// pings are answered, and Redis logs no denied command.
#[test]
fn the_documented_redis_acl_is_enough() {
    let dir = scratch("sec-acl");
    let redis = Redis::start(&dir);
    let mut admin = redis.conn();
    let setuser = |conn: &mut redis::Connection, rules: &str| {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER");
        for r in rules.split_whitespace() {
            cmd.arg(r);
        }
        let _: () = cmd.query(conn).unwrap();
    };
    // Exactly the README's rules (Security model).
    setuser(
        &mut admin,
        "colyseus-envoy-agent on >agentpw resetkeys resetchannels \
         ~colyseus:nodes ~roomcount ~roomcaches ~colyseus-envoy:* \
         &colyseus:nodes:discovery &p:* &ipc:colyseus-envoy-* \
         -@all +info +ping +smembers +sadd +srem +exists +hgetall +hget +hscan +hdel \
         +multi +exec +publish +subscribe +psubscribe +unsubscribe +punsubscribe",
    );
    setuser(
        &mut admin,
        "colyseus-envoy-register on >registerpw resetkeys resetchannels \
         ~colyseus:nodes ~colyseus-envoy:* &colyseus:nodes:discovery \
         -@all +ping +multi +exec +sadd +srem +set +del +publish",
    );
    setuser(
        &mut admin,
        "colyseus-game on >gamepw resetkeys resetchannels ~* &* +@all -@admin -@dangerous +info",
    );
    let url = |user: &str, pw: &str| format!("redis://{user}:{pw}@127.0.0.1:{}", redis.port);
    let game_url = url("colyseus-game", "gamepw");
    let env = [("REDIS_URL", game_url.as_str())];
    let a = GameServer::start(&dir, &redis, &env);
    let b = GameServer::start(&dir, &redis, &env);
    // A server that does not register itself, registered by the sidecar.
    let c = GameServer::start(&dir, &redis, &[env[0], ("PRESENCE", "local")]);
    let c_port = c.port.to_string();
    let register_url = url("colyseus-envoy-register", "registerpw");
    let _sidecar = start_registrar(
        &dir,
        &[
            "--redis-url",
            &register_url,
            "--process-id",
            &c.process_id,
            "--advertise-host",
            "127.0.0.1",
            "--port",
            &c_port,
        ],
    );
    let agent_url = url("colyseus-envoy-agent", "agentpw");
    let proxy = Proxy::start_with(&dir, &agent_url, &["--redis-rooms"]);
    let mut ids = vec![
        a.process_id.clone(),
        b.process_id.clone(),
        c.process_id.clone(),
    ];
    ids.sort();
    proxy.wait_routed(ids.clone(), Duration::from_secs(15));
    let result = swarm(&proxy.endpoint(), 12, &["--concurrency", "4"]);
    assert_eq!(result.ok, 12, "{:?}", result.errors);
    // Several liveness rounds (IPC pings over Redis): nobody is declared dead.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(proxy.routed(), ids);
    assert_eq!(proxy.agent_metric("colyseus_envoy_redis_up"), 1);
    assert_eq!(proxy.agent_metric("colyseus_envoy_processes_died_total"), 0);
    assert_eq!(
        proxy.agent_metric("colyseus_envoy_redis_session_failures_total"),
        0
    );
    let denied: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    assert!(denied.is_empty(), "Redis denied commands: {denied:?}");
    let (ok, status) = proxy.status();
    println!("{status}");
    assert!(ok, "{status}");
}
