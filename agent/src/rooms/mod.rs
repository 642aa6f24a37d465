//! Pure: the room index (roomId -> the process holding the room), fed by the matchmaker's
//! room listings (MongooseDriver documents, RedisDriver JSON), and the conversions from
//! those listings. A listing that cannot be trusted is a [`RoomRejection`]: the caller logs
//! and counts it and goes on with the others.
//!
//! Layout: the types here, [`index`] (the index and per-process loads), [`listing`] (the
//! matchmaker's listings converted and validated).

mod index;
mod listing;

pub use index::{Load, RoomIndex};
pub use listing::{from_document, from_hash_field, from_json};

use routing::{IdError, ProcessId};

/// What the index keeps of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub process_id: ProcessId,
    pub name: String,
    pub clients: u32,
    /// `None`: no limit (`Infinity` in MongoDB, `null` in RedisDriver JSON, or absent).
    pub max_clients: Option<u32>,
    pub locked: bool,
    pub public_address: Option<String>,
}

/// One room listing, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub room_id: String,
    pub info: RoomInfo,
}

/// A change to the listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    Upsert(Room),
    /// The room with this roomId is gone.
    Delete(String),
}

/// What a room-listing source sends to whoever owns the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomFeed {
    /// A full read: the listings as they are now, and the ones skipped (source key, why).
    Reload {
        rooms: Vec<Room>,
        rejected: Vec<(String, RoomRejection)>,
    },
    Event(RoomEvent),
    /// One listing skipped (source key, why).
    Rejected(String, RoomRejection),
    /// The source is connected (`true`) or failing (`false`).
    Up(bool),
}

/// Why a listing was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomRejection {
    #[error("room listing has no {field}")]
    Missing { field: &'static str },
    #[error("room listing field {field} has the wrong type or value ({found})")]
    WrongType { field: &'static str, found: String },
    #[error("room listing field {field} is not a valid id: {error}")]
    BadId { field: &'static str, error: IdError },
    #[error("room listing is not a JSON object")]
    NotJson,
    /// A RedisDriver hash field that is not the roomId of its JSON.
    #[error("room listing stored under {key:?} describes room {room_id:?}")]
    KeyMismatch { key: String, room_id: String },
}

impl RoomRejection {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::BadId { .. } => "bad_id",
            Self::NotJson => "not_json",
            Self::KeyMismatch { .. } => "key_mismatch",
        }
    }
}
