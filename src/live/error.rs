//! Everything that can go wrong while reading or changing the live daemon. Each
//! variant is named after the step that failed and its message says what to do.

use std::path::PathBuf;
use std::time::Duration;

use super::amp::AmpError;

/// A fault talking to the PM2 daemon, or reading a snapshot that stands in for it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// Neither `[pm2] home`, `$PM2_HOME` nor `$HOME` is set.
    #[error("cannot tell where PM2 lives: set PM2_HOME, or [pm2] home in reconcile.toml")]
    NoHomeConfigured,
    /// The PM2 home directory does not exist.
    #[error("PM2 home {path} does not exist: set [pm2] home or PM2_HOME to the daemon's home")]
    HomeMissing { path: PathBuf },
    /// No socket file and no pid file: no daemon has ever run here, or it was stopped cleanly.
    #[error("no PM2 daemon answers at {path}: start it with pm2, or set [pm2] home")]
    NotRunning { path: String },
    /// `pm2.pid` names a process that is gone: the daemon died without cleaning up.
    #[error(
        "PM2 daemon is dead: {pid_file} names pid {pid}, which is not running; its apps may still run as orphans: check `ps`, stop them, remove {pid_file} and the sockets, then start pm2"
    )]
    StalePid { pid: i64, pid_file: PathBuf },
    /// The socket file is there but nothing listens on it.
    #[error(
        "no PM2 daemon answers at {path}: the socket is stale (the daemon died); its apps may still run as orphans: check `ps` before starting pm2 again"
    )]
    StaleSocket { path: String },
    /// The socket exists but we may not connect.
    #[error("permission denied on {path}: run as the daemon's user, or ask for access to the socket")]
    PermissionDenied { path: String },
    /// `connect` did not complete in time.
    #[error("connecting to the PM2 daemon at {path} took longer than {} ms: the host may be overloaded", after.as_millis())]
    ConnectTimeout { path: String, after: Duration },
    /// `connect` failed for another reason.
    #[error("cannot connect to the PM2 daemon at {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A call got no answer within the deadline: the daemon is hung or overloaded.
    #[error(
        "PM2 daemon at {path} did not answer `{method}` within {} ms: it may be hung; check its pm2.log, or raise [pm2] timeout_ms", after.as_millis()
    )]
    Timeout { method: &'static str, path: String, after: Duration },
    /// PM2 5.x/6.x never answer a cluster start/restart/reload whose worker exits
    /// before "online"; the call was bounded and the list read again.
    #[error("{0}")]
    Unanswered(Box<UnansweredCall>),
    /// The daemon closed the connection before answering.
    #[error("PM2 daemon at {path} closed the connection during `{method}`: it may have crashed; check its pm2.log")]
    Closed { method: &'static str, path: String },
    /// A call was attempted on a connection whose earlier call never completed.
    #[error(
        "not sending `{method}` to the PM2 daemon at {path}: an earlier call on this connection got no answer (its reply may still come); a new connection is needed"
    )]
    Unusable { method: &'static str, path: String },
    /// Reading from or writing to the socket failed.
    #[error("i/o error talking to the PM2 daemon at {path} during `{method}`")]
    Io {
        method: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The daemon sent bytes that are not a valid frame.
    #[error("PM2 daemon at {path} sent a malformed frame (is this really PM2's rpc.sock?)")]
    Frame {
        path: String,
        #[source]
        source: AmpError,
    },
    /// The daemon answered with `{"error": ...}`.
    #[error("pm2 `{method}` failed: {message}")]
    Remote { method: &'static str, message: String },
    /// The daemon answered, but not in the shape PM2 7 uses.
    #[error("unexpected answer to `{method}` from the PM2 daemon: {detail}")]
    BadReply { method: &'static str, detail: String },
    /// The daemon runs a PM2 we have not verified the protocol of.
    #[error("PM2 daemon runs version {version}; reconcile supports {supported}: upgrade or pin pm2")]
    UnsupportedVersion { version: String, supported: &'static str },
    /// A refused request: we would have sent a call PM2 crashes on.
    #[error("refusing to send `{method}`: {reason}")]
    InvalidCall { method: &'static str, reason: String },
    /// `--live FILE` cannot be read.
    #[error("cannot read live snapshot {path}")]
    SnapshotRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--live FILE` is not `pm2 jlist` output.
    #[error("live snapshot {path} is not `pm2 jlist` output: {message}")]
    SnapshotParse { path: PathBuf, message: String },
    /// A process is not there any more (re-read before a mutating call).
    #[error("pm_id {pm_id} is gone from the live list: the process list changed; plan again")]
    ProcessGone { pm_id: u64 },
    /// A `pm_id` now belongs to another app.
    #[error("pm_id {pm_id} is now `{found}`, not `{expected}`: the process list changed; plan again")]
    NameChanged { pm_id: u64, expected: String, found: String },
    /// A `pm_id` is in a namespace this project does not own.
    #[error("pm_id {pm_id} (`{name}`) is in namespace `{namespace}`, which this project does not own: refusing to touch it")]
    NotOwned { pm_id: u64, name: String, namespace: String },
    /// An app to start is in a namespace this project does not own.
    #[error("app `{name}` is in namespace `{namespace}`, which this project does not own: refusing to start it")]
    NamespaceNotOwned { name: String, namespace: String },
    /// The app to start already exists somewhere (PM2 names are global).
    #[error("an app named `{name}` already runs as pm_id {pm_id} in namespace `{namespace}`: names are global in PM2; refusing to start a second one")]
    NameTaken { name: String, pm_id: u64, namespace: String },
    /// PM2's JavaScript library cannot be found to resolve an app for `prepare`.
    #[error("cannot find PM2's lib/Common.js (looked at {looked}): install pm2 and put it on PATH, or set RECONCILE_PM2 to its package directory")]
    Pm2LibNotFound { looked: String },
    /// The pm2 package found to resolve apps is not of the daemon's major version.
    #[error(
        "the pm2 package at {} is version {lib_version}, but the daemon runs PM2 {daemon_version}: apps must be resolved by the daemon's own major (lib/Common.js differs between majors); set RECONCILE_PM2 to a pm2 package of the daemon's major version (e.g. the one the daemon runs from)", dir.display()
    )]
    Pm2LibVersion { dir: PathBuf, lib_version: String, daemon_version: String },
    /// The `node` helper that resolves an app as `pm2 start` does failed.
    #[error("resolving app `{name}` as pm2 would failed: {message}")]
    Resolve { name: String, message: String },
}

impl LiveError {
    /// The processes (pm_id, restart count) a fresh read found after a cluster call
    /// PM2 5/6 never answered ([`LiveError::Unanswered`]): the health gate must still
    /// judge them (and stop them if they crash-loop). Empty for every other error.
    pub fn unanswered_pm_ids(&self) -> &[(u64, u64)] {
        match self {
            LiveError::Unanswered(call) => &call.pm_ids,
            _ => &[],
        }
    }

    /// Whether this is a fault of the daemon or its home (as opposed to a refused action).
    pub fn is_daemon_fault(&self) -> bool {
        !matches!(
            self,
            LiveError::ProcessGone { .. }
                | LiveError::NameChanged { .. }
                | LiveError::NotOwned { .. }
                | LiveError::NamespaceNotOwned { .. }
                | LiveError::NameTaken { .. }
                | LiveError::InvalidCall { .. }
                | LiveError::Remote { .. }
                | LiveError::Resolve { .. }
                | LiveError::Pm2LibNotFound { .. }
                | LiveError::Pm2LibVersion { .. }
        )
    }
}

/// A cluster call PM2 5.x/6.x never answered, and what a fresh read showed after it.
#[derive(Debug)]
pub struct UnansweredCall {
    pub method: &'static str,
    pub name: String,
    /// The daemon's version.
    pub version: String,
    /// The deadline the call was given.
    pub after: Duration,
    /// What the fresh read showed (and what was done about a hidden old worker).
    pub read: String,
    /// The app's processes in that read: (pm_id, restart count).
    pub pm_ids: Vec<(u64, u64)>,
}

impl std::fmt::Display for UnansweredCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PM2 {} did not answer `{}` for cluster app `{}` within {} ms: PM2 5.x and 6.x never answer it when a worker exits before it is online (lib/God.js executeApp); {}. Check the app's error log",
            self.version,
            self.method,
            self.name,
            self.after.as_millis(),
            self.read
        )
    }
}
