//! `colyseus-envoy register`: the registrar sidecar.
//!
//! Runs beside a game server that does not register itself (Colyseus 0.17+, custom servers)
//! and registers it in the layout Colyseus 0.16 uses (`colyseus:nodes` plus an `add`
//! announcement), so the sync agent routes it like any other process. Unlike Colyseus, the
//! registration holds a lease (see [`crate::layout`]) refreshed every ttl/3: when the
//! registrar dies without deregistering, the lease runs out and the sync agent removes the
//! member.
//!
//! - The registrar waits until the local server passes its health check, then registers.
//! - Every heartbeat refreshes the lease and re-adds the member, so a Redis that restarted
//!   empty gets the registration back by itself (announced again when it was missing).
//! - `unhealthy_threshold` consecutive failed checks deregister; `healthy_threshold`
//!   consecutive passes register again ([`health::HealthTracker`]).
//! - SIGTERM/SIGINT deregister, then the registrar exits.
//! - Redis failures are retried with backoff, never fatal.
//!
//! Pure parts (configuration checks, member building, the health state machine) are
//! tested without sockets; [`RedisLease`] and [`run`] are the I/O edges.

pub mod health;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routing::ProcessId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::RegisterArgs;
use crate::layout::Presence;
use crate::model::{parse_member, Host, Registration, Rejection};
use crate::redis_call::{bounded, RedisCallError};
use crate::redis_target::{Batch, Commands, RedisTarget};
use health::{Decision, HealthCheck, HealthCheckError, HealthTracker};

/// Shortest lease accepted: heartbeats every second, so a slow Redis round trip or two
/// does not let the lease lapse.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// Longest wait between two attempts when Redis fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long deregistration on shutdown may take before the registrar gives up (the lease
/// then expires by itself).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the registrar's configuration was refused (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--process-id {value:?}: {source}")]
    ProcessId {
        value: String,
        source: routing::IdError,
    },
    #[error("--advertise-host {host:?}: {why}")]
    Host { host: String, why: &'static str },
    #[error("--port 0: the game server's port must be 1-65535")]
    Port,
    #[error("--lease-ttl {ttl:?} is shorter than the minimum {MIN_LEASE_TTL:?}")]
    LeaseTooShort { ttl: Duration },
    #[error("{0}")]
    Redis(String),
    #[error(transparent)]
    HealthCheck(#[from] HealthCheckError),
    #[error("--health-address {0:?} is not host:port")]
    HealthAddress(String),
    #[error("{flag} must be greater than zero")]
    Zero { flag: &'static str },
}

/// Health checking of the local server, validated.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub check: HealthCheck,
    /// `host:port` the check connects to.
    pub address: String,
    pub interval: Duration,
    /// Bound on one check.
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// The registrar's configuration, validated.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// What is registered; its [`Registration::member`] is the member written.
    pub registration: Registration,
    pub redis: RedisTarget,
    pub nodes_key: String,
    pub discovery_channel: String,
    pub lease_ttl: Duration,
    /// Bound on connecting to Redis and on each command.
    pub redis_timeout: Duration,
    pub health: HealthConfig,
}

impl RegistrarConfig {
    /// The `colyseus:nodes` member this registrar writes.
    pub fn member(&self) -> String {
        self.registration.member()
    }

    /// Lease refresh period: a third of the lease, so two heartbeats may fail before it
    /// lapses.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease_ttl / 3
    }
}

impl TryFrom<&RegisterArgs> for RegistrarConfig {
    type Error = ConfigError;

    fn try_from(args: &RegisterArgs) -> Result<Self, ConfigError> {
        let registration = build_registration(&args.process_id, &args.advertise_host, args.port)?;
        if args.lease_ttl < MIN_LEASE_TTL {
            return Err(ConfigError::LeaseTooShort {
                ttl: args.lease_ttl,
            });
        }
        let redis = args
            .redis
            .target(&args.redis_url)
            .map_err(ConfigError::Redis)?;
        let check = HealthCheck::parse(&args.health_check)?;
        let address = match &args.health_address {
            Some(a) => check_address(a)?,
            None => format!("127.0.0.1:{}", args.port),
        };
        for (flag, zero) in [
            ("--health-interval", args.health_interval.is_zero()),
            ("--health-timeout", args.health_timeout.is_zero()),
            ("--redis-timeout", args.redis_timeout.is_zero()),
            ("--healthy-threshold", args.healthy_threshold == 0),
            ("--unhealthy-threshold", args.unhealthy_threshold == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero { flag });
            }
        }
        Ok(Self {
            registration,
            redis,
            nodes_key: args.presence.nodes_key.clone(),
            discovery_channel: args.presence.discovery_channel.clone(),
            lease_ttl: args.lease_ttl,
            redis_timeout: args.redis_timeout,
            health: HealthConfig {
                check,
                address,
                interval: args.health_interval,
                timeout: args.health_timeout,
                healthy_threshold: args.healthy_threshold,
                unhealthy_threshold: args.unhealthy_threshold,
            },
        })
    }
}

/// Builds the registration `{processId}/{host}:{port}` and validates it with the sync
/// agent's own rules ([`parse_member`]), so the registrar never writes a member the agent
/// would reject. A bare IPv6 address is put in brackets; DNS names are lowercased.
///
/// # Errors
/// A bad process id, or a host the proxy could not reach (`undefined`, `0.0.0.0`, empty,
/// with a port, not a DNS name).
pub fn build_registration(
    process_id: &str,
    host: &str,
    port: u16,
) -> Result<Registration, ConfigError> {
    ProcessId::parse(process_id).map_err(|source| ConfigError::ProcessId {
        value: process_id.to_owned(),
        source,
    })?;
    if port == 0 {
        return Err(ConfigError::Port);
    }
    let bad_host = |why| ConfigError::Host {
        host: host.to_owned(),
        why,
    };
    // The agent's message for these speaks of SELF_HOSTNAME, which is not ours.
    if matches!(host.trim(), "" | "undefined" | "null") {
        return Err(bad_host(
            "give the address the proxy reaches the game server at",
        ));
    }
    let bracketed = if host.starts_with('[') {
        host.to_owned()
    } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else if host.contains(':') {
        return Err(bad_host("give the host alone; the port goes in --port"));
    } else {
        host.to_owned()
    };
    if bracketed.contains('/') {
        return Err(bad_host("host is neither an IP address nor a DNS name"));
    }
    match parse_member(&format!("{process_id}/{bracketed}:{port}"), port) {
        // The agent's parser lets `[::]` through; nothing can reach it either.
        Ok(r) if matches!(r.endpoint.host, Host::Ip(ip) if ip.is_unspecified()) => Err(bad_host(
            "unspecified address (0.0.0.0, ::) is not reachable",
        )),
        Ok(registration) => Ok(registration),
        Err(Rejection::BadAddress { why, .. }) => Err(bad_host(why)),
        Err(_) => Err(bad_host("host is neither an IP address nor a DNS name")),
    }
}

/// Accepts `ip:port`, `[v6]:port` or `name:port`.
fn check_address(address: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::HealthAddress(address.to_owned());
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(address.to_owned());
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = matches!(port.parse::<u16>(), Ok(p) if p > 0);
    if host.is_empty() || host.contains(':') || !port_ok {
        return Err(bad());
    }
    Ok(address.to_owned())
}

/// The registration in Redis: register, heartbeat, deregister. Reconnects lazily after
/// any failure.
pub struct RedisLease {
    target: RedisTarget,
    conn: Option<Commands>,
    timeout: Duration,
    member: String,
    presence: Presence,
    ttl_ms: u64,
}

impl RedisLease {
    /// # Errors
    /// None today; kept so a check of the target can be added without changing callers.
    pub fn new(config: &RegistrarConfig) -> Result<Self, ConfigError> {
        let member = config.member();
        Ok(Self {
            target: config.redis.clone(),
            conn: None,
            timeout: config.redis_timeout.min(config.heartbeat_interval()),
            member,
            presence: Presence {
                nodes_key: config.nodes_key.clone(),
                discovery_channel: config.discovery_channel.clone(),
            },
            ttl_ms: u64::try_from(config.lease_ttl.as_millis()).unwrap_or(u64::MAX),
        })
    }

    async fn connection(&mut self) -> Result<Commands, RedisCallError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = self
            .target
            .commands(self.timeout, "connecting to Redis")
            .await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `pipe`, dropping the connection on failure so the next call reconnects.
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        what: &'static str,
        pipe: &Batch,
    ) -> Result<T, RedisCallError> {
        let mut conn = self.connection().await?;
        let result = bounded(self.timeout, what, pipe.query(&mut conn)).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Adds the member to both sets, takes the lease and announces `add`, atomically.
    ///
    /// # Errors
    /// Redis unreachable, failing or too slow.
    pub async fn register(&mut self) -> Result<(), RedisCallError> {
        let write = self.presence.register(&self.member, unix_ms(), self.ttl_ms);
        self.query("registering", &Batch::of(&write)).await
    }

    /// Refreshes the lease and re-adds the member to both sets. Returns whether the member
    /// was missing from the nodes set (Redis restarted empty, or the lease had lapsed and
    /// the agent removed it); it is then announced again.
    ///
    /// # Errors
    /// Redis unreachable, failing or too slow.
    pub async fn heartbeat(&mut self) -> Result<bool, RedisCallError> {
        let write = self
            .presence
            .heartbeat(&self.member, unix_ms(), self.ttl_ms);
        let (added,): (i64,) = self
            .query("refreshing the lease", &Batch::of(&write))
            .await?;
        if added == 0 {
            return Ok(false);
        }
        let publish = Batch::of(&self.presence.announce_add(&self.member));
        self.query::<()>("announcing the restored registration", &publish)
            .await?;
        Ok(true)
    }

    /// Removes the member from both sets, drops the lease and announces `remove`,
    /// atomically (one MULTI, except on a cluster, see [`Batch`]: there a half-done write
    /// is repaired by the next heartbeat or the lease expiry).
    ///
    /// # Errors
    /// Redis unreachable, failing or too slow.
    pub async fn deregister(&mut self) -> Result<(), RedisCallError> {
        let write = self.presence.deregister(&self.member);
        self.query("deregistering", &Batch::of(&write)).await
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Doubling retry delay, from 250 ms up to `max`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const START: Duration = Duration::from_millis(250);

    fn new(max: Duration) -> Self {
        Self {
            next: Self::START.min(max),
            max,
        }
    }

    fn take(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = Self::START.min(self.max);
    }
}

/// Checks the local server forever, sending each result; fast (every 250 ms at most)
/// until the first success, so a server that just started is registered promptly.
async fn check_health(config: HealthConfig, results: mpsc::Sender<bool>) {
    let fast = config.interval.min(Duration::from_millis(250));
    let mut seen_healthy = false;
    loop {
        let started = Instant::now();
        let outcome = health::check(&config.check, &config.address, config.timeout).await;
        if let Err(why) = &outcome {
            debug!(address = %config.address, %why, "Health check failed.");
        }
        seen_healthy |= outcome.is_ok();
        if results.send(outcome.is_ok()).await.is_err() {
            return;
        }
        let period = if seen_healthy { config.interval } else { fast };
        tokio::time::sleep_until(started + period).await;
    }
}

/// Runs the registrar until `shutdown` resolves, then deregisters (bounded by a grace
/// period; the lease covers a failure). Redis failures are logged and retried.
///
/// # Errors
/// Only a Redis URL that cannot be used at all (checked before, by the configuration).
pub async fn run(
    config: RegistrarConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    let mut redis = RedisLease::new(&config)?;
    let member = config.member();
    let heartbeat = config.heartbeat_interval();
    let (tx, mut health_rx) = mpsc::channel(4);
    let health_task = tokio::spawn(check_health(config.health.clone(), tx));
    let mut tracker = HealthTracker::new(
        config.health.healthy_threshold,
        config.health.unhealthy_threshold,
    );
    info!(
        %member,
        redis = %config.redis.identity(),
        health = %config.health.address,
        lease_ttl = ?config.lease_ttl,
        "Registrar starting; waiting for the local server to be healthy."
    );
    // What we want in Redis (None until the first health decision), what we know is there,
    // and whether a write of unknown outcome may have registered it.
    let mut want: Option<bool> = None;
    let mut registered = false;
    let mut maybe_registered = false;
    let mut next_write: Option<Instant> = None;
    let mut backoff = Backoff::new(MAX_BACKOFF.min(heartbeat));
    let mut failures: u32 = 0;
    tokio::pin!(shutdown);
    loop {
        let wake = next_write.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            result = health_rx.recv() => {
                let Some(healthy) = result else { break };
                match tracker.observe(healthy) {
                    Some(Decision::Register) => {
                        if want.is_some() {
                            info!(%member, "Local server healthy again; registering.");
                        }
                        want = Some(true);
                        next_write = Some(Instant::now());
                    }
                    Some(Decision::Deregister) => {
                        warn!(
                            %member,
                            failures = config.health.unhealthy_threshold,
                            "Local server failed its health checks; deregistering."
                        );
                        want = Some(false);
                        next_write = Some(Instant::now());
                    }
                    None => {}
                }
            }
            () = tokio::time::sleep_until(wake), if next_write.is_some() => {
                let outcome = match want {
                    Some(true) if registered => redis.heartbeat().await.map(|restored| {
                        if restored {
                            info!(%member, "Registration was missing from Redis; restored and announced.");
                        } else {
                            debug!(%member, "Lease refreshed.");
                        }
                    }),
                    Some(true) => {
                        maybe_registered = true;
                        redis.register().await.map(|()| {
                            info!(%member, lease_ttl = ?config.lease_ttl, "Registered.");
                        })
                    }
                    _ => redis.deregister().await.map(|()| {
                        info!(%member, "Deregistered.");
                    }),
                };
                match outcome {
                    Ok(()) => {
                        if failures > 0 {
                            info!(%member, failures, "Redis reachable again.");
                        }
                        failures = 0;
                        backoff.reset();
                        registered = want == Some(true);
                        maybe_registered = registered;
                        next_write = registered.then(|| Instant::now() + heartbeat);
                    }
                    Err(e) => {
                        failures += 1;
                        let retry_in = backoff.take();
                        warn!(%member, error = %e, failures, ?retry_in, "Redis write failed; retrying.");
                        next_write = Some(Instant::now() + retry_in);
                    }
                }
            }
        }
    }
    health_task.abort();
    if registered || maybe_registered {
        deregister_on_shutdown(&mut redis, &member).await;
    } else {
        info!(%member, "Stopping; nothing registered.");
    }
    Ok(())
}

async fn deregister_on_shutdown(redis: &mut RedisLease, member: &str) {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let mut backoff = Backoff::new(Duration::from_secs(1));
    loop {
        match redis.deregister().await {
            Ok(()) => {
                info!(%member, "Deregistered on shutdown.");
                return;
            }
            Err(e) if Instant::now() + backoff.next < deadline => {
                warn!(%member, error = %e, "Deregistering on shutdown failed; retrying.");
                tokio::time::sleep(backoff.take()).await;
            }
            Err(e) => {
                warn!(%member, error = %e, "Could not deregister; the lease will expire instead.");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> RegisterArgs {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: RegisterArgs,
        }
        let base = ["x", "--process-id", "abc", "--advertise-host", "10.0.0.5"];
        let base = base.iter().chain(["--port", "2567"].iter());
        Wrap::try_parse_from(base.chain(extra.iter())).unwrap().args
    }

    fn config(extra: &[&str]) -> Result<RegistrarConfig, ConfigError> {
        RegistrarConfig::try_from(&args(extra))
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.member(), "abc/10.0.0.5:2567");
        assert_eq!(c.lease_ttl, Duration::from_secs(15));
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(5));
        assert_eq!(c.health.check, HealthCheck::Tcp);
        assert_eq!(c.health.address, "127.0.0.1:2567");
        assert_eq!(c.health.interval, Duration::from_secs(2));
        assert_eq!(
            (c.health.unhealthy_threshold, c.health.healthy_threshold),
            (3, 2)
        );
        assert_eq!(c.nodes_key, "colyseus:nodes");
        assert_eq!(c.discovery_channel, "colyseus:nodes:discovery");
    }

    #[test]
    fn members_follow_the_agents_rules() {
        let member =
            |pid: &str, host: &str| build_registration(pid, host, 2567).map(|r| r.member());
        assert_eq!(member("abc", "::1").unwrap(), "abc/[::1]:2567");
        assert_eq!(member("abc", "[fe80::1]").unwrap(), "abc/[fe80::1]:2567");
        assert_eq!(
            member("a_b-C", "Game-1.Internal").unwrap(),
            "a_b-C/game-1.internal:2567"
        );
        for host in [
            "undefined",
            "0.0.0.0",
            "",
            "::",
            "[::]",
            "h:80",
            "a b",
            "a/b",
            "[::1",
        ] {
            assert!(
                matches!(member("abc", host), Err(ConfigError::Host { .. })),
                "{host:?}"
            );
        }
        for pid in ["", "a/b", "a.b", &"x".repeat(65)] {
            assert!(
                matches!(member(pid, "h"), Err(ConfigError::ProcessId { .. })),
                "{pid:?}"
            );
        }
        assert!(matches!(
            build_registration("abc", "h", 0),
            Err(ConfigError::Port)
        ));
        // Whatever is accepted parses back to itself, as the sync agent will read it.
        let reg = build_registration("abc", "::1", 9).unwrap();
        assert_eq!(parse_member(&reg.member(), 1), Ok(reg));
    }

    #[test]
    fn misconfigurations_are_refused() {
        let err = |extra: &[&str]| config(extra).unwrap_err().to_string();
        assert!(err(&["--lease-ttl", "2s"]).contains("--lease-ttl"));
        assert!(config(&["--lease-ttl", "3s"]).is_ok());
        assert!(err(&["--redis-url", "not a url"]).contains("--redis-url"));
        assert!(err(&["--health-check", "udp"]).contains("--health-check"));
        assert!(err(&["--health-address", "nope"]).contains("--health-address"));
        assert!(err(&["--unhealthy-threshold", "0"]).contains("--unhealthy-threshold"));
        assert!(err(&["--health-interval", "0s"]).contains("--health-interval"));
        let c = config(&[
            "--health-check",
            "http:/__healthcheck",
            "--health-address",
            "localhost:9000",
        ])
        .unwrap();
        assert_eq!(c.health.address, "localhost:9000");
        assert!(config(&["--health-address", "[::1]:9000"]).is_ok());
    }

    #[test]
    fn logged_redis_hides_passwords() {
        let c = config(&["--redis-url", "redis://:s3cret@10.0.0.2:6379/0"]).unwrap();
        assert_eq!(c.redis.identity(), "redis://10.0.0.2:6379/0");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let delays: Vec<_> = (0..5).map(|_| b.take().as_millis()).collect();
        assert_eq!(delays, vec![250, 500, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.take(), Duration::from_millis(250));
    }
}
