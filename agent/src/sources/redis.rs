//! Colyseus's Redis presence: the set `colyseus:nodes` and the channel
//! `colyseus:nodes:discovery`.
//!
//! A [`RedisSession`] is one connection's worth of reading: subscribe first, then read the
//! whole set (so no announcement falls between the two), then follow announcements until
//! the connection fails. The caller opens a new session after every failure and re-reads
//! everything, since pub/sub messages sent while disconnected are lost for good.

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;

use crate::layout::{self, Presence};
use crate::redis_call::{bounded, RedisCallError};
use crate::redis_target::{Batch, Commands, RedisTarget};
use crate::sources::redis_lineage::Lineage;

pub use crate::layout::IPC_PREFIX;

/// What arrives on the pub/sub connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A payload of the discovery channel.
    Announcement(Vec<u8>),
    /// A process answered the liveness ping with this request id.
    IpcReply { request_id: String },
}

/// Key names and timeouts of the presence layout.
#[derive(Debug, Clone)]
pub struct RedisPresenceConfig {
    pub target: RedisTarget,
    pub nodes_key: String,
    pub discovery_channel: String,
    /// Bound on connecting and on each command, so a dead server is noticed.
    pub timeout: Duration,
}

/// Why a Redis session failed. Every error ends the session; the caller reconnects.
#[derive(Debug, thiserror::Error)]
pub enum RedisSourceError {
    #[error(transparent)]
    Call(#[from] RedisCallError),
    #[error("the pub/sub connection closed")]
    Closed,
    #[error("INFO has no run_id")]
    NoRunId,
    #[error("unexpected reply to {what}: {source}")]
    Reply {
        what: &'static str,
        source: redis::RedisError,
    },
}

/// A full read of the registrations, with the identity of the Redis server it came from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Redis's `run_id`: changes when the server restarts, which is how a restart that lost
    /// the data (no persistence) is told apart from registrations really removed.
    pub run_id: String,
    /// The server's replication history, which tells a failover (same data) from a restart.
    pub lineage: Lineage,
    /// Raw members, not yet validated.
    pub members: Vec<Vec<u8>>,
}

/// Connects to Redis presence.
#[derive(Debug, Clone)]
pub struct RedisPresenceSource {
    config: RedisPresenceConfig,
}

impl RedisPresenceSource {
    pub fn new(config: RedisPresenceConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &RedisPresenceConfig {
        &self.config
    }

    /// Opens a session: a subscribed pub/sub connection and a command connection.
    ///
    /// # Errors
    /// Connection or subscription failure or timeout.
    pub async fn connect(&self) -> Result<RedisSession, RedisSourceError> {
        let timeout = self.config.timeout;
        let (mut pubsub, commands) = self.config.target.session(timeout).await?;
        bounded(
            timeout,
            "subscribing to the discovery channel",
            pubsub.subscribe(&self.config.discovery_channel),
        )
        .await?;
        bounded(
            timeout,
            "subscribing to liveness replies",
            pubsub.psubscribe(layout::IPC_REPLY_PATTERN),
        )
        .await?;
        let nodes_slot = match &commands {
            Commands::Cluster(_) => Some(
                bounded(
                    timeout,
                    "finding the slot of the registration set",
                    redis::cmd("CLUSTER")
                        .arg("KEYSLOT")
                        .arg(&self.config.nodes_key)
                        .query_async::<u16>(&mut commands.clone()),
                )
                .await?,
            ),
            Commands::Node(_) => None,
        };
        Ok(RedisSession {
            messages: pubsub.into_on_message(),
            commands,
            nodes_slot,
            config: self.config.clone(),
        })
    }
}

/// One live connection to Redis presence.
pub struct RedisSession {
    messages: PubSubStream,
    commands: Commands,
    /// On a cluster, the slot of the registration set: its master's INFO is the one that
    /// says whether the set was lost.
    nodes_slot: Option<u16>,
    config: RedisPresenceConfig,
}

impl RedisSession {
    /// Reads the server's identity and the whole registration set.
    ///
    /// # Errors
    /// Command failure or timeout.
    pub async fn snapshot(&mut self) -> Result<Snapshot, RedisSourceError> {
        let timeout = self.config.timeout;
        // `INFO` without a section: `server` (run_id) and `replication` (replids), on
        // every Redis version.
        let (info, members): (String, Vec<Vec<u8>>) = match (&mut self.commands, self.nodes_slot) {
            (Commands::Cluster(conn), Some(slot)) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let members = bounded(
                    timeout,
                    "reading the registration set",
                    redis::cmd("SMEMBERS")
                        .arg(&self.config.nodes_key)
                        .query_async(&mut *conn),
                )
                .await?;
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                let info = bounded(
                    timeout,
                    "reading INFO of the registration set's master",
                    conn.route_command(&redis::cmd("INFO"), route),
                )
                .await?;
                let info =
                    redis::from_redis_value(&info).map_err(|source| RedisSourceError::Reply {
                        what: "INFO",
                        source,
                    })?;
                (info, members)
            }
            (commands, _) => {
                bounded(
                    timeout,
                    "reading INFO and the registration set",
                    redis::pipe()
                        .cmd("INFO")
                        .cmd("SMEMBERS")
                        .arg(&self.config.nodes_key)
                        .query_async(commands),
                )
                .await?
            }
        };
        let run_id = parse_run_id(&info).ok_or(RedisSourceError::NoRunId)?;
        Ok(Snapshot {
            run_id,
            lineage: Lineage::from_info(&info),
            members,
        })
    }

    /// The `roomcount` hash (processId -> `"{rooms},{ccu}"`), raw.
    ///
    /// # Errors
    /// Command failure or timeout.
    pub async fn roomcount(&mut self) -> Result<Vec<(String, String)>, RedisSourceError> {
        Ok(bounded(
            self.config.timeout,
            "reading roomcount",
            redis::cmd("HGETALL")
                .arg(layout::ROOM_COUNTS)
                .query_async(&mut self.commands),
        )
        .await?)
    }

    /// Waits for the next pub/sub message.
    ///
    /// # Errors
    /// [`RedisSourceError::Closed`] when the connection ends.
    pub async fn next_message(&mut self) -> Result<Message, RedisSourceError> {
        match self.messages.next().await {
            Some(msg) => Ok(convert(&msg)),
            None => Err(RedisSourceError::Closed),
        }
    }

    /// The next message if one is already buffered, so bursts become one config write.
    pub fn try_next_message(&mut self) -> Option<Message> {
        use futures_util::FutureExt;
        self.messages
            .next()
            .now_or_never()
            .flatten()
            .map(|msg| convert(&msg))
    }

    /// Sends Colyseus's IPC health check (`["healthcheck", id, []]` on `p:{processId}`,
    /// Colyseus 0.15.16+) for each `(processId, requestId)`, in one round trip. Returns, for
    /// each, how many subscribers received it: 0 means
    /// no process listens on that channel (gone, not connected to this Redis, or a server
    /// that does not speak Colyseus IPC).
    ///
    /// # Errors
    /// Command failure or timeout.
    pub async fn ping(&mut self, pings: &[(String, String)]) -> Result<Vec<u64>, RedisSourceError> {
        let pipe = Batch::of(&layout::pings(pings));
        let timeout = self.config.timeout;
        let published: Vec<u64> = bounded(
            timeout,
            "publishing liveness pings",
            pipe.query(&mut self.commands),
        )
        .await?;
        if !self.config.target.is_cluster() || pings.is_empty() {
            return Ok(published);
        }
        // On a cluster PUBLISH counts only the subscribers of the node that took it, and a
        // process may subscribe on any node: count them on every node (the cluster client
        // sends PUBSUB NUMSUB to all nodes and sums the answers).
        let mut numsub = redis::cmd("PUBSUB");
        numsub.arg("NUMSUB");
        for (process_id, _) in pings {
            numsub.arg(layout::process_channel(process_id));
        }
        let counts: std::collections::HashMap<String, u64> = bounded(
            timeout,
            "counting liveness subscribers on every node",
            numsub.query_async(&mut self.commands),
        )
        .await?;
        Ok(pings
            .iter()
            .map(|(pid, _)| {
                counts
                    .get(&layout::process_channel(pid))
                    .copied()
                    .unwrap_or(0)
            })
            .collect())
    }

    /// Members registered by a registrar sidecar (`colyseus-envoy register`) whose
    /// lease has expired: the sidecar died without deregistering.
    ///
    /// # Errors
    /// Command failure or timeout.
    pub async fn expired_leases(&mut self) -> Result<Vec<String>, RedisSourceError> {
        let timeout = self.config.timeout;
        let leased: Vec<String> = bounded(
            timeout,
            "reading leased registrations",
            redis::cmd("SMEMBERS")
                .arg(layout::LEASED_SET)
                .query_async(&mut self.commands),
        )
        .await?;
        if leased.is_empty() {
            return Ok(leased);
        }
        let mut pipe = Batch::new();
        for member in &leased {
            pipe.cmd("EXISTS").arg(layout::lease_key(member));
        }
        let exists: Vec<bool> =
            bounded(timeout, "reading leases", pipe.query(&mut self.commands)).await?;
        Ok(leased
            .into_iter()
            .zip(exists)
            .filter_map(|(m, alive)| (!alive).then_some(m))
            .collect())
    }

    /// Unregisters a member whose lease expired, as its sidecar would have on shutdown.
    /// Several agents may do this at once; it is idempotent.
    ///
    /// # Errors
    /// Command failure or timeout.
    pub(crate) async fn expire_lease(&mut self, member: &str) -> Result<(), RedisSourceError> {
        let pipe = Batch::of(&self.presence().expire_lease(member));
        bounded(
            self.config.timeout,
            "expiring a lease",
            pipe.query::<()>(&mut self.commands),
        )
        .await
        .map_err(Into::into)
    }

    /// Removes a dead process's presence the way Colyseus cleans up after a dead process:
    /// out of the registration set and the `roomcount` hash, its rooms out of RedisDriver's
    /// `roomcaches` listing (so matchmaking stops seating players in rooms that are gone),
    /// with a `remove` announcement.
    ///
    /// # Errors
    /// Command failure or timeout.
    pub(crate) async fn evict(
        &mut self,
        member: &str,
        process_id: &str,
    ) -> Result<(), RedisSourceError> {
        // The set holds Colyseus's own spelling of the member (host case, port left out...),
        // which `member` (normalized) may not match: remove every member of this processId.
        let registered: Vec<String> = bounded(
            self.config.timeout,
            "reading the registration set",
            redis::cmd("SMEMBERS")
                .arg(&self.config.nodes_key)
                .query_async(&mut self.commands),
        )
        .await?;
        let mut spellings = members_of(process_id, &registered);
        if spellings.is_empty() {
            spellings.push(member.to_owned());
        }
        let listings: Vec<(String, Vec<u8>)> = bounded(
            self.config.timeout,
            "reading room listings",
            redis::cmd("HGETALL")
                .arg(layout::ROOM_LISTINGS)
                .query_async(&mut self.commands),
        )
        .await?;
        let rooms = rooms_of(process_id, &listings);
        let pipe = Batch::of(
            &self
                .presence()
                .evict(&spellings, process_id, &rooms, member),
        );
        bounded(
            self.config.timeout,
            "evicting a dead process from presence",
            pipe.query::<()>(&mut self.commands),
        )
        .await
        .map_err(Into::into)
    }

    /// The registration set and channel this session follows.
    fn presence(&self) -> Presence {
        Presence {
            nodes_key: self.config.nodes_key.clone(),
            discovery_channel: self.config.discovery_channel.clone(),
        }
    }

    /// Re-adds registrations Redis lost, and announces them the way Colyseus does, so other
    /// agents reading the same Redis converge on the same state.
    ///
    /// # Errors
    /// Command failure or timeout.
    pub(crate) async fn restore(&mut self, members: &[String]) -> Result<(), RedisSourceError> {
        let pipe = Batch::of(&self.presence().restore(members));
        bounded(
            self.config.timeout,
            "restoring registrations",
            pipe.query::<()>(&mut self.commands),
        )
        .await
        .map_err(Into::into)
    }
}

/// The members of the registration set that register `process_id`, as written.
fn members_of(process_id: &str, members: &[String]) -> Vec<String> {
    members
        .iter()
        .filter(|m| m.split_once('/').is_some_and(|(pid, _)| pid == process_id))
        .cloned()
        .collect()
}

/// The roomIds of `process_id`'s rooms in RedisDriver listings. Unparsable listings are
/// left alone: they are not this process's to delete.
fn rooms_of(process_id: &str, listings: &[(String, Vec<u8>)]) -> Vec<String> {
    listings
        .iter()
        .filter(|(_, json)| {
            serde_json::from_slice::<serde_json::Value>(json)
                .is_ok_and(|room| room["processId"] == process_id)
        })
        .map(|(room_id, _)| room_id.clone())
        .collect()
}

fn convert(msg: &redis::Msg) -> Message {
    let channel = msg.get_channel_name();
    match channel
        .strip_prefix("ipc:")
        .filter(|id| id.starts_with(IPC_PREFIX))
    {
        Some(request_id) => Message::IpcReply {
            request_id: request_id.to_owned(),
        },
        None => Message::Announcement(msg.get_payload_bytes().to_vec()),
    }
}

/// Extracts `run_id` from `INFO server` output.
fn parse_run_id(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_spelling_of_a_process_registration() {
        let members = [
            "p1/Game-1.svc.local:80",
            "p1/10.0.0.5",
            "p12/10.0.0.6:1",
            "garbage",
        ]
        .map(String::from);
        assert_eq!(
            members_of("p1", &members),
            ["p1/Game-1.svc.local:80", "p1/10.0.0.5"]
        );
        assert!(members_of("p", &members).is_empty());
    }

    #[test]
    fn finds_a_process_rooms_in_redis_driver_listings() {
        let listings = vec![
            (
                "r1".to_owned(),
                br#"{"roomId":"r1","processId":"dead1","clients":2}"#.to_vec(),
            ),
            (
                "r2".to_owned(),
                br#"{"roomId":"r2","processId":"live2"}"#.to_vec(),
            ),
            ("r3".to_owned(), b"not json".to_vec()),
            (
                "r4".to_owned(),
                br#"{"roomId":"r4","processId":"dead1","maxClients":null}"#.to_vec(),
            ),
        ];
        assert_eq!(rooms_of("dead1", &listings), ["r1", "r4"]);
        assert!(rooms_of("nobody", &listings).is_empty());
    }

    #[test]
    fn run_id_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:5f1c0e2a\r\ntcp_port:6379\r\n";
        assert_eq!(parse_run_id(info).as_deref(), Some("5f1c0e2a"));
        assert_eq!(parse_run_id("# Server\r\n"), None);
    }
}
