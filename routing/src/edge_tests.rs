use super::*;

const MAX: usize = 4096;

fn cx(names: &ClusterNames) -> Context<'_> {
    Context {
        names,
        routing_header: "x-colyseus-cluster",
        client_ip: "10.1.2.3",
        scheme: "http",
        max_head_len: MAX,
    }
}

/// A room upgrade to `target` with `extra` header lines.
fn upgrade(target: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: game.example:2567\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn decide_live(bytes: &[u8]) -> Edge {
    let names = ClusterNames::default();
    decide(bytes, &cx(&names), |pid| pid == "p1")
}

fn to_hcm(bytes: &[u8]) -> ToHcm {
    match decide_live(bytes) {
        Edge::Hcm(why) => why,
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn raw(bytes: &[u8]) -> (String, String) {
    match decide_live(bytes) {
        Edge::Raw {
            cluster,
            head,
            head_len,
        } => {
            assert_eq!(head_len, bytes.len());
            (cluster, String::from_utf8(head).unwrap())
        }
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn a_live_room_upgrade_goes_raw_with_the_edge_headers() {
    let (cluster, head) = raw(&upgrade(
        "/p1/r1?sessionId=s&reconnectionToken=t",
        "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nx-client-ip: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Colyseus-Cluster: colyseus_agent\r\nX-Forwarded-Proto: https\r\nCookie: a=1\r\n",
    ));
    assert_eq!(cluster, "colyseus-process-p1");
    assert_eq!(
        head,
        "GET /p1/r1?sessionId=s&reconnectionToken=t HTTP/1.1\r\n\
         host: game.example:2567\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: k==\r\nsec-websocket-version: 13\r\ncookie: a=1\r\n\
         x-forwarded-proto: http\r\nx-forwarded-for: 10.1.2.3\r\nx-real-ip: 10.1.2.3\r\n\
         x-envoy-external-address: 10.1.2.3\r\n\r\n"
    );
    assert!(!head.contains("6.6.6.6"));
    // Any prefix, as the HTTP filter accepts it.
    assert_eq!(
        raw(&upgrade("/eu/p1/r1?sessionId=s", "")).0,
        "colyseus-process-p1"
    );
}

#[test]
fn waits_for_the_whole_head() {
    let full = upgrade("/p1/r1?sessionId=s", "");
    for cut in [0, 5, full.len() - 1] {
        assert_eq!(decide_live(&full[..cut]), Edge::Wait, "{cut}");
    }
}

#[test]
fn everything_but_a_live_room_upgrade_goes_to_the_hcm() {
    // Unknown or `undefined` process, no processId, malformed ids, not a room path.
    for target in [
        "/p2/r1?sessionId=s",
        "/undefined/r1?sessionId=s",
        "/r1?sessionId=s",
        "/p1/r1",
        "/matchmake/joinOrCreate/echo",
        "/",
    ] {
        assert_eq!(to_hcm(&upgrade(target, "")), ToHcm::NotFastRoom, "{target}");
    }
    // A malformed id gets the HCM's 400 (here: a character the raw path never takes).
    assert_eq!(
        to_hcm(&upgrade("/p1/bad.room?sessionId=s", "")),
        ToHcm::NotNormal
    );
    // Matchmaking, the health path, other methods.
    let post =
        b"POST /matchmake/joinOrCreate/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(to_hcm(post), ToHcm::NotUpgrade);
    assert_eq!(
        to_hcm(b"GET /__healthcheck HTTP/1.1\r\nHost: a\r\n\r\n"),
        ToHcm::NotUpgrade
    );
    let mut head = upgrade("/p1/r1?sessionId=s", "");
    head.splice(0..3, *b"PUT");
    assert_eq!(to_hcm(&head), ToHcm::NotUpgrade);
    // HTTP/2 prior knowledge is not an HTTP/1.1 head.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_eq!(to_hcm(preface), ToHcm::Head(Refusal::RequestLine));
    // Upgrade to something else, or no Connection: upgrade.
    let h2c = b"GET /p1/r1?sessionId=s HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
    assert_eq!(to_hcm(h2c), ToHcm::NotUpgrade);
    let no_conn = b"GET /p1/r1?sessionId=s HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(to_hcm(no_conn), ToHcm::NotUpgrade);
    // `Connection: keep-alive, Upgrade` is an upgrade.
    let list = b"GET /p1/r1?sessionId=s HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n";
    assert_eq!(raw(list).0, "colyseus-process-p1");
}

#[test]
fn hostile_heads_go_to_the_hcm() {
    let room = "/p1/r1?sessionId=s";
    for (extra, why) in [
        ("Content-Length: 5\r\n", ToHcm::BodyOrSpecialHeader),
        (
            "Content-Length: 0\r\nContent-Length: 5\r\n",
            ToHcm::BodyOrSpecialHeader,
        ),
        ("Transfer-Encoding: chunked\r\n", ToHcm::BodyOrSpecialHeader),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            ToHcm::BodyOrSpecialHeader,
        ),
        ("TE: trailers\r\n", ToHcm::BodyOrSpecialHeader),
        ("Expect: 100-continue\r\n", ToHcm::BodyOrSpecialHeader),
        (
            "X-Envoy-Original-Path: /admin\r\n",
            ToHcm::BodyOrSpecialHeader,
        ),
        ("Upgrade: websocket\r\n", ToHcm::Duplicate),
        ("Host: other\r\n", ToHcm::Duplicate),
        ("X_Under: 1\r\n", ToHcm::NotNormal),
        ("Folded: a\r\n b\r\n", ToHcm::Head(Refusal::ObsFold)),
        ("Bad : a\r\n", ToHcm::Head(Refusal::HeaderName)),
    ] {
        assert_eq!(to_hcm(&upgrade(room, extra)), why, "{extra:?}");
    }
    // Bare LF anywhere.
    let lf =
        b"GET /p1/r1?sessionId=s HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: Upgrade\n\n";
    assert_eq!(to_hcm(lf), ToHcm::Head(Refusal::BareLineEnding));
    // A body (or anything) after the head.
    let mut body = upgrade(room, "");
    body.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(to_hcm(&body), ToHcm::BodyOrSpecialHeader);
    // Absolute form, asterisk, HTTP/1.0.
    for target in ["http://127.0.0.1:9901/p1/r1?sessionId=s", "*"] {
        assert_eq!(
            to_hcm(&upgrade(target, "")),
            ToHcm::Head(Refusal::RequestLine)
        );
    }
    let old = String::from_utf8(upgrade(room, ""))
        .unwrap()
        .replace("HTTP/1.1", "HTTP/1.0");
    assert_eq!(to_hcm(old.as_bytes()), ToHcm::Head(Refusal::RequestLine));
    // Paths the HCM would normalize, a host it would check.
    for target in [
        "/x/../p1/r1?sessionId=s",
        "/x//p1/r1?sessionId=s",
        "/x/%2e/p1/r1?sessionId=s",
        "/p1/r1?sessionId=s#frag",
    ] {
        assert_eq!(to_hcm(&upgrade(target, "")), ToHcm::NotNormal, "{target}");
    }
    let bad_host = String::from_utf8(upgrade(room, ""))
        .unwrap()
        .replace("game.example:2567", "evil/x@y");
    assert_eq!(to_hcm(bad_host.as_bytes()), ToHcm::NotNormal);
    let no_host =
        b"GET /p1/r1?sessionId=s HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    assert_eq!(to_hcm(no_host), ToHcm::NotNormal);
    // Too large.
    let big = upgrade(room, &format!("X-Big: {}\r\n", "a".repeat(MAX)));
    assert_eq!(to_hcm(&big), ToHcm::Head(Refusal::TooLarge));
}

#[test]
fn only_a_fetched_live_set_takes_the_fast_path() {
    let names = ClusterNames::default();
    let bytes = upgrade("/p1/r1?sessionId=s", "");
    assert_eq!(
        decide(&bytes, &cx(&names), |_| false),
        Edge::Hcm(ToHcm::NotFastRoom)
    );
    let names = ClusterNames::new("gs-", "gs_all").unwrap();
    match decide(&bytes, &cx(&names), |_| true) {
        Edge::Raw { cluster, .. } => assert_eq!(cluster, "gs-p1"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_ips() {
    assert_eq!(client_ip("10.0.0.1:5678").as_deref(), Some("10.0.0.1"));
    assert_eq!(client_ip("[::1]:5678").as_deref(), Some("::1"));
    assert_eq!(client_ip("pipe"), None);
    assert_eq!(client_ip("10.0.0.1"), None);
}
