//! A MongoDB wire-protocol server and a client (the `mongodb` crate the agent uses) that
//! writes Colyseus room listings.

use std::future::IntoFuture;
use std::path::Path;

use bson::{doc, Document};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{append_log, free_port, root, wait_for, Proc};

/// The PyPI `secantusdb` MongoDB wire-protocol server (a one-node replica set: change
/// streams work), in memory, on a free port.
pub struct MongoServer {
    pub port: u16,
    pub proc: Proc,
}

impl MongoServer {
    pub fn start(dir: &Path) -> MongoServer {
        Self::start_with(dir, free_port(), &[])
    }

    /// On `port`, with extra flags (`--standalone`: no change streams, like a standalone
    /// mongod).
    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> MongoServer {
        let proc = Proc::spawn(
            "secantusd",
            Command::new(root().join(".venv/bin/secantusd-py"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--storage-path", ":memory:", "--log-level", "WARNING"])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(append_log(dir, "secantusd")),
        );
        wait_for("secantusd", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let server = MongoServer { port, proc };
        server.create_room_collection();
        server
    }

    /// Creates `roomcaches` before any game server starts. secantusdb 0.7.0b3 livelocks
    /// (100 % CPU, the insert never returns) when an implicit-create `insert` races a
    /// `create` of the same new collection, which is what MongooseDriver's `autoCreate` does
    /// on a fresh database (py-spy: `create_collection` against `_insert_chunk` retrying
    /// write conflicts; reproduced with a MongooseDriver inserting as soon as it connects).
    /// A real mongod has no such race.
    fn create_room_collection(&self) {
        let client = MongoClient::connect(&self.uri());
        let created = client
            .rt
            .block_on(client.db.create_collection(ROOMS).into_future());
        match created {
            Ok(()) => {}
            // NamespaceExists: created already.
            Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 48) =>
                {}
            Err(e) => panic!("creating roomcaches: {e}"),
        }
    }

    /// URI with the database Colyseus's MongooseDriver uses.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/colyseus", self.port)
    }
}

/// MongooseDriver's collection of room listings.
const ROOMS: &str = "roomcaches";

/// A client of the Rust `mongodb` driver (the agent's), driven by JSON commands as the tests
/// write them: `{"op": "room", "roomId", "processId", "clients"?, "name"?, "extra"?}` (a
/// listing as MongooseDriver writes it), `{"op": "raw", "doc"}`, `{"op": "delete", "roomId"}`,
/// `{"op": "many", "n", "prefix", "processIds"}`, or any other op to only count; each answers
/// with the number of documents (matching `"filter"`, if given) once MongoDB acknowledged it.
pub struct MongoClient {
    rt: tokio::runtime::Runtime,
    db: mongodb::Database,
    coll: mongodb::Collection<Document>,
}

impl MongoClient {
    pub fn connect(uri: &str) -> MongoClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(mongodb::Client::with_uri_str(uri))
            .unwrap_or_else(|e| panic!("mongodb client for {uri}: {e}"));
        let db = client
            .default_database()
            .unwrap_or_else(|| client.database("colyseus"));
        let coll = db.collection(ROOMS);
        MongoClient { rt, db, coll }
    }

    /// Sends one command; returns the collection's document count after it.
    pub fn send(&mut self, command: serde_json::Value) -> u64 {
        let coll = &self.coll;
        let result: mongodb::error::Result<u64> = self.rt.block_on(async {
            match command["op"].as_str().unwrap_or("") {
                "room" => {
                    coll.insert_one(room(&command)).await?;
                }
                "raw" => {
                    coll.insert_one(json_doc(&command["doc"])).await?;
                }
                "delete" => {
                    coll.delete_one(doc! {"roomId": command["roomId"].as_str().unwrap()})
                        .await?;
                }
                "many" => {
                    let pids: Vec<&str> = command["processIds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p.as_str().unwrap())
                        .collect();
                    let prefix = command["prefix"].as_str().unwrap();
                    let n = command["n"].as_u64().unwrap() as usize;
                    let docs: Vec<Document> = (0..n)
                        .map(|i| {
                            room(&serde_json::json!({"roomId": format!("{prefix}{i}"),
                                "processId": pids[i % pids.len()], "clients": 1}))
                        })
                        .collect();
                    for chunk in docs.chunks(1000) {
                        coll.insert_many(chunk.to_vec()).ordered(false).await?;
                    }
                }
                _ => {}
            }
            let filter = match command.get("filter") {
                Some(f) => json_doc(f),
                None => Document::new(),
            };
            coll.count_documents(filter).await
        });
        result.unwrap_or_else(|e| panic!("mongodb on {command}: {e}"))
    }
}

/// A listing as MongooseDriver writes it, with `extra` merged over it.
fn room(r: &serde_json::Value) -> Document {
    let now = bson::DateTime::now();
    let mut d = doc! {
        "roomId": r["roomId"].as_str().unwrap(),
        "processId": r["processId"].as_str().unwrap(),
        "name": r["name"].as_str().unwrap_or("battle"),
        "clients": r["clients"].as_i64().unwrap_or(0) as i32,
        "maxClients": f64::INFINITY,
        "locked": false, "private": false, "unlisted": false,
        "metadata": {}, "publicAddress": bson::Bson::Null,
        "createdAt": now, "updatedAt": now, "__v": 0,
    };
    d.extend(json_doc(&r["extra"]));
    d
}

/// A JSON object as BSON, small integers as int32 (as pymongo and Mongoose store them).
fn json_doc(v: &serde_json::Value) -> Document {
    let Some(map) = v.as_object() else {
        return Document::new();
    };
    map.iter().map(|(k, v)| (k.clone(), json_bson(v))).collect()
}

fn json_bson(v: &serde_json::Value) -> bson::Bson {
    use serde_json::Value;
    match v {
        Value::Null => bson::Bson::Null,
        Value::Bool(b) => bson::Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(bson::Bson::Int64(i), bson::Bson::Int32),
            None => bson::Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => bson::Bson::String(s.clone()),
        Value::Array(a) => bson::Bson::Array(a.iter().map(json_bson).collect()),
        Value::Object(_) => bson::Bson::Document(json_doc(v)),
    }
}
