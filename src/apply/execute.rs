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
//! or `reloadProcessId` for an online cluster process (zero downtime: one instance
//! at a time, each gated before the next); `scale` is
//! `duplicateProcessId` or `deleteProcessId`; `replace` is delete, then `prepare`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::journal::JournalError;
use crate::desired::DesiredApp;
use crate::config::project::HealthSection;
use crate::live::health::{GateFault, GateRule, GateVerdict, GateWatch, Sample};
use crate::live::{
    BusEvent, EventStream, ExecMode, LiveError, LiveState, OwnedProcess, Pm2Client, ProcessStatus, ResolvedApp,
};
use crate::plan::{Action, Change, Plan};

/// How the executor behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The owned namespaces.
    pub owned: Vec<String>,
    /// How often the health gate re-reads the list between bus events.
    pub poll: Duration,
    /// Extra time a process may take to come online, beyond its `min_uptime`, its
    /// settle window and (for `wait_ready`) its `listen_timeout`.
    pub gate_slack: Duration,
    /// `[health]`: the settle window, per app.
    pub health: HealthSection,
    /// On failure, restore the apps this apply changed to their spec before it.
    pub rollback: bool,
}

/// What the executor reports as it goes (the command prints it and journals it).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A PM2 call is about to be made (journaled, fsynced, before the call).
    Intent(Intent),
    /// One PM2 call on one app finished (or failed, or its outcome is unknown).
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

/// A call about to be made: what, on what, and the process as it was, so that the
/// next apply can tell whether a call whose outcome is unknown was carried out.
#[derive(Debug, Clone, Serialize)]
pub struct Intent {
    /// Numbers the calls of one apply; its [`ActionRecord`] has the same.
    pub seq: u64,
    pub app: String,
    pub namespace: String,
    pub action: Action,
    pub call: &'static str,
    pub pm_id: Option<u64>,
    /// The process before the call (`None` for a start).
    pub pid: Option<u32>,
    pub restarts: Option<u64>,
    pub created_at_ms: Option<i64>,
}

/// How often the health gate says it is still waiting.
pub const GATE_REPORT_EVERY: Duration = Duration::from_secs(5);

/// One PM2 call.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    /// The [`Intent`] this settles.
    pub seq: u64,
    /// `ok`, `failed`, or `unknown` (no answer in time: it may still be carried out;
    /// the next apply's read settles it).
    pub outcome: &'static str,
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
    /// What happened, in words (starts with `crashed`, `errored`, `stopped`, `exited`,
    /// `not ready`, `gone` or `did not pass`).
    pub what: String,
    /// Whether it crashed (not stopped by someone, never ready, or too slow).
    pub crashed: bool,
    pub restarts: u64,
    /// Whether it was stopped (so it cannot crash-loop).
    pub stopped: bool,
    /// The lines its error log got since the call (at most the last 20).
    pub log_tail: Vec<String>,
    /// Its error log.
    pub error_log: Option<PathBuf>,
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
    /// What verification saw change by itself (a foreign app crashing): told, not failed.
    pub warnings: Vec<String>,
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
    watch: GateWatch,
    /// Error-log sizes just before the call: what is past them is this start's.
    logs: LogMarks,
}

/// Sizes of log files at one moment.
type LogMarks = BTreeMap<PathBuf, u64>;

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
    seq: u64,
    /// Error-log sizes taken before the current call.
    marks: LogMarks,
}

impl<'a> Executor<'a> {
    /// An executor on a connected client.
    pub fn new(client: &'a mut Pm2Client, settings: &'a Settings, observer: &'a mut Observer<'a>) -> Self {
        Self { client, settings, observer, outcome: Outcome::default(), pending: Vec::new(), bus: None, seq: 0, marks: LogMarks::new() }
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
            Event::Intent(_) => {}
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
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if outcome_unknown(e) => "unknown",
            Err(_) => "failed",
        };
        let record = ActionRecord {
            seq: self.seq,
            outcome,
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
                for (i, pm_id) in keep.iter().copied().enumerate() {
                    self.update(change, app, resolved, pm_id).await?;
                    // A cluster app rolls out one instance at a time: each reloaded
                    // worker passes the health gate before the next one is touched,
                    // so a bad release stops at its first instance.
                    if app.exec_mode == ExecMode::Cluster && i + 1 < keep.len() {
                        self.gate().await?;
                        if self.outcome.failures.iter().any(|f| f.app == change.name) {
                            return Err(format!(
                                "`{}`: instance pm_id {pm_id} failed the health gate; the instances after it were not touched",
                                change.name
                            ));
                        }
                    }
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
            Ok(p) => {
                self.intent(change, "delete", Some(&p))?;
                self.client.delete(p).await.map(|()| Vec::new())
            }
            Err(e) => {
                self.intent(change, "delete", None)?;
                Err(e)
            }
        };
        self.record(change, "delete", Some(pm_id), started, result).map(|_| ())
    }

    /// Starts an app; `again` for one this apply just deleted (see [`Pm2Client::start_again`]).
    async fn start(&mut self, change: &Change, app: Option<&DesiredApp>, resolved: Option<&ResolvedApp>, again: bool) -> Result<(), String> {
        let (Some(app), Some(resolved)) = (app, resolved) else { return Ok(()) };
        self.marks = mark_logs_of_payload(resolved.payload());
        self.intent(change, "start", None)?;
        let started = Instant::now();
        let result = if again {
            self.client.start_again(resolved, &self.settings.owned).await
        } else {
            self.client.start(resolved, &self.settings.owned).await
        };
        let unanswered = unanswered(&result);
        let timed_out = matches!(&result, Err(e) if outcome_unknown(e));
        let recorded = self.record(change, "start", None, started, result);
        if recorded.is_err() {
            self.gate_unanswered(app, &unanswered);
        }
        if timed_out {
            self.settle_start(app).await;
        }
        for pm_id in recorded? {
            self.wait_for(app, pm_id, Some(0));
        }
        Ok(())
    }

    /// A start that got no answer in time may still have started processes (a cluster
    /// `wait_ready` app: `prepare` answers only once every worker is ready). A fresh read
    /// settles it: every process of the app that is not yet gated is gated now, so what
    /// came up is judged (and stopped if unhealthy), not left running unseen.
    async fn settle_start(&mut self, app: &DesiredApp) {
        let state = match self.fresh_list().await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the daemon after a start without an answer");
                return;
            }
        };
        let ids: Vec<u64> = state
            .by_name(&app.name)
            .filter(|p| p.namespace == app.namespace && self.settings.owned.contains(&p.namespace))
            .map(|p| p.pm_id)
            .filter(|id| !self.pending.iter().any(|q| q.pm_id == *id))
            .collect();
        for pm_id in ids {
            tracing::debug!(pm_id, app = %app.name, "a start without an answer brought up a process: gating it");
            self.wait_for(app, pm_id, None);
        }
    }

    /// A read of the list; after a call that got no answer the connection may still
    /// carry that late answer, so when the read fails it is made on a new connection.
    async fn fresh_list(&mut self) -> Result<LiveState, LiveError> {
        match self.client.list().await {
            Ok(state) => Ok(state),
            Err(first) => {
                tracing::debug!(error = %first, "reading again on a new connection");
                let home = self.client.home().clone();
                let timeout = self.client.timeout();
                *self.client = Pm2Client::connect(&home, timeout).await?;
                self.client.list().await
            }
        }
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
        // Every start's intent is on disk before the first `prepare`.
        let first_seq = self.seq + 1;
        let mut marks = LogMarks::new();
        for (change, _, spec) in &batch {
            marks.extend(mark_logs_of_payload(spec.payload()));
            self.intent(change, "start", None)?;
        }
        self.marks = marks;
        let results = match self.client.start_all(&specs, &self.settings.owned).await {
            Ok(results) => results,
            Err(e) => {
                self.seq = first_seq;
                return self.record(batch[0].0, "start", None, started, Err(e)).map(|_| ());
            }
        };
        // One call started them all: each record carries that call's duration, measured
        // once (timing each from the batch's start made them add up).
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let size = (batch.len() > 1).then_some(batch.len());
        let mut first_error = None;
        for (i, ((change, app, _), result)) in batch.into_iter().zip(results).enumerate() {
            self.seq = first_seq + i as u64;
            let unanswered = unanswered(&result);
            let timed_out = matches!(&result, Err(e) if outcome_unknown(e));
            match self.record_timed(change, "start", None, (duration_ms, size), result) {
                Ok(ids) => {
                    for pm_id in ids {
                        self.wait_for(app, pm_id, Some(0));
                    }
                }
                Err(e) => {
                    self.gate_unanswered(app, &unanswered);
                    if timed_out {
                        self.settle_start(app).await;
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
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
                Ok(p) => {
                    self.marks = mark_logs_of(p.error_file());
                    self.intent(change, "duplicate", Some(&p))?;
                    self.client.duplicate(&p).await.map(|id| vec![id])
                }
                Err(e) => {
                    self.intent(change, "duplicate", None)?;
                    Err(e)
                }
            };
            let unanswered = unanswered(&result);
            for pm_id in self.record(change, "duplicate", Some(source), started, result).inspect_err(|_| self.gate_unanswered(app, &unanswered))? {
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
                self.marks = mark_logs_of(p.error_file());
                self.intent(change, "reload", Some(&p))?;
                ("reload", self.client.reload(&p, env).await.map(|()| None))
            }
            Ok(p) => {
                self.marks = mark_logs_of(p.error_file());
                self.intent(change, "restart", Some(&p))?;
                ("restart", self.client.restart(&p, env).await)
            }
            Err(e) => {
                self.intent(change, "restart", None)?;
                ("restart", Err(e))
            }
        };
        let baseline = result.as_ref().ok().copied().flatten();
        let unanswered = unanswered(&result);
        self.record(change, call, Some(pm_id), started, result.map(|_| Vec::new())).inspect_err(|_| self.gate_unanswered(app, &unanswered))?;
        self.wait_for(app, pm_id, baseline);
        Ok(())
    }

    /// The processes a cluster call PM2 5/6 never answered left behind (see
    /// [`LiveError::Unanswered`]) go through the health gate like any started one: a
    /// worker that keeps dying before "online" is stopped, not left to loop.
    fn gate_unanswered(&mut self, app: &DesiredApp, unanswered: &[(u64, u64)]) {
        for &(pm_id, restarts) in unanswered {
            self.wait_for(app, pm_id, Some(restarts));
        }
    }

    fn wait_for(&mut self, app: &DesiredApp, pm_id: u64, baseline: Option<u64>) {
        let rule = GateRule::for_options(&app.options, self.settings.health.settle_ms_for(&app.name));
        let slack = u64::try_from(self.settings.gate_slack.as_millis()).unwrap_or(u64::MAX);
        let watch = GateWatch::new(rule, baseline, crate::live::client::now_ms(), slack);
        self.pending.push(Pending { app: app.name.clone(), pm_id, watch, logs: self.marks.clone() });
    }

    /// Gates one process now and waits for its verdict (with any other process still
    /// pending): for a rolling reload that gates each instance before the next. Call it
    /// right after the call that started or restarted `pm_id` (its error-log marks are
    /// the ones taken before that call); `baseline` is the restart count the call
    /// reported, if any. `Ok(true)` when it passed; a failure is stopped and recorded
    /// like any other.
    pub async fn gate_process(&mut self, app: &DesiredApp, pm_id: u64, baseline: Option<u64>) -> Result<bool, String> {
        let failed_before = self.outcome.failures.iter().filter(|f| f.pm_id == pm_id).count();
        self.wait_for(app, pm_id, baseline);
        self.gate().await?;
        Ok(self.outcome.failures.iter().filter(|f| f.pm_id == pm_id).count() == failed_before)
    }

    /// Journals the intent of the next call (fsynced before it is made).
    fn intent(&mut self, change: &Change, call: &'static str, p: Option<&OwnedProcess>) -> Result<(), String> {
        self.seq += 1;
        let intent = Intent {
            seq: self.seq,
            app: change.name.clone(),
            namespace: change.namespace.clone(),
            action: change.action,
            call,
            pm_id: p.map(OwnedProcess::pm_id),
            pid: p.and_then(OwnedProcess::pid),
            restarts: p.map(OwnedProcess::restarts),
            created_at_ms: p.and_then(OwnedProcess::created_at_ms),
        };
        self.emit(Event::Intent(intent))
    }

    /// The health gate ([`GateWatch`]): every pending process must be online — and
    /// ready, for `wait_ready` — for its `min_uptime`, then not crash within the settle
    /// window. A process that fails is stopped at once, so it cannot loop.
    async fn gate(&mut self) -> Result<(), String> {
        let gate_started = Instant::now();
        let total = self.pending.len();
        let mut reported: Option<Instant> = None;
        while !self.pending.is_empty() {
            let state = self.fresh_list().await.map_err(|e| format!("health gate: {e}"))?;
            let now = Instant::now();
            if reported.is_none_or(|at| now.duration_since(at) >= GATE_REPORT_EVERY) {
                reported = Some(now);
                let elapsed_ms = u64::try_from(now.duration_since(gate_started).as_millis()).unwrap_or(u64::MAX);
                self.emit(Event::GateWaiting { healthy: total - self.pending.len(), total, elapsed_ms })?;
            }
            let mut still = Vec::new();
            for mut p in std::mem::take(&mut self.pending) {
                match p.watch.observe(Sample::of(&state, p.pm_id, &p.app).as_ref()) {
                    GateVerdict::Wait => still.push(p),
                    GateVerdict::Healthy { online_ms } => {
                        self.emit(Event::Healthy { app: p.app.clone(), pm_id: p.pm_id, online_ms })?;
                    }
                    GateVerdict::Failed(fault) => {
                        let failure = self.fail(&p, &state, &fault).await;
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
                    Ok(Some(BusEvent::Ready { pm_id: Some(id), name, at_ms })) => {
                        let at = at_ms.unwrap_or_else(crate::live::client::now_ms);
                        for p in self.pending.iter_mut().filter(|p| p.pm_id == id && name.as_ref().is_none_or(|n| *n == p.app)) {
                            p.watch.ready(at);
                        }
                    }
                    Ok(Some(_)) => {}
                    // The bus closed or failed: polling alone still works.
                    _ => { self.bus = None; }
                },
            }
        }
    }

    /// Stops a failed process (confirmed owned; its error log is kept) and collects
    /// the lines its error log got since the call.
    async fn fail(&mut self, p: &Pending, state: &LiveState, fault: &GateFault) -> GateFailure {
        let live = state.get(p.pm_id);
        let restarts = live.map_or(0, |l| l.restarts);
        let error_file: Option<PathBuf> = live.and_then(|l| l.error_file.clone());
        let stopped = match self.client.confirm_owned(p.pm_id, &p.app, &self.settings.owned).await {
            Ok(owned) if matches!(owned.status(), ProcessStatus::Stopped) && owned.pid().is_none() => true,
            Ok(owned) => {
                let change = bare_change(&p.app, owned.namespace());
                if self.intent(&change, "stop", Some(&owned)).is_err() {
                    false
                } else {
                    let started = Instant::now();
                    let result = self.client.stop(&owned).await.map(|()| Vec::new());
                    let ok = result.is_ok();
                    let _ = self.record(&change, "stop", Some(p.pm_id), started, result);
                    ok
                }
            }
            Err(_) => false,
        };
        let restarts = match self.client.list().await {
            Ok(after) => after.get(p.pm_id).map_or(restarts, |l| l.restarts),
            Err(_) => restarts,
        };
        // A crash writes its last lines as it dies; the daemon may flush them a moment
        // later. Retry until some are there (up to 2 s), never show lines of earlier runs.
        let from = error_file.as_ref().and_then(|f| p.logs.get(f)).copied().unwrap_or(0);
        let mut log_tail = Vec::new();
        if let Some(file) = &error_file {
            let until = Instant::now() + Duration::from_secs(2);
            loop {
                log_tail = tail_since(file, from, 20);
                if !log_tail.is_empty() || Instant::now() >= until || !fault.is_crash() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        GateFailure {
            app: p.app.clone(),
            pm_id: p.pm_id,
            what: fault.to_string(),
            crashed: fault.is_crash(),
            restarts,
            stopped,
            log_tail,
            error_log: error_file,
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
            let change = bare_change(app, p.namespace());
            self.intent(&change, "delete", Some(&p))?;
            let started = Instant::now();
            let result = self.client.delete(p).await.map(|()| Vec::new());
            self.record(&change, "delete", Some(pm_id), started, result)?;
        }
        let saved: Vec<&Value> = before_raw
            .iter()
            .filter(|e| raw_str(e, "name") == Some(app) && raw_str(e, "namespace").is_some_and(|ns| owned.iter().any(|o| o == ns)))
            .collect();
        let Some(first) = saved.first() else { return Ok(Vec::new()) };
        let restored = ResolvedApp::from_saved(first, saved.len())
            .ok_or_else(|| format!("the saved spec of `{app}` cannot be prepared again"))?;
        let change = bare_change(app, restored.namespace());
        self.intent(&change, "start", None)?;
        let started = Instant::now();
        let result = self.client.start_again(&restored, &owned).await;
        self.record(&change, "start", None, started, result)
    }
}

/// What [`LiveError::unanswered_pm_ids`] says of a call's result.
fn unanswered<T>(result: &Result<T, LiveError>) -> Vec<(u64, u64)> {
    result.as_ref().err().map(|e| e.unanswered_pm_ids().to_vec()).unwrap_or_default()
}

fn raw_str<'v>(entry: &'v Value, key: &str) -> Option<&'v str> {
    entry.get("pm2_env").and_then(|e| e.get(key)).or_else(|| entry.get(key)).and_then(Value::as_str)
}

/// The change a call outside the plan serves (a gate's stop, a rollback), journaled
/// like every call; its action is `noop`.
fn bare_change(app: &str, namespace: &str) -> Change {
    Change {
        name: app.to_string(),
        namespace: namespace.to_string(),
        action: Action::Noop,
        attributes: Vec::new(),
        reason: None,
        pm_ids: Vec::new(),
        spec_hash: None,
        downtime: false,
    }
}

/// Whether a failed call may still be carried out by the daemon (it did not answer
/// in time, or the connection broke after the call was sent).
pub fn outcome_unknown(e: &LiveError) -> bool {
    matches!(e, LiveError::Timeout { .. } | LiveError::Closed { .. } | LiveError::Io { .. })
}

/// Sizes of the error logs a process of this resolved app may write: its
/// `pm_err_log_path` and the `-N` variants PM2 makes of it per `pm_id`.
fn mark_logs_of_payload(payload: &Value) -> LogMarks {
    let path = payload.get("pm_err_log_path").and_then(Value::as_str).map(PathBuf::from);
    mark_logs_of(path.as_deref())
}

/// Sizes of `path` and of its siblings named like it (`app-error.log`, `app-error-3.log`).
fn mark_logs_of(path: Option<&std::path::Path>) -> LogMarks {
    let mut marks = LogMarks::new();
    let Some(path) = path else { return marks };
    let (Some(dir), Some(stem)) = (path.parent(), path.file_stem().and_then(|s| s.to_str())) else { return marks };
    let Ok(entries) = std::fs::read_dir(dir) else { return marks };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.starts_with(stem))
            && let Ok(meta) = entry.metadata()
            && meta.is_file()
        {
            marks.insert(entry.path(), meta.len());
        }
    }
    marks
}

/// The last `n` non-empty lines written to a log file after byte `from`.
pub fn tail_since(path: &std::path::Path, from: u64, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    // Shorter than at the mark: it was truncated or rotated since; all of it is new.
    let from = if len < from { 0 } else { from };
    let _ = file.seek(SeekFrom::Start(from.max(len.saturating_sub(64 * 1024))));
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
        let t = tail_since(&path, 0, 3);
        assert_eq!(t, vec!["line 28", "line 29", "line 30"]);
        assert!(tail_since(&dir.path().join("missing"), 0, 3).is_empty());
        // Only what came after the mark.
        let mark = std::fs::metadata(&path).unwrap().len();
        assert!(tail_since(&path, mark, 3).is_empty());
        std::fs::write(&path, format!("{}new 1\nnew 2\n", std::fs::read_to_string(&path).unwrap())).unwrap();
        assert_eq!(tail_since(&path, mark, 3), vec!["new 1", "new 2"]);
    }
}
