//! The room-listing readers: `rooms::from_json` and `from_hash_field` (RedisDriver's
//! `roomcaches` hash) and `rooms::from_document` (MongooseDriver documents), the room
//! index fed with what they accept, and `balance::parse_roomcount` (Colyseus's
//! `roomcount` hash values).
//!
//! The first byte picks the encoding: even, the rest is a hash field `key\njson`; odd, the
//! rest is a BSON document.
//!
//! Invariants: an accepted listing has valid ids, says exactly what its fields say, and
//! reads the same from JSON and from the BSON MongoDB would store for that JSON; a hash
//! field is accepted iff its JSON is and names the room filed under; the index finds an
//! upserted room and counts it in its process's load, and a delete undoes exactly that;
//! a `roomcount` value that parses re-renders to a value that parses the same.
#![no_main]

use bson::{Bson, Document};
use colyseus_envoy_agent::balance::parse_roomcount;
use colyseus_envoy_agent::rooms::{
    from_document, from_hash_field, from_json, Room, RoomEvent, RoomIndex, RoomRejection,
};
use libfuzzer_sys::fuzz_target;
use routing::id::check_id;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        hash_field(rest);
    } else if let Ok(doc) = Document::from_reader(rest) {
        document(&doc);
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        roomcount(text);
    }
});

fn hash_field(rest: &[u8]) {
    let (key, json) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    let plain = from_json(json);
    let filed = from_hash_field(key, json);
    match (&plain, &filed) {
        (Ok(room), Ok(same)) => {
            assert_eq!(room, same);
            assert_eq!(room.room_id, key);
        }
        (Ok(room), Err(RoomRejection::KeyMismatch { key: k, room_id })) => {
            assert_ne!(room.room_id, key);
            assert_eq!((k.as_str(), room_id), (key, &room.room_id));
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        other => panic!("from_json and from_hash_field disagree: {other:?}"),
    }
    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        assert_eq!(plain, Err(RoomRejection::NotJson));
        return;
    };
    if let Ok(room) = &plain {
        check_fields(room, |name| value.get(name).and_then(json_field));
        index(room);
    }
    // The same listing as MongoDB would store it (when BSON can hold it) reads alike.
    if let Ok(Bson::Document(doc)) = bson::to_bson(&value) {
        let from_bson = from_document(&doc);
        match (&plain, &from_bson) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason(), "{a} / {b}"),
            other => panic!("JSON and BSON readings disagree: {other:?}"),
        }
    }
}

fn document(doc: &Document) {
    if let Ok(room) = from_document(doc) {
        check_fields(&room, |name| doc.get(name).and_then(bson_field));
        index(&room);
    }
}

/// A field as the converter may read it: a string, a number or a boolean.
#[derive(Debug, PartialEq)]
enum Scalar<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
}

fn json_field(v: &Value) -> Option<Scalar<'_>> {
    match v {
        Value::String(s) => Some(Scalar::Str(s)),
        Value::Number(n) => n.as_f64().map(Scalar::Num),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

fn bson_field(v: &Bson) -> Option<Scalar<'_>> {
    match v {
        Bson::String(s) => Some(Scalar::Str(s)),
        Bson::Int32(n) => Some(Scalar::Num(f64::from(*n))),
        Bson::Int64(n) => Some(Scalar::Num(*n as f64)),
        Bson::Double(n) => Some(Scalar::Num(*n)),
        Bson::Boolean(b) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

/// An accepted listing says what its source fields say.
fn check_fields<'a>(room: &Room, field: impl Fn(&str) -> Option<Scalar<'a>>) {
    assert!(check_id(&room.room_id).is_ok());
    assert!(check_id(room.info.process_id.as_str()).is_ok());
    assert_eq!(field("roomId"), Some(Scalar::Str(&room.room_id)));
    assert_eq!(
        field("processId"),
        Some(Scalar::Str(room.info.process_id.as_str()))
    );
    match field("name") {
        Some(Scalar::Str(name)) => assert_eq!(name, room.info.name),
        _ => assert_eq!(room.info.name, ""),
    }
    match field("clients") {
        Some(Scalar::Num(n)) => assert_eq!(n, f64::from(room.info.clients)),
        _ => assert_eq!(room.info.clients, 0),
    }
    match (field("maxClients"), room.info.max_clients) {
        (Some(Scalar::Num(n)), Some(max)) => assert_eq!(n, f64::from(max)),
        (Some(Scalar::Num(n)), None) => assert!(n.is_infinite() && n > 0.0),
        (_, max) => assert_eq!(max, None),
    }
    match field("locked") {
        Some(Scalar::Bool(b)) => assert_eq!(b, room.info.locked),
        _ => assert!(!room.info.locked),
    }
    match field("publicAddress") {
        Some(Scalar::Str(a)) => assert_eq!(Some(a), room.info.public_address.as_deref()),
        _ => assert_eq!(room.info.public_address, None),
    }
}

/// Upsert then delete: found, counted in its process's load, then exactly undone.
fn index(room: &Room) {
    let mut index = RoomIndex::default();
    let other = from_json(br#"{"roomId":"other","processId":"p1","clients":2}"#)
        .expect("the fixed listing is valid");
    index.apply(RoomEvent::Upsert(other.clone()));
    let before = index.clone();
    index.apply(RoomEvent::Upsert(room.clone()));
    if room.room_id == other.room_id {
        assert_eq!(index.len(), 1);
    } else {
        assert_eq!(index.len(), 2);
        let load = index.load(&room.info.process_id).expect("a load");
        let base = before.load(&room.info.process_id).unwrap_or_default();
        assert_eq!(load.rooms, base.rooms + 1);
        assert_eq!(load.ccu, base.ccu + u64::from(room.info.clients));
    }
    assert_eq!(index.lookup(&room.room_id), Some(&room.info));
    assert!(index
        .rooms_of(&room.info.process_id)
        .contains(&room.room_id.as_str()));
    index.apply(RoomEvent::Delete(room.room_id.clone()));
    assert_eq!(index.lookup(&room.room_id), None);
    if room.room_id != other.room_id {
        assert_eq!(index, before);
    }
}

fn roomcount(text: &str) {
    if let Some(load) = parse_roomcount(text) {
        let rendered = match load.ccu {
            Some(ccu) => format!("{},{ccu}", load.rooms),
            None => load.rooms.to_string(),
        };
        assert_eq!(parse_roomcount(&rendered), Some(load));
    }
}
