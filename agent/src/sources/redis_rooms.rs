//! RedisDriver's room listings: the hash `roomcaches` (roomId -> the room as JSON). I/O
//! only, conversions are in [`crate::rooms`].
//!
//! RedisDriver announces nothing when it writes a listing, so the hash is read whole every
//! `interval` (in HSCAN pages, folded as they arrive): the first read of a session is sent as
//! a reload, later ones as the listings that changed. A room created since the last read is read
//! alone when someone asks for it ([`RedisRoomFetcher`], the API's read-through), so a
//! player never waits for the next read. Any error ends the session; the next one
//! reconnects and reads everything again.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::redis_call::{bounded, RedisCallError};
use crate::redis_target::{Commands, RedisTarget};
use crate::rooms::{self, Room, RoomEvent, RoomFeed, RoomRejection};

/// RedisDriver's hash.
pub const DEFAULT_KEY: &str = crate::layout::ROOM_LISTINGS;

#[derive(Debug, Clone)]
pub struct RedisRoomsConfig {
    pub target: RedisTarget,
    pub key: String,
    /// Period of the full read.
    pub interval: Duration,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisRoomsError {
    #[error(transparent)]
    Call(#[from] RedisCallError),
    #[error("the room index consumer is gone")]
    Closed,
}

/// Reads the listings periodically and sends them as [`RoomFeed`]s.
#[derive(Debug, Clone)]
pub struct RedisRoomsSource {
    config: RedisRoomsConfig,
}

impl RedisRoomsSource {
    /// Connects lazily.
    pub fn new(config: RedisRoomsConfig) -> Self {
        Self { config }
    }

    /// A fetcher of single rooms over its own connection.
    pub fn fetcher(&self) -> RedisRoomFetcher {
        RedisRoomFetcher {
            target: self.config.target.clone(),
            key: self.config.key.clone(),
            timeout: self.config.timeout,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs until the receiver is dropped; failures are retried with backoff.
    pub async fn run(self, tx: mpsc::Sender<RoomFeed>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.session(&tx).await {
                Err(RedisRoomsError::Closed) => return,
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "RedisDriver room listings unavailable; keeping the rooms known.");
                    if tx.send(RoomFeed::Up(false)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Ok(()) => backoff = Duration::from_millis(200),
            }
        }
    }

    async fn session(&self, tx: &mpsc::Sender<RoomFeed>) -> Result<(), RedisRoomsError> {
        let mut conn = connect(&self.config.target, self.config.timeout).await?;
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first read of a session is a reload; later ones send only what changed.
        tick.tick().await;
        let started = std::time::Instant::now();
        let mut seen = HashMap::new();
        let (rooms, rejected) = self.read(&mut conn, &seen).await?.reload(&mut seen);
        info!(rooms = rooms.len(), rejected = rejected.len(), took = ?started.elapsed(), "Following RedisDriver room listings (periodic reads).");
        send(tx, RoomFeed::Reload { rooms, rejected }).await?;
        send(tx, RoomFeed::Up(true)).await?;
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            let changes = self.read(&mut conn, &seen).await?.changes(&mut seen);
            debug!(changes = changes.len(), took = ?started.elapsed(), "Read RedisDriver room listings.");
            for feed in changes {
                send(tx, feed).await?;
            }
        }
    }

    /// The whole hash, by HSCAN pages: each call is short (Redis serves Colyseus meanwhile,
    /// where one HGETALL of a million listings would block it for seconds) and bounded by
    /// the timeout on its own. Each page is folded into the read as it arrives.
    async fn read(
        &self,
        conn: &mut Commands,
        seen: &HashMap<String, u64>,
    ) -> Result<Read, RedisRoomsError> {
        let mut read = Read::default();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<(String, Vec<u8>)>) = bounded(
                self.config.timeout,
                "HSCAN room listings",
                redis::cmd("HSCAN")
                    .arg(&self.config.key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(SCAN_PAGE)
                    .query_async(conn),
            )
            .await?;
            read.add_page(seen, page);
            if next == 0 {
                return Ok(read);
            }
            cursor = next;
        }
    }
}

/// Fields asked for per HSCAN call.
const SCAN_PAGE: usize = 2000;

/// A listing's content hash, to convert only what changed between reads (a full conversion
/// of a million listings every second would keep a core busy).
fn fingerprint(json: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut h);
    h.finish()
}

/// One full read of the hash, folded page by page. A listing unchanged since the previous
/// read (`seen`) is only fingerprinted, so a read holds the changed listings, converted,
/// and a fingerprint per field; never the hash's JSON (about 250 bytes a room: a million
/// rooms held whole cost hundreds of MB at every read).
#[derive(Debug, Default)]
struct Read {
    fingerprints: HashMap<String, u64>,
    /// New or changed listings, each once, in the order read.
    changed: Vec<(String, Result<Room, RoomRejection>)>,
}

impl Read {
    fn add_page(&mut self, seen: &HashMap<String, u64>, page: Vec<(String, Vec<u8>)>) {
        for (key, json) in page {
            let fp = fingerprint(&json);
            match self.fingerprints.get(&key) {
                // HSCAN repeated the field: nothing new.
                Some(&earlier) if earlier == fp => continue,
                // Repeated and changed in between (rare: the hash was resized during the
                // scan): the last value counts.
                Some(_) => self.changed.retain(|(k, _)| *k != key),
                None => {}
            }
            if seen.get(&key) != Some(&fp) {
                let listing = rooms::from_hash_field(&key, &json);
                self.changed.push((key.clone(), listing));
            }
            self.fingerprints.insert(key, fp);
        }
    }

    /// A first read: every listing, and the ones skipped with their reason. `seen` becomes
    /// this read.
    fn reload(self, seen: &mut HashMap<String, u64>) -> (Vec<Room>, Vec<(String, RoomRejection)>) {
        *seen = self.fingerprints;
        let (mut rooms, mut rejected) = (Vec::with_capacity(self.changed.len()), Vec::new());
        for (key, listing) in self.changed {
            match listing {
                Ok(room) => rooms.push(room),
                Err(why) => rejected.push((key, why)),
            }
        }
        (rooms, rejected)
    }

    /// The feeds that turn the previous read (`seen`, which becomes this one) into this
    /// one: an upsert for a new or changed listing, a delete for a gone one, a delete and a
    /// rejection for a listing that became unusable.
    fn changes(self, seen: &mut HashMap<String, u64>) -> Vec<RoomFeed> {
        let mut feeds = Vec::new();
        for (key, listing) in self.changed {
            match listing {
                Ok(room) => feeds.push(RoomFeed::Event(RoomEvent::Upsert(room))),
                Err(why) => {
                    feeds.push(RoomFeed::Event(RoomEvent::Delete(key.clone())));
                    feeds.push(RoomFeed::Rejected(key, why));
                }
            }
        }
        for key in seen.keys() {
            if !self.fingerprints.contains_key(key) {
                feeds.push(RoomFeed::Event(RoomEvent::Delete(key.clone())));
            }
        }
        *seen = self.fingerprints;
        feeds
    }
}

/// Reads one listing (HGET), for a room the index does not have yet.
#[derive(Debug)]
pub struct RedisRoomFetcher {
    target: RedisTarget,
    key: String,
    timeout: Duration,
    /// Opened on first use, dropped after an error so the next call reconnects.
    conn: tokio::sync::Mutex<Option<Commands>>,
}

impl RedisRoomFetcher {
    /// The room listed under `room_id`, if any (or why its listing is unusable).
    ///
    /// # Errors
    /// Redis unreachable or failing.
    pub async fn fetch(
        &self,
        room_id: &str,
    ) -> Result<Option<Result<Room, RoomRejection>>, RedisRoomsError> {
        let mut conn = {
            let mut guard = self.conn.lock().await;
            match guard.as_ref() {
                Some(conn) => conn.clone(),
                None => {
                    let conn = connect(&self.target, self.timeout).await?;
                    *guard = Some(conn.clone());
                    conn
                }
            }
        };
        let json: Option<Vec<u8>> = match bounded(
            self.timeout,
            "HGET room listing",
            redis::cmd("HGET")
                .arg(&self.key)
                .arg(room_id)
                .query_async(&mut conn),
        )
        .await
        {
            Ok(json) => json,
            Err(e) => {
                *self.conn.lock().await = None;
                return Err(e.into());
            }
        };
        Ok(json.map(|json| rooms::from_hash_field(room_id, &json)))
    }
}

async fn connect(target: &RedisTarget, timeout: Duration) -> Result<Commands, RedisRoomsError> {
    Ok(target
        .commands(timeout, "connecting to Redis (room listings)")
        .await?)
}

async fn send(tx: &mpsc::Sender<RoomFeed>, feed: RoomFeed) -> Result<(), RedisRoomsError> {
    tx.send(feed).await.map_err(|_| RedisRoomsError::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    /// A read of `pages` after the read that left `seen`.
    fn read(seen: &HashMap<String, u64>, pages: &[&[(&str, &str)]]) -> Read {
        let mut read = Read::default();
        for p in pages {
            read.add_page(seen, page(p));
        }
        read
    }

    fn describe(feeds: Vec<RoomFeed>) -> Vec<String> {
        let mut feeds: Vec<String> = feeds
            .into_iter()
            .map(|f| match f {
                RoomFeed::Event(RoomEvent::Upsert(r)) => {
                    format!("upsert {} {}", r.room_id, r.info.clients)
                }
                RoomFeed::Event(RoomEvent::Delete(id)) => format!("delete {id}"),
                RoomFeed::Rejected(k, why) => format!("reject {k} {}", why.reason()),
                other => format!("{other:?}"),
            })
            .collect();
        feeds.sort();
        feeds
    }

    #[test]
    fn later_reads_send_only_what_changed() {
        let first: &[&[(&str, &str)]] = &[
            &[
                ("r1", r#"{"roomId":"r1","processId":"p1","clients":1}"#),
                ("r2", r#"{"roomId":"r2","processId":"p1"}"#),
            ],
            &[("r3", r#"{"roomId":"r3","processId":"p2"}"#)],
        ];
        let mut seen = HashMap::new();
        let (rooms, rejected) = read(&seen, first).reload(&mut seen);
        assert_eq!((rooms.len(), rejected.len(), seen.len()), (3, 0, 3));
        assert!(read(&seen, first).changes(&mut seen).is_empty());
        let second: &[&[(&str, &str)]] = &[
            &[("r1", r#"{"roomId":"r1","processId":"p1","clients":2}"#)],
            &[
                ("r3", "garbage"),
                ("r4", r#"{"roomId":"r4","processId":"p2"}"#),
            ],
        ];
        let unchanged_not_held = read(&seen, &[&[("r2", r#"{"roomId":"r2","processId":"p1"}"#)]]);
        assert!(unchanged_not_held.changed.is_empty());
        assert_eq!(
            describe(read(&seen, second).changes(&mut seen)),
            [
                "delete r2",
                "delete r3",
                "reject r3 not_json",
                "upsert r1 2",
                "upsert r4 0"
            ]
        );
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_field_hscan_repeats_is_sent_once() {
        let mut seen = HashMap::new();
        let r1 = r#"{"roomId":"r1","processId":"p1"}"#;
        let (rooms, _) = read(&seen, &[&[("r1", r1)], &[("r1", r1)]]).reload(&mut seen);
        assert_eq!(rooms.len(), 1);
        let r1b = r#"{"roomId":"r1","processId":"p1","clients":3}"#;
        let feeds = read(&seen, &[&[("r1", r1b)], &[("r1", r1b)]]).changes(&mut seen);
        assert_eq!(describe(feeds), ["upsert r1 3"]);
        // Changed between two pages: only the last value counts.
        let feeds = read(&seen, &[&[("r1", r1)], &[("r1", "garbage")]]).changes(&mut seen);
        assert_eq!(describe(feeds), ["delete r1", "reject r1 not_json"]);
        let feeds = read(&seen, &[&[("r1", r1)], &[("r1", "garbage")]]).changes(&mut seen);
        assert!(feeds.is_empty(), "{feeds:?}");
    }

    #[test]
    fn bad_fields_are_set_apart_not_fatal() {
        let mut seen = HashMap::new();
        let (rooms, rejected) = read(
            &seen,
            &[&[
                ("r1", r#"{"roomId":"r1","processId":"p1"}"#),
                ("r2", "garbage"),
                ("r3", r#"{"roomId":"r1","processId":"p1"}"#),
                ("r4", r#"{"roomId":"r4"}"#),
            ]],
        )
        .reload(&mut seen);
        assert_eq!(rooms.len(), 1);
        let mut reasons: Vec<_> = rejected
            .iter()
            .map(|(k, r)| (k.as_str(), r.reason()))
            .collect();
        reasons.sort_unstable();
        assert_eq!(
            reasons,
            [
                ("r2", "not_json"),
                ("r3", "key_mismatch"),
                ("r4", "missing_field")
            ]
        );
    }
}
