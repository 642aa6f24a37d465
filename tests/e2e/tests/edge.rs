//! The public edge: TLS with a certificate replaced under live players, the HTTP->HTTPS
//! redirect, and the health path Envoy answers itself.
#![cfg(feature = "e2e")]

use std::time::Duration;

use e2e::*;

#[test]
fn wss_with_certificate_swap_redirect_and_health_path() {
    let dir = scratch("edge-tls");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_cert(&certs, "server");
    make_cert(&certs, "next");
    // Real clients trust the test certificates (both, so the swap is seamless for them).
    let bundle = dir.join("trust.pem");
    let mut pem = std::fs::read(certs.join("server.pem")).unwrap();
    pem.extend(std::fs::read(certs.join("next.pem")).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    std::env::set_var("NODE_EXTRA_CA_CERTS", &bundle);

    let redis = Redis::start(&dir);
    let a = GameServer::start(&dir, &redis, &[]);
    let b = GameServer::start(&dir, &redis, &[]);
    let tls_port = free_port();
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
            &tls_port.to_string(),
            "--health-path",
            "*/healthz",
        ],
    );
    proxy.wait_routed(
        vec![a.process_id.clone(), b.process_id.clone()],
        Duration::from_secs(10),
    );

    // Plain HTTP: the health path is answered by Envoy, everything else redirects.
    let (status, _, body) = http_get(&proxy.public(), "/any/prefix/healthz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, head, _) = http_get(&proxy.public(), "/matchmake/joinOrCreate/echo").unwrap();
    assert_eq!(status, 301, "{head}");
    let location = format!("location: https://127.0.0.1:{tls_port}/matchmake/joinOrCreate/echo");
    assert!(
        head.to_ascii_lowercase()
            .contains(&location.to_ascii_lowercase()),
        "{head}"
    );

    // Real clients over https:// and wss://.
    let endpoint = format!("https://localhost:{tls_port}");
    let result = swarm(&endpoint, 20, &["--concurrency", "4"]);
    assert_eq!(result.ok, 20, "{:?}", result.errors);
    assert_eq!(result.by_process.len(), 2, "{:?}", result.by_process);

    // Replace the certificate while players are connected: they stay, new connections get
    // the new certificate.
    let held = Holding::start(&endpoint, 12);
    assert_eq!(
        served_fingerprint(tls_port),
        file_fingerprint(&certs.join("server.pem"))
    );
    std::fs::copy(certs.join("next.pem"), certs.join(".server.pem.new")).unwrap();
    std::fs::copy(certs.join("next.key"), certs.join(".server.key.new")).unwrap();
    std::fs::rename(certs.join(".server.key.new"), certs.join("server.key")).unwrap();
    std::fs::rename(certs.join(".server.pem.new"), certs.join("server.pem")).unwrap();
    let next = file_fingerprint(&certs.join("next.pem"));
    wait_for("new certificate served", Duration::from_secs(10), || {
        (served_fingerprint(tls_port) == next).then_some(())
    });
    let result = held.finish();
    println!(
        "wss players held across a certificate swap: ok {} of {}",
        result.ok, result.clients
    );
    assert_eq!(result.ok, 12, "dropped: {:?}", result.errors);
    let result = swarm(&endpoint, 8, &["--concurrency", "4"]);
    assert_eq!(result.ok, 8, "{:?}", result.errors);
}

#[test]
fn oversized_and_hostile_headers_are_refused_without_harm() {
    let stack = Stack::new("edge-headers").start();
    let proxy = &stack.proxy;
    let big = "x".repeat(40 * 1024);
    // Envoy answers 431 or, while the client is still sending, resets the connection.
    let matchmake = "/matchmake/joinOrCreate/echo";
    match http_request(&proxy.public(), "POST", matchmake, &[("x-big", &big)]) {
        Ok((status, head, _)) => assert_eq!(status, 431, "{head}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let (status, _, _) = http_request(
        &proxy.public(),
        "POST",
        "/matchmake/joinOrCreate/echo",
        &[("x_colyseus_cluster", "admin")],
    )
    .unwrap();
    assert_eq!(status, 400, "headers with underscores are refused");
    // The proxy is fine afterwards.
    let result = swarm(&proxy.endpoint(), 8, &["--concurrency", "4"]);
    assert_eq!(result.ok, 8, "{:?}", result.errors);
}

#[test]
fn colyseus_sees_the_real_client_address_not_a_forged_one() {
    let stack = Stack::new("edge-client-ip")
        .server_env(&[("DEBUG", "example")])
        .start();
    let (proxy, server, dir) = (&stack.proxy, &stack.servers[0], &stack.dir);

    // A real seat reservation through the proxy...
    let (status, _, body) =
        http_request(&proxy.public(), "POST", "/matchmake/joinOrCreate/echo", &[]).unwrap();
    assert_eq!(status, 200, "{body}");
    let seat: serde_json::Value = serde_json::from_str(&body).unwrap();
    let path = format!(
        "/{}/{}?sessionId={}",
        seat["room"]["processId"].as_str().unwrap(),
        seat["room"]["roomId"].as_str().unwrap(),
        seat["sessionId"].as_str().unwrap()
    );
    // ...consumed from another loopback address, with forged client-address headers.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
        ])
        .args(["--interface", "127.0.0.2"])
        .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
        .args([
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ])
        .args([
            "-H",
            "X-Forwarded-For: 6.6.6.6",
            "-H",
            "X-Real-IP: 6.6.6.6",
            "-H",
            "X-Client-IP: 6.6.6.6",
        ])
        .arg(format!("http://{}{path}", proxy.public()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "101");
    let log = dir.join(format!("game-{}.log", server.port));
    let line = wait_for(
        "the join logged by Colyseus",
        Duration::from_secs(5),
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .find(|l| l.contains(" join "))
                .map(str::to_owned)
        },
    );
    assert!(line.ends_with("ip=127.0.0.2"), "{line}");
}

/// Close frames pass through untouched (colyseus#950): a proxy that swallows them turns
/// Colyseus's close codes into 1006, and clients then try to reconnect when they should not.
#[test]
fn websocket_close_codes_reach_the_clients() {
    let mut stack = Stack::new("edge-close").start();
    let held = Holding::start(&stack.proxy.endpoint(), 4);
    // Graceful shutdown: Colyseus closes every room connection with its own close code.
    stack.servers[0].proc.stop(Duration::from_secs(10));
    let result = held.finish();
    println!("close codes seen through the proxy: {:?}", result.errors);
    assert_eq!(result.ok, 0);
    assert_eq!(result.errors.len(), 4);
    for e in &result.errors {
        let text = e["error"].as_str().unwrap_or_default();
        assert!(
            text.contains("code 4000"),
            "Colyseus's close code was lost: {text}"
        );
    }
}
