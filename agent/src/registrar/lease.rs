//! The registration in Redis (the I/O edge): register, heartbeat, deregister, with the
//! writes [`crate::layout::Presence`] defines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::{ConfigError, RegistrarConfig};
use crate::layout::Presence;
use crate::redis_call::{bounded, RedisCallError};
use crate::redis_target::{Batch, Commands, RedisTarget};

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
