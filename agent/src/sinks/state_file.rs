//! The state file: the registrations and the Redis they came from, kept across agent
//! restarts (see [`crate::state`]).

use std::path::PathBuf;

use tracing::warn;

use crate::controller::DesiredState;
use crate::model::Registry;
use crate::state::{self, SyncedState};

/// Saves synced states, skipping identical writes.
#[derive(Debug)]
pub struct StateFileSink {
    path: PathBuf,
    /// Last state saved (or restored from the file at start).
    saved: Option<SyncedState>,
    /// The registrations and run_id that state was formatted from: an unchanged registry
    /// is not formatted again (an O(1) comparison for an unchanged persistent map). The
    /// origin is not in it: it is fixed for the agent's run.
    seen: Option<(Registry, Option<String>)>,
}

impl StateFileSink {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            saved: None,
            seen: None,
        }
    }

    /// Saves `state` if it was synced and differs from the file. A restored state is what
    /// the file holds already (or what replaces another Redis's state: saved once this
    /// Redis answered).
    pub fn apply(&mut self, state: &DesiredState) {
        if !state.is_synced() {
            if self.saved.is_none() {
                self.saved = Some(state.persisted());
            }
            return;
        }
        let seen = (state.registered.clone(), state.run_id.clone());
        if self.seen.as_ref() == Some(&seen) {
            return;
        }
        let persisted = state.persisted();
        if self.saved.as_ref() == Some(&persisted) {
            self.seen = Some(seen);
            return;
        }
        match state::save(&self.path, &persisted) {
            Ok(()) => {
                self.saved = Some(persisted);
                self.seen = Some(seen);
            }
            Err(e) => warn!(error = %e, "Cannot save the agent state file."),
        }
    }
}
