//! The registrations Redis holds now that the agent refuses (a game server without
//! `SELF_HOSTNAME`, an address outside the allowed networks...), each with its reason, for
//! the API's `/rejected` and `status`: Colyseus still places rooms on such a process and
//! every player of them fails, so an operator must see which one and why.

use std::collections::BTreeSet;
use std::sync::RwLock;

/// The current set, replaced at every full read of the registrations.
#[derive(Debug, Default)]
pub struct Rejected(RwLock<BTreeSet<String>>);

impl Rejected {
    pub fn replace(&self, now: &BTreeSet<String>) {
        if let Ok(mut set) = self.0.write() {
            set.clone_from(now);
        }
    }

    /// One more, from an announcement between full reads.
    pub fn add(&self, rejection: String) {
        if let Ok(mut set) = self.0.write() {
            set.insert(rejection);
        }
    }

    pub fn list(&self) -> Vec<String> {
        self.0
            .read()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}
