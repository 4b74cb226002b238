//! The data directory's exclusive lock: two processes appending to the same
//! logs would hand out the same offsets to different events and lose
//! acknowledged ones, so a [`FileStorage`](super::FileStorage) holds an
//! `flock` on `<data_dir>/herald.lock` for as long as it is open.
//!
//! The kernel releases an `flock` when the holder exits, `kill -9` included,
//! so a lock is never stale; the file's contents (the holder's pid and, once
//! known, its listen address) only make the refusal say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::super::{Result, StorageError};

/// Name of the lock file inside the data directory.
pub(crate) const LOCK_FILE: &str = "herald.lock";

/// An exclusive lock on a data directory, released when dropped (or when
/// the process ends, however it ends).
#[derive(Debug)]
pub(crate) struct DataDirLock {
    /// The locked file; the lock lives as long as this descriptor.
    file: File,
    /// Its path, for error messages.
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` without waiting, recording this
    /// process's pid and `holder` (e.g. `listening on 127.0.0.1:50051`).
    /// Fails with [`StorageError::Locked`] naming the current holder when
    /// another process (or another open storage in this one) has it.
    pub(crate) fn acquire(data_dir: &Path, holder: Option<&str>) -> Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        // Not truncated on open: until we hold the lock, the contents are
        // the holder's, and the refusal quotes them.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    path: data_dir.display().to_string(),
                    holder: describe_holder(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(StorageError::io(format!("locking {}", path.display()), e));
            }
        }
        let lock = DataDirLock { file, path };
        lock.record(holder)
            .map_err(|e| StorageError::io(format!("writing {}", lock.path.display()), e))?;
        Ok(lock)
    }

    /// Rewrites the holder description (e.g. once the listen address is
    /// known). Best effort for the caller: the lock itself is unaffected.
    pub(crate) fn record(&self, holder: Option<&str>) -> io::Result<()> {
        let mut text = format!("pid {}", std::process::id());
        if let Some(holder) = holder {
            text.push_str(", ");
            text.push_str(holder);
        }
        text.push('\n');
        let mut file = &self.file;
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(text.as_bytes())
    }
}

/// What the lock file says about its holder, for the refusal message.
fn describe_holder(file: &mut File) -> String {
    let mut text = String::new();
    let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => "pid unknown: it is still starting".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_a_data_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path(), Some("listening on 127.0.0.1:1")).unwrap();
        let err = DataDirLock::acquire(dir.path(), None).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StorageError::Locked { .. }), "{err:?}");
        assert!(
            message.contains(&format!("pid {}", std::process::id()))
                && message.contains("listening on 127.0.0.1:1"),
            "{message}"
        );
        drop(first);
        DataDirLock::acquire(dir.path(), None).expect("the lock is free once dropped");
    }

    #[test]
    fn record_replaces_the_holder_description() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path(), Some("starting")).unwrap();
        lock.record(Some("listening on 127.0.0.1:2")).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(
            text,
            format!("pid {}, listening on 127.0.0.1:2\n", std::process::id())
        );
    }
}
