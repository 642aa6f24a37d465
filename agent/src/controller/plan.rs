//! The controller's decisions, pure: each takes what the controller knows and what a
//! source or a probe reported, and returns a [`Plan`]: the changes to make to the registry
//! and the writes to send back to the presence source. No I/O here, and no other path
//! writes back to a source: the controller only executes plans.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use routing::ProcessId;

use crate::liveness::{Tracker, Verdict};
use crate::model::{parse_member, ProcessState, Registration, Registry, Rejection};
use crate::sources::redis::Snapshot;
use crate::sources::redis_lineage::{self, Continuity};

/// A write back to the presence source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Re-adds registrations a restarted Redis lost (their processes answered), with the
    /// `add` announcements Colyseus would send.
    Restore { members: Vec<String> },
    /// Unregisters a member whose registrar lease expired, as its sidecar would have.
    ExpireLease { member: String },
    /// Removes a dead process's presence, as Colyseus's own cleanup does.
    Evict { member: String, process_id: String },
}

/// One change to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The registry as a full read made it.
    Replace(Registry),
    Remove(ProcessId),
    MarkDead(ProcessId),
    MarkAlive(ProcessId),
}

/// What to do: registry changes first, then writes, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub writes: Vec<Write>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.writes.is_empty()
    }

    /// Applies the changes to `registry`; returns whether it changed, and the writes left
    /// for the caller to send.
    pub fn apply(self, registry: &mut Registry, now: Instant) -> (bool, Vec<Write>) {
        let mut changed = false;
        for change in self.changes {
            changed |= match change {
                Change::Replace(next) => {
                    let differs = *registry != next;
                    *registry = next;
                    differs
                }
                Change::Remove(pid) => {
                    let known = registry.get(&pid).is_some();
                    registry.remove(&pid);
                    known
                }
                Change::MarkDead(pid) => registry.mark_dead(&pid, now),
                Change::MarkAlive(pid) => registry.mark_alive(&pid),
            };
        }
        (changed, self.writes)
    }
}

/// The Redis a registry was last synced with, to tell a restart or failover from removals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Followed {
    pub run_id: Option<String>,
    /// `master_replid`: in memory only (a restarted agent cannot tell a failover).
    pub replid: Option<String>,
}

/// What one full read decided.
#[derive(Debug)]
pub struct FullRead {
    /// Replaces the registry.
    pub plan: Plan,
    pub continuity: Continuity,
    /// The Redis now followed.
    pub followed: Followed,
    /// Every member this read refused (the caller reports the new ones, see
    /// [`Rejections`]).
    pub rejected: Vec<Rejection>,
    /// Processes that left the set and now drain.
    pub drained: Vec<Registration>,
    /// Processes lost with a restart whose address a new registration holds: not restored.
    pub replaced: Vec<Registration>,
    /// Processes a restarted (or failed over) Redis lost: routed while
    /// [`Self::restoring`], to be probed and then decided by [`restore_probed`]; left to
    /// drain otherwise.
    pub lost: Vec<Registration>,
    pub restoring: bool,
}

/// Makes the registry match a full read (see the rules in [`crate::controller`]).
/// `admit` is the upstream check of a registration's address.
pub fn full_read(
    registry: &Registry,
    followed: &Followed,
    snapshot: &Snapshot,
    admit: impl Fn(&Registration) -> Result<(), Rejection>,
    default_port: u16,
    restore_enabled: bool,
    now: Instant,
) -> FullRead {
    let mut members = Vec::with_capacity(snapshot.members.len());
    let (mut rejected, mut refused) = (Vec::new(), Vec::new());
    for raw in &snapshot.members {
        match std::str::from_utf8(raw) {
            Ok(m) => match parse_member(m, default_port) {
                Ok(reg) => match admit(&reg) {
                    Ok(()) => members.push(m),
                    Err(rejection) => {
                        rejected.push(rejection);
                        refused.push(reg);
                    }
                },
                // Rejected by `from_members`.
                Err(_) => members.push(m),
            },
            Err(_) => rejected.push(Rejection::BadMember {
                member: String::from_utf8_lossy(raw).into_owned(),
            }),
        }
    }
    let (mut fresh, mut outcome) = registry.from_members(members, default_port, now);
    rejected.extend(outcome.rejected);
    // A member still registered but refused now (its name resolves to a refused address)
    // did not leave: it is out of routing, not draining, and not lost by a restart.
    for reg in &refused {
        let same = |e: &Registration| e.process_id == reg.process_id && e.endpoint == reg.endpoint;
        outcome.vanished.retain(|v| !same(v));
        if fresh
            .get(&reg.process_id)
            .is_some_and(|e| e.endpoint == reg.endpoint)
        {
            fresh.remove(&reg.process_id);
        }
    }
    let continuity = redis_lineage::continuity(
        followed.run_id.as_deref(),
        followed.replid.as_deref(),
        &snapshot.run_id,
        &snapshot.lineage,
    );
    let mut read = FullRead {
        plan: Plan::default(),
        continuity,
        followed: Followed {
            run_id: Some(snapshot.run_id.clone()),
            replid: snapshot.lineage.replid.clone(),
        },
        rejected,
        drained: Vec::new(),
        replaced: Vec::new(),
        lost: Vec::new(),
        restoring: false,
    };
    if continuity == Continuity::Same || outcome.vanished.is_empty() {
        read.drained = outcome.vanished;
    } else {
        // A lost process whose address a newly registered process now holds was replaced
        // (its port reused): a probe would reach the newcomer, so it is not restored.
        let (replaced, lost): (Vec<_>, Vec<_>) = outcome
            .vanished
            .into_iter()
            .partition(|r| fresh.active_at(&r.endpoint).is_some());
        for reg in &replaced {
            fresh.remove(&reg.process_id);
        }
        read.replaced = replaced;
        read.restoring = restore_enabled && !lost.is_empty();
        if read.restoring {
            // Kept fully routed while they are probed.
            fresh.restore(lost.clone());
        }
        read.lost = lost;
    }
    read.plan.changes.push(Change::Replace(fresh));
    read
}

/// After the processes a restarted Redis lost were probed: the dead ones go, the live
/// ones are written back.
pub fn restore_probed(alive: &[Registration], dead: &[Registration]) -> Plan {
    let mut plan = Plan {
        changes: dead
            .iter()
            .map(|r| Change::Remove(r.process_id.clone()))
            .collect(),
        writes: Vec::new(),
    };
    if !alive.is_empty() {
        plan.writes.push(Write::Restore {
            members: alive.iter().map(Registration::member).collect(),
        });
    }
    plan
}

/// Members whose registrar lease expired are unregistered.
pub fn expired_leases(members: Vec<String>) -> Plan {
    Plan {
        changes: Vec::new(),
        writes: members
            .into_iter()
            .map(|member| Write::ExpireLease { member })
            .collect(),
    }
}

/// Records one liveness probe result of `pid` and decides: a process that just died is
/// unrouted (and evicted from presence if `evict`), one that recovered is routed again.
/// Draining and unknown processes are not watched.
pub fn liveness(
    registry: &Registry,
    tracker: &mut Tracker,
    pid: &ProcessId,
    ok: bool,
    evict: bool,
    now: Instant,
) -> (Verdict, Plan) {
    let Some(entry) = registry.get(pid).filter(|e| !e.is_draining()) else {
        return (Verdict::Unchanged, Plan::default());
    };
    let verdict = tracker.record(pid, ok, now);
    let mut plan = Plan::default();
    match verdict {
        Verdict::Died => {
            plan.changes.push(Change::MarkDead(pid.clone()));
            if evict {
                let member = Registration {
                    process_id: pid.clone(),
                    endpoint: entry.endpoint.clone(),
                }
                .member();
                plan.writes.push(Write::Evict {
                    member,
                    process_id: pid.to_string(),
                });
            }
        }
        Verdict::Recovered => plan.changes.push(Change::MarkAlive(pid.clone())),
        Verdict::Unchanged => {}
    }
    (verdict, plan)
}

/// Draining processes past `max_drain` lose their cluster.
pub fn overdue_drains(registry: &Registry, now: Instant, max_drain: Duration) -> Vec<ProcessId> {
    registry
        .iter()
        .filter(|(_, e)| match e.state {
            ProcessState::Draining { since } => now.saturating_duration_since(since) >= max_drain,
            ProcessState::Active | ProcessState::Dead { .. } => false,
        })
        .map(|(pid, _)| pid.clone())
        .collect()
}

/// Draining processes a probe found gone lose their cluster, unless they registered again
/// (or at another address) since the probe started.
pub fn gone_drains(registry: &Registry, dead: &[Registration]) -> Vec<ProcessId> {
    dead.iter()
        .filter(|reg| {
            registry
                .get(&reg.process_id)
                .is_some_and(|e| e.is_draining() && e.endpoint == reg.endpoint)
        })
        .map(|reg| reg.process_id.clone())
        .collect()
}

/// A plan removing these processes.
pub fn remove(pids: impl IntoIterator<Item = ProcessId>) -> Plan {
    Plan {
        changes: pids.into_iter().map(Change::Remove).collect(),
        writes: Vec::new(),
    }
}

/// Which rejections were already reported: a bad member that stays in Redis is logged
/// and counted once, not at every re-read.
#[derive(Debug, Default)]
pub struct Rejections {
    known: BTreeSet<String>,
}

impl Rejections {
    /// Records the rejections of a full read (which replace the known ones); returns those
    /// not reported yet.
    pub fn full_read<'a>(&mut self, rejected: &'a [Rejection]) -> Vec<&'a Rejection> {
        let now: BTreeSet<String> = rejected.iter().map(ToString::to_string).collect();
        let new = rejected
            .iter()
            .filter(|r| !self.known.contains(&r.to_string()))
            .collect();
        self.known = now;
        new
    }

    /// Records a rejection reported on its own (an announcement): the member is in the set
    /// too, and the next full read must not report it again.
    pub fn reported(&mut self, rejection: &Rejection) {
        self.known.insert(rejection.to_string());
    }

    /// The rejections standing now (what `/rejected` and `status` list).
    pub fn known(&self) -> &BTreeSet<String> {
        &self.known
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
