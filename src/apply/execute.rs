//! Executing a plan's changes against the daemon, then the health gate.
//!
//! Every mutating call goes through [`Pm2Client`], which only accepts a numeric
//! `pm_id` that a fresh read has just confirmed is owned and has the expected name
//! (promise 1), and never starts a name that is live anywhere. Order: deletes,
//! replaces, creates, updates, scales — so names and ports are freed before they
//! are taken again. Starts and restarts are fast; the waiting is in the health gate
//! (promise 6), which watches every started or restarted process at once, so 100
//! new apps take about one `min_uptime`, not a hundred.
//!
//! Which call each action makes follows pm2-internals.md §4 (observed on PM2 7.0.4):
//! `update` is `restartProcessId` with the CLI's own restart env (`current_conf`),
//! or `reloadProcessId` for an online cluster process (zero downtime); `scale` is
//! `duplicateProcessId` or `deleteProcessId`; `replace` is delete, then `prepare`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::journal::JournalError;
use crate::desired::DesiredApp;
use crate::live::{
    BusEvent, EventStream, ExecMode, LiveError, LiveState, OwnedProcess, Pm2Client, ProcessStatus, ResolvedApp,
};
use crate::plan::{Action, Change, Plan};

/// PM2's default `min_uptime` (constants.js), used when the app sets none.
pub const DEFAULT_MIN_UPTIME: Duration = Duration::from_millis(1000);

/// How the executor behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The owned namespaces.
    pub owned: Vec<String>,
    /// How often the health gate re-reads the list between bus events.
    pub poll: Duration,
    /// Extra time a process may take to come online, beyond its `min_uptime`.
    pub gate_slack: Duration,
    /// On failure, restore the apps this apply changed to their spec before it.
    pub rollback: bool,
}

/// What the executor reports as it goes (the command prints it and journals it).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// One PM2 call on one app finished (or failed).
    Action(ActionRecord),
    /// A process passed the health gate.
    Healthy { app: String, pm_id: u64, online_ms: u64 },
    /// A process failed the health gate and was stopped.
    Unhealthy(GateFailure),
    /// An app was restored to its spec from before this apply.
    RolledBack { app: String, pm_ids: Vec<u64>, error: Option<String> },
    /// The health gate is still waiting (sent when it starts, then every
    /// [`GATE_REPORT_EVERY`]): for progress lines only, not journaled.
    GateWaiting { healthy: usize, total: usize, elapsed_ms: u64 },
}

/// How often the health gate says it is still waiting.
pub const GATE_REPORT_EVERY: Duration = Duration::from_secs(5);

/// One PM2 call.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    pub app: String,
    pub namespace: String,
    /// The plan's action this call serves.
    pub action: Action,
    /// `start`, `restart`, `reload`, `delete`, `duplicate`.
    pub call: &'static str,
    /// The process acted on (`None` for a start).
    pub pm_id: Option<u64>,
    /// Processes it created.
    pub new_pm_ids: Vec<u64>,
    pub duration_ms: u64,
    /// Started in one call with this many apps (`start` of several creates): then
    /// `duration_ms` is that one call's, shared, not this app's alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Why it failed; `None` on success.
    pub error: Option<String>,
}

/// A process that did not stay online.
#[derive(Debug, Clone, Serialize)]
pub struct GateFailure {
    pub app: String,
    pub pm_id: u64,
    /// What happened: `crashed`, `errored`, `stopped`, `did not stay online`, `gone`.
    pub what: String,
    pub restarts: u64,
    /// Whether it was stopped (so it cannot crash-loop).
    pub stopped: bool,
    /// The last lines of its error log.
    pub log_tail: Vec<String>,
}

/// What an apply did.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub actions: Vec<ActionRecord>,
    pub healthy: usize,
    pub failures: Vec<GateFailure>,
    /// Apps restored by `--rollback`.
    pub rolled_back: Vec<String>,
    /// The first error that stopped the apply early (a failed call, a lost daemon).
    pub aborted: Option<String>,
}

impl Outcome {
    /// Whether everything was done and every process is healthy.
    pub fn succeeded(&self) -> bool {
        self.aborted.is_none() && self.failures.is_empty() && self.actions.iter().all(|a| a.error.is_none())
    }

    /// Names of apps this apply changed (at least one call succeeded).
    pub fn changed_apps(&self) -> Vec<String> {
        let mut apps: Vec<String> = Vec::new();
        for a in self.actions.iter().filter(|a| a.error.is_none()) {
            if !apps.contains(&a.app) {
                apps.push(a.app.clone());
            }
        }
        apps
    }
}

/// Receives each [`Event`]; an error (the journal cannot be written) stops the apply.
pub type Observer<'a> = dyn FnMut(&Event) -> Result<(), JournalError> + 'a;

/// A started or restarted process waiting in the health gate.
#[derive(Debug, Clone)]
struct Pending {
    app: String,
    pm_id: u64,
    /// The restart count right after our call; more means it crashed since.
    baseline: Option<u64>,
    min_uptime: Duration,
    deadline: Instant,
}

/// Runs a plan: the calls, then the health gate, then (on failure, if asked) the
/// rollback. `resolved` holds the payload of every app to start or update (by name);
/// `before_raw` the raw list read before the apply (for rollback).
pub struct Executor<'a> {
    client: &'a mut Pm2Client,
    settings: &'a Settings,
    observer: &'a mut Observer<'a>,
    outcome: Outcome,
    pending: Vec<Pending>,
    bus: Option<EventStream>,
}

impl<'a> Executor<'a> {
    /// An executor on a connected client.
    pub fn new(client: &'a mut Pm2Client, settings: &'a Settings, observer: &'a mut Observer<'a>) -> Self {
        Self { client, settings, observer, outcome: Outcome::default(), pending: Vec::new(), bus: None }
    }

    /// Executes every change of `plan` in a safe order, gates, and rolls back on failure
    /// if the settings say so.
    pub async fn run(
        mut self,
        plan: &Plan,
        desired: &[DesiredApp],
        resolved: &BTreeMap<String, ResolvedApp>,
        before_raw: &[Value],
    ) -> Outcome {
        // Subscribed before the first call, so no crash of a process we start is missed.
        let timeout = self.client.timeout();
        self.bus = EventStream::subscribe(self.client.home(), timeout, true).await.ok();
        let by_name: BTreeMap<&str, &DesiredApp> = desired.iter().map(|d| (d.name.as_str(), d)).collect();
        let order = [Action::Delete, Action::Replace, Action::Create, Action::Update, Action::Scale];
        'outer: for action in order {
            if action == Action::Create {
                if let Err(stop) = self.create_all(plan, &by_name, resolved).await {
                    self.outcome.aborted = Some(stop);
                    break 'outer;
                }
                continue;
            }
            for change in plan.changes.iter().filter(|c| c.action == action) {
                let app = by_name.get(change.name.as_str()).copied();
                if let Err(stop) = self.change(change, app, resolved.get(&change.name)).await {
                    self.outcome.aborted = Some(stop);
                    break 'outer;
                }
            }
        }
        if let Err(stop) = self.gate().await {
            self.outcome.aborted.get_or_insert(stop);
        }
        if !self.outcome.succeeded() && self.settings.rollback {
            self.rollback(before_raw).await;
        }
        self.outcome
    }

    fn emit(&mut self, event: Event) -> Result<(), String> {
        let result = (self.observer)(&event).map_err(|e| e.to_string());
        match event {
            Event::Action(record) => self.outcome.actions.push(record),
            Event::Healthy { .. } => self.outcome.healthy += 1,
            Event::Unhealthy(failure) => self.outcome.failures.push(failure),
            Event::RolledBack { app, error: None, .. } => self.outcome.rolled_back.push(app),
            Event::RolledBack { .. } | Event::GateWaiting { .. } => {}
        }
        result
    }

    /// Records one call's result; a failed call stops the apply (`Err` with why).
    fn record(
        &mut self,
        change: &Change,
        call: &'static str,
        pm_id: Option<u64>,
        started: Instant,
        result: Result<Vec<u64>, LiveError>,
    ) -> Result<Vec<u64>, String> {
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.record_timed(change, call, pm_id, (duration_ms, None), result)
    }

    /// As [`Self::record`], with the duration measured by the caller (a batch's one call).
    fn record_timed(
        &mut self,
        change: &Change,
        call: &'static str,
        pm_id: Option<u64>,
        (duration_ms, batch): (u64, Option<usize>),
        result: Result<Vec<u64>, LiveError>,
    ) -> Result<Vec<u64>, String> {
        let (new_pm_ids, error) = match &result {
            Ok(ids) => (ids.clone(), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let record = ActionRecord {
            app: change.name.clone(),
            namespace: change.namespace.clone(),
            action: change.action,
            call,
            pm_id,
            new_pm_ids,
            duration_ms,
            batch,
            error: error.clone(),
        };
        self.emit(Event::Action(record))?;
        match (result, error) {
            (Ok(ids), _) => Ok(ids),
            (Err(_), Some(message)) => Err(format!("{call} of `{}` failed: {message}", change.name)),
            (Err(e), None) => Err(e.to_string()),
        }
    }

    async fn change(&mut self, change: &Change, app: Option<&DesiredApp>, resolved: Option<&ResolvedApp>) -> Result<(), String> {
        let needs_spec = matches!(change.action, Action::Create | Action::Replace | Action::Update);
        if needs_spec && (app.is_none() || resolved.is_none()) {
            return Err(format!("internal: no resolved spec for `{}`", change.name));
        }
        match change.action {
            Action::Noop => Ok(()),
            Action::Delete => {
                for &pm_id in &change.pm_ids {
                    self.delete(change, pm_id).await?;
                }
                Ok(())
            }
            Action::Replace => {
                for &pm_id in &change.pm_ids {
                    self.delete(change, pm_id).await?;
                }
                self.start(change, app, resolved, true).await
            }
            Action::Create => self.start(change, app, resolved, false).await, // (batched in `run`)
            Action::Update => {
                let (Some(app), Some(resolved)) = (app, resolved) else { return Ok(()) };
                let keep = self.shrink(change, app.instances).await?;
                for pm_id in keep.iter().copied() {
                    self.update(change, app, resolved, pm_id).await?;
                }
                self.grow(change, app, &keep).await
            }
            Action::Scale => {
                let Some(app) = app else { return Ok(()) };
                let keep = self.shrink(change, app.instances).await?;
                self.grow(change, app, &keep).await
            }
        }
    }

    async fn confirm(&mut self, change: &Change, pm_id: u64) -> Result<OwnedProcess, LiveError> {
        self.client.confirm_owned(pm_id, &change.name, &self.settings.owned).await
    }

    async fn delete(&mut self, change: &Change, pm_id: u64) -> Result<(), String> {
        let started = Instant::now();
        let result = match self.confirm(change, pm_id).await {
            Ok(p) => self.client.delete(p).await.map(|()| Vec::new()),
            Err(e) => Err(e),
        };
        self.record(change, "delete", Some(pm_id), started, result).map(|_| ())
    }

    /// Starts an app; `again` for one this apply just deleted (see [`Pm2Client::start_again`]).
    async fn start(&mut self, change: &Change, app: Option<&DesiredApp>, resolved: Option<&ResolvedApp>, again: bool) -> Result<(), String> {
        let (Some(app), Some(resolved)) = (app, resolved) else { return Ok(()) };
        let started = Instant::now();
        let result = if again {
            self.client.start_again(resolved, &self.settings.owned).await
        } else {
            self.client.start(resolved, &self.settings.owned).await
        };
        let ids = self.record(change, "start", None, started, result)?;
        for pm_id in ids {
            self.wait_for(app, pm_id, Some(0));
        }
        Ok(())
    }

    /// Starts every `create` of the plan behind one fresh read ([`Pm2Client::start_all`]).
    async fn create_all(
        &mut self,
        plan: &Plan,
        by_name: &BTreeMap<&str, &DesiredApp>,
        resolved: &BTreeMap<String, ResolvedApp>,
    ) -> Result<(), String> {
        let mut batch: Vec<(&Change, &DesiredApp, &ResolvedApp)> = Vec::new();
        for change in plan.changes.iter().filter(|c| c.action == Action::Create) {
            match (by_name.get(change.name.as_str()), resolved.get(&change.name)) {
                (Some(app), Some(spec)) => batch.push((change, app, spec)),
                _ => return Err(format!("internal: no resolved spec for `{}`", change.name)),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let specs: Vec<&ResolvedApp> = batch.iter().map(|(_, _, spec)| *spec).collect();
        let results = match self.client.start_all(&specs, &self.settings.owned).await {
            Ok(results) => results,
            Err(e) => return self.record(batch[0].0, "start", None, started, Err(e)).map(|_| ()),
        };
        // One call started them all: each record carries that call's duration, measured
        // once (timing each from the batch's start made them add up).
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let size = (batch.len() > 1).then_some(batch.len());
        for ((change, app, _), result) in batch.into_iter().zip(results) {
            for pm_id in self.record_timed(change, "start", None, (duration_ms, size), result)? {
                self.wait_for(app, pm_id, Some(0));
            }
        }
        Ok(())
    }

    /// Deletes the highest `pm_id`s beyond `instances`; returns the ones kept.
    async fn shrink(&mut self, change: &Change, instances: u64) -> Result<Vec<u64>, String> {
        let mut ids = change.pm_ids.clone();
        ids.sort_unstable();
        let keep = usize::try_from(instances).unwrap_or(usize::MAX).min(ids.len());
        for &pm_id in ids[keep..].iter().rev() {
            self.delete(change, pm_id).await?;
        }
        ids.truncate(keep);
        Ok(ids)
    }

    /// Duplicates the first kept process until there are `app.instances`.
    async fn grow(&mut self, change: &Change, app: &DesiredApp, kept: &[u64]) -> Result<(), String> {
        let Some(&source) = kept.first() else { return Ok(()) };
        let missing = app.instances.saturating_sub(kept.len() as u64);
        for _ in 0..missing {
            let started = Instant::now();
            let result = match self.confirm(change, source).await {
                Ok(p) => self.client.duplicate(&p).await.map(|id| vec![id]),
                Err(e) => Err(e),
            };
            for pm_id in self.record(change, "duplicate", Some(source), started, result)? {
                self.wait_for(app, pm_id, Some(0));
            }
        }
        Ok(())
    }

    async fn update(&mut self, change: &Change, app: &DesiredApp, resolved: &ResolvedApp, pm_id: u64) -> Result<(), String> {
        let started = Instant::now();
        let env = resolved.update_env().clone();
        let (call, result) = match self.confirm(change, pm_id).await {
            // Zero downtime where PM2 allows it: a new worker takes over before the old
            // one is stopped. Everything an `update` changes is applied by a reload.
            Ok(p) if p.exec_mode() == ExecMode::Cluster && *p.status() == ProcessStatus::Online => {
                ("reload", self.client.reload(&p, env).await.map(|()| None))
            }
            Ok(p) => ("restart", self.client.restart(&p, env).await),
            Err(e) => ("restart", Err(e)),
        };
        let baseline = result.as_ref().ok().copied().flatten();
        self.record(change, call, Some(pm_id), started, result.map(|_| Vec::new()))?;
        self.wait_for(app, pm_id, baseline);
        Ok(())
    }

    fn wait_for(&mut self, app: &DesiredApp, pm_id: u64, baseline: Option<u64>) {
        let min_uptime = app
            .options
            .get("min_uptime")
            .and_then(crate::live::model::as_u64)
            .map_or(DEFAULT_MIN_UPTIME, Duration::from_millis);
        let listen = app.options.get("listen_timeout").and_then(crate::live::model::as_u64).unwrap_or(0);
        let deadline = Instant::now() + min_uptime + Duration::from_millis(listen) + self.settings.gate_slack;
        self.pending.push(Pending { app: app.name.clone(), pm_id, baseline, min_uptime, deadline });
    }

    /// The health gate: every pending process must be online for its `min_uptime`
    /// without a restart. A process that crashes is stopped at once, so it cannot loop.
    async fn gate(&mut self) -> Result<(), String> {
        let gate_started = Instant::now();
        let total = self.pending.len();
        let mut reported: Option<Instant> = None;
        while !self.pending.is_empty() {
            let state = self.client.list().await.map_err(|e| format!("health gate: {e}"))?;
            let now = Instant::now();
            if reported.is_none_or(|at| now.duration_since(at) >= GATE_REPORT_EVERY) {
                reported = Some(now);
                let elapsed_ms = u64::try_from(now.duration_since(gate_started).as_millis()).unwrap_or(u64::MAX);
                self.emit(Event::GateWaiting { healthy: total - self.pending.len(), total, elapsed_ms })?;
            }
            let mut still = Vec::new();
            for p in std::mem::take(&mut self.pending) {
                match judge(&p, &state, now) {
                    Verdict::Wait => still.push(p),
                    Verdict::Healthy(online_ms) => {
                        self.emit(Event::Healthy { app: p.app.clone(), pm_id: p.pm_id, online_ms })?;
                    }
                    Verdict::Failed(what) => {
                        let failure = self.fail(&p, &state, what).await;
                        self.emit(Event::Unhealthy(failure))?;
                    }
                }
            }
            self.pending = still;
            if self.pending.is_empty() {
                break;
            }
            self.wait_event().await;
        }
        Ok(())
    }

    /// Waits for the next poll tick, or sooner for a bus event about a pending process.
    async fn wait_event(&mut self) {
        let tick = tokio::time::sleep(self.settings.poll);
        tokio::pin!(tick);
        loop {
            let Some(bus) = self.bus.as_mut() else {
                tick.as_mut().await;
                return;
            };
            tokio::select! {
                () = &mut tick => return,
                event = bus.next() => match event {
                    Ok(Some(BusEvent::Process(e))) if e.pm_id.is_some_and(|id| self.pending.iter().any(|p| p.pm_id == id)) => return,
                    Ok(Some(_)) => {}
                    // The bus closed or failed: polling alone still works.
                    _ => { self.bus = None; }
                },
            }
        }
    }

    /// Stops a failed process (confirmed owned) and collects its last error lines.
    async fn fail(&mut self, p: &Pending, state: &LiveState, what: String) -> GateFailure {
        let live = state.get(p.pm_id);
        let restarts = live.map_or(0, |l| l.restarts);
        let error_file: Option<PathBuf> = live.and_then(|l| l.error_file.clone());
        let stopped = match self.client.confirm_owned(p.pm_id, &p.app, &self.settings.owned).await {
            Ok(owned) if matches!(owned.status(), ProcessStatus::Stopped) => true,
            Ok(owned) => self.client.stop(&owned).await.is_ok(),
            Err(_) => false,
        };
        let restarts = match self.client.list().await {
            Ok(after) => after.get(p.pm_id).map_or(restarts, |l| l.restarts),
            Err(_) => restarts,
        };
        GateFailure {
            app: p.app.clone(),
            pm_id: p.pm_id,
            what,
            restarts,
            stopped,
            log_tail: error_file.map(|f| tail(&f, 10)).unwrap_or_default(),
        }
    }

    /// Restores every app this apply changed to what ran before: its processes now
    /// are deleted (each confirmed owned), and what ran before is prepared again from
    /// the saved `pm2_env`, as `pm2 resurrect` does. An app that did not exist before
    /// is just deleted.
    async fn rollback(&mut self, before_raw: &[Value]) {
        for app in self.outcome.changed_apps().into_iter().rev() {
            let result = self.rollback_app(&app, before_raw).await;
            let (pm_ids, error) = match result {
                Ok(ids) => (ids, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let _ = self.emit(Event::RolledBack { app, pm_ids, error });
        }
    }

    async fn rollback_app(&mut self, app: &str, before_raw: &[Value]) -> Result<Vec<u64>, String> {
        let owned = self.settings.owned.clone();
        let state = self.client.list().await.map_err(|e| e.to_string())?;
        let now: Vec<u64> = state.by_name(app).filter(|p| owned.contains(&p.namespace)).map(|p| p.pm_id).collect();
        for pm_id in now {
            let p = self.client.confirm_owned(pm_id, app, &owned).await.map_err(|e| e.to_string())?;
            self.client.delete(p).await.map_err(|e| e.to_string())?;
        }
        let saved: Vec<&Value> = before_raw
            .iter()
            .filter(|e| raw_str(e, "name") == Some(app) && raw_str(e, "namespace").is_some_and(|ns| owned.iter().any(|o| o == ns)))
            .collect();
        let Some(first) = saved.first() else { return Ok(Vec::new()) };
        let restored = ResolvedApp::from_saved(first, saved.len())
            .ok_or_else(|| format!("the saved spec of `{app}` cannot be prepared again"))?;
        self.client.start_again(&restored, &owned).await.map_err(|e| e.to_string())
    }
}

fn raw_str<'v>(entry: &'v Value, key: &str) -> Option<&'v str> {
    entry.get("pm2_env").and_then(|e| e.get(key)).or_else(|| entry.get(key)).and_then(Value::as_str)
}

enum Verdict {
    Wait,
    Healthy(u64),
    Failed(String),
}

fn judge(p: &Pending, state: &LiveState, now: Instant) -> Verdict {
    let Some(live) = state.get(p.pm_id).filter(|l| l.name == p.app) else {
        return Verdict::Failed("gone: the process disappeared".into());
    };
    if p.baseline.is_some_and(|b| live.restarts > b) {
        return Verdict::Failed(format!("crashed: restarted {} time(s) within its min_uptime", live.restarts - p.baseline.unwrap_or(0)));
    }
    match live.status {
        ProcessStatus::Errored => return Verdict::Failed("errored".into()),
        ProcessStatus::Stopped => return Verdict::Failed("stopped".into()),
        ProcessStatus::WaitingRestart => return Verdict::Failed("crashed: waiting to restart".into()),
        _ => {}
    }
    if live.status == ProcessStatus::Online {
        let online = live.uptime_ms(state.read_at_ms).unwrap_or(0);
        if u128::from(online) >= p.min_uptime.as_millis() {
            return Verdict::Healthy(online);
        }
    }
    if now >= p.deadline {
        return Verdict::Failed(format!("did not stay online for its min_uptime ({} ms) in time", p.min_uptime.as_millis()));
    }
    Verdict::Wait
}

/// The last `n` non-empty lines of a log file (reading at most its last 64 KiB).
fn tail(path: &std::path::Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| (*l).to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("err.log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let t = tail(&path, 3);
        assert_eq!(t, vec!["line 28", "line 29", "line 30"]);
        assert!(tail(&dir.path().join("missing"), 3).is_empty());
    }
}
