//! The state file: the registrations and the Redis they came from, kept across agent
//! restarts (see [`crate::state`]).

use std::path::PathBuf;

use tracing::warn;

use crate::controller::DesiredState;
use crate::state::{self, SyncedState};

/// Saves synced states, skipping identical writes.
#[derive(Debug)]
pub struct StateFileSink {
    path: PathBuf,
    /// Last state saved (or restored from the file at start).
    saved: Option<SyncedState>,
}

impl StateFileSink {
    pub fn new(path: PathBuf) -> Self {
        Self { path, saved: None }
    }

    /// Saves `state` if it was synced and differs from the file. A restored state is what
    /// the file holds already (or what replaces another Redis's state: saved once this
    /// Redis answered).
    pub fn apply(&mut self, state: &DesiredState) {
        if !state.is_synced() {
            if self.saved.is_none() {
                self.saved = Some(state.persisted.clone());
            }
            return;
        }
        if self.saved.as_ref() == Some(&state.persisted) {
            return;
        }
        match state::save(&self.path, &state.persisted) {
            Ok(()) => self.saved = Some(state.persisted.clone()),
            Err(e) => warn!(error = %e, "Cannot save the agent state file."),
        }
    }
}
