//! What the controller reads from and probes, behind traits: Redis presence and TCP probes
//! in the daemon; test doubles in the controller's unit tests (`tests.rs`). The e2e suite
//! drives the real ones.

use std::future::Future;

use crate::controller::plan::Write;
use crate::model::{Endpoint, Registration};
use crate::probe::{self, ProbeConfig};
use crate::sources::redis::{
    Message, RedisPresenceSource, RedisSession, RedisSourceError, Snapshot,
};

/// A presence source: registrations, announcements and liveness replies.
pub trait PresenceSource: Send + Sync + 'static {
    type Session: PresenceSession;

    /// Names the source without credentials (recorded in the state file).
    fn identity(&self) -> String;

    /// Opens a session: subscribed first, so no announcement falls before the first read.
    fn connect(&self) -> impl Future<Output = Result<Self::Session, RedisSourceError>> + Send;
}

/// One connection to a presence source. Every error ends it; the controller reconnects and
/// reads everything again.
pub trait PresenceSession: Send {
    /// The source's identity (`run_id`, lineage) and the whole registration set.
    fn snapshot(&mut self) -> impl Future<Output = Result<Snapshot, RedisSourceError>> + Send;

    /// The `roomcount` hash (processId -> `"{rooms},{ccu}"`), raw.
    fn roomcount(
        &mut self,
    ) -> impl Future<Output = Result<Vec<(String, String)>, RedisSourceError>> + Send;

    /// The next announcement or liveness reply.
    fn next_message(&mut self) -> impl Future<Output = Result<Message, RedisSourceError>> + Send;

    /// The next message if one is already buffered.
    fn try_next_message(&mut self) -> Option<Message>;

    /// Sends a liveness ping per `(processId, requestId)`; returns how many receivers
    /// each had (0: nobody listens on that process's channel).
    fn ping(
        &mut self,
        pings: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<u64>, RedisSourceError>> + Send;

    /// Members whose registrar lease expired.
    fn expired_leases(
        &mut self,
    ) -> impl Future<Output = Result<Vec<String>, RedisSourceError>> + Send;

    /// Executes one write of a plan: the only way the controller changes the source.
    fn write(&mut self, write: &Write)
        -> impl Future<Output = Result<(), RedisSourceError>> + Send;
}

/// Tells whether processes accept connections.
pub trait Prober: Clone + Send + Sync + 'static {
    /// Splits `regs` into (alive, dead), trying each as hard as configured.
    fn partition(
        &self,
        regs: Vec<Registration>,
    ) -> impl Future<Output = (Vec<Registration>, Vec<Registration>)> + Send;

    /// One attempt, for a liveness round.
    fn alive_once(&self, endpoint: Endpoint) -> impl Future<Output = bool> + Send;
}

// === impl for Redis ===

impl PresenceSource for RedisPresenceSource {
    type Session = RedisSession;

    fn identity(&self) -> String {
        self.config().target.identity()
    }

    async fn connect(&self) -> Result<RedisSession, RedisSourceError> {
        RedisPresenceSource::connect(self).await
    }
}

impl PresenceSession for RedisSession {
    async fn snapshot(&mut self) -> Result<Snapshot, RedisSourceError> {
        RedisSession::snapshot(self).await
    }

    async fn roomcount(&mut self) -> Result<Vec<(String, String)>, RedisSourceError> {
        RedisSession::roomcount(self).await
    }

    async fn next_message(&mut self) -> Result<Message, RedisSourceError> {
        RedisSession::next_message(self).await
    }

    fn try_next_message(&mut self) -> Option<Message> {
        RedisSession::try_next_message(self)
    }

    async fn ping(&mut self, pings: &[(String, String)]) -> Result<Vec<u64>, RedisSourceError> {
        RedisSession::ping(self, pings).await
    }

    async fn expired_leases(&mut self) -> Result<Vec<String>, RedisSourceError> {
        RedisSession::expired_leases(self).await
    }

    async fn write(&mut self, write: &Write) -> Result<(), RedisSourceError> {
        match write {
            Write::Restore { members } => self.restore(members).await,
            Write::ExpireLease { member } => self.expire_lease(member).await,
            Write::Evict { member, process_id } => self.evict(member, process_id).await,
        }
    }
}

/// TCP connects, as [`probe`] makes them.
#[derive(Debug, Clone, Copy)]
pub struct TcpProber(pub ProbeConfig);

impl Prober for TcpProber {
    async fn partition(&self, regs: Vec<Registration>) -> (Vec<Registration>, Vec<Registration>) {
        probe::partition(regs, self.0).await
    }

    async fn alive_once(&self, endpoint: Endpoint) -> bool {
        let once = ProbeConfig {
            attempts: 1,
            ..self.0
        };
        probe::tcp_alive(&endpoint, once).await
    }
}
