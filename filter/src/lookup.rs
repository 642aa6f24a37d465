//! Routing by roomId when the path's processId cannot be trusted: the known-processes set,
//! the agent's answers and a short per-worker cache. Pure (time is passed in), so it is
//! tested natively; [`crate::http`] and [`crate::root`] make the calls.

use std::collections::{HashMap, HashSet};

use routing::wire::{
    ProcessRow, ProcessState, ProcessesDelta, RoomLocation, UnknownRoom, UNKNOWN_ROOM,
};
use routing::ClusterNames;

use crate::shards::Matchmaking;

/// processIds the agent routes (active or draining), as last reported to this worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownProcesses {
    /// `None` until the first answer (or after a failed refresh): every processId counts as
    /// known and takes the fast path, as without the agent.
    ids: Option<HashSet<String>>,
    /// The active processes' weights by shard of the all-processes cluster, from the same
    /// answers.
    matchmaking: Matchmaking,
}

impl KnownProcesses {
    /// Whether a processId may take the fast path.
    pub fn contains(&self, process_id: &str) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(process_id))
    }

    /// Replaces the set with a fresh answer.
    pub fn set(&mut self, ids: HashSet<String>) {
        self.ids = Some(ids);
    }

    /// Replaces the set and the active processes' weights with a whole answer; the
    /// matchmaking shares follow at [`Self::reshard`].
    pub fn set_whole(&mut self, answer: ProcessesAnswer) {
        self.matchmaking.replace(answer.active);
        self.ids = Some(answer.ids);
    }

    /// Makes the matchmaking shares for `shards` shards (the count the agent announced).
    pub fn reshard(&mut self, names: &ClusterNames, shards: u16) {
        self.matchmaking.reshard(names, shards);
    }

    /// [`Self::set_whole`] then [`Self::reshard`].
    pub fn set_answer(&mut self, answer: ProcessesAnswer, names: &ClusterNames, shards: u16) {
        self.set_whole(answer);
        self.reshard(names, shards);
    }

    /// Forgets the set: the agent cannot be asked, so room lookups would fail too and the
    /// fast path is the better bet. Matchmaking goes to shard 0.
    pub fn forget(&mut self) {
        self.ids = None;
        self.matchmaking.clear();
    }

    /// The shard of the all-processes cluster for the next matchmaking request; `None`:
    /// shard 0, the plain all-processes cluster.
    pub fn matchmaking_shard(&self) -> Option<&str> {
        self.matchmaking.pick()
    }

    /// How many processIds are known; `None`: every processId counts as known.
    pub fn count(&self) -> Option<usize> {
        self.ids.as_ref().map(HashSet::len)
    }

    /// Applies the agent's delta to the set it was computed against; `false` (nothing
    /// changed) when there is no set to apply it to. The matchmaking shares follow at
    /// [`Self::reshard`].
    pub fn apply(&mut self, delta: &ProcessesDelta) -> bool {
        let Some(ids) = &mut self.ids else {
            return false;
        };
        for pid in &delta.removed {
            ids.remove(pid);
            self.matchmaking.upsert(pid, None);
        }
        for row in &delta.changed {
            if row.state.is_routable() {
                ids.insert(row.process_id.clone());
            } else {
                ids.remove(&row.process_id);
            }
            let weight = (row.state == ProcessState::Active).then(|| row.weight.unwrap_or(1));
            self.matchmaking.upsert(&row.process_id, weight);
        }
        true
    }
}

/// Why an agent answer is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAnswer(pub String);

/// What a `/processes` answer says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessesAnswer {
    /// The routable processIds (active or draining).
    pub ids: HashSet<String>,
    /// The active ones with their matchmaking weight (1 when the row carries none).
    pub active: Vec<(String, u32)>,
}

/// Reads `GET /processes`: a JSON array of [`ProcessRow`]s; `active` and `draining`
/// processes are routable, `dead` ones are not. A row that is not a `ProcessRow` (say, a
/// state this filter does not know) is skipped, not routed: one odd row must not cost the
/// whole set.
///
/// # Errors
/// No answer (call failed or timed out), a status other than 200, or a body that is not
/// such an array.
pub fn parse_processes(status: Option<u32>, body: &[u8]) -> Result<ProcessesAnswer, BadAnswer> {
    if status != Some(200) {
        return Err(BadAnswer(format!("status {status:?}")));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BadAnswer(format!("body: {e}")))?;
    let serde_json::Value::Array(list) = value else {
        return Err(BadAnswer("body is not an array".into()));
    };
    let mut answer = ProcessesAnswer::default();
    for row in list
        .into_iter()
        .filter_map(|row| serde_json::from_value::<ProcessRow>(row).ok())
        .filter(|row| row.state.is_routable())
    {
        if row.state == ProcessState::Active {
            answer
                .active
                .push((row.process_id.clone(), row.weight.unwrap_or(1)));
        }
        answer.ids.insert(row.process_id);
    }
    Ok(answer)
}

/// Reads a `GET /processes?since=` answer sent as a [`ProcessesDelta`]. Unlike the whole
/// set, one bad row rejects the delta: the caller then asks for the whole set.
///
/// # Errors
/// No answer, a status other than 200, or a body that is not such a delta.
pub fn parse_delta(status: Option<u32>, body: &[u8]) -> Result<ProcessesDelta, BadAnswer> {
    if status != Some(200) {
        return Err(BadAnswer(format!("status {status:?}")));
    }
    serde_json::from_slice(body).map_err(|e| BadAnswer(format!("delta body: {e}")))
}

/// What the agent said about a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAnswer {
    /// The room's process cluster, checked to be a game process cluster.
    Found(String),
    /// 404 `unknown_room`: the agent knows no such room.
    Unknown,
    /// No usable answer.
    Failed(String),
}

/// Reads `GET /rooms/{roomId}`. The cluster in a 200 answer is trusted only if it is a
/// process cluster of this naming scheme ([`ClusterNames::process_of`]).
pub fn parse_room_answer(names: &ClusterNames, status: Option<u32>, body: &[u8]) -> RoomAnswer {
    match status {
        Some(200) => match serde_json::from_slice::<RoomLocation>(body) {
            Ok(room) if names.process_of(&room.cluster) == Some(room.process_id.as_str()) => {
                RoomAnswer::Found(room.cluster)
            }
            Ok(room) => RoomAnswer::Failed(format!(
                "cluster {:?} is not the cluster of process {:?}",
                room.cluster, room.process_id
            )),
            Err(e) => RoomAnswer::Failed(format!("body: {e}")),
        },
        // A 404 without the agent's body (an agent without room lookups) is no answer.
        Some(404) => match serde_json::from_slice::<UnknownRoom>(body) {
            Ok(e) if e.error == UNKNOWN_ROOM => RoomAnswer::Unknown,
            _ => RoomAnswer::Failed("404 without an unknown_room body".into()),
        },
        None => RoomAnswer::Failed("no answer (call failed or timed out)".into()),
        Some(other) => RoomAnswer::Failed(format!("status {other}")),
    }
}

/// (roomId, the processId the path named) -> cluster answers, kept `ttl_ms` and at most
/// `capacity` of them.
///
/// The named processId is part of the key because the agent's answer depends on it (the
/// index's process if it lists the room, else the named one if live): an answer given for
/// one path is never reused for a path naming another process. Entries whose process left
/// the known set are dropped ([`Self::retain_clusters`]).
#[derive(Debug, Clone)]
pub struct RoomCache {
    entries: HashMap<CacheKey, (String, u64)>,
    ttl_ms: u64,
    capacity: usize,
}

/// roomId, named processId.
type CacheKey = (String, Option<String>);

/// Default lifetime of a cached room answer.
pub const CACHE_TTL_MS: u64 = 2000;
/// Default bound of the cache, per worker.
pub const CACHE_CAPACITY: usize = 4096;

impl Default for RoomCache {
    fn default() -> Self {
        Self::new(CACHE_TTL_MS, CACHE_CAPACITY)
    }
}

impl RoomCache {
    pub fn new(ttl_ms: u64, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            ttl_ms,
            capacity,
        }
    }

    /// The cached cluster of a room for a path naming `named`, if still fresh at `now_ms`.
    pub fn get(&self, room_id: &str, named: Option<&str>, now_ms: u64) -> Option<&str> {
        self.entries
            .get(&(room_id.to_owned(), named.map(str::to_owned)))
            .filter(|(_, expires)| now_ms < *expires)
            .map(|(cluster, _)| cluster.as_str())
    }

    /// Remembers a room's cluster until `now_ms + ttl`. When full, expired entries go
    /// first, then the one closest to expiring.
    pub fn insert(&mut self, room_id: &str, named: Option<&str>, cluster: &str, now_ms: u64) {
        if self.capacity == 0 {
            return;
        }
        let key = (room_id.to_owned(), named.map(str::to_owned));
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires)| now_ms < *expires);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(
            key,
            (cluster.to_owned(), now_ms.saturating_add(self.ttl_ms)),
        );
    }

    /// Keeps only the entries whose cluster `keep` accepts (a process still routable).
    pub fn retain_clusters(&mut self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|_, (cluster, _)| keep(cluster));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_set_defaults_to_everything() {
        let mut known = KnownProcesses::default();
        assert!(known.contains("anything"));
        known.set(["p1".to_owned()].into());
        assert!(known.contains("p1"));
        assert!(!known.contains("p2"));
        assert_eq!(known.count(), Some(1));
        known.forget();
        assert!(known.contains("p2"));
    }

    #[test]
    fn processes_answer() {
        let body = br#"[{"processId":"a","address":"x","cluster":"c","state":"active"},
            {"processId":"b","state":"draining"},{"processId":"c","state":"dead"},
            {"state":"active"},{"processId":3,"state":"active"},
            {"processId":"d","state":"warming"}]"#;
        let answer = parse_processes(Some(200), body).unwrap();
        assert_eq!(answer.ids, ["a".to_owned(), "b".to_owned()].into());
        // Only the active row takes matchmaking; no weight on the wire counts as 1.
        assert_eq!(answer.active, [("a".to_owned(), 1)]);
        let weighted = br#"[{"processId":"a","state":"active","weight":7},
            {"processId":"b","state":"draining","weight":null}]"#;
        assert_eq!(
            parse_processes(Some(200), weighted).unwrap().active,
            [("a".to_owned(), 7)]
        );
        assert_eq!(parse_processes(Some(200), b"[]").unwrap().ids.len(), 0);
        assert!(parse_processes(None, b"").is_err());
        assert!(parse_processes(Some(503), b"[]").is_err());
        assert!(parse_processes(Some(200), b"{}").is_err());
        assert!(parse_processes(Some(200), b"[").is_err());
    }

    #[test]
    fn a_delta_changes_the_known_set() {
        let mut known = KnownProcesses::default();
        let delta = parse_delta(
            Some(200),
            br#"{"changed":[{"processId":"c","state":"active"},{"processId":"a","state":"dead"}],
                "removed":["b"]}"#,
        )
        .unwrap();
        assert!(!known.apply(&delta), "no set to apply it to");
        known.set(["a".to_owned(), "b".to_owned()].into());
        assert!(known.apply(&delta));
        assert_eq!(known.count(), Some(1));
        assert!(known.contains("c") && !known.contains("a") && !known.contains("b"));
        assert!(parse_delta(
            Some(200),
            br#"{"changed":[{"state":"active"}],"removed":[]}"#
        )
        .is_err());
        assert!(parse_delta(Some(200), b"[]").is_err());
        assert!(parse_delta(Some(503), br#"{"changed":[],"removed":[]}"#).is_err());
    }

    fn room(pid: &str, cluster: &str) -> Vec<u8> {
        format!(
            r#"{{"roomId":"r","processId":"{pid}","cluster":"{cluster}","name":"n","clients":0,"maxClients":null,"locked":false}}"#
        )
        .into_bytes()
    }

    #[test]
    fn room_answers() {
        let names = ClusterNames::default();
        let ok = br#"{"roomId":"r1","processId":"p1","cluster":"colyseus-process-p1","name":"echo","clients":1,"maxClients":2,"locked":false}"#;
        assert_eq!(
            parse_room_answer(&names, Some(200), ok),
            RoomAnswer::Found("colyseus-process-p1".into())
        );
        // A cluster that is not the process's game cluster is never trusted.
        for bad in [
            room("p1", "colyseus_agent").as_slice(),
            &room("p1", "colyseus-all"),
            &room("p1", "colyseus-process-p2"),
            &room("p.1", "colyseus-process-p.1"),
            b"not json",
        ] {
            assert!(
                matches!(
                    parse_room_answer(&names, Some(200), bad),
                    RoomAnswer::Failed(_)
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_room_answer(
                &names,
                Some(404),
                br#"{"error":"unknown_room","roomId":"r"}"#
            ),
            RoomAnswer::Unknown
        );
        // An agent without the endpoint: not "unknown room".
        assert!(matches!(
            parse_room_answer(&names, Some(404), b"Not Found"),
            RoomAnswer::Failed(_)
        ));
        assert!(matches!(
            parse_room_answer(&names, None, b""),
            RoomAnswer::Failed(_)
        ));
        assert!(matches!(
            parse_room_answer(&names, Some(500), b""),
            RoomAnswer::Failed(_)
        ));
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let mut cache = RoomCache::new(2000, 2);
        cache.insert("r1", None, "c1", 1000);
        assert_eq!(cache.get("r1", None, 2999), Some("c1"));
        assert_eq!(cache.get("r1", None, 3000), None);
        assert_eq!(cache.get("r2", None, 1000), None);
        cache.insert("r2", None, "c2", 1500);
        cache.insert("r3", None, "c3", 1600); // full: r1 (expiring first) goes
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("r1", None, 1600), None);
        assert_eq!(cache.get("r2", None, 1600), Some("c2"));
        cache.insert("r4", None, "c4", 10_000); // all expired: both go
        assert_eq!(cache.len(), 1);
        cache.insert("r4", None, "c5", 10_001); // refresh in place
        assert_eq!(cache.get("r4", None, 10_002), Some("c5"));
        let mut none = RoomCache::new(2000, 0);
        none.insert("r", None, "c", 0);
        assert!(none.is_empty());
    }

    #[test]
    fn an_answer_for_one_named_process_is_not_reused_for_another() {
        let mut cache = RoomCache::new(2000, 16);
        // The agent sent `/p1/r` to p1 (not listed, p1 live).
        cache.insert("r", Some("p1"), "colyseus-process-p1", 0);
        assert_eq!(cache.get("r", Some("p2"), 1), None);
        assert_eq!(cache.get("r", None, 1), None);
        assert_eq!(cache.get("r", Some("p1"), 1), Some("colyseus-process-p1"));
        cache.insert("q", None, "colyseus-process-p2", 0);
        // p1 left the known set: its answers go.
        cache.retain_clusters(|c| c == "colyseus-process-p2");
        assert_eq!(cache.get("r", Some("p1"), 1), None);
        assert_eq!(cache.get("q", None, 1), Some("colyseus-process-p2"));
    }
}
