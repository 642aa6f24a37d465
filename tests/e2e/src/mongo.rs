//! A MongoDB wire-protocol server and a client that writes Colyseus room listings.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
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
        let out = Command::new(root().join(".venv/bin/python"))
            .args(["-c", CREATE_ROOMCACHES_PY, &self.uri()])
            .output()
            .expect("run .venv/bin/python");
        assert!(
            out.status.success(),
            "creating roomcaches: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// URI with the database Colyseus's MongooseDriver uses.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/colyseus", self.port)
    }
}

const CREATE_ROOMCACHES_PY: &str = r#"
import sys
from pymongo import MongoClient
from pymongo.errors import CollectionInvalid
try:
    MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000).get_database().create_collection("roomcaches")
except CollectionInvalid:
    pass
"#;

/// A pymongo client (in `.venv`) driven line by line: each JSON command is answered with one
/// JSON line once MongoDB acknowledged it.
pub struct MongoClient {
    proc: Proc,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

const MONGO_CLIENT_PY: &str = r#"
import sys, json, datetime
from pymongo import MongoClient
coll = MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000).get_database()["roomcaches"]
def room(r):
    now = datetime.datetime.now(datetime.timezone.utc)
    d = {"roomId": r["roomId"], "processId": r["processId"], "name": r.get("name", "battle"),
         "clients": r.get("clients", 0), "maxClients": float("inf"), "locked": False,
         "private": False, "unlisted": False, "metadata": {}, "publicAddress": None,
         "createdAt": now, "updatedAt": now, "__v": 0}
    d.update(r.get("extra", {}))
    return d
for line in sys.stdin:
    c = json.loads(line)
    op = c["op"]
    if op == "room":
        coll.insert_one(room(c))
    elif op == "raw":
        coll.insert_one(c["doc"])
    elif op == "delete":
        coll.delete_one({"roomId": c["roomId"]})
    elif op == "many":
        docs = [room({"roomId": "%s%d" % (c["prefix"], i), "processId": c["processIds"][i % len(c["processIds"])], "clients": 1}) for i in range(c["n"])]
        for i in range(0, len(docs), 1000):
            coll.insert_many(docs[i:i + 1000], ordered=False)
    # Every command answers with the number of documents (matching "filter", if given).
    print(json.dumps({"ok": True, "count": coll.count_documents(c.get("filter", {}))}), flush=True)
"#;

impl MongoClient {
    pub fn connect(uri: &str) -> MongoClient {
        let mut proc = Proc::spawn(
            "pymongo client",
            Command::new(root().join(".venv/bin/python"))
                .args(["-u", "-c", MONGO_CLIENT_PY, uri])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let input = proc.child.stdin.take().unwrap();
        let output = BufReader::new(proc.child.stdout.take().unwrap());
        MongoClient {
            proc,
            input,
            output,
        }
    }

    /// Sends one command; returns the collection's document count after it.
    pub fn send(&mut self, command: serde_json::Value) -> u64 {
        writeln!(self.input, "{command}").unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        assert!(
            self.proc.is_running() || !line.is_empty(),
            "pymongo client died on {command}"
        );
        let reply: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("pymongo client answered {line:?} to {command}: {e}"));
        reply["count"].as_u64().unwrap()
    }
}
