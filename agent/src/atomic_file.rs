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
/// atomic), rename, then fsync of the file and the directory. Envoy's `watched_directory`
/// reloads on the move and never sees a partial file.
///
/// The fsyncs run on a thread of their own, after the rename: readers never need them (they
/// see the renamed file whole, from the page cache), and they cost ~12 ms on the disks
/// measured here, which put every new process's cluster 12 ms later into Envoy. A machine
/// crash in those milliseconds may leave the previous or an empty file: the agent rewrites
/// Envoy's files at its first sync, and ignores (and logs) a state file it cannot read.
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
    if exchange(&tmp, &target) {
        // `tmp` now holds the old content.
        let _ = std::fs::remove_file(&tmp);
    } else {
        std::fs::rename(&tmp, &target).map_err(|source| WriteError::Rename {
            from: tmp.clone(),
            to: target.clone(),
            source,
        })?;
    }
    let dir = dir.to_owned();
    let sync = move || {
        let _ = file.sync_all();
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
    };
    // No thread to be had: sync here instead.
    let pending = std::sync::Arc::new(std::sync::Mutex::new(Some(sync)));
    let run = {
        let pending = pending.clone();
        move || {
            if let Some(f) = pending.lock().ok().and_then(|mut p| p.take()) {
                f();
            }
        }
    };
    if std::thread::Builder::new()
        .name("fsync".into())
        .spawn(run)
        .is_err()
    {
        if let Some(f) = pending.lock().ok().and_then(|mut p| p.take()) {
            f();
        }
    }
    Ok(())
}

/// Swaps `tmp` and an existing `target` atomically (Linux `renameat2(RENAME_EXCHANGE)`).
/// Readers see the old file or the new one, as with a rename, but ext4 does not flush the new
/// file's data first, as it does for a rename over an existing file (`auto_da_alloc`): that
/// flush took ~4 ms per write on the disk measured here. `false`: not done (no target yet,
/// or a filesystem without exchange); the caller renames.
#[cfg(target_os = "linux")]
fn exchange(tmp: &Path, target: &Path) -> bool {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    target.exists() && renameat_with(CWD, tmp, CWD, target, RenameFlags::EXCHANGE).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "c.json", b"one").unwrap();
        write(dir.path(), "c.json", b"two, longer").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("c.json")).unwrap(),
            b"two, longer"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.json"]);
    }
}
