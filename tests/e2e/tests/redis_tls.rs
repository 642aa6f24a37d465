//! Presence over `rediss://` (a CA and a server certificate made at test time) with ACL
//! users: the game servers have their own user, the agent one that may do only what it
//! needs (the README's minimal ACL, verbatim below). Routing, RedisDriver lookups, liveness
//! and eviction of a dead process all work with it, Redis logs no denied command, and the
//! agent's user cannot touch anything else.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use e2e::redis_topologies::TlsRedis;
use e2e::*;

/// The agent's user, as in the README ("Production Redis").
const AGENT_ACL: &str = "user colyseus-envoy on >agent-pw resetchannels \
    &colyseus:nodes:discovery &p:* &ipc:colyseus-envoy-* \
    ~colyseus:nodes ~roomcount ~roomcaches ~colyseus-envoy:* \
    -@all +ping +info +multi +exec +smembers +sadd +srem +exists \
    +hgetall +hget +hscan +hdel +publish +subscribe +psubscribe +pubsub|numsub +cluster|keyslot";

#[test]
fn tls_and_a_minimal_acl_user() {
    let dir = scratch("redis-tls");
    let acl = format!(
        "user default off\n\
         user admin on >admin-pw ~* &* +@all\n\
         user colyseus on >colyseus-pw ~* &* +@all\n\
         {AGENT_ACL}\n"
    );
    let tls = TlsRedis::start(&dir, &acl);
    let ca = tls.ca.to_str().unwrap().to_owned();
    let game_url = format!("rediss://colyseus:colyseus-pw@127.0.0.1:{}", tls.port);
    let env = [
        ("REDIS_URL", game_url.as_str()),
        ("REDIS_CA_FILE", ca.as_str()),
    ];
    let a = GameServer::start(&dir, &tls.redis, &env);
    let b = GameServer::start(&dir, &tls.redis, &env);
    let agent_url = format!("rediss://colyseus-envoy:agent-pw@127.0.0.1:{}", tls.port);
    let proxy = Proxy::start_with(
        &dir,
        &agent_url,
        &[
            "--redis-ca-file",
            &ca,
            "--redis-rooms",
            "--evict-dead-from-presence",
            "true",
        ],
    );
    proxy.wait_routed(
        vec![a.process_id.clone(), b.process_id.clone()],
        Duration::from_secs(15),
    );
    let result = swarm(&proxy.endpoint(), 20, &["--concurrency", "4"]);
    assert_eq!(result.ok, 20, "{:?}", result.errors);

    // A room found through RedisDriver's listings over TLS.
    let public = proxy.public();
    let seat = matchmake(&public, "create", "echo");
    let path = format!("/undefined/{}?sessionId={}", seat.room_id, seat.session_id);
    assert_eq!(ws_first_frame(&public, &path).0, 101);

    // A dead process is found and evicted (SREM, HDEL in a MULTI) with the agent's user.
    let mut victim = GameServer::start(&dir, &tls.redis, &env);
    wait_for("victim routed", Duration::from_secs(10), || {
        proxy.routed().contains(&victim.process_id).then_some(())
    });
    victim.proc.child.kill().unwrap();
    let killed = Instant::now();
    let _ = victim.proc.child.wait();
    wait_for("dead process evicted", Duration::from_secs(20), || {
        let members = tls.cli_as("admin", "admin-pw", &["SMEMBERS", "colyseus:nodes"]);
        (!members.contains(&victim.process_id)).then_some(())
    });
    println!("TLS+ACL: kill -9 -> evicted in {:?}", killed.elapsed());

    // `agent status` over TLS with the same user; without the CA it cannot trust Redis.
    let (with_ca, text) = proxy.status_with(&["--redis-url", &agent_url, "--redis-ca-file", &ca]);
    assert!(with_ca, "{text}");
    let (without, text) = proxy.status_with(&["--redis-url", &agent_url]);
    assert!(!without);
    assert!(text.contains("Redis roomcount"), "{text}");

    // Nothing the agent did was refused, and its user may do nothing else.
    let denied = tls.cli_as("admin", "admin-pw", &["ACL", "LOG"]);
    assert!(!denied.contains("colyseus-envoy"), "ACL denials:\n{denied}");
    for cmd in [
        &["SET", "foo", "bar"][..],
        &["FLUSHALL"],
        &["HGETALL", "some:other:key"],
        &["PUBLISH", "other-channel", "x"],
        &["CONFIG", "GET", "*"],
    ] {
        let out = tls.cli_as("colyseus-envoy", "agent-pw", cmd);
        assert!(out.contains("NOPERM"), "{cmd:?} allowed: {out}");
    }
    assert_eq!(
        proxy.agent_metric("colyseus_envoy_redis_session_failures_total"),
        0
    );
    assert_eq!(proxy.agent_metric("colyseus_envoy_redis_rooms_up"), 1);
    proxy.assert_no_rejected_config();
}
