//! Pure: the room index (roomId -> the process holding the room), fed by the matchmaker's
//! room listings (MongooseDriver documents, RedisDriver JSON), and the conversions from
//! those listings. A listing that cannot be trusted is a [`RoomRejection`]: the caller logs
//! and counts it and goes on with the others.

use std::collections::HashMap;

use bson::{Bson, Document};
use routing::id::check_id;
use routing::{IdError, ProcessId};
use serde_json::Value;

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

/// Rooms and CCU of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub rooms: u32,
    pub ccu: u64,
}

/// roomId -> [`RoomInfo`], with each process's [`Load`] kept up to date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomIndex {
    rooms: HashMap<String, RoomInfo>,
    loads: HashMap<ProcessId, Load>,
}

impl RoomIndex {
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    pub fn lookup(&self, room_id: &str) -> Option<&RoomInfo> {
        self.rooms.get(room_id)
    }

    pub fn load(&self, process_id: &ProcessId) -> Option<Load> {
        self.loads.get(process_id).copied()
    }

    /// The roomIds of `process_id`'s rooms, sorted.
    pub fn rooms_of(&self, process_id: &ProcessId) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.process_id == *process_id)
            .map(|(id, _)| id.as_str())
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn apply(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::Upsert(room) => {
                self.add_load(&room.info);
                if let Some(old) = self.rooms.insert(room.room_id, room.info) {
                    self.remove_load(&old);
                }
            }
            RoomEvent::Delete(room_id) => {
                if let Some(old) = self.rooms.remove(&room_id) {
                    self.remove_load(&old);
                }
            }
        }
    }

    /// Makes the index exactly `rooms` (a full read of a source).
    pub fn replace_all(&mut self, rooms: impl IntoIterator<Item = Room>) {
        *self = Self::default();
        for room in rooms {
            self.apply(RoomEvent::Upsert(room));
        }
    }

    /// Drops the rooms of every process `live` says is gone.
    pub fn retain_processes(&mut self, live: impl Fn(&ProcessId) -> bool) {
        self.rooms.retain(|_, r| live(&r.process_id));
        self.loads.retain(|p, _| live(p));
    }

    fn add_load(&mut self, info: &RoomInfo) {
        let load = self.loads.entry(info.process_id.clone()).or_default();
        load.rooms += 1;
        load.ccu += u64::from(info.clients);
    }

    fn remove_load(&mut self, info: &RoomInfo) {
        if let Some(load) = self.loads.get_mut(&info.process_id) {
            load.rooms = load.rooms.saturating_sub(1);
            load.ccu = load.ccu.saturating_sub(u64::from(info.clients));
            if load.rooms == 0 {
                self.loads.remove(&info.process_id);
            }
        }
    }
}

/// A MongooseDriver `roomcaches` document. Extra fields are ignored.
///
/// # Errors
/// `roomId`/`processId` missing or not valid ids; a known field of the wrong type.
pub fn from_document(doc: &Document) -> Result<Room, RoomRejection> {
    let field = |name: &'static str| match doc.get(name) {
        None | Some(Bson::Null | Bson::Undefined) => Field::Absent,
        Some(Bson::String(s)) => Field::Str(s),
        Some(Bson::Boolean(b)) => Field::Bool(*b),
        Some(Bson::Int32(n)) => Field::Num(f64::from(*n)),
        Some(Bson::Int64(n)) => Field::Num(*n as f64),
        Some(Bson::Double(n)) => Field::Num(*n),
        Some(other) => Field::Other(format!("{:?}", other.element_type())),
    };
    convert(field)
}

/// A RedisDriver `roomcaches` hash value (the room as JSON; `maxClients: null` is no limit).
///
/// # Errors
/// As [`from_document`], or not a JSON object.
pub fn from_json(json: &[u8]) -> Result<Room, RoomRejection> {
    let value: Value = serde_json::from_slice(json).map_err(|_| RoomRejection::NotJson)?;
    let Value::Object(obj) = value else {
        return Err(RoomRejection::NotJson);
    };
    let field = |name: &'static str| match obj.get(name) {
        None | Some(Value::Null) => Field::Absent,
        Some(Value::String(s)) => Field::Str(s),
        Some(Value::Bool(b)) => Field::Bool(*b),
        Some(Value::Number(n)) => n.as_f64().map_or(Field::Other("number".into()), Field::Num),
        Some(Value::Array(_)) => Field::Other("array".into()),
        Some(Value::Object(_)) => Field::Other("object".into()),
    };
    convert(field)
}

/// One field of RedisDriver's `roomcaches` hash: the room's JSON under its roomId. A value
/// filed under another roomId is rejected rather than guessed at.
///
/// # Errors
/// As [`from_json`], or [`RoomRejection::KeyMismatch`].
pub fn from_hash_field(key: &str, json: &[u8]) -> Result<Room, RoomRejection> {
    let room = from_json(json)?;
    if room.room_id == key {
        Ok(room)
    } else {
        Err(RoomRejection::KeyMismatch {
            key: key.to_owned(),
            room_id: room.room_id,
        })
    }
}

/// A listing's field, whatever the encoding.
enum Field<'a> {
    Absent,
    Str(&'a str),
    Bool(bool),
    Num(f64),
    Other(String),
}

impl Field<'_> {
    fn describe(&self) -> String {
        match self {
            Field::Absent => "absent".into(),
            Field::Str(s) => format!("string {s:?}"),
            Field::Bool(b) => format!("boolean {b}"),
            Field::Num(n) => format!("number {n}"),
            Field::Other(t) => t.clone(),
        }
    }
}

fn convert<'a>(field: impl Fn(&'static str) -> Field<'a>) -> Result<Room, RoomRejection> {
    let wrong = |name: &'static str, f: &Field<'_>| RoomRejection::WrongType {
        field: name,
        found: f.describe(),
    };
    let id = |name: &'static str| -> Result<&'a str, RoomRejection> {
        match field(name) {
            Field::Absent => Err(RoomRejection::Missing { field: name }),
            Field::Str(s) => check_id(s)
                .map(|()| s)
                .map_err(|error| RoomRejection::BadId { field: name, error }),
            f => Err(wrong(name, &f)),
        }
    };
    // A count: a non-negative integer, also when stored as a double (`3.0`).
    let count = |name: &'static str| -> Result<Option<u32>, RoomRejection> {
        match field(name) {
            Field::Absent => Ok(None),
            Field::Num(n) if n.is_infinite() && n > 0.0 => Ok(None),
            Field::Num(n) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) => {
                Ok(Some(n as u32))
            }
            f => Err(wrong(name, &f)),
        }
    };
    let text = |name: &'static str| -> Result<Option<&'a str>, RoomRejection> {
        match field(name) {
            Field::Absent => Ok(None),
            Field::Str(s) => Ok(Some(s)),
            f => Err(wrong(name, &f)),
        }
    };
    let room_id = id("roomId")?;
    let process_id = ProcessId::parse(id("processId")?).map_err(|error| RoomRejection::BadId {
        field: "processId",
        error,
    })?;
    let clients = match field("clients") {
        Field::Num(n) if n.is_infinite() => return Err(wrong("clients", &Field::Num(n))),
        _ => count("clients")?.unwrap_or(0),
    };
    let locked = match field("locked") {
        Field::Absent => false,
        Field::Bool(b) => b,
        f => return Err(wrong("locked", &f)),
    };
    Ok(Room {
        room_id: room_id.to_owned(),
        info: RoomInfo {
            process_id,
            name: text("name")?.unwrap_or_default().to_owned(),
            clients,
            max_clients: count("maxClients")?,
            locked,
            public_address: text("publicAddress")?.map(str::to_owned),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn pid(s: &str) -> ProcessId {
        ProcessId::parse(s).unwrap()
    }

    fn colyseus_doc() -> Document {
        doc! {
            "_id": bson::oid::ObjectId::new(),
            "roomId": "xKJ3_a-9z",
            "processId": "p1Ab_-xyz",
            "name": "battle",
            "clients": 3,
            "maxClients": 8,
            "locked": false,
            "private": false,
            "unlisted": false,
            "metadata": { "mode": "duo" },
            "publicAddress": "eu1.example.com",
            "createdAt": bson::DateTime::now(),
            "updatedAt": bson::DateTime::now(),
            "__v": 0,
            "someExtraField": [1, 2],
        }
    }

    #[test]
    fn converts_a_colyseus_document_with_extra_fields() {
        let room = from_document(&colyseus_doc()).unwrap();
        assert_eq!(
            room,
            Room {
                room_id: "xKJ3_a-9z".into(),
                info: RoomInfo {
                    process_id: pid("p1Ab_-xyz"),
                    name: "battle".into(),
                    clients: 3,
                    max_clients: Some(8),
                    locked: false,
                    public_address: Some("eu1.example.com".into()),
                }
            }
        );
    }

    #[test]
    fn rejects_missing_or_invalid_ids() {
        let mut d = colyseus_doc();
        d.remove("roomId");
        assert_eq!(
            from_document(&d),
            Err(RoomRejection::Missing { field: "roomId" })
        );
        let mut d = colyseus_doc();
        d.insert("processId", "undefined/x");
        assert_eq!(from_document(&d).unwrap_err().reason(), "bad_id");
        let mut d = colyseus_doc();
        d.insert("processId", 42);
        assert_eq!(from_document(&d).unwrap_err().reason(), "wrong_type");
        let mut d = colyseus_doc();
        d.insert("roomId", "");
        assert_eq!(from_document(&d).unwrap_err().reason(), "bad_id");
    }

    #[test]
    fn numbers_where_strings_belong_and_strings_where_numbers_belong() {
        let mut d = colyseus_doc();
        d.insert("name", 7);
        assert_eq!(from_document(&d).unwrap_err().reason(), "wrong_type");
        let mut d = colyseus_doc();
        d.insert("clients", "3");
        assert_eq!(from_document(&d).unwrap_err().reason(), "wrong_type");
        let mut d = colyseus_doc();
        d.insert("locked", 1);
        assert_eq!(from_document(&d).unwrap_err().reason(), "wrong_type");
    }

    #[test]
    fn integral_doubles_are_counts_fractions_are_not() {
        let mut d = colyseus_doc();
        d.insert("clients", 3.0);
        d.insert("maxClients", 10_i64);
        let room = from_document(&d).unwrap();
        assert_eq!((room.info.clients, room.info.max_clients), (3, Some(10)));
        d.insert("clients", 3.5);
        assert_eq!(from_document(&d).unwrap_err().reason(), "wrong_type");
        d.insert("clients", -1);
        assert_eq!(from_document(&d).unwrap_err().reason(), "wrong_type");
        d.insert("clients", f64::INFINITY);
        assert_eq!(from_document(&d).unwrap_err().reason(), "wrong_type");
    }

    #[test]
    fn max_clients_infinity_null_or_absent_is_no_limit() {
        for v in [Bson::Double(f64::INFINITY), Bson::Null] {
            let mut d = colyseus_doc();
            d.insert("maxClients", v);
            assert_eq!(from_document(&d).unwrap().info.max_clients, None);
        }
        let mut d = colyseus_doc();
        d.remove("maxClients");
        d.remove("clients");
        d.remove("publicAddress");
        let room = from_document(&d).unwrap();
        assert_eq!(room.info.max_clients, None);
        assert_eq!(room.info.clients, 0);
        assert_eq!(room.info.public_address, None);
    }

    #[test]
    fn converts_redis_driver_json() {
        let json = br#"{"roomId":"r1","processId":"p1","name":"lobby","clients":2,
            "maxClients":null,"locked":true,"metadata":{"a":1},"createdAt":"2024-01-01T00:00:00Z"}"#;
        let room = from_json(json).unwrap();
        assert_eq!(room.room_id, "r1");
        assert_eq!(room.info.process_id, pid("p1"));
        assert_eq!(room.info.max_clients, None);
        assert!(room.info.locked);
        assert_eq!(from_json(b"nope"), Err(RoomRejection::NotJson));
        assert_eq!(from_json(b"[1]"), Err(RoomRejection::NotJson));
        assert_eq!(
            from_json(br#"{"processId":"p1"}"#),
            Err(RoomRejection::Missing { field: "roomId" })
        );
        assert_eq!(
            from_json(br#"{"roomId":5,"processId":"p1"}"#)
                .unwrap_err()
                .reason(),
            "wrong_type"
        );
    }

    #[test]
    fn redis_hash_fields_must_be_their_room_id() {
        let json = br#"{"roomId":"r1","processId":"p1"}"#;
        assert_eq!(from_hash_field("r1", json).unwrap().room_id, "r1");
        assert_eq!(
            from_hash_field("r2", json),
            Err(RoomRejection::KeyMismatch {
                key: "r2".into(),
                room_id: "r1".into()
            })
        );
        assert_eq!(
            from_hash_field("r1", b"{").unwrap_err().reason(),
            "not_json"
        );
    }

    fn room(id: &str, p: &str, clients: u32) -> Room {
        Room {
            room_id: id.into(),
            info: RoomInfo {
                process_id: pid(p),
                name: "n".into(),
                clients,
                max_clients: None,
                locked: false,
                public_address: None,
            },
        }
    }

    #[test]
    fn index_keeps_loads_in_step() {
        let mut idx = RoomIndex::default();
        idx.apply(RoomEvent::Upsert(room("r1", "a", 2)));
        idx.apply(RoomEvent::Upsert(room("r2", "a", 3)));
        idx.apply(RoomEvent::Upsert(room("r3", "b", 1)));
        assert_eq!(idx.load(&pid("a")), Some(Load { rooms: 2, ccu: 5 }));
        // A room moving to another process (or its count changing) moves its load.
        idx.apply(RoomEvent::Upsert(room("r2", "b", 4)));
        assert_eq!(idx.load(&pid("a")), Some(Load { rooms: 1, ccu: 2 }));
        assert_eq!(idx.load(&pid("b")), Some(Load { rooms: 2, ccu: 5 }));
        assert_eq!(idx.rooms_of(&pid("b")), ["r2", "r3"]);
        idx.apply(RoomEvent::Delete("r1".into()));
        idx.apply(RoomEvent::Delete("unknown".into()));
        assert_eq!(idx.load(&pid("a")), None);
        assert_eq!(idx.lookup("r3").map(|r| r.process_id.as_str()), Some("b"));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn rooms_of_a_vanished_process_leave_with_it() {
        let mut idx = RoomIndex::default();
        idx.replace_all([room("r1", "a", 1), room("r2", "b", 1), room("r3", "b", 1)]);
        idx.retain_processes(|p| p.as_str() == "a");
        assert_eq!(idx.len(), 1);
        assert!(idx.lookup("r2").is_none());
        assert_eq!(idx.load(&pid("b")), None);
        idx.replace_all([room("r9", "c", 0)]);
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.load(&pid("a")), None);
    }
}
