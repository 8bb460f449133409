//! One apply, start to end, as a function that returns what it did: read, plan,
//! journal, check a saved plan, guard, resolve, preflight, confirm, execute, verify.
//! Each step that can refuse does so before the first call that changes a process.
//!
//! `reconcile apply` prints its [`Report`]; `reconcile watch --heal` runs the same
//! pipeline without a terminal (auto-approved, never past the blast-radius guard)
//! and reports it as a line. The caller holds the [`super::ApplyLock`] and has
//! checked the desired state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::execute::{Event, Executor, Outcome, Settings};
use super::journal::{self, Journal, JournalError};
use super::preflight::{self, PortClaim};
use super::verify;
use crate::config::{Project, git};
use crate::desired::DesiredApp;
use crate::live::{ExecMode, LiveError, LiveState, Pm2Client, Pm2Home, ResolveRequest, ResolvedApp, Resolver};
use crate::plan::{self, Action, Conflict, Plan};
use crate::redact::Redactor;

/// How one apply behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Skip [`Progress::confirm`].
    pub auto_approve: bool,
    /// Apply even if the plan trips the blast-radius guard.
    pub allow_blast_radius: bool,
    /// On failure, restore the apps this apply changed.
    pub rollback: bool,
    /// Act only on these apps (by name); the plan's other changes are left for later.
    pub only: Option<BTreeSet<String>>,
}

/// What one apply is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub project: &'a Project,
    pub home: &'a Pm2Home,
    /// The checked desired state.
    pub desired: &'a [DesiredApp],
    /// A plan saved by `plan --out`, and its file: applied exactly, or refused if stale.
    pub saved: Option<(&'a Path, &'a Plan)>,
}

/// Hooks for the caller: show the plan, ask before acting, follow the calls.
pub trait Progress {
    /// The plan, once it is made and a saved plan was found current.
    fn planned(&mut self, _plan: &Plan) -> std::io::Result<()> {
        Ok(())
    }
    /// Asked before the first change unless [`Options::auto_approve`]; `Err` says why not.
    fn confirm(&mut self, plan: &Plan, home: &Pm2Home) -> Result<(), String>;
    /// Each executor event, as it happens (it is journaled either way).
    fn event(&mut self, _event: &Event) {}
}

/// How an apply ended.
#[derive(Debug)]
pub enum Verdict {
    /// The desired state cannot be planned: a start would touch a process that is not ours.
    Conflicts(Vec<Conflict>),
    /// Refused before any change (stale saved plan, guard, resolve, preflight, not confirmed).
    Refused(String),
    /// Nothing to do.
    Noop,
    /// Changes were made; `ok` when every call succeeded, every process is healthy and
    /// verification found nothing.
    Done { ok: bool, outcome: Outcome, problems: Vec<String> },
}

/// What an apply did.
#[derive(Debug)]
pub struct Report {
    /// The plan (absent when conflicts refused it).
    pub plan: Option<Plan>,
    pub verdict: Verdict,
    /// The journal written (absent when nothing was journaled).
    pub journal: Option<PathBuf>,
    pub elapsed_ms: u128,
}

impl Report {
    /// Apps this apply failed on: a failed call, an unhealthy process, or (when it
    /// stopped early or verification complained) every app it was meant to change
    /// that did not come out healthy.
    pub fn failed_apps(&self) -> BTreeSet<String> {
        let Verdict::Done { ok: false, outcome, problems } = &self.verdict else { return BTreeSet::new() };
        let mut failed: BTreeSet<String> = outcome.actions.iter().filter(|a| a.error.is_some()).map(|a| a.app.clone()).collect();
        failed.extend(outcome.failures.iter().map(|f| f.app.clone()));
        if outcome.aborted.is_some() || !problems.is_empty() {
            let healthy: BTreeSet<&str> = outcome.actions.iter().filter(|a| a.error.is_none()).map(|a| a.app.as_str()).collect();
            for change in self.plan.iter().flat_map(|p| &p.changes).filter(|c| c.action != Action::Noop) {
                let verified = !problems.iter().any(|p| p.contains(&format!(" {} (", change.name)));
                if !healthy.contains(change.name.as_str()) || !verified {
                    failed.insert(change.name.clone());
                }
            }
        }
        failed
    }
}

/// Why an apply could not run at all (as opposed to a [`Verdict::Refused`]).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The plan could not be shown (stdout closed); nothing was changed.
    #[error("cannot write the plan; nothing was changed")]
    Output(#[source] std::io::Error),
}

/// Runs one apply. The caller holds the lock for `request.home`.
pub async fn apply_once(request: Request<'_>, options: &Options, progress: &mut dyn Progress) -> Result<Report, PipelineError> {
    let started = Instant::now();
    let Request { project, home, desired, saved } = request;
    let settings = &project.settings;
    let owned = settings.project.namespaces.clone();
    let timeout = Duration::from_millis(settings.pm2.timeout_ms);
    let redactor = Redactor::new(&settings.secrets.patterns);
    let report = |plan, verdict, journal: Option<&Journal>| Report {
        plan,
        verdict,
        journal: journal.map(|j| j.path().to_path_buf()),
        elapsed_ms: started.elapsed().as_millis(),
    };

    let mut client = Pm2Client::connect(home, timeout).await?;
    let (before, before_raw) = client.list_with_raw().await?;
    let mut plan = match plan::diff(desired, &before, &owned, &settings.safety, &redactor) {
        Ok(mut plan) => {
            plan.project.clone_from(&settings.project.name);
            if let Some(revision) = git::head(&project.root) {
                plan.basis.git_commit = Some(revision.commit);
                plan.basis.git_dirty = Some(revision.dirty);
            }
            plan
        }
        Err(conflicts) => return Ok(report(None, Verdict::Conflicts(conflicts), None)),
    };
    if let Some(only) = &options.only {
        plan = plan::restrict(plan, only, &settings.safety);
    }

    let mut journal = Journal::open(&journal_path(project))?;
    journal.record("begin", begin_record(project, home, options, saved.map(|s| s.0), &plan, &before, &redactor))?;
    macro_rules! refuse {
        ($why:expr) => {{
            let why: String = $why;
            journal.record("end", json!({"outcome": "refused", "reason": why}))?;
            return Ok(report(Some(plan), Verdict::Refused(why), Some(&journal)));
        }};
    }

    // Promise 8: a saved plan applies only to the world it was made against.
    if let Some((path, saved)) = saved {
        let mut moved = verify::moved(&saved.basis, &plan.basis);
        if moved.is_empty() && (saved.changes != plan.changes || saved.namespaces != plan.namespaces) {
            moved.push("the plan's changes differ from a fresh plan (was it edited, or made with other settings?)".into());
        }
        if !moved.is_empty() {
            refuse!(format!(
                "the saved plan {} is stale; nothing was changed. Since it was made:\n  - {}\nhelp: run `reconcile plan --out {}` again, review it, and apply that",
                path.display(),
                moved.join("\n  - "),
                path.display()
            ));
        }
    }

    progress.planned(&plan).map_err(PipelineError::Output)?;
    if !plan.has_changes() {
        journal.record("end", json!({"outcome": "noop"}))?;
        return Ok(report(Some(plan), Verdict::Noop, Some(&journal)));
    }

    // Promise 2.
    if !plan.guard.violations.is_empty() && !options.allow_blast_radius {
        refuse!(format!(
            "the blast-radius guard refuses this plan; nothing was changed:\n  - {}\nhelp: check the plan; if it is really meant, run apply again with --allow-blast-radius",
            plan.guard.violations.join("\n  - ")
        ));
    }

    // Everything that can fail without acting fails here: resolve every spec first.
    let resolved = match resolve(&plan, desired, home, client.daemon_env(), timeout).await {
        Ok(resolved) => resolved,
        Err(why) => refuse!(format!("{why}; nothing was changed")),
    };

    // Promise 5.
    if let Err(e) = client.ping().await {
        refuse!(format!("preflight: the daemon does not answer ping: {e}; nothing was changed"));
    }
    let taken = preflight::check_ports(&port_claims(&plan, desired, &before));
    if !taken.is_empty() {
        let lines: Vec<String> = taken.iter().map(ToString::to_string).collect();
        refuse!(format!("preflight: a port is taken; nothing was changed:\n  - {}", lines.join("\n  - ")));
    }

    if !options.auto_approve
        && let Err(why) = progress.confirm(&plan, home)
    {
        refuse!(why);
    }

    let exec_settings = Settings { owned: owned.clone(), poll: Duration::from_millis(100), gate_slack: Duration::from_secs(15), rollback: options.rollback };
    let outcome = {
        let mut observe = |event: &Event| {
            progress.event(event);
            if matches!(event, Event::GateWaiting { .. }) {
                return Ok(()); // progress only: the journal has the gate's verdicts
            }
            journal.record(event_name(event), serde_json::to_value(event).unwrap_or(Value::Null))
        };
        let executor = Executor::new(&mut client, &exec_settings, &mut observe);
        executor.run(&plan, desired, &resolved, &before_raw).await
    };

    // Promise 7: bystanders untouched, and a fresh plan empty (for the apps in scope).
    let (problems, after) = verify_after(project, &mut client, desired, &before, &redactor, options.only.as_ref()).await;
    let ok = outcome.succeeded() && problems.is_empty();
    journal.record(
        "end",
        json!({
            "outcome": if ok { "success" } else { "failed" },
            "problems": problems,
            "aborted": outcome.aborted,
            "rolled_back": outcome.rolled_back,
            "live_after": after.as_ref().map(|a| journal::redacted_live(a, &redactor)),
            "elapsed_ms": started.elapsed().as_millis() as u64,
        }),
    )?;
    Ok(report(Some(plan), Verdict::Done { ok, outcome, problems }, Some(&journal)))
}

fn begin_record(project: &Project, home: &Pm2Home, options: &Options, saved: Option<&Path>, plan: &Plan, before: &LiveState, redactor: &Redactor) -> Value {
    json!({
        "tool_version": env!("CARGO_PKG_VERSION"),
        "user": super::identity::user(),
        "host": super::identity::host(),
        "pid": std::process::id(),
        "project": project.settings.project.name,
        "project_file": std::path::absolute(&project.path).unwrap_or_else(|_| project.path.clone()),
        "pm2_home": home.dir,
        "git_commit": plan.basis.git_commit,
        "git_dirty": plan.basis.git_dirty,
        "saved_plan": saved,
        "options": {"auto_approve": options.auto_approve, "allow_blast_radius": options.allow_blast_radius, "rollback": options.rollback, "only": options.only},
        "plan": plan,
        "live_before": journal::redacted_live(before, redactor),
    })
}

/// Re-reads the daemon: every process outside the owned namespaces must be as it
/// was, and a fresh plan must have no changes (for the apps in `only`, if given).
async fn verify_after(
    project: &Project,
    client: &mut Pm2Client,
    desired: &[DesiredApp],
    before: &LiveState,
    redactor: &Redactor,
    only: Option<&BTreeSet<String>>,
) -> (Vec<String>, Option<LiveState>) {
    let settings = &project.settings;
    let after = match client.list().await {
        Ok(after) => after,
        Err(e) => return (vec![format!("verification: cannot read the daemon afterwards: {e}")], None),
    };
    let mut problems: Vec<String> = verify::bystanders(before, &after, &settings.project.namespaces)
        .into_iter()
        .map(|p| format!("verification: a process outside the owned namespaces changed: {p}"))
        .collect();
    match plan::diff(desired, &after, &settings.project.namespaces, &settings.safety, redactor) {
        Ok(fresh) => {
            let left: Vec<String> = fresh
                .changes
                .iter()
                .filter(|c| c.action != Action::Noop && only.is_none_or(|o| o.contains(&c.name)))
                .map(|c| {
                    let paths: Vec<&str> = c.attributes.iter().map(|a| a.path.as_str()).collect();
                    format!("{} {} ({})", c.action.as_str(), c.name, paths.join(", "))
                })
                .collect();
            if !left.is_empty() {
                problems.push(format!("verification: a fresh plan still has changes: {}", left.join(", ")));
            }
        }
        Err(conflicts) => problems.push(format!("verification: a fresh plan has {} conflict(s)", conflicts.len())),
    }
    (problems, Some(after))
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Action(_) => "action",
        Event::Healthy { .. } => "healthy",
        Event::Unhealthy(_) => "unhealthy",
        Event::RolledBack { .. } => "rolled_back",
        Event::GateWaiting { .. } => "gate_waiting",
    }
}

/// `[journal] path` (relative to the project), else `.reconcile/journal.jsonl` there.
pub fn journal_path(project: &Project) -> PathBuf {
    match &project.settings.journal.path {
        Some(path) if path.is_absolute() => path.clone(),
        Some(path) => project.root.join(path),
        None => project.root.join(journal::DEFAULT_PATH),
    }
}

/// Resolves the spec of every app the plan starts or updates, with one `node` run.
async fn resolve(
    plan: &Plan,
    desired: &[DesiredApp],
    home: &Pm2Home,
    daemon_env: Option<&serde_json::Map<String, Value>>,
    timeout: Duration,
) -> Result<BTreeMap<String, ResolvedApp>, String> {
    let wanted: BTreeSet<&str> = plan
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Replace | Action::Update))
        .map(|c| c.name.as_str())
        .collect();
    let apps: Vec<&DesiredApp> = desired.iter().filter(|d| wanted.contains(d.name.as_str())).collect();
    if apps.is_empty() {
        return Ok(BTreeMap::new());
    }
    let dirs: Vec<PathBuf> = apps
        .iter()
        .map(|a| {
            let parent = a.file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
        })
        .collect();
    let requests: Vec<ResolveRequest<'_>> =
        apps.iter().zip(&dirs).map(|(a, dir)| ResolveRequest { spec: &a.spec, cwd: dir, env_name: None }).collect();
    let resolver = Resolver::locate(timeout.max(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let results = resolver.resolve_many(&requests, home, daemon_env).await.map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for (app, result) in apps.iter().zip(results) {
        let resolved = result.map_err(|e| e.to_string())?;
        out.insert(app.name.clone(), resolved.with_spec_hash(&app.hash));
    }
    Ok(out)
}

/// The ports the plan's started or restarted apps will bind (`PORT` in their env),
/// each with the pids allowed to hold it already: the app's own current processes,
/// and the daemon for a cluster app (it holds the listening socket for its workers).
fn port_claims(plan: &Plan, desired: &[DesiredApp], live: &LiveState) -> Vec<PortClaim> {
    let daemon_pid = live.daemon.as_ref().and_then(|d| d.pid);
    plan.changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Replace | Action::Update | Action::Scale))
        .filter_map(|c| {
            let app = desired.iter().find(|d| d.name == c.name)?;
            let port: u16 = app.env.get("PORT")?.trim().parse().ok()?;
            let mut allowed: BTreeSet<u32> = c.pm_ids.iter().filter_map(|id| live.get(*id)?.pid).collect();
            if app.exec_mode == ExecMode::Cluster || c.pm_ids.iter().any(|id| live.get(*id).is_some_and(|p| p.exec_mode == ExecMode::Cluster)) {
                allowed.extend(daemon_pid);
            }
            Some(PortClaim { app: app.name.clone(), port, allowed_pids: allowed })
        })
        .collect()
}
