//! The routed processes as `/processes` rows, kept in step with the registry change by
//! change. Pure.
//!
//! At 10,000 processes, rendering every row again (three strings each) on each
//! registration, and copying the set for each long-poll answer, was most of the agent's
//! work per change, and the answers multiply by Envoys × workers. The rows are a
//! persistent map by processId: a change renders only its own rows, an answer takes an O(1)
//! copy, and two sets are compared (for versions and deltas) skipping what they share.

use imbl::ordmap::DiffItem;
use routing::wire::{ProcessRow, ProcessState as Shown};
use routing::{ClusterNames, ProcessId};

use crate::balance::{Weights, DEFAULT_WEIGHT};
use crate::model::{Entry, ProcessState, Registry};

/// `/processes` rows by processId, without rooms and clients (joined when a whole set is
/// answered: they change all the time and the filter does not read them).
pub type Rows = imbl::OrdMap<String, ProcessRow>;

/// The row of one process.
pub fn row(names: &ClusterNames, pid: &ProcessId, entry: &Entry, weights: &Weights) -> ProcessRow {
    ProcessRow {
        process_id: pid.to_string(),
        address: entry.endpoint.to_string(),
        cluster: names.process(pid),
        state: match entry.state {
            ProcessState::Active => Shown::Active,
            ProcessState::Draining { .. } => Shown::Draining,
            ProcessState::Dead { .. } => Shown::Dead,
        },
        weight: entry
            .is_active()
            .then(|| weights.get(pid).copied().unwrap_or(DEFAULT_WEIGHT)),
        rooms: None,
        ccu: None,
    }
}

/// What a new set of rows changed, for the sinks of the API: processes that became
/// routable (they start warming), that stopped being routable, and that left (their rooms
/// leave the index).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Transitions {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub removed: Vec<String>,
}

/// The rows shown, and the registry and weights they show.
#[derive(Debug, Default)]
pub struct ProcessRows {
    rows: Rows,
    registry: Registry,
    weights: Weights,
}

impl ProcessRows {
    pub fn rows(&self) -> &Rows {
        &self.rows
    }

    /// Makes the rows show `registry` with `weights`. With the same weights only the
    /// processes that changed are rendered (a walk of the registry's changes, which skips
    /// what two versions share); new weights render every row.
    pub fn update(
        &mut self,
        names: &ClusterNames,
        registry: &Registry,
        weights: &Weights,
    ) -> Transitions {
        let rows = if *weights == self.weights {
            let mut rows = self.rows.clone();
            for (pid, entry) in self.registry.changes(registry) {
                match entry {
                    Some(e) => rows.insert(pid.to_string(), row(names, pid, e, weights)),
                    None => rows.remove(pid.as_str()),
                };
            }
            rows
        } else {
            registry
                .iter()
                .map(|(pid, e)| (pid.to_string(), row(names, pid, e, weights)))
                .collect()
        };
        let transitions = transitions(&self.rows, &rows);
        self.rows = rows;
        self.registry = registry.clone();
        self.weights.clone_from(weights);
        transitions
    }
}

/// What changed from `old` to `new`, as far as warming and rooms go.
pub fn transitions(old: &Rows, new: &Rows) -> Transitions {
    let mut t = Transitions::default();
    for item in old.diff(new) {
        match item {
            DiffItem::Add(pid, r) => {
                if r.state.is_routable() {
                    t.started.push(pid.clone());
                }
            }
            DiffItem::Update {
                old: (pid, o),
                new: (_, n),
            } => match (o.state.is_routable(), n.state.is_routable()) {
                (false, true) => t.started.push(pid.clone()),
                (true, false) => t.stopped.push(pid.clone()),
                _ => {}
            },
            DiffItem::Remove(pid, r) => {
                if r.state.is_routable() {
                    t.stopped.push(pid.clone());
                }
                t.removed.push(pid.clone());
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn registry(members: &[&str]) -> Registry {
        Registry::default()
            .from_members(members.iter().copied(), 1, Instant::now())
            .0
    }

    /// Every row rendered from scratch: what [`ProcessRows::update`] must always equal.
    fn fresh(registry: &Registry, weights: &Weights) -> Rows {
        let names = ClusterNames::default();
        registry
            .iter()
            .map(|(pid, e)| (pid.to_string(), row(&names, pid, e, weights)))
            .collect()
    }

    #[test]
    fn rows_follow_registrations_drains_deaths_and_weights() {
        let names = ClusterNames::default();
        let now = Instant::now();
        let mut shown = ProcessRows::default();
        let a = ProcessId::parse("a").unwrap();
        let one = registry(&["a/127.0.0.1:1"]);
        let t = shown.update(&names, &one, &Weights::new());
        assert_eq!(t.started, ["a"]);
        // A registration, then the first one dead, then a drain.
        let two = one
            .from_members(["a/127.0.0.1:1", "b/127.0.0.1:2"], 1, now)
            .0;
        assert_eq!(shown.update(&names, &two, &Weights::new()).started, ["b"]);
        let mut dead = two.clone();
        assert!(dead.mark_dead(&a, now));
        let t = shown.update(&names, &dead, &Weights::new());
        assert_eq!(
            (t.started.len(), t.stopped.as_slice()),
            (0, &["a".to_owned()][..])
        );
        assert_eq!(shown.rows(), &fresh(&dead, &Weights::new()));
        assert!(dead.mark_alive(&a));
        let t = shown.update(&names, &dead, &Weights::new());
        assert_eq!(t.started, ["a"]);
        let drained = dead.from_members(["b/127.0.0.1:2"], 1, now).0;
        let t = shown.update(&names, &drained, &Weights::new());
        assert_eq!(
            t,
            Transitions::default(),
            "a draining process stays routable"
        );
        assert_eq!(shown.rows()["a"].state, Shown::Draining);
        // New weights: every row again.
        let weights: Weights = [(ProcessId::parse("b").unwrap(), 7)].into_iter().collect();
        shown.update(&names, &drained, &weights);
        assert_eq!(shown.rows(), &fresh(&drained, &weights));
        assert_eq!(shown.rows()["b"].weight, Some(7));
        // Gone: removed, and no longer routable.
        let t = shown.update(&names, &registry(&[]), &weights);
        assert_eq!((t.stopped.len(), t.removed.len()), (2, 2));
        assert!(shown.rows().is_empty());
    }
}
