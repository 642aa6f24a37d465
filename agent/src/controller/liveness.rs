//! Liveness rounds: expired registrar leases, IPC pings (or TCP connects) to every
//! registered process, and what their answers decide.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use routing::ProcessId;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::plan;
use super::{Controller, LivenessMode, PresenceSession, PresenceSource, Prober};
use crate::layout::IPC_PREFIX;
use crate::liveness::{Policy, Tracker, Verdict};
use crate::model::Registration;
use crate::sources::redis::RedisSourceError;

/// Probe history, pings awaiting an answer, and the results of TCP probes.
pub(super) struct Liveness {
    pub tracker: Tracker,
    pub pings: Pings,
    results_tx: mpsc::UnboundedSender<(ProcessId, bool)>,
    pub results: mpsc::UnboundedReceiver<(ProcessId, bool)>,
}

impl Liveness {
    pub fn new(policy: Policy) -> Self {
        let (results_tx, results) = mpsc::unbounded_channel();
        // Unique per agent run, so several agents on one Redis ignore each other's answers.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ u128::from(std::process::id());
        Self {
            tracker: Tracker::new(policy),
            pings: Pings::new(format!("{IPC_PREFIX}{:x}-", nonce & 0xffff_ffff_ffff)),
            results_tx,
            results,
        }
    }
}

/// Request ids of the pings sent and not answered yet (pure bookkeeping).
pub(super) struct Pings {
    prefix: String,
    seq: u64,
    pending: HashMap<String, ProcessId>,
}

impl Pings {
    pub fn new(prefix: String) -> Self {
        Self {
            prefix,
            seq: 0,
            pending: HashMap::new(),
        }
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// The process a reply answers for, if it answers one of this agent's pending pings.
    pub fn answered(&mut self, request_id: &str) -> Option<ProcessId> {
        self.pending.remove(request_id)
    }

    /// The processes whose pings went unanswered; forgets them.
    pub fn unanswered(&mut self) -> Vec<ProcessId> {
        self.pending.drain().map(|(_, pid)| pid).collect()
    }

    /// A fresh `(processId, requestId)` per process.
    pub fn issue(&mut self, regs: &[Registration]) -> Vec<(String, String)> {
        regs.iter()
            .map(|r| {
                self.seq += 1;
                (
                    r.process_id.to_string(),
                    format!("{}{}", self.prefix, self.seq),
                )
            })
            .collect()
    }

    pub fn sent(&mut self, request_id: String, pid: ProcessId) {
        self.pending.insert(request_id, pid);
    }
}

impl<S: PresenceSource, P: Prober> Controller<S, P> {
    /// Unregisters members whose registrar lease expired, counts unanswered pings of the
    /// previous round as failures, and probes every registered process again.
    pub(super) async fn liveness_round(
        &mut self,
        session: &mut S::Session,
    ) -> Result<(), RedisSourceError> {
        let expired = session.expired_leases().await?;
        for member in &expired {
            warn!(%member, "Registrar lease expired (sidecar gone without deregistering); unregistering.");
        }
        self.execute(session, plan::expired_leases(expired)).await?;
        let mode = self.config.liveness.mode;
        if mode == LivenessMode::Off {
            return Ok(());
        }
        let mut changed = false;
        for pid in self.liveness.pings.unanswered() {
            changed |= self.liveness_result(session, &pid, false).await?;
        }
        let registered = self.registry.registered();
        self.liveness
            .tracker
            .retain(|p| registered.iter().any(|r| r.process_id == *p));
        let mut tcp = Vec::new();
        if mode == LivenessMode::IpcOrTcp && !registered.is_empty() {
            let pings = self.liveness.pings.issue(&registered);
            let receivers = session.ping(&pings).await?;
            for ((reg, (_, id)), n) in registered.iter().zip(pings).zip(receivers) {
                if n > 0 {
                    self.liveness.pings.sent(id, reg.process_id.clone());
                } else {
                    tcp.push(reg.clone());
                }
            }
        } else {
            tcp = registered;
        }
        for reg in tcp {
            let (tx, prober) = (self.liveness.results_tx.clone(), self.prober.clone());
            tokio::spawn(async move {
                let ok = prober.alive_once(reg.endpoint).await;
                let _ = tx.send((reg.process_id, ok));
            });
        }
        if changed {
            self.publish();
        }
        Ok(())
    }

    /// Applies one liveness probe result; returns whether the registry changed.
    pub(super) async fn liveness_result(
        &mut self,
        session: &mut S::Session,
        pid: &ProcessId,
        ok: bool,
    ) -> Result<bool, RedisSourceError> {
        let (verdict, plan) = plan::liveness(
            &self.registry,
            &mut self.liveness.tracker,
            pid,
            ok,
            self.config.liveness.evict_from_presence,
            Instant::now(),
        );
        let failures = self.liveness.tracker.failures(pid);
        match verdict {
            Verdict::Died => {
                self.status.metrics.processes_died.fetch_add(1, Relaxed);
                warn!(process_id = %pid, failures, "Process is not answering; unrouting it until it does.");
                if !plan.writes.is_empty() {
                    info!(process_id = %pid, "Evicting the dead process from Redis presence.");
                }
            }
            Verdict::Recovered => {
                self.status
                    .metrics
                    .processes_recovered
                    .fetch_add(1, Relaxed);
                info!(process_id = %pid, "Process answers again; routing it.");
            }
            Verdict::Unchanged => {
                if !ok {
                    debug!(process_id = %pid, failures, "Liveness probe failed.");
                }
            }
        }
        self.execute(session, plan).await?;
        Ok(verdict != Verdict::Unchanged)
    }
}
