//! The end of drains: overdue, gone (their port stopped accepting connections), or idle
//! (Envoy shows no request to them).

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::info;

use super::plan;
use super::{Controller, ControllerConfig, PresenceSource, Prober};
use crate::idle_drains::IdleDrains;
use crate::model::Registration;

/// The background probes of draining processes and the reads of Envoy's admin.
pub(super) struct Drains {
    probe_in_flight: bool,
    gone_tx: mpsc::UnboundedSender<Vec<Registration>>,
    /// Draining processes a background probe found gone.
    pub gone: mpsc::UnboundedReceiver<Vec<Registration>>,
    pub idle: IdleDrains,
}

impl Drains {
    pub fn new(config: &ControllerConfig) -> Self {
        let (gone_tx, gone) = mpsc::unbounded_channel();
        Self {
            probe_in_flight: false,
            gone_tx,
            gone,
            idle: IdleDrains::new(
                config.envoy_admin.clone(),
                config.cluster_names.clone(),
                config.drain_idle,
            ),
        }
    }
}

impl<S: PresenceSource, P: Prober> Controller<S, P> {
    /// Expires overdue drains and starts a background probe of the others (and a read of
    /// Envoy's open requests).
    pub(super) fn check_drains(&mut self) {
        let expired = plan::overdue_drains(&self.registry, Instant::now(), self.config.max_drain);
        for pid in &expired {
            info!(process_id = %pid, "Drain period over; removing the process cluster.");
        }
        if self.remove(expired) {
            self.publish();
        }
        let draining = self.registry.draining();
        self.drains.idle.check(&draining);
        if draining.is_empty() || self.drains.probe_in_flight {
            return;
        }
        self.drains.probe_in_flight = true;
        let (prober, tx) = (self.prober.clone(), self.drains.gone_tx.clone());
        tokio::spawn(async move {
            let (_, dead) = prober.partition(draining).await;
            let _ = tx.send(dead);
        });
    }

    /// Removes draining processes that stopped accepting connections.
    pub(super) fn drop_gone_drains(&mut self, dead: &[Registration]) {
        self.drains.probe_in_flight = false;
        let gone = plan::gone_drains(&self.registry, dead);
        for pid in &gone {
            info!(process_id = %pid, "Draining process is gone; removing its cluster.");
        }
        if self.remove(gone) {
            self.publish();
        }
    }

    /// Removes draining processes that carried no request for `drain_idle`.
    pub(super) fn drop_idle_drains(&mut self, active: &BTreeMap<String, u64>) {
        let idle = self
            .drains
            .idle
            .idle(&self.registry.draining(), active, Instant::now());
        for reg in &idle {
            info!(process_id = %reg.process_id, "Draining process carries no connection; removing its cluster.");
        }
        if self.remove(idle.into_iter().map(|r| r.process_id).collect()) {
            self.publish();
        }
    }

    /// Removal plans write nothing back, so they apply without a session.
    fn remove(&mut self, pids: Vec<routing::ProcessId>) -> bool {
        let (changed, writes) = plan::remove(pids).apply(&mut self.registry, Instant::now());
        debug_assert!(writes.is_empty());
        changed
    }
}
