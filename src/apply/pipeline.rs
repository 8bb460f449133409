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

use super::dump;
use super::adopted;
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
    /// `--restart NAME`: roll these apps out although nothing changed.
    pub restart: Vec<String>,
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
    /// What became of PM2's dump (absent when the apply was refused before acting).
    pub dump: Option<dump::SaveOutcome>,
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
        dump: None,
        elapsed_ms: started.elapsed().as_millis(),
    };

    let mut client = Pm2Client::connect(home, timeout).await?;
    let (mut before, before_raw) = client.list_with_raw().await?;
    let ledger = adopted::ledger_path(&journal_path(project));
    adopted::mark(&mut before, &ledger);
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
    if !options.restart.is_empty() {
        plan = match plan::restart(plan, &options.restart, &settings.safety) {
            Ok(plan) => plan,
            Err(why) => return Ok(report(None, Verdict::Refused(why), None)),
        };
    }

    let mut journal = Journal::open(&journal_path(project))?;
    journal.record("begin", begin_record(project, home, options, saved.map(|s| s.0), &plan, &before, &redactor))?;
    // Calls of earlier applies whose outcome was unknown (no answer in time, or the
    // apply was killed between the call and its record) are settled by this read.
    for call in journal::unsettled(journal.path()) {
        let result = journal::settle(&call, &before);
        let observed: Vec<Value> = before
            .processes
            .iter()
            .filter(|p| p.name == call.app && p.namespace == call.namespace)
            .map(|p| json!({"pm_id": p.pm_id, "status": p.status.as_str(), "pid": p.pid, "restarts": p.restarts, "created_at_ms": p.created_at_ms}))
            .collect();
        journal.record(
            "settled",
            json!({"of_run": call.run, "seq": call.seq, "app": call.app, "call": call.call, "pm_id": call.pm_id, "result": result, "observed": observed}),
        )?;
    }
    // Promise 11: the owned processes this desired state names but apply did not
    // start (started by hand, then written into the file) are adopted now, on record.
    let desired_names: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    let adopting: Vec<adopted::Adopted> = adopted::unstamped_desired(&before, &owned, &desired_names).collect();
    if !adopting.is_empty() {
        match adopted::record(&ledger, adopting.iter().cloned(), &before) {
            Ok(0) => {}
            Ok(_) => journal.record("adopted", json!({"ledger": ledger, "processes": adopting}))?,
            Err(e) => {
                let why = format!("{e}; nothing was changed");
                journal.record("end", json!({"outcome": "refused", "reason": why}))?;
                return Ok(report(Some(plan), Verdict::Refused(why), Some(&journal)));
            }
        }
    }
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
        // The saved file went through `redact::scrub`; the fresh plan is compared as saved.
        let fresh_changes = serde_json::to_string(&plan.changes)
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<crate::plan::Change>>(&crate::redact::scrub(&text)).ok());
        let changes_differ = fresh_changes.as_ref().is_none_or(|fresh| *fresh != saved.changes);
        if moved.is_empty() && (changes_differ || saved.namespaces != plan.namespaces) {
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
        // Nothing to change, but the dump may still lag (never saved, or an earlier
        // apply with `[pm2] save = false`): promise 10 holds after every apply.
        let dump = save_dump(project, home, &mut client, options, true, &mut journal).await?;
        journal.record("end", json!({"outcome": "noop"}))?;
        return Ok(Report { dump: Some(dump), ..report(Some(plan), Verdict::Noop, Some(&journal)) });
    }

    // Promise 2.
    if !plan.guard.violations.is_empty() && !options.allow_blast_radius {
        refuse!(format!(
            "the blast-radius guard refuses this plan; nothing was changed:\n  - {}\nhelp: check the plan; if it is really meant, run apply again with --allow-blast-radius",
            plan.guard.violations.join("\n  - ")
        ));
    }

    // Everything that can fail without acting fails here: resolve every spec first.
    let daemon_pm2 = (client.version().to_string(), client.daemon_script().map(Path::to_path_buf));
    let resolved = match resolve(&plan, desired, home, client.daemon_env(), &daemon_pm2, timeout).await {
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

    let exec_settings = Settings {
        owned: owned.clone(),
        poll: Duration::from_millis(100),
        gate_slack: Duration::from_secs(15),
        health: settings.health.clone(),
        rollback: options.rollback,
    };
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
    let mut outcome = outcome;
    let (problems, after) = verify_after(project, &mut client, desired, &before, &redactor, options.only.as_ref(), &mut outcome.warnings).await;
    let ok = outcome.succeeded() && problems.is_empty();
    // Promise 10: only the state of a successful apply is what a reboot brings back.
    let dump = save_dump(project, home, &mut client, options, ok, &mut journal).await?;
    journal.record(
        "end",
        json!({
            "outcome": if ok { "success" } else { "failed" },
            "problems": problems,
            "warnings": outcome.warnings,
            "aborted": outcome.aborted,
            "rolled_back": outcome.rolled_back,
            "live_after": after.as_ref().map(|a| journal::redacted_live(a, &redactor)),
            "elapsed_ms": started.elapsed().as_millis() as u64,
        }),
    )?;
    Ok(Report { dump: Some(dump), ..report(Some(plan), Verdict::Done { ok, outcome, problems }, Some(&journal)) })
}

/// Promise 10: writes the owned apps' live state into PM2's dump (see [`dump`]),
/// unless `[pm2] save = false` or the apply failed, and journals what became of it.
async fn save_dump(
    project: &Project,
    home: &Pm2Home,
    client: &mut Pm2Client,
    options: &Options,
    succeeded: bool,
    journal: &mut Journal,
) -> Result<dump::SaveOutcome, PipelineError> {
    let settings = &project.settings;
    let outcome = if !settings.pm2.save {
        dump::SaveOutcome::Off
    } else if !succeeded {
        dump::SaveOutcome::Skipped { reason: "the apply failed: the dump keeps the last saved state".into() }
    } else {
        let scope = dump::Scope { namespaces: &settings.project.namespaces, only: options.only.as_ref() };
        dump::save(client, &home.dir, &scope).await
    };
    journal.record("dump", outcome.journal_value())?;
    Ok(outcome)
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
        "pm2_version": before.daemon.as_ref().map(|d| d.version.as_str()),
        "git_commit": plan.basis.git_commit,
        "git_dirty": plan.basis.git_dirty,
        "saved_plan": saved,
        "options": {"auto_approve": options.auto_approve, "allow_blast_radius": options.allow_blast_radius, "rollback": options.rollback, "only": options.only, "restart": options.restart},
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
    warnings: &mut Vec<String>,
) -> (Vec<String>, Option<LiveState>) {
    let settings = &project.settings;
    let after = match client.list().await {
        Ok(after) => after,
        Err(e) => return (vec![format!("verification: cannot read the daemon afterwards: {e}")], None),
    };
    let bystanders = verify::bystanders(before, &after, &settings.project.namespaces);
    warnings.extend(bystanders.warnings.into_iter().map(|w| format!("a process outside the owned namespaces: {w}")));
    let mut problems: Vec<String> = bystanders
        .problems
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
        Event::Intent(_) => "intent",
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
    (daemon_version, daemon_script): &(String, Option<PathBuf>),
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
    let resolver = Resolver::for_daemon(daemon_version, daemon_script.as_deref(), timeout.max(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let results = resolver.resolve_many(&requests, home, daemon_env).await.map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for (app, result) in apps.iter().zip(results) {
        let resolved = result.map_err(|e| e.to_string())?;
        out.insert(app.name.clone(), resolved.with_spec_hash(&app.hash).with_revision(app.revision.as_deref()));
    }
    Ok(out)
}

/// The ports the plan's started or restarted apps will bind (`PORT` in their env),
/// each with the pids allowed to hold it already: the app's own current processes,
/// and the daemon for a cluster app (it holds the listening socket for its workers).
fn port_claims(plan: &Plan, desired: &[DesiredApp], live: &LiveState) -> Vec<PortClaim> {
    let daemon_pid = live.daemon.as_ref().and_then(|d| d.pid);
    let port_of = |value: Option<&str>| value.and_then(|v| v.trim().parse::<u16>().ok());
    let pm2_processes: Vec<preflight::Pm2Process> = live
        .processes
        .iter()
        .map(|p| {
            let mut ports = preflight::ports_in_args(&p.args);
            ports.extend(port_of(p.env_set.get("PORT").and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string()))).as_deref()));
            preflight::Pm2Process { pid: p.pid, pm_id: p.pm_id, name: p.name.clone(), namespace: p.namespace.clone(), ports }
        })
        .collect();
    plan.changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Replace | Action::Update | Action::Scale))
        .flat_map(|c| {
            let Some(app) = desired.iter().find(|d| d.name == c.name) else { return Vec::new() };
            let mut ports = preflight::ports_in_args(&app.args);
            ports.extend(port_of(app.env.get("PORT").map(String::as_str)).filter(|p| !ports.contains(p)));
            // The app's own processes, by pm_id.
            let allowed: BTreeSet<u32> = c.pm_ids.iter().filter_map(|id| live.get(*id)?.pid).collect();
            let own_cluster = c.pm_ids.iter().any(|id| live.get(*id).is_some_and(|p| p.exec_mode == ExecMode::Cluster));
            let others: Vec<preflight::Pm2Process> = pm2_processes.iter().filter(|p| !c.pm_ids.contains(&p.pm_id)).cloned().collect();
            ports
                .into_iter()
                .map(|port| PortClaim {
                    app: app.name.clone(),
                    port,
                    allowed_pids: allowed.clone(),
                    daemon_pid,
                    own_cluster,
                    pm2_processes: others.clone(),
                })
                .collect()
        })
        .collect()
}
