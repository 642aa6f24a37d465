//! When is a registered process dead? Pure bookkeeping of probe results.
//!
//! Colyseus's own cleanup after one missed ping has deleted live rooms (colyseus#968), so a
//! process is dead only after `failures` consecutive failed probes spanning at least
//! `window`: a process stalled for less (GC pause, `SIGSTOP`, a slow Redis) keeps its
//! players. One successful probe makes a dead process live again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use routing::ProcessId;

/// How much failure makes a process dead.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Consecutive failed probes.
    pub failures: u32,
    /// Least time between the first of them and the verdict.
    pub window: Duration,
}

/// What a probe result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    /// The process just crossed the policy's threshold.
    Died,
    /// A dead process answered.
    Recovered,
}

#[derive(Debug, Default)]
struct Health {
    consecutive: u32,
    first_failure: Option<Instant>,
    dead: bool,
}

/// Probe history per process.
#[derive(Debug)]
pub struct Tracker {
    policy: Policy,
    health: BTreeMap<ProcessId, Health>,
}

impl Tracker {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            health: BTreeMap::new(),
        }
    }

    /// Records one probe result taken at `now`.
    pub fn record(&mut self, process_id: &ProcessId, ok: bool, now: Instant) -> Verdict {
        let h = self.health.entry(process_id.clone()).or_default();
        if ok {
            let was_dead = h.dead;
            *h = Health::default();
            return if was_dead {
                Verdict::Recovered
            } else {
                Verdict::Unchanged
            };
        }
        h.consecutive += 1;
        let first = *h.first_failure.get_or_insert(now);
        let over = h.consecutive >= self.policy.failures
            && now.saturating_duration_since(first) >= self.policy.window;
        if over && !h.dead {
            h.dead = true;
            Verdict::Died
        } else {
            Verdict::Unchanged
        }
    }

    /// Consecutive failures so far (for logs).
    pub fn failures(&self, process_id: &ProcessId) -> u32 {
        self.health.get(process_id).map_or(0, |h| h.consecutive)
    }

    /// Drops processes no longer watched.
    pub fn retain(&mut self, keep: impl Fn(&ProcessId) -> bool) {
        self.health.retain(|p, _| keep(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Tracker {
        Tracker::new(Policy {
            failures: 3,
            window: Duration::from_secs(5),
        })
    }

    #[test]
    fn dead_only_after_enough_failures_over_the_window() {
        let mut t = tracker();
        let p = ProcessId::parse("p").unwrap();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.record(&p, false, at(0)), Verdict::Unchanged);
        assert_eq!(t.record(&p, false, at(1)), Verdict::Unchanged);
        // Three failures, but within 2 s: not yet.
        assert_eq!(t.record(&p, false, at(2)), Verdict::Unchanged);
        assert_eq!(t.record(&p, false, at(5)), Verdict::Died);
        assert_eq!(t.record(&p, false, at(7)), Verdict::Unchanged);
        assert_eq!(t.record(&p, true, at(8)), Verdict::Recovered);
        assert_eq!(t.record(&p, true, at(9)), Verdict::Unchanged);
    }

    #[test]
    fn a_stall_shorter_than_the_window_is_forgiven() {
        let mut t = tracker();
        let p = ProcessId::parse("p").unwrap();
        let t0 = Instant::now();
        for s in [0, 2, 4] {
            assert_eq!(
                t.record(&p, false, t0 + Duration::from_secs(s)),
                Verdict::Unchanged
            );
        }
        assert_eq!(
            t.record(&p, true, t0 + Duration::from_secs(5)),
            Verdict::Unchanged
        );
        assert_eq!(t.failures(&p), 0);
        // The count starts over.
        for s in [6, 8] {
            assert_eq!(
                t.record(&p, false, t0 + Duration::from_secs(s)),
                Verdict::Unchanged
            );
        }
    }
}
