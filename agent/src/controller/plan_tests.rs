use std::time::{Duration, Instant};

use super::*;
use crate::liveness::Policy;
use crate::model::{parse_member, Announcement};
use crate::sources::redis_lineage::Lineage;

const PORT: u16 = 2567;

fn registry(members: &[&str]) -> Registry {
    Registry::default()
        .from_members(members.iter().copied(), PORT, Instant::now())
        .0
}

fn snapshot(run_id: &str, replid: &str, members: &[&str]) -> Snapshot {
    Snapshot {
        run_id: run_id.to_owned(),
        lineage: Lineage {
            replid: Some(replid.to_owned()),
            replid2: None,
        },
        members: members.iter().map(|m| m.as_bytes().to_vec()).collect(),
    }
}

fn followed(run_id: &str, replid: &str) -> Followed {
    Followed {
        run_id: Some(run_id.to_owned()),
        replid: Some(replid.to_owned()),
    }
}

fn admit_all(_: &Registration) -> Result<(), Rejection> {
    Ok(())
}

fn pid(s: &str) -> ProcessId {
    ProcessId::parse(s).unwrap()
}

fn reg(member: &str) -> Registration {
    parse_member(member, PORT).unwrap()
}

/// The registry a full read's plan makes.
fn applied(read: FullRead, mut before: Registry) -> Registry {
    let (_, writes) = read.plan.apply(&mut before, Instant::now());
    assert!(writes.is_empty(), "a full read writes nothing itself");
    before
}

fn state(r: &Registry, p: &str) -> Option<&'static str> {
    r.get(&pid(p)).map(|e| match e.state {
        ProcessState::Active => "active",
        ProcessState::Draining { .. } => "draining",
        ProcessState::Dead { .. } => "dead",
    })
}

#[test]
fn same_redis_a_missing_process_drains_and_nothing_is_written() {
    let before = registry(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
    let read = full_read(
        &before,
        &followed("r1", "x"),
        &snapshot("r1", "x", &["a/127.0.0.1:1"]),
        admit_all,
        PORT,
        true,
        Instant::now(),
    );
    assert_eq!(read.continuity, Continuity::Same);
    assert_eq!(read.drained, [reg("b/127.0.0.1:2")]);
    assert!(read.lost.is_empty() && !read.restoring);
    let after = applied(read, before.clone());
    assert_eq!(state(&after, "a"), Some("active"));
    assert_eq!(state(&after, "b"), Some("draining"));
}

#[test]
fn restarted_redis_keeps_lost_processes_routed_until_probed() {
    let before = registry(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
    let read = full_read(
        &before,
        &followed("r1", "x"),
        &snapshot("r2", "y", &[]),
        admit_all,
        PORT,
        true,
        Instant::now(),
    );
    assert_eq!(read.continuity, Continuity::Restarted);
    assert_eq!(read.followed, followed("r2", "y"));
    assert!(read.restoring);
    assert_eq!(read.lost.len(), 2);
    let mut after = applied(read, before);
    assert_eq!(state(&after, "a"), Some("active"));
    assert_eq!(state(&after, "b"), Some("active"));
    // `a` answers its probe, `b` does not.
    let plan = restore_probed(&[reg("a/127.0.0.1:1")], &[reg("b/127.0.0.1:2")]);
    let (changed, writes) = plan.apply(&mut after, Instant::now());
    assert!(changed);
    assert_eq!(state(&after, "b"), None);
    assert_eq!(
        writes,
        [Write::Restore {
            members: vec!["a/127.0.0.1:1".to_owned()]
        }]
    );
}

#[test]
fn nothing_answering_writes_nothing_back() {
    assert!(restore_probed(&[], &[]).is_empty());
    assert!(restore_probed(&[], &[reg("a/127.0.0.1:1")])
        .writes
        .is_empty());
}

#[test]
fn failover_that_lost_the_newest_writes_restores_them_too() {
    let before = registry(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
    // The promoted replica carries on the old master's history (`replid2`).
    let mut promoted = snapshot("r2", "y", &["a/127.0.0.1:1"]);
    promoted.lineage.replid2 = Some("x".to_owned());
    let read = full_read(
        &before,
        &followed("r1", "x"),
        &promoted,
        admit_all,
        PORT,
        true,
        Instant::now(),
    );
    assert_eq!(read.continuity, Continuity::Failover);
    assert_eq!(read.lost, [reg("b/127.0.0.1:2")]);
    assert!(read.restoring);
}

#[test]
fn a_clean_failover_probes_nothing() {
    let before = registry(&["a/127.0.0.1:1"]);
    let mut promoted = snapshot("r2", "y", &["a/127.0.0.1:1"]);
    promoted.lineage.replid2 = Some("x".to_owned());
    let read = full_read(
        &before,
        &followed("r1", "x"),
        &promoted,
        admit_all,
        PORT,
        true,
        Instant::now(),
    );
    assert_eq!(read.continuity, Continuity::Failover);
    assert!(read.lost.is_empty() && !read.restoring && read.drained.is_empty());
}

#[test]
fn a_lost_process_whose_address_was_reused_is_not_restored() {
    let before = registry(&["old/127.0.0.1:1", "b/127.0.0.1:2"]);
    let read = full_read(
        &before,
        &followed("r1", "x"),
        &snapshot("r2", "y", &["new/127.0.0.1:1"]),
        admit_all,
        PORT,
        true,
        Instant::now(),
    );
    assert_eq!(read.replaced, [reg("old/127.0.0.1:1")]);
    assert_eq!(read.lost, [reg("b/127.0.0.1:2")]);
    let after = applied(read, before);
    assert_eq!(state(&after, "old"), None);
    assert_eq!(state(&after, "new"), Some("active"));
}

#[test]
fn with_restoring_off_the_lost_processes_drain() {
    let before = registry(&["a/127.0.0.1:1"]);
    let read = full_read(
        &before,
        &followed("r1", "x"),
        &snapshot("r2", "y", &[]),
        admit_all,
        PORT,
        false,
        Instant::now(),
    );
    assert!(!read.restoring);
    assert_eq!(read.lost, [reg("a/127.0.0.1:1")]);
    assert_eq!(state(&applied(read, before), "a"), Some("draining"));
}

#[test]
fn the_first_read_since_start_trusts_the_set() {
    // A restarted agent remembers the run_id (state file) but not the replid: a changed
    // run_id is then a restart, the careful reading.
    let before = registry(&["a/127.0.0.1:1"]);
    let followed = Followed {
        run_id: Some("r1".to_owned()),
        replid: None,
    };
    let read = full_read(
        &before,
        &followed,
        &snapshot("r2", "y", &[]),
        admit_all,
        PORT,
        true,
        Instant::now(),
    );
    assert_eq!(read.continuity, Continuity::Restarted);
    let none = full_read(
        &before,
        &Followed::default(),
        &snapshot("r2", "y", &[]),
        admit_all,
        PORT,
        true,
        Instant::now(),
    );
    assert_eq!(none.continuity, Continuity::Same);
    assert_eq!(none.drained, [reg("a/127.0.0.1:1")]);
}

#[test]
fn refused_and_unreadable_members_are_rejected_and_reported_once() {
    let refuse = |r: &Registration| {
        if r.process_id.as_str() == "evil" {
            Err(Rejection::BadMember { member: r.member() })
        } else {
            Ok(())
        }
    };
    let mut snap = snapshot("r1", "x", &["a/127.0.0.1:1", "evil/127.0.0.1:9", "junk"]);
    snap.members.push(vec![0xff, 0xfe]);
    let read = full_read(
        &Registry::default(),
        &Followed::default(),
        &snap,
        refuse,
        PORT,
        true,
        Instant::now(),
    );
    assert_eq!(read.rejected.len(), 3, "{:?}", read.rejected);
    let mut known = Rejections::default();
    assert_eq!(known.full_read(&read.rejected).len(), 3);
    assert!(known.full_read(&read.rejected).is_empty());
    // Gone from the set, then back: reported again.
    assert!(known.full_read(&[]).is_empty());
    assert_eq!(known.full_read(&read.rejected).len(), 3);
    let after = applied(read, Registry::default());
    assert_eq!(after.len(), 1);
}

#[test]
fn a_rejected_announcement_is_not_reported_again_by_the_next_read() {
    let conflict = Rejection::Conflict {
        process_id: pid("a"),
        addresses: "127.0.0.1:1, 127.0.0.1:2".to_owned(),
        kept: "127.0.0.1:1".to_owned(),
    };
    let mut known = Rejections::default();
    known.reported(&conflict);
    assert!(known.full_read(std::slice::from_ref(&conflict)).is_empty());
}

#[test]
fn a_process_dies_after_the_policy_and_is_evicted_when_asked() {
    let r = registry(&["a/127.0.0.1:1"]);
    let mut tracker = Tracker::new(Policy {
        failures: 2,
        window: Duration::ZERO,
    });
    let now = Instant::now();
    let (v, plan) = liveness(&r, &mut tracker, &pid("a"), false, true, now);
    assert_eq!((v, plan.is_empty()), (Verdict::Unchanged, true));
    let (v, plan) = liveness(&r, &mut tracker, &pid("a"), false, true, now);
    assert_eq!(v, Verdict::Died);
    assert_eq!(plan.changes, [Change::MarkDead(pid("a"))]);
    assert_eq!(
        plan.writes,
        [Write::Evict {
            member: "a/127.0.0.1:1".to_owned(),
            process_id: "a".to_owned()
        }]
    );
    let mut r = r;
    assert!(plan.apply(&mut r, now).0);
    assert_eq!(state(&r, "a"), Some("dead"));
    let (v, plan) = liveness(&r, &mut tracker, &pid("a"), true, true, now);
    assert_eq!(
        (v, plan.changes),
        (Verdict::Recovered, vec![Change::MarkAlive(pid("a"))])
    );
}

#[test]
fn without_eviction_a_dead_process_is_only_unrouted() {
    let r = registry(&["a/127.0.0.1:1"]);
    let mut tracker = Tracker::new(Policy {
        failures: 1,
        window: Duration::ZERO,
    });
    let (v, plan) = liveness(&r, &mut tracker, &pid("a"), false, false, Instant::now());
    assert_eq!(v, Verdict::Died);
    assert!(plan.writes.is_empty());
}

#[test]
fn draining_and_unknown_processes_are_not_watched() {
    let mut r = registry(&["a/127.0.0.1:1"]);
    let now = Instant::now();
    r.apply(Announcement::Remove(reg("a/127.0.0.1:1")), now)
        .unwrap();
    let mut tracker = Tracker::new(Policy {
        failures: 1,
        window: Duration::ZERO,
    });
    for p in ["a", "nobody"] {
        let (v, plan) = liveness(&r, &mut tracker, &pid(p), false, true, now);
        assert_eq!((v, plan.is_empty()), (Verdict::Unchanged, true));
    }
}

#[test]
fn drains_end_when_overdue_or_gone_unless_registered_again() {
    let t0 = Instant::now();
    let mut r = registry(&["a/127.0.0.1:1", "b/127.0.0.1:2", "c/127.0.0.1:3"]);
    r.apply(Announcement::Remove(reg("a/127.0.0.1:1")), t0)
        .unwrap();
    r.apply(Announcement::Remove(reg("b/127.0.0.1:2")), t0)
        .unwrap();
    let later = t0 + Duration::from_secs(10);
    assert!(overdue_drains(&r, later, Duration::from_secs(11)).is_empty());
    assert_eq!(
        overdue_drains(&r, later, Duration::from_secs(10)),
        [pid("a"), pid("b")]
    );
    // `b` registered again while the probe ran; `c` never drained.
    r.apply(Announcement::Add(reg("b/127.0.0.1:2")), t0)
        .unwrap();
    let dead = [
        reg("a/127.0.0.1:1"),
        reg("b/127.0.0.1:2"),
        reg("c/127.0.0.1:3"),
    ];
    assert_eq!(gone_drains(&r, &dead), [pid("a")]);
    let (changed, _) = remove(gone_drains(&r, &dead)).apply(&mut r, later);
    assert!(changed);
    assert_eq!(r.len(), 2);
}

#[test]
fn expired_leases_become_writes_only() {
    let plan = expired_leases(vec!["x/127.0.0.1:1".to_owned()]);
    assert!(plan.changes.is_empty());
    assert_eq!(
        plan.writes,
        [Write::ExpireLease {
            member: "x/127.0.0.1:1".to_owned()
        }]
    );
}

#[test]
fn applying_an_unchanged_registry_reports_no_change() {
    let mut r = registry(&["a/127.0.0.1:1"]);
    let plan = Plan {
        changes: vec![Change::Replace(r.clone()), Change::Remove(pid("zz"))],
        writes: Vec::new(),
    };
    assert!(!plan.apply(&mut r, Instant::now()).0);
}

#[test]
fn a_registered_member_refused_now_leaves_routing_without_draining() {
    let before = registry(&["a/127.0.0.1:1", "n/game:2"]);
    let refuse_n = |r: &Registration| {
        if r.process_id.as_str() == "n" {
            Err(Rejection::BadMember { member: r.member() })
        } else {
            Ok(())
        }
    };
    for (run_id, replid) in [("r1", "x"), ("r2", "y")] {
        let read = full_read(
            &before,
            &followed("r1", "x"),
            &snapshot(run_id, replid, &["a/127.0.0.1:1", "n/game:2"]),
            refuse_n,
            PORT,
            true,
            Instant::now(),
        );
        assert_eq!(read.rejected.len(), 1);
        assert!(read.drained.is_empty() && read.lost.is_empty() && !read.restoring);
        let after = applied(read, before.clone());
        assert_eq!(state(&after, "n"), None);
        assert_eq!(state(&after, "a"), Some("active"));
    }
}
