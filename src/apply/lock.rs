//! One apply at a time per PM2 *daemon* (safety contract, promise 3), whichever home
//! or socket path leads to it: an exclusive, advisory lock on a file whose place is
//! derived from the daemon's identity, its RPC endpoint ([`lock_path`]):
//!
//! - a Unix socket (the default, or `PM2_DAEMON_RPC_PORT=/path/rpc.sock`): the lock
//!   is `reconcile.lock` beside the socket's *real* path (symlinks resolved), which
//!   for a default daemon is `<PM2_HOME>/reconcile.lock`. Another `PM2_HOME` whose
//!   `PM2_DAEMON_RPC_PORT` names that socket, or a symlinked home, finds the same file;
//! - a TCP endpoint (`tcp://127.0.0.1:PORT`): `reconcile-pm2-tcp-PORT.lock` in the
//!   system temporary directory (loopback spellings are one daemon: the port decides).
//!
//! The kernel drops the lock when the holder exits, however it exits, so a killed
//! apply never leaves a stale lock. The file also says who holds it, for the error
//! the second apply prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::live::{Endpoint, Pm2Home};

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
    #[error("another apply is running on this PM2 daemon (lock {home}): {holder}; wait for it to finish (the lock is released when it exits)")]
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
    /// Takes the lock for the daemon `home` leads to without waiting, or says who holds it.
    pub fn acquire(home: &Pm2Home, holder: &Holder) -> Result<Self, LockError> {
        Self::acquire_at(&lock_path(home), holder)
    }

    /// Takes the lock at `path` (see [`lock_path`]).
    pub fn acquire_at(path: &Path, holder: &Holder) -> Result<Self, LockError> {
        let path = path.to_path_buf();
        let io = |source| LockError::Io { path: path.clone(), source };
        // O_NOFOLLOW: in a shared temporary directory, a symlink planted under the
        // lock's name must not make us truncate some other file.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = serde_json::from_str::<Holder>(text.trim())
                    .map_or_else(|_| "a process that has not yet written its name".to_string(), |h| h.to_string());
                return Err(LockError::Held { home: path.clone(), holder });
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

/// Where the lock of the daemon that `home` leads to lives (see the module docs).
pub fn lock_path(home: &Pm2Home) -> PathBuf {
    match &home.rpc {
        Endpoint::Unix(socket) => std::fs::canonicalize(socket)
            .ok()
            .and_then(|real| real.parent().map(Path::to_path_buf))
            // No socket yet (apply --start-daemon): the home, where it will be.
            .unwrap_or_else(|| home.dir.clone())
            .join(LOCK_FILE),
        Endpoint::Tcp { host, port } => {
            let loopback = matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1" | "[::1]" | "0.0.0.0" | "");
            let name = if loopback { format!("reconcile-pm2-tcp-{port}.lock") } else { format!("reconcile-pm2-tcp-{host}-{port}.lock") };
            std::env::temp_dir().join(name.replace(['/', ':'], "_"))
        }
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
        let home = Pm2Home::at(dir.path());
        let first = ApplyLock::acquire(&home, &holder).unwrap();
        let err = ApplyLock::acquire(&home, &Holder::current()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("pid 42 (deploy@web1, `reconcile apply`)"), "{text}");
        drop(first);
        ApplyLock::acquire(&home, &Holder::current()).unwrap();
    }

    #[test]
    fn every_path_to_one_daemon_socket_finds_one_lock() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real-home");
        std::fs::create_dir(&real).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(real.join("rpc.sock")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("linked-home")).unwrap();
        let direct = Pm2Home::at(&real);
        let linked = Pm2Home::at(dir.path().join("linked-home"));
        let mut other = Pm2Home::at(dir.path().join("other-home"));
        other.rpc = Endpoint::parse(&real.join("rpc.sock").display().to_string());
        let expected = std::fs::canonicalize(&real).unwrap().join(LOCK_FILE);
        for home in [&direct, &linked, &other] {
            assert_eq!(lock_path(home), expected, "{home:?}");
        }
        let _held = ApplyLock::acquire(&direct, &Holder::current()).unwrap();
        assert!(matches!(ApplyLock::acquire(&other, &Holder::current()), Err(LockError::Held { .. })));
        let tcp = |host: &str| Pm2Home { rpc: Endpoint::Tcp { host: host.into(), port: 4242 }, ..Pm2Home::at(dir.path()) };
        assert_eq!(lock_path(&tcp("127.0.0.1")), lock_path(&tcp("localhost")));
    }
}
