//! What the agent last synced, kept on disk so that a restarted agent can still tell a Redis
//! that lost its data (new `run_id`, registrations missing) from registrations really removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file;

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedState {
    /// `run_id` of the Redis server the members were read from.
    pub redis_run_id: Option<String>,
    /// Members as Colyseus writes them, sorted.
    pub members: Vec<String>,
    /// Processes unregistered but still draining, in the same form.
    #[serde(default)]
    pub draining: Vec<String>,
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
            redis_run_id: Some("abc".into()),
            members: vec!["p/127.0.0.1:1".into()],
            draining: vec!["q/127.0.0.1:2".into()],
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        std::fs::write(&path, b"{nope").unwrap();
        assert!(matches!(load(&path), Err(StateError::Parse { .. })));
    }
}
