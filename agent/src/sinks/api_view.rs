//! The API's view of the desired state: `/processes`, room lookups and readiness.

use std::sync::Arc;

use crate::controller::DesiredState;
use crate::status::Status;

/// Shows synced states on the API (a restored one is not shown: readiness waits for Redis).
#[derive(Debug)]
pub struct ApiView {
    status: Arc<Status>,
}

impl ApiView {
    pub fn new(status: Arc<Status>) -> Self {
        Self { status }
    }

    /// Records what Envoy now routes to and marks the agent ready.
    pub fn apply(&self, state: &DesiredState) {
        if state.is_synced() {
            self.status.set_registry(&state.routed, &state.weights);
        }
    }
}
