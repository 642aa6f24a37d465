//! The agent's state file says which Redis it came from: restarted against another Redis,
//! the agent never restores the other fleet's registrations (into that Redis or Envoy),
//! says so in its log, and stops routing that fleet even while the new Redis is down.
//! Real Redis servers, Envoy, agent and a Colyseus server.
#![cfg(feature = "e2e")]

use std::time::Duration;

use e2e::*;

#[test]
fn state_from_another_redis_is_never_restored() {
    let dir = scratch("state-origin");
    let fleet_redis = Redis::start(&dir);
    let server = GameServer::start(&dir, &fleet_redis, &[]);
    // Apart: the agent is restarted on other Redis servers (run keeps one REDIS_URL).
    let mut proxy = Proxy::start_apart(&dir, &fleet_redis.url(), &[], &[]);
    proxy.wait_routed(vec![server.process_id.clone()], Duration::from_secs(10));
    let state_file = dir.join("agent-state.json");
    let saved = || std::fs::read_to_string(&state_file).unwrap_or_default();
    wait_for("state file written", Duration::from_secs(5), || {
        saved().contains(&server.member()).then_some(())
    });
    assert!(
        saved().contains(&format!("127.0.0.1:{}", fleet_redis.port)),
        "the state file names its Redis: {}",
        saved()
    );
    let room_path = format!("/{}/someroom?sessionId=x", server.process_id);
    assert_eq!(ws_handshake(&proxy.public(), &room_path).unwrap(), 101);

    // 1. Restarted against a Redis that does not answer: the old fleet is not ours, so it
    //    is unrouted at once instead of kept "until Redis answers".
    let down = format!("redis://127.0.0.1:{}", free_port());
    proxy.restart_agent_on(&down, &[]);
    wait_for("old fleet unrouted", Duration::from_secs(10), || {
        (ws_handshake(&proxy.public(), &room_path).ok()? != 101).then_some(())
    });
    let log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    wait_for("the log says why", Duration::from_secs(5), || {
        log().contains("written from another Redis").then_some(())
    });

    // 2. Restarted against another, empty Redis: nothing of the other fleet is written
    //    into it, and nothing of it is routed.
    let other = Redis::start(&dir);
    proxy.restart_agent_on(&other.url(), &[]);
    wait_for(
        "agent ready on the other Redis",
        Duration::from_secs(10),
        || (http_get(&proxy.api(), "/ready").ok()?.0 == 200).then_some(()),
    );
    // Restoring lost registrations would have happened within a probe round (~1 s).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        other.members(),
        Vec::<String>::new(),
        "foreign registrations written"
    );
    assert_eq!(proxy.routed(), Vec::<String>::new());
    assert_ne!(ws_handshake(&proxy.public(), &room_path).unwrap(), 101);
    assert_eq!(
        proxy.agent_metric("colyseus_envoy_registrations_restored_total"),
        0
    );
    wait_for(
        "state file now names the other Redis",
        Duration::from_secs(5),
        || {
            saved()
                .contains(&format!("127.0.0.1:{}", other.port))
                .then_some(())
        },
    );
    assert!(!saved().contains(&server.member()), "{}", saved());

    // 3. Back on the fleet's own Redis: its registrations are read again and routed.
    proxy.restart_agent_on(&fleet_redis.url(), &[]);
    proxy.wait_routed(vec![server.process_id.clone()], Duration::from_secs(10));
    wait_for("routed again", Duration::from_secs(5), || {
        (ws_handshake(&proxy.public(), &room_path).ok()? == 101).then_some(())
    });
    proxy.assert_no_rejected_config();
}
