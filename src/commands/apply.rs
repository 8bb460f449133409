//! `reconcile apply`: lock, plan (or check a saved plan), journal, guard, resolve,
//! preflight, confirm, execute, verify. Each step that can refuse does so before
//! the first call that changes a process.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{live_source, open_project, print, require_format};
use crate::ExitStatus;
use crate::apply::execute::{Event, Executor, Outcome, Settings};
use crate::apply::journal::{self, Journal};
use crate::apply::preflight::{self, PortClaim};
use crate::apply::{ApplyLock, Holder, verify};
use crate::cli::{ApplyArgs, Format, GlobalArgs};
use crate::config::{Project, git};
use crate::desired::DesiredApp;
use crate::live::{ExecMode, LiveSource, LiveState, Pm2Client, Pm2Home, ResolveRequest, ResolvedApp, Resolver};
use crate::plan::{self, Action, Plan};
use crate::redact::Redactor;
use crate::render;

/// Runs `apply`.
pub fn run(global: &GlobalArgs, args: &ApplyArgs) -> Result<ExitStatus> {
    require_format("apply", global.format, &[Format::Human, Format::Json])?;
    if global.live.is_some() {
        bail!("apply changes the PM2 daemon, so it cannot run on a --live snapshot; drop --live (use `reconcile plan --live FILE` to preview)");
    }
    let project = open_project(global)?.context(
        "apply needs a reconcile.toml naming the ecosystem files and the namespaces this project owns; create one, or name it with --config",
    )?;
    let saved = args.plan_file.as_deref().map(load_saved).transpose()?;
    let LiveSource::Daemon(home) = live_source(global, Some(&project))? else {
        bail!("apply needs the PM2 daemon");
    };
    if !home.dir.is_dir() {
        bail!("PM2 home {} does not exist: set [pm2] home or PM2_HOME to the daemon's home", home.dir.display());
    }
    // Promise 3: before anything is read, so the plan cannot go stale under us.
    let _lock = ApplyLock::acquire(&home.dir, &Holder::current())?;
    let runtime = crate::live::runtime().context("starting the async runtime")?;
    runtime.block_on(Apply { global, args, project: &project, home: &home, saved: saved.as_ref() }.run())
}

/// A saved plan, read and checked for shape.
fn load_saved(path: &Path) -> Result<(PathBuf, Plan)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the saved plan {}", path.display()))?;
    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!("{}:{}:{}: not a plan saved by `reconcile plan --out`: {e}", path.display(), e.line(), e.column())
    })?;
    if plan.basis.live_source != "daemon" {
        bail!(
            "{}: this plan was made against {} , not the daemon; make one with `reconcile plan --out FILE` (no --live, no --base)",
            path.display(),
            plan.basis.live_source
        );
    }
    Ok((path.to_path_buf(), plan))
}

struct Apply<'a> {
    global: &'a GlobalArgs,
    args: &'a ApplyArgs,
    project: &'a Project,
    home: &'a Pm2Home,
    saved: Option<&'a (PathBuf, Plan)>,
}

impl Apply<'_> {
    async fn run(self) -> Result<ExitStatus> {
        let started = Instant::now();
        let settings = &self.project.settings;
        let owned = settings.project.namespaces.clone();
        let timeout = Duration::from_millis(settings.pm2.timeout_ms);
        let redactor = Redactor::new(&settings.secrets.patterns);

        let Some(desired) = super::plan::desired_state(self.global, self.project, self.args.env.as_deref())? else {
            return Ok(ExitStatus::Error);
        };
        let mut client = Pm2Client::connect(self.home, timeout).await?;
        let (before, before_raw) = client.list_with_raw().await?;
        let plan = match plan::diff(&desired, &before, &owned, &settings.safety, &redactor) {
            Ok(mut plan) => {
                plan.project.clone_from(&settings.project.name);
                if let Some(revision) = git::head(&self.project.root) {
                    plan.basis.git_commit = Some(revision.commit);
                    plan.basis.git_dirty = Some(revision.dirty);
                }
                plan
            }
            Err(conflicts) => {
                super::plan::report_conflicts(self.project, &conflicts, desired.len())?;
                return Ok(ExitStatus::Error);
            }
        };

        let journal_path = journal_path(self.project);
        let mut journal = Journal::open(&journal_path)?;
        journal.record("begin", self.begin_record(&plan, &before, &redactor))?;
        let refuse = |journal: &mut Journal, why: String| -> Result<ExitStatus> {
            journal.record("end", json!({"outcome": "refused", "reason": why}))?;
            bail!("{why}")
        };

        // Promise 8: a saved plan applies only to the world it was made against.
        if let Some((path, saved)) = self.saved {
            let mut moved = verify::moved(&saved.basis, &plan.basis);
            if moved.is_empty() && (saved.changes != plan.changes || saved.namespaces != plan.namespaces) {
                moved.push("the plan's changes differ from a fresh plan (was it edited, or made with other settings?)".into());
            }
            if !moved.is_empty() {
                let why = format!(
                    "the saved plan {} is stale; nothing was changed. Since it was made:\n  - {}\nhelp: run `reconcile plan --out {}` again, review it, and apply that",
                    path.display(),
                    moved.join("\n  - "),
                    path.display()
                );
                return refuse(&mut journal, why);
            }
        }

        if self.global.format == Format::Human {
            print(&render::plan::human(&plan))?;
        }
        if !plan.has_changes() {
            journal.record("end", json!({"outcome": "noop"}))?;
            if self.global.format == Format::Json {
                print(&format!("{}\n", json!({"outcome": "noop", "actions": [], "journal": journal.path()})))?;
            }
            return Ok(ExitStatus::Success);
        }

        // Promise 2.
        if !plan.guard.violations.is_empty() && !self.args.allow_blast_radius {
            let why = format!(
                "the blast-radius guard refuses this plan; nothing was changed:\n  - {}\nhelp: check the plan; if it is really meant, run apply again with --allow-blast-radius",
                plan.guard.violations.join("\n  - ")
            );
            return refuse(&mut journal, why);
        }

        // Everything that can fail without acting fails here: resolve every spec first.
        let resolved = match resolve(&plan, &desired, self.home, client.daemon_env(), timeout).await {
            Ok(resolved) => resolved,
            Err(why) => return refuse(&mut journal, format!("{why}; nothing was changed")),
        };

        // Promise 5.
        if let Err(e) = client.ping().await {
            return refuse(&mut journal, format!("preflight: the daemon does not answer ping: {e}; nothing was changed"));
        }
        let taken = preflight::check_ports(&port_claims(&plan, &desired, &before));
        if !taken.is_empty() {
            let lines: Vec<String> = taken.iter().map(ToString::to_string).collect();
            return refuse(&mut journal, format!("preflight: a port is taken; nothing was changed:\n  - {}", lines.join("\n  - ")));
        }

        if !self.args.auto_approve
            && let Err(why) = confirm(&plan, self.home) {
                return refuse(&mut journal, why);
            }

        let exec_settings =
            Settings { owned: owned.clone(), poll: Duration::from_millis(100), gate_slack: Duration::from_secs(15), rollback: self.args.rollback };
        let human = self.global.format == Format::Human;
        let outcome = {
            let mut observe = |event: &Event| {
                if human {
                    let mut stderr = anstream::stderr().lock();
                    let _ = stderr.write_all(render::apply::progress(event).as_bytes());
                }
                journal.record(event_name(event), serde_json::to_value(event).unwrap_or(Value::Null))
            };
            let executor = Executor::new(&mut client, &exec_settings, &mut observe);
            executor.run(&plan, &desired, &resolved, &before_raw).await
        };

        // Promise 7: bystanders untouched, and a fresh plan empty.
        let (problems, after) = self.verify(&mut client, &desired, &before, &redactor).await;
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
        match self.global.format {
            Format::Json => print(&format!("{}\n", outcome_json(ok, &outcome, &problems, journal.path())))?,
            _ => print(&render::apply::summary(&outcome, &problems, started.elapsed().as_millis()))?,
        }
        Ok(if ok { ExitStatus::Success } else { ExitStatus::Error })
    }

    fn begin_record(&self, plan: &Plan, before: &LiveState, redactor: &Redactor) -> Value {
        json!({
            "tool_version": env!("CARGO_PKG_VERSION"),
            "user": crate::apply::identity::user(),
            "host": crate::apply::identity::host(),
            "pid": std::process::id(),
            "project": self.project.settings.project.name,
            "project_file": std::path::absolute(&self.project.path).unwrap_or_else(|_| self.project.path.clone()),
            "pm2_home": self.home.dir,
            "git_commit": plan.basis.git_commit,
            "git_dirty": plan.basis.git_dirty,
            "saved_plan": self.saved.map(|(p, _)| p),
            "options": {"auto_approve": self.args.auto_approve, "allow_blast_radius": self.args.allow_blast_radius, "rollback": self.args.rollback},
            "plan": plan,
            "live_before": journal::redacted_live(before, redactor),
        })
    }

    /// Re-reads the daemon: every process outside the owned namespaces must be as it
    /// was, and a fresh plan must have no changes.
    async fn verify(
        &self,
        client: &mut Pm2Client,
        desired: &[DesiredApp],
        before: &LiveState,
        redactor: &Redactor,
    ) -> (Vec<String>, Option<LiveState>) {
        let settings = &self.project.settings;
        let after = match client.list().await {
            Ok(after) => after,
            Err(e) => return (vec![format!("verification: cannot read the daemon afterwards: {e}")], None),
        };
        let mut problems: Vec<String> = verify::bystanders(before, &after, &settings.project.namespaces)
            .into_iter()
            .map(|p| format!("verification: a process outside the owned namespaces changed: {p}"))
            .collect();
        match plan::diff(desired, &after, &settings.project.namespaces, &settings.safety, redactor) {
            Ok(fresh) if fresh.has_changes() => {
                let left: Vec<String> = fresh
                    .changes
                    .iter()
                    .filter(|c| c.action != Action::Noop)
                    .map(|c| {
                        let paths: Vec<&str> = c.attributes.iter().map(|a| a.path.as_str()).collect();
                        format!("{} {} ({})", c.action.as_str(), c.name, paths.join(", "))
                    })
                    .collect();
                problems.push(format!("verification: a fresh plan still has changes: {}", left.join(", ")));
            }
            Ok(_) => {}
            Err(conflicts) => problems.push(format!("verification: a fresh plan has {} conflict(s)", conflicts.len())),
        }
        (problems, Some(after))
    }
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Action(_) => "action",
        Event::Healthy { .. } => "healthy",
        Event::Unhealthy(_) => "unhealthy",
        Event::RolledBack { .. } => "rolled_back",
    }
}

/// `[journal] path` (relative to the project), else `.reconcile/journal.jsonl` there.
fn journal_path(project: &Project) -> PathBuf {
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

/// Asks on the terminal; without one, refuses (CI must say --auto-approve).
fn confirm(plan: &Plan, home: &Pm2Home) -> Result<(), String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err("no terminal to confirm on, and --auto-approve was not given; nothing was changed. In CI, review the plan and pass --auto-approve".into());
    }
    let mut stderr = anstream::stderr().lock();
    let _ = write!(
        stderr,
        "\n{}\nApply these changes to the PM2 daemon in {}? Only 'yes' is accepted: ",
        render::plan::summary_line(plan),
        home.dir.display()
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    let _ = stdin.lock().read_line(&mut answer);
    if answer.trim() == "yes" { Ok(()) } else { Err("apply was not confirmed; nothing was changed".into()) }
}

fn outcome_json(ok: bool, outcome: &Outcome, problems: &[String], journal: &Path) -> Value {
    json!({
        "outcome": if ok { "success" } else { "failed" },
        "actions": outcome.actions,
        "healthy": outcome.healthy,
        "failures": outcome.failures,
        "rolled_back": outcome.rolled_back,
        "aborted": outcome.aborted,
        "problems": problems,
        "journal": journal,
    })
}
