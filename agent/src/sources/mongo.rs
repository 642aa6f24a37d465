//! MongooseDriver's room listings (`roomcaches`): I/O only, conversions are in
//! [`crate::rooms`].
//!
//! Each session: open a change stream (when the server has them), read every document
//! (a full load), then follow the stream. Without change streams (standalone server,
//! error 40573) or when opening one fails, poll `updatedAt >= last` every `poll_interval`
//! and end the session after `reload_interval`, so the next session reloads everything
//! (which is what sees deletes) and tries the stream again. Any stream error or a change of
//! the server's identity (`hello` `topologyVersion.processId`: a restarted server whose
//! change log no longer covers the resume token) ends the session too: the next one
//! reloads. Documents are read as `bson::Document`s and converted one by one, so a bad
//! one is skipped and counted, never fatal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime, Document};
use futures_util::TryStreamExt;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, FullDocumentType};
use mongodb::{Client, Collection};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::rooms::{self, RoomEvent, RoomFeed};

/// Database used when the URI names none (as Colyseus's MongooseDriver default).
pub const DEFAULT_DATABASE: &str = "colyseus";
/// MongooseDriver's collection.
pub const DEFAULT_COLLECTION: &str = "roomcaches";
/// `IllegalOperation`: the server has no change streams.
const NO_CHANGE_STREAMS: i32 = 40573;

#[derive(Debug, Clone)]
pub struct MongoRoomsConfig {
    pub uri: String,
    pub collection: String,
    pub poll_interval: Duration,
    pub reload_interval: Duration,
    /// How often the server's identity is checked.
    pub identity_interval: Duration,
}

impl MongoRoomsConfig {
    pub fn new(uri: String) -> Self {
        Self {
            uri,
            collection: DEFAULT_COLLECTION.to_owned(),
            poll_interval: Duration::from_secs(1),
            reload_interval: Duration::from_secs(10),
            identity_interval: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MongoSourceError {
    #[error("invalid MongoDB URI: {0}")]
    Uri(#[source] mongodb::error::Error),
    #[error("{what}: {source}")]
    Mongo {
        what: &'static str,
        source: mongodb::error::Error,
    },
    #[error("the MongoDB server changed (restart or failover); reloading")]
    ServerChanged,
    #[error("the change stream ended ({0})")]
    StreamEnded(String),
    #[error("the room index consumer is gone")]
    Closed,
}

fn mongo(what: &'static str) -> impl FnOnce(mongodb::error::Error) -> MongoSourceError {
    move |source| MongoSourceError::Mongo { what, source }
}

/// Follows the room listings and sends them as [`RoomFeed`]s.
pub struct MongoRoomsSource {
    collection: Collection<Document>,
    client: Client,
    config: MongoRoomsConfig,
    /// `_id` -> roomId: delete events carry only the `_id`.
    ids: HashMap<String, String>,
    /// Latest `updatedAt` seen, for polling.
    last_update: Option<DateTime>,
    server_id: Option<Bson>,
}

impl MongoRoomsSource {
    /// Parses the URI (database from its path, [`DEFAULT_DATABASE`] if none). Connects lazily.
    ///
    /// # Errors
    /// An invalid URI.
    pub async fn new(config: MongoRoomsConfig) -> Result<Self, MongoSourceError> {
        let mut options = ClientOptions::parse(&config.uri)
            .await
            .map_err(MongoSourceError::Uri)?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(5));
        }
        options
            .app_name
            .get_or_insert_with(|| "colyseus-envoy-agent".to_owned());
        let database = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(options).map_err(MongoSourceError::Uri)?;
        let collection = client.database(&database).collection(&config.collection);
        Ok(Self {
            collection,
            client,
            config,
            ids: HashMap::new(),
            last_update: None,
            server_id: None,
        })
    }

    /// A fetcher of single rooms (shares the client's connection pool).
    pub fn fetcher(&self) -> MongoRoomFetcher {
        MongoRoomFetcher {
            collection: self.collection.clone(),
        }
    }

    /// Runs until the receiver is dropped; failures are retried with backoff.
    pub async fn run(mut self, tx: mpsc::Sender<RoomFeed>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.session(&tx).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(MongoSourceError::Closed) => return,
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "MongoDB room listings unavailable; keeping the rooms known.");
                    if tx.send(RoomFeed::Up(false)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn session(&mut self, tx: &mpsc::Sender<RoomFeed>) -> Result<(), MongoSourceError> {
        self.server_id = Some(self.identity().await?);
        // The stream is opened before the load, so nothing falls between the two.
        let stream = self
            .collection
            .watch()
            .full_document(FullDocumentType::UpdateLookup)
            .max_await_time(Duration::from_millis(500))
            .await;
        self.full_load(tx).await?;
        send(tx, RoomFeed::Up(true)).await?;
        match stream {
            Ok(stream) => {
                info!(
                    rooms = self.ids.len(),
                    "Following MongoDB room listings (change stream)."
                );
                self.follow(stream, tx).await
            }
            Err(e) => {
                if command_code(&e) == Some(NO_CHANGE_STREAMS) {
                    debug!("MongoDB has no change streams (standalone); polling.");
                } else {
                    warn!(error = %e, "Cannot open a MongoDB change stream; polling meanwhile.");
                }
                self.poll(tx).await
            }
        }
    }

    async fn follow(
        &mut self,
        mut stream: mongodb::change_stream::ChangeStream<ChangeStreamEvent<Document>>,
        tx: &mpsc::Sender<RoomFeed>,
    ) -> Result<(), MongoSourceError> {
        let mut checked = Instant::now();
        // The driver resumes by itself after a resumable error; anything else ends the
        // session and the next one reloads, so the resume token is not kept here.
        loop {
            let event = stream
                .next_if_any()
                .await
                .map_err(mongo("reading the change stream"))?;
            if let Some(event) = event {
                self.on_change(event, tx).await?;
            } else if !stream.is_alive() {
                return Err(MongoSourceError::StreamEnded("closed".into()));
            }
            if checked.elapsed() >= self.config.identity_interval {
                self.check_identity().await?;
                checked = Instant::now();
            }
        }
    }

    async fn on_change(
        &mut self,
        event: ChangeStreamEvent<Document>,
        tx: &mpsc::Sender<RoomFeed>,
    ) -> Result<(), MongoSourceError> {
        let key = event
            .document_key
            .as_ref()
            .and_then(|k| k.get("_id"))
            .map(ToString::to_string);
        match event.operation_type {
            OperationType::Insert | OperationType::Update | OperationType::Replace => {
                // An update to a document deleted meanwhile has none; its delete follows.
                if let Some(doc) = event.full_document {
                    self.upsert(key, &doc, tx).await?;
                }
                Ok(())
            }
            OperationType::Delete => {
                if let Some(room_id) = key.and_then(|k| self.ids.remove(&k)) {
                    send(tx, RoomFeed::Event(RoomEvent::Delete(room_id))).await?;
                }
                Ok(())
            }
            other => Err(MongoSourceError::StreamEnded(format!("{other:?}"))),
        }
    }

    /// Sends one document's room, or its rejection (and drops the room it described).
    async fn upsert(
        &mut self,
        key: Option<String>,
        doc: &Document,
        tx: &mpsc::Sender<RoomFeed>,
    ) -> Result<(), MongoSourceError> {
        self.note_update(doc);
        let key = key.or_else(|| doc.get("_id").map(ToString::to_string));
        match rooms::from_document(doc) {
            Ok(room) => {
                if let Some(key) = key {
                    let old = self.ids.insert(key, room.room_id.clone());
                    if let Some(old) = old.filter(|o| *o != room.room_id) {
                        send(tx, RoomFeed::Event(RoomEvent::Delete(old))).await?;
                    }
                }
                send(tx, RoomFeed::Event(RoomEvent::Upsert(room))).await
            }
            Err(rejection) => {
                let key = key.unwrap_or_default();
                if let Some(old) = self.ids.remove(&key) {
                    send(tx, RoomFeed::Event(RoomEvent::Delete(old))).await?;
                }
                send(tx, RoomFeed::Rejected(key, rejection)).await
            }
        }
    }

    /// Polls `updatedAt` until `reload_interval` is over (the next session reloads).
    async fn poll(&mut self, tx: &mpsc::Sender<RoomFeed>) -> Result<(), MongoSourceError> {
        let until = Instant::now() + self.config.reload_interval;
        while Instant::now() < until {
            tokio::time::sleep(self.config.poll_interval).await;
            self.check_identity().await?;
            // Nothing seen yet (an empty collection): read whatever there is.
            let filter = self
                .last_update
                .map_or_else(Document::new, |last| doc! { "updatedAt": { "$gte": last } });
            let mut cursor = self
                .collection
                .find(filter)
                .await
                .map_err(mongo("polling room listings"))?;
            while let Some(doc) = cursor
                .try_next()
                .await
                .map_err(mongo("polling room listings"))?
            {
                self.upsert(None, &doc, tx).await?;
            }
        }
        Ok(())
    }

    async fn full_load(&mut self, tx: &mpsc::Sender<RoomFeed>) -> Result<(), MongoSourceError> {
        let started = Instant::now();
        let mut cursor = self
            .collection
            .find(doc! {})
            .await
            .map_err(mongo("reading room listings"))?;
        let (mut found, mut rejected) = (Vec::new(), Vec::new());
        let mut ids = HashMap::new();
        self.last_update = None;
        while let Some(doc) = cursor
            .try_next()
            .await
            .map_err(mongo("reading room listings"))?
        {
            self.note_update(&doc);
            let key = doc.get("_id").map(ToString::to_string).unwrap_or_default();
            match rooms::from_document(&doc) {
                Ok(room) => {
                    ids.insert(key, room.room_id.clone());
                    found.push(room);
                }
                Err(rejection) => rejected.push((key, rejection)),
            }
        }
        self.ids = ids;
        debug!(rooms = found.len(), rejected = rejected.len(), took = ?started.elapsed(), "Read all MongoDB room listings.");
        send(
            tx,
            RoomFeed::Reload {
                rooms: found,
                rejected,
            },
        )
        .await
    }

    fn note_update(&mut self, doc: &Document) {
        if let Ok(t) = doc.get_datetime("updatedAt") {
            if self.last_update.is_none_or(|last| *t > last) {
                self.last_update = Some(*t);
            }
        }
    }

    /// `topologyVersion.processId` of the server (changes when it restarts), or `Null` when
    /// the server does not report one.
    async fn identity(&self) -> Result<Bson, MongoSourceError> {
        let hello = self
            .client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(mongo("asking the server who it is"))?;
        Ok(hello
            .get_document("topologyVersion")
            .ok()
            .and_then(|t| t.get("processId").cloned())
            .unwrap_or(Bson::Null))
    }

    async fn check_identity(&self) -> Result<(), MongoSourceError> {
        let now = self.identity().await?;
        if self.server_id.as_ref() == Some(&now) {
            Ok(())
        } else {
            Err(MongoSourceError::ServerChanged)
        }
    }
}

/// Reads one listing (`findOne({roomId})`), for a room the index does not have yet.
#[derive(Debug, Clone)]
pub struct MongoRoomFetcher {
    collection: Collection<Document>,
}

impl MongoRoomFetcher {
    /// The room listed as `room_id`, if any (or why its listing is unusable).
    ///
    /// # Errors
    /// MongoDB unreachable or failing (bounded by the client's server selection timeout).
    pub async fn fetch(
        &self,
        room_id: &str,
    ) -> Result<Option<Result<rooms::Room, rooms::RoomRejection>>, MongoSourceError> {
        let doc = self
            .collection
            .find_one(doc! { "roomId": room_id })
            .await
            .map_err(mongo("reading one room listing"))?;
        Ok(doc.map(|doc| rooms::from_document(&doc)))
    }

    /// Deletes every listing of `process_id` (what Colyseus's own cleanup of a dead
    /// process does, `driver.cleanup(processId)`); returns how many.
    ///
    /// # Errors
    /// MongoDB unreachable or failing.
    pub async fn remove_process(&self, process_id: &str) -> Result<u64, MongoSourceError> {
        let result = self
            .collection
            .delete_many(doc! { "processId": process_id })
            .await
            .map_err(mongo("deleting a dead process's room listings"))?;
        Ok(result.deleted_count)
    }
}

async fn send(tx: &mpsc::Sender<RoomFeed>, feed: RoomFeed) -> Result<(), MongoSourceError> {
    tx.send(feed).await.map_err(|_| MongoSourceError::Closed)
}

fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}
