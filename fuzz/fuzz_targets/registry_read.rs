//! `Registry::from_members` (a full read of `colyseus:nodes`), interleaved with
//! announcements and liveness verdicts, driven by a script of lines:
//! a member per line; `---` ends a read (and one second passes); `add,m` / `remove,m`
//! apply an announcement; `dead p` / `alive p` mark a process; `expire` drops drains
//! older than 2 s.
//!
//! After every read: a processId never takes an address other than its one listed address
//! or the one it was routed to before (never a conflicting newcomer's); a process listed at
//! one valid address is kept there; processes that left drain (dead ones go); rejections
//! account for every bad member and conflict; the result does not depend on the order of
//! the members. The CDS rendered from the final state has one cluster per routable process
//! plus the all-processes one.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use colyseus_envoy_agent::model::{
    parse_announcement, parse_member, Announcement, Endpoint, ProcessState, Registry,
};
use colyseus_envoy_agent::sinks::envoy_files::{render_cds, ClusterOptions, HealthCheck};
use libfuzzer_sys::fuzz_target;
use routing::{ClusterNames, ProcessId};

const DEFAULT_PORT: u16 = 2567;
const MAX_DRAIN: Duration = Duration::from_secs(2);

fuzz_target!(|data: &[u8]| {
    let Ok(script) = std::str::from_utf8(data) else {
        return;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut registry = Registry::default();
    let mut members: Vec<&str> = Vec::new();
    let mut reads = 0;
    for line in script.lines() {
        if line == "---" {
            registry = read(&registry, &members, now);
            members.clear();
            reads += 1;
            now += Duration::from_secs(1);
        } else if line == "expire" {
            let before = registry.clone();
            let expired = registry.expire_drained(now, MAX_DRAIN);
            for reg in &expired {
                let e = before.get(&reg.process_id).unwrap();
                assert!(e.is_draining() && e.endpoint == reg.endpoint);
                assert!(registry.get(&reg.process_id).is_none());
            }
            assert_eq!(registry.len() + expired.len(), before.len());
        } else if let Some(pid) = line.strip_prefix("dead ") {
            if let Ok(pid) = ProcessId::parse(pid) {
                let was_active = registry.get(&pid).is_some_and(|e| e.is_active());
                assert_eq!(registry.mark_dead(&pid, now), was_active);
                if let Some(e) = registry.get(&pid) {
                    assert!(!was_active || !e.is_routable());
                }
            }
        } else if let Some(pid) = line.strip_prefix("alive ") {
            if let Ok(pid) = ProcessId::parse(pid) {
                let was_dead = registry.get(&pid).is_some_and(|e| !e.is_routable());
                assert_eq!(registry.mark_alive(&pid), was_dead);
                if was_dead {
                    assert!(registry.get(&pid).unwrap().is_active());
                }
            }
        } else if line.starts_with("add,") || line.starts_with("remove,") {
            if let Ok(announcement) = parse_announcement(line.as_bytes(), DEFAULT_PORT) {
                apply(&mut registry, announcement, now);
            }
        } else {
            members.push(line);
        }
    }
    if reads == 0 || !members.is_empty() {
        registry = read(&registry, &members, now);
    }
    // Rendering is most of the cost: once, for the final state.
    check_cds(&registry);
});

fn read(prev: &Registry, members: &[&str], now: Instant) -> Registry {
    let (next, outcome) = prev.from_members(members.iter().copied(), DEFAULT_PORT, now);

    // What the read listed, per processId.
    let mut seen: BTreeMap<ProcessId, BTreeSet<Endpoint>> = BTreeMap::new();
    let mut bad = 0;
    for m in members {
        match parse_member(m, DEFAULT_PORT) {
            Ok(reg) => {
                seen.entry(reg.process_id).or_default().insert(reg.endpoint);
            }
            Err(_) => bad += 1,
        }
    }
    let conflicts = seen.values().filter(|eps| eps.len() > 1).count();
    assert_eq!(outcome.rejected.len(), bad + conflicts);
    assert_eq!(
        outcome
            .rejected
            .iter()
            .filter(|r| r.reason() == "conflict")
            .count(),
        conflicts
    );

    for (pid, endpoints) in &seen {
        let before = prev.get(pid);
        let after = next.get(pid);
        if endpoints.len() == 1 {
            let after = after.unwrap();
            assert!(endpoints.contains(&after.endpoint));
            let expected = match before {
                Some(b) if b.endpoint == after.endpoint && !b.is_draining() => b.state,
                _ => ProcessState::Active,
            };
            assert_eq!(after.state, expected);
        } else if let Some(after) = after {
            // Conflict: only the address routed before may stay.
            let before = before.unwrap();
            assert_eq!(
                after.endpoint, before.endpoint,
                "{pid} took a conflicting address"
            );
            if !endpoints.contains(&before.endpoint) {
                assert!(after.is_draining());
            }
        }
    }
    for (pid, after) in next.iter() {
        if seen.contains_key(pid) {
            continue;
        }
        // Not listed: it was known, and now drains where it was.
        let before = prev.get(pid).unwrap();
        assert_eq!(after.endpoint, before.endpoint);
        match before.state {
            ProcessState::Active => assert_eq!(after.state, ProcessState::Draining { since: now }),
            ProcessState::Draining { .. } => assert_eq!(after.state, before.state),
            ProcessState::Dead { .. } => panic!("{pid} dead and unlisted, yet kept"),
        }
    }
    for (pid, before) in prev.iter() {
        if !seen.contains_key(pid) && !matches!(before.state, ProcessState::Dead { .. }) {
            assert!(next.get(pid).is_some_and(|e| e.is_draining()));
        }
    }
    for reg in &outcome.vanished {
        assert!(prev.get(&reg.process_id).is_some_and(|e| e.is_active()));
        let after = next.get(&reg.process_id).unwrap();
        assert!(after.is_draining() && after.endpoint == reg.endpoint);
    }

    // The order of SMEMBERS is arbitrary: it must not matter.
    let (reversed, outcome_r) = prev.from_members(members.iter().rev().copied(), DEFAULT_PORT, now);
    assert_eq!(reversed, next);
    assert_eq!(outcome_r.vanished, outcome.vanished);
    let sorted = |rs: &[colyseus_envoy_agent::model::Rejection]| {
        let mut v: Vec<String> = rs.iter().map(ToString::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&outcome_r.rejected), sorted(&outcome.rejected));

    next
}

fn apply(registry: &mut Registry, announcement: Announcement, now: Instant) {
    let before = registry.clone();
    let result = registry.apply(announcement.clone(), now);
    match announcement {
        Announcement::Add(reg) => match before.get(&reg.process_id) {
            Some(b) if b.endpoint != reg.endpoint => {
                assert_eq!(result.unwrap_err().reason(), "conflict");
                assert_eq!(*registry, before);
            }
            b => {
                let changed = !b.is_some_and(|b| b.is_active());
                assert_eq!(result, Ok(changed));
                let after = registry.get(&reg.process_id).unwrap();
                assert!(after.is_active() && after.endpoint == reg.endpoint);
                assert_eq!(registry.len(), before.len() + usize::from(b.is_none()));
            }
        },
        Announcement::Remove(reg) => {
            let changed = result.unwrap();
            match before.get(&reg.process_id) {
                Some(b) if b.endpoint == reg.endpoint => {
                    let after = registry.get(&reg.process_id);
                    match b.state {
                        ProcessState::Active => {
                            assert!(changed);
                            assert_eq!(after.unwrap().state, ProcessState::Draining { since: now });
                        }
                        ProcessState::Dead { .. } => assert!(changed && after.is_none()),
                        ProcessState::Draining { .. } => {
                            assert!(!changed);
                            assert_eq!(*registry, before);
                        }
                    }
                }
                _ => {
                    assert!(!changed);
                    assert_eq!(*registry, before);
                }
            }
        }
    }
}

fn check_cds(registry: &Registry) {
    let names = ClusterNames::default();
    let options = ClusterOptions {
        names: names.clone(),
        connect_timeout: Duration::from_secs(1),
        max_connections: 100_000,
        health_check: HealthCheck::Tcp {
            interval: Duration::from_secs(2),
        },
    };
    let bytes = render_cds(registry, &Default::default(), &options).expect("renders");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let clusters = doc["resources"].as_array().unwrap();
    let routable: Vec<_> = registry.iter().filter(|(_, e)| e.is_routable()).collect();
    assert_eq!(clusters.len(), routable.len() + 1);
    for (cluster, (pid, entry)) in clusters.iter().zip(&routable) {
        assert_eq!(cluster["name"], names.process(pid));
        let eps = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"];
        assert_eq!(eps.as_array().unwrap().len(), 1);
        assert_eq!(
            eps[0]["endpoint"]["address"]["socket_address"]["port_value"],
            entry.endpoint.port
        );
    }
    let all = clusters.last().unwrap();
    assert_eq!(all["name"], names.all());
    let active = registry.active_len();
    let lb = &all["load_assignment"]["endpoints"];
    let count = lb
        .get(0)
        .map_or(0, |g| g["lb_endpoints"].as_array().unwrap().len());
    assert_eq!(count, active);
    for cluster in clusters {
        for group in cluster["load_assignment"]["endpoints"].as_array().unwrap() {
            for ep in group["lb_endpoints"].as_array().unwrap() {
                let sa = &ep["endpoint"]["address"]["socket_address"];
                assert_ne!(sa["port_value"], 0);
                assert!(!sa["address"].as_str().unwrap().is_empty());
            }
        }
    }
}
