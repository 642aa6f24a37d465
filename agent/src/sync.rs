//! The sync loop: Redis presence in, model updated, Envoy config out.
//!
//! Rules that keep routing safe:
//! - Nothing is written until a full read of Redis succeeded; when Redis is unreachable the
//!   last good config stays (Envoy keeps it; the agent never writes an empty config because
//!   a source failed).
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
//!   when the process stops accepting connections (probed every `drain_check_interval`) or
//!   after `max_drain`. Open WebSockets are never cut by a config change either way.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::balance::{self, Balance, Weights};
use crate::idle_drains::IdleDrains;
use crate::liveness::{self, Tracker, Verdict};
use crate::model::{parse_announcement, Announcement, Registration, Registry, Rejection};
use crate::probe::{self, ProbeConfig};
use crate::sinks::envoy_files::EnvoyFilesSink;
use crate::sources::redis::{
    Message, RedisPresenceSource, RedisSession, RedisSourceError, IPC_PREFIX,
};
use crate::sources::redis_lineage::{self, Continuity};
use crate::state::{self, Restore, SyncedState};
use crate::status::Status;
use crate::upstreams::Upstreams;

const SOURCE: &str = "redis";

/// Behaviour of the sync loop.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Port assumed for members written without one.
    pub default_port: u16,
    /// Period of the full re-read while connected.
    pub resync_interval: Duration,
    /// Write registrations that Redis lost (restart) back into Redis.
    pub restore_lost_registrations: bool,
    pub probe: ProbeConfig,
    /// Where the last synced state is kept across agent restarts, if anywhere.
    pub state_file: Option<PathBuf>,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Longest time an unregistered process keeps its cluster.
    pub max_drain: Duration,
    /// How often draining processes are probed (and expired).
    pub drain_check_interval: Duration,
    pub liveness: LivenessConfig,
    /// What the all-processes cluster's weights follow.
    pub balance: Balance,
    /// How often the loads are read (unless `balance` is even).
    pub balance_interval: Duration,
    /// Which addresses registrations may point Envoy at.
    pub upstream_policy: crate::upstream_policy::UpstreamPolicy,
    /// How often registered DNS names are resolved again.
    pub upstream_dns_interval: Duration,
    /// Envoy's admin, read to end the drain of a process that carries no request.
    pub envoy_admin: Option<crate::envoy_admin::AdminEndpoint>,
    /// How long a draining process must carry no request before its cluster goes.
    pub drain_idle: Duration,
    /// Cluster names, to find each process in Envoy's stats.
    pub cluster_names: routing::ClusterNames,
}

/// How registered processes are watched for death.
#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    pub mode: LivenessMode,
    /// Period of the probes; an IPC ping unanswered by the next round failed.
    pub interval: Duration,
    pub policy: liveness::Policy,
    /// Also remove a dead process from Redis presence, as Colyseus's own cleanup does.
    pub evict_from_presence: bool,
}

/// The probe used for liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LivenessMode {
    /// Colyseus's IPC health check over Redis (sees a hung process too); a TCP connect for
    /// processes that do not listen on their IPC channel.
    IpcOrTcp,
    /// A TCP connect to the process only.
    Tcp,
    /// No liveness probing: a registered process is always routed.
    Off,
}

/// Owns the model and drives the source and the sink.
pub struct Syncer {
    source: RedisPresenceSource,
    sink: EnvoyFilesSink,
    config: SyncConfig,
    status: Arc<Status>,
    registry: Registry,
    /// `run_id` of the Redis the registry was last synced with.
    run_id: Option<String>,
    /// Its `master_replid`, to tell a failover from a restart (memory only).
    replid: Option<String>,
    /// The Redis followed, as recorded in the state file.
    origin: state::RedisOrigin,
    /// The state file was another Redis's: Envoy's config is that fleet's, so it is
    /// replaced at start instead of kept until this Redis answers.
    clear_config: bool,
    /// Last state saved to `state_file`, to skip identical writes.
    saved: Option<SyncedState>,
    backoff: Duration,
    /// Draining processes found dead by a background probe.
    dead_tx: mpsc::UnboundedSender<Vec<Registration>>,
    dead_rx: mpsc::UnboundedReceiver<Vec<Registration>>,
    probe_in_flight: bool,
    /// Liveness: probe history, pings awaiting an answer, results of TCP probes.
    tracker: Tracker,
    pending_pings: std::collections::HashMap<String, routing::ProcessId>,
    ping_prefix: String,
    ping_seq: u64,
    alive_tx: mpsc::UnboundedSender<(routing::ProcessId, bool)>,
    alive_rx: mpsc::UnboundedReceiver<(routing::ProcessId, bool)>,
    /// Rejections seen in the previous full read: a bad member that stays in Redis is
    /// logged and counted once, not on every re-read.
    known_rejections: BTreeSet<String>,
    /// Matchmaking weights of the active processes, from their last reported loads.
    weights: Weights,
    /// `roomcount` fields that could not be read in the previous read (reported once).
    bad_loads: BTreeSet<String>,
    /// Address checks and the agent's own resolution of DNS names.
    upstreams: Upstreams,
    /// Drains ended once Envoy shows no request open to the process.
    idle_drains: IdleDrains,
    /// The xDS server's sink, when `--xds-listen` is given (fed by `publish`).
    xds: Option<crate::sinks::xds::XdsSink>,
}

impl Syncer {
    /// Builds the loop, starting from the persisted state if there is one, which is what
    /// Envoy routes to right now.
    pub fn new(
        source: RedisPresenceSource,
        sink: EnvoyFilesSink,
        config: SyncConfig,
        status: Arc<Status>,
    ) -> Self {
        let persisted = config
            .state_file
            .as_deref()
            .map(state::load)
            .transpose()
            .unwrap_or_else(|e| {
                warn!(error = %e, "Ignoring the agent state file; a Redis restart before the first sync may lose registrations.");
                None
            })
            .unwrap_or_default();
        let origin = state::RedisOrigin::from_identity(&source.config().target.identity());
        let mut clear_config = false;
        let persisted = match state::restore(&persisted, &origin) {
            Restore::Yes => persisted,
            Restore::OtherRedis(from) => {
                warn!(state_from = %from, redis = %origin, members = persisted.members.len(), "The agent state file was written from another Redis; not restoring it, and unrouting that fleet until this Redis answers.");
                clear_config = true;
                SyncedState::default()
            }
            Restore::UnknownOrigin => {
                warn!(redis = %origin, members = persisted.members.len(), "The agent state file does not say which Redis it came from (written by an older agent); not restoring it.");
                SyncedState::default()
            }
        };
        let now = Instant::now();
        let upstreams =
            Upstreams::new(config.upstream_policy.clone(), config.upstream_dns_interval);
        // An address refused now stays out, whatever an older agent saved.
        let admitted = |m: &&String| {
            crate::model::parse_member(m, config.default_port)
                .is_ok_and(|r| upstreams.admit(&r).is_ok())
        };
        let (mut registry, _) = Registry::default().from_members(
            persisted
                .members
                .iter()
                .filter(admitted)
                .map(String::as_str),
            config.default_port,
            now,
        );
        // Drains in progress when the agent stopped go on (from now: the start is not kept).
        let (draining, _) = Registry::default().from_members(
            persisted
                .draining
                .iter()
                .filter(admitted)
                .map(String::as_str),
            config.default_port,
            now,
        );
        for reg in draining.active() {
            let _ = registry.apply(Announcement::Add(reg.clone()), now);
            let _ = registry.apply(Announcement::Remove(reg), now);
        }
        let idle_drains = IdleDrains::new(
            config.envoy_admin.clone(),
            config.cluster_names.clone(),
            config.drain_idle,
        );
        let (dead_tx, dead_rx) = mpsc::unbounded_channel();
        let (alive_tx, alive_rx) = mpsc::unbounded_channel();
        // Unique per agent run, so several agents on one Redis ignore each other's answers.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ u128::from(std::process::id());
        Self {
            tracker: Tracker::new(config.liveness.policy),
            pending_pings: std::collections::HashMap::new(),
            ping_prefix: format!("{IPC_PREFIX}{:x}-", nonce & 0xffff_ffff_ffff),
            ping_seq: 0,
            alive_tx,
            alive_rx,
            source,
            sink,
            status,
            registry,
            run_id: persisted.redis_run_id.clone(),
            replid: None,
            origin,
            clear_config,
            saved: Some(persisted),
            backoff: Duration::from_millis(100),
            config,
            dead_tx,
            dead_rx,
            probe_in_flight: false,
            known_rejections: BTreeSet::new(),
            weights: Weights::new(),
            bad_loads: BTreeSet::new(),
            upstreams,
            idle_drains,
            xds: None,
        }
    }

    /// Also serves every published state over xDS (after the first Redis read only, so a
    /// fresh agent never hands a failing-over Envoy an empty fleet).
    pub fn with_xds(mut self, xds: crate::sinks::xds::XdsSink) -> Self {
        self.xds = Some(xds);
        self
    }

    /// Runs until `shutdown` completes. Redis failures are retried forever with backoff.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        // Envoy cannot start without the file. Where there is none yet, nothing can be lost
        // by writing what the agent knows (possibly no process) before Redis answers; nor
        // where the file routes another Redis's fleet (the state file said so).
        if !self.sink.cds_path().exists() || self.clear_config {
            let routed = self.upstreams.routed(&self.registry);
            match self.sink.apply(&routed, &self.weights) {
                Ok(_) => info!(
                    processes = self.registry.len(),
                    "Wrote the initial Envoy config."
                ),
                Err(e) => error!(error = %e, "Cannot write the initial Envoy config."),
            }
        }
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
        self.pending_pings.clear();
        loop {
            tokio::select! {
                message = session.next_message() => {
                    let mut changed = self.on_message(&mut session, message?).await?;
                    // Take a burst at once so it becomes one config write.
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
                Some(dead) = self.dead_rx.recv() => self.drop_dead_drains(dead),
                Some(active) = self.idle_drains.read() => self.drop_idle_drains(&active),
                _ = dns.tick() => self.upstreams.refresh(&self.registry),
                Some(answers) = self.upstreams.answers() => {
                    let (changed, refused) = self.upstreams.record(answers, &self.registry);
                    for rejection in &refused {
                        self.reject(rejection);
                    }
                    if changed {
                        self.publish();
                    }
                }
                Some((pid, ok)) = self.alive_rx.recv() => {
                    if self.liveness_result(&mut session, &pid, ok).await? {
                        self.publish();
                    }
                }
            }
        }
    }

    /// Handles one pub/sub message; returns whether the registry changed.
    async fn on_message(
        &mut self,
        session: &mut RedisSession,
        message: Message,
    ) -> Result<bool, RedisSourceError> {
        match message {
            Message::Announcement(payload) => Ok(self.announce(&payload)),
            Message::IpcReply { request_id } => match self.pending_pings.remove(&request_id) {
                Some(pid) => self.liveness_result(session, &pid, true).await,
                // A late answer (e.g. a process resumed after a stall), or another agent's.
                None => Ok(false),
            },
        }
    }

    /// Unregisters members whose registrar lease expired, counts unanswered pings of the
    /// previous round as failures, and probes every registered process again.
    async fn liveness_round(&mut self, session: &mut RedisSession) -> Result<(), RedisSourceError> {
        for member in session.expired_leases().await? {
            warn!(%member, "Registrar lease expired (sidecar gone without deregistering); unregistering.");
            session.expire_lease(&member).await?;
            self.status.metrics.leases_expired.fetch_add(1, Relaxed);
        }
        let mode = self.config.liveness.mode;
        if mode == LivenessMode::Off {
            return Ok(());
        }
        let mut changed = false;
        let unanswered: Vec<routing::ProcessId> =
            self.pending_pings.drain().map(|(_, pid)| pid).collect();
        for pid in unanswered {
            changed |= self.liveness_result(session, &pid, false).await?;
        }
        let registered = self.registry.registered();
        self.tracker
            .retain(|p| registered.iter().any(|r| r.process_id == *p));
        let mut tcp = Vec::new();
        if mode == LivenessMode::IpcOrTcp && !registered.is_empty() {
            let pings: Vec<(String, String)> = registered
                .iter()
                .map(|r| {
                    self.ping_seq += 1;
                    let id = format!("{}{}", self.ping_prefix, self.ping_seq);
                    (r.process_id.to_string(), id)
                })
                .collect();
            let receivers = session.ping(&pings).await?;
            for ((reg, (_, id)), n) in registered.iter().zip(pings).zip(receivers) {
                if n > 0 {
                    self.pending_pings.insert(id, reg.process_id.clone());
                } else {
                    tcp.push(reg.clone());
                }
            }
        } else {
            tcp = registered;
        }
        for reg in tcp {
            let (tx, probe) = (self.alive_tx.clone(), self.config.probe);
            let once = ProbeConfig {
                attempts: 1,
                ..probe
            };
            tokio::spawn(async move {
                let ok = probe::tcp_alive(&reg.endpoint, once).await;
                let _ = tx.send((reg.process_id, ok));
            });
        }
        if changed {
            self.publish();
        }
        Ok(())
    }

    /// Applies one liveness probe result; returns whether the registry changed.
    async fn liveness_result(
        &mut self,
        session: &mut RedisSession,
        pid: &routing::ProcessId,
        ok: bool,
    ) -> Result<bool, RedisSourceError> {
        let Some(entry) = self.registry.get(pid) else {
            return Ok(false);
        };
        if entry.is_draining() {
            return Ok(false);
        }
        let member = Registration {
            process_id: pid.clone(),
            endpoint: entry.endpoint.clone(),
        }
        .member();
        let now = Instant::now();
        match self.tracker.record(pid, ok, now) {
            Verdict::Died => {
                self.registry.mark_dead(pid, now);
                self.status.metrics.processes_died.fetch_add(1, Relaxed);
                warn!(process_id = %pid, failures = self.tracker.failures(pid), "Process is not answering; unrouting it until it does.");
                if self.config.liveness.evict_from_presence {
                    info!(process_id = %pid, "Evicting the dead process from Redis presence.");
                    session.evict(&member, pid.as_str()).await?;
                    let (status, pid) = (self.status.clone(), pid.to_string());
                    tokio::spawn(async move { status.remove_listings_of(&pid).await });
                }
                Ok(true)
            }
            Verdict::Recovered => {
                self.registry.mark_alive(pid);
                self.status
                    .metrics
                    .processes_recovered
                    .fetch_add(1, Relaxed);
                info!(process_id = %pid, "Process answers again; routing it.");
                Ok(true)
            }
            Verdict::Unchanged => {
                if !ok {
                    debug!(process_id = %pid, failures = self.tracker.failures(pid), "Liveness probe failed.");
                }
                Ok(false)
            }
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
                // The member is in the set too: the next full read must not count it again.
                self.known_rejections.insert(rejection.to_string());
                false
            }
        }
    }

    /// Reads the whole set and makes the registry match it (see the module rules).
    async fn full_sync(&mut self, session: &mut RedisSession) -> Result<(), RedisSourceError> {
        let snapshot = session.snapshot().await?;
        self.status.metrics.redis_snapshots.fetch_add(1, Relaxed);
        let mut members = Vec::with_capacity(snapshot.members.len());
        let mut refused = Vec::new();
        for raw in &snapshot.members {
            match std::str::from_utf8(raw) {
                Ok(m) => match crate::model::parse_member(m, self.config.default_port)
                    .map(|r| self.upstreams.admit(&r))
                {
                    Ok(Err(rejection)) => refused.push(rejection),
                    _ => members.push(m),
                },
                Err(_) => self.reject(&Rejection::BadMember {
                    member: String::from_utf8_lossy(raw).into_owned(),
                }),
            }
        }
        let (mut fresh, outcome) =
            self.registry
                .from_members(members, self.config.default_port, Instant::now());
        let mut rejections = BTreeSet::new();
        for rejection in refused.iter().chain(&outcome.rejected) {
            let key = rejection.to_string();
            if !self.known_rejections.contains(&key) {
                self.reject(rejection);
            }
            rejections.insert(key);
        }
        self.known_rejections = rejections;
        let continuity = redis_lineage::continuity(
            self.run_id.as_deref(),
            self.replid.as_deref(),
            &snapshot.run_id,
            &snapshot.lineage,
        );
        if continuity == Continuity::Failover {
            self.status.metrics.redis_failovers.fetch_add(1, Relaxed);
            info!(run_id = %snapshot.run_id, missing = outcome.vanished.len(), "Redis failed over (same replication history); the registration set carries on.");
        }
        let restarted = continuity != Continuity::Same;
        self.run_id = Some(snapshot.run_id.clone());
        self.replid.clone_from(&snapshot.lineage.replid);
        if !restarted || outcome.vanished.is_empty() {
            for reg in &outcome.vanished {
                info!(process_id = %reg.process_id, address = %reg.endpoint, "Process left the registration set; draining it.");
            }
            self.registry = fresh;
            self.publish();
            return Ok(());
        }
        // A lost process whose address a newly registered process now holds was replaced
        // (its port reused): a probe would reach the newcomer, so do not restore it.
        let (replaced, lost): (Vec<_>, Vec<_>) = outcome
            .vanished
            .into_iter()
            .partition(|r| fresh.active_at(&r.endpoint).is_some());
        for reg in &replaced {
            info!(process_id = %reg.process_id, address = %reg.endpoint, "Lost process's address now belongs to another registration; not restoring it.");
            fresh.remove(&reg.process_id);
        }
        if lost.is_empty() {
            self.registry = fresh;
            self.publish();
            return Ok(());
        }
        if continuity == Continuity::Restarted {
            self.status.metrics.redis_restarts.fetch_add(1, Relaxed);
        }
        warn!(run_id = %snapshot.run_id, ?continuity, in_redis = fresh.active_len(), lost = lost.len(), "Redis restarted or failed over (new run_id) and lost registrations.");
        if !self.config.restore_lost_registrations {
            error!(
                lost = lost.len(),
                "Restoring is disabled: the lost processes drain."
            );
            self.registry = fresh;
            self.publish();
            return Ok(());
        }
        // Keep the lost processes fully routed while they are probed.
        fresh.restore(lost.clone());
        self.registry = fresh;
        self.publish();
        let (alive, dead) = probe::partition(lost, self.config.probe).await;
        for reg in &dead {
            warn!(process_id = %reg.process_id, address = %reg.endpoint, "Process lost by Redis does not answer; unrouting it.");
            self.registry.remove(&reg.process_id);
        }
        let metrics = &self.status.metrics;
        metrics
            .registrations_dropped_dead
            .fetch_add(dead.len() as u64, Relaxed);
        metrics
            .registrations_restored
            .fetch_add(alive.len() as u64, Relaxed);
        if !dead.is_empty() {
            self.publish();
        }
        if !alive.is_empty() {
            let members: Vec<String> = alive.iter().map(Registration::member).collect();
            info!(
                restored = members.len(),
                "Writing registrations lost by Redis back."
            );
            session.restore(&members).await?;
        }
        Ok(())
    }

    /// Expires overdue drains and starts a background probe of the others.
    fn check_drains(&mut self) {
        let expired = self
            .registry
            .expire_drained(Instant::now(), self.config.max_drain);
        for reg in &expired {
            info!(process_id = %reg.process_id, "Drain period over; removing the process cluster.");
        }
        if !expired.is_empty() {
            self.publish();
        }
        let draining = self.registry.draining();
        self.idle_drains.check(!draining.is_empty());
        if draining.is_empty() || self.probe_in_flight {
            return;
        }
        self.probe_in_flight = true;
        let (probe, tx) = (self.config.probe, self.dead_tx.clone());
        tokio::spawn(async move {
            let (_, dead) = probe::partition(draining, probe).await;
            let _ = tx.send(dead);
        });
    }

    /// Removes draining processes that stopped accepting connections, unless they were
    /// registered again meanwhile.
    fn drop_dead_drains(&mut self, dead: Vec<Registration>) {
        self.probe_in_flight = false;
        let mut changed = false;
        for reg in dead {
            let still_draining = self
                .registry
                .get(&reg.process_id)
                .is_some_and(|e| e.is_draining() && e.endpoint == reg.endpoint);
            if still_draining {
                info!(process_id = %reg.process_id, "Draining process is gone; removing its cluster.");
                self.registry.remove(&reg.process_id);
                changed = true;
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Removes draining processes that carried no request for `drain_idle`.
    fn drop_idle_drains(&mut self, active: &std::collections::BTreeMap<String, u64>) {
        let idle = self
            .idle_drains
            .idle(&self.registry.draining(), active, Instant::now());
        for reg in &idle {
            info!(process_id = %reg.process_id, "Draining process carries no connection; removing its cluster.");
            self.registry.remove(&reg.process_id);
        }
        if !idle.is_empty() {
            self.publish();
        }
    }

    fn reject(&self, rejection: &Rejection) {
        self.status.metrics.reject(SOURCE, rejection.reason());
        warn!(
            source = SOURCE,
            reason = rejection.reason(),
            "Skipping input: {rejection}"
        );
    }

    /// Reads the processes' loads and reweights matchmaking; writes only if a weight changed.
    async fn rebalance(&mut self, session: &mut RedisSession) -> Result<(), RedisSourceError> {
        let weights = self.read_weights(session).await?;
        if weights != self.weights {
            debug!(?weights, "Matchmaking weights changed.");
            self.weights = weights;
            self.publish();
        }
        Ok(())
    }

    /// The active processes' weights from the loads they report now.
    async fn read_weights(
        &mut self,
        session: &mut RedisSession,
    ) -> Result<Weights, RedisSourceError> {
        let (loads, bad) = balance::loads_from_roomcount(session.roomcount().await?);
        let bad: BTreeSet<String> = bad.into_iter().collect();
        for field in bad.difference(&self.bad_loads) {
            self.status.metrics.reject(SOURCE, "bad_roomcount");
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

    /// Writes the registry to the sink and the state file, and exposes it on the API.
    fn publish(&mut self) {
        let metrics = &self.status.metrics;
        // What Envoy gets: checked addresses only, DNS names resolved by the agent.
        let routed = self.upstreams.routed(&self.registry);
        if let Some(xds) = self.xds.as_mut() {
            xds.apply(&routed, &self.weights);
        }
        match self.sink.apply(&routed, &self.weights) {
            Ok(true) => {
                metrics.config_writes.fetch_add(1, Relaxed);
                debug!(processes = self.registry.len(), "Wrote Envoy config.");
            }
            Ok(false) => {}
            Err(e) => {
                metrics.config_write_failures.fetch_add(1, Relaxed);
                error!(error = %e, "Cannot write Envoy config; Envoy keeps the previous one.");
                return;
            }
        }
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
        self.status.set_registry(&routed, &self.weights);
        if let Some(path) = &self.config.state_file {
            let members = |regs: Vec<Registration>| regs.iter().map(Registration::member).collect();
            let state = SyncedState {
                redis: Some(self.origin.clone()),
                redis_run_id: self.run_id.clone(),
                members: members(self.registry.active()),
                draining: members(self.registry.draining()),
            };
            if self.saved.as_ref() != Some(&state) {
                match state::save(path, &state) {
                    Ok(()) => self.saved = Some(state),
                    Err(e) => warn!(error = %e, "Cannot save the agent state file."),
                }
            }
        }
    }
}
