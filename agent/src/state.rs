//! What the agent last synced, kept on disk so that a restarted agent can still tell a Redis
//! that lost its data (new `run_id`, registrations missing) from registrations really removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file;

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedState {
    /// The Redis the members were read from; state from another one is never restored
    /// (see [`Restore`]). `None` in files written before it was recorded.
    #[serde(default)]
    pub redis: Option<RedisOrigin>,
    /// `run_id` of the Redis server the members were read from.
    pub redis_run_id: Option<String>,
    /// Members as Colyseus writes them, sorted.
    pub members: Vec<String>,
    /// Processes unregistered but still draining, in the same form.
    #[serde(default)]
    pub draining: Vec<String>,
}

/// Which Redis a state came from: its identity (no credentials) and the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisOrigin {
    /// [`crate::redis_target::RedisTargetSpec::identity`]: never carries credentials.
    pub url: String,
    pub db: i64,
}

impl RedisOrigin {
    /// From [`crate::redis_target::RedisTargetSpec::identity`]
    /// (`redis[s]://host:port/db`, `sentinel[s]://s1,s2/master/db`, `cluster[s]://n1,n2`),
    /// which names the Redis without credentials: the whole identity is kept, so two masters
    /// of one Sentinel set are two origins.
    pub fn from_identity(identity: &str) -> Self {
        let db = identity
            .rsplit_once('/')
            .and_then(|(_, last)| last.parse().ok())
            .unwrap_or(0);
        Self {
            url: identity.to_owned(),
            db,
        }
    }
}

impl std::fmt::Display for RedisOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} db {}", self.url, self.db)
    }
}

/// Whether a loaded state may be used with the Redis the agent follows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// Same Redis (or no state at all): restore it.
    Yes,
    /// Written from another Redis: never restored; what Envoy routes to is that fleet.
    OtherRedis(RedisOrigin),
    /// Written before the origin was recorded: not restored (it may be another fleet's),
    /// but Envoy's config is left as it is until the first sync.
    UnknownOrigin,
}

/// Decides [`Restore`] for `state` loaded while following `now`.
pub fn restore(state: &SyncedState, now: &RedisOrigin) -> Restore {
    match &state.redis {
        _ if state.members.is_empty() && state.draining.is_empty() => Restore::Yes,
        Some(origin) if origin == now => Restore::Yes,
        Some(origin) => Restore::OtherRedis(origin.clone()),
        None => Restore::UnknownOrigin,
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file path {0} has no file name")]
    BadPath(PathBuf),
    #[error(transparent)]
    Write(#[from] atomic_file::WriteError),
}

/// Loads the state; a missing file is an empty state (first start).
///
/// # Errors
/// An unreadable or corrupt file.
pub fn load(path: &Path) -> Result<SyncedState, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SyncedState::default()),
        Err(source) => Err(StateError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Saves the state atomically.
///
/// # Errors
/// I/O failure; the previous file stays.
pub fn save(path: &Path, state: &SyncedState) -> Result<(), StateError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StateError::BadPath(path.to_owned()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    bytes.push(b'\n');
    atomic_file::write(dir, name, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load(&path).unwrap(), SyncedState::default());
        let state = SyncedState {
            redis: Some(RedisOrigin::from_identity("redis://127.0.0.1:6379/2")),
            redis_run_id: Some("abc".into()),
            members: vec!["p/127.0.0.1:1".into()],
            draining: vec!["q/127.0.0.1:2".into()],
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        std::fs::write(&path, b"{nope").unwrap();
        assert!(matches!(load(&path), Err(StateError::Parse { .. })));
        // A file from before the origin was recorded still loads.
        std::fs::write(&path, br#"{"redis_run_id":"x","members":["p/h:1"]}"#).unwrap();
        assert_eq!(load(&path).unwrap().redis, None);
    }

    #[test]
    fn origins_are_the_whole_identity_with_its_database() {
        let o = RedisOrigin::from_identity;
        assert_eq!(
            o("redis://cache.internal:6380/3"),
            RedisOrigin {
                url: "redis://cache.internal:6380/3".into(),
                db: 3
            }
        );
        assert_eq!(o("sentinel://s1:26379,s2:26379/mymaster/2").db, 2);
        assert_ne!(
            o("sentinel://s1:26379/a/0"),
            o("sentinel://s1:26379/b/0"),
            "two masters of one Sentinel set are two Redis"
        );
        assert_eq!(o("cluster://n1:7000,n2:7001").db, 0);
    }

    #[test]
    fn state_from_another_redis_is_never_restored() {
        let here = RedisOrigin::from_identity("redis://h:1/0");
        let mut state = SyncedState {
            redis: Some(here.clone()),
            redis_run_id: Some("r".into()),
            members: vec!["p/h:2".into()],
            draining: vec![],
        };
        assert_eq!(restore(&state, &here), Restore::Yes);
        let other_db = RedisOrigin::from_identity("redis://h:1/1");
        assert_eq!(
            restore(&state, &other_db),
            Restore::OtherRedis(here.clone())
        );
        state.redis = None;
        assert_eq!(restore(&state, &here), Restore::UnknownOrigin);
        assert_eq!(restore(&SyncedState::default(), &other_db), Restore::Yes);
    }
}
