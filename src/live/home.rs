//! Where the PM2 daemon lives (`PM2_HOME` and its sockets), and why a connect failed.
//!
//! Resolution, as PM2 7 does it (`paths.js`), with `reconcile.toml` first:
//! `[pm2] home`, else `$PM2_HOME`, else `$HOME/.pm2`. The sockets are
//! `rpc.sock`/`pub.sock` in the home unless `PM2_DAEMON_RPC_PORT` /
//! `PM2_DAEMON_PUB_PORT` name another path, a `unix://` URL or a `tcp://host:port`.
//!
//! Diagnosis never spawns anything: any `pm2` CLI command run while the daemon is
//! down silently starts a new, empty daemon (pm2-internals.md §7).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use super::error::LiveError;

/// A socket address as PM2's axon understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path (the default).
    Unix(PathBuf),
    /// `tcp://host:port`.
    Tcp { host: String, port: u16 },
}

impl Endpoint {
    /// Parses a `PM2_DAEMON_*_PORT` value like axon's `parseAddr`.
    pub fn parse(value: &str) -> Self {
        if let Some(rest) = value.strip_prefix("tcp://")
            && let Some((host, port)) = rest.trim_end_matches('/').rsplit_once(':')
                && let Ok(port) = port.parse() {
                    let host = if host.is_empty() { "127.0.0.1".to_string() } else { host.to_string() };
                    return Endpoint::Tcp { host, port };
                }
        if let Some(rest) = value.strip_prefix("unix://") {
            return Endpoint::Unix(absolute(Path::new(rest)));
        }
        Endpoint::Unix(absolute(Path::new(value)))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// A resolved PM2 home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pm2Home {
    /// The directory (`pm2.pid`, `logs/`, `pids/`).
    pub dir: PathBuf,
    /// The REQ/REP socket.
    pub rpc: Endpoint,
    /// The PUB/SUB socket.
    pub bus: Endpoint,
}

impl Pm2Home {
    /// The home in `dir`, with the default socket names.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = absolute(&dir.into());
        Self { rpc: Endpoint::Unix(dir.join("rpc.sock")), bus: Endpoint::Unix(dir.join("pub.sock")), dir }
    }

    /// Resolves the home from `[pm2] home` and the process environment.
    pub fn resolve(configured: Option<&Path>) -> Result<Self, LiveError> {
        Self::resolve_with(configured, |key| std::env::var_os(key))
    }

    /// [`Pm2Home::resolve`] with the environment passed in (for tests).
    pub fn resolve_with(
        configured: Option<&Path>,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, LiveError> {
        let non_empty = |key: &str| env(key).filter(|v| !v.is_empty());
        let dir = match (configured, non_empty("PM2_HOME")) {
            (Some(dir), _) => dir.to_path_buf(),
            (None, Some(dir)) => PathBuf::from(dir),
            (None, None) => match non_empty("HOME").or_else(|| non_empty("USERPROFILE")) {
                Some(home) => PathBuf::from(home).join(".pm2"),
                None => return Err(LiveError::NoHomeConfigured),
            },
        };
        let mut home = Self::at(dir);
        if let Some(rpc) = non_empty("PM2_DAEMON_RPC_PORT") {
            home.rpc = Endpoint::parse(&rpc.to_string_lossy());
        }
        if let Some(bus) = non_empty("PM2_DAEMON_PUB_PORT") {
            home.bus = Endpoint::parse(&bus.to_string_lossy());
        }
        Ok(home)
    }

    /// `pm2.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("pm2.pid")
    }

    /// The pid in `pm2.pid`, if the file holds one.
    pub fn daemon_pid(&self) -> Option<i64> {
        std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }

    /// Turns a failed connect into the clearest one-line error (no I/O beyond `stat`,
    /// `/proc` and `kill(pid, 0)`).
    pub fn diagnose_connect(&self, endpoint: &Endpoint, err: std::io::Error) -> LiveError {
        use std::io::ErrorKind;
        let path = endpoint.to_string();
        if !self.dir.is_dir() {
            return LiveError::HomeMissing { path: self.dir.clone() };
        }
        let stale_pid = || {
            let pid = self.daemon_pid()?;
            (!daemon_alive(pid)).then(|| LiveError::StalePid { pid, pid_file: self.pid_file() })
        };
        match err.kind() {
            ErrorKind::NotFound => stale_pid().unwrap_or(LiveError::NotRunning { path }),
            ErrorKind::ConnectionRefused => stale_pid().unwrap_or(LiveError::StaleSocket { path }),
            ErrorKind::PermissionDenied => LiveError::PermissionDenied { path },
            _ => LiveError::Connect { path, source: err },
        }
    }
}

/// Whether a process with this pid exists (signal 0 sends nothing). On Linux a
/// zombie counts as dead: a daemon killed with SIGKILL stays one until its parent (init,
/// since PM2 daemonizes) reaps it, and `kill(pid, 0)` succeeds on a zombie (observed).
pub fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// Whether `pm2.pid` names a live PM2 daemon: alive, and (where `/proc` says) titled
/// `PM2 vX: God Daemon (...)`, so a pid reused by another program is not taken for it.
pub fn daemon_alive(pid: i64) -> bool {
    if !pid_alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.windows(3).any(|w| w == b"PM2"),
        Err(_) => true,
    }
}

fn is_zombie(pid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn config_beats_env_beats_home() {
        let h = Pm2Home::resolve_with(Some(Path::new("/srv/pm2")), env(&[("PM2_HOME", "/e")])).unwrap();
        assert_eq!(h.dir, PathBuf::from("/srv/pm2"));
        let h = Pm2Home::resolve_with(None, env(&[("PM2_HOME", "/e"), ("HOME", "/root")])).unwrap();
        assert_eq!(h.rpc, Endpoint::Unix(PathBuf::from("/e/rpc.sock")));
        let h = Pm2Home::resolve_with(None, env(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(h.bus, Endpoint::Unix(PathBuf::from("/home/u/.pm2/pub.sock")));
        assert!(matches!(Pm2Home::resolve_with(None, env(&[])), Err(LiveError::NoHomeConfigured)));
    }

    #[test]
    fn daemon_port_variables_are_honoured() {
        let h = Pm2Home::resolve_with(
            None,
            env(&[("PM2_HOME", "/e"), ("PM2_DAEMON_RPC_PORT", "/run/r.sock"), ("PM2_DAEMON_PUB_PORT", "tcp://127.0.0.1:4001")]),
        )
        .unwrap();
        assert_eq!(h.rpc, Endpoint::Unix(PathBuf::from("/run/r.sock")));
        assert_eq!(h.bus, Endpoint::Tcp { host: "127.0.0.1".into(), port: 4001 });
        assert_eq!(Endpoint::parse("unix:///x/y.sock"), Endpoint::Unix(PathBuf::from("/x/y.sock")));
    }

    #[test]
    fn our_own_pid_is_alive_and_nonsense_is_not() {
        assert!(pid_alive(i64::from(std::process::id())));
        assert!(!pid_alive(0));
        assert!(!pid_alive(-1));
        assert!(!pid_alive(i64::MAX));
    }
}
