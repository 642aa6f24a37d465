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
//! Layout: [`config`] (settings and member building, pure), [`health`] (the checks and
//! their state machine), [`lease`] (the Redis writes) and the loop here ([`run`]).

pub mod config;
pub mod health;
pub mod lease;

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use config::{build_registration, ConfigError, HealthConfig, RegistrarConfig, MIN_LEASE_TTL};
use health::{Decision, HealthTracker};
pub use lease::RedisLease;

/// Longest wait between two attempts when Redis fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long deregistration on shutdown may take before the registrar gives up (the lease
/// then expires by itself).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let delays: Vec<_> = (0..5).map(|_| b.take().as_millis()).collect();
        assert_eq!(delays, vec![250, 500, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.take(), Duration::from_millis(250));
    }
}
