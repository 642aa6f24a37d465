//! Crash-safe file replacement: readers (Envoy, a restarted agent) see the old file or the
//! new one, never a partial one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why replacing a file failed. The previous file stays in place.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write temporary file {path}: {source}")]
    Temp {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
}

/// Writes `bytes` to `dir/name`: a temp file in the same directory (so the rename is
/// atomic), fsync, rename, fsync of the directory. Envoy's `watched_directory` reloads on
/// the move and never sees a partial file.
///
/// # Errors
/// Any I/O failure before the rename; the old file is then untouched.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let temp_err = |source| WriteError::Temp {
        path: tmp.clone(),
        source,
    };
    let mut file = std::fs::File::create(&tmp).map_err(temp_err)?;
    file.write_all(bytes).map_err(temp_err)?;
    file.sync_all().map_err(temp_err)?;
    drop(file);
    std::fs::rename(&tmp, &target).map_err(|source| WriteError::Rename {
        from: tmp.clone(),
        to: target.clone(),
        source,
    })?;
    // Makes the rename durable; if this fails the new content is already visible.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
