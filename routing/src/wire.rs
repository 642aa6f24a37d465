//! JSON bodies of the agent's private API that the filter also reads, so both sides
//! (de)serialize one type.

use serde::{Deserialize, Serialize};

/// `GET /rooms/{roomId}[?processId=P]` 200 answer: where a room connection goes. Served only
/// for a routable (active or draining) process: the room's, when the room is listed
/// (`listed: true`); else the process `P` the client named, when it is routable
/// (`listed: false`, room fields empty): it may hold a room no listing shows (RedisDriver
/// listings are not indexed, or the room is brand new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomLocation {
    pub room_id: String,
    pub process_id: String,
    /// The Envoy cluster of the process (see [`crate::ClusterNames::process`]).
    pub cluster: String,
    pub name: String,
    pub clients: u32,
    /// `null`: no limit.
    pub max_clients: Option<u32>,
    pub locked: bool,
    /// Whether the room itself is listed (see above).
    #[serde(default = "listed_by_default")]
    pub listed: bool,
}

fn listed_by_default() -> bool {
    true
}

/// A process's state as `/processes` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// Registered and answering: takes matchmaking and room connections.
    Active,
    /// Unregistered, still serving its rooms: room connections only.
    Draining,
    /// Registered but not answering: not routed at all.
    Dead,
}

impl ProcessState {
    /// Whether the process has its own cluster (active or draining).
    pub fn is_routable(self) -> bool {
        self != Self::Dead
    }

    /// The wire spelling (`active`, `draining`, `dead`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Dead => "dead",
        }
    }
}

impl core::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One row of `GET /processes` (a JSON array of them): a routed process, as the agent
/// shows it to the filter and to `agent status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRow {
    pub process_id: String,
    /// The address Envoy connects to (checked; a DNS name resolved by the agent).
    #[serde(default)]
    pub address: String,
    /// The process's Envoy cluster (see [`crate::ClusterNames::process`]).
    #[serde(default)]
    pub cluster: String,
    pub state: ProcessState,
    /// Endpoint weight in the all-processes cluster (matchmaking share); `null` when the
    /// process takes no matchmaking (draining or dead). Absent from older agents.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Rooms listed for the process, when a room-listing source is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<u32>,
    /// Clients in those rooms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccu: Option<u64>,
}

/// `GET /processes` response header: the version of the process set in the body. The
/// version changes whenever a row changes (a process, its state, address or weight; not
/// its rooms or clients), and a restarted
/// agent never repeats an earlier agent's versions (they start at its start time).
pub const PROCESSES_VERSION_HEADER: &str = "x-colyseus-envoy-processes-version";

/// `GET /processes` response header: how many shards the all-processes cluster has
/// ([`crate::ClusterNames::all_shard`]), so the filter can spread matchmaking over them in
/// proportion to the rows' weights. Absent (an older agent) or unreadable: 1.
pub const ALL_SHARDS_HEADER: &str = "x-colyseus-envoy-all-shards";

/// The shard count of an [`ALL_SHARDS_HEADER`] value, if it is one (1 to
/// [`crate::cluster::MAX_ALL_SHARDS`]).
pub fn all_shards(raw: &[u8]) -> Option<u16> {
    core::str::from_utf8(raw)
        .ok()?
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|s| (1..=crate::cluster::MAX_ALL_SHARDS).contains(s))
}

/// `GET /processes?after=VERSION` (the query parameter): answered at once when the set's
/// version is not `VERSION`, else held until the set changes or [`PROCESSES_HOLD_MS`]
/// passed, then answered with the set as it is. Each Envoy worker keeps one such call open,
/// so it learns a new process within milliseconds and its fast path asks nothing.
pub const PROCESSES_AFTER_PARAM: &str = "after";

/// Longest time the agent holds a `GET /processes?after=` call.
pub const PROCESSES_HOLD_MS: u64 = 30_000;

/// `GET /processes?after=VERSION&since=DIGEST`: the caller holds the set whose
/// [`PROCESSES_DIGEST_HEADER`] was `DIGEST`, and takes a [`ProcessesDelta`] against it. At
/// 10,000 processes the whole set is about 1.5 MB of JSON, which every Envoy worker would
/// fetch and parse again on every registration; a delta is the few rows that changed.
pub const PROCESSES_SINCE_PARAM: &str = "since";

/// `GET /processes` response header: a digest of the set in the answer (its rows'
/// processId, address, cluster, state and weight), to send back as
/// [`PROCESSES_SINCE_PARAM`]. Opaque to the caller: it only echoes it.
pub const PROCESSES_DIGEST_HEADER: &str = "x-colyseus-envoy-processes-digest";

/// `GET /processes` response header, present when the body is a [`ProcessesDelta`] (not an
/// array): the digest it applies to, which is the caller's `since`. An agent that no longer
/// has that set answers the whole set instead (no header), as does an older agent.
pub const PROCESSES_DELTA_HEADER: &str = "x-colyseus-envoy-processes-delta";

/// `GET /processes?since=` body under [`PROCESSES_DELTA_HEADER`]: applied to the set the
/// caller holds, it gives the set this answer's digest names. Rooms and clients
/// (`rooms`, `ccu`) are not part of a delta.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessesDelta {
    /// Rows new or changed (in state, weight or address): replace the caller's row.
    pub changed: Vec<ProcessRow>,
    /// processIds no longer in the set.
    pub removed: Vec<String>,
}

/// Request header of every call the filter makes to the agent (`/rooms/{roomId}` and
/// `/processes`): the node id of the Envoy it runs in (proxy-wasm property `node.id`). An
/// agent that Envoy streams xDS from then answers with what *that* Envoy has ACKed: a room
/// lookup waits (bounded) for the ACK of the room's cluster, and `/processes` leaves out
/// processes whose cluster it has not ACKed. Without the header, or from an Envoy that does
/// not stream from the agent, answers are the same for every Envoy.
pub const NODE_HEADER: &str = "x-colyseus-envoy-node";

/// Longest node id [`NODE_HEADER`] carries (and `bootstrap --node-id` accepts).
pub const MAX_NODE_ID_LEN: usize = 128;

/// `raw` as a node id for [`NODE_HEADER`]: 1 to [`MAX_NODE_ID_LEN`] printable ASCII
/// characters without spaces (a valid header value, and what `bootstrap --node-id` accepts),
/// else `None`: an Envoy with an odd node id is then treated as one that sends none.
pub fn node_id(raw: &[u8]) -> Option<&str> {
    let ok =
        !raw.is_empty() && raw.len() <= MAX_NODE_ID_LEN && raw.iter().all(u8::is_ascii_graphic);
    ok.then(|| core::str::from_utf8(raw).ok()).flatten()
}

/// Value of [`NotRoutableYet::error`].
pub const NOT_ACKED: &str = "not_acked";

/// `GET /rooms/{roomId}` 503 answer: the room's process is routable, but the asking Envoy
/// (see [`NODE_HEADER`]) has not ACKed its cluster within the agent's bound. The agent never
/// names a cluster to an Envoy that does not have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotRoutableYet {
    /// Always [`NOT_ACKED`].
    pub error: String,
    pub room_id: String,
    pub process_id: String,
}

/// Value of [`UnknownRoom::error`].
pub const UNKNOWN_ROOM: &str = "unknown_room";

/// `GET /rooms/{roomId}` 404 answer: the room is not listed, or its process is not routable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnknownRoom {
    /// Always [`UNKNOWN_ROOM`].
    pub error: String,
    pub room_id: String,
}

/// `GET /rejected`: the registrations Redis holds now that the agent refuses (a game server
/// without `SELF_HOSTNAME`, an address outside the allowed networks...), sorted, each one
/// sentence naming the member and the reason; `status` lists them and exits non-zero while
/// any stands. On the wire: a JSON array of those strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RejectedRegistrations(pub Vec<String>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_location_json_shape() {
        let loc = RoomLocation {
            room_id: "r1".into(),
            process_id: "p1".into(),
            cluster: "colyseus_process_p1".into(),
            name: "battle".into(),
            clients: 2,
            max_clients: None,
            locked: false,
            listed: true,
        };
        let json = serde_json::to_value(&loc).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"roomId":"r1","processId":"p1","cluster":"colyseus_process_p1",
                "name":"battle","clients":2,"maxClients":null,"locked":false,"listed":true})
        );
        assert_eq!(serde_json::from_value::<RoomLocation>(json).unwrap(), loc);
        let err: UnknownRoom =
            serde_json::from_str(r#"{"error":"unknown_room","roomId":"zz"}"#).unwrap();
        assert_eq!(err.error, UNKNOWN_ROOM);
    }

    #[test]
    fn process_row_json_shape() {
        let row = ProcessRow {
            process_id: "p1".into(),
            address: "10.0.0.5:2567".into(),
            cluster: "colyseus-process-p1".into(),
            state: ProcessState::Draining,
            weight: None,
            rooms: None,
            ccu: None,
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"processId":"p1","address":"10.0.0.5:2567",
                "cluster":"colyseus-process-p1","state":"draining","weight":null})
        );
        assert_eq!(serde_json::from_value::<ProcessRow>(json).unwrap(), row);
        for (text, state) in [
            ("active", ProcessState::Active),
            ("draining", ProcessState::Draining),
            ("dead", ProcessState::Dead),
        ] {
            assert_eq!(state.as_str(), text);
            assert_eq!(
                serde_json::from_value::<ProcessState>(serde_json::json!(text)).unwrap(),
                state
            );
        }
        assert!(serde_json::from_str::<ProcessState>(r#""warming""#).is_err());
        assert!(!ProcessState::Dead.is_routable() && ProcessState::Draining.is_routable());
    }

    #[test]
    fn all_shards_header_values() {
        assert_eq!(all_shards(b"1"), Some(1));
        assert_eq!(all_shards(b" 10 "), Some(10));
        assert_eq!(all_shards(b"256"), Some(256));
        for bad in [&b""[..], b"0", b"257", b"-1", b"x", b"\xff"] {
            assert_eq!(all_shards(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn node_ids_are_header_safe() {
        assert_eq!(node_id(b"edge-1"), Some("edge-1"));
        assert_eq!(
            node_id(&[b'x'; MAX_NODE_ID_LEN]).map(str::len),
            Some(MAX_NODE_ID_LEN)
        );
        for bad in [
            &b""[..],
            b"a b",
            b"a\r\nx: y",
            b"caf\xc3\xa9",
            &[b'x'; MAX_NODE_ID_LEN + 1],
        ] {
            assert_eq!(node_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rejected_registrations_json_shape() {
        let why = r#"member "p1/undefined:2567" has an unusable address: host is missing"#;
        let list = RejectedRegistrations(vec![why.to_owned()]);
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json, serde_json::json!([why]));
        assert_eq!(
            serde_json::from_value::<RejectedRegistrations>(json).unwrap(),
            list
        );
        assert!(serde_json::from_str::<RejectedRegistrations>(r#"{"a":1}"#).is_err());
    }
}
