//! Full reads of the presence source, announcements, and the loads that weight matchmaking.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::plan::{self, Plan};
use super::{Controller, PresenceSession, PresenceSource, Prober, Provenance};
use crate::balance::{self, Weights};
use crate::model::{parse_announcement, Announcement};
use crate::sources::redis::{Message, RedisSourceError};
use crate::sources::redis_lineage::Continuity;

impl<S: PresenceSource, P: Prober> Controller<S, P> {
    /// Handles one pub/sub message; returns whether the registry changed.
    pub(super) async fn on_message(
        &mut self,
        session: &mut S::Session,
        message: Message,
    ) -> Result<bool, RedisSourceError> {
        match message {
            Message::Announcement(payload) => Ok(self.announce(&payload)),
            Message::IpcReply { request_id } => match self.liveness.pings.answered(&request_id) {
                Some(pid) => self.liveness_result(session, &pid, true).await,
                // A late answer (e.g. a process resumed after a stall), or another agent's.
                None => Ok(false),
            },
        }
    }

    /// Applies one discovery payload; returns whether the registry changed.
    fn announce(&mut self, payload: &[u8]) -> bool {
        let applied = parse_announcement(payload, self.config.default_port)
            .and_then(|a| match &a {
                Announcement::Add(reg) => self.upstreams.admit(reg).map(|()| a),
                Announcement::Remove(_) => Ok(a),
            })
            .and_then(|a| self.registry.apply(a, Instant::now()));
        match applied {
            Ok(changed) => changed,
            Err(rejection) => {
                self.reject(&rejection);
                self.rejections.reported(&rejection);
                self.status.rejected.add(rejection.to_string());
                false
            }
        }
    }

    /// Reads the whole set and makes the registry match it (see the module rules).
    pub(super) async fn full_sync(
        &mut self,
        session: &mut S::Session,
    ) -> Result<(), RedisSourceError> {
        let snapshot = session.snapshot().await?;
        self.status.metrics.redis_snapshots.fetch_add(1, Relaxed);
        let upstreams = &self.upstreams;
        let read = plan::full_read(
            &self.registry,
            &self.followed,
            &snapshot,
            |reg| upstreams.admit(reg),
            self.config.default_port,
            self.config.restore_lost_registrations,
            Instant::now(),
        );
        for rejection in self.rejections.full_read(&read.rejected) {
            self.reject(rejection);
        }
        self.status.rejected.replace(self.rejections.known());
        if read.continuity == Continuity::Failover {
            self.status.metrics.redis_failovers.fetch_add(1, Relaxed);
            info!(run_id = %snapshot.run_id, missing = read.drained.len() + read.lost.len() + read.replaced.len(), "Redis failed over (same replication history); the registration set carries on.");
        }
        for reg in &read.drained {
            info!(process_id = %reg.process_id, address = %reg.endpoint, "Process left the registration set; draining it.");
        }
        for reg in &read.replaced {
            info!(process_id = %reg.process_id, address = %reg.endpoint, "Lost process's address now belongs to another registration; not restoring it.");
        }
        if !read.lost.is_empty() {
            if read.continuity == Continuity::Restarted {
                self.status.metrics.redis_restarts.fetch_add(1, Relaxed);
            }
            warn!(run_id = %snapshot.run_id, continuity = ?read.continuity, lost = read.lost.len(), "Redis restarted or failed over (new run_id) and lost registrations.");
            if !read.restoring {
                error!(
                    lost = read.lost.len(),
                    "Restoring is disabled: the lost processes drain."
                );
            }
        }
        self.followed = read.followed;
        self.provenance = Provenance::Synced;
        let (lost, restoring) = (read.lost, read.restoring);
        self.execute(session, read.plan).await?;
        self.publish();
        if !restoring {
            return Ok(());
        }
        let (alive, dead) = self.prober.partition(lost).await;
        for reg in &dead {
            warn!(process_id = %reg.process_id, address = %reg.endpoint, "Process lost by Redis does not answer; unrouting it.");
        }
        let metrics = &self.status.metrics;
        metrics
            .registrations_dropped_dead
            .fetch_add(dead.len() as u64, Relaxed);
        metrics
            .registrations_restored
            .fetch_add(alive.len() as u64, Relaxed);
        if !alive.is_empty() {
            info!(
                restored = alive.len(),
                "Writing registrations lost by Redis back."
            );
        }
        let plan = plan::restore_probed(&alive, &dead);
        // Unrouted before the writes, as the dead cannot be told to take players.
        let removes = Plan {
            changes: plan.changes,
            writes: Vec::new(),
        };
        if self.execute(session, removes).await? {
            self.publish();
        }
        let writes = Plan {
            changes: Vec::new(),
            writes: plan.writes,
        };
        self.execute(session, writes).await?;
        Ok(())
    }

    /// Reads the processes' loads and reweights matchmaking; publishes only if a weight
    /// changed.
    pub(super) async fn rebalance(
        &mut self,
        session: &mut S::Session,
    ) -> Result<(), RedisSourceError> {
        let weights = self.read_weights(session).await?;
        if weights != self.weights {
            debug!(?weights, "Matchmaking weights changed.");
            self.weights = weights;
            self.publish();
        }
        Ok(())
    }

    /// The active processes' weights from the loads they report now.
    pub(super) async fn read_weights(
        &mut self,
        session: &mut S::Session,
    ) -> Result<Weights, RedisSourceError> {
        let (loads, bad) = balance::loads_from_roomcount(session.roomcount().await?);
        let bad: BTreeSet<String> = bad.into_iter().collect();
        for field in bad.difference(&self.bad_loads) {
            self.status.metrics.reject(super::SOURCE, "bad_roomcount");
            warn!(
                field,
                "Skipping an unreadable roomcount entry; that process counts as idle."
            );
        }
        self.bad_loads = bad;
        let active: Vec<routing::ProcessId> = self
            .registry
            .iter()
            .filter(|(_, e)| e.is_active())
            .map(|(pid, _)| pid.clone())
            .collect();
        Ok(balance::weights(self.config.balance, &loads, &active))
    }
}
