//! The desired state: what the controller wants every sink to show, as one immutable,
//! versioned value. Sinks subscribe to it (see [`crate::sinks`]); nothing else flows from
//! the controller to them.

use std::sync::Arc;

use tokio::sync::watch;

use crate::balance::Weights;
use crate::model::{Registration, Registry};
use crate::state::{RedisOrigin, SyncedState};

/// Where a desired state's registrations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// The state file, before the source answered: what Envoy most likely routes to now.
    /// A sink that already shows something keeps it, unless `replaces_other_fleet` (the
    /// state file was another Redis's, so what Envoy shows is another fleet's).
    Restored { replaces_other_fleet: bool },
    /// A full read of the source, and everything applied since.
    Synced,
}

/// One published state. Never mutated: a change is a new value with a higher version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    /// Increases by one with each publication whose content differs; 0 is the state the
    /// controller starts with.
    pub version: u64,
    pub provenance: Provenance,
    /// What Envoy gets: checked addresses only, DNS names resolved by the agent, each
    /// process with its state (active, draining, dead).
    pub routed: Registry,
    /// Matchmaking weights of the active processes.
    pub weights: Weights,
    /// The registrations as read (names unresolved), and the Redis they came from: what the
    /// state file keeps across agent restarts ([`Self::persisted`]).
    pub registered: Registry,
    pub origin: RedisOrigin,
    pub run_id: Option<String>,
}

impl DesiredState {
    /// What the state file keeps: formatted here, by the sink that writes it, so that
    /// publishing a state costs nothing per registration.
    pub fn persisted(&self) -> SyncedState {
        let members = |regs: Vec<Registration>| regs.iter().map(Registration::member).collect();
        SyncedState {
            redis: Some(self.origin.clone()),
            redis_run_id: self.run_id.clone(),
            members: members(self.registered.active()),
            draining: members(self.registered.draining()),
        }
    }

    /// Whether a full read of the source stands behind this state.
    pub fn is_synced(&self) -> bool {
        self.provenance == Provenance::Synced
    }
}

/// The controller's end of the subscription: publishes a new version only when the content
/// changed, so a re-read that finds nothing new wakes no sink.
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Arc<DesiredState>>,
}

impl Publisher {
    /// Starts at version 0 with `first`'s content.
    pub fn new(first: DesiredState) -> Self {
        let (tx, _) = watch::channel(Arc::new(DesiredState {
            version: 0,
            ..first
        }));
        Self { tx }
    }

    /// A receiver that sees the current state at once, then every later version (the
    /// newest only, when the subscriber is slower than the changes).
    pub fn subscribe(&self) -> watch::Receiver<Arc<DesiredState>> {
        self.tx.subscribe()
    }

    /// The state published last.
    pub fn current(&self) -> Arc<DesiredState> {
        self.tx.borrow().clone()
    }

    /// Publishes `next` (its `version` is ignored) unless its content is the current one.
    /// Returns the version now current.
    pub fn publish(&self, next: DesiredState) -> u64 {
        let current = self.current();
        let next = DesiredState {
            version: current.version,
            ..next
        };
        if *current == next {
            return current.version;
        }
        let version = current.version + 1;
        self.tx
            .send_replace(Arc::new(DesiredState { version, ..next }));
        version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(members: &[&str], provenance: Provenance) -> DesiredState {
        let now = std::time::Instant::now();
        DesiredState {
            version: 99,
            provenance,
            routed: Registry::default()
                .from_members(members.iter().copied(), 1, now)
                .0,
            weights: Weights::new(),
            registered: Registry::default(),
            origin: RedisOrigin {
                url: "redis://127.0.0.1:6379/0".into(),
                db: 0,
            },
            run_id: None,
        }
    }

    #[test]
    fn a_version_per_change_and_none_for_the_same_content() {
        let restored = Provenance::Restored {
            replaces_other_fleet: false,
        };
        let p = Publisher::new(state(&["a/127.0.0.1:1"], restored));
        let mut rx = p.subscribe();
        assert_eq!(rx.borrow_and_update().version, 0);
        // The same registry, now read from the source: a new version (sinks must hear it).
        assert_eq!(p.publish(state(&["a/127.0.0.1:1"], Provenance::Synced)), 1);
        assert_eq!(p.publish(state(&["a/127.0.0.1:1"], Provenance::Synced)), 1);
        assert_eq!(
            p.publish(state(
                &["a/127.0.0.1:1", "b/127.0.0.1:2"],
                Provenance::Synced
            )),
            2
        );
        assert!(rx.has_changed().unwrap_or(false));
        let seen = rx.borrow_and_update().clone();
        assert_eq!((seen.version, seen.routed.len()), (2, 2));
    }
}
