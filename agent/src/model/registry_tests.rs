use super::*;

fn reg(member: &str) -> Registration {
    parse_member(member, 2567).unwrap()
}

fn read(registry: &Registry, members: &[&str], now: Instant) -> (Registry, Outcome) {
    registry.from_members(members.iter().copied(), 2567, now)
}

fn pid(s: &str) -> ProcessId {
    ProcessId::parse(s).unwrap()
}

#[test]
fn full_read_skips_garbage_and_keeps_the_rest() {
    let now = Instant::now();
    let (registry, outcome) = read(
        &Registry::default(),
        &["a/127.0.0.1:1", "garbage", "b/127.0.0.1:2", "c/undefined:3"],
        now,
    );
    assert_eq!(registry.active_len(), 2);
    assert_eq!(outcome.rejected.len(), 2);
    assert!(outcome.vanished.is_empty());
}

#[test]
fn conflicting_addresses_keep_the_routed_one() {
    let now = Instant::now();
    let members = ["a/127.0.0.1:1", "a/127.0.0.1:9"];
    let (fresh, outcome) = read(&Registry::default(), &members, now);
    assert!(fresh.is_empty(), "no way to tell which address is right");
    assert_eq!(outcome.rejected[0].reason(), "conflict");

    let (current, _) = read(&Registry::default(), &["a/127.0.0.1:1"], now);
    let (next, outcome) = read(&current, &members, now);
    assert_eq!(next, current);
    assert_eq!(outcome.rejected.len(), 1);
}

#[test]
fn vanished_processes_drain_then_expire() {
    let t0 = Instant::now();
    let (current, _) = read(
        &Registry::default(),
        &["a/127.0.0.1:1", "b/127.0.0.1:2"],
        t0,
    );
    let (next, outcome) = read(&current, &["a/127.0.0.1:1"], t0);
    assert_eq!(outcome.vanished, vec![reg("b/127.0.0.1:2")]);
    assert_eq!(next.active(), vec![reg("a/127.0.0.1:1")]);
    assert_eq!(next.draining(), vec![reg("b/127.0.0.1:2")]);
    // A later read keeps the drain's start and reports nothing new.
    let t1 = t0 + Duration::from_secs(5);
    let (mut later, outcome) = read(&next, &["a/127.0.0.1:1"], t1);
    assert!(outcome.vanished.is_empty());
    assert_eq!(
        later.get(&pid("b")).unwrap().state,
        ProcessState::Draining { since: t0 }
    );
    assert!(later.expire_drained(t1, Duration::from_secs(10)).is_empty());
    assert_eq!(
        later.expire_drained(t0 + Duration::from_secs(10), Duration::from_secs(10)),
        vec![reg("b/127.0.0.1:2")]
    );
    assert_eq!(later.len(), 1);
    // Registered again while draining: active again.
    let (back, _) = read(&next, &["a/127.0.0.1:1", "b/127.0.0.1:2"], t1);
    assert_eq!(back.active_len(), 2);
}

#[test]
fn announcements_update_the_registry() {
    let now = Instant::now();
    let mut registry = Registry::default();
    let add = |m: &str| Announcement::Add(reg(m));
    let remove = |m: &str| Announcement::Remove(reg(m));
    assert_eq!(registry.apply(add("a/127.0.0.1:1"), now), Ok(true));
    assert_eq!(registry.apply(add("a/127.0.0.1:1"), now), Ok(false));
    let conflict = registry.apply(add("a/127.0.0.1:2"), now);
    assert_eq!(conflict.unwrap_err().reason(), "conflict");
    assert_eq!(registry.get(&pid("a")).map(|e| e.endpoint.port), Some(1));
    // A stale remove for another address does not touch the live one.
    assert_eq!(registry.apply(remove("a/127.0.0.1:2"), now), Ok(false));
    assert_eq!(registry.apply(remove("a/127.0.0.1:1"), now), Ok(true));
    assert_eq!(registry.draining(), vec![reg("a/127.0.0.1:1")]);
    assert_eq!(registry.apply(remove("a/127.0.0.1:1"), now), Ok(false));
    // Re-registration ends the drain.
    assert_eq!(registry.apply(add("a/127.0.0.1:1"), now), Ok(true));
    assert_eq!(registry.active_len(), 1);
}

#[test]
fn finds_the_active_process_at_an_address() {
    let now = Instant::now();
    let (current, _) = read(
        &Registry::default(),
        &["a/127.0.0.1:1", "b/127.0.0.1:2"],
        now,
    );
    let (next, _) = read(&current, &["a/127.0.0.1:1"], now);
    assert_eq!(
        next.active_at(&reg("x/127.0.0.1:1").endpoint),
        Some(&pid("a"))
    );
    // b is draining, not active.
    assert_eq!(next.active_at(&reg("x/127.0.0.1:2").endpoint), None);
}

#[test]
fn dead_processes_lose_routing_until_they_answer() {
    let now = Instant::now();
    let (mut registry, _) = read(
        &Registry::default(),
        &["a/127.0.0.1:1", "b/127.0.0.1:2"],
        now,
    );
    assert!(registry.mark_dead(&pid("a"), now));
    assert!(!registry.mark_dead(&pid("a"), now));
    assert!(!registry.get(&pid("a")).unwrap().is_routable());
    assert_eq!(registry.registered().len(), 2);
    // A re-read of the set does not resurrect it.
    let (mut next, _) = read(&registry, &["a/127.0.0.1:1", "b/127.0.0.1:2"], now);
    assert!(!next.get(&pid("a")).unwrap().is_routable());
    assert!(next.mark_alive(&pid("a")));
    assert_eq!(next.active_len(), 2);
    // Dead and then unregistered: forgotten, no drain.
    next.mark_dead(&pid("b"), now);
    let (after, outcome) = read(&next, &["a/127.0.0.1:1"], now);
    assert!(after.get(&pid("b")).is_none());
    assert!(outcome.vanished.is_empty());
    next.apply(Announcement::Remove(reg("b/127.0.0.1:2")), now)
        .unwrap();
    assert!(next.get(&pid("b")).is_none());
}

#[test]
fn restore_reactivates_lost_processes() {
    let now = Instant::now();
    let (current, _) = read(
        &Registry::default(),
        &["a/127.0.0.1:1", "b/127.0.0.1:2"],
        now,
    );
    let (mut after_restart, outcome) = read(&current, &["a/127.0.0.1:1"], now);
    after_restart.restore(outcome.vanished);
    assert_eq!(after_restart, current);
}
