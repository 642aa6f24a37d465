//! Where registrations come from. Each source reads and converts; it decides nothing.

/// MongooseDriver's room listings (`roomcaches`) through the official `mongodb` driver.
#[cfg(feature = "daemon")]
pub mod mongo;
#[cfg(feature = "daemon")]
pub mod redis;
/// Restart or failover? Replication ids from `INFO`, compared (pure).
pub mod redis_lineage;
/// RedisDriver's room listings (the `roomcaches` hash): periodic reads plus single-room reads.
#[cfg(feature = "daemon")]
pub mod redis_rooms;

/// Reads one room's listing straight from its source: the read-through for a room the index
/// does not have yet (created since the last read, or its change event not yet applied).
#[cfg(feature = "daemon")]
#[derive(Debug)]
pub enum RoomFetcher {
    Mongo(mongo::MongoRoomFetcher),
    Redis(Box<redis_rooms::RedisRoomFetcher>),
}

#[cfg(feature = "daemon")]
impl RoomFetcher {
    /// The room listed as `room_id` (`Some(Err)`: listed but unusable), `None` if unlisted.
    ///
    /// # Errors
    /// The source failing; the message says which.
    pub async fn fetch(
        &self,
        room_id: &str,
    ) -> Result<Option<Result<crate::rooms::Room, crate::rooms::RoomRejection>>, String> {
        match self {
            Self::Mongo(f) => f.fetch(room_id).await.map_err(|e| e.to_string()),
            Self::Redis(f) => f.fetch(room_id).await.map_err(|e| e.to_string()),
        }
    }

    /// Deletes a dead process's listings; `None` where the presence eviction already does
    /// it (RedisDriver's hash, cleaned with the rest of the process's presence).
    ///
    /// # Errors
    /// The source failing; the message says which.
    pub async fn remove_process(&self, process_id: &str) -> Result<Option<u64>, String> {
        match self {
            Self::Mongo(f) => f
                .remove_process(process_id)
                .await
                .map(Some)
                .map_err(|e| e.to_string()),
            Self::Redis(_) => Ok(None),
        }
    }

    /// Metric label of the source.
    pub fn source(&self) -> &'static str {
        match self {
            Self::Mongo(_) => "mongo",
            Self::Redis(_) => "redis-rooms",
        }
    }
}
