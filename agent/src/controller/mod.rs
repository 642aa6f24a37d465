//! The controller: owns the registry, follows the presence source, decides, and publishes
//! the desired state that every sink subscribes to.
//!
//! # Layout
//! - [`plan`]: the decisions, pure: each returns a [`plan::Plan`] (registry changes, writes
//!   back to the source). The controller writes to a source only by executing a plan.
//! - [`desired`]: the published [`DesiredState`] and its [`desired::Publisher`].
//! - [`source`]: the presence source and the prober, behind traits.
//! - `start`, `reads`, `liveness`, `drains`: the controller's I/O by concern (the first
//!   state, full reads and loads, liveness rounds, the end of drains).
//!
//! # Rules that keep routing safe
//! - Nothing is published as synced until a full read of Redis succeeded; when Redis is
//!   unreachable the last good state stays (Envoy keeps it; the agent never writes an empty
//!   config because a source failed).
//! - Every (re)connection and every `resync_interval` re-reads the whole set, so missed
//!   pub/sub messages can never make the config drift.
//! - The state file records which Redis it came from (URL without credentials, db); a
//!   state from another Redis is never restored, so another fleet's registrations are never
//!   written into this one, and that fleet is unrouted at start.
//! - With the same Redis `run_id`, the set is the truth: a process missing from it was
//!   removed, even if its `remove` announcement was lost while disconnected.
//! - With a new `run_id` (Redis restarted, often without persistence, and Colyseus 0.16
//!   registers only once) processes missing from the set stay routed while they are probed;
//!   those that answer are written back into Redis (SADD + the `add` announcement, as
//!   Colyseus does), those that never answer are dropped.
//! - A process that unregisters (graceful shutdown) drains: it leaves the all-processes
//!   cluster at once (no new matchmaking) but keeps its own cluster, because Colyseus goes on
//!   seating players in, and reconnecting players to, its remaining rooms. Its cluster goes
//!   when the process stops accepting connections (probed every `drain_check_interval`),
//!   when Envoy shows no request to it for `drain_idle`, or after `max_drain`. Open
//!   WebSockets are never cut by a config change either way.

mod config;
pub mod desired;
mod drains;
mod liveness;
pub mod plan;
mod reads;
pub mod source;
mod start;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

pub use config::{ControllerConfig, LivenessConfig, LivenessMode};
pub use desired::{DesiredState, Provenance};
pub use source::{PresenceSession, PresenceSource, Prober, TcpProber};

use crate::balance::{Balance, Weights};
use crate::model::{Registry, Rejection};
use crate::sources::redis::RedisSourceError;
use crate::state::RedisOrigin;
use crate::status::Status;
use crate::upstreams::Upstreams;
use desired::Publisher;
use plan::{Followed, Plan, Rejections, Write};

/// Metric label of the presence source's rejections.
const SOURCE: &str = "redis";

/// Owns the registry and drives the source; sinks subscribe with [`Controller::subscribe`].
pub struct Controller<S: PresenceSource, P: Prober> {
    source: S,
    prober: P,
    config: ControllerConfig,
    /// Metrics, and the room index (a dead process's listings go with its eviction).
    status: Arc<Status>,
    registry: Registry,
    /// The Redis synced with: its run_id and replid, and its origin as the state file says.
    followed: Followed,
    origin: RedisOrigin,
    /// `Restored` until the first full read succeeds.
    provenance: Provenance,
    publisher: Publisher,
    backoff: Duration,
    rejections: Rejections,
    /// Matchmaking weights of the active processes, from their last reported loads, and
    /// the `roomcount` fields unreadable at the previous read (reported once).
    weights: Weights,
    bad_loads: std::collections::BTreeSet<String>,
    /// Address checks and the agent's own resolution of DNS names.
    upstreams: Upstreams,
    liveness: liveness::Liveness,
    drains: drains::Drains,
}

impl<S: PresenceSource, P: Prober> Controller<S, P> {
    /// Builds the controller, starting from the persisted state if there is one (what Envoy
    /// routes to right now), published as version 0.
    pub fn new(source: S, prober: P, config: ControllerConfig, status: Arc<Status>) -> Self {
        let origin = RedisOrigin::from_identity(&source.identity());
        let mut upstreams =
            Upstreams::new(config.upstream_policy.clone(), config.upstream_dns_interval);
        let first = start::initial(&config, &origin, &upstreams, Instant::now());
        let provenance = Provenance::Restored {
            replaces_other_fleet: first.replaces_other_fleet,
        };
        let followed = Followed {
            run_id: first.run_id,
            replid: None,
        };
        let publisher = Publisher::new(desired_state(
            &mut upstreams,
            &first.registry,
            &Weights::new(),
            provenance,
            &origin,
            &followed,
        ));
        Self {
            liveness: liveness::Liveness::new(config.liveness.policy),
            drains: drains::Drains::new(&config),
            source,
            prober,
            status,
            registry: first.registry,
            followed,
            origin,
            provenance,
            publisher,
            backoff: Duration::from_millis(100),
            config,
            rejections: Rejections::default(),
            weights: Weights::new(),
            bad_loads: std::collections::BTreeSet::new(),
            upstreams,
        }
    }

    /// The desired state: the current one at once, then each new version.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DesiredState>> {
        self.publisher.subscribe()
    }

    /// Runs until `shutdown` completes. Source failures are retried forever with backoff.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let failure = tokio::select! {
                () = &mut shutdown => return,
                Err(e) = self.session() => e,
            };
            self.status.metrics.redis_up.store(0, Relaxed);
            self.status
                .metrics
                .redis_session_failures
                .fetch_add(1, Relaxed);
            warn!(error = %failure, retry_in = ?self.backoff, processes = self.registry.len(), "Redis presence unavailable; keeping the last config.");
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.backoff) => {}
            }
            self.backoff = (self.backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One connection: full read, then announcements and periodic re-reads until it fails.
    async fn session(&mut self) -> Result<std::convert::Infallible, RedisSourceError> {
        let mut session = self.source.connect().await?;
        if self.config.balance != Balance::Even {
            // Weights first, so a restarted agent's first write is the config Envoy has.
            self.weights = self.read_weights(&mut session).await?;
        }
        self.full_sync(&mut session).await?;
        info!(
            processes = self.registry.len(),
            "Connected to Redis presence."
        );
        self.status.metrics.redis_up.store(1, Relaxed);
        self.backoff = Duration::from_millis(100);
        let mut resync = tokio::time::interval(self.config.resync_interval);
        resync.tick().await;
        let mut drain_check = tokio::time::interval(self.config.drain_check_interval);
        let mut liveness = tokio::time::interval(self.config.liveness.interval);
        let mut dns = tokio::time::interval(self.upstreams.interval);
        let mut balance = tokio::time::interval(self.config.balance_interval);
        balance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Answers to pings sent on a previous connection cannot be told from silence.
        self.liveness.pings.clear();
        loop {
            tokio::select! {
                message = session.next_message() => {
                    let mut changed = self.on_message(&mut session, message?).await?;
                    // Take a burst at once so it becomes one publication.
                    while let Some(more) = session.try_next_message() {
                        changed |= self.on_message(&mut session, more).await?;
                    }
                    if changed {
                        self.publish();
                    }
                }
                _ = resync.tick() => self.full_sync(&mut session).await?,
                _ = drain_check.tick() => self.check_drains(),
                _ = liveness.tick() => self.liveness_round(&mut session).await?,
                _ = balance.tick(), if self.config.balance != Balance::Even => {
                    self.rebalance(&mut session).await?;
                }
                Some(dead) = self.drains.gone.recv() => self.drop_gone_drains(&dead),
                Some(active) = self.drains.idle.read() => self.drop_idle_drains(&active),
                _ = dns.tick() => self.upstreams.refresh(&self.registry),
                Some(answers) = self.upstreams.answers() => {
                    let (changed, refused) = self.upstreams.record(answers, &self.registry);
                    for rejection in &refused {
                        self.reject(rejection);
                        // Full reads refuse the member too now: not reported again.
                        self.rejections.reported(rejection);
                        self.status.rejected.add(rejection.to_string());
                    }
                    if changed {
                        self.publish();
                    }
                }
                Some((pid, ok)) = self.liveness.results.recv() => {
                    if self.liveness_result(&mut session, &pid, ok).await? {
                        self.publish();
                    }
                }
            }
        }
    }

    /// Applies a plan: its registry changes, then its writes. Returns whether the registry
    /// changed (the caller publishes).
    async fn execute(
        &mut self,
        session: &mut S::Session,
        plan: Plan,
    ) -> Result<bool, RedisSourceError> {
        let (changed, writes) = plan.apply(&mut self.registry, Instant::now());
        for write in writes {
            session.write(&write).await?;
            match write {
                Write::ExpireLease { .. } => {
                    self.status.metrics.leases_expired.fetch_add(1, Relaxed);
                }
                Write::Evict { process_id, .. } => {
                    let status = self.status.clone();
                    tokio::spawn(async move { status.remove_listings_of(&process_id).await });
                }
                Write::Restore { .. } => {}
            }
        }
        Ok(changed)
    }

    fn reject(&self, rejection: &Rejection) {
        self.status.metrics.reject(SOURCE, rejection.reason());
        warn!(
            source = SOURCE,
            reason = rejection.reason(),
            "Skipping input: {rejection}"
        );
    }

    /// Publishes the registry as a desired state (a new version if anything differs), and
    /// updates the registry gauges.
    fn publish(&mut self) {
        let metrics = &self.status.metrics;
        let count = |keep: fn(&crate::model::Entry) -> bool| {
            self.registry.iter().filter(|(_, e)| keep(e)).count() as u64
        };
        metrics.processes.store(count(|e| e.is_active()), Relaxed);
        metrics
            .processes_draining
            .store(count(|e| e.is_draining()), Relaxed);
        metrics
            .processes_dead
            .store(count(|e| !e.is_routable()), Relaxed);
        let next = desired_state(
            &mut self.upstreams,
            &self.registry,
            &self.weights,
            self.provenance,
            &self.origin,
            &self.followed,
        );
        self.publisher.publish(next);
    }
}

/// The desired state of `registry`: what Envoy gets is checked addresses only, DNS names
/// resolved by the agent (new names start resolving now).
fn desired_state(
    upstreams: &mut Upstreams,
    registry: &Registry,
    weights: &Weights,
    provenance: Provenance,
    origin: &RedisOrigin,
    followed: &Followed,
) -> DesiredState {
    DesiredState {
        version: 0,
        provenance,
        routed: upstreams.routed(registry),
        weights: weights.clone(),
        registered: registry.clone(),
        origin: origin.clone(),
        run_id: followed.run_id.clone(),
    }
}

#[cfg(test)]
mod fake_redis;
#[cfg(test)]
mod tests;
