//! Live state: the PM2 daemon, read (and, for `apply`, changed) over its own socket.
//!
//! Owns every conversation with PM2 and nothing else: no rendering, no planning.
//! `reconcile` never spawns the `pm2` CLI here (a CLI run against a dead daemon
//! starts a new, empty one), and every daemon call is bounded by `[pm2] timeout_ms`.
//!
//! - [`amp`]: the frame codec; [`rpc`]: calls and replies on `rpc.sock`;
//!   [`bus`]: events from `pub.sock`;
//! - [`model`]: [`LiveProcess`]/[`LiveState`], normalized;
//! - [`client`]: [`Pm2Client`] (reads, [`OwnedProcess`]-gated writes);
//! - [`resolve`]: app spec → `prepare` payload through PM2's own JavaScript;
//! - [`home`]: where the daemon lives, and why it does not answer;
//! - [`snapshot`]: `--live FILE`.

pub mod amp;
pub mod bus;
pub mod client;
pub mod error;
pub mod health;
pub mod home;
pub mod model;
pub mod procs;
pub mod resolve;
pub mod rpc;
pub mod snapshot;
pub mod version;

use std::path::PathBuf;
use std::time::Duration;

pub use bus::{BusEvent, EventStream, ProcessEvent, ProcessEventKind};
pub use client::{OwnedProcess, Pm2Client, SUPPORTED_VERSIONS};
pub use error::LiveError;
pub use home::{Endpoint, Pm2Home};
pub use model::{DaemonInfo, ExecMode, LiveOrigin, LiveProcess, LiveState, ProcessStatus};
pub use resolve::{ResolveRequest, ResolvedApp, Resolver};
pub use version::Pm2Version;

/// Where live state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveSource {
    /// The daemon in this home.
    Daemon(Pm2Home),
    /// A `pm2 jlist` file (`--live FILE`).
    Snapshot(PathBuf),
}

/// Reads the live process list (async).
pub async fn read_async(source: &LiveSource, timeout: Duration) -> Result<LiveState, LiveError> {
    match source {
        LiveSource::Snapshot(path) => snapshot::read(path),
        LiveSource::Daemon(home) => Pm2Client::connect_and_list(home, timeout).await.map(|(_, state)| state),
    }
    .inspect(learn_secrets)
}

/// Reads the live process list, blocking the calling thread (a small current-thread
/// runtime; for commands that are otherwise synchronous).
pub fn read(source: &LiveSource, timeout: Duration) -> Result<LiveState, LiveError> {
    fetch(source, timeout)?.parse()
}

/// [`read`] without what only planning needs: every process's `env_set`,
/// `env_inherited` and `options` are left empty ([`model::Detail::Summary`]). For
/// `status`: env is most of the list's bytes, and skipping it halves the run.
pub fn read_summary(source: &LiveSource, timeout: Duration) -> Result<LiveState, LiveError> {
    fetch(source, timeout)?.parse_with(model::Detail::Summary)
}

/// The live state fetched but not parsed yet: what [`fetch`] returns.
#[derive(Debug)]
pub struct Fetched {
    inner: FetchedInner,
}

#[derive(Debug)]
enum FetchedInner {
    Snapshot(PathBuf),
    Daemon(Box<(Pm2Home, rpc::RpcConnection, Vec<rpc::Reply>)>),
}

/// Talks to the daemon (connect, pipelined reads, every reply received) without
/// parsing the process list; [`Fetched::parse`] does that. It is [`start_fetch`]
/// and [`PendingFetch::wait`] in one go.
pub fn fetch(source: &LiveSource, timeout: Duration) -> Result<Fetched, LiveError> {
    start_fetch(source, timeout)?.wait()
}

/// A read of the daemon under way: the request is written, the replies are not read
/// yet (see [`start_fetch`]).
#[derive(Debug)]
pub struct PendingFetch {
    inner: PendingInner,
}

#[derive(Debug)]
enum PendingInner {
    Snapshot(PathBuf),
    Daemon(Box<(tokio::runtime::Runtime, Pm2Home, rpc::RpcConnection, rpc::InFlight)>),
}

/// [`fetch`] in two steps: this connects and writes the request on the calling thread
/// (a fraction of a millisecond), so the daemon starts on it before the caller does
/// anything else; [`PendingFetch::wait`], typically on a helper thread, reads the
/// replies (`plan` then parses them on whichever thread is free first). A daemon
/// fault found while connecting is returned here.
pub fn start_fetch(source: &LiveSource, timeout: Duration) -> Result<PendingFetch, LiveError> {
    let inner = match source {
        LiveSource::Snapshot(path) => PendingInner::Snapshot(path.clone()),
        LiveSource::Daemon(home) => {
            let runtime = runtime().map_err(|source| LiveError::Io { method: "runtime", path: String::new(), source })?;
            let (conn, in_flight) = runtime.block_on(Pm2Client::send_list_request(home, timeout))?;
            PendingInner::Daemon(Box::new((runtime, home.clone(), conn, in_flight)))
        }
    };
    Ok(PendingFetch { inner })
}

impl PendingFetch {
    /// Waits for the replies (within the deadline given to [`start_fetch`]).
    pub fn wait(self) -> Result<Fetched, LiveError> {
        let inner = match self.inner {
            PendingInner::Snapshot(path) => FetchedInner::Snapshot(path),
            PendingInner::Daemon(pending) => {
                let (runtime, home, mut conn, in_flight) = *pending;
                let replies = runtime.block_on(conn.receive(in_flight))?;
                FetchedInner::Daemon(Box::new((home, conn, replies)))
            }
        };
        Ok(Fetched { inner })
    }
}

impl Fetched {
    /// Checks the daemon's version and reads and normalizes the list.
    pub fn parse(self) -> Result<LiveState, LiveError> {
        self.parse_with(model::Detail::Full)
    }

    /// The daemon's process list as it sent it (`getMonitorData`'s JSON text, not
    /// parsed), for what needs whole `pm2_env`s (the dump comparison of
    /// [`crate::apply::dump`]); `None` for a snapshot or a list the daemon did not send.
    pub fn list_text(&self) -> Option<&str> {
        match &self.inner {
            FetchedInner::Snapshot(_) => None,
            FetchedInner::Daemon(fetched) => {
                fetched.2.iter().find(|r| r.method() == "getMonitorData").and_then(|r| r.first_arg_text().ok().flatten())
            }
        }
    }

    /// [`Fetched::parse`], reading as much of each process as `detail` says.
    pub fn parse_with(self, detail: model::Detail) -> Result<LiveState, LiveError> {
        let state = match self.inner {
            FetchedInner::Snapshot(path) => snapshot::read_with(&path, detail),
            FetchedInner::Daemon(fetched) => {
                let (home, conn, replies) = *fetched;
                Pm2Client::from_list_replies(conn, &home, replies, detail).map(|(_, state)| state)
            }
        };
        state.inspect(learn_secrets)
    }
}

/// Every secret the live processes carry becomes known to [`crate::redact::scrub`].
fn learn_secrets(state: &LiveState) {
    state.processes.iter().for_each(crate::redact::learn_process);
}

/// The runtime the blocking helpers use: one thread, I/O and timers.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()
}
