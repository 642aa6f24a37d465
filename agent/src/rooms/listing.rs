//! The matchmaker's room listings (MongooseDriver documents, RedisDriver JSON and hash
//! fields) as [`Room`]s, every field checked: a listing that cannot be trusted is a
//! [`RoomRejection`].

use bson::{Bson, Document};
use routing::id::check_id;
use routing::ProcessId;
use serde_json::Value;

use super::{Room, RoomInfo, RoomRejection};

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
}
