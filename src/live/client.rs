//! A PM2 client on the daemon's socket: reads, and the mutating calls `apply` uses.
//!
//! Safety rules this type enforces (DESIGN.md, Apply — the safety contract):
//! - every mutating call names a numeric `pm_id`, never a name, `all`, a namespace
//!   or a regex, and takes an [`OwnedProcess`], which only [`Pm2Client::confirm_owned`]
//!   builds, from a fresh read, after checking the name and the namespace;
//! - [`Pm2Client::start`] re-reads first and refuses a name that exists in any
//!   namespace (PM2 names are global);
//! - nothing here spawns `pm2`, so nothing here can start a daemon.

use std::time::Duration;

use serde_json::{Map, Value};

use super::error::{LiveError, UnansweredCall};
use super::home::Pm2Home;
use super::model::{
    DaemonInfo, Detail, ExecMode, ListSeed, LiveOrigin, LiveProcess, LiveState, ProcessStatus, RawList, as_u64, normalize_owned,
    normalize_raw, normalize_text,
};
use super::procs;
use super::resolve::ResolvedApp;
use super::version::Pm2Version;
use super::rpc::{Call, InFlight, NotifyAction, Reply, RpcConnection, WatchedAction};

pub use super::version::{SUPPORTED_VERSIONS, version_supported};

/// A process a fresh read just confirmed is owned and has the expected name.
/// Only [`Pm2Client::confirm_owned`] constructs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedProcess {
    pm_id: u64,
    name: String,
    namespace: String,
    status: ProcessStatus,
    exec_mode: ExecMode,
    /// The process's pid at confirmation time (a reload's old worker on PM2 5/6).
    pid: Option<u32>,
    /// Its `kill_timeout` (ms): how long PM2 waits before SIGKILL.
    kill_timeout_ms: u64,
    restarts: u64,
    created_at_ms: Option<i64>,
    error_file: Option<std::path::PathBuf>,
    /// Worst-case wait for a stop: `kill_timeout` twice (SIGINT, then SIGKILL) and any
    /// `listen_timeout` a restart may wait (pm2-internals.md §8).
    budget: Duration,
}

impl OwnedProcess {
    pub fn pm_id(&self) -> u64 {
        self.pm_id
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// The status at confirmation time.
    pub fn status(&self) -> &ProcessStatus {
        &self.status
    }
    pub fn exec_mode(&self) -> ExecMode {
        self.exec_mode
    }
    /// The OS pid at confirmation time.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
    /// `restart_time` at confirmation time.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
    /// `created_at` at confirmation time (a restart asked for moves it).
    pub fn created_at_ms(&self) -> Option<i64> {
        self.created_at_ms
    }
    /// Its error log (`pm_err_log_path`).
    pub fn error_file(&self) -> Option<&std::path::Path> {
        self.error_file.as_deref()
    }
}

/// A connected client. Calls run one at a time.
#[derive(Debug)]
pub struct Pm2Client {
    conn: RpcConnection,
    home: Pm2Home,
    version: String,
    daemon_env: Option<Map<String, Value>>,
    /// The script the daemon runs (`getReport().argv[1]`, `.../pm2/lib/Daemon.js`).
    daemon_script: Option<std::path::PathBuf>,
    daemon: DaemonInfo,
}

impl Pm2Client {
    /// Connects, then checks the daemon answers and runs a supported PM2 version.
    /// Never starts a daemon: a down daemon is an error that says so.
    pub async fn connect(home: &Pm2Home, timeout: Duration) -> Result<Self, LiveError> {
        let mut conn = RpcConnection::connect(home, timeout).await?;
        let reply = conn.call(&Call::get_version()).await?;
        Self::checked(conn, home, &reply)
    }

    /// Connects and reads the list in one round trip: `getVersion`, `getReport` and
    /// `getMonitorData` are pipelined (all three are read-only and take `{}` in every
    /// PM2 version), and the version is checked before anything else is used.
    pub async fn connect_and_list(home: &Pm2Home, timeout: Duration) -> Result<(Self, LiveState), LiveError> {
        let (conn, replies) = Self::request_list(home, timeout).await?;
        Self::from_list_replies(conn, home, replies, Detail::Full)
    }

    /// The I/O half of [`Pm2Client::connect_and_list`]: the three replies, unparsed.
    pub(crate) async fn request_list(home: &Pm2Home, timeout: Duration) -> Result<(RpcConnection, Vec<Reply>), LiveError> {
        let (mut conn, in_flight) = Self::send_list_request(home, timeout).await?;
        let replies = conn.receive(in_flight).await?;
        Ok((conn, replies))
    }

    /// Connects and writes the three reads of [`Pm2Client::request_list`] without
    /// waiting for the replies.
    pub(crate) async fn send_list_request(home: &Pm2Home, timeout: Duration) -> Result<(RpcConnection, InFlight), LiveError> {
        let mut conn = RpcConnection::connect(home, timeout).await?;
        let calls = [Call::get_version(), Call::get_report(), Call::get_monitor_data()];
        let in_flight = conn.send(&calls, timeout).await?;
        Ok((conn, in_flight))
    }

    /// The parsing half: checks the version, keeps the report, reads the list as much
    /// as `detail` says. A full read goes through [`normalize_text`] (two threads for
    /// a long list); a summary is read on this thread, it is cheap.
    pub(crate) fn from_list_replies(
        conn: RpcConnection,
        home: &Pm2Home,
        replies: Vec<Reply>,
        detail: Detail,
    ) -> Result<(Self, LiveState), LiveError> {
        let mut replies = replies.into_iter();
        let mut next = |method| replies.next().ok_or(LiveError::BadReply { method, detail: "no reply".into() });
        let version = next("getVersion")?.args()?;
        let mut client = Self::checked(conn, home, &version)?;
        client.set_report(next("getReport")?.args()?);
        let reply = next("getMonitorData")?;
        let bad = |e: &dyn std::fmt::Display| LiveError::BadReply { method: "getMonitorData", detail: e.to_string() };
        let processes = match detail {
            Detail::Full => match reply.first_arg_text()? {
                Some(text) => normalize_text(text, detail, client.daemon_env.as_ref()).map_err(|e| bad(&e))?,
                None => Vec::new(),
            },
            Detail::Summary => {
                let list = reply.first_arg_seed(ListSeed(detail))?.unwrap_or_default();
                normalize_raw(list, client.daemon_env.as_ref()).map_err(|e| bad(&e))?
            }
        };
        tracing::debug!(processes = processes.len(), "process list normalized");
        let state = client.state_of(processes);
        Ok((client, state))
    }

    fn checked(conn: RpcConnection, home: &Pm2Home, version_reply: &[Value]) -> Result<Self, LiveError> {
        let version = match version_reply.first() {
            Some(Value::String(v)) => v.clone(),
            other => return Err(LiveError::BadReply { method: "getVersion", detail: format!("version is {other:?}") }),
        };
        if !version_supported(&version) {
            return Err(LiveError::UnsupportedVersion { version, supported: SUPPORTED_VERSIONS });
        }
        let pid = home.daemon_pid().and_then(|p| u32::try_from(p).ok());
        let daemon = DaemonInfo { version: version.clone(), pid, ..DaemonInfo::default() };
        Ok(Self { conn, home: home.clone(), version, daemon_env: None, daemon_script: None, daemon })
    }

    /// A connection that can carry the next call: after a call timed out (or the
    /// connection failed) the old one may still get that call's late reply, so it is
    /// never reused; a fresh one is opened instead. Without this, everything after a
    /// timeout (the health gate, verification) failed at once with "closed the
    /// connection … it may have crashed" while the daemon was alive.
    async fn usable_conn(&mut self) -> Result<&mut RpcConnection, LiveError> {
        if !self.conn.is_usable() {
            tracing::debug!("reconnecting: the last call on the old connection got no answer");
            self.conn = RpcConnection::connect(&self.home, self.conn.timeout()).await?;
        }
        Ok(&mut self.conn)
    }

    async fn call(&mut self, call: &Call) -> Result<Vec<Value>, LiveError> {
        self.usable_conn().await?.call(call).await
    }

    async fn call_within(&mut self, call: &Call, deadline: Duration) -> Result<Vec<Value>, LiveError> {
        self.usable_conn().await?.call_within(call, deadline).await
    }

    async fn pipeline(&mut self, calls: &[Call], deadline: Duration) -> Result<Vec<Reply>, LiveError> {
        self.usable_conn().await?.pipeline(calls, deadline).await
    }

    /// The daemon's PM2 version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The daemon's own environment (`getReport().env`), once a list was read.
    pub fn daemon_env(&self) -> Option<&Map<String, Value>> {
        self.daemon_env.as_ref()
    }

    /// The script the daemon runs (`.../pm2/lib/Daemon.js`), once a list was read:
    /// where the daemon's own pm2 package is.
    pub fn daemon_script(&self) -> Option<&std::path::Path> {
        self.daemon_script.as_deref()
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.conn.timeout()
    }

    /// The home this client talks to.
    pub fn home(&self) -> &Pm2Home {
        &self.home
    }

    /// `ping`: the daemon answers.
    pub async fn ping(&mut self) -> Result<(), LiveError> {
        let reply = self.call(&Call::ping()).await?;
        match reply.first().and_then(|v| v.get("msg")).and_then(Value::as_str) {
            Some("pong") => Ok(()),
            _ => Err(LiveError::BadReply { method: "ping", detail: format!("{reply:?}") }),
        }
    }

    /// `getReport`: the daemon's env, argv, start time. Cached after the first call.
    async fn load_report(&mut self) -> Result<(), LiveError> {
        if self.daemon_env.is_none() {
            let reply = self.call(&Call::get_report()).await?;
            self.set_report(reply);
        }
        Ok(())
    }

    fn set_report(&mut self, reply: Vec<Value>) {
        let report = reply.into_iter().next().unwrap_or(Value::Null);
        self.daemon.started_at_ms = report.get("started_at").and_then(Value::as_i64);
        self.daemon_script = report.get("argv").and_then(|a| a.get(1)).and_then(Value::as_str).map(std::path::PathBuf::from);
        self.daemon_env = Some(match report {
            Value::Object(mut obj) => match obj.remove("env") {
                Some(Value::Object(env)) => env,
                _ => Map::new(),
            },
            _ => Map::new(),
        });
    }

    /// Reads the whole process list (`getMonitorData`), normalized.
    pub async fn list(&mut self) -> Result<LiveState, LiveError> {
        self.load_report().await?;
        let mut replies = self.pipeline(&[Call::get_monitor_data()], self.conn.timeout()).await?;
        let list = replies.pop().map(|r| r.first_arg::<RawList>()).transpose()?.flatten();
        self.state_from(list.unwrap_or_default())
    }

    /// As [`Pm2Client::list`], also returning each process's raw entry (`pm2_env`
    /// included) in `pm_id` order, for `apply --rollback` to re-`prepare` (as
    /// `pm2 resurrect` re-prepares a dump).
    pub async fn list_with_raw(&mut self) -> Result<(LiveState, Vec<Value>), LiveError> {
        self.load_report().await?;
        let reply = self.call(&Call::get_monitor_data()).await?;
        let raw = match reply.first() {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        let list = reply.into_iter().next().unwrap_or(Value::Array(Vec::new()));
        let processes = normalize_owned(list, self.daemon_env.as_ref())
            .map_err(|e| LiveError::BadReply { method: "getMonitorData", detail: e.to_string() })?;
        Ok((self.state_of(processes), raw))
    }

    /// `getMonitorData`'s list, read into [`RawList`] (not a `Value` tree: see there
    /// for the measurements), normalized.
    fn state_from(&self, list: RawList) -> Result<LiveState, LiveError> {
        let processes = normalize_raw(list, self.daemon_env.as_ref())
            .map_err(|e| LiveError::BadReply { method: "getMonitorData", detail: e.to_string() })?;
        tracing::debug!(processes = processes.len(), "process list normalized");
        Ok(self.state_of(processes))
    }

    fn state_of(&self, processes: Vec<LiveProcess>) -> LiveState {
        LiveState {
            origin: LiveOrigin::Daemon { home: self.home.dir.clone() },
            daemon: Some(self.daemon.clone()),
            read_at_ms: now_ms(),
            processes,
            adopted: Default::default(),
        }
    }

    /// Re-reads the list and confirms `pm_id` still is `expected_name` in an owned
    /// namespace. Call it immediately before each mutating call.
    pub async fn confirm_owned(
        &mut self,
        pm_id: u64,
        expected_name: &str,
        owned_namespaces: &[String],
    ) -> Result<OwnedProcess, LiveError> {
        let state = self.list().await?;
        let p = state.get(pm_id).ok_or(LiveError::ProcessGone { pm_id })?;
        if p.name != expected_name {
            return Err(LiveError::NameChanged { pm_id, expected: expected_name.to_string(), found: p.name.clone() });
        }
        if !owned_namespaces.contains(&p.namespace) {
            return Err(LiveError::NotOwned { pm_id, name: p.name.clone(), namespace: p.namespace.clone() });
        }
        let kill = p.option_u64("kill_timeout").unwrap_or(1600);
        let listen = p.option_u64("listen_timeout").unwrap_or(3000);
        let budget = Duration::from_millis(kill.saturating_mul(2).saturating_add(listen).saturating_add(2000));
        Ok(OwnedProcess {
            pm_id,
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            status: p.status.clone(),
            exec_mode: p.exec_mode,
            pid: p.pid,
            kill_timeout_ms: kill,
            restarts: p.restarts,
            created_at_ms: p.created_at_ms,
            error_file: p.error_file.clone(),
            budget,
        })
    }

    fn budget(&self, p: &OwnedProcess) -> Duration {
        self.conn.timeout().max(p.budget)
    }

    /// Starts a resolved app with `prepare`, after a fresh read shows its name is
    /// free in every namespace and its namespace is owned. Returns the new `pm_id`s
    /// (one per instance).
    pub async fn start(&mut self, app: &ResolvedApp, owned_namespaces: &[String]) -> Result<Vec<u64>, LiveError> {
        self.start_checked(app, owned_namespaces, false).await
    }

    /// As [`Pm2Client::start`], for an app this project just deleted to start it again
    /// (a replace, a rollback): its name must be free in the owned namespaces, but may
    /// be live in others — those processes were there beside ours before, and `prepare`
    /// over the socket never selects by name, so they are not touched.
    pub async fn start_again(&mut self, app: &ResolvedApp, owned_namespaces: &[String]) -> Result<Vec<u64>, LiveError> {
        self.start_checked(app, owned_namespaces, true).await
    }

    async fn start_checked(&mut self, app: &ResolvedApp, owned_namespaces: &[String], again: bool) -> Result<Vec<u64>, LiveError> {
        let state = self.list().await?;
        self.prepare_if_free(app, owned_namespaces, again, &state).await
    }

    /// Starts several new apps (as [`Pm2Client::start`] each) after one fresh read:
    /// the names are checked against that read, then each app is prepared in turn.
    /// One read instead of one per app keeps the first apply of N apps linear in N.
    /// Results are in the order of `apps`; a name taken fails only that app.
    pub async fn start_all(&mut self, apps: &[&ResolvedApp], owned_namespaces: &[String]) -> Result<Vec<Result<Vec<u64>, LiveError>>, LiveError> {
        let state = self.list().await?;
        let mut results = Vec::with_capacity(apps.len());
        for app in apps {
            results.push(self.prepare_if_free(app, owned_namespaces, false, &state).await);
        }
        Ok(results)
    }

    /// `prepare`, if `app`'s namespace is owned and its name is free in `state`
    /// (in every namespace; with `again`, in the owned ones).
    async fn prepare_if_free(
        &mut self,
        app: &ResolvedApp,
        owned_namespaces: &[String],
        again: bool,
        state: &LiveState,
    ) -> Result<Vec<u64>, LiveError> {
        let (name, namespace) = (app.name().to_string(), app.namespace().to_string());
        if !owned_namespaces.contains(&namespace) {
            return Err(LiveError::NamespaceNotOwned { name, namespace });
        }
        let taken = state
            .by_name(&name)
            .find(|p| !again || owned_namespaces.contains(&p.namespace))
            .map(|p| (p.pm_id, p.namespace.clone()));
        if let Some((pm_id, found_ns)) = taken {
            return Err(LiveError::NameTaken { name, pm_id, namespace: found_ns });
        }
        let call = Call::prepare(app.payload().clone())?;
        let kill = app.payload().get("kill_timeout").and_then(as_u64).unwrap_or(1600);
        let listen = app.payload().get("listen_timeout").and_then(as_u64).unwrap_or(3000);
        let budget = self.conn.timeout().max(Duration::from_millis(kill + listen + 2000));
        let cluster = app.payload().get("exec_mode").and_then(Value::as_str) == Some("cluster_mode");
        let reply = match self.call_within(&call, budget).await {
            Err(LiveError::Timeout { method, after, .. }) if cluster && !self.answers_cluster_calls() => {
                let before: Vec<u64> = state.processes.iter().map(|p| p.pm_id).collect();
                return Err(self.unanswered(method, &name, &namespace, after, |p| !before.contains(&p.pm_id), None).await);
            }
            other => other?,
        };
        // One ChildProcess/Worker clone per instance; only `.pm2_env` is meaningful.
        let ids: Vec<u64> = match reply.first() {
            Some(Value::Array(items)) => {
                items.iter().filter_map(|i| i.get("pm2_env").and_then(|e| e.get("pm_id")).and_then(as_u64)).collect()
            }
            _ => Vec::new(),
        };
        if ids.is_empty() {
            return Err(LiveError::BadReply { method: "prepare", detail: "no process was started".into() });
        }
        Ok(ids)
    }

    /// Stops one process (as `pm2 stop <id>`: `stopWatch`, `stopProcessId`, then a
    /// `stop` event on the bus).
    ///
    /// On PM2 5.x/6.x the daemon answers once the main pid is gone, not the tree
    /// (`lib/God/Methods.js` `killProcess`), so a child may still hold the app's port:
    /// the tree seen before the call is waited for, as 7.x does (see
    /// [`Pm2Client::finish_stop`]).
    pub async fn stop(&mut self, p: &OwnedProcess) -> Result<(), LiveError> {
        self.call(&Call::stop_watch(WatchedAction::Stop, p.pm_id)).await?;
        let budget = self.budget(p);
        let tree = self.tree_to_wait_for(p);
        self.call_within(&Call::stop_process_id(p.pm_id), budget).await?;
        self.finish_stop(p, &tree).await;
        self.notify(p.pm_id, NotifyAction::Stop).await
    }

    /// Whether the daemon answers a cluster start/restart/reload whose worker exits
    /// before "online" (7.x does; 5.x/6.x never do).
    fn answers_cluster_calls(&self) -> bool {
        Pm2Version::parse(&self.version).is_none_or(|v| v.answers_cluster_exit_before_online())
    }

    /// On a daemon whose stop waits for the main pid only (5.x/6.x): the process tree
    /// of `p` right now, to wait for after the stop. Empty on 7.x.
    fn tree_to_wait_for(&self, p: &OwnedProcess) -> Vec<procs::ProcId> {
        let waits_for_tree = Pm2Version::parse(&self.version).is_none_or(|v| v.stop_waits_for_tree());
        match p.pid {
            Some(pid) if !waits_for_tree => procs::tree(pid),
            _ => Vec::new(),
        }
    }

    /// After a stop the daemon reported done: waits for the rest of `tree` (what 7.x's
    /// `killProcess` waits for), and SIGKILLs what is left after `kill_timeout`, as
    /// 7.x does. Every pid was a descendant of the app's process when the stop was
    /// sent, and is checked to be that same process (start time) before a signal.
    async fn finish_stop(&self, p: &OwnedProcess, tree: &[procs::ProcId]) {
        if tree.is_empty() {
            return;
        }
        let grace = Duration::from_millis(p.kill_timeout_ms.saturating_add(1000));
        let left = procs::wait_gone(tree, grace).await;
        if !left.is_empty() {
            tracing::warn!(pm_id = p.pm_id, left = left.len(), "processes of a stopped app outlived its stop; sending SIGKILL as PM2 7 does");
            procs::signal_all(&left, libc::SIGKILL);
            let _ = procs::wait_gone(&left, Duration::from_secs(2)).await;
        }
    }

    /// After a cluster call PM2 5/6 never answered: a fresh read (on a new
    /// connection), then the error that says what it shows. `new` picks the processes
    /// the call made or left (owned, with the app's name); `old_worker` is the
    /// process a reload parked under `_old_<id>`, stopped if it is still there.
    async fn unanswered(
        &mut self,
        method: &'static str,
        name: &str,
        namespace: &str,
        after: Duration,
        new: impl Fn(&LiveProcess) -> bool,
        old_worker: Option<&OwnedProcess>,
    ) -> LiveError {
        let old = match old_worker {
            Some(p) => self.stop_old_worker(p).await,
            None => None,
        };
        let seen = match self.list().await {
            Ok(state) => {
                let procs: Vec<&LiveProcess> =
                    state.processes.iter().filter(|p| p.name == name && p.namespace == namespace && new(p)).collect();
                let pm_ids: Vec<(u64, u64)> = procs.iter().map(|p| (p.pm_id, p.restarts)).collect();
                let what: Vec<String> = procs.iter().map(|p| format!("pm_id {} {}", p.pm_id, p.status.as_str())).collect();
                (pm_ids, if what.is_empty() { "no process of it".to_string() } else { what.join(", ") })
            }
            Err(e) => (Vec::new(), format!("nothing: the read failed too ({e})")),
        };
        let mut read = format!("a fresh read shows {}", seen.1);
        if let Some(old) = old {
            read.push_str("; ");
            read.push_str(&old);
        }
        LiveError::Unanswered(Box::new(UnansweredCall {
            method,
            name: name.to_string(),
            version: self.version.clone(),
            after,
            read,
            pm_ids: seen.0,
        }))
    }

    /// A reload PM2 5/6 never answered parks the old worker as `_old_<id>`: hidden
    /// from `getMonitorData`, still running, holding the port (`lib/God/Reload.js`).
    /// If `p`'s old pid still runs and is provably that worker of this daemon
    /// ([`procs::is_cluster_worker_of`]), the daemon is asked to delete `_old_<id>`
    /// (what the reload itself does once the new worker listens), and its tree is
    /// waited for. Returns what was done, for the error message.
    async fn stop_old_worker(&mut self, p: &OwnedProcess) -> Option<String> {
        let old = procs::ProcId::of(p.pid?)?;
        let daemon_pid = self.home.daemon_pid().and_then(|d| u32::try_from(d).ok())?;
        if !procs::is_cluster_worker_of(old.pid, daemon_pid, &self.home.dir, p.pm_id, &p.name, &p.namespace) {
            return None;
        }
        if let Ok(state) = self.list().await
            && state.processes.iter().any(|q| q.pid == Some(old.pid))
        {
            return None; // Listed: not a leftover (the reload did not get that far).
        }
        let tree = procs::tree(old.pid);
        let budget = self.budget(p);
        let asked = self.call_within(&Call::delete_old_worker(p.pm_id), budget).await;
        let mut left = procs::wait_gone(&tree, Duration::from_millis(p.kill_timeout_ms.saturating_add(1000))).await;
        if !left.is_empty() {
            procs::signal_all(&left, libc::SIGKILL);
            left = procs::wait_gone(&left, Duration::from_secs(2)).await;
        }
        Some(match (asked, left.is_empty()) {
            (_, true) => format!("the old worker (pid {}) left running under _old_{} was stopped", old.pid, p.pm_id),
            (Err(e), false) => format!("the old worker (pid {}) left under _old_{} could not be stopped: {e}", old.pid, p.pm_id),
            (Ok(_), false) => format!("the old worker (pid {}) left under _old_{} is still running", old.pid, p.pm_id),
        })
    }

    /// Restarts one process, merging `env` into its env (pm2-internals.md §4: values
    /// are added or overwritten, never removed; a `current_conf` key, if given, is
    /// applied to `pm2_env` by the daemon). Returns the restart count the daemon
    /// reported right after the respawn (the health gate's baseline), when it did.
    pub async fn restart(&mut self, p: &OwnedProcess, env: Map<String, Value>) -> Result<Option<u64>, LiveError> {
        let budget = self.budget(p);
        let tree = self.tree_to_wait_for(p);
        let reply = match self.call_within(&Call::restart_process_id(p.pm_id, env), budget).await {
            Err(LiveError::Timeout { method, after, .. }) if p.exec_mode == ExecMode::Cluster && !self.answers_cluster_calls() => {
                return Err(self.unanswered(method, &p.name, &p.namespace, after, |q| q.pm_id == p.pm_id, None).await);
            }
            other => other?,
        };
        self.finish_stop(p, &tree).await;
        self.notify(p.pm_id, NotifyAction::Restart).await?;
        Ok(reply.first().and_then(|r| r.get("pm2_env")).and_then(|e| e.get("restart_time")).and_then(as_u64))
    }

    /// Starts one more process cloned from `p` (`duplicateProcessId`, as `pm2 scale`
    /// does); returns the new `pm_id`. The clone keeps `p`'s spec and stamp.
    pub async fn duplicate(&mut self, p: &OwnedProcess) -> Result<u64, LiveError> {
        let budget = self.budget(p);
        let hazard = p.exec_mode == ExecMode::Cluster && !self.answers_cluster_calls();
        let before: Vec<u64> = if hazard { self.list().await?.processes.iter().map(|q| q.pm_id).collect() } else { Vec::new() };
        let reply = match self.call_within(&Call::duplicate_process_id(p.pm_id), budget).await {
            Err(LiveError::Timeout { method, after, .. }) if hazard => {
                return Err(self.unanswered(method, &p.name, &p.namespace, after, |q| !before.contains(&q.pm_id), None).await);
            }
            other => other?,
        };
        reply
            .first()
            .and_then(|r| r.get("pm2_env"))
            .and_then(|e| e.get("pm_id"))
            .and_then(as_u64)
            .ok_or_else(|| LiveError::BadReply { method: "duplicateProcessId", detail: "no pm_id in the reply".into() })
    }

    /// Reloads one process: zero-downtime for an online cluster app, a restart otherwise.
    pub async fn reload(&mut self, p: &OwnedProcess, env: Map<String, Value>) -> Result<(), LiveError> {
        let budget = self.budget(p);
        match self.call_within(&Call::reload_process_id(p.pm_id, env), budget).await {
            Err(LiveError::Timeout { method, after, .. }) if p.exec_mode == ExecMode::Cluster && !self.answers_cluster_calls() => {
                return Err(self.unanswered(method, &p.name, &p.namespace, after, |q| q.pm_id == p.pm_id, Some(p)).await);
            }
            other => other?,
        };
        self.notify(p.pm_id, NotifyAction::Reload).await
    }

    /// Deletes one process (stopping it first, as the daemon does). Consumes the
    /// confirmation: the `pm_id` is gone afterwards and may be reused by PM2.
    pub async fn delete(&mut self, p: OwnedProcess) -> Result<(), LiveError> {
        self.call(&Call::stop_watch(WatchedAction::Delete, p.pm_id)).await?;
        let budget = self.budget(&p);
        let tree = self.tree_to_wait_for(&p);
        // No `delete` notification: the CLI sends it after the entry is gone, so the
        // daemon only answers "process id doesnt exists" (pm2-internals.md §0.6).
        self.call_within(&Call::delete_process_id(p.pm_id), budget).await?;
        self.finish_stop(&p, &tree).await;
        Ok(())
    }

    async fn notify(&mut self, pm_id: u64, action: NotifyAction) -> Result<(), LiveError> {
        match self.call(&Call::notify_by_process_id(pm_id, action)).await {
            // The action itself succeeded; a failed notification only loses a bus event.
            Err(LiveError::Remote { message, .. }) => {
                tracing::debug!(pm_id, %message, "notifyByProcessId failed");
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
