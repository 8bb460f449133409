//! The watch loop: one task that waits on the daemon's event bus, the desired-state
//! files, a periodic full re-read, the followed git branch and a running heal, and
//! turns each into reports.
//!
//! A read is: list the daemon, plan against the checked desired state, derive the
//! drift set, report what started and cleared, update the metrics, and (with heal)
//! start an apply for the apps that may be healed. Bus events only bring the next
//! read forward (coalesced), so a burst of events costs one read. While a heal runs
//! no read is made (the apply's own transitions are not drift); one follows it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::drift::{self, DriftKey, DriftKind, DriftSet};
use crate::live::health::{CrashCounter, CrashRule};
use super::files::{FileWatch, Targets};
use super::gitops::{self, GitSource};
use super::heal::{Gate, HealLimiter, HealPolicy};
use super::metrics::Metrics;
use super::report::{GitInfo, Report, Trigger};
use crate::apply::dump;
use crate::apply::lock::LockError;
use crate::apply::pipeline::{self, Options, PipelineError, Progress, Request, Verdict};
use crate::apply::{ApplyLock, Holder};
use crate::config::Project;
use crate::desired::DesiredApp;
use crate::live::{BusEvent, EventStream, LiveState, Pm2Client, Pm2Home};
use crate::plan::{self, Action, Plan};
use crate::redact::Redactor;
use crate::validate::{Diagnostic, Severity};

/// A checked desired state.
#[derive(Debug)]
pub struct Checked {
    pub findings: Vec<Diagnostic>,
    /// The findings rendered for people.
    pub human: String,
    /// `None` while any error stands.
    pub desired: Option<Vec<DesiredApp>>,
}

/// How the watcher reads its project and checks the desired state (the command
/// supplies it: it knows the command line).
pub trait Loader {
    /// Reads `reconcile.toml` and resolves the PM2 home.
    fn load(&mut self) -> anyhow::Result<(Project, Pm2Home)>;
    /// Loads and checks the ecosystem files.
    fn check(&mut self, project: &Project) -> anyhow::Result<Checked>;
}

/// How the watcher behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The full re-read period (`--interval`).
    pub interval: Duration,
    /// `--heal` and its rate limit.
    pub heal: Option<HealPolicy>,
    /// Pull mode: the branch to follow and how often to fetch.
    pub git: Option<(GitSource, Duration)>,
    /// `--format json`.
    pub json: bool,
    /// How long a drift must last before a heal (a hand restart passes through
    /// `stopping`; that is not worth an apply).
    pub settle: Duration,
    /// Changes to files closer together than this are one change.
    pub debounce: Duration,
}

/// The daemon is not answering since `since`.
#[derive(Debug, Clone, Copy)]
struct Down {
    since: Instant,
    failures: u32,
}

type HealFuture = Pin<Box<dyn Future<Output = HealDone>>>;

struct HealDone {
    apps: BTreeSet<String>,
    result: Result<pipeline::Report, PipelineError>,
}

/// Reads closer together than this are merged (a crash loop sends many events).
const MIN_READ_GAP: Duration = Duration::from_millis(250);
/// A bus event is followed by a read this much later (more events may come with it).
const EVENT_DELAY: Duration = Duration::from_millis(100);
/// A given-up app must stay free of drift at least this long (and an `--interval`)
/// before it may be healed again.
const MIN_CALM: Duration = Duration::from_secs(10);
/// The longest wait between tries while the daemon is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The watcher.
pub struct Agent<L: Loader> {
    config: Config,
    loader: L,
    project: Project,
    home: Pm2Home,
    desired: Option<Vec<DesiredApp>>,
    /// Each desired app's spec hash, to forget heal failures when a spec changes.
    hashes: BTreeMap<String, String>,
    lint_errors: bool,
    conflicts_told: bool,
    client: Option<Pm2Client>,
    bus: Option<EventStream>,
    files: Option<FileWatch>,
    drifts: DriftSet,
    since: BTreeMap<DriftKey, (Instant, i64)>,
    windows: CrashCounter,
    limiter: Option<HealLimiter>,
    /// Given-up apps without drift, since when.
    calm: BTreeMap<String, Instant>,
    /// Crash loops `--heal` broke: app → what it was then (not started again until
    /// its desired spec or its code changes).
    broken: BTreeMap<String, Fingerprint>,
    /// Crash loops found by the last read, for `--heal` to break.
    break_due: Vec<drift::Drift>,
    /// Foreign apps crash-looping at the last read (reported when they start).
    foreign_loops: BTreeSet<(String, String)>,
    heal: Option<HealFuture>,
    deferred_told: bool,
    metrics: Option<Arc<Metrics>>,
    down: Option<Down>,
    last_read: Option<Instant>,
    next_read: Instant,
    plan_due: Option<Trigger>,
    git_commit: Option<String>,
    git_error_told: bool,
    /// Fetches failed in a row (the next one waits longer, see [`git_backoff`]).
    git_failures: u32,
    /// The commit last refused (unsigned, or a rewind): told once.
    git_refused: Option<String>,
    /// When the last sync succeeded (ms since the epoch), and the last failure.
    git_synced_ms: Option<i64>,
    git_last_error: Option<String>,
    next_git: Instant,
    /// PM2's dump, kept between reads (`[pm2] save`).
    dump_cache: dump::SavedCache,
    /// The last error reading the dump, to report it once.
    dump_error: Option<String>,
}

impl<L: Loader> std::fmt::Debug for Agent<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("home", &self.home.dir).field("drifts", &self.drifts.len()).finish()
    }
}

impl<L: Loader> Agent<L> {
    /// Loads the project, starts the file watch, says `started`, and checks the
    /// desired state once. `metrics` is already bound (its address is `metrics_addr`);
    /// `git_commit` is what pull mode checked out before starting.
    pub fn start(
        config: Config,
        mut loader: L,
        metrics: Option<(Arc<Metrics>, String)>,
        git_commit: Option<String>,
    ) -> anyhow::Result<Self> {
        let (project, home) = loader.load()?;
        let targets = targets(&project);
        // Pull mode: the clone only changes when we fetch, so it is not watched.
        let files = if config.git.is_none() { Some(FileWatch::new(config.debounce, targets.clone())?) } else { None };
        let now = Instant::now();
        let limiter = config.heal.map(HealLimiter::new);
        let mut agent = Self {
            loader,
            project,
            home,
            desired: None,
            hashes: BTreeMap::new(),
            lint_errors: false,
            conflicts_told: false,
            client: None,
            bus: None,
            files,
            drifts: DriftSet::new(),
            since: BTreeMap::new(),
            windows: CrashCounter::default(),
            limiter,
            calm: BTreeMap::new(),
            broken: BTreeMap::new(),
            break_due: Vec::new(),
            foreign_loops: BTreeSet::new(),
            heal: None,
            deferred_told: false,
            metrics: metrics.as_ref().map(|(m, _)| Arc::clone(m)),
            down: None,
            last_read: None,
            next_read: now,
            plan_due: None,
            git_commit,
            git_error_told: false,
            git_failures: 0,
            git_refused: None,
            git_synced_ms: None,
            git_last_error: None,
            next_git: now + config.git.as_ref().map_or(Duration::ZERO, |g| g.1),
            dump_cache: dump::SavedCache::default(),
            dump_error: None,
            config,
        };
        let git = agent.config.git.as_ref().map(|(source, every)| GitInfo {
            remote: source.remote.clone(),
            branch: source.branch.clone(),
            checkout: source.checkout.clone(),
            interval_s: every.as_secs(),
        });
        agent.emit(&Report::Started {
            version: env!("CARGO_PKG_VERSION"),
            project: agent.project.settings.project.name.clone(),
            project_file: absolute(&agent.project.path),
            pm2_home: agent.home.dir.clone(),
            namespaces: agent.project.settings.project.namespaces.clone(),
            files: if agent.files.is_some() { targets.files.into_iter().chain(targets.dirs).collect() } else { Vec::new() },
            interval_s: agent.config.interval.as_secs(),
            heal: agent.limiter.is_some(),
            metrics: metrics.map(|(_, addr)| addr),
            git,
        })?;
        agent.recheck(if agent.config.git.is_some() { Trigger::Git } else { Trigger::Start })?;
        if agent.git_commit.is_some() {
            agent.plan_due = Some(Trigger::Git);
        }
        Ok(agent)
    }

    /// Writes one report.
    pub fn emit(&self, report: &Report) -> std::io::Result<()> {
        use std::io::Write;
        let at = crate::live::client::now_ms();
        let text = if self.config.json { report.json_line(at) } else { crate::render::watch::human(report, at) };
        let mut stdout = anstream::stdout().lock();
        stdout.write_all(crate::redact::scrub(&text).as_bytes())?;
        stdout.flush()
    }

    /// Runs until the output fails (a signal ends it from outside, by dropping it).
    pub async fn run(&mut self) -> std::io::Result<()> {
        loop {
            let git_due = self.config.git.as_ref().map(|_| self.next_git);
            let wake = tokio::select! {
                done = next_heal(&mut self.heal) => Wake::Healed(Box::new(done)),
                event = next_event(&mut self.bus) => Wake::Bus(event),
                changed = next_change(&mut self.files) => Wake::Files(changed),
                () = sleep_until(Some(self.next_read)) => Wake::Read,
                () = sleep_until(git_due) => Wake::Git,
            };
            match wake {
                Wake::Healed(done) => self.healed(*done)?,
                Wake::Bus(event) => self.bus_event(event)?,
                Wake::Files(changed) => self.files_changed(changed)?,
                Wake::Read => self.read().await?,
                Wake::Git => self.pull().await?,
            }
        }
    }

    fn owned(&self) -> &[String] {
        &self.project.settings.project.namespaces
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.project.settings.pm2.timeout_ms)
    }

    /// Brings the next read forward (not closer than [`MIN_READ_GAP`] to the last).
    fn read_soon(&mut self, delay: Duration) {
        let now = Instant::now();
        let earliest = self.last_read.map_or(now, |l| l + MIN_READ_GAP);
        let at = (now + delay).max(earliest);
        if at < self.next_read {
            self.next_read = at;
        }
    }

    fn bus_event(&mut self, event: Result<Option<BusEvent>, crate::live::LiveError>) -> std::io::Result<()> {
        match event {
            Ok(Some(BusEvent::Process(e))) => {
                tracing::debug!(kind = ?e.kind, name = ?e.name, "bus event");
                if e.namespace.as_ref().is_none_or(|ns| self.owned().contains(ns)) {
                    self.read_soon(EVENT_DELAY);
                }
                Ok(())
            }
            Ok(Some(BusEvent::Killed { .. })) => {
                self.client = None;
                self.bus = None;
                self.daemon_failed("the PM2 daemon announced it is shutting down (pm2:kill)".into())
            }
            Ok(Some(BusEvent::Other { .. } | BusEvent::Ready { .. })) => Ok(()),
            Ok(None) | Err(_) => {
                // The daemon closed the bus: it died or was killed. The read says which.
                self.client = None;
                self.bus = None;
                self.next_read = Instant::now();
                Ok(())
            }
        }
    }

    fn files_changed(&mut self, changed: Result<Vec<PathBuf>, String>) -> std::io::Result<()> {
        let paths = match changed {
            Ok(paths) => paths,
            Err(e) => return self.emit(&Report::Error { message: format!("watching the desired-state files failed: {e}") }),
        };
        tracing::debug!(?paths, "files changed");
        if paths.contains(&absolute(&self.project.path)) && !self.reload()? {
            return Ok(());
        }
        self.recheck(Trigger::Files)
    }

    /// Reads `reconcile.toml` again; `false` when it cannot be used (reported).
    fn reload(&mut self) -> std::io::Result<bool> {
        match self.loader.load() {
            Ok((project, home)) => {
                if home != self.home {
                    self.client = None;
                    self.bus = None;
                }
                self.project = project;
                self.home = home;
                if let Some(files) = self.files.as_mut()
                    && let Err(e) = files.set(targets(&self.project))
                {
                    self.emit(&Report::Error { message: e.to_string() })?;
                }
                Ok(true)
            }
            Err(e) => {
                self.desired = None;
                self.emit(&Report::Error {
                    message: format!("{e:#}; nothing is planned or healed until reconcile.toml is fixed"),
                })?;
                Ok(false)
            }
        }
    }

    /// Checks the desired state again, reports findings, and plans at the next read.
    fn recheck(&mut self, trigger: Trigger) -> std::io::Result<()> {
        match self.loader.check(&self.project) {
            Ok(checked) => {
                let errors = checked.findings.iter().filter(|d| d.severity == Severity::Error).count();
                if !checked.findings.is_empty() || self.lint_errors {
                    self.emit(&Report::Lint {
                        errors,
                        warnings: checked.findings.len() - errors,
                        diagnostics: checked.findings,
                        human: checked.human,
                    })?;
                }
                self.lint_errors = errors > 0;
                match checked.desired {
                    Some(desired) => {
                        let hashes: BTreeMap<String, String> = desired.iter().map(|d| (d.name.clone(), d.hash.clone())).collect();
                        if let Some(limiter) = self.limiter.as_mut() {
                            for (app, hash) in &self.hashes {
                                if hashes.get(app) != Some(hash) {
                                    limiter.forget(app);
                                }
                            }
                        }
                        self.hashes = hashes;
                        self.desired = Some(desired);
                        self.conflicts_told = false;
                        self.plan_due = Some(trigger);
                        self.next_read = Instant::now();
                    }
                    None => self.desired = None,
                }
            }
            Err(e) => {
                self.desired = None;
                self.lint_errors = true;
                self.emit(&Report::Error { message: format!("{e:#}; nothing is planned or healed until it is fixed") })?;
            }
        }
        Ok(())
    }

    /// One full read (or, while a heal runs, a note to read after it).
    async fn read(&mut self) -> std::io::Result<()> {
        let now = Instant::now();
        self.next_read = now + self.config.interval;
        if self.heal.is_some() {
            return Ok(());
        }
        self.last_read = Some(now);
        let timeout = self.timeout();
        if self.client.is_none() {
            match Pm2Client::connect(&self.home, timeout).await {
                Ok(client) => self.client = Some(client),
                Err(e) => return self.daemon_failed(e.to_string()),
            }
        }
        // With `[pm2] save`, the whole entries too, to compare the owned apps with the dump.
        let save = self.project.settings.pm2.save;
        let listed = match self.client.as_mut() {
            Some(client) if save => client.list_with_raw().await.map(|(live, raw)| (live, Some(raw))),
            Some(client) => client.list().await.map(|live| (live, None)),
            None => return Ok(()),
        };
        let (live, raw) = match listed {
            Ok(listed) => listed,
            Err(e) => {
                self.client = None;
                self.bus = None;
                return self.daemon_failed(e.to_string());
            }
        };
        if let Some(down) = self.down.take() {
            self.emit(&Report::DaemonBack { down_ms: millis(down.since.elapsed()) })?;
        }
        if let Some(m) = &self.metrics {
            m.daemon(true);
        }
        if self.bus.is_none() {
            self.bus = EventStream::subscribe(&self.home, timeout, true).await.ok();
        }
        // Code is not among the watched files: its revision is read again at every full
        // read, so new code shows as drift (and a deploy's new stamps are not undone).
        if let Some(desired) = self.desired.as_mut()
            && let Err(e) = crate::desired::revision::assign(desired, &self.project, crate::desired::revision::At::WorkTree)
        {
            tracing::warn!(error = %e, "cannot read the code revisions; keeping the last ones");
        }
        let unsaved = match raw {
            Some(raw) => self.compare_dump(&raw)?,
            None => Vec::new(),
        };
        self.assess(&live, &unsaved)?;
        if !self.break_due.is_empty() {
            self.break_loops().await?;
        }
        Ok(())
    }

    /// The owned apps that differ from PM2's dump (the dump is re-read only when its
    /// file changed). An unreadable dump is reported once, when it becomes so.
    fn compare_dump(&mut self, raw: &[serde_json::Value]) -> std::io::Result<Vec<dump::Unsaved>> {
        let owned = self.project.settings.project.namespaces.clone();
        let scope = dump::Scope { namespaces: &owned, only: None };
        let live = dump::live_entries(raw, &scope);
        let saved = self.dump_cache.read(&self.home.dir, &scope);
        let check = dump::check_saved(&self.home.dir, saved, &live, &scope);
        if check.error != self.dump_error {
            if let Some(error) = &check.error {
                self.emit(&Report::Error { message: format!("cannot compare the owned apps with PM2's dump: {error}") })?;
            }
            self.dump_error.clone_from(&check.error);
        }
        Ok(check.unsaved)
    }

    /// `--heal`'s crash-loop breaker: stops every process of each owned app found
    /// crash-looping (each confirmed owned, under the apply lock, journaled), reports
    /// it with the last lines of its error log, and keeps it out of heals until its
    /// desired spec or its code changes. Foreign apps never get here (drift is of
    /// owned apps only).
    async fn break_loops(&mut self) -> std::io::Result<()> {
        let due = std::mem::take(&mut self.break_due);
        let lock = match ApplyLock::acquire(&self.home, &Holder::current()) {
            Ok(lock) => lock,
            Err(e) => {
                // Someone is applying: try again at the next read (the loop goes on being seen).
                tracing::debug!(error = %e, "crash-loop breaker deferred");
                self.next_read = self.next_read.min(Instant::now() + Duration::from_secs(1));
                return Ok(());
            }
        };
        let owned = self.owned().to_vec();
        let mut journal = crate::apply::Journal::open(&pipeline::journal_path(&self.project)).ok();
        let mut seq = 0u64;
        for drift in due {
            let Some(client) = self.client.as_mut() else { break };
            let mut stopped = true;
            let mut error_log: Option<PathBuf> = None;
            let mut log_tail = Vec::new();
            for &pm_id in &drift.pm_ids {
                let confirmed = match client.confirm_owned(pm_id, &drift.app, &owned).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(pm_id, error = %e, "breaker: not confirmed");
                        stopped = false;
                        continue;
                    }
                };
                if error_log.is_none() {
                    error_log = confirmed.error_file().map(Path::to_path_buf);
                    // Read before the stop: the loop's last lines, not what a stop makes it write.
                    log_tail = error_log.as_deref().map(|f| crate::apply::execute::tail_since(f, 0, 10)).unwrap_or_default();
                }
                if matches!(confirmed.status(), crate::live::ProcessStatus::Stopped) && confirmed.pid().is_none() {
                    continue;
                }
                seq += 1;
                let intent = serde_json::json!({"seq": seq, "app": drift.app, "namespace": drift.namespace, "call": "stop", "pm_id": pm_id,
                    "pid": confirmed.pid(), "restarts": confirmed.restarts(), "created_at_ms": confirmed.created_at_ms(), "by": "crash_loop_breaker"});
                if let Some(j) = journal.as_mut()
                    && j.record("intent", intent.clone()).is_err()
                {
                    // Never act unrecorded.
                    stopped = false;
                    continue;
                }
                let result = client.stop(&confirmed).await;
                let outcome = match &result {
                    Ok(()) => "ok",
                    Err(e) if crate::apply::execute::outcome_unknown(e) => "unknown",
                    Err(_) => "failed",
                };
                stopped &= result.is_ok();
                if let Some(j) = journal.as_mut() {
                    let mut record = intent;
                    record["outcome"] = outcome.into();
                    record["error"] = result.err().map(|e| e.to_string()).into();
                    let _ = j.record("action", record);
                }
            }
            // Not desired (started by hand): kept until it is desired.
            let fingerprint = self.fingerprint(&drift.app).unwrap_or_default();
            self.broken.insert(drift.app.clone(), fingerprint);
            self.emit(&Report::CrashLoopStopped {
                app: drift.app.clone(),
                namespace: drift.namespace.clone(),
                pm_ids: drift.pm_ids.clone(),
                stopped,
                detail: drift.detail.clone(),
                log_tail,
                error_log,
                journal: journal.as_ref().map(|j| j.path().to_path_buf()),
            })?;
        }
        drop(lock);
        Ok(())
    }

    /// What a broken app's release depends on: its desired spec hash and its script.
    fn fingerprint(&self, app: &str) -> Option<Fingerprint> {
        let desired = self.desired.as_ref()?.iter().find(|d| d.name == app)?;
        Some(Fingerprint { spec: desired.hash.clone(), code: code_mark(&desired.script) })
    }

    /// The daemon did not answer: report it once, retry with backoff.
    fn daemon_failed(&mut self, error: String) -> std::io::Result<()> {
        let now = Instant::now();
        let first = self.down.is_none();
        let down = self.down.get_or_insert(Down { since: now, failures: 0 });
        down.failures += 1;
        let wait = Duration::from_secs(1).saturating_mul(1 << (down.failures - 1).min(6)).min(MAX_BACKOFF);
        self.next_read = now + wait;
        if let Some(m) = &self.metrics {
            m.daemon(false);
        }
        if first {
            self.emit(&Report::DaemonDown { error, retry_in_ms: millis(wait) })?;
        } else {
            tracing::debug!(%error, "the daemon still does not answer");
        }
        Ok(())
    }

    /// Plans, derives drift, reports transitions, updates metrics, maybe heals.
    fn assess(&mut self, live: &LiveState, unsaved: &[dump::Unsaved]) -> std::io::Result<()> {
        let settings = self.project.settings.clone();
        let owned = &settings.project.namespaces;
        let crash = CrashRule::from_settings(&settings.health);
        self.windows.observe(live, crash.window_ms);
        // Prune (with --heal) may delete only what this project started or adopted.
        let ledger = crate::apply::adopted::ledger_path(&crate::apply::pipeline::journal_path(&self.project));
        let marked;
        let live = if ledger.exists() {
            let mut copy = live.clone();
            crate::apply::adopted::mark(&mut copy, &ledger);
            marked = copy;
            &marked
        } else {
            live
        };
        let plan = match &self.desired {
            Some(desired) => {
                let redactor = Redactor::new(&settings.secrets.patterns);
                match plan::diff(desired, live, owned, &settings.safety, &redactor) {
                    Ok(mut plan) => {
                        plan.project.clone_from(&settings.project.name);
                        Some(plan)
                    }
                    Err(conflicts) => {
                        if !self.conflicts_told {
                            self.conflicts_told = true;
                            let findings = crate::commands::plan::conflict_findings(&self.project, &conflicts).unwrap_or_default();
                            let errors = findings.len();
                            self.emit(&Report::Lint { errors, warnings: 0, diagnostics: findings, human: String::new() })?;
                        }
                        None
                    }
                }
            }
            None => None,
        };

        let mut fresh: DriftSet = drift::from_live(live, owned, &self.windows, crash).into_iter().map(|d| (d.key(), d)).collect();
        fresh.extend(drift::from_dump(unsaved).into_iter().map(|d| (d.key(), d)));
        match &plan {
            Some(plan) => fresh.extend(drift::from_plan(plan).into_iter().map(|d| (d.key(), d))),
            // Without a plan the desired state is unknown: those drifts neither start nor clear.
            None => fresh.extend(self.drifts.iter().filter(|(k, _)| k.2.needs_plan()).map(|(k, d)| (k.clone(), d.clone()))),
        }
        let changes = drift::transitions(&self.drifts, &fresh);
        let now = Instant::now();
        let now_ms = crate::live::client::now_ms();
        for drift in changes.cleared {
            let lasted = self.since.remove(&drift.key()).map_or(0, |(_, at)| u64::try_from(now_ms - at).unwrap_or(0));
            self.emit(&Report::DriftCleared { drift, lasted_ms: lasted })?;
        }
        for drift in changes.started {
            self.since.insert(drift.key(), (now, now_ms));
            self.emit(&Report::Drift(drift))?;
        }
        self.drifts = fresh;
        let foreign = drift::foreign_loops(live, owned, &self.windows, crash);
        for ((namespace, app), (pm_ids, detail)) in &foreign {
            if !self.foreign_loops.contains(&(namespace.clone(), app.clone())) {
                self.emit(&Report::ForeignCrashLoop { app: app.clone(), namespace: namespace.clone(), pm_ids: pm_ids.clone(), detail: detail.clone() })?;
            }
        }
        self.foreign_loops = foreign.into_keys().collect();
        if self.limiter.is_some() {
            // Broken loops stay stopped until their spec or code changes.
            let released: Vec<String> =
                self.broken.iter().filter(|(app, fp)| self.fingerprint(app).is_some_and(|now| now != **fp)).map(|(a, _)| a.clone()).collect();
            for app in released {
                self.broken.remove(&app);
                if let Some(limiter) = self.limiter.as_mut() {
                    limiter.forget(&app);
                }
            }
            // A loop is broken when it is found, and again if someone starts it again
            // and it loops again: every crash-looping app with a process not stopped.
            let running = |d: &drift::Drift| {
                d.pm_ids.iter().any(|id| live.get(*id).is_some_and(|p| !(p.status == crate::live::ProcessStatus::Stopped && p.pid.is_none())))
            };
            self.break_due = self.drifts.values().filter(|d| d.reason == DriftKind::CrashLoop && running(d)).cloned().collect();
        }
        if let Some(limiter) = self.limiter.as_mut() {
            // A given-up app is tried again once its drift has stayed clear for a while
            // (an operator fixed it), not after one calm read: a crashing app passes
            // through `online` between crashes.
            let drifting: BTreeSet<&str> = self.drifts.values().map(|d| d.app.as_str()).collect();
            let given_up: Vec<String> = limiter.given_up().map(str::to_string).collect();
            self.calm.retain(|app, _| given_up.contains(app));
            let calm_for = self.config.interval.max(MIN_CALM);
            for app in given_up {
                if drifting.contains(app.as_str()) {
                    self.calm.remove(&app);
                } else if now.duration_since(*self.calm.entry(app.clone()).or_insert(now)) >= calm_for {
                    self.calm.remove(&app);
                    limiter.cleared(&app);
                }
            }
        }
        if let Some(m) = &self.metrics {
            let mut counts: BTreeMap<DriftKind, usize> = BTreeMap::new();
            for d in self.drifts.values() {
                *counts.entry(d.reason).or_default() += 1;
            }
            m.set_drift(&counts);
            m.set_app_drift(self.drifts.values());
            m.set_restarts(live, owned);
            if plan.is_some() {
                m.planned(now_ms / 1000);
            }
        }
        if let Some(plan) = &plan {
            if let Some(trigger) = self.plan_due.take() {
                self.emit(&Report::Plan {
                    trigger,
                    changes: plan.changes.iter().filter(|c| c.action != Action::Noop).cloned().collect(),
                    unmanaged: plan.unmanaged.clone(),
                    summary: plan.summary,
                    git_commit: if trigger == Trigger::Git { self.git_commit.clone() } else { None },
                })?;
            }
            if self.limiter.is_some() {
                self.maybe_heal(plan)?;
            }
        }
        Ok(())
    }

    /// Starts a heal for the drifting apps that may be healed now.
    fn maybe_heal(&mut self, plan: &Plan) -> std::io::Result<()> {
        let Some(desired) = self.desired.clone() else { return Ok(()) };
        if self.heal.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        let changing: BTreeSet<&str> = plan.changes.iter().filter(|c| c.action != Action::Noop).map(|c| c.name.as_str()).collect();
        let mut candidates: BTreeMap<String, Instant> = BTreeMap::new();
        // Loops about to be broken (found running by this read).
        let looping: BTreeSet<&str> = self.break_due.iter().map(|d| d.app.as_str()).collect();
        for (key, drift) in &self.drifts {
            // A loop is broken, not healed; a broken loop waits for a new spec or code.
            // `unsaved` is no reason to heal (apply would only save the dump), and its
            // start must not count toward another drift's settle time.
            if drift.reason == DriftKind::Unsaved
                || looping.contains(drift.app.as_str())
                || self.broken.contains_key(&drift.app)
                || !changing.contains(drift.app.as_str())
            {
                continue;
            }
            let since = self.since.get(key).map_or(now, |s| s.0);
            let entry = candidates.entry(drift.app.clone()).or_insert(since);
            *entry = (*entry).min(since);
        }
        let mut allowed = BTreeSet::new();
        let mut wake: Option<Instant> = None;
        let mut given_up = Vec::new();
        let Some(limiter) = self.limiter.as_mut() else { return Ok(()) };
        for (app, since) in candidates {
            let settled = since + self.config.settle;
            if settled > now {
                wake = Some(wake.map_or(settled, |w| w.min(settled)));
                continue;
            }
            match limiter.gate(&app, now) {
                Gate::Allowed => {
                    allowed.insert(app);
                }
                Gate::Waiting(until) => wake = Some(wake.map_or(until, |w| w.min(until))),
                Gate::GivenUp { reason, newly } => {
                    if newly {
                        given_up.push(Report::HealGivenUp { app, reason });
                    }
                }
            }
        }
        for report in given_up {
            self.emit(&report)?;
        }
        if let Some(at) = wake
            && at < self.next_read
        {
            self.next_read = at;
        }
        if allowed.is_empty() {
            return Ok(());
        }
        let apps: Vec<String> = allowed.iter().cloned().collect();
        // One apply at a time per PM2 home: if someone holds the lock, wait for the next read.
        let lock = match ApplyLock::acquire(&self.home, &Holder::current()) {
            Ok(lock) => lock,
            Err(e @ LockError::Held { .. }) => {
                if let Some(m) = &self.metrics {
                    m.applied("deferred");
                }
                if !self.deferred_told {
                    self.deferred_told = true;
                    self.emit(&Report::HealDeferred { apps, reason: format!("{e}; trying again at the next read") })?;
                }
                return Ok(());
            }
            Err(e) => {
                let reason = e.to_string();
                if let Some(m) = &self.metrics {
                    m.applied("error");
                }
                self.emit(&Report::HealFailed { apps: apps.clone(), outcome: "error", reason: reason.clone(), healed: Vec::new(), journal: None })?;
                return self.heal_failures(&apps, &reason);
            }
        };
        self.deferred_told = false;
        if let Some(limiter) = self.limiter.as_mut() {
            for app in &allowed {
                limiter.started(app, now);
            }
        }
        self.emit(&Report::Healing { apps })?;
        let (project, home) = (self.project.clone(), self.home.clone());
        let options = Options { auto_approve: true, allow_blast_radius: false, rollback: false, only: Some(allowed.clone()), ..Options::default() };
        self.heal = Some(Box::pin(async move {
            let _lock = lock;
            let request = Request { project: &project, home: &home, desired: &desired, saved: None };
            let result = pipeline::apply_once(request, &options, &mut Quiet).await;
            HealDone { apps: allowed, result }
        }));
        Ok(())
    }

    /// Counts a failure for each app; reports the ones now given up on.
    fn heal_failures(&mut self, apps: &[String], reason: &str) -> std::io::Result<()> {
        let now = Instant::now();
        let mut given_up = Vec::new();
        if let Some(limiter) = self.limiter.as_mut() {
            for app in apps {
                if limiter.failed(app, now, reason).is_none() {
                    let why = format!("{} heals in a row failed", limiter.policy().max_attempts);
                    given_up.push(Report::HealGivenUp { app: app.clone(), reason: why });
                }
            }
        }
        for report in given_up {
            self.emit(&report)?;
        }
        Ok(())
    }

    /// A heal ended: report it, feed the rate limit, read again at once.
    fn healed(&mut self, done: HealDone) -> std::io::Result<()> {
        self.heal = None;
        self.next_read = Instant::now();
        let apps: Vec<String> = done.apps.iter().cloned().collect();
        let outcome = match done.result {
            Err(e) => {
                let reason = e.to_string();
                self.emit(&Report::HealFailed { apps: apps.clone(), outcome: "error", reason: reason.clone(), healed: Vec::new(), journal: None })?;
                self.heal_failures(&apps, &reason)?;
                "error"
            }
            Ok(report) => {
                let journal = report.journal.clone();
                match &report.verdict {
                    Verdict::Noop | Verdict::Done { ok: true, .. } => {
                        let (outcome, actions) = match &report.verdict {
                            Verdict::Done { outcome, .. } => ("success", outcome.actions.len()),
                            _ => ("noop", 0),
                        };
                        if let Some(limiter) = self.limiter.as_mut() {
                            for app in &apps {
                                limiter.succeeded(app);
                            }
                        }
                        self.emit(&Report::Healed { apps, outcome, actions, journal })?;
                        outcome
                    }
                    Verdict::Conflicts(conflicts) => {
                        let reason = format!(
                            "{} desired app(s) conflict with live processes outside the owned namespaces; nothing was changed",
                            conflicts.len()
                        );
                        self.emit(&Report::HealFailed { apps: apps.clone(), outcome: "refused", reason: reason.clone(), healed: Vec::new(), journal })?;
                        self.heal_failures(&apps, &reason)?;
                        "refused"
                    }
                    Verdict::Refused(why) => {
                        self.emit(&Report::HealFailed { apps: apps.clone(), outcome: "refused", reason: why.clone(), healed: Vec::new(), journal })?;
                        let first = why.lines().next().unwrap_or_default().to_string();
                        self.heal_failures(&apps, &first)?;
                        "refused"
                    }
                    Verdict::Done { ok: false, outcome, problems } => {
                        let failed: Vec<String> = report.failed_apps().into_iter().filter(|a| done.apps.contains(a)).collect();
                        let healed: Vec<String> = apps.iter().filter(|a| !failed.contains(a)).cloned().collect();
                        let mut reasons: Vec<String> = Vec::new();
                        reasons.extend(outcome.aborted.clone());
                        for f in &outcome.failures {
                            let mut line = format!("`{}` (pm_id {}) {}; {}", f.app, f.pm_id, f.what, if f.stopped { "stopped" } else { "NOT stopped" });
                            if let Some(last) = f.log_tail.last() {
                                line.push_str(&format!("; last error line: {last}"));
                            }
                            reasons.push(line);
                        }
                        reasons.extend(problems.iter().cloned());
                        let reason = reasons.join("\n");
                        if let Some(limiter) = self.limiter.as_mut() {
                            for app in &healed {
                                limiter.succeeded(app);
                            }
                        }
                        self.emit(&Report::HealFailed { apps: failed.clone(), outcome: "failed", reason: reason.clone(), healed, journal })?;
                        let first = reasons.first().cloned().unwrap_or_default();
                        self.heal_failures(&failed, &first)?;
                        "failed"
                    }
                }
            }
        };
        if let Some(m) = &self.metrics {
            m.applied(outcome);
        }
        Ok(())
    }

    /// Pull mode: fetch the branch; when it moved, load the new commit and plan.
    async fn pull(&mut self) -> std::io::Result<()> {
        let Some((source, every)) = self.config.git.clone() else { return Ok(()) };
        self.next_git = Instant::now() + every;
        let fetched = tokio::task::spawn_blocking(move || gitops::sync(&source)).await;
        let synced = match fetched {
            Ok(Ok(synced)) => synced,
            Ok(Err(e)) => return self.git_failed(e.reason(), e.refused_commit().map(str::to_string), e.to_string()),
            Err(e) => return self.git_failed("fetch", None, format!("the fetch stopped: {e}")),
        };
        self.git_error_told = false;
        self.git_failures = 0;
        self.git_refused = None;
        let (remote, branch) = self.config.git.as_ref().map(|(s, _)| (s.remote.clone(), s.branch.clone())).unwrap_or_default();
        let now_ms = crate::live::client::now_ms();
        if let Some(m) = &self.metrics {
            m.source_synced(&branch, &synced.commit, now_ms / 1000);
        }
        self.git_synced_ms = Some(now_ms);
        self.write_source_state(Some(&synced.commit));
        if !synced.moved() {
            return Ok(());
        }
        self.emit(&Report::Git { remote: super::gitcmd::scrub_userinfo(&remote), branch, commit: synced.commit.clone(), previous: synced.previous.clone() })?;
        self.git_commit = Some(synced.commit);
        if self.reload()? {
            self.recheck(Trigger::Git)?;
        }
        Ok(())
    }

    /// A fetch failed or its commit was refused: the clone stays where it was, the
    /// next fetch waits longer (backoff), and each failure is told once.
    fn git_failed(&mut self, reason: &'static str, refused: Option<String>, error: String) -> std::io::Result<()> {
        let every = self.config.git.as_ref().map_or(Duration::from_secs(60), |g| g.1);
        if let Some(m) = &self.metrics {
            m.source_failed(reason);
        }
        self.git_last_error = Some(error.clone());
        if let Some(commit) = refused {
            // A refused commit is not a transport failure: retry at the usual pace.
            if self.git_refused.as_deref() == Some(commit.as_str()) {
                return Ok(());
            }
            self.git_refused = Some(commit.clone());
            self.write_source_state(None);
            let current = self.git_commit.clone();
            return self.emit(&Report::GitRefused { commit, reason, current, error });
        }
        self.write_source_state(None);
        self.git_failures = self.git_failures.saturating_add(1);
        let wait = git_backoff(every, self.git_failures);
        self.next_git = Instant::now() + wait;
        if self.git_error_told {
            tracing::debug!(%error, "fetch failed again");
            return Ok(());
        }
        self.git_error_told = true;
        self.emit(&Report::GitError { error: format!("{error}; the agent stays on its current commit and retries in {} s, then less often", wait.as_secs()) })
    }
}

/// A broken crash loop's desired spec hash and code mark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fingerprint {
    spec: String,
    code: Option<(std::time::SystemTime, u64)>,
}

/// The script's modification time and size: a deploy of new code changes them.
fn code_mark(script: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(script).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl<L: Loader> Agent<L> {
    /// Pull mode: `.reconcile/source.json` beside the clone: the branch, the commit
    /// checked out (`commit`, after a sync; else the one applied), the last successful
    /// sync and the last error, for scripts and health checks. Best effort.
    fn write_source_state(&self, commit: Option<&str>) {
        let Some((source, _)) = &self.config.git else { return };
        let state = serde_json::json!({
            "remote": super::gitcmd::scrub_userinfo(&source.remote),
            "branch": source.branch,
            "commit": commit.or(self.git_commit.as_deref()),
            "last_sync_ms": self.git_synced_ms,
            "last_error": self.git_last_error,
            "refused_commit": self.git_refused,
        });
        let path = source.checkout.with_file_name("source.json");
        let tmp = path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, format!("{state:#}\n")).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(error) = written {
            tracing::debug!(%error, path = %path.display(), "cannot write the source state");
        }
    }
}

/// The wait before the next fetch after `failures` in a row: the interval, doubled
/// after each further failure, at most 16 intervals and at most 10 minutes (never
/// less than one interval).
pub fn git_backoff(every: Duration, failures: u32) -> Duration {
    let doubled = every.saturating_mul(1u32 << failures.saturating_sub(1).min(4));
    doubled.min(Duration::from_secs(600)).max(every)
}

enum Wake {
    Healed(Box<HealDone>),
    Bus(Result<Option<BusEvent>, crate::live::LiveError>),
    Files(Result<Vec<PathBuf>, String>),
    Read,
    Git,
}

/// A heal reports nothing as it goes: its journal has every call, and the watcher
/// tells the outcome.
struct Quiet;

impl Progress for Quiet {
    fn confirm(&mut self, _plan: &Plan, _home: &Pm2Home) -> Result<(), String> {
        Ok(())
    }

    fn event(&mut self, event: &crate::apply::Event) {
        tracing::debug!(?event, "heal");
    }
}

async fn next_heal(heal: &mut Option<HealFuture>) -> HealDone {
    match heal.as_mut() {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn next_event(bus: &mut Option<EventStream>) -> Result<Option<BusEvent>, crate::live::LiveError> {
    match bus.as_mut() {
        Some(bus) => bus.next().await,
        None => std::future::pending().await,
    }
}

async fn next_change(files: &mut Option<FileWatch>) -> Result<Vec<PathBuf>, String> {
    match files.as_mut() {
        Some(files) => files.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// What to watch for a project: its file, its ecosystem files, its policy paths.
fn targets(project: &Project) -> Targets {
    let mut t = Targets::default();
    t.files.insert(absolute(&project.path));
    for path in project.ecosystem_paths() {
        t.files.insert(absolute(&path));
    }
    for path in &project.settings.policies.paths {
        let full = absolute(&project.root.join(path));
        if full.is_file() {
            t.files.insert(full);
        } else {
            t.dirs.insert(full);
        }
    }
    t
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_backoff_doubles_from_the_interval_up_to_sixteen_intervals_or_ten_minutes() {
        let s = Duration::from_secs;
        let waits: Vec<u64> = (1..=7).map(|n| git_backoff(s(10), n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 160, 160]);
        assert_eq!(git_backoff(s(60), 6), s(600));
        assert_eq!(git_backoff(s(900), 3), s(900), "never shorter than the interval");
    }
}
