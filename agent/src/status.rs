//! What the sync loop shares with the API: readiness, metrics and the routed processes.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::RwLock;

use routing::ClusterNames;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::model::{ProcessState, Registry};

/// One routed process, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessView {
    pub process_id: String,
    pub address: String,
    pub cluster: String,
    /// `active` (takes matchmaking), `draining` (room connections only) or `dead`
    /// (registered but not answering: not routed).
    pub state: &'static str,
}

/// Shared between the sync loop and the API.
#[derive(Debug)]
pub struct Status {
    pub metrics: Metrics,
    names: ClusterNames,
    /// Set once the first full sync has been written to Envoy's config.
    ready: AtomicBool,
    processes: RwLock<Vec<ProcessView>>,
}

impl Status {
    pub fn new(names: ClusterNames) -> Self {
        Self {
            metrics: Metrics::default(),
            names,
            ready: AtomicBool::new(false),
            processes: RwLock::new(Vec::new()),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// Records what Envoy now routes to, and marks the agent ready.
    pub fn set_registry(&self, registry: &Registry) {
        let views = registry
            .iter()
            .map(|(pid, entry)| ProcessView {
                process_id: pid.to_string(),
                address: entry.endpoint.to_string(),
                cluster: self.names.process(pid),
                state: match entry.state {
                    ProcessState::Active => "active",
                    ProcessState::Draining { .. } => "draining",
                    ProcessState::Dead { .. } => "dead",
                },
            })
            .collect();
        if let Ok(mut p) = self.processes.write() {
            *p = views;
        }
        self.ready.store(true, Relaxed);
    }

    pub fn processes(&self) -> Vec<ProcessView> {
        self.processes.read().map(|p| p.clone()).unwrap_or_default()
    }
}
