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
pub mod resolve;
pub mod rpc;
pub mod snapshot;

use std::path::PathBuf;
use std::time::Duration;

pub use bus::{BusEvent, EventStream, ProcessEvent, ProcessEventKind};
pub use client::{OwnedProcess, Pm2Client, SUPPORTED_VERSIONS};
pub use error::LiveError;
pub use home::{Endpoint, Pm2Home};
pub use model::{DaemonInfo, ExecMode, LiveOrigin, LiveProcess, LiveState, ProcessStatus};
pub use resolve::{ResolveRequest, ResolvedApp, Resolver};

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
}

/// Reads the live process list, blocking the calling thread (a small current-thread
/// runtime; for commands that are otherwise synchronous).
pub fn read(source: &LiveSource, timeout: Duration) -> Result<LiveState, LiveError> {
    if let LiveSource::Snapshot(path) = source {
        return snapshot::read(path);
    }
    let runtime = runtime().map_err(|source| LiveError::Io { method: "runtime", path: String::new(), source })?;
    runtime.block_on(read_async(source, timeout))
}

/// The runtime the blocking helpers use: one thread, I/O and timers.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()
}
