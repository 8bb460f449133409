//! One apply at a time per PM2 home (safety contract, promise 3): an exclusive,
//! advisory lock on `<PM2_HOME>/reconcile.lock`. The kernel drops it when the
//! holder exits, however it exits, so a killed apply never leaves a stale lock.
//! The file also says who holds it, for the error the second apply prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file's name inside the PM2 home.
pub const LOCK_FILE: &str = "reconcile.lock";

/// Who holds the lock: written into the file by the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub user: String,
    pub host: String,
    /// ms since the epoch.
    pub since_ms: i64,
    pub command: String,
}

impl Holder {
    /// This process.
    pub fn current() -> Self {
        Self {
            pid: std::process::id(),
            user: crate::apply::identity::user(),
            host: crate::apply::identity::host(),
            since_ms: crate::live::client::now_ms(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({}@{}, `{}`)", self.pid, self.user, self.host, self.command)
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another apply holds it.
    #[error("another apply is running on PM2 home {home}: {holder}; wait for it to finish (the lock is released when it exits)")]
    Held { home: PathBuf, holder: String },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {path}: check that this user may write to the PM2 home")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct ApplyLock {
    file: File,
    path: PathBuf,
}

impl ApplyLock {
    /// Takes the lock for `home` without waiting, or says who holds it.
    pub fn acquire(home: &Path, holder: &Holder) -> Result<Self, LockError> {
        let path = home.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = serde_json::from_str::<Holder>(text.trim())
                    .map_or_else(|_| "a process that has not yet written its name".to_string(), |h| h.to_string());
                return Err(LockError::Held { home: home.to_path_buf(), holder });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        let text = serde_json::to_string(holder).unwrap_or_default();
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApplyLock {
    fn drop(&mut self) {
        // Leave the file (removing it would race a waiting locker); clear the holder.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder_and_the_lock_is_free_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let holder = Holder { pid: 42, user: "deploy".into(), host: "web1".into(), since_ms: 0, command: "reconcile apply".into() };
        let first = ApplyLock::acquire(dir.path(), &holder).unwrap();
        let err = ApplyLock::acquire(dir.path(), &Holder::current()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("pid 42 (deploy@web1, `reconcile apply`)"), "{text}");
        drop(first);
        ApplyLock::acquire(dir.path(), &Holder::current()).unwrap();
    }
}
